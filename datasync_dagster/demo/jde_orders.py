"""Lines of the JDE sales order detail F4211, made a whole order at a time."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from datasync_dagster.demo.churn import Row, pad, past_moment
from datasync_dagster.demo.jde_rows import BRANCHES, julian, stamp

# IMITM, IMLITM, IMDSC1, IMUOM1 of an item, as stored.
Item = tuple[int, str, str, str]

_COMPANIES = ("00001", "00001", "00001", "00200")
_FLOW = ("520", "540", "560", "580", "620", "999")

# Orders that make sure the edge cases are there: the last day before 2000, two leap days,
# a time updated of 000000 and one of 235959, an order without a requested date, a credit order.
_EDGE_ORDERS: tuple[tuple[date, time, str, int | None], ...] = (
    (date(1999, 12, 31), time(0, 0, 0), "SO", 1),
    (date(2000, 2, 29), time(23, 59, 59), "SO", None),
    (date(2024, 2, 29), time(12, 0, 0), "CO", 5),
)


@dataclass(frozen=True)
class Catalog:
    """The customers and items that sales orders cite."""

    customers: Sequence[int]
    items: Sequence[Item]


@dataclass(frozen=True)
class _Order:
    number: int
    kind: str
    ordered: date
    updated: datetime
    requested_after: int | None
    status: int


@dataclass(frozen=True)
class Orders:
    """Sales order lines for the customers and items of a catalog, as of `now`."""

    now: datetime
    catalog: Catalog

    def history(self, rng: random.Random, count: int, first_order: int) -> list[Row]:
        """`count` lines of orders taken since 1997, the edge cases among the first."""
        rows: list[Row] = []
        number = first_order
        while len(rows) < count:
            order = self._past_order(rng, number, number - first_order)
            rows += self._lines(rng, order, count - len(rows))
            number += 1
        return rows

    def today(self, rng: random.Random, count: int, first_order: int) -> list[Row]:
        """About `count` lines of orders entered now, whole orders only."""
        rows: list[Row] = []
        number = first_order
        while len(rows) < count:
            kind = "CO" if rng.random() < 0.03 else "SO"
            rows += self._lines(rng, _Order(number, kind, self.now.date(), self.now, 7, 0), 8)
            number += 1
        return rows

    def changed(self, rng: random.Random, row: Row) -> Row:
        """A line moved one step on in its status flow, some with a new quantity."""
        quantity = row["SDUORG"]
        if rng.random() < 0.3:
            quantity = _quantity(rng, negative=quantity < 0)
        last, following = _status(_FLOW.index(row["SDNXTR"]) if row["SDNXTR"] in _FLOW else 5)
        return {
            "SDUORG": quantity,
            "SDAEXP": extended(quantity, row["SDUPRC"]),
            "SDLTTR": last,
            "SDNXTR": following,
            **stamp(rng, "SD", "TDAY", self.now, "R42800"),
        }

    def _past_order(self, rng: random.Random, number: int, index: int) -> _Order:
        if index < len(_EDGE_ORDERS):
            day, at, kind, requested = _EDGE_ORDERS[index]
            return _Order(number, kind, day, datetime.combine(day, at), requested, 5)
        ordered = past_moment(rng, self.now).date()
        updated = past_moment(rng, self.now, since=ordered)
        age = (self.now.date() - ordered).days
        requested = None if rng.random() < 0.15 else rng.randint(0, 30)
        kind = "CO" if rng.random() < 0.03 else "SO"
        return _Order(number, kind, ordered, updated, requested, 5 if age > 60 else age % 5)

    def _lines(self, rng: random.Random, order: _Order, most: int) -> list[Row]:
        """The lines of one order, at most `most`, sharing its header and audit columns."""
        last, following = _status(order.status)
        requested = order.requested_after
        header = {
            "SDKCOO": rng.choice(_COMPANIES),
            "SDDOCO": order.number,
            "SDDCTO": order.kind,
            "SDMCU": pad(rng.choice(BRANCHES), 12),
            "SDAN8": rng.choice(self.catalog.customers),
            "SDTRDJ": julian(order.ordered),
            "SDDRQJ": 0 if requested is None else julian(order.ordered + timedelta(requested)),
            "SDLTTR": last,
            "SDNXTR": following,
            **stamp(rng, "SD", "TDAY", order.updated, "P4210"),
        }

        rows = []
        for line in _line_numbers(rng, min(most, rng.randint(1, 8))):
            item, long_item, description, unit = rng.choice(self.catalog.items)
            quantity = _quantity(rng, negative=order.kind == "CO")
            price = list_price(item)
            rows.append(
                {
                    **header,
                    "SDLNID": line,
                    "SDITM": item,
                    "SDLITM": long_item,
                    "SDDSC1": description,
                    "SDUOM": unit,
                    "SDUORG": quantity,
                    "SDUPRC": price,
                    "SDAEXP": extended(quantity, price),
                }
            )
        return rows


def list_price(item: int) -> int:
    """The unit price of an item, with 4 implied decimals."""
    return 10_000 + item * 7_919 % 9_990_000


def extended(quantity: int, price: int) -> int:
    """Quantity (2 implied decimals) times unit price (4), in cents, rounded half away from 0."""
    cents, rest = divmod(abs(quantity) * price, 10_000)
    cents += rest >= 5_000
    return cents if quantity >= 0 else -cents


def _status(step: int) -> tuple[str, str]:
    """Last and next status of a line `step` stages into the flow (capped at its end)."""
    step = min(step, len(_FLOW) - 1)
    return _FLOW[step], _FLOW[min(step + 1, len(_FLOW) - 1)]


def _line_numbers(rng: random.Random, count: int) -> list[int]:
    """Line numbers 1.000, 2.000, ... with 3 implied decimals, some lines split off as n.500."""
    numbers: list[int] = []
    line = 1_000
    while len(numbers) < count:
        numbers.append(line)
        line += 500 if rng.random() < 0.05 else 1_000
    return numbers


def _quantity(rng: random.Random, *, negative: bool) -> int:
    """A quantity with 2 implied decimals, mostly whole units; negative on credit lines."""
    quantity = rng.randint(1, 50) * 100 if rng.random() < 0.8 else rng.randint(1, 99_999)
    return -quantity if negative else quantity
