"""Face snapshots on the server and the clusters of unknown faces.

A snapshot is the best face of one track as an agent saw it: its event (device, camera, time, decision), the
aligned crop and a context view (JPEG), and its embedding. Unknown snapshots still under review are grouped
into clusters of the same unseen person by their embeddings: in time order, each joins the cluster whose mean
embedding is most similar to it when that similarity reaches the threshold (the agents' matching threshold),
otherwise it starts a cluster. A cluster's id is the id of its first snapshot, so it stays the same while new
snapshots join it; clusters are listed newest first."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from facefleet.link.checks import check_id
from facefleet.link.events import DECISIONS
from facefleet.server.domain.paging import PageSeal, encode_token, timed_cursor
from facefleet.server.domain.queries import check_filter_name, time_range
from facefleet.server.errors import InvalidArgumentError

SnapshotStatus = Literal["new", "dismissed", "enrolled"]
SNAPSHOT_STATUSES: tuple[SnapshotStatus, ...] = get_args(SnapshotStatus)
ImageKind = Literal["crop", "context"]
UNKNOWN_DECISIONS = ("unknown",)
"""Decisions whose snapshots are unknown faces to review."""


@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot, without its images. vector: (D,) float32 L2-normalised of model_id. person_id:
    who the agent matched (decision "match"), or who it was enrolled as (status "enrolled")."""

    event_id: str
    device_id: str
    camera: str
    time: datetime
    decision: str
    person_id: str
    quality: float
    model_id: str
    vector: npt.NDArray[np.float32] = field(repr=False)
    status: SnapshotStatus = "new"
    crop_bytes: int = 0
    context_bytes: int = 0


@dataclass(frozen=True)
class SnapshotFilter:
    """Which snapshots to list: a half-open time range, and optional device, camera, decision and status."""

    since: datetime
    until: datetime
    device_id: str = ""
    camera: str = ""
    decision: str = ""
    status: str = ""

    def __post_init__(self) -> None:
        since, until = time_range("filter", ("since", self.since), ("until", self.until))
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        if self.device_id:
            check_id("device_id", self.device_id)
        if self.camera:
            check_filter_name("cameras", self.camera)
        if self.decision and self.decision not in DECISIONS:
            raise InvalidArgumentError(f"filter decision must be one of {', '.join(DECISIONS)}")
        if self.status and self.status not in SNAPSHOT_STATUSES:
            raise InvalidArgumentError(f"filter status must be one of {', '.join(SNAPSHOT_STATUSES)}")

    def scope(self) -> tuple[object, ...]:
        """What a page token of snapshots with this filter is bound to: every field but the time range
        (facefleet.server.domain.paging)."""
        return (self.device_id, self.camera, self.decision, self.status)


@dataclass(frozen=True)
class SnapshotCursor:
    """Where a page of snapshots (newest first) ended: the last one's time and event id, and the seal of its
    token (facefleet.server.domain.paging)."""

    time_us: int
    event_id: str
    seal: str = ""

    def encode(self) -> str:
        return encode_token("s", self.seal, self.time_us, self.event_id)

    @classmethod
    def decode(cls, token: str) -> SnapshotCursor:
        return cls(*timed_cursor(token, "s"))

    def sealed(self, key: PageSeal, flt: SnapshotFilter) -> SnapshotCursor:
        """This cursor with the seal of its listing with `flt`."""
        return replace(self, seal=key.seal("s", (self.time_us, self.event_id), flt.scope()))

    def check(self, key: PageSeal, flt: SnapshotFilter) -> None:
        """InvalidArgumentError (NOT_ISSUED) unless this server sealed the cursor for a listing with `flt`."""
        key.check("s", (self.time_us, self.event_id), flt.scope(), self.seal)


@dataclass(frozen=True)
class SnapshotPage:
    """Snapshots newest first; next_cursor is None on the last page."""

    snapshots: tuple[Snapshot, ...]
    next_cursor: SnapshotCursor | None


