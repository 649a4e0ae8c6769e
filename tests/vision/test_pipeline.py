"""The vision pipeline with the real models on real photos (f32 on CPU)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facefleet.vision import detection
from facefleet.vision.alignment import align_face
from facefleet.vision.faces import EXPRESSION_LABELS, Face
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer, FramePipeline
from facefleet.vision.preprocess import (
    embedding_input,
    expression_input,
    normalise_embeddings,
    softmax_if_needed,
)
from facefleet.vision.runtime import CompiledNet, Request, Runtime, RuntimeSettings
from tests.conftest import SFACE_THRESHOLD


def only_face(analyzer: FaceAnalyzer, frame: np.ndarray) -> Face:
    faces = analyzer.analyze(frame)
    assert len(faces) == 1, f"expected one face, found {len(faces)}"
    return faces[0]


def test_astronaut_has_one_happy_face_with_ordered_landmarks(
    analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    face = only_face(analyzer, astronaut)
    x1, y1, x2, y2 = face.detection.box_xyxy
    landmarks = face.detection.landmarks_xy
    assert np.all(
        (landmarks[:, 0] > x1) & (landmarks[:, 0] < x2) & (landmarks[:, 1] > y1) & (landmarks[:, 1] < y2)
    )
    right_eye, left_eye, nose, right_mouth, left_mouth = landmarks
    # the subject's right eye and mouth corner are on the image's left
    assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])
    assert face.expression is not None and face.expression.label == "happy"
    assert sum(face.expression.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert list(face.expression.probabilities) == list(EXPRESSION_LABELS)
    assert face.quality.score > 0.5 and face.detection.score > 0.8


def test_embeddings_are_unit_vectors_of_the_model(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    face = only_face(analyzer, astronaut)
    assert (
        face.embedding is not None and face.embedding.shape == (128,) and face.embedding.dtype == np.float32
    )
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-5)
    assert face.embedding_model == "sface@2021dec"


def test_group_photo_has_six_distinct_people(analyzer: FaceAnalyzer, group_photo: np.ndarray) -> None:
    faces = analyzer.analyze(group_photo)
    assert len(faces) == 6
    embeddings = np.stack([face.embedding for face in faces if face.embedding is not None])
    for a, b in itertools.combinations(range(6), 2):
        assert float(embeddings[a] @ embeddings[b]) < SFACE_THRESHOLD, (
            f"faces {a} and {b} look like one person"
        )
    boxes = np.stack([face.detection.box_xyxy for face in faces])
    assert len({tuple(np.round(b / 50)) for b in boxes}) == 6


def jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def rotate(frame: np.ndarray, degrees: float) -> np.ndarray:
    height, width = frame.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(frame, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


CHANGES = {
    "flipped": lambda f: np.ascontiguousarray(f[:, ::-1]),
    "half size": lambda f: cv2.resize(f, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
    "double size": lambda f: cv2.resize(f, None, fx=2, fy=2),
    "rotated 12°": lambda f: rotate(f, 12),
    "jpeg q=30": lambda f: jpeg(f, 30),
    "cropped": lambda f: np.ascontiguousarray(f[20:300, 100:400]),
    "grey": lambda f: cv2.cvtColor(f, cv2.COLOR_BGR2GRAY),
    "bgra": lambda f: cv2.cvtColor(f, cv2.COLOR_BGR2BGRA),
    "16-bit": lambda f: f.astype(np.uint16) * 257,
}


def test_voted_landmarks_move_less_with_where_the_face_falls_on_the_grid(
    runtime: Runtime, model_store: ModelStore, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    """The astronaut shifted by 0–14 px across and 0–11 px down: her landmarks, taken back to the photo's
    pixels, spread less around their mean when neighbouring cells vote (1.0 px against 1.9 px measured)."""
    best_cell = FaceAnalyzer(
        runtime, model_store, AnalyzerSettings(detector=detection.DetectorSettings(landmark_vote_iou=1.0))
    )

    def spread(chosen: FaceAnalyzer) -> float:
        found = []
        for dx, dy in itertools.product(range(0, 16, 2), (0, 5, 11)):
            shifted = cv2.copyMakeBorder(astronaut, dy, 0, dx, 0, cv2.BORDER_REPLICATE)
            (face,) = chosen.detect(shifted)
            found.append(face.landmarks_xy - np.array([dx, dy], np.float32))
        points = np.stack(found)
        return float(np.linalg.norm(points - points.mean(axis=0), axis=2).mean())

    voted, single = spread(analyzer), spread(best_cell)
    assert voted < 0.8 * single, (voted, single)


@pytest.mark.parametrize("change", CHANGES)
def test_changed_photo_still_matches_the_original(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, change: str
) -> None:
    original = only_face(analyzer, astronaut).embedding
    changed = only_face(analyzer, CHANGES[change](astronaut)).embedding
    assert original is not None and changed is not None
    assert float(original @ changed) > SFACE_THRESHOLD + 0.2


def test_faces_of_other_people_do_not_match_the_astronaut(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, group_photo: np.ndarray
) -> None:
    astro = only_face(analyzer, astronaut).embedding
    others = np.stack([f.embedding for f in analyzer.analyze(group_photo) if f.embedding is not None])
    assert astro is not None and np.max(others @ astro) < SFACE_THRESHOLD


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((480, 640, 3), 127, np.uint8),
        np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8),
        np.zeros((20000, 20000, 3), np.uint8),
        np.zeros((7, 4000, 3), np.uint8),
    ],
    ids=["1x1", "flat grey", "noise", "20000x20000", "thin strip"],
)
def test_frames_without_faces_give_no_faces(analyzer: FaceAnalyzer, frame: np.ndarray) -> None:
    assert analyzer.analyze(frame) == []


def test_huge_frame_with_a_face_still_finds_it(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (6000, 6000), interpolation=cv2.INTER_LINEAR)
    face = only_face(analyzer, big)
    small = only_face(analyzer, astronaut)
    np.testing.assert_allclose(face.detection.box_xyxy / (6000 / 512), small.detection.box_xyxy, atol=6)


def test_stream_gives_the_same_faces_as_one_by_one_in_order(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, group_photo: np.ndarray
) -> None:
    empty = np.zeros((200, 300, 3), np.uint8)
    frames = [astronaut, group_photo, empty, astronaut[:, ::-1].copy(), group_photo] * 3
    expected = [analyzer.analyze(frame) for frame in frames]
    streamed = list(analyzer.stream(iter(frames), jobs=3))
    assert [len(faces) for faces in streamed] == [len(faces) for faces in expected]
    for got, want in zip(streamed, expected, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.detection.box_xyxy, b.detection.box_xyxy, atol=1e-3)
            assert a.embedding is not None and b.embedding is not None
            assert float(a.embedding @ b.embedding) == pytest.approx(1.0, abs=1e-4)
            assert a.expression is not None and b.expression is not None
            assert a.expression.label == b.expression.label


def test_stream_reports_a_bad_frame_instead_of_hanging(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    frames = [astronaut, np.zeros((4, 4, 7), np.uint8), astronaut]
    with pytest.raises(Exception, match="unsupported image shape"):
        list(analyzer.stream(iter(frames), jobs=2))


def test_stream_can_be_abandoned_early(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    stream = analyzer.stream(iter([astronaut] * 50), jobs=2)
    first = next(stream)
    stream.close()
    assert len(first) == 1


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_pushed_frames_come_back_once_each_in_order_with_their_tags_and_faces(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, group_photo: np.ndarray, depth: int
) -> None:
    empty = np.zeros((200, 300, 3), np.uint8)
    frames = [astronaut, group_photo, empty, group_photo, astronaut, empty, group_photo]
    expected = [analyzer.analyze(frame) for frame in frames]
    pipeline: FramePipeline[int] = FramePipeline(analyzer, depth)
    done: list[tuple[int, list[Face]]] = []
    for tag, frame in enumerate(frames):
        done += pipeline.submit(tag, frame)
        assert pipeline.in_flight == tag + 1 - len(done) <= 2 * depth - 1
        if tag == 3:
            done += pipeline.poll()  # never blocks, never reorders
    done += pipeline.drain()
    assert pipeline.in_flight == 0 and pipeline.drain() == []
    assert [tag for tag, _ in done] == list(range(len(frames)))
    for (_, got), want in zip(done, expected, strict=True):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.detection.box_xyxy, b.detection.box_xyxy, atol=1e-3)
            assert a.embedding is not None and b.embedding is not None
            assert float(a.embedding @ b.embedding) == pytest.approx(1.0, abs=1e-4)


def test_a_drained_pipeline_has_nothing_left_for_poll(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    pipeline: FramePipeline[str] = FramePipeline(analyzer, 2)
    assert pipeline.submit("a", astronaut) == [] and pipeline.in_flight == 1
    finished = []
    for _ in range(1000):  # poll completes it once its requests are done, without waiting
        finished += pipeline.poll()
        if finished:
            break
        time.sleep(0.005)
    assert [tag for tag, _ in finished] == ["a"] and len(finished[0][1]) == 1
    assert pipeline.in_flight == 0 and pipeline.poll() == [] and pipeline.drain() == []


def test_the_pipeline_times_each_model_of_each_frame(
    analyzer: FaceAnalyzer, group_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each model of each frame is reported once, with OpenVINO's own latency of its request in seconds
    (OpenVINO gives milliseconds)."""
    reported: list[tuple[float, float]] = []  # (OpenVINO's latency in ms, latency_s()) of each request
    latency_s = Request.latency_s

    def spy(request: Request) -> float:
        seconds = latency_s(request)
        reported.append((float(request._raw.latency), seconds))
        return seconds

    monkeypatch.setattr(Request, "latency_s", spy)
    observed: list[tuple[str, str, float]] = []
    pipeline: FramePipeline[int] = FramePipeline(analyzer, 1, lambda *seen: observed.append(seen))
    pipeline.submit(0, group_photo)
    pipeline.submit(1, np.zeros((200, 300, 3), np.uint8))  # no faces: detection only
    pipeline.drain()
    tasks = [(task, model) for task, model, _ in observed]
    assert tasks.count(("detection", "yunet@2023mar")) == 2
    assert tasks.count(("embedding", "sface@2021dec")) == 1
    assert tasks.count(("expression", analyzer.expression_model.manifest.model_id)) == 1  # type: ignore[union-attr]
    assert all(milliseconds > 0 and seconds == milliseconds / 1000 for milliseconds, seconds in reported)
    assert {seconds for _, _, seconds in observed} <= {seconds for _, seconds in reported}


