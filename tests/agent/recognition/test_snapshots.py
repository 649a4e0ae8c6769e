"""Face snapshots from real photos through the real models: the crop is the face the embedding was computed
from, the context view is the frame around it, and both fit the link's JPEG limit whatever the settings."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.recognition.snapshots import (
    FaceCrop,
    SnapshotSettings,
    context_view,
    crop_jpeg,
    encode_jpeg,
    face_crop,
    reported,
    snapshot_of,
)
from facefleet.link.events import MAX_SNAPSHOT_JPEG_BYTES
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.preprocess import embedding_input, normalise_embeddings


def embed_aligned(analyzer: FaceAnalyzer, aligned_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The embedding model run on one aligned 112×112 crop."""
    tensor = embedding_input(aligned_bgr)[None]
    outputs = analyzer.net("embedding", tensor.shape).infer(tensor)
    return np.asarray(normalise_embeddings(next(iter(outputs.values())))[0], np.float32)


def decode(data: bytes) -> npt.NDArray[np.uint8]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return np.asarray(image, np.uint8)


@pytest.fixture(scope="module")
def astronaut_crop(analyzer: FaceAnalyzer, astronaut: npt.NDArray[np.uint8]) -> FaceCrop:
    (face,) = analyzer.analyze(astronaut)
    return face_crop(astronaut, face, 320)


def test_the_crop_is_the_face_the_embedding_was_computed_from(
    analyzer: FaceAnalyzer, astronaut: npt.NDArray[np.uint8], astronaut_crop: FaceCrop
) -> None:
    (face,) = analyzer.analyze(astronaut)
    assert face.embedding is not None
    assert astronaut_crop.aligned_bgr.shape == (112, 112, 3) and astronaut_crop.aligned_bgr.dtype == np.uint8
    assert float(embed_aligned(analyzer, astronaut_crop.aligned_bgr) @ face.embedding) > 0.999
    np.testing.assert_array_equal(astronaut_crop.embedding, face.embedding)
    assert astronaut_crop.model_id == "sface@2021dec"
    assert astronaut_crop.quality == pytest.approx(face.quality.score)


def test_the_context_view_shows_the_face_and_is_at_most_context_px(
    analyzer: FaceAnalyzer, astronaut: npt.NDArray[np.uint8], astronaut_crop: FaceCrop
) -> None:
    (face,) = analyzer.analyze(astronaut)
    x1, y1, x2, y2 = (float(v) for v in face.detection.box_xyxy)
    height, width = astronaut.shape[:2]
    expected_hw = (  # a box size beyond each side of the box, within the photo
        min(height, y2 + (y2 - y1)) - max(0, y1 - (y2 - y1)),
        min(width, x2 + (x2 - x1)) - max(0, x1 - (x2 - x1)),
    )
    context = astronaut_crop.context_bgr
    assert context is not None and context.shape[:2] == pytest.approx(expected_hw, abs=2)
    (seen,) = analyzer.analyze(context)  # the face is in the view, whole
    assert seen.embedding is not None and float(seen.embedding @ astronaut_crop.embedding) > 0.8
    scaled = face_crop(astronaut, face, 128).context_bgr
    assert scaled is not None and max(scaled.shape[:2]) == 128
    assert face_crop(astronaut, face, 0).context_bgr is None
    small = context_view(astronaut, face.detection.box_xyxy, 2000)  # never scaled up
    assert max(small.shape[:2]) <= max(astronaut.shape[:2]) and small.base is None  # a copy, not a view


@pytest.mark.parametrize(
    ("box_xyxy", "shape_hw"),
    [
        ((-50, -50, 10, 10), (70, 70)),  # off the top-left corner: clipped
        ((500, 500, 700, 700), (212, 212)),  # past the bottom-right corner of the 512×512 photo
        ((100, 100, 100, 100), (2, 2)),  # an empty box still gives pixels
    ],
)
def test_the_context_view_of_a_box_at_the_frame_edge_is_clipped(
    astronaut: npt.NDArray[np.uint8], box_xyxy: tuple[float, ...], shape_hw: tuple[int, int]
) -> None:
    view = context_view(astronaut, np.array(box_xyxy, np.float32), 320)
    assert view.shape[:2] == shape_hw and view.dtype == np.uint8


def test_a_snapshot_holds_decodable_jpegs_and_the_embedding(astronaut_crop: FaceCrop) -> None:
    snapshot = snapshot_of(astronaut_crop, SnapshotSettings(), "camera:front")
    assert decode(snapshot.crop_jpeg).shape == (112, 112, 3)
    assert decode(snapshot.context_jpeg).shape == astronaut_crop.context_bgr.shape  # type: ignore[union-attr]
    assert snapshot.embedding.model_id == "sface@2021dec" and snapshot.embedding.source == "camera:front"
    np.testing.assert_allclose(snapshot.embedding.vector, astronaut_crop.embedding, atol=1e-6)
    assert snapshot.embedding.quality == pytest.approx(astronaut_crop.quality)
    no_view = snapshot_of(
        FaceCrop(astronaut_crop.aligned_bgr, None, astronaut_crop.embedding, "sface@2021dec", 0.7),
        SnapshotSettings(context_px=0),
        "camera:front",
    )
    assert no_view.context_jpeg == b""
    lower = crop_jpeg(astronaut_crop, SnapshotSettings(jpeg_quality=30))
    assert len(lower) < len(snapshot.crop_jpeg) and decode(lower).shape == (112, 112, 3)


def test_a_view_too_large_for_the_limit_is_encoded_lower_then_smaller() -> None:
    noise = np.random.default_rng(7).integers(0, 256, (320, 320, 3), dtype=np.uint8)  # JPEG's worst case
    assert len(cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 100])[1]) > MAX_SNAPSHOT_JPEG_BYTES
    fitted = encode_jpeg(noise, 100)
    assert len(fitted) <= MAX_SNAPSHOT_JPEG_BYTES and decode(fitted).shape == (320, 320, 3)  # lower quality
    smaller = encode_jpeg(noise, 100, limit=20_000)
    assert len(smaller) <= 20_000 and max(decode(smaller).shape[:2]) < 320  # and then smaller
    with pytest.raises(ValueError, match="does not fit in a 100-byte JPEG"):
        encode_jpeg(noise[:112, :112], 90, limit=100, shrink=False)


@pytest.mark.parametrize(
    ("policy", "known", "expected"),
    [
        ("unknown", False, True),
        ("unknown", True, False),
        ("all", False, True),
        ("all", True, True),
        ("none", False, False),
        ("none", True, False),
    ],
)
def test_the_report_policy(policy: str, known: bool, expected: bool) -> None:
    assert reported(policy, known) is expected  # type: ignore[arg-type]
