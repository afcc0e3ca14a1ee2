"""Turns raw source rows into cache rows by the table's decoding rules, a column at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from datasync_dagster.config import (
    HhmmssTime,
    ImpliedDecimal,
    JulianDate,
    TableConfig,
    Timestamp,
    Trim,
)
from datasync_dagster.errors import ConfigError
from datasync_dagster.fetchers.base import Batch, ColumnSpec
from datasync_dagster.fetchers.jde import (
    MemoDecoder,
    hhmmss_to_time,
    implied_decimal,
    joined_timestamp,
    julian_to_date,
)

# A column-wise step: takes the raw columns of one batch, returns the values of one cache column.
ColumnStep = Callable[[Sequence[Sequence[Any]]], Sequence[Any]]

_WIDEST_DECIMAL = 38


def generic_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The dialect-neutral form of a reflected source type, so any cache dialect can create it."""
    try:
        generic = type_.as_generic()
    except NotImplementedError:
        return sa.String()
    if isinstance(generic, sa.types.NullType):
        return sa.String()
    return generic


class DecodePlan:
    """The cache columns of a table and how each one is made from the raw source columns."""

    def __init__(self, raw: Sequence[ColumnSpec], table: TableConfig, *, trim_strings: bool):
        self._index = {column.name.upper(): i for i, column in enumerate(raw)}
        self._steps: list[ColumnStep | int] = []
        self._columns: list[ColumnSpec] = []
        for i, column in enumerate(raw):
            rule = _rule_for(table, column.name)
            if rule is None and trim_strings and _is_char(column.type):
                rule = Trim(kind="trim")
            self._add(column, i, rule)
        for name, rule in table.decode.items():
            if isinstance(rule, Timestamp):
                self._add_timestamp(name, rule, table)

    @property
    def columns(self) -> list[ColumnSpec]:
        return list(self._columns)

    @property
    def is_identity(self) -> bool:
        """True when every cache column is a raw column, unchanged and in order."""
        return self._steps == list(range(len(self._steps)))

    def apply(self, batch: Batch) -> Batch:
        """Decode one batch of raw rows into cache rows."""
        if self.is_identity or not batch:
            return batch
        raw = list(zip(*batch, strict=True))
        values = [raw[step] if isinstance(step, int) else step(raw) for step in self._steps]
        return list(zip(*values, strict=True))

    def _add(self, column: ColumnSpec, i: int, rule: Any) -> None:
        if rule is None:
            self._steps.append(i)
            self._columns.append(column)
            return
        name = column.name
        if isinstance(rule, JulianDate):
            self._steps.append(_memo_step(i, julian_to_date, name))
            self._columns.append(replace(column, type=sa.Date()))
        elif isinstance(rule, HhmmssTime):
            self._steps.append(_memo_step(i, hhmmss_to_time, name))
            self._columns.append(replace(column, type=sa.Time()))
        elif isinstance(rule, ImpliedDecimal):
            decimals = rule.decimals
            self._steps.append(_memo_step(i, lambda v: implied_decimal(v, decimals), name))
            precision = min(_WIDEST_DECIMAL, max(_precision(column.type), decimals + 1))
            self._columns.append(replace(column, type=sa.Numeric(precision, decimals)))
        elif isinstance(rule, Trim):
            self._steps.append(_trim_step(i))
            length = getattr(column.type, "length", None)
            self._columns.append(replace(column, type=sa.String(length)))

    def _add_timestamp(self, name: str, rule: Timestamp, table: TableConfig) -> None:
        try:
            date_at, time_at = self._index[rule.date.upper()], self._index[rule.time.upper()]
        except KeyError as e:
            raise ConfigError(
                f"table `{table.name}`: timestamp `{name}` joins column {e}, which the source "
                "table does not have; name an existing date and time column"
            ) from None

        def step(raw: Sequence[Sequence[Any]]) -> Sequence[Any]:
            memo = MemoDecoder(lambda pair: joined_timestamp(*pair), name)
            return list(map(memo.__getitem__, zip(raw[date_at], raw[time_at], strict=True)))

        self._steps.append(step)
        self._columns.append(ColumnSpec(name=name, type=sa.DateTime(), nullable=True))


def _rule_for(table: TableConfig, column: str) -> Any:
    for name, rule in table.decode.items():
        if name.upper() == column.upper() and not isinstance(rule, Timestamp):
            return rule
    return None


def _memo_step(i: int, decode: Callable[[Any], Any], column: str) -> ColumnStep:
    def step(raw: Sequence[Sequence[Any]]) -> Sequence[Any]:
        # A memo per batch: repeated values decode once, and memory stays bounded by the batch.
        return list(map(MemoDecoder(decode, column).__getitem__, raw[i]))

    return step


def _trim_step(i: int) -> ColumnStep:
    def step(raw: Sequence[Sequence[Any]]) -> Sequence[Any]:
        return [v.rstrip(" ") if isinstance(v, str) else v for v in raw[i]]

    return step


def _is_char(type_: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(type_, sa.String) and not isinstance(type_, sa.Text)


def _precision(type_: sa.types.TypeEngine[Any]) -> int:
    precision = getattr(type_, "precision", None)
    if isinstance(precision, int) and precision > 0:
        return precision
    return 31
