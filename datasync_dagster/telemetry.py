"""OpenTelemetry instruments of the syncs: counters, histograms and a span per sync.

The API's global providers are used unless others are given, so nothing is exported until an
SDK is configured (see `configure_from_env`); tests pass providers with in-memory readers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace

SCOPE = "datasync_dagster"


class SyncTelemetry:
    """The instruments one process records its syncs with."""

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ):
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self.started = meter.create_counter("datasync.syncs.started", unit="{sync}")
        self.completed = meter.create_counter("datasync.syncs.completed", unit="{sync}")
        self.failed = meter.create_counter("datasync.syncs.failed", unit="{sync}")
        self.duration = meter.create_histogram("datasync.sync.duration", unit="s")
        self.rows = meter.create_histogram("datasync.sync.rows", unit="{row}")

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any]) -> Iterator[trace.Span]:
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span


_default: SyncTelemetry | None = None


def default_telemetry() -> SyncTelemetry:
    """The process's instruments on the global providers, made on first use."""
    global _default
    if _default is None:
        _default = SyncTelemetry()
    return _default
