"""Presentation-attack check at a door (pure python over the mesh's face samples): the recognised person
must blink, or blink and turn their head, in front of the camera before the door opens for them.

A frame is `closed` when both eyes changed against the same face's recent frames and grew brighter in the
middle (the lids cover the iris) while the brows and nose, their sharpness, the shape of the upper face and
its size did not change; `open` when the eyes match those frames. A blink is open → closed → open within
MAX_BLINK_S and at most MAX_UNSURE_FRAMES frames that are neither, with the open frames recognised as the
person and nobody else recognised in between; one closed frame is enough (a blink can fall between the
frames of a slow camera), but it must pass every test above with both eyes. A photo moved, turned, bent,
blurred or lit differently changes the control region along with the eyes, so its frames are neither."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from facefleet.vision.mesh import EyeChange, FaceSample, compare

LivenessMode = Literal["off", "blink", "blink_turn"]

REFERENCE_FRAMES = 9
"""Recent samples (closed ones left out) whose per-pixel median a frame is compared with; at least 3."""
MAX_GAP_S = 1.0
"""A face unseen for longer than this starts a new liveness session."""
MAX_BLINK_S = 1.0
"""Longest time from the last open frame before a blink to the first open frame after it."""
MAX_UNSURE_FRAMES = 2
"""Frames neither open nor closed allowed within a blink (lids half way); with more, the blink must start
again from an open frame. Another face swapped in to blink and out again takes more."""
MIN_PRESENCE = 0.5
"""Frames where the mesh model doubts there is a face count neither as open nor as closed."""

CLOSED_CHANGE = 0.4
"""Both eyes changed at least this much (1 − correlation; a real blink: 0.5–1.0, open eyes: < 0.1)."""
OPEN_CHANGE = 0.25
"""Both eyes changed at most this much for an open frame."""
CLOSED_BRIGHTENING = 1.2
"""The middle of both eye patches at least this much brighter (a real blink: 1.2–1.7)."""
MAX_CONTROL_CHANGE = 0.08
"""Brows and nose changed at most this much (a real blink: < 0.05)."""
SHARPNESS_BAND = (0.8, 1.25)
"""Detail of the control region within this band of the reference's (blur and glare move it out)."""
MAX_SHAPE_CHANGE = 0.04
"""Rigid points moved at most this far in face-frame units (bending and tilting move them)."""
MAX_SCALE_CHANGE = 0.06
"""Eye distance within ±6 % of the reference's (moving a picture to and from the camera changes it)."""
MIN_SCALE_RATIO = 0.67
"""A face whose eye distance jumps by more than 1.5× between frames is another face: a new session."""

Subject = str | None
"""Who a frame's face is: a person id (another one than the session's ends the session), or None when the
frame does not tell (recognised as nobody, low quality, ambiguous)."""


@dataclass(frozen=True)
class LivenessSettings:
    """mode: off, blink or blink_turn; timeout_s: how long a recognised person has to pass; turn_deg: the
    head yaw change that blink_turn asks for."""

    mode: LivenessMode = "off"
    timeout_s: float = 5.0
    turn_deg: float = 15.0


@dataclass(frozen=True)
class Verdict:
    """passed: proof seen; failed: the window passed without it; otherwise still pending. reason: for the
    access event."""

    state: Literal["passed", "pending", "failed"]
    reason: str


def classify(change: EyeChange, presence: float) -> Literal["open", "closed", "other"]:
    """One frame against the same face's recent frames."""
    if presence < MIN_PRESENCE or not _steady(change):
        return "other"
    if min(change.eyes) >= CLOSED_CHANGE and min(change.brightening) >= CLOSED_BRIGHTENING:
        return "closed"
    if max(change.eyes) <= OPEN_CHANGE:
        return "open"
    return "other"


def _steady(change: EyeChange) -> bool:
    """The face itself did not change: only the eyes may."""
    low, high = SHARPNESS_BAND
    return (
        change.control <= MAX_CONTROL_CHANGE
        and low <= change.sharpness <= high
        and change.shape <= MAX_SHAPE_CHANGE
        and abs(change.scale - 1.0) <= MAX_SCALE_CHANGE
    )


