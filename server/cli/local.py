"""The operator handlers of the command line on the server host: the same handlers the server serves
(facefleet.server.api.handlers), over the state directory itself. A change is committed to the state database
and a running server publishes it to its agents within `fleet.poll_seconds`."""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import cached_property

from facefleet.server.config import ServerConfig
from facefleet.server.fleet.queries import QueryHandler
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.gallery.enrolment_models import EnrolmentModels
from facefleet.server.gallery.people import PeopleHandler
from facefleet.server.gallery.unknown import UnknownFaces, UnknownSettings
from facefleet.server.paths import ServerPaths
from facefleet.server.state.fanout import GalleryFanout
from facefleet.server.state.interface import State
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime


class LocalHandlers:
    """Handlers over the context's state database, built on first use."""

    def __init__(self, config: ServerConfig, paths: ServerPaths, state: State) -> None:
        self.config = config
        self.paths = paths
        self.state = state
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    @cached_property
    def enrolment(self) -> EnrolmentModels:
        return EnrolmentModels(
            self.config, self.paths, self.state, ModelStore(self.paths.models), self._get_runtime
        )

    @cached_property
    def people(self) -> PeopleHandler:
        state, enrolment = self.state, self.enrolment
        return PeopleHandler(
            state,
            GalleryFanout(state.head_revision()),
            enrolment.enroller,
            enrolment.known_models,
            enrolment.complete,
        )

    @cached_property
    def unknown(self) -> UnknownFaces:
        settings = self.config.snapshots
        return UnknownFaces(
            self.state,
            self.people,
            self._enroller,
            UnknownSettings(
                threshold=settings.cluster_threshold, window=timedelta(days=settings.cluster_window_days)
            ),
        )

    @cached_property
    def queries(self) -> QueryHandler:
        window = timedelta(seconds=self.config.fleet.online_window_seconds)
        return QueryHandler(self.state, online_window=window)

    def _enroller(self) -> Enroller:
        return self.enrolment.enroller()

    def _get_runtime(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = Runtime(self.config.runtime.settings(self.paths.state_dir))
            return self._runtime
