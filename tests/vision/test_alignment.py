"""5-point similarity alignment: the closed-form fit and the warp onto the ArcFace template."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facefleet.vision.alignment import ARCFACE_TEMPLATE_XY, align_face, similarity_transform


def transform(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    angle = math.radians(angle_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (scale * points @ rotation.T + np.array(shift)).astype(np.float32)


@pytest.mark.parametrize(
    ("angle", "scale", "shift"), [(0, 1, (0, 0)), (25, 3.2, (400, 120)), (-170, 0.4, (-5, 9))]
)
def test_similarity_transform_inverts_a_known_similarity(
    angle: float, scale: float, shift: tuple[float, float]
) -> None:
    landmarks = transform(ARCFACE_TEMPLATE_XY, angle, scale, shift)
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE_XY)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE_XY, atol=1e-3)


def test_similarity_transform_never_reflects() -> None:
    mirrored = ARCFACE_TEMPLATE_XY * np.array([-1, 1], np.float32)
    matrix = similarity_transform(mirrored, ARCFACE_TEMPLATE_XY)
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (np.zeros((5, 2), np.float32), "same place"),
        (np.zeros((1, 2), np.float32), "N >= 2"),
        (np.zeros((5, 3), np.float32), "N, 2"),
        (np.array([[1, 2], [3, np.nan], [5, 6], [7, 8], [9, 1]], np.float32), "not all finite"),
        (np.array([[1, 2], [3, np.inf], [5, 6], [7, 8], [9, 1]], np.float32), "not all finite"),
    ],
)
def test_similarity_transform_rejects_degenerate_points(source: np.ndarray, message: str) -> None:
    target = ARCFACE_TEMPLATE_XY[: len(source)] if source.shape[1] == 2 else ARCFACE_TEMPLATE_XY
    with pytest.raises(ValueError, match=message):
        similarity_transform(source, target)


def test_align_face_moves_landmark_pixels_onto_the_template() -> None:
    frame = np.zeros((600, 800, 3), np.uint8)
    landmarks = transform(ARCFACE_TEMPLATE_XY, 30, 2.5, (300, 150))
    for x, y in landmarks:
        frame[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3] = 255
    aligned = align_face(frame, landmarks)
    assert aligned.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE_XY:
        assert aligned[round(y), round(x)].min() > 200
    assert aligned[5, 5].max() == 0


def umeyama(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Umeyama's SVD solution, the reference for the closed form (2, 3)."""
    src, dst = source.astype(np.float64), target.astype(np.float64)
    src_c, dst_c = src - src.mean(axis=0), dst - dst.mean(axis=0)
    u, singular, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    linear = float(np.trace(np.diag(singular) @ sign)) / ((src_c**2).sum() / len(src)) * (u @ sign @ vt)
    return np.hstack([linear, (dst.mean(axis=0) - linear @ src.mean(axis=0))[:, None]])


def test_similarity_transform_is_the_least_squares_fit_of_noisy_points() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        count = int(rng.integers(2, 9))
        source = rng.normal(0, rng.uniform(1, 400), (count, 2))
        target = transform(source, rng.uniform(-180, 180), rng.uniform(0.2, 4), (10, -3))
        target = target + rng.normal(0, 5, target.shape)
        np.testing.assert_allclose(similarity_transform(source, target), umeyama(source, target), atol=1e-6)
