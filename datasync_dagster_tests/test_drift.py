"""A cache table that no longer fits the sync: a column's type changed by a decode rule, a key
changed in the configuration, a column gone from the source, a scale changed or a column
widened. Each is refused with a message that says the fix, the cache table and its rows left as
they were, or warned of and synced."""

from __future__ import annotations

import logging
import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from datasync_dagster.errors import CacheTableDrift
from datasync_dagster.fetchers.base import ColumnSpec
from datasync_dagster.types import mssql_type
from datasync_dagster.writers import StagingTable, writer_for
from datasync_dagster.writers.drift import check_cache_table, family
from datasync_dagster.writers.mssql import MssqlWriter
from datasync_dagster_tests.fixtures import (
    SALES_COLUMNS,
    SALES_KEY,
    SALES_TABLE,
    SalesLine,
    SyncedTable,
    cache_rows_of,
    create_sales_table,
    insert_sales_lines,
    jde_source,
    read_cache_rows,
    sales_table,
    sales_table_config,
)

LINES = [
    SalesLine(doco=1001),
    SalesLine(doco=1002, drqj=date(2000, 2, 29), uorg=Decimal("7.00")),
    SalesLine(doco=1003, kcoo="00200", trdj=None),
]


@pytest.fixture(params=["sqlite", "postgresql"], ids=lambda d: f"cache={d}")
def cache_engine(request, sqlite_url, make_cache_engine) -> sa.Engine:
    if request.param == "sqlite":
        return make_cache_engine(sqlite_url("cache"))
    return make_cache_engine(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_cache(pg_url, make_cache_engine) -> sa.Engine:
    return make_cache_engine(pg_url)


@pytest.fixture
def sqlite_cache(sqlite_url, make_cache_engine) -> sa.Engine:
    return make_cache_engine(sqlite_url("cache"))


@pytest.fixture
def source_engine(sqlite_url, make_engine) -> sa.Engine:
    return make_engine(sqlite_url("jde"))


def synced(source_engine, cache_engine, **config: Any) -> SyncedTable:
    """The sales table at an SQLite source holding `LINES`, wired to the cache."""
    create_sales_table(source_engine, LINES)
    return SyncedTable(
        table=sales_table_config(**config),
        source=jde_source(source_engine.url.render_as_string()),
        source_engine=source_engine,
        cache_engine=cache_engine,
    )


def rules(*without: str, **added: str) -> dict[str, Any]:
    """The sales table's decode rules, without some and with some more."""
    kept = {
        name: rule.model_dump()
        for name, rule in sales_table_config().decode.items()
        if name not in without
    }
    return {**kept, **{name: {"kind": kind} for name, kind in added.items()}}


def decimals(column: str, places: int) -> dict[str, Any]:
    """The sales table's decode rules, with `column` an implied decimal of `places` places."""
    return {**rules(column), column: {"kind": "implied_decimal", "decimals": places}}


def redeclare_source_column(
    engine: sa.Engine, column: str, type_: sa.types.TypeEngine[Any], added: SalesLine
) -> None:
    """Declare `column` of the source table as `type_`, keeping its rows, and store `added`.

    SQLite changes no column's type, so the table is built again around its stored rows.
    """
    table = sales_table(sa.MetaData())
    table.c[column].type = type_
    with engine.begin() as connection:
        rows = connection.exec_driver_sql(f'SELECT * FROM "{SALES_TABLE}"').all()
        table.drop(connection)
        table.create(connection)
        connection.execute(table.insert(), [row._asdict() for row in rows])
    insert_sales_lines(engine, table, [added])


def column_types(engine: sa.Engine) -> dict[str, str]:
    """The cache table's column types as the cache database declares them."""
    columns = sa.inspect(engine).get_columns(SALES_TABLE)
    return {c["name"]: str(c["type"].compile(dialect=engine.dialect)) for c in columns}


def cache_state(engine: sa.Engine) -> tuple[list[tuple[str, str, bool]], list[str], list[tuple]]:
    """The cache table's columns (name, type, nullable), primary key and rows by key."""
    inspector = sa.inspect(engine)
    columns = [
        (c["name"], repr(c["type"]), c["nullable"]) for c in inspector.get_columns(SALES_TABLE)
    ]
    key = inspector.get_pk_constraint(SALES_TABLE)["constrained_columns"]
    table = sa.Table(SALES_TABLE, sa.MetaData(), autoload_with=engine)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
    return columns, key, [tuple(row) for row in rows]


def assert_closed_as_failed(wired: SyncedTable, error: BaseException) -> None:
    failed = wired.audit.history(wired.table.name)[0]
    assert (failed.success, failed.ended_at is not None) == (False, True)
    assert failed.error == f"CacheTableDrift: {error}"
    assert wired.audit.open_updates() == []


@pytest.mark.parametrize(
    ("first", "then", "column", "cached", "new"),
    [
        (rules("SDTRDJ"), rules(), "SDTRDJ", "INTEGER", "DATE"),
        (rules("SDUORG"), rules(), "SDUORG", "INTEGER", "NUMERIC(p, 2)"),
        (rules(), rules("SDDRQJ"), "SDDRQJ", "DATE", "INTEGER"),
    ],
    ids=["a julian date rule added", "an implied decimal rule added", "a julian date rule removed"],
)
def test_a_decode_rule_that_changes_a_column_type_is_refused_naming_the_column_and_the_fix(
    source_engine, cache_engine, first, then, column, cached, new
):
    wired = synced(source_engine, cache_engine, decode=first)
    wired.sync("mass")
    before = cache_state(cache_engine)
    wired.table = sales_table_config(decode=then)

    with pytest.raises(CacheTableDrift) as raised:
        wired.sync("mass")

    # The precision of a decoded decimal is the decoder's choice, not this check's.
    assert re.sub(r"NUMERIC\(\d+,", "NUMERIC(p,", str(raised.value)) == (
        f"cache table `F4211` cannot take the values the sync now produces: column `{column}` "
        f'is {cached} in the cache but {new} now; run `ALTER TABLE "F4211" DROP COLUMN '
        f'"{column}"` and a Mass sync, which adds the column back with its new type and fills '
        "it; or revert the decode rule or source change behind it"
    )
    assert cache_state(cache_engine) == before
    assert_closed_as_failed(wired, raised.value)


def test_dropping_the_column_as_the_message_says_lets_a_mass_sync_rebuild_it(
    source_engine, cache_engine
):
    wired = synced(source_engine, cache_engine, decode=rules("SDTRDJ"))
    wired.sync("mass")
    wired.table = sales_table_config()
    with pytest.raises(CacheTableDrift) as raised:
        wired.sync("mass")
    statement = str(raised.value).split("run `")[1].split("`")[0]
    with cache_engine.begin() as connection:
        connection.exec_driver_sql(statement)

    wired.sync("mass")

    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)
    [trdj] = [c for c in sa.inspect(cache_engine).get_columns(SALES_TABLE) if c["name"] == "SDTRDJ"]
    assert family(trdj["type"]) == "date"


