"""How each synced table stands: Healthy, Degraded or Unhealthy, read from `DataUpdate`.

A table is Healthy while its last successful sync is within its tier's interval; Degraded once
past the interval but within the grace that follows it, or when its latest sync failed while an
earlier success is still within the grace; Unhealthy past the grace, or when it was never
synced. The overall health is the worst of the tables. No Dagster here: `datasync health` and
the asset checks both read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

from datasync_dagster.audit import AuditLog, DataUpdate
from datasync_dagster.config import DataSyncConfig, TableConfig, Tier
from datasync_dagster.engine import TIER_NAMES

ERROR_SHOWN = 60


class Health(IntEnum):
    """A table's status, ordered from best to worst; the value is the exit code it gives."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2

    @property
    def label(self) -> str:
        return self.name.capitalize()


@dataclass(frozen=True)
class TableHealth:
    """One table's status, with what it was decided from. Times are UTC without a zone."""

    table: str
    tier: Tier
    source: str
    status: Health
    reason: str
    interval: timedelta
    grace: timedelta
    last_success: datetime | None
    age: timedelta | None
    last_error: str | None
    syncing: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "tier": TIER_NAMES[self.tier],
            "source": self.source,
            "status": self.status.label,
            "reason": self.reason,
            "interval_seconds": self.interval.total_seconds(),
            "grace_seconds": self.grace.total_seconds(),
            "last_success": _iso(self.last_success),
            "age_seconds": None if self.age is None else round(self.age.total_seconds()),
            "last_error": self.last_error,
            "syncing": self.syncing,
        }


@dataclass(frozen=True)
class HealthReport:
    """The status of every configured table at one moment."""

    tables: tuple[TableHealth, ...]
    checked_at: datetime
    timezone: str = "UTC"

    @property
    def status(self) -> Health:
        """The worst status of the tables."""
        return max((t.status for t in self.tables), default=Health.HEALTHY)

    @property
    def exit_code(self) -> int:
        """0 when all tables are Healthy, 1 when the worst is Degraded, 2 when Unhealthy."""
        return int(self.status)

    def table(self, name: str) -> TableHealth:
        for health in self.tables:
            if health.table == name:
                return health
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.label,
            "exit_code": self.exit_code,
            "checked_at": _iso(self.checked_at),
            "tables": [t.as_dict() for t in self.tables],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def render(self) -> str:
        """A plain-text table, one line per table, times in the configured zone."""
        zone = ZoneInfo(self.timezone)
        header = ("table", "tier", f"last success ({self.timezone})", "age", "status", "last error")
        rows = [header] + [_row(t, zone) for t in self.tables]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
            for row in rows
        ]
        counts = ", ".join(f"{sum(t.status is s for t in self.tables)} {s.label}" for s in Health)
        checked = _local(self.checked_at, zone)
        lines.append(f"\noverall: {self.status.label} ({counts}; checked {checked})")
        return "\n".join(line.rstrip() for line in lines)


def assess(config: DataSyncConfig, audit: AuditLog, now: datetime | None = None) -> HealthReport:
    """The health of every configured table, from the audit trail in the cache.

    Args:
        config: the tables and, per tier, their interval and grace.
        audit: the `DataUpdate` log of the cache.
        now: the moment to judge at; the current time when omitted. A naive time is UTC.
    """
    now = _utc(now or datetime.now(UTC))
    successes = audit.last_successes()
    latest = audit.latest_attempts()
    syncing = {u.table_name for u in audit.open_updates()}

    tables = []
    for table in config.tables:
        finished = latest.get(table.name)
        if finished is not None and finished.is_open:
            finished = _latest_finished(audit, table.name)
        settings = config.options.tiers.of(table.tier)
        tables.append(
            table_health(
                table,
                settings.interval,
                settings.grace,
                last_success=successes.get(table.name),
                latest_finished=finished,
                syncing=table.name in syncing,
                now=now,
            )
        )
    return HealthReport(tuple(tables), checked_at=now, timezone=config.options.timezone)


def table_health(
    table: TableConfig,
    interval: timedelta,
    grace: timedelta,
    *,
    last_success: DataUpdate | None,
    latest_finished: DataUpdate | None,
    syncing: bool,
    now: datetime,
) -> TableHealth:
    """Judge one table from its last success and its latest finished sync."""
    failed = latest_finished if latest_finished and latest_finished.success is False else None
    ended = last_success.ended_at if last_success else None
    age = max(now - ended, timedelta(0)) if ended else None
    failed_since = failed is not None and last_success is not None and failed.id > last_success.id

    status, reason = _judge(age, interval, grace, failed_since=failed_since)
    return TableHealth(
        table=table.name,
        tier=table.tier,
        source=table.source,
        status=status,
        reason=reason,
        interval=interval,
        grace=grace,
        last_success=ended,
        age=age,
        last_error=failed.error if failed else None,
        syncing=syncing,
    )


def _judge(
    age: timedelta | None, interval: timedelta, grace: timedelta, *, failed_since: bool
) -> tuple[Health, str]:
    if age is None:
        return Health.UNHEALTHY, "never synced successfully"
    ago = f"last success {duration(age)} ago"
    if age > interval + grace:
        return Health.UNHEALTHY, (
            f"{ago}, past its interval of {duration(interval)} and grace of {duration(grace)}"
        )
    if age > interval:
        return Health.DEGRADED, f"{ago}, past its interval of {duration(interval)}"
    if failed_since:
        return Health.DEGRADED, f"the latest sync failed; {ago}, within its interval"
    return Health.HEALTHY, f"{ago}, within its interval of {duration(interval)}"


def _latest_finished(audit: AuditLog, table_name: str) -> DataUpdate | None:
    return next((u for u in audit.history(table_name, limit=2) if not u.is_open), None)


def duration(span: timedelta) -> str:
    """A short duration a person reads at a glance: `45s`, `12m`, `3h 05m`, `2d 04h`."""
    seconds = int(span.total_seconds())
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"


def _row(health: TableHealth, zone: ZoneInfo) -> tuple[str, ...]:
    status = health.status.label + (", syncing" if health.syncing else "")
    return (
        health.table,
        TIER_NAMES[health.tier],
        _local(health.last_success, zone) if health.last_success else "never",
        duration(health.age) if health.age is not None else "-",
        status,
        _one_line(health.last_error),
    )


def _one_line(error: str | None) -> str:
    if not error:
        return ""
    text = " ".join(error.split())
    return text if len(text) <= ERROR_SHOWN else text[: ERROR_SHOWN - 1] + "…"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
