"""Starting, pausing, resuming and rolling back rollouts on the state directory (the CLI and programs such as
the benchmark call this; a running server notices within `fleet.poll_seconds`, or at once through
FleetServer.refresh() in its own process).

A rollout of an embedding model starts in `preparing`: the running server's enrolment then embeds new people
with the new model too, while this re-embeds everyone enrolled from their retained crops. After the server
could have noticed (`settle_seconds`), a second sweep embeds the people enrolled meanwhile by a server that
had not yet noticed; then the rollout turns active and agents receive the model with its complete gallery. An
enrolment whose photos were embedded before the rollout started and that commits after the second sweep
embeds the person with the rollout's model itself (facefleet.server.gallery.enrolment_models).
People without crops cannot be re-embedded: the new model will not recognise them until they are re-enrolled.
An INT8 variant published to run in its float model's place goes through the same steps for the float
model's gallery, embedding only the people who lack it (none, while the float model is the server's own).

A preparing rollout must not outlive the process preparing it (a kill -9 runs no clean-up, and enrolment would
embed with its model for good). So while preparing, that process moves the rollout's updated_at about every
HEARTBEAT_SECONDS (after re-embedded people and during the settle wait), and a preparing rollout whose
updated_at is older than `stale_seconds` (PREPARING_STALE_SECONDS) has lost its preparer:
`expire_stalled` rolls it back with the reason. The server calls it when it starts and at every poll,
`rollout list` and `rollout show` before answering; `rollout rollback ID` ends a preparing rollout at once. A
preparer that finds its rollout no longer preparing stops with an error instead of activating it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from facefleet.link.checks import MAX_REASON_CHARS, utc_now
from facefleet.server.domain.models import DeviceRollout, FailureAction, MaxFailures, Rollout, Target
from facefleet.server.errors import FailedPreconditionError
from facefleet.server.gallery.reembed import CropEmbedder, reembed
from facefleet.server.rollouts import plan as rollouts
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.state.interface import State
from facefleet.server.state.models import ModelState
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.models.quantize import find_model
from facefleet.vision.models.store import StoredModel
from facefleet.vision.runtime import Runtime

HEARTBEAT_SECONDS = 5.0
"""Most time between a preparing process's signs of progress (a few people re-embedded take far less)."""
PREPARING_STALE_SECONDS = 120.0
"""A preparing rollout without a sign of progress for this long has lost its preparer."""


@dataclass(frozen=True)
class StartedRollout:
    """A started rollout; for an embedding model, who was re-embedded and who could not be (no crops); for
    an INT8 variant, the float model it runs in the place of (whose gallery was completed)."""

    rollout: Rollout
    reembedded: tuple[str, ...] = ()
    without_crops: tuple[str, ...] = ()
    runs_in_place_of: str | None = None


