"""5-point face alignment onto the ArcFace 112×112 template used by SFace."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

ARCFACE_TEMPLATE_XY = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
"""(5, 2) landmark positions in a 112×112 aligned crop, in LANDMARK_NAMES order."""

ALIGNED_SIZE = 112


def similarity_transform(
    source_xy: npt.NDArray[np.floating[Any]], target_xy: npt.NDArray[np.floating[Any]]
) -> npt.NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping source onto target.

    Umeyama's method; source_xy, target_xy: (N, 2) with N >= 2. Returns a (2, 3) affine matrix.
    """
    src = np.asarray(source_xy, dtype=np.float64)
    dst = np.asarray(target_xy, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("source points are all at the same place; cannot align")
    cov = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign)) / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(
    frame_bgr: npt.NDArray[np.uint8], landmarks_xy: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8]:
    """Warp the face with landmarks_xy (5, 2) out of frame_bgr (H, W, 3) into a (112, 112, 3) BGR crop."""
    matrix = similarity_transform(landmarks_xy, ARCFACE_TEMPLATE_XY)
    aligned = cv2.warpAffine(
        frame_bgr,
        matrix,
        (ALIGNED_SIZE, ALIGNED_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return np.asarray(aligned, dtype=np.uint8)
