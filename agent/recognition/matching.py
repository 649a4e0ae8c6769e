"""Decisions on face embeddings: who is this (1:N), is this really them (1:1), and which threshold gives a
target false-accept rate. `Matcher` keeps the galleries of the active embedding models in step with the store;
`DecisionPolicy` turns ranked persons into a `Decision` (match, unknown, ambiguous or undecided).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from facefleet.agent.recognition.gallery import (
    DEFAULT_CANDIDATES,
    SFACE_THRESHOLD,
    Gallery,
    GallerySource,
    PersonScore,
    Scoring,
)
from facefleet.vision.vectors import MatchError

Status = Literal["match", "unknown", "ambiguous", "undecided"]


@dataclass(frozen=True)
class Decision:
    """The outcome of an identification or a verification.

    status: 'match' (person_id is the recognised person), 'unknown' (nobody scored at or above the threshold,
    or a verified claim was rejected), 'ambiguous' (the best two persons are within the ambiguity margin, so
    neither is named), 'undecided' (face quality below the policy's minimum: nothing was compared; wait for a
    better frame). score: best person's cosine similarity, None when there was nothing to compare;
    margin: best minus second-best person, None with fewer than two; candidates: the ranked persons seen.
    """

    status: Status
    model_id: str
    person_id: str | None
    score: float | None
    margin: float | None
    threshold: float
    reason: str
    candidates: tuple[PersonScore, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == "match"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "model_id": self.model_id,
            "person_id": self.person_id,
            "score": self.score,
            "margin": self.margin,
            "threshold": self.threshold,
            "reason": self.reason,
            "candidates": [{"person_id": c.person_id, "score": c.score} for c in self.candidates],
        }


@dataclass(frozen=True)
class DecisionPolicy:
    """When a score is a match: cosine thresholds per embedding model id (default_threshold for the others),
    the smallest margin between the best two persons that still names one, and the minimum face quality in
    [0, 1] below which nothing is decided."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    default_threshold: float = SFACE_THRESHOLD
    ambiguity_margin: float = 0.05
    min_quality: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", MappingProxyType(dict(self.thresholds)))
        for name, value in [("default_threshold", self.default_threshold), *self.thresholds.items()]:
            if not -1.0 <= value <= 1.0:
                raise MatchError(f"threshold for {name!r} must be a cosine in [-1, 1], got {value}")
        if not 0.0 <= self.ambiguity_margin < 2.0:
            raise MatchError(f"ambiguity_margin must be in [0, 2), got {self.ambiguity_margin}")
        if not 0.0 <= self.min_quality <= 1.0:
            raise MatchError(f"min_quality must be in [0, 1], got {self.min_quality}")

    def threshold(self, model_id: str) -> float:
        return self.thresholds.get(model_id, self.default_threshold)

    def quality_problem(self, quality: float | None) -> str | None:
        """Why a face of this quality must not be decided on, or None if it may (quality None: no gate)."""
        if quality is not None and not quality >= self.min_quality:
            return f"quality too low: {quality:.2f} < minimum {self.min_quality:.2f}"
        return None

    def decide(self, model_id: str, ranked: Sequence[PersonScore], quality: float | None = None) -> Decision:
        """A 1:N decision from persons ranked best first (as `Gallery.search` returns them)."""
        threshold = self.threshold(model_id)
        problem = self.quality_problem(quality)
        if problem:
            return Decision("undecided", model_id, None, None, None, threshold, problem, tuple(ranked))
        if not ranked:
            return Decision("unknown", model_id, None, None, None, threshold, "gallery is empty", ())
        best = ranked[0]
        margin = best.score - ranked[1].score if len(ranked) > 1 else None

        def decision(status: Status, person_id: str | None, reason: str) -> Decision:
            return Decision(status, model_id, person_id, best.score, margin, threshold, reason, tuple(ranked))

        if best.score < threshold:
            return decision("unknown", None, f"best score {best.score:.3f} < threshold {threshold:.3f}")
        if margin is not None and margin < self.ambiguity_margin:
            second = ranked[1]
            return decision(
                "ambiguous",
                None,
                f"{best.person_id!r} ({best.score:.3f}) and {second.person_id!r} ({second.score:.3f}) "
                f"are within the ambiguity margin {self.ambiguity_margin:.3f}",
            )
        return decision("match", best.person_id, f"score {best.score:.3f} ≥ threshold {threshold:.3f}")

    def decide_claim(
        self, model_id: str, claimed_person_id: str, score: float | None, quality: float | None = None
    ) -> Decision:
        """A 1:1 decision on a claimed identity; score None: the person has no embeddings for the model."""
        threshold = self.threshold(model_id)
        problem = self.quality_problem(quality)
        if problem:
            return Decision("undecided", model_id, None, score, None, threshold, problem)
        if score is None:
            reason = f"claim rejected: person {claimed_person_id!r} is not enrolled for model {model_id!r}"
            return Decision("unknown", model_id, None, None, None, threshold, reason)
        seen = (PersonScore(claimed_person_id, score),)
        if score < threshold:
            reason = f"claim rejected: score {score:.3f} < threshold {threshold:.3f}"
            return Decision("unknown", model_id, None, score, None, threshold, reason, seen)
        reason = f"claim accepted: score {score:.3f} ≥ threshold {threshold:.3f}"
        return Decision("match", model_id, claimed_person_id, score, None, threshold, reason, seen)


@dataclass(frozen=True)
class LoadedGalleries:
    """Galleries by embedding model id, and the source revision they were loaded at."""

    galleries: Mapping[str, Gallery]
    revision: int


