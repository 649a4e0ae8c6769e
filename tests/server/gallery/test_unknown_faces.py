"""Unknown faces on a real server: face snapshots of real faces (insightface's t1.jpg, six people) reported
through FleetService, clustered per unseen person, enrolled as a new or existing person in one gallery
revision, dismissed, deleted and expired."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.link import serde
from facefleet.link.checks import utc_now
from facefleet.link.errors import LinkError
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.server.domain.snapshots import SnapshotFilter, UnknownCluster, cluster_unknown
from facefleet.server.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.gallery.unknown import UnknownEnrolment, UnknownFaces
from facefleet.v1 import fleet_pb2
from facefleet.vision.alignment import align_face
from facefleet.vision.pipeline import FaceAnalyzer
from tests.server.conftest import Harness, Pki, run, serving

MODEL = "sface@2021dec"


@dataclass(frozen=True)
class Seen:
    """One face as an agent's camera saw it: its aligned crop (JPEG) and embedding."""

    crop_jpeg: bytes
    vector: npt.NDArray[np.float32]
    quality: float


def _seen(analyzer: FaceAnalyzer, frame: npt.NDArray[np.uint8]) -> list[Seen]:
    faces = sorted(analyzer.analyze(frame), key=lambda f: float(f.detection.box_xyxy[0]))
    found = []
    for face in faces:
        crop = align_face(frame, face.detection.landmarks_xy)
        ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        assert face.embedding is not None
        found.append(Seen(bytes(data.tobytes()), face.embedding, float(face.quality.score)))
    return found


@pytest.fixture(scope="module")
def strangers(analyzer: FaceAnalyzer, group_photo: npt.NDArray[np.uint8]) -> list[tuple[Seen, Seen]]:
    """Three of t1.jpg's people, each seen twice (the photo and its mirror image), left to right."""
    direct = _seen(analyzer, group_photo)
    mirrored = _seen(analyzer, np.ascontiguousarray(group_photo[:, ::-1]))[::-1]
    assert len(direct) == len(mirrored) == 6
    return [(direct[i], mirrored[i]) for i in (0, 2, 4)]


def face_event(seen: Seen, time: datetime, decision: str = "unknown", person: str = "") -> Event:
    return Event(
        str(uuid.uuid4()),
        "door-1",
        time,
        "face",
        decision,  # type: ignore[arg-type]
        camera="entrance",
        person_id=person,
        quality=seen.quality,
        snapshot=FaceSnapshot(seen.crop_jpeg, b"", Embedding(MODEL, seen.vector, seen.quality)),
    )


async def report(harness: Harness, events: list[Event]) -> None:
    fleet = await harness.registered("door-1")
    request = fleet_pb2.ReportResultsRequest(
        device_id="door-1", events=[serde.event_to_proto(e) for e in events]
    )
    reply = await fleet.ReportResults(request)
    assert list(reply.rejected) == []


def test_the_strangers_fall_into_one_cluster_each(strangers: list[tuple[Seen, Seen]]) -> None:
    from facefleet.server.domain.snapshots import Snapshot

    now = utc_now()
    snapshots = [
        Snapshot(f"{person}-{view}", "door-1", "entrance", now + timedelta(seconds=2 * person + view),
                 "unknown", "", seen.quality, MODEL, seen.vector)
        for person, pair in enumerate(strangers)
        for view, seen in enumerate(pair)
    ]  # fmt: skip
    clusters = cluster_unknown(snapshots[::-1], threshold=0.363)
    assert [(c.cluster_id, c.count) for c in clusters] == [("2-0", 2), ("1-0", 2), ("0-0", 2)]
    assert [s.event_id for s in clusters[0].snapshots] == ["2-1", "2-0"]  # newest first
    assert len(cluster_unknown(snapshots, threshold=1.01)) == 6  # nobody is that similar


def one_by_one(vectors: npt.NDArray[np.float32], threshold: float) -> list[int]:
    """The cluster of each vector as a loop over them finds it, comparing each with every cluster's mean."""
    sums, means = np.zeros_like(vectors), np.zeros_like(vectors)
    labels: list[int] = []
    k = 0
    for vector in vectors:
        similarity = means[:k] @ vector
        best = int(np.argmax(similarity)) if k else -1
        if best < 0 or float(similarity[best]) < threshold:
            best, k = k, k + 1
        sums[best] += vector
        means[best] = sums[best] / np.linalg.norm(sums[best])
        labels.append(best)
    return labels


