"""Turns raw source rows into cache rows by the table's decoding rules, a column at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Context, Decimal, Inexact
from itertools import repeat
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
from datasync_dagster.errors import ConfigError, DecodeError
from datasync_dagster.fetchers.base import Batch, ColumnSpec, Row
from datasync_dagster.fetchers.jde import (
    MemoDecoder,
    hhmmss_to_time,
    implied_decimal,
    joined_timestamp,
    julian_to_date,
)

# A column-wise step: takes the raw columns of one batch, returns the values of one cache column.
ColumnStep = Callable[[Sequence[Sequence[Any]]], Sequence[Any]]

Rule = JulianDate | HhmmssTime | ImpliedDecimal | Trim | Timestamp

_WIDEST_DECIMAL = 38

# Dates and times come from small domains, so their memos live as long as the plan, and are
# emptied only past this many entries.
_MEMO_LIMIT = 100_000

# Scaling an integer by a power of ten in this context is exact or raises: it never rounds.
_EXACT = Context(prec=2 * _WIDEST_DECIMAL, traps=[Inexact])


def generic_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The dialect-neutral form of a reflected source type, so any cache dialect can create it."""
    try:
        generic = type_.as_generic()
    except NotImplementedError:
        return sa.String()
    if isinstance(generic, sa.types.NullType):
        return sa.String()
    return generic


@dataclass(frozen=True)
class DecodedColumn:
    """One cache column and what makes it: a rule over raw columns, or one raw column as it is."""

    column: ColumnSpec
    raw: tuple[int, ...]
    rule: Rule | None = None


class DecodePlan:
    """The cache columns of a table and how each one is made from the raw source columns.

    `apply` decodes in Python; a cache that decodes in SQL reads `decoded` instead.
    """

    def __init__(self, raw: Sequence[ColumnSpec], table: TableConfig, *, trim_strings: bool):
        self.raw_columns = list(raw)
        self._table, self._keys = table.name, table.key_columns
        self._index = {column.name.upper(): i for i, column in enumerate(raw)}
        self._steps: list[ColumnStep | int] = []
        self._columns: list[ColumnSpec] = []
        self.decoded: list[DecodedColumn] = []
        _check_rules_name_columns(table, self._index)
        for i, column in enumerate(raw):
            rule = _rule_for(table, column.name)
            if rule is None and trim_strings and _is_char(column.type):
                rule = Trim(kind="trim")
            self._add(column, i, rule)
        for name, rule in table.decode.items():
            if isinstance(rule, Timestamp):
                self._add_timestamp(name, rule, table)

    @property
    def table_name(self) -> str:
        """The configured name of the table this plan decodes."""
        return self._table

    @property
    def columns(self) -> list[ColumnSpec]:
        return list(self._columns)

    @property
    def is_identity(self) -> bool:
        """True when every cache column is a raw column, unchanged and in order."""
        return self._steps == list(range(len(self._steps)))

    def apply(self, batch: Batch) -> Batch:
        """Decode one batch of raw rows into cache rows.

        Raises:
            DecodeError: a value does not follow its rule; the message names the table, the
                row's key, the column and the value.
        """
        if self.is_identity or not batch:
            return batch
        try:
            return self._decoded(batch)
        except DecodeError:
            refusal = self.refusal(batch)
            if refusal is None:
                raise
            raise refusal from None

    def refusal(self, rows: Batch) -> DecodeError | None:
        """The error of the first of `rows` that a rule refuses, naming the row by its key;
        None if every row decodes."""
        for row in rows:
            try:
                self._decoded([row])
            except DecodeError as e:
                return DecodeError(f"table `{self._table}`, row {self.key_of(row)}: {e}")
        return None

    def key_of(self, row: Row) -> str:
        """The key of a raw row, as `(K1, K2) = (v1, v2)`."""
        keys = [key for key in self._keys if key.upper() in self._index]
        values = tuple(row[self._index[key.upper()]] for key in keys)
        return f"({', '.join(keys)}) = {values!r}"

    def _decoded(self, batch: Batch) -> Batch:
        raw = list(zip(*batch, strict=True))
        values = [raw[step] if isinstance(step, int) else step(raw) for step in self._steps]
        return list(zip(*values, strict=True))

    def _add(self, column: ColumnSpec, i: int, rule: Rule | None) -> None:
        if rule is None:
            self._steps.append(i)
            self._columns.append(column)
            self.decoded.append(DecodedColumn(column, (i,)))
            return
        name = column.name
        if isinstance(rule, JulianDate):
            self._steps.append(_memo_step(i, julian_to_date, name))
            # 0 means no date, so a NOT NULL source column still yields NULLs.
            self._columns.append(replace(column, type=sa.Date(), nullable=True))
        elif isinstance(rule, HhmmssTime):
            self._steps.append(_memo_step(i, hhmmss_to_time, name))
            self._columns.append(replace(column, type=sa.Time()))
        elif isinstance(rule, ImpliedDecimal):
            decimals = rule.decimals
            self._steps.append(_implied_decimal_step(i, decimals, name))
            precision = min(_WIDEST_DECIMAL, max(_precision(column.type), decimals + 1))
            self._columns.append(replace(column, type=sa.Numeric(precision, decimals)))
        elif isinstance(rule, Trim):
            self._steps.append(_trim_step(i))
            length = getattr(column.type, "length", None)
            self._columns.append(replace(column, type=sa.String(length)))
        self.decoded.append(DecodedColumn(self._columns[-1], (i,), rule))

    def _add_timestamp(self, name: str, rule: Timestamp, table: TableConfig) -> None:
        try:
            date_at, time_at = self._index[rule.date.upper()], self._index[rule.time.upper()]
        except KeyError as e:
            raise ConfigError(
                f"table `{table.name}`: timestamp `{name}` joins column {e}, which the source "
                "table does not have; name an existing date and time column"
            ) from None

        self._steps.append(_timestamp_step(date_at, time_at, name))
        self._columns.append(ColumnSpec(name=name, type=sa.DateTime(), nullable=True))
        self.decoded.append(DecodedColumn(self._columns[-1], (date_at, time_at), rule))


