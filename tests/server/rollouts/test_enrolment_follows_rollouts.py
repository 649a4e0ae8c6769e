"""A running server's enrolment follows the embedding models of rollouts in a background task of its own: a
look at what changed only reads and publishes, so a device disabled while a rollout's model embeds the
people enrolled before it is refused at once; one embedding runs at a time and a newer rollout is followed
next; a look or a background task that fails is tried again at the next look."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import numpy.typing as npt
import pytest

import facefleet.server.app as app
from facefleet.link.checks import utc_now
from facefleet.link.gallery import Embedding, Person
from facefleet.server.config import ServerConfig
from facefleet.server.domain.models import PublishedModel, Target
from facefleet.server.domain.records import Crop
from facefleet.server.errors import StateError
from facefleet.server.gallery import enrolment_models
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.gallery.enrolment_models import EnrolmentModels
from facefleet.server.gallery.reembed import CropEmbedder, ReembedResult, reembed
from facefleet.server.paths import ServerPaths
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.state.interface import State
from facefleet.server.state.models import ModelState
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import admin_pb2, fleet_pb2
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime
from tests.server.conftest import Harness, Pki, encode, run, serving
from tests.server.fleet.test_devices import change, refused

OLD = "sface@2021dec"
NEW = "sface@2021dec-fp32"
OTHER = "sface@2021dec-b"
GUARD_S = 20.0
"""Bounds a wait that only a hung test reaches."""
SLOW_POLL = {"poll_seconds": 60}
"""Within a test, the server looks at the state only when the test calls refresh()."""


class HeldEmbedding:
    """The re-embedding of crops that enrolment_models runs, held at its start until `release` is set (a
    gallery of thousands takes minutes); records each call's model and how many ran at once. `failures`:
    errors raised by the next calls instead."""

    def __init__(self, failures: Sequence[Exception] = ()) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.failures = list(failures)
        self.models: list[str] = []
        self.running = self.most = 0
        self._lock = threading.Lock()

    def __call__(
        self, state: State, embedder: CropEmbedder, person_ids: Sequence[str] | None = None, **kwargs: object
    ) -> ReembedResult:
        with self._lock:
            self.models.append(embedder.model_id)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.entered.set()
            assert self.release.wait(GUARD_S)
            if self.failures:
                raise self.failures.pop(0)
            return reembed(state, embedder, person_ids, **kwargs)  # type: ignore[arg-type]
        finally:
            with self._lock:
                self.running -= 1


def published(
    harness: Harness, runtime: Runtime, model_irs: dict[str, Path], *versions: str
) -> list[PublishedModel]:
    """SFace at FP32 published on the server as each of these versions."""
    server = harness.server
    catalog = ModelCatalog(server.state.models, server.models, runtime)
    return [catalog.publish(model_irs[NEW], "embedding", "sface", v, "FP32") for v in versions]


def enrolled_before(harness: Harness, astronaut: npt.NDArray[np.uint8]) -> None:
    """Eileen, enrolled with OLD only, with her crop: the people a new model's rollout must embed."""
    crop = Crop("png", encode(cv2.resize(astronaut, (112, 112)), ".png"), "image:0")
    person = Person("eileen", embeddings=(Embedding(OLD, np.ones(128, np.float32) / np.sqrt(128)),))
    harness.server.state.add_person(person, [crop], utc_now())


def start_rollout(harness: Harness, model_id: str) -> None:
    """A rollout of model_id, as `rollout start` records it before it embeds anyone."""
    harness.server.state.models.add_rollout(model_id, Target("all"), "preparing", utc_now())


def lacking(harness: Harness, model_id: str) -> list[str]:
    return harness.server.state.models.people_without_model(model_id)


def test_a_device_disabled_while_a_rollout_embeds_the_gallery_is_refused_at_once(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    astronaut: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = HeldEmbedding()
    monkeypatch.setattr(enrolment_models, "reembed", held)

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet=SLOW_POLL) as harness:
            server = harness.server
            stub = await harness.registered("door-1")
            await asyncio.to_thread(published, harness, runtime, model_irs, "2021dec-fp32")
            await asyncio.to_thread(enrolled_before, harness, astronaut)
            start_rollout(harness, NEW)
            try:
                await asyncio.wait_for(server.refresh(), GUARD_S)  # the look that notices the rollout
                assert await asyncio.to_thread(held.entered.wait, GUARD_S)  # eileen being embedded

                disabled = change(harness, "door-1", admin_pb2.DEVICE_ACTION_DISABLE, reason="stolen")
                await asyncio.wait_for(disabled, GUARD_S)
                call = stub.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="test"))
                assert (await refused(call)).code() == grpc.StatusCode.PERMISSION_DENIED
                assert lacking(harness, NEW) == ["eileen"]  # the embedding is still under way
            finally:
                held.release.set()
            assert await server.enrolment.followed()
            assert lacking(harness, NEW) == []

    run(scenario)


