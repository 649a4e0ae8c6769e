"""Serving the HTTP API with uvicorn on the running event loop, next to the gRPC server: `listen.http`, TLS
with the server's certificate (plaintext with `insecure_development = true`; TLS 1.2 with AEAD ciphers only),
HTTP/1.1, no access log, connections within the limits of `listen` (facefleet.server.api.http.connections).
The socket is bound here, so that a port that cannot be bound is the caller's bind error and port 0 works;
the process's signal handlers stay the server's (uvicorn's own are not installed). The SSL context is made
from the TLS files' bytes that were read and checked (facefleet.server.paths.check_tls); HttpServer.reload_tls
makes a new one from renewed files and puts it in place of the one that serves new connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from facefleet.core.config import parse_address
from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.http.app import HttpLimits, create_app
from facefleet.server.api.http.connections import Admission, ConnectionLimits, Slot, TimedH11
from facefleet.server.api.http.timing import RequestObserver
from facefleet.server.config import ServerConfig
from facefleet.server.errors import ServerConfigError, ServerError
from facefleet.server.paths import ServerPaths, ServerTls, load_pair

log = logging.getLogger(__name__)
STOP_MARGIN_S = 5.0
"""How much longer than its grace period a stop may take before the server task is cancelled."""
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 cipher suites: forward secrecy and AEAD only (TLS 1.3's are all of that kind)."""


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handling (SIGTERM and SIGINT stop the whole server process), whose listening
    sockets hand each connection to Admission: counted, TLS handshake, then TimedH11."""

    def __init__(self, config: uvicorn.Config, limits: ConnectionLimits) -> None:
        super().__init__(config)
        self.limits = limits
        self.admission: Admission | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()  # "off": nothing to start
        config, limits = self.config, self.limits

        def http(slot: Slot) -> asyncio.Protocol:
            return TimedH11(
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                header_timeout_s=limits.header_timeout_s,
                body_timeout_s=limits.body_timeout_s,
                slot=slot,
            )

        self.admission = Admission(limits, config.ssl, http)
        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(self.admission.accepted, sock=sock, backlog=config.backlog)
            for sock in sockets or ()
        ]
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.admission is not None:
            self.admission.stop()
        await super().shutdown(sockets)


class HttpServer:
    """The running HTTP API: its bound port, and stop()."""

    def __init__(self, server: _Uvicorn, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task

    def reload_tls(self, tls: ServerTls, paths: ServerPaths) -> None:
        """Serve this certificate and key to new connections (those made keep theirs): a new SSL context
        made from them takes the place of the one each new connection's handshake takes; when it cannot be
        made (ServerConfigError) the one in place keeps serving, unchanged."""
        if self._server.config.ssl is None:
            return
        context = http_context(tls, paths)
        self._server.config.ssl = context
        if self._server.admission is not None:
            self._server.admission.tls = context

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop accepting connections; running requests get `grace` seconds, then they are cancelled."""
        self._server.config.timeout_graceful_shutdown = max(1, round(grace)) if grace > 0 else None
        self._server.should_exit = True
        self._server.force_exit = grace <= 0
        try:
            await asyncio.wait_for(self._task, max(grace, 0) + STOP_MARGIN_S)
        except asyncio.TimeoutError:
            log.warning("the HTTP API did not stop within its grace period; its connections were dropped")


async def start_http(
    handlers: OperatorHandlers,
    config: ServerConfig,
    paths: ServerPaths,
    tls: ServerTls | None,
    *,
    bind_error: Callable[[str], ServerError],
    observer: RequestObserver | None = None,
) -> HttpServer | None:
    """Serve the HTTP API on `listen.http` (None when it is ''), TLS with the TLS files as check_tls read
    them (`tls`; None with `insecure_development = true`); bind_error makes the error of an address that
    cannot be listened on; observer (the server's metrics) is told about every request."""
    address = config.listen.http
    if not address:
        return None
    host, port = parse_address(address, listening=True)  # checked when the configuration loaded
    settings = uvicorn.Config(
        create_app(handlers, HttpLimits.from_config(config), config.console, observer),
        http="h11",
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, round(config.listen.grace_seconds)),
    )
    settings.load()
    if not config.insecure_development:
        if tls is None:
            raise ValueError("the HTTP API serves TLS with the TLS files that check_tls read")
        settings.ssl = http_context(tls, paths)
    try:
        sock = _bind(host, port)
    except OSError as exc:
        raise bind_error(
            f"listen.http = {address!r}: cannot listen ({exc.strerror or exc}); is another server running?"
        ) from None
    listen = config.listen
    limits = ConnectionLimits(
        handshake_timeout_s=listen.handshake_timeout_seconds,
        header_timeout_s=listen.http_header_timeout_seconds,
        body_timeout_s=listen.http_body_timeout_seconds,
        max_connections=listen.http_max_connections,
        max_per_client=listen.http_max_connections_per_client,
    )
    server = _Uvicorn(settings, limits)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # startup only creates the server on the bound socket: a few loop turns
        if task.done():
            sock.close()
            task.result()
            raise ServerConfigError(f"listen.http = {address!r}: the HTTP API did not start")
        await asyncio.sleep(0.005)
    return HttpServer(server, task)


def http_context(tls: ServerTls, paths: ServerPaths) -> ssl.SSLContext:
    """The HTTP API's SSL context: the server's chain and key of `tls`, TLS 1.2 or later with TLS12_CIPHERS,
    no client certificates (bearer tokens authenticate). ServerConfigError when the pair cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # verify_mode CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    try:
        load_pair(context, tls)
    except (OSError, ssl.SSLError) as exc:
        raise ServerConfigError(
            f"listen.http: cannot use the server certificate {paths.server_cert} with its key "
            f"{paths.server_key}: {exc}"
        ) from None
    return context


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; "::" (or "") takes IPv4 too, as gRPC's "[::]" does.

    Made with proto IPPROTO_TCP: the connections it accepts inherit it, and asyncio turns Nagle's algorithm
    off (TCP_NODELAY) only on sockets that say so. Without it every response on a kept-alive connection
    waits ~40 ms for the client's delayed ACK, because the headers and the body are two writes."""
    dual = host in ("", "::") and socket.has_dualstack_ipv6()
    address: tuple[Any, ...]
    if dual:
        family, address = socket.AF_INET6, ("::", port)
    else:
        info = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )[0]
        family, address = info[0], info[4]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
