"""JDE on Oracle: python-oracledb in thin mode, large fetches, and NUMBER read exactly.

JDE keeps its business data in a schema of its own (PRODDTA, CRPDTA, ...): the source's
`schema`. Its string columns are NCHAR padded with spaces to their width, and since Oracle
treats the empty string as NULL, JDE writes a blank value as one space. The fetcher trims the
padding in Python (the source's `trim_strings`, on for `jde`), so a blank value arrives as an
empty string, never as NULL, exactly as from a JDE-shaped table on any other database; a real
NULL stays NULL. Trimming in SQL instead would turn every blank into NULL (Oracle's `RTRIM(' ')`
is NULL) and break the NOT NULL keys JDE has.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from datasync_dagster.config import DataSourceConfig, HhmmssTime, ImpliedDecimal, JulianDate
from datasync_dagster.fetchers.base import ColumnSpec
from datasync_dagster.fetchers.sql import SqlFetcher
from datasync_dagster.types import oracle_source_type

# Decoding rules whose source column holds an integer by definition.
_INTEGER_RULES = (JulianDate, HhmmssTime, ImpliedDecimal)


def create_oracle_engine(source: DataSourceConfig, **kwargs: Any) -> sa.Engine:
    """An engine for an Oracle source: thin mode, `fetch_size` rows per round trip.

    SQLAlchemy's oracledb dialect uses thin mode unless told `thick_mode`, so no Oracle client
    libraries are needed. `arraysize` sets the rows of each fetch, and `prefetchrows` those of
    the first round trip, which otherwise brings two rows only.
    """
    engine = sa.create_engine(
        source.resolve_url(), arraysize=source.fetch_size, pool_pre_ping=True, **kwargs
    )
    sa.event.listen(engine, "before_cursor_execute", prefetch_rows(source.fetch_size))
    return engine


def prefetch_rows(rows: int) -> Any:
    """A `before_cursor_execute` listener that makes the first fetch as large as the others."""

    def listener(_conn: Any, cursor: Any, *_args: Any) -> None:
        cursor.prefetchrows = rows

    return listener


class OracleFetcher(SqlFetcher):
    """Reads one table from Oracle, with each NUMBER column typed so that it reads exactly.

    SQLAlchemy reads a column by the type the SELECT gives it: a bare NUMBER reflected as-is
    would read as floats. Typed by `oracle_source_type`, NUMBER(p, 0) reads as int, other
    NUMBERs as Decimal, and a bare NUMBER that a JDE rule decodes (Julian dates, HHMMSS times,
    implied decimals) as int, so that decoding works on plain integers.
    """

    def _column_spec(self, column: dict[str, Any], keys: set[str]) -> ColumnSpec:
        integral = self._decoded_as_integer(column["name"])
        exact = {**column, "type": oracle_source_type(column["type"], integral=integral)}
        return super()._column_spec(exact, keys)

    def _decoded_as_integer(self, name: str) -> bool:
        rules = {column.upper(): rule for column, rule in self._table.decode.items()}
        return isinstance(rules.get(name.upper()), _INTEGER_RULES)
