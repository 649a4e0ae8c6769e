"""An INT8 variant a server published to run in its float model's place (`models quantize --in-place`), on
the agent: stored next to the float model, measured among its precisions, run under the float model's id
and gallery, kept across a restart, replaced by a later variant, withdrawn when the float model is asked for
again (retried, never refused, when that fails); refused with the reason where it cannot run in place.
Latencies come through the timer seam (never asserted); guards, compilations and the smoke inference are
real. The server's gallery is a seam here (tests/server/rollouts/test_variant_rollout.py has the real one)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from facefleet.agent.updates import updater as updater_module
from facefleet.agent.updates.updater import ModelUpdater, RetryLaterError, Switch
from facefleet.link.models import ModelAssignment, ModelRelease
from facefleet.vision.models.manifest import ModelManifest
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.precision.cache import PrecisionCache
from facefleet.vision.precision.plan import PrecisionPlan, PrecisionSettings
from facefleet.vision.runtime import Runtime, RuntimeSettings
from tests.agent.updates.test_model_updates import FileServer, release_of
from tests.precision_seams import injected, perturbed_ir
from tests.variants import store_variant_copy

FLOAT = "sface@2021dec"
VARIANT = "sface@2021dec-int8"
LATENCIES = {"f32": 8.0, "bf16": 6.0, "f16": 6.0, "int8": 2.0}
"""The variant is the fastest candidate, so it runs wherever its guard passes."""


@pytest.fixture(scope="module")
def auto_runtime(model_cache: Path) -> Runtime:
    return Runtime(RuntimeSettings(device="CPU", cache_dir=model_cache))


class PlannedAgent:
    """An agent's models with a precision plan (its choices cached in the state directory) and the switch
    callback of the service."""

    def __init__(self, runtime: Runtime, state: Path, settings: PrecisionSettings | None = None) -> None:
        self.calls: list[str] = []
        self.latencies = dict(LATENCIES)
        self.server_thresholds: list[float] = []
        """The server's cluster threshold, as the agent's store would hold it."""
        self.store = ModelStore(state / "models")
        cache = PrecisionCache(state / "precision.json")
        plan = PrecisionPlan(
            runtime,
            self.store,
            settings,
            cache,
            timer=injected(self.latencies, self.calls),
            thresholds=lambda model_id: (0.363, 0.5, *self.server_thresholds),
        )
        self.analyzer = FaceAnalyzer(runtime, self.store, precisions=plan)
        self.updater = ModelUpdater(self.store, lambda: self.analyzer, self.switch)

    def switch(self, switch: Switch) -> None:
        self.analyzer = switch.analyzer
        manifest = switch.model.manifest
        self.store.activate(manifest.task, manifest.name, manifest.version)
        switch.done.set_result(None)

    def reconcile(self, server: FileServer, release: ModelRelease) -> None:
        asyncio.run(self.updater.reconcile(ModelAssignment((release,)), server, 5.0))

    def stored(self) -> list[str]:
        return sorted(m.manifest.model_id for m in self.store.models())

    def embedding_status(self) -> tuple[str, int, str, str]:
        status = next(s for s in self.updater.statuses() if s.task == "embedding")
        return status.model_id, status.rollout_id, status.state, status.reason


@pytest.fixture
def state(tmp_path: Path, model_store: ModelStore) -> Path:
    """An agent's state directory with a copy of the session's float models."""
    shutil.copytree(model_store.root, tmp_path / "agent" / "models")
    return tmp_path / "agent"


def published_variant(
    tmp_path: Path, source: StoredModel, ir: Path | None = None, version: str | None = None
) -> FileServer:
    """A server's store holding an in-place INT8 variant of source (from another conversion of its source
    file: the IR sha256 differs), serving it."""
    server_store = ModelStore(tmp_path / "server" / "models")
    store_variant_copy(server_store, source, version, ir=ir, in_place=True)
    return FileServer(server_store)


def release_of_version(server: FileServer, version: str, rollout_id: int) -> ModelRelease:
    model = next(m for m in server.store.models() if m.manifest.version == version)
    return release_of(model, rollout_id)


class CompleteGallery:
    """The sync client's side of an embedding switch, with every model's gallery already applied."""

    def __init__(self) -> None:
        self.watched: list[tuple[str, ...]] = []

    def watch_models(self, models: tuple[str, ...]) -> None:
        self.watched.append(models)

    def gallery_has(self, model_id: str) -> bool:
        return True


def stored_float_copy(store: ModelStore, source: StoredModel, version: str) -> StoredModel:
    """source's files as another float version of the same model (another version an agent may run)."""
    staged = store.staging_dir()
    for name in source.manifest.files:
        shutil.copy(source.directory / name, staged / name)
    return store.add(staged, ModelManifest.from_json({**source.manifest.to_json(), "version": version}))


