"""The demo sources: JDE- and CMS-shaped databases that change on every run, and their config."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datasync_dagster.config import DEMO_CONFIG, Timestamp, load_config
from datasync_dagster.demo import DEMO_ZONE, SOURCES, DemoReport, make_demo
from datasync_dagster.demo.churn import pad
from datasync_dagster.demo.cms import ase_datetime
from datasync_dagster.demo.jde_rows import hhmmss, julian
from datasync_dagster.errors import DataSyncError

NOW = datetime(2025, 6, 2, 9, 41, 7, 123_456)
LATER = NOW + timedelta(days=1, hours=3, minutes=5)
SALES_ROWS = 2_000

JDE_DATES = {
    "F0101": ["ABEFTB", "ABUPMJ"],
    "F4101": ["IMUPMJ"],
    "F4211": ["SDTRDJ", "SDDRQJ", "SDUPMJ"],
}
JDE_TIMES = {"F0101": ["ABUPMT"], "F4101": ["IMTDAY"], "F4211": ["SDTDAY"]}
JDE_WATERMARKS = {
    "F0101": ("ABUPMJ", "ABUPMT"),
    "F4101": ("IMUPMJ", "IMTDAY"),
    "F4211": ("SDUPMJ", "SDTDAY"),
}

Snapshot = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


@contextmanager
def connected(path: Path) -> Iterator[sa.Connection]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def snapshot(data_dir: Path) -> Snapshot:
    """Every row of every demo table, by key."""
    tables: Snapshot = {}
    for source in SOURCES:
        with connected(data_dir / source.file_name) as conn:
            for table in source.metadata.sorted_tables:
                keys = [column.name for column in table.primary_key.columns]
                rows = conn.execute(sa.select(table)).mappings()
                tables[table.name] = {tuple(row[k] for k in keys): dict(row) for row in rows}
    return tables


def column(rows: dict[tuple[Any, ...], dict[str, Any]], name: str) -> list[Any]:
    return [row[name] for row in rows.values()]


def decoded_julian(value: int) -> date:
    """An independent reading of CYYDDD, that fails on a day the year does not have."""
    year, day = 1900 + value // 1000, value % 1000
    decoded = date(year, 1, 1) + timedelta(days=day - 1)
    assert decoded.year == year and day >= 1, f"{value} is not a Julian date"
    return decoded


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, DemoReport]:
    return tmp_path, make_demo(tmp_path, sales_rows=SALES_ROWS, now=NOW)


def test_the_julian_encoder_gives_the_hand_checked_values() -> None:
    assert julian(date(2024, 2, 29)) == 124060
    assert julian(date(1999, 12, 31)) == 99365
    assert julian(date(2000, 1, 1)) == 100001
    assert julian(date(2000, 12, 31)) == 100366
    assert julian(None) == 0
    assert [hhmmss(time(0, 0, 0)), hhmmss(time(23, 59, 59)), hhmmss(time(14, 30, 5))] == [
        0,
        235959,
        143005,
    ]
    assert pad("EA", 5) == "EA   "
    assert pad("TOO LONG", 3) == "TOO"


def test_the_first_run_creates_both_sources_with_every_table(
    demo: tuple[Path, DemoReport],
) -> None:
    data_dir, report = demo
    tables = snapshot(data_dir)

    assert sorted(path.name for path in data_dir.iterdir()) == [
        "demo_cms.sqlite",
        "demo_jde.sqlite",
    ]
    assert [(s.name, s.run, s.created) for s in report.sources] == [
        ("jde", 1, True),
        ("cms", 1, True),
    ]
    assert [t.table for t in report.tables] == [
        "F0101",
        "F4101",
        "F4211",
        "contracts",
        "contract_lines",
    ]
    for counts in report.tables:
        assert counts.rows == counts.added == len(tables[counts.table]) > 0
        assert counts.changed == counts.deleted == 0
    assert report.table("F4211").rows == SALES_ROWS


def test_jde_dates_times_and_chars_are_stored_as_jde_encodes_them(
    demo: tuple[Path, DemoReport],
) -> None:
    data_dir, _ = demo
    tables = snapshot(data_dir)
    jde = next(source for source in SOURCES if source.name == "jde")

    for table, names in JDE_DATES.items():
        for name in names:
            days = [decoded_julian(v) for v in column(tables[table], name) if v != 0]
            assert min(days) >= date(1997, 1, 1) and max(days) < NOW.date(), name
    for table, names in JDE_TIMES.items():
        for name in names:
            for value in column(tables[table], name):
                assert 0 <= value <= 235959 and value // 100 % 100 < 60 and value % 100 < 60
    for source_table in jde.metadata.sorted_tables:
        for char in source_table.columns:
            if isinstance(char.type, sa.CHAR):
                widths = {len(v) for v in column(tables[source_table.name], char.name)}
                assert widths == {char.type.length}, f"{source_table.name}.{char.name}"


def test_the_sales_order_lines_hold_the_edge_cases_of_jde_encoding(
    demo: tuple[Path, DemoReport],
) -> None:
    lines = snapshot(demo[0])["F4211"]

    assert {99365, 100060, 124060} <= set(column(lines, "SDTRDJ"))
    assert {0, 235959} <= set(column(lines, "SDTDAY"))
    assert 0 in column(lines, "SDDRQJ")
    assert min(column(lines, "SDAEXP")) < 0
    assert all(v >= 1000 and v % 500 == 0 for v in column(lines, "SDLNID"))
    for line in lines.values():
        assert line["SDUPMJ"] >= line["SDTRDJ"]
        assert (line["SDAEXP"] < 0) == (line["SDDCTO"] == "CO")
        cents = line["SDUORG"] * line["SDUPRC"] / 10_000
        assert abs(line["SDAEXP"] - cents) <= 0.5


def test_cms_rows_are_shaped_as_sybase_ase_keeps_them(demo: tuple[Path, DemoReport]) -> None:
    tables = snapshot(demo[0])
    contracts, lines = tables["contracts"], tables["contract_lines"]

    assert {len(status) for status in column(contracts, "status")} == {10}
    assert "CANCELLED " in column(contracts, "status")
    assert None in column(contracts, "end_date")
    assert {len(product) for product in column(lines, "product")} == {18}
    for moment in column(contracts, "last_modified") + column(lines, "last_modified"):
        assert moment == ase_datetime(moment) and moment < NOW
    assert {key[0] for key in lines} <= {key[0] for key in contracts}


def test_a_second_run_changes_adds_and_deletes_rows_and_stamps_them_with_the_time(
    demo: tuple[Path, DemoReport],
) -> None:
    data_dir, _ = demo
    before = snapshot(data_dir)

    report = make_demo(data_dir, sales_rows=SALES_ROWS, now=LATER)
    after = snapshot(data_dir)

    assert [(s.run, s.created) for s in report.sources] == [(2, False), (2, False)]
    for counts in report.tables:
        old, new = before[counts.table], after[counts.table]
        changed = [key for key in old.keys() & new.keys() if old[key] != new[key]]
        added = new.keys() - old.keys()
        assert len(old.keys() - new.keys()) == counts.deleted, counts.table
        assert len(added) == counts.added and len(changed) == counts.changed, counts.table
        assert counts.rows == len(new)
        for share in (counts.changed, counts.added, counts.deleted):
            assert 0 < share <= 0.1 * len(old), counts

        stamped = [new[key] for key in [*changed, *added]]
        if counts.table in JDE_WATERMARKS:
            date_column, time_column = JDE_WATERMARKS[counts.table]
            watermark = (julian(LATER.date()), hhmmss(LATER))
            assert {(row[date_column], row[time_column]) for row in stamped} == {watermark}
            assert max((r[date_column], r[time_column]) for r in old.values()) < watermark
        else:
            assert {row["last_modified"] for row in stamped} == {ase_datetime(LATER)}
            assert max(r["last_modified"] for r in old.values()) < ase_datetime(LATER)


def test_a_deleted_contract_takes_its_lines_and_an_added_one_comes_with_lines(
    demo: tuple[Path, DemoReport],
) -> None:
    data_dir, _ = demo
    before = snapshot(data_dir)

    make_demo(data_dir, now=LATER)
    after = snapshot(data_dir)

    contracts = {key[0] for key in after["contracts"]}
    with_lines = {key[0] for key in after["contract_lines"]}
    assert with_lines <= contracts
    assert {key[0] for key in after["contracts"].keys() - before["contracts"].keys()} <= with_lines


def test_the_same_seed_makes_the_same_sources_and_each_run_churns_differently(
    tmp_path: Path,
) -> None:
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "other"
    for data_dir in (first, second):
        make_demo(data_dir, sales_rows=SALES_ROWS, now=NOW)
    make_demo(other, sales_rows=SALES_ROWS, seed=1, now=NOW)

    assert snapshot(first) == snapshot(second)
    assert snapshot(first) != snapshot(other)

    runs = [make_demo(first, now=LATER + timedelta(hours=n)) for n in range(2)]
    assert runs[0].tables != runs[1].tables


def test_an_aware_time_is_stamped_as_the_wall_clock_of_the_demo_zone(
    demo: tuple[Path, DemoReport],
) -> None:
    data_dir, _ = demo
    summer_utc = datetime(2025, 7, 1, 8, 0, 0, tzinfo=UTC)

    make_demo(data_dir, now=summer_utc)
    lines = snapshot(data_dir)["F4211"]

    assert (julian(date(2025, 7, 1)), 100000) in {
        (line["SDUPMJ"], line["SDTDAY"]) for line in lines.values()
    }


def test_a_first_run_that_did_not_finish_is_made_again_from_nothing(
    demo: tuple[Path, DemoReport],
) -> None:
    data_dir, first = demo
    with connected(data_dir / "demo_jde.sqlite") as conn:
        conn.execute(sa.text("DELETE FROM demo_runs"))
        conn.commit()

    again = make_demo(data_dir, sales_rows=SALES_ROWS, now=NOW)

    assert [s.run for s in again.sources] == [1, 2]
    assert again.table("F4211") == first.table("F4211")


def test_a_negative_row_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataSyncError, match="`-1`"):
        make_demo(tmp_path, sales_rows=-1)


def test_the_demo_configuration_names_only_what_the_demo_sources_hold(
    demo: tuple[Path, DemoReport],
) -> None:
    data_dir, _ = demo
    config = load_config(DEMO_CONFIG)
    files = {source.name: source.file_name for source in SOURCES}

    assert config.options.timezone == DEMO_ZONE.key
    assert {t.tier for t in config.tables} == {"mass", "daily", "hourly"}
    for source in config.sources:
        assert source.system == source.name
        assert source.url == f"sqlite:///data/{files[source.name]}"
    for table in config.tables:
        with connected(data_dir / files[table.source]) as conn:
            inspector = sa.inspect(conn)
            columns = {c["name"] for c in inspector.get_columns(table.source_table)}
            key = inspector.get_pk_constraint(table.source_table)["constrained_columns"]
            indexes = [i["column_names"] for i in inspector.get_indexes(table.source_table)]

        assert table.description
        assert key == table.key_columns, table.name
        assert table.watermark in indexes, table.name
        named = [*(table.columns or []), *table.watermark]
        for name, rule in table.decode.items():
            named += [rule.date, rule.time] if isinstance(rule, Timestamp) else [name]
        assert set(named) <= columns, table.name
