"""The CMS fetcher on Sybase ASE, without a server: the ODBC connection it opens, the columns
it reads from the description FreeTDS gives, the SELECT it sends, and its watermark rounding.

The same fetcher runs for real against MariaDB in `test_mariadb_source.py`.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pyodbc
import pytest
import sqlglot
from sqlglot import exp

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.errors import ConfigError, SourceError
from datasync_dagster.fetchers import create_source_engine, fetcher_for
from datasync_dagster.fetchers.sybase import (
    OdbcFetcher,
    OdbcSource,
    ase_source,
    at_or_past,
)

ASE_URL = "sybase+pyodbc://sync@127.0.0.1:5000/CMS?driver=FreeTDS"

# `contracts` as FreeTDS describes an ASE table through pyodbc:
# (name, type, display size, column size, precision, scale, nullable)
CONTRACTS_DESCRIPTION = [
    ("contract_id", int, None, 10, 10, 0, False),
    ("customer_no", int, None, 10, 10, 0, False),
    ("status", str, None, 10, 10, 0, False),
    ("start_date", dt.datetime, None, 23, 23, 3, False),
    ("end_date", dt.datetime, None, 23, 23, 3, True),
    ("amount", Decimal, None, 14, 14, 2, False),
    ("currency", str, None, 3, 3, 0, False),
    ("sales_rep", str, None, 30, 30, 0, True),
    ("notes", str, None, 2147483647, 2147483647, 0, True),
    ("last_modified", dt.datetime, None, 23, 23, 3, False),
]
MODIFIED = dt.datetime(2024, 3, 1, 12, 0, 0, 3000)
ROWS = [
    (10001, 1001, "ACTIVE    ", dt.datetime(2024, 1, 1), None, Decimal("1500.00"), "EUR", "Anna",
     None, MODIFIED),
    (10002, 1002, "DRAFT     ", dt.datetime(2024, 2, 1), None, Decimal("99.90"), "USD", None,
     "call first", MODIFIED - dt.timedelta(days=1)),
]  # fmt: skip

CMS = DataSourceConfig(name="cms", system="cms", url=ASE_URL, schema="dbo")
CONTRACTS = TableConfig(
    name="cms_contracts",
    source="cms",
    source_table="contracts",
    key_columns=["contract_id"],
    tier="daily",
    watermark=["last_modified"],
)


class FakeCursor:
    """A pyodbc cursor over one ASE table: its description, and its rows for any SELECT."""

    def __init__(self, log: list[Any], rows: list[tuple[Any, ...]]):
        self._log = log
        self._rows = rows
        self.description: list[tuple[Any, ...]] = []

    def execute(self, sql: str, *parameters: Any) -> None:
        self._log.append((sql, list(parameters[0]) if parameters else []))
        self.description = CONTRACTS_DESCRIPTION
        self._pending = [] if "WHERE 1 = 0" in sql else list(self._rows)

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        taken, self._pending = self._pending[:size], self._pending[size:]
        return taken

    def close(self) -> None:
        pass


class FakeAse(OdbcSource):
    """The ASE source with pyodbc's connection replaced by one that records statements."""

    def __init__(self, rows: list[tuple[Any, ...]] = ROWS):
        real = ase_source(ASE_URL)
        super().__init__(real.connection_string, real.session_sql, real.datetime_margin)
        object.__setattr__(self, "log", [])
        object.__setattr__(self, "rows", rows)

    def connect(self) -> Any:
        log, rows = self.log, self.rows  # type: ignore[attr-defined]

        class Connection:
            def cursor(self) -> FakeCursor:
                return FakeCursor(log, rows)

            def close(self) -> None:
                log.append(("close", []))

        return Connection()


def test_an_ase_url_becomes_a_freetds_connection_string_speaking_tds_5():
    source = ase_source("sybase+pyodbc://sync:se;cr}et@ase.example:4100/CMS?driver=FreeTDS")

    assert source.connection_string == (
        "DRIVER={FreeTDS};SERVER=ase.example;PORT=4100;DATABASE=CMS;UID=sync;"
        "PWD={se;cr}}et};TDS_Version=5.0;ClientCharset=UTF-8"
    )
    assert "set quoted_identifier on" in source.session_sql
    assert "set textsize 2147483647" in source.session_sql


