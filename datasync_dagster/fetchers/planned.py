"""What the fetchers over a database share: raw columns, their decoding, and the watermark."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.errors import SourceError
from datasync_dagster.fetchers.base import Batch, ColumnSpec, DataFetcher, Watermark
from datasync_dagster.fetchers.decoding import DecodePlan
from datasync_dagster.fetchers.read_ahead import read_ahead


class PlannedFetcher(DataFetcher):
    """Reads the raw columns of one source table and decodes them by the table's rules.

    A subclass finds the raw columns and reads them in batches (`read`); this class tracks the
    watermark as batches go by and decodes them, or hands them on raw to a cache that decodes.
    """

    def __init__(self, raw: list[ColumnSpec], source: DataSourceConfig, table: TableConfig):
        self._source = source
        self._table = table
        self._raw = raw
        self._plan = DecodePlan(raw, table, trim_strings=source.trims_strings)
        self._watermark_at = [self._position(name) for name in table.watermark]
        self._reached: Watermark | None = None

    @abstractmethod
    def read(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        """The raw rows at or past `since`, in batches, one in memory at a time."""

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
        for raw in self._watermarked(since, batch_size):
            decoded = self._plan.apply(raw)
            del raw
            yield decoded
            del decoded

    def raw_batches(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        # Reading is mostly waiting on the source, done meanwhile on a thread of its own.
        yield from read_ahead(self._watermarked(since, batch_size))

    def _watermarked(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        self._reached = since
        getter = itemgetter(*self._watermark_at) if self._watermark_at else None
        for raw in self.read(since, batch_size):
            if getter is not None:
                self._advance(raw, getter)
            yield raw
            del raw

    def _position(self, name: str) -> int:
        for i, column in enumerate(self._raw):
            if column.name.upper() == name.upper():
                return i
        raise SourceError(
            f"table `{self._table.name}`: watermark column `{name}` is not read from "
            f"`{self._table.source_table}`; add it to `columns` or fix `watermark`"
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
