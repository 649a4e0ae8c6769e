"""The agent's typed events, encoded twice: the MQTT JSON payload, and the link Event the server takes
(facefleet.agent.fleet.reports, then facefleet.link.serde on the wire) — what the agent reports is what the
server's decoder and validation accept, and a report batch leaves out events queued under another name."""

from __future__ import annotations

import dataclasses
import json
import time

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.domain.fleet import QueuedReport
from facefleet.agent.fleet.client import report_to_proto
from facefleet.agent.fleet.reports import report_event
from facefleet.agent.publish.events import (
    AccessEvent,
    FaceEvent,
    Versions,
    access_event,
    face_event,
    mqtt_payload,
)
from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.recognition.tracking import TrackEvent
from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.v1 import events_pb2

MODEL = "sface@2021dec"
NOW = time.time()


def versions() -> Versions:
    return Versions("0.1.0", "2026.0", {"detection": "yunet@2023mar", "embedding": MODEL}, gallery_revision=9)


def face(
    person_id: str | None, expression: str | None = "happy", kind: str = "decided", score: float = 0.71
) -> FaceEvent:
    track = TrackEvent(
        kind,  # type: ignore[arg-type]
        "track-1",
        person_id or "unknown",
        score if person_id else 0.0,
        4,
        0.88,
        expression,
        {"happy": 0.8, "neutral": 0.2} if expression else {},
        (1.0, 2.0, 3.0, 4.0),
        NOW - 2,
        NOW,
    )
    return face_event("door-1", "front", track, person_id and person_id.title(), versions(), NOW)


def access(decision: str, person_id: str | None, score: float | None) -> AccessEvent:
    made = AccessDecision(
        "main", decision, "not in group staff", "claim", person_id, score, None, 3, "badge-9"
    )
    return access_event("door-1", "front", made, versions(), NOW)


def on_the_server(event: Event) -> Event:
    """The event as the server decodes it from the bytes the agent sends."""
    return serde.event_from_proto(
        events_pb2.Event.FromString(serde.event_to_proto(event).SerializeToString())
    )


def test_face_events_are_what_the_server_accepts() -> None:
    event = face("alice")
    match = on_the_server(report_event(event, 5))
    assert (match.event_id, match.kind, match.decision, match.person_id) == (
        event.envelope.event_id,
        "face",
        "match",
        "alice",
    )
    assert (match.camera, match.device_id) == ("front", "door-1")
    assert match.time.tzinfo is not None
    assert abs(match.time.timestamp() - NOW) < 1e-5
    assert (match.score, match.quality) == (pytest.approx(0.71), pytest.approx(0.88))
    assert match.expression is not None
    assert (match.expression.label, dict(match.expression.probabilities)) == (
        "happy",
        {"happy": pytest.approx(0.8), "neutral": pytest.approx(0.2)},
    )
    assert dict(match.model_versions) == {"detection": "yunet@2023mar", "embedding": MODEL}
    assert match.gallery_revision == 5  # the server revision given, not the store's revision 9
    assert match.reason == "track decided after 4 frames"
    unknown = on_the_server(report_event(face(None, expression=None, kind="ended"), 5))
    assert (unknown.decision, unknown.person_id, unknown.expression) == ("unknown", "", None)


@pytest.mark.parametrize(
    ("decision", "person_id", "score"),
    [("granted", "alice", 0.8), ("denied", None, None), ("denied", "bob", 0.1)],
)
def test_access_events_are_what_the_server_accepts(
    decision: str, person_id: str | None, score: float | None
) -> None:
    event = on_the_server(report_event(access(decision, person_id, score), 0))
    assert (event.kind, event.decision, event.door, event.camera) == ("access", decision, "main", "front")
    assert (event.person_id, event.score, event.margin) == (person_id or "", pytest.approx(score or 0.0), 0.0)
    assert event.reason == "not in group staff (claim)"


def test_the_mqtt_payload_carries_the_same_event() -> None:
    event = face("alice")
    payload = mqtt_payload(event)
    assert (payload["schema"], payload["kind"], payload["event_id"]) == (1, "face", event.envelope.event_id)
    assert payload["identity"] == {"status": "match", "person_id": "alice", "name": "Alice"}
    assert (payload["camera"], payload["event"], payload["frames"], payload["gallery_revision"]) == (
        "front",
        "decided",
        4,
        9,
    )
    door = mqtt_payload(access("denied", None, None))
    assert (door["kind"], door["door"], door["decision"], door["score"], door["claim_id"]) == (
        "access",
        "main",
        "denied",
        None,
        "badge-9",
    )
    assert access("granted", "alice", 0.8).topic == "access/main"
    assert event.topic == "events/face"


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda e: face("alice", score=float("nan")), "event score must be a finite number"),
        (
            lambda e: dataclasses.replace(e, envelope=dataclasses.replace(e.envelope, camera="c" * 500)),
            "camera is 500 characters long",
        ),
        (
            lambda e: dataclasses.replace(e, envelope=dataclasses.replace(e.envelope, time=0.0)),
            "before 2000: set the device's clock",
        ),
    ],
)
def test_an_event_past_the_links_limits_is_refused_naming_the_field(spoil: object, message: str) -> None:
    with pytest.raises(LinkError, match=message):
        report_event(spoil(face("alice")), 0)  # type: ignore[operator]


def test_a_report_sends_the_queued_events_but_not_those_of_another_device_name() -> None:
    good = report_event(face("alice"), 3)
    renamed = report_event(face("bob"), 3)
    renamed = dataclasses.replace(renamed, device_id="old-name")  # queued before the device was renamed
    reports = [QueuedReport(i, e.event_id, e, 3, NOW) for i, e in enumerate((good, renamed))]
    request, refused = report_to_proto("door-1", reports, {"fps": 9.5})
    assert [e.event_id for e in request.events] == [good.event_id]
    assert (request.device_id, dict(request.health)) == ("door-1", {"fps": 9.5})
    assert refused == [(renamed.event_id, "queued as device 'old-name', not 'door-1'")]
    empty, none_refused = report_to_proto("door-1", [], {})
    assert (list(empty.events), none_refused) == ([], [])


def test_a_snapshot_goes_to_the_server_with_its_event_and_only_its_id_over_mqtt(
    astronaut: npt.NDArray[np.uint8],
) -> None:
    ok, crop = cv2.imencode(".jpg", cv2.resize(astronaut[40:240, 150:350], (112, 112)))
    assert ok
    vector = np.random.default_rng(3).normal(size=128).astype(np.float32)
    snapshot = FaceSnapshot(crop.tobytes(), b"", Embedding(MODEL, vector, 0.8, "camera:front"))
    event = dataclasses.replace(face(None, kind="ended"), snapshot=snapshot)
    reported = on_the_server(report_event(event, 5))
    assert reported.snapshot is not None and reported.snapshot.crop_jpeg == crop.tobytes()
    np.testing.assert_allclose(reported.snapshot.embedding.vector, snapshot.embedding.vector, atol=1e-6)
    payload = mqtt_payload(event)
    assert payload["snapshot_id"] == event.envelope.event_id == reported.event_id
    assert len(json.dumps(payload)) < 2000  # the id, never the image
    assert mqtt_payload(face(None, kind="ended"))["snapshot_id"] is None
    assert report_event(face(None, kind="ended"), 5).snapshot is None
