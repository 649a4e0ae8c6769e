"""FleetService logic for model versions: the releases each agent should run (for its Watch stream), file
downloads, and the activation statuses agents report.

Rollouts and the catalogue are read once per models revision and shared by every stream; each stream then
adds its own device's groups and announced rollouts. A release of a rollout is recorded as announced to a
device (state 'assigned', with the version the device ran before) only once its stream has sent it
(`announce` after the yield): a paused rollout keeps covering exactly the devices that received it.

A refusal that takes a rollout past its failure budget pauses or rolls it back in the transaction that
records it (facefleet.server.rollouts.plan.stopped) and is entered in the admin audit log as done by
"server"; `changed` then wakes the Watch streams at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from facefleet.link.checks import utc_now
from facefleet.link.models import (
    ModelRelease,
    ModelStatus,
    check_model_precisions,
    check_model_versions,
    check_statuses,
)
from facefleet.server.domain.audit import SERVER, AuditEntry
from facefleet.server.domain.models import PublishedModel, Rollout
from facefleet.server.errors import NotFoundError, ServerError
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.files import Chunk, ModelFiles
from facefleet.server.rollouts.plan import covers, desired_releases, stopped
from facefleet.server.state.interface import State

log = logging.getLogger(__name__)
Fleetwide = tuple[tuple[Rollout, ...], dict[str, PublishedModel]]


@dataclass(frozen=True)
class Planned:
    """What a device's stream should send: its releases, the gallery head revision read after them, and
    the (rollout_id, previous_model_id) pairs to record as announced once the releases are sent."""

    releases: tuple[ModelRelease, ...]
    head: int
    new: tuple[tuple[int, str], ...]


class ModelDistribution:
    """What agents learn and fetch about model versions; device ids passed in are authenticated.
    changed: publishes rollout changes to the Watch streams (FleetServer.refresh)."""

    def __init__(
        self,
        state: State,
        catalog: ModelCatalog,
        files: ModelFiles,
        clock: Callable[[], datetime] = utc_now,
        changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.state = state
        self.catalog = catalog
        self.files = files
        self.clock = clock
        self.changed = changed
        self._fleetwide: tuple[int, asyncio.Future[Fleetwide]] | None = None

    async def releases(self, device_id: str) -> Planned:
        """The releases the device should run now, and the gallery head revision read after them (an
        embedding model's gallery is complete at that revision, so it must reach the agent first). Newly
        covering rollouts are not recorded here: `announce` them once they are sent."""
        rollouts, catalogue = await self._shared()

        def compute() -> Planned:
            models = self.state.models
            agent = self.state.get_agent(device_id)
            groups = models.agent_models((device_id,)).get(device_id)
            announced = models.device_rollouts(device_id)
            releases = desired_releases(
                device_id, groups.groups if groups else (), rollouts, announced, catalogue
            )
            running = agent.model_versions if agent else {}
            new = tuple(
                (r.rollout_id, running.get(r.task, ""))
                for r in releases
                if r.rollout_id and r.rollout_id not in announced
            )
            return Planned(releases, self.state.head_revision(), new)

        return await asyncio.to_thread(compute)

    async def announce(self, device_id: str, planned: Planned) -> None:
        """Record the planned releases' new rollouts as announced to the device, which was sent them."""
        if planned.new:
            await asyncio.to_thread(self.state.models.announce, device_id, planned.new, self.clock())

    async def download(self, model_id: str, file_name: str, offset: int) -> AsyncIterator[Chunk]:
        """A file of a published, not retired model from offset on, verified against the catalogue."""
        model = await asyncio.to_thread(self.state.models.get_model, model_id)
        if model.retired:
            raise NotFoundError(f"model {model_id} is retired; it can no longer be downloaded")
        expected = model.file(file_name)
        if expected is None:
            names = ", ".join(f.name for f in model.files)
            raise NotFoundError(f"model {model_id} has no file {file_name[:80]!r}; its files: {names}")
        path = self.catalog.file_path(model, file_name)
        async for chunk in self.files.chunks(path, expected, offset, f"{model_id}/{file_name}"):
            yield chunk

    async def report(
        self,
        device_id: str,
        statuses: Sequence[ModelStatus],
        model_versions: Mapping[str, str],
        model_precisions: Mapping[str, str],
    ) -> None:
        """Store an agent's model statuses (each counted for the rollout it belongs to, which a refusal may
        stop), and which model versions it runs and at what precision, by task."""
        check_statuses(tuple(statuses))
        versions = check_model_versions(dict(model_versions))
        precisions = check_model_precisions(dict(model_precisions))

        def store() -> list[Rollout]:
            # A status for a rollout proves the agent received it, even when its stream broke before the
            # announcement was recorded: record it now (the previous version is what the agent ran then).
            # A rollout that was never sent to the device and does not cover it cannot have reached it: its
            # status counts for no rollout, so one agent cannot spend another group's failure budget.
            models = self.state.models
            agent = self.state.get_agent(device_id)
            running = agent.model_versions if agent else {}
            rollouts = {r.rollout_id: r for r in models.list_rollouts()}
            announced = models.device_rollouts(device_id)
            memberships = models.agent_models((device_id,)).get(device_id)
            groups = memberships.groups if memberships else ()
            checked = []
            for s in statuses:
                rollout = rollouts.get(s.rollout_id)
                if (
                    s.rollout_id
                    and s.rollout_id not in announced
                    and (
                        rollout is None
                        or rollout.task != s.task
                        or not covers(rollout, device_id, groups, announced=False)
                    )
                ):
                    log.warning(
                        "%s reported %s for rollout %d, which was never sent to it; the status counts for "
                        "no rollout",
                        device_id,
                        s.state,
                        s.rollout_id,
                    )
                    s = replace(s, rollout_id=0)
                checked.append(s)
            received = tuple(
                (s.rollout_id, running.get(s.task, ""))
                for s in checked
                if s.rollout_id and s.rollout_id not in announced
            )
            if received:
                models.announce(device_id, received, self.clock())
            now = self.clock()
            halted = models.set_agent_models(
                device_id,
                now,
                statuses=checked,
                model_versions=versions or None,
                model_precisions=precisions or None,
                stop=lambda rollout, devices: stopped(rollout, devices, now),
            )
            for rollout in halted:
                self._audit_stop(rollout, now)
            return halted

        for rollout in await asyncio.to_thread(store):
            log.warning(
                "rollout %d of %s is now %s: %s",
                rollout.rollout_id,
                rollout.model_id,
                rollout.state.replace("_", " "),
                rollout.reason,
            )
            if self.changed is not None:
                await self.changed()

    def _audit_stop(self, rollout: Rollout, now: datetime) -> None:
        """Record a rollout its failure budget stopped in the admin audit log, as done by the server."""
        action = "rollouts.rollback" if rollout.state == "rolled_back" else "rollouts.pause"
        try:
            self.state.add_audit(
                AuditEntry(now, SERVER, action, str(rollout.rollout_id), detail=rollout.reason)
            )
        except ServerError as exc:  # e.g. a full disk: the state names it, no traceback needed
            log.warning("cannot record %s %d in the admin audit log: %s", action, rollout.rollout_id, exc)
        except Exception:
            log.exception("cannot record %s %d in the admin audit log", action, rollout.rollout_id)

    async def _shared(self) -> Fleetwide:
        """Rollouts that can cover anyone (not preparing) and the not retired models, per models revision."""
        revision = await asyncio.to_thread(self.state.models.models_revision)
        if self._fleetwide is None or self._fleetwide[0] != revision:
            self._fleetwide = (revision, asyncio.ensure_future(asyncio.to_thread(self._read_fleetwide)))
        future = self._fleetwide[1]
        try:
            return await asyncio.shield(future)
        except Exception:
            self._fleetwide = None
            raise

    def _read_fleetwide(self) -> Fleetwide:
        models = self.state.models
        rollouts = tuple(r for r in models.list_rollouts() if r.state != "preparing")
        catalogue = {m.model_id: m for m in models.list_models() if not m.retired}
        return rollouts, catalogue
