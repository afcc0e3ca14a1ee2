"""What the demo sources share: the run log, bulk inserts, and a business day's churn of rows."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

Row = dict[str, Any]

# The first day of the demo sources' history.
FIRST_DAY = date(1997, 1, 1)

# The values of a changed row's changed columns, audit columns included.
ChangeRow = Callable[[random.Random, Row], Row]
# New rows, about `count` of them; the rows already in the table help to number them.
AddRows = Callable[[random.Random, int, Sequence[Row]], list[Row]]
_ByKey = TypeVar("_ByKey", sa.Update, sa.Delete)

RUN_LOG = sa.Table(
    "demo_runs",
    sa.MetaData(),
    sa.Column("run", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("ran_at", sa.DateTime, nullable=False),
)


@dataclass(frozen=True)
class TableChanges:
    """What one demo run did to one source table, and how many rows it holds afterwards."""

    table: str
    rows: int
    changed: int = 0
    added: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class Run:
    """One demo run on one source database: its number (1 creates), seed and wall-clock time."""

    number: int
    seed: int
    now: datetime

    def rng(self, table: str) -> random.Random:
        """A generator of its own per table and run, so each run churns differently."""
        return random.Random(f"{self.seed}:{self.number}:{table}")


@dataclass(frozen=True)
class DemoSource:
    """A demo source database: its tables and how a run creates or changes them."""

    name: str
    file_name: str
    metadata: sa.MetaData
    create: Callable[[sa.Connection, Run, int], list[TableChanges]]
    change: Callable[[sa.Connection, Run], list[TableChanges]]


def last_run(conn: sa.Connection) -> int:
    """The number of the last completed run on this database; 0 when there is none."""
    if not sa.inspect(conn).has_table(RUN_LOG.name):
        return 0
    return int(
        conn.execute(sa.select(sa.func.coalesce(sa.func.max(RUN_LOG.c.run), 0))).scalar_one()
    )


def log_run(conn: sa.Connection, run: Run) -> None:
    RUN_LOG.create(conn, checkfirst=True)
    conn.execute(sa.insert(RUN_LOG), {"run": run.number, "seed": run.seed, "ran_at": run.now})


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Row]) -> int:
    """Insert rows with one executemany; returns how many."""
    if rows:
        conn.execute(sa.insert(table), list(rows))
    return len(rows)


def pad(value: str, width: int) -> str:
    """A CHAR(width) value as JDE and ASE store it: cut to the width, padded with spaces."""
    return value[:width].ljust(width)


def past_moment(rng: random.Random, now: datetime, since: date = FIRST_DAY) -> datetime:
    """A moment to the second between `since` and the end of the day before `now`."""
    last = now.date() - timedelta(days=1)
    day = since + timedelta(days=rng.randint(0, max(0, (last - since).days)))
    return datetime.combine(day, time()) + timedelta(seconds=rng.randrange(86_400))


def scaled(sales_rows: int, divisor: int, low: int, high: int) -> int:
    """A table size that follows the size of the sales table, within bounds."""
    return max(low, min(high, sales_rows // divisor))


def churn(
    conn: sa.Connection, table: sa.Table, rng: random.Random, change: ChangeRow, add: AddRows
) -> TableChanges:
    """Change, add and delete a few percent of a table's rows, each share drawn from `rng`."""
    keys = [column.name for column in table.primary_key.columns]
    rows = [dict(row) for row in conn.execute(sa.select(table).order_by(*keys)).mappings()]
    deleting = min(len(rows), _share(rng, len(rows), 0.005, 0.02))
    changing = min(len(rows) - deleting, _share(rng, len(rows), 0.02, 0.05))
    picked = rng.sample(rows, deleting + changing)

    _delete(conn, table, keys, picked[:deleting])

    updates = [_key_params(keys, row) | change(rng, row) for row in picked[deleting:]]
    if updates:
        conn.execute(_by_key(sa.update(table), keys), updates)

    added = insert_rows(conn, table, add(rng, _share(rng, len(rows), 0.01, 0.03), rows))
    return TableChanges(table.name, len(rows) - deleting + added, changing, added, deleting)


def _share(rng: random.Random, total: int, low: float, high: float) -> int:
    """Between `low` and `high` of `total`, at least one row."""
    return max(1, round(total * rng.uniform(low, high)))


def _delete(conn: sa.Connection, table: sa.Table, keys: list[str], rows: list[Row]) -> None:
    if rows:
        conn.execute(_by_key(sa.delete(table), keys), [_key_params(keys, row) for row in rows])


def _by_key(statement: _ByKey, keys: list[str]) -> _ByKey:
    """An UPDATE or DELETE of one row, found by key parameters named `key_<column>`."""
    table = statement.table
    return statement.where(*(table.c[key] == sa.bindparam(f"key_{key}") for key in keys))


def _key_params(keys: list[str], row: Row) -> Row:
    return {f"key_{key}": row[key] for key in keys}
