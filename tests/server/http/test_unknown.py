"""/api/unknown and /api/snapshots over HTTPS: face snapshots an agent reported through FleetService are
listed, clustered, shown as JPEG, enrolled as a person (one gallery revision), dismissed and deleted."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facefleet.link import serde
from facefleet.link.checks import utc_now
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import fleet_pb2
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.http.clients import client, problem

MODEL = "sface@2021dec"
SNAPSHOTS, DIM = 2000, 4096
"""Unknown faces, and the values of their embeddings, that take about a second to cluster."""


def crop_jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(112, 112, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", pixels)
    assert ok
    return bytes(data.tobytes())


def stranger(seed: int) -> np.ndarray:
    vector = np.random.default_rng(1000 + seed).normal(size=128).astype(np.float32)
    return vector / np.linalg.norm(vector)


def sighting(person: int, view: int, time: datetime) -> Event:
    """An unknown face of stranger `person`: the same embedding up to a little noise per view."""
    noise = np.random.default_rng(view + 10 * person).normal(scale=0.05, size=128).astype(np.float32)
    snapshot = FaceSnapshot(
        crop_jpeg(10 * person + view),
        crop_jpeg(99) if view == 0 else b"",
        Embedding(MODEL, stranger(person) + noise, 0.8),
    )
    return Event(
        str(uuid.uuid4()),
        "door-1",
        time,
        "face",
        "unknown",
        camera="entrance",
        quality=0.8,
        snapshot=snapshot,
    )


async def report(harness: Harness, events: list[Event]) -> None:
    fleet = await harness.registered("door-1")
    request = fleet_pb2.ReportResultsRequest(
        device_id="door-1", events=[serde.event_to_proto(e) for e in events]
    )
    reply = await fleet.ReportResults(request)
    assert list(reply.rejected) == [] and reply.stored == len(events)


def test_unknown_faces_are_clustered_shown_enrolled_dismissed_and_deleted(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    start = utc_now() - timedelta(minutes=30)
    events = [
        sighting(person, view, start + timedelta(minutes=5 * person + view))
        for person in range(4)
        for view in range(2)
    ]

    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            await report(harness, events)
            clusters = (await http.get("/api/unknown/clusters")).json()["clusters"]
            shown = (await http.get(f"/api/unknown/clusters/{clusters[-1]['cluster_id']}")).json()
            crop = await http.get(f"/api/snapshots/{events[0].event_id}/crop")
            context = await http.get(f"/api/snapshots/{events[0].event_id}/context")
            no_context = await http.get(f"/api/snapshots/{events[1].event_id}/context")
            head = harness.server.state.head_revision()
            version = {c["cluster_id"]: {"version": c["version"]} for c in clusters}
            enrolled = await http.post(
                f"/api/unknown/clusters/{events[0].event_id}/enrol",
                json={"person_id": "visitor-a", "display_name": "Visitor A", "groups": ["guests"]},
                params=version[events[0].event_id],
            )
            dismissed = await http.post(
                f"/api/unknown/clusters/{events[2].event_id}/dismiss", params=version[events[2].event_id]
            )
            chosen = await http.post(
                "/api/snapshots/enrol",
                json={"person_id": "visitor-a", "existing": True, "snapshot_ids": [events[4].event_id]},
            )
            deleted = await http.delete(
                f"/api/unknown/clusters/{events[6].event_id}", params=version[events[6].event_id]
            )
            left = (await http.get("/api/unknown/clusters")).json()["clusters"]
            statuses = (await http.get("/api/snapshots", params={"page_size": 100})).json()["snapshots"]
            new_only = (await http.get("/api/snapshots", params={"status": "new"})).json()["snapshots"]
            dismiss_chosen = await http.post(
                "/api/snapshots/dismiss", json={"snapshot_ids": [events[5].event_id]}
            )
            return {
                "clusters": clusters,
                "shown": shown,
                "crop": crop,
                "context": context,
                "no_context": problem(no_context, 404, "NOT_FOUND"),
                "enrolled": enrolled,
                "head": head,
                "dismissed": dismissed.json(),
                "chosen": chosen.json(),
                "deleted": deleted.json(),
                "left": left,
                "statuses": {s["snapshot_id"]: (s["status"], s["person_id"]) for s in statuses},
                "new_only": [s["snapshot_id"] for s in new_only],
                "dismiss_chosen": dismiss_chosen.json(),
                "person": (await http.get("/api/people/visitor-a")).json(),
                "gone": problem(
                    await http.get(f"/api/snapshots/{events[6].event_id}/crop"), 404, "NOT_FOUND"
                ),
                "enrolled_again": problem(
                    await http.post(
                        f"/api/unknown/clusters/{events[0].event_id}/enrol",
                        json={"person_id": "x"},
                        params=version[events[0].event_id],
                    ),
                    404,
                    "NOT_FOUND",
                ),
                "bad_kind": problem(
                    await http.get(f"/api/snapshots/{events[0].event_id}/face"), 400, "INVALID_ARGUMENT"
                ),
                "both": problem(
                    await http.post("/api/snapshots/dismiss", json={"snapshot_ids": []}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                "audit": (await http.get("/api/audit", params={"action_prefix": "unknown"})).json()[
                    "entries"
                ],
            }

    r = run(scenario)
    assert [(c["cluster_id"], c["count"]) for c in r["clusters"]] == [
        (events[6].event_id, 2),
        (events[4].event_id, 2),
        (events[2].event_id, 2),
        (events[0].event_id, 2),
    ]
    oldest = r["clusters"][-1]
    assert (oldest["devices"], oldest["cameras"], oldest["model_id"]) == (
        ["door-1"],
        ["door-1/entrance"],
        MODEL,
    )
    assert [s["snapshot_id"] for s in r["shown"]["snapshots"]] == [events[1].event_id, events[0].event_id]
    assert r["crop"].headers["content-type"] == "image/jpeg"
    assert r["crop"].content == events[0].snapshot.crop_jpeg  # type: ignore[union-attr]
    assert r["context"].content == events[0].snapshot.context_jpeg  # type: ignore[union-attr]

    assert r["enrolled"].status_code == 201, r["enrolled"].text
    enrolled = r["enrolled"].json()
    assert (enrolled["person"]["person_id"], enrolled["person"]["groups"], enrolled["revision"]) == (
        "visitor-a",
        ["guests"],
        r["head"] + 1,
    )
    assert sorted(enrolled["snapshot_ids"]) == sorted([events[0].event_id, events[1].event_id])
    assert r["dismissed"] == {"count": 2}
    assert r["chosen"]["snapshot_ids"] == [events[4].event_id] and r["chosen"]["revision"] == r["head"] + 2
    assert r["deleted"] == {"count": 2}
    assert [c["cluster_id"] for c in r["left"]] == [events[5].event_id]  # its first snapshot was enrolled
    statuses = r["statuses"]
    assert len(statuses) == 6  # two deleted
    assert statuses[events[0].event_id] == ("enrolled", "visitor-a")
    assert statuses[events[2].event_id][0] == "dismissed"
    assert r["new_only"] == [events[5].event_id]
    assert r["dismiss_chosen"] == {"count": 1}
    assert r["person"]["stored_crops"] == 3 and len(r["person"]["person"]["embeddings"]) == 3
    assert "give either a cluster id or snapshot ids" in r["both"]["detail"]
    assert [(e["action"], e["target"], e["outcome"]) for e in reversed(r["audit"])] == [
        ("unknown.enrol", "visitor-a", "ok"),
        ("unknown.dismiss", events[2].event_id, "ok"),
        ("unknown.enrol", "visitor-a", "ok"),
        ("unknown.delete", events[6].event_id, "ok"),
        ("unknown.dismiss", events[5].event_id, "ok"),
        ("unknown.enrol", "x", "NOT_FOUND"),
        ("unknown.dismiss", "", "INVALID_ARGUMENT"),
    ]


def forged_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_forged_page_tokens_and_bad_snapshot_filters_are_a_400_naming_the_problem(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    """A page token this server never issued (a time beyond 64-bit integers, an audit entry id that is not
    a number, an oversized token) and a snapshot filter without a time zone or with an over-long camera name
    are refused with what is wrong, never an internal error."""
    huge = 10**30
    requests = [
        ("/api/events", {"start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z",
                         "page_token": forged_token(f"e|{huge}|x")}, "pass next_page_token unchanged"),
        ("/api/snapshots", {"page_token": forged_token(f"s|{huge}|x")}, "pass next_page_token unchanged"),
        ("/api/audit", {"page_token": forged_token(f"a|{huge}|1")}, "pass next_page_token unchanged"),
        ("/api/audit", {"page_token": forged_token("a|1|x")}, "pass next_page_token unchanged"),
        ("/api/snapshots", {"page_token": "A" * 10_000}, "pass next_page_token unchanged"),
        ("/api/snapshots", {"since": "2024-01-01T00:00:00"}, "give the time with its zone"),
        ("/api/snapshots", {"camera": "c" * 10_000}, "is not a camera name"),
        ("/api/snapshots", {"since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"},
         "must be after since"),
    ]  # fmt: skip

    async def scenario() -> list[str]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            return [
                problem(await http.get(path, params=params), 400, "INVALID_ARGUMENT")["detail"]
                for path, params, _ in requests
            ]

    details = run(scenario)
    for detail, (path, _, wanted) in zip(details, requests, strict=True):
        assert wanted in detail, (path, detail)


def test_an_action_on_a_cluster_that_changed_since_it_was_listed_is_a_409_and_changes_nothing(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    """The operator lists a stranger's cluster of two sightings; a third joins it before they act: enrolling,
    dismissing or deleting it at the version listed is refused with what to do, and nobody is enrolled and
    no snapshot changes; listed again, it enrols with the three. Without a version, nothing is done either."""
    start = utc_now() - timedelta(minutes=30)
    events = [sighting(0, view, start + timedelta(minutes=view)) for view in range(3)]

    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            await report(harness, events[:2])
            (listed,) = (await http.get("/api/unknown/clusters")).json()["clusters"]
            await report(harness, events[2:])
            path = f"/api/unknown/clusters/{listed['cluster_id']}"
            seen = {"version": listed["version"]}
            head = harness.server.state.head_revision()
            refused = {
                "enrol": await http.post(f"{path}/enrol", json={"person_id": "visitor-a"}, params=seen),
                "dismiss": await http.post(f"{path}/dismiss", params=seen),
                "delete": await http.delete(path, params=seen),
                "unversioned": await http.post(f"{path}/enrol", json={"person_id": "visitor-a"}),
            }
            unchanged = (
                harness.server.state.head_revision() == head,
                (await http.get("/api/people")).json()["people"],
                [s["status"] for s in (await http.get("/api/snapshots")).json()["snapshots"]],
            )
            (again,) = (await http.get("/api/unknown/clusters")).json()["clusters"]
            enrolled = await http.post(
                f"{path}/enrol", json={"person_id": "visitor-a"}, params={"version": again["version"]}
            )
            return {"listed": listed, "refused": refused, "unchanged": unchanged, "again": again,
                    "enrolled": enrolled}  # fmt: skip

    r = run(scenario)
    assert r["listed"]["count"] == 2
    for action in ("enrol", "dismiss", "delete"):
        detail = problem(r["refused"][action], 409, "FAILED_PRECONDITION")["detail"]
        assert "changed since version" in detail and "list the clusters again" in detail, detail
    assert (
        "give the version of cluster"
        in problem(r["refused"]["unversioned"], 400, "INVALID_ARGUMENT")["detail"]
    )
    assert r["unchanged"] == (True, [], ["new", "new", "new"])
    assert (r["again"]["cluster_id"], r["again"]["count"]) == (r["listed"]["cluster_id"], 3)
    assert r["again"]["version"] != r["listed"]["version"]
    assert r["enrolled"].status_code == 201, r["enrolled"].text
    assert sorted(r["enrolled"].json()["snapshot_ids"]) == sorted(e.event_id for e in events)


def test_cluster_listings_share_one_clustering_on_a_thread_of_its_own_and_queries_answer_meanwhile(
    tmp_path: Path, pki: Pki, enroller: Enroller, caplog: pytest.LogCaptureFixture
) -> None:
    """Seven listings at once (more than the six threads asyncio lends blocking calls on two cores) of 2,000
    unknown faces of as many people, with embeddings of 4,096 values so that clustering them takes about a
    second: one clustering serves them all, and an events query sent once the snapshots are read answers
    before the clustering ends, since the threads that serve queries are not the clustering's."""
    caplog.set_level(logging.INFO, logger="facefleet.server.gallery.unknown")
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(SNAPSHOTS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start, crop = utc_now() - timedelta(hours=1), crop_jpeg(0)
    events = [
        Event(str(uuid.uuid4()), "door-1", start + timedelta(milliseconds=100 * i), "face", "unknown",
              camera="entrance", snapshot=FaceSnapshot(crop, b"", Embedding("wide@1", v, 0.8)))
        for i, v in enumerate(vectors)
    ]  # fmt: skip
    reads = {"begun": 0, "done": 0}

    def clustered() -> int:
        return sum(r.getMessage().startswith("clustered") for r in caplog.records)

    async def scenario() -> tuple[list[Any], Any, int]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            snapshots = harness.server.state.snapshots
            await asyncio.to_thread(harness.server.state.add_events, events)
            read = snapshots.unknown_snapshots

            def counted(*args: Any) -> Any:
                reads["begun"] += 1
                try:
                    return read(*args)
                finally:
                    reads["done"] += 1

            snapshots.unknown_snapshots = counted  # type: ignore[method-assign]
            listings = [asyncio.create_task(http.get("/api/unknown/clusters")) for _ in range(7)]
            while not reads["done"] or reads["begun"] > reads["done"]:
                await asyncio.sleep(0.01)  # the snapshots are read: clustering them has begun
            query = await http.get("/api/events", params={"page_size": 10})
            during = clustered()
            return await asyncio.gather(*listings), query, during

    listings, query, during = run(scenario)
    assert query.status_code == 200 and len(query.json()["events"]) == 10
    assert during == 0  # answered while the clustering ran
    assert all(len(r.json()["clusters"]) == SNAPSHOTS for r in listings)
    assert clustered() == 1
