"""Face samples drawn in numpy, for liveness logic without models: a face's texture is fixed by its seed, its
eyes are open (a dark iris under the lid line) or shut (skin with a lash line), and a frame adds sensor noise.
The real mesh and real footage are exercised in tests/vision/test_mesh.py and the door replay tests."""

from __future__ import annotations

import cv2
import numpy as np

from facefleet.vision.mesh import EYE_PATCH_WH, RIGID_POINTS, FaceSample


def face_sample(
    *,
    closed: bool = False,
    face: int = 0,
    frame: int = 0,
    yaw_deg: float = 0.0,
    blur: float = 0.0,
    scale: float = 1.0,
    shape_shift: float = 0.0,
    presence: float = 1.0,
) -> FaceSample:
    """One frame of face `face`: eyes shut when `closed`; blur (Gaussian sigma, px) over the whole sample;
    scale multiplies the eye distance; shape_shift moves the rigid points (face-frame units)."""
    texture = np.random.default_rng(face)
    noise = np.random.default_rng(1000 + frame)
    width, height = EYE_PATCH_WH
    eyes = np.stack([_eye(texture, closed, width, height) for _ in range(2)])
    brows = 140 + texture.normal(0, 25, (14, 64))
    nose = 160 + texture.normal(0, 20, (40, 14))
    shape = texture.uniform(-0.6, 1.2, (len(RIGID_POINTS), 2))
    patches = [p + noise.normal(0, 1.5, p.shape) for p in (eyes, brows, nose)]
    if blur:
        patches = [cv2.GaussianBlur(p.astype(np.float32), (0, 0), blur) for p in patches]
    eyes, brows, nose = (np.asarray(p, dtype=np.float32) for p in patches)
    return FaceSample(
        eyes=eyes,
        brows=brows,
        nose=nose,
        shape_uv=(shape + shape_shift).astype(np.float32),
        eye_distance_px=60.0 * scale,
        yaw_deg=yaw_deg,
        presence=presence,
    )


def _eye(texture: np.random.Generator, closed: bool, width: int, height: int) -> np.ndarray:
    skin = 175 + texture.normal(0, 6, (height, width))
    y, x = np.mgrid[0:height, 0:width]
    if closed:
        skin[height // 2 : height // 2 + 2, width // 5 : 4 * width // 5] = 60  # lashes of the shut lid
        return skin
    skin[(x - width / 2) ** 2 + (y - height / 2) ** 2 < 36] = 40  # iris and pupil
    skin[height // 2 - 5, width // 5 : 4 * width // 5] = 70  # upper lid line
    return skin
