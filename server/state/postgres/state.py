"""PostgreSQL implementation of the server state, for fleets that outgrow one machine and for several server
replicas on one database.

psycopg 3 with its connection pool (psycopg_pool), used synchronously: the `State` interface is blocking and
its async callers already run it in worker threads, so the same portable SQL (facefleet.server.state.sql)
serves both backends, and each call holds a pooled connection only for its transaction. asyncpg would need
a second, async copy of every query.

Transactions: reads that need one view run REPEATABLE READ READ ONLY; writes take a transaction-scoped
advisory lock, which serialises them across every replica as SQLite's BEGIN IMMEDIATE does in one file
(gallery revisions and meta counters are read-modify-write). Writes and ingest run READ COMMITTED whatever the
database's default (`default_transaction_isolation`): under REPEATABLE READ a write's snapshot would be
taken before it waits for the lock, and every write that waited would fail on the rows the one before it
changed. Event ingest runs without that lock: its
inserts are idempotent (ON CONFLICT DO NOTHING) and its rollup upserts go in key order, so replicas ingest
in parallel. Partitions of `events` (facefleet.server.state.postgres.schema) are created before the first
event of a month is stored."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from facefleet.core.migrations import SchemaError, SchemaOutdatedError
from facefleet.link.events import Event
from facefleet.server.domain.queries import to_us
from facefleet.server.errors import (
    ResourceExhaustedError,
    ServerError,
    StateError,
    StateOutdatedError,
    StateSchemaError,
)
from facefleet.server.state.postgres import schema
from facefleet.server.state.postgres.connection import PgConnection
from facefleet.server.state.postgres.events import ArrayRows
from facefleet.server.state.sql import devices as sql_devices
from facefleet.server.state.sql import events as sql_events
from facefleet.server.state.sql import models as sql_models
from facefleet.server.state.sql import snapshots as sql_snapshots
from facefleet.server.state.sql.events import DAY_US, ROLLUPS
from facefleet.server.state.sql.meta import Connection
from facefleet.server.state.sql.state import SqlState

log = logging.getLogger(__name__)

WRITE_LOCK = 0x46465731
"""Advisory lock key of write transactions ('FFW1')."""
PARTITION_LOCK = 0x46465032
"""Advisory lock key while creating event partitions ('FFP2')."""
READ_COMMITTED = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"
"""The first statement of write and ingest transactions (see the module's docstring)."""
DEFAULT_POOL_SIZE = 10
POOL_TIMEOUT_S = 30.0
APPLICATION_NAME = "facefleet-server"
"""The application_name of the state's connections (and of a server's serving lock): a restore is refused
while any is open (facefleet.server.state.postgres.serving)."""
DETACH_LOCK_TIMEOUT_MS = 2000
"""How long retention waits for the locks that detach a month's partitions: while it waits, every new query
and insert on `events` queues behind it."""


SECRET_PARAMETERS = ("password", "sslpassword")
"""libpq parameters that redact() masks."""


def redact(url: str) -> str:
    """A postgresql:// URL (or libpq key=value string) without its passwords, for messages and logs: the
    password of the user info and the values of SECRET_PARAMETERS are ***."""
    if "://" not in url:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            return "(a connection string libpq cannot parse)"
        return make_conninfo(
            **{k: "***" if k in SECRET_PARAMETERS else str(v) for k, v in params.items() if v is not None}
        )
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[-1]}"
    except ValueError:
        return "(a URL that cannot be parsed)"
    query = "&".join(_redact_parameter(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_parameter(pair: str) -> str:
    """One `key=value` of a URL's query, its value *** when the key names a password."""
    key, equals, _value = pair.partition("=")
    return f"{key}=***" if equals and unquote(key).strip().lower() in SECRET_PARAMETERS else pair


DAY_ROLLUP = dict(ROLLUPS)[DAY_US]
"""The daily rollup: the sum of its counts over a month is the number of events of that month."""


class PostgresState(SqlState):
    """The server state in a PostgreSQL database (URL: postgresql://user:password@host:port/dbname)."""

    event_rows = ArrayRows()
    aggregate_in_one_statement = True

    latest_schema = schema.LATEST

    def __init__(
        self, url: str, *, log_revisions: int = 1000, pool_size: int = DEFAULT_POOL_SIZE, upgrade: bool = True
    ) -> None:
        """upgrade=False (the commands but `serve`): a new database gets the schema, an older one is refused
        untouched (StateOutdatedError)."""
        self.url = url
        self.upgrade = upgrade
        self.where = redact(url)
        self.log_revisions = max(1, log_revisions)
        self._months: set[tuple[int, int]] = set()
        self._months_lock = threading.Lock()
        try:
            self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                min_size=1,
                max_size=max(1, pool_size),
                kwargs={"autocommit": True, "row_factory": tuple_row, "application_name": APPLICATION_NAME},
                timeout=POOL_TIMEOUT_S,
                name="facefleet-state",
                open=False,
            )
            self.pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StateError(f"state database {self.where}: cannot connect ({_reason(exc)})") from None
        try:
            self._migrate()
        except BaseException:
            self.pool.close()
            raise
        self.models = sql_models.SqlModelState(self)
        self.devices = sql_devices.SqlDeviceState(self)
        self.snapshots = sql_snapshots.SqlSnapshotState(self)

    # -- connections and transactions --------------------------------------------------------------------

    @contextmanager
    def _raw(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise StateError(
                f"state database {self.where}: no free connection in {POOL_TIMEOUT_S:.0f} s; is the "
                "database reachable, or the pool ([state] pool_size) too small?"
            ) from None
        except psycopg.Error as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._raw() as conn:
            yield PgConnection(conn)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._raw() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield PgConnection(conn)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._raw() as conn, conn.transaction():
            conn.execute(READ_COMMITTED)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield PgConnection(conn)

    @contextmanager
    def ingest(self) -> Iterator[Connection]:
        with self._raw() as conn, conn.transaction():
            conn.execute(READ_COMMITTED)
            yield PgConnection(conn)

    def _error(self, exc: psycopg.Error) -> ServerError | None:
        """The server error for a database failure; None for a bug (a constraint or bad SQL), which keeps
        its traceback."""
        if isinstance(exc, psycopg.errors.DiskFull):
            error = ResourceExhaustedError(
                f"state database {self.where}: the database server's disk is full; free space there and retry"
            )
            log.warning("%s", error)
            return error
        if isinstance(exc, (psycopg.OperationalError, psycopg.errors.InsufficientResources)):
            return StateError(f"state database {self.where}: {_reason(exc)}")
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StateError(f"state database {self.where} is read-only ({_reason(exc)}); is it a standby?")
        return None

    def _migrate(self) -> None:
        with self._raw() as conn:
            try:
                applied = schema.migrate(conn, self.where, upgrade=self.upgrade)
            except SchemaOutdatedError as exc:
                raise StateOutdatedError(str(exc)) from None
            except SchemaError as exc:
                raise StateSchemaError(str(exc)) from None
        if applied:
            log.info("state database %s: applied migrations %s", self.where, applied)
        self._start_gallery()

    def schema_version(self) -> int:
        """The schema version the database is at now (a newer server may have upgraded it since)."""
        with self.read() as conn:
            row = conn.execute("SELECT MAX(version) FROM facefleet_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    def close(self, timeout: float = 30.0) -> None:
        """Close the pool once the connections in use are returned; later calls fail."""
        self.pool.close(timeout=timeout)

    def pool_stats(self) -> dict[str, int]:
        """The pool's figures (psycopg_pool's get_stats: pool_size, pool_available, requests_waiting…)."""
        return dict(self.pool.get_stats())

    # -- events ---------------------------------------------------------------------------------------------

    def add_events(self, events: Sequence[Event]) -> tuple[int, int]:
        months = {(t.year, t.month) for t in (e.time.astimezone(timezone.utc) for e in events)}
        self.ensure_partitions(months)
        try:
            return super().add_events(events)
        except psycopg.errors.CheckViolation:  # another replica's retention dropped a partition since
            with self._months_lock:
                self._months -= months
            self.ensure_partitions(months)
            return super().add_events(events)

    def ensure_partitions(self, months: set[tuple[int, int]]) -> None:
        """Create the partitions of `events` for these (year, month)s that this process has not seen."""
        with self._months_lock:
            missing = sorted(months - self._months)
        if not missing:
            return
        with self._raw() as conn, conn.transaction():
            conn.execute(READ_COMMITTED)  # see write(): the lock's waiter must see what its holder did
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            for year, month in missing:
                schema.create_partition(conn, year, month)
        with self._months_lock:
            self._months.update(missing)

    def expire_events(self, before: datetime, *, drop: bool = True) -> int:
        """Take the months that end by `before` out of events and its rollups (detaching their partitions;
        counted from the daily rollup, which holds every event of the month, or from the month's events when
        a database migrated from schema 1 has no rollup partition for it), delete the rest of the
        expired events and rollup buckets, then drop the detached partitions; how many events.

        Dropping a partition's files (gigabytes for a busy month) takes a second or more on some disks, and
        inside the transaction that changes `events` it would hold the table's lock meanwhile, stalling
        ingest and queries: detaching is a change of the catalogue only. Each month is detached in a
        transaction of its own that waits DETACH_LOCK_TIMEOUT_MS at most for its locks: a month in use (a
        long query, pg_dump) is left whole for the next run, and nothing queues behind the wait meanwhile.
        Each detached partition is dropped in a transaction of its own, which locks nothing else; a drop
        that did not happen (a crash) is retried by the next run. drop=False leaves the detached partitions
        for drop_expired()."""
        before_us = to_us(before)
        expired = 0
        kept_until: int | None = None  # the end of the last expired month left attached (in use)
        self.drop_expired()  # a crash's leftovers first: a month detached again takes the same name
        with self._raw() as conn:
            with conn.transaction():
                conn.execute(READ_COMMITTED)
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                months = schema.expired_months(conn, before_us)
            for year, month in months:
                try:
                    expired += self._detach_month(conn, year, month)
                except psycopg.errors.LockNotAvailable:
                    log.warning(
                        "state database %s: the events of %04d-%02d are in use (a long query or a backup "
                        "holds their tables); retention tries again at its next run",
                        self.where,
                        year,
                        month,
                    )
                    kept_until = max(kept_until or 0, schema.month_bounds(year, month)[1])
                    continue
                with self._months_lock:
                    self._months.discard((year, month))
        expired += self._delete_expired(before_us, kept_until)
        if drop:
            self.drop_expired()
        return expired

    def _detach_month(self, conn: psycopg.Connection[Any], year: int, month: int) -> int:
        """Detach the month's partitions that exist, in a transaction of its own; how many events they held.
        LockNotAvailable (rolled back) when a lock takes longer than DETACH_LOCK_TIMEOUT_MS."""
        with conn.transaction():
            conn.execute(READ_COMMITTED)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{DETACH_LOCK_TIMEOUT_MS}ms",))
            present = schema.month_tables(conn, year, month)
            count = 0
            if "events" in present:  # a month migrated from schema 1 may lack its rollup partitions
                counted = (
                    sql.SQL("SELECT COALESCE(SUM(n), 0) FROM {}").format(
                        sql.Identifier(schema.partition_name(year, month, DAY_ROLLUP))
                    )
                    if DAY_ROLLUP in present
                    else sql.SQL("SELECT COUNT(*) FROM {}").format(
                        sql.Identifier(schema.partition_name(year, month))
                    )
                )
                count = int(str((conn.execute(counted).fetchone() or (0,))[0]))
            for table in schema.PARTITIONED:
                if table in present:
                    schema.detach_partition(conn, year, month, table)
        return count

    def _delete_expired(self, before_us: int, after_us: int | None) -> int:
        """Delete the events before `before_us` and the rollup buckets that end by then, from `after_us` on
        when given (the months before it are left to the next run); how many events. Outside the write
        lock, as ingest: a day of events takes seconds to delete, and gallery changes go on meanwhile."""
        with self.ingest() as conn:
            return sql_events.expire_events(conn, before_us, after_us or 0)

    def drop_expired(self) -> list[str]:
        """Drop the partitions that retention detached (see expire_events); their names."""
        with self._raw() as conn:
            names = schema.expired_tables(conn)
            for name in names:
                with conn.transaction():
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        return names


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
