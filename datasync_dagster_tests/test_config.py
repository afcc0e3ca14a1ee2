"""The configuration loads from YAML, and a bad file fails at load with one message that names
the file, the entry and the fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from datasync_dagster.config import (
    CONFIG_ENV,
    DEMO_CONFIG,
    ImpliedDecimal,
    JulianDate,
    Timestamp,
    config_path,
    load_config,
)
from datasync_dagster.errors import ConfigError

GOOD = """\
options:
  batch_size: 1000
sources:
  - name: jde
    system: jde
    url: sqlite:///jde.sqlite
tables:
  - name: f4211_sales_order_detail
    source: jde
    source_table: F4211
    key_columns: [SDKCOO, SDDOCO, SDDCTO, SDLNID]
    tier: hourly
    watermark: [SDUPMJ, SDTDAY]
    decode:
      SDTRDJ: julian_date
      SDAEXP: {kind: implied_decimal, decimals: 2}
"""

UNSET_VARIABLE = "DATASYNC_TEST_VARIABLE_NOBODY_SETS"


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "datasync.yaml"
    path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return str(raised.value)


def test_the_demo_configuration_loads_with_its_five_tables():
    config = load_config(DEMO_CONFIG)

    assert [t.name for t in config.tables] == [
        "f0101_address_book",
        "f4101_item_master",
        "f4211_sales_order_detail",
        "cms_contracts",
        "cms_contract_lines",
    ]
    assert config.source_names == ["jde", "cms"]
    assert config.options.timezone == "Europe/Berlin"
    assert config.options.tiers.hourly.interval == timedelta(hours=1)


def test_the_demo_configuration_is_used_when_no_file_is_named(monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    assert config_path() == DEMO_CONFIG


def test_the_file_named_by_the_environment_is_used(tmp_path, monkeypatch):
    path = written(tmp_path, GOOD)
    monkeypatch.setenv(CONFIG_ENV, str(path))

    config = load_config()

    assert config.options.batch_size == 1000
    assert config.table("f4211_sales_order_detail").decode == {
        "SDTRDJ": JulianDate(kind="julian_date"),
        "SDAEXP": ImpliedDecimal(kind="implied_decimal", decimals=2),
    }


def test_a_jde_source_trims_strings_unless_told_not_to(tmp_path):
    config = load_config(written(tmp_path, GOOD))

    assert config.source("jde").trims_strings


def test_a_url_may_come_from_an_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASYNC_TEST_JDE_URL", "postgresql+psycopg://u:secret@127.0.0.1/jde")
    text = GOOD.replace("url: sqlite:///jde.sqlite", "url_env: DATASYNC_TEST_JDE_URL")

    source = load_config(written(tmp_path, text)).source("jde")

    assert source.resolve_url() == "postgresql+psycopg://u:secret@127.0.0.1/jde"


def test_a_timestamp_rule_is_a_new_column(tmp_path):
    text = GOOD + "      SDUPDATED: {kind: timestamp, date: SDUPMJ, time: SDTDAY}\n"

    table = load_config(written(tmp_path, text)).tables[0]

    assert table.decode["SDUPDATED"] == Timestamp(kind="timestamp", date="SDUPMJ", time="SDTDAY")


# Each bad file: the text replaced in GOOD, and the parts its one message must hold.
BAD_FILES = {
    "unknown source": (
        ("    source: jde\n", "    source: jdx\n"),
        ["table `f4211_sales_order_detail`", "unknown source `jdx`", "use one of ['jde']"],
    ),
    "missing key columns": (
        ("    key_columns: [SDKCOO, SDDOCO, SDDCTO, SDLNID]\n", ""),
        ["tables[0] (`f4211_sales_order_detail`).key_columns", "is missing; add it"],
    ),
    "empty key columns": (
        ("key_columns: [SDKCOO, SDDOCO, SDDCTO, SDLNID]", "key_columns: []"),
        ["(`f4211_sales_order_detail`).key_columns", "list at least one"],
    ),
    "unknown tier": (
        ("tier: hourly", "tier: weekly"),
        ["(`f4211_sales_order_detail`).tier", "`weekly` is not allowed", "'mass', 'daily'"],
    ),
    "incremental tier without watermark": (
        ("    watermark: [SDUPMJ, SDTDAY]\n", ""),
        ["(`f4211_sales_order_detail`)", "tier `hourly`", "needs `watermark`", "tier `mass`"],
    ),
    "url with a password": (
        ("url: sqlite:///jde.sqlite", "url: postgresql+psycopg://sync:secret@127.0.0.1/jde"),
        ["sources[0] (`jde`)", "holds a password", "url_env", "sync:***@"],
    ),
    "url with a password as a parameter": (
        ("url: sqlite:///jde.sqlite", "url: postgresql+psycopg://sync@127.0.0.1/jde?password=x"),
        ["sources[0] (`jde`)", "holds a password", "url_env"],
    ),
    "odbc connection string with a password": (
        ("url: sqlite:///jde.sqlite", "url: mssql+pyodbc:///?odbc_connect=DSN%3Dcms%3BPWD%3Dx"),
        ["sources[0] (`jde`)", "holds a password", "url_env"],
    ),
    "cron without five fields": (
        (
            "  batch_size: 1000\n",
            "  tiers: {hourly: {cron: '5 * * *', interval: PT1H, grace: PT1M}}\n",
        ),
        ["options.tiers.hourly.cron", "cron `5 * * *` needs five fields"],
    ),
    "environment variable not set": (
        ("url: sqlite:///jde.sqlite", f"url_env: {UNSET_VARIABLE}"),
        ["source `jde`", f"`{UNSET_VARIABLE}` is not set", "set it to the SQLAlchemy URL"],
    ),
    "misspelt setting": (
        ("    tier: hourly\n", "    tier: hourly\n    teir: daily\n"),
        ["(`f4211_sales_order_detail`).teir", "not a known setting", "correct its spelling"],
    ),
    "unknown decoding rule": (
        ("SDTRDJ: julian_date", "SDTRDJ: julian"),
        ["decode.SDTRDJ", "`julian` is not a known 'kind'", "'julian_date'"],
    ),
    "decoded column left out of columns": (
        ("    tier: hourly\n", "    tier: hourly\n    columns: [SDKCOO, SDDOCO, SDDCTO, SDLNID]\n"),
        ["(`f4211_sales_order_detail`)", "watermark names ['SDUPMJ', 'SDTDAY']", "`columns`"],
    ),
    "yaml syntax error": (
        ("key_columns: [SDKCOO, SDDOCO, SDDCTO, SDLNID]", "key_columns: [SDKCOO, SDDOCO"),
        ["not valid YAML at line 12", "fix the syntax there"],
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_a_bad_file_fails_at_load_naming_the_file_the_entry_and_the_fix(tmp_path, case):
    (old, new), expected = BAD_FILES[case]
    assert old in GOOD
    path = written(tmp_path, GOOD.replace(old, new))

    message = load_error(path)

    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


def test_a_table_named_twice_fails_at_load(tmp_path):
    second = GOOD.split("tables:\n")[1].replace("F4211", "F42119")
    path = written(tmp_path, GOOD + second)

    assert load_error(path) == (
        f"{path}: table `f4211_sales_order_detail` is named twice; give each table its own name"
    )


def test_two_tables_writing_one_cache_table_fail_at_load(tmp_path):
    second = GOOD.split("tables:\n")[1].replace("f4211_sales_order_detail", "f4211_again")
    path = written(tmp_path, GOOD + second)

    assert load_error(path) == (
        f"{path}: tables `f4211_sales_order_detail` and `f4211_again` both write cache table "
        "`F4211`; set `cache_table` on one of them"
    )


def test_a_missing_file_fails_at_load_naming_it(tmp_path):
    path = tmp_path / "nowhere.yaml"

    assert load_error(path) == (
        f"{path}: cannot read the configuration (No such file or directory); "
        f"point {CONFIG_ENV} at a readable file"
    )


def test_a_file_that_is_not_a_mapping_fails_at_load(tmp_path):
    path = written(tmp_path, "- just\n- a list\n")

    assert load_error(path) == f"{path}: expected a mapping with `sources` and `tables`"


def test_several_problems_are_reported_in_one_message(tmp_path):
    text = GOOD.replace("source: jde\n", "source: jdx\n").replace(
        "url: sqlite:///jde.sqlite", f"url_env: {UNSET_VARIABLE}"
    )

    message = load_error(written(tmp_path, text))

    assert "unknown source `jdx`" in message
    assert f"`{UNSET_VARIABLE}` is not set" in message


def test_environment_variables_are_not_required_when_told_so(tmp_path):
    text = GOOD.replace("url: sqlite:///jde.sqlite", f"url_env: {UNSET_VARIABLE}")

    config = load_config(written(tmp_path, text), check_env=False)

    with pytest.raises(ConfigError, match=f"`{UNSET_VARIABLE}` is not set"):
        config.source("jde").resolve_url()
