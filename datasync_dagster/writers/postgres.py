"""The PostgreSQL cache: batches go in by binary COPY, and a merge writes only what changed.

A new cache table without decimal columns is loaded straight from the batches, inside the one
transaction that creates it, and keyed at the end by one index build. Otherwise the batches
go into a TEMP staging table (no WAL, gone with its connection) and are merged from there: into
a new or empty cache table by one INSERT, and for a Mass sync by difference, comparing the
staged rows with the cache table in one hash full join and writing only the rows that differ,
so that unchanged rows leave no dead tuples and no index churn behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa

from datasync_dagster.errors import SchemaMismatch
from datasync_dagster.fetchers.base import Batch, ColumnSpec
from datasync_dagster.writers import postgres_copy
from datasync_dagster.writers.base import CacheWriter, MergeCounts, Staging, StagingTable
from datasync_dagster.writers.sql_decoding import PostgresDecoder, SqlDecoder

log = logging.getLogger(__name__)

# Settings of the merge transaction. The merges hash whole tables: enough memory keeps the hash
# in one batch; sorting string keys for a merge join costs more than hashing them, and the
# staging table is never analysed (ANALYZE costs more than it saves), so the planner is told;
# and the JIT compiles for longer than these single scans run.
MERGE_SETTINGS = {"work_mem": "128MB", "enable_mergejoin": "off", "jit": "off"}

# The kinds of row in a Mass sync's table of differences.
_NEW, _CHANGED, _GONE = "I", "U", "D"


class PostgresWriter(CacheWriter):
    """Loads by binary COPY and merges by difference."""

    dialect_name = "postgresql"

    @property
    def sql_decoder(self) -> SqlDecoder:
        return PostgresDecoder()

    def begin_staging(self, connection: sa.Connection, staging: StagingTable) -> Staging:
        if _has_view(staging):
            return super().begin_staging(connection, staging)
        connection.begin()
        if sa.inspect(connection).has_table(staging.target, schema=self.schema):
            connection.rollback()
            return super().begin_staging(connection, staging)
        self.create_keyless(connection, staging)
        if staging.decoding is not None:
            self.create_raw(connection, staging)
        return _FirstLoad(self, connection, staging)

    def create_staging(self, connection: sa.Connection, staging: StagingTable) -> None:
        """Staging columns take the wide types of `postgres_copy.wide`, and where decimals are
        staged as text, the view `staging_ref` names reads them as the cache's types. Rows
        decoded here arrive by INSERT, so they are staged in the cache's own types."""
        if staging.decoding is not None:
            self._create_temp(connection, staging.name, staging.columns, widen=False)
            self.create_raw(connection, staging)
            return
        self._create_temp(connection, staging.name, staging.columns, widen=True)
        if _has_view(staging):
            columns = ", ".join(
                f"{self.q(c.name)}::{self._type_sql(c)} AS {self.q(c.name)}"
                if text
                else self.q(c.name)
                for c, text in zip(staging.columns, _as_text(staging.columns), strict=True)
            )
            connection.exec_driver_sql(
                f"CREATE TEMPORARY VIEW {self.staging_ref(staging)} AS "
                f"SELECT {columns} FROM {self.q(staging.name)}"
            )

    def create_raw(self, connection: sa.Connection, staging: StagingTable) -> None:
        """The TEMP table each batch of raw rows is copied into, to be decoded from there."""
        self._create_temp(connection, f"{staging.name}_raw", staging.loaded_columns, widen=True)

    def _create_temp(
        self,
        connection: sa.Connection,
        name: str,
        columns: Sequence[ColumnSpec],
        *,
        widen: bool,
    ) -> None:
        types = [self.cache_type(c.type) for c in columns]
        sa.Table(
            name,
            sa.MetaData(),
            *[
                sa.Column(c.name, postgres_copy.wide(t) if widen else t)
                for c, t in zip(columns, types, strict=True)
            ],
            prefixes=["TEMPORARY"],
        ).create(connection)

    def raw_ref(self, staging: StagingTable, i: int) -> str:
        """A raw column; a decimal staged as text is read as NUMERIC."""
        assert staging.decoding is not None
        column = staging.decoding.raw_columns[i]
        text = postgres_copy.staged_as_text(self.cache_type(column.type))
        return f"{self.q(column.name)}::numeric" if text else self.q(column.name)

    def empty_raw(self, connection: sa.Connection, staging: StagingTable) -> None:
        connection.exec_driver_sql(f"TRUNCATE {self.raw_staging_ref(staging)}")

    def _type_sql(self, column: ColumnSpec) -> str:
        return str(self.cache_type(column.type).compile(dialect=self.dialect))

    def staging_ref(self, staging: StagingTable) -> str:
        """The staged rows as the merge reads them: the view over the staging table, if any."""
        if _has_view(staging):
            return self.q(f"{staging.name}_v")
        return self.q(staging.name)

    def drop_staging(self, connection: sa.Connection, staging: StagingTable) -> None:
        try:
            with connection.begin():
                if _has_view(staging):
                    connection.exec_driver_sql(f"DROP VIEW IF EXISTS {self.staging_ref(staging)}")
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {self.q(staging.name)}")
                if staging.decoding is not None:
                    connection.exec_driver_sql(
                        f"DROP TABLE IF EXISTS {self.raw_staging_ref(staging)}"
                    )
        except sa.exc.SQLAlchemyError:
            log.warning("could not drop staging table %s", staging.name, exc_info=True)

    def prepare_cache_table(self, connection: sa.Connection, staging: StagingTable) -> None:
        """A missing cache table is created without its key, which `merge` adds after the one
        INSERT that fills it."""
        if sa.inspect(connection).has_table(staging.target, schema=self.schema):
            super().prepare_cache_table(connection, staging)
        else:
            self.create_keyless(connection, staging)

    def create_keyless(self, connection: sa.Connection, staging: StagingTable) -> None:
        keyed = self.cache_table(staging)
        sa.Table(
            keyed.name,
            sa.MetaData(),
            *[sa.Column(c.name, c.type, nullable=c.nullable) for c in keyed.columns],
            schema=keyed.schema,
        ).create(connection)
        log.info("created cache table %s", staging.target)

    def load(self, connection: sa.Connection, staging: StagingTable, batch: Batch) -> None:
        self.load_into(connection, self.q(staging.name), staging, batch)

    def load_into(
        self, connection: sa.Connection, into: str, staging: StagingTable, batch: Batch
    ) -> None:
        """Load one batch into the table `into` (quoted); raw rows go through the raw table."""
        as_text = _as_text(staging.loaded_columns)
        if staging.decoding is None:
            self.copy_rows(connection, into, staging, batch, as_text)
            return
        self.copy_rows(connection, self.raw_staging_ref(staging), staging, batch, as_text)
        self.decode_raw(connection, staging, into, batch)

    def copy_rows(
        self,
        connection: sa.Connection,
        into: str,
        staging: StagingTable,
        batch: Batch,
        as_text: list[bool],
    ) -> None:
        """COPY one batch into the table `into` (quoted): in binary where every column has an
        exact binary form, as text when a value does not fit its column's binary form."""
        names = [column.name for column in staging.loaded_columns]
        statement = f"COPY {into} ({', '.join(self.q(name) for name in names)}) FROM STDIN"
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        types = postgres_copy.binary_types(cursor, into, names, as_text)
        if types is not None:
            savepoint = connection.begin_nested()
            try:
                postgres_copy.copy_binary(cursor, statement, types, batch)
            except (TypeError, ValueError, OverflowError) as e:
                savepoint.rollback()
                log.info("writing a batch into %s as text: %s", into, e)
            else:
                savepoint.commit()
                return
        postgres_copy.copy_text(cursor, statement, batch)

    def merge(
        self, connection: sa.Connection, staging: StagingTable, *, delete_missing: bool
    ) -> MergeCounts:
        for name, value in MERGE_SETTINGS.items():
            connection.exec_driver_sql(f"SET LOCAL {name} = '{value}'")
        if self._is_empty(connection, staging):
            return MergeCounts(upserted=self._insert_all(connection, staging), deleted=0)
        if not delete_missing:
            duplicates = self.duplicate_keys(connection, staging)
            if duplicates:
                self.raise_duplicates(staging, duplicates)
            upserted = self._merge_from(connection, staging, self.staging_ref(staging))
            return MergeCounts(upserted=upserted, deleted=0)
        return self._merge_differences(connection, staging)

    def merge_sql(self, staging: StagingTable, source: str) -> str:
        """Insert new keys, and update existing ones only where a value differs."""
        q = self.q
        columns = ", ".join(q(name) for name in staging.column_names)
        values = ", ".join(f"s.{q(name)}" for name in staging.column_names)
        sql = (
            f"MERGE INTO {self.table_name(staging.target)} AS t USING {source} AS s "
            f"ON {self._keys_equal(staging)} "
        )
        if staging.value_columns:
            updates = ", ".join(f"{q(c)} = s.{q(c)}" for c in staging.value_columns)
            sql += f"WHEN MATCHED AND ({self._differs(staging)}) THEN UPDATE SET {updates} "
        return sql + f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"

    def differences_sql(self, staging: StagingTable, flag: str) -> str:
        """The staged rows that are new or differ from the cache, and the keys of the cache rows
        the source no longer has, each marked by its kind in the column `flag`."""
        q = self.q
        present = q(staging.key_columns[0])
        keys = {key.upper() for key in staging.key_columns}
        columns = ", ".join(
            f"COALESCE(s.{q(c)}, t.{q(c)}) AS {q(c)}" if c.upper() in keys else f"s.{q(c)}"
            for c in staging.column_names
        )
        kind = (
            f"CASE WHEN t.{present} IS NULL THEN '{_NEW}' WHEN s.{present} IS NULL "
            f"THEN '{_GONE}' ELSE '{_CHANGED}' END"
        )
        differs = f" OR ({self._differs(staging)})" if staging.value_columns else ""
        return (
            f"SELECT {columns}, {kind} AS {q(flag)} "
            f"FROM {self.staging_ref(staging)} AS s FULL JOIN {self.table_name(staging.target)} "
            f"AS t ON {self._keys_equal(staging)} "
            f"WHERE t.{present} IS NULL OR s.{present} IS NULL{differs}"
        )

    def _merge_differences(self, connection: sa.Connection, staging: StagingTable) -> MergeCounts:
        q, target = self.q, self.table_name(staging.target)
        staged, cached = connection.exec_driver_sql(
            f"SELECT (SELECT COUNT(*) FROM {q(staging.name)}), (SELECT COUNT(*) FROM {target})"
        ).one()

        differences, flag = f"{staging.name}_d", _flag_name(staging)
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {q(differences)} ON COMMIT DROP AS "
            + self.differences_sql(staging, flag)
        )
        counts: dict[str, int] = dict(
            connection.exec_driver_sql(
                f"SELECT {q(flag)}, COUNT(*) FROM {q(differences)} GROUP BY {q(flag)}"
            ).all()
        )
        new, gone = counts.get(_NEW, 0), counts.get(_GONE, 0)

        # Without repeated keys, every staged row that is not new meets its own cache row, and
        # every cache row that is not gone meets one staged row: the two numbers agree.
        if staged - new != cached - gone:
            self._raise_repeated_keys(connection, staging)

        if gone:
            connection.exec_driver_sql(
                f"DELETE FROM {target} AS t USING {q(differences)} AS s "
                f"WHERE s.{q(flag)} = '{_GONE}' AND {self._keys_equal(staging)}"
            )
        upserted = new + counts.get(_CHANGED, 0)
        if upserted:
            source = f"(SELECT * FROM {q(differences)} WHERE {q(flag)} <> '{_GONE}')"
            self._merge_from(connection, staging, source)
        return MergeCounts(upserted=upserted, deleted=gone)

    def _merge_from(self, connection: sa.Connection, staging: StagingTable, source: str) -> int:
        with self._refusing_duplicates(connection, staging):
            upserted = connection.exec_driver_sql(self.merge_sql(staging, source)).rowcount
        return max(upserted, 0)

    def _insert_all(self, connection: sa.Connection, staging: StagingTable) -> int:
        """Fill the empty cache table with one INSERT; key it if it was made without its key."""
        columns = ", ".join(self.q(name) for name in staging.column_names)
        target = self.table_name(staging.target)
        with self._refusing_duplicates(connection, staging):
            inserted = connection.exec_driver_sql(
                f"INSERT INTO {target} ({columns}) "
                f"SELECT {columns} FROM {self.staging_ref(staging)}"
            ).rowcount
        if not self._has_primary_key(connection, target):
            add_primary_key(self, connection, staging)
        return max(inserted, 0)

    def _is_empty(self, connection: sa.Connection, staging: StagingTable) -> bool:
        target = self.table_name(staging.target)
        return not connection.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {target})").scalar()

    def _has_primary_key(self, connection: sa.Connection, target: str) -> bool:
        return bool(
            connection.exec_driver_sql(
                "SELECT EXISTS (SELECT 1 FROM pg_index "
                "WHERE indrelid = %(target)s::regclass AND indisprimary)",
                {"target": target},
            ).scalar()
        )

    @contextmanager
    def _refusing_duplicates(
        self, connection: sa.Connection, staging: StagingTable
    ) -> Iterator[None]:
        """A savepoint around a statement that a repeated key fails: the failure becomes
        `DuplicateKeys` naming the keys; other failures pass unchanged."""
        savepoint = connection.begin_nested()
        try:
            yield
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.InternalError):
            savepoint.rollback()
            duplicates = self.duplicate_keys(connection, staging)
            if duplicates:
                self.raise_duplicates(staging, duplicates)
            raise
        savepoint.commit()

    def _raise_repeated_keys(self, connection: sa.Connection, staging: StagingTable) -> None:
        duplicates = self.duplicate_keys(connection, staging)
        if duplicates:
            self.raise_duplicates(staging, duplicates)
        raise SchemaMismatch(
            f"cache table `{staging.target}` holds several rows with the same key "
            f"({', '.join(staging.key_columns)}); give it a primary key on them, or drop it "
            "so that the next sync creates it afresh"
        )

    def _keys_equal(self, staging: StagingTable) -> str:
        return " AND ".join(f"t.{self.q(k)} = s.{self.q(k)}" for k in staging.key_columns)

    def _differs(self, staging: StagingTable) -> str:
        return " OR ".join(
            f"t.{self.q(c)} IS DISTINCT FROM s.{self.q(c)}" for c in staging.value_columns
        )