def test_the_expression_model_is_compiled_once_whatever_the_number_of_faces(
    runtime: Runtime, model_store: ModelStore, astronaut: np.ndarray, group_photo: np.ndarray
) -> None:
    analyzer = FaceAnalyzer(runtime, model_store)
    six = analyzer.analyze(group_photo)
    two = analyzer.analyze(np.hstack([astronaut, astronaut[:, ::-1]]))
    streamed = list(analyzer.stream(iter([group_photo, astronaut]), jobs=1))
    assert (len(six), len(two), [len(f) for f in streamed]) == (6, 2, [6, 1])
    assert [key for key in analyzer._nets if key[0] == "expression"] == [("expression", (-1, 64, 64, 1))]
    assert analyzer.expression_model is not None
    batch = runtime.compile(
        analyzer.expression_model.xml_path, input_shape=(6, 64, 64, 1), single_stream=True
    )
    tensor = np.stack([expression_input(group_photo, face.detection.box_xyxy) for face in six])
    want = softmax_if_needed(next(iter(batch.infer(tensor).values())))
    for faces in (six, streamed[0]):  # the scores of a model compiled for six faces
        got = [[face.expression.probabilities[k] for k in EXPRESSION_LABELS] for face in faces]  # type: ignore[union-attr]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_expression_input_is_a_square_about_the_box_so_a_face_keeps_its_shape() -> None:
    """A tall box (as YuNet's are) gives a square of its height padded by 10 % a side: a round face stays
    round, centred, 40 / 72 of the input across."""
    frame = np.zeros((200, 240, 3), dtype=np.uint8)
    cv2.circle(frame, (120, 100), 20, (255, 255, 255), thickness=-1)
    tensor = expression_input(frame, np.array([100, 70, 140, 130], dtype=np.float32))
    assert tensor.shape == (64, 64, 1) and tensor.dtype == np.float32
    white = tensor[:, :, 0] > 0
    columns, rows = np.flatnonzero(white.any(axis=0)), np.flatnonzero(white.any(axis=1))
    assert abs(len(columns) - len(rows)) <= 1
    assert len(rows) == pytest.approx(40 / 72 * 64, abs=2)
    assert (columns.mean(), rows.mean()) == (pytest.approx(31.5, abs=1), pytest.approx(31.5, abs=1))
    assert tensor.min() == pytest.approx(-1.0) and tensor.max() == pytest.approx(1.0)


