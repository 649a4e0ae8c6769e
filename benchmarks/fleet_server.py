"""Server benchmark on both state backends in one run: event ingest from 50 concurrent agents, gallery
fan-out to watching agents, dashboard query latency over stored events, and retention. Prints one JSON
document (`sqlite`, `postgresql`, `targets`, `ratios`); every figure is measured in this run, each next to
a baseline from the same run:

SQLite (the state directory's database, one server):
- ingest: batched reports (500 events per ReportResults) vs one event per call; target >= 5,000 events/s;
- fan-out: one enrolment until the last of 200 watchers has the delta, vs a single watcher; target <= 1 s;
- queries: each QueryService call over 1M events (30 days, 200 devices; the face events of a share of the
  devices, all by default, with estimated attributes) through gRPC, vs the same aggregate counted straight
  from the raw events table without the hourly rollup; target < 200 ms; and the same queries through the
  HTTP API (p95 < 200 ms);
- retention: expire_events before the first of this month (row deletes, 2,000 per write transaction), the
  baseline of PostgreSQL's, and the longest an event reported meanwhile waited to be stored.

PostgreSQL (a throwaway cluster, tests.postgres; replicas share the database, TLS files and [models] dir):
- ingest_1_replica / ingest_2_replicas: the batched ingest on one server, then with the 50 agents dealt out
  to two servers; targets >= 10,000 events/s on one replica and more on two; ratios to SQLite and to one
  replica;
- fan_out_200_watchers_2_replicas: an enrolment through replica A until the last of 200 watchers, half of
  them on replica B (LISTEN/NOTIFY carries it across), vs the same 200 on one replica; target <= 1 s;
- watch_streams: 2,000 agents, each with its own certificate, mutual-TLS channel and Watch stream, on one
  replica: the fan-out of an enrolment to all (target <= 1 s, vs 200 watchers), and the server's memory per
  stream: its VmRSS with every stream open minus before the agents connected, over the agents;
- fill: 10M events over 30 days loaded by COPY into `events` (monthly partitions) and its rollups, as the
  server stores them (fleet_postgres.py), then VACUUM (ANALYZE) as autovacuum would have by then;
- queries_over_stored_events: the SQLite query set over those events through gRPC; target p95 < 200 ms, vs
  the raw scans on PostgreSQL and the SQLite p95;
- retention: PostgresState.expire_events before the first of this month, which detaches last month's
  partitions (the month leaves `events` and its rollups) and then drops them (their files go); each step
  timed; target < 1 s, vs SQLite's row deletes; with the volume the cluster is on (`data_volume`: mounted
  with online discard, the files take seconds to free).

The servers run as real `facefleet-server serve` processes (mutual TLS); the simulated agents and dashboards
are asyncio clients in this process, on loopback only. The open-files limit is raised to its hard limit
first (the servers inherit it): every streaming agent holds a socket at both ends.
Usage: .venv/bin/python benchmarks/fleet_server.py [--quick] [--events N] [--attributes-share S]
       [--pg-events N] [--stream-agents N] [--pg-dir DIR]
(--quick: fewer repeats, 100k SQLite events, 200k PostgreSQL events, 300 streaming agents.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import resource
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_postgres import copy_events, data_volume

from facefleet.link.checks import utc_now
from facefleet.link.events import AGE_BANDS, AttributesResult, Event, ExpressionResult
from facefleet.server.api import certs
from facefleet.server.api.security import new_token
from facefleet.server.state.interface import State
from facefleet.server.state.postgres import schema as pg_schema
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    events_pb2,
    fleet_pb2,
    fleet_pb2_grpc,
    gallery_pb2,
    query_pb2,
    query_pb2_grpc,
)
from tests.postgres import PostgresCluster

LABELS = ("happy", "neutral", "sad", "surprise", "angry")
AGE_BAND_WEIGHTS = (3, 8, 25, 25, 18, 12, 9)
"""How often each of AGE_BANDS passes a camera in the filled events (a guess at an office's visitors)."""
CONNECT_WAVE = 200
"""Agents that connect, register and open their Watch stream at once. In one burst of 2,000 about 2 % of
the Register calls and some Watch calls end CANCELLED (grpcio 1.85, 2 cores); waves of 200, each waiting
for its streams' first message, take as long and all succeed."""
NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


# -- set-up ------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def new_state(root: Path, devices: Sequence[str]) -> tuple[Path, SqliteState, dict[str, Any]]:
    """A fresh server state directory under root with the site PKI, a certificate per device, the
    default models and an admin and a query token: (state_dir, its open state, the tokens' metadata)."""
    state_dir, _ = new_state_dir(root, devices)
    state = SqliteState(state_dir / "server.db")
    return state_dir, state, add_tokens(state)


def new_state_dir(root: Path, devices: Sequence[str], settings: str = "") -> tuple[Path, float]:
    """root/state with the site PKI, a certificate per device and the default models imported into the
    state that `settings` (server config TOML, e.g. [state] url) names; and the seconds the device
    certificates took."""
    state_dir, tls = root / "state", root / "state" / "tls"
    certs.init_ca(tls, server_names=["localhost"])
    started = time.perf_counter()
    for device in devices:
        certs.issue_device(tls, device)
    certificates_s = time.perf_counter() - started
    progress("importing the default models into the server's state")
    config = root / "state.toml"
    config.write_text(settings)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "facefleet.server.cli",
            "--config",
            str(config),
            "--state-dir",
            str(state_dir),
            "models",
            "import-defaults",
        ],
        check=True,
        capture_output=True,
    )
    return state_dir, certificates_s


