"""Table assets: materializing one syncs its table from the source into the cache."""

import time
from typing import Any, Literal

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import make_url

from datasync_dagster.config import DataSourceConfig, DataSyncConfig, TableConfig, Tier
from datasync_dagster.defs.checks import freshness_policy
from datasync_dagster.defs.liveness import run_alive
from datasync_dagster.defs.resources import CACHE_KEY, CacheResource, SourceResource, source_key
from datasync_dagster.engine import TIER_NAMES, SyncResult, TProgress, sync_table
from datasync_dagster.errors import ConfigError
from datasync_dagster.fetchers import ColumnSpec

TIER_TAG = "datasync/tier"
SOURCE_TAG = "datasync/source"


def pool_name(source: str) -> str:
    """The concurrency pool of the syncs reading one source."""
    return f"datasync_source_{source}"


# Database kinds by SQLAlchemy backend name, spelled as the Dagster UI knows their icons.
_KINDS = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "mssql": "sqlserver",
    "oracle": "oracle",
    "sybase": "sybase",
    "mysql": "mysql",
    "mariadb": "mariadb",
}


class SyncConfig(dg.Config):
    """Run configuration of a table asset, set in the Launchpad or by a schedule."""

    tier: Literal["default", "mass", "daily", "hourly"] = Field(
        default="default",
        description=(
            "`default` syncs by the table's own tier; `mass` reads the whole table and deletes "
            "cache rows gone from the source; `daily` and `hourly` read from the last watermark."
        ),
    )

    def tier_of(self, table: TableConfig) -> Tier:
        """The tier this run syncs `table` by."""
        if self.tier == "default":
            return table.tier
        if self.tier != "mass" and not table.watermark:
            raise ConfigError(
                f"table `{table.name}` has no `watermark` columns, so it cannot sync by tier "
                f"`{self.tier}`; run it with tier `mass` or `default`"
            )
        return self.tier


def make_table_assets(config: DataSyncConfig) -> list[dg.AssetsDefinition]:
    """The assets of every configured table."""
    return [make_table_asset(table, config) for table in config.tables]


def make_table_asset(table: TableConfig, config: DataSyncConfig) -> dg.AssetsDefinition:
    """The asset of one configured table, named after it and grouped by its source system.

    Making it reads no database: the code location loads in every run worker, and a slow or
    unreachable source must not hold that up. The column schema comes with each materialization.
    """
    source = config.source(table.source)
    batch_size = config.options.batch_size
    metadata: dict[str, Any] = {
        "source_table": table.source_table,
        "key_columns": ", ".join(table.key_columns),
        "watermark_columns": ", ".join(table.watermark) or None,
        "dagster/table_name": _table_name(table, config),
    }

    @dg.asset(
        name=table.name,
        group_name=source.system if source.system != "generic" else source.name,
        description=table.description or _default_description(table),
        kinds=_kinds(config, source),
        tags={TIER_TAG: table.tier, SOURCE_TAG: source.name},
        metadata=metadata,
        pool=pool_name(source.name),
        freshness_policy=freshness_policy(table, config.options),
        required_resource_keys={CACHE_KEY, source_key(source.name)},
    )
    def table_asset(context: dg.AssetExecutionContext, config: SyncConfig) -> dg.MaterializeResult:
        return sync(context, table, source, config.tier_of(table), batch_size)

    return table_asset


def sync(
    context: dg.AssetExecutionContext,
    table: TableConfig,
    source: DataSourceConfig,
    tier: Tier,
    batch_size: int,
) -> dg.MaterializeResult:
    """Sync one table by `tier` with the run's resources, and describe what it did."""
    cache: CacheResource = getattr(context.resources, CACHE_KEY)
    source_db: SourceResource = getattr(context.resources, source_key(source.name))
    context.log.info("syncing %s (%s) from source %s", table.name, TIER_NAMES[tier], source.name)

    result = sync_table(
        table,
        lambda: source_db.fetcher(source, table),
        cache.writer(),
        cache.audit(),
        tier=tier,
        run_id=context.run.run_id,
        batch_size=batch_size,
        alive=run_alive(context.instance),
        on_progress=_progress_log(context, table),
    )

    return dg.MaterializeResult(
        metadata={
            **result_metadata(result),
            "dagster/row_count": cache.row_count(result.cache_table),
            "dagster/table_name": _qualified(result.cache_table, cache.db_schema),
            "dagster/column_schema": column_schema(list(result.columns), table.key_columns),
        }
    )


def result_metadata(result: SyncResult) -> dict[str, Any]:
    """The figures of one sync, as the UI plots them across materializations."""
    return {
        "tier": TIER_NAMES[result.tier],
        "rows_read": result.rows_read,
        "rows_upserted": result.rows_upserted,
        "rows_deleted": result.rows_deleted,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_per_second, 1),
        "watermark": result.watermark,
        "data_update_id": result.update_id,
    }


def column_schema(columns: list[ColumnSpec], key_columns: list[str]) -> dg.TableSchema:
    """The cache table's columns as Dagster shows them, with the key as a constraint."""
    keys = {key.upper() for key in key_columns}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=_type_name(column),
                description=_origin(column),
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable,
                    unique=len(keys) == 1 and column.name.upper() in keys,
                ),
            )
            for column in columns
        ],
        constraints=dg.TableConstraints(other=[f"key ({', '.join(key_columns)})"]),
    )


def _progress_log(context: dg.AssetExecutionContext, table: TableConfig) -> TProgress:
    started = time.monotonic()

    def progress(rows_read: int) -> None:
        seconds = time.monotonic() - started
        rate = rows_read / seconds if seconds > 0 else 0.0
        context.log.info("%s: %d rows read (%.0f rows/s)", table.name, rows_read, rate)

    return progress


def _kinds(config: DataSyncConfig, source: DataSourceConfig) -> set[str]:
    return {_kind(config.cache.resolve_url()), _kind(source.resolve_url())}


def _kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    return _KINDS.get(backend, backend)


def _table_name(table: TableConfig, config: DataSyncConfig) -> str:
    return _qualified(table.cache_table_name, config.cache.schema_)


def _qualified(name: str, schema: str | None) -> str:
    return f"{schema}.{name}" if schema else name


def _default_description(table: TableConfig) -> str:
    return (
        f"Table `{table.source_table}` of source `{table.source}`, "
        f"kept in the cache as `{table.cache_table_name}`."
    )


def _type_name(column: ColumnSpec) -> str:
    try:
        return str(column.type)
    except Exception:  # some generic types have no default spelling
        return type(column.type).__name__


def _origin(column: ColumnSpec) -> str | None:
    if column.source_name and column.source_name != column.name:
        return f"from source column `{column.source_name}`"
    return None
