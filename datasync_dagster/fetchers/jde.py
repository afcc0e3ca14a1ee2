"""The JDE encodings: Julian CYYDDD dates, HHMMSS times and amounts with implied decimals."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from datasync_dagster.errors import DecodeError

_MIDNIGHT = time(0, 0, 0)
_FIRST_YEAR = 1900
_LAST_YEAR = 9999


def julian_to_date(value: int | None) -> date | None:
    """Decode a JDE Julian date CYYDDD: 124060 is 2024-02-29, 99365 is 1999-12-31, 0 is none."""
    if value is None or value == 0:
        return None
    number = _whole(value, "a Julian date CYYDDD")
    year, day = _FIRST_YEAR + number // 1000, number % 1000
    if number < 0 or year > _LAST_YEAR:
        raise ValueError(f"`{value}` is not a Julian date CYYDDD")
    days_in_year = 366 if calendar.isleap(year) else 365
    if not 1 <= day <= days_in_year:
        raise ValueError(f"`{value}` is not a Julian date CYYDDD (day {day} of {year})")
    return date(year, 1, 1) + timedelta(days=day - 1)


def date_to_julian(day: date) -> int:
    """Encode a date as a JDE Julian date CYYDDD, the inverse of `julian_to_date`: 2024-02-29
    is 124060; a date before 1900 has no CYYDDD."""
    if day.year < _FIRST_YEAR:
        raise ValueError(f"`{day}` is before {_FIRST_YEAR} and has no Julian date CYYDDD")
    return (day.year - _FIRST_YEAR) * 1000 + day.timetuple().tm_yday


def hhmmss_to_time(value: int | None) -> time | None:
    """Decode a JDE time of day HHMMSS: 143005 is 14:30:05, 0 is midnight."""
    if value is None:
        return None
    number = _whole(value, "a time HHMMSS")
    hours, minutes, seconds = number // 10000, number // 100 % 100, number % 100
    if number < 0 or hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"`{value}` is not a time HHMMSS")
    return time(hours, minutes, seconds)


def implied_decimal(value: Any, decimals: int) -> Decimal | None:
    """Scale an integer amount with `decimals` implied places to an exact decimal."""
    if value is None:
        return None
    if isinstance(value, float):
        value = _whole(value, "an amount with implied decimals")
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"`{value!r}` is not an amount with implied decimals") from None
    if not amount.is_finite():
        raise ValueError(f"`{value}` is not an amount with implied decimals")
    if amount != amount.to_integral_value():
        raise ValueError(f"`{value}` has a fraction, but implied decimals need an integer")
    # Moving the exponent is exact; `scaleb` would round to the context's 28 digits.
    sign, digits, exponent = amount.as_tuple()
    return Decimal((sign, digits, int(exponent) - decimals))


def _whole(value: Any, what: str) -> int:
    """`value` as an int, if it is a whole number of any numeric type; the error quotes it."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"`{value!r}` is not {what}") from None
    if number != value:
        raise ValueError(f"`{value}` is not {what}: it is not a whole number")
    return number


def joined_timestamp(julian: int | None, hhmmss: int | None) -> datetime | None:
    """One timestamp from a Julian date and an HHMMSS time; no date gives no timestamp."""
    day = julian_to_date(julian)
    if day is None:
        return None
    return datetime.combine(day, hhmmss_to_time(hhmmss) or _MIDNIGHT)


class MemoDecoder(dict[Any, Any]):
    """Decodes a column value by value, computing each distinct value once.

    Dates and times repeat heavily in JDE tables, so a lookup replaces most of the arithmetic;
    a fresh memo per batch keeps memory bounded by the batch size.
    """

    def __init__(self, decode: Callable[[Any], Any], column: str) -> None:
        super().__init__()
        self._decode = decode
        self._column = column

    def __missing__(self, value: Any) -> Any:
        try:
            decoded = self._decode(value)
        except (ValueError, TypeError, ArithmeticError) as e:
            raise DecodeError(
                f"column `{self._column}`: {e}; fix the source row or the column's `decode` rule"
            ) from e
        self[value] = decoded
        return decoded