def test_clustering_in_blocks_groups_as_comparing_each_snapshot_with_every_cluster_does() -> None:
    """Past 1,024 clusters a block of snapshots is compared with the clusters in one product: 1,500
    strangers seen once and 150 people seen 6 times each (~0.5 between two sightings), in random order, are
    grouped exactly as one snapshot at a time against every cluster groups them."""
    from facefleet.server.domain.snapshots import Snapshot

    rng = np.random.default_rng(7)

    def unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    people = unit(rng.normal(size=(1650, 128)))
    who = rng.permutation(np.concatenate([np.arange(1500), np.repeat(np.arange(1500, 1650), 6)]))
    vectors = unit(people[who] + 1.02 * unit(rng.normal(size=(len(who), 128))))
    start = utc_now()
    snapshots = [
        Snapshot(
            f"s{i:04d}", "door-1", "entrance", start + timedelta(seconds=i), "unknown", "", 0.8, MODEL, v
        )
        for i, v in enumerate(vectors)
    ]
    clusters = cluster_unknown(snapshots, threshold=0.363)
    assert len(clusters) > 1024
    expected: dict[int, list[str]] = {}
    for snapshot, label in zip(snapshots, one_by_one(vectors, 0.363), strict=True):
        expected.setdefault(label, []).append(snapshot.event_id)
    found = sorted([s.event_id for s in reversed(c.snapshots)] for c in clusters)
    assert found == sorted(expected.values())
    assert sum(c.count > 1 for c in clusters) >= 150  # people seen again were grouped


def test_an_unknown_cluster_is_enrolled_dismissed_and_its_snapshots_leave_the_review(
    tmp_path, pki: Pki, enroller: Enroller, strangers: list[tuple[Seen, Seen]]
) -> None:
    start = utc_now() - timedelta(minutes=10)

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            events = [
                face_event(seen, start + timedelta(seconds=10 * person + view))
                for person, pair in enumerate(strangers)
                for view, seen in enumerate(pair)
            ]
            matched = face_event(strangers[0][0], start + timedelta(minutes=5), "match", "someone")
            await report(harness, [*events, matched])
            await report(harness, events)  # a repeated report stores nothing twice
            clusters = await unknown.clusters()
            assert [(c.cluster_id, c.count) for c in clusters] == [
                (events[4].event_id, 2),
                (events[2].event_id, 2),
                (events[0].event_id, 2),
            ]
            assert (clusters[0].devices, clusters[0].cameras) == (("door-1",), ("door-1/entrance",))
            crop = await unknown.image(events[0].event_id, "crop")
            assert cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)
            with pytest.raises(NotFoundError, match="no context image"):
                await unknown.image(events[0].event_id, "context")

            head = harness.server.fanout.head  # type: ignore[union-attr]
            enrolled = await unknown.enrol(
                UnknownEnrolment(
                    "visitor-a",
                    cluster_id=events[0].event_id,
                    cluster_version=clusters[2].version,
                    display_name="Visitor A",
                )
            )
            person = enrolled.person
            assert (person.person_id, person.display_name, person.revision) == (
                "visitor-a",
                "Visitor A",
                head + 1,
            )
            assert sorted(e.source for e in person.embeddings) == sorted(
                f"snapshot:{e.event_id}" for e in events[:2]
            )
            assert {e.model_id for e in person.embeddings} == {MODEL}
            assert len(harness.server.state.crops("visitor-a")) == 2
            assert [c.cluster_id for c in await unknown.clusters()] == [
                events[4].event_id,
                events[2].event_id,
            ]

            more = await unknown.enrol(
                UnknownEnrolment("visitor-a", snapshot_ids=(events[4].event_id,), existing=True)
            )
            assert len(more.person.embeddings) == 3
            assert more.person.display_name == "Visitor A"
            assert [c.count for c in await unknown.clusters()] == [1, 2]

            assert await unknown.dismiss(events[2].event_id, (), clusters[1].version) == 2
            # its first snapshot enrolled, the last stranger's cluster goes by the next one
            assert [c.cluster_id for c in await unknown.clusters()] == [events[5].event_id]
            page = await unknown.snapshots(
                SnapshotFilter(start - timedelta(hours=1), utc_now(), status="dismissed"), "", 10
            )
            assert sorted(s.event_id for s in page.snapshots) == sorted(e.event_id for e in events[2:4])
            enrolled_page = await unknown.snapshots(
                SnapshotFilter(start - timedelta(hours=1), utc_now(), status="enrolled"), "", 10
            )
            assert {s.person_id for s in enrolled_page.snapshots} == {"visitor-a"}

            assert await unknown.delete("", (events[5].event_id,)) == 1
            assert await unknown.clusters() == []
            assert harness.server.expire().snapshots == 0
            assert harness.server.state.snapshots.expire_snapshots(utc_now() + timedelta(days=1)) == 6
            with pytest.raises(NotFoundError):
                await unknown.image(events[0].event_id, "crop")

    run(scenario)


