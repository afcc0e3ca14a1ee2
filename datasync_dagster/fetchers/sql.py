"""A fetcher over SQLAlchemy that streams a source table with a server-side cursor."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.errors import SourceError
from datasync_dagster.fetchers.base import Batch, ColumnSpec, Watermark
from datasync_dagster.fetchers.decoding import generic_type
from datasync_dagster.fetchers.planned import PlannedFetcher
from datasync_dagster.identifiers import checked

log = logging.getLogger(__name__)


class SqlFetcher(PlannedFetcher):
    """Reads one configured table from a source database, decoding it by the table's rules."""

    def __init__(self, engine: sa.Engine, source: DataSourceConfig, table: TableConfig):
        self._engine = engine
        self._source = source
        self._table = table
        super().__init__(self._reflect(), source, table)

    def select(self, since: Watermark | None) -> sa.Select[Any]:
        """The statement that reads the rows at or past `since` (from `read_start(since)`)."""
        source = sa.table(
            self._table.source_table,
            *[sa.column(c.source_name or c.name, c.type) for c in self._raw],
            schema=self._source.schema_,
        )
        statement = sa.select(*source.columns)
        if since is not None:
            statement = statement.where(self._at_or_past(source, self.read_start(since)))
        return statement

    def read(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        statement = self.select(since)
        with self._engine.connect() as connection:
            result = connection.execution_options(
                stream_results=True, max_row_buffer=self._source.fetch_size
            ).execute(statement)
            while raw := result.fetchmany(batch_size):
                yield raw
                del raw

    def close(self) -> None:
        """The engine belongs to whoever made it; a fetcher disposes nothing."""

    def _reflect(self) -> list[ColumnSpec]:
        name, schema = self._table.source_table, self._source.schema_
        checked(name, f"table `{self._table.name}`: source_table")
        try:
            reflected = sa.inspect(self._engine).get_columns(name, schema=schema)
        except NoSuchTableError:
            reflected = []
        except SQLAlchemyError as e:
            raise SourceError(
                f"source `{self._source.name}`: cannot read the columns of `{name}`: {e}"
            ) from e
        if not reflected:
            where = f"schema `{schema}`" if schema else "its default schema"
            raise SourceError(
                f"source `{self._source.name}` has no table `{name}` in {where}; "
                f"check `source_table` of table `{self._table.name}` and the source's `schema`"
            )
        wanted = self._table.columns
        by_name = {column["name"].upper(): column for column in reflected}
        if wanted is not None:
            missing = [c for c in wanted if c.upper() not in by_name]
            if missing:
                raise SourceError(
                    f"table `{self._table.name}`: source table `{name}` has no columns "
                    f"{missing}; fix `columns`, or drop it to sync all {sorted(by_name)}"
                )
            reflected = [by_name[c.upper()] for c in wanted]
        keys = {k.upper() for k in self._table.key_columns}
        return [self._column_spec(dict(column), keys) for column in reflected]

    def _column_spec(self, column: dict[str, Any], keys: set[str]) -> ColumnSpec:
        source_name = column["name"]
        name = self._cache_name(source_name)
        return ColumnSpec(
            name=checked(name, f"table `{self._table.name}`: column"),
            type=generic_type(column["type"]),
            nullable=bool(column.get("nullable", True)) and name.upper() not in keys,
            source_name=source_name,
        )

    def _cache_name(self, source_name: str) -> str:
        # Dialects that fold names (Oracle) report them in lower case; the cache keeps the
        # source's own spelling, as the configuration writes it.
        if self._engine.dialect.requires_name_normalize and source_name.islower():
            return source_name.upper()
        return source_name

    def _at_or_past(self, source: sa.TableClause, start: Watermark) -> sa.ColumnElement[bool]:
        # `start` has a value for each of the leading watermark columns it compares.
        columns = [source.columns[i] for i in self._watermark_at[: len(start)]]
        if len(columns) == 1:
            return columns[0] >= start[0]
        # Lexicographic "at or past": (c1 > v1) or (c1 = v1 and c2 >= v2) ..., led by c1 >= v1
        # so that an index on the watermark columns serves the query.
        alternatives = []
        for depth in range(len(columns)):
            equal = [columns[j] == start[j] for j in range(depth)]
            last = (
                columns[depth] >= start[depth]
                if depth == len(columns) - 1
                else (columns[depth] > start[depth])
            )
            alternatives.append(sa.and_(*equal, last))
        return sa.and_(columns[0] >= start[0], sa.or_(*alternatives))
