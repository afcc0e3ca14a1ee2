"""Health per table and overall, from `DataUpdate` rows and the tiers' interval and grace."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import CacheConfig, DataSourceConfig, DataSyncConfig
from datasync_dagster.definitions import make_definitions
from datasync_dagster.defs.checks import check_result, freshness_policy
from datasync_dagster.defs.resources import dispose_engines
from datasync_dagster.health import Health, assess, duration

NOW = datetime(2025, 3, 30, 12, 0, 0)

CONFIG = DataSyncConfig.model_validate(
    {
        "options": {
            "timezone": "Europe/Berlin",
            "tiers": {
                "hourly": {"cron": "5 * * * *", "interval": "PT1H", "grace": "PT30M"},
                "daily": {"cron": "0 3 * * *", "interval": "P1D", "grace": "PT6H"},
            },
        },
        "sources": [{"name": "shop", "url": "sqlite:///unused.sqlite"}],
        "tables": [
            {
                "name": "orders",
                "source": "shop",
                "source_table": "orders",
                "key_columns": ["id"],
                "tier": "hourly",
                "watermark": ["changed"],
            },
            {
                "name": "items",
                "source": "shop",
                "source_table": "items",
                "key_columns": ["id"],
                "tier": "daily",
                "watermark": ["changed"],
            },
        ],
    }
)


@pytest.fixture
def audit(
    make_cache_engine: Callable[..., sa.Engine], sqlite_url: Callable[[str], str]
) -> AuditLog:
    log = AuditLog(make_cache_engine(sqlite_url("cache")))
    log.ensure()
    return log


def record(
    audit: AuditLog,
    table: str,
    *,
    ago: timedelta,
    success: bool | None = True,
    error: str | None = None,
) -> None:
    """A sync of `table` that ended `ago` before NOW; `success=None` leaves it open (running)."""
    ended = None if success is None else NOW - ago
    with audit.engine.begin() as connection:
        connection.execute(
            sa.insert(audit.table).values(
                TableName=table,
                Tier="Hourly",
                SourceName="shop",
                StartedAt=NOW - ago - timedelta(minutes=1),
                EndedAt=ended,
                Success=success,
                Error=error,
            )
        )


def status_of(audit: AuditLog, table: str = "orders") -> Health:
    return assess(CONFIG, audit, now=NOW).table(table).status


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        (timedelta(minutes=10), Health.HEALTHY),
        (timedelta(hours=1), Health.HEALTHY),
        (timedelta(hours=1, minutes=1), Health.DEGRADED),
        (timedelta(hours=1, minutes=30), Health.DEGRADED),
        (timedelta(hours=1, minutes=31), Health.UNHEALTHY),
        (timedelta(days=3), Health.UNHEALTHY),
    ],
)
def test_the_age_of_the_last_success_against_interval_and_grace_decides_the_status(
    audit: AuditLog, ago: timedelta, expected: Health
) -> None:
    record(audit, "orders", ago=ago)

    assert status_of(audit) is expected


def test_interval_and_grace_come_from_the_tier_of_the_table(audit: AuditLog) -> None:
    record(audit, "orders", ago=timedelta(hours=5))
    record(audit, "items", ago=timedelta(hours=5))

    report = assess(CONFIG, audit, now=NOW)

    assert report.table("orders").status is Health.UNHEALTHY
    assert report.table("items").status is Health.HEALTHY
    assert report.table("items").interval == timedelta(days=1)
    assert report.table("items").grace == timedelta(hours=6)


def test_a_table_never_synced_is_unhealthy_with_the_error_of_its_failed_attempt(
    audit: AuditLog,
) -> None:
    record(audit, "orders", ago=timedelta(minutes=5), success=False, error="SourceError: down")

    health = assess(CONFIG, audit, now=NOW).table("orders")

    assert health.status is Health.UNHEALTHY
    assert health.last_success is None
    assert health.last_error == "SourceError: down"
    assert "never" in health.reason


def test_a_failed_sync_after_a_recent_success_degrades_the_table(audit: AuditLog) -> None:
    record(audit, "orders", ago=timedelta(minutes=20))
    record(audit, "orders", ago=timedelta(minutes=5), success=False, error="DuplicateKeys: 7")

    health = assess(CONFIG, audit, now=NOW).table("orders")

    assert health.status is Health.DEGRADED
    assert health.last_error == "DuplicateKeys: 7"
    assert "failed" in health.reason


def test_a_failure_followed_by_a_success_leaves_the_table_healthy(audit: AuditLog) -> None:
    record(audit, "orders", ago=timedelta(minutes=20), success=False, error="SourceError: down")
    record(audit, "orders", ago=timedelta(minutes=5))

    health = assess(CONFIG, audit, now=NOW).table("orders")

    assert health.status is Health.HEALTHY
    assert health.last_error is None


def test_a_sync_running_after_a_failure_keeps_the_failure_in_view(audit: AuditLog) -> None:
    record(audit, "orders", ago=timedelta(minutes=40))
    record(audit, "orders", ago=timedelta(minutes=20), success=False, error="SourceError: down")
    record(audit, "orders", ago=timedelta(minutes=1), success=None)

    health = assess(CONFIG, audit, now=NOW).table("orders")

    assert health.status is Health.DEGRADED
    assert health.syncing
    assert health.last_error == "SourceError: down"


@pytest.mark.parametrize(
    ("orders_ago", "items_ago", "overall", "exit_code"),
    [
        (timedelta(minutes=5), timedelta(hours=2), Health.HEALTHY, 0),
        (timedelta(minutes=70), timedelta(hours=2), Health.DEGRADED, 1),
        (timedelta(minutes=70), timedelta(days=2), Health.UNHEALTHY, 2),
    ],
)
def test_the_overall_status_is_the_worst_and_sets_the_exit_code(
    audit: AuditLog,
    orders_ago: timedelta,
    items_ago: timedelta,
    overall: Health,
    exit_code: int,
) -> None:
    record(audit, "orders", ago=orders_ago)
    record(audit, "items", ago=items_ago)

    report = assess(CONFIG, audit, now=NOW)

    assert report.status is overall
    assert report.exit_code == exit_code


def test_the_rendered_table_shows_each_table_at_a_glance(audit: AuditLog) -> None:
    record(audit, "orders", ago=timedelta(minutes=70), success=True)
    record(audit, "orders", ago=timedelta(minutes=3), success=False, error="SourceError:\n down")

    lines = assess(CONFIG, audit, now=NOW).render().splitlines()

    assert lines[0].split() == [
        "table", "tier", "last", "success", "(Europe/Berlin)", "age", "status", "last", "error"
    ]  # fmt: skip
    # 10:50 UTC is 12:50 in Berlin on the first day of summer time.
    assert lines[1].split() == [
        "orders", "Hourly", "2025-03-30", "12:50", "1h", "10m", "Degraded", "SourceError:", "down"
    ]  # fmt: skip
    assert lines[2].split() == ["items", "Daily", "never", "-", "Unhealthy"]
    assert lines[-1].startswith("overall: Unhealthy (0 Healthy, 1 Degraded, 1 Unhealthy;")


def test_the_json_report_gives_machines_every_figure(audit: AuditLog) -> None:
    record(audit, "orders", ago=timedelta(minutes=10))

    report = json.loads(assess(CONFIG, audit, now=NOW).to_json())

    assert report["status"] == "Unhealthy"
    assert report["exit_code"] == 2
    assert report["checked_at"] == "2025-03-30T12:00:00Z"
    assert report["tables"][0] == {
        "table": "orders",
        "tier": "Hourly",
        "source": "shop",
        "status": "Healthy",
        "reason": "last success 10m ago, within its interval of 1h 00m",
        "interval_seconds": 3600.0,
        "grace_seconds": 1800.0,
        "last_success": "2025-03-30T11:50:00Z",
        "age_seconds": 600,
        "last_error": None,
        "syncing": False,
    }
    assert report["tables"][1]["last_success"] is None


def test_a_zone_aware_now_is_read_as_the_same_moment_in_utc(audit: AuditLog) -> None:
    from zoneinfo import ZoneInfo

    record(audit, "orders", ago=timedelta(minutes=10))
    berlin_noon = datetime(2025, 3, 30, 14, 0, tzinfo=ZoneInfo("Europe/Berlin"))

    assert assess(CONFIG, audit, now=berlin_noon).table("orders").age == timedelta(minutes=10)


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=12, seconds=5), "12m"),
        (timedelta(hours=3, minutes=5), "3h 05m"),
        (timedelta(days=2, hours=4, minutes=59), "2d 04h"),
    ],
)
def test_durations_read_at_a_glance(span: timedelta, text: str) -> None:
    assert duration(span) == text


# The same health in Dagster: the freshness policy and the asset check of each table.


def test_the_freshness_policy_warns_past_the_interval_and_fails_past_the_grace() -> None:
    policy = freshness_policy(CONFIG.table("orders"), CONFIG.options)

    assert policy == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=1, minutes=30), warn_window=timedelta(hours=1)
    )


@pytest.mark.parametrize(
    ("ago", "passed", "severity"),
    [
        (timedelta(minutes=5), True, dg.AssetCheckSeverity.WARN),
        (timedelta(minutes=70), False, dg.AssetCheckSeverity.WARN),
        (timedelta(hours=2), False, dg.AssetCheckSeverity.ERROR),
    ],
)
def test_the_check_warns_when_degraded_and_fails_as_an_error_when_unhealthy(
    audit: AuditLog, ago: timedelta, passed: bool, severity: dg.AssetCheckSeverity
) -> None:
    record(audit, "orders", ago=ago)

    result = check_result(assess(CONFIG, audit, now=NOW).table("orders"))

    assert (result.passed, result.severity) == (passed, severity)
    assert result.description == assess(CONFIG, audit, now=NOW).table("orders").reason
    assert result.metadata["age_seconds"] == dg.MetadataValue.int(int(ago.total_seconds()))


def test_the_check_runs_on_its_own_and_in_each_sync_run_after_the_sync(
    tmp_path: Path, make_engine: Callable[..., sa.Engine]
) -> None:
    source = make_engine(f"sqlite:///{tmp_path / 'shop.sqlite'}")
    with source.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, changed TEXT)")
        connection.exec_driver_sql("INSERT INTO orders VALUES (1, '2025-03-30 10:00:00')")
    config = CONFIG.model_copy(
        update={
            "cache": CacheConfig(url=f"sqlite:///{tmp_path / 'cache.sqlite'}"),
            "sources": [DataSourceConfig(name="shop", url=str(source.url))],
            "tables": [CONFIG.table("orders")],
        }
    )
    repository = make_definitions(config).get_repository_def()

    with dg.DagsterInstance.ephemeral() as instance:
        alone = repository.get_job("__anonymous_asset_job_table_health").execute_in_process(
            instance=instance
        )
        synced = repository.get_job("__ASSET_JOB").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("orders")]
        )
    dispose_engines()

    (before,) = alone.get_asset_check_evaluations()
    (after,) = synced.get_asset_check_evaluations()
    assert (before.passed, before.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert before.description == "never synced successfully"
    assert after.passed
    steps = [e.step_key for e in synced.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert steps == ["orders", "orders_health"]