def test_a_deleted_persons_face_snapshots_go_with_them_and_a_site_without_crops_keeps_none(
    tmp_path: Path, pki: Pki, enroller: Enroller, strangers: list[tuple[Seen, Seen]]
) -> None:
    """With [gallery] retain_crops = false, a person enrolled from unknown faces keeps no crop; deleting
    them erases the snapshots they were enrolled from and those agents matched to them, from the database
    file and its write-ahead log, and leaves other people's."""
    start = utc_now() - timedelta(minutes=10)

    async def scenario() -> tuple[int, list[str], list[str], bytes, bytes]:
        async with serving(tmp_path, pki, enroller, gallery={"retain_crops": False}) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            theirs = [face_event(seen, start + timedelta(seconds=v)) for v, seen in enumerate(strangers[0])]
            others = [
                face_event(seen, start + timedelta(seconds=9 + v)) for v, seen in enumerate(strangers[1])
            ]
            await report(harness, [*theirs, *others])
            version = (await unknown.cluster(theirs[0].event_id)).version
            await unknown.enrol(
                UnknownEnrolment("visitor-a", cluster_id=theirs[0].event_id, cluster_version=version)
            )
            crops_kept = len(harness.server.state.crops("visitor-a"))
            matched = face_event(strangers[0][0], start + timedelta(minutes=1), "match", "visitor-a")
            await report(harness, [matched])
            crop = await unknown.image(matched.event_id, "crop")
            await harness.server.handlers.people.delete("visitor-a")  # type: ignore[union-attr]
            database = harness.server.paths.database
            with sqlite3.connect(database) as db:
                left = [row[0] for row in db.execute("SELECT event_id FROM snapshots")]
            files = database.read_bytes() + database.with_name(database.name + "-wal").read_bytes()
            return crops_kept, left, [e.event_id for e in others], crop, files

    crops_kept, left, others, crop, files = run(scenario)
    assert crops_kept == 0
    assert sorted(left) == sorted(others)
    middle = len(crop) // 2  # in the scan data, which no other image shares
    assert crop[middle : middle + 64] not in files  # neither in the database nor in its WAL


