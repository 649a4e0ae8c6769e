"""YuNet face detection: input preparation and output decoding in numpy.

YuNet predicts, on grids of strides 8, 16 and 32, a class score, an objectness score, a box
(centre offset and log size) and 5 landmarks per cell. The network takes a BGR float image of any
height and width that are multiples of 32; frames are scaled (aspect kept) and padded bottom/right, and
given as uint8 (1, H, W, 3), which the compiled model converts (Runtime.compile's image_input). The
compiled model also scores every cell and joins the three grids (JOINED_OUTPUTS), so one frame's outputs
are three arrays over all cells, stride 8's first, each grid row by row.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.vision.faces import Detection
from facefleet.vision.runtime import CompiledNet, JoinedOutputs, Precision, Runtime

STRIDES = (8, 16, 32)
OUTPUT_WIDTHS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
"""Values per grid cell of each kind of output: class score, objectness score, box, 5 landmarks."""
OUTPUT_NAMES = tuple(f"{kind}_{s}" for kind in OUTPUT_WIDTHS for s in STRIDES)
JOINED_OUTPUTS = JoinedOutputs(
    score_pairs=tuple((f"cls_{s}", f"obj_{s}") for s in STRIDES),
    concatenated=tuple(
        (kind, OUTPUT_WIDTHS[kind], tuple(f"{kind}_{s}" for s in STRIDES)) for kind in ("bbox", "kps")
    ),
)
"""How detectors are compiled: `score` (1, cells, 1), the geometric mean of class and objectness scores;
`bbox` (1, cells, 4), centre offset and log size in cells; `kps` (1, cells, 10), 5 landmarks in cells."""


@dataclass(frozen=True)
class DetectorInput:
    """A frame prepared for YuNet. tensor: (1, H, W, 3) uint8 BGR, padded; scale: input px per frame px."""

    tensor: npt.NDArray[np.uint8]
    scale: float
    frame_hw: tuple[int, int]

    @property
    def padded_hw(self) -> tuple[int, int]:
        """The input's (H, W) in px, multiples of 32."""
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])


@dataclass(frozen=True)
class DetectorSettings:
    """long_side: frames are scaled down so their longest side is at most this (px); upscale: also scale
    smaller frames up to it (finds smaller faces in small images, at a higher cost); thresholds in [0, 1].
    landmark_vote_iou: a face's landmarks are the score-weighted mean of those of every cell above the score
    threshold whose box overlaps the face's by at least this IoU (1.0: the best cell's alone)."""

    long_side: int = 640
    upscale: bool = False
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    max_faces: int = 100
    landmark_vote_iou: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.landmark_vote_iou <= 1.0:  # at 0, cells of every face in the frame would vote
            raise ValueError(f"landmark_vote_iou must be in (0, 1], got {self.landmark_vote_iou}")


