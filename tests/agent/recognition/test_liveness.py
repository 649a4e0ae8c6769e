"""The liveness state machine without models: frames classified against the same face's recent frames, blinks
bound to the recognised person, head turns, the window and its timeout."""

from __future__ import annotations

import pytest

from facefleet.agent.recognition.liveness import (
    MAX_BLINK_S,
    MAX_GAP_S,
    LivenessCheck,
    LivenessSettings,
    classify,
)
from facefleet.vision.mesh import EyeChange
from tests.agent.recognition.face_samples import face_sample

STEADY = {"control": 0.02, "sharpness": 1.0, "shape": 0.01, "scale": 1.0}
DT = 1 / 30


def change(
    eyes: tuple[float, float], brightening: tuple[float, float] = (1.0, 1.0), **face: float
) -> EyeChange:
    return EyeChange(eyes=eyes, brightening=brightening, **{**STEADY, **face})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("eye_change", "presence", "expected"),
    [
        (change((0.03, 0.05)), 1.0, "open"),
        (change((0.7, 0.6), (1.5, 1.4)), 1.0, "closed"),
        (change((0.7, 0.1), (1.5, 1.0)), 1.0, "other"),  # one eye: a wink, a glint or a bad mesh
        (change((0.7, 0.6), (0.8, 0.9)), 1.0, "other"),  # eyes changed but grew darker: not lids over irises
        (change((0.7, 0.6), (1.5, 1.4), control=0.3), 1.0, "other"),  # brows and nose changed too
        (change((0.7, 0.6), (1.5, 1.4), sharpness=0.5), 1.0, "other"),  # blurred
        (change((0.7, 0.6), (1.5, 1.4), sharpness=1.6), 1.0, "other"),  # sharpened, glare edges
        (change((0.7, 0.6), (1.5, 1.4), shape=0.08), 1.0, "other"),  # bent or tilted
        (change((0.7, 0.6), (1.5, 1.4), scale=1.1), 1.0, "other"),  # moved towards the camera
        (change((0.7, 0.6), (1.5, 1.4)), 0.2, "other"),  # the mesh doubts there is a face
        (change((0.3, 0.3)), 1.0, "other"),  # neither
    ],
)
def test_frames_are_closed_only_when_the_eyes_alone_changed(
    eye_change: EyeChange, presence: float, expected: str
) -> None:
    assert classify(eye_change, presence) == expected


def play(check: LivenessCheck, frames: list[dict], subject: str | None = "ada", start: float = 0.0) -> float:
    """Feed frames (face_sample keyword arguments; "subject" overrides the default), 30 per second; the
    time after the last one."""
    now = start
    for index, frame in enumerate(frames):
        drawn = {key: value for key, value in frame.items() if key != "subject"}
        check.observe(frame.get("subject", subject), face_sample(frame=int(now * 30) + index, **drawn), now)
        now += DT
    return now


OPEN = [{}] * 8
BLINK = [*OPEN, {"closed": True}, {"closed": True}, {}, {}]


def blink_check(mode: str = "blink") -> LivenessCheck:
    return LivenessCheck(LivenessSettings(mode, timeout_s=5.0, turn_deg=15.0))  # type: ignore[arg-type]


def test_a_blink_of_the_recognised_person_passes() -> None:
    check = blink_check()
    now = play(check, BLINK)
    verdict = check.verdict("ada", now)
    assert (verdict.state, verdict.reason) == ("passed", "liveness passed (blink)")
    assert check.verdict("bob", now).state == "pending"  # bob was never in view


def test_without_a_blink_it_waits_then_fails_with_the_reason() -> None:
    check = blink_check()
    now = play(check, [{} for _ in range(60)])
    assert check.verdict("ada", now).state == "pending"
    now = play(check, [{} for _ in range(100)], start=now)
    verdict = check.verdict("ada", now)
    assert (verdict.state, verdict.reason) == ("failed", "liveness: no blink within 5.0 s")
    check.restart(now)
    assert check.verdict("ada", now).state == "pending"  # a new window


@pytest.mark.parametrize(
    "closed_frame",
    [
        {"closed": True, "blur": 2.0},  # the picture went out of focus as the eyes "closed"
        {"closed": True, "scale": 1.15},  # it came nearer
        {"closed": True, "shape_shift": 0.06},  # it was bent
        {"closed": True, "face": 7},  # another face in its place
        {"closed": True, "presence": 0.1},
    ],
)
def test_eyes_that_change_along_with_the_face_are_no_blink(closed_frame: dict) -> None:
    check = blink_check()
    now = play(check, [*[{} for _ in range(8)], dict(closed_frame), dict(closed_frame), {}, {}])
    assert check.verdict("ada", now).state == "pending"


