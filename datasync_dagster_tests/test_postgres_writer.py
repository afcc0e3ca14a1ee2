"""The PostgreSQL writer's own paths: a new table loaded directly, re-syncs that write only what
differs, and values that the binary COPY cannot carry as they are."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.errors import CacheRefusedValue
from datasync_dagster.fetchers import ColumnSpec
from datasync_dagster.writers import writer_for
from datasync_dagster_tests.fixtures import SyncedTable

ORDERS = sa.Table(
    "ORDERS",
    sa.MetaData(),
    sa.Column("ID", sa.Integer, primary_key=True),
    sa.Column("CODE", sa.CHAR(3), primary_key=True),
    sa.Column("QTY", sa.Integer),
    sa.Column("NOTE", sa.String(20)),
    sa.Column("RATE", sa.Float),
)

ROWS = [
    {"ID": 1, "CODE": "A", "QTY": 10, "NOTE": "first", "RATE": 0.5},
    {"ID": 2, "CODE": "B", "QTY": -3, "NOTE": None, "RATE": None},
    {"ID": 3, "CODE": "C", "QTY": 0, "NOTE": "  padded  ", "RATE": 1e-300},
]


@pytest.fixture
def orders(sqlite_url, make_engine, pg_url, make_cache_engine) -> SyncedTable:
    """ORDERS at an SQLite source holding `ROWS`, wired to a PostgreSQL cache."""
    source_engine = make_engine(sqlite_url("source"))
    ORDERS.create(source_engine)
    with source_engine.begin() as connection:
        connection.execute(ORDERS.insert(), ROWS)
    return SyncedTable(
        table=TableConfig(
            name="orders",
            source="src",
            source_table="ORDERS",
            key_columns=["ID", "CODE"],
            tier="mass",
        ),
        source=DataSourceConfig(name="src", url=sqlite_url("source")),
        source_engine=source_engine,
        cache_engine=make_cache_engine(pg_url),
    )


def cached(orders: SyncedTable) -> list[tuple]:
    with orders.cache_engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.exec_driver_sql(
                'SELECT "ID", "CODE", "QTY", "NOTE", "RATE" FROM "ORDERS" ORDER BY "ID"'
            )
        ]


def versions(orders: SyncedTable) -> dict[int, str]:
    """Each cached row's row version (xmin): a row rewritten gets a new one."""
    with orders.cache_engine.connect() as connection:
        rows = connection.exec_driver_sql('SELECT "ID", xmin::text FROM "ORDERS"')
        return dict(rows.all())


def at_source(orders: SyncedTable, *statements: str) -> None:
    with orders.source_engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def test_a_new_cache_table_is_loaded_equal_to_the_source_and_keyed(orders):
    result = orders.sync("mass", batch_size=2)

    assert cached(orders) == [tuple(row.values()) for row in ROWS]
    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (3, 3, 0)
    key = sa.inspect(orders.cache_engine).get_pk_constraint("ORDERS")
    assert key["constrained_columns"] == ["ID", "CODE"]


def test_a_mass_resync_of_unchanged_rows_rewrites_none_of_them(orders):
    orders.sync("mass")
    before = versions(orders)

    result = orders.sync("mass", batch_size=2)

    assert (result.rows_upserted, result.rows_deleted) == (0, 0)
    assert versions(orders) == before


def test_a_mass_resync_writes_only_the_changed_the_new_and_the_gone_rows(orders):
    orders.sync("mass")
    before = versions(orders)
    at_source(
        orders,
        "UPDATE ORDERS SET NOTE = 'second' WHERE ID = 2",
        "DELETE FROM ORDERS WHERE ID = 3",
        "INSERT INTO ORDERS VALUES (4, 'D', 7, NULL, 2.25)",
    )

    result = orders.sync("mass", batch_size=2)

    assert cached(orders) == [
        (1, "A", 10, "first", 0.5),
        (2, "B", -3, "second", None),
        (4, "D", 7, None, 2.25),
    ]
    assert (result.rows_upserted, result.rows_deleted) == (2, 1)
    assert versions(orders)[1] == before[1]


def test_an_integer_beyond_the_cache_columns_range_fails_the_sync_instead_of_wrapping(orders):
    orders.sync("mass")
    at_source(orders, "UPDATE ORDERS SET QTY = 3000000000 WHERE ID = 1")

    with pytest.raises(CacheRefusedValue) as refused:
        orders.sync("mass")

    assert str(refused.value) == (
        "cache table `ORDERS` refused a value: integer out of range; widen the cache column (or "
        "drop it, and the next Mass sync makes it afresh), or fix the source row"
    )

    assert cached(orders)[0] == (1, "A", 10, "first", 0.5)


def test_a_value_without_a_binary_form_is_written_as_text(pg_url, make_cache_engine):
    writer = writer_for(make_cache_engine(pg_url))
    columns = [ColumnSpec("ID", sa.Integer(), nullable=False), ColumnSpec("QTY", sa.Integer())]
    with writer.staging("QTYS", columns, ["ID"]) as staging:
        staging.load([(1, 10)])
        staging.merge(delete_missing=True)

    with writer.staging("QTYS", columns, ["ID"]) as staging:
        staging.load([(1, "42"), (2, 5)])
        counts = staging.merge(delete_missing=True)

    with writer.engine.connect() as connection:
        rows = connection.exec_driver_sql('SELECT "ID", "QTY" FROM "QTYS" ORDER BY "ID"').all()
    assert [tuple(row) for row in rows] == [(1, 42), (2, 5)]
    assert (counts.upserted, counts.deleted) == (2, 0)
