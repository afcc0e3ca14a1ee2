"""Validation and quoting of the table and column names that come from the configuration."""

from __future__ import annotations

import re

from sqlalchemy.engine import Dialect

from datasync_dagster.errors import InvalidIdentifier

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$#]{0,127}$")


def checked(name: str, what: str) -> str:
    """Return `name` if it is a plain SQL identifier, or raise naming `what` it is."""
    if not _IDENTIFIER.match(name):
        raise InvalidIdentifier(
            f"{what} `{name}` is not a plain SQL identifier; use letters, digits, `_`, `$` "
            "and `#`, starting with a letter or `_`"
        )
    return name


def quote(dialect: Dialect, name: str) -> str:
    """Quote a checked identifier for `dialect`, always, so that its case is kept."""
    return dialect.identifier_preparer.quote_identifier(checked(name, "identifier"))


def qualified(dialect: Dialect, name: str, schema: str | None) -> str:
    """A quoted table name, with its quoted schema in front when there is one."""
    if schema is None:
        return quote(dialect, name)
    return f"{quote(dialect, schema)}.{quote(dialect, name)}"
