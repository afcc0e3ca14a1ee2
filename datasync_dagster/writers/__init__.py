"""Cache writers, one per dialect, and the engine each one expects."""

from __future__ import annotations

import importlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from datasync_dagster.errors import ConfigError
from datasync_dagster.writers.base import CacheWriter, MergeCounts, Staging, StagingTable

__all__ = [
    "CacheWriter",
    "MergeCounts",
    "Staging",
    "StagingTable",
    "create_cache_engine",
    "writer_for",
]

# Dialect name to the writer class; modules load on first use, so a driver is only needed
# where its cache is.
_WRITERS = {
    "sqlite": "datasync_dagster.writers.sqlite:SqliteWriter",
    "postgresql": "datasync_dagster.writers.postgres:PostgresWriter",
    "mssql": "datasync_dagster.writers.mssql:MssqlWriter",
}

SQLITE_BUSY_SECONDS = 120


def writer_for(
    engine: sa.Engine, schema: str | None = None, *, decode_in_sql: bool = True
) -> CacheWriter:
    """The writer for the cache database behind `engine`; with `decode_in_sql` off, JDE
    decoding is done in Python even where the dialect could do it in SQL."""
    name = engine.dialect.name
    if name not in _WRITERS:
        raise ConfigError(
            f"cache dialect `{name}` has no writer; use one of {sorted(_WRITERS)} for the cache"
        )
    module, _, cls = _WRITERS[name].partition(":")
    made = getattr(importlib.import_module(module), cls)
    writer: CacheWriter = made(engine, schema, decode_in_sql=decode_in_sql)
    return writer


def create_cache_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for the cache, set up as its writer needs (SQLite: WAL, real transactions)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS}, **kwargs)
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy (the driver would otherwise commit around DDL),
    # and let readers such as the health sensor read while a sync writes.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Switching a new file to WAL needs it to itself and does not wait for the busy timeout,
    # so processes opening a new cache at once retry for a moment.
    for attempt in range(50):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)


def _sqlite_begin(connection: sa.Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))
