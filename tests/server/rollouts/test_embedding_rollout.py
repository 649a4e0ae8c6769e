"""Rolling out a new embedding model: the server re-embeds every enrolled face from its retained crop before
any agent hears of the model, agents receive the completed gallery before the assignment, new enrolments
embed with both models, and people without crops are reported (they need re-enrolment)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.link.gallery import Embedding, Person
from facefleet.server.domain.models import Target
from facefleet.server.domain.records import Crop
from facefleet.server.gallery.embedder import EmbeddedImages, Enroller
from facefleet.server.gallery.reembed import CropEmbedder, reembed
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.control import RolloutControl, StartedRollout
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import admin_pb2, fleet_pb2, gallery_pb2
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.runtime import Runtime
from tests.server.conftest import Pki, encode, next_update, run, serving
from tests.server.fleet.test_fleet_service import random_embedding

OLD = "sface@2021dec"
NEW = "sface@2021dec-fp32"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def vectors(person: gallery_pb2.Person, model_id: str) -> list[npt.NDArray[np.float32]]:
    return [np.frombuffer(e.vector, dtype="<f4") for e in person.embeddings if e.model_id == model_id]


@pytest.mark.slow
def test_an_embedding_rollout_completes_the_gallery_before_agents_switch(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    astronaut_jpeg: bytes,
    astronaut: npt.NDArray[np.uint8],
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness:
            server = harness.server
            catalog = ModelCatalog(server.state.models, server.models, runtime)
            await asyncio.to_thread(
                catalog.publish, model_irs[NEW], "embedding", "sface", "2021dec-fp32", "FP32"
            )
            admin = harness.admin()
            await admin.EnrollPerson(
                admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg]),
                metadata=harness.admin_md,
            )
            await admin.EnrollPerson(
                admin_pb2.EnrollPersonRequest(
                    person_id="vector-only", embeddings=[random_embedding(np.random.default_rng(3))]
                ),
                metadata=harness.admin_md,
            )
            before = (
                await admin.GetPerson(
                    admin_pb2.GetPersonRequest(person_id="eileen", include_embeddings=True),
                    metadata=harness.admin_md,
                )
            ).person
            fleet = await harness.registered("door-1")
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
            seen: dict[str, gallery_pb2.Person] = {}

            control = RolloutControl(server.state, catalog, runtime=runtime, settle_seconds=0.5)
            start = asyncio.create_task(asyncio.to_thread(control.start, NEW, Target("all")))
            while True:  # everything the agent receives up to the assignment
                message = await next_update(stream, timeout=60)
                if message.HasField("gallery"):
                    seen.update({p.person_id: p for p in message.gallery.upserts})
                if message.HasField("models"):
                    break
            started: StartedRollout = await start
            assert [(r.task, r.model_id) for r in message.models.releases] == [("embedding", NEW)]
            assert len(vectors(seen["eileen"], NEW)) == 1, "the gallery for the new model came first"
            stream.cancel()

            # the server's enrolment now embeds with both models, and says so to agents
            welcome = await fleet.Register(fleet_pb2.RegisterRequest(device_id="door-1"))
            enrolled = await admin.EnrollPerson(
                admin_pb2.EnrollPersonRequest(
                    person_id="eileen-mirrored", images=[encode(np.ascontiguousarray(astronaut[:, ::-1]))]
                ),
                metadata=harness.admin_md,
            )
            after = (
                await admin.GetPerson(
                    admin_pb2.GetPersonRequest(person_id="eileen", include_embeddings=True),
                    metadata=harness.admin_md,
                )
            ).person
            assert started.rollout.state == "active"
            assert (started.reembedded, started.without_crops) == (("eileen",), ("vector-only",))
            assert list(welcome.embedding_models) == [OLD, NEW]
            assert list(enrolled.faces[0].model_ids) == [OLD, NEW]
            # the other model's embeddings are untouched; the new one is what enrolment computes
            assert [v.tolist() for v in vectors(after, OLD)] == [v.tolist() for v in vectors(before, OLD)]
            reference = enroller.with_models((OLD, NEW), server.models).embed([astronaut_jpeg])
            [expected] = [e.vector for e in reference.embeddings if e.model_id == NEW]
            [reembedded] = vectors(after, NEW)
            assert float(reembedded @ expected) > 0.99
            assert server.state.models.people_without_model(NEW) == ["vector-only"]

    run(scenario)


class EnrolledMeanwhile(CropEmbedder):
    """The real embedder; while it embeds the crops it read first, the person is re-enrolled from another
    crop by an enroller that already embeds with the same model (once)."""

    def __init__(self, runtime: Runtime, model: StoredModel, state: SqliteState, newer: Crop) -> None:
        super().__init__(runtime, model)
        self.state, self.newer, self.calls = state, newer, 0

    def embed_crops(self, crops: Sequence[Crop], quality: dict[str, float]) -> list[Embedding]:
        self.calls += 1
        if self.calls == 1:
            [embedding] = super().embed_crops([self.newer], {})
            self.state.replace_person(
                Person("eileen", embeddings=(embedding,)), [self.newer], NOW, append=False
            )
        return super().embed_crops(crops, quality)


def test_reembedding_never_overwrites_a_newer_enrolment_with_older_crops(
    tmp_path: Path, runtime: Runtime, model_store: ModelStore, astronaut: npt.NDArray[np.uint8]
) -> None:
    face = cv2.resize(astronaut, (112, 112))
    older, newer = (
        Crop("png", encode(f, ".png"), "image:0") for f in (face, np.ascontiguousarray(face[:, ::-1]))
    )
    state = SqliteState(tmp_path / "state.db")
    other = Embedding("other@v1", np.ones(128, np.float32))
    state.add_person(Person("eileen", embeddings=(other,)), [older], NOW)
    embedder = EnrolledMeanwhile(runtime, model_store.get("embedding", "sface", "2021dec"), state, newer)
    [expected] = embedder.embed_crops([newer], {})
    [stale] = embedder.embed_crops([older], {})
    assert float(expected.vector @ stale.vector) < 0.99  # the two crops are told apart
    embedder.calls = 0

    result = reembed(state, embedder, clock=lambda: NOW)

    person = state.get_person("eileen")
    [stored] = [e for e in person.embeddings if e.model_id == OLD]
    assert np.allclose(stored.vector, expected.vector, atol=1e-5), "embedded from the newer crop"
    assert (result.reembedded, result.without_crops, embedder.calls) == (("eileen",), (), 2)
    assert state.crops("eileen") == [newer]
    state.close()


class HeldEnroller(Enroller):
    """The session's enrolment pipeline, whose embedding of photos waits until `release` is set (a large
    enrolment, or a busy CPU); `entered` is set once it has begun."""

    def __init__(self, base: Enroller, store: ModelStore, runtime: Runtime) -> None:
        super().__init__(base.analyzer, store, runtime, base.settings)
        self.entered, self.release = threading.Event(), threading.Event()

    def embed(self, images: Sequence[bytes]) -> EmbeddedImages:
        self.entered.set()
        assert self.release.wait(60)
        return super().embed(images)


def test_a_person_enrolled_while_a_rollout_completes_its_gallery_gets_the_new_model_too(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    runtime: Runtime,
    model_store: ModelStore,
    model_irs: dict[str, Path],
    astronaut_jpeg: bytes,
) -> None:
    """An enrolment embedding its photos with the old model alone commits after the rollout's sweeps have
    looked for people lacking the new one, and after the rollout turned active: it embeds the person's crop
    with the new model itself."""
    held = HeldEnroller(enroller, model_store, runtime)

    async def scenario() -> None:
        async with serving(tmp_path, pki, held, fleet={"poll_seconds": 60}) as harness:
            server = harness.server
            catalog = ModelCatalog(server.state.models, server.models, runtime)
            await asyncio.to_thread(
                catalog.publish, model_irs[NEW], "embedding", "sface", "2021dec-fp32", "FP32"
            )
            enrolling = asyncio.ensure_future(
                harness.admin().EnrollPerson(
                    admin_pb2.EnrollPersonRequest(person_id="late", images=[astronaut_jpeg]),
                    metadata=harness.admin_md,
                )
            )
            assert await asyncio.to_thread(held.entered.wait, 20)
            control = RolloutControl(server.state, catalog, runtime=runtime, settle_seconds=0)
            started = await asyncio.to_thread(control.start, NEW, Target("all"))
            assert (started.rollout.state, started.reembedded) == ("active", ())
            held.release.set()
            enrolled = await enrolling
            assert list(enrolled.faces[0].model_ids) == [OLD]  # its photo was embedded before the rollout
            person = server.state.get_person("late", with_vectors=True)
            assert sorted(person.model_ids()) == [OLD, NEW]
            assert enrolled.revision == person.revision == server.state.head_revision()
            assert server.state.models.people_without_model(NEW) == []

    run(scenario)
