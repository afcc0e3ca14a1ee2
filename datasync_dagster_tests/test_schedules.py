"""The tier schedules: what they target, when they tick (across daylight-saving changes), and
the runs each tick requests."""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from unittest.mock import patch
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa

# A queued run must name the code location it came from; the public API makes such runs only
# through a running code location.
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

# The iterator the scheduler daemon steps a schedule's ticks with (through `RemoteSchedule`);
# Dagster 1.13 exposes no public one.
from dagster._utils.schedules import schedule_execution_time_iterator

from datasync_dagster.config import DEMO_CONFIG, DataSyncConfig, load_config
from datasync_dagster.defs import schedules
from datasync_dagster.defs.resources import CacheResource
from datasync_dagster.defs.schedules import TABLE_TAG, make_schedules
from datasync_dagster_tests.fixtures import dead_pid

CONFIG = load_config(DEMO_CONFIG, check_env=False)
BERLIN = ZoneInfo("Europe/Berlin")


def last_sunday(year: int, month: int) -> date:
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - calendar.SUNDAY) % 7)


# The days Europe/Berlin moves its clocks: forward an hour in March, back an hour in October.
DST_CHANGES = [last_sunday(year, month) for year in (2025, 2026) for month in (3, 10)]


def schedule_of(config: DataSyncConfig, tier: str) -> dg.ScheduleDefinition:
    (schedule,) = [s for s in make_schedules(config) if s.name == f"{tier}_syncs"]
    return schedule


def ticks(schedule: dg.ScheduleDefinition, start: datetime, end: datetime) -> list[datetime]:
    """The schedule's ticks from `start` until before `end`, as the daemon finds them."""
    found = []
    for tick in schedule_execution_time_iterator(
        start.timestamp(), schedule.cron_schedule, schedule.execution_timezone
    ):
        if tick >= end:
            return found
        found.append(tick)
    return found


def local_days(day: date, before: int, after: int) -> tuple[datetime, datetime]:
    """Midnight in Berlin `before` days before `day`, and `after` days after it."""
    start = datetime.combine(day - timedelta(days=before), datetime.min.time(), BERLIN)
    end = datetime.combine(day + timedelta(days=after), datetime.min.time(), BERLIN)
    return start, end


@pytest.fixture
def cache(sqlite_url: Callable[[str], str]) -> Iterator[CacheResource]:
    resource = CacheResource(url=sqlite_url("cache"))
    resource.audit()
    yield resource
    resource.engine.dispose()


def evaluate(
    schedule: dg.ScheduleDefinition,
    tick: datetime,
    instance: dg.DagsterInstance,
    cache: CacheResource,
) -> list[dg.RunRequest] | dg.SkipReason:
    # The context opens an instance of its own, closed when the context is.
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, resources={"cache": cache}
    ) as context:
        result = schedule(context)
    if isinstance(result, dg.SkipReason):
        return result
    assert isinstance(result, list)
    return result


def test_each_tier_has_a_schedule_over_its_tables_running_from_the_start() -> None:
    schedules = {s.name: s for s in make_schedules(CONFIG)}

    assert sorted(schedules) == ["daily_syncs", "hourly_syncs", "mass_syncs"]
    for tier in ("mass", "daily", "hourly"):
        schedule = schedules[f"{tier}_syncs"]
        settings = CONFIG.options.tiers.of(tier)  # type: ignore[arg-type]
        assert schedule.cron_schedule == settings.cron
        assert schedule.execution_timezone == "Europe/Berlin"
        assert schedule.default_status is dg.DefaultScheduleStatus.RUNNING
        selected = schedule.job.selection  # type: ignore[union-attr]
        expected = [t.name for t in CONFIG.tables if t.tier == tier or tier == "mass"]
        assert selected == dg.AssetSelection.assets(*expected)


