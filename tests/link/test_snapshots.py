"""Face snapshots on the link: checked when made, and carried by the event through protobuf unchanged."""

from __future__ import annotations

from datetime import timedelta

import cv2
import numpy as np
import pytest

from facefleet.link import serde
from facefleet.link.checks import utc_now
from facefleet.link.errors import LinkError
from facefleet.link.events import MAX_SNAPSHOT_JPEG_BYTES, Event, FaceSnapshot
from facefleet.link.gallery import Embedding


def jpeg(size: int = 112, seed: int = 0) -> bytes:
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.dstack([np.add.outer(ramp, ramp * (seed + 1)) % 256] * 3).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", pixels)
    assert ok
    return bytes(data.tobytes())


def resized(data: bytes, side: int) -> bytes:
    """The JPEG with its frame header saying side×side: a few kilobytes that would decode to gigabytes."""
    raw = bytearray(data)
    at = raw.index(b"\xff\xc0")
    raw[at + 5 : at + 9] = side.to_bytes(2, "big") * 2
    return bytes(raw)


def embedding() -> Embedding:
    return Embedding("sface@2021dec", np.random.default_rng(1).normal(size=128).astype(np.float32), 0.8)


def test_a_snapshot_travels_with_its_event_unchanged() -> None:
    snapshot = FaceSnapshot(jpeg(), jpeg(320, 2), embedding())
    event = Event(
        "0d8b1f64-7a3c-4e59-9b8e-1f2a3b4c5d6e",
        "door-1",
        utc_now() - timedelta(seconds=1),
        "face",
        "unknown",
        camera="door",
        snapshot=snapshot,
    )
    back = serde.event_from_proto(serde.event_to_proto(event))
    assert back.snapshot is not None
    assert (back.snapshot.crop_jpeg, back.snapshot.context_jpeg) == (
        snapshot.crop_jpeg,
        snapshot.context_jpeg,
    )
    assert back.snapshot.embedding.model_id == "sface@2021dec"
    np.testing.assert_array_equal(back.snapshot.embedding.vector, snapshot.embedding.vector)
    assert (
        serde.event_from_proto(
            serde.event_to_proto(Event(event.event_id, "door-1", event.time, "face", "unknown"))
        ).snapshot
        is None
    )


@pytest.mark.parametrize(
    ("crop", "context", "message"),
    [
        (b"", b"", "crop_jpeg is not a JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"0" * 100, b"", "crop_jpeg is not a JPEG"),
        (jpeg(), b"GIF89a", "context_jpeg is not a JPEG"),
        (b"\xff\xd8\xff" + b"0" * MAX_SNAPSHOT_JPEG_BYTES, b"", "the limit is 65536"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", b"", "crop_jpeg is not a readable JPEG"),
        (jpeg(113), b"", "crop_jpeg is 113×113 pixels; it must be the aligned 112×112 face"),
        (resized(jpeg(), 16_000), b"", "crop_jpeg is 16000×16000 pixels"),
        (jpeg(), jpeg(321), "context_jpeg is 321×321 pixels; its longest side may be 320 px at most"),
        (jpeg(), resized(jpeg(320), 16_000), "context_jpeg is 16000×16000 pixels"),
    ],
)
def test_a_snapshot_that_is_not_a_small_jpeg_is_refused(crop: bytes, context: bytes, message: str) -> None:
    with pytest.raises(LinkError, match=message):
        FaceSnapshot(crop, context, embedding())


def test_only_face_events_carry_a_snapshot() -> None:
    with pytest.raises(LinkError, match="only face events"):
        Event(
            "0d8b1f64-7a3c-4e59-9b8e-1f2a3b4c5d6e",
            "door-1",
            utc_now(),
            "access",
            "granted",
            door="main",
            snapshot=FaceSnapshot(jpeg(), b"", embedding()),
        )
