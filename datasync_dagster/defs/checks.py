"""Each table's health in Dagster: a freshness policy, and an asset check that reads `DataUpdate`.

The check runs in every sync's run, after the sync, and in the check-only runs the health
sensor launches on a timer, so a table that nobody syncs still turns Degraded, then Unhealthy.
"""

from datetime import UTC, timedelta

import dagster as dg

from datasync_dagster.config import DataSyncConfig, DataSyncOptions, TableConfig
from datasync_dagster.defs.resources import CACHE_KEY, CacheResource
from datasync_dagster.engine import TIER_NAMES
from datasync_dagster.health import Health, TableHealth, assess

HEALTH_CHECK = "health"

# Dagster evaluates freshness windows at a resolution of one minute and refuses shorter ones.
_SHORTEST_WINDOW = timedelta(minutes=1)


def freshness_policy(table: TableConfig, options: DataSyncOptions) -> dg.FreshnessPolicy:
    """The table's freshness: warn past its tier's interval, fail past the grace after it."""
    settings = options.tiers.of(table.tier)
    fail_window = max(settings.interval + settings.grace, _SHORTEST_WINDOW)
    warn_window = max(settings.interval, _SHORTEST_WINDOW)
    if warn_window >= fail_window:
        return dg.FreshnessPolicy.time_window(fail_window=fail_window)
    return dg.FreshnessPolicy.time_window(fail_window=fail_window, warn_window=warn_window)


def health_check_key(table: TableConfig) -> dg.AssetCheckKey:
    """The key of a table's health check."""
    return dg.AssetCheckKey(dg.AssetKey(table.name), HEALTH_CHECK)


def make_asset_checks(config: DataSyncConfig) -> list[dg.AssetChecksDefinition]:
    """One health check per configured table."""
    return [make_health_check(table, config) for table in config.tables]


def make_health_check(table: TableConfig, config: DataSyncConfig) -> dg.AssetChecksDefinition:
    """The check of one table: passes when Healthy, warns when Degraded, fails when Unhealthy."""

    @dg.asset_check(
        asset=dg.AssetKey(table.name),
        name=HEALTH_CHECK,
        description=(
            f"Healthy while the last successful sync is within the {TIER_NAMES[table.tier]} "
            "interval; Degraded past it or after a failed sync; Unhealthy past the grace that "
            "follows, or never synced."
        ),
        required_resource_keys={CACHE_KEY},
        blocking=False,
    )
    def health_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        cache: CacheResource = getattr(context.resources, CACHE_KEY)
        return check_result(assess(config, cache.audit()).table(table.name))

    return health_check


def check_result(health: TableHealth) -> dg.AssetCheckResult:
    """A table's health as an asset check result: WARN for Degraded, ERROR for Unhealthy."""
    severity = (
        dg.AssetCheckSeverity.ERROR
        if health.status is Health.UNHEALTHY
        else dg.AssetCheckSeverity.WARN
    )
    metadata: dict[str, dg.RawMetadataValue] = {
        "status": health.status.label,
        "interval_seconds": health.interval.total_seconds(),
        "grace_seconds": health.grace.total_seconds(),
        "syncing": health.syncing,
    }
    if health.last_success is not None and health.age is not None:
        # Audit times are UTC without a zone.
        moment = health.last_success.replace(tzinfo=UTC)
        metadata["last_success"] = dg.MetadataValue.timestamp(moment)
        metadata["age_seconds"] = round(health.age.total_seconds())
    if health.last_error:
        metadata["last_error"] = health.last_error
    return dg.AssetCheckResult(
        passed=health.status is Health.HEALTHY,
        severity=severity,
        description=health.reason,
        metadata=metadata,
    )
