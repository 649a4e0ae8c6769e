"""facefleet.agent.fleet.wire against the server's own encoder and decoder (facefleet.server.api.wire): what
the server sends converts into
store records bit for bit, and what the agent reports is what the server's validation accepts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from facefleet.agent.domain.fleet import (
    GalleryDelta,
    Heartbeat,
    QueuedReport,
    Registration,
    WireError,
    join_parts,
)
from facefleet.agent.domain.records import InvalidRecordError
from facefleet.agent.fleet.wire import (
    delta_from_proto,
    event_to_proto,
    registration_to_proto,
    report_to_proto,
    update_from_proto,
)
from facefleet.agent.publish.events import Versions, access_event, face_event
from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.recognition.tracking import TrackEvent
from facefleet.link.gallery import Embedding as ServerEmbedding
from facefleet.link.gallery import GalleryDelta as ServerDelta
from facefleet.link.gallery import Person as ServerPerson
from facefleet.server.api import wire as server_wire
from facefleet.server.fleet.link import split_delta
from facefleet.v1 import fleet_pb2, gallery_pb2

MODEL = "sface@2021dec"
NOW = time.time()


def server_person(person_id: str, seed: int, models: tuple[str, ...] = (MODEL,)) -> ServerPerson:
    rng = np.random.default_rng(seed)
    return ServerPerson(
        person_id,
        display_name=f"{person_id.title()} Ü.",
        groups=("staff", "door:main"),
        metadata_json='{"badge": 17}',
        embeddings=tuple(
            ServerEmbedding(model, rng.normal(size=128).astype(np.float32), 0.75, f"image:{i}")
            for i, model in enumerate(models)
        ),
        revision=seed,
    )


def wire_delta(delta: ServerDelta) -> gallery_pb2.GalleryDelta:
    return server_wire.delta_to_proto(delta).gallery


def test_a_server_delta_converts_to_store_records_bit_for_bit() -> None:
    people = (server_person("alice", 1, (MODEL, "arcface@r100")), server_person("bob", 2))
    delta = delta_from_proto(wire_delta(ServerDelta(3, 7, False, people, ("carol",), "gallery-a")))
    assert (delta.from_revision, delta.to_revision, delta.snapshot, delta.gallery_id) == (
        3,
        7,
        False,
        "gallery-a",
    )
    assert (delta.deletes, delta.more_parts) == (("carol",), False)
    for sent, got in zip(people, delta.upserts, strict=True):
        assert (got.person.person_id, got.person.name) == (sent.person_id, sent.display_name)
        assert (got.person.groups, got.person.metadata) == (("staff", "door:main"), {"badge": 17})
        assert [e.model_id for e in got.embeddings] == [e.model_id for e in sent.embeddings]
        for a, b in zip(sent.embeddings, got.embeddings, strict=True):
            assert a.vector.tobytes() == b.vector.tobytes()
            assert b.quality == pytest.approx(0.75)
            assert b.source == f"server:{a.source}"


def test_an_empty_snapshot_converts_to_an_empty_gallery() -> None:
    delta = delta_from_proto(wire_delta(ServerDelta(0, 0, True, gallery_id="g")))
    assert (delta.snapshot, delta.upserts, delta.deletes, delta.to_revision) == (True, (), (), 0)


def test_the_parts_of_a_split_delta_join_into_the_whole() -> None:
    people = tuple(server_person(f"p{i:02d}", i) for i in range(30))
    whole = ServerDelta(4, 9, False, people, ("gone-1", "gone-2"), "g")
    parts = [delta_from_proto(wire_delta(part)) for part in split_delta(whole, 3000)]
    assert len(parts) > 3
    assert [p.more_parts for p in parts] == [True] * (len(parts) - 1) + [False]
    joined = join_parts(parts)
    assert [u.person.person_id for u in joined.upserts] == [p.person_id for p in people]
    assert (joined.deletes, joined.from_revision, joined.to_revision, joined.more_parts) == (
        ("gone-1", "gone-2"),
        4,
        9,
        False,
    )


def _bad_vector(m: gallery_pb2.GalleryDelta) -> None:
    m.upserts[0].embeddings[0].vector = m.upserts[0].embeddings[0].vector[:-4]


def _nan_vector(m: gallery_pb2.GalleryDelta) -> None:
    m.upserts[0].embeddings[0].vector = np.full(128, np.nan, "<f4").tobytes()


def _list_metadata(m: gallery_pb2.GalleryDelta) -> None:
    m.upserts[0].metadata_json = "[1, 2]"


def _spaced_id(m: gallery_pb2.GalleryDelta) -> None:
    m.upserts[0].person_id = "not valid"


def _snapshot_with_deletes(m: gallery_pb2.GalleryDelta) -> None:
    m.snapshot = True
    m.deletes.append("x")


def _backwards(m: gallery_pb2.GalleryDelta) -> None:
    m.from_revision, m.to_revision = 9, 3


def _twice(m: gallery_pb2.GalleryDelta) -> None:
    m.deletes.append("alice")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            _bad_vector,
            "person 'alice' embedding 0 (sface@2021dec): vector has 508 bytes but dim 128 needs 512",
        ),
        (_nan_vector, "person 'alice' embedding 0 (sface@2021dec)"),
        (_list_metadata, "person 'alice': metadata_json must be a JSON object"),
        (_spaced_id, "person id must be 1–128 characters without spaces"),
        (_snapshot_with_deletes, "a gallery snapshot carries no deletes"),
        (_backwards, "gallery delta goes backwards (9 → 3)"),
        (_twice, "names person(s) 'alice' more than once"),
    ],
)
def test_malformed_deltas_are_refused_naming_what_is_wrong(
    spoil: Callable[[gallery_pb2.GalleryDelta], None], message: str
) -> None:
    proto = wire_delta(ServerDelta(3, 5, False, (server_person("alice", 1),), (), "g"))
    spoil(proto)
    with pytest.raises(WireError) as info:
        delta_from_proto(proto)
    assert message in str(info.value)


def test_watch_updates_heartbeats_and_unknown_kinds() -> None:
    heartbeat = fleet_pb2.WatchResponse(heartbeat=fleet_pb2.Heartbeat(gallery_revision=12))
    gallery = fleet_pb2.WatchResponse(gallery=gallery_pb2.GalleryDelta(from_revision=1, to_revision=2))
    assert update_from_proto(heartbeat) == Heartbeat(12)
    assert isinstance(update_from_proto(gallery), GalleryDelta)
    assert update_from_proto(fleet_pb2.WatchResponse()) is None  # a later v1 addition: ignored


def test_a_registration_reaches_the_server_as_sent() -> None:
    sent = Registration(
        "door-1", "0.1.0", "box-7", {"embedding": MODEL}, ("openvino:CPU", "expression"), 41, "gallery-a"
    )
    got = server_wire.registration_from_proto(registration_to_proto(sent), "door-1")
    assert (got.agent_version, got.hostname, dict(got.model_versions), got.capabilities) == (
        "0.1.0",
        "box-7",
        {"embedding": MODEL},
        ("openvino:CPU", "expression"),
    )
    assert (got.gallery_revision, got.gallery_id) == (41, "gallery-a")


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
    match = server_wire.event_from_proto(event_to_proto(face("alice"), 5))
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
    unknown = server_wire.event_from_proto(event_to_proto(face(None, expression=None, kind="ended"), 5))
    assert (unknown.decision, unknown.person_id, unknown.expression) == ("unknown", "", None)


@pytest.mark.parametrize(
    ("decision", "person_id", "score"),
    [("granted", "alice", 0.8), ("denied", None, None), ("denied", "bob", 0.1)],
)
def test_access_events_are_what_the_server_accepts(
    decision: str, person_id: str | None, score: float | None
) -> None:
    event = server_wire.event_from_proto(event_to_proto(access(decision, person_id, score), 0))
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
    with pytest.raises(WireError) as info:
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


def test_join_parts_refuses_parts_of_different_deltas() -> None:
    first = GalleryDelta(1, 4, more_parts=True)
    with pytest.raises(InvalidRecordError, match="the server mixed two deltas"):
        join_parts([first, GalleryDelta(1, 5)])
    with pytest.raises(InvalidRecordError, match="only the last part may end the delta"):
        join_parts([GalleryDelta(1, 4), GalleryDelta(1, 4)])
    with pytest.raises(InvalidRecordError, match="no gallery delta parts"):
        join_parts([])
