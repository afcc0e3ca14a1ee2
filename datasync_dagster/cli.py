"""The `datasync` command: `demo` makes the demo sources, `sync` runs table assets through
Dagster and exits, `health` tells how the tables stand."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import TIERS, DataSyncConfig, TableConfig, load_config
from datasync_dagster.definitions import make_definitions
from datasync_dagster.defs.assets import SOURCE_TAG, TIER_TAG
from datasync_dagster.defs.schedules import TABLE_TAG
from datasync_dagster.demo import make_demo
from datasync_dagster.errors import ConfigError, DataSyncError
from datasync_dagster.health import assess
from datasync_dagster.writers import create_cache_engine

DAGSTER_HOME = ".dagster_home"
INSTANCE_FILE = "dagster.yaml"
# The instance settings used when the working directory has no `dagster.yaml` of its own.
FALLBACK_INSTANCE = "telemetry:\n  enabled: false\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `datasync` command; the return value is the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = _run(args)
        sys.stdout.flush()  # now, so that a reader gone away shows here and not at exit
    except BrokenPipeError:
        return _reader_gone()
    return code


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; an error of its own or of a database becomes one line."""
    try:
        code: int = args.run(args)
    except DataSyncError as e:
        print(f"datasync {args.command}: {e}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as e:
        # The database's own words, without the statement and the link SQLAlchemy appends.
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        print(f"datasync {args.command}: the database refused: {reason}", file=sys.stderr)
        return 1
    return code


def _reader_gone() -> int:
    """Stop quietly when the reader of stdout has closed it (`datasync health | head`).

    The exit code is the one a shell shows for a command that SIGPIPE ended. Stdout is pointed
    at the null device, so that what is still buffered for it cannot fail again at exit.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return 128 + signal.SIGPIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datasync", description="Keep a cache database in step with JDE and CMS sources."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="create the demo sources, or change a few percent of their rows"
    )
    demo.add_argument("--data-dir", default="data", type=Path, help="folder of the SQLite files")
    demo.add_argument(
        "--sales-rows", default=100_000, type=int, help="order lines of a new F4211 (100000)"
    )
    demo.set_defaults(run=_demo)

    sync = commands.add_parser(
        "sync", help="sync tables through Dagster, one run per table, and exit"
    )
    sync.add_argument("tables", nargs="*", metavar="TABLE", help="asset names; all when omitted")
    sync.add_argument("--tier", choices=TIERS, help="only the tables of this tier")
    sync.add_argument(
        "--full", action="store_true", help="Mass sync: read everything, delete what is gone"
    )
    sync.set_defaults(run=_sync)

    health = commands.add_parser("health", help="Healthy, Degraded or Unhealthy, per table")
    health.add_argument("--json", action="store_true", help="print JSON instead of a table")
    health.set_defaults(run=_health)
    return parser


def _demo(args: argparse.Namespace) -> int:
    report = make_demo(args.data_dir, sales_rows=args.sales_rows)

    for source in report.sources:
        done = "created" if source.created else f"changed (run {source.run})"
        print(f"demo source {source.name}: {source.path} {done}")
    print(report.summary())
    return 0


def _sync(args: argparse.Namespace) -> int:
    config = load_config()
    tables = selected_tables(config, args.tables, args.tier)
    job = make_definitions(config).resolve_implicit_global_asset_job_def()
    use_dagster_home()

    with dg.DagsterInstance.get() as instance:
        failed = [t for t in tables if not _sync_table(job, instance, t, full=args.full)]

    if failed:
        print(f"{len(failed)} of {len(tables)} tables failed", file=sys.stderr)
    return 1 if failed else 0


def _sync_table(
    job: dg.JobDefinition, instance: dg.DagsterInstance, table: TableConfig, *, full: bool
) -> bool:
    """Run one table's asset in a run of its own, print how it went, and tell if it synced."""
    result = job.execute_in_process(
        run_config=_run_config(table, full=full),
        instance=instance,
        asset_selection=[dg.AssetKey(table.name)],
        raise_on_error=False,
        tags=_run_tags(table, full=full),
    )
    if result.success:
        print(_synced_line(table, result))
    else:
        print(f"{table.name}: failed (run {result.run_id}): {_error(result)}", file=sys.stderr)
    return result.success


def _health(args: argparse.Namespace) -> int:
    config = load_config()
    url = config.cache.resolve_url()
    _require_cache_file(url)
    engine = create_cache_engine(url)
    try:
        audit = AuditLog(engine, config.cache.schema_)
        if not audit.exists():
            raise DataSyncError(
                f"the cache `{engine.url.render_as_string()}` has no `DataUpdate` table yet; "
                "check the cache URL of the configuration, or run `datasync sync` first"
            )
        report = assess(config, audit)
    finally:
        engine.dispose()

    print(report.to_json() if args.json else report.render())
    return report.exit_code


def _require_cache_file(url: str) -> None:
    """Health only reads: a SQLite cache that does not exist is an error, not a new file."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and not Path(database).is_file():
        raise DataSyncError(
            f"the SQLite cache `{database}` does not exist (relative to {Path.cwd()}); check "
            "the cache URL of the configuration, or run `datasync sync` first"
        )


def selected_tables(
    config: DataSyncConfig, names: Sequence[str], tier: str | None
) -> list[TableConfig]:
    """The tables named (all when none is), narrowed to one tier when it is given."""
    tables = [config.table(name) for name in names] if names else list(config.tables)
    if tier is not None:
        tables = [table for table in tables if table.tier == tier]
        if not tables:
            raise ConfigError(f"no selected table has tier `{tier}`; pick another tier or table")
    return tables


def use_dagster_home() -> Path:
    """The Dagster instance folder, so that runs started here show in the UI.

    `DAGSTER_HOME` when it is set; otherwise `.dagster_home` in the working directory (the
    repo root, when run as the README says), given the `dagster.yaml` found beside it.
    """
    value = os.environ.get("DAGSTER_HOME")
    if value:
        return Path(value)

    home = Path.cwd() / DAGSTER_HOME
    home.mkdir(exist_ok=True)
    project_file, instance_file = Path.cwd() / INSTANCE_FILE, home / INSTANCE_FILE
    if project_file.is_file():
        shutil.copyfile(project_file, instance_file)
    elif not instance_file.exists():
        instance_file.write_text(FALLBACK_INSTANCE)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _run_config(table: TableConfig, *, full: bool) -> dict[str, Any]:
    return {
        "ops": {table.name: {"config": {"tier": "mass" if full else "default"}}},
        # A failure's stack trace stays in the run's log in the UI; this prints one line of it.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }


def _run_tags(table: TableConfig, *, full: bool) -> dict[str, str]:
    # The tags of a scheduled sync, so the schedules and sensors see this run the same way.
    return {
        TABLE_TAG: table.name,
        SOURCE_TAG: table.source,
        TIER_TAG: "mass" if full else table.tier,
    }


def _synced_line(table: TableConfig, result: dg.ExecuteInProcessResult) -> str:
    (materialization,) = result.asset_materializations_for_node(table.name)
    m = {key: value.value for key, value in materialization.metadata.items()}
    return (
        f"{table.name}: {m['tier']}, {m['rows_read']:,} read, {m['rows_upserted']:,} upserted, "
        f"{m['rows_deleted']:,} deleted in {m['seconds']:.1f} s; "
        f"{m['dagster/row_count']:,} rows in the cache (run {result.run_id})"
    )


def _error(result: dg.ExecuteInProcessResult) -> str:
    """The message of the error that failed the run, without Dagster's wrapping."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data is None or data.error is None:
            continue
        error = data.error
        while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
            error = error.cause
        return error.message.strip()
    return "the run failed before any table synced; see the run in the Dagster UI"
