"""Importing OpenVINO IR (NAME.xml + NAME.bin): the store's own default models exported as IR go back in
through the real importer and the agent's CLI, pass the same task checks as ONNX and TFLite, are saved with
the same compression, and give the same results on a real face; IR without its weights and XML that is no
IR are refused with messages that say what is wrong and what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.cli.main import main
from facefleet.core.errors import EXIT_DATA, EXIT_OK
from facefleet.vision.errors import ModelSpecError, ModelStoreError
from facefleet.vision.faces import Face
from facefleet.vision.models.importer import import_model
from facefleet.vision.models.manifest import sha256_file
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime
from tests.vision.models.test_model_store import default_path

TASKS = ("detection", "embedding", "expression")


def export_ir(model: StoredModel, directory: Path, stem: str = "exported") -> Path:
    """A stored model's IR as a user would take it elsewhere: STEM.xml with STEM.bin beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model.xml_path, directory / f"{stem}.xml")
    shutil.copyfile(model.directory / "model.bin", directory / f"{stem}.bin")
    return directory / f"{stem}.xml"


def only_face(analyzer: FaceAnalyzer, image: npt.NDArray[np.uint8]) -> Face:
    [face] = analyzer.analyze(image)
    return face


def cosine(a: npt.NDArray[np.float32] | None, b: npt.NDArray[np.float32] | None) -> float:
    assert a is not None and b is not None
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def stored_files(store: ModelStore) -> list[Path]:
    return sorted(p.relative_to(store.root) for p in store.root.rglob("*") if ".staging" not in p.parts)


def test_the_stores_own_models_exported_as_ir_import_again_and_give_the_same_results(
    model_store: ModelStore,
    runtime: Runtime,
    analyzer: FaceAnalyzer,
    astronaut: npt.NDArray[np.uint8],
    tmp_path: Path,
) -> None:
    store = ModelStore(tmp_path / "models")
    imported = {}
    for task in TASKS:
        original = model_store.active(task)
        xml = export_ir(original, tmp_path / "export" / task)
        model = import_model(runtime, store, xml, task=task, name=original.manifest.name, version="from-ir")
        manifest = model.manifest
        assert (manifest.inputs, manifest.outputs) == (original.manifest.inputs, original.manifest.outputs)
        assert manifest.precision == "FP16" and set(manifest.files) == {"model.xml", "model.bin"}
        assert manifest.source.sha256 == sha256_file(xml)
        assert manifest.source.weights_sha256 == sha256_file(xml.with_suffix(".bin"))
        assert store.verify_files(model) == []
        assert store.active(task) == model  # the first model of its task becomes the active one
        imported[task] = model

    reimported = FaceAnalyzer(runtime, None, models=imported)
    before, after = only_face(analyzer, astronaut), only_face(reimported, astronaut)
    assert cosine(before.embedding, after.embedding) >= 0.999
    np.testing.assert_allclose(after.detection.box_xyxy, before.detection.box_xyxy, atol=0.5)
    assert before.expression is not None and after.expression is not None
    assert after.expression.label == before.expression.label == "happy"
    np.testing.assert_allclose(
        list(after.expression.probabilities.values()),
        list(before.expression.probabilities.values()),
        atol=1e-3,
    )

    again = import_model(
        runtime,
        store,
        tmp_path / "export" / "embedding" / "exported.xml",
        task="embedding",
        name="sface",
        version="from-ir",
    )
    assert again.manifest.created_at == imported["embedding"].manifest.created_at  # the same IR: a no-op


