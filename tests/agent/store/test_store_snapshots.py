"""Face snapshots waiting in the store beside their events on real SQLite: they come back with their events,
are bounded by bytes (the oldest dropped and counted) and by age, bound the bytes of a report batch, and go
with their events when those are acknowledged."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.snapshots import SNAPSHOTS_DROPPED, snapshot_size
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding

MODEL = "sface@2021dec"


def jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(data.tobytes())


def snapshot(photo: npt.NDArray[np.uint8], seed: int) -> FaceSnapshot:
    """Real JPEGs cut from a real photo (a 112×112 crop and a 320-px view), with a seeded embedding."""
    rng = np.random.default_rng(seed)
    y, x = (int(v) for v in rng.integers(0, 160, 2))
    crop = np.asarray(cv2.resize(photo[y : y + 200, x : x + 200], (112, 112)), np.uint8)
    view = np.asarray(cv2.resize(photo[y : y + 320, x : x + 300], (300, 320)), np.uint8)
    vector = rng.normal(size=128).astype(np.float32)
    return FaceSnapshot(jpeg(crop), jpeg(view, 75), Embedding(MODEL, vector, 0.8, "camera:front"))


def face_event(n: int, photo: npt.NDArray[np.uint8] | None = None) -> Event:
    """An unknown face's event, with a snapshot when a photo is given."""
    return Event(
        event_id=str(uuid.uuid4()),
        device_id="door-box",
        time=datetime(2025, 1, 31, 12, tzinfo=timezone.utc) + timedelta(seconds=n),
        kind="face",
        decision="unknown",
        camera="front",
        quality=0.75,
        model_versions={"embedding": MODEL},
        reason=f"track ended after {n} frames",
        snapshot=None if photo is None else snapshot(photo, n),
    )


def same_snapshot(a: FaceSnapshot | None, b: FaceSnapshot | None) -> bool:
    assert a is not None and b is not None
    return (
        a.crop_jpeg == b.crop_jpeg
        and a.context_jpeg == b.context_jpeg
        and (a.embedding.model_id, a.embedding.quality, a.embedding.source)
        == (b.embedding.model_id, b.embedding.quality, b.embedding.source)
        and np.array_equal(a.embedding.vector, b.embedding.vector)
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddingStore]:
    with EmbeddingStore(tmp_path / "agent.db") as opened:
        yield opened


