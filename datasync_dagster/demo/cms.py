"""The CMS-shaped demo source: contracts and their lines, as a Sybase ASE database holds them.

ASE style: datetime columns (kept to 1/300 of a second), NUMERIC(p, s) amounts, CHAR columns
padded with spaces and VARCHAR columns not, NULL where a value is unknown, and a
`last_modified` time set on every insert and update.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, time, timedelta
from decimal import Decimal

import sqlalchemy as sa

from datasync_dagster.demo.churn import (
    DemoSource,
    Row,
    Run,
    TableChanges,
    churn,
    insert_rows,
    pad,
    past_moment,
    scaled,
)

METADATA = sa.MetaData()

CONTRACTS = sa.Table(
    "contracts",
    METADATA,
    sa.Column("contract_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_no", sa.Integer, nullable=False),
    sa.Column("status", sa.CHAR(10), nullable=False),
    sa.Column("start_date", sa.DateTime, nullable=False),
    sa.Column("end_date", sa.DateTime),
    sa.Column("amount", sa.Numeric(14, 2), nullable=False),
    sa.Column("currency", sa.CHAR(3), nullable=False),
    sa.Column("sales_rep", sa.String(30)),
    sa.Column("last_modified", sa.DateTime, nullable=False),
    sa.Index("contracts_last_modified", "last_modified"),
)

CONTRACT_LINES = sa.Table(
    "contract_lines",
    METADATA,
    sa.Column("contract_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("line_no", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("product", sa.CHAR(18), nullable=False),
    sa.Column("description", sa.String(60)),
    sa.Column("quantity", sa.Numeric(12, 3), nullable=False),
    sa.Column("price", sa.Numeric(12, 4), nullable=False),
    sa.Column("last_modified", sa.DateTime, nullable=False),
    sa.Index("contract_lines_last_modified", "last_modified"),
)

_STATUSES = ("ACTIVE", "ACTIVE", "ACTIVE", "DRAFT", "EXPIRED", "CANCELLED")
_CURRENCIES = ("EUR", "EUR", "EUR", "USD", "CHF", "GBP")
_REPS = ("Anna Kovač", "Jonas Weber", "Lea Fischer", "Marco Rossi", None)
_PRODUCTS = (
    ("SVC-BASIC", "Basic service plan"),
    ("SVC-PREMIUM", "Premium service plan, around the clock"),
    ("LIC-USER", "User licence"),
    ("HW-MAINT", "Hardware maintenance"),
    ("TRAIN-DAY", "Training day on site"),
    ("CONS-HOUR", None),
)


def ase_datetime(moment: datetime) -> datetime:
    """`moment` as ASE's datetime keeps it: to the nearest 1/300 s, read as .000, .003, .007 ..."""
    ticks = round(moment.microsecond * 300 / 1_000_000)
    second = moment.replace(microsecond=0) + timedelta(seconds=ticks // 300)
    return second.replace(microsecond=round(ticks % 300 * 1_000 / 300) * 1_000)


def create(conn: sa.Connection, run: Run, sales_rows: int) -> list[TableChanges]:
    """Fill both tables from nothing: each contract with one to six lines."""
    METADATA.create_all(conn)
    rng = run.rng("contracts")
    contracts = _contracts(rng, run.now, 10_001, scaled(sales_rows, 50, 50, 100_000))
    lines = [
        _line(rng, contract["contract_id"], number, _modified(rng, run.now, contract["start_date"]))
        for contract in contracts
        for number in range(1, rng.randint(1, 6) + 1)
    ]
    return [
        TableChanges(CONTRACTS.name, insert_rows(conn, CONTRACTS, contracts), added=len(contracts)),
        TableChanges(
            CONTRACT_LINES.name, insert_rows(conn, CONTRACT_LINES, lines), added=len(lines)
        ),
    ]


def change(conn: sa.Connection, run: Run) -> list[TableChanges]:
    """A business day: contracts and lines changed, added and deleted, lines with their contract."""
    now = ase_datetime(run.now)
    contracts = churn(
        conn,
        CONTRACTS,
        run.rng("contracts"),
        lambda rng, row: _changed_contract(rng, now, row),
        lambda rng, n, rows: _contracts(rng, now, _next_contract(rows), n, today=True),
    )

    orphans = ~sa.exists().where(CONTRACTS.c.contract_id == CONTRACT_LINES.c.contract_id)
    orphaned = conn.execute(sa.delete(CONTRACT_LINES).where(orphans)).rowcount

    lines = churn(
        conn,
        CONTRACT_LINES,
        run.rng("contract_lines"),
        lambda rng, row: _changed_line(rng, now, row),
        lambda rng, n, rows: _added_lines(conn, rng, now, n, rows),
    )
    return [contracts, replace(lines, deleted=lines.deleted + orphaned)]


def _contracts(
    rng: random.Random, now: datetime, first: int, count: int, *, today: bool = False
) -> list[Row]:
    """Contracts numbered from `first`, signed in the past or, if `today`, drafted now."""
    return [_contract(rng, now, number, today) for number in range(first, first + count)]


def _contract(rng: random.Random, now: datetime, number: int, today: bool) -> Row:
    start = datetime.combine(now.date() if today else past_moment(rng, now).date(), time())
    years = rng.randint(0, 5)
    return {
        "contract_id": number,
        "customer_no": rng.randint(1_001, 4_000),
        "status": pad("DRAFT" if today else rng.choice(_STATUSES), 10),
        "start_date": start,
        "end_date": start + timedelta(days=365 * years) if years else None,
        "amount": Decimal(rng.randint(10_000, 50_000_000)).scaleb(-2),
        "currency": rng.choice(_CURRENCIES),
        "sales_rep": rng.choice(_REPS),
        "last_modified": now if today else _modified(rng, now, start),
    }


def _line(rng: random.Random, contract: int, number: int, modified: datetime) -> Row:
    product, description = rng.choice(_PRODUCTS)
    return {
        "contract_id": contract,
        "line_no": number,
        "product": pad(product, 18),
        "description": description,
        "quantity": Decimal(rng.randint(1, 500_000)).scaleb(-3),
        "price": Decimal(rng.randint(100, 99_999_999)).scaleb(-4),
        "last_modified": modified,
    }


def _changed_contract(rng: random.Random, now: datetime, row: Row) -> Row:
    status = pad(rng.choice(_STATUSES), 10) if rng.random() < 0.4 else row["status"]
    amount = (row["amount"] * Decimal(rng.uniform(0.8, 1.2))).quantize(Decimal("0.01"))
    return {"status": status, "amount": amount, "last_modified": now}


def _changed_line(rng: random.Random, now: datetime, row: Row) -> Row:
    return {"quantity": Decimal(rng.randint(1, 500_000)).scaleb(-3), "last_modified": now}


def _added_lines(
    conn: sa.Connection, rng: random.Random, now: datetime, count: int, rows: Sequence[Row]
) -> list[Row]:
    """A first line for each contract that has none, and `count` more on contracts at random."""
    last_line: dict[int, int] = {}
    for row in rows:
        last_line[row["contract_id"]] = max(row["line_no"], last_line.get(row["contract_id"], 0))
    ids = list(conn.execute(sa.select(CONTRACTS.c.contract_id).order_by("contract_id")).scalars())
    contracts = [c for c in ids if c not in last_line] + rng.choices(ids, k=count if ids else 0)

    added = []
    for contract in contracts:
        last_line[contract] = last_line.get(contract, 0) + 1
        added.append(_line(rng, contract, last_line[contract], now))
    return added


def _modified(rng: random.Random, now: datetime, since: datetime) -> datetime:
    moment = past_moment(rng, now, since=since.date())
    return ase_datetime(moment + timedelta(microseconds=rng.randrange(1_000_000)))


def _next_contract(rows: Sequence[Row]) -> int:
    return max((row["contract_id"] for row in rows), default=10_000) + 1


SOURCE = DemoSource("cms", "demo_cms.sqlite", METADATA, create, change)
