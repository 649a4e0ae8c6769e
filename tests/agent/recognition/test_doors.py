"""Door decisions without cameras: groups, consecutive frames, schedules, repeats and badge claims."""

from __future__ import annotations

from datetime import datetime

import pytest

from facefleet.agent.config import DoorConfig
from facefleet.agent.domain.records import Person
from facefleet.agent.recognition.doors import REPEAT_AFTER_S, DoorController
from facefleet.agent.recognition.matching import Decision
from tests.agent.recognition.face_samples import face_sample

PEOPLE = {"ada": Person("ada", "Ada", ("staff",)), "bob": Person("bob", "Bob", ("visitors",))}


def decision(person: str | None, status: str = "match", score: float = 0.8) -> Decision:
    return Decision(status, "sface@2021dec", person, score, 0.3, 0.363, "test")  # type: ignore[arg-type]


def door(**changes: object) -> DoorController:
    settings = {"name": "front", "camera": "cam", "allow_groups": ["staff"], "min_frames": 3, **changes}
    return DoorController(DoorConfig.model_validate(settings), PEOPLE.get)


def at(hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, 23, hour, minute).timestamp()


def feed(
    controller: DoorController, person: str | None, frames: int, start: float, status: str = "match"
) -> list:
    results = []
    for i in range(frames):
        result = controller.observe(decision(person, status), None, start + i * 0.1)
        if result is not None:
            results.append(result)
    return results


def test_a_group_member_is_granted_after_min_frames_and_not_again_at_once() -> None:
    controller = door()
    assert feed(controller, "ada", 2, at(9)) == []
    (granted,) = feed(controller, "ada", 1, at(9) + 0.2)
    assert (granted.decision, granted.person_id, granted.frames, granted.mode) == (
        "granted",
        "ada",
        3,
        "identify",
    )
    assert granted.score == pytest.approx(0.8)
    assert feed(controller, "ada", 10, at(9) + 1) == []
    assert [r.decision for r in feed(controller, "ada", 3, at(9) + REPEAT_AFTER_S + 1)] == ["granted"]


def test_others_and_strangers_are_denied_with_the_reason() -> None:
    controller = door()
    (denied,) = feed(controller, "bob", 3, at(9))
    assert denied.decision == "denied" and "'bob' may not enter" in denied.reason
    (stranger,) = feed(controller, None, 3, at(10), status="unknown")
    assert (stranger.decision, stranger.reason, stranger.person_id) == ("denied", "face not recognised", None)


def test_disagreeing_or_undecided_frames_restart_the_count() -> None:
    controller = door()
    feed(controller, "ada", 2, at(9))
    controller.observe(decision(None, "ambiguous"), None, at(9) + 0.3)
    assert feed(controller, "ada", 2, at(9) + 0.4) == []
    assert [r.person_id for r in feed(controller, "ada", 1, at(9) + 0.7)] == ["ada"]


@pytest.mark.parametrize(
    ("schedule", "hour", "verdict"),
    [
        ([], 3, "granted"),
        (["07:00-19:00"], 9, "granted"),
        (["07:00-19:00"], 20, "denied"),
        (["22:00-06:00"], 2, "granted"),
    ],
)
def test_schedule(schedule: list[str], hour: int, verdict: str) -> None:
    (result,) = feed(door(schedule=schedule), "ada", 3, at(hour))
    assert result.decision == verdict
    if verdict == "denied":
        assert "closed at this time" in result.reason


def test_badge_claims() -> None:
    controller = door(allow_people=["bob"], claim_timeout_s=5)
    unknown = controller.claim("mallory", at(9), claim_id="c0")
    assert unknown is not None and unknown.decision == "denied" and "not enrolled" in unknown.reason
    assert controller.claim("bob", at(9), claim_id="c1") is None
    assert controller.claimed_person == "bob"
    reject = decision(None, "unknown", 0.1)
    results = [controller.observe(None, reject, at(9) + i) for i in range(3)]
    assert results[:2] == [None, None] and results[2] is not None
    assert (results[2].decision, results[2].reason, results[2].claim_id) == (
        "denied",
        "face does not match the claimed person",
        "c1",
    )
    controller.claim("bob", at(10), claim_id="c2")
    accept = decision("bob", "match", 0.9)
    granted = [controller.observe(None, accept, at(10) + i) for i in range(3)][2]
    assert granted is not None and (granted.decision, granted.mode, granted.person_id) == (
        "granted",
        "claim",
        "bob",
    )
    controller.claim("bob", at(11), claim_id="c3")
    timed_out = controller.observe(None, None, at(11) + 6)
    assert timed_out is not None and "timed out" in timed_out.reason and controller.claimed_person is None