def test_a_variant_delivered_in_place_runs_under_the_float_models_id_and_is_withdrawn_on_rollback(
    auto_runtime: Runtime, state: Path, tmp_path: Path
) -> None:
    agent = PlannedAgent(auto_runtime, state)
    source = agent.store.active("embedding")
    assert not agent.updater.precisions()["embedding"].startswith("int8")
    server = published_variant(tmp_path, source)
    variant = server.store.models()[0]
    release = release_of(variant, rollout_id=7)

    agent.reconcile(server, release)

    assert agent.updater.versions()["embedding"] == FLOAT  # its id, its gallery
    assert agent.store.active("embedding").manifest.model_id == FLOAT
    assert agent.updater.precisions()["embedding"] == f"int8 ({VARIANT})"
    assert VARIANT in agent.stored()
    model_id, rollout_id, activation, reason = agent.embedding_status()
    assert (model_id, rollout_id, activation) == (VARIANT, 7, "active")
    assert f"runs in {FLOAT}'s place" in reason
    assert server.states("embedding") == ["downloading", "verifying", "active"]
    assert server.precisions[-1]["embedding"] == f"int8 ({VARIANT})"

    # the same assignment again: nothing downloaded, nothing measured
    agent.calls.clear()
    requests = len(server.requests)
    agent.reconcile(server, release)
    assert agent.calls == [] and len(server.requests) == requests

    # a restart finds the choice cached with the variant it measured
    restarted = PlannedAgent(auto_runtime, state)
    assert restarted.updater.precisions()["embedding"] == f"int8 ({VARIANT})"
    assert "int8" not in restarted.calls

    # the rollout rolled back: the float model is asked for again; the variant goes, the model is measured
    restarted.reconcile(server, ModelRelease("embedding", FLOAT, rollout_id=0))
    assert VARIANT not in restarted.stored()
    assert not restarted.updater.precisions()["embedding"].startswith("int8")
    assert "bf16" in restarted.calls or "f16" in restarted.calls or "f32" in restarted.calls
    model_id, _, activation, reason = restarted.embedding_status()
    assert (model_id, activation) == (FLOAT, "active")
    assert f"{VARIANT} withdrawn" in reason


def test_a_variant_that_cannot_run_in_place_is_refused_with_the_reason_and_not_kept(
    auto_runtime: Runtime, state: Path, tmp_path: Path
) -> None:
    overridden = PlannedAgent(auto_runtime, state, PrecisionSettings("f32"))
    server = published_variant(tmp_path, overridden.store.active("embedding"))
    overridden.reconcile(server, release_of(server.store.models()[0], rollout_id=7))
    model_id, rollout_id, activation, reason = overridden.embedding_status()
    assert (model_id, rollout_id, activation) == (VARIANT, 7, "failed")
    assert 'inference_precision = "auto"' in reason
    assert VARIANT not in overridden.stored()
    assert overridden.updater.precisions()["embedding"] == "f32"


