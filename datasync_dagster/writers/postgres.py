"""The PostgreSQL cache: a TEMP staging table loaded by COPY, then MERGE."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from datasync_dagster.fetchers.base import Batch
from datasync_dagster.writers.base import CacheWriter, MergeCounts, StagingTable


class PostgresWriter(CacheWriter):
    """Stages in a TEMP table (no WAL, gone with its connection) and merges with MERGE."""

    dialect_name = "postgresql"

    def staging_ref(self, staging: StagingTable) -> str:
        return self.q(staging.name)

    def load(self, connection: sa.Connection, staging: StagingTable, batch: Batch) -> None:
        columns = ", ".join(self.q(name) for name in staging.column_names)
        cursor = _driver(connection).cursor()
        with cursor.copy(f"COPY {self.q(staging.name)} ({columns}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(row)

    def merge(
        self, connection: sa.Connection, staging: StagingTable, *, delete_missing: bool
    ) -> MergeCounts:
        connection.exec_driver_sql(f"ANALYZE {self.q(staging.name)}")
        savepoint = connection.begin_nested()
        try:
            upserted = connection.exec_driver_sql(self.merge_sql(staging)).rowcount
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.InternalError):
            savepoint.rollback()
            duplicates = self.duplicate_keys(connection, staging)
            if duplicates:
                self.raise_duplicates(staging, duplicates)
            raise
        savepoint.commit()

        deleted = 0
        if delete_missing:
            deleted = connection.exec_driver_sql(self.delete_missing_sql(staging)).rowcount
        return MergeCounts(upserted=max(upserted, 0), deleted=max(deleted, 0))

    def merge_sql(self, staging: StagingTable) -> str:
        """Insert new keys, and update existing ones only where a value differs."""
        q = self.q
        keys_equal = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in staging.key_columns)
        columns = ", ".join(q(name) for name in staging.column_names)
        values = ", ".join(f"s.{q(name)}" for name in staging.column_names)
        sql = (
            f"MERGE INTO {self.table_name(staging.target)} AS t USING {q(staging.name)} AS s "
            f"ON {keys_equal} "
        )
        if staging.value_columns:
            changed = " OR ".join(
                f"t.{q(c)} IS DISTINCT FROM s.{q(c)}" for c in staging.value_columns
            )
            updates = ", ".join(f"{q(c)} = s.{q(c)}" for c in staging.value_columns)
            sql += f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {updates} "
        return sql + f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"

    def delete_missing_sql(self, staging: StagingTable) -> str:
        """Delete the cache rows whose keys the source no longer has: an anti-join."""
        keys_equal = " AND ".join(f"s.{self.q(k)} = t.{self.q(k)}" for k in staging.key_columns)
        return (
            f"DELETE FROM {self.table_name(staging.target)} AS t WHERE NOT EXISTS "
            f"(SELECT 1 FROM {self.q(staging.name)} AS s WHERE {keys_equal})"
        )


def _driver(connection: sa.Connection) -> Any:
    return connection.connection.driver_connection
