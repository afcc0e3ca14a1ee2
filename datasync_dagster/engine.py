"""One sync of one table: fetch, stage, merge, and the audit row around it. No Dagster here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import Status, StatusCode

from datasync_dagster.audit import AuditLog, TAliveCheck, process_alive
from datasync_dagster.config import TableConfig, Tier
from datasync_dagster.fetchers.base import DataFetcher, encode_watermark
from datasync_dagster.telemetry import SyncTelemetry, default_telemetry
from datasync_dagster.writers.base import CacheWriter

log = logging.getLogger(__name__)

TIER_NAMES: dict[Tier, str] = {"mass": "Mass", "daily": "Daily", "hourly": "Hourly"}

# Called after each loaded batch with the number of rows read so far.
TProgress = Callable[[int], None]


@dataclass(frozen=True)
class SyncResult:
    """What one sync did; the Dagster layer shows it as asset metadata."""

    table: str
    cache_table: str
    tier: Tier
    update_id: int
    rows_read: int
    rows_upserted: int
    rows_deleted: int
    seconds: float
    watermark: str | None
    incremental: bool

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def sync_table(
    table: TableConfig,
    fetcher: DataFetcher,
    writer: CacheWriter,
    audit: AuditLog,
    *,
    tier: Tier | None = None,
    run_id: str | None = None,
    batch_size: int = 50_000,
    alive: TAliveCheck = process_alive,
    on_progress: TProgress | None = None,
    telemetry: SyncTelemetry | None = None,
) -> SyncResult:
    """Sync one table from its fetcher into the cache.

    Args:
        table: the table's configuration.
        fetcher: reads the source table.
        writer: writes the cache database that also holds `audit`.
        audit: the `DataUpdate` log; it must exist (`AuditLog.ensure`).
        tier: `mass` reads everything and deletes cache rows gone from the source; `daily` and
            `hourly` read from the last watermark. Defaults to the table's tier.
        run_id: recorded in `DataUpdate`, so an interrupted sync can be traced to its run.
        batch_size: rows per batch; memory is bounded by it.
        alive: tells whether the sync behind an open `DataUpdate` row of this table still runs.
        on_progress: called after each batch with the rows read so far.
        telemetry: instruments to record on; the process default when omitted.

    Raises:
        SyncInProgress: another sync of the table is running.
        DataSyncError: the source, the decoding or the cache refused; the cache is unchanged
            and the `DataUpdate` row says why.
    """
    tier = tier or table.tier
    telemetry = telemetry or default_telemetry()
    attributes = {"table": table.name, "tier": TIER_NAMES[tier], "source": table.source}
    incremental = tier != "mass"

    audit.sweep(alive, table.name)
    since = None
    if incremental:
        last = audit.last_success(table.name)
        since = fetcher.parse_watermark(last.watermark) if last else None
    update_id = audit.open(table.name, TIER_NAMES[tier], table.source, run_id)
    telemetry.started.add(1, attributes)
    started = time.monotonic()

    with telemetry.span("datasync.sync", attributes) as span:
        try:
            rows_read, counts = _stage_and_merge(
                table,
                fetcher,
                writer,
                since,
                batch_size,
                on_progress,
                telemetry,
                attributes,
                delete_missing=not incremental,
            )
        except BaseException as e:
            audit.close(update_id, success=False, error=f"{type(e).__name__}: {e}")
            telemetry.failed.add(1, attributes)
            span.set_status(Status(StatusCode.ERROR, str(e)))
            raise

        reached = fetcher.watermark_reached or since
        watermark = encode_watermark(reached)
        audit.close(
            update_id,
            success=True,
            rows_read=rows_read,
            rows_upserted=counts.upserted,
            rows_deleted=counts.deleted,
            watermark=watermark,
        )
        seconds = time.monotonic() - started
        span.set_attributes({"rows_read": rows_read, "rows_upserted": counts.upserted})

    telemetry.completed.add(1, attributes)
    telemetry.duration.record(seconds, attributes)
    telemetry.rows.record(rows_read, attributes)
    log.info(
        "synced %s (%s): %d read, %d upserted, %d deleted in %.1f s",
        table.name,
        TIER_NAMES[tier],
        rows_read,
        counts.upserted,
        counts.deleted,
        seconds,
    )
    return SyncResult(
        table=table.name,
        cache_table=table.cache_table_name,
        tier=tier,
        update_id=update_id,
        rows_read=rows_read,
        rows_upserted=counts.upserted,
        rows_deleted=counts.deleted,
        seconds=seconds,
        watermark=watermark,
        incremental=incremental,
    )


def _stage_and_merge(
    table, fetcher, writer, since, batch_size, on_progress, telemetry, attributes, *, delete_missing
):  # type: ignore[no-untyped-def]
    rows_read = 0
    with writer.staging(table.cache_table_name, fetcher.columns, table.key_columns) as staging:
        with telemetry.span("datasync.fetch_and_stage", attributes):
            for batch in fetcher.batches(since, batch_size):
                staging.load(batch)
                rows_read += len(batch)
                if on_progress is not None:
                    on_progress(rows_read)
        with telemetry.span("datasync.merge", attributes):
            counts = staging.merge(delete_missing=delete_missing)
    return rows_read, counts