def test_a_variant_running_in_place_is_refused_once_the_precision_is_pinned(
    auto_runtime: Runtime, state: Path, tmp_path: Path
) -> None:
    """The site pins the embedding precision after the variant arrived: the agent restarts at that
    precision, and the assignment it gets again no longer counts as applied."""
    agent = PlannedAgent(auto_runtime, state)
    server = published_variant(tmp_path, agent.store.active("embedding"))
    release = release_of(server.store.models()[0], rollout_id=7)
    agent.reconcile(server, release)
    assert agent.embedding_status()[:3] == (VARIANT, 7, "active")

    pinned = PlannedAgent(auto_runtime, state, PrecisionSettings("auto", {"embedding": "bf16"}))
    pinned.reconcile(server, release)
    model_id, rollout_id, activation, reason = pinned.embedding_status()
    assert (model_id, rollout_id, activation) == (VARIANT, 7, "failed")
    assert "this agent runs embedding at bf16" in reason
    assert VARIANT not in pinned.stored()


def test_a_variant_refused_by_the_guard_on_the_agents_faces_is_not_run(
    auto_runtime: Runtime, state: Path, tmp_path: Path
) -> None:
    agent = PlannedAgent(auto_runtime, state)
    source = agent.store.active("embedding")
    worse = perturbed_ir(source.xml_path, tmp_path / "worse.xml")  # made worse on purpose
    server = published_variant(tmp_path, source, ir=worse)
    before = agent.updater.precisions()["embedding"]

    agent.reconcile(server, release_of(server.store.models()[0], rollout_id=7))

    model_id, _, activation, reason = agent.embedding_status()
    assert (model_id, activation) == (VARIANT, "failed")
    assert "refused by the accuracy guard on this device at its thresholds" in reason
    assert VARIANT not in agent.stored()
    assert agent.updater.precisions()["embedding"] == before
    assert agent.updater.versions()["embedding"] == FLOAT
    restarted = PlannedAgent(auto_runtime, state)  # the choice measured with the refused variant still holds
    assert restarted.updater.precisions()["embedding"] == before
    assert restarted.calls == []


def test_a_later_variant_replaces_the_earlier_one_and_a_rollback_brings_that_back(
    auto_runtime: Runtime, state: Path, tmp_path: Path
) -> None:
    agent = PlannedAgent(auto_runtime, state)
    source = agent.store.active("embedding")
    first = published_variant(tmp_path / "first", source)
    second = published_variant(tmp_path / "second", source, version="2021dec-int8-b")

    agent.reconcile(first, release_of(first.store.models()[0], rollout_id=2))
    agent.reconcile(second, release_of(second.store.models()[0], rollout_id=5))
    assert VARIANT not in agent.stored() and "sface@2021dec-int8-b" in agent.stored()
    assert agent.updater.precisions()["embedding"] == "int8 (sface@2021dec-int8-b)"

    # rollout 5 rolled back: rollout 2's variant is the newest covering one again, and it alone competes
    agent.reconcile(first, release_of(first.store.models()[0], rollout_id=2))
    assert VARIANT in agent.stored() and "sface@2021dec-int8-b" not in agent.stored()
    assert agent.updater.precisions()["embedding"] == f"int8 ({VARIANT})"
    assert agent.embedding_status()[:3] == (VARIANT, 2, "active")


def test_an_agent_on_another_version_switches_to_the_stored_float_model_first(
    auto_runtime: Runtime, state: Path, tmp_path: Path
) -> None:
    """A later rollout of another version was rolled back while the variant's rollout stayed active: the
    variant comes back to an agent running that other version, and it still stores the float model."""
    store = ModelStore(state / "models")
    source = store.active("embedding")
    other = stored_float_copy(store, source, "2021dec-copy")
    store.activate("embedding", other.manifest.name, other.manifest.version)
    agent = PlannedAgent(auto_runtime, state)
    gallery = CompleteGallery()
    agent.updater.gallery = gallery
    assert agent.updater.versions()["embedding"] == "sface@2021dec-copy"
    server = published_variant(tmp_path, source)

    agent.reconcile(server, release_of(server.store.models()[0], rollout_id=7))

    assert agent.updater.versions()["embedding"] == FLOAT
    assert agent.store.active("embedding").manifest.model_id == FLOAT
    assert agent.updater.precisions()["embedding"] == f"int8 ({VARIANT})"
    assert ("sface@2021dec-copy", FLOAT) in gallery.watched  # the float model's gallery came first
    assert agent.embedding_status()[:3] == (VARIANT, 7, "active")


