"""The sync engine on real databases: a JDE-shaped source (SQLite or PostgreSQL) synced into a
cache (SQLite or PostgreSQL), compared row for row, through changes, deletions and failures."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from datasync_dagster.engine import sync_table
from datasync_dagster.errors import DecodeError, DuplicateKeys, SourceError, SyncInProgress
from datasync_dagster.identifiers import qualified
from datasync_dagster_tests.fixtures import (
    SALES_TABLE,
    FailingFetcher,
    SalesLine,
    SyncedTable,
    cache_rows_of,
    create_sales_table,
    dead_pid,
    delete_sales_lines,
    insert_sales_lines,
    jde_source,
    read_cache_rows,
    replace_sales_lines,
    sales_table_config,
    stored,
)
from datasync_dagster_tests.fixtures.dialects import source_schema

# Order lines with the edge cases of the encodings: leap days, the last day before 2000, no
# requested date, midnight and 23:59:59, a credit line, a 15-digit amount, blank and padded text.
LINES = [
    SalesLine(doco=1001),
    SalesLine(doco=1001, lnid=Decimal("2.000"), litm="ITEM-2", dsc1="", tday=time(0, 0, 0)),
    SalesLine(
        doco=1002,
        dcto="SC",
        trdj=date(1999, 12, 31),
        drqj=date(2000, 2, 29),
        aexp=Decimal("-9999999999999.99"),
        upmj=date(2024, 2, 28),
        tday=time(23, 59, 59),
    ),
    SalesLine(kcoo="00200", doco=1003, uorg=Decimal("0.00"), aexp=Decimal("1234567890123.45")),
    SalesLine(doco=1004, lnid=Decimal("1.500"), dsc1="Bearing  6204 2RS", uprc=Decimal("0.0001")),
]


@pytest.fixture
def sqlite_source(sqlite_url, make_engine) -> sa.Engine:
    """A SQLite source, for tests about the cache and the audit alone."""
    return make_engine(sqlite_url("jde"))


@pytest.fixture
def cache_connections(cache_engine) -> list:
    """The driver connections the cache engine opens from now on, to look into TEMP schemas."""
    opened: list = []
    sa.event.listen(cache_engine, "connect", lambda dbapi, _record: opened.append(dbapi))
    return opened


def synced(source_engine, cache_engine, lines=LINES, **config) -> tuple[SyncedTable, sa.Table]:
    """The sales table at the source holding `lines`, wired to the cache."""
    schema = source_schema(source_engine)
    unique_key = config.pop("unique_key", True)
    table = create_sales_table(source_engine, lines, schema=schema, unique_key=unique_key)
    wired = SyncedTable(
        table=sales_table_config(**config),
        source=jde_source(source_engine.url.render_as_string(), schema=schema),
        source_engine=source_engine,
        cache_engine=cache_engine,
    )
    return wired, table


def staging_tables(cache_engine, cache_connections) -> list[str]:
    """Staging tables left anywhere in the cache: PostgreSQL's catalog shows every session's
    TEMP tables; SQLite's live in each connection, so each one is asked."""
    if cache_engine.dialect.name == "postgresql":
        with cache_engine.connect() as connection:
            return list(
                connection.exec_driver_sql(
                    "SELECT relname FROM pg_class WHERE relname LIKE 'stg%%' AND relkind = 'r'"
                ).scalars()
            )
    names = []
    for dbapi in cache_connections:
        names += [row[0] for row in dbapi.execute("SELECT name FROM temp.sqlite_master")]
    return names


def test_a_first_mass_sync_leaves_the_cache_equal_to_the_source_row_for_row(
    source_engine, cache_engine
):
    wired, _ = synced(source_engine, cache_engine)

    result = wired.sync("mass", batch_size=2)

    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)
    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (5, 5, 0)
    assert (result.tier, result.incremental, result.watermark) == ("mass", False, "[124061, 93000]")
    [update] = wired.audit.history(wired.table.name)
    assert (update.id, update.tier, update.source_name) == (result.update_id, "Mass", "jde")
    assert (update.success, update.error, update.watermark) == (True, None, "[124061, 93000]")
    assert (update.rows_read, update.rows_upserted, update.rows_deleted) == (5, 5, 0)
    assert update.ended_at is not None and update.ended_at >= update.started_at


def kind_of(type_: sa.types.TypeEngine) -> str:
    """The generic kind of a reflected type; a cache may widen integers to BIGINT."""
    generic = type_.as_generic()
    return "Integer" if isinstance(generic, sa.Integer) else type(generic).__name__


