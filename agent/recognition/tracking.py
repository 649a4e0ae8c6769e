"""Following faces across frames and accumulating identity evidence (pure python/numpy).

Each face observation (box, quality, the matcher's verdict, expression probabilities) joins the track
whose last box overlaps it most. A track's identity is decided by quality-weighted votes over several
frames, its expression is smoothed, and it emits one event when its identity is decided, one when that
identity changes, and a final one when the track ends. A track keeps the pixels of its best face by quality
(one FaceCrop, made only when a face beats the track's best so far), which its events carry.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from facefleet.vision.attributes import Attributes
from facefleet.vision.faces import EXPRESSION_LABELS

if TYPE_CHECKING:
    from facefleet.agent.recognition.snapshots import FaceCrop

Verdict = Literal["match", "unknown", "ambiguous", "undecided"]
TrackEventKind = Literal["decided", "changed", "ended"]
UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class Observation:
    """One face in one frame after matching. box_xyxy: (4,) frame pixels; quality in [0, 1];
    verdict: the matcher's decision, with person_id and score for a match; expression: (7,) probabilities;
    crop: makes this face's FaceCrop, called only when it is its track's best face so far (None: no crops);
    attributes: estimated gender and age (None when the attributes task is off)."""

    box_xyxy: npt.NDArray[np.float32]
    quality: float
    verdict: Verdict
    person_id: str | None = None
    score: float = 0.0
    expression: npt.NDArray[np.float32] | None = None
    crop: Callable[[], FaceCrop] | None = None
    attributes: Attributes | None = None


@dataclass(frozen=True)
class TrackerSettings:
    """min_iou: overlap needed to continue a track; max_missed: frames a track may miss before it ends;
    max_gap_s: seconds a track may go unseen before it ends, however few frames it missed (a camera that
    stalled or reconnected: the next face on the same spot may be someone else); min_votes: observations
    that must have voted before deciding; decide_share: share of the vote weight the winner needs;
    expression_alpha: weight of the newest frame in the smoothed expression."""

    min_iou: float = 0.3
    max_missed: int = 10
    max_gap_s: float = 5.0
    min_votes: int = 3
    decide_share: float = 0.6
    expression_alpha: float = 0.3


@dataclass(frozen=True)
class TrackEvent:
    """A change worth publishing: identity decided, identity changed, or track ended.

    identity: a person id or "unknown"; score: best match score for that person (0 for unknown);
    frames: observations that voted; expression: smoothed label and probabilities; quality: the best face's;
    best: the pixels of that face (None when the observations made no crops); attributes: the mean male
    probability and age over the track's faces (None when none had attributes)."""

    kind: TrackEventKind
    track_id: str
    identity: str
    score: float
    frames: int
    quality: float
    expression: str | None
    expression_probabilities: dict[str, float]
    box_xyxy: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    best: FaceCrop | None = field(default=None, repr=False, compare=False)
    attributes: Attributes | None = None


@dataclass(eq=False)
class _Track:
    track_id: str
    box_xyxy: npt.NDArray[np.float32]
    first_seen: float
    last_seen: float
    steady_seen: float
    votes: dict[str, float] = field(default_factory=dict)
    best_score: dict[str, float] = field(default_factory=dict)
    voting_frames: int = 0
    best_quality: float = 0.0
    missed: int = 0
    expression: npt.NDArray[np.float32] | None = None
    identity: str | None = None
    best: FaceCrop | None = None
    attribute_faces: int = 0
    male_sum: float = 0.0
    age_sum: float = 0.0


