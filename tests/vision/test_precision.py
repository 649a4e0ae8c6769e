"""Precision per device on the real models and photos: the guards, the auto choice (latencies injected
through the timer seam, never asserted), the cache, the overrides, and the analyzer compiling each model
at its choice."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pytest

from facefleet.vision.detection import DetectorSettings
from facefleet.vision.errors import ImageError
from facefleet.vision.models.manifest import ModelManifest
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.precision import guards
from facefleet.vision.precision import plan as plan_module
from facefleet.vision.precision.cache import PrecisionCache, cache_path
from facefleet.vision.precision.choice import Choice, Measurement
from facefleet.vision.precision.guards import REFERENCE, GuardResult
from facefleet.vision.precision.plan import PrecisionPlan, PrecisionSettings
from facefleet.vision.precision.probes import PROBES, EmbeddingProbe, ExpressionProbe, Probe
from facefleet.vision.precision.samples import TuningSamples, tuning_samples
from facefleet.vision.precision.tuner import MIN_SPEEDUP, choose
from facefleet.vision.runtime import Precision, Runtime, RuntimeSettings
from tests.precision_seams import injected, perturbed_ir
from tests.variants import store_variant_copy

T = TypeVar("T")


@pytest.fixture(scope="module")
def auto_runtime(model_cache: Path) -> Runtime:
    """A runtime as the agent has it by default: inference_precision = "auto"."""
    return Runtime(RuntimeSettings(device="CPU", cache_dir=model_cache))


@pytest.fixture(scope="module")
def samples(auto_runtime: Runtime, model_store: ModelStore) -> TuningSamples:
    return tuning_samples(auto_runtime, model_store.active("detection"))


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore) -> Callable[[str], Path]:
    """task → an IR of the active model with every weight tensor scaled by 1 + N(0, 0.3): a candidate that
    is made worse on purpose."""
    folder = tmp_path_factory.mktemp("perturbed")

    def make(task: str) -> Path:
        return perturbed_ir(model_store.active(task).xml_path, folder / f"{task}.xml")

    return make


def bf16_or_skip(runtime: Runtime) -> None:
    if "bf16" not in runtime.hint_precisions():
        pytest.skip("this CPU has no BF16 (OPTIMIZATION_CAPABILITIES)")


def test_the_candidate_hints_follow_the_device_capabilities(auto_runtime: Runtime) -> None:
    capabilities = auto_runtime.device_properties("CPU")["OPTIMIZATION_CAPABILITIES"]
    hints = auto_runtime.hint_precisions()
    assert hints[0] == "f32"
    assert ("bf16" in hints) == ("BF16" in capabilities)
    assert ("f16" in hints) == ("'FP16'" in capabilities or '"FP16"' in capabilities)


def test_the_embedding_guard_accepts_bf16_sface(
    auto_runtime: Runtime, model_store: ModelStore, samples: TuningSamples
) -> None:
    bf16_or_skip(auto_runtime)
    probe = EmbeddingProbe(auto_runtime, samples)
    xml = model_store.active("embedding").xml_path
    result = probe.guard(probe.compile(xml, "f32"), probe.compile(xml, "bf16"))
    assert result.passed, result.summary
    assert len(samples.faces) == 2 * (1 + 6)  # astronaut and t1, each mirrored too
    assert result.figures["cosine_min"] >= 0.985 and result.figures["cosine_mean"] >= 0.995
    assert result.figures["decision_changes"] == 0


@pytest.mark.parametrize(
    ("task", "probe_class"), [("embedding", EmbeddingProbe), ("expression", ExpressionProbe)]
)
def test_the_guard_refuses_a_model_with_perturbed_weights(
    auto_runtime: Runtime,
    model_store: ModelStore,
    samples: TuningSamples,
    perturbed: Callable[[str], Path],
    task: str,
    probe_class: type[Probe],
) -> None:
    probe = probe_class(auto_runtime, samples)
    reference = probe.compile(model_store.active(task).xml_path, "f32")
    result = probe.guard(reference, probe.compile(perturbed(task), "f32"))
    assert not result.passed, result.summary
    assert probe.guard(reference, reference).passed


def test_the_detection_guard_holds_for_bf16_yunet_with_the_stated_figures(
    auto_runtime: Runtime, model_store: ModelStore, samples: TuningSamples
) -> None:
    bf16_or_skip(auto_runtime)
    plan = PrecisionPlan(auto_runtime, model_store, timer=lambda label, run: 1.0)
    choice = plan.tune(model_store.active("detection"))
    bf16 = next(m for m in choice.measurements if m.label == "bf16")
    assert bf16.guard.figures["faces"] == 14 and bf16.guard.figures["count_changes"] == 0
    assert bf16.guard.figures["min_box_iou"] >= 0.9 and bf16.guard.figures["max_landmark_shift_px"] <= 2.0


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ({"f32": 8.0, "bf16": 4.0, "f16": 5.0}, "bf16"),
        ({"f32": 4.0, "bf16": 8.0, "f16": 9.0}, "f32"),
        ({"f32": 4.0, "bf16": 4.0 / (MIN_SPEEDUP - 0.05), "f16": 9.0}, "f32"),  # too small a gain
    ],
)
def test_auto_picks_the_fastest_candidate_that_passes(
    auto_runtime: Runtime, model_store: ModelStore, latencies: dict[str, float], expected: str
) -> None:
    bf16_or_skip(auto_runtime)
    plan = PrecisionPlan(auto_runtime, model_store, timer=injected(latencies))
    choice = plan.tune(model_store.active("expression"))
    assert choice.source == "auto" and choice.precision == expected
    assert [m.label for m in choice.measurements] == auto_runtime.hint_precisions()
    assert all(m.guard.passed for m in choice.measurements)


def measurement(label: str, ms: float, passed: bool = True, variant: str | None = None) -> Measurement:
    guard = REFERENCE if label == "f32" else GuardResult(passed, f"{label} guard")
    precision: Precision = "bf16" if label == "bf16" else "f32"
    return Measurement(label, precision, variant, ms, guard)


def test_a_faster_candidate_that_fails_its_guard_is_not_chosen() -> None:
    refused = choose(
        "detection", "yunet@x", [measurement("f32", 8), measurement("int8", 2, False, variant="y")]
    )
    assert refused.precision == "f32" and refused.variant is None
    assert "int8 refused by the guard" in refused.reason
    embedding = choose(
        "embedding",
        "sface@x",
        [
            measurement("f32", 8),
            measurement("bf16", 4),
            measurement("int8", 2, False, variant="sface@x-int8"),
        ],
    )
    assert embedding.precision == "bf16" and embedding.variant is None
    variant = choose(
        "embedding", "sface@x", [measurement("f32", 8), measurement("int8", 2, variant="sface@x-int8")]
    )
    assert variant.variant == "sface@x-int8" and variant.label == "int8 (sface@x-int8)"


def expression_measured(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> tuple[PrecisionCache, list[str], Callable[..., float], StoredModel, Choice]:
    """The expression model measured once (bf16 twice as fast as f32, f16 slower) into a cache under
    tmp_path: the cache, the precisions timed (calls), the timer, the model and its choice."""
    bf16_or_skip(auto_runtime)
    cache = PrecisionCache(cache_path(tmp_path))
    calls: list[str] = []
    timer = injected({"f32": 8.0, "bf16": 4.0, "f16": 5.0}, calls)
    model = model_store.active("expression")
    return (
        cache,
        calls,
        timer,
        model,
        PrecisionPlan(auto_runtime, model_store, cache=cache, timer=timer).choice(model),
    )


def test_the_choice_is_cached_and_measured_again_for_another_openvino_or_model(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> None:
    cache, calls, timer, model, first = expression_measured(auto_runtime, model_store, tmp_path)
    assert first.precision == "bf16" and first.source == "auto" and calls
    assert cache.path == tmp_path / "cache" / "precision.json"
    calls.clear()
    again = PrecisionPlan(auto_runtime, model_store, cache=PrecisionCache(cache.path), timer=timer).choice(
        model
    )
    assert again == first and not calls  # a restart does not measure again
    device, version = auto_runtime.device_name, auto_runtime.version
    assert cache.get(model.manifest, device, version) == first
    assert cache.get(model.manifest, device, "2099.1") is None
    assert cache.get(model.manifest, "GPU (another)", version) is None
    assert cache.get(replace(model.manifest, version="other"), device, version) is None
    # the OpenVINO version changes: the cached entry no longer applies and the model is measured again
    data = json.loads(cache.path.read_text(encoding="utf-8"))
    data["choices"][0]["openvino"] = "2025.0.0"
    cache.path.write_text(json.dumps(data), encoding="utf-8")
    PrecisionPlan(auto_runtime, model_store, cache=cache, timer=timer).choice(model)
    assert calls
    # another model id (a new version of the same model) has no choice yet
    other = StoredModel(
        ModelManifest.from_json({**model.manifest.to_json(), "version": "v2"}), model.directory
    )
    listing = PrecisionPlan(auto_runtime, model_store, cache=cache, measure=False, timer=timer)
    assert listing.choice(other).source == "default" and listing.choice(other).precision == "f32"


def test_the_overrides_win_without_measuring(auto_runtime: Runtime, model_store: ModelStore) -> None:
    calls: list[str] = []
    timer = injected({"f32": 8.0, "bf16": 1.0, "f16": 1.0}, calls)
    everything = PrecisionPlan(auto_runtime, model_store, PrecisionSettings("f16"), timer=timer)
    choice = everything.choice(model_store.active("embedding"))
    assert (choice.precision, choice.source) == ("f16", "override")
    assert "inference_precision = 'f16'" in choice.reason
    per_task = PrecisionPlan(
        auto_runtime, model_store, PrecisionSettings("bf16", {"embedding": "f32"}), timer=timer
    )
    embedding = per_task.choice(model_store.active("embedding"))
    assert (embedding.precision, embedding.source) == ("f32", "task override")
    assert "precision.embedding = 'f32'" in embedding.reason
    assert per_task.choice(model_store.active("detection")).precision == "bf16"
    assert not calls


def test_the_analyzer_compiles_each_model_at_its_choice(
    auto_runtime: Runtime, model_store: ModelStore, astronaut: np.ndarray, tmp_path: Path
) -> None:
    bf16_or_skip(auto_runtime)
    settings = PrecisionSettings("auto", {"embedding": "bf16", "expression": "f32"})
    plan = PrecisionPlan(auto_runtime, model_store, settings, measure=False)
    analyzer = FaceAnalyzer(auto_runtime, model_store, AnalyzerSettings(), precisions=plan)
    (face,) = analyzer.analyze(astronaut)
    assert face.embedding is not None and face.expression is not None
    assert analyzer.net("embedding", (1, 3, 112, 112)).inference_precision == "bf16"
    assert analyzer.net("expression", (1, 64, 64, 1)).inference_precision == "f32"
    # not measured and measure=False: the default, f32, until measured
    assert plan.choice(model_store.active("detection")).source == "default"
    assert analyzer.net("detection", (1, 512, 512, 3)).inference_precision == "f32"
    assert analyzer.runs_at() == {"detection": "f32", "embedding": "bf16", "expression": "f32"}
    # a switched-in model keeps the plan
    switched = analyzer.with_model(model_store.active("embedding"))
    assert switched.precisions is plan


def test_an_int8_variant_of_a_non_embedding_model_is_a_candidate(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> None:
    """A store copy with an 'INT8 variant' of the expression model (its IR recorded as quantized from it):
    measured at the f32 hint, and chosen when it is the fastest that passes."""
    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.root, store.root, symlinks=False)
    source = store.active("expression")
    variant = store_variant_copy(store, source)
    latencies = {"f32": 8.0, "bf16": 6.0, "f16": 6.0, "int8": 2.0}
    plan = PrecisionPlan(auto_runtime, store, timer=injected(latencies))
    choice = plan.tune(source)
    assert [m.label for m in choice.measurements][-1] == "int8"
    assert choice.variant == variant.manifest.model_id and choice.precision == "f32"
    assert plan.compilation(source).xml_path == variant.xml_path
    analyzer = FaceAnalyzer(auto_runtime, store, AnalyzerSettings(embeddings=False), precisions=plan)
    assert analyzer.runs_at()["expression"] == f"int8 ({variant.manifest.model_id})"


def test_a_damaged_variant_is_not_run_and_is_left_out_when_measured_again(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> None:
    """The variant a cached choice names is checked against its sha256 before it is compiled: damaged, the
    float model runs at f32 instead; measured again, the damaged variant is left out and the others
    compete."""
    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.root, store.root, symlinks=False)
    source = store.active("expression")
    variant = store_variant_copy(store, source)
    cache = PrecisionCache(cache_path(tmp_path))
    latencies = {"f32": 8.0, "bf16": 4.0, "f16": 4.0, "int8": 2.0}
    plan = PrecisionPlan(auto_runtime, store, cache=cache, timer=injected(latencies))
    assert plan.tune(source).variant == variant.manifest.model_id
    with (variant.directory / "model.bin").open("ab") as weights:
        weights.write(b"\0")
    later = PrecisionPlan(auto_runtime, store, cache=cache, measure=False)
    assert later.choice(source).variant == variant.manifest.model_id  # what was cached
    compilation = later.compilation(source)
    assert (compilation.xml_path, compilation.precision) == (source.xml_path, "f32")
    assert "INT8 variant cannot run" in compilation.choice.reason and "model.bin" in compilation.choice.reason
    again = plan.tune(source)
    assert [m.label for m in again.measurements] == auto_runtime.hint_precisions()
    assert again.variant is None


def test_an_int8_variant_stored_after_the_measurement_is_measured_at_the_next_start(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> None:
    """The cache keeps the INT8 variants that were candidates: one quantized (or imported) after the model
    was measured makes the cached choice a miss, so the next start measures it, and a removed one too."""
    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.root, store.root, symlinks=False)
    source = store.active("expression")
    cache = PrecisionCache(cache_path(tmp_path))
    latencies = {"f32": 8.0, "bf16": 4.0, "f16": 4.0, "int8": 2.0}
    assert (
        PrecisionPlan(auto_runtime, store, cache=cache, timer=injected(latencies)).choice(source).variant
        is None
    )
    variant = store_variant_copy(store, source)
    calls: list[str] = []
    restarted = PrecisionPlan(auto_runtime, store, cache=cache, timer=injected(latencies, calls))
    assert restarted.choice(source).variant == variant.manifest.model_id
    assert "int8" in calls
    calls.clear()
    again = PrecisionPlan(auto_runtime, store, cache=cache, timer=injected(latencies, calls))
    assert again.choice(source).variant == variant.manifest.model_id and not calls  # cached with it
    store.remove(variant)
    gone = PrecisionPlan(auto_runtime, store, cache=cache, timer=injected(latencies, calls))
    assert gone.choice(source).variant is None and calls


def test_an_embedding_choice_is_measured_again_when_a_decision_threshold_changes(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> None:
    """The cache keeps the thresholds an embedding model's guard checked: another matching or door
    threshold is a miss, so the variant is guarded again at the new one."""
    cache = PrecisionCache(cache_path(tmp_path))
    embedding = model_store.active("embedding")
    model_id = embedding.manifest.model_id
    measured = Choice("embedding", model_id, "bf16", "auto", "measured: bf16 is the fastest")
    device, version = auto_runtime.device_name, auto_runtime.version
    cache.put(measured, embedding.manifest, device, version, (0.5, 0.363))

    def cached(thresholds: tuple[float, ...]) -> Choice | None:
        plan = PrecisionPlan(auto_runtime, model_store, cache=cache, thresholds=lambda model_id: thresholds)
        return plan.cached(embedding)

    assert cached((0.363, 0.5)) == measured and cached((0.363, 0.5, 0.5)) == measured
    assert cached((0.363,)) is None and cached((0.363, 0.55)) is None
    expression = model_store.active("expression")  # other tasks have no thresholds
    other = replace(measured, task="expression", model_id=expression.manifest.model_id)
    cache.put(other, expression.manifest, device, version)
    assert PrecisionPlan(auto_runtime, model_store, cache=cache).cached(expression) is not None


def test_the_samples_are_found_at_the_default_thresholds_whatever_the_site_keeps(
    auto_runtime: Runtime, model_store: ModelStore
) -> None:
    """A site that keeps only faces scored ≥ 0.95 (none in the bundled photos) still has its models
    measured on the photos' 14 faces, and its analyzer starts."""
    bf16_or_skip(auto_runtime)
    strict = DetectorSettings(score_threshold=0.95)
    plan = PrecisionPlan(
        auto_runtime, model_store, detector=strict, timer=injected({"f32": 8.0, "bf16": 4.0, "f16": 4.0})
    )
    analyzer = FaceAnalyzer(
        auto_runtime, model_store, AnalyzerSettings(detector=strict, attributes=True), precisions=plan
    )
    for task in ("detection", "embedding", "expression", "attributes"):
        choice = plan.choice(model_store.active(task))
        assert choice.source == "auto", choice.reason
        bf16 = next(m for m in choice.measurements if m.label == "bf16")
        assert bf16.guard.passed, bf16.guard.summary
    detection = plan.choice(model_store.active("detection"))
    assert next(m for m in detection.measurements if m.label == "bf16").guard.figures["faces"] == 14
    assert analyzer.settings.detector.score_threshold == 0.95  # the site's thresholds still decide its faces


