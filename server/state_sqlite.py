"""SQLite implementation of the server state (stdlib sqlite3): WAL, busy timeout, foreign keys,
idempotent numbered migrations applied at open, parameterised SQL only.

Each thread gets its own connection; writes are serialised by a lock in this process and by
`BEGIN IMMEDIATE` against other processes (e.g. `facefleet-server tokens create` while the server runs).
Reads that need a consistent view (a gallery delta) run in one deferred transaction, which WAL turns into
a snapshot. Event storage and dashboard aggregates live in server.sqlite_events.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np

from server import sqlite_events, sqlite_models
from server.domain import (
    MAX_EMBEDDINGS_PER_PERSON,
    AgentInfo,
    Crop,
    Embedding,
    Event,
    GalleryDelta,
    Person,
    Registration,
    TokenRecord,
)
from server.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, StateError
from server.queries import (
    DoorAccess,
    EventCursor,
    EventFilter,
    EventPage,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
    from_us,
    to_us,
)
from server.state import State

BUSY_TIMEOUT_MS = 10_000
DEFAULT_LOG_REVISIONS = 1000
_CHUNK = 500

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
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
    ),
    sqlite_models.SCHEMA,
    sqlite_models.SCHEMA_3,
)
"""Schema versions: MIGRATIONS[i] takes the schema from version i to i + 1. Append, never edit."""


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
        self._migrate()
        self.models = sqlite_models.SqliteModelState(self)

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
    def _use(self) -> Iterator[sqlite3.Connection]:
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
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, serialised in-process and against other processes."""
        with self._use() as conn, self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StateError(f"state database {self.path} is busy or read-only: {exc}") from None
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StateError(
                    f"state database {self.path}: cannot commit ({exc}); is the disk full?"
                ) from None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state."""
        with self._use() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            version = int(_meta(conn, "schema_version", "0"))
            if version > len(MIGRATIONS):
                raise StateError(
                    f"state database {self.path} has schema version {version}, newer than this server "
                    f"({len(MIGRATIONS)}); upgrade facefleet-server"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            _set_meta(conn, "schema_version", str(len(MIGRATIONS)))
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
        with self._use() as conn:
            return _meta(conn, "gallery_id", "")

    def head_revision(self) -> int:
        with self._use() as conn:
            return int(_meta(conn, "head_revision", "0"))

    def add_person(self, person: Person, crops: Sequence[Crop], now: datetime) -> Person:
        with self._write() as conn:
            if _exists(conn, person.person_id):
                raise AlreadyExistsError(
                    f"person {person.person_id} is already enrolled; choose another id, or replace or "
                    "append to them (on_existing)"
                )
            revision = self._next_revision(conn, [(person.person_id, "upsert")], now)
            self._insert_person(conn, person, now, now, revision)
            _insert_embeddings(conn, person.person_id, person.embeddings)
            _insert_crops(conn, person.person_id, crops)
            return _load_person(conn, person.person_id, with_vectors=True)

    def replace_person(self, person: Person, crops: Sequence[Crop], now: datetime, *, append: bool) -> Person:
        with self._write() as conn:
            revision = self._next_revision(conn, [(person.person_id, "upsert")], now)
            if not _exists(conn, person.person_id):
                self._insert_person(conn, person, now, now, revision)
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
                self._update_fields(conn, person, now, revision)
            _insert_embeddings(conn, person.person_id, person.embeddings)
            _insert_crops(conn, person.person_id, crops)
            count = conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE person_id = ?", (person.person_id,)
            ).fetchone()[0]
            if count > MAX_EMBEDDINGS_PER_PERSON:
                raise InvalidArgumentError(
                    f"person {person.person_id} would have {count} embeddings, over the limit of "
                    f"{MAX_EMBEDDINGS_PER_PERSON}; replace them instead of appending"
                )
            return _load_person(conn, person.person_id, with_vectors=True)

    def update_person(
        self,
        person_id: str,
        now: datetime,
        *,
        display_name: str | None = None,
        groups: tuple[str, ...] | None = None,
        metadata_json: str | None = None,
    ) -> Person:
        with self._write() as conn:
            current = _load_person(conn, person_id, with_vectors=False)
            updated = Person(
                person_id=person_id,
                display_name=current.display_name if display_name is None else display_name,
                groups=current.groups if groups is None else groups,
                metadata_json=current.metadata_json if metadata_json is None else metadata_json,
            )
            revision = self._next_revision(conn, [(person_id, "upsert")], now)
            self._update_fields(conn, updated, now, revision)
            return _load_person(conn, person_id, with_vectors=True)

    def replace_model_embeddings(
        self,
        person_id: str,
        model_id: str,
        embeddings: Sequence[Embedding],
        now: datetime,
        *,
        revision: int | None = None,
    ) -> int | None:
        with self._write() as conn:
            row = conn.execute("SELECT revision FROM people WHERE person_id = ?", (person_id,)).fetchone()
            if row is None or (revision is not None and int(row[0]) != revision):
                return None
            new = self._next_revision(conn, [(person_id, "upsert")], now)
            conn.execute("DELETE FROM embeddings WHERE person_id = ? AND model_id = ?", (person_id, model_id))
            _insert_embeddings(conn, person_id, [e for e in embeddings if e.model_id == model_id])
            conn.execute(
                "UPDATE people SET updated_us = ?, revision = ? WHERE person_id = ?",
                (to_us(now), new, person_id),
            )
            return new

    def delete_person(self, person_id: str, now: datetime) -> int:
        with self._write() as conn:
            if not _exists(conn, person_id):
                raise NotFoundError(f"person {person_id} is not enrolled")
            revision = self._next_revision(conn, [(person_id, "delete")], now)
            conn.execute("DELETE FROM people WHERE person_id = ?", (person_id,))
            return revision

    def get_person(self, person_id: str, *, with_vectors: bool = True) -> Person:
        with self._read() as conn:
            return _load_person(conn, person_id, with_vectors=with_vectors)

    def list_people(self, *, after: str = "", limit: int = 100, group: str = "") -> list[Person]:
        with self._read() as conn:
            if group:
                rows = conn.execute(
                    f"SELECT {_PERSON_COLUMNS} FROM people p JOIN person_groups g USING (person_id) "  # noqa: S608
                    "WHERE g.group_name = ? AND p.person_id > ? ORDER BY p.person_id LIMIT ?",
                    (group, after, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_PERSON_COLUMNS} FROM people p WHERE p.person_id > ? "  # noqa: S608
                    "ORDER BY p.person_id LIMIT ?",
                    (after, limit),
                ).fetchall()
            return [_person_from_row(row, ()) for row in rows]

    def crops(self, person_id: str) -> list[Crop]:
        with self._use() as conn:
            rows = conn.execute(
                "SELECT image_format, data, source FROM crops WHERE person_id = ? ORDER BY id", (person_id,)
            ).fetchall()
        return [Crop(image_format=fmt, data=bytes(data), source=source) for fmt, data, source in rows]

    def changes_since(self, revision: int) -> GalleryDelta | None:
        with self._read() as conn:
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
            people = _load_people(conn, ids)
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
        with self._read() as conn:
            ids = [row[0] for row in conn.execute("SELECT person_id FROM people ORDER BY person_id")]
            return GalleryDelta(
                from_revision=0,
                to_revision=int(_meta(conn, "head_revision", "0")),
                snapshot=True,
                upserts=tuple(_load_people(conn, ids)),
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

    def _update_fields(self, conn: sqlite3.Connection, person: Person, now: datetime, revision: int) -> None:
        conn.execute(
            "UPDATE people SET display_name = ?, groups_json = ?, metadata_json = ?, updated_us = ?, "
            "revision = ? WHERE person_id = ?",
            (
                person.display_name,
                json.dumps(list(person.groups)),
                person.metadata_json,
                to_us(now),
                revision,
                person.person_id,
            ),
        )
        conn.execute("DELETE FROM person_groups WHERE person_id = ?", (person.person_id,))
        _insert_groups(conn, person.person_id, person.groups)

    def _insert_person(
        self, conn: sqlite3.Connection, person: Person, created: datetime, updated: datetime, revision: int
    ) -> None:
        conn.execute(
            "INSERT INTO people (person_id, display_name, groups_json, metadata_json, created_us, "
            "updated_us, revision) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                person.person_id,
                person.display_name,
                json.dumps(list(person.groups)),
                person.metadata_json,
                to_us(created),
                to_us(updated),
                revision,
            ),
        )
        _insert_groups(conn, person.person_id, person.groups)

    # -- agents --------------------------------------------------------------------------------------

    def register_agent(self, registration: Registration, now: datetime) -> AgentInfo:
        r = registration
        with self._write() as conn:
            conn.execute(
                "INSERT INTO agents (device_id, agent_version, hostname, model_versions_json, "
                "capabilities_json, gallery_revision, registered_us, last_seen_us, health_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}') "
                "ON CONFLICT (device_id) DO UPDATE SET agent_version = excluded.agent_version, "
                "hostname = excluded.hostname, model_versions_json = excluded.model_versions_json, "
                "capabilities_json = excluded.capabilities_json, "
                "gallery_revision = excluded.gallery_revision, last_seen_us = excluded.last_seen_us",
                (
                    r.device_id,
                    r.agent_version,
                    r.hostname,
                    json.dumps(dict(r.model_versions), sort_keys=True),
                    json.dumps(list(r.capabilities)),
                    r.gallery_revision,
                    to_us(now),
                    to_us(now),
                ),
            )
            agent = _load_agents(conn, (r.device_id,))
        return agent[0]

    def get_agent(self, device_id: str) -> AgentInfo | None:
        with self._use() as conn:
            agents = _load_agents(conn, (device_id,))
        return agents[0] if agents else None

    def touch_agent(
        self,
        device_id: str,
        now: datetime,
        *,
        gallery_revision: int | None = None,
        health: Mapping[str, float] | None = None,
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE agents SET last_seen_us = MAX(last_seen_us, ?), "
                "gallery_revision = COALESCE(?, gallery_revision), health_json = COALESCE(?, health_json) "
                "WHERE device_id = ?",
                (
                    to_us(now),
                    gallery_revision,
                    json.dumps(dict(health), sort_keys=True) if health else None,
                    device_id,
                ),
            )

    def list_agents(self, device_ids: Sequence[str] = ()) -> list[AgentInfo]:
        with self._use() as conn:
            return _load_agents(conn, tuple(device_ids) or None)

    # -- events --------------------------------------------------------------------------------------

    def add_events(self, events: Sequence[Event]) -> tuple[int, int]:
        with self._write() as conn:
            return sqlite_events.add_events(conn, events)

    def list_events(self, flt: EventFilter, cursor: EventCursor | None, limit: int) -> EventPage:
        with self._use() as conn:
            return sqlite_events.list_events(conn, flt, cursor, limit)

    def count_events(self, flt: EventFilter, interval_s: int) -> list[IntervalCount]:
        with self._read() as conn:
            return sqlite_events.count_events(conn, flt, interval_s)

    def expression_counts(self, flt: EventFilter, *, per_device: bool) -> list[ExpressionCount]:
        with self._read() as conn:
            return sqlite_events.expression_counts(conn, flt, per_device=per_device)

    def unknown_rates(self, flt: EventFilter) -> list[UnknownRate]:
        with self._read() as conn:
            return sqlite_events.unknown_rates(conn, flt)

    def access_summary(self, flt: EventFilter) -> list[DoorAccess]:
        with self._read() as conn:
            return sqlite_events.access_summary(conn, flt)

    # -- tokens --------------------------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (record.name,)).fetchone():
                raise AlreadyExistsError(
                    f"a token named {record.name!r} exists; revoke it first or pick another name"
                )
            conn.execute(
                "INSERT INTO tokens (token_id, name, role, salt, digest, created_us) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.token_id,
                    record.name,
                    record.role,
                    record.salt,
                    record.digest,
                    to_us(record.created_at),
                ),
            )

    def find_token(self, token_id: str) -> TokenRecord | None:
        with self._use() as conn:
            row = conn.execute(
                "SELECT token_id, name, role, salt, digest, created_us FROM tokens WHERE token_id = ?",
                (token_id,),
            ).fetchone()
        return _token(row) if row else None

    def list_tokens(self) -> list[TokenRecord]:
        with self._use() as conn:
            rows = conn.execute(
                "SELECT token_id, name, role, salt, digest, created_us FROM tokens ORDER BY name"
            ).fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"no token named {name!r}; `facefleet-server tokens list` shows them")


_PERSON_COLUMNS = (
    "p.person_id, p.display_name, p.groups_json, p.metadata_json, p.created_us, p.updated_us, p.revision"
)


def _meta(conn: sqlite3.Connection, key: str, default: str) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else default


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _exists(conn: sqlite3.Connection, person_id: str) -> bool:
    return conn.execute("SELECT 1 FROM people WHERE person_id = ?", (person_id,)).fetchone() is not None


def _insert_groups(conn: sqlite3.Connection, person_id: str, groups: tuple[str, ...]) -> None:
    conn.executemany(
        "INSERT INTO person_groups (group_name, person_id) VALUES (?, ?)", [(g, person_id) for g in groups]
    )


def _insert_embeddings(conn: sqlite3.Connection, person_id: str, embeddings: Sequence[Embedding]) -> None:
    conn.executemany(
        "INSERT INTO embeddings (person_id, model_id, dim, vector, quality, source) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (person_id, e.model_id, e.dim, e.vector.astype("<f4").tobytes(), float(e.quality), e.source)
            for e in embeddings
        ],
    )


def _insert_crops(conn: sqlite3.Connection, person_id: str, crops: Sequence[Crop]) -> None:
    conn.executemany(
        "INSERT INTO crops (person_id, image_format, source, data) VALUES (?, ?, ?, ?)",
        [(person_id, c.image_format, c.source, c.data) for c in crops],
    )


def _load_person(conn: sqlite3.Connection, person_id: str, *, with_vectors: bool) -> Person:
    if with_vectors:
        people = _load_people(conn, [person_id])
        if people:
            return people[0]
    else:
        row = conn.execute(
            f"SELECT {_PERSON_COLUMNS} FROM people p WHERE p.person_id = ?",  # noqa: S608
            (person_id,),
        ).fetchone()
        if row:
            return _person_from_row(row, ())
    raise NotFoundError(f"person {person_id} is not enrolled")


def _load_people(conn: sqlite3.Connection, ids: Sequence[str]) -> list[Person]:
    """The people with these ids that exist, with their embeddings, in the order of ids."""
    people: dict[str, Person] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        embeddings: dict[str, list[Embedding]] = {}
        for person_id, model_id, dim, vector, quality, source in conn.execute(
            "SELECT person_id, model_id, dim, vector, quality, source FROM embeddings "  # noqa: S608
            f"WHERE person_id IN ({marks}) ORDER BY person_id, id",
            chunk,
        ):
            array = np.frombuffer(vector, dtype="<f4", count=dim).astype(np.float32)
            embeddings.setdefault(person_id, []).append(Embedding(model_id, array, quality, source))
        for row in conn.execute(
            f"SELECT {_PERSON_COLUMNS} FROM people p WHERE p.person_id IN ({marks})",  # noqa: S608
            chunk,
        ):
            people[row[0]] = _person_from_row(row, tuple(embeddings.get(row[0], ())))
    return [people[i] for i in ids if i in people]


def _person_from_row(row: tuple[object, ...], embeddings: tuple[Embedding, ...]) -> Person:
    person_id, name, groups_json, metadata_json, created_us, updated_us, revision = row
    return Person(
        person_id=str(person_id),
        display_name=str(name),
        groups=tuple(json.loads(str(groups_json))),
        metadata_json=str(metadata_json),
        embeddings=embeddings,
        created_at=from_us(int(str(created_us))),
        updated_at=from_us(int(str(updated_us))),
        revision=int(str(revision)),
    )


def _load_agents(conn: sqlite3.Connection, device_ids: Sequence[str] | None) -> list[AgentInfo]:
    columns = (
        "device_id, agent_version, hostname, model_versions_json, capabilities_json, gallery_revision, "
        "registered_us, last_seen_us, health_json"
    )
    if device_ids is None:
        rows = conn.execute(f"SELECT {columns} FROM agents ORDER BY device_id").fetchall()  # noqa: S608
    else:
        marks = ", ".join("?" * len(device_ids))
        rows = conn.execute(
            f"SELECT {columns} FROM agents WHERE device_id IN ({marks}) ORDER BY device_id",  # noqa: S608
            list(device_ids),
        ).fetchall()
    return [
        AgentInfo(
            device_id=row[0],
            agent_version=row[1],
            hostname=row[2],
            model_versions=json.loads(row[3]),
            capabilities=tuple(json.loads(row[4])),
            gallery_revision=int(row[5]),
            registered_at=from_us(row[6]),
            last_seen=from_us(row[7]),
            health=json.loads(row[8]),
        )
        for row in rows
    ]


def _token(row: tuple[object, ...]) -> TokenRecord:
    token_id, name, role, salt, digest, created_us = row
    assert role in ("admin", "query")
    return TokenRecord(
        token_id=str(token_id),
        name=str(name),
        role=role,
        salt=bytes(salt),  # type: ignore[call-overload]
        digest=bytes(digest),  # type: ignore[call-overload]
        created_at=from_us(int(str(created_us))),
    )
