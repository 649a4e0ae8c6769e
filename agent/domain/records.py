"""Records of the on-device store and its errors: people, embeddings, outbox messages, audit entries.

Records validate themselves on construction, so a bad vector or id is refused before any write starts.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from facefleet.core.errors import EXIT_DATA, EXIT_IO, EXIT_UNAVAILABLE, FaceFleetError
from facefleet.link.checks import check_id
from facefleet.link.errors import LinkError
from facefleet.link.gallery import Person as LinkPerson
from facefleet.vision.vectors import MatchError, unit_vector

FloatArray = npt.NDArray[np.float32]

MAX_DIM = 4096
_IDENTIFIER = re.compile(r"[^\s\x00-\x1f\x7f]{1,128}")


class StoreError(FaceFleetError):
    """The embedding store cannot be opened, read or written."""

    exit_code = EXIT_IO


class StoreFormatError(StoreError):
    """The file is not a FaceFleet store, is corrupt, or was written by a newer FaceFleet."""

    exit_code = EXIT_DATA


class StoreOutdatedError(StoreFormatError):
    """The store is older than this agent, and only the service (at start) or `store migrate` upgrades it;
    nothing was written."""


class StoreCorruptError(StoreFormatError):
    """SQLite finds the store damaged: an integrity problem, as `store check` reports it."""

    exit_code = EXIT_IO


class StoreReadOnlyError(StoreError):
    """The store (or its directory) cannot be written by this process."""


class StoreFullError(StoreError):
    """The disk holding the store is full (or the user's quota spent); nothing was written."""


class StoreBusyError(StoreError):
    """Another process held the write lock for longer than the busy timeout."""

    exit_code = EXIT_UNAVAILABLE


class InvalidRecordError(StoreError, ValueError):
    """A person, embedding, outbox or audit value is invalid; nothing was written."""

    exit_code = EXIT_DATA


class InvalidEmbeddingError(InvalidRecordError):
    """An embedding vector is NaN/inf, zero, or of the wrong dimension for its model."""


class DuplicatePersonError(InvalidRecordError):
    """add_person() with an id that is already enrolled."""


class UnknownPersonError(StoreError, LookupError):
    """No person with that id."""

    exit_code = EXIT_DATA


class RevisionConflictError(StoreError):
    """A sync batch does not apply to the store's current gallery revision."""

    exit_code = EXIT_DATA


def check_person_id(value: object) -> str:
    """The link's id rule (facefleet.link.checks.check_id), the one the server applies to person ids."""
    if not isinstance(value, str):
        raise InvalidRecordError(f"person id must be a string, got {value!r}")
    try:
        return check_id("person id", value)
    except LinkError as exc:
        raise InvalidRecordError(str(exc)) from None


def check_identifier(what: str, value: object) -> str:
    """Groups, model ids, door names: 1–128 characters without whitespace or control characters (the
    server's rule for groups, see facefleet.link.checks.check_groups)."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise InvalidRecordError(
            f"{what} must be 1–128 characters without spaces or control characters, got {value!r}"
        )
    return value


def json_text(what: str, value: object) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"{what} must be JSON-serialisable: {exc}") from None


@dataclass(frozen=True)
class Person:
    """An enrolled person. person_id: stable id; groups: e.g. the door groups they may open; metadata: a free
    JSON object; created_at, updated_at: unix seconds, set by the store (ignored on writes)."""

    person_id: str
    name: str = ""
    groups: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at: float | None = None
    updated_at: float | None = None

    def __post_init__(self) -> None:
        # The looser identifier rule here, so that people stored before the id rule still load; every
        # write applies check_person_id (facefleet.agent.store.gallery).
        check_identifier("person id", self.person_id)
        if not isinstance(self.name, str):
            raise InvalidRecordError(f"person {self.person_id!r}: name must be a string, got {self.name!r}")
        groups = (self.groups,) if isinstance(self.groups, str) else tuple(self.groups)
        for group in groups:
            check_identifier(f"person {self.person_id!r}: group", group)
        object.__setattr__(self, "groups", groups)
        if not isinstance(self.metadata, Mapping):
            raise InvalidRecordError(f"person {self.person_id!r}: metadata must be a JSON object (a mapping)")
        object.__setattr__(self, "metadata", dict(self.metadata))
        json_text(f"person {self.person_id!r}: metadata", self.metadata)


@dataclass(frozen=True, eq=False)
class Embedding:
    """One face embedding for one embedding model (e.g. 'sface@2021dec').

    vector: (D,) float32, L2-normalised on construction (a float32 unit vector is kept bit for bit);
    quality: face quality in [0, 1]; source: where it came from (e.g. 'server', 'enrol:front.jpg');
    embedding_id, created_at (unix seconds): set by the store.
    """

    model_id: str
    vector: FloatArray
    quality: float = 1.0
    source: str = ""
    embedding_id: int | None = None
    created_at: float | None = None

    def __post_init__(self) -> None:
        check_identifier("embedding model id", self.model_id)
        try:
            vector = unit_vector(self.vector, f"embedding for model {self.model_id!r}")
        except MatchError as exc:
            raise InvalidEmbeddingError(str(exc)) from None
        if vector.shape[0] > MAX_DIM:
            raise InvalidEmbeddingError(
                f"embedding for model {self.model_id!r} has {vector.shape[0]} dimensions, more than {MAX_DIM}"
            )
        vector.flags.writeable = False
        object.__setattr__(self, "vector", vector)
        if not (isinstance(self.quality, numbers.Real) and 0.0 <= self.quality <= 1.0):
            raise InvalidRecordError(f"embedding quality must be in [0, 1], got {self.quality!r}")
        object.__setattr__(self, "quality", float(self.quality))
        if not isinstance(self.source, str):
            raise InvalidRecordError(f"embedding source must be a string, got {self.source!r}")

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])


@dataclass(frozen=True)
class PersonUpsert:
    """A person to insert or update, with embeddings that replace their stored ones for the same model ids
    (embeddings of other models are kept)."""

    person: Person
    embeddings: tuple[Embedding, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "embeddings", tuple(self.embeddings))


class EmbeddingMatrix(NamedTuple):
    """Every embedding of one model, rows grouped by person: person_ids (N,), matrix (N, D) float32 with
    L2-normalised rows (D = 0 when N = 0), qualities (N,) float32."""

    person_ids: list[str]
    matrix: FloatArray
    qualities: FloatArray


@dataclass(frozen=True)
class ModelSummary:
    """What the store holds for one embedding model."""

    model_id: str
    dim: int
    embeddings: int
    people: int


@dataclass(frozen=True)
class OutboxMessage:
    """An MQTT message waiting for its PUBACK. created_at: unix seconds."""

    message_id: int
    topic: str
    payload: str
    qos: int
    created_at: float


@dataclass(frozen=True)
class AuditEntry:
    """One access decision at a door. time: unix seconds; details: a JSON object."""

    entry_id: int
    time: float
    door: str
    decision: str
    person_id: str | None
    score: float | None
    details: Mapping[str, Any]


def upsert_from_link(person: LinkPerson) -> PersonUpsert:
    """A person as the server sent them (a gallery delta's upsert), as the store keeps them: metadata as a
    mapping, each embedding's source marked as coming from the server."""
    what = f"gallery person {person.person_id!r} from the server"
    try:
        return PersonUpsert(
            Person(person.person_id, person.display_name, person.groups, json.loads(person.metadata_json)),
            tuple(
                Embedding(e.model_id, e.vector, e.quality, f"server:{e.source}" if e.source else "server")
                for e in person.embeddings
            ),
        )
    except InvalidRecordError as exc:
        raise InvalidRecordError(f"{what}: {exc}") from None
