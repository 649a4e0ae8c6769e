"""The agent's link to the fleet server: it dials out (so NAT is no problem), registers, watches the gallery
from the last applied server revision, applies every delta atomically to the store and acknowledges it, and
reports queued events in batches until the server acknowledges them. Model assignments that arrive on the
Watch stream go to the model updater (facefleet.agent.updates.updater), whose downloads and status reports use
the same session; an embedding-model switch reconnects to watch the galleries of both models.

`FleetSync` runs grpc.aio on an event loop of its own thread. One loop carries the Watch stream, the report
batches and the backoff timers concurrently, and stopping is one event instead of cancelling blocking calls
across threads; store writes run in a worker thread so a large snapshot never stalls the stream. When the
server is away the agent keeps recognising on the gallery it has and retries with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography import x509

from facefleet import __version__
from facefleet.agent.domain.clock import clock_warning
from facefleet.agent.domain.fleet import CERTIFICATE_EXPIRY_HEALTH, CLOCK_HEALTH, SyncPoint
from facefleet.agent.domain.records import RevisionConflictError, StoreError
from facefleet.agent.fleet.channel import (
    certificate_refusal,
    channel_options,
    describe_rpc_error,
    read_tls,
    server_address,
)
from facefleet.agent.fleet.client import FleetClient, WatchStream
from facefleet.agent.fleet.reports import report_event
from facefleet.agent.publish.certificates import MAX_CERTIFICATE_FILE_BYTES, utc
from facefleet.agent.publish.events import AgentEvent
from facefleet.agent.store.database import EmbeddingStore, Wiped
from facefleet.agent.store.reports import PreparedReport, prepare_report
from facefleet.core.backoff import Backoff
from facefleet.core.errors import ConfigError, FaceFleetError
from facefleet.link.checks import MAX_HEALTH_ENTRIES, MAX_HEALTH_KEY_CHARS, MAX_REASON_CHARS
from facefleet.link.errors import LinkError
from facefleet.link.fleet import (
    WATCH_END_MAX_AGE,
    WATCH_END_SHUTDOWN,
    Heartbeat,
    Registration,
    Welcome,
    refused_for_time,
)
from facefleet.link.gallery import GalleryDelta, join_parts
from facefleet.link.models import MAX_STATUSES, ModelAssignment, ModelStatus

if TYPE_CHECKING:
    from facefleet.agent.updates.updater import ModelUpdater

log = logging.getLogger(__name__)

MAX_HEALTH_FIGURES = MAX_HEALTH_ENTRIES
WIPE_METADATA = ("facefleet-device-action", "wipe-gallery")
"""Trailing metadata of the server's refusal of a device revoked with --wipe: erase the gallery."""
STATUS_RETRY_S = 5.0
"""How often model statuses the server did not acknowledge are sent again."""
REPORT_BYTES = 4 << 20
"""Most bytes of events and their face snapshots in one report, well under the server's message limit."""


@dataclass(frozen=True)
class SyncSettings:
    """How to reach the server and what to tell it. key_file may be a bare name in $CREDENTIALS_DIRECTORY
    (resolved by the caller); models: the embedding models the agent matches with (only those are sent);
    report_batch, report_bytes: most events, and most bytes of events with their snapshots, in one report."""

    address: str
    device_id: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    models: tuple[str, ...]
    server_name: str = ""
    agent_version: str = __version__
    hostname: str = ""
    model_versions: Mapping[str, str] = field(default_factory=dict)
    model_precisions: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    report_batch: int = 500
    report_bytes: int = REPORT_BYTES
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    keepalive_s: float = 30.0
    rpc_timeout_s: float = 30.0
    health_interval_s: float = 30.0


class _RetryError(Exception):
    """The session ended for a reason worth a log line; reconnect after the backoff."""


class _ReconnectNowError(Exception):
    """The server ended the watch stream on purpose (its maximum age): reconnect at once."""


