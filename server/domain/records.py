"""The server's domain types: frozen dataclasses validated on construction, free of protobuf and SQL.

Times are timezone-aware UTC datetimes. Vectors are (D,) float32, L2-normalised. Every text field has a
size limit, so a malformed request is refused with InvalidArgumentError naming the field before it is stored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Literal

import numpy as np
import numpy.typing as npt

from facefleet.server.errors import InvalidArgumentError
from facefleet.vision.faces import EXPRESSION_LABELS

FloatArray = npt.NDArray[np.float32]

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
"""person_id and device_id: 1–128 letters, digits, '.', '_', ':', '@', '-', starting alphanumeric."""
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}@[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
MAX_NAME_CHARS = 200
MAX_GROUPS = 64
MAX_LABEL_CHARS = 128
MAX_METADATA_BYTES = 16 * 1024
MAX_EMBEDDINGS_PER_PERSON = 256
MIN_DIM, MAX_DIM = 16, 4096
MAX_MAP_ENTRIES = 32
MAX_REASON_CHARS = 512

EventKind = Literal["face", "access"]
Decision = Literal["match", "unknown", "ambiguous", "undecided", "granted", "denied"]
EVENT_KINDS: tuple[EventKind, ...] = ("face", "access")
FACE_DECISIONS: tuple[Decision, ...] = ("match", "unknown", "ambiguous", "undecided")
ACCESS_DECISIONS: tuple[Decision, ...] = ("granted", "denied")
DECISIONS: tuple[Decision, ...] = FACE_DECISIONS + ACCESS_DECISIONS
Role = Literal["admin", "query"]
ROLES: tuple[Role, ...] = ("admin", "query")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_id(kind: str, value: str) -> str:
    if not ID_PATTERN.match(value):
        raise InvalidArgumentError(
            f"{kind} {value[:80]!r} is not valid: use 1–128 letters, digits, '.', '_', ':', '@' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_text(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgumentError(f"{name} is {len(value)} characters long; the limit is {limit}")
    if any(ord(ch) < 32 for ch in value):
        raise InvalidArgumentError(f"{name} contains control characters")
    return value


def check_model_id(value: str) -> str:
    if not MODEL_ID_PATTERN.match(value):
        raise InvalidArgumentError(f"model id {value[:80]!r} is not valid: expected '<name>@<version>'")
    return value


def check_metadata(value: str) -> str:
    """A JSON object as compact text; '' means '{}'."""
    if not value:
        return "{}"
    if len(value.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidArgumentError(f"metadata_json is over the {MAX_METADATA_BYTES // 1024} KiB limit")
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise InvalidArgumentError(f"metadata_json is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidArgumentError(f"metadata_json must be a JSON object, got {type(parsed).__name__}")
    return json.dumps(parsed, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def check_groups(groups: tuple[str, ...]) -> tuple[str, ...]:
    if len(groups) > MAX_GROUPS:
        raise InvalidArgumentError(f"{len(groups)} groups; the limit is {MAX_GROUPS}")
    for group in groups:
        if not group or len(group) > MAX_LABEL_CHARS or any(ord(ch) < 33 for ch in group):
            raise InvalidArgumentError(
                f"group {group[:80]!r} is not valid: 1–{MAX_LABEL_CHARS} characters without spaces"
            )
    return tuple(dict.fromkeys(groups))


def check_utc(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidArgumentError(f"{name} must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc)


def check_health(health: Mapping[str, float]) -> dict[str, float]:
    """Agent health figures: at most MAX_MAP_ENTRIES short names with finite values."""
    if len(health) > MAX_MAP_ENTRIES or any(
        not key or len(key) > 64 or not math.isfinite(value) for key, value in health.items()
    ):
        raise InvalidArgumentError(
            f"health: at most {MAX_MAP_ENTRIES} figures with 1–64 character names, finite values"
        )
    return dict(health)


@dataclass(frozen=True, eq=False)
class Embedding:
    """One face embedding. vector: (D,) float32, L2-normalised (normalised here when it is not)."""

    model_id: str
    vector: FloatArray = field(repr=False)
    quality: float = 0.0
    source: str = "client"

    def __post_init__(self) -> None:
        check_model_id(self.model_id)
        vector = np.asarray(self.vector)
        if vector.ndim != 1 or not MIN_DIM <= vector.shape[0] <= MAX_DIM:
            raise InvalidArgumentError(
                f"embedding of {self.model_id} must be a vector of {MIN_DIM}–{MAX_DIM} values, "
                f"got shape {vector.shape}"
            )
        vector = vector.astype(np.float32)
        if not np.all(np.isfinite(vector)):
            raise InvalidArgumentError(f"embedding of {self.model_id} holds NaN or infinite values")
        norm = float(np.linalg.norm(vector))
        if norm < 1e-6:
            raise InvalidArgumentError(f"embedding of {self.model_id} is all zeros")
        if abs(norm - 1.0) > 1e-4:
            vector = vector / np.float32(norm)
        vector.setflags(write=False)
        object.__setattr__(self, "vector", vector)
        if not math.isfinite(self.quality) or not 0.0 <= self.quality <= 1.0:
            raise InvalidArgumentError(f"embedding quality must be within 0–1, got {self.quality}")
        check_text("embedding source", self.source, MAX_LABEL_CHARS)

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    def same_as(self, other: Embedding) -> bool:
        return (
            self.model_id == other.model_id
            and self.source == other.source
            and math.isclose(self.quality, other.quality, abs_tol=1e-6)
            and np.array_equal(self.vector, other.vector)
        )


@dataclass(frozen=True, eq=False)
class Person:
    """An enrolled person. embeddings may be empty in listings that leave the vectors out."""

    person_id: str
    display_name: str = ""
    groups: tuple[str, ...] = ()
    metadata_json: str = "{}"
    embeddings: tuple[Embedding, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    revision: int = 0

    def __post_init__(self) -> None:
        check_id("person_id", self.person_id)
        check_text("display_name", self.display_name, MAX_NAME_CHARS)
        object.__setattr__(self, "groups", check_groups(tuple(self.groups)))
        object.__setattr__(self, "metadata_json", check_metadata(self.metadata_json))
        object.__setattr__(self, "embeddings", tuple(self.embeddings))
        if len(self.embeddings) > MAX_EMBEDDINGS_PER_PERSON:
            raise InvalidArgumentError(
                f"person {self.person_id} would have {len(self.embeddings)} embeddings; "
                f"the limit is {MAX_EMBEDDINGS_PER_PERSON}"
            )

    def model_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.model_id for e in self.embeddings))

    def with_models(self, model_ids: frozenset[str] | None) -> Person:
        """The same person with only embeddings of model_ids (all when None)."""
        if model_ids is None:
            return self
        kept = tuple(e for e in self.embeddings if e.model_id in model_ids)
        return self if len(kept) == len(self.embeddings) else replace(self, embeddings=kept)

    def estimated_bytes(self) -> int:
        """Rough encoded size in a gallery delta (used to split large deltas into parts)."""
        text = len(self.person_id) + len(self.display_name.encode()) + len(self.metadata_json.encode())
        return 64 + text + sum(len(g) + 2 for g in self.groups) + sum(4 * e.dim + 96 for e in self.embeddings)

    def same_as(self, other: Person) -> bool:
        """Equal content (ids, names, groups, metadata, embeddings, revision)."""
        return (
            (self.person_id, self.display_name, self.groups, self.metadata_json, self.revision)
            == (other.person_id, other.display_name, other.groups, other.metadata_json, other.revision)
            and len(self.embeddings) == len(other.embeddings)
            and all(a.same_as(b) for a, b in zip(self.embeddings, other.embeddings, strict=True))
        )


OnExisting = Literal["fail", "replace", "append"]
MAX_ENROL_IMAGES = 32


@dataclass(frozen=True)
class EnrolmentRequest:
    """An operator's enrolment: person fields (person_id '' = assign one), images and/or embeddings."""

    person_id: str
    display_name: str = ""
    groups: tuple[str, ...] = ()
    metadata_json: str = ""
    images: tuple[bytes, ...] = ()
    embeddings: tuple[Embedding, ...] = ()
    on_existing: OnExisting = "fail"

    def __post_init__(self) -> None:
        if not self.images and not self.embeddings:
            raise InvalidArgumentError("enrolment needs at least one image or embedding")
        if len(self.images) > MAX_ENROL_IMAGES:
            raise InvalidArgumentError(
                f"{len(self.images)} images in one enrolment; the limit is {MAX_ENROL_IMAGES}"
            )


