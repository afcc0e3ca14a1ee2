"""The SQL Server cache writer, without a server: every statement it sends, parsed as T-SQL.

The writer runs its real code path on a recording connection that stands in for pyodbc: it
keeps each statement, each `setinputsizes` and each `executemany`, and answers the two queries
whose answers steer the writer (the cache table's columns, the duplicate keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import pyodbc
import pytest
import sqlalchemy as sa
import sqlglot
from sqlalchemy.dialects import mssql
from sqlglot import exp

from datasync_dagster.audit import AuditLog
from datasync_dagster.errors import DuplicateKeys, SchemaMismatch
from datasync_dagster.fetchers.base import ColumnSpec
from datasync_dagster.types import mssql_type
from datasync_dagster.writers import writer_for
from datasync_dagster.writers.mssql import MssqlWriter, chunk_rows, decimal_fits

MSSQL_URL = "mssql+pyodbc://cache@127.0.0.1:1433/cache?driver=FreeTDS"

WIDE_COLUMNS = [
    ColumnSpec("SDKCOO", sa.String(5), nullable=False),
    ColumnSpec("SDDOCO", sa.Integer(), nullable=False),
    ColumnSpec("SDDSC1", sa.String(30)),
    ColumnSpec("SDNOTE", sa.Text()),
    ColumnSpec("SDUORG", sa.Numeric(15, 2)),
    ColumnSpec("SDRATE", sa.Float()),
    ColumnSpec("SDAN8", sa.BigInteger()),
    ColumnSpec("SDLNTY", sa.SmallInteger()),
    ColumnSpec("SDFLAG", sa.Boolean()),
    ColumnSpec("SDUPDATED", sa.DateTime()),
    ColumnSpec("SDTRDJ", sa.Date()),
    ColumnSpec("SDTDAY", sa.Time()),
    ColumnSpec("SDGUID", sa.Uuid()),
    ColumnSpec("SDIMAGE", sa.LargeBinary()),
    ColumnSpec("SDANY", sa.Numeric()),
]
WIDE_KEYS = ["SDKCOO", "SDDOCO"]
WIDE_ROW = (
    "00001",
    4711,
    "Bolt, zinc plated",
    "a long note",
    Decimal("1234.50"),
    0.25,
    2**40,
    3,
    True,
    datetime(2024, 2, 29, 23, 59, 59, 123456),
    date(2024, 2, 29),
    time(14, 30, 5, 250000),
    UUID(int=1),
    b"\x00\x01",
    Decimal("3.1415926535"),
)


class RecordingCursor:
    """A pyodbc cursor that records what it is asked and returns the counts of a MERGE."""

    def __init__(self, log: list[tuple[Any, ...]], counts: tuple[int, int]):
        self._log = log
        self._counts = counts
        self.fast_executemany = False
        self.description: Any = None

    def setinputsizes(self, sizes: list[tuple[int, int, int]]) -> None:
        self._log.append(("setinputsizes", list(sizes)))

    def executemany(self, sql: str, rows: Any) -> None:
        self._log.append(("executemany", sql, list(rows), self.fast_executemany))

    def execute(self, sql: str) -> None:
        self._log.append(("execute", sql))

    def nextset(self) -> bool:
        self.description = [("upserted",), ("deleted",)]
        return True

    def fetchone(self) -> tuple[int, int]:
        return self._counts

    def close(self) -> None:
        pass


class RecordingConnection:
    """Stands in for the SQLAlchemy connection the writer holds, recording every statement."""

    def __init__(self, *, cache_columns: list[str], duplicates: list[tuple[Any, ...]]):
        self.log: list[tuple[Any, ...]] = []
        self._cache_columns = cache_columns
        self._duplicates = duplicates
        self.counts = (2, 1)

    @property
    def connection(self) -> Any:
        outer = self

        class Driver:
            def cursor(self) -> RecordingCursor:
                return RecordingCursor(outer.log, outer.counts)

        class Pooled:
            driver_connection = Driver()

        return Pooled()

    @contextmanager
    def begin(self) -> Iterator[None]:
        yield

    def in_transaction(self) -> bool:
        return False

    def rollback(self) -> None:
        pass

    def exec_driver_sql(self, sql: str, parameters: Any = None) -> sa.engine.Result[Any]:
        self.log.append(("exec", sql))
        if "sys.columns" in sql:
            return _rows([(name,) for name in self._cache_columns])
        if "HAVING COUNT(*) > 1" in sql:
            return _rows(self._duplicates)
        return _rows([])

    @property
    def statements(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] in ("exec", "execute", "executemany")]


class RecordingEngine:
    def __init__(self, connection: RecordingConnection):
        self.dialect = sa.create_engine(MSSQL_URL).dialect
        self._connection = connection

    @contextmanager
    def connect(self) -> Iterator[RecordingConnection]:
        yield self._connection


def _rows(rows: list[tuple[Any, ...]]) -> Any:
    class Result(list[tuple[Any, ...]]):
        def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
            return self[:size]

    return Result(rows)


def recorded_sync(
    *,
    delete_missing: bool,
    rows: list[tuple[Any, ...]] | None = None,
    columns: list[ColumnSpec] = WIDE_COLUMNS,
    keys: list[str] = WIDE_KEYS,
    cache_columns: list[str] | None = None,
    duplicates: list[tuple[Any, ...]] | None = None,
) -> RecordingConnection:
    connection = RecordingConnection(cache_columns=cache_columns or [], duplicates=duplicates or [])
    writer = MssqlWriter(RecordingEngine(connection), "dbo")  # type: ignore[arg-type]
    with writer.staging("F4211", columns, keys) as staging:
        staging.load(rows if rows is not None else [WIDE_ROW])
        staging.merge(delete_missing=delete_missing)
    return connection


def tsql(statement: str) -> list[exp.Expression]:
    """Parse a T-SQL batch with sqlglot; sqlglot 30 cannot read a table hint on INSERT yet."""
    readable = statement.replace(" WITH (TABLOCK)", "")
    return [e for e in sqlglot.parse(readable, read="tsql") if e is not None]


def merge_of(connection: RecordingConnection) -> exp.Merge:
    [batch] = [s for s in connection.statements if "MERGE INTO" in s]
    merges = [e for e in tsql(batch) if isinstance(e, exp.Merge)]
    assert len(merges) == 1
    return merges[0]


def test_every_statement_of_a_mass_sync_parses_as_tsql_in_the_order_it_is_sent():
    connection = recorded_sync(delete_missing=True)

    kinds = []
    for statement in connection.statements:
        parsed = tsql(statement)
        assert parsed, statement
        kinds.append([type(e).__name__ for e in parsed])
    assert kinds == [
        ["Create"],  # the staging table
        ["Insert"],  # the batch
        ["Select"],  # the cache table's columns
        ["Create"],  # the cache table
        ["Select"],  # duplicate keys
        ["Declare", "Merge", "Select"],
        ["Drop"],
    ]


def test_the_staging_table_is_a_temp_heap_with_the_cache_collation_for_strings():
    connection = recorded_sync(delete_missing=False)

    create = connection.statements[0]
    [parsed] = tsql(create)
    table = parsed.this.this
    assert table.this.args.get("temporary") is True
    assert table.name.startswith("stg_F4211_")
    assert "PRIMARY KEY" not in create and "NOT NULL" not in create
    assert create.count("COLLATE DATABASE_DEFAULT") == 3  # SDKCOO, SDDSC1, SDNOTE
    assert connection.statements[-1] == f"DROP TABLE IF EXISTS [#{table.name}]"


def test_the_batch_is_loaded_with_fast_executemany_tablock_and_explicit_input_sizes():
    connection = recorded_sync(delete_missing=False)

    [sizes] = [entry[1] for entry in connection.log if entry[0] == "setinputsizes"]
    [(_, insert, rows, fast)] = [entry for entry in connection.log if entry[0] == "executemany"]
    assert fast is True
    assert " WITH (TABLOCK) (" in insert
    assert rows == [WIDE_ROW]
    assert sizes == [
        (pyodbc.SQL_WVARCHAR, 5, 0),
        (pyodbc.SQL_INTEGER, 10, 0),
        (pyodbc.SQL_WVARCHAR, 30, 0),
        (pyodbc.SQL_WVARCHAR, 0, 0),
        (pyodbc.SQL_DECIMAL, 15, 2),
        (pyodbc.SQL_DOUBLE, 15, 0),
        (pyodbc.SQL_BIGINT, 19, 0),
        (pyodbc.SQL_SMALLINT, 5, 0),
        (pyodbc.SQL_BIT, 1, 0),
        (pyodbc.SQL_TYPE_TIMESTAMP, 27, 7),
        (pyodbc.SQL_TYPE_DATE, 10, 0),
        (pyodbc.SQL_SS_TIME2, 16, 7),
        (pyodbc.SQL_GUID, 16, 0),
        (pyodbc.SQL_VARBINARY, 0, 0),
        (pyodbc.SQL_DECIMAL, 38, 10),
    ]


def test_the_cache_table_is_created_keyed_with_sql_server_types():
    connection = recorded_sync(delete_missing=False)

    create = connection.statements[3]
    [parsed] = tsql(create)
    assert (parsed.this.this.db, parsed.this.this.name) == ("dbo", "F4211")
    definitions = {c.name: c.args["kind"].sql("tsql") for c in parsed.find_all(exp.ColumnDef)}
    assert definitions == {
        "SDKCOO": "NVARCHAR(5)",
        "SDDOCO": "INTEGER",
        "SDDSC1": "NVARCHAR(30)",
        "SDNOTE": "NVARCHAR(MAX)",
        "SDUORG": "NUMERIC(15, 2)",
        "SDRATE": "FLOAT(53)",
        "SDAN8": "BIGINT",
        "SDLNTY": "SMALLINT",
        "SDFLAG": "BIT",
        "SDUPDATED": "DATETIME2(7)",
        "SDTRDJ": "DATE",
        "SDTDAY": "TIME(7)",
        "SDGUID": "UNIQUEIDENTIFIER",
        "SDIMAGE": "VARBINARY(MAX)",
        "SDANY": "NUMERIC(38, 10)",
    }
    [key] = parsed.find_all(exp.PrimaryKey)
    assert [e.name for e in key.expressions] == WIDE_KEYS


def test_a_mass_merge_holds_the_lock_updates_only_changed_rows_and_deletes_missing_keys():
    merge = merge_of(recorded_sync(delete_missing=True))

    target = merge.this
    assert (target.db, target.name, target.alias) == ("dbo", "F4211", "t")
    assert [h.sql("tsql") for h in target.args["hints"]] == ["WITH (HOLDLOCK)"]
    assert merge.args["using"].this.args.get("temporary") is True
    assert merge.args["on"].sql("tsql") == "t.[SDKCOO] = s.[SDKCOO] AND t.[SDDOCO] = s.[SDDOCO]"

    matched, inserted, deleted = merge.args["whens"].expressions
    assert matched.args["matched"] is True
    changed = matched.args["condition"]
    assert isinstance(changed, exp.Exists) and isinstance(changed.this, exp.Except)
    source_values, target_values = changed.this.this, changed.this.expression
    assert [c.table for c in source_values.expressions] == ["s"] * 13
    assert [c.table for c in target_values.expressions] == ["t"] * 13
    assert isinstance(matched.args["then"], exp.Update)
    assert [e.this.name for e in matched.args["then"].expressions][:2] == ["SDDSC1", "SDNOTE"]

    assert inserted.args["matched"] is False and not inserted.args.get("source")
    assert len(inserted.args["then"].this.expressions) == len(WIDE_COLUMNS)
    assert deleted.args["matched"] is False and deleted.args["source"] is True
    assert deleted.args["then"].name == "DELETE"
    assert merge.args["returning"].sql("tsql") == "OUTPUT $action INTO @changes"


def test_a_daily_merge_has_no_delete_branch():
    merge = merge_of(recorded_sync(delete_missing=False))

    whens = merge.args["whens"].expressions
    assert [(w.args["matched"], bool(w.args.get("source"))) for w in whens] == [
        (True, False),
        (False, False),
    ]


def test_a_table_of_keys_only_merges_without_an_update_branch():
    columns = [ColumnSpec("ABAN8", sa.Integer(), nullable=False)]
    connection = recorded_sync(delete_missing=True, rows=[(1,)], columns=columns, keys=["ABAN8"])

    whens = merge_of(connection).args["whens"].expressions
    assert [w.args["then"].key for w in whens] == ["insert", "var"]


def test_the_merge_counts_come_back_as_upserted_and_deleted():
    connection = RecordingConnection(cache_columns=[], duplicates=[])
    connection.counts = (7, 3)
    writer = MssqlWriter(RecordingEngine(connection), "dbo")  # type: ignore[arg-type]

    with writer.staging("F4211", WIDE_COLUMNS, WIDE_KEYS) as staging:
        staging.load([WIDE_ROW])
        counts = staging.merge(delete_missing=True)

    assert (counts.upserted, counts.deleted) == (7, 3)


def test_duplicate_keys_are_reported_by_key_before_any_merge_and_staging_is_dropped():
    with pytest.raises(DuplicateKeys, match=r"\('00001', 4711\)"):
        recorded_sync(delete_missing=True, duplicates=[("00001", 4711)])


def test_staging_is_dropped_when_the_sync_fails_halfway():
    connection = RecordingConnection(cache_columns=[], duplicates=[])
    writer = MssqlWriter(RecordingEngine(connection), "dbo")  # type: ignore[arg-type]

    with pytest.raises(RuntimeError), writer.staging("F4211", WIDE_COLUMNS, WIDE_KEYS) as staging:
        staging.load([WIDE_ROW])
        raise RuntimeError("source lost")

    assert connection.statements[-1].startswith("DROP TABLE IF EXISTS [#stg_F4211_")
    assert not any("MERGE" in s for s in connection.statements)


def test_a_cache_table_that_lacks_a_column_gains_it():
    present = [c.name for c in WIDE_COLUMNS if c.name != "SDGUID"]
    connection = recorded_sync(delete_missing=False, cache_columns=present)

    [alter] = [s for s in connection.statements if s.startswith("ALTER")]
    assert alter == "ALTER TABLE [dbo].[F4211] ADD [SDGUID] UNIQUEIDENTIFIER"
    assert tsql(alter)
    assert not any(s.startswith("CREATE TABLE [dbo]") for s in connection.statements)


def test_a_string_longer_than_its_column_is_refused_naming_column_and_key():
    row = ("00001", 4711, "x" * 31, *WIDE_ROW[3:])

    with pytest.raises(SchemaMismatch, match=r"`SDDSC1`.*SDKCOO='00001', SDDOCO=4711.*31 char"):
        recorded_sync(delete_missing=False, rows=[row])


def test_characters_outside_the_basic_plane_count_twice_as_sql_server_counts_them():
    row = ("00001", 4711, "\U0001f600" * 16, *WIDE_ROW[3:])

    with pytest.raises(SchemaMismatch, match="32 characters"):
        recorded_sync(delete_missing=False, rows=[row])


def test_a_decimal_that_would_be_rounded_is_refused():
    row = (*WIDE_ROW[:4], Decimal("1.005"), *WIDE_ROW[5:])

    with pytest.raises(SchemaMismatch, match=r"`SDUORG`.*`1.005`.*DECIMAL\(15, 2\)"):
        recorded_sync(delete_missing=False, rows=[row])


@pytest.mark.parametrize(
    ("value", "fits"),
    [
        (Decimal("1234567890123.45"), True),
        (Decimal("12345678901234.5"), False),
        (Decimal("1.50"), True),
        (Decimal("1.500"), True),
        (Decimal("1.501"), False),
        (Decimal("0E-9"), True),
        (Decimal("1E+13"), False),
        (10**12, True),
        (10**13, False),
        (Decimal("NaN"), False),
    ],
)
def test_decimals_fit_a_decimal_15_2_exactly_when_no_digit_is_lost(value: Any, fits: bool):
    assert decimal_fits(value, 15, 2) is fits


def test_large_batches_are_sent_in_chunks_whose_parameter_array_stays_bounded():
    columns = [ColumnSpec("K", sa.Integer(), nullable=False), ColumnSpec("V", sa.String(4000))]
    rows = [(i, "v") for i in range(5000)]

    connection = recorded_sync(delete_missing=False, rows=rows, columns=columns, keys=["K"])

    chunks = [entry[2] for entry in connection.log if entry[0] == "executemany"]
    sizes = [entry for entry in connection.log if entry[0] == "setinputsizes"]
    per_chunk = chunk_rows([(pyodbc.SQL_INTEGER, 10, 0), (pyodbc.SQL_WVARCHAR, 4000, 0)])
    assert per_chunk < 5000
    assert [len(c) for c in chunks[:-1]] == [per_chunk] * (len(chunks) - 1)
    assert sum(len(c) for c in chunks) == 5000
    assert len(sizes) == len(chunks)


@pytest.mark.parametrize(
    ("source", "cache"),
    [
        (sa.String(40), "NVARCHAR(40)"),
        (sa.String(4000), "NVARCHAR(4000)"),
        (sa.String(4001), "NVARCHAR(max)"),
        (sa.String(), "NVARCHAR(max)"),
        (sa.Unicode(10), "NVARCHAR(10)"),
        (sa.CHAR(3), "NVARCHAR(3)"),
        (sa.Text(), "NVARCHAR(max)"),
        (sa.Enum("A", "BB", name="kind"), "NVARCHAR(2)"),
        (sa.Integer(), "INTEGER"),
        (sa.SmallInteger(), "SMALLINT"),
        (sa.BigInteger(), "BIGINT"),
        (sa.Boolean(), "BIT"),
        (sa.Float(), "FLOAT(53)"),
        (sa.Double(), "FLOAT(53)"),
        (sa.Numeric(15, 2), "DECIMAL(15, 2)"),
        (sa.Numeric(50, 4), "DECIMAL(38, 4)"),
        (sa.Numeric(8, 0), "DECIMAL(8, 0)"),
        (sa.Numeric(5, -2), "DECIMAL(7, 0)"),
        (sa.Numeric(), "DECIMAL(38, 10)"),
        (sa.DateTime(), "DATETIME2(7)"),
        (sa.DateTime(timezone=True), "DATETIMEOFFSET(7)"),
        (sa.Date(), "DATE"),
        (sa.Time(), "TIME(7)"),
        (sa.LargeBinary(16), "VARBINARY(16)"),
        (sa.LargeBinary(), "VARBINARY(max)"),
        (sa.Uuid(), "UNIQUEIDENTIFIER"),
        (sa.JSON(), "NVARCHAR(max)"),
    ],
)
def test_each_source_type_maps_to_its_sql_server_type(source: Any, cache: str):
    dialect = mssql.dialect()
    assert mssql_type(source).compile(dialect=dialect) == cache


def test_string_keys_get_a_length_sql_server_can_index():
    dialect = mssql.dialect()
    assert mssql_type(sa.String(), key=True).compile(dialect=dialect) == "NVARCHAR(450)"
    assert mssql_type(sa.String(12), key=True).compile(dialect=dialect) == "NVARCHAR(12)"


def test_the_data_update_table_its_lock_index_and_view_compile_and_parse_as_tsql():
    statements: list[str] = []
    engine = sa.create_mock_engine(
        MSSQL_URL, lambda sql, *a, **k: statements.append(str(sql.compile(dialect=engine.dialect)))
    )
    audit = AuditLog(engine, "dbo")  # type: ignore[arg-type]

    audit.metadata.create_all(engine, checkfirst=False)  # type: ignore[arg-type]
    statements.append(audit._view_sql(engine.dialect))

    table, *indexes, view = [sqlglot.parse_one(s, read="tsql") for s in statements]
    assert (table.this.this.db, table.this.this.name) == ("dbo", "DataUpdate")
    assert "IDENTITY" in statements[0] and "[Success] BIT" in statements[0]
    by_name = {index.this.name: index for index in indexes}
    assert sorted(by_name) == ["IX_DataUpdate_TableName", "UX_DataUpdate_OpenPerTable"]
    lock = by_name["UX_DataUpdate_OpenPerTable"]
    assert lock.args["unique"] is True
    assert lock.this.args["params"].args["where"].sql("tsql") == "WHERE [EndedAt] IS NULL"
    assert (view.this.db, view.this.name) == ("dbo", "LastDataUpdates")
    assert "[Success] = 1" in statements[3] and " IS 1" not in statements[3]


def test_the_cache_dialect_mssql_gets_the_sql_server_writer():
    assert isinstance(writer_for(sa.create_engine(MSSQL_URL), "dbo"), MssqlWriter)


def test_pyodbc_imports_and_the_freetds_driver_is_registered():
    assert "FreeTDS" in pyodbc.drivers()