def test_refused_unknown_face_actions_change_nothing(
    tmp_path, pki: Pki, enroller: Enroller, strangers: list[tuple[Seen, Seen]]
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            events = [face_event(seen, utc_now() - timedelta(minutes=1)) for seen in strangers[1]]
            await report(harness, events)
            (cluster,) = await unknown.clusters()
            listed = {"cluster_id": cluster.cluster_id, "cluster_version": cluster.version}
            with pytest.raises(NotFoundError, match="list the clusters again"):
                await unknown.enrol(UnknownEnrolment("x", cluster_id=str(uuid.uuid4()), cluster_version="0"))
            with pytest.raises(InvalidArgumentError, match="either a cluster id or snapshot ids"):
                await unknown.enrol(UnknownEnrolment("x", snapshot_ids=("a",), **listed))
            with pytest.raises(InvalidArgumentError, match="give the version of cluster"):
                await unknown.enrol(UnknownEnrolment("x", cluster_id=cluster.cluster_id))
            with pytest.raises(NotFoundError, match="no snapshot"):
                await unknown.enrol(
                    UnknownEnrolment("x", snapshot_ids=(events[0].event_id, str(uuid.uuid4())))
                )
            with pytest.raises(NotFoundError):
                await unknown.enrol(UnknownEnrolment("nobody", existing=True, **listed))
            with pytest.raises(LinkError, match=r"person_id '\.\./x' is not valid"):
                await unknown.enrol(UnknownEnrolment("../x", **listed))
            await unknown.enrol(UnknownEnrolment("taken", snapshot_ids=(events[0].event_id,)))
            with pytest.raises(AlreadyExistsError):
                await unknown.enrol(UnknownEnrolment("taken", snapshot_ids=(events[1].event_id,)))
            (left,) = await unknown.clusters()
            assert [s.event_id for s in left.snapshots] == [events[1].event_id]  # still under review
            assert len(harness.server.state.get_person("taken").embeddings) == 1

    run(scenario)


def test_a_cluster_over_the_embeddings_of_a_person_is_refused_before_its_images_are_read(
    tmp_path, pki: Pki, enroller: Enroller, strangers: list[tuple[Seen, Seen]]
) -> None:
    """300 sightings of one stranger make one cluster, more than a person may hold (256 embeddings): its
    enrolment is refused on the count, before any crop is read, decoded or embedded."""

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            seen = strangers[0][0]
            start = utc_now() - timedelta(hours=1)
            await report(harness, [face_event(seen, start + timedelta(seconds=i)) for i in range(300)])
            (cluster,) = await unknown.clusters()
            assert cluster.count == 300
            read: list[str] = []
            image = unknown.state.snapshots.image
            unknown.state.snapshots.image = lambda *args: (read.append(args[0]), image(*args))[1]
            with pytest.raises(InvalidArgumentError, match="over the limit of 256 per person"):
                await unknown.enrol(
                    UnknownEnrolment("crowd", cluster_id=cluster.cluster_id, cluster_version=cluster.version)
                )
            assert read == []
            with pytest.raises(NotFoundError):
                harness.server.state.get_person("crowd")
            (left,) = await unknown.clusters()
            assert left.count == 300  # still under review

    run(scenario)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_snapshots_enrolled_by_one_operator_are_refused_to_another_who_listed_them_before(
    tmp_path, pki: Pki, enroller: Enroller, strangers: list[tuple[Seen, Seen]], backend: str, request
) -> None:
    """Two operators (or one retrying through another replica) enrol the same cluster: the first enrolment
    wins, the second changes nothing, so no face becomes two people or twice the samples of one."""
    sections = {}
    if backend == "postgresql":
        sections["state"] = {"url": request.getfixturevalue("postgres_cluster").create_database()}

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, **sections) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            state = harness.server.state
            await report(
                harness, [face_event(seen, utc_now() - timedelta(minutes=1)) for seen in strangers[0]]
            )
            (cluster,) = await unknown.clusters()
            listed = tuple(s.event_id for s in cluster.snapshots)  # what the second operator's page shows
            await unknown.enrol(
                UnknownEnrolment("visitor-a", cluster_id=cluster.cluster_id, cluster_version=cluster.version)
            )
            head = state.head_revision()
            with pytest.raises(FailedPreconditionError, match="enrolled meanwhile"):
                await unknown.enrol(UnknownEnrolment("visitor-b", snapshot_ids=listed))
            with pytest.raises(FailedPreconditionError, match="enrolled meanwhile"):
                await unknown.enrol(UnknownEnrolment("visitor-a", snapshot_ids=listed, existing=True))
            assert state.head_revision() == head
            assert [p.person_id for p in state.list_people()] == ["visitor-a"]
            assert len(state.get_person("visitor-a").embeddings) == 2
            assert len(state.crops("visitor-a")) == 2

    run(scenario)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_clusters_are_computed_once_until_the_unknown_faces_under_review_change(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    strangers: list[tuple[Seen, Seen]],
    caplog: pytest.LogCaptureFixture,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """Listings at the same time share one clustering and later ones reuse it, as do the cluster's enrolment,
    dismissal and deletion; a snapshot that arrives, one taken out of the review in the database (as another
    replica does) and one expired each make the next listing cluster again."""
    caplog.set_level(logging.INFO, logger="facefleet.server.gallery.unknown")
    start = utc_now() - timedelta(minutes=10)
    sections = {}
    if backend == "postgresql":
        sections["state"] = {"url": request.getfixturevalue("postgres_cluster").create_database()}

    def computed() -> int:
        return sum(r.getMessage().startswith("clustered") for r in caplog.records)

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, **sections) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            state = harness.server.state
            events = [face_event(seen, start + timedelta(minutes=i)) for i, seen in enumerate(strangers[0])]
            other = face_event(strangers[1][0], start + timedelta(minutes=5))
            await report(harness, events[:1])
            first, second = await asyncio.gather(unknown.clusters(), unknown.clusters())
            assert first == second and [c.count for c in first] == [1]
            assert computed() == 1
            assert await unknown.clusters() == first
            assert (await unknown.cluster(first[0].cluster_id)).version == first[0].version
            assert computed() == 1

            await report(harness, [events[1], other])  # one joins the first stranger's cluster
            assert [c.count for c in await unknown.clusters()] == [1, 2]
            assert computed() == 2
            await asyncio.to_thread(state.snapshots.set_status, [other.event_id], "dismissed")
            (cluster,) = await unknown.clusters()
            assert cluster.count == 2 and computed() == 3
            await asyncio.to_thread(state.snapshots.expire_snapshots, start + timedelta(seconds=30))
            (cluster,) = await unknown.clusters()
            assert [s.event_id for s in cluster.snapshots] == [events[1].event_id] and computed() == 4
            assert await unknown.dismiss(cluster.cluster_id, (), cluster.version) == 1
            assert computed() == 4  # the dismissal found the cluster listed
            assert await unknown.clusters() == [] and computed() == 5

    run(scenario)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_face_that_leaves_the_review_as_a_late_face_of_its_frame_arrives_changes_the_listing(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    strangers: list[tuple[Seen, Seen]],
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """Two strangers seen in one frame (one time); one is dismissed through the database (as another replica
    does) while a face of that frame arrives late: how many faces are under review and their times stay as
    they were, yet the listing shows the change, and the version listed before it is refused."""
    sections = {}
    if backend == "postgresql":
        sections["state"] = {"url": request.getfixturevalue("postgres_cluster").create_database()}
    frame = utc_now() - timedelta(minutes=1)

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, **sections) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            first = face_event(strangers[0][0], frame - timedelta(minutes=1))
            second, third = (face_event(pair[0], frame) for pair in strangers[1:])
            late = face_event(strangers[0][1], frame)  # the first stranger again, in the others' frame
            await report(harness, [first, second, third])
            listed = {c.cluster_id: c for c in await unknown.clusters()}
            assert sorted(listed) == sorted(e.event_id for e in (first, second, third))
            await asyncio.to_thread(harness.server.state.snapshots.set_status, [second.event_id], "dismissed")
            await report(harness, [late])
            clusters = {c.cluster_id: c for c in await unknown.clusters()}
            assert sorted(clusters) == sorted([first.event_id, third.event_id])
            assert [s.event_id for s in clusters[first.event_id].snapshots] == [late.event_id, first.event_id]
            with pytest.raises(FailedPreconditionError, match="changed since version"):
                await unknown.dismiss(first.event_id, (), listed[first.event_id].version)

    run(scenario)


