"""Face snapshots in the server's SQLite database (facefleet.server.state.snapshots), in SqliteState's
transactions; `add_snapshots`, `mark_enrolled` and `delete_person_snapshots` run inside the caller's
transaction.

Every write that stores, marks or deletes snapshots moves a change count in the meta table on, in the same
transaction (one statement, an increment, so ingest may run it unserialised on PostgreSQL): the review key
changes with any change, through any replica."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from facefleet.link.events import Event
from facefleet.server.domain.queries import from_us, to_us
from facefleet.server.domain.snapshots import (
    UNKNOWN_DECISIONS,
    ImageKind,
    Snapshot,
    SnapshotCursor,
    SnapshotFilter,
    SnapshotPage,
    SnapshotStatus,
)
from facefleet.server.errors import FailedPreconditionError, NotFoundError
from facefleet.server.state.snapshots import SnapshotState
from facefleet.server.state.sql import keyset
from facefleet.server.state.sql.meta import EXPIRE_BATCH_ROWS, Connection, Transactions, bump

_COLUMNS = (
    "event_id, device_id, camera, time_us, decision, person_id, quality, model_id, vector, status, "
    "length(crop_jpeg), length(context_jpeg)"
)
_CHUNK = 500
_CHANGES_KEY = "snapshot_changes"

log = logging.getLogger(__name__)


class SqlSnapshotState(SnapshotState):
    """Snapshots in the server's SQLite database."""

    expire_batch = EXPIRE_BATCH_ROWS
    """Snapshots retention deletes per write transaction."""

    def __init__(self, core: Transactions) -> None:
        self._core = core

    def list_snapshots(self, flt: SnapshotFilter, after: SnapshotCursor | None, limit: int) -> SnapshotPage:
        # the cursor as a row value: an index bound at any depth (keyset)
        upper, bound = keyset.before(
            to_us(flt.until), (after.time_us, after.event_id) if after else None, "event_id"
        )
        where = ["time_us >= ?", upper]
        params: list[object] = [to_us(flt.since), *bound]
        for column, value in (
            ("device_id", flt.device_id),
            ("camera", flt.camera),
            ("decision", flt.decision),
            ("status", flt.status),
        ):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        with self._core.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM snapshots WHERE {' AND '.join(where)} "  # noqa: S608
                "ORDER BY time_us DESC, event_id DESC LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
        snapshots = tuple(_snapshot(row) for row in rows[:limit])
        more = len(rows) > limit and snapshots
        last = snapshots[-1] if more else None
        return SnapshotPage(snapshots, SnapshotCursor(to_us(last.time), last.event_id) if last else None)

    def unknown_snapshots(self, since: datetime, limit: int) -> list[Snapshot]:
        marks = ", ".join("?" * len(UNKNOWN_DECISIONS))
        with self._core.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM snapshots WHERE status = 'new' "  # noqa: S608
                f"AND decision IN ({marks}) AND time_us >= ? ORDER BY time_us DESC LIMIT ?",
                (*UNKNOWN_DECISIONS, to_us(since), limit),
            ).fetchall()
        return [_snapshot(row) for row in rows]

    def review_key(self, since: datetime) -> tuple[object, ...]:
        """In one statement, so one view of the database; the times (µs) summed modulo a prime, so that any
        number of them stays within 64 bits."""
        marks = ", ".join("?" * len(UNKNOWN_DECISIONS))
        with self._core.connection() as conn:
            row = conn.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'gallery_id'), "  # noqa: S608
                "(SELECT value FROM meta WHERE key = ?), count(*), coalesce(min(time_us), 0), "
                "coalesce(max(time_us), 0), coalesce(sum(time_us % 1000000007), 0) FROM snapshots "
                f"WHERE status = 'new' AND decision IN ({marks}) AND time_us >= ?",
                (_CHANGES_KEY, *UNKNOWN_DECISIONS, to_us(since)),
            ).fetchone()
        gallery_id, changes, *figures = row
        return (str(gallery_id or ""), int(changes or 0), *(int(value) for value in figures))

    def get_snapshots(self, event_ids: Sequence[str]) -> list[Snapshot]:
        found: dict[str, Snapshot] = {}
        with self._core.connection() as conn:
            for start in range(0, len(event_ids), _CHUNK):
                chunk = list(event_ids[start : start + _CHUNK])
                marks = ", ".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT {_COLUMNS} FROM snapshots WHERE event_id IN ({marks})",  # noqa: S608
                    chunk,
                ):
                    found[row[0]] = _snapshot(row)
        for event_id in event_ids:
            if event_id not in found:
                raise NotFoundError(f"no snapshot {event_id!r}; it may have expired or been deleted")
        return [found[event_id] for event_id in event_ids]

    def image(self, event_id: str, kind: ImageKind) -> bytes:
        column = "crop_jpeg" if kind == "crop" else "context_jpeg"
        with self._core.connection() as conn:
            row = conn.execute(
                f"SELECT {column} FROM snapshots WHERE event_id = ?",  # noqa: S608
                (event_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no snapshot {event_id!r}; it may have expired or been deleted")
        return bytes(row[0])

    def set_status(self, event_ids: Sequence[str], status: SnapshotStatus) -> int:
        with self._core.write() as conn:
            changed = _update(
                conn, event_ids, "UPDATE snapshots SET status = ? WHERE status != 'enrolled' AND", status
            )
            if changed:
                bump(conn, _CHANGES_KEY)
            return changed

    def delete_snapshots(self, event_ids: Sequence[str]) -> int:
        with self._core.write() as conn:
            deleted = _update(conn, event_ids, "DELETE FROM snapshots WHERE")
            if deleted:
                bump(conn, _CHANGES_KEY)
        self._core.erased()
        return deleted

    def expire_snapshots(self, before: datetime) -> int:
        """In write transactions of expire_batch snapshots each, then the erased images out of the WAL
        once, also when a batch fails: ingest and the other writes wait for one batch at most."""
        before_us, expired = to_us(before), 0
        try:
            while True:
                with self._core.write() as conn:
                    deleted = conn.execute(
                        "DELETE FROM snapshots WHERE event_id IN "
                        "(SELECT event_id FROM snapshots WHERE time_us < ? ORDER BY time_us LIMIT ?)",
                        (before_us, self.expire_batch),
                    ).rowcount
                    if deleted:
                        bump(conn, _CHANGES_KEY)
                expired += deleted
                if deleted < self.expire_batch:
                    break
        except BaseException:
            if expired:  # the earlier batches' faces go all the same; the sweep's own error is the one raised
                try:
                    self._core.erased()
                except Exception:
                    log.exception(
                        "the WAL of the %d snapshots expired before the failure is not emptied", expired
                    )
            raise
        if expired:
            self._core.erased()
        return expired


def add_snapshots(conn: Connection, events: Sequence[Event]) -> int:
    """Store the snapshots these events carry (a stored id is left as it is); how many were new."""
    rows = [
        (
            e.event_id,
            e.device_id,
            e.camera,
            to_us(e.time),
            e.decision,
            e.person_id,
            float(e.snapshot.embedding.quality or e.quality),
            e.snapshot.embedding.model_id,
            np.asarray(e.snapshot.embedding.vector, dtype="<f4").tobytes(),
            e.snapshot.crop_jpeg,
            e.snapshot.context_jpeg,
        )
        for e in events
        if e.snapshot is not None
    ]
    cursor = conn.executemany(
        "INSERT INTO snapshots (event_id, device_id, camera, time_us, decision, person_id, quality, "
        "model_id, vector, crop_jpeg, context_jpeg, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new') "
        "ON CONFLICT (event_id) DO NOTHING",
        rows,
    )
    stored = max(0, int(cursor.rowcount))
    if stored and any(e.decision in UNKNOWN_DECISIONS for e in events if e.snapshot is not None):
        # only faces to review change the review; the transaction's last statement, so that the count's row
        # stays locked only while it commits
        bump(conn, _CHANGES_KEY)
    return stored


def mark_enrolled(conn: Connection, event_ids: Sequence[str], person_id: str) -> int:
    """The snapshots a person was just enrolled from (inside the enrolment's transaction). A snapshot
    enrolled already (by another operator, or through another replica, since it was read) or gone raises
    FailedPreconditionError, so the enrolment's transaction rolls back and no face is enrolled twice."""
    wanted = list(dict.fromkeys(event_ids))
    changed = _update(
        conn,
        wanted,
        "UPDATE snapshots SET status = 'enrolled', person_id = ? WHERE status != 'enrolled' AND",
        person_id,
    )
    if changed < len(wanted):
        raise FailedPreconditionError(
            f"{len(wanted) - changed} of the {len(wanted)} snapshots were enrolled meanwhile (by another "
            "operator?) or have expired; nothing was enrolled: list the unknown faces again and enrol what "
            "is still under review"
        )
    if changed:
        bump(conn, _CHANGES_KEY)
    return changed


def delete_person_snapshots(conn: Connection, person_id: str) -> int:
    """Delete the snapshots tied to a person (those they were enrolled from, and those agents matched to
    them), inside the caller's transaction; how many."""
    deleted = max(0, int(conn.execute("DELETE FROM snapshots WHERE person_id = ?", (person_id,)).rowcount))
    if deleted:
        bump(conn, _CHANGES_KEY)
    return deleted


def _update(conn: Connection, event_ids: Sequence[str], statement: str, *first: object) -> int:
    changed = 0
    for start in range(0, len(event_ids), _CHUNK):
        chunk = list(event_ids[start : start + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        changed += conn.execute(f"{statement} event_id IN ({marks})", (*first, *chunk)).rowcount
    return changed


def _snapshot(row: tuple[object, ...]) -> Snapshot:
    event_id, device_id, camera, time_us, decision, person_id, quality, model_id, vector, status = row[:10]
    assert status in ("new", "dismissed", "enrolled")
    assert isinstance(vector, bytes)
    return Snapshot(
        event_id=str(event_id),
        device_id=str(device_id),
        camera=str(camera),
        time=from_us(int(str(time_us))),
        decision=str(decision),
        person_id=str(person_id),
        quality=float(str(quality)),
        model_id=str(model_id),
        vector=np.frombuffer(vector, dtype="<f4").astype(np.float32),
        status=status,
        crop_bytes=int(str(row[10])),
        context_bytes=int(str(row[11])),
    )