def test_a_rollout_started_while_another_is_followed_is_followed_next_one_at_a_time(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    astronaut: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = HeldEmbedding()
    monkeypatch.setattr(enrolment_models, "reembed", held)

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet=SLOW_POLL) as harness:
            server = harness.server
            await asyncio.to_thread(published, harness, runtime, model_irs, "2021dec-fp32", "2021dec-b")
            await asyncio.to_thread(enrolled_before, harness, astronaut)
            start_rollout(harness, NEW)
            try:
                await asyncio.wait_for(server.refresh(), GUARD_S)
                assert await asyncio.to_thread(held.entered.wait, GUARD_S)
                start_rollout(harness, OTHER)
                await asyncio.wait_for(server.refresh(), GUARD_S)
                assert server.enrolment.embedding_models() == (OLD, NEW, OTHER)  # named at once
                assert held.models == [NEW]  # nothing embeds beside it
            finally:
                held.release.set()
            assert await server.enrolment.followed()
            assert (held.models, held.most) == ([NEW, OTHER], 1)
            assert server.enrolment.enroller().model_ids == (OLD, NEW, OTHER)
            assert lacking(harness, NEW) == lacking(harness, OTHER) == []

    run(scenario)


def test_a_look_whose_rollouts_could_not_be_read_is_retried(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = [StateError("database is locked")]
    read = app.rollout_embedding_models

    def hiccup(models: ModelState) -> tuple[str, ...]:
        if failures:
            raise failures.pop()
        return read(models)

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet=SLOW_POLL) as harness:
            server = harness.server
            stub = await harness.registered("door-1")
            await asyncio.to_thread(published, harness, runtime, model_irs, "2021dec-fp32")
            start_rollout(harness, NEW)
            monkeypatch.setattr(app, "rollout_embedding_models", hiccup)
            with pytest.raises(StateError):
                await server.refresh()

            await server.refresh()  # the next look

            welcome = await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="t"))
            assert list(welcome.embedding_models) == [OLD, NEW]
            assert await server.enrolment.followed()
            assert server.enrolment.enroller().model_ids == (OLD, NEW)

    run(scenario)


@pytest.mark.parametrize("failing", ["rebuild", "embedding"])
def test_enrolment_that_failed_to_follow_a_rollout_tries_again_at_the_next_look(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    astronaut: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """rebuild: the model's files are not in this server's models folder yet (published through another
    replica onto a shared folder that lags); embedding: the database refuses the embeddings once."""
    held = HeldEmbedding([StateError("database is locked")] if failing == "embedding" else [])
    held.release.set()
    monkeypatch.setattr(enrolment_models, "reembed", held)

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet=SLOW_POLL) as harness:
            server = harness.server
            await asyncio.to_thread(published, harness, runtime, model_irs, "2021dec-fp32")
            await asyncio.to_thread(enrolled_before, harness, astronaut)
            files = server.models.root / "embedding" / "sface" / "2021dec-fp32"
            if failing == "rebuild":
                shutil.move(files, tmp_path / "lagging")
            start_rollout(harness, NEW)

            await server.refresh()
            followed = await server.enrolment.followed()
            assert lacking(harness, NEW) == ["eileen"]
            if failing == "rebuild":
                assert server.enrolment.enroller().model_ids == (OLD,)  # serving with what it had
                shutil.move(tmp_path / "lagging", files)
            assert not followed

            await server.refresh()  # the next look, nothing changed meanwhile
            followed = await server.enrolment.followed()
            assert server.enrolment.enroller().model_ids == (OLD, NEW)
            assert lacking(harness, NEW) == []
            assert followed

    run(scenario)


def test_a_rollout_noticed_while_the_enroller_is_first_built_is_in_the_enroller(
    tmp_path: Path,
    analyzer: Any,
    model_store: ModelStore,
    runtime: Runtime,
    model_irs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    building, release = threading.Event(), threading.Event()

    def held_enroller(*args: Any, **kwargs: Any) -> Enroller:  # the real one, held while it compiles
        building.set()
        assert release.wait(20)
        return Enroller(*args, **kwargs)

    monkeypatch.setattr(enrolment_models, "FaceAnalyzer", lambda *a, **k: analyzer)
    monkeypatch.setattr(enrolment_models, "Enroller", held_enroller)
    config = ServerConfig()
    state = SqliteState(tmp_path / "server.db")
    store = ModelStore(shutil.copytree(model_store.root, tmp_path / "models"))
    ModelCatalog(state.models, store, runtime).publish(
        model_irs[NEW], "embedding", "sface", "2021dec-fp32", "FP32"
    )
    models = EnrolmentModels(
        config, ServerPaths.from_config(tmp_path / "s", config), state, store, lambda: runtime
    )

    async def scenario() -> tuple[str, ...]:
        first_use = asyncio.create_task(asyncio.to_thread(models.enroller))  # the first image enrolment
        assert await asyncio.to_thread(building.wait, 20)
        await models.follow_rollouts((NEW,))  # a look notices a rollout of NEW meanwhile
        release.set()
        return (await first_use).model_ids

    try:
        assert NEW in asyncio.run(scenario())
    finally:
        state.close()
