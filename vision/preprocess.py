"""Input tensors and output post-processing for the embedding and expression models (pure numpy/cv2)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

EXPRESSION_SIZE = 64
EXPRESSION_BOX_PADDING = 0.1


def embedding_input(aligned_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """SFace input from a (112, 112, 3) BGR aligned crop: (3, 112, 112) float32 RGB 0–255."""
    tensor: npt.NDArray[np.float32] = np.ascontiguousarray(
        aligned_bgr[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32
    )
    return tensor


def normalise_embeddings(raw: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """L2-normalise raw (N, D) model outputs row by row; a zero row stays zero."""
    raw = raw.reshape(raw.shape[0], -1).astype(np.float32)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    return unit


def expression_input(
    frame_bgr: npt.NDArray[np.uint8], box_xyxy: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """mini-Xception input, cut as the fer package cuts a face: (64, 64, 1) float32 grey in [-1, 1] of a
    square about the box's centre, its side the box's longer side padded by 10 % each way (the face keeps its
    shape: YuNet's boxes are taller than wide), resized linearly. Parts of the square outside the frame repeat
    the frame's edge, so a face at the edge stays centred; a box wholly outside gives a black input."""
    height, width = frame_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + 2 * EXPRESSION_BOX_PADDING)))
    left, top = round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2)
    right, bottom = left + side, top + side
    if right <= 0 or bottom <= 0 or left >= width or top >= height:  # wholly outside the frame
        return np.full((EXPRESSION_SIZE, EXPRESSION_SIZE, 1), -1.0, dtype=np.float32)
    inside = frame_bgr[max(0, top) : min(height, bottom), max(0, left) : min(width, right)]
    grey = cv2.cvtColor(inside, cv2.COLOR_BGR2GRAY)
    outside = (max(0, -top), max(0, bottom - height), max(0, -left), max(0, right - width))
    if any(outside):
        grey = cv2.copyMakeBorder(grey, *outside, cv2.BORDER_REPLICATE)
    grey = cv2.resize(grey, (EXPRESSION_SIZE, EXPRESSION_SIZE), interpolation=cv2.INTER_LINEAR)
    tensor: npt.NDArray[np.float32] = ((grey.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, :, None]
    return tensor


def softmax_if_needed(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Return scores (N, C) as probabilities: unchanged when each row already sums to 1."""
    scores = scores.astype(np.float32)
    sums = scores.sum(axis=1, keepdims=True)
    if np.all(scores >= 0) and np.allclose(sums, 1.0, atol=1e-3):
        normalised: npt.NDArray[np.float32] = scores / sums
        return normalised
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    result: npt.NDArray[np.float32] = shifted / shifted.sum(axis=1, keepdims=True)
    return result
