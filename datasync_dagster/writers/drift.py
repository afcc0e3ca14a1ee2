"""Schema drift: an existing cache table checked against the columns and key a sync produces.

The configuration and the source change under a cache table that stays: a decode rule added
turns an integer column into a date, a column is renamed at the source, `key_columns` change.
`check_cache_table` runs in the merge transaction before anything is written, and turns each
such change into an error that names the column and the fix, where the database would fail
with an error of its own terms or, worse, carry on.

Types are compared by family (integer, decimal, date, ...), never by length or precision, and
from what each dialect reflects: SQLite the type as it was declared, PostgreSQL and SQL Server
their own names (TIMESTAMP WITHOUT TIME ZONE, DATETIME2), all subclasses of the generic types.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
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
            changed family, or a NOT NULL column is no longer synced.
    """
    target, schema = staging.target, writer.schema
    cached = inspector.get_columns(target, schema)
    key = inspector.get_pk_constraint(target, schema)["constrained_columns"]
    synced = {name.upper() for name in staging.column_names}

    _check_key(writer, staging, key)
    _check_types(writer, staging, cached, key)
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
    writer: CacheWriter,
    staging: StagingTable,
    cached: Sequence[ReflectedColumn],
    key: Sequence[str],
) -> None:
    by_name = {c["name"].upper(): c for c in cached}
    changed: list[tuple[str, str, str]] = []
    for column in staging.columns:
        present = by_name.get(column.name.upper())
        new = writer.cache_type(column.type)
        if present is not None and _conflict(present["type"], new, writer.dialect):
            old_sql = present["type"].compile(dialect=writer.dialect)
            changed.append((present["name"], old_sql, new.compile(dialect=writer.dialect)))
    if not changed:
        return

    details = "; ".join(
        f"column `{name}` is {old} in the cache but {new} now" for name, old, new in changed
    )
    if _upper(name for name, _, _ in changed) & _upper(key):
        fix = f"run `{_drop_table(writer, staging)}` and a Mass sync to rebuild the table"
    else:
        drops = "; ".join(_drop_column(writer, staging, name) for name, _, _ in changed)
        fix = (
            f"run `{drops}` and a Mass sync, which adds the column back with its new type "
            "and fills it"
        )
    raise CacheTableDrift(
        f"cache table `{staging.target}` cannot take the values the sync now produces: "
        f"{details}; {fix}; or revert the decode rule or source change behind it"
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


def _required(column: ReflectedColumn, key: Sequence[str]) -> bool:
    """A column no row can be inserted without: NOT NULL, no default, not part of the key."""
    if column["name"].upper() in _upper(key):
        return False
    return not column["nullable"] and column.get("default") is None


def _drop_table(writer: CacheWriter, staging: StagingTable) -> str:
    return f"DROP TABLE {writer.table_name(staging.target)}"


def _drop_column(writer: CacheWriter, staging: StagingTable, name: str) -> str:
    return f"ALTER TABLE {writer.table_name(staging.target)} DROP COLUMN {writer.q(name)}"


def _upper(names: Iterable[str]) -> set[str]:
    return {name.upper() for name in names}
