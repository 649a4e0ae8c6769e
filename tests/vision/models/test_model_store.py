"""Model import ("model optimizer" step), manifests, verification and atomic activation."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facefleet.vision.errors import ModelSpecError, ModelStoreError
from facefleet.vision.models.importer import DEFAULT_MODELS, import_defaults, import_model, locate_default
from facefleet.vision.models.manifest import ModelManifest, sha256_file
from facefleet.vision.models.onnx_fold import dequantize
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.runtime import Runtime


def default_path(task: str) -> Path:
    located = locate_default(next(m for m in DEFAULT_MODELS if m.task == task))
    assert located is not None
    return located[0]


def copy_store(model_store: ModelStore, tmp_path: Path) -> ModelStore:
    shutil.copytree(model_store.root, tmp_path / "models")
    return ModelStore(tmp_path / "models")


def test_defaults_are_imported_with_complete_manifests(model_store: ModelStore) -> None:
    models = {m.manifest.task: m for m in model_store.models()}
    assert set(models) >= {"detection", "embedding", "expression"}
    for model in models.values():
        manifest = model.manifest
        assert set(manifest.files) == {"model.xml", "model.bin"}
        for name, digest in manifest.files.items():
            assert sha256_file(model.directory / name) == digest
        assert manifest.source.package and manifest.source.package_version and manifest.licence != "unknown"
        assert manifest.precision == "FP16" and manifest.inputs and manifest.outputs
        on_disk = json.loads((model.directory / "manifest.json").read_text())
        assert on_disk["task"] == manifest.task and on_disk["files"] == manifest.files
    assert models["embedding"].manifest.outputs[0].shape == (1, 128)
    assert model_store.active("embedding").manifest.name == "sface"


def test_sface_weights_are_folded_to_compressed_ir(model_store: ModelStore) -> None:
    """SFace ships block-quantised int8; after folding and FP16 compression the IR holds fp16 weights."""
    sface = model_store.active("embedding")
    xml = (sface.directory / "model.xml").read_text()
    assert "DequantizeLinear" not in xml and 'element_type="f16"' in xml


def test_reimport_of_the_same_model_is_a_no_op(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path)
    before = store.get("expression", "mini-xception", "fer2013").manifest
    again = import_model(
        runtime, store, default_path("expression"), task="expression", name="mini-xception", version="fer2013"
    )
    assert again.manifest.created_at == before.created_at


def test_same_version_with_other_files_is_refused(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path)
    with pytest.raises(ModelStoreError, match="already exists"):
        import_model(
            runtime,
            store,
            default_path("expression"),
            task="expression",
            name="mini-xception",
            version="fer2013",
            precision="FP32",
        )


def test_model_that_does_not_fit_its_task_is_refused_and_nothing_is_stored(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path)
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if ".staging" not in p.parts)
    with pytest.raises(ModelSpecError, match=r"does not fit task 'embedding': input must be N×3×112×112"):
        import_model(runtime, store, default_path("expression"), task="embedding", name="oops", version="1")
    with pytest.raises(ModelSpecError, match="YuNet layout"):
        import_model(runtime, store, default_path("embedding"), task="detection", name="oops", version="1")
    after = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if ".staging" not in p.parts)
    assert after == before
    assert not any((store.root / ".staging").iterdir())


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.onnx", b"garbage", "cannot convert"),
        ("model.pt", b"x", "unsupported model format"),
        ("missing.onnx", None, "no such model file"),
    ],
)
def test_unreadable_model_files_are_clear_errors(
    runtime: Runtime, tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelSpecError, match=message):
        import_model(runtime, ModelStore(tmp_path / "store"), path, task="detection", name="x", version="1")


def test_activation_switches_atomically_and_keeps_the_old_version(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path)
    import_model(
        runtime,
        store,
        default_path("expression"),
        task="expression",
        name="mini-xception",
        version="fer2013-fp32",
        precision="FP32",
    )
    assert store.active("expression").manifest.version == "fer2013"
    store.activate("expression", "mini-xception", "fer2013-fp32")
    assert store.active("expression").manifest.precision == "FP32"
    assert store.active("detection").manifest.name == "yunet"
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".active")] == []
    store.get("expression", "mini-xception", "fer2013")
    with pytest.raises(ModelStoreError, match="no model expression/none/1"):
        store.activate("expression", "none", "1")


def test_tampered_file_is_reported_by_name(model_store: ModelStore, tmp_path: Path) -> None:
    store = copy_store(model_store, tmp_path)
    model = store.active("embedding")
    with (model.directory / "model.bin").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    problems = store.verify_files(model)
    assert len(problems) == 1 and "model.bin" in problems[0] and "sha256" in problems[0]
    (model.directory / "model.xml").unlink()
    assert any("model.xml: missing" in p for p in store.verify_files(model))


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 65])
def test_names_that_are_not_safe_folder_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ModelStoreError, match="not allowed"):
        ModelStore(tmp_path).get("detection", bad, "1")


def test_no_active_model_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="import-defaults"):
        ModelStore(tmp_path).active("detection")


@pytest.mark.parametrize(
    ("quantized", "scale", "zero_point", "axis", "block", "expected"),
    [
        (np.array([[2, 4, 6, 8]], np.int8), np.array([[0.5, 2.0]], np.float32), None, 1, 2, [[1, 2, 12, 16]]),
        (
            np.array([[2, 4, 6]], np.int8),
            np.array([[1.0, 10.0]], np.float32),
            np.array([[1, 2]], np.int8),
            1,
            2,
            [[1, 3, 40]],
        ),
        (
            np.array([[1], [2], [3]], np.int8),
            np.array([[2.0], [3.0]], np.float32),
            None,
            0,
            2,
            [[2], [4], [9]],
        ),
        (np.empty((0, 4), np.int8), np.empty((0, 2), np.float32), None, 1, 2, np.empty((0, 4))),
    ],
)
def test_blocked_dequantize(
    quantized: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    axis: int,
    block: int,
    expected: object,
) -> None:
    result = dequantize(quantized, scale, zero_point, axis, block)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, np.asarray(expected, np.float32))


def test_importing_the_defaults_again_keeps_the_stored_models(
    runtime: Runtime, model_store: ModelStore
) -> None:
    """`scripts/setup` runs the import on every call: a second one must neither fail nor change a file."""
    before = {(m.manifest.model_id, tuple(sorted(m.manifest.files.items()))) for m in model_store.models()}
    again = import_defaults(runtime, model_store)
    assert {m.manifest.model_id for m in again} <= {model_id for model_id, _ in before}
    assert {
        (m.manifest.model_id, tuple(sorted(m.manifest.files.items()))) for m in model_store.models()
    } == before


def add_at_once(store: ModelStore, folders: list[Path], manifest: ModelManifest) -> list[object]:
    """store.add(folder, manifest) for each folder, in threads released together; what each returned or
    raised."""
    start = threading.Barrier(len(folders))
    outcomes: list[object] = []

    def publish(folder: Path) -> None:
        start.wait()
        try:
            outcomes.append(store.add(folder, manifest))
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=publish, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_the_same_version_added_by_two_publishers_at_once_is_stored_once(
    model_store: ModelStore, tmp_path: Path
) -> None:
    """Two server replicas sharing one store publish the same model at the same moment: both get the stored
    model, and neither leaves its staged copy behind."""
    source = model_store.get("expression", "mini-xception", "fer2013")
    store = ModelStore(tmp_path / "shared")

    def staged() -> Path:
        folder = store.staging_dir()
        for name in source.manifest.files:
            shutil.copy(source.directory / name, folder / name)
        return folder

    for attempt in range(8):  # the moves race within microseconds: several tries make them collide
        manifest = replace(source.manifest, version=f"race-{attempt}")
        outcomes = add_at_once(store, [staged(), staged()], manifest)
        assert [type(o) for o in outcomes] == [StoredModel, StoredModel], outcomes
        assert store.get("expression", "mini-xception", f"race-{attempt}").manifest.files == manifest.files
    assert list((store.root / ".staging").iterdir()) == []
