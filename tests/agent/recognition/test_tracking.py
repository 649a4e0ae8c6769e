"""Tracker: identity by weighted votes across frames, smoothed expression, one event per decision."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from facefleet.agent.recognition.snapshots import FaceCrop
from facefleet.agent.recognition.tracking import Observation, Tracker, TrackerSettings, iou
from facefleet.vision.faces import EXPRESSION_LABELS

HAPPY = np.eye(7, dtype=np.float32)[EXPRESSION_LABELS.index("happy")]
SAD = np.eye(7, dtype=np.float32)[EXPRESSION_LABELS.index("sad")]


def seen(
    x: float,
    verdict: str = "match",
    person: str | None = "ada",
    quality: float = 0.9,
    score: float = 0.7,
    expression: np.ndarray | None = None,
) -> Observation:
    box = np.array([x, 100, x + 80, 200], np.float32)
    return Observation(box, quality, verdict, person if verdict == "match" else None, score, expression)  # type: ignore[arg-type]


def test_identity_is_decided_once_after_enough_agreeing_frames() -> None:
    tracker = Tracker(TrackerSettings(min_votes=3))
    events = [tracker.update([seen(100 + 2 * i, score=0.6 + i / 100)], timestamp=i) for i in range(6)]
    assert [len(e) for e in events] == [0, 0, 1, 0, 0, 0]
    decided = events[2][0]
    assert decided.kind == "decided" and decided.identity == "ada" and decided.frames == 3
    assert decided.score == pytest.approx(0.62)


def test_unknown_faces_are_decided_as_unknown() -> None:
    tracker = Tracker()
    events = [e for i in range(4) for e in tracker.update([seen(50, verdict="unknown")], i)]
    assert [(e.kind, e.identity, e.score) for e in events] == [("decided", "unknown", 0.0)]


def test_votes_are_weighted_by_quality_and_low_quality_frames_do_not_vote() -> None:
    tracker = Tracker(TrackerSettings(min_votes=3, decide_share=0.6), min_quality=0.3)
    frames = [
        seen(100, person="bob", quality=0.35),
        seen(100, person="ada", quality=0.9),
        seen(100, person="bob", quality=0.1),  # too poor to vote
        seen(100, person="ada", quality=0.8),
    ]
    events = [e for i, obs in enumerate(frames) for e in tracker.update([obs], i)]
    assert [(e.kind, e.identity, e.frames) for e in events] == [("decided", "ada", 3)]


def test_a_track_unseen_for_longer_than_max_gap_s_ends_however_few_frames_it_missed() -> None:
    """The camera stalls for two minutes: the face next seen on the same spot starts a track of its own."""
    tracker = Tracker(TrackerSettings(min_votes=2, max_gap_s=5.0))
    events = [e for t in (0.0, 0.1, 0.2) for e in tracker.update([seen(100, person="ada")], t)]
    first = tracker.last_track_ids[0]
    events += tracker.update([seen(100, person="bob")], 120.0)
    assert [(e.kind, e.identity) for e in events] == [("decided", "ada"), ("ended", "ada")]
    assert tracker.last_track_ids[0] != first
    tracker.update([seen(100, person="bob")], 124.0)  # within max_gap_s: the same track
    assert tracker.active_tracks == 1
    steady = Tracker(TrackerSettings(min_votes=2, max_gap_s=5.0))  # measured on the steady clock when given
    steady.update([seen(100)], 1000.0, steady=50.0)
    wall_set_back = steady.update([seen(100)], 1000.0 - 3600, steady=50.1)
    assert [e.kind for e in wall_set_back] == ["decided"]  # the same track goes on
    assert [e.kind for e in steady.update([seen(100)], 1000.0, steady=120.0)] == ["ended"]


def test_a_changed_identity_is_an_event_and_the_end_is_final() -> None:
    tracker = Tracker(TrackerSettings(min_votes=2, decide_share=0.6, max_missed=2))
    events = []
    for i in range(3):
        events += tracker.update([seen(100, verdict="unknown")], i)
    for i in range(3, 12):
        events += tracker.update([seen(100, person="ada")], i)
    for i in range(12, 16):
        events += tracker.update([], i)
    assert [(e.kind, e.identity) for e in events] == [
        ("decided", "unknown"),
        ("changed", "ada"),
        ("ended", "ada"),
    ]
    assert events[-1].last_seen == 11 and events[-1].first_seen == 0
    assert tracker.active_tracks == 0


def test_two_faces_keep_their_own_tracks() -> None:
    tracker = Tracker(TrackerSettings(min_votes=2))
    events = []
    for i in range(3):
        events += tracker.update([seen(100 + i, person="ada"), seen(400 - i, person="bob")], i)
    assert sorted(e.identity for e in events) == ["ada", "bob"]
    assert len({e.track_id for e in events}) == 2


def test_expression_is_smoothed() -> None:
    tracker = Tracker(TrackerSettings(min_votes=1, expression_alpha=0.3))
    tracker.update([seen(100, expression=HAPPY)], 0)
    tracker.update([seen(100, expression=SAD)], 1)
    (ended,) = tracker.finish()
    assert ended.expression == "happy"
    assert ended.expression_probabilities["happy"] == pytest.approx(0.7)
    assert ended.expression_probabilities["sad"] == pytest.approx(0.3)


def test_no_observations_no_events() -> None:
    tracker = Tracker()
    assert tracker.update([], 0) == [] and tracker.finish() == []


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 1 / 3),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),
    ],
)
def test_iou(a: list[float], b: list[float], expected: float) -> None:
    assert iou(np.array(a, np.float32), np.array(b, np.float32)) == pytest.approx(expected)


def test_a_track_keeps_the_crop_of_its_best_face_made_only_when_a_face_beats_it() -> None:
    made: list[float] = []

    def crop(quality: float) -> Any:
        def make() -> FaceCrop:
            made.append(quality)
            pixels = np.full((112, 112, 3), int(quality * 100), np.uint8)
            return FaceCrop(pixels, None, np.ones(128, np.float32), "sface@2021dec", quality)

        return make

    tracker = Tracker(TrackerSettings(min_votes=2, max_missed=1))
    events = []
    for i, quality in enumerate([0.5, 0.8, 0.6, 0.9, 0.7]):
        observation = replace(seen(100, verdict="unknown", quality=quality), crop=crop(quality))
        events += tracker.update([observation], i)
    events += tracker.update([], 5) + tracker.update([], 6)
    assert made == [0.5, 0.8, 0.9]  # one crop per new best, never one per frame
    decided, ended = events
    assert (decided.kind, ended.kind) == ("decided", "ended")
    assert decided.best is not None and decided.best.quality == 0.8  # the best when it was decided
    assert ended.best is not None and ended.best.quality == 0.9 == ended.quality
    assert int(ended.best.aligned_bgr[0, 0, 0]) == 90
    without = Tracker(TrackerSettings(min_votes=1, max_missed=0))
    assert [e.best for e in without.update([seen(100)], 0) + without.update([], 1)] == [None, None]
