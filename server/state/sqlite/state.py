"""SQLite implementation of the server state (stdlib sqlite3): WAL, busy timeout, foreign keys, numbered
migrations applied at open (facefleet.core.migrations), parameterised SQL only.

Each thread gets its own connection; writes are serialised by a lock in this process and by
`BEGIN IMMEDIATE` against other processes (e.g. `facefleet-server tokens create` while the server runs).
Reads that need a consistent view (a gallery delta) run in one deferred transaction, which WAL turns into
a snapshot. Row-level SQL lives in companions: people in facefleet.server.state.sqlite.people, agents and
tokens in facefleet.server.state.sqlite.agents, events and dashboard aggregates in
facefleet.server.state.sqlite.events, models in facefleet.server.state.sqlite.models, devices in
facefleet.server.state.sqlite.devices, the admin audit log in facefleet.server.state.sqlite.audit."""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from facefleet.core.files import create_private
from facefleet.core.migrations import Legacy, Migration, Migrations, SchemaError, has_table
from facefleet.link.checks import MAX_EMBEDDINGS_PER_PERSON
from facefleet.link.events import Event
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Embedding, GalleryDelta, Person
from facefleet.server.domain.audit import AuditCursor, AuditEntry, AuditFilter, AuditPage
from facefleet.server.domain.queries import (
    AttributeCounts,
    DoorAccess,
    EventCursor,
    EventFilter,
    EventPage,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
    to_us,
)
from facefleet.server.domain.records import AgentInfo, Crop, TokenRecord
from facefleet.server.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    ServerError,
    StateError,
    disk_full,
    is_disk_full,
)
from facefleet.server.state.interface import State
from facefleet.server.state.sqlite import agents as sqlite_agents
from facefleet.server.state.sqlite import audit as sqlite_audit
from facefleet.server.state.sqlite import devices as sqlite_devices
from facefleet.server.state.sqlite import events as sqlite_events
from facefleet.server.state.sqlite import models as sqlite_models
from facefleet.server.state.sqlite import people as sqlite_people
from facefleet.server.state.sqlite import snapshots as sqlite_snapshots

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
SQLITE_FULL = 13
"""SQLite's result code for "database or disk is full" (sqlite3.SQLITE_FULL from Python 3.11)."""
DEFAULT_LOG_REVISIONS = 1000

