"""The store's core: one SQLite file (WAL, busy timeout, synchronous FULL) opened read-write or read-only,
checked and migrated before use (an older store only by those who pass upgrade: the service, `store
migrate`), with its transactions as public context managers, its counters, SQLite's own integrity checks,
and sqlite3 errors turned into StoreErrors that name the file and the fix.

A new store is built beside its path (`.agent.db.new-*`) and linked into place with its tables committed,
so a store this agent made is never without them: an `agent.db` that exists but holds no table (an emptied
file, or a copy taken while its commits were still in `agent.db-wal`) lost what it held, and is refused
rather than taken for a first start.

The gallery, outbox, audit, sync and reports modules of this package work through `read()` and `write()`.
Every write is one `BEGIN IMMEDIATE` transaction, so a crash or an error half-way leaves the previous state.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import tempfile
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
from facefleet.core.files import create_private, fsync_dir
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
    process's write lock.

    check: run `PRAGMA quick_check` before anything is written, and refuse a damaged file
    (StoreCorruptError, exit 74, naming the file and the fix); by default when the open upgrades (the
    service at start, `store migrate`): a service that went live on a damaged file would lose its gallery at
    the first read of a bad page, or write into it. Its cost is one read of every page: measured on a store
    of 10,000 people with 3 embeddings each (20 MB), 64 ms with the file in the page cache and 0.53 s from
    disk (about 140 MB/s); with a full 256 MB queue of face snapshots besides, 0.19 s and 2.1 s. It scales
    with the file over the disk's read speed (an SD card at 20 MB/s: about 1 s and 15 s), no more than the
    service's first gallery load and the compiling of its models at start, within systemd's start timeout."""

    def __init__(
        self,
        path: Path,
        migrations: Migrations,
        *,
        read_only: bool = False,
        upgrade: bool = True,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        check: bool | None = None,
    ) -> None:
        self.path = path
        self.migrations = migrations
        self.read_only = read_only
        self.upgrade = upgrade
        self.upgraded: list[str] = []
        """The migrations this open applied (none read-only, or when up to date; all for a new store)."""
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.RLock()
        _check_file(path, read_only)
        if not read_only and not path.exists():
            self.upgraded = self._create()
        with self._translated():
            self._conn = _connect(path, read_only, busy_timeout_ms)
        try:
            with self._translated():
                self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                self._conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema()  # before anything writes: never convert another application's database
            if (upgrade and not read_only) if check is None else check:
                self._refuse_damage()  # before a migration or the caller writes into a damaged file
            if not read_only:
                with self._translated():
                    # a door box loses power; commits must last
                    self._conn.execute("PRAGMA synchronous = FULL")
                    self._conn.execute("PRAGMA secure_delete = ON")  # erased faces are overwritten
                    if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        self._conn.execute("PRAGMA journal_mode = WAL")
                with self._lock, self._translated(), _schema_errors():
                    steps = self.migrations.apply(self._conn, self.path, upgrade=upgrade)
                self.upgraded += [step.name for step in steps]
        except BaseException:
            self._conn.close()
            raise

    def _create(self) -> list[str]:
        """Build a new store at a temporary path beside `path` (mode 0600) with every migration committed,
        then link it into place; another process's store linked there first wins (this one is discarded).
        The names of the migrations applied. A write-ahead log left where no store is would be replayed
        into the new one: refused (StoreCorruptError), untouched."""
        wal = _sidecar(self.path, "-wal")
        if wal.exists() and wal.stat().st_size:
            raise StoreCorruptError(
                f"store {self.path} is missing but its write-ahead log {wal} is there (commits of a store "
                f"that was moved or deleted), which SQLite would replay into a new store: put the store "
                f"back, or move {wal.name} and {self.path.name}-shm away too to start an empty store"
            )
        try:
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.new-")
        except OSError as exc:
            raise StoreReadOnlyError(
                f"cannot create store {self.path}: {exc.strerror}; check its directory"
            ) from None
        os.close(fd)
        temp = Path(name)
        try:
            with self._translated():
                conn = sqlite3.connect(temp, isolation_level=None)
                try:
                    conn.execute("PRAGMA foreign_keys = ON")
                    conn.execute("PRAGMA synchronous = FULL")
                    with _schema_errors():
                        steps = self.migrations.apply(conn, self.path)
                finally:
                    conn.close()
            try:
                _link_new(temp, self.path)
            except FileExistsError:
                return []  # another process created it meanwhile: this open uses theirs
            except OSError as exc:
                raise StoreReadOnlyError(
                    f"cannot create store {self.path}: {exc.strerror}; check its directory"
                ) from None
            fsync_dir(self.path.parent)
            return [step.name for step in steps]
        finally:
            for leftover in (temp, _sidecar(temp, "-journal")):
                leftover.unlink(missing_ok=True)

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
        tables = {row[0] for row in rows if not row[0].startswith("sqlite_")}
        if version == 0 and not tables:  # a store is created with its tables (_create): this one lost them
            raise StoreCorruptError(
                f"store {self.path} exists but holds no tables (a zero-byte file, or a copy taken while its "
                f"commits were still in {self.path.name}-wal): whatever it held is lost, so it is not taken "
                "for a new store; nothing was written to it (a first start of an earlier release that did "
                f"not finish leaves such a file too: it held nothing). {damage_fix(self.path)}"
            )
        ours = {RECORD_TABLE, "_sqlite_migrations"}  # the second: how stores recorded their schema before
        foreign = tables - ours
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

    def quick_check(self) -> list[str]:
        """What `PRAGMA quick_check` finds (every page read, b-trees and records checked; not the indexes'
        content); empty when the file is healthy. A page SQLite cannot read at all is a finding too."""
        with self.read() as conn:
            return _findings(conn, "quick_check")

    def integrity_check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks; empty when the file is healthy. Where
        a damaged page stops the whole check, each table is checked on its own, to name those damaged."""
        with self.read() as conn:
            problems = _findings(conn, "integrity_check")
            if problems and _unreadable(problems[0]):
                problems = _by_table(conn)
            try:
                problems += [
                    f"{table} row {rowid}: references a missing {parent} row"
                    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
                ]
            except sqlite3.DatabaseError as exc:
                if not _damage(exc):
                    raise
                problems.append(f"foreign key check: {exc}")
        return problems

    def _refuse_damage(self) -> None:
        """StoreCorruptError naming the file, what quick_check found and the fix, when it finds anything."""
        problems = self.quick_check()
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise StoreCorruptError(
                f"store {self.path} is damaged (SQLite's quick_check: {shown}); nothing was written to it. "
                f"{damage_fix(self.path)}; `facefleet-agent store check` lists the damage"
            )

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


def _link_new(temp: Path, path: Path) -> None:
    """Give the new store at `temp` its name, FileExistsError when another process did first. A file
    system without hard links (vfat, some FUSE mounts) gets a rename, after a look: two processes creating
    the store there at the same instant may each rename theirs, and the later one's is the store."""
    try:
        os.link(temp, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        os.rename(temp, path)


def _sidecar(path: Path, suffix: str) -> Path:
    """SQLite's file beside a database: `agent.db-wal`, `agent.db-shm`, `agent.db-journal`."""
    return path.with_name(path.name + suffix)


def damage_fix(path: Path) -> str:
    """What to do with a store that is damaged or emptied: nothing in it is touched by this agent."""
    return (
        "Restore a backup (`facefleet-agent store restore DIR`, with the agent stopped), or move "
        f"{path.name}, {path.name}-wal and {path.name}-shm out of {path.parent} to start an empty store: "
        "an agent connected to a fleet server gets its gallery back from the server, a standalone one must "
        "enrol its people again"
    )


def _damage(exc: sqlite3.Error) -> bool:
    """Whether an sqlite3 error says the file is damaged."""
    message = str(exc).lower()
    return "not a database" in message or "malformed" in message or "corrupt" in message


def _unreadable(finding: str) -> bool:
    return finding.startswith("SQLite stops at a damaged page: ")


def _findings(conn: sqlite3.Connection, pragma: str) -> list[str]:
    """The rows of an integrity pragma other than "ok"; a damaged page that stops it is one finding."""
    try:
        return [row[0] for row in conn.execute(f"PRAGMA {pragma}") if row[0] != "ok"]
    except sqlite3.DatabaseError as exc:
        if not _damage(exc):
            raise
        return [f"SQLite stops at a damaged page: {exc}"]


def _by_table(conn: sqlite3.Connection) -> list[str]:
    """integrity_check of each table (with its indexes) on its own: the tables it finds damaged."""
    problems = []
    tables = [
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    ]
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        found = _findings(conn, f"integrity_check({quoted})")
        problems += [
            f"table {table}: {finding.removeprefix('SQLite stops at a damaged page: ')}" for finding in found
        ]
    return problems or ["SQLite stops at a damaged page, but finds no table damaged on its own"]


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
    if _damage(exc):
        return StoreCorruptError(f"store {path} is corrupt ({exc}). {damage_fix(path)}")
    if "full" in message:
        return StoreFullError(
            f"store {path}: the disk is full ({exc}); free space there - nothing was written"
        )
    if "unable to open" in message:
        return StoreError(f"cannot open store {path} ({exc}); check the path and its permissions")
    return StoreError(f"store {path}: {exc}")