def test_a_new_claim_answers_the_pending_one_as_superseded() -> None:
    controller = door(allow_people=["bob"], claim_timeout_s=5)
    assert controller.claim("bob", at(9), claim_id="c1") is None
    reject = decision(None, "unknown", 0.1)
    controller.observe(None, reject, at(9) + 0.1)
    superseded = controller.claim("ada", at(9) + 1, claim_id="c2")
    assert superseded is not None
    assert (superseded.claim_id, superseded.person_id, superseded.decision, superseded.mode) == (
        "c1",
        "bob",
        "denied",
        "claim",
    )
    assert superseded.reason == "superseded by claim 'c2'" and superseded.frames == 1
    assert controller.claimed_person == "ada"
    unknown = controller.claim("mallory", at(9) + 2, claim_id="c3")  # denied at once: c2 stays pending
    assert unknown is not None and unknown.claim_id == "c3" and controller.claimed_person == "ada"
    expired = controller.claim("bob", at(9) + 7, claim_id="c4")  # c2 timed out before c4 came
    assert expired is not None and expired.claim_id == "c2" and "timed out" in expired.reason


def watch(controller: DoorController, person: str | None, frames: list[dict], start: float) -> list:
    """Frames of a face (face_sample keyword arguments) recognised as `person`, 30 per second."""
    results = []
    for i, frame in enumerate(frames):
        now = start + i / 30
        sample = face_sample(frame=i, **frame)
        result = controller.observe(decision(person), None, now, sample)
        if result is not None:
            results.append((now - start, result))
    return results


OPEN = [{}] * 30
BLINK = [*OPEN, {"closed": True}, {"closed": True}, *OPEN]


def test_with_liveness_a_grant_waits_for_a_blink() -> None:
    controller = door(liveness="blink")
    ((after, granted),) = watch(controller, "ada", BLINK, at(9))
    assert granted.decision == "granted" and after > 1.0  # not at the third frame: at the blink
    assert granted.reason == "recognised and allowed; liveness passed (blink)"
    assert granted.frames > 3


def test_with_liveness_a_face_that_never_blinks_is_denied_when_the_window_ends() -> None:
    controller = door(liveness="blink", liveness_timeout_s=2.0)
    results = watch(controller, "ada", [{}] * 90, at(9))
    ((denied_after, denied),) = results
    assert (denied.decision, denied.reason) == ("denied", "liveness: no blink within 2.0 s")
    assert 2.0 <= denied_after < 2.1
    later = watch(controller, "ada", [*BLINK, *[{}] * 300], at(9) + 3)  # blinks in the next window
    ((after, granted),) = later
    assert granted.decision == "granted" and 3 + after >= denied_after + REPEAT_AFTER_S  # when it may again


def test_liveness_does_not_delay_a_denial() -> None:
    controller = door(liveness="blink")
    ((after, denied),) = watch(controller, "bob", OPEN, at(9))
    assert denied.decision == "denied" and "may not enter" in denied.reason and after < 0.1


def test_with_liveness_a_claim_needs_the_blink_too() -> None:
    controller = door(allow_people=["bob"], liveness="blink", liveness_timeout_s=2.0)
    controller.claim("bob", at(9), claim_id="c1")
    accept = decision("bob", "match", 0.9)
    results = [controller.observe(accept, accept, at(9) + i / 30, face_sample(frame=i)) for i in range(80)]
    (denied,) = [r for r in results if r is not None]
    assert (denied.decision, denied.claim_id, denied.reason) == (
        "denied",
        "c1",
        "liveness: no blink within 2.0 s",
    )
    controller.claim("bob", at(10), claim_id="c2")
    frames = [*[{}] * 10, {"closed": True}, {}, {}]
    results = [
        controller.observe(accept, accept, at(10) + i / 30, face_sample(frame=i, **f))
        for i, f in enumerate(frames)
    ]
    (granted,) = [r for r in results if r is not None]
    assert (granted.decision, granted.reason) == (
        "granted",
        "claim confirmed by face; liveness passed (blink)",
    )