def test_a_stopping_server_refuses_the_listings_waiting_for_clustering_and_ends_its_thread(
    tmp_path: Path, pki: Pki, enroller: Enroller, strangers: list[tuple[Seen, Seen]]
) -> None:
    """A listing waits for the clustering thread while another clusters: stopping the server answers it
    UNAVAILABLE without clustering (nothing reads the state once it is closed), lets the clustering under
    way end before the state closes, and ends the thread; a listing after the stop is refused the same
    way."""
    held, release = threading.Event(), threading.Event()
    readers: list[threading.Thread] = []

    async def scenario() -> tuple[list[UnknownCluster], BaseException | None, UnknownFaces]:
        async with serving(tmp_path, pki, enroller) as harness:
            unknown = harness.server.handlers.unknown  # type: ignore[union-attr]
            await report(harness, [face_event(strangers[0][0], utc_now() - timedelta(minutes=1))])
            review_key = unknown.state.snapshots.review_key

            def held_review_key(since: datetime) -> tuple[object, ...]:
                readers.append(threading.current_thread())
                held.set()
                release.wait(10)
                return review_key(since)

            unknown.state.snapshots.review_key = held_review_key  # type: ignore[method-assign]
            under_way = asyncio.create_task(unknown.clusters())
            await asyncio.to_thread(held.wait, 10)
            waiting = asyncio.create_task(unknown.clusters())
            await asyncio.sleep(0)  # on the clustering thread's queue

            async def release_once_answered() -> BaseException | None:
                answered, _ = await asyncio.wait([waiting], timeout=10)
                release.set()
                return waiting.exception() if answered else None

            refusal = asyncio.create_task(release_once_answered())
        return await under_way, await refusal, unknown  # the server has stopped

    clusters, refusal, unknown = run(scenario)
    assert [c.count for c in clusters] == [1]  # the clustering under way ended before the state closed
    assert isinstance(refusal, UnavailableError) and "stopping" in str(refusal)
    assert len(readers) == 1  # the waiting listing never read the state
    readers[0].join(timeout=10)
    assert not readers[0].is_alive()
    with pytest.raises(UnavailableError, match="stopping"):
        run(unknown.clusters)
