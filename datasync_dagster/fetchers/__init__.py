"""Fetchers read source tables; `fetcher_for` picks the one a source's database needs.

- Oracle (JDE in production): `OracleFetcher`, SQLAlchemy over python-oracledb in thin mode.
- Sybase ASE (CMS in production), URL `sybase+pyodbc://`: `OdbcFetcher`, plain DBAPI over
  pyodbc and FreeTDS, since SQLAlchemy 2 has no ASE dialect.
- Any other SQLAlchemy URL (SQLite, PostgreSQL, MariaDB, SQL Server): `SqlFetcher`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.errors import SourceError
from datasync_dagster.fetchers.base import Batch, ColumnSpec, DataFetcher, Row, Watermark
from datasync_dagster.fetchers.sql import SqlFetcher

if TYPE_CHECKING:
    from datasync_dagster.fetchers.sybase import OdbcSource

__all__ = [
    "Batch",
    "ColumnSpec",
    "DataFetcher",
    "Row",
    "SourceEngine",
    "SqlFetcher",
    "Watermark",
    "create_source_engine",
    "fetcher_for",
]

# What `create_source_engine` makes: an SQLAlchemy engine, or for ASE an `OdbcSource`. Both
# are handed to `fetcher_for` and released with `dispose()`.
SourceEngine: TypeAlias = "sa.Engine | OdbcSource"

ASE_BACKEND = "sybase"


def create_source_engine(source: DataSourceConfig, **kwargs: Any) -> SourceEngine:
    """The engine of a source, from its URL (read from the environment where configured)."""
    url = make_url(source.resolve_url())
    backend = url.get_backend_name()
    if backend == ASE_BACKEND:
        from datasync_dagster.fetchers.sybase import ase_source

        return ase_source(url)
    if backend == "oracle":
        from datasync_dagster.fetchers.oracle import create_oracle_engine

        return create_oracle_engine(source, **kwargs)
    if backend == "sqlite":
        _require_file(source, url.database)
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _require_file(source: DataSourceConfig, database: str | None) -> None:
    # SQLite would create a missing file and then report that it has no tables.
    if database and database != ":memory:" and not Path(database).is_file():
        raise SourceError(
            f"source `{source.name}`: SQLite file `{database}` does not exist (relative paths "
            f"are read from the working directory, {Path.cwd()}); run from the folder the "
            "configuration expects, or for the demo run `datasync demo` first"
        )


def fetcher_for(engine: SourceEngine, source: DataSourceConfig, table: TableConfig) -> DataFetcher:
    """The fetcher of one configured table, for the kind of database behind `engine`."""
    if not isinstance(engine, sa.Engine):
        from datasync_dagster.fetchers.sybase import OdbcFetcher

        return OdbcFetcher(engine, source, table)
    if engine.dialect.name == "oracle":
        from datasync_dagster.fetchers.oracle import OracleFetcher

        return OracleFetcher(engine, source, table)
    return SqlFetcher(engine, source, table)
