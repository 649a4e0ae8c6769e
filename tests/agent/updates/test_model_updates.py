"""Model versions assigned by the server, on the agent: resumable verified downloads, verification before
the switch, refusals that keep the running version running, and the disk bound.

The bytes come from a real published version (the expression model imported again at FP32, in a store laid
out as the server's) through `FileServer`, which serves them the way DownloadModel does and can break the
connection at a chosen byte. The gRPC path end to end is in
tests/server/rollouts/test_model_rollout.py.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.agent.cli.main import main as cli_main
from facefleet.agent.domain.records import StoreFullError
from facefleet.agent.updates import download as download_module
from facefleet.agent.updates.download import DiskFullError, download, part_path
from facefleet.agent.updates.statuses import STATUS_FILE
from facefleet.agent.updates.updater import ModelUpdater, RetryLaterError, Switch, UpdateSettings
from facefleet.link.models import ModelAssignment, ModelFile, ModelRelease, ModelStatus
from facefleet.vision.compiled_cache import COMPILED, SOURCE
from facefleet.vision.errors import ModelIntegrityError
from facefleet.vision.models.importer import DEFAULT_MODELS, import_model, locate_default
from facefleet.vision.models.manifest import MANIFEST_NAME, ModelManifest, sha256_file
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime, RuntimeSettings
from tests.tmpfs import fill, mounted_tmpfs
from tests.variants import store_variant_copy

EXPRESSION = DEFAULT_MODELS[2]
DETECTION = DEFAULT_MODELS[0]
NEW_VERSION = "fer2013-fp32"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> ModelStore:
    """The server's store: the expression model again, at FP32 (a real new version of a running model)."""
    store = ModelStore(tmp_path_factory.mktemp("server") / "models")
    located = locate_default(EXPRESSION)
    assert located is not None
    import_model(
        runtime,
        store,
        located[0],
        task="expression",
        name=EXPRESSION.name,
        version=NEW_VERSION,
        precision="FP32",
        activate=False,
    )
    return store


def release_of(model: StoredModel, rollout_id: int = 1) -> ModelRelease:
    files = tuple(
        ModelFile(name, (model.directory / name).stat().st_size, sha)
        for name, sha in sorted(model.manifest.files.items())
    )
    manifest = (model.directory / MANIFEST_NAME).read_text(encoding="utf-8")
    return ModelRelease(model.manifest.task, model.manifest.model_id, files, manifest, rollout_id)