def test_a_snapshot_waits_apart_and_comes_back_with_its_event_after_a_restart(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    events = [face_event(0, astronaut), face_event(1), face_event(2, astronaut)]
    with EmbeddingStore(tmp_path / "agent.db") as store:
        assert [store.reports.put(e) for e in events] == [True] * 3
        assert store.reports.put(events[0]) is False  # by event id: once, snapshot too
        expected = sum(snapshot_size(e.snapshot) for e in events if e.snapshot is not None)
        assert (store.snapshots.count(), store.snapshots.size()) == (2, expected)
    with EmbeddingStore(tmp_path / "agent.db") as store:
        back = [r.event for r in store.reports.pending()]
        assert [e.event_id for e in back] == [e.event_id for e in events]
        assert same_snapshot(back[0].snapshot, events[0].snapshot)
        assert back[1].snapshot is None
        assert same_snapshot(back[2].snapshot, events[2].snapshot)
        assert [replace(e, snapshot=None) for e in back] == [replace(e, snapshot=None) for e in events]
        assert store.integrity_check() == []
    with sqlite3.connect(tmp_path / "agent.db") as conn:  # the queued event itself stays small
        sizes = [row[0] for row in conn.execute("SELECT length(event) FROM reports ORDER BY id")]
    conn.close()
    assert max(sizes) < 1000


def test_past_max_pending_bytes_the_oldest_snapshots_are_dropped_and_counted_but_their_events_stay(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    events = [face_event(i, astronaut) for i in range(5)]
    sizes = [snapshot_size(e.snapshot) for e in events if e.snapshot is not None]
    limit = sum(sizes[2:]) + 10  # room for the newest three
    with EmbeddingStore(tmp_path / "agent.db", snapshot_limit_bytes=limit) as store:
        for queued in events:
            store.reports.put(queued)
        assert store.snapshots.dropped() == store.counter(SNAPSHOTS_DROPPED) == 2
        assert (store.snapshots.count(), store.snapshots.size()) == (3, sum(sizes[2:]))
        back = [r.event for r in store.reports.pending()]
    assert [e.event_id for e in back] == [e.event_id for e in events]  # every event is still reported
    assert [e.snapshot is not None for e in back] == [False, False, True, True, True]


def test_snapshots_older_than_keep_days_are_dropped_and_counted(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    old, new = face_event(0, astronaut), face_event(1, astronaut)
    with EmbeddingStore(tmp_path / "agent.db", snapshot_keep_s=7 * 86400.0) as store:
        store.reports.put(old)
        store.reports.put(new)
        with store.connection.write() as conn:  # as if queued 8 days ago
            conn.execute(
                "UPDATE snapshots SET created_at = created_at - 8 * 86400 WHERE event_id = ?", (old.event_id,)
            )
        assert store.snapshots.expire() == 1
        assert store.snapshots.expire() == 0
        assert (store.snapshots.count(), store.snapshots.dropped()) == (1, 1)
        back = [r.event for r in store.reports.pending()]
        assert [(e.event_id, e.snapshot is not None) for e in back] == [
            (old.event_id, False),
            (new.event_id, True),
        ]
        assert store.snapshots.expire(now=time.time() + 7 * 86400 + 60) == 1  # a week on, the other too
        assert store.snapshots.dropped() == 2


def test_a_batch_is_bounded_by_the_bytes_of_its_events_and_snapshots(
    store: EmbeddingStore, astronaut: npt.NDArray[np.uint8]
) -> None:
    events = [face_event(i, astronaut) for i in range(5)]
    for queued in events:
        store.reports.put(queued)
    size = max(snapshot_size(e.snapshot) for e in events if e.snapshot is not None) + 1000
    assert len(store.reports.pending(500, max_bytes=2 * size)) == 2
    assert len(store.reports.pending(500, max_bytes=10 * size)) == 5
    assert len(store.reports.pending(3, max_bytes=10 * size)) == 3  # and by count
    (oldest,) = store.reports.pending(500, max_bytes=10)  # always the oldest, even when it alone is larger
    assert oldest.event.event_id == events[0].event_id and oldest.event.snapshot is not None
    assert store.reports.pending(0, max_bytes=10) == []
    sent = store.reports.pending(500, max_bytes=2 * size)
    store.reports.delete([r.report_id for r in sent])
    rest = store.reports.pending(500, max_bytes=2 * size)
    assert [r.event.event_id for r in rest] == [e.event_id for e in events[2:4]]


def test_snapshots_go_with_their_events_acknowledged_or_dropped_from_a_full_queue(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    with EmbeddingStore(tmp_path / "agent.db", report_limit=2) as store:
        events = [face_event(0, astronaut), face_event(1), face_event(2, astronaut), face_event(3, astronaut)]
        for queued in events:
            store.reports.put(queued)
        # the two oldest events left the full queue, the first with its snapshot: that one is counted
        assert (store.reports.dropped(), store.snapshots.count(), store.snapshots.dropped()) == (2, 2, 1)
        assert store.reports.delete([r.report_id for r in store.reports.pending()]) == 2
        # acknowledged: the server has them, nothing more is counted
        assert (store.snapshots.count(), store.snapshots.size(), store.snapshots.dropped()) == (0, 0, 1)
        assert store.integrity_check() == []


def test_the_snapshot_of_an_event_that_no_longer_decodes_is_dropped_with_it_and_counted(
    store: EmbeddingStore, astronaut: npt.NDArray[np.uint8]
) -> None:
    damaged, fine = face_event(0, astronaut), face_event(1, astronaut)
    store.reports.put(damaged)
    store.reports.put(fine)
    with store.connection.write() as conn:
        conn.execute("UPDATE reports SET event = X'ffff' WHERE event_id = ?", (damaged.event_id,))
    assert [r.event.event_id for r in store.reports.pending()] == [fine.event_id]
    assert (store.reports.dropped(), store.snapshots.count(), store.snapshots.dropped()) == (1, 1, 1)


def test_a_snapshot_that_no_longer_reads_back_is_dropped_and_its_event_still_sent(
    store: EmbeddingStore, astronaut: npt.NDArray[np.uint8]
) -> None:
    damaged, fine = face_event(0, astronaut), face_event(1, astronaut)
    store.reports.put(damaged)
    store.reports.put(fine)
    with store.connection.write() as conn:
        conn.execute("UPDATE snapshots SET crop_jpeg = X'00ff' WHERE event_id = ?", (damaged.event_id,))
    back = [r.event for r in store.reports.pending()]
    assert [(e.event_id, e.snapshot is not None) for e in back] == [
        (damaged.event_id, False),
        (fine.event_id, True),
    ]
    assert (store.snapshots.count(), store.snapshots.dropped()) == (1, 1)


def test_the_store_refuses_a_snapshot_bound_that_is_not_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="snapshot bounds must be positive"):
        EmbeddingStore(tmp_path / "agent.db", snapshot_limit_bytes=0)
