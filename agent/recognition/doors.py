"""Door access decisions (pure python): who may enter, after how many agreeing frames, when, 1:1 badge
claims that must be confirmed by the face within a timeout, and, where the door asks for it, a liveness
proof (a blink, or a blink and a head turn) before a grant."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

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
"""A person decided at a door is not decided again there for this long (they are still in view)."""


@dataclass(frozen=True)
class AccessDecision:
    """A door's decision. decision: granted or denied; mode: identify (face only) or claim (badge + face)."""

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
    prominent face (or None when no face is in view) and, at a door with liveness on, that face's mesh
    sample; it returns an access decision when one is made.

    With liveness on, a person who would be granted waits until the liveness check has seen their proof,
    and is denied with the reason when liveness_timeout_s passes without it."""

    def __init__(self, door: DoorRules, person: Callable[[str], Person | None]) -> None:
        self.door = door
        self._person = person
        self._windows = [parse_window(window) for window in door.schedule]
        self._streak_subject: str | None = None
        self._streak: list[Decision] = []
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
        ended = None if replaced is None else self._observe_claim(None, now)
        if replaced is not None and ended is None:
            ended = self._decide(
                "denied",
                f"superseded by claim {claim_id!r}",
                "claim",
                replaced.person_id,
                list(self._streak),
                replaced.claim_id,
            )
        self._claim = _Claim(claim_id, person_id, now + (timeout_s or self.door.claim_timeout_s))
        self._reset()
        return ended

    def observe(
        self,
        decision: Decision | None,
        claim_score: Decision | None,
        now: float,
        face: FaceSample | None = None,
    ) -> AccessDecision | None:
        """decision: 1:N decision on the face (door threshold applied); claim_score: 1:1 decision against
        the pending claim, when there is one; face: the face's mesh sample, for the liveness check."""
        if self.liveness is not None:
            self.liveness.observe(self._subject(decision, claim_score), face, now)
        if self._claim is not None:
            return self._observe_claim(claim_score, now)
        if decision is None or decision.status in ("undecided", "ambiguous"):
            self._reset()
            return None
        subject = decision.person_id if decision.status == "match" else "unknown"
        assert subject is not None
        self._extend(subject, decision)
        if (
            len(self._streak) < self.door.min_frames
            or now - self._recent.get(subject, -1e18) < REPEAT_AFTER_S
        ):
            return None
        if subject == "unknown":
            return self._conclude(subject, now, "denied", "face not recognised", None)
        problem = self._refusal(subject, now)
        if problem:
            return self._conclude(subject, now, "denied", problem, subject)
        if self.liveness is None:
            return self._conclude(subject, now, "granted", "recognised and allowed", subject)
        verdict = self.liveness.verdict(subject, now)
        if verdict.state == "pending":
            return None  # the streak goes on until the proof comes or the window ends
        self.liveness.restart(now)
        granted = verdict.state == "passed"
        reason = f"recognised and allowed; {verdict.reason}" if granted else verdict.reason
        return self._conclude(subject, now, "granted" if granted else "denied", reason, subject)

    def _conclude(
        self, subject: str, now: float, verdict: str, reason: str, person_id: str | None
    ) -> AccessDecision:
        self._recent[subject] = now
        frames = list(self._streak)
        self._reset()
        return self._decide(verdict, reason, "identify", person_id, frames)

    def _observe_claim(self, decision: Decision | None, now: float) -> AccessDecision | None:
        claim = self._claim
        assert claim is not None
        if now > claim.deadline:
            confirmed = self._streak_subject == "accept" and len(self._streak) >= self.door.min_frames
            reason = "no matching face seen before the claim timed out"
            if confirmed and self.liveness is not None:  # the face matched; its proof never came
                reason = f"liveness: {self.liveness.missing(claim.person_id)} before the claim timed out"
                self.liveness.restart(now)
            self._claim = None
            frames = list(self._streak)
            self._reset()
            return self._decide("denied", reason, "claim", claim.person_id, frames, claim.claim_id)
        if decision is None or decision.status == "undecided":
            return None
        subject = "accept" if decision.accepted else "reject"
        self._extend(subject, decision)
        if len(self._streak) < self.door.min_frames:
            return None
        liveness = None
        if subject == "accept" and self.liveness is not None and not self._refusal(claim.person_id, now):
            liveness = self.liveness.verdict(claim.person_id, now)
            if liveness.state == "pending":
                return None  # until the proof comes, the window ends or the claim times out
            self.liveness.restart(now)
        frames = list(self._streak)
        self._claim = None
        self._reset()
        if liveness is not None and liveness.state == "failed":
            return self._decide("denied", liveness.reason, "claim", claim.person_id, frames, claim.claim_id)
        if subject == "reject":
            return self._decide(
                "denied",
                "face does not match the claimed person",
                "claim",
                claim.person_id,
                frames,
                claim.claim_id,
            )
        problem = self._refusal(claim.person_id, now)
        reason = problem or "claim confirmed by face"
        if liveness is not None:
            reason = f"{reason}; {liveness.reason}"
        verdict = "denied" if problem else "granted"
        return self._decide(verdict, reason, "claim", claim.person_id, frames, claim.claim_id)

    def _subject(self, decision: Decision | None, claim_score: Decision | None) -> Subject:
        """Who the face is, for the liveness check: a badge claim the face confirms names the person,
        otherwise the 1:N decision does ("unknown" for nobody enrolled, None when it could not tell)."""
        claimed = self.claimed_person
        if claimed is not None and claim_score is not None and claim_score.accepted:
            return claimed
        if decision is None or decision.status in ("undecided", "ambiguous"):
            return None
        return decision.person_id if decision.status == "match" else "unknown"

    def _refusal(self, person_id: str, now: float) -> str | None:
        person = self._person(person_id)
        allowed = person is not None and (
            person_id in self.door.allow_people or bool(set(person.groups) & set(self.door.allow_groups))
        )
        if not allowed:
            return f"{person_id!r} may not enter through {self.door.name!r}"
        if self._windows and not self._open_at(now):
            return f"{self.door.name!r} is closed at this time (open {', '.join(self.door.schedule)})"
        return None

    def _open_at(self, now: float) -> bool:
        moment = datetime.fromtimestamp(now)
        minute = moment.hour * 60 + moment.minute
        for start, end in self._windows:
            if (start <= minute < end) if start <= end else (minute >= start or minute < end):
                return True
        return False

    def _extend(self, subject: str, decision: Decision) -> None:
        if subject != self._streak_subject:
            self._streak_subject, self._streak = subject, []
        self._streak.append(decision)

    def _reset(self) -> None:
        self._streak_subject, self._streak = None, []

    def _decide(
        self,
        verdict: str,
        reason: str,
        mode: str,
        person_id: str | None,
        frames: list[Decision],
        claim_id: str | None = None,
    ) -> AccessDecision:
        scores = [d.score for d in frames if d.score is not None]
        margins = [d.margin for d in frames if d.margin is not None]
        return AccessDecision(
            door=self.door.name,
            decision=verdict,
            reason=reason,
            mode=mode,
            person_id=person_id,
            score=max(scores) if scores else None,
            margin=min(margins) if margins else None,
            frames=len(frames),
            claim_id=claim_id,
        )
