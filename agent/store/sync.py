"""The store's tables for the fleet server: where the gallery stands on the server, and the durable queue of
events to report to it. Both share the EmbeddingStore's connection and transactions (its `sync` and
`reports` attributes); the schema is its migration 0002.

The server revision is kept apart from the store's own revision: that one moves with every gallery change
(local edits too) and is what the matcher follows, while the server revision is where the next Watch
resumes. A delta is applied, and its server revision recorded, in one transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from facefleet.agent.domain.fleet import QueuedReport, SyncPoint
from facefleet.agent.domain.records import (
    InvalidRecordError,
    PersonUpsert,
    RevisionConflictError,
    json_text,
    upsert_from_link,
)
from facefleet.link.gallery import GalleryDelta

_LOG = logging.getLogger(__name__)

SYNC_SCHEMA = (
    """CREATE TABLE server_sync (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL DEFAULT 0 CHECK (revision >= 0),
        gallery_id TEXT NOT NULL DEFAULT '',
        models_json TEXT NOT NULL DEFAULT '[]',
        applied_at REAL
    )""",
    "INSERT INTO server_sync (id) VALUES (1)",
    """CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL,
        gallery_revision INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )""",
)
"""Migration 0002_sync: the server sync point (one row) and the reports queue."""

DEFAULT_REPORT_LIMIT = 100_000
REPORTS_DROPPED = "reports_dropped"
"""Counter of queued reports dropped (oldest first) because the queue was full."""


class StoreCore(Protocol):
    """What EmbeddingStore lends its companions: its transactions and gallery writes."""

    path: Path

    def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _count(self, conn: sqlite3.Connection, name: str, by: int) -> int: ...

    def _change_people(
        self,
        conn: sqlite3.Connection,
        upserts: Sequence[PersonUpsert],
        deletes: Sequence[str],
        *,
        whole_people: bool,
    ) -> None: ...

    def _bump(self, conn: sqlite3.Connection) -> int: ...


class ServerSync:
    """The server sync point, and applying the server's gallery deltas to the store."""

    def __init__(self, store: StoreCore) -> None:
        self._store = store

    def point(self) -> SyncPoint:
        with self._store._read() as conn:
            return _read_point(conn)

    def apply(self, delta: GalleryDelta, models: Sequence[str] = ()) -> int:
        """Apply a whole (joined) delta atomically and record its server revision; the store's revision.

        A delta must start at the recorded server revision of the same gallery (RevisionConflictError
        otherwise: watch again from the recorded revision, or from 0 for a snapshot). A snapshot resets:
        everyone not in it is deleted and its revision and gallery_id are taken as they are. Upserted people
        are replaced whole, their embeddings included. The store's own revision moves on (by one) whenever
        people change, so the matcher reloads. models: the embedding models watched (recorded: a different
        set later needs a snapshot)."""
        if delta.more_parts:
            raise InvalidRecordError("join the parts of a multi-part gallery delta before applying it")
        with self._store._write() as conn:
            point = _read_point(conn)
            deletes = delta.deletes
            if delta.snapshot:
                kept = {person.person_id for person in delta.upserts}
                everyone = [row[0] for row in conn.execute("SELECT person_id FROM people")]
                deletes = tuple(p for p in everyone if p not in kept)
            else:
                _check_continues(point, delta, self._store.path)
            if delta.upserts or deletes:
                upserts = [upsert_from_link(person) for person in delta.upserts]
                self._store._change_people(conn, upserts, deletes, whole_people=True)
                revision = self._store._bump(conn)
            else:
                revision = int(conn.execute("SELECT revision FROM gallery WHERE id = 1").fetchone()[0])
            conn.execute(
                "UPDATE server_sync SET revision = ?, gallery_id = ?, models_json = ?, applied_at = ? "
                "WHERE id = 1",
                (
                    delta.to_revision,
                    delta.gallery_id or point.gallery_id,
                    json_text("models", sorted(set(models))),
                    time.time(),
                ),
            )
            return revision


def _check_continues(point: SyncPoint, delta: GalleryDelta, path: Path) -> None:
    if delta.gallery_id and point.gallery_id and delta.gallery_id != point.gallery_id:
        raise RevisionConflictError(
            f"store {path} holds gallery {point.gallery_id!r} but the delta is for gallery "
            f"{delta.gallery_id!r}; watch from revision 0 to receive a snapshot"
        )
    if delta.from_revision != point.revision:
        raise RevisionConflictError(
            f"store {path} is at server gallery revision {point.revision} but the delta starts at "
            f"{delta.from_revision}; watch again from revision {point.revision}"
        )


def _read_point(conn: sqlite3.Connection) -> SyncPoint:
    revision, gallery_id, models_json, applied_at = conn.execute(
        "SELECT revision, gallery_id, models_json, applied_at FROM server_sync WHERE id = 1"
    ).fetchone()
    return SyncPoint(int(revision), gallery_id, tuple(json.loads(models_json)), applied_at)


class ReportQueue:
    """Events to report to the server, oldest first, kept until it acknowledges them. When more than
    `limit` wait, the oldest are dropped, counted in the REPORTS_DROPPED counter and logged."""

    def __init__(self, store: StoreCore, limit: int = DEFAULT_REPORT_LIMIT) -> None:
        if limit < 1:
            raise InvalidRecordError(f"report queue limit must be at least 1, got {limit}")
        self._store = store
        self.limit = limit

    def put(self, payload: dict[str, Any], gallery_revision: int = 0) -> bool:
        """Queue an event payload (facefleet.agent.publish.events) by its event_id; False when that id is
        already queued."""
        event_id = payload.get("event_id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or not event_id.isascii():
            raise InvalidRecordError(
                f"a reported event needs an event_id of 1–64 ASCII characters, got {event_id!r}"
            )
        text = json_text(f"event {event_id}", payload)
        with self._store._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO reports (event_id, payload, gallery_revision, created_at) "
                "VALUES (?, ?, ?, ?)",
                (event_id, text, max(0, int(gallery_revision)), time.time()),
            )
            if not cursor.rowcount:
                return False
            excess = conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] - self.limit
            if excess > 0:
                conn.execute(
                    "DELETE FROM reports WHERE id IN (SELECT id FROM reports ORDER BY id LIMIT ?)", (excess,)
                )
                self._store._count(conn, REPORTS_DROPPED, excess)
                _LOG.warning(
                    "report queue of %s is full (%d events): dropped the %d oldest",
                    self._store.path,
                    self.limit,
                    excess,
                )
            return True

    def pending(self, limit: int = 500) -> list[QueuedReport]:
        """The oldest queued events, oldest first."""
        with self._store._read() as conn:
            rows = conn.execute(
                "SELECT id, event_id, payload, gallery_revision, created_at FROM reports ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            QueuedReport(report_id, event_id, _payload(text), revision, created)
            for report_id, event_id, text, revision, created in rows
        ]

    def delete(self, report_ids: Sequence[int]) -> int:
        """Remove acknowledged events in one transaction; how many were still queued."""
        if not report_ids:
            return 0
        with self._store._write() as conn:
            cursor = conn.executemany("DELETE FROM reports WHERE id = ?", [(int(i),) for i in report_ids])
            return int(cursor.rowcount)

    def count(self) -> int:
        with self._store._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])

    def dropped(self) -> int:
        with self._store._read() as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (REPORTS_DROPPED,)).fetchone()
        return int(row[0]) if row else 0


def _payload(text: str) -> dict[str, Any]:
    """A stored payload; {} for a row that is not a JSON object (it is then refused and dropped)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