def test_a_decimal_cache_column_takes_the_integers_of_a_column_whose_rule_was_removed(
    source_engine, cache_engine
):
    wired = synced(source_engine, cache_engine)
    wired.sync("mass")
    wired.table = sales_table_config(decode=rules("SDUORG"))

    result = wired.sync("mass")

    table = sa.Table(SALES_TABLE, sa.MetaData(), autoload_with=cache_engine)
    with cache_engine.connect() as connection:
        quantities = connection.execute(sa.select(table.c.SDUORG).order_by(table.c.SDDOCO)).all()
    assert result.rows_upserted == len(LINES)
    assert [row[0] for row in quantities] == [500, 700, 500]
    assert family(table.c.SDUORG.type) == "decimal"


def test_key_columns_that_differ_from_the_cache_tables_key_are_refused_naming_both(
    source_engine, cache_engine
):
    wired = synced(source_engine, cache_engine)
    wired.sync("mass")
    before = cache_state(cache_engine)
    wired.table = sales_table_config(key_columns=[*SALES_KEY, "SDLITM"])

    with pytest.raises(CacheTableDrift) as raised:
        wired.sync("mass")

    assert str(raised.value) == (
        "cache table `F4211` is keyed on (SDKCOO, SDDOCO, SDDCTO, SDLNID), but `key_columns` "
        "are (SDKCOO, SDDOCO, SDDCTO, SDLNID, SDLITM); to key it anew, run "
        '`DROP TABLE "F4211"` and a Mass sync to rebuild it, or set `key_columns` back to '
        "['SDKCOO', 'SDDOCO', 'SDDCTO', 'SDLNID']"
    )
    assert cache_state(cache_engine) == before
    assert_closed_as_failed(wired, raised.value)


