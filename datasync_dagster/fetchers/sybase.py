"""CMS on Sybase ASE: plain DBAPI over pyodbc and FreeTDS, decoded by `DecodePlan`.

SQLAlchemy 2 has no ASE dialect of its own. The one outside it, `sqlalchemy-sybase` 2.0.0,
imports and compiles under SQLAlchemy 2.1, but has had no release since January 2023 and is
tested with SAP's ODBC driver rather than FreeTDS; so this fetcher speaks DBAPI directly. It
needs little: the columns, from the description of an empty SELECT, and one SELECT per sync
with `?` markers.

A source URL names the server the SQLAlchemy way,
`sybase+pyodbc://user:password@host:5000/CMS?driver=FreeTDS`; the fetcher turns it into an ODBC
connection string with TDS version 5.0 (the only one ASE speaks) and connects with autocommit
on: FreeTDS otherwise runs ASE in chained mode, and a long read would hold a transaction open
(and the log with it) for as long as it lasts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyodbc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.default import DefaultDialect

from datasync_dagster.config import DataSourceConfig, TableConfig
from datasync_dagster.errors import SourceError
from datasync_dagster.fetchers.base import Batch, ColumnSpec, Watermark
from datasync_dagster.fetchers.planned import PlannedFetcher
from datasync_dagster.identifiers import checked, qualified, quote
from datasync_dagster.types import odbc_source_type

log = logging.getLogger(__name__)

# ASE's datetime counts time in steps of 1/300 s; drivers show them rounded to milliseconds.
ASE_TICK = timedelta(microseconds=3333)
# A watermark is compared two steps early, so that however the driver and server round the
# bound, it never lands past the row it came from: the rows in between are read again.
ASE_WATERMARK_MARGIN = 2 * ASE_TICK
ASE_PORT = 5000
ASE_SESSION = (
    "set quoted_identifier on",  # so that "name" quotes an identifier, as it is quoted here
    "set textsize 2147483647",  # text columns whole, not cut at the driver's default size
)

# Double-quoted identifiers; only the quoting of this dialect is used.
_QUOTING = DefaultDialect()


@dataclass(frozen=True)
class OdbcSource:
    """A source database reached through pyodbc: what to connect to and how to set up a session.

    It holds no connection; each read opens its own and closes it. It stands where an engine
    stands for other sources (`create_source_engine`, `fetcher_for`).
    """

    connection_string: str
    session_sql: tuple[str, ...] = ()
    datetime_margin: timedelta = timedelta(0)

    def connect(self) -> Any:
        """A new connection in autocommit mode, its session set up by `session_sql`."""
        connection = pyodbc.connect(self.connection_string, autocommit=True)
        cursor = connection.cursor()
        for statement in self.session_sql:
            cursor.execute(statement)
        cursor.close()
        return connection

    def dispose(self) -> None:
        """Nothing is pooled, so nothing is left to release."""


def ase_source(url: str | URL) -> OdbcSource:
    """The ASE source of a `sybase+pyodbc://` URL, through FreeTDS unless `driver` says else."""
    parsed = make_url(url)
    options = dict(parsed.query)
    if "odbc_connect" in options:
        connection_string = str(options["odbc_connect"])
    else:
        driver = str(options.pop("driver", "FreeTDS"))
        parts = {
            "SERVER": parsed.host,
            "PORT": parsed.port or ASE_PORT,
            "DATABASE": parsed.database,
            "UID": parsed.username,
            "PWD": parsed.password,
            "TDS_Version": "5.0",
            "ClientCharset": "UTF-8",
            **options,
        }
        connection_string = ";".join(
            [f"DRIVER={{{driver}}}"]
            + [f"{key}={_odbc_value(value)}" for key, value in parts.items() if value is not None]
        )
    return OdbcSource(connection_string, ASE_SESSION, ASE_WATERMARK_MARGIN)


class OdbcFetcher(PlannedFetcher):
    """Reads one configured table through pyodbc, decoding it by the table's rules.

    Args:
        database: the source database (for CMS, `ase_source` of its URL).
        source: the source's configuration: its schema (the table owner), fetch settings.
        table: the table's configuration.
    """

    def __init__(self, database: OdbcSource, source: DataSourceConfig, table: TableConfig):
        self._database = database
        self._source = source
        self._table = table
        super().__init__(self._describe(), source, table)

    def select(self, since: Watermark | None) -> tuple[str, list[Any]]:
        """The statement that reads the rows at or past `since` (from `read_start(since)`),
        and its parameters."""
        columns = ", ".join(quote(_QUOTING, c.source_name or c.name) for c in self._raw)
        sql = f"SELECT {columns} FROM {self._from()}"
        if since is None:
            return sql, []
        start = self._bound(self.read_start(since))
        compared = self._watermark_at[: len(start)]
        names = [quote(_QUOTING, self._raw[i].source_name or "") for i in compared]
        where, parameters = at_or_past(names, start)
        return f"{sql} WHERE {where}", parameters

    def read(self, since: Watermark | None, batch_size: int) -> Iterator[Batch]:
        sql, parameters = self.select(since)
        connection = self._connect()
        try:
            cursor = connection.cursor()
            self._execute(cursor, sql, parameters)
            while rows := self._fetch(cursor, batch_size):
                yield [tuple(row) for row in rows]
                del rows
        finally:
            connection.close()

    def _from(self) -> str:
        name = checked(self._table.source_table, f"table `{self._table.name}`: source_table")
        return qualified(_QUOTING, name, self._source.schema_)

    def _bound(self, since: Watermark) -> Watermark:
        margin = self._database.datetime_margin
        if not margin:
            return since
        return tuple(_earlier(v, margin) if isinstance(v, datetime) else v for v in since)

    def _describe(self) -> list[ColumnSpec]:
        connection = self._connect()
        try:
            cursor = connection.cursor()
            self._execute(cursor, f"SELECT * FROM {self._from()} WHERE 1 = 0", [])
            described = list(cursor.description)
        finally:
            connection.close()
        by_name = {d[0].upper(): d for d in described}
        wanted = self._table.columns
        if wanted is not None:
            missing = [c for c in wanted if c.upper() not in by_name]
            if missing:
                raise SourceError(
                    f"table `{self._table.name}`: source table `{self._table.source_table}` has "
                    f"no columns {missing}; fix `columns`, or drop it to sync all "
                    f"{sorted(d[0] for d in described)}"
                )
            described = [by_name[c.upper()] for c in wanted]
        keys = {k.upper() for k in self._table.key_columns}
        return [self._column_spec(d, keys) for d in described]

    def _column_spec(self, described: Sequence[Any], keys: set[str]) -> ColumnSpec:
        name, type_code, _display, size, precision, scale, nullable = described[:7]
        return ColumnSpec(
            name=checked(name, f"table `{self._table.name}`: column"),
            type=odbc_source_type(type_code, size, precision, scale),
            nullable=bool(nullable) and name.upper() not in keys,
            source_name=name,
        )

    def _connect(self) -> Any:
        try:
            return self._database.connect()
        except pyodbc.Error as e:
            raise SourceError(
                f"source `{self._source.name}`: cannot connect: {e}; check its URL and server"
            ) from e

    def _execute(self, cursor: Any, sql: str, parameters: list[Any]) -> None:
        try:
            if parameters:
                cursor.execute(sql, parameters)
            else:
                cursor.execute(sql)
        except pyodbc.Error as e:
            raise SourceError(
                f"source `{self._source.name}`: reading `{self._table.source_table}` failed: {e}; "
                f"check `source_table` of table `{self._table.name}` and the source's `schema`"
            ) from e

    def _fetch(self, cursor: Any, size: int) -> list[Any]:
        try:
            return list(cursor.fetchmany(size))
        except pyodbc.Error as e:
            raise SourceError(
                f"source `{self._source.name}`: reading `{self._table.source_table}` broke "
                f"off: {e}; the next sync reads from the last watermark again"
            ) from e


def at_or_past(columns: Sequence[str], values: Sequence[Any]) -> tuple[str, list[Any]]:
    """A WHERE condition for "the watermark columns, compared in order, are at or past values".

    `(c1 > v1) OR (c1 = v1 AND c2 >= v2)`, led by `c1 >= v1` so that an index on the watermark
    columns serves the read; one `?` per value, in the order of the returned parameters.
    """
    if len(columns) == 1:
        return f"{columns[0]} >= ?", [values[0]]
    alternatives, parameters = [], [values[0]]
    for depth in range(len(columns)):
        last = ">=" if depth == len(columns) - 1 else ">"
        terms = [f"{columns[j]} = ?" for j in range(depth)] + [f"{columns[depth]} {last} ?"]
        alternatives.append(f"({' AND '.join(terms)})")
        parameters += [*values[:depth], values[depth]]
    return f"{columns[0]} >= ? AND ({' OR '.join(alternatives)})", parameters


def _earlier(value: datetime, margin: timedelta) -> datetime:
    earlier = value - margin
    return earlier.replace(microsecond=earlier.microsecond // 1000 * 1000)


def _odbc_value(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ";{}=") or text != text.strip():
        return "{" + text.replace("}", "}}") + "}"
    return text
