"""Run limits: `dagster.yaml` agrees with the configuration, Dagster reads it as meant, and
under those limits no more syncs run at once than allowed, overall and per source."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

# The run queue's own choice of the runs to start now, without the daemon process around it;
# and the origin a queued run must name. Dagster 1.13 makes neither public.
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from datasync_dagster.audit import AuditLog, DataUpdate
from datasync_dagster.config import (
    DEMO_CONFIG,
    DataSourceConfig,
    DataSyncOptions,
    TableConfig,
    load_config,
)
from datasync_dagster.defs.assets import make_table_assets, pool_name
from datasync_dagster.defs.schedules import run_limits, sync_request
from datasync_dagster.engine import sync_table
from datasync_dagster.fetchers.base import Batch
from datasync_dagster.fetchers.sql import SqlFetcher
from datasync_dagster.writers import writer_for
from datasync_dagster_tests.fixtures.fetchers import WrappedFetcher

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGSTER_YAML = REPO_ROOT / "dagster.yaml"


def test_dagster_yaml_sets_the_limits_the_demo_configuration_asks_for() -> None:
    options = load_config(DEMO_CONFIG, check_env=False).options
    instance_settings = yaml.safe_load(DAGSTER_YAML.read_text())

    expected = run_limits(options)

    assert {key: instance_settings.get(key) for key in expected} == expected, (
        f"{DAGSTER_YAML} disagrees with `options` of {DEMO_CONFIG}; put the sections "
        "`run_limits(options)` renders into dagster.yaml"
    )
    assert instance_settings["telemetry"] == {"enabled": False}


def test_dagster_reads_the_limits_from_dagster_yaml(tmp_path: Path) -> None:
    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    options = load_config(DEMO_CONFIG, check_env=False).options

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        queue = concurrency.run_queue_config
        coordinator = instance.run_coordinator
        monitoring = instance.run_monitoring_settings

    assert isinstance(coordinator, dg.QueuedRunCoordinator)
    assert queue is not None
    assert queue.max_concurrent_runs == options.max_parallel_syncs
    assert queue.tag_concurrency_limits == [
        {
            "key": "datasync/source",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": options.max_parallel_per_source,
        }
    ]
    assert concurrency.pool_config.default_pool_limit == options.max_parallel_per_source
    assert monitoring["enabled"] is True
    assert monitoring["free_slots_after_run_end_seconds"] > 0


def test_every_table_asset_is_in_the_pool_of_its_source() -> None:
    config = load_config(DEMO_CONFIG, check_env=False)

    pools = {asset.key.to_user_string(): asset.op.pool for asset in make_table_assets(config)}

    assert pools == {table.name: pool_name(table.source) for table in config.tables}


# Six tables on two sources, at most three syncs at once and two per source.
OPTIONS = DataSyncOptions(max_parallel_syncs=3, max_parallel_per_source=2)
TABLES = [
    TableConfig(
        name=f"{source}_{i}",
        source=source,
        source_table="items",
        cache_table=f"{source}_{i}",
        key_columns=["id"],
        tier="mass",
    )
    for source, count in (("shop", 4), ("crm", 2))
    for i in range(count)
]
ROWS = 400
BATCH = 50
SECONDS_PER_BATCH = 0.1


class SlowFetcher(WrappedFetcher):
    """A real fetcher that takes its time over each batch, like a busy source would."""

    def passed(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            time.sleep(SECONDS_PER_BATCH)
            yield batch


@pytest.fixture
def source_engine(
    make_engine: Callable[..., sa.Engine], sqlite_url: Callable[[str], str]
) -> sa.Engine:
    engine = make_engine(sqlite_url("source"))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        connection.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO items SELECT i, 'item ' || i FROM n",
            (ROWS,),
        )
    return engine


@pytest.fixture
def audit(
    make_cache_engine: Callable[..., sa.Engine], sqlite_url: Callable[[str], str]
) -> AuditLog:
    log = AuditLog(make_cache_engine(sqlite_url("cache")))
    log.ensure()
    return log


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance whose `dagster.yaml` has the limits `OPTIONS` call for."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    settings = {"telemetry": {"enabled": False}, **run_limits(OPTIONS)}
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def queue_sync(instance: dg.DagsterInstance, table: TableConfig) -> str:
    """A sync run as a schedule requests it, waiting in the run queue."""
    request = sync_request(table, run_key=None)
    run_id = str(uuid.uuid4())
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin("datasync"),
            repository_name="__repository__",
        ),
        job_name="__ASSET_JOB",
    )
    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id=run_id,
            status=dg.DagsterRunStatus.QUEUED,
            tags=request.tags,
            asset_selection=frozenset(request.asset_selection or ()),
            remote_job_origin=origin,
        )
    )
    return run_id


def report(instance: dg.DagsterInstance, run_id: str, event: dg.DagsterEventType) -> None:
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=event.value, job_name="__ASSET_JOB"), run_id=run_id
    )


def most_at_once(updates: list[DataUpdate]) -> int:
    """The most syncs whose `DataUpdate` rows were open at the same moment."""
    moments = [(u.started_at, 1) for u in updates] + [(u.ended_at, -1) for u in updates]
    running = most = 0
    for _, step in sorted(moments, key=lambda m: (m[0], m[1])):  # ends before starts
        running += step
        most = max(most, running)
    return most


def test_the_run_queue_starts_no_more_syncs_than_the_limits_allow(
    instance: dg.DagsterInstance, source_engine: sa.Engine, audit: AuditLog
) -> None:
    writer = writer_for(audit.engine)
    queued = {queue_sync(instance, table): table for table in TABLES}
    queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
    running: dict[str, threading.Thread] = {}

    def sync(table: TableConfig) -> None:
        source = DataSourceConfig(name=table.source, url="sqlite://")
        fetcher = SlowFetcher(SqlFetcher(source_engine, source, table))
        sync_table(table, fetcher, writer, audit, batch_size=BATCH)

    deadline = time.monotonic() + 60
    while queued or running:
        assert time.monotonic() < deadline, "the syncs did not finish within a minute"
        starting = queue._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
        for run in starting:
            running[run.run_id] = threading.Thread(target=sync, args=(queued.pop(run.run_id),))
            running[run.run_id].start()
        for run in starting:
            report(instance, run.run_id, dg.DagsterEventType.RUN_START)
        for run_id, thread in list(running.items()):
            if not thread.is_alive():
                report(instance, run_id, dg.DagsterEventType.RUN_SUCCESS)
                del running[run_id]
        time.sleep(0.02)

    updates = [u for table in TABLES for u in audit.history(table.name)]
    assert sorted(u.table_name for u in updates if u.success) == sorted(t.name for t in TABLES)
    per_source = {
        source: most_at_once([u for u in updates if u.source_name == source])
        for source in ("shop", "crm")
    }
    # Three start together (two of shop, one of crm); shop always has two more waiting.
    assert most_at_once(updates) == OPTIONS.max_parallel_syncs
    assert per_source["shop"] == OPTIONS.max_parallel_per_source
    assert per_source["crm"] <= OPTIONS.max_parallel_per_source