def test_a_guard_given_no_faces_refuses(
    auto_runtime: Runtime, model_store: ModelStore, samples: TuningSamples
) -> None:
    assert not guards.classification(np.zeros((0, 7), np.float32), np.zeros((0, 7), np.float32)).passed
    assert not guards.years([], []).passed
    nothing = guards.detections([[], []], [[], []], [1.0, 1.0])
    assert not nothing.passed and "no faces" in nothing.summary
    empty = TuningSamples(samples.detector, samples.frames, ())
    for task, probe_class in PROBES.items():
        probe = probe_class(auto_runtime, empty, (0.363,))
        nets = probe.compile(model_store.active(task).xml_path, "f32")
        with pytest.raises(ImageError, match="gave no faces"):
            probe.guard(nets, nets)
        with pytest.raises(ImageError, match="gave no faces"):
            probe.run_once(nets)


def test_photos_without_faces_leave_the_models_at_f32_with_the_reason(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> None:
    bf16_or_skip(auto_runtime)
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 128, np.uint8))
    cache = PrecisionCache(cache_path(tmp_path))
    timer = injected({"f32": 8.0, "bf16": 1.0, "f16": 1.0})
    plan = PrecisionPlan(auto_runtime, model_store, cache=cache, photos=[blank], timer=timer)
    FaceAnalyzer(auto_runtime, model_store, AnalyzerSettings(attributes=True), precisions=plan)
    for task in ("detection", "embedding", "expression", "attributes"):
        choice = plan.choice(model_store.active(task))
        assert (choice.precision, choice.source) == ("f32", "default")
        assert "gave no faces" in choice.reason
    assert not cache.path.exists()  # nothing measured, nothing cached: measured again at the next start