def test_the_port_defaults_to_ases_and_url_options_reach_the_connection_string():
    source = ase_source("sybase+pyodbc://sync@127.0.0.1/CMS?LoginTimeout=5")

    assert ";PORT=5000;" in source.connection_string
    assert source.connection_string.endswith(";LoginTimeout=5")


def test_connections_are_opened_with_autocommit_and_the_session_set_up(monkeypatch):
    opened: list[tuple[str, dict[str, Any]]] = []
    executed: list[str] = []

    class Connection:
        def cursor(self) -> Any:
            return type("Cursor", (), {"execute": lambda _, sql: executed.append(sql),
                                       "close": lambda _: None})()  # fmt: skip

    def connect(connection_string: str, **kwargs: Any) -> Connection:
        opened.append((connection_string, kwargs))
        return Connection()

    monkeypatch.setattr(pyodbc, "connect", connect)

    ase_source(ASE_URL).connect()

    assert opened == [(ase_source(ASE_URL).connection_string, {"autocommit": True})]
    assert executed == list(ase_source(ASE_URL).session_sql)


def test_a_sybase_source_gets_an_odbc_source_and_its_tables_the_odbc_fetcher(monkeypatch):
    engine = create_source_engine(CMS)
    assert isinstance(engine, OdbcSource)
    monkeypatch.setattr(OdbcSource, "connect", FakeAse.connect)
    object.__setattr__(engine, "log", [])
    object.__setattr__(engine, "rows", ROWS)

    assert isinstance(fetcher_for(engine, CMS, CONTRACTS), OdbcFetcher)
    engine.dispose()


def test_columns_come_from_the_description_of_an_empty_select():
    database = FakeAse()

    columns = {c.name: c for c in OdbcFetcher(database, CMS, CONTRACTS).columns}

    assert database.log[0] == ('SELECT * FROM "dbo"."contracts" WHERE 1 = 0', [])
    assert {name: repr(c.type) for name, c in columns.items()} == {
        "contract_id": "Integer()",
        "customer_no": "Integer()",
        "status": "String(length=10)",
        "start_date": "DateTime()",
        "end_date": "DateTime()",
        "amount": "Numeric(precision=14, scale=2)",
        "currency": "String(length=3)",
        "sales_rep": "String(length=30)",
        "notes": "Text()",
        "last_modified": "DateTime()",
    }
    assert [n for n, c in columns.items() if c.nullable] == ["end_date", "sales_rep", "notes"]


def test_a_full_read_selects_every_column_quoted_from_the_owner_table():
    sql, parameters = OdbcFetcher(FakeAse(), CMS, CONTRACTS).select(None)

    assert parameters == []
    [parsed] = sqlglot.parse(sql, read="tsql")
    assert isinstance(parsed, exp.Select) and parsed.args.get("where") is None
    assert [c.name for c in parsed.expressions] == [d[0] for d in CONTRACTS_DESCRIPTION]
    assert all(c.this.quoted for c in parsed.expressions)
    [table] = parsed.find_all(exp.Table)
    assert (table.db, table.name) == ("dbo", "contracts")


def test_an_incremental_read_starts_two_ase_ticks_before_the_watermark_in_whole_milliseconds():
    sql, parameters = OdbcFetcher(FakeAse(), CMS, CONTRACTS).select((MODIFIED,))

    assert sql.endswith(' WHERE "last_modified" >= ?')
    assert parameters == [dt.datetime(2024, 3, 1, 11, 59, 59, 996000)]
    assert sqlglot.parse_one(sql.replace("?", "NULL"), read="tsql").args["where"] is not None


@pytest.mark.parametrize("tick", range(300))
def test_no_rounding_of_the_bound_can_pass_the_row_the_watermark_came_from(tick: int):
    # The row holds `tick` 300ths of a second; the driver shows it rounded to milliseconds.
    second = dt.datetime(2024, 3, 1, 12, 0, 0)
    shown = second + dt.timedelta(milliseconds=round(tick * 1000 / 300))
    fetcher = OdbcFetcher(FakeAse(), CMS, CONTRACTS)

    [bound] = fetcher.select((shown,))[1]

    # The server keeps the bound as a tick of its own: at worst, the next tick up.
    server_bound = math.ceil((bound - second).total_seconds() * 300)
    assert server_bound < tick
    assert bound.microsecond % 1000 == 0