def test_a_withdrawal_that_fails_is_retried_and_never_refuses_the_float_model(
    auto_runtime: Runtime, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = PlannedAgent(auto_runtime, state)
    server = published_variant(tmp_path, agent.store.active("embedding"))
    agent.reconcile(server, release_of(server.store.models()[0], rollout_id=7))
    assert agent.updater.precisions()["embedding"] == f"int8 ({VARIANT})"

    def broken(*args: object) -> object:
        raise RuntimeError("compilation failed")

    float_again = ModelRelease("embedding", FLOAT, rollout_id=3)  # rollout 3 brought the float model
    with monkeypatch.context() as patched:
        patched.setattr(updater_module, "remeasured", broken)
        with pytest.raises(RetryLaterError):
            agent.reconcile(server, float_again)
    status = next(s for s in agent.updater.statuses() if s.task == "embedding")
    assert (status.model_id, status.rollout_id, status.state, status.final) == (FLOAT, 3, "failed", False)
    assert "compilation failed" in status.reason and "retrying later" in status.reason
    # the files went, but the frames still run the variant compiled before: not done yet
    assert VARIANT not in agent.stored()
    assert agent.updater.precisions()["embedding"] == f"int8 ({VARIANT})"

    agent.reconcile(server, float_again)
    assert not agent.updater.precisions()["embedding"].startswith("int8")
    model_id, rollout_id, activation, reason = agent.embedding_status()
    assert (model_id, rollout_id, activation) == (FLOAT, 3, "active")
    assert f"{VARIANT} withdrawn" in reason


def test_a_new_server_cluster_threshold_has_the_running_choice_measured_again_at_it(
    auto_runtime: Runtime, state: Path, tmp_path: Path
) -> None:
    """The server groups unknown faces at a threshold the agent's guard did not check: the variant that
    runs in the float model's place is measured again with it among the thresholds, once."""
    agent = PlannedAgent(auto_runtime, state)
    source = agent.store.active("embedding")
    server = published_variant(tmp_path, source)
    agent.reconcile(server, release_of(server.store.models()[0], rollout_id=7))
    assert agent.updater.precisions()["embedding"] == f"int8 ({VARIANT})"
    assert not asyncio.run(agent.updater.guard_changed("embedding"))  # measured at these thresholds

    running = agent.analyzer
    agent.server_thresholds.append(0.42)
    agent.calls.clear()
    assert asyncio.run(agent.updater.guard_changed("embedding"))
    assert agent.calls  # measured again; the same winner: nothing switched
    assert agent.analyzer is running and not agent.updater.unreported
    (entry,) = [
        e for e in json.loads((state / "precision.json").read_text())["choices"] if e["model_id"] == FLOAT
    ]
    assert entry["thresholds"] == [0.363, 0.42, 0.5]
    guarded = next(m for m in entry["choice"]["measurements"] if m["variant"] == VARIANT)["guard"]
    assert "decisions at 0.363, 0.5, 0.42 changed on" in guarded["summary"]

    agent.calls.clear()
    assert not asyncio.run(agent.updater.guard_changed("embedding"))  # measured at these already
    assert agent.calls == []

    agent.server_thresholds[:] = [0.45]
    agent.latencies["int8"] = 100.0  # another winner this time (a hint, or f32): it is switched in
    assert asyncio.run(agent.updater.guard_changed("embedding"))
    assert agent.analyzer is not running and agent.updater.unreported
    assert not agent.updater.precisions()["embedding"].startswith("int8")
    assert agent.updater.versions()["embedding"] == FLOAT
    pinned = PlannedAgent(auto_runtime, state, PrecisionSettings("f32"))
    pinned.server_thresholds.append(0.45)
    assert not asyncio.run(pinned.updater.guard_changed("embedding"))
