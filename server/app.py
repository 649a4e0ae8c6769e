"""Assembly of the grpc.aio server: state, handlers, servicers, health and reflection, two listeners, and a
graceful stop on SIGTERM/SIGINT.

Listeners: `listen.agents` requires a client certificate signed by the site CA (FleetService);
`listen.operators` is server-authenticated TLS for bearer-token callers (AdminService, QueryService). Every
service is served on both, and each checks its own credentials, so a call on the wrong listener fails with
UNAUTHENTICATED instead of reaching data. `listen.http` serves the HTTP API (facefleet.server.api.http) on
the same event loop, TLS with the server certificate and bearer tokens. With `insecure_development = true`
all are plaintext.

TLS files: read and checked together at start (facefleet.server.paths.check_tls: exit 78 naming the file and
the fault). SIGHUP rereads them: new connections on every listener get the new certificate and key (and
agents' certificates are checked against the new CA), connections already made keep theirs and stay up; files
that do not work together are refused with a logged error, and the ones loaded before keep serving. A server
certificate or CA within TLS_EXPIRY_WARNING_DAYS of its expiry is logged as a warning at start, at every
reload and daily; `facefleet_server_tls_not_after_seconds` tells when each file's first expiry is.

Stop: health turns NOT_SERVING, Watch streams end, running calls get `listen.grace_seconds`, then the
process exits 0. Exit codes of `serve`: 0 stopped by a signal, 65 the state database's schema is newer than
this server's (at start, or found at a look for changes: a newer server upgraded it), 69 cannot listen, 74
state database unusable (or being restored, or older than this server while other servers serve it), 78
configuration or TLS files unusable (systemd restarts on neither 65 nor 78).

While it serves, the process holds the state's serving lock (facefleet.server.state.serving), so that
`restore` and `state migrate` are refused until it stops. A replica that finds a restore holding a PostgreSQL
state (its lock's connection broke meanwhile) stops at once and exits 74: systemd starts it again, and it
serves once the restore has finished. A database older than the code is upgraded at start only while
no other server holds the lock (facefleet.server.state.serving.ServingLock.alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge

from facefleet.core import notify
from facefleet.core.errors import EXIT_DATA, EXIT_IO, EXIT_OK, EXIT_UNAVAILABLE, FaceFleetError
from facefleet.core.metrics import MetricsBindError
from facefleet.link.checks import utc_now
from facefleet.server.api import certs
from facefleet.server.api.audit import AuditLog
from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.http.server import HttpServer, start_http
from facefleet.server.api.security import Authenticator
from facefleet.server.api.servicers import AdminServicer, FleetServicer, QueryServicer
from facefleet.server.api.token_gate import TokenGate
from facefleet.server.api.wire import services
from facefleet.server.config import ServerConfig
from facefleet.server.domain.models import ROLLOUT_STATES
from facefleet.server.errors import (
    FailedPreconditionError,
    ServerConfigError,
    ServerError,
    StateOutdatedError,
)
from facefleet.server.fleet.device_admin import DeviceAdmin
from facefleet.server.fleet.devices import DeviceRegistry
from facefleet.server.fleet.link import FleetHandler, FleetSettings
from facefleet.server.fleet.queries import QueryHandler
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.gallery.enrolment_models import EnrolmentModels, rollout_embedding_models
from facefleet.server.gallery.people import PeopleHandler
from facefleet.server.gallery.unknown import UnknownFaces, UnknownSettings
from facefleet.server.metrics import ServerFigures, ServerMetrics, pool_figures
from facefleet.server.paths import ServerPaths, ServerTls, check_tls
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.control import RolloutControl
from facefleet.server.rollouts.distribution import ModelDistribution
from facefleet.server.rollouts.files import CHUNK_BYTES, ModelFiles
from facefleet.server.rollouts.uploads import ModelAdmin
from facefleet.server.state.fanout import GalleryFanout
from facefleet.server.state.interface import State
from facefleet.server.state.open import hold_serving, open_state
from facefleet.server.state.postgres.notify import LISTENING, follow
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.serving import RestoreRunningError
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime

log = logging.getLogger(__name__)
EXPIRY_INTERVAL_S = 3600.0
"""How often the retention job runs while serving."""
TLS_EXPIRY_WARNING_DAYS = 30
"""A server certificate or CA that expires sooner than this is warned about (at start, reload and daily)."""
TLS_EXPIRY_CHECK_S = 86_400.0
CONNECTION_IDLE_MS = 300_000
"""A gRPC connection without a call this long is closed (GOAWAY; the client reconnects for its next call).
An agent's Watch stream is a call, so its connection is never idle."""


