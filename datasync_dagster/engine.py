"""One sync of one table: fetch, stage, merge, and the audit row around it. No Dagster here."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry.trace import Status, StatusCode

from datasync_dagster.audit import AuditLog, TAliveCheck, process_alive
from datasync_dagster.config import TableConfig, Tier
from datasync_dagster.fetchers.base import (
    Batch,
    ColumnSpec,
    DataFetcher,
    Watermark,
    encode_watermark,
)
from datasync_dagster.telemetry import SyncTelemetry, default_telemetry
from datasync_dagster.writers.base import CacheWriter, MergeCounts

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
    columns: tuple[ColumnSpec, ...] = ()

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def sync_table(
    table: TableConfig,
    fetcher: DataFetcher | Callable[[], DataFetcher],
    writer: CacheWriter,
    audit: AuditLog,
    *,
    tier: Tier | None = None,
    run_id: str | None = None,
    batch_size: int = 20_000,
    alive: TAliveCheck = process_alive,
    on_progress: TProgress | None = None,
    telemetry: SyncTelemetry | None = None,
) -> SyncResult:
    """Sync one table from its fetcher into the cache.

    Args:
        table: the table's configuration.
        fetcher: reads the source table; or a function that makes it, called once the
            `DataUpdate` row is open, so that a source that cannot be reached is recorded too.
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
    last = audit.last_success(table.name) if incremental else None
    update_id = audit.open(table.name, TIER_NAMES[tier], table.source, run_id)
    telemetry.started.add(1, attributes)
    started = time.monotonic()

    with telemetry.span("datasync.sync", attributes) as span:
        try:
            with _opened(fetcher) as reader:
                since = reader.parse_watermark(last.watermark) if last else None
                rows_read, counts = _stage_and_merge(
                    table,
                    reader,
                    writer,
                    since,
                    batch_size,
                    on_progress,
                    telemetry,
                    attributes,
                    delete_missing=not incremental,
                )
        except BaseException as e:
            audit.close(update_id, success=False, error=_error_text(e))
            telemetry.failed.add(1, attributes)
            span.set_status(Status(StatusCode.ERROR, str(e)))
            raise

        reached = reader.watermark_reached or since
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
        columns=tuple(reader.columns),
    )


@contextmanager
def _opened(fetcher: DataFetcher | Callable[[], DataFetcher]) -> Iterator[DataFetcher]:
    """The fetcher to read with; one made here, inside the audit, is also closed here, so that a
    source that cannot be reached is recorded as a failed sync."""
    if isinstance(fetcher, DataFetcher):
        yield fetcher
        return
    made = fetcher()
    try:
        yield made
    finally:
        made.close()


def _error_text(error: BaseException) -> str:
    """The error as `DataUpdate` keeps it: its class, and its message when it has one; an error
    raised by an interruption (a terminated run, a signal) says so first."""
    message = str(error)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    cause: BaseException | None = error
    while cause is not None:
        if not isinstance(cause, Exception):
            return f"interrupted: the sync was stopped from outside ({text})"
        cause = cause.__context__
    return text


@contextmanager
def _closed(batches: Iterator[Batch]) -> Iterator[Iterator[Batch]]:
    try:
        yield batches
    finally:
        getattr(batches, "close", lambda: None)()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while batches stream: their rows are tuples of
    plain values, freed by reference counting, and the collector would only walk them over and
    over (a quarter of the CPU time of a sync). It is enabled again, if it was, at the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _stage_and_merge(
    table: TableConfig,
    fetcher: DataFetcher,
    writer: CacheWriter,
    since: Watermark | None,
    batch_size: int,
    on_progress: TProgress | None,
    telemetry: SyncTelemetry,
    attributes: dict[str, str],
    *,
    delete_missing: bool,
) -> tuple[int, MergeCounts]:
    """Stream the source into a staging table, then merge it; the rows read and the counts."""
    rows_read = 0
    # A cache that decodes in SQL is handed the raw rows, which cost no Python work per value.
    plan = fetcher.decoding
    decoding = plan if plan is not None and writer.decodes(plan) else None
    batches = (fetcher.raw_batches if decoding else fetcher.batches)(since, batch_size)
    # Closed on every path, so that a failed sync gives its source connection back at once.
    with (
        _closed(batches),
        writer.staging(
            table.cache_table_name, fetcher.columns, table.key_columns, decoding=decoding
        ) as staging,
    ):
        with telemetry.loading(attributes) as phase, _collector_paused():
            for batch in phase.fetching(batches):
                with phase.staging(len(batch)):
                    staging.load(batch)
                rows_read += len(batch)
                del batch
                if on_progress is not None:
                    on_progress(rows_read)
        with telemetry.span("datasync.merge", attributes):
            counts = staging.merge(delete_missing=delete_missing)
    return rows_read, counts