def test_key_columns_spelled_in_another_case_still_match_the_cache_tables_key(
    source_engine, cache_engine
):
    wired = synced(source_engine, cache_engine)
    wired.sync("mass")
    wired.table = sales_table_config(key_columns=[key.lower() for key in SALES_KEY])

    result = wired.sync("mass")

    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (3, 0, 0)
    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)


def test_a_not_null_column_renamed_at_the_source_is_refused_naming_the_column(
    source_engine, cache_engine
):
    wired = synced(source_engine, cache_engine)
    wired.sync("mass")
    before = cache_state(cache_engine)
    with source_engine.begin() as connection:
        connection.exec_driver_sql('ALTER TABLE "F4211" RENAME COLUMN "SDDSC1" TO "SDDESC"')

    with pytest.raises(CacheTableDrift) as raised:
        wired.sync("mass")

    assert ("SDDSC1", False) in [(name, nullable) for name, _, nullable in before[0]]
    assert str(raised.value) == (
        "cache table `F4211` has NOT NULL columns ['SDDSC1'] that the sync no longer produces "
        "(renamed or dropped at the source, or left out of `columns`), so no new row could go "
        'in; run `ALTER TABLE "F4211" DROP COLUMN "SDDSC1"`, or drop the table '
        '(`DROP TABLE "F4211"`) and run a Mass sync to rebuild it, or sync the columns again'
    )
    assert cache_state(cache_engine) == before
    assert_closed_as_failed(wired, raised.value)


def test_a_nullable_column_no_longer_synced_keeps_its_old_values_and_is_warned_of(
    source_engine, cache_engine, caplog
):
    wired = synced(source_engine, cache_engine)
    wired.sync("mass")
    added = SalesLine(doco=1004, drqj=date(2024, 3, 15))
    insert_sales_lines(source_engine, sales_table(sa.MetaData()), [added])
    wired.table = sales_table_config(
        columns=[name for name in SALES_COLUMNS if name != "SDDRQJ"], decode=rules("SDDRQJ")
    )

    with caplog.at_level(logging.WARNING, logger="datasync_dagster.writers.drift"):
        result = wired.sync("mass")

    assert result.rows_upserted == 1
    assert [r.getMessage() for r in caplog.records if r.name.endswith(".drift")] == [
        "cache table F4211 keeps column SDDRQJ, which the sync no longer produces: its rows "
        "keep their old values and new rows get NULL (or its default) there; if it is not "
        'wanted any more, run `ALTER TABLE "F4211" DROP COLUMN "SDDRQJ"`'
    ]
    table = sa.Table(SALES_TABLE, sa.MetaData(), autoload_with=cache_engine)
    with cache_engine.connect() as connection:
        requested = connection.execute(sa.select(table.c.SDDRQJ).order_by(table.c.SDDOCO)).all()
    assert [row[0] for row in requested] == [None, date(2000, 2, 29), None, None]


@pytest.mark.parametrize(
    ("column", "first", "then", "fix"),
    [
        (
            "SDUORG",
            2,
            3,
            'run `ALTER TABLE "F4211" DROP COLUMN "SDUORG"` and a Mass sync, which adds the '
            "column back with its new type and fills it",
        ),
        ("SDLNID", 3, 2, 'run `DROP TABLE "F4211"` and a Mass sync to rebuild the table'),
    ],
    ids=["a value column", "a key column"],
)
def test_a_changed_number_of_decimals_is_refused_on_postgresql_naming_the_column_and_the_fix(
    source_engine, pg_cache, column, first, then, fix
):
    wired = synced(source_engine, pg_cache, decode=decimals(column, first))
    wired.sync("mass")
    before = cache_state(pg_cache)
    wired.table = sales_table_config(decode=decimals(column, then))

    with pytest.raises(CacheTableDrift) as raised:
        wired.sync("mass")

    assert str(raised.value) == (
        "cache table `F4211` would round the values the sync now produces to its own number of "
        f"decimals: column `{column}` is NUMERIC(31, {first}) in the cache but "
        f"NUMERIC(31, {then}) now; {fix}; or set `decimals` of the decode rule back to the "
        "cache's scale, or revert the source change behind it"
    )
    assert cache_state(pg_cache) == before
    assert_closed_as_failed(wired, raised.value)


