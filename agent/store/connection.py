"""The store's core: one SQLite file (WAL, busy timeout, synchronous FULL) opened read-write or read-only,
checked and migrated before use (an older store only by those who pass upgrade: the service, `store
migrate`), with its transactions as public context managers, its counters, SQLite's own integrity checks,
and sqlite3 errors turned into StoreErrors that name the file and the fix.

The gallery, outbox, audit, sync and reports modules of this package work through `read()` and `write()`.
Every write is one `BEGIN IMMEDIATE` transaction, so a crash or an error half-way leaves the previous state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from facefleet.agent.domain.records import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFormatError,
    StoreFullError,
    StoreOutdatedError,
    StoreReadOnlyError,
)
from facefleet.core.files import create_private
from facefleet.core.migrations import RECORD_TABLE, Migrations, SchemaError, SchemaOutdatedError
from facefleet.core.sqlite_wal import empty_wal

SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT_MS = 5000

_LOG = logging.getLogger(__name__)


class StoreConnection:
    """The SQLite file at `path` with the given migrations, created (with its directory) if missing and
    migrated on open. Safe to share between threads (one lock) and between processes (WAL, busy timeout).
    read_only opens an existing, up-to-date store without writing anything; every write then raises
    StoreReadOnlyError. upgrade=False creates a new store but refuses (StoreOutdatedError, untouched) one
    with pending migrations, which only the service or `store migrate` applies: a command must not change the
    schema under a running agent of the older code. busy_timeout_ms: how long a write waits for another
    process's write lock."""

    def __init__(
        self,
        path: Path,
        migrations: Migrations,
        *,
        read_only: bool = False,
        upgrade: bool = True,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        self.path = path
        self.migrations = migrations
        self.read_only = read_only
        self.upgrade = upgrade
        self.upgraded: list[str] = []
        """The migrations this open applied (none read-only, or when up to date)."""
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.RLock()
        _check_file(path, read_only)
        with self._translated():
            self._conn = _connect(path, read_only, busy_timeout_ms)
        try:
            with self._translated():
                self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                self._conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema()  # before anything writes: never convert another application's database
            if not read_only:
                with self._translated():
                    # a door box loses power; commits must last
                    self._conn.execute("PRAGMA synchronous = FULL")
                    self._conn.execute("PRAGMA secure_delete = ON")  # erased faces are overwritten
                    if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        self._conn.execute("PRAGMA journal_mode = WAL")
                with self._lock, self._translated(), _schema_errors():
                    steps = self.migrations.apply(self._conn, self.path, upgrade=upgrade)
                self.upgraded = [step.name for step in steps]
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- transactions -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads, under the lock; sqlite3 errors come out as StoreErrors."""
        with self._lock, self._translated():
            yield self._conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy
        timeout), so two processes never deadlock upgrading a read; any exception rolls everything back."""
        if self.read_only:
            raise StoreReadOnlyError(f"store {self.path} was opened read-only; open it writable to change it")
        with self._lock, self._translated():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.rollback()
                raise

    def forget_erased(self) -> None:
        """After a write that erased faces (people, their embeddings): empty the write-ahead log into the
        file, whose freed pages secure_delete overwrote, so that the log's frames of the pages as they were
        are gone too. Best effort: a read of another process keeps some frames until a later checkpoint."""
        if self.read_only:
            return
        try:
            with self._lock, self._translated():  # without waiting: the frame loop shares the lock
                emptied = empty_wal(self._conn, self.busy_timeout_ms)
        except StoreError as exc:
            _LOG.warning("the write-ahead log was not emptied after erasing faces: %s", exc)
            return
        if not emptied:
            _LOG.warning(
                "store %s: another process is reading it, so its write-ahead log still holds erased faces "
                "until a later checkpoint",
                self.path,
            )

    def scrub(self) -> None:
        """Rewrite the file without the pages that deleted rows left behind (VACUUM), and empty the
        write-ahead log into it, so erased data cannot be read back from the disk image. StoreBusyError when
        another connection's read kept the log from being emptied: the file still holds the old pages until
        a scrub succeeds."""
        if self.read_only:
            raise StoreReadOnlyError(f"store {self.path} was opened read-only; open it writable to scrub it")
        with self._lock, self._translated():
            self._conn.execute("VACUUM")
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StoreBusyError(
                f"store {self.path} is busy: another process kept reading it for more than "
                f"{self.busy_timeout_ms / 1000:g} s, so the rewritten file could not replace the old one "
                "(its erased pages are still on disk); retry, or stop the process that reads it"
            )

    # ---- schema -------------------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations, each in a transaction; the names applied (empty when up to date)."""
        if self.read_only:
            raise StoreReadOnlyError(f"store {self.path} was opened read-only; open it writable to migrate")
        with self._lock, self._translated(), _schema_errors():
            return [step.name for step in self.migrations.apply(self._conn, self.path)]

    def schema_version(self) -> int:
        """How many migrations have been applied (also in PRAGMA user_version)."""
        with self._lock, self._translated(), _schema_errors():
            return self.migrations.version(self._conn, self.path)

    def _check_schema(self) -> None:
        """Refuse SQLite files of other applications, stores written by a newer FaceFleet, and stores that
        need an upgrade unless this open upgrades (read-only: even a new one), before anything is written.
        The version and the tables are read in one read transaction: another process creating the store
        meanwhile commits each migration's tables with its version."""
        with self._lock, self._translated():
            self._conn.execute("BEGIN DEFERRED")
            try:
                version = self.schema_version()
                rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            finally:
                self._conn.rollback()  # it only read
        tables = {row[0] for row in rows}
        ours = {RECORD_TABLE, "_sqlite_migrations"}  # the second: how stores recorded their schema before
        foreign = {t for t in tables - ours if not t.startswith("sqlite_")}
        if version == 0 and foreign:
            raise StoreFormatError(
                f"file {self.path} is an SQLite database but not a FaceFleet store (it has tables "
                f"{', '.join(sorted(foreign))}); move it away or choose another state directory"
            )
        if version < self.migrations.latest and (self.read_only or (version and not self.upgrade)):
            raise StoreOutdatedError(str(self.migrations.outdated(version, self.path)))

    # ---- counters and health ------------------------------------------------------------------------------

    def counter(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""
        with self.read() as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def increment(self, name: str, by: int = 1) -> int:
        """Add to a counter in a transaction of its own; its new value."""
        with self.write() as conn:
            return add_to_counter(conn, name, by)

    def integrity_check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks; empty when the file is healthy."""
        with self.read() as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
            problems += [
                f"{table} row {rowid}: references a missing {parent} row"
                for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
            ]
        return problems

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn sqlite3 errors into StoreErrors that name the file and the fix."""
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout_ms) from exc


QUEUE_TABLES = {"outbox": ("outbox", "messages"), "reports": ("report queue", "events")}
"""The store's bounded queues (rows numbered by `id`, the oldest dropped past their limit): table → what
the log calls it and its rows."""


def add_to_counter(conn: sqlite3.Connection, name: str, by: int) -> int:
    """Add to a counter inside the caller's write transaction; its new value."""
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        (name, by),
    )
    return int(conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])