class RolloutControl:
    """runtime: compiles embedding models for re-embedding (needed only to start embedding rollouts);
    settle_seconds: how long a running server may take to notice a change (its poll interval, and some);
    stale_seconds: how long a preparing rollout may show no progress before it counts as abandoned;
    on_change: called after each committed change (FleetServer.rollout_control wakes its streams with it)."""

    def __init__(
        self,
        state: State,
        catalog: ModelCatalog,
        *,
        runtime: Runtime | None = None,
        settle_seconds: float = 2.0,
        stale_seconds: float = PREPARING_STALE_SECONDS,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.on_change = on_change
        self.catalog = catalog
        self.runtime = runtime
        self.settle_seconds = settle_seconds
        self.stale_seconds = stale_seconds
        self.clock = clock
        self.sleep = sleep

    def start(
        self,
        model_id: str,
        target: Target,
        *,
        progress: Callable[[int, int], None] | None = None,
        max_failures: MaxFailures | None = None,
        on_failures: FailureAction = "pause",
    ) -> StartedRollout:
        """Roll a published model out to target; an embedding model's gallery is completed first (for an INT8
        variant that runs in its float model's place, the float model's: its agents match against it). Past
        max_failures refusals (None: no limit) the rollout pauses or rolls back, as on_failures says."""
        model = self.catalog.show(model_id)
        if model.retired:
            raise FailedPreconditionError(
                f"model {model_id} is retired and cannot be rolled out; publish a new version"
            )
        add = partial(
            self.state.models.add_rollout,
            model_id,
            target,
            max_failures=max_failures,
            on_failures=on_failures,
        )
        if model.task != "embedding":
            started = add("active", self.clock())
            self._changed()
            return StartedRollout(started)
        if self.runtime is None:
            raise FailedPreconditionError("rolling out an embedding model needs a runtime to re-embed crops")
        place = model.runs_in_place_of
        stored = self.catalog.stored(model) if place is None else self._float_model(model_id, place)
        self.catalog.store.check(stored)
        embedder = CropEmbedder(self.runtime, stored)
        gallery_id = stored.manifest.model_id
        rollout = add("preparing", self.clock())
        self._changed()
        beat = _Heartbeat(self.state.models, rollout.rollout_id, self.clock)
        try:
            lacking = None if place is None else self.state.models.people_without_model(gallery_id)
            first = reembed(self.state, embedder, lacking, progress=beat.around(progress), clock=self.clock)
            self._settle(beat)
            missing = self.state.models.people_without_model(gallery_id)
            second = reembed(self.state, embedder, missing, progress=beat.around(None), clock=self.clock)
            active = self.state.models.change_rollout(
                rollout.rollout_id, lambda r: rollouts.activated(r, self.clock())
            )
        except BaseException as exc:
            reason = f"preparing its gallery failed: {str(exc) or type(exc).__name__}"[:MAX_REASON_CHARS]
            self.state.models.change_rollout(
                rollout.rollout_id,
                lambda r: rollouts.rolled_back(r, self.clock(), reason) if r.state == "preparing" else r,
            )
            raise
        finally:
            self._changed()
        reembedded = tuple(sorted({*first.reembedded, *second.reembedded}))
        return StartedRollout(active, reembedded, second.without_crops, place)

    def _float_model(self, model_id: str, place: str) -> StoredModel:
        """The server's copy of the float model a variant runs in the place of (agents use its gallery)."""
        try:
            return find_model(self.catalog.store, place)
        except ModelStoreError:
            raise FailedPreconditionError(
                f"model {model_id} runs in {place}'s place, and the server's model store has no {place} to "
                f"complete its gallery with; import or publish {place} first"
            ) from None

    def _settle(self, beat: _Heartbeat) -> None:
        """Wait settle_seconds, showing progress meanwhile."""
        remaining = self.settle_seconds
        while remaining > 0:
            step = min(remaining, HEARTBEAT_SECONDS)
            self.sleep(step)
            remaining -= step
            beat.beat(force=True)

    def expire_stalled(self) -> list[Rollout]:
        """Roll back the preparing rollouts whose preparing process is gone (no progress for longer than
        stale_seconds), each with the reason; return them."""
        now = self.clock()
        bound = timedelta(seconds=self.stale_seconds)
        expired = [
            self.state.models.change_rollout(r.rollout_id, lambda r: rollouts.given_up(r, now, bound))
            for r in self.state.models.list_rollouts()
            if rollouts.stalled(r, now, bound)
        ]
        if expired:
            self._changed()
        return [r for r in expired if r.state == "rolled_back"]

    def pause(self, rollout_id: int) -> Rollout:
        """Stop announcing to more agents; those announced to keep the new version."""
        return self._change(rollout_id, lambda r: rollouts.paused(r, self.clock()))

    def resume(self, rollout_id: int, percent: int | None = None) -> Rollout:
        """Resume a paused rollout and/or widen a percent rollout to `percent`."""
        return self._change(rollout_id, lambda r: rollouts.resumed(r, self.clock(), percent))

    def rollback(self, rollout_id: int) -> Rollout:
        """Send every agent it was announced to back to the version it ran before; a preparing rollout ends
        (its preparer, if still running, stops)."""
        return self._change(rollout_id, lambda r: rollouts.rolled_back(r, self.clock()))

    def _change(self, rollout_id: int, change: Callable[[Rollout], Rollout]) -> Rollout:
        rollout = self.state.models.change_rollout(rollout_id, change)
        self._changed()
        return rollout

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def all_rollouts(self) -> list[Rollout]:
        """Every rollout, newest first (abandoned preparing ones rolled back first)."""
        self.expire_stalled()
        return self.state.models.list_rollouts()

    def show(self, rollout_id: int) -> tuple[Rollout, list[DeviceRollout]]:
        """A rollout and how it stands on each device it was announced to."""
        self.expire_stalled()
        return self.state.models.get_rollout(rollout_id), self.state.models.rollout_devices(rollout_id)


class _Heartbeat:
    """A preparing process's signs of progress on its rollout, at most every HEARTBEAT_SECONDS unless
    forced; FailedPreconditionError once the rollout is no longer preparing (rolled back meanwhile)."""

    def __init__(self, models: ModelState, rollout_id: int, clock: Callable[[], datetime]) -> None:
        self.models = models
        self.rollout_id = rollout_id
        self.clock = clock
        self.last = clock()

    def beat(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and (now - self.last).total_seconds() < HEARTBEAT_SECONDS:
            return
        if not self.models.touch_rollout(self.rollout_id, now):
            raise FailedPreconditionError(
                f"rollout {self.rollout_id} was rolled back while its gallery was being prepared; "
                "start a new rollout to roll the model out"
            )
        self.last = now

    def around(self, progress: Callable[[int, int], None] | None) -> Callable[[int, int], None]:
        """progress, with a heartbeat after each person."""

        def report(done: int, total: int) -> None:
            self.beat()
            if progress is not None:
                progress(done, total)

        return report
