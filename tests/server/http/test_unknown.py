"""/api/unknown and /api/snapshots over HTTPS: face snapshots an agent reported through FleetService are
listed, clustered, shown as JPEG, enrolled as a person (one gallery revision), dismissed and deleted."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facefleet.link import serde
from facefleet.link.checks import utc_now
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import fleet_pb2
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.http.clients import client, problem

MODEL = "sface@2021dec"


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
            enrolled = await http.post(
                f"/api/unknown/clusters/{events[0].event_id}/enrol",
                json={"person_id": "visitor-a", "display_name": "Visitor A", "groups": ["guests"]},
            )
            dismissed = await http.post(f"/api/unknown/clusters/{events[2].event_id}/dismiss")
            chosen = await http.post(
                "/api/snapshots/enrol",
                json={"person_id": "visitor-a", "existing": True, "snapshot_ids": [events[4].event_id]},
            )
            deleted = await http.delete(f"/api/unknown/clusters/{events[6].event_id}")
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
                        f"/api/unknown/clusters/{events[0].event_id}/enrol", json={"person_id": "x"}
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
