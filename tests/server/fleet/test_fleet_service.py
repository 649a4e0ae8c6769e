"""FleetService end to end: a real server with mutual TLS, real SQLite, real enrolment on a real photo."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.agent.recognition.gallery import SFACE_THRESHOLD, Gallery
from facefleet.link.checks import utc_now
from facefleet.link.gallery import GalleryDelta, Person
from facefleet.server.api.wire import fleet as fleet_wire
from facefleet.server.domain.queries import EventFilter
from facefleet.server.fleet.link import FleetHandler, FleetSettings
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import admin_pb2, events_pb2, fleet_pb2, gallery_pb2
from facefleet.vision.pipeline import FaceAnalyzer
from tests.server.conftest import Harness, Pki, next_delta, next_update, run, serving


def vector(message: gallery_pb2.Embedding) -> npt.NDArray[np.float32]:
    return np.frombuffer(message.vector, dtype="<f4")


def random_embedding(rng: np.random.Generator, model_id: str = "sface@2021dec") -> gallery_pb2.Embedding:
    values = rng.normal(size=128).astype(np.float32)
    values /= np.linalg.norm(values)
    return gallery_pb2.Embedding(model_id=model_id, dim=128, vector=values.astype("<f4").tobytes())


async def enrol_vector(harness: Harness, person_id: str, seed: int = 0) -> admin_pb2.EnrollPersonResponse:
    request = admin_pb2.EnrollPersonRequest(
        person_id=person_id, embeddings=[random_embedding(np.random.default_rng(seed))]
    )
    return await harness.admin().EnrollPerson(request, metadata=harness.admin_md)


def test_an_enrolment_from_a_photo_lets_every_watching_agent_identify_the_person(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    analyzer: FaceAnalyzer,
    astronaut_jpeg: bytes,
    astronaut: npt.NDArray[np.uint8],
) -> None:
    devices = ("door-1", "door-2", "lobby")

    async def scenario() -> tuple[admin_pb2.EnrollPersonResponse, list[gallery_pb2.GalleryDelta]]:
        async with serving(tmp_path, pki, enroller) as harness:
            streams = []
            for device in devices:
                fleet = await harness.registered(device)
                stream = fleet.Watch(fleet_pb2.WatchRequest(device_id=device, from_revision=0))
                first = (await next_delta(stream)).gallery
                assert (first.snapshot, list(first.upserts)) == (True, [])
                streams.append(stream)
            response = await harness.admin().EnrollPerson(
                admin_pb2.EnrollPersonRequest(
                    person_id="eileen",
                    display_name="Eileen Collins",
                    groups=["staff"],
                    images=[astronaut_jpeg],
                ),
                metadata=harness.admin_md,
            )
            deltas = [(await next_delta(stream)).gallery for stream in streams]
            for stream in streams:
                stream.cancel()
            return response, deltas

    response, deltas = run(scenario)
    assert response.revision == 1
    assert [f.image_index for f in response.faces] == [0]
    # Another picture of the same face (mirrored), as an agent's camera would see it.
    query = analyzer.analyze(np.ascontiguousarray(astronaut[:, ::-1]))[0].embedding
    rng = np.random.default_rng(1)
    decoys = rng.normal(size=(50, 128)).astype(np.float32)
    for delta in deltas:
        assert (delta.from_revision, delta.to_revision, delta.snapshot) == (0, 1, False)
        (person,) = delta.upserts
        assert (person.person_id, person.display_name, list(person.groups)) == (
            "eileen",
            "Eileen Collins",
            ["staff"],
        )
        (embedding,) = person.embeddings
        assert (embedding.model_id, embedding.dim) == (analyzer.embedding_model_id, 128)
        rows = np.vstack([vector(embedding), decoys])
        gallery = Gallery.build(embedding.model_id, ["eileen"] + [f"decoy{i}" for i in range(50)], rows)
        best = gallery.search(query, k=1)[0]
        assert best.person_id == "eileen"
        assert best.score > SFACE_THRESHOLD


def test_delete_reaches_the_watcher_and_erases_the_person(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> tuple[gallery_pb2.GalleryDelta, grpc.StatusCode]:
        async with serving(tmp_path, pki, enroller) as harness:
            await enrol_vector(harness, "alice")
            fleet = await harness.registered("door-1")
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=1))
            await next_update(stream)  # up to date: a heartbeat
            await harness.admin().DeletePerson(
                admin_pb2.DeletePersonRequest(person_id="alice"), metadata=harness.admin_md
            )
            delta = (await next_delta(stream)).gallery
            stream.cancel()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await harness.admin().GetPerson(
                    admin_pb2.GetPersonRequest(person_id="alice"), metadata=harness.admin_md
                )
            return delta, info.value.code()

    delta, code = run(scenario)
    assert (delta.from_revision, delta.to_revision) == (1, 2)
    assert list(delta.deletes) == ["alice"]
    assert list(delta.upserts) == []
    assert code == grpc.StatusCode.NOT_FOUND


Faces = dict[str, set[bytes]]
"""An agent's gallery: person id → the bytes of their embeddings."""