def add_tokens(state: State) -> dict[str, Any]:
    """An admin and a query token in the state: their gRPC metadata."""
    admin_token, admin = new_token("bench-admin", "admin", utc_now())
    query_token, query = new_token("bench-query", "query", utc_now())
    state.add_token(admin)
    state.add_token(query)
    return {
        "admin_md": (("authorization", f"Bearer {admin_token}"),),
        "query_md": (("authorization", f"Bearer {query_token}"),),
    }


def new_postgres_state(root: Path, url: str, devices: int) -> dict[str, Any]:
    """A state directory for replicas on the PostgreSQL database `url` (shared TLS files and [models] dir)
    with `devices` device certificates, its models and tokens: the server settings, state_dir, the open
    state, the tokens' metadata and the time the device certificates took."""
    settings = f'[state]\nurl = "{url}"\n[models]\ndir = "{root / "models"}"\n'
    state_dir, certificates_s = new_state_dir(root, [f"dev-{i:03d}" for i in range(devices)], settings)
    state = PostgresState(url, pool_size=2)
    return {
        "settings": settings,
        "state_dir": state_dir,
        "state": state,
        **add_tokens(state),
        "device_certificates": {
            "devices": devices,
            "seconds": round(certificates_s, 2),
            "ms_each": round(certificates_s / devices * 1000, 2),
        },
    }


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (server children inherit it); the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    """A process's resident set (VmRSS) in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))


def prepare(root: Path, devices: int, stored_events: int, attributes_share: float = 1.0) -> dict[str, Any]:
    """PKI, tokens, models and `stored_events` events spread over 30 days, in a fresh state directory."""
    state_dir, state, metadata = new_state(root, [f"dev-{i:03d}" for i in range(devices)])
    progress(f"storing {stored_events:,} events")
    start = time.perf_counter()
    fill_events(state, stored_events, devices, attributes_share=attributes_share)
    fill_s = time.perf_counter() - start
    state.close()
    return {"state_dir": state_dir, **metadata, "fill_events_per_s": round(stored_events / fill_s)}


def fill_events(
    state: SqliteState, count: int, devices: int, batch: int = 20_000, *, attributes_share: float = 1.0
) -> None:
    """Bulk insert through the state API (validation, dedupe, rollups), 20,000 events per transaction. The
    face events of the first `attributes_share` of the devices carry estimated attributes (their agents have
    `[attributes] enabled = true`)."""
    rng = random.Random(7)
    span_us = 30 * 86400 * 1_000_000
    for offset in range(0, count, batch):
        events = []
        for i in range(offset, min(count, offset + batch)):
            when = NOW - timedelta(microseconds=rng.randrange(span_us))
            index = rng.randrange(devices)
            device = f"dev-{index:03d}"
            if rng.random() < 0.2:
                decision = "granted" if rng.random() < 0.8 else "denied"
                events.append(
                    Event(
                        str(uuid.UUID(int=i + 1)),
                        device,
                        when,
                        "access",
                        decision,
                        person_id="p1",
                        door="main",
                    )
                )
            else:
                decision = "unknown" if rng.random() < 0.3 else "match"
                attributes = None
                if index < devices * attributes_share:
                    male = round(rng.random(), 4)
                    attributes = AttributesResult(
                        "male" if male > 0.5 else "female",
                        male,
                        round(rng.uniform(5, 80), 1),
                        rng.choices(AGE_BANDS, AGE_BAND_WEIGHTS)[0],
                    )
                events.append(
                    Event(
                        str(uuid.UUID(int=i + 1)),
                        device,
                        when,
                        "face",
                        decision,
                        camera="cam1",
                        person_id="" if decision == "unknown" else "p1",
                        score=0.6,
                        expression=ExpressionResult(rng.choice(LABELS)),
                        attributes=attributes,
                    )
                )
        state.add_events(events)


class ServerProcess:
    """`facefleet-server serve` on loopback ports chosen by the kernel, ready when it says READY=1.
    poll_seconds: its [fleet] poll_seconds (None: the default), how soon it notices CLI changes; settings:
    more config sections (TOML), e.g. [state] url. Replicas share a state_dir, each with a root of its own."""

    def __init__(
        self, root: Path, state_dir: Path, poll_seconds: float | None = None, settings: str = ""
    ) -> None:
        self.root, self.state_dir = root, state_dir
        self.config = root / "server.toml"
        self.poll_seconds = poll_seconds
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.config
        poll = "" if self.poll_seconds is None else f"poll_seconds = {self.poll_seconds}\n"
        config.write_text(
            '[listen]\nagents = "127.0.0.1:0"\noperators = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\n'
            "grace_seconds = 1\n"
            f"max_concurrent_streams = 10000\n[fleet]\nmax_report_events = 10000\n{poll}{self.settings}"
        )
        notify_path = self.root / "notify.sock"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(notify_path))
        receiver.settimeout(120)
        command = [
            sys.executable,
            "-m",
            "facefleet.server.cli",
            "--config",
            str(config),
            "--state-dir",
            str(self.state_dir),
        ]
        with (self.root / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "serve"],
                env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        status = receiver.recv(4096).decode()
        receiver.close()
        self.agents = int(re.search(r"agents on port (\d+)", status)[1])  # type: ignore[index]
        self.operators = int(re.search(r"operators on port (\d+)", status)[1])  # type: ignore[index]
        self.http = int(re.search(r"HTTP API on port (\d+)", status)[1])  # type: ignore[index]
        self.ca = (self.state_dir / "tls" / "ca.pem").read_bytes()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    def agent_channel(self, device: str) -> grpc.aio.Channel:
        tls = self.state_dir / "tls" / "devices"
        credentials = grpc.ssl_channel_credentials(
            self.ca, (tls / f"{device}.key").read_bytes(), (tls / f"{device}.pem").read_bytes()
        )
        return grpc.aio.secure_channel(f"localhost:{self.agents}", credentials)

    def operator_channel(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(f"localhost:{self.operators}", grpc.ssl_channel_credentials(self.ca))


# -- ingest ------------------------------------------------------------------------------------------


def report_bytes(device: str, first: int, count: int) -> bytes:
    """A serialised ReportResultsRequest (built before timing, so client-side encoding is not measured)."""
    events = []
    for i in range(first, first + count):
        stamp = Timestamp()
        stamp.FromDatetime(NOW + timedelta(milliseconds=i))
        events.append(
            events_pb2.Event(
                event_id=str(uuid.uuid4()),
                device_id=device,
                time=stamp,
                camera="cam1",
                kind=events_pb2.EVENT_KIND_FACE,
                decision=events_pb2.DECISION_UNKNOWN,
                score=0.4,
                expression=events_pb2.Expression(
                    label="neutral", probabilities={"neutral": 0.9, "happy": 0.1}
                ),
                model_versions={"embedding": "sface@2021dec"},
            )
        )
    return fleet_pb2.ReportResultsRequest(device_id=device, events=events).SerializeToString()


async def ingest(
    server: ServerProcess,
    agents: int,
    calls: int,
    per_call: int,
    report: Callable[[str, int, int], bytes] = report_bytes,
    *,
    replicas: Sequence[ServerProcess] = (),
) -> dict[str, Any]:
    """events/s with `agents` concurrent agents, each making `calls` ReportResults of `per_call` events;
    report(device, first, count) makes a serialised request. Agents are dealt out to the server and the
    `replicas` (more servers on its database) in turn."""
    devices = [f"dev-{i:03d}" for i in range(agents)]
    payloads = {d: [report(d, c * per_call, per_call) for c in range(calls)] for d in devices}
    servers = [server, *replicas]
    channels = {d: servers[i % len(servers)].agent_channel(d) for i, d in enumerate(devices)}
    for device, channel in channels.items():
        await fleet_pb2_grpc.FleetServiceStub(channel).Register(fleet_pb2.RegisterRequest(device_id=device))

    async def agent(device: str) -> int:
        report = channels[device].unary_unary(
            "/facefleet.v1.FleetService/ReportResults",
            request_serializer=None,
            response_deserializer=fleet_pb2.ReportResultsResponse.FromString,
        )
        stored = 0
        for payload in payloads[device]:
            reply = await report(payload)
            stored += reply.stored
        return stored

    start = time.perf_counter()
    stored = sum(await asyncio.gather(*(agent(d) for d in devices)))
    elapsed = time.perf_counter() - start
    for channel in channels.values():
        await channel.close()
    assert stored == agents * calls * per_call, f"stored {stored}"
    return {
        "agents": agents,
        "replicas": len(servers),
        "events": stored,
        "bytes_per_event": round(len(payloads[devices[0]][0]) / per_call),
        "events_per_call": per_call,
        "seconds": round(elapsed, 2),
        "events_per_s": round(stored / elapsed),
    }


# -- fan-out -----------------------------------------------------------------------------------------


async def fan_out(
    server: ServerProcess,
    admin_md: Any,
    watchers: int,
    rounds: int,
    *,
    replicas: Sequence[ServerProcess] = (),
    when_ready: Callable[[], dict[str, Any]] = dict,
) -> dict[str, Any]:
    """Seconds from sending an enrolment (to `server`) until the last of `watchers` Watch streams has its
    delta; each watcher is an agent with a channel of its own, to the server and the `replicas` in turn.
    when_ready() runs once every stream is open; its figures are part of the result."""
    devices = [f"dev-{i:03d}" for i in range(watchers)]
    servers = [server, *replicas]
    channels = [servers[i % len(servers)].agent_channel(d) for i, d in enumerate(devices)]
    stubs = [fleet_pb2_grpc.FleetServiceStub(c) for c in channels]
    operator = server.operator_channel()
    admin = admin_pb2_grpc.AdminServiceStub(operator)
    head = (
        await admin.ListPeople(admin_pb2.ListPeopleRequest(page_size=1), metadata=admin_md)
    ).gallery_revision
    arrivals: dict[int, list[float]] = {}
    complete: dict[int, asyncio.Event] = {}
    ready = 0

    async def watch(stub: fleet_pb2_grpc.FleetServiceStub) -> None:
        nonlocal ready
        counted = False
        async for message in stub.Watch(fleet_pb2.WatchRequest(from_revision=head)):
            if message.HasField("gallery") and message.gallery.to_revision > head:
                revision = message.gallery.to_revision
                arrivals.setdefault(revision, []).append(time.perf_counter())
                if len(arrivals[revision]) == watchers:
                    complete[revision].set()
            elif not counted:  # the first message: a heartbeat, or the snapshot of an empty gallery
                counted, ready = True, ready + 1

    tasks: list[asyncio.Task[None]] = []
    connecting = time.perf_counter()
    for wave in range(0, watchers, CONNECT_WAVE):  # see CONNECT_WAVE
        wave_stubs = stubs[wave : wave + CONNECT_WAVE]
        await asyncio.gather(
            *(
                s.Register(fleet_pb2.RegisterRequest(device_id=d))
                for s, d in zip(wave_stubs, devices[wave : wave + CONNECT_WAVE], strict=True)
            )
        )
        tasks += [asyncio.create_task(watch(s)) for s in wave_stubs]
        await streams_ready(lambda: ready, len(tasks), tasks)
    ready_figures = {"connect_register_watch_s": round(time.perf_counter() - connecting, 2), **when_ready()}
    rng = np.random.default_rng(0)
    samples = []
    for i in range(rounds):
        revision = head + i + 1
        complete[revision] = asyncio.Event()
        vector = rng.normal(size=128).astype(np.float32)
        request = admin_pb2.EnrollPersonRequest(
            person_id=f"fanout-{uuid.uuid4().hex[:8]}",
            embeddings=[
                gallery_pb2.Embedding(
                    model_id="sface@2021dec", dim=128, vector=(vector / np.linalg.norm(vector)).tobytes()
                )
            ],
        )
        start = time.perf_counter()
        await admin.EnrollPerson(request, metadata=admin_md)
        await asyncio.wait_for(complete[revision].wait(), 60)
        times = sorted(t - start for t in arrivals[revision])
        samples.append(times)
        await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in [*channels, operator]:
        await channel.close()
    last = [s[-1] for s in samples]
    return {
        "watchers": watchers,
        "replicas": len(servers),
        "rounds": rounds,
        "last_watcher_s_median": round(statistics.median(last), 4),
        "last_watcher_s_max": round(max(last), 4),
        "first_watcher_s_median": round(statistics.median(s[0] for s in samples), 4),
        "median_watcher_s_median": round(statistics.median(statistics.median(s) for s in samples), 4),
        **ready_figures,
    }


async def streams_ready(ready: Callable[[], int], count: int, tasks: Sequence[asyncio.Task[None]]) -> None:
    """Wait until ready() reaches count; the error of a stream task that ends first."""
    deadline = time.monotonic() + 120
    while ready() < count:
        for task in tasks:
            if task.done():
                await task
                raise RuntimeError("a Watch stream ended before its first message")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ready()} of {count} Watch streams have their first message after 120 s")
        await asyncio.sleep(0.02)


# -- queries -----------------------------------------------------------------------------------------


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


async def queries(server: ServerProcess, query_md: Any, repeats: int) -> dict[str, Any]:
    channel = server.operator_channel()
    query = query_pb2_grpc.QueryServiceStub(channel)
    end = NOW + timedelta(hours=1)
    month = query_pb2.EventFilter(start=stamp(end - timedelta(days=30)), end=stamp(end))
    day = query_pb2.EventFilter(start=stamp(end - timedelta(days=1, minutes=7)), end=stamp(end))
    week_dev = query_pb2.EventFilter(
        start=stamp(end - timedelta(days=7)), end=stamp(end), device_ids=["dev-007"]
    )
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "list_events_first_page_24h": lambda: query.ListEvents(
            query_pb2.ListEventsRequest(filter=day, page_size=100), metadata=query_md
        ),
        "list_events_one_device_7d": lambda: query.ListEvents(
            query_pb2.ListEventsRequest(filter=week_dev, page_size=100), metadata=query_md
        ),
        "counts_hourly_per_device_24h": lambda: query.CountEvents(
            query_pb2.CountEventsRequest(filter=day, interval_seconds=3600), metadata=query_md
        ),
        "counts_daily_per_device_30d": lambda: query.CountEvents(
            query_pb2.CountEventsRequest(filter=month, interval_seconds=86400), metadata=query_md
        ),
        "expressions_30d": lambda: query.ExpressionDistribution(
            query_pb2.ExpressionDistributionRequest(filter=month), metadata=query_md
        ),
        "unknown_rate_30d": lambda: query.UnknownFaceRate(
            query_pb2.UnknownFaceRateRequest(filter=month), metadata=query_md
        ),
        "access_per_door_30d": lambda: query.AccessSummary(
            query_pb2.AccessSummaryRequest(filter=month), metadata=query_md
        ),
        "attributes_30d": lambda: query.AttributeDistribution(
            query_pb2.AttributeDistributionRequest(filter=month), metadata=query_md
        ),
        "fleet_status": lambda: query.FleetStatus(query_pb2.FleetStatusRequest(), metadata=query_md),
    }
    results = {}
    for name, call in calls.items():
        await call()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        results[name] = {
            "median_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
        }
    await channel.close()
    return results


async def http_queries(server: ServerProcess, query_md: Any, repeats: int) -> dict[str, Any]:
    """The same dashboard queries through the HTTP API (httpx, TLS, the same token)."""
    token = dict(query_md)["authorization"]
    end = NOW + timedelta(hours=1)
    month = {"start": (end - timedelta(days=30)).isoformat(), "end": end.isoformat()}
    day = {"start": (end - timedelta(days=1, minutes=7)).isoformat(), "end": end.isoformat()}
    week_dev = {
        "start": (end - timedelta(days=7)).isoformat(),
        "end": end.isoformat(),
        "device_id": "dev-007",
    }
    calls = {
        "list_events_first_page_24h": ("/api/events", {**day, "page_size": 100}),
        "list_events_one_device_7d": ("/api/events", {**week_dev, "page_size": 100}),
        "counts_hourly_per_device_24h": ("/api/events/counts", {**day, "interval_seconds": 3600}),
        "counts_daily_per_device_30d": ("/api/events/counts", {**month, "interval_seconds": 86400}),
        "expressions_30d": ("/api/events/expressions", month),
        "unknown_rate_30d": ("/api/events/unknown-rate", month),
        "access_per_door_30d": ("/api/events/access", month),
        "attributes_30d": ("/api/events/attributes", month),
        "fleet_status": ("/api/fleet", {}),
    }
    context = ssl.create_default_context(cafile=str(server.state_dir / "tls" / "ca.pem"))
    results = {}
    async with httpx.AsyncClient(
        base_url=f"https://localhost:{server.http}", headers={"authorization": token}, verify=context
    ) as client:
        for name, (path, params) in calls.items():
            (await client.get(path, params=params)).raise_for_status()
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                (await client.get(path, params=params)).raise_for_status()
                samples.append((time.perf_counter() - start) * 1000)
            samples.sort()
            results[name] = {
                "median_ms": round(statistics.median(samples), 2),
                "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
            }
    return results


RAW_SCANS = {
    "expressions_30d_raw_scan": "SELECT expression, COUNT(*) FROM events "
    "WHERE time_us >= ? AND time_us < ? AND kind = 'face' AND expression <> '' GROUP BY 1",
    "counts_daily_per_device_30d_raw_scan": "SELECT time_us / 86400000000, device_id, COUNT(*) "
    "FROM events WHERE time_us >= ? AND time_us < ? GROUP BY 1, 2",
    "attributes_30d_raw_scan": "SELECT gender, age_band, COUNT(*) FROM events "
    "WHERE time_us >= ? AND time_us < ? AND kind = 'face' AND gender <> '' GROUP BY 1, 2",
}
"""The 30-day aggregates counted from the raw events table (no rollup); SQLite's placeholders."""


