"""The wrapping fetcher of the tests hands everything to the fetcher inside it, including members
the fetcher interface gains after it was written."""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.errors import SourceError
from datasync_dagster.fetchers.base import Batch, ColumnSpec, DataFetcher, Watermark
from datasync_dagster.fetchers.sql import SqlFetcher
from datasync_dagster_tests.fixtures.fetchers import (
    FailingFetcher,
    WrappedFetcher,
    forwards_members_of,
)

TABLE = TableConfig(
    name="items",
    source="shop",
    source_table="items",
    key_columns=["id"],
    tier="daily",
    watermark=["changed"],
)
SOURCE = DataSourceConfig(name="shop", url="sqlite://")


@pytest.fixture
def source(make_engine: Callable[..., sa.Engine], sqlite_url: Callable[[str], str]) -> sa.Engine:
    """A real SQLite source with a table of three items."""
    engine = make_engine(sqlite_url("source"))
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, changed INTEGER)"
        )
        connection.exec_driver_sql(
            "INSERT INTO items VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)"
        )
    return engine


class KeywordFetcher(DataFetcher):
    """A fetcher that keeps the keyword arguments `batches` was called with."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}

    @property
    def columns(self) -> list[ColumnSpec]:
        return []

    @property
    def watermark_reached(self) -> Watermark | None:
        return None

    def batches(self, since: Watermark | None, batch_size: int, **options: Any) -> Iterator[Batch]:
        self.options = options
        yield [("row",)]


class GrownFetcher(DataFetcher):
    """The fetcher interface as it may grow: a new abstract member and one with a default."""

    @property
    @abstractmethod
    def label(self) -> str:
        """A name to show for the source."""

    def describe(self, verbose: bool = False) -> str:
        return "nothing to say"

    def sample_batches(self, batch_size: int) -> Iterator[Batch]:
        raise NotImplementedError


class GrownSqlFetcher(GrownFetcher, SqlFetcher):
    @property
    def label(self) -> str:
        return "shop items"

    def describe(self, verbose: bool = False) -> str:
        return "SQL, at length" if verbose else "SQL"

    def sample_batches(self, batch_size: int) -> Iterator[Batch]:
        return self.batches(None, batch_size)


@forwards_members_of(GrownFetcher)
class GrownWrapper(WrappedFetcher, GrownFetcher):
    """What `WrappedFetcher` is once `DataFetcher` has grown: no new code of its own."""


@forwards_members_of(GrownFetcher)
class GrownFailingFetcher(FailingFetcher, GrownFetcher):
    """What `FailingFetcher` is once `DataFetcher` has grown."""


def test_a_wrapped_fetcher_reads_the_rows_columns_and_watermark_of_the_inner_one(
    source: sa.Engine,
) -> None:
    items = SqlFetcher(source, SOURCE, TABLE)
    wrapped = WrappedFetcher(items)

    rows = [tuple(row) for batch in wrapped.batches(None, 2) for row in batch]

    assert rows == [(1, "a", 10), (2, "b", 20), (3, "c", 30)]
    assert [c.name for c in wrapped.columns] == ["id", "name", "changed"]
    assert wrapped.watermark_reached == items.watermark_reached == (30,)
    assert wrapped.parse_watermark("[20]") == (20,)


def test_no_member_of_the_fetcher_interface_is_left_at_its_default_on_the_wrapper() -> None:
    public = [name for name in dir(DataFetcher) if not name.startswith("_")]

    defaults = [
        name
        for name in public
        if inspect.getattr_static(WrappedFetcher, name) is inspect.getattr_static(DataFetcher, name)
    ]

    assert defaults == []


def test_keyword_arguments_of_batches_reach_the_inner_fetcher_through_every_wrapper() -> None:
    inner = KeywordFetcher()
    wrapped = FailingFetcher(inner, batches_before=1)

    with pytest.raises(SourceError, match="source connection lost"):
        list(wrapped.batches(None, 10, decoded=False))

    assert inner.options == {"decoded": False}
    assert wrapped.options == {"decoded": False}  # an attribute of the inner fetcher's own


def test_members_the_interface_gains_are_forwarded_even_where_it_gives_a_default(
    source: sa.Engine,
) -> None:
    inner = GrownSqlFetcher(source, SOURCE, TABLE)

    # mypy does not see the members the decorator adds, so it takes the class for abstract.
    wrapped = GrownWrapper(inner)  # type: ignore[abstract]

    assert wrapped.label == "shop items"
    assert wrapped.describe() == "SQL"
    assert wrapped.describe(verbose=True) == "SQL, at length"
    assert "label" not in GrownWrapper.__abstractmethods__


def test_a_member_the_interface_gains_that_yields_batches_fails_as_batches_does(
    source: sa.Engine,
) -> None:
    wrapped = GrownFailingFetcher(  # type: ignore[abstract]
        GrownSqlFetcher(source, SOURCE, TABLE), batches_before=1
    )

    with pytest.raises(SourceError, match="source connection lost"):
        list(wrapped.sample_batches(2))

    assert wrapped.batches_yielded == 1