INITIAL = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS people (
        person_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, groups_json TEXT NOT NULL,
        metadata_json TEXT NOT NULL, created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
        revision INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS person_groups (
        group_name TEXT NOT NULL,
        person_id TEXT NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
        PRIMARY KEY (group_name, person_id))""",
    "CREATE INDEX IF NOT EXISTS person_groups_person ON person_groups(person_id)",
    """CREATE TABLE IF NOT EXISTS embeddings (
        id INTEGER PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
        model_id TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
        quality REAL NOT NULL, source TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS embeddings_person ON embeddings(person_id, id)",
    """CREATE TABLE IF NOT EXISTS crops (
        id INTEGER PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
        image_format TEXT NOT NULL, source TEXT NOT NULL, data BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS crops_person ON crops(person_id, id)",
    """CREATE TABLE IF NOT EXISTS gallery_changes (
        revision INTEGER NOT NULL, person_id TEXT NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')), committed_us INTEGER NOT NULL,
        PRIMARY KEY (revision, person_id))""",
    """CREATE TABLE IF NOT EXISTS agents (
        device_id TEXT PRIMARY KEY, agent_version TEXT NOT NULL, hostname TEXT NOT NULL,
        model_versions_json TEXT NOT NULL, capabilities_json TEXT NOT NULL,
        gallery_revision INTEGER NOT NULL, registered_us INTEGER NOT NULL,
        last_seen_us INTEGER NOT NULL, health_json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tokens (
        token_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
        salt BLOB NOT NULL, digest BLOB NOT NULL, created_us INTEGER NOT NULL)""",
    *sqlite_events.SCHEMA,
)
"""Migration 1: people, crops, the gallery change log, agents, tokens and events."""


def _legacy_version(conn: sqlite3.Connection) -> int | None:
    """The schema version recorded in the meta table before the migration runner (None: none there)."""
    if not has_table(conn, "meta"):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None
    if not str(row[0]).isdigit():
        raise SchemaError(f"its meta schema_version {row[0]!r} is not a version number")
    return int(row[0])


def _forget_legacy(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM meta WHERE key = 'schema_version'")


MIGRATIONS = Migrations(
    (
        Migration(1, "initial", INITIAL),
        Migration(2, "models", sqlite_models.SCHEMA),
        Migration(3, "rollout_reason", sqlite_models.SCHEMA_3),
        Migration(4, "rollout_failure_budget", sqlite_models.SCHEMA_4),
        Migration(5, "admin_audit", sqlite_audit.SCHEMA),
        Migration(6, "devices", sqlite_devices.SCHEMA),
        Migration(7, "snapshots", sqlite_snapshots.SCHEMA),
        Migration(8, "event_camera_door_indexes", sqlite_events.SCHEMA_8),
        Migration(9, "event_attributes", sqlite_events.SCHEMA_9, sqlite_events.add_attribute_columns),
    ),
    what="state database",
    program="server",
    fix="upgrade facefleet-server",
    legacy=Legacy(_legacy_version, _forget_legacy),
)
"""The server database's migrations (facefleet.core.migrations): append, never edit one that has shipped."""


class SqliteState(State):
    """The server state in one SQLite file."""

    def __init__(self, path: Path, *, log_revisions: int = DEFAULT_LOG_REVISIONS) -> None:
        self.path = path
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
        self._migrate()
        self.models = sqlite_models.SqliteModelState(self)
        self.devices = sqlite_devices.SqliteDeviceState(self)
        self.snapshots = sqlite_snapshots.SqliteSnapshotState(self)

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
                MIGRATIONS.apply(conn, self.path)
            except SchemaError as exc:
                raise StateError(str(exc)) from None
            except sqlite3.Error as exc:
                raise StateError(f"state database {self.path}: cannot migrate ({exc})") from None
        with self.write() as conn:
            if _meta(conn, "gallery_id", "") == "":
                _set_meta(conn, "gallery_id", str(uuid.uuid4()))
                _set_meta(conn, "head_revision", "0")
                _set_meta(conn, "log_floor", "0")

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

    # -- gallery -------------------------------------------------------------------------------------

    def gallery_id(self) -> str:
        with self.connection() as conn:
            return _meta(conn, "gallery_id", "")

    def head_revision(self) -> int:
        with self.connection() as conn:
            return int(_meta(conn, "head_revision", "0"))

    def add_person(
        self, person: Person, crops: Sequence[Crop], now: datetime, *, snapshots: Sequence[str] = ()
    ) -> Person:
        with self.write() as conn:
            if sqlite_people.exists(conn, person.person_id):
                raise AlreadyExistsError(
                    f"person {person.person_id} is already enrolled; choose another id, or replace or "
                    "append to them (on_existing)"
                )
            revision = self._next_revision(conn, [(person.person_id, "upsert")], now)
            sqlite_people.insert_person(conn, person, now, now, revision)
            sqlite_people.insert_embeddings(conn, person.person_id, person.embeddings)
            sqlite_people.insert_crops(conn, person.person_id, crops)
            sqlite_snapshots.mark_enrolled(conn, snapshots, person.person_id)
            return sqlite_people.load_person(conn, person.person_id, with_vectors=True)

    def replace_person(
        self,
        person: Person,
        crops: Sequence[Crop],
        now: datetime,
        *,
        append: bool,
        snapshots: Sequence[str] = (),
    ) -> Person:
        with self.write() as conn:
            revision = self._next_revision(conn, [(person.person_id, "upsert")], now)
            if not sqlite_people.exists(conn, person.person_id):
                sqlite_people.insert_person(conn, person, now, now, revision)
            elif append:
                conn.execute(
                    "UPDATE people SET updated_us = ?, revision = ? WHERE person_id = ?",
                    (to_us(now), revision, person.person_id),
                )
            else:
                for model_id in person.model_ids():
                    conn.execute(
                        "DELETE FROM embeddings WHERE person_id = ? AND model_id = ?",
                        (person.person_id, model_id),
                    )
                if crops:
                    conn.execute("DELETE FROM crops WHERE person_id = ?", (person.person_id,))
                sqlite_people.update_fields(conn, person, now, revision)
            sqlite_people.insert_embeddings(conn, person.person_id, person.embeddings)
            sqlite_people.insert_crops(conn, person.person_id, crops)
            count = conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE person_id = ?", (person.person_id,)
            ).fetchone()[0]
            if count > MAX_EMBEDDINGS_PER_PERSON:
                raise InvalidArgumentError(
                    f"person {person.person_id} would have {count} embeddings, over the limit of "
                    f"{MAX_EMBEDDINGS_PER_PERSON}; replace them instead of appending"
                )
            sqlite_snapshots.mark_enrolled(conn, snapshots, person.person_id)
            return sqlite_people.load_person(conn, person.person_id, with_vectors=True)

    def update_person(
        self,
        person_id: str,
        now: datetime,
        *,
        display_name: str | None = None,
        groups: tuple[str, ...] | None = None,
        metadata_json: str | None = None,
    ) -> Person:
        with self.write() as conn:
            current = sqlite_people.load_person(conn, person_id, with_vectors=False)
            updated = Person(
                person_id=person_id,
                display_name=current.display_name if display_name is None else display_name,
                groups=current.groups if groups is None else groups,
                metadata_json=current.metadata_json if metadata_json is None else metadata_json,
            )
            revision = self._next_revision(conn, [(person_id, "upsert")], now)
            sqlite_people.update_fields(conn, updated, now, revision)
            return sqlite_people.load_person(conn, person_id, with_vectors=True)

    def replace_model_embeddings(
        self,
        person_id: str,
        model_id: str,
        embeddings: Sequence[Embedding],
        now: datetime,
        *,
        revision: int | None = None,
    ) -> int | None:
        with self.write() as conn:
            row = conn.execute("SELECT revision FROM people WHERE person_id = ?", (person_id,)).fetchone()
            if row is None or (revision is not None and int(row[0]) != revision):
                return None
            new = self._next_revision(conn, [(person_id, "upsert")], now)
            conn.execute("DELETE FROM embeddings WHERE person_id = ? AND model_id = ?", (person_id, model_id))
            sqlite_people.insert_embeddings(
                conn, person_id, [e for e in embeddings if e.model_id == model_id]
            )
            conn.execute(
                "UPDATE people SET updated_us = ?, revision = ? WHERE person_id = ?",
                (to_us(now), new, person_id),
            )
            return new

    def delete_person(self, person_id: str, now: datetime) -> int:
        with self.write() as conn:
            if not sqlite_people.exists(conn, person_id):
                raise NotFoundError(f"person {person_id} is not enrolled")
            revision = self._next_revision(conn, [(person_id, "delete")], now)
            conn.execute("DELETE FROM people WHERE person_id = ?", (person_id,))
            return revision

    def get_person(self, person_id: str, *, with_vectors: bool = True) -> Person:
        with self.read() as conn:
            return sqlite_people.load_person(conn, person_id, with_vectors=with_vectors)

    def list_people(
        self,
        *,
        after: str = "",
        limit: int = 100,
        group: str = "",
        search: str = "",
        person_ids: Sequence[str] = (),
    ) -> list[Person]:
        columns = sqlite_people.PERSON_COLUMNS
        joined = "JOIN person_groups g USING (person_id) " if group else ""
        clauses, params = ["p.person_id > ?"], [after]
        if group:
            clauses.append("g.group_name = ?")
            params.append(group)
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(p.person_id LIKE ? ESCAPE '\\' OR p.display_name LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        if person_ids:
            clauses.append(f"p.person_id IN ({', '.join('?' * len(person_ids))})")
            params += list(person_ids)
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM people p {joined}WHERE {' AND '.join(clauses)} "  # noqa: S608
                "ORDER BY p.person_id LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [sqlite_people.person_from_row(row, ()) for row in rows]

    def crop_counts(self, person_ids: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(person_ids, 0)
        ids = list(counts)
        with self.read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                counts.update(
                    conn.execute(
                        f"SELECT person_id, COUNT(*) FROM crops WHERE person_id IN ({marks}) "  # noqa: S608
                        "GROUP BY person_id",
                        chunk,
                    ).fetchall()
                )
        return counts

    def crops(self, person_id: str) -> list[Crop]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT image_format, data, source FROM crops WHERE person_id = ? ORDER BY id", (person_id,)
            ).fetchall()
        return [Crop(image_format=fmt, data=bytes(data), source=source) for fmt, data, source in rows]

    def changes_since(self, revision: int) -> GalleryDelta | None:
        with self.read() as conn:
            head = int(_meta(conn, "head_revision", "0"))
            if revision < int(_meta(conn, "log_floor", "0")) or revision > head:
                return None
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT person_id FROM gallery_changes WHERE revision > ? ORDER BY person_id",
                    (revision,),
                )
            ]
            people = sqlite_people.load_people(conn, ids)
            found = {p.person_id for p in people}
            return GalleryDelta(
                from_revision=revision,
                to_revision=head,
                snapshot=False,
                upserts=tuple(people),
                deletes=tuple(i for i in ids if i not in found),
                gallery_id=_meta(conn, "gallery_id", ""),
            )

    def snapshot(self) -> GalleryDelta:
        with self.read() as conn:
            ids = [row[0] for row in conn.execute("SELECT person_id FROM people ORDER BY person_id")]
            return GalleryDelta(
                from_revision=0,
                to_revision=int(_meta(conn, "head_revision", "0")),
                snapshot=True,
                upserts=tuple(sqlite_people.load_people(conn, ids)),
                gallery_id=_meta(conn, "gallery_id", ""),
            )

    def _next_revision(self, conn: sqlite3.Connection, changes: list[tuple[str, str]], now: datetime) -> int:
        """Allocate the next revision, log its changes, and drop log entries past the retention."""
        revision = int(_meta(conn, "head_revision", "0")) + 1
        conn.executemany(
            "INSERT INTO gallery_changes (revision, person_id, op, committed_us) VALUES (?, ?, ?, ?)",
            [(revision, person_id, op, to_us(now)) for person_id, op in changes],
        )
        _set_meta(conn, "head_revision", str(revision))
        floor = revision - self.log_revisions
        if floor > int(_meta(conn, "log_floor", "0")):
            conn.execute("DELETE FROM gallery_changes WHERE revision <= ?", (floor,))
            _set_meta(conn, "log_floor", str(floor))
        return revision

    # -- agents --------------------------------------------------------------------------------------

    def register_agent(self, registration: Registration, now: datetime) -> AgentInfo:
        with self.write() as conn:
            return sqlite_agents.register_agent(conn, registration, now)

    def get_agent(self, device_id: str) -> AgentInfo | None:
        with self.connection() as conn:
            agents = sqlite_agents.load_agents(conn, (device_id,))
        return agents[0] if agents else None

    def touch_agent(
        self,
        device_id: str,
        now: datetime,
        *,
        gallery_revision: int | None = None,
        health: Mapping[str, float] | None = None,
    ) -> None:
        with self.write() as conn:
            sqlite_agents.touch_agent(conn, device_id, now, gallery_revision, health)

    def list_agents(self, device_ids: Sequence[str] = ()) -> list[AgentInfo]:
        with self.connection() as conn:
            return sqlite_agents.load_agents(conn, tuple(device_ids) or None)

    # -- events --------------------------------------------------------------------------------------

    def add_events(self, events: Sequence[Event]) -> tuple[int, int]:
        with self.write() as conn:
            outcome = sqlite_events.add_events(conn, events)
            sqlite_snapshots.add_snapshots(conn, events)
            return outcome

    def list_events(self, flt: EventFilter, cursor: EventCursor | None, limit: int) -> EventPage:
        with self.connection() as conn:
            return sqlite_events.list_events(conn, flt, cursor, limit)

    def count_events(
        self, flt: EventFilter, interval_s: int, *, per_device: bool = True
    ) -> list[IntervalCount]:
        with self.read() as conn:
            return sqlite_events.count_events(conn, flt, interval_s, per_device=per_device)

    def expression_counts(self, flt: EventFilter, *, per_device: bool) -> list[ExpressionCount]:
        with self.read() as conn:
            return sqlite_events.expression_counts(conn, flt, per_device=per_device)

    def unknown_rates(self, flt: EventFilter) -> list[UnknownRate]:
        with self.read() as conn:
            return sqlite_events.unknown_rates(conn, flt)

    def access_summary(self, flt: EventFilter) -> list[DoorAccess]:
        with self.read() as conn:
            return sqlite_events.access_summary(conn, flt)

    def attribute_counts(self, flt: EventFilter) -> list[AttributeCounts]:
        with self.read() as conn:
            return sqlite_events.attribute_counts(conn, flt)

    # -- tokens --------------------------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        with self.write() as conn:
            sqlite_agents.add_token(conn, record)

    def find_token(self, token_id: str) -> TokenRecord | None:
        with self.connection() as conn:
            return sqlite_agents.find_token(conn, token_id)

    def list_tokens(self) -> list[TokenRecord]:
        with self.connection() as conn:
            return sqlite_agents.list_tokens(conn)

    def revoke_token(self, name: str) -> None:
        with self.write() as conn:
            sqlite_agents.revoke_token(conn, name)

    # -- admin audit log -----------------------------------------------------------------------------

    def add_audit(self, entry: AuditEntry) -> AuditEntry:
        with self.write() as conn:
            return sqlite_audit.add_audit(conn, entry)

    def list_audit(self, flt: AuditFilter, after: AuditCursor | None, limit: int) -> AuditPage:
        with self.connection() as conn:
            return sqlite_audit.list_audit(conn, flt, after, limit)


def _disk_full(exc: sqlite3.Error | OSError) -> bool:
    if isinstance(exc, OSError):
        return is_disk_full(exc)
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code == SQLITE_FULL if code is not None else "disk is full" in str(exc)


def _meta(conn: sqlite3.Connection, key: str, default: str) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else default


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
