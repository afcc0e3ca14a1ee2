"""Schema drift: an existing cache table checked against the columns and key a sync produces.

The configuration and the source change under a cache table that stays: a decode rule added
turns an integer column into a date, a column is renamed at the source, `key_columns` change.
`check_cache_table` runs in the merge transaction before anything is written, and turns each
such change into an error that names the column and the fix, where the database would fail
with an error of its own terms or, worse, carry on.

Types are compared by family (integer, decimal, date, ...) from what each dialect reflects:
SQLite the type as it was declared, PostgreSQL and SQL Server their own names (TIMESTAMP
WITHOUT TIME ZONE, DATETIME2), all subclasses of the generic types. Where the database holds
to a declared size, sizes are compared too: a decimal's scale must stay as the cache has it
(else values are rounded to it without a word), and neither a decimal's precision nor a
string's length may grow past the cache's (else the merge fails on the first value too big).
SQLite keeps decimals as floats and ignores declared sizes, so there sizes are never compared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import ReflectedColumn

from datasync_dagster.errors import CacheTableDrift

if TYPE_CHECKING:
    from datasync_dagster.writers.base import CacheWriter, StagingTable

log = logging.getLogger(__name__)

TypeEngine = sa.types.TypeEngine[Any]
Family = Literal[
    "boolean", "integer", "decimal", "float", "string", "uuid", "date", "time", "datetime", "binary"
]

# In order: the first class a type is an instance of gives its family. A type of none of them
# (an interval, JSON, SQL Server's MONEY, a column SQLite declares without a type) has no
# family, and is never reported.
_FAMILIES: list[tuple[type[Any] | tuple[type[Any], ...], Family]] = [
    (sa.Boolean, "boolean"),
    (sa.Integer, "integer"),
    (sa.Float, "float"),
    (sa.Numeric, "decimal"),
    (sa.String, "string"),
    (sa.Uuid, "uuid"),
    (sa.DateTime, "datetime"),
    (sa.Date, "date"),
    (sa.Time, "time"),
    ((sa.LargeBinary, sa.BINARY, sa.VARBINARY), "binary"),
]

# (cache family, new family) pairs that every cache database converts on its own, without
# losing a value's magnitude: an integer goes into a decimal or a float column, a decimal into
# a float column.
_WIDENING: set[tuple[Family, Family]] = {
    ("decimal", "integer"),
    ("float", "integer"),
    ("float", "decimal"),
}

# The dialects whose cache columns take values of any size, whatever size they declare.
_SIZELESS_DIALECTS = {"sqlite"}


@dataclass(frozen=True)
class _Column:
    """A column of the existing cache table, with the type a new cache table would give it."""

    cached: ReflectedColumn
    new: TypeEngine

    @property
    def name(self) -> str:
        return self.cached["name"]

    @property
    def old(self) -> TypeEngine:
        return self.cached["type"]


def family(type_: TypeEngine, dialect: sa.Dialect | None = None) -> Family | None:
    """The family of a column type; None for a type of no family.

    With `dialect`, a generic UUID that the dialect stores as CHAR(32) counts as a string, as
    the cache table then reflects it.
    """
    if type(type_) is sa.Uuid and dialect is not None and not dialect.supports_native_uuid:
        return "string"
    for kind, name in _FAMILIES:
        if isinstance(type_, kind):
            return name
    return None


def check_cache_table(writer: CacheWriter, inspector: sa.Inspector, staging: StagingTable) -> None:
    """Refuse a sync the existing cache table no longer fits; warn of columns left behind.

    Args:
        writer: the cache's writer, for its dialect, schema and cache types.
        inspector: an inspector on the connection of the merge transaction.
        staging: the sync's staging table; its target is the existing cache table.

    Raises:
        CacheTableDrift: the cache table's primary key is not `key_columns`, a column's type
            changed family, a decimal column's scale changed, a decimal or string column is
            narrower than the values now synced into it, or a NOT NULL column is no longer
            synced.
    """
    target, schema = staging.target, writer.schema
    cached = inspector.get_columns(target, schema)
    key = inspector.get_pk_constraint(target, schema)["constrained_columns"]
    synced = {name.upper() for name in staging.column_names}
    columns = _kept_columns(writer, staging, cached)

    _check_key(writer, staging, key)
    _check_types(writer, staging, columns, key)
    if writer.dialect.name not in _SIZELESS_DIALECTS:
        _check_scales(writer, staging, columns, key)
        _check_widths(writer, staging, columns, key)
    left = [c for c in cached if c["name"].upper() not in synced]
    _check_not_null(writer, staging, [c for c in left if _required(c, key)])
    for column in left:
        log.warning(
            "cache table %s keeps column %s, which the sync no longer produces: its rows keep "
            "their old values and new rows get NULL (or its default) there; if it is not "
            "wanted any more, run `%s`",
            target,
            column["name"],
            _drop_column(writer, staging, column["name"]),
        )


def _kept_columns(
    writer: CacheWriter, staging: StagingTable, cached: Sequence[ReflectedColumn]
) -> list[_Column]:
    """The synced columns the cache table already has, in the order of the sync."""
    by_name = {c["name"].upper(): c for c in cached}
    return [
        _Column(by_name[column.name.upper()], column.type)
        for column in writer.cache_table(staging).columns
        if column.name.upper() in by_name
    ]


def _check_key(writer: CacheWriter, staging: StagingTable, key: Sequence[str]) -> None:
    # A cache table without a primary key is left to the writer: PostgreSQL keys an empty one.
    if not key or _upper(key) == _upper(staging.key_columns):
        return
    raise CacheTableDrift(
        f"cache table `{staging.target}` is keyed on ({', '.join(key)}), but `key_columns` are "
        f"({', '.join(staging.key_columns)}); to key it anew, run "
        f"`{_drop_table(writer, staging)}` and a Mass sync to rebuild it, or set `key_columns` "
        f"back to {list(key)}"
    )


def _check_types(
    writer: CacheWriter, staging: StagingTable, columns: Sequence[_Column], key: Sequence[str]
) -> None:
    changed = [c for c in columns if _conflict(c.old, c.new, writer.dialect)]
    if not changed:
        return
    raise CacheTableDrift(
        f"cache table `{staging.target}` cannot take the values the sync now produces: "
        f"{_details(writer, changed)}; {_rebuild(writer, staging, changed, key)}; or revert the "
        "decode rule or source change behind it"
    )


def _check_scales(
    writer: CacheWriter, staging: StagingTable, columns: Sequence[_Column], key: Sequence[str]
) -> None:
    rescaled = [c for c in columns if _rescaled(c)]
    if not rescaled:
        return
    raise CacheTableDrift(
        f"cache table `{staging.target}` would round the values the sync now produces to its "
        f"own number of decimals: {_details(writer, rescaled)}; "
        f"{_rebuild(writer, staging, rescaled, key)}; or set `decimals` of the decode rule "
        "back to the cache's scale, or revert the source change behind it"
    )


def _check_widths(
    writer: CacheWriter, staging: StagingTable, columns: Sequence[_Column], key: Sequence[str]
) -> None:
    narrow = [c for c in columns if _overflows(c) or _truncates(c)]
    if not narrow:
        return
    # SQL Server cannot resize a column of the primary key in place.
    if writer.dialect.name == "mssql" and _upper(c.name for c in narrow) & _upper(key):
        fix = _rebuild(writer, staging, narrow, key)
    else:
        widen = "; ".join(_widen_column(writer, staging, c) for c in narrow)
        fix = f"run `{widen}`, which widens in place and keeps the values"
    raise CacheTableDrift(
        f"cache table `{staging.target}` is too narrow for the values the sync now produces, "
        f"and the merge would fail on the first that does not fit: {_details(writer, narrow)}; "
        f"{fix}; or revert the source change behind it"
    )


def _check_not_null(
    writer: CacheWriter, staging: StagingTable, required: Sequence[ReflectedColumn]
) -> None:
    if not required:
        return
    names = [c["name"] for c in required]
    drops = "; ".join(_drop_column(writer, staging, name) for name in names)
    raise CacheTableDrift(
        f"cache table `{staging.target}` has NOT NULL columns {names} that the sync no longer "
        "produces (renamed or dropped at the source, or left out of `columns`), so no new row "
        f"could go in; run `{drops}`, or drop the table (`{_drop_table(writer, staging)}`) and "
        "run a Mass sync to rebuild it, or sync the columns again"
    )


def _conflict(cached: TypeEngine, new: TypeEngine, dialect: sa.Dialect) -> bool:
    old_family, new_family = family(cached), family(new, dialect)
    if old_family is None or new_family is None or old_family == new_family:
        return False
    return (old_family, new_family) not in _WIDENING


def _rescaled(column: _Column) -> bool:
    """Both exact decimals, the cache's of a declared scale, and the new one of another."""
    old, new = _decimal_shape(column.old), _decimal_shape(column.new)
    if old is None or new is None:
        return False
    return old[1] is not None and new[1] != old[1]


