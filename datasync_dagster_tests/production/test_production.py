"""The production configuration, without its servers: JDE on Oracle, CMS on Sybase ASE and a
SQL Server cache. It validates, makes its engines, fetchers, writer and Dagster assets, and
produces the exact statements a sync would send.

Nothing listens on the loopback ports the URLs name: the sources' reflection is answered as
Oracle and FreeTDS would answer it, and the cache is the recording connection of
`test_mssql.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from datasync_dagster.config import DataSyncConfig, load_config
from datasync_dagster.fetchers import create_source_engine, fetcher_for
from datasync_dagster.fetchers.oracle import OracleFetcher
from datasync_dagster.fetchers.sybase import OdbcFetcher, OdbcSource
from datasync_dagster.writers import create_cache_engine, writer_for
from datasync_dagster.writers.mssql import MssqlWriter
from datasync_dagster_tests.test_mssql import RecordingConnection, RecordingEngine, tsql
from datasync_dagster_tests.test_oracle import F4211_COLUMNS
from datasync_dagster_tests.test_sybase import ROWS, FakeAse

PRODUCTION_CONFIG = Path(__file__).parent / "datasync.yaml"
URLS = {
    "DATASYNC_CACHE_URL": "mssql+pyodbc://sync:secret@127.0.0.1:1433/DataSync?driver=FreeTDS",
    "JDE_URL": "oracle+oracledb://sync:secret@127.0.0.1:1521/?service_name=JDEPROD",
    "CMS_URL": "sybase+pyodbc://sync:secret@127.0.0.1:5000/CMS?driver=FreeTDS",
}
# F0101 as SQLAlchemy reflects it from a JDE database on Oracle.
F0101_COLUMNS = [
    ("aban8", oracle.NUMBER()),
    ("abalph", oracle.NCHAR(40)),
    ("abeftb", oracle.NUMBER(6, 0)),
    ("abupmj", oracle.NUMBER(6, 0)),
    ("abupmt", oracle.NUMBER()),
    ("abuser", oracle.NCHAR(10)),
]


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> DataSyncConfig:
    for name, url in URLS.items():
        monkeypatch.setenv(name, url)
    return load_config(PRODUCTION_CONFIG)


@pytest.fixture
def jde(config: DataSyncConfig) -> Iterator[sa.Engine]:
    """The JDE engine, its reflection answered as Oracle answers it for F0101 and F4211."""
    engine = create_source_engine(config.source("jde"))
    assert isinstance(engine, sa.Engine)
    tables = {"F0101": F0101_COLUMNS, "F4211": F4211_COLUMNS}

    def get_columns(_self: Any, _connection: Any, table: str, schema: str, **_: Any) -> Any:
        assert schema == "PRODDTA"
        return [{"name": n, "type": t, "nullable": False} for n, t in tables[table]]

    with (
        mock.patch.object(engine, "connect"),
        mock.patch.object(type(engine.dialect), "get_columns", get_columns),
    ):
        yield engine
    engine.dispose()


def test_the_production_configuration_validates(config: DataSyncConfig):
    assert [(s.name, s.system, s.schema_) for s in config.sources] == [
        ("jde", "jde", "PRODDTA"),
        ("cms", "cms", "dbo"),
    ]
    assert config.cache.resolve_url().startswith("mssql+pyodbc://")


def test_it_builds_an_oracle_fetcher_per_jde_table_and_they_send_these_selects(config, jde):
    f0101 = fetcher_for(jde, config.source("jde"), config.table("f0101_address_book"))
    assert isinstance(f0101, OracleFetcher)

    sql = str(f0101.select((124060, 143005)).compile(dialect=jde.dialect))

    t = '"PRODDTA"."F0101"'
    assert sql == (
        f"SELECT {t}.aban8, {t}.abalph, {t}.abeftb, {t}.abupmj, {t}.abupmt, {t}.abuser \n"
        f"FROM {t} \n"
        f"WHERE {t}.abupmj >= :abupmj_1 AND ({t}.abupmj > :abupmj_2 "
        f"OR {t}.abupmj = :abupmj_3 AND {t}.abupmt >= :abupmt_1)"
    )
    assert [c.name for c in f0101.columns][-1] == "ABUPDATED"
    f4211 = fetcher_for(jde, config.source("jde"), config.table("f4211_sales_order_detail"))
    assert isinstance(f4211, OracleFetcher)


def test_it_builds_the_odbc_fetcher_for_cms_and_it_sends_this_select(config, monkeypatch):
    database = create_source_engine(config.source("cms"))
    assert isinstance(database, OdbcSource)
    assert "TDS_Version=5.0" in database.connection_string
    monkeypatch.setattr(OdbcSource, "connect", FakeAse.connect)
    object.__setattr__(database, "log", [])
    object.__setattr__(database, "rows", ROWS)

    contracts = fetcher_for(database, config.source("cms"), config.table("cms_contracts"))

    assert isinstance(contracts, OdbcFetcher)
    sql, parameters = contracts.select((ROWS[0][-1],))
    assert sql == (
        'SELECT "contract_id", "customer_no", "status", "start_date", "end_date", "amount", '
        '"currency", "sales_rep", "notes", "last_modified" FROM "dbo"."contracts" '
        'WHERE "last_modified" >= ?'
    )
    assert len(parameters) == 1


def test_it_builds_the_sql_server_writer_and_a_sync_sends_these_statements(config, monkeypatch):
    engine = create_cache_engine(config.cache.resolve_url())
    assert isinstance(writer_for(engine, config.cache.schema_), MssqlWriter)
    engine.dispose()
    monkeypatch.setattr(OdbcSource, "connect", FakeAse.connect)
    database = create_source_engine(config.source("cms"))
    object.__setattr__(database, "log", [])
    object.__setattr__(database, "rows", ROWS)
    table = config.table("cms_contracts")
    columns = fetcher_for(database, config.source("cms"), table).columns

    recording = RecordingConnection(cache_columns=[], duplicates=[])
    writer = MssqlWriter(RecordingEngine(recording), config.cache.schema_)  # type: ignore[arg-type]
    with writer.staging(table.cache_table_name, columns, table.key_columns) as staging:
        staging.load([tuple(row) for row in ROWS])
        staging.merge(delete_missing=False)

    statements = recording.statements
    assert all(tsql(s) for s in statements)
    stage = statements[0].split("[", 1)[1].split("]", 1)[0]
    values = [c.name for c in columns if c.name != "contract_id"]
    assert statements[-2] == "\n".join(
        [
            "DECLARE @changes TABLE ([action] NVARCHAR(10) NOT NULL);",
            "MERGE INTO [dbo].[cms_contracts] WITH (HOLDLOCK) AS t",
            f"USING [{stage}] AS s ON t.[contract_id] = s.[contract_id]",
            "WHEN MATCHED AND EXISTS (SELECT "
            + ", ".join(f"s.[{c}]" for c in values)
            + " EXCEPT SELECT "
            + ", ".join(f"t.[{c}]" for c in values)
            + ") THEN UPDATE SET "
            + ", ".join(f"[{c}] = s.[{c}]" for c in values),
            "WHEN NOT MATCHED BY TARGET THEN INSERT ("
            + ", ".join(f"[{c.name}]" for c in columns)
            + ") VALUES ("
            + ", ".join(f"s.[{c.name}]" for c in columns)
            + ")",
            "OUTPUT $action INTO @changes;",
            "SELECT COUNT(CASE WHEN [action] <> N'DELETE' THEN 1 END) AS upserted, "
            "COUNT(CASE WHEN [action] = N'DELETE' THEN 1 END) AS deleted FROM @changes;",
        ]
    )
    assert statements[-1] == f"DROP TABLE IF EXISTS [{stage}]"


def test_it_builds_an_asset_per_table_though_no_server_answers(config: DataSyncConfig):
    from datasync_dagster.definitions import make_definitions

    defs = make_definitions(config)

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"f0101_address_book", "f4211_sales_order_detail", "cms_contracts"} <= keys
    assert isinstance(defs, dg.Definitions)
