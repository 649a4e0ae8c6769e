"""The Prometheus endpoint both processes serve (`[metrics] listen`): GET /metrics of one process's own
registry, in the text exposition format, from a small HTTP server on a thread of its own that stops with
the process.

Each process object builds its own `CollectorRegistry` (never prometheus_client's global one), so several
agents or servers in one Python process (tests, benchmarks) keep their figures apart."""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server
from pydantic import Field, field_validator

from facefleet.core.config import StrictSection, check_listen, parse_address
from facefleet.core.errors import EXIT_UNAVAILABLE, FaceFleetError

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Histogram buckets (seconds) from a millisecond inference to a minute-long call."""


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

    def __init__(self, registry: CollectorRegistry, listen: str, key: str = "metrics.listen") -> None:
        self.registry = registry
        self.listen = listen
        self.key = key
        self._server: WSGIServer | None = None
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
            self._server, self._thread = start_http_server(port, host, self.registry)
        except OSError as exc:
            raise MetricsBindError(
                f"{self.key} = {self.listen!r}: cannot listen ({exc.strerror or exc}); is the port in use?"
            ) from None
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
