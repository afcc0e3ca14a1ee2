"""The JDE encodings decode to the values worked out by hand, and bad values name their column."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from datasync_dagster.config import TableConfig
from datasync_dagster.errors import ConfigError, DecodeError
from datasync_dagster.fetchers.base import ColumnSpec
from datasync_dagster.fetchers.decoding import DecodePlan
from datasync_dagster.fetchers.jde import (
    MemoDecoder,
    hhmmss_to_time,
    implied_decimal,
    joined_timestamp,
    julian_to_date,
)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (0, None),
        (None, None),
        (100001, date(2000, 1, 1)),
        (99365, date(1999, 12, 31)),
        (124060, date(2024, 2, 29)),
        (123060, date(2023, 3, 1)),
        (100366, date(2000, 12, 31)),
        (100060, date(2000, 2, 29)),
        (60, date(1900, 3, 1)),
        (1, date(1900, 1, 1)),
        (125365, date(2025, 12, 31)),
        (Decimal("124060"), date(2024, 2, 29)),
    ],
)
def test_julian_dates_decode_to_the_hand_checked_day(stored, expected):
    assert julian_to_date(stored) == expected


@pytest.mark.parametrize("stored", [101366, 123000, 100367, 366, -124060, 124060.5, 99999999])
def test_a_day_the_year_does_not_have_is_not_a_julian_date(stored):
    with pytest.raises(ValueError, match=f"`{stored}` is not a Julian date"):
        julian_to_date(stored)


def test_a_bad_julian_date_raises_a_decode_error_naming_the_column():
    decoder = MemoDecoder(julian_to_date, "SDTRDJ")

    with pytest.raises(DecodeError) as raised:
        decoder[101366]

    assert str(raised.value).startswith(
        "column `SDTRDJ`: `101366` is not a Julian date CYYDDD (day 366 of 2001);"
    )


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (0, time(0, 0, 0)),
        (None, None),
        (1, time(0, 0, 1)),
        (93000, time(9, 30, 0)),
        (143005, time(14, 30, 5)),
        (235959, time(23, 59, 59)),
    ],
)
def test_hhmmss_times_decode_to_the_time_of_day(stored, expected):
    assert hhmmss_to_time(stored) == expected


@pytest.mark.parametrize("stored", [240000, 236000, 235960, -1, 1000000, 93000.5])
def test_hours_minutes_or_seconds_out_of_range_are_not_a_time(stored):
    with pytest.raises(ValueError, match=f"`{stored}` is not a time HHMMSS"):
        hhmmss_to_time(stored)


@pytest.mark.parametrize(
    ("stored", "decimals", "expected"),
    [
        (1000, 3, Decimal("1.000")),
        (6170, 2, Decimal("61.70")),
        (-6170, 2, Decimal("-61.70")),
        (0, 2, Decimal("0.00")),
        (7, 4, Decimal("0.0007")),
        (42, 0, Decimal("42")),
        (999_999_999_999_999, 2, Decimal("9999999999999.99")),
        (-999_999_999_999_999, 4, Decimal("-99999999999.9999")),
        (123_456_789_012_345, 2, Decimal("1234567890123.45")),
        (Decimal("123456789012345"), 2, Decimal("1234567890123.45")),
        (10**30 + 1, 2, Decimal("10000000000000000000000000000.01")),
        (1000.0, 3, Decimal("1.000")),
        (None, 2, None),
    ],
)
def test_implied_decimals_scale_to_exact_decimals(stored, decimals, expected):
    decoded = implied_decimal(stored, decimals)

    assert decoded == expected
    assert decoded is None or isinstance(decoded, Decimal)
    assert str(decoded) == str(expected)


@pytest.mark.parametrize("stored", [12.5, Decimal("12.5"), "twelve", float("nan")])
def test_an_amount_that_is_not_a_whole_number_has_no_implied_decimals(stored):
    with pytest.raises(ValueError, match="implied decimals"):
        implied_decimal(stored, 2)


@pytest.mark.parametrize(
    ("julian", "hhmmss", "expected"),
    [
        (124060, 143005, datetime(2024, 2, 29, 14, 30, 5)),
        (99365, 235959, datetime(1999, 12, 31, 23, 59, 59)),
        (124060, 0, datetime(2024, 2, 29, 0, 0, 0)),
        (124060, None, datetime(2024, 2, 29, 0, 0, 0)),
        (0, 143005, None),
        (None, 143005, None),
    ],
)
def test_a_julian_date_and_a_time_join_into_one_timestamp(julian, hhmmss, expected):
    assert joined_timestamp(julian, hhmmss) == expected


def test_the_memo_decodes_each_distinct_value_once():
    calls = []

    def decode(value):
        calls.append(value)
        return julian_to_date(value)

    decoder = MemoDecoder(decode, "SDTRDJ")
    decoded = [decoder[v] for v in (124060, 124060, 0, 124060, 0)]

    assert decoded == [date(2024, 2, 29), date(2024, 2, 29), None, date(2024, 2, 29), None]
    assert calls == [124060, 0]


RAW_COLUMNS = [
    ColumnSpec("SDDOCO", sa.Integer(), nullable=False),
    ColumnSpec("SDLITM", sa.CHAR(10), nullable=False),
    ColumnSpec("SDDSC1", sa.Text(), nullable=True),
    ColumnSpec("SDTRDJ", sa.Integer(), nullable=False),
    ColumnSpec("SDAEXP", sa.Numeric(15, 0), nullable=False),
    ColumnSpec("SDUPMJ", sa.Integer(), nullable=False),
    ColumnSpec("SDTDAY", sa.Integer(), nullable=False),
]


def sales_config(**changes) -> TableConfig:
    return TableConfig.model_validate(
        {
            "name": "f4211",
            "source": "jde",
            "source_table": "F4211",
            "key_columns": ["SDDOCO"],
            "tier": "mass",
            "decode": {
                "sdtrdj": "julian_date",
                "SDAEXP": {"kind": "implied_decimal", "decimals": 2},
                "SDUPMJ": "julian_date",
                "SDTDAY": "time",
                "SDUPDATED": {"kind": "timestamp", "date": "SDUPMJ", "time": "SDTDAY"},
            },
            **changes,
        }
    )


def test_a_decode_plan_decodes_a_batch_column_by_column():
    plan = DecodePlan(RAW_COLUMNS, sales_config(), trim_strings=True)
    batch = [
        (1, "ITEM-1    ", "  Bolt  ", 124060, 6170, 124061, 93000),
        (2, "          ", None, 0, -999_999_999_999_999, 99365, 235959),
        (3, " LEADING  ", "x", 100366, 0, 100001, 0),
    ]

    decoded = plan.apply(batch)

    assert [tuple(row) for row in decoded] == [
        (
            1,
            "ITEM-1",
            "  Bolt  ",
            date(2024, 2, 29),
            Decimal("61.70"),
            date(2024, 3, 1),
            time(9, 30),
            datetime(2024, 3, 1, 9, 30),
        ),
        (
            2,
            "",
            None,
            None,
            Decimal("-9999999999999.99"),
            date(1999, 12, 31),
            time(23, 59, 59),
            datetime(1999, 12, 31, 23, 59, 59),
        ),
        (
            3,
            " LEADING",
            "x",
            date(2000, 12, 31),
            Decimal("0.00"),
            date(2000, 1, 1),
            time(0, 0),
            datetime(2000, 1, 1, 0, 0),
        ),
    ]


def test_a_decode_plan_gives_the_cache_columns_their_decoded_types():
    plan = DecodePlan(RAW_COLUMNS, sales_config(), trim_strings=True)

    described = [
        (c.name, type(c.type).__name__, getattr(c.type, "scale", None), c.nullable)
        for c in plan.columns
    ]

    assert described == [
        ("SDDOCO", "Integer", None, False),
        ("SDLITM", "String", None, False),
        ("SDDSC1", "Text", None, True),
        ("SDTRDJ", "Date", None, True),
        ("SDAEXP", "Numeric", 2, False),
        ("SDUPMJ", "Date", None, True),
        ("SDTDAY", "Time", None, False),
        ("SDUPDATED", "DateTime", None, True),
    ]
    assert plan.columns[1].type.length == 10
    assert plan.columns[4].type.precision == 15


def test_strings_keep_their_padding_when_trimming_is_off():
    plan = DecodePlan(RAW_COLUMNS[:2], sales_config(decode={}), trim_strings=False)

    assert plan.is_identity
    assert plan.apply([(1, "ITEM-1    ")]) == [(1, "ITEM-1    ")]


def test_a_trim_rule_trims_even_when_the_source_does_not_trim():
    config = sales_config(decode={"SDLITM": "trim"})
    plan = DecodePlan(RAW_COLUMNS[:2], config, trim_strings=False)

    assert plan.apply([(1, "ITEM-1    ")]) == [(1, "ITEM-1")]


def test_a_bad_value_in_a_batch_names_its_table_row_column_and_value():
    plan = DecodePlan(RAW_COLUMNS, sales_config(), trim_strings=True)
    batch = [
        (1, "A", None, 124060, 6170, 124061, 93000),
        (2, "B", None, 124060, 6170, 124061, 236000),
    ]

    with pytest.raises(DecodeError) as raised:
        plan.apply(batch)

    assert str(raised.value) == (
        "table `f4211`, row (SDDOCO) = (2,): column `SDTDAY`: `236000` is not a time HHMMSS; "
        "fix the source row or the column's `decode` rule"
    )


def test_a_timestamp_of_a_column_the_source_lacks_is_a_config_error():
    config = sales_config(
        decode={"SDUPDATED": {"kind": "timestamp", "date": "SDUPMJ", "time": "SDUPMT"}}
    )

    with pytest.raises(ConfigError, match="timestamp `SDUPDATED` joins column 'SDUPMT'"):
        DecodePlan(RAW_COLUMNS, config, trim_strings=True)


def test_an_empty_batch_decodes_to_an_empty_batch():
    plan = DecodePlan(RAW_COLUMNS, sales_config(), trim_strings=True)

    assert list(plan.apply([])) == []


def test_a_rule_for_a_column_that_is_not_read_is_a_config_error():
    config = sales_config(decode={"SDLITMX": "trim", "SDDOCO": "julian_date"})

    with pytest.raises(ConfigError) as raised:
        DecodePlan(RAW_COLUMNS[:2], config, trim_strings=False)

    assert str(raised.value) == (
        "table `f4211`: `decode` has rules for ['SDLITMX'], which are not columns read from "
        "`F4211`; fix the names (the columns read are ['SDDOCO', 'SDLITM']), or add them to "
        "`columns`"
    )
