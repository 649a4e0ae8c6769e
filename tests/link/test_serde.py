"""facefleet.link.serde, the one conversion both sides use: a gallery delta the server encodes reaches the
agent's store records bit for bit, multi-part deltas join into the whole, malformed messages are refused
naming what is wrong, and registrations and watch updates round-trip."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from facefleet.agent.domain.records import upsert_from_link
from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.fleet import Heartbeat, Registration, Welcome
from facefleet.link.gallery import Embedding, GalleryDelta, Person, join_parts
from facefleet.server.fleet.link import split_delta
from facefleet.v1 import fleet_pb2, gallery_pb2

MODEL = "sface@2021dec"


def server_person(person_id: str, seed: int, models: tuple[str, ...] = (MODEL,)) -> Person:
    rng = np.random.default_rng(seed)
    return Person(
        person_id,
        display_name=f"{person_id.title()} Ü.",
        groups=("staff", "door:main"),
        metadata_json='{"badge": 17}',
        embeddings=tuple(
            Embedding(model, rng.normal(size=128).astype(np.float32), 0.75, f"image:{i}")
            for i, model in enumerate(models)
        ),
        revision=seed,
    )


def wire_delta(delta: GalleryDelta) -> gallery_pb2.GalleryDelta:
    return serde.watch_update_to_proto(delta).gallery


def test_a_server_delta_reaches_the_agent_store_records_bit_for_bit() -> None:
    people = (server_person("alice", 1, (MODEL, "arcface@r100")), server_person("bob", 2))
    delta = serde.delta_from_proto(wire_delta(GalleryDelta(3, 7, False, people, ("carol",), "gallery-a")))
    assert (delta.from_revision, delta.to_revision, delta.snapshot, delta.gallery_id) == (
        3,
        7,
        False,
        "gallery-a",
    )
    assert (delta.deletes, delta.more_parts) == (("carol",), False)
    for sent, got in zip(people, map(upsert_from_link, delta.upserts), strict=True):
        assert (got.person.person_id, got.person.name) == (sent.person_id, sent.display_name)
        assert (got.person.groups, got.person.metadata) == (("staff", "door:main"), {"badge": 17})
        assert [e.model_id for e in got.embeddings] == [e.model_id for e in sent.embeddings]
        for a, b in zip(sent.embeddings, got.embeddings, strict=True):
            assert a.vector.tobytes() == b.vector.tobytes()
            assert b.quality == pytest.approx(0.75)
            assert b.source == f"server:{a.source}"


def test_an_empty_snapshot_converts_to_an_empty_gallery() -> None:
    delta = serde.delta_from_proto(wire_delta(GalleryDelta(0, 0, True, gallery_id="g")))
    assert (delta.snapshot, delta.upserts, delta.deletes, delta.to_revision) == (True, (), (), 0)


def test_the_parts_of_a_split_delta_join_into_the_whole() -> None:
    people = tuple(server_person(f"p{i:02d}", i) for i in range(30))
    whole = GalleryDelta(4, 9, False, people, ("gone-1", "gone-2"), "g")
    parts = [serde.delta_from_proto(wire_delta(part)) for part in split_delta(whole, 3000)]
    assert len(parts) > 3
    assert [p.more_parts for p in parts] == [True] * (len(parts) - 1) + [False]
    joined = join_parts(parts)
    assert [p.person_id for p in joined.upserts] == [p.person_id for p in people]
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
            "person 'alice': embeddings[0] (sface@2021dec): vector has 508 bytes, but dim 128 needs 512",
        ),
        (_nan_vector, "person 'alice': embeddings[0] (sface@2021dec): embedding of sface@2021dec holds NaN"),
        (_list_metadata, "person 'alice': metadata_json must be a JSON object"),
        (_spaced_id, "person_id 'not valid' is not valid"),
        (_snapshot_with_deletes, "a gallery snapshot carries no deletes"),
        (_backwards, "gallery delta goes backwards (9 → 3)"),
        (_twice, "names person(s) 'alice' more than once"),
    ],
)
def test_malformed_deltas_are_refused_naming_what_is_wrong(
    spoil: Callable[[gallery_pb2.GalleryDelta], None], message: str
) -> None:
    proto = wire_delta(GalleryDelta(3, 5, False, (server_person("alice", 1),), (), "g"))
    spoil(proto)
    with pytest.raises(LinkError) as info:
        serde.delta_from_proto(proto)
    assert message in str(info.value)


def test_watch_updates_heartbeats_and_unknown_kinds() -> None:
    heartbeat = fleet_pb2.WatchResponse(heartbeat=fleet_pb2.Heartbeat(gallery_revision=12))
    gallery = fleet_pb2.WatchResponse(gallery=gallery_pb2.GalleryDelta(from_revision=1, to_revision=2))
    assert serde.watch_update_from_proto(heartbeat) == Heartbeat(12, None)
    assert isinstance(serde.watch_update_from_proto(gallery), GalleryDelta)
    assert serde.watch_update_from_proto(fleet_pb2.WatchResponse()) is None  # a later v1 addition: ignored


def test_a_registration_reaches_the_server_as_sent() -> None:
    sent = Registration(
        "door-1",
        "0.1.0",
        "box-7",
        {"embedding": MODEL},
        ("openvino:CPU", "expression"),
        41,
        "gallery-a",
        model_precisions={"detection": "bf16", "embedding": "int8 (sface@2021dec-int8-local)"},
    )
    got, ignored = serde.registration_from_proto(serde.registration_to_proto(sent), "door-1")
    assert ignored == ()
    assert (got.agent_version, got.hostname, dict(got.model_versions), got.capabilities) == (
        "0.1.0",
        "box-7",
        {"embedding": MODEL},
        ("openvino:CPU", "expression"),
    )
    assert (got.gallery_revision, got.gallery_id) == (41, "gallery-a")
    assert dict(got.model_precisions) == {"detection": "bf16", "embedding": "int8 (sface@2021dec-int8-local)"}


@pytest.mark.parametrize(
    ("precisions", "message"),
    [({"embedding": "int8 (not-a-model)"}, "model id 'not-a-model' is not valid")],
)
def test_a_registration_with_a_malformed_precision_is_refused(
    precisions: dict[str, str], message: str
) -> None:
    request = serde.registration_to_proto(Registration("door-1"))
    request.model_precisions.update(precisions)
    with pytest.raises(LinkError, match=re.escape(message)):
        serde.registration_from_proto(request, "door-1")


def test_join_parts_refuses_parts_of_different_deltas() -> None:
    first = GalleryDelta(1, 4, more_parts=True)
    with pytest.raises(LinkError, match="the server mixed two deltas"):
        join_parts([first, GalleryDelta(1, 5)])
    with pytest.raises(LinkError, match="only the last part may end the delta"):
        join_parts([GalleryDelta(1, 4), GalleryDelta(1, 4)])
    with pytest.raises(LinkError, match="no gallery delta parts"):
        join_parts([])


def test_the_servers_cluster_threshold_crosses_register_exactly_and_only_as_a_cosine() -> None:
    welcome = Welcome(3, "g", ("sface@2021dec",), 100, 30, cluster_threshold=0.363)
    assert serde.welcome_from_proto(serde.welcome_to_proto(welcome)).cluster_threshold == 0.363
    silent = serde.welcome_to_proto(Welcome(3, "g", (), 100, 30))
    assert not silent.HasField("cluster_threshold")
    assert serde.welcome_from_proto(silent).cluster_threshold is None
    for bad in (1.5, float("nan")):
        message = serde.welcome_to_proto(welcome)
        message.cluster_threshold = bad
        with pytest.raises(LinkError, match="cluster_threshold must be a cosine from -1 to 1"):
            serde.welcome_from_proto(message)
