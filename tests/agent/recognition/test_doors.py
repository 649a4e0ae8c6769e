"""Door decisions without cameras: groups, evidence combined over good frames, schedules, repeats, badge
claims, and the door thresholds per embedding model."""

from __future__ import annotations

from datetime import datetime

import pytest

from facefleet.agent.config import AgentConfig, DoorConfig
from facefleet.agent.domain.records import Person
from facefleet.agent.recognition.doors import (
    DOOR_DEFAULT_THRESHOLD,
    DOOR_THRESHOLDS,
    EVIDENCE_GAP_S,
    REPEAT_AFTER_S,
    DoorController,
)
from facefleet.agent.recognition.gallery import PersonScore
from facefleet.agent.recognition.matching import Decision
from tests.agent.recognition.face_samples import face_sample

PEOPLE = {"ada": Person("ada", "Ada", ("staff",)), "bob": Person("bob", "Bob", ("visitors",))}


THRESHOLD = 0.5


def decision(person: str | None, status: str = "match", score: float = 0.8, **others: float) -> Decision:
    """A frame's decision at the door threshold: `person` (or nobody) scored `score`, other candidates as
    given (person id → score)."""
    ranked = sorted(
        [*([PersonScore(person, score)] if person else []), *(PersonScore(p, s) for p, s in others.items())],
        key=lambda c: -c.score,
    )
    return Decision(status, "sface@2021dec", person, score, None, THRESHOLD, "test", tuple(ranked))  # type: ignore[arg-type]


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


def test_a_new_track_or_no_face_starts_the_evidence_again() -> None:
    controller = door()
    for i in range(2):
        assert controller.observe(decision("ada"), None, at(9) + i * 0.1, track="t1") is None
    assert controller.observe(decision("ada"), None, at(9) + 0.2, track="t2") is None  # someone else's face
    assert controller.observe(None, None, at(9) + 0.3) is None  # nobody in view
    assert controller.observe(decision("ada"), None, at(9) + 0.4, track="t2") is None
    assert controller.observe(decision("ada"), None, at(9) + 0.5, track="t2") is None
    granted = controller.observe(decision("ada"), None, at(9) + 0.6, track="t2")
    assert granted is not None and (granted.decision, granted.frames) == ("granted", 3)


def test_a_pause_in_the_frames_starts_the_evidence_again() -> None:
    """A camera stalls for two minutes with Ada's track open; the next face on the same spot, a stranger,
    is judged on its own frames, not on Ada's."""
    controller = door()
    assert feed(controller, "ada", 2, at(9)) == []
    stranger = decision(None, "unknown", 0.02)
    after = [controller.observe(stranger, None, at(9) + 120 + i * 0.1, track=None) for i in range(3)]
    assert after[:2] == [None, None] and after[2] is not None
    assert (after[2].decision, after[2].person_id, after[2].frames) == ("denied", None, 3)
    assert feed(controller, "ada", 2, at(10)) == []  # a pause of more than EVIDENCE_GAP_S, not less
    granted = controller.observe(decision("ada"), None, at(10) + 0.1 + EVIDENCE_GAP_S)
    assert granted is not None and (granted.decision, granted.frames) == ("granted", 3)


def test_a_slow_camera_decides_on_frames_further_apart_than_the_evidence_gap() -> None:
    """Ada at a door camera analysed once every 2.5 s: the evidence gap follows the camera's usual interval,
    and a pause of many intervals still starts the evidence again."""
    controller = door()
    results = [controller.observe(decision("ada"), None, at(9) + i * 2.5) for i in range(5)]
    assert [r.decision for r in results if r is not None] == ["granted"]
    stranger = decision(None, "unknown", 0.02)
    controller.observe(decision("bob"), None, at(9) + 15.0)  # bob's evidence begins
    after = [
        controller.observe(stranger, None, at(9) + 100 + i * 2.5) for i in range(3)
    ]  # a stall, then a stranger
    assert after[2] is not None and (after[2].decision, after[2].frames) == ("denied", 3)


def test_a_second_stranger_on_another_track_is_denied_and_the_first_is_not_denied_again() -> None:
    controller = door()
    stranger = decision(None, "unknown", 0.02)
    first = [controller.observe(stranger, None, at(9) + i * 0.1, track="t1") for i in range(30)]
    assert [r.decision for r in first if r is not None] == ["denied"]  # once while the track lasts
    second = [controller.observe(stranger, None, at(9) + 3 + i * 0.1, track="t2") for i in range(3)]
    assert second[2] is not None and second[2].decision == "denied"  # 3 s later: an audit row of its own


