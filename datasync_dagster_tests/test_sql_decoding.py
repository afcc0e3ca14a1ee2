"""Decoding in the cache's SQL against decoding in Python: the same source rows, synced into
two caches of one dialect, one decoding in SQL and one in Python, must store the same values,
and refuse the same bad values with the same message."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import CacheConfig, DataSourceConfig, TableConfig
from datasync_dagster.defs.resources import cache_resource
from datasync_dagster.engine import sync_table
from datasync_dagster.errors import CacheRefusedValue, DecodeError
from datasync_dagster.fetchers.decoding import DecodePlan
from datasync_dagster.fetchers.sql import SqlFetcher
from datasync_dagster.writers import CacheWriter, writer_for
from datasync_dagster.writers.sql_decoding import SqlDecoder, SqliteDecoder
from datasync_dagster.writers.sqlite import SqliteWriter

TABLE = "RAWVALUES"

DECODE: dict[str, Any] = {
    "JDATE": "julian_date",
    "HTIME": "time",
    "AMOUNT": {"kind": "implied_decimal", "decimals": 2},
    "WHOLE": {"kind": "implied_decimal", "decimals": 0},
    "STAMP": {"kind": "timestamp", "date": "SDATE", "time": "STIME"},
}

# Raw rows (key, JDATE, HTIME, AMOUNT, WHOLE, SDATE, STIME, LABEL) that every rule accepts,
# chosen at the edges: leap days, the last day and second, zero and missing values.
GOOD_ROWS = [
    (1, 124060, 143005, 12345, 7, 124060, 143005, "A    "),
    (2, 0, 0, 0, 0, 0, 999999, "     "),
    (3, None, None, None, None, None, None, None),
    (4, 100366, 235959, -12345, -1, 100366, None, " B   "),
    (5, 200060, 10203, 999999999999999, 10**15, 200365, 0, ""),
    (6, 1, 5, 1, 1, 1, 59, "C"),
    (7, 8099365, 120000, -1, 123, 8099365, 235959, "D  E "),
    (8, 99365, 93000, 5, 0, 99001, 10000, "x"),
]

# Raw values each rule refuses, by column.
BAD_VALUES = [
    ("JDATE", 101366),  # 2001 has no day 366
    ("JDATE", 200366),  # nor has 2100
    ("JDATE", 124000),  # day 0
    ("JDATE", 8100001),  # year 10000
    ("JDATE", -124060),
    ("HTIME", 240000),
    ("HTIME", 236000),
    ("HTIME", 235960),
    ("HTIME", -1),
    ("SDATE", 123400),
    ("STIME", 250000),
]

COLUMN_TYPES = {
    "integer": sa.BigInteger(),
    "numeric": sa.Numeric(18, 2),
    "unbounded": sa.Numeric(),
}


def raw_table(metadata: sa.MetaData, kind: str) -> sa.Table:
    number = COLUMN_TYPES[kind]
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("ID", sa.Integer, primary_key=True),
        *[sa.Column(name, number) for name in ("JDATE", "HTIME", "AMOUNT", "WHOLE")],
        sa.Column("SDATE", number),
        sa.Column("STIME", number),
        sa.Column("LABEL", sa.CHAR(5)),
    )


def write_source(engine: sa.Engine, kind: str, rows: list[tuple[Any, ...]]) -> None:
    metadata = sa.MetaData()
    table = raw_table(metadata, kind)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    names = [column.name for column in table.columns]
    with engine.begin() as connection:
        connection.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])


def table_config() -> TableConfig:
    return TableConfig(
        name="raw_values",
        source="jde",
        source_table=TABLE,
        key_columns=["ID"],
        decode=DECODE,
        tier="mass",
    )


def sync_into(source: sa.Engine, cache: sa.Engine, writer: CacheWriter) -> None:
    config = DataSourceConfig(name="jde", system="jde", url=source.url.render_as_string())
    table = table_config()
    audit = AuditLog(cache)
    audit.ensure()
    sync_table(table, SqlFetcher(source, config, table), writer, audit, batch_size=3)


def stored_rows(cache: sa.Engine) -> list[tuple[Any, ...]]:
    """The cache table's rows as the database stores them, not as SQLAlchemy reads them."""
    with cache.connect() as connection:
        return [
            tuple(row)
            for row in connection.exec_driver_sql(f'SELECT * FROM "{TABLE}" ORDER BY "ID"').all()
        ]


