"""Checks after each case that the cache holds exactly what the source says it must.

The expected rows are computed from the source by SQL (`configs.expected_columns`), not by the
project's own decoding. A PostgreSQL cache is compared by the count and a 64-bit checksum of
every row's text, each side computed by its server; an SQLite cache row by row, in key order.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import zip_longest
from typing import Any

import psycopg
import sqlalchemy as sa

from bench.configs import expected_columns
from bench.source import KEYS, TABLE

_SHOWN = 3


def mismatch(source_dsn: str, cache_url: str, *, decode: bool) -> str | None:
    """None when the cache table equals the source, else what differs."""
    columns = expected_columns(decode=decode)
    if cache_url.startswith("postgresql"):
        return _compare_checksums(source_dsn, cache_url, columns)
    return _compare_rows(source_dsn, cache_url, columns)


def _row_text(expressions: list[str]) -> str:
    return " || '|' || ".join(f"coalesce(({e})::text, '<null>')" for e in expressions)


def _checksum_sql(expressions: list[str]) -> str:
    digest = f"('x' || left(md5({_row_text(expressions)}), 16))::bit(64)::bigint"
    return f'SELECT count(*), coalesce(sum({digest}::numeric), 0) FROM "{TABLE}"'


def _compare_checksums(
    source_dsn: str, cache_url: str, columns: list[tuple[str, str]]
) -> str | None:
    with psycopg.connect(source_dsn) as conn:
        expected = conn.execute(_checksum_sql([sql for _, sql in columns])).fetchone()
    cache_dsn = sa.make_url(cache_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(cache_dsn) as conn:
        actual = conn.execute(_checksum_sql([f'"{name}"' for name, _ in columns])).fetchone()
    if expected == actual:
        return None
    return (
        f"source gives {expected[0]} rows (checksum {expected[1]}), "
        f"cache has {actual[0]} ({actual[1]})"
    )


def _compare_rows(source_dsn: str, cache_url: str, columns: list[tuple[str, str]]) -> str | None:
    differences = []
    rows = zip_longest(_source_rows(source_dsn, columns), _cache_rows(cache_url, columns))
    for number, (expected, actual) in enumerate(rows):
        if expected != actual:
            differences.append(f"row {number}: source gives {expected}, cache has {actual}")
            if len(differences) == _SHOWN:
                break
    return "; ".join(differences) or None


def _source_rows(source_dsn: str, columns: list[tuple[str, str]]) -> Iterator[tuple[Any, ...]]:
    keys = ", ".join(f'"{k}"' for k in KEYS)
    select = ", ".join(sql for _, sql in columns)
    with psycopg.connect(source_dsn) as conn, conn.cursor() as cursor:
        yield from cursor.stream(f'SELECT {select} FROM "{TABLE}" ORDER BY {keys}', size=10_000)


def _cache_rows(cache_url: str, columns: list[tuple[str, str]]) -> Iterator[tuple[Any, ...]]:
    engine = sa.create_engine(cache_url)
    try:
        table = sa.Table(TABLE, sa.MetaData(), autoload_with=engine)
        select = sa.select(*[table.c[name] for name, _ in columns])
        with engine.connect() as connection:
            result = connection.execution_options(yield_per=10_000).execute(
                select.order_by(*[table.c[k] for k in KEYS])
            )
            for row in result:
                yield tuple(row)
    finally:
        engine.dispose()
