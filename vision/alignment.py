"""5-point face alignment onto the ArcFace 112×112 template used by SFace."""

from __future__ import annotations

import math
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

    source_xy, target_xy: (N, 2) with N >= 2. Returns a (2, 3) affine matrix. A 2-D similarity is
    [[a, -b], [b, a]] plus a shift, linear in (a, b), so the least-squares fit has a closed form over the
    centred points: the transform of Umeyama's method without its SVD, and it never reflects. A handful
    of points is summed in plain Python, several times faster than numpy calls for a frame's faces.
    """
    src = np.asarray(source_xy, dtype=np.float64)
    dst = np.asarray(target_xy, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    count = len(src)
    src_points: list[list[float]] = src.tolist()
    dst_points: list[list[float]] = dst.tolist()
    src_x, src_y = (sum(axis) / count for axis in zip(*src_points, strict=True))
    dst_x, dst_y = (sum(axis) / count for axis in zip(*dst_points, strict=True))
    spread = dot = cross = 0.0
    for (x, y), (u, v) in zip(src_points, dst_points, strict=True):
        x, y, u, v = x - src_x, y - src_y, u - dst_x, v - dst_y
        spread += x * x + y * y
        dot += u * x + v * y
        cross += v * x - u * y
    if not math.isfinite(spread + dot + cross):
        raise ValueError("points are not all finite numbers; cannot align")
    if spread < 1e-12 * count:
        raise ValueError("source points are all at the same place; cannot align")
    a, b = dot / spread, cross / spread
    return np.array(
        [[a, -b, dst_x - a * src_x + b * src_y], [b, a, dst_y - b * src_x - a * src_y]], dtype=np.float64
    )


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