def test_intervals_run_on_the_steady_clock_and_the_schedule_on_the_wall_clock() -> None:
    """The wall clock was an hour fast and NTP set it back: the door neither waits an hour to decide on Ada
    again nor reads its schedule off the steady clock."""
    controller = door(schedule=["08:00-10:00"])
    granted = [controller.observe(decision("ada"), None, 100 + i * 0.1, wall=at(9, 30)) for i in range(3)][2]
    assert granted is not None and granted.granted
    again = [
        controller.observe(decision("ada"), None, 100 + REPEAT_AFTER_S + i * 0.1, wall=at(8, 30) + i * 0.1)
        for i in range(3)
    ][2]
    assert (
        again is not None and again.granted
    )  # 10 s later on the steady clock: an hour "earlier" on the wall
    closed = [controller.observe(decision("ada"), None, 200 + i * 0.1, wall=at(11)) for i in range(3)][2]
    assert closed is not None and "closed at this time" in closed.reason
    stepped = door()  # a caller whose clock does step back is not locked out either
    assert feed(stepped, "ada", 3, at(9))[0].granted
    assert [r.decision for r in feed(stepped, "ada", 3, at(9) - 3600)] == ["granted"]


def test_frames_below_the_quality_gate_are_left_undecided() -> None:
    controller = door()
    poor = Decision("undecided", "sface@2021dec", None, None, None, THRESHOLD, "quality too low")
    assert [controller.observe(poor, None, at(9) + i) for i in range(50)] == [
        None
    ] * 50  # no grant, no denial
    feed(controller, "ada", 2, at(10))
    assert controller.observe(poor, None, at(10) + 0.2) is None  # neither counted nor ending the evidence
    granted = controller.observe(decision("ada"), None, at(10) + 0.3)
    assert granted is not None and (granted.decision, granted.frames) == ("granted", 3)
    assert all(controller.observe(poor, None, at(11) + i) is None for i in range(50))  # strangers too


def ada_scores(scores: list[float]) -> list:
    """A door's results for frames where Ada, the best candidate, scored these (a match from THRESHOLD)."""
    controller = door()
    return [
        controller.observe(
            decision("ada", score=s) if s >= THRESHOLD else decision(None, "unknown", s, ada=s),
            None,
            at(9) + i,
        )
        for i, s in enumerate(scores)
    ]


def test_the_scores_of_several_frames_are_combined_not_the_best_one() -> None:
    lucky = [0.3, 0.65, 0.3]  # one frame above the threshold: their mean 0.417 is not
    *waiting, denied = ada_scores(lucky)
    assert waiting == [None, None] and denied is not None
    assert (denied.decision, denied.reason, denied.frames) == ("denied", "face not recognised", 3)
    assert denied.score == pytest.approx(sum(lucky) / 3)
    *waiting, granted = ada_scores([0.6, 0.45, 0.6])  # one frame below it: their mean 0.55 is above
    assert waiting == [None, None] and granted is not None
    assert (granted.decision, granted.person_id, granted.score) == ("granted", "ada", pytest.approx(0.55))


def test_a_person_must_lead_the_next_one_over_the_frames() -> None:
    controller = door(evidence_frames=4)
    close = [
        controller.observe(decision("ada", score=0.62, bob=0.6), None, at(9) + i * 0.1) for i in range(3)
    ]
    assert close == [None] * 3  # ambiguous: more frames are awaited
    clear = [
        controller.observe(decision("ada", score=0.8, bob=0.4), None, at(9) + 1 + i * 0.1) for i in range(3)
    ]
    granted = next(r for r in clear if r is not None)
    assert (granted.person_id, granted.frames) == ("ada", 4)  # the last four good frames
    assert granted.margin is not None and granted.margin >= 0.05


def test_door_thresholds_per_model() -> None:
    config = AgentConfig.model_validate(
        {
            "cameras": [{"name": "cam", "source": "0"}],
            "doors": [
                {"name": "front", "camera": "cam"},
                {"name": "vault", "camera": "cam", "threshold": 0.6},
            ],
            "matching": {"door_thresholds": {"arcface@1": 0.4}, "door_default_threshold": 0.55},
        }
    )
    front, vault = config.doors
    sface = config.door_threshold(front, "sface@2021dec")
    assert (sface.threshold, sface.source) == (
        DOOR_THRESHOLDS["sface@2021dec"][0],
        "built-in for sface@2021dec",
    )
    assert sface.threshold > 0.363 and sface.margin is not None and sface.margin > 0.02
    int8 = config.door_threshold(front, "sface@2021dec-int8")
    assert int8.threshold == DOOR_THRESHOLDS["sface@2021dec-int8"][0] != sface.threshold
    assert (
        config.door_threshold(front, "arcface@1").threshold,
        config.door_threshold(front, "other@1").threshold,
    ) == (0.4, 0.55)
    assert config.door_threshold(vault, "sface@2021dec").source == "doors.vault.threshold"
    assert AgentConfig().matching.door_default_threshold == DOOR_DEFAULT_THRESHOLD
    with pytest.raises(ValueError, match="evidence_frames 2 < min_frames 3"):
        AgentConfig.model_validate(
            {
                "cameras": [{"name": "cam", "source": "0"}],
                "doors": [{"name": "d", "camera": "cam", "evidence_frames": 2}],
            }
        )


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


