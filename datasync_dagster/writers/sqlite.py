"""The SQLite cache, the embedded default: a TEMP staging table and INSERT ... ON CONFLICT."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from datasync_dagster.fetchers.base import Batch, ColumnSpec
from datasync_dagster.writers.base import CacheWriter, MergeCounts, StagingTable
from datasync_dagster.writers.sql_decoding import SqlDecoder, SqliteDecoder


class SqliteWriter(CacheWriter):
    """Stages in the connection's TEMP schema, so loading never locks the cache file."""

    # A known shortcoming: SQLite has no exact decimal type and keeps NUMERIC values as 64-bit
    # floats, so a decimal of more than 15 significant digits comes back rounded. JDE amounts
    # (15 digits) stay exact; wider source decimals need a PostgreSQL or SQL Server cache.
    dialect_name = "sqlite"

    @property
    def sql_decoder(self) -> SqlDecoder:
        return SqliteDecoder()

    def staging_ref(self, staging: StagingTable) -> str:
        return f"temp.{self.q(staging.name)}"

    def staged_type(self, type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
        if isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float):
            return _StagedDecimal()
        return super().staged_type(type_)

    def raw_staging_ref(self, staging: StagingTable) -> str:
        return f"temp.{self.q(staging.name + '_raw')}"

    def create_staging(self, connection: sa.Connection, staging: StagingTable) -> None:
        super().create_staging(connection, staging)
        if staging.decoding is not None:
            self._create_temp(connection, f"{staging.name}_raw", staging.loaded_columns)

    def drop_staging(self, connection: sa.Connection, staging: StagingTable) -> None:
        if staging.decoding is not None:
            with connection.begin():
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {self.raw_staging_ref(staging)}")
        super().drop_staging(connection, staging)

    def _create_temp(
        self, connection: sa.Connection, name: str, columns: Sequence[ColumnSpec]
    ) -> None:
        sa.Table(
            name,
            sa.MetaData(),
            *[sa.Column(c.name, self.cache_type(c.type), nullable=True) for c in columns],
            prefixes=["TEMPORARY"],
        ).create(connection)

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
        processors = self._processors(staging.loaded_columns)
        if staging.decoding is not None:
            processors = [_keeping_non_finite(p) for p in processors]
        bound = batch
        if any(processors):
            bound = [
                tuple(p(v) if p else v for p, v in zip(processors, row, strict=True))
                for row in batch
            ]
        raw = staging.decoding is not None
        into = self.raw_staging_ref(staging) if raw else self.staging_ref(staging)
        marks = ", ".join("?" for _ in staging.loaded_columns)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(f"INSERT INTO {into} VALUES ({marks})", bound)
        if raw:
            self.decode_raw(connection, staging, self.staging_ref(staging), batch)

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

    def _processors(self, columns: Sequence[ColumnSpec]) -> list[Callable[[Any], Any] | None]:
        return [
            self.cache_type(c.type).dialect_impl(self.dialect).bind_processor(self.dialect)
            for c in columns
        ]


def _keeping_non_finite(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A decimal's bind processor that stages NaN and infinities as their text, not as NULL
    (which is what SQLite makes of a NaN): the decoding rules then see them and refuse them."""
    if processor is None:
        return None
    bind = processor

    def finite_or_text(value: Any) -> Any:
        if isinstance(value, Decimal) and not value.is_finite():
            return str(value)
        return bind(value)

    return finite_or_text


class _StagedDecimal(sa.types.TypeDecorator[Decimal]):
    """A staged raw decimal read back: a float or integer, or the text of a NaN or infinity."""

    impl = sa.types.NullType
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value) if isinstance(value, (int, str)) else Decimal(repr(value))
