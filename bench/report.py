"""The benchmark's output: a line per case as it ends, then a table and the targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.floor import Floor

FIRST, UNCHANGED, CHANGED, HOURLY = (
    "first Mass load",
    "Mass re-sync, unchanged",
    "Mass re-sync, 10% changed",
    "Hourly, 0.1% changed",
)
# How a configuration decodes: not at all, JDE rules in the cache's SQL, JDE rules in Python.
RAW, IN_SQL, IN_PYTHON = "raw", "jde", "jde-py"
DECODINGS = (RAW, IN_SQL, IN_PYTHON)
DECODING_NAMES = {IN_SQL: "in the cache's SQL", IN_PYTHON: "in Python"}
RSS_LIMIT_MB = 200
HOURLY_LIMIT_S = 2.0


@dataclass(frozen=True)
class Result:
    """One case as it ran."""

    case: str
    cache: str
    decoding: str  # one of DECODINGS
    runner: str
    figures: dict[str, Any]
    problem: str | None

    @property
    def seconds(self) -> float:
        return float(self.figures["seconds"])

    @property
    def engine_seconds(self) -> float:
        return float(self.figures["engine_seconds"])

    @property
    def configuration(self) -> str:
        return f"{self.cache} {self.decoding}"


def floor_of(result: Result, raw_floor: Floor) -> float | None:
    """The raw floor a case is measured against; an Hourly sync has an absolute target."""
    if result.case == FIRST:
        return raw_floor.first_load
    if result.case in (UNCHANGED, CHANGED):
        return raw_floor.resync
    return None


def floor_lines(raw_floor: Floor, rows: int, title: str = "raw floor") -> str:
    return "\n".join(
        [
            f"{title} (psql alone: binary COPY pipe into a TEMP table, then one plain MERGE):",
            f"  bare binary COPY pipe        {_timing(raw_floor.bare_pipe, rows)}",
            f"  first load into empty table  {_timing(raw_floor.first_load, rows)}",
            f"  re-sync of unchanged rows    {_timing(raw_floor.resync, rows)}",
        ]
    )


def line(result: Result) -> str:
    """One case as it ends."""
    figures = result.figures
    done = (
        f"read {figures['rows_read']:,}, upserted {figures['rows_upserted']:,}, "
        f"deleted {figures['rows_deleted']:,}"
    )
    overhead = ""
    if result.runner == "dagster":
        overhead = f", Dagster +{result.seconds - result.engine_seconds:.2f} s"
    check = "equal to source" if result.problem is None else f"DIFFERS: {result.problem}"
    return (
        f"{result.configuration:15s} {result.runner:7s} {result.case:26s} "
        f"{result.seconds:7.2f} s{overhead}, rss {figures['rss_mb']:.0f} MB; {done}; {check}"
    )


def table(results: list[Result], raw_floor: Floor, rows: int) -> str:
    """Every case: engine alone and through Dagster side by side."""
    head = (
        f"{'cache':10s} {'decoding':8s} {'case':26s} {'engine s':>9s} {'rows/s':>9s} "
        f"{'rss MB':>6s} {'x floor':>7s} {'dagster s':>9s} {'overhead':>8s} {'rss MB':>6s}"
    )
    out = ["", head, "-" * len(head)]
    by_key = {(r.cache, r.decoding, r.case, r.runner): r for r in results}
    for r in results:
        if r.runner != "engine":
            continue
        ratio = floor_of(r, raw_floor)
        dagster = by_key.get((r.cache, r.decoding, r.case, "dagster"))
        out.append(
            f"{r.cache:10s} {r.decoding:8s} {r.case:26s} {r.seconds:9.2f} "
            f"{rows / r.seconds:9,.0f} {r.figures['rss_mb']:6.0f} "
            f"{_ratio(r.seconds, ratio):>7s} "
            + (
                f"{dagster.seconds:9.2f} {dagster.seconds - dagster.engine_seconds:8.2f} "
                f"{dagster.figures['rss_mb']:6.0f}"
                if dagster
                else ""
            )
        )
    return "\n".join(out)


def targets(results: list[Result], raw_floor: Floor) -> str:
    """Each target of the benchmark, whether it holds, and by how much."""
    engine = {(r.cache, r.decoding, r.case): r for r in results if r.runner == "engine"}
    out = ["", "targets (PostgreSQL cache, engine alone, without JDE decoding unless said):"]
    out += _floor_targets(engine, raw_floor)
    out += _decoding_targets(engine)
    out += _memory_targets(results)
    overheads = sorted(r.seconds - r.engine_seconds for r in results if r.runner == "dagster")
    if overheads:
        out.append(
            "  Dagster's own time per run (materialize minus the engine's seconds): "
            f"median {overheads[len(overheads) // 2]:.2f} s, at most {overheads[-1]:.2f} s"
        )
    differing = [r for r in results if r.problem is not None]
    out.append(
        _verdict("every cache equal to its source", not differing, f"{len(differing)} differ")
    )
    return "\n".join(out)


def _floor_targets(engine: dict[tuple[str, str, str], Result], raw_floor: Floor) -> list[str]:
    out = []
    for case, limit in ((FIRST, 1.0), (UNCHANGED, 0.5), (CHANGED, 0.6)):
        r = engine.get(("postgresql", RAW, case))
        floor_seconds = floor_of(r, raw_floor) if r else None
        if r and floor_seconds:
            ratio = r.seconds / floor_seconds
            out.append(
                _verdict(
                    f"{case}: at most {limit:.1f}x the raw floor", ratio <= limit, f"{ratio:.2f}x"
                )
            )
    r = engine.get(("postgresql", RAW, HOURLY))
    if r is not None:
        target = f"{HOURLY}: under {HOURLY_LIMIT_S:.0f} s of engine time"
        out.append(_verdict(target, r.engine_seconds < HOURLY_LIMIT_S, f"{r.engine_seconds:.2f} s"))
    return out


def _decoding_targets(engine: dict[tuple[str, str, str], Result]) -> list[str]:
    out = []
    for decoding, name in DECODING_NAMES.items():
        for cache in ("postgresql", "sqlite"):
            for case in (FIRST, UNCHANGED, CHANGED, HOURLY):
                raw, decoded = engine.get((cache, RAW, case)), engine.get((cache, decoding, case))
                if raw and decoded:
                    ratio = decoded.seconds / raw.seconds
                    target = f"JDE decoding {name}, {cache}, {case}: at most 1.3x"
                    out.append(_verdict(target, ratio <= 1.3, f"{ratio:.2f}x"))
    return out


def _memory_targets(results: list[Result]) -> list[str]:
    out = []
    for runner in ("engine", "dagster"):
        ran = [r for r in results if r.runner == runner]
        if ran:
            rss, where = max((r.figures["rss_mb"], f"{r.configuration}, {r.case}") for r in ran)
            target = f"peak RSS under {RSS_LIMIT_MB} MB, {runner}"
            out.append(_verdict(target, rss < RSS_LIMIT_MB, f"{rss:.0f} MB ({where})"))
    return out


def _verdict(target: str, holds: bool, measured: str) -> str:
    return f"  [{'holds' if holds else 'MISSED'}] {target}: {measured}"


def _ratio(seconds: float, floor_seconds: float | None) -> str:
    return "-" if floor_seconds is None else f"{seconds / floor_seconds:.2f}"


def _timing(seconds: float, rows: int) -> str:
    return f"{seconds:7.2f} s {rows / seconds:11,.0f} rows/s"