def _check_rules_name_columns(table: TableConfig, read: dict[str, int]) -> None:
    """A rule for a column that is not read is a typo that would sync the raw value silently."""
    unknown = [
        name
        for name, rule in table.decode.items()
        if not isinstance(rule, Timestamp) and name.upper() not in read
    ]
    if unknown:
        raise ConfigError(
            f"table `{table.name}`: `decode` has rules for {unknown}, which are not columns read "
            f"from `{table.source_table}`; fix the names (the columns read are "
            f"{sorted(read)}), or add them to `columns`"
        )


def _rule_for(table: TableConfig, column: str) -> Rule | None:
    for name, rule in table.decode.items():
        if name.upper() == column.upper() and not isinstance(rule, Timestamp):
            return rule
    return None


def _memo_step(i: int, decode: Callable[[Any], Any], column: str) -> ColumnStep:
    memo = _BoundedMemo(decode, column)

    def step(raw: Sequence[Sequence[Any]]) -> Sequence[Any]:
        return list(map(memo.fresh().__getitem__, raw[i]))

    return step


def _implied_decimal_step(i: int, decimals: int, column: str) -> ColumnStep:
    unit = Decimal(1).scaleb(-decimals)

    def step(raw: Sequence[Sequence[Any]]) -> Sequence[Any]:
        values = raw[i]
        # A column of plain ints is scaled at once, with no checks and no memo to fill.
        if set(map(type, values)) <= {int}:
            try:
                return list(map(_EXACT.multiply, values, repeat(unit)))
            except Inexact:
                pass
        memo = MemoDecoder(lambda v: implied_decimal(v, decimals), column)
        return list(map(memo.__getitem__, values))

    return step


def _timestamp_step(date_at: int, time_at: int, column: str) -> ColumnStep:
    days, times = _BoundedMemo(julian_to_date, column), _BoundedMemo(hhmmss_to_time, column)

    def step(raw: Sequence[Sequence[Any]]) -> Sequence[Any]:
        # A date and a time make a timestamp; rows without one of them go the long way.
        day = list(map(days.fresh().__getitem__, raw[date_at]))
        if None not in day:
            clock = list(map(times.fresh().__getitem__, raw[time_at]))
            if None not in clock:
                return list(map(datetime.combine, day, clock))
        memo = MemoDecoder(lambda pair: joined_timestamp(*pair), column)
        return list(map(memo.__getitem__, zip(raw[date_at], raw[time_at], strict=True)))

    return step


class _BoundedMemo(MemoDecoder):
    """A memo kept from batch to batch, emptied when it grows past `_MEMO_LIMIT` entries."""

    def fresh(self) -> _BoundedMemo:
        if len(self) > _MEMO_LIMIT:
            self.clear()
        return self


def _trim_step(i: int) -> ColumnStep:
    def step(raw: Sequence[Sequence[Any]]) -> Sequence[Any]:
        try:
            return list(map(str.rstrip, raw[i], repeat(" ")))
        except TypeError:
            return [v.rstrip(" ") if isinstance(v, str) else v for v in raw[i]]

    return step


def _is_char(type_: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(type_, sa.String) and not isinstance(type_, sa.Text)


def _precision(type_: sa.types.TypeEngine[Any]) -> int:
    precision = getattr(type_, "precision", None)
    if isinstance(precision, int) and precision > 0:
        return precision
    return 31
