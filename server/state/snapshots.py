"""The server's face snapshots behind one interface (facefleet.server.domain.snapshots). Snapshots arrive
with their events (State.add_events stores both in one transaction, idempotent by event id) and are marked
enrolled in the transaction that enrols their person (State.add_person / replace_person). All methods are
blocking, one transaction each; they raise NotFoundError or StateError."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from facefleet.server.domain.snapshots import (
    ImageKind,
    Snapshot,
    SnapshotCursor,
    SnapshotFilter,
    SnapshotPage,
    SnapshotStatus,
)


class SnapshotState(abc.ABC):
    @abc.abstractmethod
    def list_snapshots(self, flt: SnapshotFilter, after: SnapshotCursor | None, limit: int) -> SnapshotPage:
        """Matching snapshots newest first, after the cursor, at most limit."""

    @abc.abstractmethod
    def unknown_snapshots(self, since: datetime, limit: int) -> list[Snapshot]:
        """Unknown faces still under review (status new) taken at or after since: the newest `limit`."""

    @abc.abstractmethod
    def review_key(self, since: datetime) -> tuple[object, ...]:
        """The unknown faces under review taken at or after since, in a few values: the gallery id (a
        restored database gets a new one), a count of the changes to snapshots (each store, status change
        and delete bumps it in its own transaction), and how many faces there are, the oldest's and the
        newest's time and a sum of their times, read from an index. They change when a snapshot arrives,
        leaves the review or expires, through any replica, even when it shares its time with another."""

    @abc.abstractmethod
    def get_snapshots(self, event_ids: Sequence[str]) -> list[Snapshot]:
        """The snapshots with these ids, in that order; NotFoundError naming the first missing one."""

    @abc.abstractmethod
    def image(self, event_id: str, kind: ImageKind) -> bytes:
        """A snapshot's crop or context JPEG (b"" for a context the agent did not send)."""

    @abc.abstractmethod
    def set_status(self, event_ids: Sequence[str], status: SnapshotStatus) -> int:
        """Mark snapshots (dismissed, or new again); how many changed."""

    @abc.abstractmethod
    def delete_snapshots(self, event_ids: Sequence[str]) -> int:
        """Delete snapshots and their images (their events stay); how many were deleted."""

    @abc.abstractmethod
    def expire_snapshots(self, before: datetime) -> int:
        """Delete snapshots taken before `before` (retention); how many."""
