"""Face snapshots waiting for the server beside their events in the report queue
(facefleet.agent.store.reports): the crop and context JPEGs and the embedding, by event id. They are bounded
by their total size, the oldest dropped first, and by age; both are counted in SNAPSHOTS_DROPPED. The event
of a dropped snapshot is still reported, without it. A snapshot's row goes with its event's (acknowledged,
or dropped from a full queue: then counted too) by a foreign key with ON DELETE CASCADE. The table is the
store's migration 4.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence

import numpy as np

from facefleet.agent.domain.records import InvalidRecordError
from facefleet.agent.store.connection import StoreConnection, add_to_counter
from facefleet.link.errors import LinkError
from facefleet.link.events import FaceSnapshot
from facefleet.link.gallery import Embedding

_LOG = logging.getLogger(__name__)

SNAPSHOTS_DROPPED = "snapshots_dropped"
"""Counter of snapshots dropped before the server had them: the oldest past the size bound, those older
than the age bound, and any that could not be read back."""
DEFAULT_SNAPSHOT_LIMIT_BYTES = 256 << 20
DEFAULT_SNAPSHOT_KEEP_S = 7 * 86400.0


def snapshot_size(snapshot: FaceSnapshot) -> int:
    """The bytes a snapshot takes in the store and on the wire (its JPEGs and its vector)."""
    return len(snapshot.crop_jpeg) + len(snapshot.context_jpeg) + int(snapshot.embedding.vector.nbytes)


class SnapshotQueue:
    """Snapshots of queued reports. limit_bytes: their most total size; keep_s: how long one may wait
    (seconds), enforced by expire()."""

    def __init__(
        self,
        connection: StoreConnection,
        limit_bytes: int = DEFAULT_SNAPSHOT_LIMIT_BYTES,
        keep_s: float = DEFAULT_SNAPSHOT_KEEP_S,
    ) -> None:
        if limit_bytes < 1 or keep_s <= 0:
            raise InvalidRecordError(
                f"snapshot bounds must be positive, got {limit_bytes} bytes and {keep_s} s"
            )
        self._connection = connection
        self.limit_bytes = limit_bytes
        self.keep_s = keep_s

    def add(self, conn: sqlite3.Connection, event_id: str, snapshot: FaceSnapshot, now: float) -> int:
        """Keep the snapshot of the queued event `event_id`, inside the report queue's write transaction;
        then drop the oldest past limit_bytes. How many were dropped."""
        embedding = snapshot.embedding
        conn.execute(
            "INSERT INTO snapshots (event_id, size, created_at, model_id, quality, source, vector, "
            "crop_jpeg, context_jpeg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                snapshot_size(snapshot),
                now,
                embedding.model_id,
                embedding.quality,
                embedding.source,
                embedding.vector.astype("<f4").tobytes(),
                snapshot.crop_jpeg,
                snapshot.context_jpeg,
            ),
        )
        return self._bound(conn)

    def load(self, conn: sqlite3.Connection, first_report: int, last_report: int) -> dict[str, FaceSnapshot]:
        """The snapshots of the reports numbered first_report…last_report, by event id, inside the caller's
        read. A row that no longer reads back as a snapshot is dropped, counted and logged."""
        rows = conn.execute(
            "SELECT s.id, s.event_id, s.model_id, s.quality, s.source, s.vector, s.crop_jpeg, s.context_jpeg "
            "FROM snapshots s JOIN reports r ON r.event_id = s.event_id WHERE r.id BETWEEN ? AND ?",
            (first_report, last_report),
        ).fetchall()
        found, unreadable = {}, []
        for row_id, event_id, model_id, quality, source, vector, crop, context in rows:
            try:
                embedding = Embedding(model_id, np.frombuffer(vector, "<f4"), quality, source)
                found[event_id] = FaceSnapshot(bytes(crop), bytes(context), embedding)
            except (LinkError, ValueError) as exc:
                _LOG.warning("snapshot of %s in %s is unreadable (%s): dropped", event_id, self._path, exc)
                unreadable.append(row_id)
        if unreadable and not self._connection.read_only:
            with self._connection.write() as writing:
                writing.executemany("DELETE FROM snapshots WHERE id = ?", [(i,) for i in unreadable])
                add_to_counter(writing, SNAPSHOTS_DROPPED, len(unreadable))
        return found

    def count_dropped_with(self, conn: sqlite3.Connection, report_ids: Sequence[int]) -> int:
        """Count in SNAPSHOTS_DROPPED the snapshots of the queued reports `report_ids` that are about to be
        dropped (their rows go with the reports' by ON DELETE CASCADE), inside the caller's write
        transaction; how many."""
        going = 0
        for report_id in report_ids:
            going += conn.execute(
                "SELECT COUNT(*) FROM snapshots s JOIN reports r ON r.event_id = s.event_id WHERE r.id = ?",
                (int(report_id),),
            ).fetchone()[0]
        if going:
            add_to_counter(conn, SNAPSHOTS_DROPPED, going)
        return int(going)

    def expire(self, now: float | None = None) -> int:
        """Drop the snapshots that waited longer than keep_s (their events stay queued); how many."""
        cutoff = (time.time() if now is None else now) - self.keep_s
        with self._connection.write() as conn:
            expired = int(conn.execute("DELETE FROM snapshots WHERE created_at < ?", (cutoff,)).rowcount)
            if expired:
                add_to_counter(conn, SNAPSHOTS_DROPPED, expired)
        if expired:
            days = self.keep_s / 86400
            _LOG.warning("dropped %d face snapshots that waited for the server over %g days", expired, days)
        return expired

    def clear(self, conn: sqlite3.Connection) -> int:
        """Delete every snapshot inside the caller's write transaction (a wipe: not counted); how many."""
        return int(conn.execute("DELETE FROM snapshots").rowcount)

    def count(self) -> int:
        with self._connection.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])

    def size(self) -> int:
        """Bytes of the snapshots waiting."""
        with self._connection.read() as conn:
            return int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM snapshots").fetchone()[0])

    def dropped(self) -> int:
        """How many snapshots were dropped before the server had them, since the store was created."""
        return self._connection.counter(SNAPSHOTS_DROPPED)

    @property
    def _path(self) -> str:
        return str(self._connection.path)

    def _bound(self, conn: sqlite3.Connection) -> int:
        """Drop the oldest snapshots until their total size is within limit_bytes; how many."""
        excess = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM snapshots").fetchone()[0])
        excess -= self.limit_bytes
        if excess <= 0:
            return 0
        doomed = []
        for row_id, size in conn.execute("SELECT id, size FROM snapshots ORDER BY id").fetchall():
            if excess <= 0:
                break
            doomed.append(row_id)
            excess -= size
        conn.executemany("DELETE FROM snapshots WHERE id = ?", [(i,) for i in doomed])
        add_to_counter(conn, SNAPSHOTS_DROPPED, len(doomed))
        _LOG.warning(
            "face snapshots waiting for the server reached %g MiB: dropped the %d oldest (their events are "
            "still reported)",
            self.limit_bytes / (1 << 20),
            len(doomed),
        )
        return len(doomed)
