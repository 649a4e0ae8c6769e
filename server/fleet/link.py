"""FleetService logic: registration, the gallery Watch stream, acknowledgements and event reports.

Watch protocol: a stream starts at the agent's revision R. If the agent's gallery_id is not this server's,
or R is 0, it gets a snapshot; if R is ahead of the database's head, FailedPreconditionError; if the change
log no longer reaches back to R (more than `gallery.log_revisions` behind), a snapshot; otherwise the
coalesced delta R → head. Then the stream waits on the fanout and sends each new delta as it commits, with
a heartbeat after every idle `heartbeat_seconds`. Deltas above half the message limit are split into parts.
A stream ends by itself, between two messages, once it is `watch_max_age` old (each stream's age drawn
from 85–100 % of it, so streams opened together do not all end together): the agent opens a new
connection, which a TCP load balancer may send to another replica, and resumes from its revision.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from facefleet import __version__
from facefleet.link.checks import check_health, utc_now
from facefleet.link.events import Event
from facefleet.link.fleet import EVENT_TIME_REFUSAL, Heartbeat, Registration, ReportOutcome, Welcome
from facefleet.link.gallery import GalleryDelta, Person
from facefleet.link.models import ModelAssignment, ModelRelease, ModelStatus
from facefleet.server.errors import FailedPreconditionError, InvalidArgumentError, PermissionDeniedError
from facefleet.server.fleet.skew import NewerAgentLog
from facefleet.server.gallery.enrolment_models import rollout_embedding_models
from facefleet.server.metrics import ServerMetrics
from facefleet.server.rollouts.distribution import ModelDistribution
from facefleet.server.rollouts.files import Chunk
from facefleet.server.state.fanout import GalleryFanout
from facefleet.server.state.interface import State

log = logging.getLogger(__name__)
DELTA_CACHE_ENTRIES = 64
DEFERRED_REASON = (
    f"is not known to this server (version {__version__}): the agent is newer. The event is not stored; the "
    "agent keeps it and reports it again: upgrade the server to store it"
)
"""Why an event with a kind or decision of a newer agent is deferred, after that value (e.g. 'kind 3')."""
EVENT_ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""An event id as agents write it (a UUID's canonical form): one spelling per id, so repeats are found."""
MAX_UNKNOWN_MODELS = 10_000
"""Most (device, embedding model) pairs remembered as logged unknown; beyond it the memory starts afresh."""


@dataclass(frozen=True)
class FleetSettings:
    max_report_events: int = 10_000
    heartbeat_seconds: float = 30.0
    max_message_bytes: int = 16 * 1024 * 1024
    max_event_age: timedelta = timedelta(days=365)
    max_event_ahead: timedelta = timedelta(days=1)
    watch_max_age: timedelta | None = timedelta(hours=1)
    """How long a Watch stream lasts before the server ends it (None: as long as the server runs)."""
    cluster_threshold: float | None = None
    """[snapshots] cluster_threshold, told to every agent at Register (None: not told)."""


class DeltaCache:
    """Deltas computed once and shared by every stream asking for the same one: after a change, the 200
    streams that were at the previous head need the same delta, and only the first one reads the state.
    Only deltas to the head are kept: once it moves, no stream asks for an older one again, and it may hold
    the faces of people deleted or replaced since."""

    def __init__(self, state: State, entries: int = DELTA_CACHE_ENTRIES) -> None:
        self.state = state
        self.entries = entries
        self._futures: OrderedDict[tuple[int, int, bool], asyncio.Future[GalleryDelta | None]] = OrderedDict()

    async def get(self, from_revision: int, head: int, snapshot: bool) -> GalleryDelta:
        """The changes from from_revision to head, or the whole gallery when asked (snapshot) or when the
        change log no longer reaches back that far: one whole gallery per head, whatever the revision."""
        if not snapshot:
            changes = functools.partial(self.state.changes_since, from_revision)
            delta = await self._shared((from_revision, head, False), changes)
            if delta is not None:
                return delta
        whole = await self._shared((0, head, True), self.state.snapshot)
        assert whole is not None  # a snapshot is never None
        return whole

    async def _shared(
        self, key: tuple[int, int, bool], compute: Callable[[], GalleryDelta | None]
    ) -> GalleryDelta | None:
        """compute() once for every stream asking for key at the same time or later (until dropped)."""
        future = self._futures.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(compute))
            self._futures[key] = future
            while len(self._futures) > self.entries:
                self._futures.popitem(last=False)
        try:
            return await asyncio.shield(future)
        except Exception:
            self._futures.pop(key, None)
            raise

    def forget_before(self, head: int) -> None:
        """The head moved: drop the deltas computed for an older one (streams awaiting one still get it)."""
        for key in [key for key in self._futures if key[1] < head]:
            del self._futures[key]


