"""Numbered schema migrations of an SQLite file, applied when it opens (stdlib sqlite3 only).

Migration n takes the schema from version n - 1 to n. Each runs in one `BEGIN IMMEDIATE` transaction together
with its record in the `facefleet_migrations` table (version, name, applied_at in unix seconds; PRAGMA
user_version mirrors the version for tools), so a crash or an error leaves the previous version and no
database is migrated twice, even by processes opening it at once. A database recorded at a version newer
than the code is refused before anything is written. A database whose schema was recorded another way
before (a `Legacy` record) is adopted at that version, its old record replaced in one transaction by a
marker that the code of those days reads as a newer schema, so that it refuses the database with its own
message rather than misreading it.

Only the programs that own a database upgrade it (apply with upgrade=True: a service at start, an explicit
migrate verb); others (upgrade=False) create a new database but refuse one with pending migrations
(SchemaOutdatedError), so that a command never changes the schema under a running service of the older
code.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from facefleet.core.errors import EXIT_DATA, FaceFleetError

RECORD_TABLE = "facefleet_migrations"
_CREATE_RECORD = (
    "CREATE TABLE IF NOT EXISTS facefleet_migrations ("
    "version INTEGER PRIMARY KEY CHECK (version > 0), name TEXT NOT NULL, applied_at REAL NOT NULL)"
)


class SchemaError(FaceFleetError):
    """A database's schema cannot be used by this program: it is newer, or its record is not ours."""

    exit_code = EXIT_DATA


class SchemaOutdatedError(SchemaError):
    """A database older than this program, which only its service (or migrate verb) upgrades; untouched."""


@dataclass(frozen=True)
class Migration:
    """One schema step: its SQL statements, then `run` (for steps that convert rows in Python). Inside the
    runner's transaction; never commit from here."""

    version: int
    name: str
    statements: tuple[str, ...] = ()
    run: Callable[[sqlite3.Connection], None] | None = None

    def apply(self, conn: sqlite3.Connection) -> None:
        for statement in self.statements:
            conn.execute(statement)
        if self.run is not None:
            self.run(conn)


@dataclass(frozen=True)
class Legacy:
    """How the schema was recorded before this runner. version: the version a database is at by that
    record (None: it has none, or only the marker), raising SchemaError for a record it cannot place;
    supersede: replace that record (if any) by the marker, which the code of those days reads as a schema
    newer than its own; superseded: whether the marker is there. Both run inside the runner's transactions."""

    version: Callable[[sqlite3.Connection], int | None]
    supersede: Callable[[sqlite3.Connection], None]
    superseded: Callable[[sqlite3.Connection], bool]


@dataclass(frozen=True)
class Migrations:
    """The migrations of one kind of database. what: how errors name it ('store', 'state database');
    program: who runs it ('agent'); fix: what to do about a newer database ('upgrade facefleet-agent');
    upgrade: how to upgrade an older one (who migrates it), for the commands that do not."""

    steps: tuple[Migration, ...]
    what: str
    program: str
    fix: str
    upgrade: str = ""
    legacy: Legacy | None = None

    def __post_init__(self) -> None:
        versions = [step.version for step in self.steps]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"migration versions must be 1, 2, 3, … in order, got {versions}")

    @property
    def latest(self) -> int:
        return len(self.steps)

    def version(self, conn: sqlite3.Connection, path: Path) -> int:
        """The version the database is at (0: none yet), checked against this program; reads only.
        SchemaError when it is newer or its record names steps this program does not have."""
        if not has_table(conn, RECORD_TABLE):
            return self._check(self._legacy_version(conn, path), path)
        rows = conn.execute("SELECT version, name FROM facefleet_migrations ORDER BY version").fetchall()
        version = self._check(rows[-1][0] if rows else 0, path)
        for step, (number, name) in zip(self.steps, rows, strict=False):
            if (number, name) != (step.version, step.name):
                raise SchemaError(
                    f"{self.what} {path} records migration {number} {name!r} where this {self.program} has "
                    f"migration {step.version} {step.name!r}: another program wrote it; move it away or "
                    "restore a backup"
                )
        return version

    def pending(self, conn: sqlite3.Connection, path: Path) -> tuple[Migration, ...]:
        """The steps not applied yet, oldest first; reads only."""
        return self.steps[self.version(conn, path) :]

    def apply(self, conn: sqlite3.Connection, path: Path, *, upgrade: bool = True) -> list[Migration]:
        """Record a legacy version in the runner's table, then apply each pending step in a transaction of
        its own; the steps applied here (another process may have applied some meanwhile). upgrade=False:
        only a new database (version 0) is created; one with pending migrations raises
        SchemaOutdatedError, untouched. `conn` must not be in a transaction; sqlite3.Error and SchemaError
        propagate, leaving the last committed version."""
        pending = self.pending(conn, path)  # refuses a newer database before anything is written
        version = self.latest - len(pending)
        if not upgrade and pending and version:
            raise self.outdated(version, path)
        if not pending and (not upgrade or (has_table(conn, RECORD_TABLE) and self._marked(conn))):
            return []  # up to date; the marker is left to the programs that upgrade
        with immediate(conn):
            self._adopt(conn, path)
        applied: list[Migration] = []
        creating = version == 0
        while True:
            with immediate(conn):  # reads the version again under the write lock
                version = self.version(conn, path)
                if version == self.latest:
                    break
                if not upgrade and not creating:
                    raise self.outdated(version, path)
                step = self.steps[version]
                step.apply(conn)
                _record(conn, step.version, step.name)
            applied.append(step)
        return applied

    def outdated(self, version: int, path: Path) -> SchemaOutdatedError:
        """The error for a database at `version`, older than this program, that it does not upgrade."""
        return SchemaOutdatedError(
            f"{self.what} {path} is at schema {version} and this {self.program} needs {self.latest}: "
            f"{self.upgrade or 'open it with the program that upgrades it'}"
        )

    def _marked(self, conn: sqlite3.Connection) -> bool:
        return self.legacy is None or self.legacy.superseded(conn)

    def _check(self, version: int, path: Path) -> int:
        if version > self.latest:
            raise SchemaError(
                f"{self.what} {path} has schema version {version}, newer than this {self.program} "
                f"({self.latest}): a newer FaceFleet wrote it; {self.fix}"
            )
        return version

    def _legacy_version(self, conn: sqlite3.Connection, path: Path) -> int:
        if self.legacy is None:
            return 0
        try:
            return self.legacy.version(conn) or 0
        except SchemaError as exc:
            raise SchemaError(f"{self.what} {path}: {exc}; {self.fix}") from None

    def _adopt(self, conn: sqlite3.Connection, path: Path) -> None:
        """Create the record table; a database at a legacy version gets its steps recorded as applied. Then
        the legacy record (if any) gives way to the marker, also in a database this runner created."""
        if not has_table(conn, RECORD_TABLE):
            version = self._check(self._legacy_version(conn, path), path)
            conn.execute(_CREATE_RECORD)
            for step in self.steps[:version]:
                _record(conn, step.version, step.name)
        if self.legacy is not None and not self.legacy.superseded(conn):
            self.legacy.supersede(conn)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that takes the write lock up front (waiting up to the busy timeout); any
    exception rolls it back."""
    if conn.in_transaction:
        raise ValueError("migrations run in transactions of their own: commit the open one first")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the database has a table of that name."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(query, (name,)).fetchone() is not None


def _record(conn: sqlite3.Connection, version: int, name: str) -> None:
    conn.execute(
        "INSERT INTO facefleet_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (version, name, time.time()),
    )
    conn.execute(f"PRAGMA user_version = {int(version)}")