def test_the_cache_table_gets_the_decoded_types(source_engine, cache_engine):
    wired, _ = synced(source_engine, cache_engine)

    wired.sync("mass")

    columns = sa.inspect(cache_engine).get_columns(SALES_TABLE)
    assert {c["name"]: kind_of(c["type"]) for c in columns} == {
        "SDKCOO": "String",
        "SDDOCO": "Integer",
        "SDDCTO": "String",
        "SDLNID": "Numeric",
        "SDLITM": "String",
        "SDDSC1": "String",
        "SDTRDJ": "Date",
        "SDDRQJ": "Date",
        "SDUORG": "Numeric",
        "SDUPRC": "Numeric",
        "SDAEXP": "Numeric",
        "SDUPMJ": "Date",
        "SDTDAY": "Time",
        "SDUPDATED": "DateTime",
    }
    assert sa.inspect(cache_engine).get_pk_constraint(SALES_TABLE)["constrained_columns"] == [
        "SDKCOO",
        "SDDOCO",
        "SDDCTO",
        "SDLNID",
    ]


def test_an_incremental_sync_picks_up_changed_and_added_rows_and_nothing_else(
    source_engine, cache_engine
):
    early = SalesLine(doco=1, upmj=date(2024, 2, 28), tday=time(23, 0))
    morning = SalesLine(doco=2, upmj=date(2024, 3, 1), tday=time(8, 0))
    last = SalesLine(doco=3, upmj=date(2024, 3, 1), tday=time(9, 30))
    wired, table = synced(source_engine, cache_engine, [early, morning, last])
    first = wired.sync("hourly")
    changed = replace(morning, uorg=Decimal("7.00"), upmj=date(2024, 3, 1), tday=time(10, 0))
    added = SalesLine(doco=4, upmj=date(2024, 3, 2), tday=time(7, 0))
    replace_sales_lines(source_engine, table, [changed])
    insert_sales_lines(source_engine, table, [added])

    second = wired.sync("hourly")

    assert (first.rows_read, first.incremental, first.watermark) == (3, True, "[124061, 93000]")
    assert read_cache_rows(cache_engine) == cache_rows_of([early, changed, last, added])
    # Read: the boundary row `last` again, `changed` and `added`; `early` is not read, though
    # its time of day is later than the watermark's.
    assert (second.rows_read, second.rows_upserted, second.rows_deleted) == (3, 2, 0)
    assert second.watermark == "[124062, 70000]"
    assert [u.tier for u in wired.audit.history(wired.table.name)] == ["Hourly", "Hourly"]


def test_rows_sharing_the_boundary_watermark_value_are_not_missed(source_engine, cache_engine):
    before = SalesLine(doco=1, tday=time(9, 0))
    boundary = SalesLine(doco=2, tday=time(9, 30))
    wired, table = synced(source_engine, cache_engine, [before, boundary])
    wired.sync("hourly")
    same_second = SalesLine(doco=3, tday=time(9, 30))
    insert_sales_lines(source_engine, table, [same_second])

    result = wired.sync("hourly")

    assert read_cache_rows(cache_engine) == cache_rows_of([before, boundary, same_second])
    assert (result.rows_read, result.rows_upserted) == (2, 1)
    assert result.watermark == "[124061, 93000]"


def test_an_incremental_sync_with_nothing_new_keeps_its_watermark(source_engine, cache_engine):
    wired, _ = synced(source_engine, cache_engine)
    wired.sync("hourly")

    result = wired.sync("daily")

    assert (result.rows_read, result.rows_upserted, result.watermark) == (3, 0, "[124061, 93000]")
    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)


def test_a_mass_sync_with_nothing_changed_writes_nothing(source_engine, cache_engine):
    wired, _ = synced(source_engine, cache_engine)
    wired.sync("mass")

    result = wired.sync("mass")

    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (5, 0, 0)
    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)


def test_an_empty_source_gives_an_empty_cache_table_that_later_syncs_fill(
    source_engine, cache_engine
):
    wired, table = synced(source_engine, cache_engine, lines=[])
    empty = wired.sync("mass")
    insert_sales_lines(source_engine, table, LINES)

    filled = wired.sync("mass")

    assert (empty.rows_read, empty.rows_upserted, empty.watermark) == (0, 0, None)
    assert (filled.rows_read, filled.rows_upserted, filled.rows_deleted) == (5, 5, 0)
    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)