class FleetHandler:
    """The logic behind FleetService; device ids passed in are already authenticated."""

    def __init__(
        self,
        state: State,
        fanout: GalleryFanout,
        settings: FleetSettings,
        embedding_models: Callable[[], tuple[str, ...]],
        clock: Callable[[], datetime] = utc_now,
        models: ModelDistribution | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.models = models
        self.fanout = fanout
        self.settings = settings
        self.embedding_models = embedding_models
        self.clock = clock
        self.gallery_id = state.gallery_id()
        self.deltas = DeltaCache(state)
        fanout.on_head(self.deltas.forget_before)
        self._registered: set[str] = set()
        self.newer_agents = NewerAgentLog()
        self._unknown_models: set[tuple[str, str]] = set()
        """(device, embedding model) pairs already logged as watched without a gallery of that model."""

    async def register(self, registration: Registration, ignored: Sequence[str] = ()) -> Welcome:
        """Record the agent, its groups and the model statuses it brought; the server's answer. ignored:
        what the agent sent that this server does not know (facefleet.link.serde.Notes), logged."""
        self.newer_agents.ignored(registration.device_id, ignored)

        statuses = registration.model_statuses
        # Statuses go through the model distribution when there is one, so that a refusal an agent
        # reports as it registers counts against its rollout's failure budget at once.
        through_distribution = self.models is not None and bool(statuses)

        def store() -> int:
            now = self.clock()
            self.state.register_agent(registration, now)
            self.state.models.set_agent_models(
                registration.device_id,
                now,
                statuses=() if through_distribution else statuses,
                groups=registration.groups,
            )
            return self.state.head_revision()

        await self.fanout.publish(await asyncio.to_thread(store))
        if through_distribution:
            assert self.models is not None
            await self.models.report(registration.device_id, statuses, {}, {})
        self._registered.add(registration.device_id)
        log.info(
            "device %s registered (agent %s)",
            registration.device_id,
            registration.agent_version,
            extra={"device_id": registration.device_id},
        )
        return Welcome(
            gallery_revision=self.fanout.head,
            gallery_id=self.gallery_id,
            embedding_models=self.embedding_models(),
            max_report_events=self.settings.max_report_events,
            heartbeat_seconds=round(self.settings.heartbeat_seconds),
            server_time=self.clock(),
            cluster_threshold=self.settings.cluster_threshold,
            server_version=__version__,
        )

    async def watch(
        self,
        device_id: str,
        from_revision: int,
        gallery_id: str,
        models: Sequence[str],
        admitted: Callable[[], object] = lambda: None,
    ) -> AsyncIterator[GalleryDelta | Heartbeat | ModelAssignment]:
        """The agent's missing changes, then every new one, until the server stops or the stream reaches
        its maximum age; after the initial gallery update, the model releases it should run whenever they
        differ from what was last sent (gallery deltas go first). `admitted` raises when the device may no
        longer be served: it is asked again whenever a device changes, and its error ends the stream at
        once."""
        await self._require_registered(device_id)
        await self._note_unknown_models(device_id, models)
        snapshot = from_revision == 0 or (bool(gallery_id) and gallery_id != self.gallery_id)
        if not snapshot and from_revision > await self._head_reaching(from_revision):
            raise FailedPreconditionError(
                f"from_revision {from_revision} is ahead of the server's gallery revision "
                f"{self.fanout.head}: "
                "the agent's gallery did not come from this server's database; watch from revision 0 to "
                "receive a full snapshot"
            )
        wanted = frozenset(models) if models else None
        revision = from_revision
        models_seen: int | None = None
        devices_seen = self.fanout.devices_head
        sent: tuple[ModelRelease, ...] = ()
        ends_at = self._stream_end()
        self.fanout.enter(device_id)
        self._count_streams(+1)
        try:
            if not snapshot and revision == self.fanout.head:
                yield Heartbeat(revision, self.clock())
            while not self.fanout.closed:
                if devices_seen != self.fanout.devices_head:
                    devices_seen = self.fanout.devices_head
                    admitted()
                elif snapshot or self.fanout.head > revision:
                    delta = await self.deltas.get(revision, self.fanout.head, snapshot)
                    await self.fanout.publish(delta.to_revision)  # read from the state: maybe beyond the head
                    for part in split_delta(only_models(delta, wanted), self.settings.max_message_bytes // 2):
                        yield part
                    revision, snapshot = delta.to_revision, False
                elif self.models is not None and models_seen != self.fanout.models_head:
                    models_seen = self.fanout.models_head
                    planned = await self.models.releases(device_id)
                    if planned.head > revision:  # gallery first: recompute once the agent has it
                        await self.fanout.publish(planned.head)
                        models_seen = None
                    elif planned.releases != sent:
                        sent = planned.releases
                        yield ModelAssignment(planned.releases)
                        await self.models.announce(device_id, planned)
                elif (left := ends_at - time.monotonic()) <= 0:
                    break
                elif not await self.fanout.wait_beyond(
                    revision,
                    min(self.settings.heartbeat_seconds, left),
                    models=models_seen,
                    devices=devices_seen,
                ):
                    if self.fanout.closed or time.monotonic() >= ends_at:
                        break
                    admitted()  # also what changes without a device change: a certificate's expiry
                    yield Heartbeat(self.fanout.head, self.clock())
                    await asyncio.to_thread(self.state.touch_agent, device_id, self.clock())
        finally:
            self.fanout.leave(device_id)
            self._count_streams(-1)

    async def _note_unknown_models(self, device_id: str, models: Sequence[str]) -> None:
        """Log once per device and model an embedding model asked for that is neither one enrolment embeds
        with nor one of an embedding rollout (read from the state too: one another replica started may not
        have reached this one's list yet): its gallery comes without embeddings, so the agent recognises no
        one. The stream is served all the same: model assignments, a rollback's among them, reach an agent
        only on it, and its reports share the agent's session."""
        known = self.embedding_models()
        unlogged = [m for m in models if m not in known and (device_id, m) not in self._unknown_models]
        if not unlogged:
            return
        known = (*known, *await asyncio.to_thread(rollout_embedding_models, self.state.models))
        for model in dict.fromkeys(m for m in unlogged if m not in known):
            if len(self._unknown_models) >= MAX_UNKNOWN_MODELS:
                self._unknown_models.clear()
            self._unknown_models.add((device_id, model))
            log.warning(
                "device %s watches embedding model %s, which this server neither enrols with nor rolls out: "
                "it enrols with %s, so the device's gallery has no embeddings and it recognises no one. Roll "
                "one of those models out to the device, or publish %s and start an embedding rollout of it",
                device_id,
                model,
                ", ".join(dict.fromkeys(known)) or "no embedding model yet",
                model,
                extra={"device_id": device_id, "model_id": model},
            )

    def _stream_end(self) -> float:
        """When (time.monotonic(), s) a stream opened now ends: 85–100 % of the maximum age from now."""
        if self.settings.watch_max_age is None:
            return float("inf")
        share = random.uniform(0.85, 1.0)  # noqa: S311 (a spread over time, not a secret)
        return time.monotonic() + self.settings.watch_max_age.total_seconds() * share

    def _count_streams(self, change: int) -> None:
        if self.metrics is not None:
            self.metrics.watch_streams.inc(change)
            self.metrics.agents_watching.set(len(self.fanout.watching()))

    async def acknowledge(self, device_id: str, revision: int) -> int:
        await self._require_registered(device_id)
        if revision > await self._head_reaching(revision):
            raise InvalidArgumentError(
                f"gallery_revision {revision} is ahead of the server's {self.fanout.head}; acknowledge only "
                "revisions received from this server"
            )
        await asyncio.to_thread(self.state.touch_agent, device_id, self.clock(), gallery_revision=revision)
        return self.fanout.head

    async def _head_reaching(self, revision: int) -> int:
        """The gallery head, read from the state first when `revision` is beyond this process's: a change
        committed through another replica (or the CLI) reaches the fanout a moment later, while an agent may
        hold it already, from that replica or from a delta this one computed."""
        if revision > self.fanout.head:
            await self.fanout.publish(await asyncio.to_thread(self.state.head_revision))
        return self.fanout.head

    def check_report_size(self, events: int) -> None:
        """InvalidArgumentError when a report holds more events than the server takes at once: checked on
        the count alone, before any event is decoded."""
        if events > self.settings.max_report_events:
            raise InvalidArgumentError(
                f"{events} events in one report; the limit is {self.settings.max_report_events}: "
                "split the batch"
            )

    async def report(
        self,
        device_id: str,
        events: Sequence[Event],
        rejected: Sequence[tuple[str, str]],
        health: Mapping[str, float],
        newer: Sequence[tuple[str, str]] = (),
    ) -> ReportOutcome:
        """Store the events; rejected: (event_id, why) of those refused already; newer: (event_id, value) of
        those with a kind or decision value this server does not know (e.g. 'kind 3'), deferred: the agent
        keeps them and reports them again (ReportResultsResponse.deferred)."""
        total = len(events) + len(rejected) + len(newer)
        self.check_report_size(total)
        self.newer_agents.ignored(
            device_id,
            {f"events of {value}" for _, value in newer},
            "those events are deferred (not stored; the agent keeps them and reports them again)",
        )
        deferred = tuple((event_id, f"{value} {DEFERRED_REASON}") for event_id, value in newer)
        health = check_health(health)
        await self._require_registered(device_id)
        for event in events:
            if event.device_id != device_id:
                raise PermissionDeniedError(
                    f"event {event.event_id} names device {event.device_id!r}, but this connection is device "
                    f"{device_id!r}; an agent reports only its own events"
                )
        now = self.clock()
        refusals = {e.event_id: why for e in events if (why := refusal(e, now, self.settings)) is not None}
        if refusals:
            events = [e for e in events if e.event_id not in refusals]
            rejected = [*rejected, *refusals.items()]

        def store() -> tuple[int, int, list[tuple[str, str]]]:
            stored, duplicates = self.state.add_events(events) if events else (0, 0)
            taken: list[tuple[str, str]] = []
            if duplicates:  # a repeat is the agent's own event; an id another device holds is not
                owners = self.state.event_devices([e.event_id for e in events])
                taken = [(i, owner) for i, owner in owners.items() if owner != device_id]
            self.state.touch_agent(device_id, self.clock(), health=health or None)
            return stored, duplicates - len(taken), taken

        stored, duplicates, taken = await asyncio.to_thread(store)
        if taken:
            log.warning(
                "device %s reported %d events whose ids are stored for other devices (event %r of %s, …); "
                "they were not stored: event ids must be unique (UUIDs), or one device is reusing another's",
                device_id,
                len(taken),
                taken[0][0],
                taken[0][1],
                extra={"device_id": device_id, "event_id": taken[0][0]},
            )
            rejected = [
                *rejected,
                *(
                    (i, f"event id {i} is already stored for another device; give each event a new UUID")
                    for i, _ in taken
                ),
            ]
        if self.metrics is not None:
            self.metrics.reported(stored, duplicates, len(rejected))
        log.debug(
            "device %s reported %d events: %d stored, %d duplicates, %d rejected",
            device_id,
            total,
            stored,
            duplicates,
            len(rejected),
            extra={"device_id": device_id},
        )
        if rejected:  # the first one with its reason; the rest are in the reply to the agent
            event_id, why = rejected[0]
            log.info(
                "device %s: %d reported events rejected; event %r: %s",
                device_id,
                len(rejected),
                event_id,
                why,
                extra={"device_id": device_id, "event_id": event_id},
            )
        return ReportOutcome(stored, duplicates, tuple(rejected), deferred)

    async def download(
        self, device_id: str, model_id: str, file_name: str, offset: int
    ) -> AsyncIterator[Chunk]:
        await self._require_registered(device_id)
        if self.models is None:
            raise FailedPreconditionError("this server does not distribute models")
        async for chunk in self.models.download(model_id, file_name, offset):
            yield chunk

    async def report_models(
        self,
        device_id: str,
        statuses: Sequence[ModelStatus],
        model_versions: Mapping[str, str],
        model_precisions: Mapping[str, str],
        ignored: Sequence[str] = (),
    ) -> None:
        await self._require_registered(device_id)
        self.newer_agents.ignored(device_id, ignored)
        if self.models is None:
            raise FailedPreconditionError("this server does not distribute models")
        await self.models.report(device_id, statuses, model_versions, model_precisions)
        await asyncio.to_thread(self.state.touch_agent, device_id, self.clock())

    async def _require_registered(self, device_id: str) -> None:
        if device_id in self._registered:
            return
        if await asyncio.to_thread(self.state.get_agent, device_id) is None:
            raise FailedPreconditionError(f"device {device_id!r} has not registered; call Register first")
        self._registered.add(device_id)


def only_models(delta: GalleryDelta, model_ids: frozenset[str] | None) -> GalleryDelta:
    """The delta with only the embeddings of model_ids (all when None)."""
    if model_ids is None:
        return delta
    return replace(delta, upserts=tuple(p.with_models(model_ids) for p in delta.upserts))


def split_delta(delta: GalleryDelta, max_bytes: int) -> list[GalleryDelta]:
    """Parts of at most ~max_bytes each (a single larger person gets a part of its own); all parts but the
    last have more_parts=True, the deletes travel in the last part."""
    groups: list[list[Person]] = [[]]
    size = 0
    for person in delta.upserts:
        person_bytes = person.estimated_bytes()
        if groups[-1] and size + person_bytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(person)
        size += person_bytes
    if len(groups) == 1:
        return [delta]
    last = len(groups) - 1
    return [
        replace(
            delta,
            upserts=tuple(group),
            deletes=delta.deletes if i == last else (),
            more_parts=i != last,
        )
        for i, group in enumerate(groups)
    ]


def refusal(event: Event, now: datetime, settings: FleetSettings) -> str | None:
    """Why a well-formed reported event is not stored (None: it is): an event id that is not a UUID (ids
    are how repeats are recognised), or a time the server's clock cannot believe."""
    if not EVENT_ID_PATTERN.fullmatch(event.event_id):
        return (
            f"event_id {event.event_id[:64]!r} is not a UUID in its canonical form "
            "(8-4-4-4-12 lower-case hexadecimal digits)"
        )
    if event.time > now + settings.max_event_ahead:
        return (
            f"{EVENT_TIME_REFUSAL}{event.time.isoformat()} is ahead of the server's clock "
            f"({now.isoformat()}) by more than {settings.max_event_ahead}: set the device's clock"
        )
    if event.time < now - settings.max_event_age:
        return (
            f"{EVENT_TIME_REFUSAL}{event.time.isoformat()} is older than the {settings.max_event_age.days} "
            "days the server takes reports for"
        )
    return None
