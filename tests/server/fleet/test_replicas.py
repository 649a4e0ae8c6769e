"""Several server replicas on one PostgreSQL database (a throwaway cluster, tests.postgres): a change made
through one reaches Watch streams on another through LISTEN/NOTIFY, with no polling; a replica that has not
heard of a change yet still serves the agents that hold it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
import numpy as np
import psycopg
import pytest

from facefleet.link.checks import utc_now
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Embedding, Person
from facefleet.server.domain.queries import EventFilter
from facefleet.server.fleet.device_admin import change_device
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.state.postgres.state import PostgresState
from facefleet.v1 import admin_pb2, fleet_pb2
from tests.postgres import PostgresCluster
from tests.server.conftest import Harness, Pki, next_delta, next_update, run, serving
from tests.server.fleet.test_fleet_service import event

SLOW_POLL = {"fleet": {"poll_seconds": 60}}
"""A replica that looks at the database by itself only once a minute: within a test, only a notification
or a request tells it of a change."""


def unannounced(url: str) -> PostgresState:
    """The state as another replica writes it, except that its changes send no notification (its sessions
    fire no triggers): the others learn of them only by looking, as when notifications are late or lost."""
    return PostgresState(f"{url}?options=-c%20session_replication_role%3Dreplica", pool_size=1)


def someone(person_id: str) -> Person:
    vector = np.random.default_rng(len(person_id)).normal(size=128).astype(np.float32)
    return Person(person_id, embeddings=(Embedding("sface@2021dec", vector / np.linalg.norm(vector), 0.9),))


def test_a_person_enrolled_through_one_replica_reaches_an_agent_watching_another(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut_jpeg: bytes, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.create_database()
    sections = {"state": {"url": url}, **SLOW_POLL}  # within the test only a notification brings it

    async def scenario() -> float:
        async with (
            serving(tmp_path / "a", pki, enroller, **sections) as a,
            serving(tmp_path / "b", pki, enroller, **sections) as b,
        ):
            fleet = await b.registered("door-1")
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
            assert (await next_delta(stream)).gallery.snapshot
            await asyncio.sleep(0.5)  # the replica's LISTEN is in place
            started = time.monotonic()
            await a.admin().EnrollPerson(
                admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg]),
                metadata=a.admin_md,
            )
            delta = (await next_delta(stream)).gallery
            took = time.monotonic() - started
            assert (delta.from_revision, delta.to_revision) == (0, 1)
            assert [p.person_id for p in delta.upserts] == ["eileen"]
            # the token a replica made works on the other one: they share the database
            people = await b.admin().ListPeople(admin_pb2.ListPeopleRequest(), metadata=a.admin_md)
            assert [p.person_id for p in people.people] == ["eileen"]
            stream.cancel()
            return took

    took = run(scenario)
    assert took < 20  # enrolment embeds the photo; the fan-out itself is measured in benchmarks


def test_the_same_events_reported_to_both_replicas_at_once_are_stored_once(
    tmp_path: Path, pki: Pki, enroller: Enroller, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.create_database()
    sections = {"state": {"url": url}}
    start = utc_now().replace(microsecond=0) - timedelta(hours=2)
    events = [event("door-1", start + timedelta(seconds=i), i) for i in range(4000)]

    async def scenario() -> tuple[list[tuple[int, int]], int]:
        async with (
            serving(tmp_path / "a", pki, enroller, **sections) as a,
            serving(tmp_path / "b", pki, enroller, **sections) as b,
        ):
            # an agent whose report timed out on one replica retries on the other while the first still runs
            fleets = [await a.registered("door-1"), await b.registered("door-1")]
            replies = await asyncio.gather(
                *(
                    fleet.ReportResults(
                        fleet_pb2.ReportResultsRequest(
                            device_id="door-1", events=events[offset : offset + 1000]
                        )
                    )
                    for offset in range(0, len(events), 1000)
                    for fleet in fleets
                )
            )
            counts = a.server.state.unknown_rates(EventFilter(start, start + timedelta(hours=2)))
            return [(r.stored, r.duplicates) for r in replies], counts[0].face_events

    outcomes, stored = run(scenario)
    assert stored == 4000
    assert sum(s for s, _ in outcomes) == 4000 and sum(d for _, d in outcomes) == 4000


def test_a_replica_serves_revisions_it_has_not_heard_of_yet(
    tmp_path: Path, pki: Pki, enroller: Enroller, postgres_cluster: PostgresCluster
) -> None:
    """Agents hold revisions this replica's notifications have not brought yet (a delta it read from the
    database, or one from another replica): it registers, watches and acknowledges them all the same."""
    url = postgres_cluster.create_database()

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, state={"url": url}, **SLOW_POLL) as a:
            other = unannounced(url)
            try:
                door1, door2 = await a.registered("door-1"), await a.registered("door-2")
                other.add_person(someone("p1"), (), utc_now())
                stream = door1.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
                snapshot = (await next_delta(stream)).gallery
                assert (snapshot.to_revision, [p.person_id for p in snapshot.upserts]) == (1, ["p1"])
                assert (
                    a.server.fanout is not None and a.server.fanout.head == 1
                )  # what dashboards measure lag by
                ack = await door1.AckGallery(
                    fleet_pb2.AckGalleryRequest(device_id="door-1", gallery_revision=1)
                )
                assert ack.gallery_revision == 1
                stream.cancel()

                other.add_person(
                    someone("p22"), (), utc_now()
                )  # door-2 gets revision 2 from the other replica
                stream = door2.Watch(
                    fleet_pb2.WatchRequest(device_id="door-2", from_revision=2, gallery_id=other.gallery_id())
                )
                assert (await next_update(stream)).heartbeat.gallery_revision == 2
                stream.cancel()

                other.add_person(someone("p333"), (), utc_now())
                ack = await door2.AckGallery(
                    fleet_pb2.AckGalleryRequest(device_id="door-2", gallery_revision=3)
                )
                assert ack.gallery_revision == 3

                other.add_person(someone("p4444"), (), utc_now())
                welcome = await a.fleet("lobby").Register(fleet_pb2.RegisterRequest(device_id="lobby"))
                assert welcome.gallery_revision == 4
            finally:
                other.close()

    run(scenario)


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until check() holds (the deadline only guards against a hung test)."""
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def register_refused(harness: Harness, device: str) -> grpc.StatusCode:
    """The status of the device's Register, which must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.fleet(device).Register(fleet_pb2.RegisterRequest(device_id=device))
    return refused.value.code()


def test_a_replica_starting_while_another_changes_things_sees_the_changes(
    tmp_path: Path, pki: Pki, enroller: Enroller, postgres_cluster: PostgresCluster
) -> None:
    """Changes committed after a replica read the state but before its LISTEN was in place sent
    notifications nobody heard: it looks at everything once listening."""
    url = postgres_cluster.create_database()
    other = PostgresState(url, pool_size=1)
    other.register_agent(Registration("door-1"), utc_now())

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, state={"url": url}, **SLOW_POLL) as a:
            # nothing has run on the event loop since the replica started: it is not listening yet
            with psycopg.connect(url, autocommit=True) as conn:
                listening = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
                assert conn.execute(listening).fetchone() == (0,)
            change_device(other, "door-1", "disable", reason="stolen", who="ops", now=utc_now())
            other.add_person(someone("p1"), (), utc_now())
            fanout = a.server.fanout
            assert fanout is not None
            await eventually(lambda: fanout.head == 1 and fanout.devices_head == 1, "the changes reached it")
            assert await register_refused(a, "door-1") == grpc.StatusCode.PERMISSION_DENIED

    try:
        run(scenario)
    finally:
        other.close()


def test_a_replica_whose_notifications_stop_still_sees_changes(
    tmp_path: Path, pki: Pki, enroller: Enroller, postgres_cluster: PostgresCluster
) -> None:
    """A listening connection gone silent (a half-open TCP connection) or a lost notification delays a
    change by [fleet] poll_seconds at most, not for ever."""
    url = postgres_cluster.create_database()

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, state={"url": url}, fleet={"poll_seconds": 0.2}) as a:
            await a.registered("door-1")
            other = unannounced(url)
            try:
                change_device(other, "door-1", "disable", reason="stolen", who="ops", now=utc_now())
                other.add_person(someone("p1"), (), utc_now())
            finally:
                other.close()
            fanout = a.server.fanout
            assert fanout is not None
            await eventually(lambda: fanout.head == 1 and fanout.devices_head == 1, "the changes reached it")
            assert await register_refused(a, "door-1") == grpc.StatusCode.PERMISSION_DENIED

    run(scenario)