def test_with_a_claim_nobody_in_view_starts_the_evidence_again() -> None:
    """Ada badges in and is seen twice, then leaves; a stranger who steps in on the claim's remaining time
    is judged on their own frames."""
    controller = door(claim_timeout_s=30)
    controller.claim("ada", at(9), claim_id="c1")
    accept, reject = decision("ada", "match", 0.9), decision(None, "unknown", 0.05)
    assert [controller.observe(accept, accept, at(9) + i * 0.1) for i in range(2)] == [None, None]
    assert [controller.observe(None, None, at(9) + 0.2 + i * 0.1) for i in range(5)] == [None] * 5
    results = [controller.observe(reject, reject, at(9) + 1 + i * 0.1) for i in range(3)]
    assert results[:2] == [None, None] and results[2] is not None
    assert (results[2].decision, results[2].reason) == ("denied", "face does not match the claimed person")


def test_a_claim_granted_is_not_granted_again_by_the_face_alone() -> None:
    controller = door()
    controller.claim("ada", at(9), claim_id="c1")
    accept = decision("ada", "match", 0.9)
    results = [controller.observe(accept, accept, at(9) + i * 0.1, track="t1") for i in range(30)]
    assert [(r.mode, r.decision) for r in results if r is not None] == [("claim", "granted")]  # one opening


def test_with_liveness_a_claim_needs_a_blink_given_after_it() -> None:
    """Ada is let in, looks away for a frame and starts a blink on frames too few for the door to decide
    on, then badges in: the blink she finishes on the claim's first frame does not confirm the claim."""
    controller = door(liveness="blink", liveness_timeout_s=5.0, claim_timeout_s=10)
    ((_, granted),) = watch(controller, "ada", BLINK, at(9))
    assert granted.granted
    assert controller.observe(None, None, at(9) + 2.1) is None  # nobody in view for a frame
    for i, eyes in enumerate([{}, {"closed": True}]):
        sample = face_sample(frame=70 + i, **eyes)
        assert controller.observe(decision("ada"), None, at(9) + 2.13 + i / 30, sample) is None
    controller.claim("ada", at(9) + 2.2, claim_id="c1")
    accept = decision("ada", "match", 0.9)
    claim_frames = [*[{}] * 6, *BLINK]
    results = [
        controller.observe(accept, accept, at(9) + 2.23 + i / 30, face_sample(frame=80 + i, **eyes))
        for i, eyes in enumerate(claim_frames)
    ]
    (index,) = [i for i, r in enumerate(results) if r is not None]
    assert index > 6 and results[index].mode == "claim" and results[index].granted  # on a blink of its own


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
    silent = watch(controller, "ada", [*BLINK, *[{}] * 300], at(9) + 3)  # blinks while the door is silent
    ((after, again),) = silent
    assert (again.decision, again.reason) == ("denied", "liveness: no blink within 2.0 s")  # not kept
    assert 3 + after > denied_after + REPEAT_AFTER_S + 1.9  # a new window once the door may decide again
    ((_, granted),) = watch(controller, "ada", BLINK, at(9) + 30)
    assert granted.decision == "granted"


def test_with_liveness_frames_of_a_member_below_the_threshold_do_not_restart_the_proof() -> None:
    """Ada's frames straddle the threshold (0.65 and 0.45, a mean of 0.6): a frame recognised as nobody
    tells nothing about who blinks, so her blink still counts."""
    controller = door(liveness="blink", liveness_timeout_s=2.0)
    results = []
    for i in range(120):
        score = 0.45 if i % 4 == 0 else 0.65
        frame = (
            decision("ada", score=score)
            if score >= THRESHOLD
            else decision(None, "unknown", score, ada=score)
        )
        sample = face_sample(frame=i, closed=i == 40)
        result = controller.observe(frame, None, at(9) + i / 30, sample, track="t1")
        if result is not None:
            results.append(result)
    assert [(r.decision, r.reason) for r in results][:1] == [
        ("granted", "recognised and allowed; liveness passed (blink)")
    ]


def test_with_liveness_a_blink_of_someone_who_left_does_not_pass_for_a_photo() -> None:
    """Ada is granted, blinks while the door is silent, and leaves; her photo held up on a new track must
    blink for itself."""
    controller = door(liveness="blink", liveness_timeout_s=2.0)
    ((_, granted),) = watch(controller, "ada", BLINK, at(9))
    assert granted.granted
    assert watch(controller, "ada", [*BLINK, *[{}] * 190], at(9) + 2.1) == []  # blinks again, silently
    photo = [  # held up a moment after she left, once the door may decide on her again
        controller.observe(decision("ada"), None, at(9) + 10.6 + i / 30, face_sample(frame=i), track="photo")
        for i in range(90)
    ]
    assert [(r.decision, r.reason) for r in photo if r is not None] == [
        ("denied", "liveness: no blink within 2.0 s")
    ]


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
