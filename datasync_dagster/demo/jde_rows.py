"""Rows of the JDE address book and item master, and the encodings JDE stores values in."""

from __future__ import annotations

import random
from datetime import date, datetime, time

from datasync_dagster.demo.churn import Row, pad, past_moment

BRANCHES = ("M30", "M40", "D10", "D20", "N50", "100")

_NAMES = ("Alpen", "Harbor", "Linden", "Falke", "Kobalt", "Orion", "Nordstern", "Grün", "Müller")
_TRADES = ("Foods", "Werkzeuge", "Logistik", "Pharma", "Metals", "Textil", "Energy", "Systems")
_FORMS = ("GmbH", "AG", "Ltd", "Inc.", "B.V.", "S.A.", "KG", "")
_SEARCH_TYPES = ("C", "C", "C", "C", "V", "V", "E")
_USERS = ("JDE", "MSCHMIDT", "AKOVAC", "LFISCHER", "BATCHUSR", "TWEBER")
_STATIONS = ("JDEWEB01", "JDEWEB02", "ENTSRV1", "BATCH01")
_ADJECTIVES = ("Steel", "Brass", "Heavy", "Compact", "Premium", "Basic", "Coated", "Large")
_PRODUCTS = ("Bolt M8", "Bearing", "Valve", "Pump", "Hose 2m", "Gasket", "Motor 4kW", "Bracket")
_CLASSES = ("BLT", "BRG", "VLV", "PMP", "HSE", "GSK", "MTR")
_UNITS = ("EA", "EA", "BX", "KG", "PC", "LT")


def julian(day: date | None) -> int:
    """Encode a date as JDE's CYYDDD: 2024-02-29 is 124060, 1999-12-31 is 99365, none is 0."""
    if day is None:
        return 0
    return (day.year - 1900) * 1000 + day.timetuple().tm_yday


def hhmmss(moment: time | datetime) -> int:
    """Encode a time of day as JDE's HHMMSS integer: 14:30:05 is 143005."""
    return moment.hour * 10_000 + moment.minute * 100 + moment.second


def stamp(rng: random.Random, prefix: str, time_column: str, moment: datetime, program: str) -> Row:
    """The audit columns of a row last touched at `moment`."""
    return {
        f"{prefix}USER": pad(rng.choice(_USERS), 10),
        f"{prefix}PID": pad(program, 10),
        f"{prefix}JOBN": pad(rng.choice(_STATIONS), 10),
        f"{prefix}UPMJ": julian(moment.date()),
        f"{prefix}{time_column}": hhmmss(moment),
    }


def addresses(
    rng: random.Random, now: datetime, first: int, count: int, *, today: bool = False
) -> list[Row]:
    """Address book entries numbered from `first`, entered in the past or, if `today`, now."""
    return [
        {
            "ABAN8": number,
            "ABALPH": pad(_business_name(rng), 40),
            "ABAT1": pad(rng.choice(_SEARCH_TYPES), 3),
            "ABMCU": pad(rng.choice(BRANCHES), 12),
            "ABTAX": pad("" if rng.random() < 0.1 else f"DE{rng.randrange(10**9):09d}", 20),
            "ABEFTB": 0 if rng.random() < 0.3 else julian(past_moment(rng, now).date()),
            **stamp(rng, "AB", "UPMT", now if today else past_moment(rng, now), "P01012"),
        }
        for number in range(first, first + count)
    ]


def changed_address(rng: random.Random, now: datetime, row: Row) -> Row:
    """A renamed or moved address book entry."""
    renamed = rng.random() < 0.5
    return {
        "ABALPH": pad(_business_name(rng), 40) if renamed else row["ABALPH"],
        "ABMCU": row["ABMCU"] if renamed else pad(rng.choice(BRANCHES), 12),
        **stamp(rng, "AB", "UPMT", now, "P01012"),
    }


def items(
    rng: random.Random, now: datetime, first: int, count: int, *, today: bool = False
) -> list[Row]:
    """Item master entries numbered from `first`, entered in the past or, if `today`, now."""
    return [
        {
            "IMITM": number,
            "IMLITM": pad(f"{rng.choice(_CLASSES)}-{number:06d}", 25),
            "IMDSC1": pad(_product(rng), 30),
            "IMUOM1": pad(rng.choice(_UNITS), 2),
            "IMSTKT": rng.choice("SSSSSNO"),
            "IMGLPT": pad(rng.choice(("IN30", "IN40", "IN50")), 4),
            "IMSRP1": pad(rng.choice(("100", "200", "300", "")), 3),
            **stamp(rng, "IM", "TDAY", now if today else past_moment(rng, now), "P4101"),
        }
        for number in range(first, first + count)
    ]


def changed_item(rng: random.Random, now: datetime, row: Row) -> Row:
    """An item with a new description or stocking type."""
    return {
        "IMDSC1": pad(_product(rng), 30),
        "IMSTKT": rng.choice("SSNO"),
        **stamp(rng, "IM", "TDAY", now, "P4101"),
    }


def _business_name(rng: random.Random) -> str:
    return " ".join(filter(None, (rng.choice(_NAMES), rng.choice(_TRADES), rng.choice(_FORMS))))


def _product(rng: random.Random) -> str:
    return f"{rng.choice(_ADJECTIVES)} {rng.choice(_PRODUCTS)}"
