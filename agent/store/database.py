"""The agent's on-device store: one SQLite file (WAL) holding enrolled people, their embeddings per embedding
model, the gallery revision, a bounded MQTT outbox, an access audit log and counters; its `sync` and
`reports` companions (facefleet.agent.store.sync) keep the fleet server's revision and the events to report to
it.

This is the only module that imports sqlite_utils. Every write is one `BEGIN IMMEDIATE` transaction, so a
crash or an error half-way leaves the previous state, and every gallery change bumps the revision inside it.
The schema is created and upgraded by numbered, idempotent migrations applied when the store opens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database, Migrations

from facefleet.agent.domain.records import (
    AuditEntry,
    DuplicatePersonError,
    Embedding,
    EmbeddingMatrix,
    InvalidEmbeddingError,
    InvalidRecordError,
    ModelSummary,
    OutboxMessage,
    Person,
    PersonUpsert,
    RevisionConflictError,
    StoreBusyError,
    StoreError,
    StoreFormatError,
    StoreReadOnlyError,
    UnknownPersonError,
    check_identifier,
    json_text,
)
from facefleet.agent.store.sync import DEFAULT_REPORT_LIMIT, SYNC_SCHEMA, ReportQueue, ServerSync

FloatArray = npt.NDArray[np.float32]

_LOG = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_OUTBOX_LIMIT = 10_000
OUTBOX_DROPPED = "outbox_dropped"
"""Counter of outbox messages dropped (oldest first) because the outbox was full."""


MIGRATIONS = Migrations("facefleet-agent-store")
"""Numbered schema migrations: append new ones (`@_migration("0002_...")`), never edit an applied one."""
MIGRATION_NAMES: list[str] = []


def _migration(name: str) -> Callable[[Callable[[Database], None]], Callable[[Database], None]]:
    MIGRATION_NAMES.append(name)
    return MIGRATIONS(name=name)


@_migration("0001_initial")
def _migration_0001(db: Database) -> None:
    for statement in (
        """CREATE TABLE people (
            person_id TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            groups_json TEXT NOT NULL DEFAULT '[]',
            metadata_json TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE embeddings (
            id INTEGER PRIMARY KEY,
            person_id TEXT NOT NULL REFERENCES people (person_id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            dim INTEGER NOT NULL CHECK (dim > 0),
            vector BLOB NOT NULL CHECK (typeof(vector) = 'blob' AND length(vector) = 4 * dim),
            quality REAL NOT NULL CHECK (quality BETWEEN 0 AND 1),
            source TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX embeddings_by_model ON embeddings (model_id, person_id)",
        "CREATE INDEX embeddings_by_person ON embeddings (person_id)",
        """CREATE TABLE gallery (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            revision INTEGER NOT NULL CHECK (revision >= 0)
        )""",
        "INSERT INTO gallery (id, revision) VALUES (1, 0)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            door TEXT NOT NULL,
            person_id TEXT,
            decision TEXT NOT NULL,
            score REAL,
            details_json TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_log_by_time ON audit_log (time)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL DEFAULT 0)",
    ):
        db.execute(statement)


@_migration("0002_sync")
def _migration_0002(db: Database) -> None:
    for statement in SYNC_SCHEMA:
        db.execute(statement)


class EmbeddingStore:
    """The SQLite store at `path`, created (with its directory) if missing and migrated on open.

    Safe to share between threads (one lock) and between processes (WAL, busy timeout). read_only opens an
    existing store without writing anything; every write then raises StoreReadOnlyError.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        outbox_limit: int = DEFAULT_OUTBOX_LIMIT,
        report_limit: int = DEFAULT_REPORT_LIMIT,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.busy_timeout_ms = busy_timeout_ms
        if outbox_limit < 1:
            raise InvalidRecordError(f"outbox_limit must be at least 1, got {outbox_limit}")
        self.outbox_limit = outbox_limit
        self.sync = ServerSync(self)
        self.reports = ReportQueue(self, report_limit)
        self._lock = threading.RLock()
        _check_file(self.path, read_only)
        with self._translated():
            self._db = Database(_connect(self.path, read_only, busy_timeout_ms), execute_plugins=False)
        try:
            with self._translated():
                self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                self._db.execute("PRAGMA foreign_keys = ON")
            self._check_schema()  # before anything writes: never convert another application's database
            if not read_only:
                with self._translated():
                    self._db.execute("PRAGMA synchronous = FULL")  # a door box loses power; commits must last
                    self._db.enable_wal()
                self.migrate()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    # ---- schema -------------------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction; the names applied (empty when up to date)."""
        with self._lock, self._translated():
            if not MIGRATIONS.pending(self._db):
                return []
            with self._write():
                pending = [m.name for m in MIGRATIONS.pending(self._db)]  # again, under the write lock
                MIGRATIONS.apply(self._db)
                self._db.execute(f"PRAGMA user_version = {len(MIGRATIONS.applied(self._db))}")
            return pending

    def schema_version(self) -> int:
        """How many migrations have been applied (also in PRAGMA user_version)."""
        with self._lock, self._translated():
            return len(MIGRATIONS.applied(self._db))

    def _check_schema(self) -> None:
        """Refuse SQLite files of other applications and stores written by a newer FaceFleet."""
        with self._lock, self._translated():
            applied = {m.name for m in MIGRATIONS.applied(self._db)}
            tables = set(self._db.table_names()) - {Migrations.migrations_table}
            pending = MIGRATIONS.pending(self._db)
        if not applied and tables:
            raise StoreFormatError(
                f"file {self.path} is an SQLite database but not a FaceFleet store (it has tables "
                f"{', '.join(sorted(tables))}); move it away or choose another state directory"
            )
        unknown = applied - set(MIGRATION_NAMES)
        if unknown:
            raise StoreFormatError(
                f"store {self.path} has schema migrations this FaceFleet does not know "
                f"({', '.join(sorted(unknown))}): it was written by a newer version; upgrade facefleet"
            )
        if self.read_only and pending:
            raise StoreFormatError(
                f"store {self.path} needs a schema upgrade ({len(pending)} migrations); open it writable once"
            )

    # ---- gallery: writes ----------------------------------------------------------------------------------

    def add_person(self, person: Person, embeddings: Sequence[Embedding] = ()) -> int:
        """Enrol a new person (DuplicatePersonError if the id exists); the new gallery revision."""
        with self._write() as conn:
            if self._person_exists(conn, person.person_id):
                raise DuplicatePersonError(
                    f"person {person.person_id!r} already exists in store {self.path}; "
                    "use upsert_person to replace them"
                )
            self._write_upsert(
                conn, PersonUpsert(person, tuple(embeddings)), self._model_dims(conn), time.time()
            )
            return self._bump(conn)

    def upsert_person(self, person: Person, embeddings: Sequence[Embedding] = ()) -> int:
        """Insert or update a person; their embeddings of the given models are replaced. The new revision."""
        return self.apply_batch([PersonUpsert(person, tuple(embeddings))])

    def add_embeddings(self, person_id: str, embeddings: Sequence[Embedding]) -> int:
        """Add samples to an enrolled person, keeping the stored ones; the new revision."""
        with self._write() as conn:
            self._require_person(conn, person_id)
            if not embeddings:
                return self._read_revision(conn)
            now = time.time()
            self._insert_embeddings(conn, person_id, embeddings, self._model_dims(conn), now, replace=False)
            conn.execute("UPDATE people SET updated_at = ? WHERE person_id = ?", (now, person_id))
            return self._bump(conn)

    def remove_embeddings(self, person_id: str, model_id: str | None = None) -> int:
        """Remove a person's embeddings (of one model, or all); the new revision."""
        with self._write() as conn:
            self._require_person(conn, person_id)
            if model_id is None:
                cursor = conn.execute("DELETE FROM embeddings WHERE person_id = ?", (person_id,))
            else:
                cursor = conn.execute(
                    "DELETE FROM embeddings WHERE person_id = ? AND model_id = ?", (person_id, model_id)
                )
            return self._bump(conn) if cursor.rowcount else self._read_revision(conn)

    def delete_person(self, person_id: str) -> int:
        """Delete a person and their embeddings; the new revision."""
        with self._write() as conn:
            self._require_person(conn, person_id)
            conn.execute("DELETE FROM people WHERE person_id = ?", (person_id,))
            return self._bump(conn)

    def apply_batch(
        self,
        upserts: Sequence[PersonUpsert] = (),
        deletes: Sequence[str] = (),
        *,
        expected_revision: int | None = None,
        new_revision: int | None = None,
    ) -> int:
        """Apply person upserts and deletes all together or not at all; the resulting revision.

        Deletes of absent ids are no-ops (a sync delta may repeat one). expected_revision: the revision the
        batch was computed against (RevisionConflictError otherwise); new_revision: the revision to record
        (server sync, must move forward), else the current one plus 1. An empty batch changes nothing.
        """
        upserts, deletes = tuple(upserts), tuple(deletes)
        _check_batch_ids(upserts, deletes)
        with self._write() as conn:
            current = self._read_revision(conn)
            if expected_revision is not None and expected_revision != current:
                raise RevisionConflictError(
                    f"store {self.path} is at gallery revision {current} but the batch was made for "
                    f"revision {expected_revision}; fetch the changes since {current} (or a full snapshot)"
                )
            if new_revision is not None and not (isinstance(new_revision, int) and new_revision > current):
                raise RevisionConflictError(
                    f"the batch would set gallery revision {new_revision!r} but store {self.path} is already "
                    f"at {current}; revisions only move forward"
                )
            if not upserts and not deletes and new_revision is None:
                return current
            self._change_people(conn, upserts, deletes, whole_people=False)
            revision = current + 1 if new_revision is None else new_revision
            conn.execute("UPDATE gallery SET revision = ? WHERE id = 1", (revision,))
            return revision

    # ---- gallery: reads -----------------------------------------------------------------------------------

    def revision(self) -> int:
        """The gallery revision: changes with every gallery change (cheap: one indexed read)."""
        with self._read() as conn:
            return self._read_revision(conn)

    def people(self) -> list[Person]:
        """Every enrolled person, by id."""
        with self._read() as conn:
            rows = conn.execute(f"{_PERSON_SELECT} ORDER BY person_id").fetchall()
        return [_person_from_row(row) for row in rows]

    def person(self, person_id: str) -> Person:
        with self._read() as conn:
            row = conn.execute(f"{_PERSON_SELECT} WHERE person_id = ?", (person_id,)).fetchone()
        if row is None:
            raise self._unknown_person(person_id)
        return _person_from_row(row)

    def embeddings(self, person_id: str, model_id: str | None = None) -> list[Embedding]:
        """A person's embeddings (of one model, or all), oldest first."""
        with self._read() as conn:
            self._require_person(conn, person_id)
            rows = conn.execute(
                "SELECT model_id, vector, quality, source, id, created_at FROM embeddings "
                "WHERE person_id = ? AND (? IS NULL OR model_id = ?) ORDER BY id",
                (person_id, model_id, model_id),
            ).fetchall()
        return [
            Embedding(model, np.frombuffer(blob, "<f4").astype(np.float32), quality, source, eid, created)
            for model, blob, quality, source, eid, created in rows
        ]

    def models(self) -> list[ModelSummary]:
        """What is stored per embedding model, by model id."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT model_id, MIN(dim), COUNT(*), COUNT(DISTINCT person_id) FROM embeddings "
                "GROUP BY model_id ORDER BY model_id"
            ).fetchall()
        return [ModelSummary(model, dim, count, people) for model, dim, count, people in rows]

    def load_embeddings(self, model_id: str) -> EmbeddingMatrix:
        """Every embedding of one model in one query; the blobs are joined and viewed by numpy, not parsed."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT person_id, quality, vector FROM embeddings WHERE model_id = ? ORDER BY person_id, id",
                (model_id,),
            ).fetchall()
        if not rows:
            return EmbeddingMatrix([], np.empty((0, 0), np.float32), np.empty(0, np.float32))
        person_ids, qualities, blobs = zip(*rows, strict=True)
        dim = len(blobs[0]) // 4
        joined = bytearray().join(blobs)
        if len(joined) != 4 * dim * len(rows):
            raise StoreFormatError(
                f"store {self.path}: embeddings of model {model_id!r} have mixed dimensions; "
                "run the store integrity check and re-sync the gallery"
            )
        matrix = np.frombuffer(joined, "<f4").astype(np.float32, copy=False).reshape(len(rows), dim)
        return EmbeddingMatrix(list(person_ids), matrix, np.asarray(qualities, np.float32))

    # ---- outbox, counters, audit log ----------------------------------------------------------------------

    def outbox_put(self, topic: str, payload: str, qos: int = 1) -> int:
        """Queue a message; the id. When the outbox is over its limit, the oldest messages are dropped and
        counted in the OUTBOX_DROPPED counter (and logged)."""
        if not topic or not isinstance(topic, str) or not isinstance(payload, str):
            raise InvalidRecordError(
                f"outbox message needs a non-empty topic and a text payload, got {topic!r}"
            )
        if qos not in (0, 1, 2):
            raise InvalidRecordError(f"MQTT qos must be 0, 1 or 2, got {qos!r}")
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO outbox (topic, payload, qos, created_at) VALUES (?, ?, ?, ?)",
                (topic, payload, qos, time.time()),
            )
            message_id = int(cursor.lastrowid or 0)
            excess = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - self.outbox_limit
            if excess > 0:
                conn.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
                )
                self._count(conn, OUTBOX_DROPPED, excess)
                _LOG.warning(
                    "outbox of %s is full (%d messages): dropped the %d oldest",
                    self.path,
                    self.outbox_limit,
                    excess,
                )
            return message_id

    def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]:
        """The oldest queued messages, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, topic, payload, qos, created_at FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxMessage(*row) for row in rows]

    def outbox_delete(self, message_id: int) -> bool:
        """Remove a delivered message; False when it was already gone."""
        with self._write() as conn:
            return conn.execute("DELETE FROM outbox WHERE id = ?", (message_id,)).rowcount > 0

    def outbox_delete_many(self, message_ids: Sequence[int]) -> int:
        """Remove delivered messages in one transaction; how many were still there."""
        if not message_ids:
            return 0
        with self._write() as conn:
            cursor = conn.executemany("DELETE FROM outbox WHERE id = ?", [(int(i),) for i in message_ids])
            return int(cursor.rowcount)

    def outbox_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def counter(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def increment(self, name: str, by: int = 1) -> int:
        """Add to a counter; its new value."""
        with self._write() as conn:
            return self._count(conn, name, by)

    def audit_append(
        self,
        door: str,
        decision: str,
        *,
        person_id: str | None = None,
        score: float | None = None,
        details: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> int:
        """Record an access decision at a door (at: unix seconds, default now); the entry id."""
        check_identifier("door", door)
        check_identifier("decision", decision)
        details_json = json_text("audit details", dict(details or {}))
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO audit_log (time, door, person_id, decision, score, details_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time() if at is None else at, door, person_id, decision, score, details_json),
            )
            return int(cursor.lastrowid or 0)

    def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        """The newest audit entries, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, time, door, decision, person_id, score, details_json FROM audit_log "
                "ORDER BY time DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            AuditEntry(entry_id, at, door, decision, person_id, score, json.loads(details))
            for entry_id, at, door, decision, person_id, score, details in rows
        ]

    def audit_prune(self, older_than: float) -> int:
        """Delete audit entries before a unix time; how many were deleted."""
        with self._write() as conn:
            return int(conn.execute("DELETE FROM audit_log WHERE time < ?", (older_than,)).rowcount)

    # ---- health -------------------------------------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks and the store's own invariants;
        empty when the store is healthy."""
        with self._read() as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
            problems += [
                f"{table} row {rowid}: references a missing {parent} row"
                for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
            ]
            problems += [
                f"embeddings of model {model!r} have {dims} different dimensions"
                for model, dims in conn.execute(
                    "SELECT model_id, COUNT(DISTINCT dim) FROM embeddings GROUP BY model_id "
                    "HAVING COUNT(DISTINCT dim) > 1"
                )
            ]
            if conn.execute("SELECT COUNT(*) FROM gallery").fetchone()[0] != 1:
                problems.append("gallery table must hold exactly one revision row")
        return problems

    # ---- internals ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn sqlite3 errors into StoreErrors that name the file and the fix."""
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout_ms) from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated():
            yield self._db.conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy
        timeout), so two processes never deadlock upgrading a read; any exception rolls everything back."""
        if self.read_only:
            raise StoreReadOnlyError(f"store {self.path} was opened read-only; open it writable to change it")
        with self._lock, self._translated():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db.conn
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise

    def _read_revision(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT revision FROM gallery WHERE id = 1").fetchone()[0])

    def _bump(self, conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE gallery SET revision = revision + 1 WHERE id = 1")
        return self._read_revision(conn)

    def _count(self, conn: sqlite3.Connection, name: str, by: int) -> int:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )
        return int(conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def _person_exists(self, conn: sqlite3.Connection, person_id: str) -> bool:
        return conn.execute("SELECT 1 FROM people WHERE person_id = ?", (person_id,)).fetchone() is not None

    def _require_person(self, conn: sqlite3.Connection, person_id: str) -> None:
        if not self._person_exists(conn, person_id):
            raise self._unknown_person(person_id)

    def _unknown_person(self, person_id: str) -> UnknownPersonError:
        return UnknownPersonError(
            f"no person {person_id!r} in store {self.path}; list the enrolled people or enrol them first"
        )

    def _model_dims(self, conn: sqlite3.Connection) -> dict[str, int]:
        """model id → the dimension its stored embeddings have."""
        rows = conn.execute("SELECT model_id, MIN(dim) FROM embeddings GROUP BY model_id").fetchall()
        return {model: int(dim) for model, dim in rows}

    def _change_people(
        self,
        conn: sqlite3.Connection,
        upserts: Sequence[PersonUpsert],
        deletes: Sequence[str],
        *,
        whole_people: bool,
    ) -> None:
        """Delete, then upsert, inside the caller's transaction (which also moves the revision).
        whole_people: an upsert replaces all of the person's embeddings, not only those of its models."""
        conn.executemany("DELETE FROM people WHERE person_id = ?", [(p,) for p in deletes])
        if whole_people:
            conn.executemany(
                "DELETE FROM embeddings WHERE person_id = ?", [(u.person.person_id,) for u in upserts]
            )
        dims, now = self._model_dims(conn), time.time()
        for upsert in upserts:
            self._write_upsert(conn, upsert, dims, now)

    def _write_upsert(
        self, conn: sqlite3.Connection, upsert: PersonUpsert, dims: dict[str, int], now: float
    ) -> None:
        person = upsert.person
        conn.execute(
            "INSERT INTO people (person_id, name, groups_json, metadata_json, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET name = excluded.name, "
            "groups_json = excluded.groups_json, metadata_json = excluded.metadata_json, "
            "updated_at = excluded.updated_at",
            (
                person.person_id,
                person.name,
                json_text("groups", list(person.groups)),
                json_text("metadata", person.metadata),
                now,
                now,
            ),
        )
        self._insert_embeddings(conn, person.person_id, upsert.embeddings, dims, now, replace=True)

    def _insert_embeddings(
        self,
        conn: sqlite3.Connection,
        person_id: str,
        embeddings: Sequence[Embedding],
        dims: dict[str, int],
        now: float,
        *,
        replace: bool,
    ) -> None:
        """Check each embedding's dimension against its model's (first one seen fixes it), then write."""
        for embedding in embeddings:
            expected = dims.setdefault(embedding.model_id, embedding.dim)
            if embedding.dim != expected:
                raise InvalidEmbeddingError(
                    f"person {person_id!r}: embedding for model {embedding.model_id!r} has {embedding.dim} "
                    f"dimensions, but that model's embeddings have {expected}; compute it with the same model"
                )
        if replace:
            conn.executemany(
                "DELETE FROM embeddings WHERE person_id = ? AND model_id = ?",
                [(person_id, model) for model in {e.model_id for e in embeddings}],
            )
        conn.executemany(
            "INSERT INTO embeddings (person_id, model_id, dim, vector, quality, source, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    person_id,
                    e.model_id,
                    e.dim,
                    e.vector.astype("<f4").tobytes(),
                    float(e.quality),
                    e.source,
                    now,
                )
                for e in embeddings
            ],
        )