@dataclass(frozen=True)
class EnrolledFace:
    """The face found in one enrolment image. box_xyxy: image pixels (left, top, right, bottom)."""

    image_index: int
    box_xyxy: tuple[float, float, float, float]
    quality: float
    model_ids: tuple[str, ...]


@dataclass(frozen=True)
class EnrolmentResult:
    person: Person
    faces: tuple[EnrolledFace, ...]


@dataclass(frozen=True)
class PersonUpdate:
    """Fields to change on a person; None keeps the stored value."""

    person_id: str
    display_name: str | None = None
    groups: tuple[str, ...] | None = None
    metadata_json: str | None = None

    def __post_init__(self) -> None:
        check_id("person_id", self.person_id)
        if self.display_name is not None:
            check_text("display_name", self.display_name, MAX_NAME_CHARS)
        if self.groups is not None:
            object.__setattr__(self, "groups", check_groups(self.groups))
        if self.metadata_json is not None:
            object.__setattr__(self, "metadata_json", check_metadata(self.metadata_json))
        if self.display_name is None and self.groups is None and self.metadata_json is None:
            raise InvalidArgumentError(
                f"{self.person_id}: nothing to change; give display_name, groups or metadata_json"
            )


@dataclass(frozen=True)
class Crop:
    """An aligned 112×112 face crop kept for re-embedding with future models. data: encoded image."""

    image_format: Literal["png", "jpeg"]
    data: bytes
    source: str


