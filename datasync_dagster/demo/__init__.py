"""The demo sources: a JDE-shaped and a CMS-shaped SQLite database that change on every run.

The first run creates them; each later run changes, adds and deletes a few percent of every
table's rows and stamps those rows with the current time, so that the next incremental and
Mass syncs have work to do. What a run did is kept in each database's `demo_runs` table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from datasync_dagster.demo import cms, jde
from datasync_dagster.demo.churn import DemoSource, Run, TableChanges, last_run, log_run
from datasync_dagster.errors import DataSyncError

__all__ = ["DEMO_ZONE", "SOURCES", "DemoReport", "SourceReport", "TableChanges", "make_demo"]

logger = logging.getLogger(__name__)

# JDE and ASE keep local wall-clock times; the demo's are those of the zone its configuration names.
DEMO_ZONE = ZoneInfo("Europe/Berlin")

SOURCES: tuple[DemoSource, ...] = (jde.SOURCE, cms.SOURCE)


@dataclass(frozen=True)
class SourceReport:
    """What one run did to one demo source database."""

    name: str
    path: Path
    run: int
    tables: tuple[TableChanges, ...]

    @property
    def created(self) -> bool:
        return self.run == 1


@dataclass(frozen=True)
class DemoReport:
    """What one run did to the demo sources, table by table."""

    sources: tuple[SourceReport, ...]

    @property
    def tables(self) -> tuple[TableChanges, ...]:
        return tuple(table for source in self.sources for table in source.tables)

    def table(self, name: str) -> TableChanges:
        for table in self.tables:
            if table.table == name:
                return table
        raise KeyError(name)

    def summary(self) -> str:
        """A plain-text table: per source table, its rows and what this run changed."""
        lines = [
            f"{'source':<8}{'table':<16}{'rows':>10}{'changed':>10}{'added':>10}{'deleted':>10}"
        ]
        for source in self.sources:
            for t in source.tables:
                counts = "".join(f"{n:>10,}" for n in (t.rows, t.changed, t.added, t.deleted))
                lines.append(f"{source.name:<8}{t.table:<16}{counts}")
        return "\n".join(lines)


def make_demo(
    data_dir: Path, *, sales_rows: int = 100_000, seed: int = 0, now: datetime | None = None
) -> DemoReport:
    """Create the demo source databases in `data_dir`, or give the existing ones a business day.

    Args:
        data_dir: the folder of `demo_jde.sqlite` and `demo_cms.sqlite`; created if missing.
        sales_rows: the lines of F4211 a new JDE source starts with; the other tables follow.
        seed: makes the data repeatable; each run draws its changes from the seed and its number.
        now: the time that changed and added rows are stamped with, naive in `DEMO_ZONE` or
            aware; the current time when omitted.

    Raises:
        DataSyncError: if `sales_rows` is negative.
    """
    if sales_rows < 0:
        raise DataSyncError(f"`sales_rows` is `{sales_rows}`; give a count of 0 or more")
    moment = _wall_clock(now)
    data_dir.mkdir(parents=True, exist_ok=True)
    return DemoReport(tuple(_run(s, data_dir, sales_rows, seed, moment) for s in SOURCES))


def _run(
    source: DemoSource, data_dir: Path, sales_rows: int, seed: int, now: datetime
) -> SourceReport:
    path = data_dir / source.file_name
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            run = Run(last_run(conn) + 1, seed, now)
            if run.number == 1:
                # Tables left by a first run that did not finish go; the run log says none did.
                source.metadata.drop_all(conn)
                tables = source.create(conn, run, sales_rows)
            else:
                tables = source.change(conn, run)
            log_run(conn, run)
    finally:
        engine.dispose()

    logger.info("demo source `%s` (%s): run %d done", source.name, path, run.number)
    return SourceReport(source.name, path, run.number, tuple(tables))


def _wall_clock(now: datetime | None) -> datetime:
    """The time as the sources keep it: naive, in the demo's zone."""
    moment = now if now is not None else datetime.now(DEMO_ZONE)
    if moment.tzinfo is not None:
        moment = moment.astimezone(DEMO_ZONE).replace(tzinfo=None)
    return moment
