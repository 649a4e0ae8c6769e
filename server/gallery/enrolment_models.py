"""Which embedding models enrolment embeds with, and the enroller that does it: the configured (or active)
models plus those of embedding rollouts in progress. A rollout's new model joins enrolment as soon as the
server notices it, and people enrolled before that get its embeddings from their crops. Rebuilding the
enroller (compiling the model) and embedding those people (at a rollout's start, nearly the whole gallery)
run as one background task at a time, never inside the server's look at what changed; a task that fails
is logged and started again at the next look.

An enrolment embeds its photos before it commits, with the models its enroller had when it began (the command
line's, or a server's that has not noticed a rollout yet), and may commit after a rollout's sweeps
(facefleet.server.rollouts.control) have looked for people lacking the rollout's model. So once an enrolment
has committed, `complete` reads the rollouts again and embeds the crops it brought with every model of
enrolment and of the rollouts that it did not bring: the added crops when it added to a person who has that
model's embeddings already, otherwise all the person's crops (a new person, a replaced face, whose old
embeddings went with it). Rollouts and enrolments commit one after the other: a rollout that committed
before the enrolment is seen by `complete`, and one that committed after it sees the person's crops in its
first sweep. A completion that fails (a locked database, a model's files missing) is retried by the
background task at the server's next look, by person: a person whose added crops were not embedded still
has the model's older embeddings, so a sweep for people lacking the model would not find them."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

from facefleet.core.errors import FaceFleetError
from facefleet.link.checks import MAX_EMBEDDINGS_PER_PERSON, utc_now
from facefleet.link.gallery import Person
from facefleet.server.config import ServerConfig
from facefleet.server.domain.records import StoredEnrolment
from facefleet.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServerError,
)
from facefleet.server.gallery.embedder import Enroller, EnrolmentSettings
from facefleet.server.gallery.reembed import CropEmbedder, reembed
from facefleet.server.paths import ServerPaths
from facefleet.server.state.interface import State
from facefleet.server.state.models import ModelState
from facefleet.vision.models.store import ModelStore
from facefleet.vision.models.tasks import embedding_dimension
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.runtime import ModelIO, Runtime

log = logging.getLogger(__name__)


class _StoppingError(Exception):
    """The server stops: the background embedding ends after the person under way."""


class EnrolmentModels:
    """The enroller of one server process, built on first use (compiling the models takes seconds) or given
    (tests share one analyzer), and rebuilt when the embedding models of rollouts change."""

    def __init__(
        self,
        config: ServerConfig,
        paths: ServerPaths,
        state: State,
        models: ModelStore,
        runtime: Callable[[], Runtime],
        enroller: Enroller | None = None,
    ) -> None:
        self.config = config
        self.paths = paths
        self.state = state
        self.models = models
        self._runtime = runtime
        self._enroller = enroller
        self._base_models = enroller.model_ids if enroller is not None else None
        self._rollout_models: tuple[str, ...] = ()
        """The embedding models of the rollouts as last read."""
        self._followed: tuple[str, ...] | None = None
        """The rollout models the enroller embeds with and whose stragglers are embedded (None: not yet)."""
        self._stragglers: tuple[str, ...] = ()
        """Models the enroller gained whose stragglers are still to be embedded."""
        self._incomplete: dict[str, set[str]] = {}
        """Model → people whose enrolment could not be completed with it: all their crops are embedded."""
        self._incomplete_lock = threading.Lock()
        self._following: asyncio.Task[None] | None = None
        self._failing = False
        self._stopping = threading.Event()
        self._enroller_lock = threading.Lock()

    async def follow_rollouts(self, rollout_models: tuple[str, ...]) -> None:
        """The embedding models of the rollouts just read: `embedding_models` names them at once, and the
        enroller follows in the background (`catch_up`)."""
        self._rollout_models = rollout_models
        self.catch_up()

    def catch_up(self) -> None:
        """Unless the enroller follows the rollouts last read already, start doing so in the background:
        rebuild it with their models and embed the people enrolled without those; also complete the
        enrolments whose completion failed. One task at a time; one running when newer rollouts arrive goes
        on with them once done. A task that failed is started again here, at the server's next look. Call
        from the event loop."""
        if (self._followed == self._rollout_models and not self._incomplete) or self._stopping.is_set():
            return
        if self._following is None or self._following.done():
            self._following = asyncio.create_task(self._follow())

    async def followed(self) -> bool:
        """Wait for the background task under way, if any; whether the enroller follows the rollouts last
        read and every enrolment is completed (False: something failed, and the next `catch_up` tries
        again)."""
        if self._following is not None:
            await asyncio.shield(self._following)
        return self._followed == self._rollout_models and not self._incomplete

    async def close(self) -> None:
        """Stop following: embedding ends after the person under way (a rebuild under way is waited for)."""
        self._stopping.set()
        if self._following is not None:
            await asyncio.wait({self._following})

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            rollout_models = self._rollout_models
            try:
                await self._follow_once(rollout_models)
            except _StoppingError:
                return
            except Exception as exc:  # keep serving with the enroller as it is; the next look retries
                if not self._failing:  # once until it succeeds, not at every look
                    log.error(
                        "enrolment cannot follow the embedding models of rollouts (%s): %s; retrying at "
                        "each look for changes",
                        ", ".join(rollout_models) or "none",
                        exc,
                        exc_info=not isinstance(exc, (FaceFleetError, ServerError)),
                    )
                self._failing = True
                if self._rollout_models == rollout_models:
                    return
                continue  # newer rollouts arrived meanwhile: follow them instead
            if self._failing:
                log.info("enrolment follows the embedding models of rollouts again")
            self._failing = False
            self._followed = rollout_models
            if self._rollout_models == rollout_models:
                return

    async def _follow_once(self, rollout_models: tuple[str, ...]) -> None:
        """Rebuild the enroller with these rollouts' models, embed the stragglers of each model it gained,
        then complete the enrolments whose completion failed; raises what failed (a model gained stays a
        straggler's, an enrolment incomplete, until its people are embedded)."""
        enroller = self._enroller
        wanted = _merge(self._base(), rollout_models)
        if enroller is not None:  # otherwise built with them on first use
            if wanted != enroller.model_ids:
                rebuilt = await asyncio.to_thread(enroller.with_models, wanted, self.models)
                with self._enroller_lock:
                    self._enroller = rebuilt
                log.info("enrolment now embeds with %s", ", ".join(wanted))
                gained = tuple(m for m in wanted if m not in enroller.model_ids)
                self._stragglers = _merge(self._stragglers, gained)
            self._stragglers = tuple(m for m in self._stragglers if m in wanted)
        while self._stragglers:
            await asyncio.to_thread(self._embed_stragglers, self._stragglers[0])
            self._stragglers = self._stragglers[1:]
        with self._incomplete_lock:
            incomplete, self._incomplete = self._incomplete, {}
        try:
            while incomplete:
                model_id, person_ids = next(iter(incomplete.items()))
                if model_id in wanted:  # not a model whose rollout was rolled back meanwhile
                    await asyncio.to_thread(self._embed_incomplete, model_id, sorted(person_ids))
                del incomplete[model_id]
        finally:  # what is left is tried again at the next look
            with self._incomplete_lock:
                for model_id, person_ids in incomplete.items():
                    self._incomplete.setdefault(model_id, set()).update(person_ids)

    def _embed_stragglers(self, model_id: str) -> None:
        """People enrolled while the enroller did not embed with model_id yet get its embeddings from their
        crops now. With the rollout command's own two sweeps, a rollout's gallery has no gap however long
        this server took to notice the rollout and rebuild its enroller. Raises what failed."""
        missing = self.state.models.people_without_model(model_id)
        if not missing:
            return
        result = reembed(self.state, self._crop_embedder(model_id), missing, progress=self._check_stopping)
        if result.reembedded:
            log.info("embedded %d people enrolled meanwhile with %s", len(result.reembedded), model_id)

    def _embed_incomplete(self, model_id: str, person_ids: list[str]) -> None:
        """People whose enrolment could not be completed with model_id get its embeddings of all their
        crops (people deleted meanwhile are passed over). Raises what failed."""
        result = reembed(self.state, self._crop_embedder(model_id), person_ids, progress=self._check_stopping)
        if result.reembedded:
            log.info("completed the enrolment of %s with %s", ", ".join(result.reembedded), model_id)

    def _check_stopping(self, done: int, total: int) -> None:
        if self._stopping.is_set():
            raise _StoppingError(f"stopped after {done} of {total} people")

    def complete(self, enrolment: StoredEnrolment) -> Person:
        """An enrolment just stored, its crops given the embeddings of every model of enrolment and of the
        rollouts in progress that it did not bring (blocking; see the module's docstring); the person as
        stored then. A failure is logged, not raised: the enrolment itself is committed, and a server's
        background task completes it later."""
        person = enrolment.person
        try:
            wanted = _merge(self._base(), rollout_embedding_models(self.state.models))
        except (FaceFleetError, ServerError) as exc:
            log.error("cannot read the rollouts to complete the enrolment of %s: %s", person.person_id, exc)
            wanted = self.embedding_models()  # as last read
        brought = {e.model_id for e in enrolment.embeddings}
        if not enrolment.crops:  # nothing to embed
            lacking = [m for m in wanted if m not in brought and m not in person.model_ids()]
            if lacking:
                log.warning(
                    "%s has no crops kept to embed with %s: enrol them again with photos for it",
                    person.person_id,
                    ", ".join(lacking),
                )
            return person
        embedded = []
        for model_id in (m for m in wanted if m not in brought):
            try:
                if self._complete_with(model_id, enrolment):
                    embedded.append(model_id)
            except (FaceFleetError, ServerError) as exc:
                self._retry_later(model_id, person.person_id, exc)
        if not embedded:
            return person
        log.info("embedded the crops enrolled for %s with %s too", person.person_id, ", ".join(embedded))
        try:
            return self.state.get_person(person.person_id, with_vectors=True)
        except ServerError:
            return person  # deleted meanwhile, or unreadable now: as the enrolment stored it

    def _retry_later(self, model_id: str, person_id: str, exc: Exception) -> None:
        """A completion with model_id failed: the background task completes it at the server's next look
        (`catch_up`); nothing does on the command line, which follows no rollouts."""
        if self._following is None:
            log.error("cannot embed the crops of %s with %s: %s; enrol them again", person_id, model_id, exc)
            return
        with self._incomplete_lock:
            self._incomplete.setdefault(model_id, set()).add(person_id)
        log.error(
            "cannot embed the crops of %s with %s: %s; trying again at the next look for changes",
            person_id,
            model_id,
            exc,
        )

    def _complete_with(self, model_id: str, enrolment: StoredEnrolment) -> bool:
        """Embed an enrolment's crops with model_id; whether any embedding was stored."""
        embedder = self._crop_embedder(model_id)
        person_id = enrolment.person.person_id
        if enrolment.append:
            try:
                person = self.state.get_person(person_id, with_vectors=True)
            except NotFoundError:
                return False
            have = [e for e in person.embeddings if e.model_id == model_id]
            if have and person.revision == enrolment.person.revision:  # unchanged since: add to them
                quality = {e.source: e.quality for e in enrolment.embeddings}
                added = embedder.embed_crops(enrolment.crops, quality)
                count = len(person.embeddings) + len(added)
                if count > MAX_EMBEDDINGS_PER_PERSON:  # the person could no longer be read
                    raise InvalidArgumentError(
                        f"{person_id} would have {count} embeddings with {model_id}'s, over the limit of "
                        f"{MAX_EMBEDDINGS_PER_PERSON}; enrol fewer photos of them with --replace"
                    )
                stored = self.state.replace_model_embeddings(
                    person_id, model_id, [*have, *added], utc_now(), revision=person.revision
                )
                if stored is not None:
                    return bool(added)
        # a new person, a replaced face, a person never embedded with the model or changed meanwhile (an
        # added crop may be gone, or embedded by a rollout's sweep): embed all their crops
        return bool(reembed(self.state, embedder, [person_id]).reembedded)

    def _crop_embedder(self, model_id: str) -> CropEmbedder:
        """A stored embedding model compiled for crops."""
        name, _, version = model_id.partition("@")
        return CropEmbedder(self._runtime(), self.models.get("embedding", name, version))

    def enroller(self) -> Enroller:
        """The image enroller, built once (compiling the models takes a few seconds)."""
        with self._enroller_lock:
            if self._enroller is None:
                built = self._build_enroller()
                wanted = _merge(self._base(), self._rollout_models)
                if wanted != built.model_ids:  # a rollout noticed while it was built
                    built = built.with_models(wanted, self.models)
                self._enroller = built
            return self._enroller

    def _build_enroller(self) -> Enroller:
        config = self.config
        try:
            runtime = self._runtime()
            settings = AnalyzerSettings(detector=config.detector.settings(), expressions=False)
            analyzer = FaceAnalyzer(runtime, self.models, settings)
            active = analyzer.embedding_model
            base = config.gallery.embedding_models or ((active.manifest.model_id,) if active else ())
            self._base_models = base
            return Enroller(
                analyzer,
                self.models,
                runtime,
                EnrolmentSettings(
                    model_ids=_merge(base, self._rollout_models),
                    retain_crops=config.gallery.retain_crops,
                    crop_format=config.gallery.crop_format,
                    max_image_bytes=config.gallery.max_image_bytes,
                    max_image_pixels=config.gallery.max_image_pixels,
                    quality=config.quality.policy(),
                ),
            )
        except ServerError:
            raise
        except FaceFleetError as exc:
            raise FailedPreconditionError(
                f"enrolment from images needs the models in {self.paths.models}: {exc}. Run "
                f"`facefleet-server --state-dir {self.paths.state_dir} models import-defaults`"
            ) from None

    def known_models(self) -> Mapping[str, int]:
        """Embedding model id → dimension for every embedding model in the store (and the enroller's)."""
        known = {
            m.manifest.model_id: embedding_dimension(ModelIO(m.manifest.inputs, m.manifest.outputs))
            for m in self.models.models()
            if m.manifest.task == "embedding"
        }
        if self._enroller is not None:
            known.update(self._enroller.dimensions)
        return known

    def embedding_models(self) -> tuple[str, ...]:
        """What enrolment embeds with: the configured (or active) models and those of embedding rollouts
        that are preparing, active or paused."""
        return _merge(self._base(), self._rollout_models)

    def _base(self) -> tuple[str, ...]:
        if self._base_models is not None:
            return self._base_models
        if self.config.gallery.embedding_models:
            return self.config.gallery.embedding_models
        try:
            return (self.models.active("embedding").manifest.model_id,)
        except FaceFleetError:
            return ()


def rollout_embedding_models(models: ModelState) -> tuple[str, ...]:
    """Embedding models of rollouts that are preparing, active or paused, oldest rollout first; for an INT8
    variant that runs in a float model's place, that float model (its agents match against its gallery)."""
    return tuple(
        dict.fromkeys(
            _gallery_model(models, r.model_id)
            for r in reversed(models.list_rollouts())
            if r.task == "embedding" and r.state != "rolled_back"
        )
    )


def _gallery_model(models: ModelState, model_id: str) -> str:
    try:
        return models.get_model(model_id).runs_in_place_of or model_id
    except FaceFleetError:
        return model_id


def _merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(model_id for group in groups for model_id in group))
