"""Domain ↔ protobuf conversions round-trip, and malformed messages are refused naming the field."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.events import Event, ExpressionResult
from facefleet.link.gallery import Embedding, GalleryDelta, Person
from facefleet.server.api.wire import admin as admin_wire
from facefleet.server.api.wire import fleet as fleet_wire
from facefleet.server.api.wire import query as query_wire
from facefleet.server.domain.queries import EventFilter
from facefleet.server.errors import InvalidArgumentError
from facefleet.v1 import admin_pb2, events_pb2, gallery_pb2, query_pb2

NOW = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(finite, min_size=16, max_size=600).filter(lambda v: np.linalg.norm(v) > 1e-3),
    quality=st.floats(0, 1, width=32),
)
def test_embedding_vectors_survive_the_wire_bit_for_bit(values: list[float], quality: float) -> None:
    embedding = Embedding("sface@2021dec", np.array(values, dtype=np.float32), quality, "image:3")
    message = serde.embedding_to_proto(embedding)
    assert len(message.vector) == 4 * message.dim == 4 * len(values)
    back = serde.embedding_from_proto(gallery_pb2.Embedding.FromString(message.SerializeToString()), "e")
    assert back.same_as(embedding)
    assert abs(float(np.linalg.norm(back.vector)) - 1.0) < 1e-4


def test_people_and_deltas_round_trip() -> None:
    alice = Person(
        "alice",
        "Alice",
        ("staff",),
        '{"badge": 7}',
        (Embedding("sface@2021dec", np.ones(128, np.float32), 0.5, "image:0"),),
        NOW,
        NOW + timedelta(days=1),
        4,
    )
    delta = GalleryDelta(3, 9, False, (alice,), ("bob", "carol"), "gid", more_parts=True)
    message = serde.watch_update_to_proto(delta).gallery
    back = serde.delta_from_proto(gallery_pb2.GalleryDelta.FromString(message.SerializeToString()))
    assert (back.from_revision, back.to_revision, back.snapshot, back.deletes) == (
        3,
        9,
        False,
        ("bob", "carol"),
    )
    assert (back.gallery_id, back.more_parts) == ("gid", True)
    assert back.upserts[0].same_as(alice)
    assert (back.upserts[0].created_at, back.upserts[0].updated_at) == (alice.created_at, alice.updated_at)


def test_events_round_trip_with_every_field() -> None:
    event = Event(
        "7d1c7c1e-0000-4000-8000-000000000001",
        "door-1",
        NOW,
        "access",
        "denied",
        camera="cam1",
        person_id="bob",
        score=0.25,
        margin=0.125,
        expression=ExpressionResult("sad", {"sad": 0.75, "neutral": 0.25}),
        quality=0.5,
        model_versions={"embedding": "sface@2021dec"},
        gallery_revision=12,
        door="main",
        reason="not in group staff",
    )
    back = serde.event_from_proto(
        events_pb2.Event.FromString(serde.event_to_proto(event).SerializeToString())
    )
    assert back == event


def test_a_filter_keeps_one_of_each_decision_and_kind() -> None:
    """Millions of repeats (a 16 MiB query holds 8 M) would reach the SQL as millions of parameters."""
    flt = EventFilter(
        NOW, NOW + timedelta(hours=1), decisions=("granted", "denied") * 150_000, kinds=("access",) * 300_000
    )
    assert (flt.decisions, flt.kinds) == (("granted", "denied"), ("access",))


def test_filters_round_trip() -> None:
    flt = EventFilter(
        NOW,
        NOW + timedelta(hours=2),
        ("door-1",),
        ("alice",),
        ("granted", "match"),
        ("access",),
        cameras=("lobby", "gate-2"),
        doors=("main",),
    )
    message = query_pb2.EventFilter.FromString(query_wire.filter_to_proto(flt).SerializeToString())
    assert (list(message.cameras), list(message.doors)) == (["lobby", "gate-2"], ["main"])
    assert query_wire.filter_from_proto(message) == flt


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.ClearField("time"), "time is missing"),
        (lambda e: setattr(e, "kind", events_pb2.EVENT_KIND_UNSPECIFIED), "kind must be EVENT_KIND_FACE"),
        (lambda e: setattr(e, "decision", 42), "decision is missing or unknown"),
        (
            lambda e: setattr(e, "decision", events_pb2.DECISION_GRANTED),
            "a face event needs a decision among",
        ),
        (lambda e: setattr(e, "person_id", ""), "a 'match' event needs a person_id"),
        (lambda e: setattr(e, "event_id", ""), "event_id must be 1–64 ASCII characters"),
        (lambda e: setattr(e, "camera", "x" * 500), "camera is 500 characters long"),
        (lambda e: setattr(e, "score", float("nan")), "event score must be a finite number"),
        (lambda e: e.time.FromDatetime(datetime(1970, 1, 2)), "before 2000: set the device's clock"),
        (lambda e: setattr(e.expression, "label", "smug"), "expression label 'smug' is not one of"),
    ],
)
def test_malformed_events_are_refused_naming_the_field(mutate: object, message: str) -> None:
    proto = serde.event_to_proto(
        Event("e1", "door-1", NOW, "face", "match", person_id="alice", expression=ExpressionResult("happy"))
    )
    mutate(proto)  # type: ignore[operator]
    with pytest.raises(LinkError, match=message):
        serde.event_from_proto(proto)


def test_an_event_without_device_id_belongs_to_the_reporting_device() -> None:
    from facefleet.v1 import fleet_pb2

    proto = serde.event_to_proto(Event("e1", "door-1", NOW, "face", "unknown"))
    proto.device_id = ""
    report = fleet_wire.report_from_proto(fleet_pb2.ReportResultsRequest(events=[proto]), "lobby")
    assert ([e.device_id for e in report.events], report.rejected, report.deferred) == (["lobby"], [], [])


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        (gallery_pb2.Embedding(model_id="m@1", dim=0), "vector has 0 bytes, but dim 0"),
        (
            gallery_pb2.Embedding(model_id="m@1", dim=16, vector=bytes(63)),
            "vector has 63 bytes, but dim 16 needs 64",
        ),
        (
            gallery_pb2.Embedding(model_id="m@1", dim=8, vector=np.ones(8, "<f4").tobytes()),
            "embedding of m@1 must be a vector of 16–4096 values",
        ),
        (
            gallery_pb2.Embedding(model_id="m@1", dim=16, vector=np.ones(16, "<f4").tobytes(), quality=2),
            "embedding quality must be within 0–1",
        ),
    ],
)
def test_malformed_embeddings_are_refused_with_their_index(
    embedding: gallery_pb2.Embedding, message: str
) -> None:
    request = admin_pb2.EnrollPersonRequest(person_id="x", embeddings=[embedding])
    with pytest.raises(LinkError, match=r"embeddings\[0\]: " + message):
        admin_wire.enrolment_from_proto(request)


def test_a_filter_with_a_bad_camera_or_door_is_refused_naming_the_field() -> None:
    flt = query_wire.filter_to_proto(EventFilter(NOW, NOW + timedelta(hours=1)))
    flt.cameras.append("")
    with pytest.raises(InvalidArgumentError, match="filter cameras: '' is not a camera name"):
        query_wire.filter_from_proto(flt)
    del flt.cameras[:]
    flt.doors.extend(f"door-{i}" for i in range(101))
    with pytest.raises(InvalidArgumentError, match="filter doors: at most 100 values"):
        query_wire.filter_from_proto(flt)


def test_a_filter_with_unspecified_enum_values_is_refused() -> None:
    flt = query_wire.filter_to_proto(EventFilter(NOW, NOW + timedelta(hours=1)))
    flt.decisions.append(events_pb2.DECISION_UNSPECIFIED)
    with pytest.raises(InvalidArgumentError, match="filter decisions holds an unspecified"):
        query_wire.filter_from_proto(query_pb2.EventFilter.FromString(flt.SerializeToString()))
