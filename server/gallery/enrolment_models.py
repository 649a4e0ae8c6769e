"""Which embedding models enrolment embeds with, and the enroller that does it: the configured (or active)
models plus those of embedding rollouts in progress. A rollout's new model joins enrolment as soon as the
server notices it, and people enrolled before that get its embeddings from their crops."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

from facefleet.core.errors import FaceFleetError
from facefleet.server.config import ServerConfig
from facefleet.server.errors import FailedPreconditionError, ServerError
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
        name, _, version = model_id.partition("@")
        try:
            embedder = CropEmbedder(self._runtime(), self.models.get("embedding", name, version))
            result = reembed(self.state, embedder, missing)
        except (FaceFleetError, ServerError) as exc:
            log.error("cannot embed people enrolled meanwhile with %s: %s", model_id, exc)
            return
        if result.reembedded:
            log.info("embedded %d people enrolled meanwhile with %s", len(result.reembedded), model_id)

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
