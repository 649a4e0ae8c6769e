"""Result types of the vision pipeline: small frozen dataclasses with array shapes in their names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from facefleet.vision.attributes import Attributes

FloatArray = npt.NDArray[np.float32]

LANDMARK_NAMES = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")
"""Order of the 5 landmarks, as YuNet emits them (the subject's right eye comes first)."""

EXPRESSION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The 7 FER2013 classes in the order of the expression model's output."""


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected face in frame pixel coordinates.

    box_xyxy: (4,) float32 left, top, right, bottom; landmarks_xy: (5, 2) float32 in LANDMARK_NAMES order.
    """

    box_xyxy: FloatArray
    landmarks_xy: FloatArray
    score: float

    def __post_init__(self) -> None:
        if self.box_xyxy.shape != (4,) or self.landmarks_xy.shape != (5, 2):
            raise ValueError(
                f"Detection needs box_xyxy (4,) and landmarks_xy (5, 2), got "
                f"{self.box_xyxy.shape} and {self.landmarks_xy.shape}"
            )

    @property
    def size_wh(self) -> tuple[float, float]:
        x1, y1, x2, y2 = (float(v) for v in self.box_xyxy)
        return x2 - x1, y2 - y1


@dataclass(frozen=True)
class Quality:
    """How usable a face is for recognition.

    face_px: shorter side of the box in pixels; sharpness: variance of the Laplacian of the aligned
    112×112 grey crop; yaw, pitch: landmark asymmetry in [-1, 1] (0 = frontal); roll_deg: eye-line angle;
    score: overall quality in [0, 1].
    """

    face_px: float
    sharpness: float
    yaw: float
    pitch: float
    roll_deg: float
    score: float


@dataclass(frozen=True)
class Expression:
    """Facial expression: the most probable FER class and the probabilities of all 7."""

    label: str
    probabilities: dict[str, float]

    @classmethod
    def from_probabilities(cls, probabilities: FloatArray) -> Expression:
        """probabilities: (7,) in EXPRESSION_LABELS order, summing to 1."""
        if probabilities.shape != (len(EXPRESSION_LABELS),):
            raise ValueError(
                f"expression needs {len(EXPRESSION_LABELS)} probabilities, got {probabilities.shape}"
            )
        index = int(np.argmax(probabilities))
        return cls(
            label=EXPRESSION_LABELS[index],
            probabilities={name: float(p) for name, p in zip(EXPRESSION_LABELS, probabilities, strict=True)},
        )


@dataclass(frozen=True, eq=False)
class Face:
    """A fully analysed face. embedding: (D,) float32, L2-normalised, or None when it was not computed."""

    detection: Detection
    quality: Quality
    embedding: FloatArray | None = None
    expression: Expression | None = None
    embedding_model: str | None = None
    attributes: Attributes | None = None

    def to_json(self, include_embedding: bool = False) -> dict[str, object]:
        """JSON-ready description: box and landmarks in frame pixels, quality, expression, embedding."""
        det = self.detection
        result: dict[str, object] = {
            "box_xyxy": [round(float(v), 1) for v in det.box_xyxy],
            "score": round(det.score, 4),
            "landmarks_xy": {
                name: [round(float(x), 1), round(float(y), 1)]
                for name, (x, y) in zip(LANDMARK_NAMES, det.landmarks_xy, strict=True)
            },
            "quality": {key: round(float(value), 3) for key, value in vars(self.quality).items()},
            "expression": None,
            "embedding_model": self.embedding_model,
        }
        if self.expression is not None:
            result["expression"] = {
                "label": self.expression.label,
                "probabilities": {k: round(v, 4) for k, v in self.expression.probabilities.items()},
            }
        if self.attributes is not None:
            result["attributes"] = self.attributes.to_json()
        if include_embedding and self.embedding is not None:
            result["embedding"] = [round(float(v), 6) for v in self.embedding]
        return result