def test_a_changed_number_of_decimals_syncs_on_sqlite_which_keeps_decimals_as_floats(
    source_engine, sqlite_cache
):
    wired = synced(source_engine, sqlite_cache)
    wired.sync("mass")
    wired.table = sales_table_config(decode=decimals("SDUORG", 3))

    result = wired.sync("mass")

    with sqlite_cache.connect() as connection:
        stored = connection.exec_driver_sql('SELECT "SDUORG" FROM "F4211" ORDER BY "SDDOCO"')
        quantities = [row[0] for row in stored]
    assert result.rows_upserted == len(LINES)
    assert quantities == [0.5, 0.7, 0.5]


WIDENED = [
    (
        "SDKCOO",
        sa.CHAR(8),
        SalesLine(kcoo="00000100", doco=1004),
        "VARCHAR(5)",
        "VARCHAR(8)",
    ),
    ("SDLITM", sa.String(), SalesLine(doco=1004, litm="X" * 40), "VARCHAR(25)", "VARCHAR"),
    (
        "SDAEXP",
        sa.Numeric(20, 0),
        SalesLine(doco=1004, aexp=Decimal("12345678901234.56")),
        "NUMERIC(15, 2)",
        "NUMERIC(20, 2)",
    ),
]
WIDENED_IDS = ["a longer key string", "a string of any length", "a decimal of more digits"]


@pytest.mark.parametrize(
    ("column", "source_type", "added", "cached", "new"), WIDENED, ids=WIDENED_IDS
)
def test_a_widened_source_column_is_refused_on_postgresql_until_the_alter_it_names_is_run(
    source_engine, pg_cache, column, source_type, added, cached, new
):
    wired = synced(source_engine, pg_cache)
    wired.sync("mass")
    before = cache_state(pg_cache)
    redeclare_source_column(source_engine, column, source_type, added)

    with pytest.raises(CacheTableDrift) as raised:
        wired.sync("mass")

    statement = f'ALTER TABLE "F4211" ALTER COLUMN "{column}" TYPE {new}'
    assert str(raised.value) == (
        "cache table `F4211` is too narrow for the values the sync now produces, and the merge "
        f"would fail on the first that does not fit: column `{column}` is {cached} in the cache "
        f"but {new} now; run `{statement}`, which widens in place and keeps the values; or "
        "revert the source change behind it"
    )
    assert cache_state(pg_cache) == before
    assert_closed_as_failed(wired, raised.value)

    with pg_cache.begin() as connection:
        connection.exec_driver_sql(statement)
    result = wired.sync("mass")

    assert result.rows_upserted == 1
    assert read_cache_rows(pg_cache) == cache_rows_of([*LINES, added])


def test_a_widened_source_column_syncs_on_sqlite_which_ignores_declared_lengths(
    source_engine, sqlite_cache
):
    wired = synced(source_engine, sqlite_cache)
    wired.sync("mass")
    added = SalesLine(kcoo="00000100", doco=1004)
    redeclare_source_column(source_engine, "SDKCOO", sa.CHAR(8), added)

    result = wired.sync("mass")

    assert result.rows_upserted == 1
    assert read_cache_rows(sqlite_cache) == cache_rows_of([*LINES, added])


def test_a_shorter_string_and_a_decimal_of_fewer_digits_sync_into_the_wider_cache_columns(
    source_engine, cache_engine, caplog
):
    wired = synced(source_engine, cache_engine)
    wired.sync("mass")
    types = column_types(cache_engine)
    added = SalesLine(doco=1004, litm="SHORT", aexp=Decimal("9.99"))
    redeclare_source_column(source_engine, "SDLITM", sa.CHAR(10), added)
    redeclare_source_column(source_engine, "SDAEXP", sa.Numeric(9, 0), SalesLine(doco=1005))

    with caplog.at_level(logging.WARNING, logger="datasync_dagster.writers.drift"):
        result = wired.sync("mass")

    assert caplog.records == []
    assert result.rows_upserted == 2
    assert read_cache_rows(cache_engine) == cache_rows_of([*LINES, added, SalesLine(doco=1005)])
    assert column_types(cache_engine) == types


