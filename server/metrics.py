"""The server's Prometheus metrics (`[metrics] listen`, default 127.0.0.1:9109): calls per gRPC method with
their latency (a grpc.aio server interceptor), HTTP API requests per route with theirs (an ASGI middleware,
facefleet.server.api.http.timing), reports and the events they brought, open Watch streams, and what is
read when Prometheus scrapes (gallery revision, rollouts by state, the database pool).

The database pool: a state that keeps a pool of connections offers `pool_stats()` → {figure: value}
(PostgreSQL: psycopg_pool's statistics, e.g. pool_size, pool_available, requests_waiting), shown as
`facefleet_server_db_pool{figure=…}`; a state without one (SQLite) shows nothing there.

Labels are bounded: method names of the registered services only (an unknown method is not counted),
HTTP route templates (`/api/people/{person_id}`, never the path asked for; `unmatched` for no route),
standard HTTP methods, status codes, outcomes, rollout states. No device, person or event id is ever a
label."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from facefleet.core.metrics import LATENCY_BUCKETS, MetricsEndpoint

log = logging.getLogger(__name__)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
T = TypeVar("T")
U = TypeVar("U")


class PooledState(Protocol):
    """What a state with a connection pool offers the metrics (optional; see the module's docstring)."""

    def pool_stats(self) -> Mapping[str, float]: ...


def pool_figures(state: object) -> Mapping[str, float]:
    """The pool figures of a state that has a pool; {} for one that has none."""
    figures = getattr(state, "pool_stats", None)
    return dict(figures()) if callable(figures) else {}


@dataclass(frozen=True)
class ServerFigures:
    """What the server reports at scrape time."""

    gallery_revision: int = 0
    models_revision: int = 0
    rollouts: Mapping[str, int] = field(default_factory=dict)
    """rollout state → how many rollouts are in it."""
    pool: Mapping[str, float] = field(default_factory=dict)


class ServerMetrics:
    """The server's registry: counters the request paths move, and a collector reading `figures` at scrape
    time (a failing read is logged and leaves those metrics out of that scrape)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpc_seconds = Histogram(
            "facefleet_server_rpc_seconds",
            "Time from a call's start to its end, per gRPC method (a stream: its whole life)",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rpcs = Counter(
            "facefleet_server_rpcs",
            "Finished gRPC calls, per method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "facefleet_server_http_seconds",
            "Time from an HTTP API request's start to the end of its response, per route and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "facefleet_server_http_requests",
            "Answered HTTP API requests, per route, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.reports = Counter(
            "facefleet_server_reports",
            "Event reports (ReportResults) the server accepted",
            registry=self.registry,
        )
        self.events = Counter(
            "facefleet_server_events_ingested",
            "Reported events, by outcome: stored, duplicate (already stored), rejected",
            ["outcome"],
            registry=self.registry,
        )
        self.watch_streams = Gauge(
            "facefleet_server_watch_streams", "Open gallery Watch streams", registry=self.registry
        )
        self.agents_watching = Gauge(
            "facefleet_server_agents_watching", "Agents with a Watch stream open", registry=self.registry
        )
        for outcome in ("stored", "duplicate", "rejected"):
            self.events.labels(outcome)

    def watch(self, figures: Callable[[], ServerFigures]) -> None:
        """Read `figures` at every scrape."""
        self.registry.register(_FiguresCollector(figures))

    def reported(self, stored: int, duplicates: int, rejected: int) -> None:
        """One accepted report and what became of its events."""
        self.reports.inc()
        self.events.labels("stored").inc(stored)
        self.events.labels("duplicate").inc(duplicates)
        self.events.labels("rejected").inc(rejected)

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request: its route template (or "unmatched"), method, status and duration."""
        method = method if method in HTTP_METHODS else "other"
        self.http_seconds.labels(route, method).observe(seconds)
        self.http_requests.labels(route, method, str(status)).inc()

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """Times every call of a registered method and counts it by status code."""
        return _Timing(self)

    def serve(self, listen: str) -> MetricsEndpoint:
        """The endpoint of this registry on `listen` ('' = off), not yet started."""
        return MetricsEndpoint(self.registry, listen)


class _FiguresCollector(Collector):
    def __init__(self, figures: Callable[[], ServerFigures]) -> None:
        self.figures = figures

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            figures = self.figures()
        except Exception as exc:
            log.warning("metrics: cannot read the server's figures: %s", exc)
            return []
        return list(_families(figures))


def _families(f: ServerFigures) -> Iterable[GaugeMetricFamily]:
    yield GaugeMetricFamily(
        "facefleet_server_gallery_revision", "The gallery's head revision", value=f.gallery_revision
    )
    yield GaugeMetricFamily(
        "facefleet_server_models_revision", "Revision of models and rollouts", value=f.models_revision
    )
    rollouts = GaugeMetricFamily("facefleet_server_rollouts", "Rollouts by state", labels=["state"])
    for state, count in sorted(f.rollouts.items()):
        rollouts.add_metric([state], count)
    yield rollouts
    pool = GaugeMetricFamily(
        "facefleet_server_db_pool",
        "The state database's connection pool (when it has one)",
        labels=["figure"],
    )
    for figure, value in sorted(f.pool.items()):
        pool.add_metric([figure], value)
    yield pool


def _code_of(context: Any) -> str:
    code = context.code()
    return "OK" if code is None else str(getattr(code, "name", code))


class _Timing(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[T, U] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[T, U] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: not counted, its name is the caller's choice
            return handler
        method = handler_call_details.method
        wrapped: dict[str, Any] = {}
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind, None)
            if behavior is not None:
                wrapped[kind] = self._wrap(method, behavior)
        replace = getattr(handler, "_replace", None)
        return handler if replace is None or not wrapped else replace(**wrapped)

    def _wrap(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        metrics = self.metrics

        def done(started: float, code: str) -> None:
            metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)
            metrics.rpcs.labels(method, code).inc()

        def failed(exc: BaseException, context: Any) -> str:
            if isinstance(exc, grpc.aio.AbortError):
                return _code_of(context)
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                return "CANCELLED"
            return "UNKNOWN"

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                started, code = time.perf_counter(), "OK"
                try:
                    async for message in behavior(request, context):
                        yield message
                    code = _code_of(context)
                except BaseException as exc:
                    code = failed(exc, context)
                    raise
                finally:
                    done(started, code)

            return stream

        async def call(request: Any, context: Any) -> Any:
            started, code = time.perf_counter(), "OK"
            try:
                result = await behavior(request, context)
                code = _code_of(context)
                return result
            except BaseException as exc:
                code = failed(exc, context)
                raise
            finally:
                done(started, code)

        return call
