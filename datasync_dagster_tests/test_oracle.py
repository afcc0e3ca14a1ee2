"""The JDE fetcher on Oracle, without a server: the engine it makes, the types it reads columns
as, and the SELECT it would send, compiled by SQLAlchemy's Oracle dialect and parsed by sqlglot.

The Oracle engine never connects here: reflection is answered with the columns Oracle reports
for JDE tables (names folded to lower case by SQLAlchemy, NCHAR and NUMBER types).
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import oracledb
import pytest
import sqlalchemy as sa
import sqlglot
from sqlalchemy.dialects import oracle
from sqlglot import exp

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.fetchers import create_source_engine, fetcher_for
from datasync_dagster.fetchers.base import ColumnSpec
from datasync_dagster.fetchers.decoding import DecodePlan
from datasync_dagster.fetchers.oracle import OracleFetcher, prefetch_rows
from datasync_dagster.types import oracle_source_type

ORACLE_URL = "oracle+oracledb://jde@127.0.0.1:1521/?service_name=JDEPROD"

# F4211 as ALL_TAB_COLUMNS describes it on a JDE database, as SQLAlchemy reflects it.
F4211_COLUMNS = [
    ("sdkcoo", oracle.NCHAR(5)),
    ("sddoco", oracle.NUMBER()),
    ("sddcto", oracle.NCHAR(2)),
    ("sdlnid", oracle.NUMBER()),
    ("sddsc1", oracle.NCHAR(30)),
    ("sdtrdj", oracle.NUMBER(6, 0)),
    ("sduorg", oracle.NUMBER()),
    ("sdaexp", oracle.NUMBER(15, 2)),
    ("sdupmj", oracle.NUMBER()),
    ("sdtday", oracle.NUMBER()),
]


def jde_source(schema: str = "PRODDTA", fetch_size: int = 20_000) -> DataSourceConfig:
    return DataSourceConfig(
        name="jde", system="jde", url=ORACLE_URL, schema=schema, fetch_size=fetch_size
    )


F4211 = TableConfig(
    name="f4211_sales_order_detail",
    source="jde",
    source_table="F4211",
    key_columns=["SDKCOO", "SDDOCO", "SDDCTO", "SDLNID"],
    tier="hourly",
    watermark=["SDUPMJ", "SDTDAY"],
    decode={
        "SDLNID": {"kind": "implied_decimal", "decimals": 3},
        "SDTRDJ": "julian_date",
        "SDUORG": {"kind": "implied_decimal", "decimals": 2},
        "SDUPMJ": "julian_date",
        "SDTDAY": "time",
    },
)


@pytest.fixture
def oracle_engine() -> Iterator[sa.Engine]:
    """An Oracle engine whose reflection answers F4211's columns; it never opens a socket."""
    engine = create_source_engine(jde_source())
    assert isinstance(engine, sa.Engine)
    reflected = [
        {"name": name, "type": type_, "nullable": False, "default": None}
        for name, type_ in F4211_COLUMNS
    ]
    with (
        mock.patch.object(engine, "connect"),
        mock.patch.object(type(engine.dialect), "get_columns", return_value=reflected),
    ):
        yield engine
    engine.dispose()


def fetcher(engine: sa.Engine, schema: str = "PRODDTA") -> OracleFetcher:
    made = fetcher_for(engine, jde_source(schema), F4211)
    assert isinstance(made, OracleFetcher)
    return made


def test_the_oracle_engine_uses_thin_mode_and_fetches_fetch_size_rows_per_round_trip():
    engine = create_source_engine(jde_source(fetch_size=25_000))
    assert isinstance(engine, sa.Engine)

    assert engine.dialect.driver == "oracledb"
    assert oracledb.is_thin_mode()
    assert engine.dialect.arraysize == 25_000  # type: ignore[attr-defined]
    engine.dispose()


def test_the_first_round_trip_prefetches_as_many_rows_as_the_others():
    cursor = SimpleNamespace(prefetchrows=2)

    prefetch_rows(25_000)(None, cursor, "SELECT 1 FROM DUAL", {}, None, False)

    assert cursor.prefetchrows == 25_000


@pytest.mark.parametrize(
    ("source", "integral", "read_as"),
    [
        (oracle.NUMBER(6, 0), False, sa.Integer()),
        (oracle.NUMBER(15, 0), False, sa.BigInteger()),
        (oracle.NUMBER(30, 0), False, sa.Numeric(30, 0)),
        (oracle.NUMBER(15, 2), False, sa.Numeric(15, 2)),
        (oracle.NUMBER(5, -2), False, sa.Integer()),
        (oracle.NUMBER(), False, sa.Numeric()),
        (oracle.NUMBER(), True, sa.BigInteger()),
        (sa.INTEGER(), False, sa.BigInteger()),
        (oracle.FLOAT(126), False, sa.Numeric()),
        (oracle.BINARY_DOUBLE(), False, sa.Float()),
        (oracle.NCHAR(10), False, oracle.NCHAR(10)),
    ],
)
def test_each_oracle_number_is_read_as_an_exact_type(source: Any, integral: bool, read_as: Any):
    read = oracle_source_type(source, integral=integral)

    assert type(read) is type(read_as)
    assert repr(read) == repr(read_as)
    if isinstance(read, sa.Numeric) and not isinstance(read, sa.Float):
        assert read.asdecimal is True