def test_a_tier_without_tables_has_no_schedule_but_mass_reconciles_every_table() -> None:
    hourly_only = CONFIG.model_copy(
        update={"tables": [t for t in CONFIG.tables if t.tier == "hourly"]}
    )

    assert [s.name for s in make_schedules(hourly_only)] == ["mass_syncs", "hourly_syncs"]


def test_the_mass_tick_gives_incremental_tables_a_mass_sync(cache: CacheResource) -> None:
    schedule = schedule_of(CONFIG, "mass")
    tick = datetime(2025, 6, 1, 2, 0, tzinfo=BERLIN)

    with dg.instance_for_test() as instance:
        requests = evaluate(schedule, tick, instance, cache)

    assert isinstance(requests, list)
    assert sorted(r.tags[TABLE_TAG] for r in requests) == sorted(t.name for t in CONFIG.tables)
    assert {r.tags["datasync/tier"] for r in requests} == {"mass"}
    hourly = next(r for r in requests if r.tags[TABLE_TAG] == "f4211_sales_order_detail")
    assert hourly.run_config["ops"] == {"f4211_sales_order_detail": {"config": {"tier": "mass"}}}
    own_tier = next(r for r in requests if r.tags[TABLE_TAG] == "f0101_address_book")
    assert not own_tier.run_config.get("ops")


def test_a_run_whose_process_was_killed_does_not_keep_its_table_busy(
    cache: CacheResource,
) -> None:
    schedule = schedule_of(CONFIG, "hourly")
    tick = datetime(2025, 6, 2, 10, 5, tzinfo=BERLIN)
    audit = cache.audit()

    with dg.instance_for_test() as instance:
        run_id = queue(instance, tags={TABLE_TAG: "f4211_sales_order_detail"})
        instance.handle_run_event(  # the run starts, long ago, and its process dies
            run_id,
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_START.value, job_name="__ASSET_JOB"
            ),
        )
        update_id = audit.open("f4211_sales_order_detail", "Hourly", "jde", run_id=run_id)
        table = audit.table
        with audit.engine.begin() as connection:
            connection.execute(
                sa.update(table).where(table.c.Id == update_id).values(Pid=dead_pid())
            )
        with patch.object(schedules, "STARTED_GRACE_SECONDS", 0):
            requests = evaluate(schedule, tick, instance, cache)

    assert sorted(r.tags[TABLE_TAG] for r in requests) == [  # type: ignore[union-attr]
        "cms_contract_lines",
        "f4211_sales_order_detail",
    ]


@pytest.mark.parametrize("day", DST_CHANGES, ids=str)
def test_the_hourly_schedule_ticks_once_an_hour_across_a_clock_change(day: date) -> None:
    start, end = local_days(day, before=1, after=2)

    found = ticks(schedule_of(CONFIG, "hourly"), start, end)

    real_hours = int(end.timestamp() - start.timestamp()) // 3600
    assert len(found) == real_hours == 72 + (1 if day.month == 10 else -1)
    assert len({t.timestamp() for t in found}) == len(found)
    assert all(b.timestamp() - a.timestamp() == 3600 for a, b in pairwise(found))
    assert {t.astimezone(BERLIN).minute for t in found} == {5}


@pytest.mark.parametrize("day", DST_CHANGES, ids=str)
def test_the_daily_schedule_ticks_once_a_day_at_its_wall_clock_time(day: date) -> None:
    start, end = local_days(day, before=3, after=4)

    found = [t.astimezone(BERLIN) for t in ticks(schedule_of(CONFIG, "daily"), start, end)]

    assert [t.date() for t in found] == [start.date() + timedelta(days=i) for i in range(7)]
    assert {(t.hour, t.minute) for t in found} == {(3, 0)}


@pytest.mark.parametrize("day", DST_CHANGES, ids=str)
def test_the_mass_schedule_ticks_once_on_the_sunday_of_a_clock_change(day: date) -> None:
    # 02:00 on that Sunday does not exist in March and happens twice in October.
    start, end = local_days(day, before=14, after=15)

    found = [t.astimezone(BERLIN) for t in ticks(schedule_of(CONFIG, "mass"), start, end)]

    assert [t.date() for t in found] == [day + timedelta(weeks=w) for w in (-2, -1, 0, 1, 2)]
    assert len({t.timestamp() for t in found}) == 5
    (on_the_day,) = [t for t in found if t.date() == day]
    assert on_the_day.hour == (3 if day.month == 3 else 2)


