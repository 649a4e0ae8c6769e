"""An enrolment through an enroller that lacks an embedding model of a rollout in progress (the command
line's, or a server's that has not noticed the rollout yet) is completed once stored: its crops are embedded
with that model too, so the rollout's gallery holds every face the other models hold, and only those. A
completion that fails is done by the server's background task at its next look, without enrolling again."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.link.gallery import Person
from facefleet.server.config import ServerConfig
from facefleet.server.domain.models import Target
from facefleet.server.domain.records import EnrolmentRequest
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.gallery.enrolment_models import EnrolmentModels
from facefleet.server.gallery.people import PeopleHandler
from facefleet.server.gallery.reembed import CropEmbedder
from facefleet.server.paths import ServerPaths
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.state.fanout import GalleryFanout
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime
from tests.server.conftest import encode

OLD = "sface@2021dec"
NEW = "sface@2021dec-fp32"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


class Site:
    """A server's state with NEW published and rolled out, and enrolment through the session's enroller,
    which embeds with OLD only."""

    def __init__(
        self, tmp_path: Path, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
    ) -> None:
        self.state = SqliteState(tmp_path / "server.db")
        self.store = ModelStore(tmp_path / "models")
        catalog = ModelCatalog(self.state.models, self.store, runtime)
        catalog.publish(model_irs[NEW], "embedding", "sface", "2021dec-fp32", "FP32")
        config = ServerConfig()
        paths = ServerPaths.from_config(tmp_path / "state", config)
        enrolment = EnrolmentModels(config, paths, self.state, self.store, lambda: runtime, enroller)
        self.enrolment = enrolment
        self.enroller = enroller
        self.people = PeopleHandler(
            self.state, GalleryFanout(0), enrolment.enroller, enrolment.known_models, enrolment.complete
        )
        self.new_model = CropEmbedder(runtime, self.store.get("embedding", "sface", "2021dec-fp32"))
        self.state.models.add_rollout(NEW, Target("all"), "active", NOW)

    async def enrol(self, photo: bytes, on_existing: str, entry: str) -> None:
        """Enrol a photo of eileen through AdminService's path (photos) or the HTTP upload's (embedded)."""
        if entry == "photos":
            request = EnrolmentRequest("eileen", images=(photo,), on_existing=on_existing)  # type: ignore[arg-type]
            await self.people.enrol(request)
            return
        embedded = await asyncio.to_thread(self.enroller.embed, [photo])
        person = Person("eileen", embeddings=embedded.embeddings)
        append = {"fail": None, "append": True, "replace": False}[on_existing]
        await self.people.enrol_embedded(person, embedded.crops, append=append)

    def vectors(self, model_id: str) -> list[npt.NDArray[np.float32]]:
        person = self.state.get_person("eileen", with_vectors=True)
        return [e.vector for e in person.embeddings if e.model_id == model_id]

    def crops_embedded(self, data: list[bytes]) -> list[npt.NDArray[np.float32]]:
        """What NEW makes of these stored crops."""
        crops = [c for c in self.state.crops("eileen") if c.data in data]
        return [e.vector for e in self.new_model.embed_crops(crops, {})]


def photos(astronaut: npt.NDArray[np.uint8]) -> tuple[bytes, bytes]:
    """Two photos of one face that its embeddings tell apart."""
    return encode(astronaut), encode(np.ascontiguousarray(astronaut[:, ::-1]))


def same(a: list[npt.NDArray[np.float32]], b: list[npt.NDArray[np.float32]]) -> bool:
    return len(a) == len(b) and all(np.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("entry", ["photos", "embedded"])
def test_a_photo_appended_without_the_rollouts_model_is_embedded_with_it_too(
    tmp_path: Path,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    astronaut: npt.NDArray[np.uint8],
    entry: str,
) -> None:
    site = Site(tmp_path, enroller, runtime, model_irs)
    first, second = photos(astronaut)
    asyncio.run(site.enrol(first, "fail", entry))
    kept = site.vectors(NEW)
    first_crops = [c.data for c in site.state.crops("eileen")]
    assert len(kept) == len(site.vectors(OLD)) == 1

    asyncio.run(site.enrol(second, "append", entry))

    added = [c.data for c in site.state.crops("eileen") if c.data not in first_crops]
    [appended] = site.crops_embedded(added)
    assert len(site.vectors(OLD)) == len(site.vectors(NEW)) == 2
    assert same(site.vectors(NEW), [*kept, appended]), "the first face's kept, the appended one's added"
    assert float(kept[0] @ appended) < 0.99  # the two photos are told apart
    assert site.state.models.people_without_model(NEW) == []
    site.state.close()


def test_a_replaced_face_is_the_only_one_the_rollouts_model_matches(
    tmp_path: Path,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    astronaut: npt.NDArray[np.uint8],
) -> None:
    site = Site(tmp_path, enroller, runtime, model_irs)
    first, second = photos(astronaut)
    asyncio.run(site.enrol(first, "fail", "photos"))
    old_face = site.vectors(NEW)

    asyncio.run(site.enrol(second, "replace", "photos"))

    [crop] = site.state.crops("eileen")
    assert len(site.vectors(OLD)) == 1
    assert same(site.vectors(NEW), site.crops_embedded([crop.data]))
    assert not same(site.vectors(NEW), old_face)
    site.state.close()


@pytest.mark.parametrize("on_existing", ["fail", "append"])
def test_an_enrolment_whose_completion_failed_is_completed_at_the_next_look(
    tmp_path: Path,
    enroller: Enroller,
    runtime: Runtime,
    model_irs: dict[str, Path],
    astronaut: npt.NDArray[np.uint8],
    on_existing: str,
) -> None:
    """NEW's files are missing from the models folder while the enrolment completes (a folder shared with
    another replica that lags); an appended photo's person has NEW's embeddings of the first one already,
    so only a retry by person finds them."""
    site = Site(tmp_path, enroller, runtime, model_irs)
    first, second = photos(astronaut)
    files = site.store.root / "embedding" / "sface" / "2021dec-fp32"

    async def scenario() -> None:
        await site.enrolment.follow_rollouts((NEW,))  # as the server's first look does
        assert await site.enrolment.followed()
        if on_existing == "append":
            await site.enrol(first, "fail", "embedded")
        shutil.move(files, tmp_path / "lagging")
        await site.enrol(second, on_existing, "embedded")
        shutil.move(tmp_path / "lagging", files)
        assert len(site.vectors(NEW)) < len(site.vectors(OLD))

        site.enrolment.catch_up()  # the server's next look
        assert await site.enrolment.followed()

    asyncio.run(scenario())
    assert same(site.vectors(NEW), site.crops_embedded([c.data for c in site.state.crops("eileen")]))
    assert len(site.vectors(OLD)) == len(site.vectors(NEW)) == (2 if on_existing == "append" else 1)
    site.state.close()
