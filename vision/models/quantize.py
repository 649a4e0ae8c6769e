"""`models quantize`: NNCF post-training INT8 quantization of a stored model into a new version of the store,
calibrated on real aligned faces and kept only when an accuracy guard against the float model passes.

Only embedding models are quantized, keeping their first convolution in float (what the measurements on
SFace needed: 2.5–2.8× faster per face, cosine ≥ 0.989 to float on held-out faces). YuNet in INT8 gained
little and moved landmarks by up to 15 px, so detection models stay in float.

The faces come from photos (detected with the store's active detector and aligned like the pipeline does)
or from already aligned 112×112 crops (the server's enrolment crops). Every fourth face is held out of the
calibration set for the guard; the others are augmented (landmark jitter, mirroring, brightness and
contrast) to the number of samples asked for. The guard compares the INT8 model with the float one: the
cosine of their embeddings on the held-out faces (and variants of them) must reach GuardLimits, and no
pair of faces (a face with a variant of itself, two different faces) may change its decision at any of the
thresholds decisions are taken at (matching, doors, the server's grouping of unknown faces), whether the
enrolled face of the pair was embedded by the INT8 model or by the float one. Otherwise the new version is
refused with the figures and nothing is stored.
"""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from facefleet.vision import detection
from facefleet.vision.alignment import ALIGNED_SIZE, ARCFACE_TEMPLATE_XY, align_face
from facefleet.vision.detection import DetectorSettings
from facefleet.vision.errors import ModelStoreError, QuantizationError
from facefleet.vision.images import read_image
from facefleet.vision.models.manifest import IN_PLACE_KEY, ModelManifest, Source, sha256_file
from facefleet.vision.models.store import MODEL_XML, ModelStore, StoredModel, check_model
from facefleet.vision.models.tasks import check_fits
from facefleet.vision.preprocess import embedding_input, normalise_embeddings
from facefleet.vision.runtime import CompiledNet, Runtime

DEFAULT_SAMPLES = 300
DEFAULT_THRESHOLD = 0.363
"""OpenCV's suggested cosine threshold for SFace, the default matching threshold."""
HOLD_OUT_EVERY = 4
"""Every fourth face (in photo order) is held out of calibration for the guard."""
HELD_OUT_VARIANTS = 7
"""Augmented variants of each held-out face checked by the guard, besides the face itself."""
TIMING_RUNS = 50
PRECISION = "INT8"
VERSION_SUFFIX = "-int8"
LOCAL_VERSION_SUFFIX = "-int8-local"
"""The version suffix of the variant `models import-defaults` builds on an agent, apart from the `-int8`
version a server publishes and rolls out (another calibration: other files)."""
SOURCE_OF_SOURCE_KEY = "quantized_from_source"
"""Manifest extra: the sha256 of the float model's own source (the ONNX file it was converted from), so a
variant built by a server matches an agent's float model converted from the same file into other IR bytes."""


@dataclass(frozen=True)
class TaskPolicy:
    """How a task's models are quantized: keep_first_convolution leaves the first convolution in float;
    asymmetric_activations: NNCF's MIXED preset (on SFace: mean cosine to float 0.998 instead of 0.996)."""

    keep_first_convolution: bool
    asymmetric_activations: bool


POLICIES = {"embedding": TaskPolicy(keep_first_convolution=True, asymmetric_activations=True)}
"""The tasks whose models may be quantized, with their defaults."""
REFUSED = {
    "detection": "INT8 YuNet gained little speed and moved landmarks by up to 15 px, which misaligns every "
    "face; detection models stay in float",
}


@dataclass(frozen=True)
class GuardLimits:
    """Minimum and mean cosine between float and INT8 embeddings of the held-out faces; decision_margin:
    pairs whose float score is closer than this to the threshold are too close to call (a change of their
    decision is reported, not held against the model). On the sample photos two different people of
    t1.jpg score 0.355 with float SFace, 0.008 under the threshold, and 0.364 with INT8."""

    min_cosine: float = 0.985
    mean_cosine: float = 0.995
    decision_margin: float = 0.01


@dataclass(frozen=True)
class FaceSample:
    """One face: an image (BGR) and its five landmarks in it, and where it came from."""

    image: npt.NDArray[np.uint8]
    landmarks_xy: npt.NDArray[np.float32]
    origin: str