def faces(people: tuple[Person, ...]) -> Faces:
    return {p.person_id: {e.vector.tobytes() for e in p.embeddings} for p in people}


async def caught_up(handler: FleetHandler, revision: int, gallery: Faces) -> Faces:
    """An agent's gallery at `revision` once it applied the delta its Watch brings it first."""
    updates = handler.watch("door-1", revision, handler.gallery_id, ())
    delta = await anext(updates)
    await updates.aclose()
    assert isinstance(delta, GalleryDelta) and not delta.more_parts
    applied = {} if delta.snapshot else dict(gallery)
    applied.update(faces(delta.upserts))
    for person_id in delta.deletes:
        applied.pop(person_id, None)
    return applied


def cached(handler: FleetHandler) -> set[bytes]:
    """The bytes of every embedding the handler's delta cache holds."""
    return {
        vector
        for delta in cached_deltas(handler)
        for vectors in faces(delta.upserts).values()
        for vector in vectors
    }


def cached_deltas(handler: FleetHandler) -> list[GalleryDelta]:
    """The deltas the handler's cache holds, computed."""
    done = [f.result() for f in handler.deltas._futures.values() if f.done() and not f.exception()]
    return [delta for delta in done if delta is not None]


@pytest.mark.parametrize("change", ["deleted", "replaced", "deleted elsewhere"])
def test_cached_deltas_stop_holding_a_face_once_it_is_deleted_or_replaced(
    tmp_path: Path, pki: Pki, enroller: Enroller, change: str
) -> None:
    """The deltas computed for agents and kept for the next ones hold bob's face; once bob is deleted or
    replaced (through this server, or through another process or replica, which the server learns of at its
    next look), none does, and agents behind still get the gallery as it is."""

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 60}) as harness:
            server = harness.server
            assert server.fanout is not None
            await enrol_vector(harness, "alice", 1)
            at_one = faces(server.state.snapshot().upserts)
            await enrol_vector(harness, "bob", 2)
            at_two = faces(server.state.snapshot().upserts)
            await harness.registered("door-1")
            handler = FleetHandler(server.state, server.fanout, FleetSettings(), lambda: ())
            assert await caught_up(handler, 0, {}) == await caught_up(handler, 1, at_one) == at_two
            assert at_two["bob"] <= cached(handler)

            if change == "deleted":
                request = admin_pb2.DeletePersonRequest(person_id="bob")
                await harness.admin().DeletePerson(request, metadata=harness.admin_md)
            elif change == "replaced":
                request = admin_pb2.EnrollPersonRequest(
                    person_id="bob",
                    embeddings=[random_embedding(np.random.default_rng(3))],
                    on_existing=admin_pb2.ON_EXISTING_REPLACE,
                )
                await harness.admin().EnrollPerson(request, metadata=harness.admin_md)
            else:
                await asyncio.to_thread(server.state.delete_person, "bob", utc_now())
                await server.refresh()  # the look that brings a change from elsewhere

            assert not at_two["bob"] & cached(handler), "bob's old face is still cached"
            now = faces(server.state.snapshot().upserts)
            for revision, gallery in ((0, {}), (1, at_one), (2, at_two)):
                assert await caught_up(handler, revision, gallery) == now
            assert not at_two["bob"] & cached(handler), "bob's old face is still cached"

    run(scenario)


