"""Table assets materialized through Dagster on a small demo: figures, cache contents, tiers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import DEMO_CONFIG, DataSyncConfig, TableConfig, load_config
from datasync_dagster.defs.assets import SyncConfig, make_table_assets
from datasync_dagster.defs.liveness import run_alive
from datasync_dagster.defs.resources import dispose_engines, make_resources
from datasync_dagster.demo import make_demo
from datasync_dagster.errors import ConfigError
from datasync_dagster.fetchers import create_source_engine, fetcher_for

SALES = "f4211_sales_order_detail"
LINES = "cms_contract_lines"


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DataSyncConfig]:
    """The demo configuration over a small demo made in the test's own folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATASYNC_CONFIG", raising=False)
    make_demo(tmp_path / "data", sales_rows=2_000)
    try:
        yield load_config()
    finally:
        dispose_engines()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def materialize(
    config: DataSyncConfig, instance: dg.DagsterInstance, table: str, tier: str = "default"
) -> dict[str, Any]:
    """Materialize one table asset and return its metadata as plain values."""
    result = dg.materialize(
        make_table_assets(config),
        selection=[table],
        resources=make_resources(config),
        instance=instance,
        run_config={"ops": {table: {"config": {"tier": tier}}}},
    )
    (materialization,) = result.asset_materializations_for_node(table)
    return {key: value.value for key, value in materialization.metadata.items()}


def source_rows(config: DataSyncConfig, table: TableConfig) -> set[tuple[Any, ...]]:
    """The decoded rows the source holds now, as the fetcher reads them."""
    source = config.source(table.source)
    engine = create_source_engine(source)
    try:
        fetcher = fetcher_for(engine, source, table)
        return {tuple(row) for batch in fetcher.batches(None, 10_000) for row in batch}
    finally:
        engine.dispose()


def cache_rows(config: DataSyncConfig, table: TableConfig) -> set[tuple[Any, ...]]:
    """The rows of the table in the cache, read with the types of the cache table."""
    engine = sa.create_engine(config.cache.resolve_url())
    try:
        cached = sa.Table(table.cache_table_name, sa.MetaData(), autoload_with=engine)
        with engine.connect() as connection:
            return {tuple(row) for row in connection.execute(sa.select(cached))}
    finally:
        engine.dispose()


def data_updates(config: DataSyncConfig, table: str) -> list[tuple[str, bool | None]]:
    engine = sa.create_engine(config.cache.resolve_url())
    try:
        return [(u.tier, u.success) for u in reversed(AuditLog(engine).history(table))]
    finally:
        engine.dispose()


def test_materializing_a_table_reports_its_figures_and_leaves_the_cache_equal_to_the_source(
    demo: DataSyncConfig, instance: dg.DagsterInstance
) -> None:
    table = demo.table(SALES)

    metadata = materialize(demo, instance, SALES)

    assert metadata["tier"] == "Hourly"
    assert metadata["rows_read"] == metadata["rows_upserted"] == 2_000
    assert metadata["rows_deleted"] == 0
    assert metadata["dagster/row_count"] == 2_000
    assert metadata["dagster/table_name"] == "F4211"
    assert metadata["seconds"] > 0 and metadata["rows_per_second"] > 0
    assert metadata["watermark"] is not None
    assert isinstance(metadata["data_update_id"], int)
    schema = metadata["dagster/column_schema"]
    assert [column.name for column in schema.columns][:4] == table.key_columns
    assert cache_rows(demo, table) == source_rows(demo, table)
    assert data_updates(demo, SALES) == [("Hourly", True)]


def test_the_column_schema_comes_with_each_materialization_and_not_with_the_definition(
    demo: DataSyncConfig, instance: dg.DagsterInstance
) -> None:
    (asset,) = [a for a in make_table_assets(demo) if a.key == dg.AssetKey(LINES)]

    schema = materialize(demo, instance, LINES)["dagster/column_schema"]

    assert "dagster/column_schema" not in asset.specs_by_key[dg.AssetKey(LINES)].metadata
    assert [(c.name, c.constraints.nullable) for c in schema.columns] == [
        ("contract_id", False),
        ("line_no", False),
        ("product", False),
        ("description", True),
        ("quantity", False),
        ("price", False),
        ("last_modified", False),
    ]
    assert schema.constraints.other == ["key (contract_id, line_no)"]


def test_a_mass_run_config_syncs_an_incremental_table_in_full_and_deletes_what_left(
    demo: DataSyncConfig, instance: dg.DagsterInstance
) -> None:
    table = demo.table(LINES)
    materialize(demo, instance, LINES)
    make_demo(Path("data"))

    incremental = materialize(demo, instance, LINES)
    left_behind = cache_rows(demo, table) - source_rows(demo, table)
    mass = materialize(demo, instance, LINES, tier="mass")

    assert incremental["tier"] == "Hourly" and incremental["rows_deleted"] == 0
    assert left_behind, "the second demo run deletes some contract lines"
    assert mass["tier"] == "Mass"
    assert mass["rows_deleted"] == len(left_behind)
    assert mass["rows_read"] == mass["dagster/row_count"]
    assert cache_rows(demo, table) == source_rows(demo, table)
    assert data_updates(demo, LINES) == [("Hourly", True), ("Hourly", True), ("Mass", True)]


def test_progress_is_logged_to_the_run_per_batch(
    demo: DataSyncConfig, instance: dg.DagsterInstance
) -> None:
    materialize(demo, instance, SALES)

    (run,) = instance.get_runs()
    messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert any("f4211_sales_order_detail: 2000 rows read" in message for message in messages)


def test_sources_and_cache_named_by_environment_variables_are_read_at_run_time(
    demo: DataSyncConfig, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["cache"] = {"url_env": "TEST_DATASYNC_CACHE_URL"}
    raw["sources"][1] = {"name": "cms", "system": "cms", "url_env": "TEST_DATASYNC_CMS_URL"}
    path = Path("datasync.yaml")
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("TEST_DATASYNC_CACHE_URL", "sqlite:///data/env_cache.sqlite")
    monkeypatch.setenv("TEST_DATASYNC_CMS_URL", "sqlite:///data/demo_cms.sqlite")
    config = load_config(path)

    metadata = materialize(config, instance, "cms_contracts")

    assert metadata["rows_read"] == metadata["dagster/row_count"] > 0
    assert Path("data/env_cache.sqlite").is_file()


def test_an_incremental_tier_is_refused_for_a_table_without_watermark() -> None:
    table = TableConfig(name="t", source="s", source_table="T", key_columns=["K"], tier="mass")

    assert SyncConfig().tier_of(table) == "mass"
    assert SyncConfig(tier="mass").tier_of(table) == "mass"
    with pytest.raises(ConfigError, match="`t` has no `watermark`"):
        SyncConfig(tier="daily").tier_of(table)


def test_an_open_data_update_is_alive_only_while_its_run_is_unfinished(
    demo: DataSyncConfig, instance: dg.DagsterInstance
) -> None:
    materialize(demo, instance, SALES)
    (finished,) = instance.get_runs()
    running = instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    )
    engine = sa.create_engine(demo.cache.resolve_url())
    try:
        audit = AuditLog(engine)
        rows = {
            "finished": audit.open("a", "Daily", "jde", finished.run_id),
            "running": audit.open("b", "Daily", "jde", running.run_id),
            "unknown": audit.open("c", "Daily", "jde", "0" * 36),
            "outside": audit.open("d", "Daily", "jde", None),
        }

        swept = audit.sweep(run_alive(instance))
    finally:
        engine.dispose()

    assert sorted(swept) == sorted([rows["finished"], rows["unknown"]])
