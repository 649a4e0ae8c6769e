"""The agent's event payloads converted for the server (facefleet.agent.fleet.wire): what the agent reports
is what the server's decoder (facefleet.link.serde) and validation accept."""

from __future__ import annotations

import time
from typing import Any

import pytest

from facefleet.agent.domain.fleet import QueuedReport
from facefleet.agent.fleet.wire import (
    event_to_proto,
    report_to_proto,
)
from facefleet.agent.publish.events import Versions, access_event, face_event
from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.recognition.tracking import TrackEvent
from facefleet.link import serde
from facefleet.link.errors import LinkError

MODEL = "sface@2021dec"
NOW = time.time()


# -- events ----------------------------------------------------------------------------------------------


def versions() -> Versions:
    return Versions("0.1.0", "2026.0", {"detection": "yunet@2023mar", "embedding": MODEL}, gallery_revision=9)


def face(person_id: str | None, expression: str | None = "happy", kind: str = "decided") -> dict[str, Any]:
    track = TrackEvent(
        kind,  # type: ignore[arg-type]
        "track-1",
        person_id or "unknown",
        0.71 if person_id else 0.0,
        4,
        0.88,
        expression,
        {"happy": 0.8, "neutral": 0.2} if expression else {},
        (1.0, 2.0, 3.0, 4.0),
        NOW - 2,
        NOW,
    )
    return face_event("door-1", "front", track, person_id and person_id.title(), versions(), NOW)


def access(decision: str, person_id: str | None, score: float | None) -> dict[str, Any]:
    made = AccessDecision(
        "main", decision, "not in group staff", "claim", person_id, score, None, 3, "badge-9"
    )
    return access_event("door-1", "front", made, versions(), NOW)


def test_face_events_are_what_the_server_accepts() -> None:
    match = serde.event_from_proto(event_to_proto(face("alice"), 5))
    assert (match.kind, match.decision, match.person_id, match.camera, match.device_id) == (
        "face",
        "match",
        "alice",
        "front",
        "door-1",
    )
    assert match.time.tzinfo is not None
    assert abs(match.time.timestamp() - NOW) < 0.001  # published with millisecond precision
    assert (match.score, match.quality) == (pytest.approx(0.71), pytest.approx(0.88))
    assert match.expression is not None
    assert (match.expression.label, dict(match.expression.probabilities)) == (
        "happy",
        {"happy": pytest.approx(0.8), "neutral": pytest.approx(0.2)},
    )
    assert dict(match.model_versions) == {"detection": "yunet@2023mar", "embedding": MODEL}
    assert match.gallery_revision == 5  # the server revision given, not the payload's store revision 9
    assert match.reason == "track decided after 4 frames"
    unknown = serde.event_from_proto(event_to_proto(face(None, expression=None, kind="ended"), 5))
    assert (unknown.decision, unknown.person_id, unknown.expression) == ("unknown", "", None)


@pytest.mark.parametrize(
    ("decision", "person_id", "score"),
    [("granted", "alice", 0.8), ("denied", None, None), ("denied", "bob", 0.1)],
)
def test_access_events_are_what_the_server_accepts(
    decision: str, person_id: str | None, score: float | None
) -> None:
    event = serde.event_from_proto(event_to_proto(access(decision, person_id, score), 0))
    assert (event.kind, event.decision, event.door, event.camera) == ("access", decision, "main", "front")
    assert (event.person_id, event.score, event.margin) == (person_id or "", pytest.approx(score or 0.0), 0.0)
    assert event.reason == "not in group staff (claim)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_id": None}, "event_id must be a UUID string"),
        ({"kind": "reply"}, "kind 'reply' is neither 'face' nor 'access'"),
        ({"time": "yesterday"}, "time 'yesterday' is not ISO 8601"),
        ({"time": None}, "time must be an ISO 8601 string"),
        ({"identity": {"status": "maybe"}}, "identity status 'maybe' is not one of match, unknown"),
        ({"identity": None}, "malformed payload"),
        ({"score": float("nan")}, "a score, margin or quality is nan"),
        ({"camera": 7}, "camera must be text"),
    ],
)
def test_malformed_payloads_are_refused_naming_the_event(change: dict[str, Any], message: str) -> None:
    payload = {**face("alice"), **change}
    with pytest.raises(LinkError) as info:
        event_to_proto(payload, 0)
    assert message in str(info.value)
    if payload.get("event_id"):
        assert f"event {payload['event_id']!r}" in str(info.value)


def test_a_report_sends_what_converts_and_lists_what_does_not() -> None:
    good, bad = face("alice"), {**access("granted", "alice", 0.9), "decision": "maybe"}
    renamed = {**face("bob"), "device_id": "old-name"}  # queued before the device was renamed
    reports = [QueuedReport(i, p["event_id"], p, 3, NOW) for i, p in enumerate((good, bad, renamed))]
    request, refused = report_to_proto("door-1", reports, {"fps": 9.5})
    assert [e.event_id for e in request.events] == [good["event_id"]]
    assert (request.device_id, dict(request.health)) == ("door-1", {"fps": 9.5})
    assert [event_id for event_id, _ in refused] == [bad["event_id"], renamed["event_id"]]
    assert "access decision 'maybe' is not one of granted, denied" in refused[0][1]
    assert refused[1][1] == "queued as device 'old-name', not 'door-1'"
    empty, none_refused = report_to_proto("door-1", [], {})
    assert (list(empty.events), none_refused) == ([], [])
