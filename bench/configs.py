"""The configurations the benchmark syncs with: F4211 raw or JDE-decoded, into either cache,
and the SQL that computes from the source what the cache must then hold."""

from __future__ import annotations

from typing import Any

from bench.source import COLUMNS, KEYS, TABLE, WATERMARK
from datasync_dagster.config import DataSyncConfig

ASSET = "f4211_sales_order_detail"

# The JDE decoding of F4211: Julian dates, HHMMSS times, implied decimals, and a timestamp
# joining the date and time updated. Strings are trimmed because the source is `jde`.
JDE_DECODE: dict[str, Any] = {
    "SDLNID": {"kind": "implied_decimal", "decimals": 3},
    "SDTRDJ": "julian_date",
    "SDDRQJ": "julian_date",
    "SDUORG": {"kind": "implied_decimal", "decimals": 2},
    "SDUPRC": {"kind": "implied_decimal", "decimals": 4},
    "SDAEXP": {"kind": "implied_decimal", "decimals": 2},
    "SDUPMJ": "julian_date",
    "SDTDAY": "time",
    "SDUPDATED": {"kind": "timestamp", "date": "SDUPMJ", "time": "SDTDAY"},
}


def config(
    source_url: str,
    cache_url: str,
    *,
    decode: bool,
    decode_in_sql: bool = True,
    batch_size: int | None = None,
) -> DataSyncConfig:
    """One source, one cache, one table: F4211 as the benchmark syncs it."""
    options = {} if batch_size is None else {"batch_size": batch_size}
    return DataSyncConfig.model_validate(
        {
            "options": options,
            "cache": {"url": cache_url, "decode_in_sql": decode_in_sql},
            "sources": [
                {"name": "jde", "system": "jde" if decode else "generic", "url": source_url}
            ],
            "tables": [
                {
                    "name": ASSET,
                    "source": "jde",
                    "source_table": TABLE,
                    "key_columns": list(KEYS),
                    "tier": "hourly",
                    "watermark": list(WATERMARK),
                    "decode": JDE_DECODE if decode else {},
                }
            ],
        }
    )


def _q(name: str) -> str:
    return f'"{name}"'


def _julian(column: str) -> str:
    v = _q(column)
    day = f"make_date(1900 + {v} / 1000, 1, 1) + ({v} % 1000 - 1)"
    return f"CASE WHEN {v} = 0 THEN NULL ELSE {day} END"


def _hhmmss(column: str) -> str:
    v = _q(column)
    return f"make_time({v} / 10000, {v} / 100 % 100, {v} % 100)"


def _padded(name: str, type_: str) -> str:
    # The cache keeps CHAR values with their padding, as VARCHAR; text from CHAR loses it.
    if type_.startswith("char("):
        return f"rpad({_q(name)}, {type_[5:-1]})"
    return _q(name)


def _decoded(name: str, type_: str) -> str:
    rule = JDE_DECODE.get(name)
    if rule is None:
        return f"{_q(name)}::text" if type_.startswith("char") else _q(name)
    if rule == "julian_date":
        return _julian(name)
    if rule == "time":
        return _hhmmss(name)
    decimals = rule["decimals"]
    return f"({_q(name)}::numeric / {10**decimals})::numeric(38, {decimals})"


def expected_columns(*, decode: bool) -> list[tuple[str, str]]:
    """The cache's columns, each with the SQL over the source row that gives its value."""
    if not decode:
        return [(name, _padded(name, type_)) for name, type_, _ in COLUMNS]
    columns = [(name, _decoded(name, type_)) for name, type_, _ in COLUMNS]
    return [*columns, ("SDUPDATED", f"{_julian('SDUPMJ')} + {_hhmmss('SDTDAY')}")]
