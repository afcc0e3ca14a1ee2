"""Fetchers read source tables; `fetcher_for` picks the one a source system needs."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.fetchers.base import Batch, ColumnSpec, DataFetcher, Row, Watermark
from datasync_dagster.fetchers.sql import SqlFetcher

__all__ = [
    "Batch",
    "ColumnSpec",
    "DataFetcher",
    "Row",
    "SqlFetcher",
    "Watermark",
    "create_source_engine",
    "fetcher_for",
]


def create_source_engine(source: DataSourceConfig, **kwargs: Any) -> sa.Engine:
    """An engine for a source, from its URL (read from the environment where configured)."""
    return sa.create_engine(source.resolve_url(), pool_pre_ping=True, **kwargs)


def fetcher_for(engine: sa.Engine, source: DataSourceConfig, table: TableConfig) -> DataFetcher:
    """The fetcher of one configured table."""
    return SqlFetcher(engine, source, table)
