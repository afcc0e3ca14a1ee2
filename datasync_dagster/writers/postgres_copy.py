"""Binary COPY into PostgreSQL: the types each column travels as, read from the catalog.

Binary COPY spares the client the formatting of every value as text, but psycopg's binary
dumpers of int2, int4 and float4 wrap a value out of their range instead of refusing it, and
its binary NUMERIC dumper costs several times the text form. So staging tables hold integers
as BIGINT and floats as DOUBLE PRECISION, and decimals as text (VARCHAR), read back as NUMERIC
through a view; any other table with a narrow or unknown type is written as text, where the
server checks every value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq
from psycopg.adapt import Dumper

log = logging.getLogger(__name__)

TEXT_OID, VARCHAR_OID = 25, 1043

# Types whose binary form psycopg writes exactly, by oid; CHAR and VARCHAR travel as text.
_BINARY_AS = {
    16: 16,  # boolean
    17: 17,  # bytea
    20: 20,  # bigint
    25: TEXT_OID,  # text
    701: 701,  # double precision
    1042: TEXT_OID,  # char(n)
    1043: TEXT_OID,  # varchar(n)
    1082: 1082,  # date
    1083: 1083,  # time
    1114: 1114,  # timestamp
    2950: 2950,  # uuid
}


class DecimalAsText(Dumper):
    """Writes a decimal as its text into a VARCHAR column of a binary COPY."""

    format = pq.Format.BINARY
    oid = VARCHAR_OID

    def dump(self, obj: Any) -> bytes:
        return str(obj).encode()


def staged_as_text(type_: sa.types.TypeEngine[Any]) -> bool:
    """Whether a cache column of this type is staged as text: exact decimals are."""
    return isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float)


def wide(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The type a staging column gets for a cache column of type `type_`."""
    if isinstance(type_, sa.Integer):
        return sa.BigInteger()
    if isinstance(type_, sa.Float) and not isinstance(type_, sa.Double):
        return sa.Double()
    if staged_as_text(type_):
        return sa.String()
    return type_


def binary_types(
    cursor: psycopg.Cursor[Any], into: str, columns: Sequence[str], as_text: Sequence[bool]
) -> list[int] | None:
    """The oids to COPY `columns` of the table `into` (quoted) with in binary, or None when one
    of them has no exact binary form. Columns flagged in `as_text` take `DecimalAsText`."""
    rows = cursor.execute(
        "SELECT attname, atttypid FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (into,),
    ).fetchall()
    oids = {name: oid for name, oid in rows}
    types = [
        VARCHAR_OID if text else _BINARY_AS.get(oids.get(name, 0))
        for name, text in zip(columns, as_text, strict=True)
    ]
    if None in types:
        log.info("writing %s as text: a column has no exact binary form", into)
        return None
    return [oid for oid in types if oid is not None]


def copy_binary(cursor: psycopg.Cursor[Any], statement: str, types: list[int], batch: Any) -> None:
    """COPY one batch in binary; raises TypeError, ValueError or OverflowError when a value
    has no binary form of its column's type."""
    cursor.adapters.register_dumper(None, DecimalAsText)
    with cursor.copy(f"{statement} (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in batch:
            copy.write_row(row)


def copy_text(cursor: psycopg.Cursor[Any], statement: str, batch: Any) -> None:
    """COPY one batch as text, which the server parses and checks."""
    with cursor.copy(statement) as copy:
        for row in batch:
            copy.write_row(row)
