"""The sensors: due tables get one run per lapse, interrupted syncs are swept, and the health
checks run when a table's health changes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import DEMO_CONFIG, load_config
from datasync_dagster.defs.resources import CacheResource
from datasync_dagster.defs.schedules import TABLE_TAG
from datasync_dagster.defs.sensors import make_sensors

CONFIG = load_config(DEMO_CONFIG, check_env=False)
TABLES = [table.name for table in CONFIG.tables]
HOURLY = "f4211_sales_order_detail"
DAILY = "f4101_item_master"


@pytest.fixture
def cache(sqlite_url: Callable[[str], str]) -> Iterator[CacheResource]:
    resource = CacheResource(url=sqlite_url("cache"))
    resource.audit()
    yield resource
    resource.engine.dispose()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def sensor(name: str) -> dg.SensorDefinition:
    (found,) = [s for s in make_sensors(CONFIG) if s.name == name]
    return found


def evaluate(
    name: str, instance: dg.DagsterInstance, cache: CacheResource, cursor: str | None = None
) -> dg.SensorResult | dg.SkipReason | list[dg.RunRequest]:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"cache": cache}
    ) as context:
        result = sensor(name)(context)
    assert isinstance(result, (dg.SensorResult, dg.SkipReason, list))
    return result


def synced(audit: AuditLog, table: str, *, ago: timedelta, success: bool = True) -> int:
    """A finished sync of `table` that ended `ago` before now; its `DataUpdate` id."""
    ended = datetime.now(UTC).replace(tzinfo=None) - ago
    with audit.engine.begin() as connection:
        result = connection.execute(
            sa.insert(audit.table).values(
                TableName=table,
                Tier="Hourly",
                SourceName="jde",
                StartedAt=ended - timedelta(minutes=1),
                EndedAt=ended,
                Success=success,
            )
        )
    return int(result.inserted_primary_key[0])


def synced_recently(audit: AuditLog, *but: str) -> None:
    for table in TABLES:
        if table not in but:
            synced(audit, table, ago=timedelta(minutes=1))


def requested(result: object) -> dict[str, dg.RunRequest]:
    requests = result.run_requests if isinstance(result, dg.SensorResult) else result
    assert isinstance(requests, list)
    return {r.tags[TABLE_TAG]: r for r in requests}


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, **tags: str) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=status, tags=tags))
    return run_id


# The due-table sensor.


def test_a_table_past_its_interval_or_never_synced_gets_a_run(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    audit = cache.audit()
    synced_recently(audit, HOURLY, DAILY)
    lapsed_id = synced(audit, HOURLY, ago=timedelta(hours=1, minutes=17))

    runs = requested(evaluate("due_tables", instance, cache))

    assert sorted(runs) == sorted([HOURLY, DAILY])
    assert runs[HOURLY].run_key == f"{HOURLY}#due-after-{lapsed_id}"
    assert runs[DAILY].run_key == f"{DAILY}#due-after-never"
    assert runs[HOURLY].asset_selection == [dg.AssetKey(HOURLY)]
    assert runs[HOURLY].tags["datasync/source"] == "jde"


def test_a_failed_sync_does_not_reset_the_lapse(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    audit = cache.audit()
    synced_recently(audit, HOURLY)
    lapsed_id = synced(audit, HOURLY, ago=timedelta(hours=3))
    before = requested(evaluate("due_tables", instance, cache))[HOURLY].run_key
    synced(audit, HOURLY, ago=timedelta(minutes=5), success=False)

    after = requested(evaluate("due_tables", instance, cache))[HOURLY].run_key

    # The same run key: Dagster launches one run per key, so the lapse gets one run only.
    assert before == after == f"{HOURLY}#due-after-{lapsed_id}"


def test_a_new_lapse_after_a_success_gets_a_run_key_of_its_own(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    audit = cache.audit()
    synced_recently(audit, HOURLY)
    first = synced(audit, HOURLY, ago=timedelta(hours=3))
    second = synced(audit, HOURLY, ago=timedelta(hours=1, minutes=20))

    runs = requested(evaluate("due_tables", instance, cache))

    assert runs[HOURLY].run_key == f"{HOURLY}#due-after-{second}" != f"{HOURLY}#due-after-{first}"


def test_a_table_syncing_or_with_a_run_waiting_gets_no_run(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    audit = cache.audit()
    synced_recently(audit, HOURLY, DAILY)
    update_id = audit.open(HOURLY, "Hourly", "jde", run_id=None)
    add_run(instance, dg.DagsterRunStatus.STARTING, **{TABLE_TAG: DAILY})

    result = evaluate("due_tables", instance, cache)
    audit.close(update_id, success=True)

    assert isinstance(result, dg.SkipReason)


def test_nothing_is_requested_while_every_table_is_within_its_interval(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    synced_recently(cache.audit())

    assert isinstance(evaluate("due_tables", instance, cache), dg.SkipReason)


# The sweep of interrupted syncs.


def open_row(audit: AuditLog, table: str, run_id: str | None, pid: int) -> int:
    update_id = audit.open(table, "Hourly", "jde", run_id)
    with audit.engine.begin() as connection:
        connection.execute(
            sa.update(audit.table).where(audit.table.c.Id == update_id).values(Pid=pid)
        )
    return update_id


def test_the_sweep_closes_rows_whose_run_ended_or_is_gone_and_keeps_running_ones(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    import os

    audit = cache.audit()
    live = os.getpid()
    failed_run = add_run(instance, dg.DagsterRunStatus.FAILURE)
    running_run = add_run(instance, dg.DagsterRunStatus.STARTED)
    ended = open_row(audit, "f0101_address_book", failed_run, live)
    gone = open_row(audit, "cms_contracts", str(uuid.uuid4()), live)
    running = open_row(audit, HOURLY, running_run, live)

    result = evaluate("interrupted_syncs", instance, cache)

    assert isinstance(result, dg.SkipReason)
    assert str(sorted([ended, gone])) in (result.skip_message or "")
    assert [u.id for u in audit.open_updates()] == [running]
    closed = {u.id: u for u in audit.history("cms_contracts")}[gone]
    assert closed.success is False
    assert closed.error is not None and "interrupted" in closed.error
    audit.close(running, success=True)


def test_the_sweep_closes_the_row_of_a_dead_process_whose_run_still_shows_started(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    audit = cache.audit()
    orphan = open_row(audit, HOURLY, add_run(instance, dg.DagsterRunStatus.STARTED), pid=dead_pid())

    evaluate("interrupted_syncs", instance, cache)

    assert audit.open_updates() == []
    assert audit.history(HOURLY)[0].id == orphan


def dead_pid() -> int:
    """The id of a process of this host that has ended."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# The health sensor.