def _overflows(column: _Column) -> bool:
    """Both exact decimals, and the new one of more digits than the cache's declared precision."""
    old, new = _decimal_shape(column.old), _decimal_shape(column.new)
    if old is None or new is None or old[0] is None:
        return False
    return new[0] is None or new[0] > old[0]


def _truncates(column: _Column) -> bool:
    """Both strings, and the new one longer than the cache's declared length, or of any length.

    An enum is left out: its length is that of its longest value, not a limit.
    """
    old, new = column.old, column.new
    if not isinstance(old, sa.String) or not isinstance(new, sa.String):
        return False
    if isinstance(old, sa.Enum) or isinstance(new, sa.Enum) or old.length is None:
        return False
    return new.length is None or new.length > old.length


def _decimal_shape(type_: TypeEngine) -> tuple[int | None, int | None] | None:
    """The (precision, scale) of an exact decimal, (None, None) for one of any size; None for a
    type of another family. A precision without a scale declares a scale of 0."""
    if family(type_) != "decimal" or not isinstance(type_, sa.Numeric):
        return None
    if type_.precision is None:
        return None, None
    return type_.precision, type_.scale or 0


def _details(writer: CacheWriter, columns: Sequence[_Column]) -> str:
    return "; ".join(
        f"column `{c.name}` is {_sql(writer, c.old)} in the cache but {_sql(writer, c.new)} now"
        for c in columns
    )


