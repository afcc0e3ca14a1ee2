"""The `DataUpdate` audit table and the `LastDataUpdates` view, in SQLite and PostgreSQL caches."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from datasync_dagster.audit import (
    ERROR_LENGTH,
    HOST,
    LAST_DATA_UPDATES,
    AuditLog,
    DataUpdate,
    process_alive,
)
from datasync_dagster_tests.fixtures import dead_pid

DIALECTS = ["sqlite", "postgresql"]


def url_of(dialect, request) -> str:
    if dialect == "sqlite":
        return request.getfixturevalue("sqlite_url")("cache")
    return request.getfixturevalue("pg_url")


@pytest.fixture(params=DIALECTS, ids=lambda d: f"cache={d}")
def cache_url(request) -> str:
    return url_of(request.param, request)


@pytest.fixture
def audit(cache_url, make_cache_engine) -> AuditLog:
    log = AuditLog(make_cache_engine(cache_url))
    log.ensure()
    return log


def synced(audit, table, tier="Hourly", *, success=True, watermark=None, error=None) -> int:
    """Record one finished sync of `table`; return its id."""
    update_id = audit.open(table, tier, "jde", f"run-{table}")
    audit.close(
        update_id,
        success=success,
        rows_read=10,
        rows_upserted=3,
        rows_deleted=1,
        watermark=watermark,
        error=error,
    )
    return update_id


def test_last_data_updates_gives_the_last_success_per_table(audit):
    synced(audit, "f4211", watermark="[124060, 100000]")
    latest_f4211 = synced(audit, "f4211", watermark="[124061, 93000]")
    synced(audit, "f4211", success=False, error="SourceError: lost")
    only_f0101 = synced(audit, "f0101", tier="Mass")
    synced(audit, "f4101", success=False, error="DecodeError: bad")
    audit.open("f4101", "Daily", "jde", "run-open")

    last = audit.last_successes()

    assert {name: update.id for name, update in last.items()} == {
        "f4211": latest_f4211,
        "f0101": only_f0101,
    }
    assert last["f4211"].watermark == "[124061, 93000]"
    assert last["f0101"].tier == "Mass"
    assert audit.last_success("f4101") is None
    assert audit.last_success("f4211") == last["f4211"]


def test_the_view_answers_plain_sql(audit):
    synced(audit, "f4211")
    newest = synced(audit, "f4211")
    name = audit.engine.dialect.identifier_preparer.quote_identifier(LAST_DATA_UPDATES)

    with audit.engine.connect() as connection:
        rows = connection.exec_driver_sql(f'SELECT "Id", "TableName" FROM {name}').all()

    assert [tuple(row) for row in rows] == [(newest, "f4211")]


def test_latest_attempts_include_failures_and_open_syncs(audit):
    synced(audit, "f4211")
    failed = synced(audit, "f4211", success=False, error="SourceError: lost")
    running = audit.open("f0101", "Mass", "jde", "run-open")

    latest = audit.latest_attempts()

    assert {name: (u.id, u.success) for name, u in latest.items()} == {
        "f4211": (failed, False),
        "f0101": (running, None),
    }
    assert latest["f0101"].is_open


def test_a_closed_row_holds_the_outcome_of_its_sync(audit):
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)

    update_id = synced(audit, "f4211", watermark="[1]")

    [update] = audit.history("f4211")
    assert update == DataUpdate(
        id=update_id,
        table_name="f4211",
        tier="Hourly",
        source_name="jde",
        run_id="run-f4211",
        started_at=update.started_at,
        ended_at=update.ended_at,
        success=True,
        rows_read=10,
        rows_upserted=3,
        rows_deleted=1,
        watermark="[1]",
        error=None,
        host=HOST,
        pid=os.getpid(),
    )
    assert before <= update.started_at <= update.ended_at <= before + timedelta(minutes=1)
    assert update.started_at.tzinfo is None


def test_a_long_error_is_cut_to_the_column_width(audit):
    synced(audit, "f4211", success=False, error="x" * (ERROR_LENGTH + 500))

    [update] = audit.history("f4211")

    assert update.error == "x" * ERROR_LENGTH


def test_closing_a_row_twice_keeps_the_first_outcome(audit):
    update_id = synced(audit, "f4211", success=False, error="first")

    audit.close(update_id, success=True)

    assert [(u.success, u.error) for u in audit.history("f4211")] == [(False, "first")]


def test_history_lists_the_newest_first_up_to_the_limit(audit):
    ids = [synced(audit, "f4211") for _ in range(4)]
    synced(audit, "f0101")

    assert [u.id for u in audit.history("f4211", limit=3)] == ids[::-1][:3]


def test_ensure_may_run_again(audit):
    synced(audit, "f4211")

    audit.ensure()

    assert len(audit.history("f4211")) == 1


def test_processes_starting_at_once_on_a_new_cache_all_find_the_audit_table(
    cache_url, make_cache_engine
):
    engines = [make_cache_engine(cache_url) for _ in range(4)]
    # The cache file itself exists already (in WAL mode): this is about the audit table.
    engines[0].connect().close()
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def ensure(engine):
        start.wait()
        try:
            AuditLog(engine).ensure()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ensure, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sa.inspect(engines[0]).has_table("DataUpdate")


def test_an_open_row_counts_as_alive_unless_its_process_on_this_host_is_gone(audit):
    audit.open("f4211", "Hourly", "jde", "run-1")
    [mine] = audit.open_updates()

    assert (mine.host, mine.pid) == (HOST, os.getpid())
    assert process_alive(mine)
    assert process_alive(replace(mine, host=f"not-{HOST}", pid=dead_pid()))
    assert process_alive(replace(mine, pid=None))
    assert not process_alive(replace(mine, pid=dead_pid()))


def test_the_audit_lives_in_the_cache_schema_when_one_is_set(pg_url, make_cache_engine):
    engine = make_cache_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(sa.schema.CreateSchema("cache"))
    audit = AuditLog(engine, "cache")
    audit.ensure()

    newest = synced(audit, "f4211")

    inspector = sa.inspect(engine)
    assert inspector.has_table("DataUpdate", schema="cache")
    assert not inspector.has_table("DataUpdate")
    assert LAST_DATA_UPDATES in inspector.get_view_names(schema="cache")
    assert audit.last_success("f4211").id == newest
