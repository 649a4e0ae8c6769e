"""Face snapshots reported by the agent's sync client (facefleet.agent.fleet.sync.FleetSync) to a real server:
mutual TLS on port 0, real SQLite on both sides, snapshots of the real faces of a real group photo. Queued
while the server is away, they go with their events in requests bounded by bytes, the server stores the
events, and once it acknowledges them the agent's store lets the snapshots go with their events."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.fleet import client as fleet_client
from facefleet.agent.fleet.sync import FleetSync
from facefleet.agent.publish.events import FaceEvent, Versions, face_event
from facefleet.agent.recognition.snapshots import SnapshotSettings, face_crop, snapshot_of
from facefleet.agent.recognition.tracking import TrackEvent
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.snapshots import snapshot_size
from facefleet.server.domain.queries import EventFilter
from facefleet.server.gallery.embedder import Enroller
from facefleet.vision.pipeline import FaceAnalyzer
from tests.server.conftest import Pki, run, serving
from tests.server.fleet.test_agent_sync import settings, syncing, until

MODEL = "sface@2021dec"


def unknown_faces(analyzer: FaceAnalyzer, photo: npt.NDArray[np.uint8], now: float) -> list[FaceEvent]:
    """The ended track of every face in the photo, unknown, each with its snapshot."""
    events = []
    for n, face in enumerate(analyzer.analyze(photo)):
        crop = face_crop(photo, face, 320)
        track = TrackEvent(
            "ended",
            f"t{n}",
            "unknown",
            0.0,
            4,
            round(crop.quality, 3),
            None,
            {},
            tuple(float(v) for v in face.detection.box_xyxy),  # type: ignore[arg-type]
            now - 2,
            now - 1,
            best=crop,
        )
        snapshot = snapshot_of(crop, SnapshotSettings(), "camera:door")
        versions = Versions("0.1.0", "2026.0", {"embedding": MODEL}, gallery_revision=0)
        events.append(face_event("door-1", "door", track, None, versions, now, snapshot))
    return events


def test_snapshots_queued_while_the_server_is_away_are_reported_in_byte_bounded_batches(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    analyzer: FaceAnalyzer,
    group_photo: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time()
    events = unknown_faces(analyzer, group_photo, now)
    sizes = [snapshot_size(e.snapshot) for e in events if e.snapshot is not None]
    assert len(sizes) == len(events) == 6 and min(sizes) > 4000
    report_bytes = max(sizes) + 2000  # room for one snapshot per call, never two
    limit = sum(sizes[1:]) + 10  # the store keeps all but the oldest snapshot: that event goes without
    requests: list[tuple[int, int, int]] = []  # per ReportResults call: events, with a snapshot, bytes
    encode = fleet_client.report_to_proto

    def recorded(device_id: str, reports: Any, health: Any) -> Any:
        request, refused = encode(device_id, reports, health)
        with_snapshot = sum(e.HasField("snapshot") for e in request.events)
        requests.append((len(request.events), with_snapshot, request.ByteSize()))
        return request, refused

    monkeypatch.setattr(fleet_client, "report_to_proto", recorded)
    day = EventFilter(
        datetime.fromtimestamp(now, timezone.utc) - timedelta(hours=1),
        datetime.fromtimestamp(now, timezone.utc) + timedelta(hours=1),
    )

    async def scenario() -> tuple[list[Any], int, int, int]:
        with EmbeddingStore(tmp_path / "agent.db", snapshot_limit_bytes=limit) as store:
            async with serving(tmp_path, pki, enroller) as harness:
                sync_settings = replace(settings(harness, pki), report_bytes=report_bytes)
                offline = FleetSync(sync_settings, store)  # not started: queued as while the server is away
                assert all(offline.submit(event) for event in events)
                assert (store.snapshots.count(), store.snapshots.dropped()) == (5, 1)
                async with syncing(sync_settings, store) as sync:
                    await until(lambda: store.reports.count() == 0, what="every event acknowledged")
                    await until(lambda: sync.reported == len(events), what="the acknowledgements")
                    for event in events:  # as if an acknowledgement had been lost: reported again
                        assert sync.submit(event)
                    await until(lambda: sync.reported == 2 * len(events), what="the repeated report")
                    await until(lambda: store.reports.count() == 0, what="the repeat acknowledged")
                stored = harness.server.state.list_events(day, None, 100).events
                return list(stored), store.snapshots.count(), store.snapshots.size(), sync.refused

    stored, left, left_bytes, refused = run(scenario)
    assert sorted(e.event_id for e in stored) == sorted(e.envelope.event_id for e in events)  # once each
    assert {(e.kind, e.decision, e.camera) for e in stored} == {("face", "unknown", "door")}
    assert (left, left_bytes, refused) == (0, 0, 0)  # the snapshots went with their events
    calls = [(n, with_snapshot) for n, with_snapshot, _ in requests if n]  # health-only calls left out
    # the oldest event, whose snapshot was dropped, goes along with the next; then one snapshot per call
    assert calls[:5] == [(2, 1)] + [(1, 1)] * 4
    # reported again while the client is running: whether the oldest snapshot is dropped again before it is
    # sent depends on how many went before the last was queued; every event still goes, one snapshot per call
    repeat = calls[5:]
    assert sum(n for n, _ in repeat) == 6 and all(with_snapshot == 1 for _, with_snapshot in repeat)
    assert len(repeat) in (5, 6)
    assert all(size <= report_bytes for _, _, size in requests)
