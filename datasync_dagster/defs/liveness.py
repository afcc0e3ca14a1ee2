"""Whether the sync behind an open `DataUpdate` row still runs, judged by its Dagster run."""

from __future__ import annotations

import dagster as dg

from datasync_dagster.audit import DataUpdate, TAliveCheck, process_alive

FINISHED = frozenset(
    {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
)


def run_alive(instance: dg.DagsterInstance) -> TAliveCheck:
    """A liveness check for `AuditLog.sweep` that asks the Dagster instance about each row.

    A row with a run id is alive while its run exists and has not finished, and while its
    process, when it ran on this host, is still there. A row without a run id (a sync started
    outside Dagster) is judged by its process alone.
    """

    def alive(update: DataUpdate) -> bool:
        if update.run_id is None:
            return process_alive(update)

        run = instance.get_run_by_id(update.run_id)
        if run is None or run.status in FINISHED:
            return False
        return process_alive(update)

    return alive