def raw_baseline(database: Path, repeats: int) -> dict[str, Any]:
    """RAW_SCANS on the SQLite database (covering index scan, no rollup)."""
    conn = sqlite3.connect(database)
    try:
        return raw_scans(conn, repeats)
    finally:
        conn.close()


def raw_scans(conn: sqlite3.Connection | psycopg.Connection[Any], repeats: int) -> dict[str, Any]:
    """Median ms of each of RAW_SCANS over the 30 days before the next hour."""
    end_us = int((NOW + timedelta(hours=1)).timestamp() * 1e6)
    start_us = end_us - 30 * 86400 * 1_000_000
    marker = "%s" if isinstance(conn, psycopg.Connection) else "?"
    results = {}
    for name, statement in RAW_SCANS.items():
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            conn.execute(statement.replace("?", marker), (start_us, end_us)).fetchall()
            samples.append((time.perf_counter() - start) * 1000)
        results[name] = {"median_ms": round(statistics.median(samples), 2)}
    return results


# -- PostgreSQL ----------------------------------------------------------------------------------------


async def watch_streams(server: ServerProcess, admin_md: Any, agents: int, rounds: int) -> dict[str, Any]:
    """fan_out with `agents` watchers on one server, and its memory per open stream: VmRSS before the
    agents connect vs with every stream open, over `agents`."""
    before = rss_kib(server.pid)

    def memory() -> dict[str, Any]:
        opened = rss_kib(server.pid)
        return {
            "server_rss_mb_before": round(before / 1024, 1),
            "server_rss_mb_streams_open": round(opened / 1024, 1),
            "server_kib_per_stream": round((opened - before) / agents, 1),
        }

    return await fan_out(server, admin_md, agents, rounds, when_ready=memory)


