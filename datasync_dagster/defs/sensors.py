"""The sensors that keep the cache in step without anyone watching.

- `due_tables` requests a sync of each table whose last success is older than its tier's
  interval (after downtime, after a failure) or that was never synced, once per lapse.
- `interrupted_syncs` closes as failed the open `DataUpdate` rows whose run is finished or gone,
  or whose process on this host has died (kill -9, a lost run worker).
- `table_health` launches a run of the health checks of the tables whose health has changed
  since its last look, so that a table nobody syncs still turns Degraded, then Unhealthy.
"""

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import dagster as dg

from datasync_dagster.audit import AuditLog, DataUpdate
from datasync_dagster.config import DataSyncConfig, TableConfig
from datasync_dagster.defs.checks import health_check_key
from datasync_dagster.defs.liveness import run_alive
from datasync_dagster.defs.resources import CacheResource
from datasync_dagster.defs.schedules import busy_tables, sync_request
from datasync_dagster.health import assess

DUE_EVERY_SECONDS = 120
SWEEP_EVERY_SECONDS = 60
HEALTH_EVERY_SECONDS = 120

TSensorOutcome = dg.SensorResult | dg.SkipReason | list[dg.RunRequest]
TSensorDecision = Callable[[dg.SensorEvaluationContext, AuditLog], TSensorOutcome]


def make_sensors(config: DataSyncConfig) -> list[dg.SensorDefinition]:
    """The due-table, sweep and health sensors, running from the start."""
    return [make_due_sensor(config), make_sweep_sensor(), make_health_sensor(config)]


def due(
    tables: Iterable[TableConfig],
    config: DataSyncConfig,
    successes: dict[str, DataUpdate],
    now: datetime,
) -> list[tuple[TableConfig, DataUpdate | None]]:
    """The tables never synced, or whose last success ended longer ago than their interval.

    `now` is UTC without a zone, as the audit times are.
    """
    lapsed = []
    for table in tables:
        last = successes.get(table.name)
        interval = config.options.tiers.of(table.tier).interval
        if last is None or last.ended_at is None or now - last.ended_at > interval:
            lapsed.append((table, last))
    return lapsed


def due_run_key(table: TableConfig, last: DataUpdate | None) -> str:
    """One run per lapse: the table and the last success it lapsed from."""
    return f"{table.name}#due-after-{last.id if last else 'never'}"


def make_due_sensor(config: DataSyncConfig) -> dg.SensorDefinition:
    """Requests the syncs that are due and that no schedule has started."""

    def due_tables(context: dg.SensorEvaluationContext, audit: AuditLog) -> TSensorOutcome:
        busy = busy_tables(context.instance, audit)
        idle = [table for table in config.tables if table.name not in busy]
        lapsed = due(idle, config, audit.last_successes(), _utcnow())
        if not lapsed:
            return dg.SkipReason("no idle table is past its interval")
        return [sync_request(table, due_run_key(table, last)) for table, last in lapsed]

    return _audit_sensor(
        "due_tables",
        due_tables,
        every_seconds=DUE_EVERY_SECONDS,
        target=dg.AssetSelection.assets(*[table.name for table in config.tables]),
        description=(
            "Syncs each table whose last success is older than its tier's interval, or that "
            "was never synced, unless it is syncing or queued; once per lapse."
        ),
    )


def make_sweep_sensor() -> dg.SensorDefinition:
    """Closes the `DataUpdate` rows of syncs that ended without closing them."""

    def interrupted_syncs(context: dg.SensorEvaluationContext, audit: AuditLog) -> TSensorOutcome:
        closed = audit.sweep(run_alive(context.instance))
        if closed:
            context.log.warning("closed the DataUpdate rows %s of interrupted syncs", closed)
            return dg.SkipReason(f"closed the DataUpdate rows {closed} of interrupted syncs")
        return dg.SkipReason("no interrupted sync")

    return _audit_sensor(
        "interrupted_syncs",
        interrupted_syncs,
        every_seconds=SWEEP_EVERY_SECONDS,
        description=(
            "Closes as failed the open DataUpdate rows whose Dagster run is finished or gone, "
            "or whose process on this host has died."
        ),
    )


def make_health_sensor(config: DataSyncConfig) -> dg.SensorDefinition:
    """Re-evaluates the health checks of the tables whose health changed since the last tick."""
    keys = {table.name: health_check_key(table) for table in config.tables}

    def table_health(context: dg.SensorEvaluationContext, audit: AuditLog) -> TSensorOutcome:
        seen = json.loads(context.cursor) if context.cursor else {}
        now = {t.table: t.status.label for t in assess(config, audit).tables}
        changed = sorted(name for name, status in now.items() if seen.get(name) != status)
        if not changed:
            return dg.SkipReason("no table's health has changed")

        context.log.info("health changed for %s", ", ".join(changed))
        request = dg.RunRequest(asset_selection=[], asset_check_keys=[keys[n] for n in changed])
        return dg.SensorResult(run_requests=[request], cursor=json.dumps(now, sort_keys=True))

    return _audit_sensor(
        "table_health",
        table_health,
        every_seconds=HEALTH_EVERY_SECONDS,
        target=dg.AssetSelection.checks(*keys.values()),
        description=(
            "Runs the health checks of the tables whose health changed (Healthy, Degraded, "
            "Unhealthy), so that a table nobody syncs still shows it."
        ),
    )


def _audit_sensor(
    name: str,
    decide: TSensorDecision,
    *,
    every_seconds: int,
    description: str,
    target: dg.AssetSelection | None = None,
) -> dg.SensorDefinition:
    """A sensor running from the start that hands each tick's `DataUpdate` log to `decide`."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=every_seconds,
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def evaluate(context: dg.SensorEvaluationContext, cache: CacheResource) -> TSensorOutcome:
        return decide(context, cache.audit())

    return evaluate


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
