"""The raw floor: what `psql` alone takes to move F4211 into a cache table, timed in the same run.

A binary `COPY (SELECT ...) TO STDOUT` from the source is piped into `COPY ... FROM STDIN` of a
TEMP staging table, followed by one plain MERGE (every matched row rewritten) into a cache table
keyed like the source: for a first load into the empty table, and for a re-sync of the same rows.
The bare pipe, without any MERGE, is timed too.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from bench.source import COLUMN_NAMES, KEYS, TABLE, table_ddl

STAGING = "floor_staging"


@dataclass(frozen=True)
class Floor:
    """Seconds of each raw floor measurement."""

    first_load: float
    resync: float
    bare_pipe: float

    def best(self, other: Floor) -> Floor:
        """The faster of two measurements of each kind."""
        return Floor(
            first_load=min(self.first_load, other.first_load),
            resync=min(self.resync, other.resync),
            bare_pipe=min(self.bare_pipe, other.bare_pipe),
        )


def measure(source_dsn: str, cache_dsn: str) -> Floor:
    """Time the bare pipe, the first load into an empty cache table and the re-sync after it."""
    _create_cache_table(cache_dsn)
    with tempfile.TemporaryDirectory(prefix="datasync_bench_") as scratch:
        bare = Path(scratch, "bare.sql")
        bare.write_text(_script(cache_dsn, merge=False))
        merging = Path(scratch, "merge.sql")
        merging.write_text(_script(cache_dsn, merge=True))
        bare_pipe = _pipe(source_dsn, cache_dsn, bare)
        first_load = _pipe(source_dsn, cache_dsn, merging)
        resync = _pipe(source_dsn, cache_dsn, merging)
    return Floor(first_load=first_load, resync=resync, bare_pipe=bare_pipe)


def _create_cache_table(cache_dsn: str) -> None:
    with psycopg.connect(cache_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
        conn.execute(table_ddl())
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                sql.Identifier(TABLE), _names(KEYS)
            )
        )


def _pipe(source_dsn: str, cache_dsn: str, script: Path) -> float:
    select = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)").format(
        _names(COLUMN_NAMES), sql.Identifier(TABLE)
    )
    with psycopg.connect(source_dsn) as conn:
        copy_out = select.as_string(conn)
    started = time.monotonic()
    reader = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source_dsn, "-c", copy_out],
        stdout=subprocess.PIPE,
    )
    writer = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", cache_dsn, "-f", str(script)],
        stdin=reader.stdout,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    assert reader.stdout is not None
    reader.stdout.close()
    if reader.wait() != 0 or writer.returncode != 0:
        raise RuntimeError(
            f"the raw floor's psql pipe failed ({reader.returncode}, "
            f"{writer.returncode}); see its messages above"
        )
    return time.monotonic() - started


def _script(cache_dsn: str, *, merge: bool) -> str:
    """The psql script of the cache side: stage from psql's stdin, then MERGE."""
    table, staging = sql.Identifier(TABLE), sql.Identifier(STAGING)
    statements = [
        sql.SQL("CREATE TEMP TABLE {} (LIKE {})").format(staging, table),
        sql.SQL("\\copy {} FROM pstdin (FORMAT binary)").format(staging),
    ]
    if merge:
        statements.append(_merge(table, staging))
    with psycopg.connect(cache_dsn) as conn:
        return "".join(f"{statement.as_string(conn)};\n" for statement in statements)


def _merge(table: sql.Identifier, staging: sql.Identifier) -> sql.Composed:
    values = [name for name in COLUMN_NAMES if name not in KEYS]
    on = sql.SQL(" AND ").join(
        sql.SQL("t.{0} = s.{0}").format(sql.Identifier(name)) for name in KEYS
    )
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = s.{0}").format(sql.Identifier(name)) for name in values
    )
    inserted = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(n)) for n in COLUMN_NAMES)
    return sql.SQL(
        "MERGE INTO {} AS t USING {} AS s ON {} WHEN MATCHED THEN UPDATE SET {} "
        "WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})"
    ).format(table, staging, on, updates, _names(COLUMN_NAMES), inserted)


def _names(names: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)
