"""The agent's events as the server takes them: link Events (facefleet.link.events), validated on
construction, which facefleet.link.serde encodes as protobuf. gallery_revision is the server revision the
agent had applied, not the store's own (local enrolments move that one). A face event's snapshot goes with
it."""

from __future__ import annotations

from datetime import datetime, timezone

from facefleet.agent.publish.events import AgentEvent, FaceEvent
from facefleet.link.checks import MAX_REASON_CHARS
from facefleet.link.events import AttributesResult, Decision, Event, EventKind, ExpressionResult
from facefleet.vision.faces import EXPRESSION_LABELS


def report_event(event: AgentEvent, server_revision: int) -> Event:
    """The link Event of a face or access event; LinkError when a value breaks the link's limits."""
    envelope = event.envelope
    kind: EventKind
    decision: Decision
    snapshot = None
    attributes = None
    if isinstance(event, FaceEvent):
        track = event.track
        known = track.identity != "unknown"
        kind, decision, door = "face", "match" if known else "unknown", ""
        person_id, score, margin = track.identity if known else "", track.score, 0.0
        quality, expression = track.quality, _expression(track.expression, track.expression_probabilities)
        reason = f"track {track.kind} after {track.frames} frames"
        snapshot = event.snapshot
        if track.attributes is not None:  # only with [attributes] enabled = true
            estimate = track.attributes
            attributes = AttributesResult(
                estimate.gender,
                round(estimate.probabilities["male"], 4),
                round(min(150.0, max(0.0, estimate.age_years)), 1),
                estimate.age_band,
            )
    else:
        access = event.decision
        kind, decision, door = "access", "granted" if access.granted else "denied", access.door
        person_id, score, margin = access.person_id or "", access.score or 0.0, access.margin or 0.0
        quality, expression = 0.0, None
        reason = f"{access.reason} ({access.mode})" if access.reason else access.mode
    return Event(
        event_id=envelope.event_id,
        device_id=envelope.device_id,
        time=datetime.fromtimestamp(envelope.time, timezone.utc),
        kind=kind,
        decision=decision,
        camera=envelope.camera,
        person_id=person_id,
        score=score,
        margin=margin,
        expression=expression,
        quality=quality,
        model_versions=dict(envelope.versions.models),
        gallery_revision=max(0, server_revision),
        door=door,
        reason=reason[:MAX_REASON_CHARS],
        snapshot=snapshot,
        attributes=attributes,
    )


def _expression(label: str | None, probabilities: dict[str, float]) -> ExpressionResult | None:
    """The smoothed expression, probabilities clipped to 0–1 (None when no known label was decided)."""
    if label not in EXPRESSION_LABELS:
        return None
    return ExpressionResult(
        label, {k: min(1.0, max(0.0, float(p))) for k, p in probabilities.items() if k in EXPRESSION_LABELS}
    )