@dataclass(frozen=True, eq=False)
class GalleryDelta:
    """What brings a gallery from from_revision to to_revision; snapshot: replace everything."""

    from_revision: int
    to_revision: int
    snapshot: bool
    upserts: tuple[Person, ...] = ()
    deletes: tuple[str, ...] = ()
    gallery_id: str = ""
    more_parts: bool = False

    def __post_init__(self) -> None:
        if self.snapshot and self.deletes:
            raise ValueError("a snapshot carries no deletes")
        if self.to_revision < self.from_revision:
            raise ValueError(f"delta goes backwards: {self.from_revision} → {self.to_revision}")


@dataclass(frozen=True)
class Heartbeat:
    """Sent on an idle Watch stream."""

    gallery_revision: int
    server_time: datetime


@dataclass(frozen=True)
class ExpressionResult:
    label: str
    probabilities: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in EXPRESSION_LABELS:
            raise InvalidArgumentError(
                f"expression label {self.label[:40]!r} is not one of {', '.join(EXPRESSION_LABELS)}"
            )
        if len(self.probabilities) > MAX_MAP_ENTRIES or any(
            key not in EXPRESSION_LABELS or not 0.0 <= value <= 1.0
            for key, value in self.probabilities.items()
        ):
            raise InvalidArgumentError("expression probabilities must map FER labels to values within 0–1")