def fill_postgres(state: PostgresState, count: int, devices: int) -> dict[str, Any]:
    """`count` events over the 30 days before NOW, by COPY (fleet_postgres.copy_events)."""
    started = time.perf_counter()
    with psycopg.connect(state.url, autocommit=True) as conn:
        steps = copy_events(
            conn,
            count,
            end=NOW,
            span=timedelta(days=30),
            devices=devices,
            labels=LABELS,
            band_weights=AGE_BAND_WEIGHTS,
        )
    elapsed = time.perf_counter() - started
    return {"events": count, "seconds": round(elapsed, 1), "events_per_s": round(count / elapsed), **steps}


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def retention(state: State, before: datetime) -> dict[str, Any]:
    """Seconds of the state's expire_events(before) (what the hourly retention job runs), and the longest
    that one event reported meanwhile (one every 50 ms, from another thread, as the server ingests) waited
    to be stored."""
    waits: list[float] = []
    done = threading.Event()

    def report() -> None:
        while not done.is_set():
            started = time.perf_counter()
            state.add_events([Event(str(uuid.uuid4()), "dev-000", NOW, "face", "unknown", camera="cam1")])
            waits.append(time.perf_counter() - started)
            done.wait(0.05)

    reporter = threading.Thread(target=report)
    reporter.start()
    started = time.perf_counter()
    try:
        expired = state.expire_events(before)
        seconds = time.perf_counter() - started
    finally:
        done.set()
        reporter.join()
    return {
        "before": before.isoformat(),
        "events_expired": expired,
        "seconds": round(seconds, 3),
        "events_reported_meanwhile": len(waits),
        "report_wait_max_s": round(max(waits, default=0.0), 3),
    }


