"""SQLite implementation of the server state (stdlib sqlite3): WAL, busy timeout, foreign keys, numbered
migrations applied at open (facefleet.core.migrations), parameterised SQL only.

Each thread gets its own connection; writes are serialised by a lock in this process and by
`BEGIN IMMEDIATE` against other processes (e.g. `facefleet-server tokens create` while the server runs).
Reads that need a consistent view (a gallery delta) run in one deferred transaction, which WAL turns into
a snapshot. Row-level SQL lives in companions: people in facefleet.server.state.sql.people, agents and
tokens in facefleet.server.state.sql.agents, events and dashboard aggregates in
facefleet.server.state.sql.events, models in facefleet.server.state.sql.models, devices in
facefleet.server.state.sql.devices, the admin audit log in facefleet.server.state.sql.audit."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from facefleet.core.files import create_private
from facefleet.core.migrations import SchemaError, SchemaOutdatedError
from facefleet.core.sqlite_wal import empty_wal
from facefleet.server.errors import (
    ServerError,
    StateError,
    StateOutdatedError,
    StateSchemaError,
    disk_full,
    is_disk_full,
)
from facefleet.server.state.sql import devices as sql_devices
from facefleet.server.state.sql import models as sql_models
from facefleet.server.state.sql import snapshots as sql_snapshots
from facefleet.server.state.sql.state import SqlState
from facefleet.server.state.sqlite.schema import MIGRATIONS

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
SQLITE_FULL = 13
"""SQLite's result code for "database or disk is full" (sqlite3.SQLITE_FULL from Python 3.11)."""
DEFAULT_LOG_REVISIONS = 1000


class SqliteState(SqlState):
    """The server state in one SQLite file."""

    latest_schema = MIGRATIONS.latest

    def __init__(
        self, path: Path, *, log_revisions: int = DEFAULT_LOG_REVISIONS, upgrade: bool = True
    ) -> None:
        """upgrade=False (the commands but `serve` and `state migrate`): a new database is created, an older
        one refused untouched (StateOutdatedError)."""
        self.path = path
        self.upgrade = upgrade
        self.log_revisions = max(1, log_revisions)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._idle = threading.Condition()  # guards _busy and _closed
        self._busy = 0
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"state directory {path.parent}: cannot create ({exc.strerror})") from None
        try:
            create_private(path)
        except OSError as exc:
            raise StateError(f"state database {path}: cannot create ({exc.strerror})") from None
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise
        self.models = sql_models.SqlModelState(self)
        self.devices = sql_devices.SqlDeviceState(self)
        self.snapshots = sql_snapshots.SqlSnapshotState(self)

    # -- connections -------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
                )
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA secure_delete = ON")  # erased faces are overwritten, not just unlinked
                if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                    raise StateError(f"{self.path}: cannot switch to WAL mode (is it on a network drive?)")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise StateError(f"state database {self.path}: cannot open ({exc})") from None
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, counted as in use: close() waits for it, since closing a connection
        while a worker thread still runs a statement on it (for a call the server already cancelled at
        shutdown) crashes the process."""
        with self._idle:
            if self._closed:
                raise StateError(f"state database {self.path} is closed: the server is stopping")
            self._busy += 1
        try:
            yield self._conn()
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def erased(self) -> None:
        """Copy the WAL into the database and empty it: its frames hold the pages as they were before the
        erasing write. Best effort, without waiting: a reader in the middle of a transaction keeps the frames
        until a later checkpoint (logged)."""
        try:
            with self.connection() as conn:
                emptied = empty_wal(conn, BUSY_TIMEOUT_MS)
        except sqlite3.Error as exc:
            log.warning("state database %s: the WAL was not emptied after erasing faces (%s)", self.path, exc)
            return
        if not emptied:
            log.warning(
                "state database %s: a reader (a backup, a long query) kept the WAL from being emptied after "
                "erasing faces; they stay in it until a later checkpoint",
                self.path,
            )

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, serialised in-process and against other processes: committed when the
        body returns, rolled back when it raises. A full disk becomes ResourceExhaustedError, other
        SQLite conditions (busy, read-only, I/O) StateError; either way nothing stays half-written."""
        with self.connection() as conn, self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                self._abandon(conn)
                error = self._write_error(exc)
                if error is None:
                    raise
                raise error from None
            except BaseException:
                self._abandon(conn)
                raise

    def _abandon(self, conn: sqlite3.Connection) -> None:
        """Roll back what a failed write left open. A COMMIT that failed on a full disk has usually rolled
        back already, so there may be nothing to roll back; a connection still inside a transaction
        afterwards is closed and forgotten, and this thread's next call opens a fresh one."""
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if conn.in_transaction:
            with self._connections_lock:
                if conn in self._connections:  # close() may have let go of it already
                    self._connections.remove(conn)
            self._local.conn = None
            with suppress(sqlite3.Error):
                conn.close()

    def _write_error(self, exc: sqlite3.Error | OSError) -> ServerError | None:
        """The server error for a failed write; None for a bug (a constraint or an API misuse), which
        keeps its traceback."""
        if _disk_full(exc):
            error = disk_full("state database", self.path)
            log.warning("%s", error)
            return error
        if isinstance(exc, OSError):
            return StateError(f"state database {self.path}: cannot write ({exc.strerror})")
        if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
            return StateError(f"state database {self.path}: cannot write ({exc}); is it busy or read-only?")
        return None

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state."""
        with self.connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Apply pending migrations (each in its own transaction), then give a new gallery its id."""
        with self.connection() as conn, self._write_lock:
            try:
                applied = MIGRATIONS.apply(conn, self.path, upgrade=self.upgrade)
            except SchemaOutdatedError as exc:
                raise StateOutdatedError(str(exc)) from None
            except SchemaError as exc:
                raise StateSchemaError(str(exc)) from None
            except sqlite3.Error as exc:
                raise StateError(f"state database {self.path}: cannot migrate ({exc})") from None
        if applied:
            log.info("state database %s: applied migrations %s", self.path, [m.version for m in applied])
        self._start_gallery()

    def schema_version(self) -> int:
        """The schema version the database is at now (a newer server may have upgraded it since)."""
        with self.read() as conn:
            row = conn.execute("SELECT MAX(version) FROM facefleet_migrations").fetchone()
        return int(row[0] or 0)

    def close(self, timeout: float = 30.0) -> None:
        """Close every connection once the statements in flight have finished; later calls fail."""
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: self._busy == 0, timeout)
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


def _disk_full(exc: sqlite3.Error | OSError) -> bool:
    if isinstance(exc, OSError):
        return is_disk_full(exc)
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code == SQLITE_FULL if code is not None else "disk is full" in str(exc)
