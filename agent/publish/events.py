"""JSON payloads the agent publishes: every one carries a `schema` version, an event id and a UTC time."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.recognition.tracking import TrackEvent

SCHEMA = 1


@dataclass(frozen=True)
class Versions:
    """What produced a result: agent and OpenVINO versions, model ids per task, gallery revision."""

    agent: str
    openvino: str
    models: Mapping[str, str]
    gallery_revision: int

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "openvino": self.openvino, "models": dict(self.models)}


def utc_iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def envelope(kind: str, device_id: str, timestamp: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "event_id": str(uuid.uuid4()),
        "kind": kind,
        "device_id": device_id,
        "time": utc_iso(timestamp),
    }


def face_event(
    device_id: str, camera: str, event: TrackEvent, name: str | None, versions: Versions, now: float
) -> dict[str, Any]:
    """events/face: a tracked face whose identity was decided, changed, or whose track ended."""
    known = event.identity != "unknown"
    return {
        **envelope("face", device_id, now),
        "camera": camera,
        "event": event.kind,
        "track_id": event.track_id,
        "identity": {
            "status": "match" if known else "unknown",
            "person_id": event.identity if known else None,
            "name": name,
        },
        "score": event.score,
        "frames": event.frames,
        "quality": event.quality,
        "expression": {"label": event.expression, "probabilities": event.expression_probabilities},
        "box_xyxy": [round(v, 1) for v in event.box_xyxy],
        "first_seen": utc_iso(event.first_seen),
        "last_seen": utc_iso(event.last_seen),
        "models": dict(versions.models),
        "gallery_revision": versions.gallery_revision,
    }


def access_event(
    device_id: str, camera: str, decision: AccessDecision, versions: Versions, now: float
) -> dict[str, Any]:
    """access/<door>: a door decision with everything an auditor needs."""
    return {
        **envelope("access", device_id, now),
        "door": decision.door,
        "camera": camera,
        "decision": decision.decision,
        "reason": decision.reason,
        "mode": decision.mode,
        "claim_id": decision.claim_id,
        "person_id": decision.person_id,
        "score": None if decision.score is None else round(decision.score, 4),
        "margin": None if decision.margin is None else round(decision.margin, 4),
        "frames": decision.frames,
        "models": dict(versions.models),
        "gallery_revision": versions.gallery_revision,
    }


def reply(
    command: str, request_id: str | None, ok: bool, detail: str, device_id: str, now: float
) -> dict[str, Any]:
    """replies/<command>: the outcome of a command received on cmd/<command>."""
    return {
        **envelope("reply", device_id, now),
        "command": command,
        "request_id": request_id,
        "ok": ok,
        "detail": detail,
    }
