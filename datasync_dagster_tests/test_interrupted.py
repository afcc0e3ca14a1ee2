"""Interrupted syncs: a terminated run closes its `DataUpdate` row with the reason, a killed one
is swept, and two syncs of one table never overlap. Real sync processes are stopped half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from datasync_dagster.audit import AuditLog, DataUpdate
from datasync_dagster.config import DataSourceConfig, TableConfig, load_config
from datasync_dagster.defs.liveness import run_alive
from datasync_dagster.defs.resources import CacheResource
from datasync_dagster.defs.sensors import make_sensors
from datasync_dagster.engine import sync_table
from datasync_dagster.errors import SyncInProgress
from datasync_dagster.fetchers.base import Batch, DataFetcher
from datasync_dagster.fetchers.sql import SqlFetcher
from datasync_dagster.writers import create_cache_engine, writer_for
from datasync_dagster_tests.fixtures.fetchers import WrappedFetcher

ROWS = 200_000
SEED_ROWS = 1_000
BATCH = 2_000
TABLE = TableConfig(
    name="items", source="shop", source_table="items", key_columns=["id"], tier="mass"
)
SOURCE = DataSourceConfig(name="shop", url="sqlite://")

# One sync of `items` as a Dagster run, in this process: what a run worker does.
DAGSTER_RUN = textwrap.dedent(
    """
    import sys
    import dagster as dg
    from datasync_dagster.config import load_config
    from datasync_dagster.definitions import make_definitions

    job = make_definitions(load_config(sys.argv[1])).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("items")], raise_on_error=False
        )
    sys.exit(0 if result.success else 3)
    """
)

# One sync of `items` by the engine alone, as `datasync sync` outside Dagster would run it.
ENGINE_SYNC = textwrap.dedent(
    """
    import sys
    from datasync_dagster.audit import AuditLog
    from datasync_dagster.config import load_config
    from datasync_dagster.engine import sync_table
    from datasync_dagster.fetchers import create_source_engine, fetcher_for
    from datasync_dagster.writers import create_cache_engine, writer_for

    config = load_config(sys.argv[1])
    table, source = config.table("items"), config.source("shop")
    cache = create_cache_engine(config.cache.resolve_url())
    audit = AuditLog(cache)
    audit.ensure()
    fetcher = fetcher_for(create_source_engine(source), source, table)
    sync_table(table, fetcher, writer_for(cache), audit, batch_size=config.options.batch_size)
    """
)


@dataclass
class Setup:
    """A source of `ROWS` items, a cache, a Dagster instance, and a configuration naming them."""

    config_path: Path
    dagster_home: Path
    source_url: str
    cache_url: str

    log_path: Path

    def start(self, script: str) -> subprocess.Popen[bytes]:
        """Run `script` in a new process; its output goes to `log_path`."""
        env = {**os.environ, "DAGSTER_HOME": str(self.dagster_home)}
        with self.log_path.open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-c", script, str(self.config_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def make_setup(tmp_path: Path, cache_url: str, rows: int = ROWS) -> Setup:
    source_url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = sa.create_engine(source_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    finally:
        engine.dispose()
    add_items(source_url, rows)

    config = {
        "options": {"batch_size": BATCH},
        "cache": {"url": cache_url},
        "sources": [{"name": "shop", "url": source_url}],
        "tables": [TABLE.model_dump(exclude_defaults=True)],
    }
    config_path = tmp_path / "datasync.yaml"
    config_path.write_text(yaml.safe_dump(config))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return Setup(config_path, home, source_url, cache_url, tmp_path / "sync.log")


@pytest.fixture
def cache_audit() -> Iterator[Callable[[str], AuditLog]]:
    engines: list[sa.Engine] = []

    def make(url: str) -> AuditLog:
        engine = create_cache_engine(url)
        engines.append(engine)
        audit = AuditLog(engine)
        audit.ensure()
        return audit

    yield make
    for engine in engines:
        engine.dispose()


def wait_for(
    condition: Callable[[], Any], process: subprocess.Popen[bytes], setup: Setup, what: str
) -> Any:
    """Poll until `condition()` is true; fail if the process ends first or it takes too long."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"the sync process ended before {what}:\n{setup.output()}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"timed out waiting for {what}")


