"""A smoke inference before a model version is switched on: run the whole analyzer with the candidate model
on a real photo and check the output of the model's task for shape and sanity.

- detection: at least one face, with a box inside the photo and landmarks inside the box;
- embedding: a finite unit vector of the manifest's dimension, and the mirrored face scores closer to the
  face than a mid-grey image does (a model of random or zeroed weights fails this);
- expression: one finite probability per expression label, summing to 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from facefleet.vision.alignment import align_face
from facefleet.vision.errors import ModelSpecError
from facefleet.vision.faces import EXPRESSION_LABELS, Face
from facefleet.vision.images import read_image, to_bgr8
from facefleet.vision.models.tasks import embedding_dimension
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.preprocess import embedding_input, normalise_embeddings
from facefleet.vision.runtime import ModelIO

SMOKE_PHOTO = "astronaut"


def smoke_test(analyzer: FaceAnalyzer, task: str, photo: Path | None = None) -> None:
    """Raise ModelSpecError naming the model and what is wrong when its output on the photo is not sane."""
    path = photo or sample_photo(SMOKE_PHOTO)
    image = read_image(path)
    faces = analyzer.analyze(image)
    model = {"detection": analyzer.detector_model, "embedding": analyzer.embedding_model}.get(
        task, analyzer.expression_model
    )
    if model is None:
        raise ModelSpecError(f"the analyzer runs no {task} model to smoke-test")
    what = f"smoke test of {task} model {model.manifest.model_id} on {path.name}"
    if not faces:
        raise ModelSpecError(f"{what}: no face found in a photo with a clear face")
    face = max(faces, key=lambda f: f.detection.score)
    if task == "detection":
        _check_detection(face, image.shape[1], image.shape[0], what)
    elif task == "embedding":
        dimension = embedding_dimension(ModelIO(model.manifest.inputs, model.manifest.outputs))
        _check_embedding(analyzer, face, image, dimension, what)
    elif task == "expression":
        _check_expression(face, what)


def _check_detection(face: Face, width: int, height: int, what: str) -> None:
    left, top, right, bottom = face.detection.box_xyxy
    if not (-0.1 * width <= left < right <= 1.1 * width and -0.1 * height <= top < bottom <= 1.1 * height):
        raise ModelSpecError(f"{what}: face box {face.detection.box_xyxy} lies outside the photo")
    landmarks = np.asarray(face.detection.landmarks_xy)
    margin = 0.25 * max(right - left, bottom - top)
    inside = (
        (landmarks[:, 0] >= left - margin)
        & (landmarks[:, 0] <= right + margin)
        & (landmarks[:, 1] >= top - margin)
        & (landmarks[:, 1] <= bottom + margin)
    )
    if not np.all(inside):
        raise ModelSpecError(f"{what}: facial landmarks lie outside the face box")


def _check_embedding(
    analyzer: FaceAnalyzer, face: Face, image: npt.NDArray[np.uint8], dimension: int, what: str
) -> None:
    vector = face.embedding
    if vector is None or vector.shape != (dimension,):
        shape = None if vector is None else vector.shape
        raise ModelSpecError(f"{what}: embedding of shape {shape}, expected ({dimension},)")
    if not np.all(np.isfinite(vector)) or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
        raise ModelSpecError(f"{what}: the embedding is not a finite unit vector")
    crop = align_face(to_bgr8(image), face.detection.landmarks_xy)
    mirrored = np.ascontiguousarray(crop[:, ::-1])
    grey = np.full_like(crop, 128)
    net = analyzer.net("embedding", (2, 3, 112, 112))
    raw = next(iter(net.infer(np.stack([embedding_input(mirrored), embedding_input(grey)])).values()))
    others = normalise_embeddings(raw)
    same, blank = float(others[0] @ vector), float(others[1] @ vector)
    if not same > blank + 0.1:
        raise ModelSpecError(
            f"{what}: the mirrored face scores {same:.2f} and a grey image {blank:.2f} against the face; "
            "the model does not tell faces apart"
        )


def _check_expression(face: Face, what: str) -> None:
    expression = face.expression
    if expression is None:
        raise ModelSpecError(f"{what}: no expression computed")
    values = np.array([expression.probabilities.get(label, np.nan) for label in EXPRESSION_LABELS])
    if not np.all(np.isfinite(values)) or np.any(values < 0) or abs(float(values.sum()) - 1.0) > 1e-3:
        raise ModelSpecError(
            f"{what}: expression scores are not probabilities over {len(EXPRESSION_LABELS)} labels"
        )