class Tracker:
    """Tracks of one camera. update() once per analysed frame, in time order."""

    def __init__(self, settings: TrackerSettings | None = None, min_quality: float = 0.3) -> None:
        self.settings = settings or TrackerSettings()
        self.min_quality = min_quality
        self._tracks: list[_Track] = []
        self.last_track_ids: list[str] = []
        """The track id of each observation of the last update, in their order."""

    @property
    def active_tracks(self) -> int:
        return len(self._tracks)

    def update(
        self, observations: list[Observation], timestamp: float, steady: float | None = None
    ) -> list[TrackEvent]:
        """Fold one frame's observations into the tracks; the events this frame caused. timestamp: the
        frame's wall-clock time (s), which events carry; steady: its time on a clock that never steps back
        (s), which max_gap_s is measured on (None: timestamp)."""
        steady = timestamp if steady is None else steady
        events: list[TrackEvent] = []
        for track in [t for t in self._tracks if not 0 <= steady - t.steady_seen <= self.settings.max_gap_s]:
            self._tracks.remove(track)
            events.append(self._event("ended", track))
        assigned = self._assign(observations)
        self.last_track_ids = []
        for track in self._tracks:
            if track not in assigned.values():
                track.missed += 1
        for index, observation in enumerate(observations):
            existing = assigned.get(index)
            if existing is None:
                existing = _Track(uuid.uuid4().hex, observation.box_xyxy, timestamp, timestamp, steady)
                self._tracks.append(existing)
            existing.steady_seen = steady
            self.last_track_ids.append(existing.track_id)
            events.extend(self._observe(existing, observation, timestamp))
        for track in [t for t in self._tracks if t.missed > self.settings.max_missed]:
            self._tracks.remove(track)
            events.append(self._event("ended", track))
        return events

    def finish(self) -> list[TrackEvent]:
        """End every open track (e.g. when the camera stops)."""
        events = [self._event("ended", track) for track in self._tracks]
        self._tracks.clear()
        return events

    def _assign(self, observations: list[Observation]) -> dict[int, _Track]:
        """Greedy assignment of observations to tracks by descending box overlap."""
        pairs = []
        for (index, observation), track in itertools.product(enumerate(observations), self._tracks):
            overlap = iou(observation.box_xyxy, track.box_xyxy)
            if overlap >= self.settings.min_iou:
                pairs.append((overlap, index, track))
        pairs.sort(key=lambda pair: -pair[0])
        assigned: dict[int, _Track] = {}
        for _, index, track in pairs:
            if index not in assigned and track not in assigned.values():
                assigned[index] = track
        return assigned

    def _observe(self, track: _Track, observation: Observation, timestamp: float) -> list[TrackEvent]:
        track.box_xyxy = observation.box_xyxy
        track.last_seen = timestamp
        track.missed = 0
        if observation.crop is not None and (track.best is None or observation.quality > track.best.quality):
            track.best = observation.crop()
        track.best_quality = max(track.best_quality, observation.quality)
        if observation.expression is not None:
            alpha = self.settings.expression_alpha
            previous = track.expression
            track.expression = (
                observation.expression
                if previous is None
                else alpha * observation.expression + (1 - alpha) * previous
            )
        if observation.attributes is not None:  # a running mean over the track's faces
            track.attribute_faces += 1
            track.male_sum += observation.attributes.probabilities["male"]
            track.age_sum += observation.attributes.age_years
        if observation.quality < self.min_quality or observation.verdict == "undecided":
            return []
        candidate = (
            observation.person_id if observation.verdict == "match" and observation.person_id else UNKNOWN
        )
        track.votes[candidate] = track.votes.get(candidate, 0.0) + observation.quality
        if candidate != UNKNOWN:
            track.best_score[candidate] = max(track.best_score.get(candidate, 0.0), observation.score)
        track.voting_frames += 1
        decided = self._decide(track)
        if decided is None or decided == track.identity:
            return []
        kind: TrackEventKind = "decided" if track.identity is None else "changed"
        track.identity = decided
        return [self._event(kind, track)]

    def _decide(self, track: _Track) -> str | None:
        if track.voting_frames < self.settings.min_votes:
            return None
        total = sum(track.votes.values())
        leader, weight = max(track.votes.items(), key=lambda item: item[1])
        return leader if total > 0 and weight / total >= self.settings.decide_share else None

    def _event(self, kind: TrackEventKind, track: _Track) -> TrackEvent:
        identity = track.identity or UNKNOWN
        probabilities: dict[str, float] = {}
        label = None
        if track.expression is not None:
            probabilities = {
                name: round(float(p), 4) for name, p in zip(EXPRESSION_LABELS, track.expression, strict=True)
            }
            label = EXPRESSION_LABELS[int(np.argmax(track.expression))]
        x1, y1, x2, y2 = (float(v) for v in track.box_xyxy)
        return TrackEvent(
            kind=kind,
            track_id=track.track_id,
            identity=identity,
            score=round(track.best_score.get(identity, 0.0), 4),
            frames=track.voting_frames,
            quality=round(track.best_quality, 3),
            expression=label,
            expression_probabilities=probabilities,
            box_xyxy=(x1, y1, x2, y2),
            first_seen=track.first_seen,
            last_seen=track.last_seen,
            best=track.best,
            attributes=None
            if not track.attribute_faces
            else Attributes.from_estimates(
                track.male_sum / track.attribute_faces, track.age_sum / track.attribute_faces
            ),
        )


def iou(a_xyxy: npt.NDArray[np.float32], b_xyxy: npt.NDArray[np.float32]) -> float:
    """Intersection over union of two (4,) boxes; 0 when either is empty."""
    left, top = max(a_xyxy[0], b_xyxy[0]), max(a_xyxy[1], b_xyxy[1])
    right, bottom = min(a_xyxy[2], b_xyxy[2]), min(a_xyxy[3], b_xyxy[3])
    inter = max(0.0, float(right - left)) * max(0.0, float(bottom - top))
    area_a = max(0.0, float(a_xyxy[2] - a_xyxy[0])) * max(0.0, float(a_xyxy[3] - a_xyxy[1]))
    area_b = max(0.0, float(b_xyxy[2] - b_xyxy[0])) * max(0.0, float(b_xyxy[3] - b_xyxy[1]))
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0
