"""How long the server takes to answer each HTTP request: the `Server-Timing` header (until the response
headers), so that a browser's developer tools, or the console benchmark, can tell server time from network
and rendering time; and, when the server keeps metrics, each request counted and timed (until the end of
its body) under its route template."""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Receive, Scope, Send

UNMATCHED = "unmatched"
"""The route label of a request no route took (a 404 from the router)."""


class RequestObserver(Protocol):
    """Told about every answered request (facefleet.server.metrics.ServerMetrics.http_request)."""

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None: ...


class ServerTiming:
    """ASGI middleware: `Server-Timing: app;dur=<milliseconds>` on every HTTP response, and each request
    passed to `observer` (when there is one) with its route template, method, status and seconds.

    templates: id(route) → its full path template, for routes whose own `path` leaves out the prefixes of
    the routers they were included in (FastAPI records the route as it was declared)."""

    def __init__(
        self,
        app: ASGIApp,
        observer: RequestObserver | None = None,
        templates: Mapping[int, str] | None = None,
    ) -> None:
        self.app = app
        self.observer = observer
        self.templates = dict(templates or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # a request whose application failed before answering

        async def send_with_timing(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                elapsed_ms = (time.perf_counter() - start) * 1000
                MutableHeaders(scope=message).append("server-timing", f"app;dur={elapsed_ms:.1f}")
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            if self.observer is not None:
                seconds = time.perf_counter() - start
                self.observer.http_request(self.route_of(scope), scope["method"], status, seconds)

    def route_of(self, scope: Scope) -> str:
        """The template of the route that took the request (the router records it in the scope)."""
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        path = self.templates.get(id(route), getattr(route, "path", None))
        return path if isinstance(path, str) and path else UNMATCHED
