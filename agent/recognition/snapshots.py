"""Face snapshots: the pixels of a track's best face, kept while the track lives (one per track), and made
into a link FaceSnapshot when it ends: the aligned 112×112 crop the embedding was computed from and a small
view of the frame around the face, both JPEG within the link's size limit, with the embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.link.events import MAX_SNAPSHOT_JPEG_BYTES, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.vision.alignment import align_face
from facefleet.vision.faces import Face

ReportPolicy = Literal["unknown", "all", "none"]
CONTEXT_MARGIN = 1.0
"""The context view reaches this many box widths (heights) beyond each side of the face box."""
MIN_JPEG_QUALITY = 30
"""The lowest JPEG quality tried before a context view is made smaller to fit the size limit."""
MIN_CONTEXT_PX = 16


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """The pixels of one face. aligned_bgr: (112, 112, 3) uint8, the crop the embedding was computed from;
    context_bgr: (h, w, 3) uint8, the frame around the face box, or None; embedding: (D,) float32,
    L2-normalised, of model_id; quality: the face's quality score in [0, 1]."""

    aligned_bgr: npt.NDArray[np.uint8]
    context_bgr: npt.NDArray[np.uint8] | None
    embedding: npt.NDArray[np.float32]
    model_id: str
    quality: float


@dataclass(frozen=True)
class SnapshotSettings:
    """context_px: longest side of the context view (0 = no view); JPEG qualities 30–100 of the crop and
    of the view."""

    context_px: int = 320
    jpeg_quality: int = 90
    context_jpeg_quality: int = 75


def face_crop(frame_bgr: npt.NDArray[np.uint8], face: Face, context_px: int) -> FaceCrop:
    """The crop of an analysed face of frame_bgr (H, W, 3) uint8, copied out of the frame; ValueError when
    the face has no embedding."""
    if face.embedding is None or face.embedding_model is None:
        raise ValueError("a face crop needs the face's embedding")
    aligned = align_face(frame_bgr, face.detection.landmarks_xy)
    context = context_view(frame_bgr, face.detection.box_xyxy, context_px) if context_px > 0 else None
    return FaceCrop(aligned, context, face.embedding.copy(), face.embedding_model, float(face.quality.score))


def context_view(
    frame_bgr: npt.NDArray[np.uint8], box_xyxy: npt.NDArray[np.float32], longest_px: int
) -> npt.NDArray[np.uint8]:
    """The frame around a face box, CONTEXT_MARGIN box sizes on each side (clipped to the frame), scaled
    down (never up) so that its longest side is at most longest_px: a (h, w, 3) uint8 copy."""
    height, width = frame_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    reach_x, reach_y = CONTEXT_MARGIN * max(x2 - x1, 1.0), CONTEXT_MARGIN * max(y2 - y1, 1.0)
    left = int(np.clip(np.floor(x1 - reach_x), 0, width - 1))
    top = int(np.clip(np.floor(y1 - reach_y), 0, height - 1))
    right = int(np.clip(np.ceil(x2 + reach_x), left + 1, width))
    bottom = int(np.clip(np.ceil(y2 + reach_y), top + 1, height))
    region = frame_bgr[top:bottom, left:right]
    scale = longest_px / max(region.shape[:2])
    if scale >= 1.0:
        return np.array(region, dtype=np.uint8)
    size_wh = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
    return np.asarray(cv2.resize(region, size_wh, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def encode_jpeg(
    image_bgr: npt.NDArray[np.uint8], quality: int, limit: int = MAX_SNAPSHOT_JPEG_BYTES, shrink: bool = True
) -> bytes:
    """A JPEG of at most `limit` bytes: at `quality`, else at lower qualities down to MIN_JPEG_QUALITY, else
    (when shrink) the same at 3/4 of the size, and so on. ValueError when nothing fits."""
    image = image_bgr
    while True:
        for level in [*range(quality, MIN_JPEG_QUALITY, -10), MIN_JPEG_QUALITY]:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, level])
            if ok and data.size <= limit:
                return bytes(data.tobytes())
        height, width = image.shape[:2]
        if not shrink or max(height, width) <= MIN_CONTEXT_PX:
            raise ValueError(f"a {width}×{height} image does not fit in a {limit}-byte JPEG")
        size_wh = (max(1, width * 3 // 4), max(1, height * 3 // 4))
        image = np.asarray(cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def crop_jpeg(crop: FaceCrop, settings: SnapshotSettings) -> bytes:
    """The aligned 112×112 crop as JPEG (at most MAX_SNAPSHOT_JPEG_BYTES; its size is kept)."""
    return encode_jpeg(crop.aligned_bgr, settings.jpeg_quality, shrink=False)


def snapshot_of(crop: FaceCrop, settings: SnapshotSettings, source: str) -> FaceSnapshot:
    """The link snapshot of a face: its crop and context view as JPEG, and its embedding marked with
    `source` (e.g. 'camera:front'). ValueError or LinkError when it cannot be encoded within the limits."""
    context = b""
    if crop.context_bgr is not None:
        context = encode_jpeg(crop.context_bgr, settings.context_jpeg_quality)
    embedding = Embedding(crop.model_id, crop.embedding, min(1.0, max(0.0, crop.quality)), source)
    return FaceSnapshot(crop_jpeg(crop, settings), context, embedding)


def reported(policy: ReportPolicy, known: bool) -> bool:
    """Whether the best face of a track that ended goes to the server: every track ('all'), those not
    recognised as an enrolled person ('unknown'; ambiguous and undecided faces vote for that), or none."""
    return policy == "all" or (policy == "unknown" and not known)
