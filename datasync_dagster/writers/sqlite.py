"""The SQLite cache, the embedded default: a TEMP staging table and INSERT ... ON CONFLICT."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from datasync_dagster.fetchers.base import Batch
from datasync_dagster.writers.base import CacheWriter, MergeCounts, StagingTable


class SqliteWriter(CacheWriter):
    """Stages in the connection's TEMP schema, so loading never locks the cache file."""

    # A known shortcoming: SQLite has no exact decimal type and keeps NUMERIC values as 64-bit
    # floats, so a decimal of more than 15 significant digits comes back rounded. JDE amounts
    # (15 digits) stay exact; wider source decimals need a PostgreSQL or SQL Server cache.
    dialect_name = "sqlite"

    def staging_ref(self, staging: StagingTable) -> str:
        return f"temp.{self.q(staging.name)}"

    @contextmanager
    def merge_transaction(self, connection: sa.Connection) -> Iterator[None]:
        # A deferred transaction that reads first fails at once, without waiting, when another
        # connection writes meanwhile; taking the write lock up front waits its turn instead.
        connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        try:
            with connection.begin():
                yield
        finally:
            connection.execution_options(sqlite_begin="BEGIN")

    def load(self, connection: sa.Connection, staging: StagingTable, batch: Batch) -> None:
        processors = self._processors(staging)
        if any(processors):
            batch = [
                tuple(p(v) if p else v for p, v in zip(processors, row, strict=True))
                for row in batch
            ]
        marks = ", ".join("?" for _ in staging.columns)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(f"INSERT INTO {self.staging_ref(staging)} VALUES ({marks})", batch)

    def merge(
        self, connection: sa.Connection, staging: StagingTable, *, delete_missing: bool
    ) -> MergeCounts:
        keys = ", ".join(self.q(k) for k in staging.key_columns)
        stage = self.staging_ref(staging)
        try:
            connection.exec_driver_sql(
                f"CREATE UNIQUE INDEX temp.{self.q(staging.name + '_key')} "
                f"ON {self.q(staging.name)} ({keys})"
            )
        except sa.exc.IntegrityError:
            self.raise_duplicates(staging, self.duplicate_keys(connection, staging))

        upserted = connection.exec_driver_sql(self.upsert_sql(staging)).rowcount
        deleted = 0
        if delete_missing:
            deleted = connection.exec_driver_sql(
                f"DELETE FROM {self.table_name(staging.target)} AS t WHERE NOT EXISTS "
                f"(SELECT 1 FROM {stage} AS s WHERE {self._keys_equal(staging)})"
            ).rowcount
        return MergeCounts(upserted=max(upserted, 0), deleted=max(deleted, 0))

    def upsert_sql(self, staging: StagingTable) -> str:
        """Insert new keys, and update existing ones only where a value differs."""
        target = self.table_name(staging.target)
        columns = ", ".join(self.q(name) for name in staging.column_names)
        keys = ", ".join(self.q(k) for k in staging.key_columns)
        sql = (
            f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {self.staging_ref(staging)} "
            f"WHERE true ON CONFLICT ({keys}) DO "
        )
        if not staging.value_columns:
            return sql + "NOTHING"
        updates = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in staging.value_columns)
        changed = " OR ".join(
            f"{target}.{self.q(c)} IS NOT excluded.{self.q(c)}" for c in staging.value_columns
        )
        return sql + f"UPDATE SET {updates} WHERE {changed}"

    def _keys_equal(self, staging: StagingTable) -> str:
        return " AND ".join(f"s.{self.q(k)} = t.{self.q(k)}" for k in staging.key_columns)

    def _processors(self, staging: StagingTable) -> list[Callable[[Any], Any] | None]:
        return [
            self.cache_type(c.type).dialect_impl(self.dialect).bind_processor(self.dialect)
            for c in staging.columns
        ]