def drop_oldest(
    conn: sqlite3.Connection,
    table: str,
    limit: int,
    counter: str,
    store: Path,
    before_drop: Callable[[sqlite3.Connection, int], object] | None = None,
) -> int:
    """Keep a bounded queue table (one of ours, rows numbered by `id`) at `limit` rows, inside the caller's
    write transaction: delete the oldest rows past it, add them to `counter` and log a warning naming the
    `store` file. before_drop(conn, rows) runs first when rows are to go, e.g. to count what goes with
    them (ON DELETE CASCADE). The rows dropped."""
    if table not in QUEUE_TABLES:  # a table name cannot be a parameter: only our own get here
        raise ValueError(f"{table!r} is not a bounded queue table of the store ({', '.join(QUEUE_TABLES)})")
    excess = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) - limit  # noqa: S608
    if excess <= 0:
        return 0
    if before_drop is not None:
        before_drop(conn, excess)
    conn.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT ?)", (excess,))  # noqa: S608
    add_to_counter(conn, counter, excess)
    label, rows = QUEUE_TABLES[table]
    _LOG.warning("%s of %s is full (%d %s): dropped the %d oldest", label, store, limit, rows, excess)
    return excess


@contextlib.contextmanager
def _schema_errors() -> Iterator[None]:
    try:
        yield
    except SchemaOutdatedError as exc:
        raise StoreOutdatedError(str(exc)) from None
    except SchemaError as exc:
        raise StoreFormatError(str(exc)) from None


def _check_file(path: Path, read_only: bool) -> None:
    """Before SQLite touches anything: the path must be a store (or nothing yet) we may open as asked."""
    if path.is_dir():
        raise StoreError(f"store path {path} is a directory; give the path of the store file inside it")
    if path.exists():
        try:
            with path.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StoreError(f"cannot read store {path}: {exc.strerror}; check its permissions") from None
        if header and header != SQLITE_HEADER:
            raise StoreFormatError(
                f"file {path} is not a FaceFleet store (not an SQLite database); it was left untouched - "
                "move it away or choose another state directory"
            )
    elif read_only:
        raise StoreError(f"no store at {path} to open read-only; check the state directory")
    if read_only:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreReadOnlyError(f"cannot create the directory of store {path}: {exc.strerror}") from None
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreReadOnlyError(
            f"store {path} is read-only for this user; make it writable (chown/chmod) or open it read-only"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreReadOnlyError(
            f"store {path}: its directory {path.parent} is not writable, and SQLite must create "
            f"{path.name}-wal and {path.name}-shm there; make the directory writable or move the store"
        )


def _connect(path: Path, read_only: bool, busy_timeout_ms: int) -> sqlite3.Connection:
    """Autocommit (isolation_level None): transactions are the explicit ones of write() and migrations."""
    if not read_only:
        try:
            create_private(path)
        except OSError as exc:
            raise StoreReadOnlyError(
                f"cannot create store {path}: {exc.strerror}; check its directory"
            ) from None
    target = f"{path.resolve().as_uri()}?mode=ro" if read_only else f"{path.resolve().as_uri()}?mode=rwc"
    return sqlite3.connect(
        target, uri=True, timeout=busy_timeout_ms / 1000, check_same_thread=False, isolation_level=None
    )


def _translate(exc: sqlite3.Error, path: Path, busy_timeout_ms: int) -> StoreError:
    message = str(exc).lower()
    if "readonly" in message or "read-only" in message:
        return StoreReadOnlyError(f"store {path} is read-only ({exc}); make it and its directory writable")
    if "locked" in message or "busy" in message:
        return StoreBusyError(
            f"store {path} is busy: another process held its write lock for more than "
            f"{busy_timeout_ms / 1000:g} s ({exc}); retry, or stop the process that holds it"
        )
    if "not a database" in message or "malformed" in message or "corrupt" in message:
        return StoreCorruptError(
            f"store {path} is corrupt ({exc}); restore a backup, or move it away to start an empty store "
            "that the server re-fills"
        )
    if "full" in message:
        return StoreFullError(
            f"store {path}: the disk is full ({exc}); free space there - nothing was written"
        )
    if "unable to open" in message:
        return StoreError(f"cannot open store {path} ({exc}); check the path and its permissions")
    return StoreError(f"store {path}: {exc}")
