"""The `datasync` command end to end, in a working directory of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from datasync_dagster.audit import AuditLog
from datasync_dagster.cli import main
from datasync_dagster.defs.resources import dispose_engines

TABLES = [
    "f0101_address_book",
    "f4101_item_master",
    "f4211_sales_order_detail",
    "cms_contracts",
    "cms_contract_lines",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory with the demo configuration and no Dagster home set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATASYNC_CONFIG", raising=False)
    # `datasync sync` sets DAGSTER_HOME for itself; setting it here first lets it be undone.
    monkeypatch.setenv("DAGSTER_HOME", "unset")
    monkeypatch.delenv("DAGSTER_HOME")
    try:
        yield tmp_path
    finally:
        dispose_engines()


def datasync(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `datasync` console script."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "datasync"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def datasync_into_closed_pipe(*args: str, buffered: bool) -> subprocess.CompletedProcess[str]:
    """Run `datasync` with its stdout a pipe whose reader has gone before the first write."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(Path(sys.executable).parent / "datasync"), *args],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


def make_empty_cache(workdir: Path) -> None:
    """The demo configuration's SQLite cache, with a `DataUpdate` table and no syncs in it."""
    (workdir / "data").mkdir()
    engine = sa.create_engine(f"sqlite:///{workdir / 'data' / 'cache.sqlite'}")
    try:
        AuditLog(engine).ensure()
    finally:
        engine.dispose()


def successes(cache: Path) -> dict[str, int]:
    """Successful `DataUpdate` rows per table."""
    engine = sa.create_engine(f"sqlite:///{cache}")
    try:
        audit = AuditLog(engine)
        return {t: sum(bool(u.success) for u in audit.history(t)) for t in TABLES}
    finally:
        engine.dispose()


def test_demo_then_sync_fills_the_cache_with_one_run_and_one_data_update_per_table(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--sales-rows", "2000"]) == 0
    made = capsys.readouterr().out
    assert main(["sync"]) == 0
    synced = capsys.readouterr().out

    assert "demo source jde:" in made and "created" in made and "F4211" in made
    assert [line.split(":")[0] for line in synced.splitlines()] == TABLES
    assert "f4211_sales_order_detail: Hourly, 2,000 read, 2,000 upserted, 0 deleted" in synced
    assert successes(workdir / "data" / "cache.sqlite") == dict.fromkeys(TABLES, 1)
    assert (workdir / ".dagster_home" / "dagster.yaml").is_file()
    with dg.DagsterInstance.from_config(str(workdir / ".dagster_home")) as instance:
        runs = instance.get_runs()
    assert len(runs) == len(TABLES)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)


def test_a_second_demo_run_changes_the_sources_and_a_full_sync_deletes_what_left(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["demo", "--sales-rows", "2000"])
    main(["sync", "--tier", "daily"])
    capsys.readouterr()

    assert main(["demo"]) == 0
    changed = capsys.readouterr().out
    assert main(["sync", "cms_contracts", "--full"]) == 0
    synced = capsys.readouterr().out

    assert "changed (run 2)" in changed
    assert synced.startswith("cms_contracts: Mass, ")
    assert " 0 deleted" not in synced


def test_health_reports_each_table_and_exits_by_the_worst(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["demo", "--sales-rows", "2000"])
    main(["sync", "f0101_address_book"])
    capsys.readouterr()

    code = main(["health", "--json"])
    report = json.loads(capsys.readouterr().out)

    statuses = {table["table"]: table["status"] for table in report["tables"]}
    assert statuses["f0101_address_book"] == "Healthy"
    assert statuses["cms_contracts"] == "Unhealthy"
    assert code == report["exit_code"] == 2


def test_a_sync_that_fails_exits_non_zero_with_the_error_and_the_other_tables_still_sync(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["demo", "--sales-rows", "2000"])
    capsys.readouterr()
    engine = sa.create_engine("sqlite:///data/demo_cms.sqlite")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE contracts")
    finally:
        engine.dispose()

    code = main(["sync", "cms_contracts", "cms_contract_lines"])
    out, err = capsys.readouterr()

    assert code == 1
    assert "cms_contracts: failed" in err
    assert "source `cms` has no table `contracts`" in err
    assert "1 of 2 tables failed" in err
    assert out.startswith("cms_contract_lines: Hourly")


def test_an_unknown_table_exits_non_zero_naming_it_and_the_tables_there_are(
    workdir: Path,
) -> None:
    env_home = os.environ.get("DAGSTER_HOME")

    result = datasync("sync", "f9999_nothing")

    assert result.returncode == 1
    assert "no table named `f9999_nothing`" in result.stderr
    assert "f0101_address_book" in result.stderr
    assert result.stdout == ""
    assert env_home is None and not (workdir / ".dagster_home").exists()


def test_health_without_a_cache_says_so_and_creates_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["health"])
    _, err = capsys.readouterr()

    assert code == 1
    assert "the SQLite cache `data/cache.sqlite` does not exist" in err
    assert list(workdir.iterdir()) == []


def test_a_sync_from_the_wrong_folder_names_the_missing_source_file_and_creates_none(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sync", "f0101_address_book"])
    _, err = capsys.readouterr()

    assert code == 1
    assert "SQLite file `data/demo_jde.sqlite` does not exist" in err
    assert "run `datasync demo` first" in err
    assert not (workdir / "data" / "demo_jde.sqlite").exists()


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("form", [["--json"], []], ids=["json", "table"])
def test_health_into_a_pipe_whose_reader_is_gone_exits_as_sigpipe_would_and_says_nothing(
    workdir: Path, form: list[str], buffered: bool
) -> None:
    make_empty_cache(workdir)

    result = datasync_into_closed_pipe("health", *form, buffered=buffered)

    assert (result.returncode, result.stderr) == (141, "")


def test_health_piped_into_head_hands_it_the_start_of_the_report_without_a_traceback(
    workdir: Path,
) -> None:
    make_empty_cache(workdir)

    health = subprocess.Popen(
        [str(Path(sys.executable).parent / "datasync"), "health", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert health.stdout is not None
    head = subprocess.run(
        ["head", "-c", "10"], stdin=health.stdout, capture_output=True, timeout=120, check=False
    )
    health.stdout.close()
    _, err = health.communicate(timeout=120)

    assert len(head.stdout) == 10 and head.stdout.startswith(b"{")
    assert err == b""
    assert health.returncode in (2, 141)  # 141 when head was gone before the report was written
