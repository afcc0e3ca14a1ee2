"""The Dagster layer over the sync engine: assets, resources, schedules, sensors and checks.

`datasync_dagster.definitions` puts them together into the code location's `Definitions`.
"""