def pg_retention(state: PostgresState, before: datetime) -> dict[str, Any]:
    """Seconds of PostgresState.expire_events(before) in its two steps: until the month is out of `events`
    and its rollups (detached: what holds their locks), then until its files are dropped."""
    started = time.perf_counter()
    expired = state.expire_events(before, drop=False)
    detached = time.perf_counter() - started
    started = time.perf_counter()
    dropped = state.drop_expired()
    files = time.perf_counter() - started
    return {
        "before": before.isoformat(),
        "events_expired": expired,
        "seconds": round(detached + files, 3),
        "month_out_of_events_s": round(detached, 3),
        "files_dropped_s": round(files, 3),
        "tables_dropped": len(dropped),
    }


def partition_sizes(url: str) -> dict[str, int]:
    """Rows per partition of `events` (name → count)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            name: int(conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0])  # type: ignore[index]
            for name, _, _ in pg_schema.partitions(conn)
        }


async def postgres_replicas(root: Path, setup: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every PostgreSQL figure measured through servers: ingest and fan-out on one and two replicas, the
    many-stream fan-out and memory, then the dashboard queries once the events are filled."""
    quick, admin_md = args.quick, setup["admin_md"]
    rounds, calls = (3, 2) if quick else (5, 4)
    figures: dict[str, Any] = {}

    def replica(name: str) -> ServerProcess:
        return ServerProcess(root / name, setup["state_dir"], settings=setup["settings"])

    with replica("a") as a:
        progress("PostgreSQL: ingest from 50 agents, one replica")
        figures["ingest_1_replica"] = await ingest(a, 50, calls, 500)
        with replica("b") as b:
            progress("PostgreSQL: ingest from 50 agents over two replicas; fan-out over two replicas")
            figures["ingest_2_replicas"] = await ingest(a, 50, calls, 500, replicas=[b])
            figures["fan_out_200_watchers_2_replicas"] = await fan_out(a, admin_md, 200, rounds, replicas=[b])
        figures["fan_out_200_watchers_1_replica_baseline"] = await fan_out(a, admin_md, 200, rounds)
        progress(f"PostgreSQL: {args.stream_agents} agents with a channel and Watch stream each")
        figures["watch_streams"] = await watch_streams(a, admin_md, args.stream_agents, rounds)
        progress(f"PostgreSQL: storing {args.pg_events:,} events with COPY")
        figures["fill"] = fill_postgres(setup["state"], args.pg_events, devices=200)
        progress("PostgreSQL: dashboard queries")
        figures["queries_over_stored_events"] = await queries(a, setup["query_md"], 5 if quick else 20)
    return figures


