"""AdminService logic: enrol, update, delete, get and list people. Each change is one gallery revision,
published to the fanout once committed so every watching agent receives it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from facefleet.link.checks import check_groups, check_id, utc_now
from facefleet.link.gallery import Embedding, Person
from facefleet.server.domain.queries import PeopleCursor, page_size, people_scope
from facefleet.server.domain.records import (
    Crop,
    EnrolmentRequest,
    EnrolmentResult,
    PersonUpdate,
    StoredEnrolment,
)
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.gallery.embedder import EmbeddedImages, Enroller
from facefleet.server.state.fanout import GalleryFanout
from facefleet.server.state.interface import State

MAX_CONCURRENT_ENROLMENTS = 2


@dataclass(frozen=True)
class PersonView:
    person: Person
    stored_crops: int


MAX_SEARCH_CHARS = 128
"""The longest text a people search may look for."""
MAX_LOOKUP_IDS = 100
"""The most people one listing may ask for by id."""


class PeopleHandler:
    """enroller: builds (once) the image enroller, or raises FailedPreconditionError naming what is missing;
    known_models: model_id → embedding dimension of every embedding model the server knows; complete: an
    enrolment just stored, its crops given the embeddings of the models enrolment and rollouts in progress
    embed with that it did not bring, and the person as then stored (blocking; see
    facefleet.server.gallery.enrolment_models)."""

    def __init__(
        self,
        state: State,
        fanout: GalleryFanout,
        enroller: Callable[[], Enroller],
        known_models: Callable[[], Mapping[str, int]],
        complete: Callable[[StoredEnrolment], Person],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.state = state
        self.fanout = fanout
        self.enroller = enroller
        self.known_models = known_models
        self.complete = complete
        self.clock = clock
        self._enrolling = asyncio.Semaphore(MAX_CONCURRENT_ENROLMENTS)

    async def enrol(self, request: EnrolmentRequest) -> EnrolmentResult:
        self._check_embeddings(request.embeddings)
        embedded = EmbeddedImages((), (), ())
        if request.images:
            async with self._enrolling:
                enroller = await asyncio.to_thread(self.enroller)
                embedded = await asyncio.to_thread(enroller.embed, request.images)
        person = Person(
            person_id=request.person_id or str(uuid.uuid4()),
            display_name=request.display_name,
            groups=request.groups,
            metadata_json=request.metadata_json,
            embeddings=embedded.embeddings + request.embeddings,
        )
        now = self.clock()
        append = request.on_existing == "append"
        if request.on_existing == "fail":
            stored = await asyncio.to_thread(self.state.add_person, person, embedded.crops, now)
        else:
            stored = await asyncio.to_thread(
                lambda: self.state.replace_person(person, embedded.crops, now, append=append)
            )
        enrolment = StoredEnrolment(stored, person.embeddings, embedded.crops, append)
        stored = await asyncio.to_thread(self.complete, enrolment)
        await self.fanout.publish(stored.revision)
        return EnrolmentResult(stored, embedded.faces)

    async def enrol_embedded(
        self, person: Person, crops: Sequence[Crop], *, append: bool | None, snapshots: Sequence[str] = ()
    ) -> Person:
        """Store a person whose embeddings are computed already (e.g. from face snapshots) as one revision:
        a new person (append None: AlreadyExistsError when the id is taken), or added to (append True) an
        existing one. snapshots: the snapshot ids it came from, marked enrolled with it."""
        self._check_embeddings(person.embeddings)
        now = self.clock()
        if append is None:
            stored = await asyncio.to_thread(
                lambda: self.state.add_person(person, crops, now, snapshots=snapshots)
            )
        else:
            stored = await asyncio.to_thread(
                lambda: self.state.replace_person(person, crops, now, append=append, snapshots=snapshots)
            )
        enrolment = StoredEnrolment(stored, person.embeddings, tuple(crops), append is True)
        stored = await asyncio.to_thread(self.complete, enrolment)
        await self.fanout.publish(stored.revision)
        return stored

    async def update(self, update: PersonUpdate) -> Person:
        person = await asyncio.to_thread(
            lambda: self.state.update_person(
                update.person_id,
                self.clock(),
                display_name=update.display_name,
                groups=update.groups,
                metadata_json=update.metadata_json,
            )
        )
        await self.fanout.publish(person.revision)
        return person

    async def delete(self, person_id: str) -> int:
        revision = await asyncio.to_thread(self.state.delete_person, person_id, self.clock())
        await self.fanout.publish(revision)
        return revision

    async def get(self, person_id: str) -> PersonView:
        """The person with their embeddings (the caller decides whether to send the vectors)."""

        def read() -> PersonView:
            person = self.state.get_person(person_id, with_vectors=True)
            return PersonView(person, len(self.state.crops(person_id)))

        return await asyncio.to_thread(read)

    async def page(
        self, *, page_token: str, size: int, group: str, search: str = "", person_ids: Sequence[str] = ()
    ) -> tuple[list[Person], str]:
        """A page of people in `group` (all: ''), whose id or name contains `search` (any: ''), among
        `person_ids` (any: ()), and the token of the next page ('' on the last), bound to this group, search
        and person ids (facefleet.server.domain.paging)."""
        limit = page_size(size)
        if group:
            check_groups((group,))  # as a person's groups and a rollout's target group are checked
        if len(search) > MAX_SEARCH_CHARS:
            raise InvalidArgumentError(f"search: at most {MAX_SEARCH_CHARS} characters")
        if len(person_ids) > MAX_LOOKUP_IDS:
            raise InvalidArgumentError(f"person_id: at most {MAX_LOOKUP_IDS} at once; ask in batches")
        for person_id in person_ids:
            check_id("person_id", person_id)
        cursor = PeopleCursor.decode(page_token) if page_token else None
        scope = people_scope(group, search, person_ids)

        def read() -> tuple[list[Person], str]:
            key = self.state.page_seal()
            if cursor is not None:
                cursor.check(key, scope)
            people = self.state.list_people(
                after=cursor.person_id if cursor else "",
                limit=limit,
                group=group,
                search=search,
                person_ids=person_ids,
            )
            more = len(people) == limit
            return people, PeopleCursor(people[-1].person_id).sealed(key, scope).encode() if more else ""

        return await asyncio.to_thread(read)

    async def crop_counts(self, person_ids: list[str]) -> dict[str, int]:
        """How many face crops each of these people has kept."""
        return await asyncio.to_thread(self.state.crop_counts, person_ids)

    def _check_embeddings(self, embeddings: tuple[Embedding, ...]) -> None:
        if not embeddings:
            return
        known = self.known_models()
        for index, embedding in enumerate(embeddings):
            dim = known.get(embedding.model_id)
            if dim is None:
                names = ", ".join(sorted(known)) or "none: import models into the server's state directory"
                raise InvalidArgumentError(
                    f"embeddings[{index}]: unknown embedding model {embedding.model_id!r}; known: {names}"
                )
            if embedding.dim != dim:
                raise InvalidArgumentError(
                    f"embeddings[{index}]: {embedding.model_id} embeddings have {dim} dimensions, "
                    f"got {embedding.dim}"
                )