def test_a_face_at_the_frame_edge_stays_centred_in_the_expression_input() -> None:
    """The part of the square outside the frame repeats the frame's edge rather than moving the face."""
    frame = np.zeros((200, 200, 3), dtype=np.uint8)
    frame[:, 10] = 255  # a line through the box's centre, which is 10 px from the frame's left edge
    tensor = expression_input(frame, np.array([-10, 50, 30, 110], dtype=np.float32))
    assert int(np.argmax(tensor[:, :, 0].sum(axis=0))) in (31, 32, 33)
    white = np.full_like(frame, 255)
    for box in ([-300, -300, -200, -200], [50, -300, 150, -200], [-300, 50, -200, 150], [300, 50, 400, 150]):
        outside = expression_input(white, np.array(box, dtype=np.float32))  # above, left, right of the frame
        assert outside.shape == (64, 64, 1) and np.all(outside == -1.0), box


def test_detections_match_opencv_face_detector_yn(
    runtime: Runtime, model_store: ModelStore, astronaut: np.ndarray, group_photo: np.ndarray
) -> None:
    """YuNet through OpenVINO with our input, decoding and NMS (landmarks of each face's best cell, as OpenCV
    takes them) against OpenCV's own FaceDetectorYN on the carrier's ONNX file and the same pixels: the same
    faces, scores within 0.01, boxes and landmarks within 1 px."""
    from facefleet.vision.models.importer import DEFAULT_MODELS, locate_default

    located = locate_default(next(m for m in DEFAULT_MODELS if m.task == "detection"))
    assert located is not None
    settings = detection.DetectorSettings(landmark_vote_iou=1.0)
    ours = FaceAnalyzer(
        runtime, model_store, AnalyzerSettings(detector=settings, embeddings=False, expressions=False)
    )
    small_group = cv2.resize(group_photo, (640, 443), interpolation=cv2.INTER_AREA)  # not scaled again
    for frame, faces in ((astronaut, 1), (small_group, 6)):
        height, width = frame.shape[:2]
        reference = cv2.FaceDetectorYN.create(
            str(located[0]), "", (width, height), settings.score_threshold, settings.nms_threshold, 5000
        )
        _, rows = reference.detect(frame)
        found = ours.detect(frame)
        assert rows is not None and len(rows) == len(found) == faces
        for row in rows:
            box = np.array([row[0], row[1], row[0] + row[2], row[1] + row[3]])
            match = min(found, key=lambda d: float(np.abs(d.box_xyxy - box).max()))
            assert np.abs(match.box_xyxy - box).max() < 1.0
            assert np.abs(match.landmarks_xy - row[4:14].reshape(5, 2)).max() < 1.0
            assert match.score == pytest.approx(float(row[14]), abs=0.01)