async def postgres(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The PostgreSQL figures, on a throwaway cluster (tests.postgres)."""
    progress("PostgreSQL: starting a throwaway cluster")
    cluster = PostgresCluster.start(args.pg_dir)
    try:
        url = cluster.create_database()
        progress(f"PostgreSQL: state with {args.stream_agents} device certificates")
        setup = new_postgres_state(root, url, devices=max(200, args.stream_agents))
        state: PostgresState = setup["state"]
        try:
            figures = await postgres_replicas(root, setup, args)
            with psycopg.connect(url, autocommit=True) as conn:
                version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
                figures["queries_raw_scan_baseline"] = raw_scans(conn, 1 if args.quick else 3)
            progress("PostgreSQL: retention of last month")
            sizes = partition_sizes(url)
            figures["retention"] = {
                "partitions": sizes,
                **pg_retention(state, month_start(NOW)),
                "data_volume": data_volume(cluster.root),
            }
        finally:
            state.close()
    finally:
        cluster.stop()
    return {"server_version": version, "device_certificates": setup["device_certificates"], **figures}


# -- main --------------------------------------------------------------------------------------------


async def measure(server: ServerProcess, setup: dict[str, Any], quick: bool) -> dict[str, Any]:
    figures = {}
    progress("dashboard queries")
    figures["queries_over_stored_events"] = await queries(server, setup["query_md"], 5 if quick else 20)
    figures["http_queries_over_stored_events"] = await http_queries(
        server, setup["query_md"], 5 if quick else 20
    )
    progress("ingest from 50 agents")
    figures["ingest_batched"] = await ingest(server, 50, 2 if quick else 4, 500)
    figures["ingest_one_event_per_call_baseline"] = await ingest(server, 50, 10 if quick else 20, 1)
    progress("fan-out to 200 watchers")
    figures["fan_out_200_watchers"] = await fan_out(server, setup["admin_md"], 200, 3 if quick else 5)
    figures["fan_out_1_watcher_baseline"] = await fan_out(server, setup["admin_md"], 1, 3 if quick else 5)
    return figures


def sqlite(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The SQLite figures: one server on the state directory's database, then its raw scans and retention."""
    stored = args.events or (100_000 if args.quick else 1_000_000)
    setup = prepare(root, devices=200, stored_events=stored, attributes_share=args.attributes_share)
    with ServerProcess(root, setup["state_dir"]) as server:
        figures = asyncio.run(measure(server, setup, args.quick))
    database = setup["state_dir"] / "server.db"
    figures["queries_raw_scan_baseline"] = raw_baseline(database, 3 if args.quick else 5)
    progress("retention of last month (row deletes)")
    state = SqliteState(database)
    figures["retention"] = retention(state, month_start(NOW))
    state.close()
    return {"stored_events": stored, "bulk_fill_events_per_s": setup["fill_events_per_s"], **figures}


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else float("inf")


def verdicts(lite: dict[str, Any], pg: dict[str, Any]) -> dict[str, Any]:
    """Each target met or not, and the ratios to this run's baselines."""
    worst_query = max(q["median_ms"] for q in lite["queries_over_stored_events"].values())
    worst_http_p95 = max(q["p95_ms"] for q in lite["http_queries_over_stored_events"].values())
    worst_pg_p95 = max(q["p95_ms"] for q in pg["queries_over_stored_events"].values())
    streams = pg["watch_streams"]["watchers"]
    pg_ingest = [pg["ingest_1_replica"]["events_per_s"], pg["ingest_2_replicas"]["events_per_s"]]
    targets = {
        "ingest_events_per_s_min_5000": lite["ingest_batched"]["events_per_s"] >= 5000,
        "fan_out_200_last_watcher_max_1s": lite["fan_out_200_watchers"]["last_watcher_s_max"] <= 1.0,
        "slowest_query_median_under_200ms": worst_query < 200,
        "slowest_http_query_p95_under_200ms": worst_http_p95 < 200,
        "pg_ingest_1_replica_min_10000_events_per_s": pg_ingest[0] >= 10_000,
        "pg_ingest_2_replicas_above_1_replica": pg_ingest[1] > pg_ingest[0],
        "pg_fan_out_200_over_2_replicas_max_1s": pg["fan_out_200_watchers_2_replicas"]["last_watcher_s_max"]
        <= 1.0,
        f"pg_fan_out_{streams}_streams_max_1s": pg["watch_streams"]["last_watcher_s_max"] <= 1.0,
        "pg_slowest_query_p95_under_200ms": worst_pg_p95 < 200,
        "pg_retention_drop_month_under_1s": pg["retention"]["seconds"] < 1.0,
        "pg_retention_month_out_of_events_under_1s": pg["retention"]["month_out_of_events_s"] < 1.0,
    }
    fastest_raw = min(q["median_ms"] for q in pg["queries_raw_scan_baseline"].values())
    ratios = {
        "pg_ingest_1_replica_vs_sqlite": ratio(pg_ingest[0], lite["ingest_batched"]["events_per_s"]),
        "pg_ingest_2_replicas_vs_1_replica": ratio(pg_ingest[1], pg_ingest[0]),
        "pg_fan_out_2_replicas_vs_1_replica_last_watcher": ratio(
            pg["fan_out_200_watchers_2_replicas"]["last_watcher_s_median"],
            pg["fan_out_200_watchers_1_replica_baseline"]["last_watcher_s_median"],
        ),
        f"pg_fan_out_{streams}_vs_200_streams_last_watcher": ratio(
            pg["watch_streams"]["last_watcher_s_median"],
            pg["fan_out_200_watchers_1_replica_baseline"]["last_watcher_s_median"],
        ),
        "pg_slowest_query_p95_vs_sqlite": ratio(worst_pg_p95, worst_http_p95),
        "pg_slowest_query_p95_vs_fastest_raw_scan": ratio(worst_pg_p95, fastest_raw),
        "pg_retention_vs_sqlite_row_deletes": ratio(pg["retention"]["seconds"], lite["retention"]["seconds"]),
    }
    return {"targets": targets, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats, 100k stored events on SQLite, 200k on PostgreSQL and 300 streaming agents",
    )
    parser.add_argument("--events", type=int, default=None, help="stored events for the SQLite query figures")
    parser.add_argument(
        "--attributes-share",
        type=float,
        default=1.0,
        help="share of the devices whose face events carry estimated attributes (0–1; default 1)",
    )
    parser.add_argument(
        "--pg-events", type=int, default=None, help="stored events on PostgreSQL (default 10,000,000)"
    )
    parser.add_argument(
        "--stream-agents", type=int, default=None, help="agents with a Watch stream each (default 2000)"
    )
    parser.add_argument(
        "--pg-dir",
        type=Path,
        default=None,
        help="folder to make the throwaway PostgreSQL cluster in (default: the temporary folder); its "
        "volume decides how fast a dropped month's files are freed",
    )
    args = parser.parse_args()
    args.pg_events = args.pg_events or (200_000 if args.quick else 10_000_000)
    args.stream_agents = args.stream_agents or (300 if args.quick else 2000)
    open_files = raise_open_files_limit()
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as tmp:
        root = Path(tmp)
        lite = sqlite(root / "sqlite", args)
        pg = asyncio.run(postgres(root / "postgres", args))
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpc": grpc.__version__,
            "sqlite": sqlite3.sqlite_version,
            "postgresql": pg.pop("server_version"),
            "open_files_limit": open_files,
        },
        "attributes_share": args.attributes_share,
        "sqlite": lite,
        "postgresql": pg,
        **verdicts(lite, pg),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
