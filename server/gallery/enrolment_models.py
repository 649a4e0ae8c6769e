"""Which embedding models enrolment embeds with, and the enroller that does it: the configured (or active)
models plus those of embedding rollouts in progress. A rollout's new model joins enrolment as soon as the
server notices it, and people enrolled before that get its embeddings from their crops.

An enrolment embeds its photos before it commits, with the models enrolment had when it began, and may
commit after a rollout's second sweep (facefleet.server.rollouts.control) has looked for people lacking
the rollout's model. So once an enrolment has committed, `complete` reads the rollouts again and embeds
the person's crops with any rollout model they lack. Rollouts and enrolments commit one after the other:
a rollout that committed before the enrolment is seen by `complete`, and one that committed after it sees
the person in its first sweep."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

from facefleet.core.errors import FaceFleetError
from facefleet.link.gallery import Person
from facefleet.server.config import ServerConfig
from facefleet.server.errors import FailedPreconditionError, ServerError
from facefleet.server.gallery.embedder import Enroller, EnrolmentSettings
from facefleet.server.gallery.reembed import CropEmbedder, ReembedResult, reembed
from facefleet.server.paths import ServerPaths
from facefleet.server.state.interface import State
from facefleet.server.state.models import ModelState
from facefleet.vision.models.store import ModelStore
from facefleet.vision.models.tasks import embedding_dimension
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.runtime import ModelIO, Runtime

log = logging.getLogger(__name__)


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
        self._enroller_lock = threading.Lock()

    async def follow_rollouts(self, rollout_models: tuple[str, ...]) -> None:
        if rollout_models == self._rollout_models:
            return
        self._rollout_models = rollout_models
        enroller = self._enroller
        if enroller is None:
            return  # built with them on first use
        wanted = _merge(self._base(), rollout_models)
        if wanted != enroller.model_ids:
            try:
                rebuilt = await asyncio.to_thread(enroller.with_models, wanted, self.models)
            except Exception as exc:  # keep serving with the current enroller
                log.error("enrolment cannot embed with %s: %s", ", ".join(wanted), exc)
                return
            with self._enroller_lock:
                self._enroller = rebuilt
            log.info("enrolment now embeds with %s", ", ".join(wanted))
            for model_id in (m for m in wanted if m not in enroller.model_ids):
                await asyncio.to_thread(self._embed_stragglers, model_id)

    def _embed_stragglers(self, model_id: str) -> None:
        """People enrolled while the enroller did not embed with model_id yet get its embeddings from their
        crops now. With the rollout command's own two sweeps, a rollout's gallery has no gap however long
        this server took to notice the rollout and rebuild its enroller."""
        missing = self.state.models.people_without_model(model_id)
        if not missing:
            return
        result = self._embed_crops(model_id, missing)
        if result is not None and result.reembedded:
            log.info("embedded %d people enrolled meanwhile with %s", len(result.reembedded), model_id)

    def complete(self, person: Person) -> Person:
        """A person an enrolment has just stored, given embeddings from their crops of every model of the
        rollouts in progress they lack (blocking; see the module's docstring), as stored then. A failure is
        logged, not raised: the enrolment itself is committed."""
        try:
            lacking = [m for m in rollout_embedding_models(self.state.models) if m not in person.model_ids()]
        except (FaceFleetError, ServerError) as exc:
            log.error("cannot read the rollouts to complete the enrolment of %s: %s", person.person_id, exc)
            return person
        embedded = [r for m in lacking if (r := self._embed_crops(m, [person.person_id])) and r.reembedded]
        if not embedded:
            return person
        log.info(
            "embedded %s, enrolled while a rollout started, with %s",
            person.person_id,
            ", ".join(r.model_id for r in embedded),
        )
        try:
            return self.state.get_person(person.person_id, with_vectors=True)
        except ServerError:
            return person  # deleted meanwhile

    def _embed_crops(self, model_id: str, person_ids: list[str]) -> ReembedResult | None:
        """Embed these people's crops with a stored embedding model (None: it failed, and is logged)."""
        name, _, version = model_id.partition("@")
        try:
            embedder = CropEmbedder(self._runtime(), self.models.get("embedding", name, version))
            return reembed(self.state, embedder, person_ids)
        except (FaceFleetError, ServerError) as exc:
            log.error("cannot embed %s with %s: %s", ", ".join(person_ids[:5]), model_id, exc)
            return None

    def enroller(self) -> Enroller:
        """The image enroller, built once (compiling the models takes a few seconds)."""
        with self._enroller_lock:
            if self._enroller is None:
                self._enroller = self._build_enroller()
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
