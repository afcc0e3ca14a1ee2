"""The JDE-shaped F4211 source of the benchmark, built and changed on the server by SQL alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

TABLE = "F4211"
KEYS = ("SDKCOO", "SDDOCO", "SDDCTO", "SDLNID")
WATERMARK = ("SDUPMJ", "SDTDAY")
FIRST_ORDER = 100_000
LINES_PER_ORDER = 5

# The row number `i` of a row, recovered from its key (order number and line number).
ROW_NUMBER = f'("SDDOCO" - {FIRST_ORDER}) * {LINES_PER_ORDER} + "SDLNID" / 1000 - 1'


def _hhmmss(seconds: str) -> str:
    """SQL turning a number of seconds after midnight into the JDE time HHMMSS."""
    return f"({seconds}) / 3600 * 10000 + ({seconds}) / 60 % 60 * 100 + ({seconds}) % 60"


# The 20 columns as JDE keeps them: padded CHAR, integers for Julian dates (CYYDDD), times
# (HHMMSS) and amounts with implied decimals. Each comes with the SQL that fills it from the
# row number `i` and the order number `doco` of a generate_series, computed on the server.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("SDKCOO", "char(5)", "lpad((doco % 3 + 1)::text, 5, '0')"),
    ("SDDOCO", "integer", "doco"),
    ("SDDCTO", "char(2)", "(ARRAY['SO', 'SQ', 'CO'])[doco % 3 + 1]"),
    ("SDLNID", "integer", f"(i % {LINES_PER_ORDER} + 1) * 1000"),
    ("SDMCU", "char(12)", "lpad('M' || (doco % 40 + 10), 12)"),
    ("SDAN8", "integer", "1000 + doco % 3000"),
    ("SDITM", "integer", "60000 + i % 2000"),
    ("SDLITM", "char(25)", "'ITEM-' || (60000 + i % 2000)"),
    ("SDDSC1", "char(30)", "'Article number ' || (60000 + i % 2000)"),
    ("SDTRDJ", "integer", "123001 + doco % 365"),
    ("SDDRQJ", "integer", "CASE WHEN i % 3 = 0 THEN 0 ELSE 123001 + (doco + 9) % 365 END"),
    ("SDUOM", "char(2)", "(ARRAY['EA', 'BX', 'KG'])[i % 3 + 1]"),
    ("SDUORG", "integer", "(i % 97 + 1) * 100"),
    ("SDUPRC", "integer", "(i * 7919) % 999999 + 1"),
    ("SDAEXP", "bigint", "(i % 97 + 1) * ((i * 7919) % 999999 + 1) / 100 * (1 - i % 50 / 49 * 2)"),
    ("SDLTTR", "char(3)", "(ARRAY['520', '560', '580'])[i % 3 + 1]"),
    ("SDNXTR", "char(3)", "(ARRAY['540', '580', '999'])[i % 3 + 1]"),
    ("SDUSER", "char(10)", "'JDE' || (i % 7)"),
    ("SDUPMJ", "integer", "123001 + i % 365"),
    ("SDTDAY", "integer", _hhmmss("(i * 7919) % 86400")),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)


@dataclass
class Source:
    """The source database and what the changes so far did to its F4211."""

    dsn: str
    rows: int
    next_row: int = 0
    rounds: int = 0
    changed: list[str] = field(default_factory=list)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


def table_ddl() -> sql.Composed:
    """The CREATE TABLE of F4211, without its keys (they are built after the rows)."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(name), sql.SQL(type_))
        for name, type_, _ in COLUMNS
    )
    return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(TABLE), columns)


def _generated_rows(first: int, count: int) -> sql.Composed:
    """A SELECT of `count` generated rows starting at row number `first`."""
    values = sql.SQL(", ").join(sql.SQL(expression) for _, _, expression in COLUMNS)
    return sql.SQL(
        "SELECT {} FROM (SELECT i, {} + i / {} AS doco "
        "FROM generate_series({}::bigint, {}) AS i) AS g"
    ).format(
        values,
        sql.Literal(FIRST_ORDER),
        sql.Literal(LINES_PER_ORDER),
        sql.Literal(first),
        sql.Literal(first + count - 1),
    )


def build(dsn: str, rows: int) -> Source:
    """Create F4211 with `rows` rows, its primary key and the index on the watermark columns."""
    table = sql.Identifier(TABLE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(table_ddl())
        conn.execute(sql.SQL("INSERT INTO {} ").format(table) + _generated_rows(0, rows))
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                table, sql.Identifier(f"{TABLE}_PK"), _names(KEYS)
            )
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} ({})").format(
                sql.Identifier(f"{TABLE}_UPDATED"), table, _names(WATERMARK)
            )
        )
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))
    return Source(dsn=dsn, rows=rows, next_row=rows)


def change(source: Source, fraction: float, *, churn: bool = False) -> int:
    """Update `fraction` of the rows as a business day would, stamping them with a newer date
    updated; with `churn`, also delete one row in a thousand and add as many new ones.

    Returns the number of rows touched.
    """
    source.rounds += 1
    stamp = 124_000 + source.rounds
    every = max(1, round(1 / fraction))
    table = sql.Identifier(TABLE)
    with source.connect() as conn:
        touched = conn.execute(
            sql.SQL(
                'UPDATE {} SET "SDUPRC" = "SDUPRC" % 999999 + 1, "SDAEXP" = "SDAEXP" + 1, '
                '"SDUPMJ" = {}, "SDTDAY" = '
                + _hhmmss(f"({ROW_NUMBER}) * 31 % 86400")
                + " WHERE ({}) % {} = {}"
            ).format(
                table,
                sql.Literal(stamp),
                sql.SQL(ROW_NUMBER),
                sql.Literal(every),
                sql.Literal(source.rounds % every),
            )
        ).rowcount
        if churn:
            touched += _churn(conn, source, stamp)
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))
    return touched


def _churn(conn: psycopg.Connection, source: Source, stamp: int) -> int:
    table = sql.Identifier(TABLE)
    deleted = conn.execute(
        sql.SQL("DELETE FROM {} WHERE ({}) % 1000 = 999").format(table, sql.SQL(ROW_NUMBER))
    ).rowcount
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT * FROM ({}) AS r").format(
            table, _generated_rows(source.next_row, deleted)
        )
    )
    conn.execute(
        sql.SQL('UPDATE {} SET "SDUPMJ" = {} WHERE ({}) >= {}').format(
            table, sql.Literal(stamp), sql.SQL(ROW_NUMBER), sql.Literal(source.next_row)
        )
    )
    source.next_row += deleted
    return 2 * deleted


def _names(names: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)
