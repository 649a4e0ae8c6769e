"""Where the store's gallery stands on the fleet server (the sync point), and applying the server's gallery
deltas to the store. The table is the store's migration 2 (facefleet.agent.store.migrations).

The server revision is kept apart from the store's own revision: that one moves with every gallery change
(local edits too) and is what the matcher follows, while the server revision is where the next Watch
resumes. A delta is applied, and its server revision recorded, in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from facefleet.agent.domain.fleet import SyncPoint
from facefleet.agent.domain.records import (
    InvalidRecordError,
    RevisionConflictError,
    json_text,
    upsert_from_link,
)
from facefleet.agent.store.connection import StoreConnection
from facefleet.agent.store.gallery import GalleryStore
from facefleet.link.gallery import GalleryDelta


class ServerSync:
    """The server sync point, and applying the server's gallery deltas to the store's gallery."""

    def __init__(self, connection: StoreConnection, gallery: GalleryStore) -> None:
        self._connection = connection
        self._gallery = gallery

    def point(self) -> SyncPoint:
        with self._connection.read() as conn:
            return _read_point(conn)

    def cluster_threshold(self) -> float | None:
        """The cosine at which the server groups unknown faces, as its last Register said (None: not said,
        or no Register yet)."""
        with self._connection.read() as conn:
            value = conn.execute("SELECT cluster_threshold FROM server_sync WHERE id = 1").fetchone()[0]
        return None if value is None else float(value)

    def record_cluster_threshold(self, threshold: float | None) -> bool:
        """Keep what the server's Register said of its cluster threshold; True when it changed."""
        with self._connection.write() as conn:
            before = conn.execute("SELECT cluster_threshold FROM server_sync WHERE id = 1").fetchone()[0]
            if before == threshold:
                return False
            conn.execute("UPDATE server_sync SET cluster_threshold = ? WHERE id = 1", (threshold,))
        return True

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
        with self._connection.write() as conn:
            point = _read_point(conn)
            deletes = delta.deletes
            if delta.snapshot:
                kept = {person.person_id for person in delta.upserts}
                everyone = [row[0] for row in conn.execute("SELECT person_id FROM people")]
                deletes = tuple(p for p in everyone if p not in kept)
            else:
                _check_continues(point, delta, self._connection.path)
            if delta.upserts or deletes:
                upserts = [upsert_from_link(person) for person in delta.upserts]
                self._gallery.change_people(conn, upserts, deletes, whole_people=True)
                revision = self._gallery.bump(conn)
            else:
                revision = self._gallery.read_revision(conn)
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
        if deletes:
            self._connection.forget_erased()
        return revision

    def erase(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Erase the whole gallery (people and their embeddings) and forget the sync point, inside the
        caller's write transaction (EmbeddingStore.wipe). (people erased, the store's revision: moved on, so
        the matcher reloads an empty gallery)."""
        everyone = tuple(row[0] for row in conn.execute("SELECT person_id FROM people"))
        self._gallery.change_people(conn, [], everyone, whole_people=True)
        revision = self._gallery.bump(conn)
        conn.execute(
            "UPDATE server_sync SET revision = 0, gallery_id = '', models_json = '[]', applied_at = ? "
            "WHERE id = 1",
            (time.time(),),
        )
        return len(everyone), revision


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
