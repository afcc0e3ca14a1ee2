"""Shared fixtures: throwaway databases on the machine's servers, SQLite files, disposed engines.

- `pg_url`, `mariadb_url`: the SQLAlchemy URL of a fresh database of its own, dropped after the
  test. A server that is down fails the test with a message saying so (never a skip).
- `pg_databases`, `mariadb_databases`: the same for tests that need several databases; call
  `.create()` for each.
- `sqlite_url`: call it with a name for the URL of an SQLite file under the test's `tmp_path`.
- `make_engine`, `make_cache_engine`: engines that are disposed after the test.
- `cache_engine`, `source_engine` (`fixtures/dialects.py`): a test runs once per dialect.

The JDE-shaped source table and other helpers are in `datasync_dagster_tests.fixtures`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datasync_dagster.writers import create_cache_engine
from datasync_dagster_tests.fixtures.servers import (
    MARIADB_ADMIN_URL,
    POSTGRES_ADMIN_URL,
    ServerDatabases,
    server_databases,
    sqlite_file_url,
)

# `cache_engine` and `source_engine`, once per dialect.
pytest_plugins = ["datasync_dagster_tests.fixtures.dialects"]


@pytest.fixture
def pg_databases() -> Iterator[ServerDatabases]:
    """Creates PostgreSQL databases `datasync_test_<hex>`, all dropped WITH (FORCE) after."""
    with server_databases(POSTGRES_ADMIN_URL, "PostgreSQL") as databases:
        yield databases


@pytest.fixture
def pg_url(pg_databases: ServerDatabases) -> str:
    """The URL of a fresh PostgreSQL database of this test's own."""
    return pg_databases.create()


@pytest.fixture
def mariadb_databases() -> Iterator[ServerDatabases]:
    """Creates MariaDB databases `datasync_test_<hex>`, all dropped after."""
    with server_databases(MARIADB_ADMIN_URL, "MariaDB") as databases:
        yield databases


@pytest.fixture
def mariadb_url(mariadb_databases: ServerDatabases) -> str:
    """The URL of a fresh MariaDB database of this test's own."""
    return mariadb_databases.create()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Callable[[str], str]:
    """`sqlite_url("cache")` is the URL of `<tmp_path>/cache.sqlite`."""

    def url(name: str = "cache") -> str:
        return sqlite_file_url(tmp_path / f"{name}.sqlite")

    return url


@pytest.fixture
def make_engine() -> Iterator[Callable[..., sa.Engine]]:
    """`make_engine(url, **kwargs)`: a plain SQLAlchemy engine, disposed after the test."""
    engines: list[sa.Engine] = []

    def make(url: str, **kwargs: Any) -> sa.Engine:
        engine = sa.create_engine(url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def make_cache_engine() -> Iterator[Callable[..., sa.Engine]]:
    """`make_cache_engine(url)`: an engine set up as the cache needs, disposed after the test."""
    engines: list[sa.Engine] = []

    def make(url: str, **kwargs: Any) -> sa.Engine:
        engine = create_cache_engine(url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