@dataclass(frozen=True)
class UnknownCluster:
    """Snapshots of what is probably one unseen person. snapshots: newest first; best: the snapshot of the
    highest quality (the one to show)."""

    cluster_id: str
    model_id: str
    snapshots: tuple[Snapshot, ...]

    @property
    def count(self) -> int:
        return len(self.snapshots)

    @property
    def first_seen(self) -> datetime:
        return self.snapshots[-1].time

    @property
    def last_seen(self) -> datetime:
        return self.snapshots[0].time

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(sorted({s.device_id for s in self.snapshots}))

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(sorted({f"{s.device_id}/{s.camera}" for s in self.snapshots}))

    @property
    def best(self) -> Snapshot:
        return max(self.snapshots, key=lambda s: (s.quality, s.time))

    @cached_property
    def version(self) -> str:
        """16 hexadecimal digits of its snapshot ids: another version holds other snapshots."""
        ids = "\n".join(sorted(s.event_id for s in self.snapshots))
        return hashlib.sha256(ids.encode()).hexdigest()[:16]


def cluster_unknown(snapshots: Sequence[Snapshot], threshold: float) -> list[UnknownCluster]:
    """Group snapshots (any order) by model and embedding; clusters newest first (by their last snapshot).
    Cost: about one similarity product of each snapshot with those before it, ~0.7 s for 20,000 snapshots
    of as many people, ~0.1 s for 10,000 of a few hundred people."""
    clusters: list[UnknownCluster] = []
    by_model: dict[str, list[Snapshot]] = {}
    for snapshot in sorted(snapshots, key=lambda s: (s.time, s.event_id)):
        by_model.setdefault(snapshot.model_id, []).append(snapshot)
    for model_id, members in by_model.items():
        dim = members[0].vector.shape[0]
        members = [s for s in members if s.vector.shape[0] == dim]  # a model cannot change its dimension
        labels = _assign(np.stack([s.vector for s in members]).astype(np.float32, copy=False), threshold)
        groups: list[list[Snapshot]] = [[] for _ in range(int(labels.max()) + 1)]
        for snapshot, label in zip(members, labels.tolist(), strict=True):
            groups[label].append(snapshot)
        for group in groups:
            newest_first = tuple(reversed(group))
            clusters.append(UnknownCluster(group[0].event_id, model_id, newest_first))
    clusters.sort(key=lambda c: (c.last_seen, c.cluster_id), reverse=True)
    return clusters


_BLOCK = 128
"""Snapshots compared in one matrix product with the clusters there were before them."""
_BLOCKED_FROM = 1024
"""Clusters from which a block's product is worth it; below, each snapshot is compared with each cluster."""


def _assign(vectors: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.intp]:
    """The cluster of each vector (N, D), in order: the one whose normalised sum of vectors is the most
    similar (the first of equals) when that reaches threshold, else a new one; (N,) numbered from 0 on.
    A block's similarities to the clusters at its start come from one (block × clusters) product; a cluster
    a snapshot joins has its column for the rest of the block computed again, and the clusters started
    within the block are compared with each snapshot afresh."""
    count, dim = vectors.shape
    sums = np.zeros((count, dim), dtype=np.float32)
    means = np.zeros((count, dim), dtype=np.float32)
    labels = np.empty(count, dtype=np.intp)
    k = 0
    for start in range(0, count, _BLOCK):
        block = vectors[start : start + _BLOCK]
        before = k if k >= _BLOCKED_FROM else 0  # the clusters in the block's product
        similarity = block @ means[:before].T
        for row, vector in enumerate(block):
            best, value = -1, -np.inf
            if before:
                best = int(np.argmax(similarity[row]))
                value = float(similarity[row, best])
            if k > before:  # started since the block's product (all of them below _BLOCKED_FROM)
                fresh = means[before:k] @ vector
                i = int(np.argmax(fresh))
                if float(fresh[i]) > value:
                    best, value = before + i, float(fresh[i])
            if best < 0 or value < threshold:
                best = k
                k += 1
            labels[start + row] = best
            sums[best] += vector
            means[best] = sums[best] / max(float(np.linalg.norm(sums[best])), 1e-12)
            if best < before:  # its mean moved: the block's later snapshots are compared with the new one
                similarity[row + 1 :, best] = block[row + 1 :] @ means[best]
    return labels