@dataclass(frozen=True)
class Expired:
    """What one run of the retention job deleted."""

    events: int
    snapshots: int
    audit: int


_Fetch = Callable[[], grpc.ServerCertificateConfiguration]


class _TlsFetcher:
    """A gRPC listener's certificate-configuration fetcher (grpc.dynamic_ssl_server_credentials): gRPC
    calls it from its own threads before each new handshake; it hands over a configuration once after a
    reload, and None (keep the current one) otherwise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None

    def offer(self, configuration: grpc.ServerCertificateConfiguration) -> None:
        with self._lock:
            self._pending = configuration

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending


class BindError(ServerError):
    """A listener address cannot be bound (in use, or not an address of this host)."""

    status = "UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True)
class Ports:
    """Bound ports (useful with port 0); 0 for a listener that is off."""

    agents: int
    operators: int
    http: int = 0
    metrics: int = 0


class FleetServer:
    """One server process. `enroller` may be given (tests share one analyzer); otherwise it is built
    from the model store in the state directory on the first enrolment from images."""

    def __init__(
        self,
        config: ServerConfig,
        paths: ServerPaths,
        *,
        enroller: Enroller | None = None,
        state: State | None = None,
    ) -> None:
        self.config = config
        self.paths = paths
        # held until stop(): a restore or migration is refused meanwhile (facefleet.server.state.serving)
        self._serving = hold_serving(config.state.url, paths.database)
        try:
            self.state = state or self._open_state()
        except BaseException:
            self._serving.close()
            raise
        self.models = ModelStore(paths.models)
        self.catalog = ModelCatalog(self.state.models, self.models, limits=config.models.conversion_limits())
        self._runtime: Runtime | None = None
        self._runtime_lock = threading.Lock()
        self.enrolment = EnrolmentModels(config, paths, self.state, self.models, self._get_runtime, enroller)
        self.fanout: GalleryFanout | None = None
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._poll: asyncio.Task[None] | None = None
        self._tls_watch: asyncio.Task[None] | None = None
        self._tls: ServerTls | None = None
        self._tls_fetchers = (_TlsFetcher(), _TlsFetcher())  # agents, operators
        self._refreshing = asyncio.Lock()
        self._auth: Authenticator | None = None
        self.devices = DeviceRegistry(self.state)
        self.handlers: OperatorHandlers | None = None
        self._http: HttpServer | None = None
        self.metrics = ServerMetrics()
        self.metrics.watch(self.figures)
        self.metrics_endpoint = self.metrics.serve(config.metrics.listen)
        self.tls_not_after = Gauge(
            "facefleet_server_tls_not_after_seconds",
            "When the first certificate of a server TLS file to expire does (Unix seconds), by [tls] key",
            ["file"],
            registry=self.metrics.registry,
        )
        self._stopping = asyncio.Event()  # a signal, or a restore of the state: run() stops the server
        self._restored: RestoreRunningError | None = None
        self._outgrown: int | None = None
        """The newer schema version a look for changes found (a newer server upgraded the database)."""

    def _open_state(self) -> State:
        """The state database, upgraded if older than this server, but only while no other server serves
        it: those run the older code (ServersRunningError, exit 74, while they do)."""
        config = self.config
        for upgrade in (False, True):
            try:
                with self._serving.alone() if upgrade else contextlib.nullcontext():
                    return open_state(
                        config.state.url,
                        self.paths.database,
                        log_revisions=config.gallery.log_revisions,
                        pool_size=config.state.pool_size,
                        upgrade=upgrade,
                    )
            except StateOutdatedError:
                if upgrade:
                    raise
        raise AssertionError("unreachable")

    async def start(self) -> Ports:
        """Bind the listeners and start serving."""
        credentials = None if self.config.insecure_development else self._credentials()
        await asyncio.to_thread(self._expire_stalled)
        await asyncio.to_thread(self.devices.reload)
        self.fanout = GalleryFanout(
            self.state.head_revision(), self.state.models.models_revision(), self.devices.revision
        )
        await self.enrolment.follow_rollouts(
            await asyncio.to_thread(rollout_embedding_models, self.state.models)
        )
        auth = self._auth = Authenticator(
            self.state,
            devices=self.devices,
            insecure=self.config.insecure_development,
            cache_seconds=self.config.tokens.cache_seconds,
        )
        gate = TokenGate(auth, services.OPERATOR_SERVICE_NAMES)  # after the metrics, which count its refusals
        server = grpc.aio.server(options=self._options(), interceptors=[self.metrics.interceptor(), gate])
        try:
            await self._add_services(server, self.fanout, auth)
            listen = self.config.listen
            if listen.agents and listen.agents == listen.operators and not listen.agents.endswith(":0"):
                raise ServerConfigError("listen.agents and listen.operators must be different addresses")
            agent_credentials, operator_credentials = credentials or (None, None)
            agents = self._bind(server, listen.agents, agent_credentials, "listen.agents")
            operators = self._bind(server, listen.operators, operator_credentials, "listen.operators")
            await server.start()
            assert self.handlers is not None
            self._http = await start_http(
                self.handlers, self.config, self.paths, self._tls, bind_error=BindError, observer=self.metrics
            )
        except BaseException:
            await server.stop(0)
            raise
        self._server = server
        self._poll = asyncio.create_task(self._poll_changes())
        if self._tls is not None:
            self._tls_watch = asyncio.create_task(self._watch_tls_expiry())
        if self.config.insecure_development:
            log.warning("insecure_development = true: plaintext listeners, device ids taken from requests")
        try:
            metrics = self.metrics_endpoint.start()
        except MetricsBindError as exc:  # the service matters more than its figures
            log.error("%s; serving without the metrics endpoint", exc)
            metrics = 0
        return Ports(agents, operators, self._http.port if self._http else 0, metrics)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, end Watch streams, give running calls the grace period."""
        for task in (self._watchdog, self._poll, self._tls_watch):
            if task is not None:
                task.cancel()
        await self.health.enter_graceful_shutdown()
        await self.enrolment.close()
        if self.fanout is not None:
            await self.fanout.close()
        grace_s = self.config.listen.grace_seconds if grace is None else grace
        # Both listeners' calls get the grace period at once, so a stop stays within TimeoutStopSec=.
        stopping = [listener.stop(grace_s) for listener in (self._http, self._server) if listener is not None]
        await asyncio.gather(*stopping)
        self._http = self._server = None
        await asyncio.to_thread(self.metrics_endpoint.stop)  # waits for the serving thread's next poll
        if self.handlers is not None:
            await self.handlers.unknown.close()  # its clustering thread may be reading the state
        self.state.close()
        await asyncio.to_thread(self._serving.close)  # waits for a renewal in progress

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; tell systemd when ready, stopping, and ping its watchdog."""
        ports = await self.start()
        stop = self._stopping
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        status = f"agents on port {ports.agents or '-'}, operators on port {ports.operators or '-'}"
        status += f", HTTP API on port {ports.http or '-'}, metrics on port {ports.metrics or '-'}"
        log.info("serving: %s; gallery revision %d", status, self.state.head_revision())
        if not self.enrolment.embedding_models():
            log.warning(
                "no embedding model in %s: enrolment from images fails until you run "
                "`facefleet-server --state-dir %s models import-defaults`",
                self.paths.models,
                self.paths.state_dir,
            )
        # What was built so far lives as long as the server: out of the cyclic collector's way, a full
        # collection no longer walks it (measured: 6,000 daily counts over HTTP 116 → 55 ms median, their
        # gRPC p95 183 → 60 ms, from collections that the rows' objects set off).
        gc.collect()
        gc.freeze()
        notify.notify("READY=1", f"STATUS=serving {status}")
        interval = notify.watchdog_interval()
        if interval:
            self._watchdog = asyncio.create_task(_watchdog(interval))
        await stop.wait()
        if self._restored is not None:  # running calls are cut: they would write into the restore
            notify.notify("STOPPING=1", "STATUS=stopping: the state database is being restored")
            await self.stop(0)
            return EXIT_IO
        if self._outgrown is not None:  # its calls would fail on the newer schema: other replicas serve
            notify.notify("STOPPING=1", "STATUS=stopping: the state database was upgraded by a newer server")
            await self.stop(0)
            return EXIT_DATA
        notify.notify("STOPPING=1", "STATUS=stopping: finishing running calls")
        log.info("stopping (grace %.0f s)", self.config.listen.grace_seconds)
        await self.stop()
        return EXIT_OK

    # -- assembly ------------------------------------------------------------------------------------

    async def _add_services(
        self, server: grpc.aio.Server, fanout: GalleryFanout, auth: Authenticator
    ) -> None:
        config = self.config
        fleet = FleetHandler(
            self.state,
            fanout,
            FleetSettings(
                max_report_events=config.fleet.max_report_events,
                heartbeat_seconds=config.gallery.heartbeat_seconds,
                max_message_bytes=config.listen.max_message_bytes,
                max_event_age=timedelta(days=config.fleet.max_event_age_days),
                max_event_ahead=timedelta(seconds=config.fleet.max_event_ahead_seconds),
                watch_max_age=timedelta(seconds=config.fleet.watch_max_age_seconds)
                if config.fleet.watch_max_age_seconds
                else None,
                cluster_threshold=config.snapshots.cluster_threshold,
            ),
            metrics=self.metrics,
            embedding_models=self.enrolment.embedding_models,
            models=ModelDistribution(
                self.state,
                self.catalog,
                ModelFiles(min(CHUNK_BYTES, config.listen.max_message_bytes // 2)),
                changed=self.refresh,
            ),
        )
        enrolment = self.enrolment
        people = PeopleHandler(
            self.state, fanout, enrolment.enroller, enrolment.known_models, enrolment.complete
        )
        dashboard = QueryHandler(
            self.state,
            online_window=timedelta(seconds=config.fleet.online_window_seconds),
            watching=fanout.watching,
            head=lambda: fanout.head,
        )
        services.add_fleet_servicer(FleetServicer(fleet, auth), server)
        models = ModelAdmin(
            self.catalog,
            self.paths.uploads,
            config.models.max_upload_bytes,
            runtime=self._get_runtime,
            control=self.rollout_control,
            changed=self.refresh,
        )
        unknown = UnknownFaces(
            self.state,
            people,
            self.enrolment.enroller,
            UnknownSettings(
                threshold=config.snapshots.cluster_threshold,
                window=timedelta(days=config.snapshots.cluster_window_days),
                retain_crops=config.gallery.retain_crops,
            ),
        )
        devices = DeviceAdmin(self.state, changed=self.refresh)
        audit = AuditLog(self.state)
        self.handlers = OperatorHandlers(auth, people, unknown, dashboard, models, devices, audit)
        services.add_admin_servicer(AdminServicer(self.handlers), server)
        services.add_query_servicer(QueryServicer(self.handlers), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for name in ("", *services.SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (
                *services.SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )

    def _options(self) -> list[tuple[str, int]]:
        size = self.config.listen.max_message_bytes
        return [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.max_concurrent_streams", self.config.listen.max_concurrent_streams),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.server_handshake_timeout_ms", round(self.config.listen.handshake_timeout_seconds * 1000)),
            ("grpc.max_connection_idle_ms", CONNECTION_IDLE_MS),
        ]

    def _credentials(self) -> tuple[grpc.ServerCredentials, grpc.ServerCredentials]:
        """The listeners' credentials from the checked TLS files; reload_tls() hands new files to them."""
        tls = self._tls = check_tls(self.paths)
        self._tls_expiry(tls)
        agents_config, operators_config = _tls_configurations(tls)
        # gRPC's fetcher may return None (keep the current configuration); its type stubs say otherwise
        agents_fetcher, operators_fetcher = (cast(_Fetch, fetcher) for fetcher in self._tls_fetchers)
        agents = grpc.dynamic_ssl_server_credentials(
            agents_config, agents_fetcher, require_client_authentication=True
        )
        operators = grpc.dynamic_ssl_server_credentials(
            operators_config, operators_fetcher, require_client_authentication=False
        )
        return agents, operators

    def reload_tls(self) -> bool:
        """Reread the TLS files (SIGHUP) for new connections on every listener; connections already made keep
        the files they were made with. Each file is read once, and the bytes checked are the ones every
        listener takes, so that a file replaced meanwhile cannot hand a listener a pair that was not checked.
        False, with the fault logged, when the new files do not work together: those loaded before keep
        serving."""
        if self._tls is None:
            log.info("SIGHUP: nothing to reload (insecure_development = true: no TLS files)")
            return False
        try:
            tls = check_tls(self.paths)
            if self._http is not None:
                self._http.reload_tls(tls, self.paths)
        except ServerConfigError as exc:
            log.error("SIGHUP: the TLS files were not reloaded, the ones loaded before keep serving: %s", exc)
            return False
        for fetcher, configuration in zip(self._tls_fetchers, _tls_configurations(tls), strict=True):
            fetcher.offer(configuration)
        self._tls = tls
        names = ", ".join(certs.server_names(tls.chain))
        [(_, until), *_] = certs.not_after(tls.chain)
        log.info(
            "SIGHUP: reloaded the TLS files; new connections get the server certificate for %s, valid until "
            "%s (connections already made keep theirs)",
            names,
            f"{until:%Y-%m-%d}",
        )
        self._tls_expiry(tls)
        return True

    def _tls_expiry(self, tls: ServerTls, now: datetime | None = None) -> None:
        """Warn of a server certificate or CA that expires within TLS_EXPIRY_WARNING_DAYS; set the gauge."""
        now = now or utc_now()
        for key, pem, path, fix in (
            ("server_cert", tls.chain, self.paths.server_cert, "`facefleet-server certs server`, reload"),
            ("ca_cert", tls.ca, self.paths.ca_cert, "replace the site CA (README: 'Replacing the site CA')"),
        ):
            expiries = certs.not_after(pem)
            self.tls_not_after.labels(key).set(min(until for _, until in expiries).timestamp())
            for subject, until in expiries:
                if until - now < timedelta(days=TLS_EXPIRY_WARNING_DAYS):
                    state = "expired" if until <= now else f"expires in {(until - now).days} days"
                    log.warning(
                        "tls.%s %s: certificate %r %s (%s); renew it: %s",
                        key,
                        path,
                        subject,
                        state,
                        f"{until:%Y-%m-%d %H:%M} UTC",
                        fix,
                    )

    async def _watch_tls_expiry(self) -> None:
        while True:
            await asyncio.sleep(TLS_EXPIRY_CHECK_S)
            if self._tls is not None:
                self._tls_expiry(self._tls)

    def _bind(
        self, server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None, key: str
    ) -> int:
        if not address:
            return 0
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise BindError(
                f"{key} = {address!r}: cannot listen ({exc}); is another server running?"
            ) from None
        if not port:
            raise BindError(f"{key} = {address!r}: cannot listen; is the port in use?")
        return int(port)

    def figures(self) -> ServerFigures:
        """What the metrics endpoint reads at scrape time (from its own thread)."""
        fanout = self.fanout
        rollouts: dict[str, int] = dict.fromkeys(ROLLOUT_STATES, 0)
        for rollout in self.state.models.list_rollouts():
            rollouts[rollout.state] = rollouts.get(rollout.state, 0) + 1
        return ServerFigures(
            gallery_revision=fanout.head if fanout is not None else self.state.head_revision(),
            models_revision=fanout.models_head if fanout is not None else 0,
            rollouts=rollouts,
            pool=pool_figures(self.state),
        )

    # -- changes from other processes --------------------------------------------------------------

    async def refresh(self) -> None:
        """Publish gallery, model, rollout and device changes committed since the last look (by this
        process or another on the same state directory, e.g. the CLI) to the Watch streams; have the
        enroller follow the embedding models of rollouts. One at a time: a notification's and the periodic
        look's would otherwise publish what each read in either order. Each look only reads and publishes
        (the enroller follows in a background task of its own), so a device change waits for no
        re-embedding; a look that fails publishes nothing it did not finish, and the next one retries."""
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        assert self.fanout is not None
        models = self.state.models
        if await asyncio.to_thread(self.devices.reload):
            await self.fanout.publish_devices(self.devices.revision)
        await asyncio.to_thread(self._expire_stalled)
        # models first: a rollout activated after its gallery was completed is then seen with that gallery
        models_revision, head = await asyncio.to_thread(
            lambda: (models.models_revision(), self.state.head_revision())
        )
        if head > self.fanout.head:
            await self.fanout.publish(head)
        if models_revision != self.fanout.models_head:
            # the revision is published once its rollouts are read: a read that fails is retried
            await self.enrolment.follow_rollouts(await asyncio.to_thread(rollout_embedding_models, models))
            await self.fanout.publish_models(models_revision)
        self.enrolment.catch_up()  # again after a failure

    def rollout_control(
        self, runtime: Runtime | None = None, settle_seconds: float | None = None
    ) -> RolloutControl:
        """Rollouts for callers in this process (e.g. a benchmark): each change reaches the Watch streams at
        once instead of at the next poll. Call its blocking methods from a worker thread, not the loop."""
        loop = asyncio.get_running_loop()
        if settle_seconds is None:
            settle_seconds = 2 * self.config.fleet.poll_seconds + 1.0

        def changed() -> None:
            asyncio.run_coroutine_threadsafe(self.refresh(), loop)

        return RolloutControl(
            self.state,
            ModelCatalog(self.state.models, self.models, runtime),
            runtime=runtime,
            settle_seconds=settle_seconds,
            on_change=changed,
        )

    def _expire_stalled(self) -> None:
        """Roll back rollouts left preparing by a process that is gone (facefleet.server.rollouts.control)."""
        for rollout in RolloutControl(self.state, self.catalog).expire_stalled():
            log.warning(
                "rolled back rollout %d of %s: %s", rollout.rollout_id, rollout.model_id, rollout.reason
            )

    def expire(self) -> Expired:
        """Delete what [retention] says has expired (blocking), cut at midnight UTC; how much of each."""
        retention = self.config.retention
        today = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
        deleted = {"events": 0, "face snapshots": 0, "audit entries": 0}
        for what, days, expire in (  # each on its own: one that fails leaves the others to run
            ("events", retention.events_days, self.state.expire_events),
            ("face snapshots", retention.snapshots_days, self.state.snapshots.expire_snapshots),
            ("audit entries", retention.audit_days, self.state.expire_audit),
        ):
            if not days:
                continue
            try:
                deleted[what] = expire(today - timedelta(days=days))
            except ServerError as exc:
                log.error("retention of %s failed: %s", what, exc)
            except Exception as exc:
                log.exception("retention of %s failed: %s", what, exc)
        expired = Expired(deleted["events"], deleted["face snapshots"], deleted["audit entries"])
        if expired.events or expired.snapshots or expired.audit:
            log.info(
                "retention: deleted %d events, %d face snapshots and %d audit entries",
                expired.events,
                expired.snapshots,
                expired.audit,
            )
        return expired

    async def _poll_changes(self) -> None:
        """Look for changes every poll_seconds; on PostgreSQL also follow its notifications
        (facefleet.server.state.postgres.notify), which bring a change at once, while the look catches
        what a notification did not bring (a listening connection gone silent, a refresh that failed).
        Take the serving lock again first if its connection broke, and stop serving when a restore took it
        meanwhile. Run the retention job every hour."""
        if isinstance(self.state, PostgresState):
            listening = asyncio.create_task(follow(self.state.url, self._notified))
        else:
            listening = None
        failing = renewing = False
        expired_at = -math.inf
        try:
            while True:
                await asyncio.sleep(self.config.fleet.poll_seconds)
                try:
                    await asyncio.to_thread(self._serving.renew)
                    renewing = False
                except RestoreRunningError as exc:
                    log.error("stopping now, so as not to write into a state being restored: %s", exc)
                    self._restored = exc
                    self._stopping.set()
                    return
                except Exception:
                    if not renewing:  # once per outage, not every poll
                        log.exception("cannot take the serving lock again; retrying")
                    renewing = True
                try:
                    if await self._outgrown_schema():
                        return
                    await self.refresh()
                    if time.monotonic() - expired_at >= EXPIRY_INTERVAL_S:
                        await asyncio.to_thread(self.expire)
                        expired_at = time.monotonic()
                    failing = False
                except Exception:
                    if not failing:  # once per outage, not every poll
                        log.exception("cannot read changes from the state database; retrying")
                    failing = True
        finally:
            if listening is not None:
                listening.cancel()

    async def _outgrown_schema(self) -> bool:
        """Whether a newer server upgraded the database past this server's schema; if so, stop serving
        (exit 65, which systemd does not restart on: this host needs the upgrade)."""
        version = await asyncio.to_thread(self.state.schema_version)
        if version <= self.state.latest_schema:
            return False
        log.error(
            "stopping: the state database was upgraded to schema %d by a newer facefleet-server (this one "
            "has %d), and this server's calls would fail on it; upgrade this host",
            version,
            self.state.latest_schema,
        )
        self._outgrown = version
        self._stopping.set()
        return True

    async def _notified(self, change: str) -> None:
        """A change committed through any replica, or 'listening': notifications start (again), and what
        was committed before went unheard (facefleet.server.state.postgres.notify)."""
        if change in ("tokens", LISTENING) and self._auth is not None:
            self._auth.forget_tokens()
        try:
            await self.refresh()
        except Exception:
            log.exception("cannot read a change from the state database; the next look retries")

    # -- models --------------------------------------------------------------------------------------

    def _get_runtime(self) -> Runtime:
        """The runtime that converts published models and re-embeds crops, built on first use."""
        with self._runtime_lock:
            if self._runtime is None:
                try:
                    self._runtime = Runtime(self.config.runtime.settings(self.paths.state_dir))
                except FaceFleetError as exc:
                    raise FailedPreconditionError(f"cannot set up the inference runtime: {exc}") from None
            return self._runtime


def _tls_configurations(
    tls: ServerTls,
) -> tuple[grpc.ServerCertificateConfiguration, grpc.ServerCertificateConfiguration]:
    """For the agents' listener (client certificates checked against the CA) and the operators'."""
    pair = [(tls.key, tls.chain)]
    return (
        grpc.ssl_server_certificate_configuration(pair, root_certificates=tls.ca),
        grpc.ssl_server_certificate_configuration(pair),
    )


async def _watchdog(interval: float) -> None:
    while True:
        notify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def serve(config: ServerConfig, paths: ServerPaths) -> int:
    """Run the server in a new event loop until a signal stops it; return the exit code."""

    async def main() -> int:
        server = FleetServer(config, paths)
        try:
            return await server.run()
        except BaseException:
            with contextlib.suppress(Exception):
                await server.stop(0)
            raise

    return asyncio.run(main())