def test_an_agent_offline_during_three_changes_resumes_from_its_revision(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> gallery_pb2.GalleryDelta:
        async with serving(tmp_path, pki, enroller) as harness:
            await enrol_vector(harness, "alice", 1)
            await enrol_vector(harness, "bob", 2)  # revision 2: the agent applied this, then went away
            await enrol_vector(harness, "carol", 3)
            await harness.admin().UpdatePerson(
                admin_pb2.UpdatePersonRequest(person_id="alice", display_name="Alice A."),
                metadata=harness.admin_md,
            )
            await harness.admin().DeletePerson(
                admin_pb2.DeletePersonRequest(person_id="bob"), metadata=harness.admin_md
            )
            fleet = await harness.registered("door-1", revision=2)
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=2))
            delta = (await next_delta(stream)).gallery
            stream.cancel()
            return delta

    delta = run(scenario)
    assert (delta.from_revision, delta.to_revision, delta.snapshot) == (2, 5, False)
    assert sorted(p.person_id for p in delta.upserts) == ["alice", "carol"]
    assert {p.person_id: p.display_name for p in delta.upserts}["alice"] == "Alice A."
    assert all(len(p.embeddings) == 1 for p in delta.upserts)
    assert list(delta.deletes) == ["bob"]


def test_an_agent_too_far_behind_gets_a_snapshot(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> gallery_pb2.GalleryDelta:
        async with serving(tmp_path, pki, enroller, gallery={"log_revisions": 2}) as harness:
            for i, name in enumerate(("a", "b", "c", "d")):
                await enrol_vector(harness, name, i)
            await harness.admin().DeletePerson(
                admin_pb2.DeletePersonRequest(person_id="b"), metadata=harness.admin_md
            )
            fleet = await harness.registered("door-1", revision=1)
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=1))
            delta = (await next_delta(stream)).gallery
            stream.cancel()
            return delta

    delta = run(scenario)
    assert delta.snapshot
    assert delta.to_revision == 5
    assert sorted(p.person_id for p in delta.upserts) == ["a", "c", "d"]
    assert list(delta.deletes) == []


def test_agents_too_far_behind_share_one_whole_gallery(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    """Agents from revisions the change log no longer reaches each get the whole gallery, computed and kept
    once for the head, not once per revision they come from."""

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, gallery={"log_revisions": 2}) as harness:
            for i, name in enumerate(("a", "b", "c", "d", "e")):
                await enrol_vector(harness, name, i)
            await harness.registered("door-1")
            server = harness.server
            assert server.fanout is not None
            handler = FleetHandler(server.state, server.fanout, FleetSettings(), lambda: ())
            now = faces(server.state.snapshot().upserts)
            for revision in (0, 1, 2):
                assert await caught_up(handler, revision, {}) == now
            assert [delta.snapshot for delta in cached_deltas(handler)] == [True]

    run(scenario)


def test_a_watch_from_another_gallery_gets_a_snapshot(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> gallery_pb2.GalleryDelta:
        async with serving(tmp_path, pki, enroller) as harness:
            await enrol_vector(harness, "a")
            await enrol_vector(harness, "b")
            fleet = await harness.registered("door-1")
            request = fleet_pb2.WatchRequest(
                device_id="door-1", from_revision=1, gallery_id=str(uuid.uuid4())
            )
            stream = fleet.Watch(request)
            delta = (await next_delta(stream)).gallery
            stream.cancel()
            return delta

    delta = run(scenario)
    assert delta.snapshot
    assert sorted(p.person_id for p in delta.upserts) == ["a", "b"]


def test_a_watch_from_a_future_revision_fails_with_failed_precondition(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> grpc.aio.AioRpcError:
        async with serving(tmp_path, pki, enroller) as harness:
            await enrol_vector(harness, "a")
            fleet = await harness.registered("door-1")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=7)):
                    pass
            return info.value

    error = run(scenario)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "from_revision 7 is ahead of the server's gallery revision 1" in (error.details() or "")
    assert "watch from revision 0" in (error.details() or "")