def test_a_model_reimported_under_its_id_with_other_files_is_measured_again(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path
) -> None:
    cache, calls, timer, model, first = expression_measured(auto_runtime, model_store, tmp_path)
    assert first.source == "auto" and calls
    calls.clear()
    files = {name: "0" * 64 for name in model.manifest.files}
    reimported = StoredModel(replace(model.manifest, files=files), model.directory)
    device, version = auto_runtime.device_name, auto_runtime.version
    assert cache.get(model.manifest, device, version) == first
    assert cache.get(reimported.manifest, device, version) is None
    listing = PrecisionPlan(auto_runtime, model_store, cache=cache, measure=False, timer=timer)
    assert listing.cached(reimported) is None and listing.choice(reimported).source == "default"
    assert listing.choice(model) == first  # the same id with its own files still hits
    # an entry written before the files were part of the key misses too
    data = json.loads(cache.path.read_text(encoding="utf-8"))
    del data["choices"][0]["files"]
    cache.path.write_text(json.dumps(data), encoding="utf-8")
    assert cache.get(model.manifest, device, version) is None
    assert not calls


def test_measuring_in_a_child_process_caches_the_choices_and_compiles_nothing_here(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """measure_in_child (the agent's): the candidates are compiled in a child process, which caches what it
    measured; this process reads the choices from the cache. A model the child cannot measure runs at f32
    with the child's reason."""
    bf16_or_skip(auto_runtime)
    compiled: list[str] = []
    compile_here = Runtime.compile

    def counted(runtime: Runtime, model_xml: Path, *args: object, **kwargs: object) -> object:
        compiled.append(Path(model_xml).parent.name)
        return compile_here(runtime, model_xml, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Runtime, "compile", counted)
    cache = PrecisionCache(cache_path(tmp_path))
    plan = PrecisionPlan(auto_runtime, model_store, cache=cache, measure_in_child=True)
    models = [model_store.active(task) for task in ("detection", "expression")]
    plan.prepare(models)
    assert not compiled  # not one candidate compiled in this process
    device, version = auto_runtime.device_name, auto_runtime.version
    for model in models:
        measured = cache.get(model.manifest, device, version)
        assert measured is not None and measured.source == "auto"
        assert plan.choice(model) == measured
        assert {m.label for m in measured.measurements} >= {"f32", "bf16"}

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 128, np.uint8))
    other = PrecisionCache(cache_path(tmp_path / "other"))
    failing = PrecisionPlan(auto_runtime, model_store, cache=other, photos=[blank], measure_in_child=True)
    expression = model_store.active("expression")
    choice = failing.choice(expression)
    assert (choice.precision, choice.source) == ("f32", "default")
    assert "gave no faces" in choice.reason and not other.path.exists() and not compiled