# One column of each family, as the fetchers hand them to the writer.
EVERY_FAMILY = [
    ColumnSpec("ID", sa.Integer(), nullable=False),
    ColumnSpec("SMALL", sa.SmallInteger()),
    ColumnSpec("BIG", sa.BigInteger()),
    ColumnSpec("AMOUNT", sa.Numeric(15, 2)),
    ColumnSpec("RATE", sa.Float()),
    ColumnSpec("RATIO", sa.Double()),
    ColumnSpec("CODE", sa.CHAR(3)),
    ColumnSpec("NAME", sa.String(30)),
    ColumnSpec("NOTE", sa.Text()),
    ColumnSpec("TOKEN", sa.Uuid()),
    ColumnSpec("DAY", sa.Date()),
    ColumnSpec("AT", sa.Time()),
    ColumnSpec("STAMP", sa.DateTime()),
    ColumnSpec("STAMPED", sa.DateTime(timezone=True)),
    ColumnSpec("ACTIVE", sa.Boolean()),
    ColumnSpec("BLOB", sa.LargeBinary()),
]

# The same families in shorter lengths and fewer digits, and integers and decimals into floats.
NARROWER = [
    ColumnSpec("ID", sa.BigInteger(), nullable=False),
    ColumnSpec("SMALL", sa.Integer()),
    ColumnSpec("BIG", sa.Integer()),
    ColumnSpec("AMOUNT", sa.Numeric(9, 2)),
    ColumnSpec("RATE", sa.Numeric(38, 10)),
    ColumnSpec("RATIO", sa.Integer()),
    ColumnSpec("CODE", sa.String(2)),
    ColumnSpec("NAME", sa.CHAR(30)),
    ColumnSpec("NOTE", sa.CHAR(1)),
    ColumnSpec("TOKEN", sa.Uuid()),
    ColumnSpec("DAY", sa.Date()),
    ColumnSpec("AT", sa.Time(timezone=True)),
    ColumnSpec("STAMP", sa.DateTime(timezone=True)),
    ColumnSpec("STAMPED", sa.DateTime()),
    ColumnSpec("ACTIVE", sa.Boolean()),
    ColumnSpec("BLOB", sa.LargeBinary(16)),
]


def staging_of(columns: list[ColumnSpec]) -> StagingTable:
    return StagingTable(
        name="stg_families", target="FAMILIES", schema=None, columns=columns, key_columns=["ID"]
    )


@pytest.mark.parametrize(
    "checked", [EVERY_FAMILY, NARROWER], ids=["the same types", "shorter lengths, wider numbers"]
)
def test_a_cache_table_is_accepted_as_its_dialect_reflects_every_family(
    cache_engine, caplog, checked
):
    writer = writer_for(cache_engine)
    with cache_engine.begin() as connection:
        writer.cache_table(staging_of(EVERY_FAMILY)).create(connection)
    before = sa.inspect(cache_engine).get_columns("FAMILIES")

    with caplog.at_level(logging.WARNING), cache_engine.begin() as connection:
        writer.prepare_cache_table(connection, staging_of(checked))

    assert caplog.records == []
    assert len(sa.inspect(cache_engine).get_columns("FAMILIES")) == len(before)


def test_sql_server_cache_types_fall_into_the_families_of_their_generic_types():
    generic = [column.type for column in EVERY_FAMILY]

    assert [family(mssql_type(t), mssql.dialect()) for t in generic] == [family(t) for t in generic]
    assert [family(t) for t in (mssql.DATETIME2(), mssql.BIT(), mssql.NVARCHAR(10))] == [
        "datetime",
        "boolean",
        "string",
    ]


def test_a_type_of_no_family_is_never_reported_as_changed():
    others = [sa.JSON(), sa.Interval(), mssql.MONEY(), sa.types.NULLTYPE]

    assert [family(t) for t in others] == [None] * len(others)