_PERSON_SELECT = "SELECT person_id, name, groups_json, metadata_json, created_at, updated_at FROM people"


def _person_from_row(row: tuple[Any, ...]) -> Person:
    person_id, name, groups_json, metadata_json, created_at, updated_at = row
    return Person(
        person_id, name, tuple(json.loads(groups_json)), json.loads(metadata_json), created_at, updated_at
    )


def _check_batch_ids(upserts: Sequence[PersonUpsert], deletes: Sequence[str]) -> None:
    counts = Counter(u.person.person_id for u in upserts)
    repeated = {p for p, n in counts.items() if n > 1} | (counts.keys() & set(deletes))
    if repeated:
        raise InvalidRecordError(
            f"batch names person(s) {', '.join(sorted(map(repr, repeated)))} more than once; "
            "send one change per person"
        )


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
    target = f"{path.resolve().as_uri()}?mode=ro" if read_only else f"{path.resolve().as_uri()}?mode=rwc"
    return sqlite3.connect(target, uri=True, timeout=busy_timeout_ms / 1000, check_same_thread=False)


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
        return StoreFormatError(
            f"store {path} is corrupt ({exc}); restore a backup, or move it away to start an empty store "
            "that the server re-fills"
        )
    if "full" in message:
        return StoreError(f"store {path}: the disk is full ({exc}); free space there - nothing was written")
    if "unable to open" in message:
        return StoreError(f"cannot open store {path} ({exc}); check the path and its permissions")
    return StoreError(f"store {path}: {exc}")
