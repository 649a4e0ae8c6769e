"""A user's own ArcFace-class embedding model (ONNX, N×3×112×112 → N×512) published on the server: accepted
into the catalogue as an embedding model, and the embedder an embedding rollout re-embeds enrolment crops
with turns real aligned faces into 512-d unit vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.server.gallery.reembed import CropEmbedder
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.vision.alignment import align_face
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime

pytest.importorskip("onnx")
from tests.vision.models.arcface_onnx import DIMENSION, arcface_class_onnx


def test_an_arcface_class_onnx_is_published_and_embeds_enrolment_crops(
    tmp_path: Path, runtime: Runtime, analyzer: FaceAnalyzer, group_photo: npt.NDArray[np.uint8]
) -> None:
    catalog = ModelCatalog(
        SqliteState(tmp_path / "server.db").models, ModelStore(tmp_path / "models"), runtime
    )
    published = catalog.publish(arcface_class_onnx(tmp_path / "arcface.onnx"), "embedding", "arcface", "r1")
    assert (published.model_id, published.task) == ("arcface@r1", "embedding")
    assert [m.model_id for m in catalog.published()] == ["arcface@r1"]

    embedder = CropEmbedder(runtime, catalog.stored(published))
    crops = [align_face(group_photo, face.detection.landmarks_xy) for face in analyzer.analyze(group_photo)]
    assert len(crops) == 6
    vectors = np.stack([embedder.embed(crop) for crop in crops])
    assert vectors.shape == (6, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.all((vectors @ vectors.T)[~np.eye(6, dtype=bool)] < 0.9999)
