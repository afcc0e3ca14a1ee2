"""What every cache writer does: stage the rows of one sync, then merge them in one transaction."""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NoReturn

import sqlalchemy as sa

from datasync_dagster.errors import (
    CacheRefusedValue,
    DecodeError,
    DuplicateKeys,
    SchemaMismatch,
)
from datasync_dagster.fetchers.base import Batch, ColumnSpec
from datasync_dagster.fetchers.decoding import DecodePlan
from datasync_dagster.identifiers import checked, qualified, quote
from datasync_dagster.writers import drift
from datasync_dagster.writers.sql_decoding import SqlDecoder

log = logging.getLogger(__name__)

_DUPLICATES_SHOWN = 5


@dataclass(frozen=True)
class MergeCounts:
    """What a merge did to the cache table."""

    upserted: int
    deleted: int


@dataclass(frozen=True)
class StagingTable:
    """The staging table of one sync and the cache table it merges into."""

    name: str
    target: str
    schema: str | None
    columns: Sequence[ColumnSpec]
    key_columns: Sequence[str]
    # Set when the cache decodes in SQL: the staging table then holds the raw columns.
    decoding: DecodePlan | None = None

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def loaded_columns(self) -> Sequence[ColumnSpec]:
        """The columns of the rows loaded: the raw ones when the cache decodes them."""
        return self.columns if self.decoding is None else self.decoding.raw_columns

    @property
    def value_columns(self) -> list[str]:
        keys = {key.upper() for key in self.key_columns}
        return [name for name in self.column_names if name.upper() not in keys]