def test_a_mass_sync_removes_rows_deleted_at_the_source(source_engine, cache_engine):
    wired, table = synced(source_engine, cache_engine)
    wired.sync("mass")
    gone = [LINES[1], LINES[3]]
    delete_sales_lines(source_engine, table, gone)
    hourly = wired.sync("hourly")
    kept = [line for line in LINES if line not in gone]

    assert hourly.rows_deleted == 0
    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)

    mass = wired.sync("mass")

    assert (mass.rows_read, mass.rows_upserted, mass.rows_deleted) == (3, 0, 2)
    assert read_cache_rows(cache_engine) == cache_rows_of(kept)


def test_a_source_failing_half_way_leaves_the_cache_as_it_was(
    source_engine, cache_engine, cache_connections
):
    wired, table = synced(source_engine, cache_engine)
    wired.sync("mass")
    replace_sales_lines(source_engine, table, [replace(LINES[0], litm="CHANGED")])
    delete_sales_lines(source_engine, table, [LINES[4]])

    with pytest.raises(SourceError, match="source connection lost"):
        wired.sync("mass", batch_size=2, wrap=FailingFetcher)

    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)
    failed, succeeded = wired.audit.history(wired.table.name)
    assert (failed.success, failed.tier, failed.rows_read, failed.watermark) == (
        False,
        "Mass",
        None,
        None,
    )
    assert failed.error == "SourceError: source connection lost after the first batch"
    assert failed.ended_at is not None
    assert wired.audit.last_success(wired.table.name) == succeeded
    assert wired.audit.open_updates() == []
    assert staging_tables(cache_engine, cache_connections) == []


def test_a_failed_first_sync_creates_no_cache_table(source_engine, cache_engine):
    wired, _ = synced(source_engine, cache_engine)

    with pytest.raises(SourceError):
        wired.sync("mass", batch_size=2, wrap=FailingFetcher)

    assert not sa.inspect(cache_engine).has_table(SALES_TABLE)
    [update] = wired.audit.history(wired.table.name)
    assert update.success is False


def test_a_decoding_error_leaves_the_cache_as_it_was(
    source_engine, cache_engine, cache_connections
):
    wired, table = synced(source_engine, cache_engine)
    wired.sync("hourly")
    bad = {**stored(SalesLine(doco=2001, upmj=date(2024, 3, 2))), "SDTRDJ": 101366}
    with source_engine.begin() as connection:
        connection.execute(table.insert(), [bad])
    insert_sales_lines(source_engine, table, [SalesLine(doco=2000, upmj=date(2024, 3, 2))])

    # The message names the table and the raw key of the row, whichever side decodes.
    message = (
        r"table `f4211_sales_order_detail`, row \(SDKCOO, SDDOCO, SDDCTO, SDLNID\) = "
        r"\('00001', 2001, 'SO', (1000|Decimal\('1000'\))\): column `SDTRDJ`: `101366` is not a "
        r"Julian date CYYDDD \(day 366 of 2001\); fix the source row or the column's `decode` rule"
    )
    with pytest.raises(DecodeError, match=message):
        wired.sync("hourly")

    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)
    failed = wired.audit.history(wired.table.name)[0]
    assert failed.success is False
    assert re.fullmatch(f"DecodeError: {message}", failed.error)
    assert staging_tables(cache_engine, cache_connections) == []


@pytest.mark.parametrize(
    ("tier", "first"),
    [("mass", True), ("mass", False), ("hourly", False)],
    ids=["mass into a new cache table", "mass into a full one", "hourly into a full one"],
)
def test_duplicate_keys_in_the_source_raise_naming_the_keys(
    source_engine, cache_engine, cache_connections, tier, first
):
    wired, table = synced(source_engine, cache_engine, unique_key=False)
    if not first:
        wired.sync("mass")
    # The same key twice: once as the cache holds it, once changed.
    insert_sales_lines(source_engine, table, [replace(LINES[3], litm="OTHER")])
    before = read_cache_rows(cache_engine) if not first else None

    with pytest.raises(DuplicateKeys) as raised:
        wired.sync(tier)

    message = str(raised.value)
    assert "the source repeats key (SDKCOO, SDDOCO, SDDCTO, SDLNID)" in message
    assert "'00200', 1003, 'SO'" in message
    assert "fix `key_columns` or the source rows" in message
    if first:
        assert not sa.inspect(cache_engine).has_table(SALES_TABLE)
    else:
        assert read_cache_rows(cache_engine) == before
    assert wired.audit.history(wired.table.name)[0].error.startswith("DuplicateKeys: ")
    assert staging_tables(cache_engine, cache_connections) == []


def test_the_staging_table_is_gone_after_a_success(source_engine, cache_engine, cache_connections):
    wired, _ = synced(source_engine, cache_engine)

    wired.sync("mass", batch_size=2)
    wired.sync("hourly", batch_size=2)

    assert cache_connections
    assert staging_tables(cache_engine, cache_connections) == []


