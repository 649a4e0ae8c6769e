"""The server's domain types: frozen dataclasses validated on construction, free of protobuf and SQL.

Times are timezone-aware UTC datetimes. Vectors are (D,) float32, L2-normalised. Every text field has a
size limit, so a malformed request is refused with InvalidArgumentError naming the field before it is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from facefleet.link.checks import MAX_NAME_CHARS, check_groups, check_id, check_metadata, check_text
from facefleet.link.gallery import Embedding, Person
from facefleet.server.errors import InvalidArgumentError

Role = Literal["admin", "query"]
ROLES: tuple[Role, ...] = ("admin", "query")


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
class StoredEnrolment:
    """An enrolment just committed: the person as stored, the embeddings and crops the enrolment brought,
    and whether it added them to an existing person's (append) or they are all the person has (a new person,
    a replaced face)."""

    person: Person
    embeddings: tuple[Embedding, ...]
    crops: tuple[Crop, ...]
    append: bool


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
    model_precisions: Mapping[str, str] = field(default_factory=dict)
    """What each active model runs at on the agent's device, by task ('bf16', 'int8 (<model id>)')."""


@dataclass(frozen=True)
class TokenRecord:
    """A stored bearer token: its public id, name, role, and the salted sha256 of its secret."""

    token_id: str
    name: str
    role: Role
    salt: bytes
    digest: bytes
    created_at: datetime