def test_the_first_look_checks_every_table_and_remembers_their_health(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    synced_recently(cache.audit(), DAILY)

    result = evaluate("table_health", instance, cache)

    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests or []
    assert request.asset_selection == []
    assert sorted(k.asset_key.to_user_string() for k in request.asset_check_keys or []) == sorted(
        TABLES
    )
    remembered = json.loads(result.cursor or "")
    assert remembered[DAILY] == "Unhealthy"
    assert remembered[HOURLY] == "Healthy"


def test_only_tables_whose_health_changed_are_checked_again(
    instance: dg.DagsterInstance, cache: CacheResource
) -> None:
    audit = cache.audit()
    synced_recently(audit)
    first = evaluate("table_health", instance, cache)
    assert isinstance(first, dg.SensorResult)

    unchanged = evaluate("table_health", instance, cache, cursor=first.cursor)
    synced(audit, HOURLY, ago=timedelta(minutes=1), success=False)
    changed = evaluate("table_health", instance, cache, cursor=first.cursor)

    assert isinstance(unchanged, dg.SkipReason)
    assert isinstance(changed, dg.SensorResult)
    (request,) = changed.run_requests or []
    assert [k.asset_key.to_user_string() for k in request.asset_check_keys or []] == [HOURLY]
    assert json.loads(changed.cursor or "")[HOURLY] == "Degraded"


def test_every_sensor_runs_from_the_start() -> None:
    sensors = make_sensors(CONFIG)

    assert sorted(s.name for s in sensors) == ["due_tables", "interrupted_syncs", "table_health"]
    assert {s.default_status for s in sensors} == {dg.DefaultSensorStatus.RUNNING}