def test_the_staging_check_sees_a_staging_table_left_behind(cache_engine, cache_connections):
    with cache_engine.connect() as connection:
        connection.exec_driver_sql("CREATE TEMPORARY TABLE stg_f4211_left (x INTEGER)")
        connection.commit()

        assert staging_tables(cache_engine, cache_connections) == ["stg_f4211_left"]


def test_a_source_column_added_later_is_added_to_the_cache_table(source_engine, cache_engine):
    wired, _ = synced(source_engine, cache_engine)
    wired.sync("mass")
    source_table = qualified(source_engine.dialect, SALES_TABLE, source_schema(source_engine))
    with source_engine.begin() as connection:
        connection.exec_driver_sql(
            f'ALTER TABLE {source_table} ADD COLUMN "SDURAT" INTEGER NOT NULL DEFAULT 42'
        )

    result = wired.sync("mass")

    added = sa.Table(SALES_TABLE, sa.MetaData(), autoload_with=cache_engine).c.SDURAT
    with cache_engine.connect() as connection:
        values = connection.execute(sa.select(added)).scalars().all()
    assert values == [42] * len(LINES)
    assert result.rows_upserted == len(LINES)
    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)


def test_a_second_open_for_the_same_table_raises_sync_in_progress(sqlite_source, cache_engine):
    wired, _ = synced(sqlite_source, cache_engine)
    holder = wired.audit.open(wired.table.name, "Hourly", "jde", "run-1")

    with pytest.raises(SyncInProgress) as raised:
        wired.audit.open(wired.table.name, "Mass", "jde", "run-2")

    assert str(raised.value) == (
        f"table `f4211_sales_order_detail` is being synced by run `run-1` (DataUpdate {holder}); "
        "wait for it to end, or terminate it"
    )
    other = wired.audit.open("another_table", "Mass", "jde", "run-3")
    assert [u.id for u in wired.audit.open_updates()] == [holder, other]


def test_a_sync_of_a_table_being_synced_raises_and_changes_nothing(sqlite_source, cache_engine):
    wired, _ = synced(sqlite_source, cache_engine)
    holder = wired.audit.open(wired.table.name, "Hourly", "jde", "run-1")

    with pytest.raises(SyncInProgress):
        wired.sync("mass")

    assert not sa.inspect(cache_engine).has_table(SALES_TABLE)
    assert [u.id for u in wired.audit.history(wired.table.name)] == [holder]
    assert wired.audit.open_updates()[0].ended_at is None


def test_the_sweep_closes_an_open_row_whose_process_is_gone(sqlite_source, cache_engine):
    wired, _ = synced(sqlite_source, cache_engine)
    dead = wired.audit.open(wired.table.name, "Hourly", "jde", "run-dead")
    alive = wired.audit.open("another_table", "Hourly", "jde", "run-alive")
    pid = dead_pid()
    audit_table = wired.audit.table
    with cache_engine.begin() as connection:
        connection.execute(sa.update(audit_table).where(audit_table.c.Id == dead).values(Pid=pid))

    closed = wired.audit.sweep()

    assert closed == [dead]
    [update] = wired.audit.history(wired.table.name)
    assert (update.success, update.ended_at is not None) == (False, True)
    assert update.error.startswith(f"interrupted: the sync (run `run-dead`, process {pid} on ")
    assert [u.id for u in wired.audit.open_updates()] == [alive]


def test_a_sync_sweeps_the_row_of_a_dead_sync_of_its_table_and_proceeds(
    sqlite_source, cache_engine
):
    wired, _ = synced(sqlite_source, cache_engine)
    dead = wired.audit.open(wired.table.name, "Hourly", "jde", "run-dead")

    result = wired.sync("mass", alive=lambda update: update.id != dead)

    assert read_cache_rows(cache_engine) == cache_rows_of(LINES)
    newest, swept = wired.audit.history(wired.table.name)
    assert (newest.id, newest.success) == (result.update_id, True)
    assert (swept.id, swept.success) == (dead, False)