def terminate(process: subprocess.Popen[bytes], audit: AuditLog) -> None:
    """Send SIGTERM as Dagster's run termination does, again if the sync went on regardless.

    Python discards an exception that a signal handler raises while a garbage-collector
    callback runs ("Exception ignored in ..."), so one request can go unheard, as it can in a
    run worker; the UI then offers to terminate again.
    """
    for _ in range(5):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=2)
            return
        except subprocess.TimeoutExpired:
            if not audit.open_updates():
                process.wait(timeout=60)
                return
    process.kill()
    pytest.fail("the sync process did not stop on SIGTERM")


def add_items(source_url: str, rows: int) -> None:
    """Add `rows` items to the source, numbered on from the last one."""
    engine = sa.create_engine(source_url)
    try:
        with engine.begin() as connection:
            first = connection.exec_driver_sql(
                "SELECT COALESCE(MAX(id), 0) FROM items"
            ).scalar_one()
            connection.exec_driver_sql(
                "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO items SELECT i, 'item number ' || i FROM n",
                (first + 1, first + rows),
            )
    finally:
        engine.dispose()


def seed_cache(setup: Setup, audit: AuditLog) -> None:
    """A first, complete sync, so that the interrupted one has a cache table to leave alone."""
    source = sa.create_engine(setup.source_url)
    try:
        sync_table(TABLE, SqlFetcher(source, SOURCE, TABLE), writer_for(audit.engine), audit)
    finally:
        source.dispose()