class Matcher:
    """Galleries of the active embedding models, kept in step with a `GallerySource`, and a policy."""

    def __init__(self, policy: DecisionPolicy | None = None, *, candidates: int = DEFAULT_CANDIDATES) -> None:
        self.policy = policy or DecisionPolicy()
        self.candidates = candidates
        self._galleries: dict[str, Gallery] = {}
        self._revision: int | None = None

    @property
    def revision(self) -> int | None:
        """The source revision the galleries were loaded at, None before the first refresh."""
        return self._revision

    def refresh(self, source: GallerySource, model_ids: Iterable[str]) -> bool:
        """Reload the galleries of these models (and drop others) when the source revision or the model set
        changed; True when something was reloaded. Cheap when nothing changed: one revision read."""
        wanted = tuple(dict.fromkeys(model_ids))
        if source.revision() == self._revision and wanted == tuple(self._galleries):
            return False
        self.install(self.load(source, wanted))
        return True

    def load(self, source: GallerySource, model_ids: Iterable[str]) -> LoadedGalleries:
        """The galleries of these models as the source holds them now, built aside from those in use (so a
        model switch can build them on another thread and install them between two frames)."""
        revision = source.revision()  # read before loading: a change during the load forces another reload
        galleries = {}
        for model_id in dict.fromkeys(model_ids):
            person_ids, matrix, qualities = source.load_embeddings(model_id)
            galleries[model_id] = Gallery.build(
                model_id, person_ids, matrix, qualities, candidates=self.candidates
            )
        return LoadedGalleries(galleries, revision)

    def install(self, loaded: LoadedGalleries) -> None:
        """Use galleries from `load` (the next `refresh` reloads if the source moved on since)."""
        self._galleries, self._revision = dict(loaded.galleries), loaded.revision

    def set_gallery(self, gallery: Gallery) -> None:
        """Use a gallery built elsewhere (tests, tools); the next `refresh` replaces it."""
        self._galleries = {**self._galleries, gallery.model_id: gallery}
        self._revision = None

    def gallery(self, model_id: str) -> Gallery:
        try:
            return self._galleries[model_id]
        except KeyError:
            loaded = ", ".join(self._galleries) or "none"
            raise MatchError(
                f"no gallery loaded for embedding model {model_id!r} (loaded: {loaded}); "
                "refresh the matcher with that model"
            ) from None

    def identify(
        self,
        embedding: npt.ArrayLike,
        model_id: str,
        *,
        quality: float | None = None,
        k: int = 5,
        scoring: Scoring = "best",
    ) -> Decision:
        """1:N: who is this (D,) embedding? Searches at least the best two persons for the margin."""
        gallery = self.gallery(model_id)
        if self.policy.quality_problem(quality):
            return self.policy.decide(model_id, (), quality)
        return self.policy.decide(model_id, gallery.search(embedding, max(k, 2), scoring), quality)

    def verify(
        self,
        embedding: npt.ArrayLike,
        model_id: str,
        claimed_person_id: str,
        *,
        quality: float | None = None,
        scoring: Scoring = "best",
    ) -> Decision:
        """1:1: is this (D,) embedding the claimed person (e.g. from a badge reader)?"""
        gallery = self.gallery(model_id)
        if self.policy.quality_problem(quality):
            return self.policy.decide_claim(model_id, claimed_person_id, None, quality)
        score = gallery.verify_score(embedding, claimed_person_id, scoring)
        return self.policy.decide_claim(model_id, claimed_person_id, score, quality)


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen on labelled scores, with the error rates it achieves on them.

    far: fraction of impostor scores ≥ threshold; frr: fraction of genuine scores < threshold. With M impostor
    scores the smallest measurable FAR is 1/M: a lower target yields a threshold just above every impostor.
    impostor_max, genuine_min: the highest impostor and the lowest genuine score; margin: threshold minus
    impostor_max (how far the closest stranger stays below the threshold; negative when some are above it).
    """

    threshold: float
    target_far: float
    far: float
    frr: float
    genuine_count: int
    impostor_count: int
    impostor_max: float
    genuine_min: float

    @property
    def margin(self) -> float:
        return self.threshold - self.impostor_max


def calibrate_threshold(genuine: npt.ArrayLike, impostor: npt.ArrayLike, target_far: float) -> Calibration:
    """The lowest threshold whose false-accept rate on the impostor scores is at most target_far ∈ (0, 1]."""
    genuine_scores = _scores_1d(genuine, "genuine")
    impostor_scores = _scores_1d(impostor, "impostor")
    if not 0.0 < target_far <= 1.0:
        raise MatchError(f"target_far must be in (0, 1], got {target_far}")
    descending = np.sort(impostor_scores)[::-1]
    allowed = math.floor(target_far * descending.size + 1e-9)
    if allowed >= descending.size:
        threshold = float(descending[-1])
    else:
        threshold = float(np.nextafter(descending[allowed], np.inf))
    return Calibration(
        threshold=threshold,
        target_far=target_far,
        far=float(np.mean(impostor_scores >= threshold)),
        frr=float(np.mean(genuine_scores < threshold)),
        genuine_count=int(genuine_scores.size),
        impostor_count=int(impostor_scores.size),
        impostor_max=float(descending[0]),
        genuine_min=float(np.min(genuine_scores)),
    )


def _scores_1d(scores: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise MatchError(f"{what} scores must be a non-empty 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise MatchError(f"{what} scores contain NaN or infinity")
    return array
