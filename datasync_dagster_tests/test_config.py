"""The configuration loads from YAML, and a bad file fails at load with one message that names
the file, the entry and the fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from datasync_dagster.config import (
    CONFIG_ENV,
    DEMO_CONFIG,
    MAX_BATCH_SIZE,
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
    assert config.options.tiers.hourly.interval == timedelta(hours=1, minutes=15)


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


def with_hourly_tier(interval: str, grace: str = "PT1M") -> str:
    """GOOD with its Hourly tier given these durations, written as they are."""
    tier = f"  tiers: {{hourly: {{cron: '5 * * * *', interval: '{interval}', grace: '{grace}'}}}}\n"
    return GOOD.replace("  batch_size: 1000\n", tier)


DURATIONS = "write an ISO 8601 duration such as PT30M, PT1H, P1D or P7D, or a number of seconds"


@pytest.mark.parametrize("interval", ["1 hour", "PT", "weekly"])
def test_an_interval_that_does_not_parse_names_the_tier_the_value_and_valid_durations(
    tmp_path, interval
):
    path = written(tmp_path, with_hourly_tier(interval))

    assert load_error(path) == (
        f"{path}: options.tiers.hourly.interval: `interval` is `{interval}`, which is not a "
        f"duration; {DURATIONS}"
    )


def test_an_empty_grace_says_it_is_empty_and_what_to_write(tmp_path):
    path = written(tmp_path, with_hourly_tier("PT1H", grace=""))

    assert load_error(path) == f"{path}: options.tiers.hourly.grace: `grace` is empty; {DURATIONS}"


ZERO_OR_NEGATIVE = {
    "interval of no time": (
        ("PT0S", "PT1M"),
        "interval: interval `PT0S` must be longer than zero; use a duration such as PT1H or P1D",
    ),
    "negative interval": (
        ("-PT1H", "PT1M"),
        "interval: interval `-PT1H` must be longer than zero; use a duration such as PT1H or P1D",
    ),
    "negative grace": (
        ("PT1H", "-PT5M"),
        "grace: grace `-PT5M` must not be negative; use PT0S for none, or e.g. PT30M",
    ),
}


@pytest.mark.parametrize("case", ZERO_OR_NEGATIVE, ids=list(ZERO_OR_NEGATIVE))
def test_an_interval_of_no_time_or_a_negative_grace_is_named_with_its_value(tmp_path, case):
    (interval, grace), expected = ZERO_OR_NEGATIVE[case]
    path = written(tmp_path, with_hourly_tier(interval, grace))

    assert load_error(path) == f"{path}: options.tiers.hourly.{expected}"


@pytest.mark.parametrize("batch_size", [0, -5])
def test_a_batch_size_below_one_fails_at_load_saying_the_allowed_range(tmp_path, batch_size):
    path = written(tmp_path, GOOD.replace("batch_size: 1000", f"batch_size: {batch_size}"))

    assert load_error(path) == (
        f"{path}: options.batch_size: batch_size `{batch_size}` must be at least 1; "
        "use 1 to 1,000,000 rows, e.g. 20,000"
    )


def test_a_batch_size_past_a_million_fails_at_load_saying_why_and_the_allowed_range(tmp_path):
    path = written(tmp_path, GOOD.replace("batch_size: 1000", "batch_size: 5000000"))

    assert load_error(path) == (
        f"{path}: options.batch_size: batch_size `5000000` is too large: a batch is held in "
        "memory whole, and past 1,000,000 rows it costs memory and no longer saves time; "
        "use 1 to 1,000,000 rows, e.g. 20,000"
    )


def test_a_batch_size_of_a_million_rows_is_allowed(tmp_path):
    path = written(tmp_path, GOOD.replace("batch_size: 1000", f"batch_size: {MAX_BATCH_SIZE}"))

    assert load_config(path).options.batch_size == 1_000_000


def test_a_batch_size_that_is_no_whole_number_is_quoted(tmp_path):
    path = written(tmp_path, GOOD.replace("batch_size: 1000", "batch_size: many"))

    assert load_error(path) == (
        f"{path}: options.batch_size: `batch_size` is `many`; use a whole number"
    )


def test_a_parallel_limit_of_zero_is_quoted_with_the_least_it_may_be(tmp_path):
    path = written(tmp_path, GOOD.replace("batch_size: 1000", "max_parallel_syncs: 0"))

    assert load_error(path) == (
        f"{path}: options.max_parallel_syncs: `max_parallel_syncs` is `0`; "
        "use a number greater than 0"
    )


def with_lookback(lookback: str) -> str:
    """GOOD with its table given this `lookback`, written as it is."""
    return GOOD.replace("    tier: hourly\n", f"    tier: hourly\n    lookback: {lookback}\n")


@pytest.mark.parametrize(("lookback", "expected"), [("PT2H", 7200), ("900", 900), ("P1D", 86400)])
def test_a_lookback_reads_as_an_iso_duration_or_a_number_of_seconds(tmp_path, lookback, expected):
    table = load_config(written(tmp_path, with_lookback(lookback))).tables[0]

    assert table.lookback == timedelta(seconds=expected)


def test_a_table_has_no_lookback_unless_given_one_and_the_demos_hourly_jde_table_has_two_hours(
    tmp_path,
):
    assert load_config(written(tmp_path, GOOD)).tables[0].lookback is None
    assert load_config(DEMO_CONFIG).table("f4211_sales_order_detail").lookback == timedelta(hours=2)


@pytest.mark.parametrize("lookback", ["PT0S", "-PT1H"])
def test_a_lookback_of_no_time_or_less_fails_at_load_quoting_it(tmp_path, lookback):
    path = written(tmp_path, with_lookback(lookback))

    assert load_error(path) == (
        f"{path}: tables[0] (`f4211_sales_order_detail`).lookback: lookback `{lookback}` must be "
        "longer than zero; use a duration such as PT2H or P1D, or leave `lookback` out to read "
        "from the watermark itself"
    )


def test_a_lookback_that_is_no_duration_fails_at_load_saying_what_to_write(tmp_path):
    path = written(tmp_path, with_lookback("two hours"))

    assert load_error(path) == (
        f"{path}: tables[0] (`f4211_sales_order_detail`).lookback: `lookback` is `two hours`, "
        f"which is not a duration; {DURATIONS}"
    )


def test_a_lookback_on_a_table_without_watermark_columns_fails_at_load_naming_the_table(tmp_path):
    text = GOOD.replace("    tier: hourly\n    watermark: [SDUPMJ, SDTDAY]\n", "    tier: mass\n")
    path = written(tmp_path, text + "    lookback: PT2H\n")

    assert load_error(path) == (
        f"{path}: tables[0] (`f4211_sales_order_detail`): `lookback` moves the watermark back, "
        "but the table has no `watermark` columns; add `watermark` columns or remove `lookback`"
    )
