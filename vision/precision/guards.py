"""Accuracy guards of a candidate precision against f32 outputs of the same float model, per kind of
output: class probabilities, regressed values, and face detections. Embeddings use the quantizer's guard
(facefleet.vision.models.quantize.compare_embeddings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from facefleet.vision.faces import Detection

MIN_TOP1_AGREEMENT = 0.98
"""Classification: share of inputs whose most probable class stays the same."""
MAX_PROBABILITY_DIFFERENCE = 0.05
"""Classification: largest change of any class probability on any input."""
MAX_YEARS_DIFFERENCE = 1.0
"""Age estimates: largest change in years on any face."""
MIN_BOX_IOU = 0.9
"""Detection: smallest overlap (IoU) of a face's box with its f32 box."""
MAX_LANDMARK_SHIFT_PX = 2.0
"""Detection: largest move of a landmark, in px at the model's input scale."""


@dataclass(frozen=True)
class GuardResult:
    """What a guard measured (figures by name), whether every limit held, and the figures in one line."""

    passed: bool
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary, "figures": self.figures}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GuardResult:
        return cls(bool(data["passed"]), str(data["summary"]), dict(data.get("figures", {})))


REFERENCE = GuardResult(True, "the reference (f32 outputs of the float model)")


def classification(
    reference: npt.NDArray[np.float32], candidate: npt.NDArray[np.float32], what: str = "class"
) -> GuardResult:
    """Probabilities (N, C) of the same N inputs: top-1 agreement ≥ MIN_TOP1_AGREEMENT and every
    probability within MAX_PROBABILITY_DIFFERENCE. No inputs: refused (nothing was compared)."""
    if len(reference) == 0:
        return GuardResult(False, f"{what}: no inputs to compare (no sample faces)", {"inputs": 0})
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    difference = float(np.max(np.abs(reference - candidate)))
    passed = agreement >= MIN_TOP1_AGREEMENT and difference <= MAX_PROBABILITY_DIFFERENCE
    summary = (
        f"{what} top-1 agreement {agreement:.3f} (min {MIN_TOP1_AGREEMENT}) on {len(reference)} inputs, "
        f"max probability difference {difference:.4f} (max {MAX_PROBABILITY_DIFFERENCE})"
    )
    figures = {"inputs": len(reference), f"{what}_top1_agreement": round(agreement, 4)}
    figures[f"{what}_max_probability_difference"] = round(difference, 5)
    return GuardResult(passed, summary, figures)


def years(reference: Sequence[float], candidate: Sequence[float]) -> GuardResult:
    """Age estimates of the same faces: every one within MAX_YEARS_DIFFERENCE years. No faces: refused."""
    if len(reference) == 0:
        return GuardResult(False, "age: no faces to compare (no sample faces)", {"age_faces": 0})
    difference = float(np.max(np.abs(np.subtract(reference, candidate))))
    passed = difference <= MAX_YEARS_DIFFERENCE
    summary = f"age max difference {difference:.2f} years (max {MAX_YEARS_DIFFERENCE})"
    return GuardResult(passed, summary, {"age_max_years_difference": round(difference, 3)})


def detections(
    reference: Sequence[Sequence[Detection]],
    candidate: Sequence[Sequence[Detection]],
    scales: Sequence[float],
) -> GuardResult:
    """Detections of the same frames (frame px; scales: model input px per frame px): the same number of
    faces in each frame, each f32 face's best-overlapping candidate box at IoU ≥ MIN_BOX_IOU and its
    landmarks within MAX_LANDMARK_SHIFT_PX at the input scale. No f32 face in any frame: refused (nothing
    was compared)."""
    count_changes = 0
    min_iou, max_shift = 1.0, 0.0
    faces = 0
    for ref_faces, cand_faces, scale in zip(reference, candidate, scales, strict=True):
        faces += len(ref_faces)
        if len(ref_faces) != len(cand_faces):
            count_changes += 1
        for face in ref_faces:
            if not cand_faces:
                min_iou = 0.0
                continue
            overlaps = [_iou(face.box_xyxy, other.box_xyxy) for other in cand_faces]
            best = int(np.argmax(overlaps))
            min_iou = min(min_iou, overlaps[best])
            shift = np.linalg.norm((face.landmarks_xy - cand_faces[best].landmarks_xy) * scale, axis=1)
            max_shift = max(max_shift, float(shift.max()))
    passed = count_changes == 0 and min_iou >= MIN_BOX_IOU and max_shift <= MAX_LANDMARK_SHIFT_PX
    summary = (
        f"{faces} faces in {len(reference)} frames: face count changed in {count_changes} frame(s), "
        f"min box IoU {min_iou:.3f} (min {MIN_BOX_IOU}), max landmark shift {max_shift:.2f} px at input "
        f"scale (max {MAX_LANDMARK_SHIFT_PX})"
    )
    if faces == 0:
        passed, summary = False, f"no faces to compare (no sample faces): {summary}"
    figures = {
        "frames": len(reference),
        "faces": faces,
        "count_changes": count_changes,
        "min_box_iou": round(min_iou, 4),
        "max_landmark_shift_px": round(max_shift, 3),
    }
    return GuardResult(passed, summary, figures)


def combined(results: Sequence[GuardResult]) -> GuardResult:
    """Several guards on one model (e.g. gender and age): passed when all pass."""
    figures: dict[str, Any] = {}
    for result in results:
        figures.update(result.figures)
    return GuardResult(all(r.passed for r in results), "; ".join(r.summary for r in results), figures)


def _iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(right - left)) * max(0.0, float(bottom - top))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0