@pytest.fixture(params=["sqlite", "postgresql"], ids=lambda d: f"cache={d}")
def caches(request, sqlite_url, make_cache_engine) -> tuple[sa.Engine, sa.Engine]:
    """Two empty caches of one dialect: one to decode in SQL, one to decode in Python."""
    if request.param == "sqlite":
        return make_cache_engine(sqlite_url("sql")), make_cache_engine(sqlite_url("python"))
    databases = request.getfixturevalue("pg_databases")
    return make_cache_engine(databases.create()), make_cache_engine(databases.create())


@pytest.fixture(params=["integer", "numeric"], ids=lambda k: f"raw={k}")
def source(request, sqlite_url, make_engine) -> tuple[sa.Engine, str]:
    return make_engine(sqlite_url("source")), request.param


def test_the_cache_decodes_in_sql_when_its_dialect_can(caches, source):
    sql_cache, _ = caches
    engine, kind = source
    write_source(engine, kind, GOOD_ROWS)
    config = DataSourceConfig(name="jde", system="jde", url=engine.url.render_as_string())
    plan = SqlFetcher(engine, config, table_config()).decoding

    assert isinstance(plan, DecodePlan)
    assert isinstance(writer_for(sql_cache).sql_decoder, SqlDecoder)
    assert writer_for(sql_cache).decodes(plan)


def test_sql_decoding_stores_exactly_what_python_decoding_stores(caches, source):
    sql_cache, python_cache = caches
    engine, kind = source
    write_source(engine, kind, GOOD_ROWS)

    sync_into(engine, sql_cache, writer_for(sql_cache))
    sync_into(engine, python_cache, writer_for(python_cache, decode_in_sql=False))

    stored = stored_rows(sql_cache)
    assert len(stored) == len(GOOD_ROWS)
    assert stored == stored_rows(python_cache)


def test_a_mass_re_sync_decoded_in_sql_finds_nothing_changed(caches, source):
    sql_cache, _ = caches
    engine, kind = source
    write_source(engine, kind, GOOD_ROWS)
    sync_into(engine, sql_cache, writer_for(sql_cache))
    before = stored_rows(sql_cache)

    sync_into(engine, sql_cache, writer_for(sql_cache))

    [last] = AuditLog(sql_cache).history("raw_values")[:1]
    assert (last.success, last.rows_upserted, last.rows_deleted) == (True, 0, 0)
    assert stored_rows(sql_cache) == before


@pytest.mark.parametrize(("column", "value"), BAD_VALUES, ids=lambda v: str(v))
def test_sql_decoding_refuses_a_bad_value_as_python_decoding_does(caches, source, column, value):
    sql_cache, python_cache = caches
    engine, kind = source
    names = ["ID", "JDATE", "HTIME", "AMOUNT", "WHOLE", "SDATE", "STIME", "LABEL"]
    bad = list(GOOD_ROWS[0])
    bad[0], bad[names.index(column)] = 99, value
    write_source(engine, kind, [*GOOD_ROWS, tuple(bad)])

    with pytest.raises(DecodeError) as in_sql:
        sync_into(engine, sql_cache, writer_for(sql_cache))
    with pytest.raises(DecodeError) as in_python:
        sync_into(engine, python_cache, writer_for(python_cache, decode_in_sql=False))

    assert str(in_sql.value) == str(in_python.value)
    assert str(in_sql.value).startswith("table `raw_values`, row (ID) = (99,): column `")
    assert not sa.inspect(sql_cache).has_table(TABLE)


def test_a_fraction_where_an_integer_is_due_is_refused_in_sql_as_in_python(
    caches, sqlite_url, make_engine
):
    sql_cache, python_cache = caches
    engine = make_engine(sqlite_url("source"))
    bad = (99, 124060, 93000, Decimal("12.5"), 1, 124060, 93000, "A")
    write_source(engine, "numeric", [GOOD_ROWS[0], bad])

    with pytest.raises(DecodeError) as in_sql:
        sync_into(engine, sql_cache, writer_for(sql_cache))
    with pytest.raises(DecodeError) as in_python:
        sync_into(engine, python_cache, writer_for(python_cache, decode_in_sql=False))

    assert str(in_sql.value) == str(in_python.value)
    assert "column `AMOUNT`: `12.50` has a fraction" in str(in_sql.value)


