"""The code location loads: from the demo configuration, from one of server databases, and
through `workspace.yaml`, without connecting to any source; a bad configuration fails the load
with its message."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from datasync_dagster.definitions import defs
from datasync_dagster.defs.resources import dispose_engines
from datasync_dagster.demo import make_demo
from datasync_dagster.errors import ConfigError
from datasync_dagster_tests.fixtures import SALES_TABLE

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_TABLES = {
    "f0101_address_book": "jde",
    "f4101_item_master": "jde",
    "f4211_sales_order_detail": "jde",
    "cms_contracts": "cms",
    "cms_contract_lines": "cms",
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory of the test's own, with the demo configuration in use."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATASYNC_CONFIG", raising=False)
    try:
        yield tmp_path
    finally:
        dispose_engines()


def specs(definitions: dg.Definitions) -> dict[str, dg.AssetSpec]:
    return {spec.key.to_user_string(): spec for spec in definitions.resolve_all_asset_specs()}


def test_the_demo_definitions_load_before_the_demo_sources_exist_and_create_no_file(
    workdir: Path,
) -> None:
    definitions = defs()

    dg.Definitions.validate_loadable(definitions)
    assert set(specs(definitions)) == set(DEMO_TABLES)
    assert all("dagster/column_schema" not in s.metadata for s in specs(definitions).values())
    assert list(workdir.iterdir()) == []


def test_the_demo_assets_are_grouped_tagged_pooled_and_described_by_source(
    workdir: Path,
) -> None:
    make_demo(workdir / "data", sales_rows=200)

    definitions = defs()
    assets = specs(definitions)

    for name, source in DEMO_TABLES.items():
        spec = assets[name]
        assert spec.group_name == source
        assert spec.tags["datasync/source"] == source
        assert spec.tags["datasync/tier"] in ("mass", "daily", "hourly")
        assert spec.kinds == {"sqlite"}
        assert spec.description and spec.description.endswith(".")
        assert spec.freshness_policy is not None
        assert definitions.resolve_assets_def(name).op.pool == f"datasync_source_{source}"
    assert set(definitions.resources or {}) == {"cache", "source_jde", "source_cms"}
    assert definitions.resolve_job_def("__ASSET_JOB") is not None


class Listener:
    """A TCP port on 127.0.0.1 that counts the connections made to it and closes each at once."""

    def __init__(self) -> None:
        self.connections = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A port where a source would be, to tell whether anything connects to it."""
    listening = Listener()
    try:
        yield listening
    finally:
        listening.close()


def test_a_configuration_of_server_databases_loads_without_connecting_to_its_sources(
    workdir: Path, pg_url: str, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both sources point at the listener: one at a PostgreSQL database that does not exist.
    port = listener.port
    monkeypatch.setenv("TEST_JDE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{port}/no_such_db")
    monkeypatch.setenv("TEST_CMS_URL", f"sybase+pyodbc://sync@127.0.0.1:{port}/cms")
    monkeypatch.setenv("TEST_CACHE_URL", pg_url)
    config = {
        "cache": {"url_env": "TEST_CACHE_URL", "schema": "cache"},
        "sources": [
            {"name": "jde", "system": "jde", "url_env": "TEST_JDE_URL"},
            {"name": "cms", "system": "cms", "url_env": "TEST_CMS_URL"},
        ],
        "tables": [
            {"name": "sales", "source": "jde", "source_table": SALES_TABLE, "tier": "mass",
             "key_columns": ["SDKCOO", "SDDOCO", "SDDCTO", "SDLNID"]},
            {"name": "contracts", "source": "cms", "source_table": "contracts", "tier": "mass",
             "key_columns": ["contract_id"]},
        ],
    }  # fmt: skip
    (workdir / "datasync.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DATASYNC_CONFIG", str(workdir / "datasync.yaml"))

    definitions = defs()

    dg.Definitions.validate_loadable(definitions)
    assert listener.connections == 0
    sales, contracts = specs(definitions)["sales"], specs(definitions)["contracts"]
    assert (sales.group_name, contracts.group_name) == ("jde", "cms")
    assert sales.kinds == {"postgres"}
    assert contracts.kinds == {"postgres", "sybase"}
    assert sales.metadata["dagster/table_name"] == "cache.F4211"
    assert "dagster/column_schema" not in sales.metadata | contracts.metadata
    resources = definitions.resources or {}
    for key, variable in [("cache", "TEST_CACHE_URL"), ("source_cms", "TEST_CMS_URL")]:
        assert isinstance(resources[key].url, dg.EnvVar)
        assert resources[key].url.env_var_name == variable


def test_a_bad_configuration_fails_the_load_naming_the_entry_and_the_fix(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "sources": [{"name": "jde", "url": "sqlite:///data/jde.sqlite"}],
        "tables": [{"name": "t", "source": "erp", "source_table": "T", "key_columns": ["K"]}],
    }
    config["tables"][0]["tier"] = "mass"
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DATASYNC_CONFIG", str(workdir / "bad.yaml"))

    with pytest.raises(ConfigError, match=r"bad.yaml: table `t`: unknown source `erp`"):
        defs()


def test_the_workspace_file_and_the_instance_file_load_the_code_location(
    workdir: Path, run_dagster: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = run_dagster("definitions", "validate", "-w", "workspace.yaml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "datasync" in result.stdout + result.stderr


@pytest.fixture
def run_dagster(workdir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the `dagster` command in the working directory, on a copy of the project's files."""
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    shutil.copy(REPO_ROOT / "workspace.yaml", workdir / "workspace.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).parent / "dagster"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(dagster), *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run