@dataclass(frozen=True)
class Event:
    """One face or access event reported by an agent."""

    event_id: str
    device_id: str
    time: datetime
    kind: EventKind
    decision: Decision
    camera: str = ""
    person_id: str = ""
    score: float = 0.0
    margin: float = 0.0
    expression: ExpressionResult | None = None
    quality: float = 0.0
    model_versions: Mapping[str, str] = field(default_factory=dict)
    gallery_revision: int = 0
    door: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.event_id or len(self.event_id) > 64 or not self.event_id.isascii():
            raise InvalidArgumentError("event_id must be 1–64 ASCII characters (a UUID)")
        check_id("device_id", self.device_id)
        object.__setattr__(self, "time", check_utc("time", self.time))
        if self.time.year < 2000:
            raise InvalidArgumentError(
                f"event time {self.time.isoformat()} is before 2000: set the device's clock"
            )
        if self.kind not in EVENT_KINDS:
            raise InvalidArgumentError(
                f"event kind must be one of {', '.join(EVENT_KINDS)}, not {self.kind!r}"
            )
        allowed = FACE_DECISIONS if self.kind == "face" else ACCESS_DECISIONS
        if self.decision not in allowed:
            raise InvalidArgumentError(
                f"a {self.kind} event needs a decision among {', '.join(allowed)}, got {self.decision!r}"
            )
        if self.person_id:
            check_id("person_id", self.person_id)
        elif self.decision == "match":
            raise InvalidArgumentError("a 'match' event needs a person_id")
        for name, value in (("score", self.score), ("margin", self.margin), ("quality", self.quality)):
            if not math.isfinite(value) or abs(value) > 1e6:
                raise InvalidArgumentError(f"event {name} must be a finite number, got {value}")
        for name, text in (("camera", self.camera), ("door", self.door)):
            check_text(name, text, MAX_LABEL_CHARS)
        check_text("reason", self.reason, MAX_REASON_CHARS)
        if len(self.model_versions) > MAX_MAP_ENTRIES or any(
            len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS for k, v in self.model_versions.items()
        ):
            raise InvalidArgumentError(f"model_versions: at most {MAX_MAP_ENTRIES} short entries")
        if self.gallery_revision < 0:
            raise InvalidArgumentError("gallery_revision must not be negative")


@dataclass(frozen=True)
class Registration:
    """What an agent tells the server when it registers."""

    device_id: str
    agent_version: str = ""
    hostname: str = ""
    model_versions: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    gallery_revision: int = 0
    gallery_id: str = ""
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_id("device_id", self.device_id)
        object.__setattr__(self, "groups", check_groups(tuple(self.groups)))
        check_text("agent_version", self.agent_version, MAX_LABEL_CHARS)
        check_text("hostname", self.hostname, 255)
        if len(self.capabilities) > MAX_MAP_ENTRIES or any(
            len(c) > MAX_LABEL_CHARS for c in self.capabilities
        ):
            raise InvalidArgumentError(f"capabilities: at most {MAX_MAP_ENTRIES} short entries")
        if len(self.model_versions) > MAX_MAP_ENTRIES or any(
            len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS for k, v in self.model_versions.items()
        ):
            raise InvalidArgumentError(f"model_versions: at most {MAX_MAP_ENTRIES} short entries")


@dataclass(frozen=True)
class AgentInfo:
    """A registered agent as the state knows it."""

    device_id: str
    agent_version: str
    hostname: str
    model_versions: Mapping[str, str]
    capabilities: tuple[str, ...]
    gallery_revision: int
    registered_at: datetime
    last_seen: datetime
    health: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Welcome:
    """What Register answers."""

    gallery_revision: int
    gallery_id: str
    embedding_models: tuple[str, ...]
    max_report_events: int
    heartbeat_seconds: int
    server_time: datetime


@dataclass(frozen=True)
class ReportOutcome:
    """Result of storing a batch: new events, repeats, and refused events (event_id, reason)."""

    stored: int
    duplicates: int
    rejected: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TokenRecord:
    """A stored bearer token: its public id, name, role, and the salted sha256 of its secret."""

    token_id: str
    name: str
    role: Role
    salt: bytes
    digest: bytes
    created_at: datetime
