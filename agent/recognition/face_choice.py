"""Choosing the face to enrol or check from an image: exactly one good face, or the largest one when asked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from facefleet.vision.faces import Face
from facefleet.vision.quality import QualityPolicy


@dataclass(frozen=True, eq=False)
class FaceChoice:
    """The chosen face and its embedding, or the reason there is none (set exactly when face is None)."""

    face: Face | None
    embedding: npt.NDArray[np.float32] | None = None
    reason: str | None = None


def choose_face(faces: list[Face], policy: QualityPolicy, largest: bool = False) -> FaceChoice:
    """The single face of an image that is good enough to use.

    largest: with several faces, take the one with the largest box instead of refusing the image."""
    if not faces:
        return FaceChoice(None, reason="no face found")
    if len(faces) > 1 and not largest:
        return FaceChoice(None, reason=f"{len(faces)} faces found; crop the image or use --largest-face")
    face = max(faces, key=lambda f: f.detection.size_wh[0] * f.detection.size_wh[1])
    problems = policy.rejections(face.quality)
    if problems:
        return FaceChoice(None, reason="; ".join(problems))
    if face.embedding is None:
        return FaceChoice(None, reason="no embedding model is active")
    return FaceChoice(face, face.embedding)
