"""One benchmark case, run in a fresh process: `python -m bench.case '<json spec>'`.

It syncs F4211 once, by the engine alone or by materializing the table's asset with Dagster,
and prints one line of JSON: the seconds of the sync, what it did, and the peak RSS of the
process, read before anything else is done.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.configs import ASSET, config
from datasync_dagster.config import DataSyncConfig


@dataclass(frozen=True)
class Spec:
    """What one case runs."""

    source_url: str
    cache_url: str
    decode: bool
    tier: str
    runner: str  # "engine" or "dagster"
    batch_size: int | None = None
    decode_in_sql: bool = True


def run(spec: Spec) -> dict[str, Any]:
    """Sync once by the spec; the figures of the sync and the process's peak RSS."""
    outcome = _run_dagster(spec) if spec.runner == "dagster" else _run_engine(spec)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {**outcome, "rss_mb": round(peak / 1024, 1)}


def _settings(spec: Spec) -> DataSyncConfig:
    return config(
        spec.source_url,
        spec.cache_url,
        decode=spec.decode,
        decode_in_sql=spec.decode_in_sql,
        batch_size=spec.batch_size,
    )


def _run_engine(spec: Spec) -> dict[str, Any]:
    from datasync_dagster.audit import AuditLog
    from datasync_dagster.engine import sync_table
    from datasync_dagster.fetchers import create_source_engine, fetcher_for
    from datasync_dagster.writers import create_cache_engine, writer_for

    settings = _settings(spec)
    table, source = settings.tables[0], settings.sources[0]
    source_engine = create_source_engine(source)
    cache_engine = create_cache_engine(spec.cache_url)
    audit = AuditLog(cache_engine)
    audit.ensure()

    started = time.monotonic()
    result = sync_table(
        table,
        lambda: fetcher_for(source_engine, source, table),
        writer_for(cache_engine, decode_in_sql=settings.cache.decode_in_sql),
        audit,
        tier=spec.tier,  # type: ignore[arg-type]
        batch_size=settings.options.batch_size,
    )
    seconds = time.monotonic() - started
    return {
        "seconds": seconds,
        "engine_seconds": result.seconds,
        "rows_read": result.rows_read,
        "rows_upserted": result.rows_upserted,
        "rows_deleted": result.rows_deleted,
    }


def _run_dagster(spec: Spec) -> dict[str, Any]:
    import dagster as dg

    from datasync_dagster.defs.assets import make_table_asset
    from datasync_dagster.defs.resources import make_resources

    settings = _settings(spec)
    asset = make_table_asset(settings.tables[0], settings)
    resources = make_resources(settings)
    run_config = {"ops": {ASSET: {"config": {"tier": spec.tier}}}}

    with dg.DagsterInstance.ephemeral() as instance:
        started = time.monotonic()
        result = dg.materialize(
            [asset], resources=resources, run_config=run_config, instance=instance
        )
        seconds = time.monotonic() - started
    [materialization] = result.asset_materializations_for_node(ASSET)
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    return {
        "seconds": seconds,
        "engine_seconds": float(metadata["seconds"]),
        "rows_read": metadata["rows_read"],
        "rows_upserted": metadata["rows_upserted"],
        "rows_deleted": metadata["rows_deleted"],
    }


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = Spec(**json.loads(argv[1]))
    json.dump(run(spec), sys.stdout)
    sys.stdout.write("\n")


def spec_json(spec: Spec) -> str:
    return json.dumps(asdict(spec))


if __name__ == "__main__":
    main(sys.argv)
