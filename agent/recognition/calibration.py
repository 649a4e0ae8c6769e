"""Genuine and impostor score distributions from labelled embeddings, for choosing a threshold.

Leave-one-out: each sample is a probe against the gallery of every person without that sample. A person's
score is either their best sample ("best") or the cosine to the mean of their samples ("template")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from facefleet.agent.recognition.gallery import Scoring
from facefleet.agent.recognition.matching import Calibration, calibrate_threshold

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ScoreSets:
    """Genuine (same person) and impostor (other person) scores of one scoring method."""

    scoring: Scoring
    genuine: FloatArray
    impostor: FloatArray


def leave_one_out_scores(samples: Mapping[str, FloatArray], scoring: Scoring) -> ScoreSets:
    """samples: person → (n, D) unit embeddings; genuine scores come from persons with ≥ 2 samples."""
    genuine: list[float] = []
    impostor: list[float] = []
    people = list(samples)
    for person in people:
        for index, probe in enumerate(samples[person]):
            for other in people:
                gallery = samples[other]
                if other == person:
                    gallery = np.delete(gallery, index, axis=0)
                    if len(gallery) == 0:
                        continue
                score = _person_score(probe, gallery, scoring)
                (genuine if other == person else impostor).append(score)
    return ScoreSets(scoring, np.asarray(genuine, np.float32), np.asarray(impostor, np.float32))


def calibrate(samples: Mapping[str, FloatArray], target_far: float) -> dict[Scoring, Calibration]:
    """The threshold for target_far and its false-reject rate, for each scoring method."""
    result: dict[Scoring, Calibration] = {}
    for scoring in ("best", "template"):
        scores = leave_one_out_scores(samples, scoring)
        result[scoring] = calibrate_threshold(scores.genuine, scores.impostor, target_far)
    return result


def _person_score(probe: FloatArray, gallery: FloatArray, scoring: Scoring) -> float:
    if scoring == "best":
        return float(np.max(gallery @ probe))
    template = gallery.mean(axis=0)
    norm = float(np.linalg.norm(template))
    return float(template @ probe / norm) if norm > 0 else 0.0