@dataclass(frozen=True)
class GuardFigures:
    """What the guard measured; passed: every limit held."""

    held_out_faces: int
    held_out_samples: int
    calibration_faces: int
    calibration_samples: int
    cosine_min: float
    cosine_mean: float
    min_cosine_limit: float
    mean_cosine_limit: float
    thresholds: tuple[float, ...]
    genuine_pairs: int
    impostor_pairs: int
    decision_changes: int
    near_threshold_pairs: int
    near_threshold_changes: int
    decision_margin: float
    ms_per_face_float: float
    ms_per_face_int8: float
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuantizeResult:
    model: StoredModel
    source: StoredModel
    figures: GuardFigures
    kept_in_float: tuple[str, ...]


def quantizer_installed() -> bool:
    """Whether NNCF, the optional extra facefleet[quantize], can be imported here."""
    return importlib.util.find_spec("nncf") is not None


def int8_variants(
    store: ModelStore, source: StoredModel, excluded: Collection[str] = ()
) -> list[StoredModel]:
    """The INT8 versions the store holds of source (is_variant_of), but those excluded (by model id)."""
    return [
        m
        for m in store.models()
        if is_variant_of(m.manifest, source.manifest) and m.manifest.model_id not in excluded
    ]


def is_variant_of(candidate: ModelManifest, source: ModelManifest) -> bool:
    """Whether candidate is an INT8 version of source: its extra.quantized_from names source, and it was
    quantized from source's very IR, or from IR converted from the same source file (not from an earlier
    import under the same id)."""
    return (
        candidate.task == source.task
        and candidate.precision == PRECISION
        and candidate.extra.get("quantized_from") == source.model_id
        and (
            candidate.source.sha256 == source.files.get(MODEL_XML)
            or (
                bool(source.source.sha256)
                and candidate.extra.get(SOURCE_OF_SOURCE_KEY) == source.source.sha256
            )
        )
    )


def find_model(store: ModelStore, ref: str) -> StoredModel:
    """A stored model by 'name@version' (e.g. sface@2021dec) or 'task/name/version'."""
    if ref.count("/") == 2:
        task, name, version = ref.split("/")
        return store.get(task, name, version)
    found = [m for m in store.models() if m.manifest.model_id == ref]
    if len(found) != 1:
        what = "no model" if not found else "several models"
        raise ModelStoreError(
            f"{what} '{ref}' in {store.root}; name one as NAME@VERSION or TASK/NAME/VERSION "
            "(see `models list`)"
        )
    return found[0]


def faces_from_photos(
    runtime: Runtime, detector: StoredModel, photos: Sequence[Path], settings: DetectorSettings | None = None
) -> list[FaceSample]:
    """Every face the detector finds in the photos (and in their mirror images), best first per photo."""
    settings = settings or DetectorSettings()
    check_model(detector)
    nets: dict[tuple[int, ...], CompiledNet] = {}
    faces = []
    for path in photos:
        photo = read_image(path)
        for mirrored, frame in ((False, photo), (True, np.ascontiguousarray(photo[:, ::-1]))):
            prepared = detection.prepare(frame, settings)
            shape = tuple(prepared.tensor.shape)
            if shape not in nets:
                nets[shape] = detection.compile_detector(runtime, detector.xml_path, shape)
            found = detection.decode(nets[shape].infer(prepared.tensor), prepared, settings)
            for index, face in enumerate(found):
                origin = f"{path.name}{' (mirrored)' if mirrored else ''} face {index + 1}"
                faces.append(FaceSample(frame, face.landmarks_xy.astype(np.float32), origin))
    return faces


def faces_from_crops(crops: Sequence[npt.NDArray[np.uint8]], origin: str = "crop") -> list[FaceSample]:
    """Faces from aligned 112×112 BGR crops (e.g. enrolment crops): their landmarks are the template's."""
    faces = []
    for index, crop in enumerate(crops):
        if crop.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
            raise QuantizationError(
                f"{origin} {index + 1}: an aligned face crop is 112×112×3, got {crop.shape}"
            )
        faces.append(FaceSample(crop, ARCFACE_TEMPLATE_XY.copy(), f"{origin} {index + 1}"))
    return faces


