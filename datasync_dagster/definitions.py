"""The code location: every configured table as an asset, with its resources, schedules,
sensors and checks.

`workspace.yaml` loads `defs` from here. Dagster calls it when it loads the code location, not
when the module is imported; a bad configuration fails the load with its `ConfigError`.
"""

from __future__ import annotations

import dagster as dg

from datasync_dagster.config import DataSyncConfig, load_config
from datasync_dagster.defs.assets import make_table_assets
from datasync_dagster.defs.checks import make_asset_checks
from datasync_dagster.defs.resources import make_resources
from datasync_dagster.defs.schedules import make_schedules
from datasync_dagster.defs.sensors import make_sensors


def make_definitions(config: DataSyncConfig) -> dg.Definitions:
    """The definitions of one configuration."""
    return dg.Definitions(
        assets=make_table_assets(config),
        asset_checks=make_asset_checks(config),
        schedules=make_schedules(config),
        sensors=make_sensors(config),
        resources=make_resources(config),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The definitions of the configuration in use (`DATASYNC_CONFIG`, or the demo's)."""
    return make_definitions(load_config())