class LivenessCheck:
    """One door's liveness session: the face in view, frame after frame, and the proofs it has given.

    observe() once per analysed frame of the door's camera with the face the door decides on; verdict()
    tells whether a person may be granted now; restart() after a decision, so that every grant needs a
    proof of its own."""

    def __init__(self, settings: LivenessSettings) -> None:
        if settings.mode == "off":
            raise ValueError("a liveness check needs mode blink or blink_turn")
        self.settings = settings
        self._references: deque[FaceSample] = deque(maxlen=REFERENCE_FRAMES)
        self._last_open: float | None = None  # time of the last open frame of the session's person
        self._closed_seen = False  # a closed frame since then
        self._unsure = 0  # frames neither open nor closed since then
        self._subject: str | None = None  # the session's person (or "unknown")
        self._window_start: float | None = None  # when the session first recognised them
        self._last_seen: float | None = None
        self._blinked = False
        self._yaw_low, self._yaw_high = float("inf"), float("-inf")

    def observe(self, subject: Subject, sample: FaceSample | None, now: float) -> None:
        """One frame: the face the door decides on, or None (a face missed for a frame or two keeps its
        session; one gone for longer than MAX_GAP_S does not)."""
        if sample is None:
            return
        if self._last_seen is not None and now - self._last_seen > MAX_GAP_S:
            self._reset()
        if subject is not None and self._subject not in (None, subject):
            self._reset()
        elif self._jumped(sample):
            self._forget_frames()  # another face, or the same one much nearer: a new reference
        self._last_seen = now
        if subject is not None and self._subject is None:
            self._subject, self._window_start = subject, now
        if self._subject is not None and subject == self._subject:
            self._yaw_low = min(self._yaw_low, sample.yaw_deg)
            self._yaw_high = max(self._yaw_high, sample.yaw_deg)
        kind = None
        if len(self._references) >= 3:
            kind = classify(compare(sample, list(self._references)), sample.presence)
            self._step(kind, subject, now)
        if kind != "closed":  # the reference follows the face, never its shut eyes
            self._references.append(sample)

    def verdict(self, person_id: str, now: float) -> Verdict:
        """May `person_id` be granted now, as far as liveness goes? Failed once timeout_s has passed since
        the session first recognised them without their proof."""
        missing = self.missing(person_id)
        if not missing:
            proof = "blink and head turn" if self.settings.mode == "blink_turn" else "blink"
            return Verdict("passed", f"liveness passed ({proof})")
        started = self._window_start if self._subject == person_id else None
        if started is None or now - started < self.settings.timeout_s:
            return Verdict("pending", f"liveness: waiting ({missing})")
        return Verdict("failed", f"liveness: {missing} within {self.settings.timeout_s:.1f} s")

    def missing(self, person_id: str) -> str:
        """What `person_id` has yet to show, e.g. "no blink" ("" when nothing is missing)."""
        ours = self._subject == person_id
        needs = [] if ours and self._blinked else ["no blink"]
        turned = ours and self._yaw_high - self._yaw_low >= self.settings.turn_deg
        if self.settings.mode == "blink_turn" and not turned:
            needs.append(f"no head turn of {self.settings.turn_deg:g}°")
        return " and ".join(needs)

    def restart(self, now: float) -> None:
        """Forget the proofs, a blink under way included, and start a new window for the same face (its
        recent frames stay)."""
        self._last_open, self._closed_seen, self._unsure = None, False, 0
        self._blinked = False
        self._window_start = now
        self._yaw_low, self._yaw_high = float("inf"), float("-inf")

    def _step(self, kind: str, subject: Subject, now: float) -> None:
        """Follow open → closed → open; the open frames must be recognised as the session's person, and
        at most MAX_UNSURE_FRAMES frames in between may be neither."""
        if kind == "open":
            if subject is None or subject != self._subject:
                return
            previous = self._last_open
            if self._closed_seen and previous is not None and now - previous <= MAX_BLINK_S:
                self._blinked = True
            self._last_open, self._closed_seen, self._unsure = now, False, 0
        elif kind == "closed" and self._last_open is not None:
            self._closed_seen = True
        elif kind == "other":
            self._unsure += 1
            if self._unsure > MAX_UNSURE_FRAMES:
                self._last_open, self._closed_seen = None, False

    def _jumped(self, sample: FaceSample) -> bool:
        if not self._references:
            return False
        ratio = sample.eye_distance_px / max(self._references[-1].eye_distance_px, 1e-6)
        return not MIN_SCALE_RATIO <= ratio <= 1.0 / MIN_SCALE_RATIO

    def _forget_frames(self) -> None:
        self._references.clear()
        self._last_open, self._closed_seen, self._unsure = None, False, 0

    def _reset(self) -> None:
        self._forget_frames()
        self._subject = self._window_start = self._last_seen = None
        self._blinked = False
        self._yaw_low, self._yaw_high = float("inf"), float("-inf")
