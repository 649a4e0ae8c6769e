"""Face and access events as agents report them to the server."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from facefleet.link.checks import (
    MAX_LABEL_CHARS,
    MAX_MAP_ENTRIES,
    MAX_REASON_CHARS,
    check_id,
    check_text,
    check_utc,
)
from facefleet.link.errors import LinkError
from facefleet.link.gallery import Embedding
from facefleet.vision.faces import EXPRESSION_LABELS
from facefleet.vision.images.header import declared_size

EventKind = Literal["face", "access"]
Decision = Literal["match", "unknown", "ambiguous", "undecided", "granted", "denied"]
EVENT_KINDS: tuple[EventKind, ...] = ("face", "access")
FACE_DECISIONS: tuple[Decision, ...] = ("match", "unknown", "ambiguous", "undecided")
ACCESS_DECISIONS: tuple[Decision, ...] = ("granted", "denied")
DECISIONS: tuple[Decision, ...] = FACE_DECISIONS + ACCESS_DECISIONS
MAX_SNAPSHOT_JPEG_BYTES = 64 * 1024
"""Largest face crop or context view a snapshot may carry (bytes)."""
SNAPSHOT_CROP_PX = 112
"""A snapshot's crop is the aligned face, this many pixels square."""
MAX_SNAPSHOT_CONTEXT_PX = 320
"""Longest side of a snapshot's context view (px)."""
MAX_EVENT_ID_CHARS = 64
_JPEG_START = b"\xff\xd8\xff"


@dataclass(frozen=True)
class FaceSnapshot:
    """The best face of a track. crop_jpeg: the aligned SNAPSHOT_CROP_PX square crop; context_jpeg: a small
    view of the frame around it (longest side ≤ MAX_SNAPSHOT_CONTEXT_PX; b"" = none); both JPEG of at most
    MAX_SNAPSHOT_JPEG_BYTES, their sizes checked on their headers.
    embedding: the face's embedding, as the agent matched it."""

    crop_jpeg: bytes = field(repr=False)
    context_jpeg: bytes = field(repr=False)
    embedding: Embedding

    def __post_init__(self) -> None:
        for name, data in (("crop_jpeg", self.crop_jpeg), ("context_jpeg", self.context_jpeg)):
            if not data and name == "context_jpeg":
                continue
            if len(data) > MAX_SNAPSHOT_JPEG_BYTES:
                raise LinkError(
                    f"snapshot {name} is {len(data)} bytes; the limit is {MAX_SNAPSHOT_JPEG_BYTES} (encode a "
                    "smaller JPEG)"
                )
            if not data.startswith(_JPEG_START):
                raise LinkError(f"snapshot {name} is not a JPEG image")
            size = declared_size(data)  # the header only: a few bytes may declare billions of pixels
            if size is None:
                raise LinkError(f"snapshot {name} is not a readable JPEG image (no frame header)")
            width, height = size
            if name == "crop_jpeg" and size != (SNAPSHOT_CROP_PX, SNAPSHOT_CROP_PX):
                raise LinkError(
                    f"snapshot crop_jpeg is {width}×{height} pixels; it must be the aligned "
                    f"{SNAPSHOT_CROP_PX}×{SNAPSHOT_CROP_PX} face"
                )
            if name == "context_jpeg" and max(size) > MAX_SNAPSHOT_CONTEXT_PX:
                raise LinkError(
                    f"snapshot context_jpeg is {width}×{height} pixels; its longest side may be "
                    f"{MAX_SNAPSHOT_CONTEXT_PX} px at most"
                )


@dataclass(frozen=True)
class ExpressionResult:
    label: str
    probabilities: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in EXPRESSION_LABELS:
            raise LinkError(
                f"expression label {self.label[:40]!r} is not one of {', '.join(EXPRESSION_LABELS)}"
            )
        if len(self.probabilities) > MAX_MAP_ENTRIES or any(
            key not in EXPRESSION_LABELS or not 0.0 <= value <= 1.0
            for key, value in self.probabilities.items()
        ):
            raise LinkError("expression probabilities must map FER labels to values within 0–1")


AGE_BANDS = ("0-12", "13-19", "20-29", "30-39", "40-49", "50-59", "60+")
GENDERS = ("female", "male")


@dataclass(frozen=True)
class AttributesResult:
    """Estimated gender and age of a tracked face (means over the track's faces); never an access input."""

    gender: str
    male_probability: float
    age_years: float
    age_band: str

    def __post_init__(self) -> None:
        if self.gender not in GENDERS:
            raise LinkError(f"attributes gender {self.gender[:40]!r} is not one of {', '.join(GENDERS)}")
        if not 0.0 <= self.male_probability <= 1.0:
            raise LinkError("attributes male_probability must be within 0–1")
        if not 0.0 <= self.age_years <= 150.0:
            raise LinkError("attributes age_years must be within 0–150")
        if self.age_band not in AGE_BANDS:
            raise LinkError(
                f"attributes age_band {self.age_band[:40]!r} is not one of {', '.join(AGE_BANDS)}"
            )


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
    snapshot: FaceSnapshot | None = None
    attributes: AttributesResult | None = None

    def __post_init__(self) -> None:
        if not self.event_id or len(self.event_id) > MAX_EVENT_ID_CHARS or not self.event_id.isascii():
            raise LinkError(f"event_id must be 1–{MAX_EVENT_ID_CHARS} ASCII characters (a UUID)")
        check_id("device_id", self.device_id)
        object.__setattr__(self, "time", check_utc("time", self.time))
        if self.time.year < 2000:
            raise LinkError(f"event time {self.time.isoformat()} is before 2000: set the device's clock")
        if self.kind not in EVENT_KINDS:
            raise LinkError(f"event kind must be one of {', '.join(EVENT_KINDS)}, not {self.kind!r}")
        allowed = FACE_DECISIONS if self.kind == "face" else ACCESS_DECISIONS
        if self.decision not in allowed:
            raise LinkError(
                f"a {self.kind} event needs a decision among {', '.join(allowed)}, got {self.decision!r}"
            )
        if self.person_id:
            check_id("person_id", self.person_id)
        elif self.decision == "match":
            raise LinkError("a 'match' event needs a person_id")
        for name, value in (("score", self.score), ("margin", self.margin), ("quality", self.quality)):
            if not math.isfinite(value) or abs(value) > 1e6:
                raise LinkError(f"event {name} must be a finite number, got {value}")
        for name, text in (("camera", self.camera), ("door", self.door)):
            check_text(name, text, MAX_LABEL_CHARS)
        check_text("reason", self.reason, MAX_REASON_CHARS)
        if len(self.model_versions) > MAX_MAP_ENTRIES or any(
            len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS for k, v in self.model_versions.items()
        ):
            raise LinkError(f"model_versions: at most {MAX_MAP_ENTRIES} short entries")
        if self.gallery_revision < 0:
            raise LinkError("gallery_revision must not be negative")
        if self.snapshot is not None and self.kind != "face":
            raise LinkError("only face events carry a snapshot")