def test_decoding_in_sql_is_turned_off_by_the_cache_configuration(caches, source):
    sql_cache, _ = caches
    engine, kind = source
    write_source(engine, kind, GOOD_ROWS)
    config = DataSourceConfig(name="jde", system="jde", url=engine.url.render_as_string())
    plan = SqlFetcher(engine, config, table_config()).decoding
    assert plan is not None
    url = sql_cache.url.render_as_string(hide_password=False)

    on = cache_resource(CacheConfig(url=url)).writer()
    off = cache_resource(CacheConfig(url=url, decode_in_sql=False)).writer()

    assert (on.decodes(plan), off.decodes(plan)) == (True, False)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("column", ["JDATE", "HTIME", "AMOUNT", "STIME"])
def test_nan_and_infinities_are_refused_in_sql_as_in_python(caches, pg_databases, column, value):
    sql_cache, python_cache = caches
    # PostgreSQL's NUMERIC holds NaN and infinities, as an Oracle NUMBER does not.
    engine = sa.create_engine(pg_databases.create())
    names = ["ID", "JDATE", "HTIME", "AMOUNT", "WHOLE", "SDATE", "STIME", "LABEL"]
    bad = list(GOOD_ROWS[0])
    bad[0], bad[names.index(column)] = 99, Decimal(value)
    try:
        write_source(engine, "unbounded", [GOOD_ROWS[0], tuple(bad)])

        with pytest.raises(DecodeError) as in_sql:
            sync_into(engine, sql_cache, writer_for(sql_cache))
        with pytest.raises(DecodeError) as in_python:
            sync_into(engine, python_cache, writer_for(python_cache, decode_in_sql=False))
    finally:
        engine.dispose()

    assert str(in_sql.value) == str(in_python.value)
    assert value in str(in_sql.value)
    assert not sa.inspect(sql_cache).has_table(TABLE)


@pytest.mark.parametrize("decode_in_sql", [True, False], ids=["in-sql", "in-python"])
def test_an_amount_too_large_for_its_cache_column_is_refused_in_plain_words(
    pg_databases, make_cache_engine, decode_in_sql
):
    engine = sa.create_engine(pg_databases.create())
    cache = make_cache_engine(pg_databases.create())
    huge = list(GOOD_ROWS[0])
    huge[0], huge[3] = 99, Decimal("1e40")
    try:
        write_source(engine, "unbounded", [GOOD_ROWS[0], tuple(huge)])
        with pytest.raises(CacheRefusedValue) as refused:
            sync_into(engine, cache, writer_for(cache, decode_in_sql=decode_in_sql))
    finally:
        engine.dispose()

    message = str(refused.value)
    assert message.startswith(f"cache table `{TABLE}` refused a value: numeric field overflow")
    assert message.endswith(
        "widen the cache column (or drop it, and the next Mass sync makes it afresh), "
        "or fix the source row"
    )
    assert "INSERT" not in message and "MERGE" not in message
    [failed] = AuditLog(cache).history("raw_values")
    assert failed.success is False and failed.error == f"CacheRefusedValue: {message}"


class RefusingEverything(SqliteDecoder):
    """A decoder whose SQL refuses every row, as a wrong rule would."""

    def refused(self, plan: DecodePlan, ref: Any) -> str:
        return "1 = 1"


class RefusingWriter(SqliteWriter):
    @property
    def sql_decoder(self) -> SqlDecoder:
        return RefusingEverything()


def test_sql_that_refuses_what_python_decodes_says_how_to_go_on(
    sqlite_url, make_engine, make_cache_engine
):
    engine = make_engine(sqlite_url("source"))
    cache = make_cache_engine(sqlite_url("cache"))
    write_source(engine, "integer", GOOD_ROWS[:1])

    with pytest.raises(DecodeError) as refused:
        sync_into(engine, cache, RefusingWriter(cache))

    assert str(refused.value) == (
        "table `raw_values`, row (ID) = (1,): its raw values decode in Python but not in the "
        "cache's SQL; set `decode_in_sql: false` under `cache` to decode in Python meanwhile, "
        "and report the values"
    )
