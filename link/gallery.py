"""Enrolled people as the link carries them: embeddings, people and the gallery deltas that bring an
agent from one server revision to another. Vectors are (D,) float32, L2-normalised."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from facefleet.link.checks import (
    MAX_DIM,
    MAX_EMBEDDINGS_PER_PERSON,
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    MIN_DIM,
    FloatArray,
    check_groups,
    check_id,
    check_metadata,
    check_model_id,
    check_text,
)
from facefleet.link.errors import LinkError


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
            raise LinkError(
                f"embedding of {self.model_id} must be a vector of {MIN_DIM}–{MAX_DIM} values, "
                f"got shape {vector.shape}"
            )
        vector = vector.astype(np.float32)
        if not np.all(np.isfinite(vector)):
            raise LinkError(f"embedding of {self.model_id} holds NaN or infinite values")
        norm = float(np.linalg.norm(vector))
        if norm < 1e-6:
            raise LinkError(f"embedding of {self.model_id} is all zeros")
        if abs(norm - 1.0) > 1e-4:
            vector = vector / np.float32(norm)
        vector.setflags(write=False)
        object.__setattr__(self, "vector", vector)
        if not math.isfinite(self.quality) or not 0.0 <= self.quality <= 1.0:
            raise LinkError(f"embedding quality must be within 0–1, got {self.quality}")
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
            raise LinkError(
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


@dataclass(frozen=True, eq=False)
class GalleryDelta:
    """Server changes from revision from_revision to to_revision (one part of them when more_parts).

    upserts: people as the server has them now (each replaces the stored person and all their embeddings);
    deletes: person ids to erase; snapshot: the whole gallery, so everyone else is forgotten and
    to_revision/gallery_id are taken as they are, even when lower than before."""

    from_revision: int
    to_revision: int
    snapshot: bool = False
    upserts: tuple[Person, ...] = ()
    deletes: tuple[str, ...] = ()
    gallery_id: str = ""
    more_parts: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "upserts", tuple(self.upserts))
        object.__setattr__(self, "deletes", tuple(self.deletes))
        if self.from_revision < 0 or self.to_revision < 0:
            raise LinkError(
                f"gallery delta revisions must not be negative, got {self.from_revision} → {self.to_revision}"
            )
        if not self.snapshot and self.to_revision < self.from_revision:
            raise LinkError(
                f"gallery delta goes backwards ({self.from_revision} → {self.to_revision}); "
                "only a snapshot may"
            )
        if self.snapshot and self.deletes:
            raise LinkError("a gallery snapshot carries no deletes (everyone not in it is forgotten)")
        counts = Counter(p.person_id for p in self.upserts)
        repeated = {p for p, n in counts.items() if n > 1} | (counts.keys() & set(self.deletes))
        if repeated:
            raise LinkError(
                f"gallery delta {self.from_revision} → {self.to_revision} names person(s) "
                f"{', '.join(sorted(map(repr, repeated)))} more than once"
            )


def join_parts(parts: Sequence[GalleryDelta]) -> GalleryDelta:
    """The one delta a multi-part delta stands for: every part but the last has more_parts, all share
    from_revision, to_revision, snapshot and gallery_id; their upserts and deletes add up."""
    if not parts:
        raise LinkError("no gallery delta parts to join")
    first, last = parts[0], parts[-1]
    key = (first.from_revision, first.to_revision, first.snapshot, first.gallery_id)
    for index, part in enumerate(parts):
        if (part.from_revision, part.to_revision, part.snapshot, part.gallery_id) != key:
            raise LinkError(
                f"gallery delta part {index + 1} is for {part.from_revision} → {part.to_revision} but "
                f"the first part was for {first.from_revision} → {first.to_revision}; "
                "the server mixed two deltas"
            )
        if part.more_parts != (part is not last):
            raise LinkError(
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