def test_each_tick_requests_one_run_per_table_with_its_tags_and_a_key_of_its_own(
    cache: CacheResource,
) -> None:
    schedule = schedule_of(CONFIG, "hourly")
    # From midnight to 06:00 on the October change, seven real hours: 02:05 comes twice.
    start, _ = local_days(DST_CHANGES[1], before=0, after=0)
    found = ticks(schedule, start, start + timedelta(hours=6))

    with dg.instance_for_test() as instance:
        requests = [r for t in found for r in evaluate(schedule, t, instance, cache)]  # type: ignore[union-attr]

    assert len(found) == 7
    assert len(requests) == 2 * 7
    assert len({r.run_key for r in requests}) == len(requests)
    first = requests[0]
    table = CONFIG.table(first.tags[TABLE_TAG])
    assert first.asset_selection == [dg.AssetKey(table.name)]
    assert first.tags == {
        "datasync/table": table.name,
        "datasync/source": table.source,
        "datasync/tier": "hourly",
    }
    assert {r.tags[TABLE_TAG] for r in requests} == {
        t.name for t in CONFIG.tables if t.tier == "hourly"
    }


def test_a_table_syncing_or_queued_is_left_out_of_the_tick(cache: CacheResource) -> None:
    schedule = schedule_of(CONFIG, "hourly")
    tick = datetime(2025, 6, 2, 10, 5, tzinfo=BERLIN)
    audit = cache.audit()
    update_id = audit.open("f4211_sales_order_detail", "Hourly", "jde", run_id=None)

    with dg.instance_for_test() as instance:
        partly = evaluate(schedule, tick, instance, cache)
        queue(instance, tags={TABLE_TAG: "cms_contract_lines"})
        nothing = evaluate(schedule, tick, instance, cache)
    audit.close(update_id, success=True)

    assert [r.tags[TABLE_TAG] for r in partly] == ["cms_contract_lines"]  # type: ignore[union-attr]
    assert isinstance(nothing, dg.SkipReason)


def test_a_run_started_from_the_ui_counts_by_the_asset_it_selects(cache: CacheResource) -> None:
    schedule = schedule_of(CONFIG, "hourly")
    tick = datetime(2025, 6, 2, 10, 5, tzinfo=BERLIN)

    with dg.instance_for_test() as instance:
        queue(instance, asset_selection={dg.AssetKey("cms_contract_lines")})
        requests = evaluate(schedule, tick, instance, cache)

    assert [r.tags[TABLE_TAG] for r in requests] == ["f4211_sales_order_detail"]  # type: ignore[union-attr]


def queue(
    instance: dg.DagsterInstance,
    *,
    tags: dict[str, str] | None = None,
    asset_selection: set[dg.AssetKey] | None = None,
) -> str:
    """A run waiting in the queue, as the run coordinator holds it; its id."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin("datasync"),
            repository_name="__repository__",
        ),
        job_name="__ASSET_JOB",
    )
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id=run_id,
            status=dg.DagsterRunStatus.QUEUED,
            tags=tags or {},
            asset_selection=frozenset(asset_selection) if asset_selection else None,
            remote_job_origin=origin,
        )
    )
    return run_id


def test_the_schedules_tick_in_utc_when_the_configuration_says_so() -> None:
    in_utc = CONFIG.model_copy(
        update={"options": CONFIG.options.model_copy(update={"timezone": "UTC"})}
    )
    start = datetime(2025, 3, 30, tzinfo=UTC)

    found = ticks(schedule_of(in_utc, "daily"), start, start + timedelta(days=2))

    assert found == [start + timedelta(hours=3), start + timedelta(days=1, hours=3)]