class _FirstLoad(Staging):
    """A cache table created by this sync, loaded straight from the batches in the transaction
    that created it; its key is built once at the end, which also finds repeated keys."""

    def load(self, batch: Batch) -> None:
        if batch:
            writer = self._writer
            assert isinstance(writer, PostgresWriter)
            with self.refusing_bad_values():
                into = writer.table_name(self.table.target)
                writer.load_into(self._connection, into, self.table, batch)
            self.rows += len(batch)

    def merge(self, *, delete_missing: bool) -> MergeCounts:
        with self.refusing_bad_values():
            add_primary_key(self._writer, self._connection, self.table)
            self._connection.commit()
        return MergeCounts(upserted=self.rows, deleted=0)


def add_primary_key(writer: CacheWriter, connection: sa.Connection, staging: StagingTable) -> None:
    """Key the cache table, as CREATE TABLE would have; repeated keys raise `DuplicateKeys`."""
    keys = ", ".join(writer.q(k) for k in staging.key_columns)
    target = writer.table_name(staging.target)
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(f"ALTER TABLE {target} ADD PRIMARY KEY ({keys})")
    except sa.exc.IntegrityError:
        savepoint.rollback()
        repeated = connection.exec_driver_sql(
            f"SELECT {keys} FROM {target} GROUP BY {keys} HAVING COUNT(*) > 1 "
            f"ORDER BY {keys} LIMIT 5"
        )
        writer.raise_duplicates(staging, [tuple(row) for row in repeated])
    savepoint.commit()


def _as_text(columns: Sequence[ColumnSpec]) -> list[bool]:
    """Which of these columns are staged as text."""
    return [postgres_copy.staged_as_text(column.type) for column in columns]


def _has_view(staging: StagingTable) -> bool:
    """Whether the merge reads the staged rows through a view: decimals staged as text."""
    return staging.decoding is None and any(_as_text(staging.columns))


def _flag_name(staging: StagingTable) -> str:
    """A column name for the kind of difference that no synced column has."""
    taken = {name.upper() for name in staging.column_names}
    name = "datasync_change"
    while name.upper() in taken:
        name += "_"
    return name
