"""When the tables sync: one schedule per tier, one run per table, within the configured limits.

Every sync run selects one table's asset and carries the tags `datasync/table`,
`datasync/source` and `datasync/tier`, so that `dagster.yaml` can cap the runs against each
source (`run_limits` renders that section from the configuration). A table whose sync is
running or queued is left out of a tick; the due-table sensor catches it up if it falls behind.
The Mass schedule also gives every Daily and Hourly table a Mass sync: incremental reads never
see rows deleted at the source, so the weekly Mass sync is what removes them from the cache.
"""

import time
from typing import Any

import dagster as dg

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import TIERS, DataSyncConfig, DataSyncOptions, TableConfig, Tier
from datasync_dagster.defs.assets import SOURCE_TAG, TIER_TAG
from datasync_dagster.defs.liveness import run_alive
from datasync_dagster.defs.resources import CacheResource
from datasync_dagster.engine import TIER_NAMES

TABLE_TAG = "datasync/table"

# Runs in these states have yet to open their `DataUpdate` row; a table with one is busy.
WAITING = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
)
# A started run counts as busy for this long before its open `DataUpdate` row (judged alive or
# dead by `run_alive`) speaks for it: a run whose process was killed stays STARTED for good.
STARTED_GRACE_SECONDS = 600

# Dagster frees the pool slots of a run that ended without releasing them after this long.
FREE_SLOTS_AFTER_SECONDS = 60


def sync_request(
    table: TableConfig, run_key: str | None, tier: Tier | None = None
) -> dg.RunRequest:
    """A run that syncs one table, by its own tier unless `tier` says otherwise."""
    tier = tier or table.tier
    run_config = None
    if tier != table.tier:
        run_config = dg.RunConfig(ops={table.name: {"config": {"tier": tier}}})
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[dg.AssetKey(table.name)],
        run_config=run_config,
        tags={TABLE_TAG: table.name, SOURCE_TAG: table.source, TIER_TAG: tier},
    )


def busy_tables(instance: dg.DagsterInstance, audit: AuditLog) -> set[str]:
    """The tables being synced now (an open `DataUpdate` row whose sync is alive) or with a run
    that will sync them soon."""
    alive = run_alive(instance)
    busy = {update.table_name for update in audit.open_updates() if alive(update)}
    records = list(instance.get_run_records(dg.RunsFilter(statuses=list(WAITING))))
    started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    recent = time.time() - STARTED_GRACE_SECONDS
    records += [record for record in started if (record.start_time or recent) > recent]
    for record in records:
        run = record.dagster_run
        if TABLE_TAG in run.tags:
            busy.add(run.tags[TABLE_TAG])
        # A run started from the UI has no table tag but names the assets it materializes.
        busy.update(key.to_user_string() for key in run.asset_selection or ())
    return busy


def make_schedules(config: DataSyncConfig) -> list[dg.ScheduleDefinition]:
    """One schedule per tier that has tables, running from the start."""
    schedules = []
    for tier in TIERS:
        tables = [t for t in config.tables if t.tier == tier or tier == "mass"]
        if tables:
            schedules.append(make_tier_schedule(tier, tables, config.options))
    return schedules


def make_tier_schedule(
    tier: Tier, tables: list[TableConfig], options: DataSyncOptions
) -> dg.ScheduleDefinition:
    """The schedule of one tier: on each tick, one run per table of the tier that is idle."""
    settings = options.tiers.of(tier)

    @dg.schedule(
        name=f"{tier}_syncs",
        cron_schedule=settings.cron,
        execution_timezone=options.timezone,
        target=dg.AssetSelection.assets(*[table.name for table in tables]),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Syncs {_which(tier)} at `{settings.cron}` ({options.timezone}), one run per "
            "table; a table still syncing or queued is left for the next tick."
        ),
    )
    def tier_schedule(
        context: dg.ScheduleEvaluationContext, cache: CacheResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        busy = busy_tables(context.instance, cache.audit())
        tick = context.scheduled_execution_time.isoformat()
        requests = [
            sync_request(table, run_key=f"{table.name}@{tick}", tier=tier)
            for table in tables
            if table.name not in busy
        ]
        if not requests:
            return dg.SkipReason(f"every {TIER_NAMES[tier]} table is syncing or queued")
        return requests

    return tier_schedule


def _which(tier: Tier) -> str:
    if tier == "mass":
        return "every table by Mass (removing rows deleted at the source)"
    return f"the {TIER_NAMES[tier]} tables"


def run_limits(options: DataSyncOptions) -> dict[str, Any]:
    """The run-limit sections of `dagster.yaml` that the configuration's options call for.

    Runs wait in the queue of the daemon's run coordinator until they may start: at most
    `max_parallel_syncs` runs at once, and at most `max_parallel_per_source` against any one
    source, counted by the source tag of the runs and by the pool of the source's assets
    (which also holds runs started from the UI). Run monitoring frees the pool slots of runs
    that died without releasing them.
    """
    return {
        "run_coordinator": {"module": "dagster", "class": "QueuedRunCoordinator"},
        "concurrency": {
            "runs": {
                "max_concurrent_runs": options.max_parallel_syncs,
                "tag_concurrency_limits": [
                    {
                        "key": SOURCE_TAG,
                        "value": {"applyLimitPerUniqueValue": True},
                        "limit": options.max_parallel_per_source,
                    }
                ],
            },
            "pools": {"default_limit": options.max_parallel_per_source},
        },
        "run_monitoring": {
            "enabled": True,
            "free_slots_after_run_end_seconds": FREE_SLOTS_AFTER_SECONDS,
        },
    }