class FileServer:
    """DownloadModel and ReportModelStatus over the files of a store, recording every call. break_at: a
    byte offset of a file at which the connection breaks, once."""

    def __init__(
        self,
        store: ModelStore,
        break_at: dict[str, int] | None = None,
        on_chunk: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.break_at = dict(break_at or {})
        self.on_chunk = on_chunk
        self.requests: list[tuple[str, str, int]] = []
        self.reports: list[list[ModelStatus]] = []
        self.versions: list[Mapping[str, str]] = []
        self.precisions: list[Mapping[str, str]] = []

    async def download(self, model_id: str, file: str, offset: int, timeout: float) -> AsyncIterator[bytes]:
        self.requests.append((model_id, file, offset))
        model = next(m for m in self.store.models() if m.manifest.model_id == model_id)
        data = (model.directory / file).read_bytes()
        position = offset
        while position < len(data):
            stop = self.break_at.get(file)
            if stop is not None and position >= stop:
                del self.break_at[file]
                raise ConnectionError("connection reset by peer")
            end = min(len(data), position + 64 * 1024, stop if stop is not None else len(data))
            yield data[position:end]
            position = end
            if self.on_chunk is not None:
                self.on_chunk()
            await asyncio.sleep(0)

    async def report_models(
        self,
        statuses: Sequence[ModelStatus],
        versions: Mapping[str, str],
        precisions: Mapping[str, str],
        timeout: float,
    ) -> None:
        self.reports.append(list(statuses))
        self.versions.append(dict(versions))
        self.precisions.append(dict(precisions))

    def states(self, task: str) -> list[str]:
        return [s.state for report in self.reports for s in report if s.task == task]


class Agent:
    """The agent's side of a switch without the service: the running analyzer and the switch callback."""

    def __init__(self, runtime: Runtime, root: Path, settings: UpdateSettings | None = None) -> None:
        self.store = ModelStore(root)
        self.analyzer = FaceAnalyzer(runtime, self.store)
        self.updater = ModelUpdater(self.store, lambda: self.analyzer, self.switch, settings)

    def switch(self, switch: Switch) -> None:
        self.analyzer = switch.analyzer
        manifest = switch.model.manifest
        self.store.activate(manifest.task, manifest.name, manifest.version)
        switch.done.set_result(None)

    def reconcile(self, server: FileServer, *releases: ModelRelease) -> None:
        asyncio.run(self.updater.reconcile(ModelAssignment(releases), server, 5.0))


@pytest.fixture(scope="module")
def agent_runtime(model_cache: Path) -> Runtime:
    """The session's runtime settings with the compiled-model cache an agent keeps by default, shared by this
    module's agents: each starts from a copy of the same models and most switch to the same new version."""
    return Runtime(RuntimeSettings(device="CPU", inference_precision="f32", cache_dir=model_cache))


@pytest.fixture
def agent(tmp_path: Path, agent_runtime: Runtime, model_store: ModelStore) -> Agent:
    shutil.copytree(model_store.root, tmp_path / "models")
    return Agent(agent_runtime, tmp_path / "models")


def expression_of(analyzer: FaceAnalyzer) -> str:
    assert analyzer.expression_model is not None
    return analyzer.expression_model.manifest.model_id


def tampered_copy(published: ModelStore, tmp_path: Path) -> ModelStore:
    """The published store with one byte of model.bin changed (its manifest still has the old sha256)."""
    root = tmp_path / "tampered"
    shutil.copytree(published.root, root)
    store = ModelStore(root)
    binary = store.models()[0].directory / "model.bin"
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    return store


# -- downloads -------------------------------------------------------------------------------------------


def test_a_broken_download_resumes_from_the_bytes_it_has(published: ModelStore, tmp_path: Path) -> None:
    model = published.models()[0]
    spec = next(f for f in release_of(model).files if f.name == "model.bin")
    server = FileServer(published, break_at={"model.bin": spec.size // 2})

    def fetch(file: str, offset: int) -> AsyncIterator[bytes]:
        return server.download(model.manifest.model_id, file, offset, 5.0)

    with pytest.raises(ConnectionError):
        asyncio.run(download(fetch, spec, tmp_path))
    kept = part_path(tmp_path, spec).stat().st_size
    assert kept == spec.size // 2
    path = asyncio.run(download(fetch, spec, tmp_path))
    assert [offset for _, _, offset in server.requests] == [0, kept]
    assert sha256_file(path) == spec.sha256


def test_bytes_that_differ_from_the_release_are_refused_and_forgotten(
    published: ModelStore, tmp_path: Path
) -> None:
    model = published.models()[0]
    spec = next(f for f in release_of(model).files if f.name == "model.bin")
    wrong = ModelFile(spec.name, spec.size, "0" * 64)
    server = FileServer(published)

    def fetch(file: str, offset: int) -> AsyncIterator[bytes]:
        return server.download(model.manifest.model_id, file, offset, 5.0)

    with pytest.raises(ModelIntegrityError, match="corrupted or tampered"):
        asyncio.run(download(fetch, wrong, tmp_path / "downloads"))
    assert list((tmp_path / "downloads").iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root to mount), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "tiny-disk", "1m") as mount_point:
        yield mount_point


def test_a_full_disk_during_a_download_says_so_and_leaves_no_partial_file(
    published: ModelStore, tiny_disk: Path
) -> None:
    model = published.models()[0]
    spec = next(f for f in release_of(model).files if f.name == "model.bin")
    (tiny_disk / "downloads").mkdir()
    filler = fill(tiny_disk)
    os.truncate(filler, filler.stat().st_size - 16 * 1024)  # room for a quarter of the file
    assert spec.size > 4 * 16 * 1024
    server = FileServer(published)

    def fetch(file: str, offset: int) -> AsyncIterator[bytes]:
        return server.download(model.manifest.model_id, file, offset, 5.0)

    with pytest.raises(DiskFullError, match=r"disk full while downloading model\.bin"):
        asyncio.run(download(fetch, spec, tiny_disk / "downloads"))
    assert list((tiny_disk / "downloads").iterdir()) == []


# -- switching -------------------------------------------------------------------------------------------


def test_an_assigned_version_is_downloaded_verified_and_switched_to(
    agent: Agent, published: ModelStore, astronaut: np.ndarray
) -> None:
    before = expression_of(agent.analyzer)
    old_nets = dict(agent.analyzer._nets)
    server = FileServer(published)
    release = release_of(published.models()[0], rollout_id=7)
    agent.reconcile(server, release)
    assert expression_of(agent.analyzer) == release.model_id
    assert agent.store.active("expression").manifest.model_id == release.model_id
    assert server.states("expression") == ["downloading", "verifying", "active"]
    assert server.versions[-1]["expression"] == release.model_id
    assert server.precisions[-1] == {"detection": "f32", "embedding": "f32", "expression": "f32"}
    status = agent.updater.statuses()[0]
    assert (status.model_id, status.rollout_id, status.state) == (release.model_id, 7, "active")
    # the previous version stays for a rollback; the detector and embedder were not compiled again
    assert before in [m.manifest.model_id for m in agent.store.versions("expression")]
    shared = [key for key in old_nets if key[0] != "expression"]
    assert shared and all(agent.analyzer._nets[key] is old_nets[key] for key in shared)
    face = agent.analyzer.analyze(astronaut)[0]
    assert face.expression is not None and face.expression.label == "happy"
    # statuses survive a restart, and a repeated assignment does nothing
    saved = json.loads((agent.store.root / STATUS_FILE).read_text())
    assert saved["statuses"]["expression"]["state"] == "active"
    requests = len(server.requests)
    agent.reconcile(server, release)
    assert len(server.requests) == requests


def test_a_rollback_to_a_stored_version_needs_no_download(agent: Agent, published: ModelStore) -> None:
    before = agent.store.active("expression")
    server = FileServer(published)
    agent.reconcile(server, release_of(published.models()[0]))
    downloads = len(server.requests)
    agent.reconcile(server, ModelRelease("expression", before.manifest.model_id))
    assert expression_of(agent.analyzer) == before.manifest.model_id
    assert agent.store.active("expression").manifest.model_id == before.manifest.model_id
    assert len(server.requests) == downloads


def test_a_tampered_file_is_refused_and_the_running_version_kept(
    agent: Agent, published: ModelStore, tmp_path: Path
) -> None:
    before = expression_of(agent.analyzer)
    release = release_of(published.models()[0], rollout_id=3)
    server = FileServer(tampered_copy(published, tmp_path))
    agent.reconcile(server, release)
    assert expression_of(agent.analyzer) == before
    assert agent.store.active("expression").manifest.model_id == before
    failed = agent.updater.statuses()[0]
    assert (failed.state, failed.rollout_id) == ("failed", 3)
    assert "model.bin" in failed.reason and "tampered" in failed.reason
    assert server.states("expression")[-1] == "failed"
    assert not any((agent.store.root / ".downloads").iterdir())
    # the same rollout is not retried, not even by a restarted agent; a new rollout of the version is
    requests = len(server.requests)
    agent.reconcile(server, release)
    assert len(server.requests) == requests
    restarted = ModelUpdater(agent.store, lambda: agent.analyzer, agent.switch)
    assert restarted.pending(ModelAssignment((release,))) == []
    agent.reconcile(FileServer(published), release_of(published.models()[0], rollout_id=4))
    assert expression_of(agent.analyzer) == release.model_id


def test_models_list_shows_where_an_assigned_version_stands(
    agent: Agent, published: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.reconcile(FileServer(tampered_copy(published, tmp_path)), release_of(published.models()[0], 5))
    assert cli_main(["--state-dir", str(agent.store.root.parent), "models", "list"]) == 0
    refused = capsys.readouterr().out
    assert f"expression {release_of(published.models()[0]).model_id} (rollout 5): failed:" in refused
    agent.reconcile(FileServer(published), release_of(published.models()[0], 6))
    assert cli_main(["--state-dir", str(agent.store.root.parent), "models", "list", "--json"]) == 0
    listed = {m["version"]: m for m in json.loads(capsys.readouterr().out) if m["task"] == "expression"}
    assert listed[NEW_VERSION]["active"] is True
    assert (listed[NEW_VERSION]["rollout"]["state"], listed[NEW_VERSION]["rollout"]["rollout_id"]) == (
        "active",
        6,
    )


def relabelled(source: StoredModel, tmp_path: Path, task: str, version: str) -> ModelStore:
    """A store holding source's files under another task: what a wrong catalogue entry would send."""
    store = ModelStore(tmp_path / f"relabelled-{version}")
    staged = store.staging_dir()
    for name in source.manifest.files:
        shutil.copyfile(source.directory / name, staged / name)
    manifest = ModelManifest.from_json({**source.manifest.to_json(), "task": task, "version": version})
    store.add(staged, manifest)
    return store


def test_a_model_that_does_not_fit_its_task_is_refused(
    agent: Agent, model_store: ModelStore, tmp_path: Path
) -> None:
    detector = model_store.active("detection")
    wrong = relabelled(detector, tmp_path, "expression", "yunet-as-expression")
    before = expression_of(agent.analyzer)
    agent.reconcile(FileServer(wrong), release_of(wrong.models()[0]))
    status = agent.updater.statuses()[0]
    assert status.state == "failed"
    assert "does not fit task 'expression'" in status.reason
    assert expression_of(agent.analyzer) == before


def test_a_model_that_cannot_be_compiled_is_refused(
    agent: Agent, published: ModelStore, tmp_path: Path
) -> None:
    broken = ModelStore(tmp_path / "broken")
    staged = broken.staging_dir()
    source = published.models()[0]
    (staged / "model.xml").write_text("<?xml version='1.0'?><net name='broken' version='11'><layers>")
    shutil.copyfile(source.directory / "model.bin", staged / "model.bin")
    files = {name: sha256_file(staged / name) for name in ("model.bin", "model.xml")}
    manifest = ModelManifest.from_json({**source.manifest.to_json(), "version": "broken", "files": files})
    broken.add(staged, manifest)
    before = expression_of(agent.analyzer)
    agent.reconcile(FileServer(broken), release_of(broken.models()[0]))
    status = agent.updater.statuses()[0]
    assert status.state == "failed"
    assert "cannot be read" in status.reason or "does not compile" in status.reason
    assert expression_of(agent.analyzer) == before
    assert agent.store.active("expression").manifest.model_id == before


def test_a_smoke_inference_without_a_face_refuses_the_version(
    tmp_path: Path, agent_runtime: Runtime, model_store: ModelStore, published: ModelStore
) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 128, np.uint8))
    shutil.copytree(model_store.root, tmp_path / "models")
    agent = Agent(agent_runtime, tmp_path / "models", UpdateSettings(smoke_photo=blank))
    agent.reconcile(FileServer(published), release_of(published.models()[0]))
    status = agent.updater.statuses()[0]
    assert status.state == "failed"
    assert "smoke test" in status.reason and "no face found" in status.reason
    stored = [m.manifest.model_id for m in agent.store.versions("expression")]
    assert status.model_id not in stored  # a refused version takes no place among keep_versions


def test_versions_beyond_keep_versions_are_removed_but_never_the_previous_one(
    tmp_path: Path, runtime: Runtime, agent_runtime: Runtime, model_store: ModelStore, published: ModelStore
) -> None:
    shutil.copytree(model_store.root, tmp_path / "models")
    agent = Agent(agent_runtime, tmp_path / "models", UpdateSettings(keep_versions=2))
    original = expression_of(agent.analyzer)
    located = locate_default(EXPRESSION)
    assert located is not None
    second = ModelStore(tmp_path / "second")
    import_model(runtime, second, located[0], task="expression", name=EXPRESSION.name, version="fer2013-b")
    gone = agent_runtime.settings.cache_dir / COMPILED / "feedfacefeedface"  # blobs of a removed model
    gone.mkdir(parents=True)
    (gone / SOURCE).write_text(f"{agent_runtime.version}\n{tmp_path / 'removed' / 'model.xml'}\n")
    agent.reconcile(FileServer(published), release_of(published.models()[0]))
    assert not gone.exists()
    assert sorted(m.manifest.model_id for m in agent.store.versions("expression")) == sorted(
        [original, f"{EXPRESSION.name}@{NEW_VERSION}"]
    )
    agent.reconcile(FileServer(second), release_of(second.models()[0]))
    stored = [m.manifest.model_id for m in agent.store.versions("expression")]
    assert stored == [f"{EXPRESSION.name}@{NEW_VERSION}", f"{EXPRESSION.name}@fer2013-b"]
    assert expression_of(agent.analyzer) == f"{EXPRESSION.name}@fer2013-b"


def test_an_int8_variant_takes_no_place_among_keep_versions_and_goes_with_its_float_model(
    tmp_path: Path, runtime: Runtime, agent_runtime: Runtime, model_store: ModelStore, published: ModelStore
) -> None:
    shutil.copytree(model_store.root, tmp_path / "models")
    agent = Agent(agent_runtime, tmp_path / "models", UpdateSettings(keep_versions=2))
    original = agent.store.active("expression").manifest.model_id
    variant = store_variant_copy(agent.store, agent.store.active("expression")).manifest.model_id
    located = locate_default(EXPRESSION)
    assert located is not None
    second = ModelStore(tmp_path / "second")
    import_model(runtime, second, located[0], task="expression", name=EXPRESSION.name, version="fer2013-b")
    gone = agent_runtime.settings.cache_dir / COMPILED / "feedfacefeedface"  # blobs of a removed model
    gone.mkdir(parents=True)
    (gone / SOURCE).write_text(f"{agent_runtime.version}\n{tmp_path / 'removed' / 'model.xml'}\n")
    agent.reconcile(FileServer(published), release_of(published.models()[0]))
    assert not gone.exists()
    newer = f"{EXPRESSION.name}@{NEW_VERSION}"
    assert sorted(m.manifest.model_id for m in agent.store.versions("expression")) == sorted(
        [original, variant, newer]
    )
    agent.reconcile(FileServer(second), release_of(second.models()[0]))
    stored = [m.manifest.model_id for m in agent.store.versions("expression")]
    assert stored == [newer, f"{EXPRESSION.name}@fer2013-b"]


def test_an_int8_model_of_the_same_source_is_not_taken_for_the_releases_own_conversion(
    agent: Agent, published: ModelStore
) -> None:
    """A float IR converted by the agent stands for the server's conversion of the same source; an INT8
    model does not (its files are its calibration's), so a release with other files is refused."""
    stored = store_variant_copy(agent.store, agent.store.active("expression"))
    theirs = {name: "f" * 64 for name in stored.manifest.files}
    manifest = json.dumps({**stored.manifest.to_json(), "files": theirs})
    files = tuple(ModelFile(name, 1000, sha) for name, sha in sorted(theirs.items()))
    release = ModelRelease("expression", stored.manifest.model_id, files, manifest, 9)
    agent.reconcile(FileServer(published), release)
    status = agent.updater.statuses()[0]
    assert status.state == "failed" and "other files than the release" in status.reason


def test_a_task_the_agent_does_not_run_is_refused_and_stale_partial_downloads_are_forgotten(
    agent: Agent, published: ModelStore, model_store: ModelStore
) -> None:
    downloads = agent.store.root / ".downloads"
    downloads.mkdir()
    stale = downloads / f"{'ab' * 32}.part"
    stale.write_bytes(b"half a model of a rolled-back release")
    mesh = next(m for m in model_store.models() if m.manifest.task == "landmarks")
    server = FileServer(model_store)
    agent.reconcile(server, release_of(mesh, rollout_id=2))
    (status,) = agent.updater.statuses()
    assert (status.task, status.state) == ("landmarks", "failed")
    assert status.reason == "this agent runs no landmarks model"
    assert server.requests == []
    assert not stale.exists()


def refused_for_now(agent: Agent, published: ModelStore) -> tuple[FileServer, ModelRelease, ModelStatus]:
    """Roll the published expression model out to an agent that cannot take it yet: the reconcile asks to be
    tried again, the running version stays, on disk too. The server, the release and the last status."""
    before = expression_of(agent.analyzer)
    server = FileServer(published)
    release = release_of(published.models()[0])
    with pytest.raises(RetryLaterError):
        agent.reconcile(server, release)
    assert expression_of(agent.analyzer) == before
    assert agent.store.active("expression").manifest.model_id == before
    return server, release, server.reports[-1][0]


def test_a_full_disk_refuses_the_version_keeps_the_running_one_and_tells_the_server(
    agent: Agent, published: ModelStore, tiny_disk: Path
) -> None:
    (agent.store.root / ".downloads").symlink_to(tiny_disk, target_is_directory=True)
    fill(tiny_disk)
    server, release, refused = refused_for_now(agent, published)
    assert server.states("expression")[-1] == "failed"
    assert "disk full while downloading" in refused.reason and not refused.final
    assert [p.name for p in tiny_disk.iterdir()] == ["filler"]
    (tiny_disk / "filler").unlink()  # space freed: the next try of the same rollout succeeds
    agent.reconcile(server, release)
    assert expression_of(agent.analyzer) == release.model_id


@pytest.mark.parametrize("where", ["download", "staging", "install"])
def test_a_spent_quota_is_tried_again_and_leaves_no_partial_file(
    agent: Agent, published: ModelStore, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """EDQUOT where ext4, XFS or NFS report a quota spent by delayed allocation: at the fsync of the partial
    download, when the staging folder is made (inodes), or while the verified files are stored as a
    version."""

    def quota_spent(*args: object) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    if where == "download":
        monkeypatch.setattr(download_module, "_sync", quota_spent)
    elif where == "staging":
        monkeypatch.setattr(agent.store, "staging_dir", quota_spent)
    else:
        monkeypatch.setattr(agent.store, "add", quota_spent)
    server, release, refused = refused_for_now(agent, published)
    assert refused.state == "failed" and not refused.final
    assert "Disk quota exceeded" in refused.reason and "retrying later" in refused.reason
    parts = list((agent.store.root / ".downloads").glob("*.part"))
    assert len(parts) == (2 if where == "staging" else 0)  # verified downloads wait for the next try
    monkeypatch.undo()  # the quota raised: the next try of the same rollout succeeds
    agent.reconcile(server, release)
    assert expression_of(agent.analyzer) == release.model_id


class FullDiskAgent(Agent):
    """An agent whose disk is full when it switches to a new version: `full` is the error its switch fails
    with (the service's: writing active.json, or the store reading the new model's gallery), None once
    there is room."""

    full: Exception | None = None

    def switch(self, switch: Switch) -> None:
        if self.full is not None:
            switch.done.set_exception(self.full)
        else:
            super().switch(switch)


@pytest.mark.parametrize(
    "full",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        StoreFullError("store agent.db: the disk is full (database or disk is full); free space there"),
    ],
    ids=["no-space", "quota", "store"],
)
def test_a_full_disk_when_the_version_is_switched_to_is_tried_again_without_a_new_download(
    tmp_path: Path, agent_runtime: Runtime, model_store: ModelStore, published: ModelStore, full: Exception
) -> None:
    shutil.copytree(model_store.root, tmp_path / "models")
    agent = FullDiskAgent(agent_runtime, tmp_path / "models")
    agent.full = full
    server, release, refused = refused_for_now(agent, published)
    assert refused.state == "failed" and not refused.final
    assert f"disk full while switching to model {release.model_id}" in refused.reason
    assert release.model_id in [m.manifest.model_id for m in agent.store.versions("expression")]
    downloaded = len(server.requests)
    agent.full = None  # space freed: the next try switches to the version it stored
    agent.reconcile(server, release)
    assert expression_of(agent.analyzer) == release.model_id
    assert len(server.requests) == downloaded


def test_a_rollback_uses_the_agents_own_conversion_of_the_same_source(
    agent: Agent, published: ModelStore
) -> None:
    """The server's IR of a default model may differ byte for byte from the agent's (other OpenVINO)."""
    original = agent.store.active("expression")
    agent.reconcile(FileServer(published), release_of(published.models()[0]))
    server_bytes = {name: "f" * 64 for name in original.manifest.files}
    manifest = json.dumps({**original.manifest.to_json(), "files": server_bytes})
    files = tuple(ModelFile(name, 1000, sha) for name, sha in sorted(server_bytes.items()))
    server = FileServer(published)
    agent.reconcile(server, ModelRelease("expression", original.manifest.model_id, files, manifest, 9))
    assert expression_of(agent.analyzer) == original.manifest.model_id
    assert server.requests == []
    other_source = json.dumps(
        {**json.loads(manifest), "source": {**original.manifest.to_json()["source"], "sha256": "0" * 64}}
    )
    agent.reconcile(FileServer(published), release_of(published.models()[0]))
    agent.reconcile(server, ModelRelease("expression", original.manifest.model_id, files, other_source, 10))
    status = agent.updater.statuses()[0]
    assert status.state == "failed" and "other files than the release" in status.reason


def test_a_rollback_during_a_download_abandons_the_version_without_switching(
    agent: Agent, published: ModelStore
) -> None:
    original = expression_of(agent.analyzer)
    rollback = ModelRelease("expression", original)
    newer = ModelAssignment((rollback,))
    server = FileServer(published, on_chunk=lambda: agent.updater.assign(newer))
    agent.reconcile(server, release_of(published.models()[0], rollout_id=8))
    assert expression_of(agent.analyzer) == original
    assert server.states("expression") == ["downloading"]  # neither failed nor active
    assert f"{EXPRESSION.name}@{NEW_VERSION}" not in [
        m.manifest.model_id for m in agent.store.versions("expression")
    ]
    asyncio.run(agent.updater.reconcile(newer, server, 5.0))  # what the sync loop does next
    assert server.states("expression")[-1] == "active"
    assert agent.updater.statuses()[0].model_id == original
    assert not any((agent.store.root / ".downloads").iterdir())


def test_a_partial_file_spoiled_by_a_crash_is_fetched_again_from_the_start(
    published: ModelStore, tmp_path: Path
) -> None:
    model = published.models()[0]
    spec = next(f for f in release_of(model).files if f.name == "model.bin")
    part_path(tmp_path, spec).write_bytes(b"\xff" * (spec.size // 2))  # not the file's first half
    server = FileServer(published)

    def fetch(file: str, offset: int) -> AsyncIterator[bytes]:
        return server.download(model.manifest.model_id, file, offset, 5.0)

    path = asyncio.run(download(fetch, spec, tmp_path))
    assert [offset for _, _, offset in server.requests] == [spec.size // 2, 0]
    assert sha256_file(path) == spec.sha256