@pytest.mark.parametrize(
    ("read_as", "precision", "scale", "fetched_as"),
    [
        (sa.Numeric(asdecimal=True), 0, -127, decimal.Decimal),
        (sa.Numeric(15, 2, asdecimal=True), 15, 2, decimal.Decimal),
        (sa.BigInteger(), 0, -127, "int from text"),
    ],
)
def test_sqlalchemy_fetches_those_types_as_decimals_or_ints_and_never_as_floats(
    read_as: Any, precision: int, scale: int, fetched_as: Any
):
    # SQLAlchemy's oracledb dialect asks the driver for each column by an output type handler
    # of the column's type; this calls that handler as the driver would.
    dialect = sa.create_engine(ORACLE_URL).dialect
    handler = read_as.dialect_impl(dialect)._cx_oracle_outputtypehandler(dialect)
    cursor = mock.Mock(arraysize=20_000)

    handler(cursor, "SDDOCO", oracledb.DB_TYPE_NUMBER, 22, precision, scale)

    [call] = cursor.var.call_args_list
    if fetched_as == "int from text":
        assert call.args[0] is oracledb.STRING and call.kwargs["outconverter"] is int
    else:
        assert call.args[0] is fetched_as
    assert oracledb.NATIVE_FLOAT not in call.args


def test_jde_columns_are_typed_for_decoding_and_named_as_jde_names_them(oracle_engine):
    columns = {c.name: c for c in fetcher(oracle_engine).columns}

    assert list(columns) == [name.upper() for name, _ in F4211_COLUMNS]
    assert repr(columns["SDKCOO"].type) == "String(length=5)"
    assert repr(columns["SDDOCO"].type) == "Numeric()"
    assert repr(columns["SDLNID"].type) == "Numeric(precision=31, scale=3)"
    assert repr(columns["SDTRDJ"].type) == "Date()"
    assert repr(columns["SDAEXP"].type) == "Numeric(precision=15, scale=2)"
    assert repr(columns["SDTDAY"].type) == "Time()"
    assert not columns["SDKCOO"].nullable
    assert [c.source_name for c in columns.values()][:2] == ["sdkcoo", "sddoco"]


def test_the_watermark_is_read_back_as_the_integers_jde_keeps(oracle_engine):
    reader = fetcher(oracle_engine)

    assert reader.parse_watermark("[124060, 143005]") == (124060, 143005)


@pytest.mark.parametrize("schema", ["PRODDTA", "CRPDTA"])
def test_a_full_read_is_one_plain_select_from_the_jde_schema(oracle_engine, schema: str):
    sql = str(fetcher(oracle_engine, schema).select(None).compile(dialect=oracle_engine.dialect))

    assert sql.startswith(f'SELECT "{schema}"."F4211".sdkcoo, "{schema}"."F4211".sddoco,')
    assert sql.endswith(f'\nFROM "{schema}"."F4211"')
    [parsed] = sqlglot.parse(sql, read="oracle")
    assert isinstance(parsed, exp.Select)
    [table] = parsed.find_all(exp.Table)
    assert (table.db, table.name) == (schema, "F4211")
    assert len(parsed.expressions) == len(F4211_COLUMNS)
    assert parsed.args.get("where") is None
    assert not re.search(r"\b(LIMIT|OFFSET|FETCH|ROWNUM)\b", sql, re.IGNORECASE)


def test_an_incremental_read_binds_the_watermark_at_or_past_in_order(oracle_engine):
    compiled = (
        fetcher(oracle_engine).select((124060, 143005)).compile(dialect=oracle_engine.dialect)
    )
    sql = str(compiled)

    where = sql.split("\nWHERE ", 1)[1]
    assert where == (
        '"PRODDTA"."F4211".sdupmj >= :sdupmj_1 AND ("PRODDTA"."F4211".sdupmj > :sdupmj_2 '
        'OR "PRODDTA"."F4211".sdupmj = :sdupmj_3 AND "PRODDTA"."F4211".sdtday >= :sdtday_1)'
    )
    assert compiled.params == {
        "sdupmj_1": 124060,
        "sdupmj_2": 124060,
        "sdupmj_3": 124060,
        "sdtday_1": 143005,
    }
    [parsed] = sqlglot.parse(sql, read="oracle")
    assert parsed.args["where"] is not None
    assert not re.search(r"\b(LIMIT|OFFSET|FETCH|ROWNUM)\b", sql, re.IGNORECASE)


def test_a_blank_jde_string_arrives_as_an_empty_string_and_a_null_stays_null():
    # On Oracle JDE writes a blank as one space (the empty string would be NULL there).
    raw = [ColumnSpec("SDKCOO", oracle.NCHAR(5).as_generic(), nullable=False)]
    table = TableConfig(
        name="t", source="jde", source_table="T", key_columns=["SDKCOO"], tier="mass"
    )
    plan = DecodePlan(raw, table, trim_strings=jde_source().trims_strings)

    assert plan.apply([(" ",), ("00001",), (None,)]) == [("",), ("00001",), (None,)]
