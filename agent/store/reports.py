"""The durable queue of events to report to the fleet server: link Events (facefleet.link.events) kept as
their protobuf bytes (facefleet.link.serde), oldest first, until the server acknowledges them. The table is
the store's migration 3 (facefleet.agent.store.migrations); this module and that migration encode events the
same way, with `encode` and `decode` below. A face event's snapshot is kept apart, bounded on its own
(facefleet.agent.store.snapshots), and joins its event again when the event is read back.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from google.protobuf.message import DecodeError

from facefleet.agent.domain.fleet import QueuedReport
from facefleet.agent.domain.records import InvalidRecordError
from facefleet.agent.store.connection import StoreConnection, add_to_counter, drop_oldest
from facefleet.agent.store.snapshots import SnapshotQueue
from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.events import Event, FaceSnapshot
from facefleet.v1 import events_pb2

_LOG = logging.getLogger(__name__)

DEFAULT_REPORT_LIMIT = 100_000
REPORTS_DROPPED = "reports_dropped"
"""Counter of queued reports dropped: the oldest when the queue was full, and any that could not be read."""
REPORTS_REFUSED = "reports_refused"
"""Counter of queued reports the server refused for good (a time its clock cannot believe, an id that is not
a UUID, …) and that left the queue with their refusal."""


def encode(event: Event) -> bytes:
    """The bytes the queue keeps for an event: its facefleet.v1.Event message."""
    return serde.event_to_proto(event).SerializeToString()


def decode(data: bytes) -> Event:
    """An event back from its stored bytes; DecodeError or LinkError when they are not a valid Event."""
    return serde.event_from_proto(events_pb2.Event.FromString(data))


@dataclass(frozen=True)
class PreparedReport:
    """An event checked and encoded for the report queue, its snapshot apart: all that may fail before a
    write transaction is opened."""

    event_id: str
    data: bytes
    gallery_revision: int
    snapshot: FaceSnapshot | None


def prepare_report(event: Event, gallery_revision: int = 0) -> PreparedReport:
    """InvalidRecordError for an event id the queue cannot hold, LinkError for an event past the link's
    limits."""
    event_id = event.event_id
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or not event_id.isascii():
        raise InvalidRecordError(
            f"a reported event needs an event_id of 1–64 ASCII characters, got {event_id!r}"
        )
    data = encode(replace(event, snapshot=None) if event.snapshot is not None else event)
    return PreparedReport(event_id, data, max(0, int(gallery_revision)), event.snapshot)


class ReportQueue:
    """Events to report to the server, oldest first, kept until it acknowledges them. When more than
    `limit` wait, the oldest are dropped, counted in the REPORTS_DROPPED counter and logged. Snapshots of
    face events wait in `snapshots`."""

    def __init__(
        self,
        connection: StoreConnection,
        limit: int = DEFAULT_REPORT_LIMIT,
        snapshots: SnapshotQueue | None = None,
    ) -> None:
        if limit < 1:
            raise InvalidRecordError(f"report queue limit must be at least 1, got {limit}")
        self._connection = connection
        self.limit = limit
        self.snapshots = snapshots if snapshots is not None else SnapshotQueue(connection)

    def put(self, event: Event, gallery_revision: int = 0) -> bool:
        """Queue an event by its event_id with the server gallery revision the agent had applied; False when
        that id is already queued."""
        report = prepare_report(event, gallery_revision)
        with self._connection.write() as conn:
            return self.add(conn, report)

    def add(self, conn: sqlite3.Connection, report: PreparedReport) -> bool:
        """Queue a prepared report inside the caller's write transaction (e.g. with the event's MQTT
        message, EmbeddingStore.queue_event); False when its event id is already queued."""
        now = time.time()
        cursor = conn.execute(
            "INSERT OR IGNORE INTO reports (event_id, event, gallery_revision, created_at) "
            "VALUES (?, ?, ?, ?)",
            (report.event_id, report.data, report.gallery_revision, now),
        )
        if not cursor.rowcount:
            return False
        if report.snapshot is not None:
            self.snapshots.add(conn, report.event_id, report.snapshot, now)
        path = self._connection.path
        drop_oldest(conn, "reports", self.limit, REPORTS_DROPPED, path, self._count_snapshots_of_oldest)
        return True

    def _count_snapshots_of_oldest(self, conn: sqlite3.Connection, reports: int) -> None:
        """Count the snapshots of the `reports` oldest queued events, about to be dropped with them."""
        oldest = [row[0] for row in conn.execute("SELECT id FROM reports ORDER BY id LIMIT ?", (reports,))]
        self.snapshots.count_dropped_with(conn, oldest)

    def pending(
        self, limit: int = 500, max_bytes: int | None = None, skip: Collection[str] = ()
    ) -> list[QueuedReport]:
        """The oldest queued events with their snapshots, oldest first, but those whose event id is in `skip`
        (kept, e.g. deferred by the server): at most `limit`, and at most `max_bytes` of events and snapshots
        together (but always the oldest one). A row that no longer decodes (a damaged file) is dropped,
        counted and logged, so one bad row never blocks the queue."""
        skipped = json.dumps(sorted(skip))  # a JSON array of event ids, read by json_each
        with self._connection.read() as conn:
            if max_bytes is not None:
                limit = _within(conn, limit, max_bytes, skipped)
            rows = conn.execute(
                "SELECT id, event_id, event, gallery_revision, created_at FROM reports "
                "WHERE event_id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
                (skipped, limit),
            ).fetchall()
            snapshots = self.snapshots.load(conn, rows[0][0], rows[-1][0]) if rows else {}
        reports, unreadable = [], []
        for report_id, event_id, data, revision, created in rows:
            try:
                event = decode(data)
                if event_id in snapshots and event.kind == "face":
                    event = replace(event, snapshot=snapshots[event_id])
                reports.append(QueuedReport(report_id, event_id, event, revision, created))
            except (DecodeError, LinkError) as exc:
                _LOG.warning(
                    "report %s in %s is unreadable (%s): dropped", event_id, self._connection.path, exc
                )
                unreadable.append(report_id)
        if unreadable and not self._connection.read_only:
            with self._connection.write() as conn:
                self.snapshots.count_dropped_with(conn, unreadable)
                deleted = _delete(conn, unreadable)
                add_to_counter(conn, REPORTS_DROPPED, deleted)
        return reports

    def delete(self, report_ids: Sequence[int], refused: Sequence[int] = ()) -> int:
        """Remove acknowledged events in one transaction; how many were still queued. Those of them in
        `refused` (the server refused them for good) are added to the REPORTS_REFUSED counter in the same
        transaction, so each is counted once however often its acknowledgement is retried."""
        if not report_ids:
            return 0
        refused_ids = set(refused) & set(report_ids)
        with self._connection.write() as conn:
            gone = _delete(conn, sorted(refused_ids))
            if gone:
                add_to_counter(conn, REPORTS_REFUSED, gone)
            return gone + _delete(conn, [i for i in report_ids if i not in refused_ids])

    def clear(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Delete every queued event and its snapshot inside the caller's write transaction (a wipe, not a
        drop: nothing is counted); (events, snapshots) deleted."""
        snapshots = self.snapshots.clear(conn)
        return int(conn.execute("DELETE FROM reports").rowcount), snapshots

    def count(self) -> int:
        with self._connection.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])

    def dropped(self) -> int:
        """How many queued events were dropped since the store was created."""
        return self._connection.counter(REPORTS_DROPPED)

    def refused(self) -> int:
        """How many queued events the server refused for good since the store was created."""
        return self._connection.counter(REPORTS_REFUSED)


def _within(conn: sqlite3.Connection, limit: int, max_bytes: int, skipped: str = "[]") -> int:
    """How many of the `limit` oldest reports (not skipped: a JSON array of event ids) fit in max_bytes with
    their snapshots (at least one, if any)."""
    sizes = conn.execute(
        "SELECT length(r.event) + COALESCE(s.size, 0) FROM reports r "
        "LEFT JOIN snapshots s ON s.event_id = r.event_id "
        "WHERE r.event_id NOT IN (SELECT value FROM json_each(?)) ORDER BY r.id LIMIT ?",
        (skipped, limit),
    ).fetchall()
    total, fitting = 0, 0
    for (size,) in sizes:
        total += size
        if total > max_bytes and fitting:
            break
        fitting += 1
    return min(limit, max(fitting, 1))


def _delete(conn: sqlite3.Connection, report_ids: Sequence[int]) -> int:
    cursor = conn.executemany("DELETE FROM reports WHERE id = ?", [(int(i),) for i in report_ids])
    return int(cursor.rowcount)
