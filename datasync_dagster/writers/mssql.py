"""The SQL Server cache: a `#temp` staging heap loaded by pyodbc's fast_executemany, then MERGE."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pyodbc
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import CreateTable

from datasync_dagster.errors import DataSyncError, SchemaMismatch
from datasync_dagster.fetchers.base import Batch
from datasync_dagster.identifiers import checked
from datasync_dagster.types import TypeEngine, mssql_type
from datasync_dagster.writers.base import CacheWriter, MergeCounts, StagingTable

log = logging.getLogger(__name__)

# Memory bound of one fast_executemany call: pyodbc allocates a parameter array of the declared
# width of every column for every row of the chunk.
CHUNK_BYTES = 16 * 1024 * 1024
CHUNK_ROWS = 20_000
# The temp database may have another collation than the cache; staging strings take the
# cache's, so that comparing keys and values in the MERGE never meets a collation conflict.
STAGING_COLLATION = "DATABASE_DEFAULT"

# (ODBC SQL type, column size, decimal digits) of each T-SQL type, for setinputsizes.
_INPUT_SIZES: list[tuple[type[Any], tuple[int, int, int]]] = [
    (mssql.BIT, (pyodbc.SQL_BIT, 1, 0)),
    (mssql.BIGINT, (pyodbc.SQL_BIGINT, 19, 0)),
    (mssql.SMALLINT, (pyodbc.SQL_SMALLINT, 5, 0)),
    (mssql.INTEGER, (pyodbc.SQL_INTEGER, 10, 0)),
    (mssql.FLOAT, (pyodbc.SQL_DOUBLE, 15, 0)),
    (mssql.DATETIMEOFFSET, (-155, 34, 7)),  # SQL_SS_TIMESTAMPOFFSET
    (mssql.DATETIME2, (pyodbc.SQL_TYPE_TIMESTAMP, 27, 7)),
    (mssql.DATE, (pyodbc.SQL_TYPE_DATE, 10, 0)),
    (mssql.TIME, (pyodbc.SQL_SS_TIME2, 16, 7)),
    (mssql.UNIQUEIDENTIFIER, (pyodbc.SQL_GUID, 16, 0)),
]


class MssqlWriter(CacheWriter):
    """Stages in a local temporary table and merges with one `MERGE ... WITH (HOLDLOCK)`.

    A `#temp` table belongs to the server session that created it, and the server drops it when
    that session ends. `staging()` checks one connection out of the pool and holds it from the
    CREATE to the DROP, so every batch, the MERGE and the DROP run in the session that owns the
    table, and the pool cannot lend that session to anyone else meanwhile. Another sync cannot
    see the table (each session has its own `#` names, and the name has a random suffix too).
    When the connection goes back to the pool the table is already gone; if the process dies
    first, the server drops it with the session; and a session that ODBC pooling hands out
    again is reset, which drops its temporary tables too.
    """

    dialect_name = "mssql"

    def staging_ref(self, staging: StagingTable) -> str:
        return self.dialect.identifier_preparer.quote_identifier(
            "#" + checked(staging.name, "staging table")
        )

    def cache_type(self, type_: TypeEngine) -> TypeEngine:
        return mssql_type(type_)

    def column_types(self, staging: StagingTable, *, collation: str | None = None) -> list[Any]:
        """The T-SQL type of each staged column; string keys get an indexable length."""
        keys = {key.upper() for key in staging.key_columns}
        return [
            mssql_type(c.type, key=c.name.upper() in keys, collation=collation)
            for c in staging.columns
        ]

    def cache_table(self, staging: StagingTable) -> sa.Table:
        keys = {key.upper() for key in staging.key_columns}
        columns = [
            sa.Column(
                c.name,
                type_,
                nullable=c.nullable and c.name.upper() not in keys,
                primary_key=c.name.upper() in keys,
                autoincrement=False,
            )
            for c, type_ in zip(staging.columns, self.column_types(staging), strict=True)
        ]
        return sa.Table(staging.target, sa.MetaData(), *columns, schema=self.schema)

    def create_staging(self, connection: sa.Connection, staging: StagingTable) -> None:
        """Create the staging table as a heap: no key and no index, so loading only appends."""
        types = self.column_types(staging, collation=STAGING_COLLATION)
        columns = [
            sa.Column(c.name, t, nullable=True) for c, t in zip(staging.columns, types, strict=True)
        ]
        table = sa.Table("#" + staging.name, sa.MetaData(), *columns)
        connection.exec_driver_sql(self._ddl(CreateTable(table)))

    def prepare_cache_table(self, connection: sa.Connection, staging: StagingTable) -> None:
        # A known shortcoming: unlike the other caches, an existing table is not checked for
        # drift (`drift.check_cache_table`), so a changed type, key or NOT NULL column fails
        # in the MERGE with the server's own error. The check reflects the table, which needs
        # a live server to test, and none is at hand.
        present = self.cache_columns(connection, staging)
        if not present:
            connection.exec_driver_sql(self._ddl(CreateTable(self.cache_table(staging))))
            log.info("created cache table %s", staging.target)
            return
        for column in staging.columns:
            if column.name.upper() not in present:
                self.add_column(connection, staging, column)

    def cache_columns(self, connection: sa.Connection, staging: StagingTable) -> set[str]:
        """The upper-cased column names of the cache table; none when it does not exist."""
        rows = connection.exec_driver_sql(
            "SELECT [name] FROM sys.columns WHERE [object_id] = OBJECT_ID(?)",
            (self.table_name(staging.target),),
        )
        return {str(row[0]).upper() for row in rows}

    def insert_sql(self, staging: StagingTable) -> str:
        columns = ", ".join(self.q(name) for name in staging.column_names)
        marks = ", ".join("?" for _ in staging.columns)
        return (
            f"INSERT INTO {self.staging_ref(staging)} WITH (TABLOCK) ({columns}) VALUES ({marks})"
        )

    def input_sizes(self, staging: StagingTable) -> list[tuple[int, int, int]]:
        """The declared ODBC type, size and scale of each parameter: nothing left to guessing."""
        return [_input_size(t) for t in self.column_types(staging)]

    def load(self, connection: sa.Connection, staging: StagingTable, batch: Batch) -> None:
        ValueCheck(staging, self.column_types(staging)).check(batch)
        sizes = self.input_sizes(staging)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.fast_executemany = True
            for chunk in _chunks(batch, chunk_rows(sizes)):
                cursor.setinputsizes(sizes)
                cursor.executemany(self.insert_sql(staging), chunk)
        finally:
            cursor.close()

    def merge(
        self, connection: sa.Connection, staging: StagingTable, *, delete_missing: bool
    ) -> MergeCounts:
        duplicates = self.duplicate_keys(connection, staging)
        if duplicates:
            self.raise_duplicates(staging, duplicates)

        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.merge_sql(staging, delete_missing=delete_missing))
            upserted, deleted = _first_row(cursor)
        finally:
            cursor.close()
        return MergeCounts(upserted=int(upserted or 0), deleted=int(deleted or 0))

    def merge_sql(self, staging: StagingTable, *, delete_missing: bool) -> str:
        """One batch: MERGE by key, updating only changed rows, and count what it did.

        `EXISTS (SELECT s.. EXCEPT SELECT t..)` compares the values NULL-safely. Each change
        leaves one row in the table variable `@changes`; the batch ends by counting them.
        """
        q = self.q
        keys_equal = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in staging.key_columns)
        columns = ", ".join(q(name) for name in staging.column_names)
        values = ", ".join(f"s.{q(name)}" for name in staging.column_names)
        lines = [
            "DECLARE @changes TABLE ([action] NVARCHAR(10) NOT NULL);",
            f"MERGE INTO {self.table_name(staging.target)} WITH (HOLDLOCK) AS t",
            f"USING {self.staging_ref(staging)} AS s ON {keys_equal}",
        ]
        if staging.value_columns:
            changed = (
                f"SELECT {', '.join(f's.{q(c)}' for c in staging.value_columns)} EXCEPT "
                f"SELECT {', '.join(f't.{q(c)}' for c in staging.value_columns)}"
            )
            updates = ", ".join(f"{q(c)} = s.{q(c)}" for c in staging.value_columns)
            lines.append(f"WHEN MATCHED AND EXISTS ({changed}) THEN UPDATE SET {updates}")
        lines.append(f"WHEN NOT MATCHED BY TARGET THEN INSERT ({columns}) VALUES ({values})")
        if delete_missing:
            lines.append("WHEN NOT MATCHED BY SOURCE THEN DELETE")
        lines += [
            "OUTPUT $action INTO @changes;",
            "SELECT COUNT(CASE WHEN [action] <> N'DELETE' THEN 1 END) AS upserted, "
            "COUNT(CASE WHEN [action] = N'DELETE' THEN 1 END) AS deleted FROM @changes;",
        ]
        return "\n".join(lines)

    def _ddl(self, element: Any) -> str:
        return str(element.compile(dialect=self.dialect)).strip()


class ValueCheck:
    """Refuses values the staging columns would cut: over-long strings, over-precise decimals.

    The driver and the server would otherwise truncate a string or round a decimal silently
    (or fail the whole chunk without saying which row); this names the column and the row key.
    """

    def __init__(self, staging: StagingTable, types: Sequence[Any]):
        self._staging = staging
        self._keys = [staging.column_names.index(k) for k in staging.key_columns]
        self._strings = [
            (i, t.length)
            for i, t in enumerate(types)
            if isinstance(t, mssql.NVARCHAR) and t.length is not None
        ]
        self._decimals = [
            (i, t.precision or 0, t.scale or 0)
            for i, t in enumerate(types)
            if isinstance(t, mssql.DECIMAL)
        ]

    def check(self, batch: Batch) -> None:
        for i, length in self._strings:
            values = [row[i] for row in batch]
            longest = max((len(v) for v in values if isinstance(v, str)), default=0)
            if longest * 2 > length:  # a character takes at most two UTF-16 units
                for row, value in zip(batch, values, strict=True):
                    if isinstance(value, str) and _utf16_units(value) > length:
                        self._refuse(
                            row, i, f"{_utf16_units(value)} characters", f"NVARCHAR({length})"
                        )
        for i, precision, scale in self._decimals:
            for row in batch:
                value = row[i]
                if value is not None and not decimal_fits(value, precision, scale):
                    self._refuse(row, i, f"`{value}`", f"DECIMAL({precision}, {scale})")

    def _refuse(self, row: Sequence[Any], i: int, what: str, limit: str) -> None:
        staging = self._staging
        key = ", ".join(f"{staging.column_names[k]}={row[k]!r}" for k in self._keys)
        raise SchemaMismatch(
            f"cache table `{staging.target}`: column `{staging.column_names[i]}` of the row "
            f"with key ({key}) holds {what}, more than its type {limit} keeps; widen the "
            "column in the source's declaration (or a decode rule), or fix the source row"
        )


def decimal_fits(value: Any, precision: int, scale: int) -> bool:
    """True when `value` fits DECIMAL(precision, scale) without rounding."""
    if isinstance(value, int):
        return len(str(abs(value))) <= precision - scale
    if not isinstance(value, Decimal):
        return True
    if not value.is_finite():
        return False
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if not any(digits):
        return True
    significant = list(digits)
    while exponent < 0 and significant[-1] == 0:
        significant.pop()
        exponent += 1
    fraction = max(0, -exponent)
    whole = max(0, len(significant) + exponent)
    return fraction <= scale and whole <= precision - scale


def chunk_rows(sizes: Sequence[tuple[int, int, int]]) -> int:
    """Rows per fast_executemany call, so that its parameter array stays near `CHUNK_BYTES`."""
    row_bytes = sum(_buffer_bytes(size) for size in sizes) or 1
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // row_bytes))


def _input_size(type_: Any) -> tuple[int, int, int]:
    if isinstance(type_, mssql.NVARCHAR):
        return (pyodbc.SQL_WVARCHAR, type_.length or 0, 0)  # 0: (max), streamed by the driver
    if isinstance(type_, mssql.DECIMAL):
        return (pyodbc.SQL_DECIMAL, type_.precision or 0, type_.scale or 0)
    if isinstance(type_, mssql.VARBINARY):
        length = type_.length if isinstance(type_.length, int) else 0
        return (pyodbc.SQL_VARBINARY, length, 0)
    for kind, size in _INPUT_SIZES:
        if isinstance(type_, kind):
            return size
    raise SchemaMismatch(f"no input size for SQL Server type `{type_}`; map it in types.py")


def _buffer_bytes(size: tuple[int, int, int]) -> int:
    sql_type, column_size, _ = size
    indicator = 8
    if sql_type == pyodbc.SQL_WVARCHAR:
        return indicator + (2 * column_size + 2 if column_size else 0)
    if sql_type == pyodbc.SQL_VARBINARY:
        return indicator + column_size
    return indicator + 24


def _utf16_units(value: str) -> int:
    return len(value.encode("utf-16-le")) // 2


def _chunks(batch: Batch, size: int) -> Iterator[Sequence[Any]]:
    rows = batch if isinstance(batch, list) else list(batch)
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _first_row(cursor: Any) -> Sequence[Any]:
    # The batch returns row counts before the result set of its SELECT; skip to the rows.
    while cursor.description is None:
        if not cursor.nextset():
            raise DataSyncError("the MERGE batch returned no counts; check the SQL Server log")
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)