def input_size(
    frame_hw: tuple[int, int], long_side: int, upscale: bool = False
) -> tuple[float, tuple[int, int]]:
    """Scale factor and padded (H, W), both multiples of 32, for a frame of size frame_hw."""
    height, width = frame_hw
    if height < 1 or width < 1:
        raise ValueError(f"frame must be at least 1×1 pixels, got {width}×{height}")
    scale = long_side / max(height, width)
    if not upscale:
        scale = min(scale, 1.0)
    scaled_h = max(1, round(height * scale))
    scaled_w = max(1, round(width * scale))
    padded = (-(-scaled_h // 32) * 32, -(-scaled_w // 32) * 32)
    return scale, padded


def compile_detector(
    runtime: Runtime,
    model_xml: Path,
    input_shape: Sequence[int] | None = None,
    precision: Precision | None = None,
) -> CompiledNet:
    """A detector compiled as every caller runs it: the frame's uint8 (1, H, W, 3) in (input_shape is that
    image's), its JOINED_OUTPUTS out; precision: its inference precision hint (default: the runtime's)."""
    return runtime.compile(
        model_xml, input_shape=input_shape, precision=precision, image_input=True, joined=JOINED_OUTPUTS
    )


def prepare(frame_bgr: npt.NDArray[np.uint8], settings: DetectorSettings) -> DetectorInput:
    """Scale frame_bgr (H, W, 3) uint8 so its long side is settings.long_side and pad it (zeros)."""
    height, width = frame_bgr.shape[:2]
    scale, (pad_h, pad_w) = input_size((height, width), settings.long_side, settings.upscale)
    scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
    tensor = np.zeros((1, pad_h, pad_w, 3), dtype=np.uint8)
    placed = tensor[0, :scaled_h, :scaled_w]
    if (scaled_w, scaled_h) == (width, height):
        placed[...] = frame_bgr
    else:  # scaled straight into the padded input, saving a copy of the frame
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        cv2.resize(frame_bgr, (scaled_w, scaled_h), dst=placed, interpolation=interpolation)
    return DetectorInput(tensor=tensor, scale=scale, frame_hw=(height, width))


def decode(
    outputs: Mapping[str, npt.NDArray[np.float32]],
    prepared: DetectorInput,
    settings: DetectorSettings,
) -> list[Detection]:
    """Turn a detector's joined outputs (JOINED_OUTPUTS, one row per cell) into frame-space detections."""
    grid_xy, strides = _cells(prepared.padded_hw)
    cells = len(strides)
    score = _flat(outputs, "score", cells, 1)[:, 0]
    keep = np.nonzero(score >= settings.score_threshold)[0]
    if keep.size == 0:
        return []
    cell_xy, stride = grid_xy[keep], strides[keep]
    bbox = _flat(outputs, "bbox", cells, 4)[keep]
    kps = _flat(outputs, "kps", cells, 10)[keep].reshape(-1, 5, 2)
    centre = (cell_xy + bbox[:, :2]) * stride
    size = np.exp(np.minimum(bbox[:, 2:], 10.0)) * stride
    corners = np.concatenate([centre - size / 2, centre + size / 2], axis=1) / prepared.scale
    all_boxes = corners.astype(np.float32, copy=False)
    all_landmarks = (cell_xy[:, None, :] + kps) * stride[:, None, :] / prepared.scale
    all_scores = score[keep]
    height, width = prepared.frame_hw
    all_boxes[:, [0, 2]] = np.clip(all_boxes[:, [0, 2]], 0, width)
    all_boxes[:, [1, 3]] = np.clip(all_boxes[:, [1, 3]], 0, height)
    chosen = [
        i
        for i in nms(all_boxes, all_scores, settings.nms_threshold)[: settings.max_faces]
        if all_boxes[i, 2] > all_boxes[i, 0] and all_boxes[i, 3] > all_boxes[i, 1]
    ]
    landmarks = voted_landmarks(all_boxes, all_scores, all_landmarks, chosen, settings.landmark_vote_iou)
    return [
        Detection(
            box_xyxy=all_boxes[i].astype(np.float32),
            landmarks_xy=landmarks[k],
            score=float(all_scores[i]),
        )
        for k, i in enumerate(chosen)
    ]


def voted_landmarks(
    boxes_xyxy: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    landmarks_xy: npt.NDArray[np.float32],
    kept: Sequence[int],
    iou_threshold: float,
) -> npt.NDArray[np.float32]:
    """Landmarks (K, 5, 2) of each kept candidate: the score-weighted mean of the landmarks (N, 5, 2) of
    the candidates that belong to it, itself included. A candidate belongs to the kept box it overlaps most,
    if by at least iou_threshold; a kept box belongs to itself, so two faces never vote for each other, and a
    cell between two faces votes for one of them.

    Neighbouring cells of one face each predict its landmarks, several pixels apart; one cell's prediction
    moves with where the face falls on the grid, and the embedding with it. Their mean moves less (figures in
    the README's "Models"), at no inference cost. A face without weight (scores of 0) keeps its own."""
    rows = list(kept)
    own = landmarks_xy[rows].astype(np.float32)
    if not rows or iou_threshold >= 1.0:
        return own
    overlap = iou(boxes_xyxy[rows], boxes_xyxy)  # (K, N)
    belongs = (overlap >= iou_threshold) & (overlap.argmax(axis=0) == np.arange(len(rows))[:, None])
    belongs[:, rows] = np.eye(len(rows), dtype=bool)
    weights = belongs * scores
    totals = weights.sum(axis=1, keepdims=True)
    voted = weights @ landmarks_xy.reshape(len(scores), 10) / np.where(totals > 0, totals, 1.0)
    chosen: npt.NDArray[np.float32] = np.where(totals[:, :, None] > 0, voted.reshape(-1, 5, 2), own).astype(
        np.float32
    )
    return chosen


def iou(boxes_a: npt.NDArray[np.float32], boxes_b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Intersection over union of every box of boxes_a (K, 4) with every box of boxes_b (N, 4): (K, N)."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0, None), axis=1)
    union = np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    overlap: npt.NDArray[np.float32] = (inter / union).astype(np.float32)
    return overlap


@functools.lru_cache(maxsize=16)
def _cells(padded_hw: tuple[int, int]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Every cell of the three grids for a padded input, in the joined outputs' order: its (x, y) in the
    grid, (cells, 2), and its stride in px, (cells, 1)."""
    grids, strides = [], []
    for stride in STRIDES:
        rows, cols = padded_hw[0] // stride, padded_hw[1] // stride
        index = np.arange(rows * cols)
        grids.append(np.stack([index % cols, index // cols], axis=1))
        strides.append(np.full((rows * cols, 1), stride))
    grid_xy = np.concatenate(grids).astype(np.float32)
    grid_xy.flags.writeable = False
    stride_px = np.concatenate(strides).astype(np.float32)
    stride_px.flags.writeable = False
    return grid_xy, stride_px


def nms(
    boxes_xyxy: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou_threshold: float
) -> list[int]:
    """Greedy non-maximum suppression. boxes_xyxy: (N, 4); scores: (N,). Returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        kept.append(best)
        order = rest[iou(boxes_xyxy[best : best + 1], boxes_xyxy[rest])[0] <= iou_threshold]
    return kept


def _flat(
    outputs: Mapping[str, npt.NDArray[np.float32]], name: str, cells: int, width: int
) -> npt.NDArray[np.float32]:
    try:
        array = np.asarray(outputs[name], dtype=np.float32)
    except KeyError:
        raise KeyError(f"detector output '{name}' is missing; the model has {sorted(outputs)}") from None
    if array.size != cells * width:
        raise ValueError(f"detector output '{name}' has {array.size} values, expected {cells}×{width}")
    return array.reshape(cells, width)
