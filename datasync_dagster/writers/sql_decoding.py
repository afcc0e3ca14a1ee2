"""JDE decoding in the cache's own SQL, applied to raw rows as they leave the staging table.

`DecodePlan.apply` decodes in Python, value by value, and costs a decoded sync twice or three
times the undecoded one. A cache whose dialect has a `SqlDecoder` stages the raw rows instead,
as fast as an undecoded sync, and decodes them in the statement that reads the staging table.

Each rule has two pieces of SQL: its value, and a flag for the raw values the Python rule would
refuse. Before the merge, the writer looks for one flagged row and decodes it in Python, so the
error names the value as the Python path does; the value SQL then only ever sees good values.
A rule's SQL must give exactly what `DecodePlan.apply` gives, as the cache stores it; the tests
compare the two paths value by value on every dialect that has a decoder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from datasync_dagster.config import HhmmssTime, ImpliedDecimal, JulianDate, Timestamp, Trim
from datasync_dagster.fetchers.base import ColumnSpec
from datasync_dagster.fetchers.decoding import DecodedColumn, DecodePlan

# How the SQL names raw column `i` of the staging table, typed as the decoder expects.
TRawRef = Callable[[int], str]

# Raw values past these cannot be Julian dates (year 9999) or times (23:59:59); checked before
# a value is turned into an integer, so the conversion never overflows.
_JULIAN_END = 8_100_000
_HHMMSS_END = 240_000


class SqlDecoder(ABC):
    """The SQL of one cache dialect that decodes raw values as `DecodePlan.apply` does."""

    def can_decode(self, plan: DecodePlan) -> bool:
        """Whether every rule of `plan` reads raw columns of types this SQL handles: numbers
        for dates, times and amounts, strings for trimming. Others decode in Python."""
        return all(
            _fits(column.rule, [plan.raw_columns[i].type for i in column.raw])
            for column in plan.decoded
            if column.rule is not None
        )

    def values(self, plan: DecodePlan, ref: TRawRef) -> list[str]:
        """The SQL of each cache column's value, in the plan's order."""
        return [self._value(column, plan, ref) for column in plan.decoded]

    def refused(self, plan: DecodePlan, ref: TRawRef) -> str | None:
        """A condition true for a row with a raw value some rule refuses; None if none can."""
        flags = [self._refused(column, plan, ref) for column in plan.decoded]
        conditions = [f"{flag} = 1" for flag in flags if flag is not None]
        return " OR ".join(conditions) or None

    @abstractmethod
    def not_whole(self, value: str, type_: sa.types.TypeEngine[Any]) -> str | None:
        """A condition true when the non-NULL raw `value` is not a whole number; None when its
        type holds nothing else."""

    @abstractmethod
    def integer(self, value: str, type_: sa.types.TypeEngine[Any]) -> str:
        """A whole raw `value` of a small magnitude, as an SQL integer."""

    @abstractmethod
    def julian_date(self, number: str) -> str:
        """The date of a valid, non-zero Julian integer CYYDDD."""

    @abstractmethod
    def hhmmss_time(self, number: str) -> str:
        """The time of a valid integer HHMMSS."""

    @abstractmethod
    def scaled(self, value: str, decimals: int, column: ColumnSpec) -> str:
        """A whole raw `value` with `decimals` implied decimal places, as `column` holds it."""

    @abstractmethod
    def timestamp(self, day: str, clock: str) -> str:
        """One timestamp of a date and a time of day."""

    @property
    @abstractmethod
    def midnight(self) -> str:
        """The time 00:00:00, as `hhmmss_time` gives it."""

    def trim(self, value: str) -> str:
        # Both dialects' one-argument rtrim takes off spaces only, as `str.rstrip(" ")` does.
        return f"rtrim({value})"

    def mod(self, number: str, divisor: int) -> str:
        """The remainder of an integer division, as SQL."""
        return f"({number} % {divisor})"

    def _value(self, column: DecodedColumn, plan: DecodePlan, ref: TRawRef) -> str:
        rule, at = column.rule, column.raw[0]
        raw, type_ = ref(at), plan.raw_columns[at].type
        if rule is None:
            return raw
        if isinstance(rule, Trim):
            return self.trim(raw)
        if isinstance(rule, ImpliedDecimal):
            return self.scaled(raw, rule.decimals, column.column)
        number = self.integer(raw, type_)
        if isinstance(rule, JulianDate):
            return f"CASE WHEN {number} <> 0 THEN {self.julian_date(number)} END"
        if isinstance(rule, HhmmssTime):
            return f"CASE WHEN {raw} IS NOT NULL THEN {self.hhmmss_time(number)} END"
        assert isinstance(rule, Timestamp)
        clock_at = column.raw[1]
        clock = self.integer(ref(clock_at), plan.raw_columns[clock_at].type)
        time_of_day = (
            f"CASE WHEN {ref(clock_at)} IS NULL THEN {self.midnight} "
            f"ELSE {self.hhmmss_time(clock)} END"
        )
        joined = self.timestamp(self.julian_date(number), time_of_day)
        return f"CASE WHEN {number} <> 0 THEN {joined} END"

    def _refused(self, column: DecodedColumn, plan: DecodePlan, ref: TRawRef) -> str | None:
        """A flag, 1 for a refused raw value, 0 otherwise; None when nothing can be refused.

        The conditions are tried in order, so a value is compared before it is converted."""
        rule, at = column.rule, column.raw[0]
        if rule is None or isinstance(rule, Trim):
            return None
        raw, type_ = ref(at), plan.raw_columns[at].type
        if isinstance(rule, ImpliedDecimal):
            not_whole = self.not_whole(raw, type_)
            if not_whole is None:
                return None
            return f"CASE WHEN {raw} IS NULL THEN 0 WHEN {not_whole} THEN 1 ELSE 0 END"
        if isinstance(rule, JulianDate):
            return f"CASE WHEN {raw} IS NULL THEN 0 {self._julian_refused(raw, type_)} ELSE 0 END"
        if isinstance(rule, HhmmssTime):
            return f"CASE WHEN {raw} IS NULL THEN 0 {self._time_refused(raw, type_)} ELSE 0 END"
        clock_at = column.raw[1]
        clock, clock_type = ref(clock_at), plan.raw_columns[clock_at].type
        # Without a date there is no timestamp, and its time is not looked at.
        return (
            f"CASE WHEN {raw} IS NULL THEN 0 {self._julian_refused(raw, type_)} "
            f"WHEN {raw} = 0 OR {clock} IS NULL THEN 0 "
            f"{self._time_refused(clock, clock_type)} ELSE 0 END"
        )

    def _julian_refused(self, raw: str, type_: sa.types.TypeEngine[Any]) -> str:
        number = self.integer(raw, type_)
        year, day = f"(1900 + {number} / 1000)", self.mod(number, 1000)
        leap = (
            f"({self.mod(year, 4)} = 0 AND "
            f"({self.mod(year, 100)} <> 0 OR {self.mod(year, 400)} = 0))"
        )
        # Only refusals end the chain, but for 0 (no date): a timestamp's time is checked next.
        return (
            f"{self._whole_refused(raw, type_)}"
            f"WHEN {raw} < 0 OR {raw} >= {_JULIAN_END} THEN 1 "
            f"WHEN {number} = 0 THEN 0 "
            f"WHEN {day} < 1 OR {day} > 366 THEN 1 "
            f"WHEN {day} = 366 AND NOT {leap} THEN 1"
        )

    def _time_refused(self, raw: str, type_: sa.types.TypeEngine[Any]) -> str:
        number = self.integer(raw, type_)
        return (
            f"{self._whole_refused(raw, type_)}"
            f"WHEN {raw} < 0 OR {raw} >= {_HHMMSS_END} THEN 1 "
            f"WHEN {self.mod(f'{number} / 100', 100)} > 59 OR {self.mod(number, 100)} > 59 THEN 1"
        )

    def _whole_refused(self, raw: str, type_: sa.types.TypeEngine[Any]) -> str:
        not_whole = self.not_whole(raw, type_)
        return "" if not_whole is None else f"WHEN {not_whole} THEN 1 "


class PostgresDecoder(SqlDecoder):
    """PostgreSQL: dates by `make_date`, times by `make_time`, amounts as exact NUMERIC."""

    def not_whole(self, value: str, type_: sa.types.TypeEngine[Any]) -> str | None:
        if isinstance(type_, sa.Integer):
            return None
        # NUMERIC also holds NaN and infinities, which `trunc` leaves as they are.
        return (
            f"CASE WHEN {value} IN ('NaN', 'Infinity', '-Infinity') THEN true "
            f"ELSE {value} <> trunc({value}) END"
        )

    def integer(self, value: str, type_: sa.types.TypeEngine[Any]) -> str:
        return value if isinstance(type_, sa.Integer) else f"({value})::bigint"

    def mod(self, number: str, divisor: int) -> str:
        # `%` would be taken for a parameter by the driver.
        return f"mod({number}, {divisor})"

    def julian_date(self, number: str) -> str:
        day = self.mod(number, 1000)
        return f"(make_date((1900 + {number} / 1000)::int, 1, 1) + ({day} - 1)::int)"

    def hhmmss_time(self, number: str) -> str:
        minutes, seconds = self.mod(f"{number} / 100", 100), self.mod(number, 100)
        return f"make_time(({number} / 10000)::int, {minutes}::int, {seconds}::float8)"

    def scaled(self, value: str, decimals: int, column: ColumnSpec) -> str:
        # The product has exactly `decimals` places; the INSERT casts it to the column's type.
        unit = f" * 0.{'0' * (decimals - 1)}1" if decimals else ""
        return f"(({value})::numeric{unit})"

    def timestamp(self, day: str, clock: str) -> str:
        return f"({day} + {clock})"

    @property
    def midnight(self) -> str:
        return "TIME '00:00:00'"


class SqliteDecoder(SqlDecoder):
    """SQLite: values as SQLAlchemy stores them there: ISO text for dates and times, and
    64-bit floats for amounts (divided once, so rounded as Python's `float(Decimal)` is)."""

    def not_whole(self, value: str, type_: sa.types.TypeEngine[Any]) -> str | None:
        # Any column may hold any value in SQLite; only integers and whole, finite reals are
        # whole (`round` keeps reals past the 64-bit integers whole, where CAST would clip
        # them). SQLite keeps no NaN: `SqliteWriter` stages a non-finite decimal as text.
        return (
            f"NOT (typeof({value}) = 'integer' OR (typeof({value}) = 'real' "
            f"AND {value} = round({value}) AND abs({value}) < 1e308))"
        )

    def integer(self, value: str, type_: sa.types.TypeEngine[Any]) -> str:
        return f"CAST({value} AS INTEGER)"

    def julian_date(self, number: str) -> str:
        # The Julian day number of January 1st of the year, by integer arithmetic (the
        # Gregorian formula for month 1, day 1), then `date` of the day in the year: twice as
        # fast as making the date from text.
        y = f"(1900 + {number} / 1000 + 4799)"
        first_of_january = f"(365 * {y} + {y} / 4 - {y} / 100 + {y} / 400 - 31738)"
        return f"date({first_of_january} + {number} % 1000 - 1.5)"

    def hhmmss_time(self, number: str) -> str:
        seconds = f"({number} / 10000 * 3600 + {number} / 100 % 100 * 60 + {number} % 100)"
        return f"(time({seconds}, 'unixepoch') || '.000000')"

    def scaled(self, value: str, decimals: int, column: ColumnSpec) -> str:
        if not decimals:
            return f"CAST({value} AS REAL)"
        return f"CAST({value} AS REAL) / 1e{decimals}"

    def timestamp(self, day: str, clock: str) -> str:
        return f"({day} || ' ' || {clock})"

    @property
    def midnight(self) -> str:
        return "'00:00:00.000000'"


def _fits(rule: Any, types: list[sa.types.TypeEngine[Any]]) -> bool:
    if isinstance(rule, Trim):
        return all(isinstance(t, sa.String) for t in types)
    return all(
        isinstance(t, sa.Numeric | sa.Integer) and not isinstance(t, sa.Float) for t in types
    )