class CacheWriter(ABC):
    """Writes syncs into one cache database. Each dialect is one subclass in its own module."""

    dialect_name: ClassVar[str]

    def __init__(self, engine: sa.Engine, schema: str | None = None, *, decode_in_sql: bool = True):
        self.engine = engine
        self.schema = schema
        self.dialect = engine.dialect
        self.decode_in_sql = decode_in_sql

    def q(self, name: str) -> str:
        """A quoted identifier of this cache's dialect."""
        return quote(self.dialect, name)

    @property
    def sql_decoder(self) -> SqlDecoder | None:
        """The SQL this dialect decodes JDE values with, if it has one."""
        return None

    def decodes(self, plan: DecodePlan) -> bool:
        """Whether this cache decodes `plan` in SQL, from raw staged rows: when its dialect can,
        unless `decode_in_sql` was turned off."""
        decoder = self.sql_decoder
        return self.decode_in_sql and decoder is not None and decoder.can_decode(plan)

    def table_name(self, name: str) -> str:
        """A quoted cache table name with its schema."""
        return qualified(self.dialect, name, self.schema)

    @contextmanager
    def staging(
        self,
        target: str,
        columns: Sequence[ColumnSpec],
        key_columns: Sequence[str],
        *,
        decoding: DecodePlan | None = None,
    ) -> Iterator[Staging]:
        """Hold one connection with a new staging table for a sync into `target`.

        The caller loads batches and calls `merge`, whose one transaction is the only one that
        touches the cache table: leaving the block any other way leaves the cache table exactly
        as it was. The staging table is dropped on every path. With `decoding` (which
        `decodes` must accept), batches hold raw rows, decoded in SQL by the merge.
        """
        checked(target, "cache table")
        staging = StagingTable(
            name=self.staging_name(target),
            target=target,
            schema=self.schema,
            columns=columns,
            key_columns=_keys_as_columns(key_columns, columns, target),
            decoding=decoding,
        )
        with self.engine.connect() as connection:
            try:
                yield self.begin_staging(connection, staging)
            finally:
                self._release(connection, staging)

    def _release(self, connection: sa.Connection, staging: StagingTable) -> None:
        """Roll back what is still open and drop the staging table.

        A connection stopped in the middle of a statement (a signal during a bulk load) can do
        neither; it is discarded instead, and its TEMP staging table ends with its session.
        """
        try:
            if connection.in_transaction():
                connection.rollback()
        except Exception:
            log.warning(
                "discarding the connection of staging table %s", staging.name, exc_info=True
            )
            connection.invalidate()
            return
        self.drop_staging(connection, staging)

    def begin_staging(self, connection: sa.Connection, staging: StagingTable) -> Staging:
        """Create the staging table and return the handle the sync loads it through; a dialect
        may load a cache table that does not exist yet straight into it instead."""
        with connection.begin():
            self.create_staging(connection, staging)
        return Staging(self, connection, staging)

    @contextmanager
    def merge_transaction(self, connection: sa.Connection) -> Iterator[None]:
        """The transaction of the merge; dialects that must lock up front override it."""
        with connection.begin():
            yield

    def staging_name(self, target: str) -> str:
        """A staging table name unique to this sync: the cache table's name and a random suffix."""
        return f"stg_{target[:40]}_{uuid.uuid4().hex[:12]}"

    def prepare_cache_table(self, connection: sa.Connection, staging: StagingTable) -> None:
        """Create the cache table when it is missing; when it exists, refuse a sync it no longer
        fits (`drift.check_cache_table`) and add the columns the source has gained."""
        inspector = sa.inspect(connection)
        if not inspector.has_table(staging.target, schema=self.schema):
            self.cache_table(staging).create(connection)
            log.info("created cache table %s", staging.target)
            return
        drift.check_cache_table(self, inspector, staging)
        present = {c["name"].upper() for c in inspector.get_columns(staging.target, self.schema)}
        for column in staging.columns:
            if column.name.upper() not in present:
                self.add_column(connection, staging, column)

    def cache_table(self, staging: StagingTable) -> sa.Table:
        """The cache table as SQLAlchemy creates it: the source columns, keyed by the keys."""
        keys = {key.upper() for key in staging.key_columns}
        return sa.Table(
            staging.target,
            sa.MetaData(),
            *[
                sa.Column(
                    c.name,
                    self.cache_type(c.type),
                    nullable=c.nullable and c.name.upper() not in keys,
                    primary_key=c.name.upper() in keys,
                    autoincrement=False,
                )
                for c in staging.columns
            ],
            schema=self.schema,
        )

    def cache_type(self, type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
        """The type a cache column gets for a decoded source type; dialects refine it."""
        return type_

    def staged_type(self, type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
        """The type a staged raw value of source type `type_` is read back as."""
        return self.cache_type(type_)

    def add_column(
        self, connection: sa.Connection, staging: StagingTable, column: ColumnSpec
    ) -> None:
        type_sql = self.cache_type(column.type).compile(dialect=self.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {self.table_name(staging.target)} ADD {self.q(column.name)} {type_sql}"
        )
        log.warning(
            "cache table %s gained column %s from the source; rows this sync does not read "
            "stay NULL there until a Mass sync reads them",
            staging.target,
            column.name,
        )

    def drop_staging(self, connection: sa.Connection, staging: StagingTable) -> None:
        """Drop the staging table if it still exists; never raise over the sync's own error."""
        try:
            with connection.begin():
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {self.staging_ref(staging)}")
        except sa.exc.SQLAlchemyError:
            log.warning("could not drop staging table %s", staging.name, exc_info=True)

    def duplicate_keys(
        self, connection: sa.Connection, staging: StagingTable
    ) -> list[tuple[Any, ...]]:
        """A few keys that occur more than once in the staging table."""
        keys = ", ".join(self.q(k) for k in staging.key_columns)
        rows = connection.exec_driver_sql(
            f"SELECT {keys} FROM {self.staging_ref(staging)} GROUP BY {keys} "
            f"HAVING COUNT(*) > 1 ORDER BY {keys}"
        ).fetchmany(_DUPLICATES_SHOWN)
        return [tuple(row) for row in rows]

    def raise_duplicates(self, staging: StagingTable, keys: list[tuple[Any, ...]]) -> None:
        raise DuplicateKeys(
            f"cache table `{staging.target}`: the source repeats key "
            f"({', '.join(staging.key_columns)}) for {keys}; the key columns must identify one "
            "row each: fix `key_columns` or the source rows"
        )

    @abstractmethod
    def staging_ref(self, staging: StagingTable) -> str:
        """How SQL names the staging table."""

    def raw_ref(self, staging: StagingTable, i: int) -> str:
        """How SQL names raw column `i` of a staging table that holds raw rows."""
        assert staging.decoding is not None
        return self.q(staging.decoding.raw_columns[i].name)

    def raw_staging_ref(self, staging: StagingTable) -> str:
        """How SQL names the table the raw rows of one batch are loaded into."""
        return self.q(f"{staging.name}_raw")

    def decode_raw(
        self, connection: sa.Connection, staging: StagingTable, into: str, batch: Batch
    ) -> None:
        """Decode the raw rows of `batch`, just loaded, into the table `into` (quoted), and empty
        the raw table for the next batch. A value a decoding rule refuses raises `DecodeError`.

        Decoding batch by batch lets the server decode one batch while the next is read. The
        one INSERT leaves out refused rows, so that their check costs no scan of its own; when
        it inserts fewer rows than were loaded, the batch is decoded in Python for the error,
        which so reads as it would on a cache that decodes in Python."""
        plan, decoder = staging.decoding, self.sql_decoder
        assert plan is not None and decoder is not None
        ref = partial(self.raw_ref, staging)
        refused = decoder.refused(plan, ref)
        columns = ", ".join(self.q(name) for name in staging.column_names)
        inserted = connection.exec_driver_sql(
            f"INSERT INTO {into} ({columns}) SELECT {', '.join(decoder.values(plan, ref))} "
            f"FROM {self.raw_staging_ref(staging)}" + (f" WHERE NOT ({refused})" if refused else "")
        ).rowcount
        if inserted < len(batch):
            self.raise_refusal(connection, staging, batch)
        self.empty_raw(connection, staging)

    def empty_raw(self, connection: sa.Connection, staging: StagingTable) -> None:
        """Remove the raw rows once they are decoded."""
        connection.exec_driver_sql(f"DELETE FROM {self.raw_staging_ref(staging)}")

    def raise_refusal(
        self, connection: sa.Connection, staging: StagingTable, batch: Batch
    ) -> NoReturn:
        """Raise the `DecodeError` of the first row of `batch` a rule refuses; if Python decodes
        them all, the SQL refused what it should not have, and the error says so."""
        plan, decoder = staging.decoding, self.sql_decoder
        assert plan is not None and decoder is not None
        refusal = plan.refusal(batch)
        if refusal is not None:
            raise refusal
        condition = decoder.refused(plan, partial(self.raw_ref, staging)) or "false"
        values = ", ".join(self.raw_ref(staging, i) for i in range(len(plan.raw_columns)))
        statement = sa.text(
            f"SELECT {values} FROM {self.raw_staging_ref(staging)} WHERE {condition} LIMIT 1"
        ).columns(*[sa.column(c.name, self.staged_type(c.type)) for c in plan.raw_columns])
        row = connection.execute(statement).first()
        which = f"row {plan.key_of(tuple(row))}" if row is not None else "a row"
        raise DecodeError(
            f"table `{plan.table_name}`, {which}: its raw values decode in Python but not in the "
            "cache's SQL; set `decode_in_sql: false` under `cache` to decode in Python "
            "meanwhile, and report the values"
        )

    def create_staging(self, connection: sa.Connection, staging: StagingTable) -> None:
        """Create the empty staging table: the sync's columns, all nullable, no key."""
        sa.Table(
            staging.name,
            sa.MetaData(),
            *[sa.Column(c.name, self.cache_type(c.type), nullable=True) for c in staging.columns],
            prefixes=["TEMPORARY"],
        ).create(connection)

    @abstractmethod
    def load(self, connection: sa.Connection, staging: StagingTable, batch: Batch) -> None:
        """Bulk-load one batch of rows into the staging table."""

    @abstractmethod
    def merge(
        self, connection: sa.Connection, staging: StagingTable, *, delete_missing: bool
    ) -> MergeCounts:
        """Upsert the staged rows into the cache table by key; with `delete_missing`, also delete
        the cache rows whose keys are not staged. Runs inside the sync's transaction."""


class Staging:
    """The handle a sync holds while it loads its staging table."""

    def __init__(self, writer: CacheWriter, connection: sa.Connection, table: StagingTable):
        self._writer = writer
        self._connection = connection
        self.table = table
        self.rows = 0

    def load(self, batch: Batch) -> None:
        if batch:
            with self.refusing_bad_values(), self._connection.begin():
                self._writer.load(self._connection, self.table, batch)
            self.rows += len(batch)

    def merge(self, *, delete_missing: bool) -> MergeCounts:
        """Create or widen the cache table and merge into it, in one transaction."""
        with self.refusing_bad_values(), self._writer.merge_transaction(self._connection):
            self._writer.prepare_cache_table(self._connection, self.table)
            return self._writer.merge(self._connection, self.table, delete_missing=delete_missing)

    @contextmanager
    def refusing_bad_values(self) -> Iterator[None]:
        """A value the cache refuses (too long, too large for its column) becomes
        `CacheRefusedValue`, in the database's words but without the statement."""
        try:
            yield
        except sa.exc.DataError as e:
            words = " ".join(str(e.orig).split())
            raise CacheRefusedValue(
                f"cache table `{self.table.target}` refused a value: {words}; widen the cache "
                "column (or drop it, and the next Mass sync makes it afresh), or fix the "
                "source row"
            ) from e


def _keys_as_columns(keys: Sequence[str], columns: Sequence[ColumnSpec], target: str) -> list[str]:
    by_upper = {column.name.upper(): column.name for column in columns}
    missing = [key for key in keys if key.upper() not in by_upper]
    if missing:
        raise SchemaMismatch(
            f"cache table `{target}`: key columns {missing} are not among the columns read "
            f"{sorted(by_upper.values())}; fix `key_columns`"
        )
    return [by_upper[key.upper()] for key in keys]