def test_a_child_that_cannot_start_leaves_the_measurement_to_this_process(
    auto_runtime: Runtime,
    model_store: ModelStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where no child process can be started (a sandbox without /dev/shm, say), the model is measured here
    rather than left at f32."""
    bf16_or_skip(auto_runtime)

    class NoChildren:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OSError(38, "Function not implemented: sem_open")

    monkeypatch.setattr(plan_module, "ProcessPoolExecutor", NoChildren)
    cache = PrecisionCache(cache_path(tmp_path))
    plan = PrecisionPlan(auto_runtime, model_store, cache=cache, measure_in_child=True)
    expression = model_store.active("expression")
    with caplog.at_level("WARNING"):
        choice = plan.choice(expression)
    assert choice.source == "auto" and {m.label for m in choice.measurements} >= {"f32", "bf16"}
    assert cache.get(expression.manifest, auto_runtime.device_name, auto_runtime.version) == choice
    assert "measuring in a child process failed" in caplog.text and "sem_open" in caplog.text


def test_a_child_that_dies_leaves_its_models_at_f32_and_this_process_alive(
    auto_runtime: Runtime, model_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate that crashes the runtime kills the measuring child; measuring it again here would kill
    the agent (at every start, as the cache stays empty), so the model runs at f32 with the reason."""

    class DyingChild(ProcessPoolExecutor):
        def submit(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> Future[T]:
            return super().submit(os._exit, 3)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_module, "ProcessPoolExecutor", DyingChild)
    cache = PrecisionCache(cache_path(tmp_path))
    plan = PrecisionPlan(auto_runtime, model_store, cache=cache, measure_in_child=True)
    expression = model_store.active("expression")
    choice = plan.choice(expression)
    assert (choice.precision, choice.source) == ("f32", "default")
    assert "the measuring process died" in choice.reason
    assert cache.get(expression.manifest, auto_runtime.device_name, auto_runtime.version) is None


def test_a_resolved_choice_does_not_wait_for_another_models_measurement(
    auto_runtime: Runtime, model_store: ModelStore
) -> None:
    """While one thread measures a model (a rollout's new version), another gets the choice of a model
    already resolved (the frame loop's status) at once."""
    bf16_or_skip(auto_runtime)
    measuring, release = threading.Event(), threading.Event()

    def held(label: str, run: Callable[[], None]) -> float:
        measuring.set()
        release.wait(60)
        return 1.0

    plan = PrecisionPlan(auto_runtime, model_store, PrecisionSettings(tasks={"detection": "f32"}), timer=held)
    detection = model_store.active("detection")
    resolved = plan.choice(detection)  # the override: nothing measured
    measurer = threading.Thread(target=plan.choice, args=(model_store.active("expression"),))
    measurer.start()
    try:
        assert measuring.wait(60)
        answers: list[Choice] = []
        asking = threading.Thread(target=lambda: answers.append(plan.choice(detection)))
        asking.start()
        asking.join(30)  # blocked behind the measurement it would stay until release
        assert answers == [resolved]
    finally:
        release.set()
        measurer.join(60)