def test_embeddings_match_opencv_reference_pipeline(
    analyzer: FaceAnalyzer, group_photo: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Our alignment and OpenVINO SFace give OpenCV FaceRecognizerSF's embeddings for the same faces."""
    from facefleet.vision.models.importer import DEFAULT_MODELS, locate_default
    from facefleet.vision.models.onnx_fold import fold_blocked_dequantize

    sface = next(m for m in DEFAULT_MODELS if m.task == "embedding")
    located = locate_default(sface)
    assert located is not None
    folded = tmp_path_factory.mktemp("sface") / "sface.onnx"
    fold_blocked_dequantize(located[0], folded)
    recognizer = cv2.FaceRecognizerSF.create(str(folded), "")
    for face in analyzer.analyze(group_photo):
        det = face.detection
        row = np.concatenate(
            [det.box_xyxy[:2], det.box_xyxy[2:] - det.box_xyxy[:2], det.landmarks_xy.ravel(), [det.score]]
        )
        reference = recognizer.feature(recognizer.alignCrop(group_photo, row.astype(np.float32))).ravel()
        reference /= np.linalg.norm(reference)
        assert face.embedding is not None
        assert float(face.embedding @ reference) > 0.995


def test_stream_splits_face_batches_across_streams_without_changing_results(
    model_store: ModelStore, analyzer: FaceAnalyzer, group_photo: np.ndarray, astronaut: np.ndarray
) -> None:
    throughput = FaceAnalyzer(
        Runtime(RuntimeSettings(performance_hint="THROUGHPUT", num_streams=2, inference_precision="f32")),
        model_store,
    )
    assert throughput.net("embedding", (1, 3, 112, 112)).optimal_requests == 2
    # no precision plan: every model runs at the runtime's configured precision
    assert throughput.runs_at() == {"detection": "f32", "embedding": "f32", "expression": "f32"}
    frames = [group_photo, astronaut, group_photo]
    for got, want in zip(throughput.stream(iter(frames)), [analyzer.analyze(f) for f in frames], strict=True):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.embedding is not None and b.embedding is not None
            assert float(a.embedding @ b.embedding) == pytest.approx(1.0, abs=1e-4)
            assert a.expression is not None and b.expression is not None
            assert a.expression.label == b.expression.label


def test_one_compiled_embedding_model_serves_every_batch_size_with_the_single_face_results(
    analyzer: FaceAnalyzer, group_photo: np.ndarray
) -> None:
    assert analyzer.net("embedding", (1, 3, 112, 112)) is analyzer.net("embedding", (6, 3, 112, 112))
    faces = analyzer.analyze(group_photo)  # the six faces in one request
    assert len(faces) == 6
    single = analyzer.net("embedding", (1, 3, 112, 112))
    for face in faces:
        crop = align_face(group_photo, face.detection.landmarks_xy)
        alone = normalise_embeddings(next(iter(single.infer(embedding_input(crop)[None]).values())))[0]
        assert face.embedding is not None
        assert float(face.embedding @ alone) == pytest.approx(1.0, abs=1e-5)


class NoDynamicBatch(Runtime):
    """The real runtime, refusing what some models' graphs refuse: a batch of any size."""

    def compile(
        self, model_xml: Path, input_shape: Sequence[int] | None = None, **options: Any
    ) -> CompiledNet:
        if input_shape is not None and input_shape[0] == -1:
            raise RuntimeError("Reshape: the graph fixes the batch size\nmore detail")
        return super().compile(model_xml, input_shape, **options)


def test_an_embedding_model_that_cannot_take_any_batch_size_keeps_static_batch_sizes(
    model_store: ModelStore, analyzer: FaceAnalyzer, group_photo: np.ndarray
) -> None:
    static = FaceAnalyzer(NoDynamicBatch(RuntimeSettings(inference_precision="f32")), model_store)
    assert static.net("embedding", (1, 3, 112, 112)) is not static.net("embedding", (6, 3, 112, 112))
    faces, reference = static.analyze(group_photo), analyzer.analyze(group_photo)
    assert len(faces) == len(reference) == 6
    for face, want in zip(faces, reference, strict=True):
        assert face.embedding is not None and want.embedding is not None
        assert float(face.embedding @ want.embedding) == pytest.approx(1.0, abs=1e-5)


class FailsOnOneFrameSize(FaceAnalyzer):
    """The real analyzer and models; frames of one size fail at one step of the pipeline's face stage:
    'face inputs' (their face-model batches cannot be made) or 'attributes' (after the face models ran)."""

    bad_hw: tuple[int, int] = (0, 0)
    step = ""

    def face_batches(
        self, frame_bgr: np.ndarray, detections: list[Any], aligned: list[np.ndarray]
    ) -> dict[str, tuple[CompiledNet, np.ndarray]]:
        if self.step == "face inputs" and frame_bgr.shape[:2] == self.bad_hw:
            raise RuntimeError("this frame's faces cannot be prepared")
        return super().face_batches(frame_bgr, detections, aligned)

    def attributes_of(self, frame_bgr: np.ndarray, detections: list[Any]) -> Any:
        if self.step == "attributes" and frame_bgr.shape[:2] == self.bad_hw:
            raise RuntimeError("this frame's attributes cannot be computed")
        return super().attributes_of(frame_bgr, detections)


@pytest.mark.parametrize("step", ["decode", "face inputs", "attributes"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_a_failing_frame_raises_once_and_every_other_frame_comes_out_in_order(
    runtime: Runtime,
    model_store: ModelStore,
    astronaut: np.ndarray,
    group_photo: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    depth: int,
) -> None:
    analyzer = FailsOnOneFrameSize(runtime, model_store, AnalyzerSettings(attributes=True))
    bad = np.vstack([astronaut, astronaut[-32:]])  # the astronaut, 32 rows taller: fails
    empty = np.zeros((200, 300, 3), np.uint8)
    frames = [astronaut, group_photo, bad, empty, group_photo, astronaut, bad, group_photo]
    expected = {tag: analyzer.analyze(frame) for tag, frame in enumerate(frames) if frame is not bad}
    analyzer.bad_hw, analyzer.step = bad.shape[:2], step
    if step == "decode":  # the detector's outputs of the bad frame cannot be decoded
        decode = detection.decode

        def failing_decode(outputs: Any, prepared: detection.DetectorInput, settings: Any) -> Any:
            if prepared.frame_hw == analyzer.bad_hw:
                raise RuntimeError("this frame's detections cannot be decoded")
            return decode(outputs, prepared, settings)

        monkeypatch.setattr(detection, "decode", failing_decode)
    created: list[Request] = []
    new_request = CompiledNet.request

    def counted(net: CompiledNet) -> Request:
        created.append(new_request(net))
        return created[-1]

    monkeypatch.setattr(CompiledNet, "request", counted)
    pipeline: FramePipeline[int] = FramePipeline(analyzer, depth)
    done: list[tuple[int, list[Face]]] = []
    raised: list[tuple[int, str]] = []  # (frames out when a failure was raised, its message)

    def collect(call: Callable[[], list[tuple[int, list[Face]]]]) -> None:
        try:
            done.extend(call())
        except RuntimeError as exc:
            raised.append((len(done), str(exc)))

    for tag, frame in enumerate(frames):
        collect(lambda tag=tag, frame=frame: pipeline.submit(tag, frame))  # type: ignore[misc]
        if tag == 4:
            collect(pipeline.poll)
    while pipeline.in_flight:
        collect(pipeline.drain)
    # each failed frame raised once, in its place: after the frames before it, before those after it
    assert [after for after, _ in raised] == [2, 5], raised
    assert all("cannot be" in message for _, message in raised)
    assert [tag for tag, _ in done] == [0, 1, 3, 4, 5, 7]
    for tag, faces in done:
        assert len(faces) == len(expected[tag])
        for got, want in zip(faces, expected[tag], strict=True):
            np.testing.assert_allclose(got.detection.box_xyxy, want.detection.box_xyxy, atol=1e-3)
            assert got.embedding is not None and want.embedding is not None
            assert float(got.embedding @ want.embedding) == pytest.approx(1.0, abs=1e-4)
            assert got.attributes == want.attributes
    # every request it started is back in its pool, none running
    pooled = [request for requests in pipeline.free.values() for request in requests]
    assert len(pooled) == len(created) and set(map(id, pooled)) == set(map(id, created))
    assert all(request.done() for request in pooled)


class CountingRuntime(Runtime):
    """The real runtime, recording the IR of every compilation."""

    def __init__(self, settings: RuntimeSettings) -> None:
        super().__init__(settings)
        self.compiled: list[Path] = []

    def compile(
        self, model_xml: Path, input_shape: Sequence[int] | None = None, **options: Any
    ) -> CompiledNet:
        self.compiled.append(Path(model_xml))
        return super().compile(model_xml, input_shape, **options)


def test_a_detection_switch_compiles_the_detection_model_only(
    model_store: ModelStore, astronaut: np.ndarray, group_photo: np.ndarray
) -> None:
    runtime = CountingRuntime(RuntimeSettings(inference_precision="f32"))
    analyzer = FaceAnalyzer(runtime, model_store, AnalyzerSettings(attributes=True))
    before = [analyzer.analyze(frame) for frame in (astronaut, group_photo)]
    runtime.compiled.clear()
    switched = analyzer.with_model(model_store.active("detection"))
    after = [switched.analyze(frame) for frame in (astronaut, group_photo)]
    detector = model_store.active("detection").xml_path
    assert runtime.compiled == [detector, detector]  # the two frame sizes, nothing else
    shared = [("embedding", (6, 3, 112, 112)), ("expression", (1, 64, 64, 1)), ("attributes", (6,))]
    for kind, shape in shared:
        assert switched.net(kind, shape) is analyzer.net(kind, shape)
    for got, want in zip(after, before, strict=True):
        assert [f.attributes for f in got] == [f.attributes for f in want]
        assert [f.embedding_model for f in got] == [f.embedding_model for f in want]


def test_switching_in_an_attributes_model_adds_the_attributes(
    analyzer: FaceAnalyzer, model_store: ModelStore, astronaut: np.ndarray
) -> None:
    assert analyzer.attributes_model is None
    switched = analyzer.with_model(model_store.active("attributes"))
    assert switched.attributes_model == model_store.active("attributes")
    assert switched.settings.attributes and not analyzer.settings.attributes
    face = only_face(switched, astronaut)
    assert face.attributes is not None and face.embedding is not None and face.expression is not None
    assert only_face(analyzer, astronaut).attributes is None
