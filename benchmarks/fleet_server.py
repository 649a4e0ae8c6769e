"""Server benchmark: event ingest from 50 concurrent agents, gallery fan-out to 200 watching agents, and
dashboard query latency over 1M stored events. Prints one JSON document; every figure is measured in
this run, each next to a baseline from the same run:

- ingest: batched reports (500 events per ReportResults) vs one event per call; target >= 5,000 events/s;
- fan-out: one enrolment until the last of 200 watchers has the delta, vs a single watcher; target <= 1 s;
- queries: each QueryService call over 1M events (30 days, 200 devices; the face events of a share of the
  devices, all by default, with estimated attributes) through gRPC, vs the same aggregate counted straight
  from the raw events table without the hourly rollup; target < 200 ms; and the same queries through the
  HTTP API (p95 < 200 ms).

The server runs as a real `facefleet-server serve` process (mutual TLS, SQLite in a temporary state
directory); the simulated agents and dashboards are asyncio clients in this process, on loopback only.
Usage: .venv/bin/python benchmarks/fleet_server.py [--quick] [--events N] [--attributes-share S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.link.checks import utc_now
from facefleet.link.events import AGE_BANDS, AttributesResult, Event, ExpressionResult
from facefleet.server.api import certs
from facefleet.server.api.security import new_token
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

LABELS = ("happy", "neutral", "sad", "surprise", "angry")
AGE_BAND_WEIGHTS = (3, 8, 25, 25, 18, 12, 9)
"""How often each of AGE_BANDS passes a camera in the filled events (a guess at an office's visitors)."""
NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


# -- set-up ------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def new_state(root: Path, devices: Sequence[str]) -> tuple[Path, SqliteState, dict[str, Any]]:
    """A fresh server state directory under root with the site PKI, a certificate per device, the
    default models and an admin and a query token: (state_dir, its open state, the tokens' metadata)."""
    state_dir, tls = root / "state", root / "state" / "tls"
    certs.init_ca(tls, server_names=["localhost"])
    for device in devices:
        certs.issue_device(tls, device)
    progress("importing the default models into the server's state directory")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "facefleet.server.cli",
            "--state-dir",
            str(state_dir),
            "models",
            "import-defaults",
        ],
        check=True,
        capture_output=True,
    )
    state = SqliteState(state_dir / "server.db")
    admin_token, admin = new_token("bench-admin", "admin", utc_now())
    query_token, query = new_token("bench-query", "query", utc_now())
    state.add_token(admin)
    state.add_token(query)
    metadata = {
        "admin_md": (("authorization", f"Bearer {admin_token}"),),
        "query_md": (("authorization", f"Bearer {query_token}"),),
    }
    return state_dir, state, metadata


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
    poll_seconds: its [fleet] poll_seconds (None: the default), how soon it notices CLI changes."""

    def __init__(self, root: Path, state_dir: Path, poll_seconds: float | None = None) -> None:
        self.root, self.state_dir = root, state_dir
        self.config = root / "server.toml"
        self.poll_seconds = poll_seconds
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        config = self.config
        poll = "" if self.poll_seconds is None else f"poll_seconds = {self.poll_seconds}\n"
        config.write_text(
            '[listen]\nagents = "127.0.0.1:0"\noperators = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\n'
            "grace_seconds = 1\n"
            f"max_concurrent_streams = 10000\n[fleet]\nmax_report_events = 10000\n{poll}"
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
        self.process = subprocess.Popen(
            [*command, "serve"],
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        status = receiver.recv(4096).decode()
        receiver.close()
        self.agents = int(re.search(r"agents on port (\d+)", status)[1])  # type: ignore[index]
        self.operators = int(re.search(r"operators on port (\d+)", status)[1])  # type: ignore[index]
        self.http = int(re.search(r"HTTP API on port (\d+)", status)[1])  # type: ignore[index]
        self.ca = (self.state_dir / "tls" / "ca.pem").read_bytes()
        return self

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
) -> dict[str, Any]:
    """events/s with `agents` concurrent agents, each making `calls` ReportResults of `per_call` events;
    report(device, first, count) makes a serialised request."""
    devices = [f"dev-{i:03d}" for i in range(agents)]
    payloads = {d: [report(d, c * per_call, per_call) for c in range(calls)] for d in devices}
    channels = {d: server.agent_channel(d) for d in devices}
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
        "events": stored,
        "bytes_per_event": round(len(payloads[devices[0]][0]) / per_call),
        "events_per_call": per_call,
        "seconds": round(elapsed, 2),
        "events_per_s": round(stored / elapsed),
    }


# -- fan-out -----------------------------------------------------------------------------------------


async def fan_out(server: ServerProcess, admin_md: Any, watchers: int, rounds: int) -> dict[str, Any]:
    """Seconds from sending an enrolment until the last of `watchers` Watch streams has its delta."""
    devices = [f"dev-{i:03d}" for i in range(watchers)]
    channels = [server.agent_channel(d) for d in devices]
    stubs = [fleet_pb2_grpc.FleetServiceStub(c) for c in channels]
    await asyncio.gather(
        *(s.Register(fleet_pb2.RegisterRequest(device_id=d)) for s, d in zip(stubs, devices, strict=True))
    )
    operator = server.operator_channel()
    admin = admin_pb2_grpc.AdminServiceStub(operator)
    head = (
        await admin.ListPeople(admin_pb2.ListPeopleRequest(page_size=1), metadata=admin_md)
    ).gallery_revision
    arrivals: dict[int, list[float]] = {}
    complete: dict[int, asyncio.Event] = {}
    ready = 0
    all_ready = asyncio.Event()

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
                if ready == watchers:
                    all_ready.set()

    tasks = [asyncio.create_task(watch(s)) for s in stubs]
    await asyncio.wait_for(all_ready.wait(), 120)
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
        "rounds": rounds,
        "last_watcher_s_median": round(statistics.median(last), 4),
        "last_watcher_s_max": round(max(last), 4),
        "first_watcher_s_median": round(statistics.median(s[0] for s in samples), 4),
        "median_watcher_s_median": round(statistics.median(statistics.median(s) for s in samples), 4),
    }


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


def raw_baseline(database: Path, repeats: int) -> dict[str, Any]:
    """The 30-day aggregates counted from the raw events table (covering index scan, no rollup)."""
    end_us = int((NOW + timedelta(hours=1)).timestamp() * 1e6)
    start_us = end_us - 30 * 86400 * 1_000_000
    sql = {
        "expressions_30d_raw_scan": "SELECT expression, COUNT(*) FROM events "
        "WHERE time_us >= ? AND time_us < ? AND kind = 'face' AND expression <> '' GROUP BY 1",
        "counts_daily_per_device_30d_raw_scan": "SELECT time_us / 86400000000, device_id, COUNT(*) "
        "FROM events WHERE time_us >= ? AND time_us < ? GROUP BY 1, 2",
        "attributes_30d_raw_scan": "SELECT gender, age_band, COUNT(*) FROM events "
        "WHERE time_us >= ? AND time_us < ? AND kind = 'face' AND gender <> '' GROUP BY 1, 2",
    }
    conn = sqlite3.connect(database)
    results = {}
    for name, statement in sql.items():
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            conn.execute(statement, (start_us, end_us)).fetchall()
            samples.append((time.perf_counter() - start) * 1000)
        results[name] = {"median_ms": round(statistics.median(samples), 2)}
    conn.close()
    return results


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and 100k stored events")
    parser.add_argument("--events", type=int, default=None, help="stored events for the query figures")
    parser.add_argument(
        "--attributes-share",
        type=float,
        default=1.0,
        help="share of the devices whose face events carry estimated attributes (0–1; default 1)",
    )
    args = parser.parse_args()
    stored = args.events or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as tmp:
        root = Path(tmp)
        setup = prepare(root, devices=200, stored_events=stored, attributes_share=args.attributes_share)
        with ServerProcess(root, setup["state_dir"]) as server:
            figures = asyncio.run(measure(server, setup, args.quick))
        figures["queries_raw_scan_baseline"] = raw_baseline(
            setup["state_dir"] / "server.db", 3 if args.quick else 5
        )
    worst_query = max(q["median_ms"] for q in figures["queries_over_stored_events"].values())
    worst_http_p95 = max(q["p95_ms"] for q in figures["http_queries_over_stored_events"].values())
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpc": grpc.__version__,
            "sqlite": sqlite3.sqlite_version,
        },
        "stored_events": stored,
        "attributes_share": args.attributes_share,
        "bulk_fill_events_per_s": setup["fill_events_per_s"],
        **figures,
        "targets": {
            "ingest_events_per_s_min_5000": figures["ingest_batched"]["events_per_s"] >= 5000,
            "fan_out_200_last_watcher_max_1s": figures["fan_out_200_watchers"]["last_watcher_s_max"] <= 1.0,
            "slowest_query_median_under_200ms": worst_query < 200,
            "slowest_http_query_p95_under_200ms": worst_http_p95 < 200,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
