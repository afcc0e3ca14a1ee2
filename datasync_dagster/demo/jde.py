"""The JDE-shaped demo source: address book F0101, item master F4101, sales order detail F4211.

Values are stored as JD Edwards stores them: dates as Julian integers CYYDDD (0 for no date),
times as integers HHMMSS, CHAR columns padded with spaces to their width, amounts as integers
with implied decimals, no NULLs, and the date and time updated in every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from datasync_dagster.demo import jde_rows
from datasync_dagster.demo.churn import (
    DemoSource,
    Row,
    Run,
    TableChanges,
    churn,
    insert_rows,
    pad,
    scaled,
)
from datasync_dagster.demo.jde_orders import Catalog, Orders

METADATA = sa.MetaData()


def _char(name: str, width: int) -> sa.Column[str]:
    return sa.Column(name, sa.CHAR(width), nullable=False)


def _number(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer, nullable=False)


def _audit(prefix: str, time_column: str) -> list[sa.Column[Any]]:
    """The user, program and workstation that last touched a row, and when (date, time)."""
    return [
        _char(f"{prefix}USER", 10),
        _char(f"{prefix}PID", 10),
        _char(f"{prefix}JOBN", 10),
        _number(f"{prefix}UPMJ"),
        _number(f"{prefix}{time_column}"),
    ]


F0101 = sa.Table(
    "F0101",
    METADATA,
    _number("ABAN8"),
    _char("ABALPH", 40),
    _char("ABAT1", 3),
    _char("ABMCU", 12),
    _char("ABTAX", 20),
    _number("ABEFTB"),
    *_audit("AB", "UPMT"),
    sa.PrimaryKeyConstraint("ABAN8", name="F0101_PK"),
    sa.Index("F0101_UPDATED", "ABUPMJ", "ABUPMT"),
)

F4101 = sa.Table(
    "F4101",
    METADATA,
    _number("IMITM"),
    _char("IMLITM", 25),
    _char("IMDSC1", 30),
    _char("IMUOM1", 2),
    _char("IMSTKT", 1),
    _char("IMGLPT", 4),
    _char("IMSRP1", 3),
    *_audit("IM", "TDAY"),
    sa.PrimaryKeyConstraint("IMITM", name="F4101_PK"),
    sa.Index("F4101_UPDATED", "IMUPMJ", "IMTDAY"),
)

F4211 = sa.Table(
    "F4211",
    METADATA,
    _char("SDKCOO", 5),
    _number("SDDOCO"),
    _char("SDDCTO", 2),
    _number("SDLNID"),
    _char("SDMCU", 12),
    _number("SDAN8"),
    _number("SDITM"),
    _char("SDLITM", 25),
    _char("SDDSC1", 30),
    _number("SDTRDJ"),
    _number("SDDRQJ"),
    _char("SDUOM", 2),
    _number("SDUORG"),
    _number("SDUPRC"),
    _number("SDAEXP"),
    _char("SDLTTR", 3),
    _char("SDNXTR", 3),
    *_audit("SD", "TDAY"),
    sa.PrimaryKeyConstraint("SDKCOO", "SDDOCO", "SDDCTO", "SDLNID", name="F4211_PK"),
    sa.Index("F4211_UPDATED", "SDUPMJ", "SDTDAY"),
)


def create(conn: sa.Connection, run: Run, sales_rows: int) -> list[TableChanges]:
    """Fill the three tables from nothing, the sales orders citing the customers and items."""
    METADATA.create_all(conn)
    addresses = scaled(sales_rows, 30, 100, 3_000)
    items = scaled(sales_rows, 50, 100, 2_000)
    counts = [
        insert_rows(conn, F0101, jde_rows.addresses(run.rng("F0101"), run.now, 1001, addresses)),
        insert_rows(conn, F4101, jde_rows.items(run.rng("F4101"), run.now, 60001, items)),
    ]
    orders = Orders(run.now, _catalog(conn))
    counts.append(insert_rows(conn, F4211, orders.history(run.rng("F4211"), sales_rows, 100_001)))
    tables = (F0101, F4101, F4211)
    return [TableChanges(t.name, n, added=n) for t, n in zip(tables, counts, strict=True)]


def change(conn: sa.Connection, run: Run) -> list[TableChanges]:
    """A business day: a few percent of each table's rows changed, added and deleted."""
    now = run.now
    changes = [
        churn(
            conn,
            F0101,
            run.rng("F0101"),
            lambda rng, row: jde_rows.changed_address(rng, now, row),
            lambda rng, n, rows: jde_rows.addresses(rng, now, _next(rows, "ABAN8"), n, today=True),
        ),
        churn(
            conn,
            F4101,
            run.rng("F4101"),
            lambda rng, row: jde_rows.changed_item(rng, now, row),
            lambda rng, n, rows: jde_rows.items(rng, now, _next(rows, "IMITM"), n, today=True),
        ),
    ]
    orders = Orders(now, _catalog(conn))
    changes.append(
        churn(
            conn,
            F4211,
            run.rng("F4211"),
            orders.changed,
            lambda rng, n, rows: orders.today(rng, n, _next(rows, "SDDOCO")),
        )
    )
    return changes


def _next(rows: Sequence[Row], key: str) -> int:
    """The number after the highest `key` before this run's deletions, so none is reused at once."""
    return max((row[key] for row in rows), default=0) + 1


def _catalog(conn: sa.Connection) -> Catalog:
    """The customers and items that sales orders may cite."""
    search_type = F0101.c.ABAT1
    customers = sa.select(F0101.c.ABAN8).where(search_type == pad("C", 3))
    items = sa.select(F4101.c.IMITM, F4101.c.IMLITM, F4101.c.IMDSC1, F4101.c.IMUOM1)
    return Catalog(
        list(conn.execute(customers.order_by(F0101.c.ABAN8)).scalars()),
        [(row[0], row[1], row[2], row[3]) for row in conn.execute(items.order_by(F4101.c.IMITM))],
    )


SOURCE = DemoSource("jde", "demo_jde.sqlite", METADATA, create, change)
