"""Assembly of the grpc.aio server: state, handlers, servicers, health and reflection, two listeners, and a
graceful stop on SIGTERM/SIGINT.

Listeners: `listen.agents` requires a client certificate signed by the site CA (FleetService);
`listen.operators` is server-authenticated TLS for bearer-token callers (AdminService, QueryService). Every
service is served on both, and each checks its own credentials, so a call on the wrong listener fails with
UNAUTHENTICATED instead of reaching data. With `insecure_development = true` both are plaintext.

Stop: health turns NOT_SERVING, Watch streams end, running calls get `listen.grace_seconds`, then the
process exits 0. Exit codes of `serve`: 0 stopped by a signal, 69 cannot listen, 74 state database
unusable, 78 configuration or TLS files unusable (systemd does not restart on 78).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from facefleet.core import notify
from facefleet.core.errors import EXIT_OK, EXIT_UNAVAILABLE, FaceFleetError
from facefleet.server.api import wire
from facefleet.server.api.security import Authenticator
from facefleet.server.api.servicers import AdminServicer, FleetServicer, QueryServicer
from facefleet.server.config import ServerConfig
from facefleet.server.errors import FailedPreconditionError, ServerConfigError, ServerError
from facefleet.server.fleet.dashboard import DashboardHandler
from facefleet.server.fleet.link import FleetHandler, FleetSettings
from facefleet.server.gallery.embedder import Enroller, EnrolmentSettings
from facefleet.server.gallery.people import PeopleHandler
from facefleet.server.gallery.reembed import CropEmbedder, reembed
from facefleet.server.paths import ServerPaths
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.control import RolloutControl
from facefleet.server.rollouts.distribution import ModelDistribution
from facefleet.server.rollouts.files import CHUNK_BYTES, ModelFiles
from facefleet.server.rollouts.uploads import ModelAdmin
from facefleet.server.state.fanout import GalleryFanout
from facefleet.server.state.interface import State
from facefleet.server.state.models import ModelState
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.vision.models.store import ModelStore
from facefleet.vision.models.tasks import embedding_dimension
from facefleet.vision.runtime import ModelIO, Runtime

log = logging.getLogger(__name__)


class BindError(ServerError):
    """A listener address cannot be bound (in use, or not an address of this host)."""

    status = "UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True)
class Ports:
    """Bound ports (useful with port 0); 0 for a listener that is off."""

    agents: int
    operators: int


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
        self.state = state or SqliteState(paths.database, log_revisions=config.gallery.log_revisions)
        self.models = ModelStore(paths.models)
        self.catalog = ModelCatalog(self.state.models, self.models)
        self._enroller = enroller
        self._base_models = enroller.model_ids if enroller is not None else None
        self._rollout_models: tuple[str, ...] = ()
        self._enroller_lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._runtime_lock = threading.Lock()
        self.fanout: GalleryFanout | None = None
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._poll: asyncio.Task[None] | None = None

    async def start(self) -> Ports:
        """Bind the listeners and start serving."""
        credentials = None if self.config.insecure_development else self._credentials()
        await asyncio.to_thread(self._expire_stalled)
        self.fanout = GalleryFanout(self.state.head_revision(), self.state.models.models_revision())
        await self._follow_rollout_models(
            await asyncio.to_thread(rollout_embedding_models, self.state.models)
        )
        server = grpc.aio.server(options=self._options())
        try:
            await self._add_services(server, self.fanout)
            listen = self.config.listen
            if listen.agents and listen.agents == listen.operators and not listen.agents.endswith(":0"):
                raise ServerConfigError("listen.agents and listen.operators must be different addresses")
            agent_credentials, operator_credentials = credentials or (None, None)
            agents = self._bind(server, listen.agents, agent_credentials, "listen.agents")
            operators = self._bind(server, listen.operators, operator_credentials, "listen.operators")
            await server.start()
        except BaseException:
            await server.stop(0)
            raise
        self._server = server
        self._poll = asyncio.create_task(self._poll_changes())
        if self.config.insecure_development:
            log.warning("insecure_development = true: plaintext listeners, device ids taken from requests")
        return Ports(agents, operators)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, end Watch streams, give running calls the grace period."""
        for task in (self._watchdog, self._poll):
            if task is not None:
                task.cancel()
        await self.health.enter_graceful_shutdown()
        if self.fanout is not None:
            await self.fanout.close()
        if self._server is not None:
            await self._server.stop(self.config.listen.grace_seconds if grace is None else grace)
            self._server = None
        self.state.close()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; tell systemd when ready, stopping, and ping its watchdog."""
        ports = await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        status = f"agents on port {ports.agents or '-'}, operators on port {ports.operators or '-'}"
        log.info("serving: %s; gallery revision %d", status, self.state.head_revision())
        if not self._embedding_models():
            log.warning(
                "no embedding model in %s: enrolment from images fails until you run "
                "`facefleet-server --state-dir %s models import-defaults`",
                self.paths.models,
                self.paths.state_dir,
            )
        notify.notify("READY=1", f"STATUS=serving {status}")
        interval = notify.watchdog_interval()
        if interval:
            self._watchdog = asyncio.create_task(_watchdog(interval))
        await stop.wait()
        notify.notify("STOPPING=1", "STATUS=stopping: finishing running calls")
        log.info("stopping (grace %.0f s)", self.config.listen.grace_seconds)
        await self.stop()
        return EXIT_OK

    # -- assembly ------------------------------------------------------------------------------------

    async def _add_services(self, server: grpc.aio.Server, fanout: GalleryFanout) -> None:
        config = self.config
        auth = Authenticator(
            self.state, insecure=config.insecure_development, cache_seconds=config.tokens.cache_seconds
        )
        fleet = FleetHandler(
            self.state,
            fanout,
            FleetSettings(
                max_report_events=config.fleet.max_report_events,
                heartbeat_seconds=config.gallery.heartbeat_seconds,
                max_message_bytes=config.listen.max_message_bytes,
            ),
            embedding_models=self._embedding_models,
            models=ModelDistribution(
                self.state, self.catalog, ModelFiles(min(CHUNK_BYTES, config.listen.max_message_bytes // 2))
            ),
        )
        people = PeopleHandler(self.state, fanout, self._get_enroller, self._known_models)
        dashboard = DashboardHandler(
            self.state,
            online_window=timedelta(seconds=config.fleet.online_window_seconds),
            watching=fanout.watching,
            head=lambda: fanout.head,
        )
        wire.add_fleet_servicer(FleetServicer(fleet, auth), server)
        models = ModelAdmin(
            self.catalog,
            self.paths.uploads,
            config.models.max_upload_bytes,
            runtime=self._get_runtime,
            control=self.rollout_control,
            changed=self.refresh,
        )
        wire.add_admin_servicer(AdminServicer(people, auth, models), server)
        wire.add_query_servicer(QueryServicer(dashboard, auth), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for name in ("", *wire.SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (
                *wire.SERVICE_NAMES,
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
        ]

    def _credentials(self) -> tuple[grpc.ServerCredentials, grpc.ServerCredentials]:
        p = self.paths
        ca, chain, key = (_read_tls(path, what) for path, what in (
            (p.ca_cert, "CA certificate (tls.ca_cert)"),
            (p.server_cert, "server certificate (tls.server_cert)"),
            (p.server_key, "server key (tls.server_key)"),
        ))  # fmt: skip
        pair = [(key, chain)]
        agents = grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=True)
        operators = grpc.ssl_server_credentials(pair)
        return agents, operators

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

    # -- changes from other processes --------------------------------------------------------------

    async def refresh(self) -> None:
        """Publish gallery, model and rollout changes committed since the last look (by this process or
        another on the same state directory, e.g. the CLI) to the Watch streams; follow the embedding
        models of rollouts in the enroller."""
        assert self.fanout is not None
        models = self.state.models
        await asyncio.to_thread(self._expire_stalled)
        # models first: a rollout activated after its gallery was completed is then seen with that gallery
        models_revision, head = await asyncio.to_thread(
            lambda: (models.models_revision(), self.state.head_revision())
        )
        if head > self.fanout.head:
            await self.fanout.publish(head)
        if models_revision != self.fanout.models_head:
            await self.fanout.publish_models(models_revision)
            await self._follow_rollout_models(await asyncio.to_thread(rollout_embedding_models, models))

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
            settle_seconds=2 * self.config.fleet.poll_seconds + 1.0
            if settle_seconds is None
            else settle_seconds,
            on_change=changed,
        )

    def _expire_stalled(self) -> None:
        """Roll back rollouts left preparing by a process that is gone (facefleet.server.rollouts.control)."""
        for rollout in RolloutControl(self.state, self.catalog).expire_stalled():
            log.warning(
                "rolled back rollout %d of %s: %s", rollout.rollout_id, rollout.model_id, rollout.reason
            )

    async def _poll_changes(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.config.fleet.poll_seconds)
            try:
                await self.refresh()
                failing = False
            except Exception:
                if not failing:  # once per outage, not every poll
                    log.exception("cannot read changes from the state database; retrying")
                failing = True

    async def _follow_rollout_models(self, rollout_models: tuple[str, ...]) -> None:
        if rollout_models == self._rollout_models:
            return
        self._rollout_models = rollout_models
        enroller = self._enroller
        if enroller is None:
            return  # built with them on first use
        wanted = _merge(self._enrolment_base(), rollout_models)
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
            embedder = CropEmbedder(self._get_runtime(), self.models.get("embedding", name, version))
            result = reembed(self.state, embedder, missing)
        except (FaceFleetError, ServerError) as exc:
            log.error("cannot embed people enrolled meanwhile with %s: %s", model_id, exc)
            return
        if result.reembedded:
            log.info("embedded %d people enrolled meanwhile with %s", len(result.reembedded), model_id)

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

    def _get_enroller(self) -> Enroller:
        """The image enroller, built once (compiling the models takes a few seconds)."""
        with self._enroller_lock:
            if self._enroller is None:
                self._enroller = self._build_enroller()
            return self._enroller

    def _build_enroller(self) -> Enroller:
        from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
        from facefleet.vision.runtime import Runtime

        config = self.config
        try:
            runtime = Runtime(config.runtime.settings(self.paths.state_dir))
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

    def _known_models(self) -> Mapping[str, int]:
        """Embedding model id → dimension for every embedding model in the store (and the enroller's)."""
        known = {
            m.manifest.model_id: embedding_dimension(ModelIO(m.manifest.inputs, m.manifest.outputs))
            for m in self.models.models()
            if m.manifest.task == "embedding"
        }
        if self._enroller is not None:
            known.update(self._enroller.dimensions)
        return known

    def _embedding_models(self) -> tuple[str, ...]:
        """What enrolment embeds with: the configured (or active) models and those of embedding rollouts
        that are preparing, active or paused."""
        return _merge(self._enrolment_base(), self._rollout_models)

    def _enrolment_base(self) -> tuple[str, ...]:
        if self._base_models is not None:
            return self._base_models
        if self.config.gallery.embedding_models:
            return self.config.gallery.embedding_models
        try:
            return (self.models.active("embedding").manifest.model_id,)
        except FaceFleetError:
            return ()


def rollout_embedding_models(models: ModelState) -> tuple[str, ...]:
    """Embedding models of rollouts that are preparing, active or paused, oldest rollout first."""
    return tuple(
        dict.fromkeys(
            r.model_id
            for r in reversed(models.list_rollouts())
            if r.task == "embedding" and r.state != "rolled_back"
        )
    )


def _merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(model_id for group in groups for model_id in group))


async def _watchdog(interval: float) -> None:
    while True:
        notify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def _read_tls(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ServerConfigError(
            f"{what} {path} does not exist; create the site CA and server certificate with "
            "`facefleet-server certs init`, or set the path in [tls]"
        ) from None
    except OSError as exc:
        raise ServerConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if b"-----BEGIN" not in data:
        raise ServerConfigError(f"{what} {path} is not a PEM file")
    return data


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