def quantize_model(
    runtime: Runtime,
    store: ModelStore,
    source: StoredModel,
    faces: Sequence[FaceSample],
    *,
    samples: int = DEFAULT_SAMPLES,
    thresholds: Sequence[float] = (DEFAULT_THRESHOLD,),
    limits: GuardLimits | None = None,
    version: str | None = None,
    activate: bool = False,
    in_place: bool = False,
    seed: int = 0,
) -> QuantizeResult:
    """Quantize source (a stored float model) on faces into source's name, version+'-int8' (or version);
    QuantizationError with the guard's figures, and nothing stored, when the guard refuses it. thresholds:
    the cosines decisions are taken at with the model (at least one); in_place: publish it to run in the
    source's place (IN_PLACE_KEY)."""
    limits = limits or GuardLimits()
    task = source.manifest.task
    if task in REFUSED:
        raise QuantizationError(
            f"{source.manifest.model_id}: {task} models are not quantized: {REFUSED[task]}"
        )
    if task not in POLICIES:
        raise QuantizationError(
            f"{source.manifest.model_id}: {task} models are not quantized; only "
            f"{', '.join(POLICIES)} models are (the accuracy guard compares embeddings)"
        )
    if source.manifest.precision == PRECISION:
        raise QuantizationError(
            f"{source.manifest.model_id} is already {PRECISION}; quantize its float version"
        )
    if samples < 1:
        raise QuantizationError(f"--samples must be at least 1, got {samples}")
    thresholds = tuple(dict.fromkeys(float(t) for t in thresholds))
    if not thresholds or not all(-1.0 <= t <= 1.0 for t in thresholds):
        raise QuantizationError(
            f"the guard checks decisions at cosine thresholds in [-1, 1]; got {list(thresholds)}"
        )
    held_out = [face for i, face in enumerate(faces) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1]
    calibrating = [face for i, face in enumerate(faces) if i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
    if not held_out or not calibrating:
        raise QuantizationError(
            f"found {len(faces)} face(s); quantization needs at least {HOLD_OUT_EVERY} (some calibrate, "
            "some are held out for the accuracy guard): give more photos with faces"
        )
    version = version or f"{source.manifest.version}{VERSION_SUFFIX}"
    if _exists(store, task, source.manifest.name, version):
        raise ModelStoreError(
            f"model {task}/{source.manifest.name}/{version} is already in the store; remove it first or "
            "give another --version"
        )
    check_model(source)
    rng = np.random.default_rng(seed)
    calibration = [
        embedding_input(_variant(face, rng) if i >= len(calibrating) else _aligned(face))[None]
        for i, face in zip(range(samples), itertools.cycle(calibrating))
    ]
    staged = store.staging_dir()
    try:
        policy = POLICIES[task]
        io, kept = runtime.quantize_to_ir(
            source.xml_path,
            staged / MODEL_XML,
            calibration,
            keep_first_convolution=policy.keep_first_convolution,
            asymmetric_activations=policy.asymmetric_activations,
        )
        check_fits(task, io, f"{source.manifest.model_id} quantized")
        quantized_xml = staged / MODEL_XML
        figures = _guard(runtime, source.xml_path, quantized_xml, held_out, faces, rng, thresholds, limits)
        figures = GuardFigures(
            **{**figures.to_json(), "calibration_faces": len(calibrating), "calibration_samples": samples}
        )
        if not figures.passed:
            raise QuantizationError(
                f"{source.manifest.model_id}: the INT8 model is refused by the accuracy guard: "
                f"{describe(figures)}",
                figures.to_json(),
            )
        original = source.manifest
        manifest = ModelManifest(
            task=task,
            name=original.name,
            version=version,
            files={path.name: sha256_file(path) for path in sorted(staged.iterdir())},
            source=Source(
                path=f"{task}/{original.name}/{original.version}",
                sha256=original.files.get(MODEL_XML, ""),
                package=original.source.package,
                package_version=original.source.package_version,
                weights_sha256=original.files.get("model.bin"),
            ),
            licence=original.licence,
            inputs=io.inputs,
            outputs=io.outputs,
            precision=PRECISION,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            extra={
                "quantized_from": original.model_id,
                SOURCE_OF_SOURCE_KEY: original.source.sha256,
                **({IN_PLACE_KEY: original.model_id} if in_place else {}),
                "quantization": {
                    "tool": f"nncf=={metadata.version('nncf')}",
                    "kept_in_float": kept,
                    "guard": figures.to_json(),
                },
            },
        )
        model = store.add(staged, manifest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    if activate:
        store.activate(task, model.manifest.name, model.manifest.version)
    return QuantizeResult(model, source, figures, tuple(kept))


def quantize_locally(
    runtime: Runtime,
    store: ModelStore,
    source: StoredModel,
    photos: Sequence[Path],
    thresholds: Sequence[float] = (DEFAULT_THRESHOLD,),
) -> QuantizeResult:
    """The INT8 variant `models import-defaults` builds on an agent: source quantized on the faces of photos
    (the bundled ones) into version + LOCAL_VERSION_SUFFIX."""
    faces = faces_from_photos(runtime, store.active("detection"), photos)
    version = f"{source.manifest.version}{LOCAL_VERSION_SUFFIX}"
    return quantize_model(runtime, store, source, faces, thresholds=thresholds, version=version)


def describe(figures: GuardFigures) -> str:
    """The guard's figures in one line."""
    return (
        f"cosine to float on {figures.held_out_samples} held-out samples of {figures.held_out_faces} faces: "
        f"min {figures.cosine_min:.4f} (limit {figures.min_cosine_limit}), mean {figures.cosine_mean:.4f} "
        f"(limit {figures.mean_cosine_limit}); decisions at {_thresholds(figures.thresholds)} changed on "
        f"{figures.decision_changes} of {figures.genuine_pairs + figures.impostor_pairs} pairs "
        f"({figures.genuine_pairs} genuine, {figures.impostor_pairs} impostor; "
        f"{figures.near_threshold_changes} more of {figures.near_threshold_pairs} within "
        f"{figures.decision_margin} of a threshold, not counted); per face "
        f"{figures.ms_per_face_float:.2f} ms float, {figures.ms_per_face_int8:.2f} ms INT8"
    )


def _thresholds(thresholds: Sequence[float]) -> str:
    listed = ", ".join(f"{t:g}" for t in thresholds)
    return f"threshold {listed}" if len(thresholds) == 1 else f"thresholds {listed}"


@dataclass(frozen=True)
class EmbeddingAgreement:
    """How a candidate embedding model agrees with the float one on the same faces: cosine of their
    embeddings over the held-out samples, and decisions at the threshold on the pairs; passed: every limit
    of GuardLimits held."""

    held_out_faces: int
    held_out_samples: int
    cosine_min: float
    cosine_mean: float
    genuine_pairs: int
    impostor_pairs: int
    decision_changes: int
    near_threshold_pairs: int
    near_threshold_changes: int
    passed: bool


def compare_embeddings(
    float_net: CompiledNet,
    candidate_net: CompiledNet,
    held_out: Sequence[FaceSample],
    faces: Sequence[FaceSample],
    rng: np.random.Generator,
    thresholds: Sequence[float],
    limits: GuardLimits,
) -> EmbeddingAgreement:
    """The accuracy guard: both nets (compiled for (1, 3, 112, 112)) on each held-out face and
    HELD_OUT_VARIANTS variants of it, and on the pairs of faces (a face with a variant of itself: genuine,
    every two different faces: impostor). A pair's decision at each threshold must stay the float one
    whoever embedded either side: both the candidate (a gallery it embedded itself), or one the candidate
    and the other the float model, either way round (a gallery the float model embedded, probed by the
    candidate running in its place, and the reverse)."""
    if not thresholds:
        raise ValueError("the guard needs at least one threshold to check decisions at")
    checked = [
        _aligned(face) if k == 0 else _variant(face, rng)
        for face in held_out
        for k in range(HELD_OUT_VARIANTS + 1)
    ]
    cosines = np.sum(_embed(float_net, checked) * _embed(candidate_net, checked), axis=1)
    crops = [_aligned(face) for face in faces] + [_variant(face, rng) for face in faces]
    float_embeddings, candidate_embeddings = _embed(float_net, crops), _embed(candidate_net, crops)
    count = len(faces)
    pairs = [(i, count + i) for i in range(count)] + list(itertools.combinations(range(count), 2))
    left, right = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    float_scores = np.sum(float_embeddings[left] * float_embeddings[right], axis=1)
    candidate_scores = (
        np.sum(candidate_embeddings[left] * candidate_embeddings[right], axis=1),
        np.sum(candidate_embeddings[left] * float_embeddings[right], axis=1),
        np.sum(float_embeddings[left] * candidate_embeddings[right], axis=1),
    )
    counted = np.zeros(len(pairs), dtype=bool)
    uncounted = np.zeros(len(pairs), dtype=bool)
    near_any = np.zeros(len(pairs), dtype=bool)
    for threshold in thresholds:
        near = np.abs(float_scores - threshold) < limits.decision_margin
        changed = np.zeros(len(pairs), dtype=bool)
        for scores in candidate_scores:
            changed |= (float_scores >= threshold) != (scores >= threshold)
        counted |= changed & ~near
        uncounted |= changed & near
        near_any |= near
    changes = int(np.count_nonzero(counted))
    cosine_min, cosine_mean = float(cosines.min()), float(cosines.mean())
    return EmbeddingAgreement(
        held_out_faces=len(held_out),
        held_out_samples=len(checked),
        cosine_min=round(cosine_min, 5),
        cosine_mean=round(cosine_mean, 5),
        genuine_pairs=count,
        impostor_pairs=len(pairs) - count,
        decision_changes=changes,
        near_threshold_pairs=int(np.count_nonzero(near_any)),
        near_threshold_changes=int(np.count_nonzero(uncounted & ~counted)),
        passed=cosine_min >= limits.min_cosine and cosine_mean >= limits.mean_cosine and changes == 0,
    )


def _guard(
    runtime: Runtime,
    float_xml: Path,
    int8_xml: Path,
    held_out: Sequence[FaceSample],
    faces: Sequence[FaceSample],
    rng: np.random.Generator,
    thresholds: tuple[float, ...],
    limits: GuardLimits,
) -> GuardFigures:
    """The guard's figures (calibration_* left at 0 for the caller)."""
    shape = (1, 3, ALIGNED_SIZE, ALIGNED_SIZE)
    float_net = runtime.compile(float_xml, input_shape=shape, single_stream=True)
    int8_net = runtime.compile(int8_xml, input_shape=shape, single_stream=True)
    agreement = compare_embeddings(float_net, int8_net, held_out, faces, rng, thresholds, limits)
    tensor = embedding_input(_aligned(held_out[0]))[None]
    return GuardFigures(
        held_out_faces=agreement.held_out_faces,
        held_out_samples=agreement.held_out_samples,
        calibration_faces=0,
        calibration_samples=0,
        cosine_min=agreement.cosine_min,
        cosine_mean=agreement.cosine_mean,
        min_cosine_limit=limits.min_cosine,
        mean_cosine_limit=limits.mean_cosine,
        thresholds=thresholds,
        genuine_pairs=agreement.genuine_pairs,
        impostor_pairs=agreement.impostor_pairs,
        decision_changes=agreement.decision_changes,
        near_threshold_pairs=agreement.near_threshold_pairs,
        near_threshold_changes=agreement.near_threshold_changes,
        decision_margin=limits.decision_margin,
        ms_per_face_float=round(_ms_per_face(float_net, tensor), 3),
        ms_per_face_int8=round(_ms_per_face(int8_net, tensor), 3),
        passed=agreement.passed,
    )


def _embed(net: CompiledNet, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    raw = [next(iter(net.infer(embedding_input(crop)[None]).values())) for crop in crops]
    return normalise_embeddings(np.concatenate([r.reshape(1, -1) for r in raw]))


def _ms_per_face(net: CompiledNet, tensor: npt.NDArray[np.float32]) -> float:
    net.infer(tensor)
    start = time.perf_counter()
    for _ in range(TIMING_RUNS):
        net.infer(tensor)
    return (time.perf_counter() - start) / TIMING_RUNS * 1000


def _aligned(face: FaceSample) -> npt.NDArray[np.uint8]:
    return align_face(face.image, face.landmarks_xy)


def _variant(face: FaceSample, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """The face aligned from slightly moved landmarks (a small shift, scale and turn), maybe mirrored, with
    a small change of brightness and contrast."""
    eyes = float(np.linalg.norm(face.landmarks_xy[1] - face.landmarks_xy[0])) or 1.0
    jitter = rng.normal(0.0, 0.03 * eyes, size=(5, 2)).astype(np.float32)
    shift = rng.normal(0.0, 0.03 * eyes, size=(1, 2)).astype(np.float32)
    crop = align_face(face.image, face.landmarks_xy + jitter + shift)
    if rng.random() < 0.5:
        crop = np.ascontiguousarray(crop[:, ::-1])
    alpha, beta = rng.uniform(0.8, 1.2), rng.uniform(-20.0, 20.0)
    changed = np.clip(crop.astype(np.float32) * alpha + beta, 0, 255)
    return np.asarray(np.rint(changed), dtype=np.uint8)


def _exists(store: ModelStore, task: str, name: str, version: str) -> bool:
    try:
        store.get(task, name, version)
    except ModelStoreError:
        return False
    return True
