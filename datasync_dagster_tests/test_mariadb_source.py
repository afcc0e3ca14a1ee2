"""The generic source paths on a real server other than PostgreSQL: MariaDB.

MariaDB stands in for Sybase ASE: CMS-shaped tables are read by the very `OdbcFetcher` that
reads ASE, through pyodbc and MariaDB's ODBC driver instead of FreeTDS, with ASE's watermark
margin; the session is told ANSI_QUOTES so that "name" quotes an identifier, as ASE is told
`quoted_identifier`. A JDE-shaped table is read through SQLAlchemy (`fetcher_for` on a
`mysql+pymysql` engine). Each sync lands in an SQLite cache and in a PostgreSQL cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pyodbc
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url

from datasync_dagster.audit import AuditLog
from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.demo.cms import ase_datetime
from datasync_dagster.engine import SyncResult, sync_table
from datasync_dagster.fetchers import fetcher_for
from datasync_dagster.fetchers.sybase import ASE_WATERMARK_MARGIN, OdbcFetcher, OdbcSource
from datasync_dagster.writers import writer_for

MARIADB_ODBC_DRIVER = "MariaDB Unicode"
NOW = ase_datetime(datetime(2024, 3, 1, 12, 0, 0, 123456))

# `contracts` with ASE's types as MariaDB has them: DATETIME(6) for ASE's datetime.
METADATA = sa.MetaData()
CONTRACTS = sa.Table(
    "contracts",
    METADATA,
    sa.Column("contract_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("status", sa.CHAR(10), nullable=False),
    sa.Column("amount", sa.Numeric(14, 2), nullable=False),
    sa.Column("sales_rep", sa.String(30)),
    sa.Column("start_date", mysql.DATETIME(fsp=6), nullable=False),
    sa.Column("last_modified", mysql.DATETIME(fsp=6), nullable=False),
)
CMS = DataSourceConfig(name="cms", system="cms", url="sybase+pyodbc://sync@127.0.0.1/cms")
CMS_CONTRACTS = TableConfig(
    name="cms_contracts",
    source="cms",
    source_table="contracts",
    key_columns=["contract_id"],
    tier="daily",
    watermark=["last_modified"],
)


def contract(number: int, modified: datetime, *, status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "contract_id": number,
        "status": status,
        "amount": Decimal(number).scaleb(-2) + Decimal("1000.05"),
        "sales_rep": None if number % 3 else "Anna Kovač",
        "start_date": datetime(2023, 1, number % 28 + 1),
        "last_modified": modified,
    }


def first_contracts() -> list[dict[str, Any]]:
    """Contracts 1 to 10, the first modified last, at `NOW`."""
    return [contract(n, NOW - timedelta(days=n - 1)) for n in range(1, 11)]


@dataclass
class CmsOnMariaDB:
    """The CMS tables in a MariaDB database, read as ASE is read, synced into one cache."""

    source_engine: sa.Engine
    database: OdbcSource
    cache_engine: sa.Engine

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.cache_engine)
        self.audit.ensure()

    def write(self, statement: Any, rows: list[dict[str, Any]] | None = None) -> None:
        with self.source_engine.begin() as connection:
            connection.execute(statement, rows) if rows else connection.execute(statement)

    def sync(self, tier: Any = None) -> SyncResult:
        fetcher = fetcher_for(self.database, CMS, CMS_CONTRACTS)
        assert isinstance(fetcher, OdbcFetcher)
        writer = writer_for(self.cache_engine)
        return sync_table(CMS_CONTRACTS, fetcher, writer, self.audit, tier=tier, batch_size=4)

    def cache_rows(self) -> list[tuple[Any, ...]]:
        table = sa.table("contracts", *[sa.column(c.name) for c in CONTRACTS.columns])
        with self.cache_engine.connect() as connection:
            rows = connection.execute(sa.select(table).order_by(table.c.contract_id)).all()
        return [_plain(row) for row in rows]

    def source_rows(self) -> list[tuple[Any, ...]]:
        with self.source_engine.connect() as connection:
            rows = connection.execute(sa.select(CONTRACTS).order_by("contract_id")).all()
        return [_plain(row) for row in rows]


def _plain(row: Any) -> tuple[Any, ...]:
    # SQLite keeps datetimes and decimals as text; compare them as the values they stand for.
    values = []
    for value in row:
        if isinstance(value, str) and value[:2] == "20" and value[4:5] == "-":
            value = datetime.fromisoformat(value)
        values.append(Decimal(str(value)) if isinstance(value, (Decimal, float)) else value)
    return tuple(values)


def mariadb_odbc(url: str) -> OdbcSource:
    """The MariaDB database of `url`, reached through pyodbc as an ASE database would be."""
    if MARIADB_ODBC_DRIVER not in pyodbc.drivers():
        pytest.fail(
            f"the ODBC driver `{MARIADB_ODBC_DRIVER}` is not registered; install the Debian "
            "package odbc-mariadb (scripts/test does)",
            pytrace=False,
        )
    parsed = make_url(url)
    return OdbcSource(
        f"DRIVER={{{MARIADB_ODBC_DRIVER}}};SERVER={parsed.host};PORT={parsed.port};"
        f"DATABASE={parsed.database};UID={parsed.username};PWD=",
        session_sql=("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",),
        datetime_margin=ASE_WATERMARK_MARGIN,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def cms(
    request: pytest.FixtureRequest,
    mariadb_url: str,
    make_engine: Callable[..., sa.Engine],
    make_cache_engine: Callable[..., sa.Engine],
    sqlite_url: Callable[[str], str],
) -> Iterator[CmsOnMariaDB]:
    source_engine = make_engine(mariadb_url)
    METADATA.create_all(source_engine)
    if request.param == "sqlite":
        cache_url = sqlite_url("cache")
    else:
        cache_url = request.getfixturevalue("pg_url")
    yield CmsOnMariaDB(source_engine, mariadb_odbc(mariadb_url), make_cache_engine(cache_url))


def test_a_first_sync_reads_every_row_trimmed_with_exact_decimals_and_datetimes(cms):
    cms.write(CONTRACTS.insert(), first_contracts())

    result = cms.sync()

    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (10, 10, 0)
    assert cms.cache_rows() == cms.source_rows()
    assert cms.cache_rows()[0][2] == Decimal("1000.06")
    assert result.watermark == f'["{NOW.isoformat()}"]'


def test_an_incremental_sync_reads_from_the_watermark_and_rereads_its_boundary(cms):
    cms.write(CONTRACTS.insert(), first_contracts())
    cms.sync()

    later = NOW + timedelta(hours=1)
    cms.write(
        CONTRACTS.update().where(CONTRACTS.c.contract_id.in_([4, 5])).values(last_modified=later)
    )
    # A row written after the first sync with the very watermark it reached: never skipped.
    cms.write(CONTRACTS.insert(), [contract(11, NOW), contract(12, later, status="DRAFT")])
    cms.write(CONTRACTS.delete().where(CONTRACTS.c.contract_id == 7))
    result = cms.sync()

    assert result.incremental
    assert result.rows_read == 5  # contracts 1 and 11 at the old watermark; 4, 5, 12 after it
    assert result.rows_upserted == 4  # 1 is unchanged
    assert result.rows_deleted == 0
    assert [row[0] for row in cms.cache_rows()] == list(range(1, 13))


def test_a_mass_sync_deletes_the_rows_gone_from_the_source(cms):
    cms.write(CONTRACTS.insert(), first_contracts())
    cms.sync()
    cms.write(CONTRACTS.delete().where(CONTRACTS.c.contract_id.in_([2, 9])))

    result = cms.sync("mass")

    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (8, 0, 2)
    assert cms.cache_rows() == cms.source_rows()


def test_a_jde_shaped_table_on_mariadb_syncs_through_sqlalchemy_and_decodes(
    mariadb_url: str, make_engine, make_cache_engine, sqlite_url
):
    from datasync_dagster.demo.jde import F4101

    source_engine = make_engine(mariadb_url)
    F4101.metadata.create_all(source_engine, tables=[F4101])
    item = {c.name: (0 if isinstance(c.type, sa.Integer) else "") for c in F4101.columns}
    rows = [
        {**item, "IMITM": 60001, "IMLITM": "BOLT-M8".ljust(25), "IMUPMJ": 124060, "IMTDAY": 143005},
        {**item, "IMITM": 60002, "IMLITM": "NUT-M8".ljust(25), "IMUPMJ": 124061, "IMTDAY": 90000},
    ]
    with source_engine.begin() as connection:
        connection.execute(F4101.insert(), rows)
    jde = DataSourceConfig(name="jde", system="jde", url=mariadb_url)
    table = TableConfig(
        name="f4101_item_master",
        source="jde",
        source_table="F4101",
        key_columns=["IMITM"],
        columns=["IMITM", "IMLITM", "IMUPMJ", "IMTDAY"],
        tier="daily",
        watermark=["IMUPMJ", "IMTDAY"],
        decode={"IMUPMJ": "julian_date", "IMTDAY": "time"},
    )
    cache_engine = make_cache_engine(sqlite_url("cache"))
    audit = AuditLog(cache_engine)
    audit.ensure()

    result = sync_table(
        table, fetcher_for(source_engine, jde, table), writer_for(cache_engine), audit
    )

    assert (result.rows_read, result.watermark) == (2, "[124061, 90000]")
    with cache_engine.connect() as connection:
        cached = connection.exec_driver_sql('SELECT * FROM "F4101" ORDER BY "IMITM"').all()
    assert cached == [(60001, "BOLT-M8", "2024-02-29", "14:30:05.000000"),
                      (60002, "NUT-M8", "2024-03-01", "09:00:00.000000")]  # fmt: skip
