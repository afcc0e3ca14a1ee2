"""OpenTelemetry instruments of the syncs: counters, histograms, and a span per sync.

Metrics: `datasync.syncs.started`, `.completed` and `.failed` (counters), `datasync.sync.duration`
(seconds) and `datasync.sync.rows` (rows read), all with the attributes `table`, `tier` and
`source`. Traces: one `datasync.sync` span per sync with the child spans `datasync.fetch`,
`datasync.stage` and `datasync.merge`.

A sync fetches a batch, stages it, fetches the next: fetching and staging alternate batch by
batch. Their two spans therefore both cover the loading phase, from its first batch to its
last, and each carries `datasync.busy_seconds`, the part of that time spent in its own work,
with `datasync.batches` and `datasync.rows`. The merge follows in a span of its own.

Nothing is exported unless an exporter is chosen by the standard variables `OTEL_TRACES_EXPORTER`
and `OTEL_METRICS_EXPORTER` (`console`, `otlp` with its exporter package installed, or `none`,
the default); `OTEL_SERVICE_NAME` names the service (`datasync` by default). Tests give
`SyncTelemetry` providers of their own with in-memory readers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any, TypeVar

from opentelemetry import metrics, trace

from datasync_dagster.errors import ConfigError

log = logging.getLogger(__name__)

SCOPE = "datasync_dagster"
SERVICE_NAME = "datasync"

# Seconds and rows span orders of magnitude: a small hourly sync to a Mass sync of millions.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10800)
ROWS_BUCKETS = (0, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)

T = TypeVar("T")


class SyncTelemetry:
    """The instruments one process records its syncs with."""

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ):
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self.started = meter.create_counter(
            "datasync.syncs.started", unit="{sync}", description="Syncs that opened a DataUpdate"
        )
        self.completed = meter.create_counter(
            "datasync.syncs.completed", unit="{sync}", description="Syncs merged into the cache"
        )
        self.failed = meter.create_counter(
            "datasync.syncs.failed", unit="{sync}", description="Syncs that ended in an error"
        )
        self.duration = meter.create_histogram(
            "datasync.sync.duration",
            unit="s",
            description="Seconds from opening to closing the DataUpdate of a completed sync",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.rows = meter.create_histogram(
            "datasync.sync.rows",
            unit="{row}",
            description="Rows read from the source by a completed sync",
            explicit_bucket_boundaries_advisory=ROWS_BUCKETS,
        )

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any]) -> Iterator[trace.Span]:
        """A span, current within the block, that records an escaping error."""
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    @contextmanager
    def loading(self, attributes: dict[str, Any]) -> Iterator[LoadingPhase]:
        """The fetch and stage spans of a sync's loading phase; see the module's docstring."""
        start = time.time_ns()
        fetch = self.tracer.start_span("datasync.fetch", attributes=attributes, start_time=start)
        stage = self.tracer.start_span("datasync.stage", attributes=attributes, start_time=start)
        phase = LoadingPhase()
        try:
            yield phase
        except BaseException as e:
            for span in (fetch, stage):
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(e)))
            raise
        finally:
            end = time.time_ns()
            for span, work in ((fetch, phase.fetched), (stage, phase.staged)):
                span.set_attributes(work.attributes())
                span.end(end_time=end)


class _Work:
    """The time one activity took while it alternated with another, batch by batch."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.batches = 0
        self.rows = 0

    def attributes(self) -> dict[str, Any]:
        return {
            "datasync.busy_seconds": round(self.seconds, 6),
            "datasync.batches": self.batches,
            "datasync.rows": self.rows,
        }


class LoadingPhase:
    """Times fetching and staging while a sync alternates between them."""

    def __init__(self) -> None:
        self.fetched = _Work()
        self.staged = _Work()

    def fetching(self, batches: Iterable[T]) -> Iterator[T]:
        """The batches of a fetcher, each one's fetch timed."""
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                self.fetched.seconds += time.perf_counter() - started
                return
            self.fetched.seconds += time.perf_counter() - started
            self.fetched.batches += 1
            self.fetched.rows += len(batch)  # type: ignore[arg-type]
            yield batch
            # Let go of the batch before the next is read, so that one, not two, is in memory.
            del batch

    @contextmanager
    def staging(self, rows: int) -> Iterator[None]:
        """Time the staging of one batch of `rows` rows."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.staged.seconds += time.perf_counter() - started
        self.staged.batches += 1
        self.staged.rows += rows


_default: SyncTelemetry | None = None


def default_telemetry() -> SyncTelemetry:
    """The process's instruments, on the providers the environment chooses, made on first use."""
    global _default
    if _default is None:
        try:
            configure_from_env()
        except ConfigError as e:
            # A sync must not fail for want of an exporter; it runs with telemetry off.
            log.error("telemetry is off: %s", e)
        _default = SyncTelemetry()
    return _default


def configure_from_env(environ: dict[str, str] | None = None) -> bool:
    """Install the global tracer and meter providers the OpenTelemetry variables ask for.

    Returns whether any exporter was installed. With both variables unset or `none`, or with
    `OTEL_SDK_DISABLED=true`, the API's no-op providers stay in place and nothing is recorded.

    Raises:
        ConfigError: an exporter is named that no installed package provides.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    span_exporters = exporters_named("traces", env.get("OTEL_TRACES_EXPORTER", "none"))
    metric_exporters = exporters_named("metrics", env.get("OTEL_METRICS_EXPORTER", "none"))
    if not span_exporters and not metric_exporters:
        return False

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    if span_exporters:
        tracer_provider = TracerProvider(resource=resource)
        for exporter in span_exporters:
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
    if metric_exporters:
        readers = [PeriodicExportingMetricReader(exporter) for exporter in metric_exporters]
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    log.info(
        "telemetry: traces to %s, metrics to %s",
        env.get("OTEL_TRACES_EXPORTER", "none"),
        env.get("OTEL_METRICS_EXPORTER", "none"),
    )
    return True


def exporters_named(signal: str, names: str) -> list[Any]:
    """New exporters of `signal` (`traces`, `metrics`) named as in `OTEL_<SIGNAL>_EXPORTER`.

    Names are comma-separated and found among the exporters installed packages register
    (`console` comes with the SDK); `none` names none.
    """
    exporters = []
    for name in (n.strip() for n in names.split(",")):
        if name in ("", "none"):
            continue
        found = entry_points(group=f"opentelemetry_{signal}_exporter", name=name)
        if not found:
            variable = f"OTEL_{signal.upper()}_EXPORTER"
            raise ConfigError(
                f"{variable} names exporter `{name}`, which no installed package provides; "
                f"install its exporter (for `otlp`: opentelemetry-exporter-otlp) or set "
                f"{variable}=none"
            )
        exporters.append(next(iter(found)).load()())
    return exporters
