"""Starting, pausing, resuming and rolling back rollouts on the state directory (the CLI and programs such as
the benchmark call this; a running server notices within `fleet.poll_seconds`, or at once through
FleetServer.refresh() in its own process).

A rollout of an embedding model starts in `preparing`: the running server's enrolment then embeds new people
with the new model too, while this re-embeds everyone enrolled from their retained crops. After the server
could have noticed (`settle_seconds`), a second sweep embeds the people enrolled meanwhile by a server that
had not yet noticed; then the rollout turns active and agents receive the model with its complete gallery.
People without crops cannot be re-embedded: the new model will not recognise them until they are re-enrolled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agent.runtime import Runtime
from server import rollouts
from server.domain import utc_now
from server.errors import FailedPreconditionError
from server.model_catalog import ModelCatalog
from server.model_types import DeviceRollout, Rollout, Target
from server.reembed import CropEmbedder, reembed
from server.state import State


@dataclass(frozen=True)
class StartedRollout:
    """A started rollout; for an embedding model, who was re-embedded and who could not be (no crops)."""

    rollout: Rollout
    reembedded: tuple[str, ...] = ()
    without_crops: tuple[str, ...] = ()


class RolloutControl:
    """runtime: compiles embedding models for re-embedding (needed only to start embedding rollouts);
    settle_seconds: how long a running server may take to notice a change (its poll interval, and some);
    on_change: called after each committed change (FleetServer.rollout_control wakes its streams with it)."""

    def __init__(
        self,
        state: State,
        catalog: ModelCatalog,
        *,
        runtime: Runtime | None = None,
        settle_seconds: float = 2.0,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.on_change = on_change
        self.catalog = catalog
        self.runtime = runtime
        self.settle_seconds = settle_seconds
        self.clock = clock
        self.sleep = sleep

    def start(
        self, model_id: str, target: Target, *, progress: Callable[[int, int], None] | None = None
    ) -> StartedRollout:
        """Roll a published model out to target; an embedding model's gallery is completed first."""
        model = self.catalog.show(model_id)
        if model.retired:
            raise FailedPreconditionError(
                f"model {model_id} is retired and cannot be rolled out; publish a new version"
            )
        if model.task != "embedding":
            started = self.state.models.add_rollout(model_id, target, "active", self.clock())
            self._changed()
            return StartedRollout(started)
        if self.runtime is None:
            raise FailedPreconditionError("rolling out an embedding model needs a runtime to re-embed crops")
        stored = self.catalog.stored(model)
        self.catalog.store.check(stored)
        embedder = CropEmbedder(self.runtime, stored)
        rollout = self.state.models.add_rollout(model_id, target, "preparing", self.clock())
        self._changed()
        try:
            first = reembed(self.state, embedder, progress=progress, clock=self.clock)
            self.sleep(self.settle_seconds)
            missing = self.state.models.people_without_model(model_id)
            second = reembed(self.state, embedder, missing, clock=self.clock)
            active = self.state.models.change_rollout(
                rollout.rollout_id, lambda r: rollouts.activated(r, self.clock())
            )
        except BaseException:
            self.state.models.change_rollout(
                rollout.rollout_id, lambda r: rollouts.rolled_back(r, self.clock())
            )
            raise
        finally:
            self._changed()
        reembedded = tuple(sorted({*first.reembedded, *second.reembedded}))
        return StartedRollout(active, reembedded, second.without_crops)

    def pause(self, rollout_id: int) -> Rollout:
        """Stop announcing to more agents; those announced to keep the new version."""
        return self._change(rollout_id, lambda r: rollouts.paused(r, self.clock()))

    def resume(self, rollout_id: int, percent: int | None = None) -> Rollout:
        """Resume a paused rollout and/or widen a percent rollout to `percent`."""
        return self._change(rollout_id, lambda r: rollouts.resumed(r, self.clock(), percent))

    def rollback(self, rollout_id: int) -> Rollout:
        """Send every agent it was announced to back to the version it ran before."""
        return self._change(rollout_id, lambda r: rollouts.rolled_back(r, self.clock()))

    def _change(self, rollout_id: int, change: Callable[[Rollout], Rollout]) -> Rollout:
        rollout = self.state.models.change_rollout(rollout_id, change)
        self._changed()
        return rollout

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def all_rollouts(self) -> list[Rollout]:
        """Every rollout, newest first."""
        return self.state.models.list_rollouts()

    def show(self, rollout_id: int) -> tuple[Rollout, list[DeviceRollout]]:
        """A rollout and how it stands on each device it was announced to."""
        return self.state.models.get_rollout(rollout_id), self.state.models.rollout_devices(rollout_id)