def test_a_lookback_starts_the_read_that_much_and_two_ase_ticks_earlier_in_whole_milliseconds():
    table = CONTRACTS.model_copy(update={"lookback": dt.timedelta(hours=1)})

    sql, parameters = OdbcFetcher(FakeAse(), CMS, table).select((MODIFIED,))

    assert sql.endswith(' WHERE "last_modified" >= ?')
    assert parameters == [dt.datetime(2024, 3, 1, 10, 59, 59, 996000)]


def test_with_a_lookback_only_the_first_watermark_column_limits_the_read():
    table = CONTRACTS.model_copy(
        update={"watermark": ["last_modified", "contract_id"], "lookback": dt.timedelta(days=1)}
    )

    sql, parameters = OdbcFetcher(FakeAse(), CMS, table).select((MODIFIED, 10002))

    assert sql.endswith(' WHERE "last_modified" >= ?')
    assert parameters == [dt.datetime(2024, 2, 29, 11, 59, 59, 996000)]
    assert sqlglot.parse_one(sql.replace("?", "NULL"), read="tsql").args["where"] is not None


def test_a_lookback_on_a_watermark_column_that_holds_no_date_is_refused_naming_it():
    table = CONTRACTS.model_copy(
        update={"watermark": ["contract_id"], "lookback": dt.timedelta(hours=1)}
    )

    with pytest.raises(ConfigError) as raised:
        OdbcFetcher(FakeAse(), CMS, table)

    assert str(raised.value) == (
        "table `cms_contracts`: `lookback` cannot move back the first watermark column "
        "`contract_id`, of type INTEGER; lead `watermark` with a date or datetime column, or one "
        "with the `julian_date` decode rule, or remove `lookback`"
    )


def test_rows_stream_in_batches_and_the_watermark_tracks_the_highest_raw_value():
    fetcher = OdbcFetcher(FakeAse(), CMS, CONTRACTS)

    batches = list(fetcher.batches(None, batch_size=1))

    assert [len(b) for b in batches] == [1, 1]
    assert batches[0][0][2] == "ACTIVE"  # CMS pads CHAR columns; the fetcher trims them
    assert batches[1][0][8] == "call first"
    assert fetcher.watermark_reached == (MODIFIED,)
    assert fetcher.parse_watermark('["2024-03-01T12:00:00.003000"]') == (MODIFIED,)


def test_every_read_closes_its_connection():
    database = FakeAse()
    fetcher = OdbcFetcher(database, CMS, CONTRACTS)

    list(fetcher.batches((MODIFIED,), batch_size=10))

    assert [entry[0] for entry in database.log].count("close") == 2  # describe, read


def test_columns_the_table_lacks_are_named_with_the_columns_it_has():
    table = CONTRACTS.model_copy(update={"columns": ["contract_id", "last_modified", "region"]})

    with pytest.raises(SourceError, match=r"no columns \['region'\].*'amount'"):
        OdbcFetcher(FakeAse(), CMS, table)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["a"], "a >= ?"),
        (["a", "b"], "a >= ? AND ((a > ?) OR (a = ? AND b >= ?))"),
        (
            ["a", "b", "c"],
            "a >= ? AND ((a > ?) OR (a = ? AND b > ?) OR (a = ? AND b = ? AND c >= ?))",
        ),
    ],
)
def test_the_watermark_condition_compares_the_columns_in_order(columns: list[str], expected: str):
    values = [f"v{i}" for i in range(len(columns))]

    where, parameters = at_or_past(columns, values)

    assert where == expected
    assert len(parameters) == where.count("?")
    assert parameters[:2] == ["v0", "v0"] or len(columns) == 1


def test_a_server_that_does_not_answer_is_a_source_error_naming_the_source():
    database = OdbcSource(
        "DRIVER={FreeTDS};SERVER=127.0.0.1;PORT=9;TDS_Version=5.0;LoginTimeout=2;UID=x;PWD=y"
    )

    with pytest.raises(SourceError, match="source `cms`: cannot connect"):
        OdbcFetcher(database, CMS, CONTRACTS)
