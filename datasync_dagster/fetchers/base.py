"""What every fetcher offers the engine: its columns, and the rows since a watermark in batches."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from datasync_dagster.errors import DataSyncError

if TYPE_CHECKING:
    from datasync_dagster.fetchers.decoding import DecodePlan

Row = Sequence[Any]
Batch = Sequence[Row]
Watermark = tuple[Any, ...]


@dataclass(frozen=True)
class ColumnSpec:
    """A column as the cache receives it: its name there, its type after decoding, its origin."""

    name: str
    type: sa.types.TypeEngine[Any]
    nullable: bool = True
    source_name: str | None = None


class DataFetcher(ABC):
    """Reads one source table in batches of rows whose values follow `columns`."""

    @property
    @abstractmethod
    def columns(self) -> list[ColumnSpec]:
        """The columns of every row this fetcher yields, in order."""

    @abstractmethod
    def batches(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        """Yield the rows whose watermark is at or past `since` (all rows when it is None).

        Rows that share the watermark value `since` are read again, so that none is missed.
        """

    @property
    @abstractmethod
    def watermark_reached(self) -> Watermark | None:
        """The highest watermark among the rows yielded so far, in source terms."""

    @property
    def watermark_types(self) -> list[sa.types.TypeEngine[Any]]:
        """The source types of the watermark columns, to read a kept watermark back."""
        return []

    @property
    def decoding(self) -> DecodePlan | None:
        """How `raw_batches` rows become the rows of `batches`, for a cache that decodes them in
        SQL; None when there is nothing to decode, or no raw rows to offer."""
        return None

    def raw_batches(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        """Like `batches`, but the rows as the source holds them, following
        `decoding.raw_columns`; only fetchers with a `decoding` offer them."""
        raise NotImplementedError(f"{type(self).__name__} has no raw rows to offer")

    def parse_watermark(self, text: str | None) -> Watermark | None:
        """A watermark kept in `DataUpdate`, as values of the watermark columns' types."""
        return decode_watermark(text, self.watermark_types)

    def close(self) -> None:  # noqa: B027 - holding nothing is the common case
        """Release what the fetcher holds; the default holds nothing."""


def encode_watermark(value: Watermark | None) -> str | None:
    """The watermark as the text kept in `DataUpdate`."""
    if value is None:
        return None
    return json.dumps([_plain(v) for v in value])


def decode_watermark(
    text: str | None, types: Sequence[sa.types.TypeEngine[Any]]
) -> Watermark | None:
    """The watermark kept in `DataUpdate`, turned back into values of the source column types."""
    if text is None:
        return None
    values = json.loads(text)
    if len(values) != len(types):
        raise DataSyncError(
            f"watermark `{text}` has {len(values)} values but the table has {len(types)} "
            "watermark columns; run a Mass sync to start the watermark afresh"
        )
    return tuple(_typed(v, t) for v, t in zip(values, types, strict=True))


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _typed(value: Any, type_: sa.types.TypeEngine[Any]) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        python_type = type_.python_type
    except NotImplementedError:
        return value
    if python_type is datetime:
        return datetime.fromisoformat(value)
    if python_type is date:
        return date.fromisoformat(value)
    if python_type is time:
        return time.fromisoformat(value)
    if python_type is Decimal:
        return Decimal(value)
    return value
