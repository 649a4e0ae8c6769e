"""The face mesh on OpenVINO on real faces: where it lies, the yaw, a photo warped, blurred or lit
differently that never reads as shut eyes, and the blink in real footage that the eye patches see and the
mesh's lid points do not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facefleet.agent.recognition.liveness import REFERENCE_FRAMES, LivenessCheck, LivenessSettings, classify
from facefleet.vision.faces import Detection
from facefleet.vision.mesh import (
    INPUT_SIZE,
    LEFT_EYE,
    RIGHT_EYE,
    FaceMesh,
    compare,
    crop_transform,
    decode_mesh,
    eye_aspect_ratio,
    face_sample,
    head_yaw_deg,
)
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime
from tests.vision.liveness_media import BLINK_FRAMES, genuine_frames


@pytest.fixture(scope="module")
def face_mesh(runtime: Runtime, model_store: ModelStore) -> FaceMesh:
    return FaceMesh(runtime, model_store.active("landmarks"))


@pytest.fixture(scope="module")
def footage() -> list[np.ndarray]:
    return genuine_frames()


def largest(analyzer: FaceAnalyzer, frame: np.ndarray) -> Detection:
    return max(analyzer.detect(frame), key=lambda d: d.size_wh[0] * d.size_wh[1])


def test_the_crop_is_centred_on_the_box_with_the_eyes_level() -> None:
    box = np.array([100, 50, 200, 170], np.float32)
    eyes = np.array([[130, 90], [170, 110], [150, 120], [135, 140], [165, 150]], np.float32)
    transform = crop_transform(Detection(box, eyes, 0.9))
    centre = transform[:, :2] @ (150, 110) + transform[:, 2]
    right, left = (transform[:, :2] @ eye + transform[:, 2] for eye in eyes[:2])
    assert centre == pytest.approx((INPUT_SIZE / 2, INPUT_SIZE / 2))
    assert right[1] == pytest.approx(left[1]) and right[0] < left[0]
    assert np.linalg.norm(left - right) == pytest.approx(np.hypot(40, 20) * INPUT_SIZE / (1.5 * 120))
    raw = np.zeros((1, 1, 1, 1404), np.float32)
    raw.reshape(468, 3)[:, :2] = INPUT_SIZE / 2  # every point at the crop centre…
    mesh = decode_mesh({"points": raw, "face": np.full((1, 1, 1, 1), 4.0, np.float32)}, transform)
    assert mesh.points_xyz[:, :2] == pytest.approx(np.tile([150, 110], (468, 1)), abs=1e-3)  # …is the box's
    assert mesh.presence == pytest.approx(1 / (1 + np.exp(-4.0)))


def test_the_mesh_lies_on_the_face_with_open_eyes(
    analyzer: FaceAnalyzer, face_mesh: FaceMesh, astronaut: np.ndarray, group_photo: np.ndarray
) -> None:
    detection = largest(analyzer, astronaut)
    mesh = face_mesh(astronaut, detection)
    eye_distance = float(np.linalg.norm(detection.landmarks_xy[1] - detection.landmarks_xy[0]))
    for eye, landmark in ((RIGHT_EYE, detection.landmarks_xy[0]), (LEFT_EYE, detection.landmarks_xy[1])):
        centre = mesh.points_xyz[list(eye), :2].mean(axis=0)
        assert np.linalg.norm(centre - landmark) < 0.15 * eye_distance
    assert mesh.presence > 0.9
    assert np.all((eye_aspect_ratio(mesh.points_xyz) > 0.18) & (eye_aspect_ratio(mesh.points_xyz) < 0.45))
    for face in analyzer.detect(group_photo):  # six people, all with their eyes open
        mesh = face_mesh(group_photo, face)
        assert mesh.presence > 0.9 and np.all(eye_aspect_ratio(mesh.points_xyz) > 0.18)


@pytest.mark.parametrize(
    ("turn_deg", "shear", "height", "blur", "gain"),
    [
        (0, 0.0, 1.0, 0.0, 1.0),  # the same picture again
        (20, 0.0, 1.0, 0.0, 1.0),
        (0, 0.0, 0.8, 0.0, 1.0),  # tilted back: shorter
        (0, 0.2, 1.0, 0.0, 1.0),
        (20, 0.15, 0.75, 0.0, 1.0),
        (-15, 0.1, 0.85, 1.5, 1.0),
        (0, 0.0, 1.0, 2.5, 1.0),  # out of focus
        (0, 0.0, 1.0, 0.0, 1.4),  # brighter
        (10, 0.0, 0.9, 1.0, 0.7),
    ],
)
def test_a_photo_warped_blurred_or_lit_differently_never_reads_as_shut_eyes(
    analyzer: FaceAnalyzer,
    face_mesh: FaceMesh,
    astronaut: np.ndarray,
    turn_deg: float,
    shear: float,
    height: float,
    blur: float,
    gain: float,
) -> None:
    rows, cols = astronaut.shape[:2]
    warp = cv2.getRotationMatrix2D((cols / 2, rows / 2), turn_deg, 1.0)
    warp[:, :2] = warp[:, :2] @ np.array([[1.0, shear], [0.0, height]])
    warped = cv2.warpAffine(astronaut, warp, (cols, rows), borderValue=(128, 128, 128)).astype(np.float32)
    warped = cv2.GaussianBlur(warped, (0, 0), blur) if blur else warped
    warped = np.clip(warped * gain, 0, 255).astype(np.uint8)
    before = face_sample(astronaut, face_mesh(astronaut, largest(analyzer, astronaut)))
    after = face_sample(warped, face_mesh(warped, largest(analyzer, warped)))
    change = compare(after, [before, before, before])
    assert classify(change, after.presence) != "closed"
    if (turn_deg, shear, height, blur, gain) == (0, 0.0, 1.0, 0.0, 1.0):
        assert classify(change, after.presence) == "open"


def test_yaw_turns_sign_in_a_mirror(
    analyzer: FaceAnalyzer, face_mesh: FaceMesh, group_photo: np.ndarray
) -> None:
    yaws = []
    mirror = np.ascontiguousarray(group_photo[:, ::-1])
    for detection in analyzer.detect(group_photo):
        right = float(detection.box_xyxy[2])
        mirrored = [d for d in analyzer.detect(mirror) if abs(d.box_xyxy[0] - (mirror.shape[1] - right)) < 10]
        yaws.append((head_yaw_deg(face_mesh(group_photo, detection).points_xyz), mirrored[0]))
    turned = [(yaw, face) for yaw, face in yaws if abs(yaw) > 15]
    assert len(turned) >= 2 and any(abs(yaw) < 5 for yaw, _ in yaws)  # some turned, some facing the camera
    for yaw, face in turned:  # the mesh is not quite symmetric: the same turn within ±40 %
        assert 0.6 < -head_yaw_deg(face_mesh(mirror, face).points_xyz) / yaw < 1.4


def test_a_real_blink_changes_the_eyes_and_nothing_else(
    analyzer: FaceAnalyzer, face_mesh: FaceMesh, footage: list[np.ndarray]
) -> None:
    samples, aspect = [], []
    for frame in footage:
        mesh = face_mesh(frame, largest(analyzer, frame))
        samples.append(face_sample(frame, mesh))
        aspect.append(eye_aspect_ratio(mesh.points_xyz).mean())
    kinds, references = [], []  # each frame against the recent ones, as the door's liveness check does
    for index, sample in enumerate(samples):
        kind = None
        if len(references) >= 3:
            kind = classify(compare(sample, references[-REFERENCE_FRAMES:]), sample.presence)
            kinds.append((index, kind))
        if kind != "closed":
            references.append(sample)
    check = LivenessCheck(LivenessSettings("blink"))
    passed_at = None
    for index, sample in enumerate(samples):
        check.observe("man", sample, index / 30)
        if passed_at is None and check.verdict("man", index / 30).state == "passed":
            passed_at = index
    closed = [index for index, kind in kinds if kind == "closed"]
    assert closed and set(closed) <= set(BLINK_FRAMES)
    assert all(kind == "open" for index, kind in kinds if abs(index - 26.5) > 5)
    assert passed_at is not None and max(BLINK_FRAMES) <= passed_at <= max(BLINK_FRAMES) + 3
    # the mesh's own lid points barely close: why the eyes are read from the pixels
    shut = min(aspect[i] for i in BLINK_FRAMES)
    assert shut > 0.85 * float(np.median(aspect))
