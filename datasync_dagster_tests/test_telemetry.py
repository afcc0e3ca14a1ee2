"""The OpenTelemetry figures of real syncs, read with the SDK's in-memory reader and exporter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.engine import sync_table
from datasync_dagster.errors import ConfigError, SourceError
from datasync_dagster.fetchers.sql import SqlFetcher
from datasync_dagster.telemetry import SyncTelemetry, configure_from_env, exporters_named
from datasync_dagster.writers import writer_for
from datasync_dagster_tests.fixtures import FailingFetcher

ROWS = 250
ATTRIBUTES = {"table": "items", "tier": "Mass", "source": "shop"}


@dataclass
class Recorded:
    """Telemetry on in-memory providers, and a way to read what it recorded."""

    telemetry: SyncTelemetry
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def span(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans.get_finished_spans() if s.name == name]
        return span


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Recorded(SyncTelemetry(meter_provider, tracer_provider), reader, spans)
    meter_provider.shutdown()
    tracer_provider.shutdown()


@dataclass
class Shop:
    """A source table of `ROWS` items and an empty cache."""

    source_engine: sa.Engine
    cache_engine: sa.Engine
    audit: AuditLog

    def sync(self, telemetry: SyncTelemetry, wrap: Callable[[Any], Any] = lambda f: f) -> None:
        source = DataSourceConfig(name="shop", url="sqlite://")
        table = TableConfig(
            name="items", source="shop", source_table="items", key_columns=["id"], tier="mass"
        )
        sync_table(
            table,
            wrap(SqlFetcher(self.source_engine, source, table)),
            writer_for(self.cache_engine),
            self.audit,
            batch_size=100,
            telemetry=telemetry,
        )


@pytest.fixture
def shop(
    make_engine: Callable[..., sa.Engine],
    make_cache_engine: Callable[..., sa.Engine],
    sqlite_url: Callable[[str], str],
) -> Shop:
    source = make_engine(sqlite_url("shop"))
    with source.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        connection.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO items SELECT i, 'item ' || i FROM n",
            (ROWS,),
        )
    audit = AuditLog(make_cache_engine(sqlite_url("cache")))
    audit.ensure()
    return Shop(source, audit.engine, audit)


def test_a_completed_sync_counts_and_measures_itself_by_table_tier_and_source(
    recorded: Recorded, shop: Shop
) -> None:
    shop.sync(recorded.telemetry)

    for name, value in [("datasync.syncs.started", 1), ("datasync.syncs.completed", 1)]:
        (point,) = recorded.points(name)
        assert (dict(point.attributes), point.value) == (ATTRIBUTES, value)
    assert recorded.points("datasync.syncs.failed") == []
    (rows,) = recorded.points("datasync.sync.rows")
    assert (dict(rows.attributes), rows.count, rows.sum) == (ATTRIBUTES, 1, ROWS)
    (seconds,) = recorded.points("datasync.sync.duration")
    assert dict(seconds.attributes) == ATTRIBUTES
    assert seconds.count == 1
    assert 0 < seconds.sum < 60


def test_a_failed_sync_counts_as_started_and_failed_and_marks_its_span(
    recorded: Recorded, shop: Shop
) -> None:
    with pytest.raises(SourceError):
        shop.sync(recorded.telemetry, wrap=lambda fetcher: FailingFetcher(fetcher))

    assert [p.value for p in recorded.points("datasync.syncs.started")] == [1]
    assert [p.value for p in recorded.points("datasync.syncs.failed")] == [1]
    assert recorded.points("datasync.syncs.completed") == []
    assert recorded.points("datasync.sync.duration") == []
    assert recorded.span("datasync.sync").status.status_code is StatusCode.ERROR
    assert recorded.span("datasync.fetch").status.status_code is StatusCode.ERROR


def test_one_span_per_sync_has_fetch_stage_and_merge_as_children(
    recorded: Recorded, shop: Shop
) -> None:
    shop.sync(recorded.telemetry)

    spans = recorded.spans.get_finished_spans()
    sync = recorded.span("datasync.sync")
    children = sorted(
        s.name for s in spans if s.parent and s.parent.span_id == sync.context.span_id
    )
    assert sorted(s.name for s in spans) == sorted(["datasync.sync", *children])
    assert children == ["datasync.fetch", "datasync.merge", "datasync.stage"]
    assert dict(sync.attributes or {})["rows_read"] == ROWS
    for span in spans:
        assert {k: v for k, v in (span.attributes or {}).items() if k in ATTRIBUTES} == ATTRIBUTES


def test_fetch_and_stage_spans_cover_the_loading_phase_and_say_their_own_share(
    recorded: Recorded, shop: Shop
) -> None:
    shop.sync(recorded.telemetry)

    fetch, stage = recorded.span("datasync.fetch"), recorded.span("datasync.stage")
    merge = recorded.span("datasync.merge")
    assert (fetch.start_time, fetch.end_time) == (stage.start_time, stage.end_time)
    assert fetch.end_time is not None and merge.start_time is not None
    assert fetch.end_time <= merge.start_time
    phase_seconds = (fetch.end_time - (fetch.start_time or 0)) / 1e9
    for span in (fetch, stage):
        attributes = dict(span.attributes or {})
        assert (attributes["datasync.batches"], attributes["datasync.rows"]) == (3, ROWS)
        assert 0 < attributes["datasync.busy_seconds"] <= phase_seconds
    busy = [dict(s.attributes or {})["datasync.busy_seconds"] for s in (fetch, stage)]
    assert sum(busy) <= phase_seconds


def test_nothing_is_exported_unless_the_environment_names_an_exporter() -> None:
    assert configure_from_env({}) is False
    assert configure_from_env({"OTEL_TRACES_EXPORTER": "none"}) is False
    assert configure_from_env({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) is (
        False
    )


def test_exporters_are_found_by_their_standard_names() -> None:
    (exporter,) = exporters_named("traces", "console")

    assert isinstance(exporter, ConsoleSpanExporter)
    assert exporters_named("metrics", "none") == []


def test_an_exporter_no_package_provides_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"`zipkin_json`.*OTEL_TRACES_EXPORTER=none"):
        configure_from_env({"OTEL_TRACES_EXPORTER": "zipkin_json"})