def test_the_open_frames_around_a_blink_must_be_recognised_as_the_person() -> None:
    unsure = blink_check()  # recognition could not tell who it was, before and after
    now = play(unsure, [{"subject": "ada"}, *[dict(f, subject=None) for f in BLINK]])
    assert unsure.verdict("ada", now).state == "pending"
    stranger = blink_check()  # someone unknown blinks, then a picture of ada is shown in the same place
    now = play(stranger, [*[dict(f, subject="unknown") for f in BLINK], *[{"subject": "ada"}] * 4])
    assert stranger.verdict("ada", now).state == "pending"
    other = blink_check()  # bob blinks; ada's picture is no bob
    now = play(other, [*[dict(f, subject="bob") for f in BLINK], *[{"subject": "ada"}] * 4])
    assert (other.verdict("bob", now).state, other.verdict("ada", now).state) == ("pending", "pending")


def test_recognition_may_drop_out_while_the_eyes_are_shut() -> None:
    check = blink_check()
    frames = [*OPEN, {"closed": True, "subject": None}, {"closed": True, "subject": None}, {}, {}]
    now = play(check, frames)
    assert check.verdict("ada", now).state == "passed"


def test_one_closed_frame_in_one_eye_or_a_blink_too_slow_is_not_enough() -> None:
    never_open_before = blink_check()  # the session starts with closed eyes: no open → closed step
    now = play(never_open_before, [*[{"closed": True}] * 5, {}, {}])
    assert never_open_before.verdict("ada", now).state == "pending"
    too_slow = blink_check()
    shut = round(MAX_BLINK_S * 30) + 5
    now = play(too_slow, [*OPEN, *[{"closed": True}] * shut, {}, {}])
    assert too_slow.verdict("ada", now).state == "pending"


def test_a_face_missed_for_a_moment_keeps_its_session_and_one_gone_for_longer_does_not() -> None:
    check = blink_check()
    now = play(check, BLINK)
    for _ in range(10):  # the detector misses the face for a third of a second
        check.observe(None, None, now)
        now += DT
    now = play(check, OPEN[:3], start=now)
    assert check.verdict("ada", now).state == "passed"
    now = play(check, OPEN[:3], start=now + MAX_GAP_S + 0.5)
    assert check.verdict("ada", now).state == "pending"


def test_blink_turn_needs_a_head_turn_as_well() -> None:
    still = blink_check("blink_turn")
    now = play(still, BLINK)
    assert still.verdict("ada", now).state == "pending"
    now = play(still, [{} for _ in range(150)], start=now)
    assert still.verdict("ada", now).reason == "liveness: no head turn of 15° within 5.0 s"
    turning = blink_check("blink_turn")
    now = play(turning, [{"yaw_deg": -2.0 + 2.0 * i} for i in range(12)])  # 22° over 0.4 s
    now = play(turning, BLINK, start=now)
    verdict = turning.verdict("ada", now)
    assert (verdict.state, verdict.reason) == ("passed", "liveness passed (blink and head turn)")


def test_a_restart_forgets_the_proof() -> None:
    check = blink_check()
    now = play(check, BLINK)
    check.restart(now)
    assert check.verdict("ada", now).state == "pending"
    now = play(check, BLINK, start=now)
    assert check.verdict("ada", now).state == "passed"
    check.restart(now)
    now = play(check, [*OPEN, {"closed": True}], start=now)
    check.restart(now)  # a decision while the eyes are shut: the blink under way is forgotten too
    now = play(check, OPEN, start=now)
    assert check.verdict("ada", now).state == "pending"


def test_liveness_off_has_no_check() -> None:
    with pytest.raises(ValueError, match="blink or blink_turn"):
        LivenessCheck(LivenessSettings("off"))


def test_a_face_swapped_in_to_blink_for_a_photo_gives_no_proof() -> None:
    """A picture of ada; someone recognised as nobody in particular takes its place, blinks, and the
    picture comes back, each swap within a fraction of a second."""
    check = blink_check()
    stand_in = [{"face": 3, "subject": None}] * 6
    blink = [{"face": 3, "subject": None, "closed": True}] * 2
    now = play(check, [*OPEN, *stand_in, *blink, *stand_in[:2], *[{"subject": "ada"}] * 8])
    assert check.verdict("ada", now).state == "pending"
