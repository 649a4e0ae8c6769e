"""Quality from landmarks, sharpness and size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facefleet.vision.alignment import ARCFACE_TEMPLATE_XY
from facefleet.vision.faces import Detection, Quality
from facefleet.vision.quality import QualityPolicy, assess, pose_from_landmarks, sharpness


def test_template_landmarks_are_frontal() -> None:
    yaw, pitch, roll = pose_from_landmarks(ARCFACE_TEMPLATE_XY)
    assert abs(yaw) < 0.05 and abs(pitch) < 0.15 and abs(roll) < 1


def test_nose_towards_one_eye_is_yaw_with_a_sign() -> None:
    turned = ARCFACE_TEMPLATE_XY.copy()
    turned[2, 0] = ARCFACE_TEMPLATE_XY[0, 0] + 5  # nose near the right eye
    yaw, _, _ = pose_from_landmarks(turned)
    assert yaw < -0.6
    turned[2, 0] = ARCFACE_TEMPLATE_XY[1, 0] - 5
    assert pose_from_landmarks(turned)[0] > 0.6


def test_nose_near_the_eye_line_is_pitch() -> None:
    tilted = ARCFACE_TEMPLATE_XY.copy()
    tilted[2, 1] = ARCFACE_TEMPLATE_XY[0, 1] + 3
    assert pose_from_landmarks(tilted)[1] < -0.6


def test_roll_is_the_eye_line_angle() -> None:
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    _, _, roll = pose_from_landmarks(ARCFACE_TEMPLATE_XY @ rotation.T)
    assert roll == pytest.approx(20, abs=0.5)


def test_blur_lowers_sharpness(astronaut: np.ndarray) -> None:
    crop = np.ascontiguousarray(cv2.resize(astronaut[60:180, 170:280], (112, 112)))
    assert sharpness(cv2.GaussianBlur(crop, (9, 9), 4)) < sharpness(crop) / 4


def test_assess_combines_size_pose_and_sharpness(astronaut: np.ndarray) -> None:
    crop = np.ascontiguousarray(cv2.resize(astronaut[60:180, 170:280], (112, 112)))
    detection = Detection(np.array([0, 0, 100, 120], np.float32), ARCFACE_TEMPLATE_XY * 0.9, score=0.9)
    good = assess(detection, crop)
    blurred = assess(detection, cv2.GaussianBlur(crop, (15, 15), 8))
    small = assess(Detection(np.array([0, 0, 20, 24], np.float32), ARCFACE_TEMPLATE_XY * 0.2, 0.9), crop)
    assert good.face_px == 100
    assert blurred.score < good.score and small.score < good.score
    assert 0 < good.score <= 1


def quality(**changes: float) -> Quality:
    base = {"face_px": 100.0, "sharpness": 200.0, "yaw": 0.0, "pitch": 0.0, "roll_deg": 0.0, "score": 0.9}
    return Quality(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"face_px": 20.0}, "too small"),
        ({"sharpness": 2.0}, "too blurred"),
        ({"yaw": -0.9}, "sideways"),
        ({"pitch": 0.8}, "tilted"),
        ({"score": 0.1}, "overall quality"),
    ],
)
def test_policy_names_each_shortfall(changes: dict[str, float], reason: str | None) -> None:
    rejections = QualityPolicy().rejections(quality(**changes))
    if reason is None:
        assert rejections == []
    else:
        assert len(rejections) == 1 and reason in rejections[0]