class FleetSync:
    """The sync client of one agent. start() once, stop() once; submit() queues an event for the server.

    health(): figures sent with every report (e.g. frames analysed, outbox pending); the report queue's own
    are added. The TLS files are read at construction (ConfigError when unusable) and again on reconnect:
    files that do not make a usable set then (a renewed certificate without its key) are logged once, shown
    in tls_error, and the connection goes on with the set read before."""

    def __init__(
        self,
        settings: SyncSettings,
        store: EmbeddingStore,
        health: Callable[[], Mapping[str, float]] = dict,
        updater: ModelUpdater | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.health = health
        self.updater = updater
        if updater is not None:
            updater.gallery = self
        self._client: FleetClient | None = None
        self._assignment: ModelAssignment | None = None
        self._assigned: asyncio.Event | None = None
        self._restart: asyncio.Event | None = None
        server_address(settings.address)
        self._tls = read_tls(settings)
        self._thread = threading.Thread(target=self._thread_main, name="fleet-sync", daemon=True)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._resync = False
        self._guard_changed = False
        """The server's cluster threshold changed: the running embedding model's precision is checked."""
        self.connected = False
        self.last_error: str | None = None
        self.server_revision: int | None = None
        self.applied_revision = store.sync.point().revision
        self.connects = 0
        self.reported = 0
        self.refused = 0
        self.clock_refusal: str | None = None
        """The server's reason for refusing an event for its time, since it last took a report without such a
        refusal: the wall clock is off (domain.clock.clock_warning)."""
        self.wiped_at: float | None = None
        self.certificate_expires_at = certificate_expiry(self._tls[2])
        """When the certificate in use expires (Unix seconds): the one of the last usable set of TLS files."""
        self.tls_error: str | None = None
        """Why the TLS files as they are now cannot be used (the set read before is), None when they can."""
        self._refused_tls: tuple[bytes | str, ...] | None = None
        """What the TLS files held when tls_error was logged: each change of them is logged once."""
        self.server_version: str | None = None
        """The server's software version, as its last Register said ("" when it did not say)."""
        self.server_embedding_models: tuple[str, ...] = ()
        """The embedding models the server enrols with, as its last Register said."""
        self._deferred: set[str] = set()
        """Event ids the server deferred in this session (a kind or decision it does not know yet): kept in
        the queue and reported again at the next connection (a server upgrade reconnects)."""
        self._refusals: dict[tuple[str, str, int], ModelStatus] = {}
        """Failed statuses of assigned releases of tasks this agent does not know, by (task, model id,
        rollout)."""

    # ---- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the session (the server sees the Watch stream close) and join the thread."""
        self._stop_requested.set()
        with self._lock:
            if self._loop is not None and self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """The sync thread is alive (started and not yet stopped)."""
        return self._thread.is_alive()

    def submit(self, event: AgentEvent) -> bool:
        """Queue a face or access event for the server (durably, before any attempt to send it); False when
        its event id is already queued. StoreError when the store cannot take it, LinkError when the event
        breaks the link's limits."""
        return self.queue(self.prepare(event))

    def queue(self, report: PreparedReport) -> bool:
        """Queue a prepared report (prepare()) and wake the report loop; False when already queued."""
        with self.store.connection.write() as conn:
            added = self.store.reports.add(conn, report)
        self.wake()
        return added

    def prepare(self, event: AgentEvent) -> PreparedReport:
        """An event as the report queue takes it, with the gallery revision applied now (to be queued by
        the caller, e.g. with its MQTT message in one transaction, then wake()). InvalidRecordError or
        LinkError when it cannot be reported."""
        revision = self.applied_revision
        return prepare_report(report_event(event, revision), revision)

    def wake(self) -> None:
        """Report what was queued without waiting for the next round."""
        with self._lock:
            if self._loop is not None and self._wake is not None:
                self._loop.call_soon_threadsafe(self._wake.set)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event is acknowledged (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while self.store.reports.count() > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    @property
    def certificate_in_use(self) -> bytes:
        """The PEM of the client certificate this link presents (of the last usable set of TLS files)."""
        return bytes(self._tls[2])

    def status(self) -> dict[str, Any]:
        """For the agent's status: connection, revisions, and the report queue."""
        return {
            "address": self.settings.address,
            "connected": self.connected,
            "gallery_revision": self.applied_revision,
            "server_revision": self.server_revision,
            "reports_pending": self.store.reports.count(),
            "reports_dropped": self.store.reports.dropped(),
            "reports_refused": self.store.reports.refused(),
            "reports_deferred": len(self._deferred),
            "last_error": self.last_error,
            "server_version": self.server_version,
            "server_embedding_models": list(self.server_embedding_models),
            "certificate_expires_at": self.certificate_expires_at,
            "tls_error": self.tls_error,
            "gallery_wiped_at": self.wiped_at,
        }

    # ---- the loop -----------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("server %s: the sync client stopped unexpectedly", self.settings.address)

    async def _main(self) -> None:
        stopping, wake = asyncio.Event(), asyncio.Event()
        self._assigned, self._restart = asyncio.Event(), asyncio.Event()
        with self._lock:
            self._loop, self._stopping, self._wake = asyncio.get_running_loop(), stopping, wake
        if self._stop_requested.is_set():
            return
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        models = None if self.updater is None else asyncio.ensure_future(self._models(self.updater))
        try:
            while not stopping.is_set():
                reason = await self._attempt(backoff, stopping, wake)
                if stopping.is_set():
                    break
                if reason is None:
                    continue
                if self._restart.is_set():
                    self._restart.clear()
                    watched = ", ".join(self.settings.models)
                    log.info(
                        "server %s: reconnecting to watch embedding models %s", self.settings.address, watched
                    )
                    continue
                delay = backoff.next()
                self.last_error = reason
                wait = f"{delay:.1f}" if delay < 10 else f"{delay:.0f}"
                log.warning("server %s: %s (retrying in %s s)", self.settings.address, reason, wait)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
        finally:
            if models is not None:
                models.cancel()
                await asyncio.gather(models, return_exceptions=True)
            with self._lock:
                self._loop = self._stopping = self._wake = None

    async def _attempt(self, backoff: Backoff, stopping: asyncio.Event, wake: asyncio.Event) -> str | None:
        """One session; why it ended (ignored when stopping), None to reconnect at once."""
        try:
            await self._session(backoff, stopping, wake)
            return "stopped"
        except _ReconnectNowError as exc:
            log.info("server %s: %s; reconnecting", self.settings.address, exc)
            return None
        except _RetryError as exc:
            return str(exc)
        except grpc.aio.AioRpcError as exc:
            settings = self.settings
            refusal = certificate_refusal(settings, self._tls[2], settings.device_id, time.time())
            reason = describe_rpc_error(
                exc, settings.rpc_timeout_s, connected=self.connected, certificate=refusal
            )
            if WIPE_METADATA in tuple(exc.trailing_metadata() or ()):
                failure = await self._wipe(exc)  # never raises: this handler must return
                reason = reason if failure is None else f"{reason}; {failure}"
            return reason
        except (FaceFleetError, OSError) as exc:
            return str(exc)
        except Exception as exc:  # a bug must not end the sync for the life of the agent
            log.exception("server %s: unexpected error in the sync client", self.settings.address)
            return f"unexpected error: {exc!r}"
        finally:
            self.connected = False

    async def _wipe(self, refusal: grpc.aio.AioRpcError) -> str | None:
        """The server revoked this device and ordered its gallery erased (a lost or stolen box): erase it
        (EmbeddingStore.wipe). None once erased; why not, when the store could not be erased or scrubbed
        (busy, full): logged, and tried again at the server's next refusal, after the reconnect backoff."""

        def erase() -> Wiped | None:
            if self.wiped_at is not None and not self.store.holds_personal_data():
                return None  # erased already; the server repeats the order on every call
            return self.store.wipe()

        try:
            wiped = await asyncio.to_thread(erase)
        except Exception as exc:  # a StoreError, or a bug: either way the sync must go on to retry it
            failure = f"the gallery is NOT erased yet ({exc}); trying again at the next refusal"
            log.critical(
                "server %s revoked this device and ordered its gallery erased (%s), but %s",
                self.settings.address,
                refusal.details(),
                failure,
                exc_info=not isinstance(exc, StoreError),
            )
            return failure
        if wiped is None:
            return None
        self.wiped_at = time.time()
        self.applied_revision = 0
        log.critical(
            "server %s revoked this device and ordered its gallery erased (%s): deleted %s, and scrubbed %s",
            self.settings.address,
            refusal.details(),
            wiped,
            self.store.path,
        )
        return None

    async def _session(self, backoff: Backoff, stopping: asyncio.Event, wake: asyncio.Event) -> None:
        await asyncio.to_thread(self._reread_tls)  # certificates may have been renewed
        channel = grpc.aio.secure_channel(self.settings.address, self._credentials(), options=self._options())
        try:
            client = FleetClient(channel, self.settings.device_id)
            point = await asyncio.to_thread(self.store.sync.point)
            welcome = await client.register(self._registration(point), self.settings.rpc_timeout_s)
            self.server_revision = welcome.gallery_revision
            self._deferred.clear()  # a new connection, maybe to an upgraded server: report them again
            await self._note_cluster_threshold(welcome.cluster_threshold)
            models = self.settings.models  # this session's: deltas are recorded as of these models
            self._note_server(welcome, models)
            from_revision, gallery_id, why = resume_from(point, welcome, models, self._resync)
            if why is not None:  # expected when an embedding-model switch changes the watched models
                level = logging.INFO if set(point.models) != set(models) else logging.WARNING
                log.log(level, "server %s: %s; asking for a full snapshot", self.settings.address, why)
            self._resync = False
            stream = client.watch(from_revision, gallery_id, models)
            self.connected, self.connects = True, self.connects + 1
            log.info(
                "server %s (version %s): connected as %s (agent version %s); watching from gallery revision "
                "%d (server at %d)",
                self.settings.address,
                welcome.server_version or "not said",
                self.settings.device_id,
                self.settings.agent_version,
                from_revision,
                welcome.gallery_revision,
            )
            assert self._restart is not None
            tasks = {
                asyncio.ensure_future(self._watch(client, stream, welcome, backoff, models)),
                asyncio.ensure_future(self._report(client, welcome, wake)),
                asyncio.ensure_future(stopping.wait()),
                asyncio.ensure_future(self._restart.wait()),
            }
            self._client = client
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._client = None
                stream.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()  # the failure that ended the session, if any
        finally:
            await channel.close()

    def _reread_tls(self) -> None:
        """Use the TLS files as they are now if they make a usable set; otherwise go on with the set in use
        and log why once for what the files hold (a copy in progress, or a key from $CREDENTIALS_DIRECTORY
        that only a restart renews, would otherwise cut the agent off from the server)."""
        try:
            tls = read_tls(self.settings)
        except ConfigError as exc:
            held = self._tls_digest()
            if held != self._refused_tls:
                self._refused_tls = held
                expires = self.certificate_expires_at
                until = f" (valid until {utc(expires)})" if expires is not None else ""
                self.tls_error = (
                    f"the TLS files changed but cannot be used ({exc}); connections go on with the "
                    f"certificate and key read before{until} until they are put right"
                )
                log.error("server %s: %s", self.settings.address, self.tls_error)
            return
        if self.tls_error is not None:
            self.tls_error = self._refused_tls = None
            log.info("server %s: the TLS files are usable again and used from now on", self.settings.address)
        if tls != self._tls:
            self._tls = tls
            self.certificate_expires_at = certificate_expiry(tls[2])

    def _tls_digest(self) -> tuple[bytes | str, ...]:
        """What the TLS files hold now: a hash each, or why one cannot be read."""
        held: list[bytes | str] = []
        for path in (self.settings.ca_file, self.settings.cert_file, self.settings.key_file):
            try:
                with path.open("rb") as file:
                    held.append(hashlib.sha256(file.read(MAX_CERTIFICATE_FILE_BYTES)).digest())
            except OSError as exc:
                held.append(str(exc))
        return tuple(held)

    async def _watch(
        self,
        client: FleetClient,
        stream: WatchStream,
        welcome: Welcome,
        backoff: Backoff,
        models: tuple[str, ...],
    ) -> None:
        """Apply deltas as they come (they hold the embeddings of `models`, what this stream watches); a
        silence of two heartbeats means the connection is dead."""
        silence = 2.0 * max(welcome.heartbeat_seconds, 1) + 5.0
        parts: list[GalleryDelta] = []
        while True:
            try:
                update = await asyncio.wait_for(stream.read(), silence)
            except asyncio.TimeoutError:
                raise _RetryError(
                    f"nothing on the watch stream for {silence:.0f} s though the server sends heartbeats "
                    f"every {welcome.heartbeat_seconds} s: the connection is dead"
                ) from None
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    self._resync = True
                raise
            if update is None:
                reason = await stream.end_reason()
                if reason == WATCH_END_MAX_AGE:
                    raise _ReconnectNowError("the watch stream reached the server's maximum age")
                if reason == WATCH_END_SHUTDOWN:
                    raise _RetryError("the server is shutting down")
                raise _RetryError("the server ended the watch stream (restarting?)")
            backoff.reset()  # the session works: the next outage starts again from the shortest delay
            if isinstance(update, Heartbeat):
                self.server_revision = update.gallery_revision
                continue
            if isinstance(update, ModelAssignment):
                self._assign(update)
                await self._refuse_unsupported(client, update)
                continue
            parts.append(update)
            if update.more_parts:
                continue
            delta, count, parts = join_parts(parts), len(parts), []
            await self._apply(delta, count, models)
            await client.acknowledge(delta.to_revision, self.settings.rpc_timeout_s)

    async def _apply(self, delta: GalleryDelta, parts: int, models: tuple[str, ...]) -> None:
        try:
            revision = await asyncio.to_thread(self.store.sync.apply, delta, models)
        except RevisionConflictError as exc:
            self._resync = True
            raise _RetryError(str(exc)) from None
        self.applied_revision = delta.to_revision
        self.server_revision = max(self.server_revision or 0, delta.to_revision)
        log.info(
            "server %s: gallery revision %d applied%s%s (%d upserted, %d deleted; store revision %d)",
            self.settings.address,
            delta.to_revision,
            " from a snapshot" if delta.snapshot else "",
            f" in {parts} parts" if parts > 1 else "",
            len(delta.upserts),
            len(delta.deletes),
            revision,
        )

    async def _report(self, client: FleetClient, welcome: Welcome, wake: asyncio.Event) -> None:
        """Send queued events oldest first with their snapshots, at most a batch (and report_bytes) per call;
        delete them, snapshots too, once acknowledged (stored, already stored, or refused for good: those are
        counted in the store as they leave it, and a refusal for their time warns of the clock). Health goes
        along, at least every interval. A failed call keeps the batch for a retry with backoff (a dead
        connection ends the Watch, and the session)."""
        batch_size = min(self.settings.report_batch, welcome.max_report_events or self.settings.report_batch)
        interval = self.settings.health_interval_s
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        last_sent = -math.inf
        while True:
            wake.clear()
            batch = await asyncio.to_thread(
                self.store.reports.pending, batch_size, self.settings.report_bytes, frozenset(self._deferred)
            )
            idle = interval - (time.monotonic() - last_sent)
            if not batch and idle > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), idle)
                continue
            health = await asyncio.to_thread(self._health, len(batch))
            try:
                outcome = await client.report(batch, health, self.settings.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                delay = backoff.next()
                reason = describe_rpc_error(exc, self.settings.rpc_timeout_s, connected=True)
                log.warning(
                    "server %s: a report of %d events failed: %s (kept; retrying in %.1f s)",
                    self.settings.address,
                    len(batch),
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            last_sent = time.monotonic()
            for event_id, reason in outcome.rejected:
                address = self.settings.address
                log.warning("server %s refused event %s: %s (dropped)", address, event_id, reason)
            self._note_clock(outcome.rejected, outcome.stored + outcome.duplicates)
            self._note_deferred(outcome.deferred)
            self.reported += outcome.stored + outcome.duplicates
            self.refused += len(outcome.rejected)
            rejected = {event_id for event_id, _ in outcome.rejected}
            await asyncio.to_thread(
                self.store.reports.delete,
                [r.report_id for r in batch if r.event_id not in self._deferred],
                [r.report_id for r in batch if r.event_id in rejected],
            )

    def _note_deferred(self, deferred: Sequence[tuple[str, str]]) -> None:
        """Keep the events the server deferred out of this session's reports (they stay queued)."""
        if not deferred:
            return
        if not self._deferred:
            log.warning(
                "server %s cannot store %d events yet: event %s: %s (kept; reported again at the next "
                "connection)",
                self.settings.address,
                len(deferred),
                deferred[0][0],
                deferred[0][1],
            )
        self._deferred.update(event_id for event_id, _ in deferred)

    def _note_server(self, welcome: Welcome, models: Sequence[str]) -> None:
        """Record the server's version and embedding models; warn when it enrols with none this agent
        watches (the server then sends its people without embeddings of them, and logs it)."""
        if welcome.server_version != self.server_version:
            log.info("server %s: version %s", self.settings.address, welcome.server_version or "not said")
        self.server_version = welcome.server_version
        self.server_embedding_models = welcome.embedding_models
        missing = [m for m in models if m not in welcome.embedding_models]
        if missing:
            log.warning(
                "server %s enrols with embedding models %s, not %s that this agent matches with: the gallery "
                "has no embeddings of it, and no one is recognised until the agent runs one of the server's "
                "models or the server rolls the agent's out",
                self.settings.address,
                ", ".join(welcome.embedding_models) or "(none)",
                ", ".join(missing),
            )

    def _note_clock(self, rejected: Sequence[tuple[str, str]], taken: int) -> None:
        """Remember a refusal for the events' time until the server takes a report without one."""
        timed = [reason for _, reason in rejected if refused_for_time(reason)]
        if timed:
            self.clock_refusal = timed[0]
            warning = clock_warning(time.time(), self.clock_refusal)
            log.warning(
                "server %s: %d events refused for their time: %s", self.settings.address, len(timed), warning
            )
        elif taken:
            self.clock_refusal = None

    # ---- model versions -----------------------------------------------------------------------------

    def _assign(self, assignment: ModelAssignment) -> None:
        """The server's desired model versions arrived (at every Watch start, and on rollout changes)."""
        self._assignment = assignment
        if self.updater is not None:
            self.updater.assign(assignment)  # a release it no longer names is abandoned at its next step
        if self._assigned is not None:
            self._assigned.set()

    async def _refuse_unsupported(self, client: FleetClient, assignment: ModelAssignment) -> None:
        """Report each assigned release of a task this agent does not know (the server is newer) as failed
        for good, once, naming the task and the fix, so that its rollout shows it; the session goes on."""
        wanted = {(u.task, u.model_id, u.rollout_id): u for u in assignment.unsupported}
        for key in [key for key in self._refusals if key not in wanted]:
            del self._refusals[key]
        new = []
        for key, release in wanted.items():
            if key in self._refusals:
                continue
            reason = release.refusal(self.settings.agent_version)
            log.warning("server %s: model %s refused: %s", self.settings.address, release.model_id, reason)
            try:
                status = ModelStatus(
                    release.task,
                    release.model_id,
                    release.rollout_id,
                    "failed",
                    reason[:MAX_REASON_CHARS],
                    datetime.now(timezone.utc),
                )
            except LinkError as exc:  # a malformed task or model id: nothing to report it under
                log.warning("server %s: the refusal is not reported (%s)", self.settings.address, exc)
                continue
            self._refusals[key] = status
            new.append(status)
        if new:
            try:
                await client.report_models(new, {}, {}, self.settings.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                why = describe_rpc_error(exc, self.settings.rpc_timeout_s, connected=True)
                log.warning(
                    "server %s: refusal not reported (%s); sent again at Register", self.settings.address, why
                )

    async def _note_cluster_threshold(self, threshold: float | None) -> None:
        """Record what Register said of the server's cluster threshold; a change has the model updater
        check that the running embedding model's precision was guarded at it."""
        changed = await asyncio.to_thread(self.store.sync.record_cluster_threshold, threshold)
        if not changed:
            return
        if threshold is None:
            log.info("server %s: no longer says where it groups unknown faces", self.settings.address)
        else:
            log.info("server %s: unknown faces are grouped at cosine %s", self.settings.address, threshold)
        if self.updater is not None and self._assigned is not None:
            self._guard_changed = True
            self._assigned.set()

    async def _models(self, updater: ModelUpdater) -> None:
        """Apply each assignment; a broken connection or a refusal that may pass retries it after a backoff,
        and a newer assignment replaces one not yet applied. Statuses the server did not take are sent
        again every STATUS_RETRY_S."""
        assigned = self._assigned
        assert assigned is not None
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(assigned.wait(), STATUS_RETRY_S)
            if self._guard_changed:
                self._guard_changed = False
                try:
                    await updater.guard_changed("embedding")
                except Exception:  # never the end of model updates
                    log.exception("model update: the embedding model was not measured again")
            if updater.unreported and self._client is not None:
                await updater.report(self, self.settings.rpc_timeout_s)
            if not assigned.is_set():
                continue
            assigned.clear()
            assignment = self._assignment
            if assignment is None:
                continue
            while self._client is None:
                await asyncio.sleep(0.05)
            try:
                await updater.reconcile(assignment, self, self.settings.rpc_timeout_s)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("model update: %s; trying again in %.1f s", _first_line(exc), delay)
                with contextlib.suppress(asyncio.TimeoutError):  # a newer assignment cuts the wait short
                    await asyncio.wait_for(assigned.wait(), delay)
                if self._assignment is assignment:
                    assigned.set()

    def download(self, model_id: str, file: str, offset: int, timeout: float) -> AsyncIterator[bytes]:
        """DownloadModel on the current session (ConnectionError when there is none)."""
        client = self._client
        if client is None:
            raise ConnectionError("not connected to the server")
        return client.download(model_id, file, offset, timeout)

    async def report_models(
        self,
        statuses: Sequence[ModelStatus],
        versions: Mapping[str, str],
        precisions: Mapping[str, str],
        timeout: float,
    ) -> None:
        """ReportModelStatus on the current session (ConnectionError when there is none)."""
        client = self._client
        if client is None:
            raise ConnectionError("not connected to the server")
        await client.report_models(statuses, versions, precisions, timeout)

    def watch_models(self, models: tuple[str, ...]) -> None:
        """Watch the gallery of these embedding models from now on: a changed set reconnects at once and
        receives a snapshot with all of them. Call on the sync thread (the model updater runs there)."""
        models = tuple(dict.fromkeys(models))
        if models == self.settings.models:
            return
        log.info("server %s: watching embedding models %s", self.settings.address, ", ".join(models))
        self.settings = replace(self.settings, models=models)
        if self._restart is not None and self._client is not None:
            self._restart.set()

    def gallery_has(self, model_id: str) -> bool:
        """The applied gallery came from a watch that included this embedding model."""
        return model_id in self.store.sync.point().models

    # ---- pieces -------------------------------------------------------------------------------------

    def _registration(self, point: SyncPoint) -> Registration:
        settings = self.settings
        return Registration(
            device_id=settings.device_id,
            agent_version=settings.agent_version,
            hostname=settings.hostname,
            model_versions=self.updater.versions() if self.updater else dict(settings.model_versions),
            model_precisions=self.updater.precisions() if self.updater else dict(settings.model_precisions),
            capabilities=settings.capabilities,
            gallery_revision=point.revision,
            gallery_id=point.gallery_id,
            model_statuses=self._statuses(),
            groups=settings.groups,
        )

    def _statuses(self) -> tuple[ModelStatus, ...]:
        """The updater's model statuses, then the refusals of releases of unknown tasks (at most
        MAX_STATUSES)."""
        statuses = self.updater.statuses() if self.updater else []
        tasks = {s.task for s in statuses}
        refusals = [s for s in self._refusals.values() if s.task not in tasks]
        return (*statuses, *refusals)[:MAX_STATUSES]

    def _health(self, sending: int) -> dict[str, float]:
        """The queue's figures (beyond the `sending` events of this report) and the certificate's, then the
        caller's: finite, at most MAX_HEALTH_FIGURES (the server's limit; the caller's last ones are left
        out beyond it)."""
        try:
            own: dict[str, float] = {
                "reports_pending": self.store.reports.count() - sending,
                "reports_dropped": self.store.reports.dropped(),
                "reports_refused": self.store.reports.refused(),
                "reports_deferred": len(self._deferred),
                CLOCK_HEALTH: float(clock_warning(time.time(), self.clock_refusal) is not None),
            }
            if self.certificate_expires_at is not None:
                own[CERTIFICATE_EXPIRY_HEALTH] = self.certificate_expires_at
            figures = {**own, **{k: v for k, v in self.health().items() if k not in own}}
            clean = {str(k)[:MAX_HEALTH_KEY_CHARS]: float(v) for k, v in figures.items() if k}
        except (StoreError, ValueError, TypeError) as exc:
            log.warning("health figures unavailable: %s", exc)
            return {}
        finite = [(k, v) for k, v in clean.items() if math.isfinite(v)]
        return dict(finite[:MAX_HEALTH_FIGURES])

    def _credentials(self) -> grpc.ChannelCredentials:
        ca, key, cert = self._tls
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def _options(self) -> list[tuple[str, Any]]:
        return channel_options(self.settings.keepalive_s, self.settings.server_name)


def resume_from(
    point: SyncPoint, welcome: Welcome, models: Sequence[str], resync: bool = False
) -> tuple[int, str, str | None]:
    """Where to watch from: (revision, gallery_id, None) to continue the applied server revision, or
    (0, "", why) for a snapshot when the stored gallery cannot be continued: the last delta did not fit
    (resync), other embedding models, another server gallery, or a revision the server never reached."""
    why = None
    if resync:
        why = "the last delta did not continue the stored gallery"
    elif point.revision and set(point.models) != set(models):
        why = f"the embedding models changed ({', '.join(point.models)} → {', '.join(models)})"
    elif point.gallery_id and welcome.gallery_id and point.gallery_id != welcome.gallery_id:
        why = f"the server's gallery is {welcome.gallery_id!r}, not {point.gallery_id!r}"
    elif point.revision > welcome.gallery_revision:
        why = f"the stored revision {point.revision} is ahead of the server's {welcome.gallery_revision}"
    return (point.revision, point.gallery_id, None) if why is None else (0, "", why)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def certificate_expiry(cert_pem: bytes) -> float | None:
    """When the first certificate in a PEM file expires (Unix seconds), None when it cannot be read."""
    try:
        return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()
    except ValueError:
        return None
