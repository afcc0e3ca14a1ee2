"""How column types cross systems: source types as exact generic types, and those as SQL Server's.

Sources report types in their own terms (Oracle's NUMBER, an ODBC driver's description); the
fetchers turn them into SQLAlchemy's generic types, chosen so that values stay exact. The SQL
Server cache then turns each generic type into the T-SQL type that holds every value of it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, oracle

# The widest NVARCHAR with a length; beyond it SQL Server has only NVARCHAR(max).
NVARCHAR_LIMIT = 4000
VARBINARY_LIMIT = 8000
# A string key gets at most 450 characters (900 bytes), the widest index key SQL Server allows.
KEY_STRING_LENGTH = 450
DECIMAL_PRECISION_LIMIT = 38
# A NUMERIC of unknown precision (Oracle's bare NUMBER, PostgreSQL's numeric) lands in a
# DECIMAL(38, 10); the writer refuses values that would need more digits instead of rounding.
UNSIZED_DECIMAL = (38, 10)

_SMALLINT_DIGITS = 5
_INT_DIGITS = 9
_BIGINT_DIGITS = 18

TypeEngine = sa.types.TypeEngine[Any]


def mssql_type(type_: TypeEngine, *, key: bool = False, collation: str | None = None) -> TypeEngine:
    """The SQL Server type of a cache column holding values of the generic type `type_`.

    Args:
        type_: the column's type after decoding.
        key: the column is part of the primary key, so a string gets a bounded length.
        collation: the collation of string columns (the staging table uses the database's).
    """
    if isinstance(type_, sa.Boolean):
        return mssql.BIT()
    if isinstance(type_, sa.Integer):
        return _mssql_integer(type_)
    if isinstance(type_, sa.Float):
        return mssql.FLOAT(53)
    if isinstance(type_, sa.Numeric):
        return mssql.DECIMAL(*decimal_shape(type_))
    if isinstance(type_, sa.DateTime):
        return mssql.DATETIMEOFFSET(7) if type_.timezone else mssql.DATETIME2(7)
    if isinstance(type_, sa.Date):
        return mssql.DATE()
    if isinstance(type_, sa.Time):
        return mssql.TIME(7)
    if isinstance(type_, sa.LargeBinary):
        length = type_.length
        return mssql.VARBINARY(length if length and length <= VARBINARY_LIMIT else "max")
    if isinstance(type_, sa.Uuid):
        return mssql.UNIQUEIDENTIFIER()
    length = getattr(type_, "length", None) if isinstance(type_, sa.String) else None
    return _nvarchar(length, key=key, collation=collation)


def decimal_shape(type_: sa.Numeric[Any]) -> tuple[int, int]:
    """The (precision, scale) of the DECIMAL that holds a generic NUMERIC."""
    precision, scale = type_.precision, type_.scale
    if precision is None:
        return UNSIZED_DECIMAL if scale is None else (DECIMAL_PRECISION_LIMIT, max(scale, 0))
    scale = scale or 0
    if scale < 0:
        return min(DECIMAL_PRECISION_LIMIT, precision - scale), 0
    precision = min(DECIMAL_PRECISION_LIMIT, max(precision, scale, 1))
    return precision, min(scale, precision)


def oracle_source_type(type_: TypeEngine, *, integral: bool = False) -> TypeEngine:
    """The generic type an Oracle column is read as: NUMBER exactly, never as a float.

    NUMBER(p, 0) reads as an integer, NUMBER(p, s) as a decimal of that shape, and a bare
    NUMBER as a decimal too, unless `integral` says the column holds integers by definition
    (a JDE Julian date, HHMMSS time or implied-decimal amount), which then reads as an int.
    FLOAT is Oracle's decimal floating point and reads as a decimal; only BINARY_FLOAT and
    BINARY_DOUBLE are binary and read as floats.
    """
    if isinstance(type_, (oracle.BINARY_FLOAT, oracle.BINARY_DOUBLE)):
        return sa.Float()
    if isinstance(type_, oracle.FLOAT):
        return sa.Numeric(asdecimal=True)
    if not isinstance(type_, (sa.Numeric, sa.Integer)):
        return type_
    precision = getattr(type_, "precision", None)
    scale = getattr(type_, "scale", None)
    if isinstance(type_, sa.Integer) and not isinstance(type_, oracle.NUMBER):
        scale = 0
    if scale is not None and scale <= 0:
        return _integer(None if precision is None else precision - scale)
    if scale is None and precision is None:
        return sa.BigInteger() if integral else sa.Numeric(asdecimal=True)
    return sa.Numeric(precision, scale, asdecimal=True)


def odbc_source_type(
    type_code: Any, size: int | None, precision: int | None, scale: int | None
) -> TypeEngine:
    """The generic type of a column as an ODBC driver describes it through pyodbc.

    pyodbc names each column's type by the Python class of its values, and its size as the
    ODBC column size: characters for strings, digits for numbers.
    """
    size = size or 0
    if type_code is bool:
        return sa.Boolean()
    if type_code is int:
        return _odbc_integer(size)
    if type_code is Decimal:
        return sa.Numeric(precision or None, scale, asdecimal=True)
    if type_code is float:
        return sa.Float()
    kinds: dict[Any, TypeEngine] = {
        dt.datetime: sa.DateTime(),
        dt.date: sa.Date(),
        dt.time: sa.Time(),
        uuid.UUID: sa.Uuid(),
    }
    if type_code in kinds:
        return kinds[type_code]
    if type_code in (bytes, bytearray):
        return sa.LargeBinary(size if 0 < size <= VARBINARY_LIMIT else None)
    if 0 < size <= VARBINARY_LIMIT:
        return sa.String(size)
    return sa.Text()


def _integer(digits: int | None) -> TypeEngine:
    if digits is not None and digits <= _INT_DIGITS:
        return sa.Integer()
    if digits is None or digits <= _BIGINT_DIGITS:
        return sa.BigInteger()
    return sa.Numeric(min(digits, DECIMAL_PRECISION_LIMIT), 0, asdecimal=True)


def _odbc_integer(digits: int) -> TypeEngine:
    # ODBC sizes an integer column by the digits of its range: 3, 5, 10 or 19 (20 unsigned).
    if 0 < digits <= _SMALLINT_DIGITS:
        return sa.SmallInteger()
    if 0 < digits <= _INT_DIGITS + 1:
        return sa.Integer()
    return sa.BigInteger()


def _mssql_integer(type_: sa.Integer) -> TypeEngine:
    if isinstance(type_, sa.BigInteger):
        return mssql.BIGINT()
    if isinstance(type_, sa.SmallInteger):
        return mssql.SMALLINT()
    return mssql.INTEGER()


def _nvarchar(length: int | None, *, key: bool, collation: str | None) -> TypeEngine:
    if key and (length is None or length > KEY_STRING_LENGTH):
        length = KEY_STRING_LENGTH
    if length is None or length > NVARCHAR_LIMIT:
        return mssql.NVARCHAR(None, collation=collation)
    return mssql.NVARCHAR(length, collation=collation)