def test_an_fp32_ir_is_saved_with_fp16_weights_like_a_converted_model(
    runtime: Runtime, analyzer: FaceAnalyzer, astronaut: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    """The embedding model converted from its ONNX at FP32, then imported as IR at FP16: compressed the
    way `import-defaults` compresses, and its embedding of a real face agrees with the FP16 default's."""
    fp32 = import_model(
        runtime,
        ModelStore(tmp_path / "fp32"),
        default_path("embedding"),
        task="embedding",
        name="sface",
        version="fp32",
        precision="FP32",
    )
    assert 'element_type="f16"' not in fp32.xml_path.read_text()
    xml = export_ir(fp32, tmp_path / "export")
    fp16 = import_model(
        runtime, ModelStore(tmp_path / "fp16"), xml, task="embedding", name="sface", version="1"
    )
    assert 'element_type="f16"' in fp16.xml_path.read_text() and fp16.manifest.precision == "FP16"
    assert (fp16.directory / "model.bin").stat().st_size < 0.6 * xml.with_suffix(".bin").stat().st_size
    face = only_face(analyzer, astronaut)
    for model in (fp32, fp16):
        embedded = only_face(analyzer.with_model(model), astronaut)
        assert cosine(face.embedding, embedded.embedding) >= 0.999


def test_the_two_files_of_an_ir_may_be_given_apart_and_a_changed_bin_is_another_model(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path
) -> None:
    original = model_store.active("expression")
    xml = export_ir(original, tmp_path / "xml", stem="net")
    weights = tmp_path / "weights" / "expression-weights.bin"
    weights.parent.mkdir()
    xml.with_suffix(".bin").rename(weights)
    store = ModelStore(tmp_path / "models")
    model = import_model(
        runtime, store, xml, task="expression", name="mini-xception", version="v1", weights=weights
    )
    assert model.manifest.outputs == original.manifest.outputs
    assert model.manifest.source.weights_sha256 == sha256_file(weights)

    with weights.open("r+b") as handle:  # other weights under the same xml: not the same model
        handle.seek(64)
        handle.write(bytes(16))
    with pytest.raises(ModelStoreError, match="already exists with other files"):
        import_model(
            runtime, store, xml, task="expression", name="mini-xception", version="v1", weights=weights
        )
    with pytest.raises(ModelSpecError, match="goes only with an OpenVINO IR"):
        import_model(
            runtime,
            store,
            default_path("expression"),
            task="expression",
            name="x",
            version="1",
            weights=weights,
        )


def test_ir_that_does_not_fit_its_task_is_refused_and_nothing_is_stored(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    xml = export_ir(model_store.active("expression"), tmp_path / "export")
    with pytest.raises(ModelSpecError, match=r"does not fit task 'embedding': input must be N×3×112×112"):
        import_model(runtime, store, xml, task="embedding", name="oops", version="1")
    xml = export_ir(model_store.active("embedding"), tmp_path / "export")
    with pytest.raises(ModelSpecError, match="YuNet layout"):
        import_model(runtime, store, xml, task="detection", name="oops", version="1")
    assert stored_files(store) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<html><body>a web page</body></html>", "not an OpenVINO IR: its root element is <html>, not <net>"),
        ("net = 1\n", "not an OpenVINO IR: it is not XML"),
        ("", "not an OpenVINO IR: it is not XML"),
    ],
)
def test_xml_that_is_not_ir_is_refused_as_such(
    runtime: Runtime, tmp_path: Path, content: str, message: str
) -> None:
    xml = tmp_path / "model.xml"
    xml.write_text(content)
    xml.with_suffix(".bin").write_bytes(bytes(8))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelSpecError, match=message) as caught:
        import_model(runtime, store, xml, task="embedding", name="x", version="1")
    assert str(xml) in str(caught.value) and ".onnx or .tflite" in str(caught.value)
    assert stored_files(store) == []


def test_ir_without_its_weights_names_the_missing_file_and_the_fix(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path
) -> None:
    xml = export_ir(model_store.active("embedding"), tmp_path / "export", stem="sface")
    xml.with_suffix(".bin").unlink()
    store = ModelStore(tmp_path / "models")
    expected = (
        f"{xml}: the weights of this OpenVINO IR are missing: no file {xml.with_suffix('.bin')}. "
        "An IR is NAME.xml with NAME.bin beside it: put sface.bin next to sface.xml, "
        "or give the .bin file as well"
    )
    with pytest.raises(ModelSpecError) as caught:
        import_model(runtime, store, xml, task="embedding", name="x", version="1")
    assert str(caught.value) == expected
    with pytest.raises(
        ModelSpecError, match=r"the weights given for this OpenVINO IR, .*elsewhere\.bin, are no file"
    ):
        import_model(
            runtime, store, xml, task="embedding", name="x", version="1", weights=tmp_path / "elsewhere.bin"
        )
    assert stored_files(store) == []


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_agent_cli_imports_ir_and_refuses_half_an_ir(
    model_store: ModelStore, runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    shutil.copytree(model_store.root, state / "models")
    original = model_store.active("embedding")
    xml = export_ir(original, tmp_path / "export", stem="sface")
    base = ["--state-dir", str(state), "models", "import"]
    task = ["--task", "embedding", "--name", "sface"]

    code, out, err = cli(capsys, *base, str(xml), *task, "--version", "ir", "--activate", "--json")
    assert code == EXIT_OK, err
    [shown] = json.loads(out)
    assert shown["active"] and shown["source"]["weights_sha256"] == sha256_file(xml.with_suffix(".bin"))
    assert shown["outputs"] == [spec.to_json() for spec in original.manifest.outputs]
    store = ModelStore(state / "models")
    assert store.active("embedding").manifest.version == "ir"
    assert runtime.describe(store.active("embedding").xml_path).outputs == original.manifest.outputs

    weights = xml.with_suffix(".bin").rename(tmp_path / "weights.bin")
    code, out, err = cli(capsys, *base, str(weights), str(xml), *task, "--version", "ir-apart", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)[0]["source"]["weights_sha256"] == sha256_file(weights)

    code, out, err = cli(capsys, *base, str(xml), *task, "--version", "half")
    assert code == EXIT_DATA and out == ""
    assert f"no file {xml.with_suffix('.bin')}" in err and "put sface.bin next to sface.xml" in err
    page = tmp_path / "page.xml"
    page.write_text("<html/>")
    code, _, err = cli(capsys, *base, str(page), *task, "--version", "page")
    assert code == EXIT_DATA and "not an OpenVINO IR" in err
    code, _, err = cli(capsys, *base, str(xml), str(page), *task, "--version", "two")
    assert code == EXIT_DATA and "an OpenVINO IR's .xml and its .bin" in err
    assert sorted(m.manifest.version for m in store.versions("embedding")) == ["2021dec", "ir", "ir-apart"]
