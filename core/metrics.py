"""The Prometheus endpoint both processes serve (`[metrics] listen`): GET /metrics of one process's own
registry, in the text exposition format, from a small HTTP server on a thread of its own that stops with
the process. Each connection is served on a thread of its own, at most MAX_CONNECTIONS at once (one more is
closed at once), and closed when its client stays silent for REQUEST_TIMEOUT_S: idle clients cannot use up
the process's threads and file descriptors.

Each process object builds its own `CollectorRegistry` (never prometheus_client's global one), so several
agents or servers in one Python process (tests, benchmarks) keep their figures apart."""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from pydantic import Field, field_validator

from facefleet.core.config import StrictSection, check_listen, parse_address
from facefleet.core.errors import EXIT_UNAVAILABLE, FaceFleetError

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Histogram buckets (seconds) from a millisecond inference to a minute-long call."""
REQUEST_TIMEOUT_S = 10.0
"""How long a client of the endpoint may send or take nothing before its connection is closed (seconds)."""
MAX_CONNECTIONS = 16
"""Connections the endpoint serves at once (a Prometheus server scrapes over one)."""


class MetricsBindError(FaceFleetError):
    """The metrics address cannot be bound (in use, or not an address of this host)."""

    exit_code = EXIT_UNAVAILABLE


class MetricsSection(StrictSection):
    """[metrics] The Prometheus endpoint: GET http://<listen>/metrics (plain HTTP: keep it on a private
    address). Each program sets its own default `listen`."""

    listen: str = Field(
        "", description="host:port of the Prometheus endpoint (port 0 = any free one); '' = off"
    )

    @field_validator("listen")
    @classmethod
    def _address(cls, listen: str) -> str:
        return check_listen(listen)


class MetricsEndpoint:
    """GET /metrics of `registry` on `listen` ('' = off), served by a daemon thread between start() and
    stop()."""

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str,
        key: str = "metrics.listen",
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.registry = registry
        self.listen = listen
        self.key = key
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self._server: _MetricsServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); 0 while not serving."""
        return int(self._server.server_port) if self._server is not None else 0

    def start(self) -> int:
        """Bind and serve; the bound port, or 0 when off. MetricsBindError when the address is taken."""
        if not self.listen or self._server is not None:
            return self.port
        host, port = parse_address(self.listen, listening=True)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            server = _MetricsServer(family, (host, port), self.request_timeout_s, self.max_connections)
        except OSError as exc:
            raise MetricsBindError(
                f"{self.key} = {self.listen!r}: cannot listen ({exc.strerror or exc}); is the port in use?"
            ) from None
        server.set_app(make_wsgi_app(self.registry))
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.listen.rpartition(":")[0], self.port)
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port (a scrape in progress is finished first)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5.0)


class _MetricsServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most max_connections at once: a connection over that is closed as soon
    as it is accepted."""

    daemon_threads = True
    request_queue_size = 64  # connections the kernel holds until they are accepted (socketserver's: 5)

    def __init__(
        self, family: int, address: tuple[str, int], request_timeout_s: float, max_connections: int
    ) -> None:
        self.address_family = family
        self.request_timeout_s = request_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _QuietHandler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        log.debug("metrics: connection from %s closed, as many as allowed are open", client_address)
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread for it
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out or went away: not worth a traceback on stderr."""
        log.debug("metrics: connection from %s ended early", client_address, exc_info=True)


class _QuietHandler(WSGIRequestHandler):
    """One request per connection, its socket timing out after the server's request_timeout_s; no access
    log."""

    server: _MetricsServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        pass
