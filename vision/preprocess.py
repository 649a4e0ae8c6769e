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
    """mini-Xception input from the face box padded by 10%: (64, 64, 1) float32 grey in [-1, 1]."""
    height, width = frame_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    pad_x, pad_y = (x2 - x1) * EXPRESSION_BOX_PADDING, (y2 - y1) * EXPRESSION_BOX_PADDING
    left, top = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
    right, bottom = min(width, int(np.ceil(x2 + pad_x))), min(height, int(np.ceil(y2 + pad_y)))
    if right <= left or bottom <= top:
        crop = np.zeros((EXPRESSION_SIZE, EXPRESSION_SIZE, 3), dtype=np.uint8)
    else:
        crop = frame_bgr[top:bottom, left:right]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    grey = cv2.resize(grey, (EXPRESSION_SIZE, EXPRESSION_SIZE), interpolation=cv2.INTER_AREA)
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
