"""A look-back window on incremental syncs, on real databases: rows committed late with an earlier
watermark, or written in the hour repeated when the clocks go back, are read by the next Daily or
Hourly sync, the rows read again unchanged are left alone, and the watermark never moves back."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.engine import sync_table
from datasync_dagster.errors import ConfigError, SourceError
from datasync_dagster.fetchers.jde import date_to_julian, julian_to_date
from datasync_dagster.fetchers.planned import moved_back
from datasync_dagster.fetchers.sql import SqlFetcher
from datasync_dagster.fetchers.sybase import OdbcFetcher
from datasync_dagster_tests.fixtures import (
    SalesLine,
    SyncedTable,
    cache_rows_of,
    create_sales_table,
    delete_sales_lines,
    insert_sales_lines,
    jde_source,
    read_cache_rows,
    replace_sales_lines,
    sales_table_config,
)
from datasync_dagster_tests.fixtures.dialects import source_schema
from datasync_dagster_tests.test_mariadb_source import mariadb_odbc

# Order lines of two days; the last one, at 09:30 on 2024-03-01, sets the watermark.
YESTERDAY = SalesLine(doco=1, upmj=date(2024, 2, 29), tday=time(16, 0))
MORNING = SalesLine(doco=2, upmj=date(2024, 3, 1), tday=time(8, 0))
LAST = SalesLine(doco=3, upmj=date(2024, 3, 1), tday=time(9, 30))
LINES = [YESTERDAY, MORNING, LAST]
# Saved in a transaction that began at 09:10 and committed after the sync that reached 09:30.
LATE = SalesLine(doco=4, upmj=date(2024, 3, 1), tday=time(9, 10))


@pytest.fixture
def sqlite_source(sqlite_url, make_engine) -> sa.Engine:
    return make_engine(sqlite_url("source"))


def wired(source_engine, cache_engine, table: TableConfig) -> SyncedTable:
    """`table` read from the source engine into the cache engine."""
    source = jde_source(source_engine.url.render_as_string(), schema=source_schema(source_engine))
    return SyncedTable(table, source, source_engine, cache_engine)


def sales_lines(source_engine, lines=LINES) -> sa.Table:
    return create_sales_table(source_engine, lines, schema=source_schema(source_engine))


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2024, 2, 29), 124060),
        (date(2024, 12, 31), 124366),
        (date(1999, 12, 31), 99365),
        (date(2000, 1, 1), 100001),
        (date(1900, 1, 1), 1),
    ],
)
def test_dates_encode_to_the_hand_checked_julian_date(day: date, expected: int):
    assert date_to_julian(day) == expected


def test_every_day_of_three_years_encodes_to_the_julian_date_that_decodes_back_to_it():
    days = [date(1999, 1, 1) + timedelta(days=n) for n in range(3 * 365 + 1)]

    assert [julian_to_date(date_to_julian(day)) for day in days] == days


def test_a_date_before_1900_has_no_julian_date():
    with pytest.raises(ValueError, match=r"`1899-12-31` is before 1900 and has no Julian date"):
        date_to_julian(date(1899, 12, 31))


@pytest.mark.parametrize(
    ("value", "lookback", "expected"),
    [
        (datetime(2024, 10, 27, 2, 50), timedelta(hours=1), datetime(2024, 10, 27, 1, 50)),
        (date(2024, 3, 1), timedelta(hours=2), date(2024, 2, 29)),
        (date(2024, 3, 1), timedelta(days=1), date(2024, 2, 29)),
        (date(2024, 3, 1), timedelta(days=1, seconds=1), date(2024, 2, 28)),
    ],
)
def test_a_datetime_moves_back_by_the_lookback_and_a_date_by_whole_days_rounded_up(
    value, lookback, expected
):
    assert moved_back(value, lookback) == expected


@pytest.mark.parametrize(
    ("value", "lookback", "expected"),
    [
        (124061, timedelta(hours=2), 124060),
        (124001, timedelta(hours=2), 123365),
        (125001, timedelta(hours=2), 124366),
        (100001, timedelta(hours=25), 99364),
        (Decimal(124061), timedelta(days=7), 124054),
        (0, timedelta(hours=2), 0),
    ],
)
def test_a_julian_date_moves_back_by_whole_days_across_years_and_no_date_stays(
    value, lookback, expected
):
    assert moved_back(value, lookback, julian=True) == expected


def test_a_late_committed_row_with_an_earlier_update_time_is_read_only_with_a_lookback(
    source_engine, cache_engine
):
    table = sales_lines(source_engine)
    plain = wired(
        source_engine, cache_engine, sales_table_config(name="f4211_plain", cache_table="PLAIN")
    )
    looking_back = wired(source_engine, cache_engine, sales_table_config(lookback="PT2H"))
    plain.sync("hourly")
    looking_back.sync("hourly")
    insert_sales_lines(source_engine, table, [LATE])

    missed = plain.sync("hourly")
    caught = looking_back.sync("hourly")

    assert read_cache_rows(cache_engine, "PLAIN") == cache_rows_of(LINES)
    assert read_cache_rows(cache_engine) == cache_rows_of([*LINES, LATE])
    # Without a look-back only the boundary row is read again; with one, everything since the
    # day before the watermark's, of which only the late row is written.
    assert (missed.rows_read, missed.rows_upserted) == (1, 0)
    assert (caught.rows_read, caught.rows_upserted) == (4, 1)
    assert missed.watermark == caught.watermark == "[124061, 93000]"


def test_rows_read_again_in_the_window_that_did_not_change_are_not_rewritten(
    source_engine, cache_engine
):
    table = sales_lines(source_engine)
    synced = wired(source_engine, cache_engine, sales_table_config(lookback="PT2H"))
    synced.sync("hourly")
    unchanged = synced.sync("hourly")
    changed = replace(MORNING, uorg=Decimal("7.00"), tday=time(10, 0))
    replace_sales_lines(source_engine, table, [changed])

    result = synced.sync("hourly")

    assert (unchanged.rows_read, unchanged.rows_upserted, unchanged.rows_deleted) == (3, 0, 0)
    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (3, 1, 0)
    assert read_cache_rows(cache_engine) == cache_rows_of([YESTERDAY, changed, LAST])
    assert result.watermark == "[124061, 100000]"


def test_the_watermark_reached_does_not_move_back_when_only_earlier_rows_are_read(
    source_engine, cache_engine
):
    table = sales_lines(source_engine)
    synced = wired(source_engine, cache_engine, sales_table_config(lookback="PT2H"))
    first = synced.sync("hourly")
    delete_sales_lines(source_engine, table, [LAST])
    insert_sales_lines(source_engine, table, [LATE])

    result = synced.sync("daily")

    assert (result.rows_read, result.rows_upserted) == (3, 1)
    assert first.watermark == result.watermark == "[124061, 93000]"
    # Incremental syncs delete nothing: LAST stays in the cache until the next Mass sync.
    assert read_cache_rows(cache_engine) == cache_rows_of([*LINES, LATE])


@pytest.mark.parametrize(
    ("watermark", "lookback", "starts_at"),
    [
        ((124061, 93000), "PT2H", 124060),
        ((124001, 0), "PT2H", 123365),
        ((124061, 93000), "P1DT1H", 124059),
    ],
)
def test_a_read_with_a_lookback_is_limited_by_the_julian_date_alone_moved_back_by_days(
    sqlite_source, watermark, lookback, starts_at
):
    sales_lines(sqlite_source)
    table = sales_table_config(lookback=lookback)
    fetcher = SqlFetcher(sqlite_source, jde_source(str(sqlite_source.url)), table)

    condition = fetcher.select(watermark).whereclause
    assert condition is not None

    shown = condition.compile(sqlite_source, compile_kwargs={"literal_binds": True})
    assert str(shown) == f'"F4211"."SDUPMJ" >= {starts_at}'


def test_a_lookback_on_a_watermark_column_that_holds_no_date_is_refused_naming_it(sqlite_source):
    sales_lines(sqlite_source)
    table = sales_table_config(watermark=["SDDOCO", "SDUPMJ"], lookback="PT2H")

    with pytest.raises(ConfigError) as raised:
        SqlFetcher(sqlite_source, jde_source(str(sqlite_source.url)), table)

    assert str(raised.value) == (
        "table `f4211_sales_order_detail`: `lookback` cannot move back the first watermark "
        "column `SDDOCO`, of type INTEGER; lead `watermark` with a date or datetime column, or "
        "one with the `julian_date` decode rule, or remove `lookback`"
    )


def test_a_watermark_that_cannot_move_back_before_1900_is_a_source_error_naming_it(
    sqlite_source,
):
    sales_lines(sqlite_source)
    table = sales_table_config(lookback="PT2H")
    fetcher = SqlFetcher(sqlite_source, jde_source(str(sqlite_source.url)), table)

    with pytest.raises(SourceError) as raised:
        fetcher.read_start((1, 0))

    assert str(raised.value) == (
        "table `f4211_sales_order_detail`: the last watermark of `SDUPMJ` cannot be moved back "
        "by `lookback`: `1899-12-31` is before 1900 and has no Julian date CYYDDD; shorten "
        "`lookback`, or run a Mass sync to start the watermark afresh"
    )


# A CMS-shaped table whose watermark is a datetime in local wall-clock time.
CONTRACTS = sa.Table(
    "contracts",
    sa.MetaData(),
    sa.Column("contract_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("last_modified", sa.DateTime, nullable=False),
)
# 2024-10-27 in Europe/Berlin: at 03:00 summer time the clocks go back to 02:00, so the hour
# from 02:00 to 03:00 comes twice.
BEFORE_THE_CHANGE = datetime(2024, 10, 27, 1, 55)
FIRST_PASS = datetime(2024, 10, 27, 2, 50)
SECOND_PASS = datetime(2024, 10, 27, 2, 20)


def contract(number: int, modified: datetime) -> dict[str, object]:
    return {"contract_id": number, "status": "ACTIVE", "last_modified": modified}


CONTRACTS_TABLE = TableConfig(
    name="cms_contracts",
    source="cms",
    source_table="contracts",
    key_columns=["contract_id"],
    tier="hourly",
    watermark=["last_modified"],
    lookback=timedelta(hours=1),
)


def contracts_at(engine: sa.Engine, rows: list[dict[str, object]]) -> sa.Table:
    """The contracts table created at the source holding `rows`."""
    contracts = CONTRACTS.to_metadata(sa.MetaData(), schema=source_schema(engine))
    with engine.begin() as connection:
        contracts.create(connection)
        connection.execute(contracts.insert(), rows)
    return contracts


def cached_contracts(cache_engine: sa.Engine) -> list[int]:
    with cache_engine.connect() as connection:
        numbers = connection.exec_driver_sql('SELECT "contract_id" FROM "contracts"').scalars()
        return sorted(numbers)


def test_a_row_written_in_the_repeated_hour_of_the_autumn_clock_change_is_read_with_a_lookback(
    source_engine, cache_engine
):
    contracts = contracts_at(
        source_engine, [contract(1, BEFORE_THE_CHANGE), contract(2, FIRST_PASS)]
    )
    url, schema = source_engine.url.render_as_string(), source_schema(source_engine)
    cms = DataSourceConfig(name="cms", system="cms", url=url, schema=schema)
    synced = SyncedTable(CONTRACTS_TABLE, cms, source_engine, cache_engine)
    first = synced.sync()
    with source_engine.begin() as connection:
        connection.execute(
            contracts.insert(),
            # Written after the clocks went back; the second one also more than an hour late.
            [contract(3, SECOND_PASS), contract(4, FIRST_PASS - timedelta(minutes=61))],
        )

    result = synced.sync()

    assert cached_contracts(cache_engine) == [1, 2, 3]
    # Read from 01:50: contracts 1 and 2 again, unchanged, and 3; contract 4 lies before that.
    assert (result.rows_read, result.rows_upserted) == (3, 1)
    assert first.watermark == result.watermark == '["2024-10-27T02:50:00"]'


def test_the_ase_fetcher_reads_the_lookback_window_on_a_real_server(
    mariadb_url, make_engine, make_cache_engine, sqlite_url
):
    # MariaDB read through ODBC stands in for ASE, with ASE's watermark margin.
    source_engine = make_engine(mariadb_url)
    contracts = contracts_at(source_engine, [contract(1, FIRST_PASS)])
    database = mariadb_odbc(mariadb_url)
    cms = DataSourceConfig(name="cms", system="cms", url="sybase+pyodbc://sync@127.0.0.1/cms")
    cache_engine = make_cache_engine(sqlite_url("cache"))
    synced = SyncedTable(CONTRACTS_TABLE, cms, source_engine, cache_engine)

    def sync():
        fetcher = OdbcFetcher(database, cms, CONTRACTS_TABLE)
        return sync_table(CONTRACTS_TABLE, fetcher, synced.writer, synced.audit)

    first = sync()
    with source_engine.begin() as connection:
        connection.execute(contracts.insert(), [contract(2, SECOND_PASS)])

    result = sync()

    assert cached_contracts(cache_engine) == [1, 2]
    assert (result.rows_read, result.rows_upserted) == (2, 1)
    assert first.watermark == result.watermark == '["2024-10-27T02:50:00"]'