def cache_rows(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT COUNT(*) FROM items").scalar_one())


def first_open_row(audit: AuditLog) -> Callable[[], DataUpdate | None]:
    return lambda: next(iter(audit.open_updates()), None)


def staging_tables(engine: sa.Engine) -> list[str]:
    """The staging tables PostgreSQL holds now, temporary ones of every session included."""
    with engine.connect() as connection:
        return list(
            connection.scalars(sa.text("SELECT relname FROM pg_class WHERE relname LIKE 'stg_%'"))
        )


@pytest.mark.parametrize("cache", ["sqlite", "postgresql"])
def test_a_terminated_run_rolls_back_drops_its_staging_and_closes_its_row_with_the_reason(
    cache: str,
    tmp_path: Path,
    sqlite_url: Callable[[str], str],
    pg_databases: Any,
    cache_audit: Callable[[str], AuditLog],
) -> None:
    url = sqlite_url("cache") if cache == "sqlite" else pg_databases.create()
    setup = make_setup(tmp_path, url, rows=SEED_ROWS)
    audit = cache_audit(url)
    seed_cache(setup, audit)
    add_items(setup.source_url, ROWS - SEED_ROWS)

    process = setup.start(DAGSTER_RUN)
    wait_for(lambda: loading(audit), process, setup, "it was loading its staging table")
    terminate(process, audit)

    (update, seeded) = audit.history("items")
    assert seeded.success is True
    assert update.success is False and update.ended_at is not None
    assert update.run_id is not None
    with dg.DagsterInstance.from_config(str(setup.dagster_home)) as instance:
        run = instance.get_run_by_id(update.run_id)
        assert run is not None and run.status is dg.DagsterRunStatus.FAILURE
    assert audit.open_updates() == []
    assert cache_rows(audit.engine) == SEED_ROWS  # the cache is as the first sync left it
    if cache == "postgresql":
        assert staging_tables(audit.engine) == []
    assert update.error is not None
    assert update.error.startswith("interrupted: the sync was stopped from outside")


def loading(audit: AuditLog) -> bool:
    """Whether a sync is under way and, on PostgreSQL, has its staging table."""
    if not audit.open_updates():
        return False
    if audit.engine.dialect.name == "postgresql":
        return bool(staging_tables(audit.engine))
    time.sleep(0.3)  # SQLite keeps TEMP tables to their connection: give the load a moment
    return True


def killed_mid_sync(setup: Setup, audit: AuditLog, script: str) -> DataUpdate:
    """Start `script`, and kill it outright once its `DataUpdate` row is open; that row."""
    process = setup.start(script)
    update: DataUpdate = wait_for(first_open_row(audit), process, setup, "the row was opened")
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return update


def test_a_killed_run_leaves_an_open_row_that_the_sweep_sensor_closes(
    tmp_path: Path, sqlite_url: Callable[[str], str], cache_audit: Callable[[str], AuditLog]
) -> None:
    setup = make_setup(tmp_path, sqlite_url("cache"))
    audit = cache_audit(setup.cache_url)

    update = killed_mid_sync(setup, audit, DAGSTER_RUN)
    assert audit.open_updates() == [update]

    (sweep,) = [
        s for s in make_sensors(load_config(setup.config_path)) if s.name == "interrupted_syncs"
    ]
    with dg.DagsterInstance.from_config(str(setup.dagster_home)) as instance:
        run = instance.get_run_by_id(update.run_id or "")
        assert run is not None and run.status is dg.DagsterRunStatus.STARTED  # it never ended
        with dg.build_sensor_context(
            instance=instance, resources={"cache": CacheResource(url=setup.cache_url)}
        ) as context:
            sweep(context)

    (closed,) = audit.history("items")
    assert closed.id == update.id
    assert closed.success is False
    assert closed.error is not None and "interrupted" in closed.error
    assert audit.open_updates() == []


def test_the_next_sync_of_a_table_closes_the_row_its_killed_predecessor_left(
    tmp_path: Path, sqlite_url: Callable[[str], str], cache_audit: Callable[[str], AuditLog]
) -> None:
    setup = make_setup(tmp_path, sqlite_url("cache"))
    audit = cache_audit(setup.cache_url)
    left = killed_mid_sync(setup, audit, ENGINE_SYNC)

    source = sa.create_engine(setup.source_url)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            fetcher = SqlFetcher(source, SOURCE, TABLE)
            result = sync_table(
                TABLE, fetcher, writer_for(audit.engine), audit, alive=run_alive(instance)
            )
    finally:
        source.dispose()

    (done, swept) = audit.history("items")
    assert swept.id == left.id and swept.success is False
    assert swept.error is not None and f"process {left.pid}" in swept.error
    assert (done.id, done.success, done.rows_read) == (result.update_id, True, ROWS)


class SlowFetcher(WrappedFetcher):
    """A real fetcher that waits before each batch until the test lets it go on."""

    def __init__(self, inner: DataFetcher, go_on: threading.Event):
        super().__init__(inner)
        self.go_on = go_on

    def passed(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.go_on.wait(timeout=30)
            yield batch


@pytest.mark.parametrize("cache", ["sqlite", "postgresql"])
def test_two_syncs_of_one_table_never_overlap(
    cache: str,
    tmp_path: Path,
    sqlite_url: Callable[[str], str],
    pg_databases: Any,
    cache_audit: Callable[[str], AuditLog],
) -> None:
    url = sqlite_url("cache") if cache == "sqlite" else pg_databases.create()
    setup = make_setup(tmp_path, url, rows=10 * BATCH)
    audit = cache_audit(url)
    source = sa.create_engine(setup.source_url)
    go_on = threading.Event()
    outcome: list[object] = []

    def first_sync() -> None:
        fetcher = SlowFetcher(SqlFetcher(source, SOURCE, TABLE), go_on)
        outcome.append(sync_table(TABLE, fetcher, writer_for(audit.engine), audit))

    first = threading.Thread(target=first_sync)
    first.start()
    try:
        deadline = time.monotonic() + 30
        while not audit.open_updates() and time.monotonic() < deadline:
            time.sleep(0.01)
        (holder,) = audit.open_updates()

        with pytest.raises(SyncInProgress, match=r"table `items` is being synced"):
            sync_table(TABLE, SqlFetcher(source, SOURCE, TABLE), writer_for(audit.engine), audit)
        assert audit.open_updates() == [holder]
    finally:
        go_on.set()
        first.join(timeout=60)
        source.dispose()

    assert [u.id for u in audit.history("items")] == [holder.id]
    assert len(outcome) == 1
