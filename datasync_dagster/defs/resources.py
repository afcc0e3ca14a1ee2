"""Resources of the code location: the cache database and one resource per source database.

Engines are made once per process and kept, keyed by URL and working directory (an SQLite URL
may be relative), so every asset of a run shares one pool per database.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import dagster as dg
import sqlalchemy as sa

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import CacheConfig, DataSourceConfig, DataSyncConfig, TableConfig
from datasync_dagster.fetchers import (
    DataFetcher,
    SourceEngine,
    create_source_engine,
    fetcher_for,
)
from datasync_dagster.identifiers import checked
from datasync_dagster.writers import CacheWriter, create_cache_engine, writer_for

CACHE_KEY = "cache"

_engines: dict[tuple[str, str, str], SourceEngine] = {}
_ensured: set[tuple[str, str, str | None]] = set()
_lock = threading.Lock()


def source_key(source: str) -> str:
    """The resource key of a source: `source_<name>`."""
    return f"source_{source}"


class CacheResource(dg.ConfigurableResource):
    """The cache database: its engine, the writer of its dialect and its `DataUpdate` log."""

    url: str
    db_schema: str | None = None
    decode_in_sql: bool = True

    @property
    def engine(self) -> sa.Engine:
        engine = _shared_engine("cache", self.url, create_cache_engine)
        assert isinstance(engine, sa.Engine)
        return engine

    def writer(self) -> CacheWriter:
        """The cache writer of this database's dialect."""
        return writer_for(self.engine, self.db_schema, decode_in_sql=self.decode_in_sql)

    def audit(self) -> AuditLog:
        """The `DataUpdate` log, created in the cache the first time a process asks for it."""
        audit = AuditLog(self.engine, self.db_schema)
        marker = (self.url, os.getcwd(), self.db_schema)
        with _lock:
            if marker not in _ensured:
                audit.ensure()
                _ensured.add(marker)
        return audit

    def row_count(self, table: str) -> int:
        """The rows of a cache table, counted by the database."""
        target = sa.table(checked(table, "cache table"), schema=self.db_schema)
        with self.engine.connect() as connection:
            return int(connection.scalar(sa.select(sa.func.count()).select_from(target)) or 0)


class SourceResource(dg.ConfigurableResource):
    """One source database: its engine, and the fetchers of the tables read from it."""

    name: str
    url: str

    def engine(self, source: DataSourceConfig) -> SourceEngine:
        """The engine of this source; its settings (system, schema) shape how it is made."""

        def create(url: str) -> SourceEngine:
            # The URL comes from the resource, where Dagster resolved the environment variable.
            return create_source_engine(source.model_copy(update={"url": url, "url_env": None}))

        return _shared_engine(f"source {self.name}", self.url, create)

    def fetcher(self, source: DataSourceConfig, table: TableConfig) -> DataFetcher:
        """The fetcher of one configured table of this source."""
        return fetcher_for(self.engine(source), source, table)


def cache_resource(cache: CacheConfig) -> CacheResource:
    """The cache resource of a configuration."""
    return CacheResource(
        url=_url(cache), db_schema=cache.schema_, decode_in_sql=cache.decode_in_sql
    )


def source_resource(source: DataSourceConfig) -> SourceResource:
    """The resource of one source."""
    return SourceResource(name=source.name, url=_url(source))


def make_resources(config: DataSyncConfig) -> dict[str, dg.ConfigurableResource]:
    """Every resource the table assets need: `cache` and one `source_<name>` per source."""
    resources: dict[str, dg.ConfigurableResource] = {CACHE_KEY: cache_resource(config.cache)}
    for source in config.sources:
        resources[source_key(source.name)] = source_resource(source)
    return resources


def dispose_engines() -> None:
    """Dispose every engine this process made; the next use makes new ones."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _ensured.clear()


def _url(connection: CacheConfig | DataSourceConfig) -> str:
    # A URL from the environment stays an `EnvVar`: Dagster reads it when the run starts and
    # shows only the variable's name.
    if connection.url_env:
        return dg.EnvVar(connection.url_env)
    assert connection.url is not None
    return connection.url


def _shared_engine(role: str, url: str, create: Callable[[str], SourceEngine]) -> SourceEngine:
    key = (role, url, os.getcwd())
    with _lock:
        if key not in _engines:
            _engines[key] = create(url)
        return _engines[key]