# A SQL Server cache the writer is made for but never connects to.
MSSQL_URL = "mssql+pyodbc://cache@127.0.0.1:1433/cache?driver=FreeTDS"


class ReflectedTable:
    """An inspector that reflects one cache table as given, where no server is at hand."""

    def __init__(self, columns: list[tuple[str, sa.types.TypeEngine[Any], bool]], key: list[str]):
        self._columns = [
            {"name": name, "type": type_, "nullable": nullable, "default": None}
            for name, type_, nullable in columns
        ]
        self._key = key

    def get_columns(self, table: str, schema: str | None = None) -> list[dict[str, Any]]:
        return self._columns

    def get_pk_constraint(self, table: str, schema: str | None = None) -> dict[str, Any]:
        return {"constrained_columns": self._key}


@pytest.mark.parametrize(
    ("cached", "key", "fix"),
    [
        (
            [("ID", mssql.INTEGER(), False), ("CODE", mssql.NVARCHAR(5), False)],
            ["ID"],
            "run `ALTER TABLE [dbo].[ORDERS] ALTER COLUMN [CODE] NVARCHAR(8) NOT NULL`, which "
            "widens in place and keeps the values",
        ),
        (
            [("ID", mssql.INTEGER(), False), ("CODE", mssql.NVARCHAR(5), True)],
            ["ID"],
            "run `ALTER TABLE [dbo].[ORDERS] ALTER COLUMN [CODE] NVARCHAR(8)`, which widens in "
            "place and keeps the values",
        ),
        (
            [("ID", mssql.INTEGER(), False), ("CODE", mssql.NVARCHAR(5), False)],
            ["ID", "CODE"],
            "run `DROP TABLE [dbo].[ORDERS]` and a Mass sync to rebuild the table",
        ),
    ],
    ids=["a NOT NULL column", "a nullable column", "a key column"],
)
def test_sql_server_widens_a_string_column_as_it_was_declared_but_rebuilds_a_key_column(
    cached, key, fix
):
    writer = MssqlWriter(sa.create_engine(MSSQL_URL), "dbo")
    columns = [ColumnSpec("ID", sa.Integer(), nullable=False), ColumnSpec("CODE", sa.String(8))]
    staging = StagingTable("stg_orders", "ORDERS", "dbo", columns, key)

    with pytest.raises(CacheTableDrift) as raised:
        check_cache_table(writer, ReflectedTable(cached, key), staging)  # type: ignore[arg-type]

    assert str(raised.value) == (
        "cache table `ORDERS` is too narrow for the values the sync now produces, and the merge "
        "would fail on the first that does not fit: column `CODE` is NVARCHAR(5) in the cache "
        f"but NVARCHAR(8) now; {fix}; or revert the source change behind it"
    )


def test_sql_server_refuses_a_decimal_of_another_scale_and_takes_one_of_fewer_digits():
    writer = MssqlWriter(sa.create_engine(MSSQL_URL), "dbo")
    cached = ReflectedTable(
        [("ID", mssql.INTEGER(), False), ("QTY", mssql.DECIMAL(31, 2), True)], ["ID"]
    )

    def checked_with(quantity: sa.types.TypeEngine[Any]) -> None:
        columns = [ColumnSpec("ID", sa.Integer(), nullable=False), ColumnSpec("QTY", quantity)]
        staging = StagingTable("stg_orders", "ORDERS", "dbo", columns, ["ID"])
        check_cache_table(writer, cached, staging)  # type: ignore[arg-type]

    checked_with(sa.Numeric(15, 2))
    with pytest.raises(CacheTableDrift) as raised:
        checked_with(sa.Numeric(31, 3))

    assert str(raised.value) == (
        "cache table `ORDERS` would round the values the sync now produces to its own number of "
        "decimals: column `QTY` is DECIMAL(31, 2) in the cache but DECIMAL(31, 3) now; run "
        "`ALTER TABLE [dbo].[ORDERS] DROP COLUMN [QTY]` and a Mass sync, which adds the column "
        "back with its new type and fills it; or set `decimals` of the decode rule back to the "
        "cache's scale, or revert the source change behind it"
    )
