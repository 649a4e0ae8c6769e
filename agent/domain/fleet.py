"""Domain types of the agent's side of the fleet protocol, free of protobuf: what `facefleet.agent.fleet.wire`
converts the
server's messages into and what `facefleet.agent.fleet.sync` and the store work with.

Two revisions are in play. The store's own gallery revision moves with every change (local enrolments too)
and is what the matcher watches; the *server* revision numbers the server's changes and is what the agent
resumes its Watch from. A `SyncPoint` records the latter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from facefleet.agent.domain.records import InvalidRecordError, PersonUpsert
from facefleet.core.errors import EXIT_DATA, FaceFleetError


class WireError(FaceFleetError):
    """A server message or an event payload that cannot be converted; nothing was stored or sent."""

    exit_code = EXIT_DATA


@dataclass(frozen=True)
class GalleryDelta:
    """Server changes from revision from_revision to to_revision (one part of them when more_parts).

    upserts: people as the server has them now (each replaces the stored person and all their embeddings);
    deletes: person ids to erase; snapshot: the whole gallery, so everyone else is forgotten and
    to_revision/gallery_id are taken as they are, even when lower than before."""

    from_revision: int
    to_revision: int
    snapshot: bool = False
    upserts: tuple[PersonUpsert, ...] = ()
    deletes: tuple[str, ...] = ()
    gallery_id: str = ""
    more_parts: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "upserts", tuple(self.upserts))
        object.__setattr__(self, "deletes", tuple(self.deletes))
        if self.from_revision < 0 or self.to_revision < 0:
            raise InvalidRecordError(
                f"gallery delta revisions must not be negative, got {self.from_revision} → {self.to_revision}"
            )
        if not self.snapshot and self.to_revision < self.from_revision:
            raise InvalidRecordError(
                f"gallery delta goes backwards ({self.from_revision} → {self.to_revision}); "
                "only a snapshot may"
            )
        if self.snapshot and self.deletes:
            raise InvalidRecordError(
                "a gallery snapshot carries no deletes (everyone not in it is forgotten)"
            )
        counts = Counter(u.person.person_id for u in self.upserts)
        repeated = {p for p, n in counts.items() if n > 1} | (counts.keys() & set(self.deletes))
        if repeated:
            raise InvalidRecordError(
                f"gallery delta {self.from_revision} → {self.to_revision} names person(s) "
                f"{', '.join(sorted(map(repr, repeated)))} more than once"
            )


def join_parts(parts: Sequence[GalleryDelta]) -> GalleryDelta:
    """The one delta a multi-part delta stands for: every part but the last has more_parts, all share
    from_revision, to_revision, snapshot and gallery_id; their upserts and deletes add up."""
    if not parts:
        raise InvalidRecordError("no gallery delta parts to join")
    first, last = parts[0], parts[-1]
    key = (first.from_revision, first.to_revision, first.snapshot, first.gallery_id)
    for index, part in enumerate(parts):
        if (part.from_revision, part.to_revision, part.snapshot, part.gallery_id) != key:
            raise InvalidRecordError(
                f"gallery delta part {index + 1} is for {part.from_revision} → {part.to_revision} but "
                f"the first part was for {first.from_revision} → {first.to_revision}; "
                "the server mixed two deltas"
            )
        if part.more_parts != (part is not last):
            raise InvalidRecordError(
                f"gallery delta part {index + 1} of {len(parts)} has more_parts={part.more_parts}; "
                "only the last part may end the delta"
            )
    if len(parts) == 1:
        return first
    return GalleryDelta(
        first.from_revision,
        first.to_revision,
        first.snapshot,
        tuple(u for part in parts for u in part.upserts),
        tuple(d for part in parts for d in part.deletes),
        first.gallery_id,
    )


@dataclass(frozen=True)
class SyncPoint:
    """The server gallery the store's people came from: its revision and gallery_id, the embedding models
    that were watched, and when the last delta was applied (unix seconds; None: never synced)."""

    revision: int = 0
    gallery_id: str = ""
    models: tuple[str, ...] = ()
    applied_at: float | None = None


@dataclass(frozen=True)
class QueuedReport:
    """An event waiting in the store until the server acknowledges it. payload: the event as published
    (facefleet.agent.publish.events); gallery_revision: the server revision applied when it was queued;
    created_at: unix s."""

    report_id: int
    event_id: str
    payload: Mapping[str, Any]
    gallery_revision: int
    created_at: float


@dataclass(frozen=True)
class Registration:
    """What the agent tells the server when it (re)connects."""

    device_id: str
    agent_version: str
    hostname: str = ""
    model_versions: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    gallery_revision: int = 0
    gallery_id: str = ""
    model_statuses: tuple[ModelStatus, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Welcome:
    """The server's answer to Register."""

    gallery_revision: int
    gallery_id: str
    embedding_models: tuple[str, ...]
    max_report_events: int
    heartbeat_seconds: int


@dataclass(frozen=True)
class Heartbeat:
    """An idle Watch stream's sign of life, with the server's current revision."""

    gallery_revision: int


@dataclass(frozen=True)
class ReportOutcome:
    """What the server did with a report: events stored now, events it already had, and events it refused
    for good as (event_id, reason). Every event not refused is durably stored."""

    stored: int = 0
    duplicates: int = 0
    rejected: tuple[tuple[str, str], ...] = ()


# -- model versions ------------------------------------------------------------------------------------

MODEL_STATES = ("downloading", "verifying", "active", "failed")
"""Where an agent stands with an assigned model version (ModelActivation on the wire)."""


@dataclass(frozen=True)
class ModelFileSpec:
    """One file of a model version as the server publishes it: name, size in bytes, sha256 hex."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelRelease:
    """A model version the server wants the agent to run for one task. files empty: the version the agent
    already stores (a rollback); manifest_json: the version's manifest.json text ('' when files is empty)."""

    task: str
    model_id: str
    files: tuple[ModelFileSpec, ...] = ()
    manifest_json: str = ""
    rollout_id: int = 0

    @property
    def name_version(self) -> tuple[str, str]:
        name, _, version = self.model_id.partition("@")
        return name, version


@dataclass(frozen=True)
class ModelAssignment:
    """The whole desired model state for this agent: at most one release per task."""

    releases: tuple[ModelRelease, ...] = ()

    def by_task(self) -> dict[str, ModelRelease]:
        return {release.task: release for release in self.releases}


@dataclass(frozen=True)
class ModelStatus:
    """How an assigned version is doing: state in MODEL_STATES, reason (why it failed, or progress), when
    (unix seconds), and for a failure whether it is final for this rollout (else it is tried again)."""

    task: str
    model_id: str
    rollout_id: int
    state: str
    reason: str = ""
    at: float = 0.0
    final: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model_id": self.model_id,
            "rollout_id": self.rollout_id,
            "state": self.state,
            "reason": self.reason,
            "at": self.at,
            "final": self.final,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelStatus:
        return cls(
            str(data["task"]),
            str(data["model_id"]),
            int(data.get("rollout_id", 0)),
            str(data["state"]),
            str(data.get("reason", "")),
            float(data.get("at", 0.0)),
            bool(data.get("final", True)),
        )