def test_last_data_updates_gives_the_last_success_of_each_synced_table(sqlite_source, cache_engine):
    orders, table = synced(sqlite_source, cache_engine)
    copy = SyncedTable(
        table=sales_table_config(name="f4211_copy", cache_table="F4211_COPY"),
        source=orders.source,
        source_engine=sqlite_source,
        cache_engine=cache_engine,
    )
    first = orders.sync("mass")
    copied = copy.sync("mass")
    insert_sales_lines(sqlite_source, table, [SalesLine(doco=9, upmj=date(2024, 3, 5))])
    second = orders.sync("hourly")
    with pytest.raises(SourceError):
        copy.sync("hourly", wrap=FailingFetcher)

    last = orders.audit.last_successes()

    assert {name: u.id for name, u in last.items()} == {
        "f4211_sales_order_detail": second.update_id,
        "f4211_copy": copied.update_id,
    }
    assert first.update_id < copied.update_id < second.update_id
    assert last["f4211_sales_order_detail"].watermark == "[124065, 93000]"
    assert read_cache_rows(cache_engine, "F4211_COPY") == cache_rows_of(LINES)


def test_a_postgresql_cache_schema_holds_the_cache_table_and_the_audit(
    sqlite_source, pg_url, make_cache_engine
):
    cache_engine = make_cache_engine(pg_url)
    with cache_engine.begin() as connection:
        connection.execute(sa.schema.CreateSchema("cache"))
    table = create_sales_table(sqlite_source, LINES)
    wired = SyncedTable(
        table=sales_table_config(),
        source=jde_source(sqlite_source.url.render_as_string()),
        source_engine=sqlite_source,
        cache_engine=cache_engine,
        cache_schema="cache",
    )
    wired.sync("mass")
    delete_sales_lines(sqlite_source, table, [LINES[0]])

    result = wired.sync("mass")

    assert result.rows_deleted == 1
    assert read_cache_rows(cache_engine, schema="cache") == cache_rows_of(LINES[1:])
    assert sa.inspect(cache_engine).get_table_names() == []
    assert sorted(sa.inspect(cache_engine).get_table_names(schema="cache")) == [
        "DataUpdate",
        SALES_TABLE,
    ]


def test_progress_is_reported_after_each_batch(sqlite_source, cache_engine):
    wired, _ = synced(sqlite_source, cache_engine)
    seen: list[int] = []

    wired.sync("mass", batch_size=2, on_progress=seen.append)

    assert seen == [2, 4, 5]


def test_a_sync_interrupted_from_outside_closes_its_row_as_failed(sqlite_source, cache_engine):
    wired, _ = synced(sqlite_source, cache_engine)

    with pytest.raises(KeyboardInterrupt):
        wired.sync(
            "mass", batch_size=2, wrap=lambda f: FailingFetcher(f, error=KeyboardInterrupt())
        )

    [update] = wired.audit.history(wired.table.name)
    assert (update.success, update.error) == (
        False,
        "interrupted: the sync was stopped from outside (KeyboardInterrupt)",
    )
    assert not sa.inspect(cache_engine).has_table(SALES_TABLE)


def test_a_mariadb_source_syncs_row_for_row_like_the_others(mariadb_url, make_engine, cache_engine):
    source_engine = make_engine(mariadb_url)
    wired, table = synced(source_engine, cache_engine)
    wired.sync("hourly")
    changed = replace(LINES[2], aexp=Decimal("-0.01"), upmj=date(2024, 3, 2))
    replace_sales_lines(source_engine, table, [changed])

    result = wired.sync("hourly")

    assert (result.rows_read, result.rows_upserted) == (4, 1)
    assert result.watermark == "[124062, 235959]"
    assert read_cache_rows(cache_engine) == cache_rows_of([*LINES[:2], changed, *LINES[3:]])


def test_a_failure_after_a_batch_was_read_gives_the_source_connection_back(
    source_engine, cache_engine
):
    wired, _ = synced(source_engine, cache_engine)

    def progress(rows: int) -> None:
        if rows > 2:
            raise OSError("cache disk full")

    with pytest.raises(OSError, match="cache disk full") as raised:
        wired.sync("mass", batch_size=2, on_progress=progress)

    assert raised.traceback  # the error, and the frames it holds, are still alive here
    assert source_engine.pool.checkedout() == 0
    assert wired.audit.history(wired.table.name)[0].error == "OSError: cache disk full"


def test_a_source_table_that_cannot_be_read_is_recorded_as_a_failed_sync(
    sqlite_source, cache_engine
):
    wired, _ = synced(sqlite_source, cache_engine)
    with sqlite_source.begin() as connection:
        connection.exec_driver_sql(f'DROP TABLE "{SALES_TABLE}"')

    with pytest.raises(SourceError, match="has no table `F4211`"):
        sync_table(wired.table, wired.fetcher, wired.writer, wired.audit, tier="mass")

    [update] = wired.audit.history(wired.table.name)
    assert (update.success, update.ended_at is not None) == (False, True)
    assert update.error.startswith("SourceError: source `jde` has no table `F4211`")
    assert not sa.inspect(cache_engine).has_table(SALES_TABLE)