def test_large_snapshots_arrive_in_parts_that_add_up(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> list[gallery_pb2.GalleryDelta]:
        async with serving(tmp_path, pki, enroller, listen={"max_message_bytes": 65536}) as harness:
            for i in range(120):  # ~650 bytes each: three parts of at most 32 KiB
                await enrol_vector(harness, f"p{i:03d}", i)
            fleet = await harness.registered("door-1")
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
            parts = [(await next_delta(stream)).gallery]
            while parts[-1].more_parts:
                parts.append((await next_delta(stream)).gallery)
            stream.cancel()
            return parts

    parts = run(scenario)
    assert len(parts) >= 3
    assert all(p.snapshot and p.to_revision == 120 for p in parts)
    assert [p.more_parts for p in parts] == [True] * (len(parts) - 1) + [False]
    assert sorted(person.person_id for p in parts for person in p.upserts) == [
        f"p{i:03d}" for i in range(120)
    ]


def test_watchers_can_ask_for_one_embedding_model_only(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    """A model the server has no gallery of is refused (tests/server/fleet/test_version_skew.py)."""

    async def scenario() -> gallery_pb2.GalleryDelta:
        async with serving(tmp_path, pki, enroller) as harness:
            await enrol_vector(harness, "a")
            fleet = await harness.registered("door-1")
            request = fleet_pb2.WatchRequest(
                device_id="door-1", from_revision=0, embedding_models=["sface@2021dec"]
            )
            stream = fleet.Watch(request)
            delta = (await next_delta(stream)).gallery
            stream.cancel()
            return delta

    (person,) = run(scenario).upserts
    assert person.person_id == "a"
    assert [e.model_id for e in person.embeddings] == ["sface@2021dec"]


DAY = (datetime.now(timezone.utc) - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
"""Midnight a week ago: reported events must be within the server's window of accepted times."""


def event(device: str, when: datetime, index: int) -> events_pb2.Event:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return events_pb2.Event(
        event_id=str(uuid.UUID(int=index)),
        device_id=device,
        time=stamp,
        camera="cam1",
        kind=events_pb2.EVENT_KIND_FACE,
        decision=events_pb2.DECISION_UNKNOWN if index % 4 == 0 else events_pb2.DECISION_MATCH,
        person_id="" if index % 4 == 0 else "alice",
        score=0.5,
        expression=events_pb2.Expression(label="happy", probabilities={"happy": 0.9, "neutral": 0.1}),
    )


def test_ten_thousand_events_reported_twice_are_stored_once(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    start = DAY.replace(hour=8)
    events = [event("door-1", start + timedelta(seconds=i), i) for i in range(10_000)]

    async def scenario() -> tuple[list[tuple[int, int]], int]:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = await harness.registered("door-1")
            outcomes = []
            for _round in range(2):
                for offset in range(0, len(events), 2500):
                    batch = events[offset : offset + 2500]
                    reply = await fleet.ReportResults(
                        fleet_pb2.ReportResultsRequest(device_id="door-1", events=batch)
                    )
                    assert list(reply.rejected) == []
                    outcomes.append((reply.stored, reply.duplicates))
            total = harness.server.state.unknown_rates(_whole_day(start))
            return outcomes, total[0].face_events

    outcomes, stored = run(scenario)
    assert outcomes == [(2500, 0)] * 4 + [(0, 2500)] * 4
    assert stored == 10_000


def test_a_report_over_the_event_limit_is_refused_before_any_event_is_decoded(
    tmp_path: Path, pki: Pki, enroller: Enroller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report of 10,001 events is refused on its count alone: no event is decoded (which would hold the
    server's event loop) and none is stored."""
    decoded: list[int] = []
    decode = fleet_wire.report_from_proto

    def counted(request: fleet_pb2.ReportResultsRequest, device: str) -> object:
        decoded.append(len(request.events))
        return decode(request, device)

    monkeypatch.setattr(fleet_wire, "report_from_proto", counted)
    start = DAY.replace(hour=8)
    events = [event("door-1", start + timedelta(seconds=i), i) for i in range(10_001)]

    async def scenario() -> tuple[grpc.StatusCode, str, int]:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = await harness.registered("door-1")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await fleet.ReportResults(fleet_pb2.ReportResultsRequest(device_id="door-1", events=events))
            reply = await fleet.ReportResults(
                fleet_pb2.ReportResultsRequest(device_id="door-1", events=events[:10_000])
            )
            return refused.value.code(), refused.value.details() or "", reply.stored

    code, details, stored = run(scenario)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "10001 events in one report; the limit is 10000: split the batch" in details
    assert decoded == [10_000] and stored == 10_000


def test_an_event_id_another_device_holds_is_rejected_not_counted_as_a_repeat(
    tmp_path: Path, pki: Pki, enroller: Enroller, caplog: pytest.LogCaptureFixture
) -> None:
    """door-2 reports an event under an id door-1's event has: door-1's report of it is rejected with the
    reason (its agent logs it) and the server warns naming both devices; each device's own repeats stay
    duplicates."""
    day = datetime.now(timezone.utc) - timedelta(hours=1)

    async def scenario() -> list[tuple[int, int, list[tuple[str, str]]]]:
        async with serving(tmp_path, pki, enroller) as harness:
            door_1, door_2 = await harness.registered("door-1"), await harness.registered("door-2")
            replies = [
                await door_2.ReportResults(
                    fleet_pb2.ReportResultsRequest(device_id="door-2", events=[event("door-2", day, 7)])
                ),
                await door_1.ReportResults(
                    fleet_pb2.ReportResultsRequest(
                        device_id="door-1", events=[event("door-1", day, 7), event("door-1", day, 8)]
                    )
                ),
                await door_1.ReportResults(
                    fleet_pb2.ReportResultsRequest(device_id="door-1", events=[event("door-1", day, 8)])
                ),
                await door_2.ReportResults(
                    fleet_pb2.ReportResultsRequest(device_id="door-2", events=[event("door-2", day, 7)])
                ),
            ]
            return [(r.stored, r.duplicates, [(x.event_id, x.reason) for x in r.rejected]) for r in replies]

    with caplog.at_level("WARNING"):
        outcomes = run(scenario)
    taken = str(uuid.UUID(int=7))
    assert outcomes == [
        (1, 0, []),
        (
            1,
            0,
            [(taken, f"event id {taken} is already stored for another device; give each event a new UUID")],
        ),
        (0, 1, []),
        (0, 1, []),
    ]
    assert (
        f"device door-1 reported 1 events whose ids are stored for other devices (event '{taken}' of door-2"
        in (caplog.text)
    )


def _whole_day(start: datetime) -> EventFilter:
    return EventFilter(start, start + timedelta(days=1))


def test_a_report_rejects_bad_events_one_by_one_and_stores_the_rest(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    good = event("door-1", DAY, 1)
    good.event_id = "0425281b-b593-4b9f-a1c2-358ff6ed6f5a"
    no_time = events_pb2.Event(
        event_id="e-no-time", kind=events_pb2.EVENT_KIND_FACE, decision=events_pb2.DECISION_UNKNOWN
    )
    wrong_decision = event("door-1", DAY, 2)
    wrong_decision.event_id, wrong_decision.decision = "e-granted-face", events_pb2.DECISION_GRANTED
    not_a_uuid = event("door-1", DAY, 3)
    not_a_uuid.event_id = "e-17"
    hex_id = good.event_id.replace("-", "")
    other_spellings = []  # the same UUID as `good`, spelt so that uuid.UUID() takes it: one event stored once
    for n, spelling in enumerate(
        (good.event_id.upper(), f"urn:{hex_id}", f"{hex_id}----", f"{{--{hex_id}}}")
    ):
        other_spellings.append(event("door-1", DAY, 10 + n))
        other_spellings[-1].event_id = spelling
    far_future = event("door-1", datetime(9999, 1, 1, tzinfo=timezone.utc), 4)
    tomorrow_plus = event("door-1", datetime.now(timezone.utc) + timedelta(days=2), 5)
    ancient = event("door-1", datetime.now(timezone.utc) - timedelta(days=400), 6)
    too_long = event("door-1", DAY, 7)
    too_long.event_id = "x" * 5000  # rejected under its first 64 characters, not echoed whole

    async def scenario() -> tuple[fleet_pb2.ReportResultsResponse, int]:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = await harness.registered("door-1")
            reply = await fleet.ReportResults(
                fleet_pb2.ReportResultsRequest(
                    device_id="door-1",
                    events=[
                        good,
                        no_time,
                        wrong_decision,
                        not_a_uuid,
                        far_future,
                        tomorrow_plus,
                        ancient,
                        too_long,
                        *other_spellings,
                    ],
                )
            )
            with sqlite3.connect(harness.server.paths.database) as db:
                return reply, db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    reply, stored_events = run(scenario)
    assert (reply.stored, stored_events) == (1, 1)
    reasons = {r.event_id: r.reason for r in reply.rejected}
    assert set(reasons) == {
        "e-no-time",
        "e-granted-face",
        "e-17",
        far_future.event_id,
        tomorrow_plus.event_id,
        ancient.event_id,
        "x" * 64,
        *(e.event_id for e in other_spellings),
    }
    assert "event_id must be 1–64 ASCII characters" in reasons["x" * 64]
    assert "time is missing" in reasons["e-no-time"]
    assert "face event needs a decision among" in reasons["e-granted-face"]
    assert "is not a UUID" in reasons["e-17"]
    for spelling in other_spellings:
        assert "lower-case hexadecimal" in reasons[spelling.event_id]
    assert "ahead of the server's clock" in reasons[far_future.event_id]
    assert "set the device's clock" in reasons[tomorrow_plus.event_id]
    assert "older than the 365 days" in reasons[ancient.event_id]


def test_an_agent_cannot_report_or_register_as_another_device(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> list[grpc.StatusCode]:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = await harness.registered("door-1")
            codes = []
            for call in (
                fleet.Register(fleet_pb2.RegisterRequest(device_id="door-2")),
                fleet.ReportResults(fleet_pb2.ReportResultsRequest(device_id="door-2")),
                fleet.ReportResults(
                    fleet_pb2.ReportResultsRequest(
                        device_id="door-1",
                        events=[event("door-2", DAY, 1)],
                    )
                ),
                fleet.AckGallery(fleet_pb2.AckGalleryRequest(device_id="door-2")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                codes.append(info.value.code())
            return codes

    assert run(scenario) == [grpc.StatusCode.PERMISSION_DENIED] * 4


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("no certificate", grpc.StatusCode.UNAVAILABLE),
        ("foreign CA", grpc.StatusCode.UNAVAILABLE),
        ("expired certificate", grpc.StatusCode.UNAVAILABLE),
        ("operators listener", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_clients_without_a_valid_device_certificate_are_refused(
    tmp_path: Path, pki: Pki, enroller: Enroller, how: str, expected: grpc.StatusCode
) -> None:
    from facefleet.v1 import fleet_pb2_grpc

    async def scenario() -> grpc.aio.AioRpcError:
        async with serving(tmp_path, pki, enroller) as harness:
            if how == "no certificate":
                channel = harness.channel(harness.agents_port, grpc.ssl_channel_credentials(pki.ca))
            elif how == "foreign CA":
                channel = harness.agent_channel("door-1", tls_dir=pki.foreign_dir)
            elif how == "expired certificate":
                channel = harness.agent_channel("expired")
            else:
                channel = harness.operator_channel()
            stub = fleet_pb2_grpc.FleetServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1"), timeout=10)
            assert harness.server.state.list_agents() == []
            await harness.registered("door-2")  # the same listener accepts a valid device certificate
            assert [a.device_id for a in harness.server.state.list_agents()] == ["door-2"]
            return info.value

    error = run(scenario)
    assert error.code() == expected


def test_unregistered_devices_must_register_before_watching_or_reporting(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = harness.fleet("lobby")
            results = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await fleet.ReportResults(fleet_pb2.ReportResultsRequest(device_id="lobby"))
            results.append((info.value.code(), info.value.details() or ""))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in fleet.Watch(fleet_pb2.WatchRequest(device_id="lobby")):
                    pass
            results.append((info.value.code(), info.value.details() or ""))
            return results

    for code, details in run(scenario):
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "device 'lobby' has not registered; call Register first" in details


def test_a_gallery_revision_beyond_a_database_integer_is_refused_at_register(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    """2**63 fits the wire's uint64 but no database column: INVALID_ARGUMENT naming it, not INTERNAL."""

    async def scenario() -> tuple[grpc.StatusCode, str, int]:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = harness.fleet("lobby")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await fleet.Register(fleet_pb2.RegisterRequest(device_id="lobby", gallery_revision=2**63))
            welcome = await fleet.Register(
                fleet_pb2.RegisterRequest(device_id="lobby", gallery_revision=2**63 - 1)
            )
            return info.value.code(), info.value.details() or "", welcome.gallery_revision

    code, details, revision = run(scenario)
    assert (code, revision) == (grpc.StatusCode.INVALID_ARGUMENT, 0)
    assert "gallery_revision 9223372036854775808 is out of range" in details


def test_register_and_acknowledge_show_in_fleet_status(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    from facefleet.v1 import query_pb2

    async def scenario() -> tuple[fleet_pb2.RegisterResponse, object]:
        async with serving(tmp_path, pki, enroller) as harness:
            await enrol_vector(harness, "a")
            await enrol_vector(harness, "b")
            fleet = harness.fleet("door-1")
            welcome = await fleet.Register(
                fleet_pb2.RegisterRequest(
                    agent_version="0.1.0",
                    model_versions={"embedding": "sface@2021dec"},
                    model_precisions={"embedding": "int8 (sface@2021dec-int8-local)"},
                    capabilities=["openvino:CPU"],
                )
            )
            await fleet.AckGallery(fleet_pb2.AckGalleryRequest(gallery_revision=1))
            stream = fleet.Watch(fleet_pb2.WatchRequest(from_revision=2))
            await next_update(stream)
            status = await harness.query().FleetStatus(
                query_pb2.FleetStatusRequest(), metadata=harness.query_md
            )
            stream.cancel()
            return welcome, status

    welcome, status = run(scenario)
    assert (welcome.gallery_revision, welcome.max_report_events, welcome.heartbeat_seconds) == (2, 10_000, 30)
    assert welcome.gallery_id
    (agent,) = status.agents
    assert (agent.device_id, agent.agent_version, agent.online, agent.watching) == (
        "door-1",
        "0.1.0",
        True,
        True,
    )
    assert (agent.gallery_revision, agent.revision_lag) == (1, 1)
    assert dict(agent.model_versions) == {"embedding": "sface@2021dec"}
    assert dict(agent.model_precisions) == {"embedding": "int8 (sface@2021dec-int8-local)"}
    assert list(agent.capabilities) == ["openvino:CPU"]


def test_insecure_development_serves_plaintext_and_trusts_the_requested_device(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    from facefleet.v1 import fleet_pb2_grpc

    async def scenario() -> tuple[int, list[str]]:
        async with serving(tmp_path, pki, enroller, insecure_development=True) as harness:  # type: ignore[arg-type]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.agents_port}") as channel:
                fleet = fleet_pb2_grpc.FleetServiceStub(channel)
                welcome = await fleet.Register(fleet_pb2.RegisterRequest(device_id="dev-box"))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await fleet.Register(fleet_pb2.RegisterRequest())
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            return welcome.gallery_revision, [a.device_id for a in harness.server.state.list_agents()]

    assert run(scenario) == (0, ["dev-box"])


def test_a_taken_port_is_a_bind_error_with_exit_code_69(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    from facefleet.server.app import BindError

    async def scenario() -> BindError:
        async with serving(tmp_path / "a", pki, enroller) as harness:
            with pytest.raises(BindError) as info:
                async with serving(
                    tmp_path / "b", pki, enroller, listen={"agents": f"127.0.0.1:{harness.agents_port}"}
                ):
                    pass
            return info.value

    error = run(scenario)
    assert error.exit_code == 69
    assert "listen.agents = '127.0.0.1:" in str(error)


def test_reflection_lists_every_service(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def scenario() -> set[str]:
        async with serving(tmp_path, pki, enroller) as harness:
            stub = reflection_pb2_grpc.ServerReflectionStub(harness.operator_channel())
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for reply in stub.ServerReflectionInfo(iter([request])):
                return {service.name for service in reply.list_services_response.service}
            return set()

    assert run(scenario) >= {
        "facefleet.v1.FleetService",
        "facefleet.v1.AdminService",
        "facefleet.v1.QueryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
