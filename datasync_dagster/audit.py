"""The audit trail in the cache: `DataUpdate`, the `LastDataUpdates` view, and the table lock.

A sync opens its `DataUpdate` row when it starts and closes it when it ends, each in a short
transaction of its own, so a sync that rolls back still records its failure. An open row is
also the table's lock: a unique index over the open rows of a table lets only one exist.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from datasync_dagster.errors import SyncInProgress

log = logging.getLogger(__name__)

DATA_UPDATE = "DataUpdate"
LAST_DATA_UPDATES = "LastDataUpdates"
ERROR_LENGTH = 4000
HOST = socket.gethostname()
_ENSURE_ATTEMPTS = 3


def _data_update_table(metadata: sa.MetaData, schema: str | None) -> sa.Table:
    table = sa.Table(
        DATA_UPDATE,
        metadata,
        sa.Column("Id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("TableName", sa.String(128), nullable=False),
        sa.Column("Tier", sa.String(16), nullable=False),
        sa.Column("SourceName", sa.String(128), nullable=False),
        sa.Column("RunId", sa.String(64), nullable=True),
        sa.Column("StartedAt", sa.DateTime, nullable=False),
        sa.Column("EndedAt", sa.DateTime, nullable=True),
        sa.Column("Success", sa.Boolean, nullable=True),
        sa.Column("RowsRead", sa.BigInteger, nullable=True),
        sa.Column("RowsUpserted", sa.BigInteger, nullable=True),
        sa.Column("RowsDeleted", sa.BigInteger, nullable=True),
        sa.Column("Watermark", sa.String(400), nullable=True),
        sa.Column("Error", sa.String(ERROR_LENGTH), nullable=True),
        sa.Column("Host", sa.String(255), nullable=True),
        sa.Column("Pid", sa.Integer, nullable=True),
        schema=schema,
    )
    open_rows = table.c.EndedAt.is_(None)
    sa.Index(
        "UX_DataUpdate_OpenPerTable",
        table.c.TableName,
        unique=True,
        sqlite_where=open_rows,
        postgresql_where=open_rows,
        mssql_where=open_rows,
    )
    sa.Index("IX_DataUpdate_TableName", table.c.TableName, table.c.Id)
    return table


@dataclass(frozen=True)
class DataUpdate:
    """One row of the audit trail."""

    id: int
    table_name: str
    tier: str
    source_name: str
    run_id: str | None
    started_at: datetime
    ended_at: datetime | None
    success: bool | None
    rows_read: int | None
    rows_upserted: int | None
    rows_deleted: int | None
    watermark: str | None
    error: str | None
    host: str | None
    pid: int | None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


# Decides whether the sync behind an open `DataUpdate` row may still be running.
TAliveCheck = Callable[[DataUpdate], bool]


def process_alive(update: DataUpdate) -> bool:
    """True unless the row's process ran on this host and is gone; another host's is unknown."""
    if update.host != HOST or update.pid is None:
        return True
    try:
        os.kill(update.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def utcnow() -> datetime:
    """Audit times are UTC, kept without a zone so every cache dialect stores them alike."""
    return datetime.now(UTC).replace(tzinfo=None)


class AuditLog:
    """Reads and writes `DataUpdate` in the cache database."""

    def __init__(self, engine: sa.Engine, schema: str | None = None):
        self.engine = engine
        self.schema = schema
        self.metadata = sa.MetaData()
        self.table = _data_update_table(self.metadata, schema)

    def ensure(self) -> None:
        """Create `DataUpdate`, its indexes and the `LastDataUpdates` view where missing.

        Processes starting at once on a new cache may all find them missing; those that lose
        the race to create them look again and find them.
        """
        for attempt in range(1, _ENSURE_ATTEMPTS + 1):
            try:
                self._create_missing()
                return
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
                if attempt == _ENSURE_ATTEMPTS:
                    raise
                log.info("%s was being created by another process; looking again", DATA_UPDATE)

    def _create_missing(self) -> None:
        with self._writing() as connection:
            self.metadata.create_all(connection, checkfirst=True)
            views = sa.inspect(connection).get_view_names(schema=self.schema)
            if LAST_DATA_UPDATES not in views:
                connection.exec_driver_sql(self._view_sql(connection.dialect))

    def exists(self) -> bool:
        """Whether the cache holds `DataUpdate` already; reads only."""
        with self.engine.connect() as connection:
            return sa.inspect(connection).has_table(DATA_UPDATE, schema=self.schema)

    def open(self, table_name: str, tier: str, source_name: str, run_id: str | None) -> int:
        """Open the row of a starting sync; raise `SyncInProgress` if the table has one open."""
        values = dict(
            TableName=table_name,
            Tier=tier,
            SourceName=source_name,
            RunId=run_id,
            StartedAt=utcnow(),
            Host=HOST,
            Pid=os.getpid(),
        )
        try:
            with self._writing() as connection:
                result = connection.execute(sa.insert(self.table).values(**values))
                update_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        except sa.exc.IntegrityError as e:
            holder = next(iter(self.open_updates(table_name)), None)
            raise SyncInProgress(
                f"table `{table_name}` is being synced by run `{holder and holder.run_id}` "
                f"(DataUpdate {holder and holder.id}); wait for it to end, or terminate it"
            ) from e
        assert update_id is not None
        return int(update_id)

    def close(
        self,
        update_id: int,
        *,
        success: bool,
        rows_read: int | None = None,
        rows_upserted: int | None = None,
        rows_deleted: int | None = None,
        watermark: str | None = None,
        error: str | None = None,
    ) -> None:
        """Close an open row with the outcome of its sync."""
        values = dict(
            EndedAt=utcnow(),
            Success=success,
            RowsRead=rows_read,
            RowsUpserted=rows_upserted,
            RowsDeleted=rows_deleted,
            Watermark=watermark,
            Error=error[:ERROR_LENGTH] if error else None,
        )
        with self._writing() as connection:
            connection.execute(
                sa.update(self.table)
                .where(self.table.c.Id == update_id, self.table.c.EndedAt.is_(None))
                .values(**values)
            )

    def sweep(self, alive: TAliveCheck = process_alive, table_name: str | None = None) -> list[int]:
        """Close as failed the open rows whose sync is no longer running; return their ids."""
        closed = []
        for update in self.open_updates(table_name):
            if alive(update):
                continue
            self.close(
                update.id,
                success=False,
                error=(
                    f"interrupted: the sync (run `{update.run_id}`, process {update.pid} on "
                    f"{update.host}) ended without closing its DataUpdate row"
                ),
            )
            log.warning(
                "closed interrupted sync of %s (DataUpdate %s)", update.table_name, update.id
            )
            closed.append(update.id)
        return closed

    def open_updates(self, table_name: str | None = None) -> list[DataUpdate]:
        """The rows of syncs that have started and not ended."""
        where: list[sa.ColumnElement[bool]] = [self.table.c.EndedAt.is_(None)]
        if table_name is not None:
            where.append(self.table.c.TableName == table_name)
        return self._select(sa.select(self.table).where(*where).order_by(self.table.c.Id))

    def last_successes(self) -> dict[str, DataUpdate]:
        """Each table's last successful sync, read from the `LastDataUpdates` view."""
        view = sa.Table(
            LAST_DATA_UPDATES,
            sa.MetaData(),
            *[sa.Column(c.name, c.type) for c in self.table.columns],
            schema=self.schema,
        )
        return {u.table_name: u for u in self._select(sa.select(view))}

    def last_success(self, table_name: str) -> DataUpdate | None:
        """The table's last successful sync, or None when it never had one."""
        return self.last_successes().get(table_name)

    def latest_attempts(self) -> dict[str, DataUpdate]:
        """Each table's most recent sync, whatever its outcome."""
        t = self.table
        latest = sa.select(sa.func.max(t.c.Id)).group_by(t.c.TableName).scalar_subquery()
        return {u.table_name: u for u in self._select(sa.select(t).where(t.c.Id.in_(latest)))}

    def history(self, table_name: str, limit: int = 20) -> list[DataUpdate]:
        """The table's most recent rows, newest first."""
        t = self.table
        statement = sa.select(t).where(t.c.TableName == table_name).order_by(t.c.Id.desc())
        return self._select(statement.limit(limit))

    def _select(self, statement: sa.Select[Any]) -> list[DataUpdate]:
        with self.engine.connect() as connection:
            return [_data_update(row) for row in connection.execute(statement).mappings()]

    def _view_sql(self, dialect: sa.Dialect) -> str:
        t = self.table
        later = sa.alias(t, "later")
        # `= true`, not `IS true`: T-SQL has no IS for a BIT, and renders true as 1.
        newest_success = sa.select(t).where(
            t.c.Success == sa.true(),
            ~sa.exists().where(
                later.c.TableName == t.c.TableName,
                later.c.Success == sa.true(),
                later.c.Id > t.c.Id,
            ),
        )
        body = newest_success.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        preparer = dialect.identifier_preparer
        name = preparer.quote_identifier(LAST_DATA_UPDATES)
        if self.schema:
            name = f"{preparer.quote_identifier(self.schema)}.{name}"
        return f"CREATE VIEW {name} AS {body}"

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with connection.begin():
                yield connection


def _data_update(row: Any) -> DataUpdate:
    return DataUpdate(
        id=row["Id"],
        table_name=row["TableName"],
        tier=row["Tier"],
        source_name=row["SourceName"],
        run_id=row["RunId"],
        started_at=row["StartedAt"],
        ended_at=row["EndedAt"],
        success=None if row["Success"] is None else bool(row["Success"]),
        rows_read=row["RowsRead"],
        rows_upserted=row["RowsUpserted"],
        rows_deleted=row["RowsDeleted"],
        watermark=row["Watermark"],
        error=row["Error"],
        host=row["Host"],
        pid=row["Pid"],
    )
