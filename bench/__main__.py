"""The benchmark: `.venv/bin/python -m bench [--rows N]`.

The README's Performance section says what it measures and how to read it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from bench import floor, report, source, verify
from bench.case import Spec, spec_json

SERVER = "host=127.0.0.1 port=5432 user=postgres"
PREFIX = "datasync_bench_"
REPO = Path(__file__).resolve().parent.parent

# The cases of one configuration, in order: each starts from what the one before left.
CASES = (
    ("first Mass load", "mass", None),
    ("Mass re-sync, unchanged", "mass", None),
    ("Mass re-sync, 10% changed", "mass", 0.1),
    ("Hourly, 0.1% changed", "hourly", 0.001),
)


def main() -> None:
    args = _arguments()
    run_id = uuid.uuid4().hex[:8]
    print(_header(args))
    with (
        _databases(run_id, keep=args.keep) as databases,
        tempfile.TemporaryDirectory(prefix=PREFIX) as scratch,
    ):
        started = time.monotonic()
        bench_source = source.build(databases.dsn("src"), args.rows)
        print(f"source F4211: {args.rows:,} rows built in {time.monotonic() - started:.1f} s")
        before = floor.measure(databases.dsn("src"), databases.dsn("floor"))
        print(report.floor_lines(before, args.rows))
        results = []
        for cache in args.caches:
            for decoding in args.decodings:
                for runner in args.runners:
                    cache_url = _fresh_cache(databases, cache, decoding, runner, Path(scratch))
                    results += _sequence(args, bench_source, cache, cache_url, decoding, runner)
        # Measured again at the end; the faster of the two is the floor the cases are held to.
        raw_floor = before.best(floor.measure(databases.dsn("src"), databases.dsn("floor")))
        print(report.floor_lines(raw_floor, args.rows, title="raw floor, the faster of two runs"))
        print(report.table(results, raw_floor, args.rows))
        print(report.targets(results, raw_floor))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of F4211 (1,000,000)")
    parser.add_argument("--batch-size", type=int, default=20_000, help="rows per batch (20,000)")
    parser.add_argument(
        "--caches", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"]
    )
    parser.add_argument(
        "--runners", nargs="+", default=["engine", "dagster"], choices=["engine", "dagster"]
    )
    parser.add_argument(
        "--decodings",
        nargs="+",
        default=list(report.DECODINGS),
        choices=report.DECODINGS,
        help="raw: no decoding; jde: JDE decoding in the cache's SQL; jde-py: in Python",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the equality checks")
    parser.add_argument("--keep", action="store_true", help="keep the databases at the end")
    return parser.parse_args()


def _header(args: argparse.Namespace) -> str:
    with psycopg.connect(f"{SERVER} dbname=postgres") as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    cpus = len(__import__("os").sched_getaffinity(0))
    return (
        f"datasync-dagster benchmark, {datetime.now():%Y-%m-%d %H:%M}, {platform.node()}: "
        f"{cpus} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"PostgreSQL {server}, {args.rows:,} rows"
    )


def _sequence(args, bench_source, cache, cache_url, decoding, runner) -> list[report.Result]:  # type: ignore[no-untyped-def]
    decode = decoding != report.RAW
    results = []
    for case, tier, change in CASES:
        if change is not None:
            source.change(bench_source, change, churn=change >= 0.1)
        spec = Spec(
            source_url=_sa_url(bench_source.dsn),
            cache_url=cache_url,
            decode=decode,
            decode_in_sql=decoding != report.IN_PYTHON,
            tier=tier,
            runner=runner,
            batch_size=args.batch_size,
        )
        figures = _run_case(spec)
        problem = (
            None if args.no_verify else verify.mismatch(bench_source.dsn, cache_url, decode=decode)
        )
        result = report.Result(case, cache, decoding, runner, figures, problem)
        print(report.line(result), flush=True)
        results.append(result)
    return results


def _run_case(spec: Spec) -> dict[str, float]:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.case", spec_json(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        raise SystemExit(f"case {spec} failed:\n{finished.stderr}")
    figures: dict[str, float] = json.loads(finished.stdout.strip().splitlines()[-1])
    return figures


def _fresh_cache(databases, cache, decoding, runner, scratch: Path) -> str:  # type: ignore[no-untyped-def]
    name = f"{decoding.replace('-', '_')}_{runner}"
    if cache == "sqlite":
        return f"sqlite:///{scratch / f'cache_{name}.sqlite'}"
    return _sa_url(databases.dsn(f"cache_{name}"))


class _Databases:
    """The databases of one run, made on first use."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.names: list[str] = []

    def dsn(self, role: str) -> str:
        name = f"{PREFIX}{self.run_id}_{role}"
        if name not in self.names:
            with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self.names.append(name)
        return f"{SERVER} dbname={name}"


@contextmanager
def _databases(run_id: str, *, keep: bool) -> Iterator[_Databases]:
    databases = _Databases(run_id)
    try:
        yield databases
    finally:
        if keep:
            print(f"kept databases: {', '.join(databases.names)}")
        else:
            with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as conn:
                for name in databases.names:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )


def _sa_url(dsn: str) -> str:
    parts = dict(item.split("=", 1) for item in dsn.split())
    return f"postgresql+psycopg://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


if __name__ == "__main__":
    main()