def _rebuild(
    writer: CacheWriter, staging: StagingTable, columns: Sequence[_Column], key: Sequence[str]
) -> str:
    """The fix for columns whose values must be synced anew: drop them, or the table for a key
    column, and run a Mass sync."""
    if _upper(c.name for c in columns) & _upper(key):
        return f"run `{_drop_table(writer, staging)}` and a Mass sync to rebuild the table"
    drops = "; ".join(_drop_column(writer, staging, c.name) for c in columns)
    return (
        f"run `{drops}` and a Mass sync, which adds the column back with its new type and fills it"
    )


def _required(column: ReflectedColumn, key: Sequence[str]) -> bool:
    """A column no row can be inserted without: NOT NULL, no default, not part of the key."""
    if column["name"].upper() in _upper(key):
        return False
    return not column["nullable"] and column.get("default") is None


def _drop_table(writer: CacheWriter, staging: StagingTable) -> str:
    return f"DROP TABLE {writer.table_name(staging.target)}"


def _drop_column(writer: CacheWriter, staging: StagingTable, name: str) -> str:
    return f"ALTER TABLE {writer.table_name(staging.target)} DROP COLUMN {writer.q(name)}"


def _widen_column(writer: CacheWriter, staging: StagingTable, column: _Column) -> str:
    """The statement that gives a cache column its new type in place.

    SQL Server restates the whole column, so a NOT NULL column must say NOT NULL again or it
    turns nullable; PostgreSQL changes the type alone.
    """
    table, name = writer.table_name(staging.target), writer.q(column.name)
    type_sql = _sql(writer, column.new)
    if writer.dialect.name == "mssql":
        not_null = "" if column.cached["nullable"] else " NOT NULL"
        return f"ALTER TABLE {table} ALTER COLUMN {name} {type_sql}{not_null}"
    return f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {type_sql}"


def _sql(writer: CacheWriter, type_: TypeEngine) -> str:
    return str(type_.compile(dialect=writer.dialect))


def _upper(names: Iterable[str]) -> set[str]:
    return {name.upper() for name in names}
