"""What the fetchers over a database share: raw columns, their decoding, and the watermark."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Generator, Iterator, Sequence
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from datasync_dagster.config import DataSourceConfig, JulianDate, TableConfig
from datasync_dagster.errors import ConfigError, SourceError
from datasync_dagster.fetchers.base import Batch, ColumnSpec, DataFetcher, Watermark
from datasync_dagster.fetchers.decoding import DecodePlan
from datasync_dagster.fetchers.jde import date_to_julian, julian_to_date
from datasync_dagster.fetchers.read_ahead import read_ahead

_DAY = timedelta(days=1)


class PlannedFetcher(DataFetcher):
    """Reads the raw columns of one source table and decodes them by the table's rules.

    A subclass finds the raw columns and reads them in batches (`read`), from `read_start`;
    this class tracks the watermark as batches go by and decodes them, or hands them on raw to a
    cache that decodes.
    """

    def __init__(self, raw: list[ColumnSpec], source: DataSourceConfig, table: TableConfig):
        self._source = source
        self._table = table
        self._raw = raw
        self._plan = DecodePlan(raw, table, trim_strings=source.trims_strings)
        self._watermark_at = [self._position(name) for name in table.watermark]
        self._lookback_on_julian = self._lookback_moves_julian_dates()
        self._reached: Watermark | None = None

    @abstractmethod
    def read(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        """The raw rows at or past `read_start(since)`, in batches, one in memory at a time."""

    def read_start(self, since: Watermark) -> Watermark:
        """The values a read past the watermark `since` starts from.

        Without a `lookback`, `since` itself: the watermark columns, compared in order, are at
        or past it. With one, only the first column's value, moved back by the look-back: the
        read is then `first column >= that value`, and the other columns do not restrict it.
        """
        lookback = self._table.lookback
        if lookback is None:
            return since
        try:
            return (moved_back(since[0], lookback, julian=self._lookback_on_julian),)
        except (ValueError, OverflowError) as e:
            raise SourceError(
                f"table `{self._table.name}`: the last watermark of `{self._table.watermark[0]}` "
                f"cannot be moved back by `lookback`: {e}; shorten `lookback`, or run a Mass "
                "sync to start the watermark afresh"
            ) from e

    @property
    def columns(self) -> list[ColumnSpec]:
        return self._plan.columns

    @property
    def watermark_types(self) -> list[sa.types.TypeEngine[Any]]:
        return [self._raw[i].type for i in self._watermark_at]

    @property
    def watermark_reached(self) -> Watermark | None:
        return self._reached

    @property
    def decoding(self) -> DecodePlan | None:
        return None if self._plan.is_identity else self._plan

    def batches(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        if self._plan.is_identity:
            yield from self.raw_batches(since, batch_size)
            return
        # Decoding is Python work like staging, so reading ahead on a thread would not pay.
        rows = self._watermarked(since, batch_size)
        try:
            for raw in rows:
                decoded = self._plan.apply(raw)
                del raw
                yield decoded
                del decoded
        finally:
            # Closed now, not when collected: its source connection goes back at once.
            rows.close()

    def raw_batches(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        # Reading is mostly waiting on the source, done meanwhile on a thread of its own.
        yield from read_ahead(self._watermarked(since, batch_size))

    def _watermarked(self, since: Watermark | None, batch_size: int) -> Generator[Batch]:
        self._reached = since
        getter = itemgetter(*self._watermark_at) if self._watermark_at else None
        batches = self.read(since, batch_size)
        try:
            for raw in batches:
                if getter is not None:
                    self._advance(raw, getter)
                yield raw
                del raw
        finally:
            getattr(batches, "close", lambda: None)()

    def _position(self, name: str) -> int:
        for i, column in enumerate(self._raw):
            if column.name.upper() == name.upper():
                return i
        raise SourceError(
            f"table `{self._table.name}`: watermark column `{name}` is not read from "
            f"`{self._table.source_table}`; add it to `columns` or fix `watermark`"
        )

    def _lookback_moves_julian_dates(self) -> bool:
        """Whether a `lookback` moves back JDE Julian dates (and not dates or datetimes).

        Raises:
            ConfigError: the first watermark column is none of them.
        """
        if self._table.lookback is None or not self._watermark_at:
            return False
        first = self._raw[self._watermark_at[0]]
        rules = {name.upper(): rule for name, rule in self._table.decode.items()}
        if isinstance(rules.get(first.name.upper()), JulianDate):
            return True
        if isinstance(first.type, (sa.Date, sa.DateTime)):
            return False
        raise ConfigError(
            f"table `{self._table.name}`: `lookback` cannot move back the first watermark column "
            f"`{first.name}`, of type {first.type}; lead `watermark` with a date or datetime "
            "column, or one with the `julian_date` decode rule, or remove `lookback`"
        )

    def _advance(self, raw: Sequence[Any], getter: itemgetter[Any]) -> None:
        single = len(self._watermark_at) == 1
        try:
            # The highest of all values, found without a Python step per row; it counts only
            # when it holds no NULL, and NULLs that cannot be compared take the long way.
            top = max(map(getter, raw), default=None)
        except TypeError:
            top = None
        top = (top,) if single and top is not None else top
        if top is None or None in top:
            keys = map(getter, raw) if not single else ((value,) for value in map(getter, raw))
            top = max((key for key in keys if None not in key), default=None)
        if top is not None and (self._reached is None or top > self._reached):
            self._reached = tuple(top)


def moved_back(value: Any, lookback: timedelta, *, julian: bool = False) -> Any:
    """A watermark value moved back by `lookback`: a datetime by the look-back itself; a date,
    or a JDE Julian date CYYDDD (`julian`), by whole days, the look-back rounded up to a day.

    A Julian date of 0 (no date) stays as it is.

    Raises:
        ValueError: `value` is none of these, or its day moved back has no CYYDDD.
        OverflowError: the value moved back would be before the year 1.
    """
    days = _DAY * -(-lookback // _DAY)
    if julian:
        day = julian_to_date(value)
        return value if day is None else date_to_julian(day - days)
    if isinstance(value, datetime):
        return value - lookback
    if isinstance(value, date):
        return value - days
    raise ValueError(f"`{value!r}` is neither a date nor a datetime")
