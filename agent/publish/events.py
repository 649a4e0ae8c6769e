"""The agent's events, typed: a face event (made from the tracker's TrackEvent) and an access event (made
from a door's AccessDecision), each in an envelope of event id, device, camera, time and versions. Made once,
then encoded twice: `mqtt_payload` here (JSON with a `schema` version, published over MQTT), and
facefleet.agent.fleet.reports for the server (a link Event, protobuf on the wire)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.recognition.tracking import TrackEvent
from facefleet.link.events import FaceSnapshot

SCHEMA = 1


@dataclass(frozen=True)
class Versions:
    """What produced a result: agent and OpenVINO versions, model ids per task, the store's gallery
    revision."""

    agent: str
    openvino: str
    models: Mapping[str, str]
    gallery_revision: int

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "openvino": self.openvino, "models": dict(self.models)}


@dataclass(frozen=True)
class Envelope:
    """Who saw what where and when: device and camera, time in unix seconds, versions, a UUID event id."""

    device_id: str
    camera: str
    time: float
    versions: Versions
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class FaceEvent:
    """A tracked face whose identity was decided, changed, or whose track ended; name: the identified
    person's display name (None for unknown faces); snapshot: the track's best face, reported to the server
    with the event (MQTT carries only its id, the event id)."""

    envelope: Envelope
    track: TrackEvent
    name: str | None = None
    snapshot: FaceSnapshot | None = None

    @property
    def topic(self) -> str:
        return "events/face"


@dataclass(frozen=True)
class AccessEvent:
    """A door's decision."""

    envelope: Envelope
    decision: AccessDecision

    @property
    def topic(self) -> str:
        return f"access/{self.decision.door}"


AgentEvent = FaceEvent | AccessEvent


def face_event(
    device_id: str,
    camera: str,
    track: TrackEvent,
    name: str | None,
    versions: Versions,
    now: float,
    snapshot: FaceSnapshot | None = None,
) -> FaceEvent:
    return FaceEvent(Envelope(device_id, camera, now, versions), track, name, snapshot)


def access_event(
    device_id: str, camera: str, decision: AccessDecision, versions: Versions, now: float
) -> AccessEvent:
    return AccessEvent(Envelope(device_id, camera, now, versions), decision)


def utc_iso(timestamp: float) -> str:
    """Unix seconds → '2025-01-31T12:00:00.123Z'."""
    return (
        datetime.fromtimestamp(timestamp, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def header(kind: str, device_id: str, timestamp: float, event_id: str | None = None) -> dict[str, Any]:
    """The fields every published payload starts with."""
    return {
        "schema": SCHEMA,
        "event_id": event_id or str(uuid.uuid4()),
        "kind": kind,
        "device_id": device_id,
        "time": utc_iso(timestamp),
    }


def mqtt_payload(event: AgentEvent) -> dict[str, Any]:
    """The JSON payload of events/face or access/<door>."""
    envelope = event.envelope
    versions = envelope.versions
    if isinstance(event, FaceEvent):
        track = event.track
        known = track.identity != "unknown"
        body: dict[str, Any] = {
            "camera": envelope.camera,
            "event": track.kind,
            "track_id": track.track_id,
            "identity": {
                "status": "match" if known else "unknown",
                "person_id": track.identity if known else None,
                "name": event.name,
            },
            "score": track.score,
            "frames": track.frames,
            "quality": track.quality,
            "expression": {"label": track.expression, "probabilities": track.expression_probabilities},
            "box_xyxy": [round(v, 1) for v in track.box_xyxy],
            "first_seen": utc_iso(track.first_seen),
            "last_seen": utc_iso(track.last_seen),
            "snapshot_id": envelope.event_id if event.snapshot is not None else None,
        }
        if track.attributes is not None:  # only with [attributes] enabled = true
            body["attributes"] = track.attributes.to_json()
        kind = "face"
    else:
        decision = event.decision
        body = {
            "door": decision.door,
            "camera": envelope.camera,
            "decision": decision.decision,
            "reason": decision.reason,
            "mode": decision.mode,
            "claim_id": decision.claim_id,
            "person_id": decision.person_id,
            "score": None if decision.score is None else round(decision.score, 4),
            "margin": None if decision.margin is None else round(decision.margin, 4),
            "frames": decision.frames,
        }
        kind = "access"
    return {
        **header(kind, envelope.device_id, envelope.time, envelope.event_id),
        **body,
        "models": dict(versions.models),
        "gallery_revision": versions.gallery_revision,
    }


def reply(
    command: str, request_id: str | None, ok: bool, detail: str, device_id: str, now: float
) -> dict[str, Any]:
    """replies/<command>: the outcome of a command received on cmd/<command>."""
    return {
        **header("reply", device_id, now),
        "command": command,
        "request_id": request_id,
        "ok": ok,
        "detail": detail,
    }
