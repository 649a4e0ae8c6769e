"""The server's Prometheus endpoint and JSON logs: a real server with mutual TLS answering real gRPC calls,
scraped over HTTP, and `facefleet-server serve` as a process logging JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from facefleet.server.config import ServerConfig
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.metrics import ServerFigures, ServerMetrics, pool_figures
from facefleet.v1 import fleet_pb2, fleet_pb2_grpc
from tests.agent.test_metrics import Samples, scrape
from tests.server.conftest import Harness, Pki, next_delta, run, serving
from tests.server.fleet.test_fleet_service import enrol_vector, event

FLEET = "/facefleet.v1.FleetService/"


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_scraped_counters_move_with_reports_watch_streams_and_calls(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    day = (datetime.now(timezone.utc) - timedelta(days=1)).replace(microsecond=0)
    events = [event("door-1", day + timedelta(seconds=i), i) for i in range(5)]
    not_a_uuid = event("door-1", day, 99)
    not_a_uuid.event_id = "e-17"

    async def scenario() -> tuple[Samples, Samples, Samples]:
        async with serving(tmp_path, pki, enroller) as harness:
            port = harness.server.metrics_endpoint.port
            assert port
            before = await asyncio.to_thread(scrape, port)
            fleet = await harness.registered("door-1")
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
            await next_delta(stream)
            await enrol_vector(harness, "alice")
            assert (await next_delta(stream)).gallery.to_revision == 1
            first = await fleet.ReportResults(
                fleet_pb2.ReportResultsRequest(device_id="door-1", events=[*events, not_a_uuid])
            )
            again = await fleet.ReportResults(
                fleet_pb2.ReportResultsRequest(device_id="door-1", events=events)
            )
            assert (first.stored, again.duplicates) == (5, 5)
            with pytest.raises(grpc.aio.AioRpcError):  # another device's id: PERMISSION_DENIED
                await fleet.Register(fleet_pb2.RegisterRequest(device_id="door-2"))
            verify = ssl.create_default_context(cafile=str(pki.tls_dir / "ca.pem"))
            headers = {"Authorization": f"Bearer {harness.admin_token}"}
            async with httpx.AsyncClient(verify=verify, headers=headers) as http:
                paths = ("/api/people/alice", "/api/people/nobody", "/api/people/alice", "/api/no-such-thing")
                statuses = [(await http.get(harness.http_url + path)).status_code for path in paths]
            assert statuses == [200, 404, 200, 404]
            during = await asyncio.to_thread(scrape, port)
            stream.cancel()
            after = await _settled(harness, port)
            return before, during, after

    before, during, after = run(scenario)
    assert value(before, "facefleet_server_reports_total") == 0
    assert value(during, "facefleet_server_reports_total") == 2
    assert value(during, "facefleet_server_events_ingested_total", outcome="stored") == 5
    assert value(during, "facefleet_server_events_ingested_total", outcome="duplicate") == 5
    assert value(during, "facefleet_server_events_ingested_total", outcome="rejected") == 1
    assert value(during, "facefleet_server_watch_streams") == 1
    assert value(during, "facefleet_server_agents_watching") == 1
    assert value(after, "facefleet_server_watch_streams") == 0
    assert value(during, "facefleet_server_gallery_revision") == 1
    assert value(during, "facefleet_server_rpcs_total", method=FLEET + "ReportResults", code="OK") == 2
    assert value(during, "facefleet_server_rpcs_total", method=FLEET + "Register", code="OK") == 1
    person = {"route": "/api/people/{person_id}", "method": "GET"}
    assert value(during, "facefleet_server_http_requests_total", **person, code="200") == 2
    assert value(during, "facefleet_server_http_requests_total", **person, code="404") == 1
    assert value(during, "facefleet_server_http_seconds_count", **person) == 3
    assert (
        value(during, "facefleet_server_http_requests_total", route="unmatched", method="GET", code="404")
        == 1
    )
    assert not [labels for name, labels in during if "nobody" in str(labels)]  # paths asked for are no label
    assert (
        value(during, "facefleet_server_rpcs_total", method=FLEET + "Register", code="PERMISSION_DENIED") == 1
    )
    assert value(during, "facefleet_server_rpc_seconds_count", method=FLEET + "ReportResults") == 2
    assert (
        value(during, "facefleet_server_rpc_seconds_count", method="/facefleet.v1.AdminService/EnrollPerson")
        == 1
    )
    assert value(after, "facefleet_server_rpcs_total", method=FLEET + "Watch", code="CANCELLED") == 1
    for state in ("preparing", "active", "paused", "rolled_back"):
        assert ("facefleet_server_rollouts", (("state", state),)) in during
    assert not [key for key in during if key[0] == "facefleet_server_db_pool"]  # SQLite has no pool
    # no id is a label: every label value is a method, code, outcome, state or [tls] file key
    labels = {name for (_, pairs) in during for name, _ in pairs}
    assert labels <= {"method", "code", "outcome", "state", "le", "route", "file"}
    tls = "facefleet_server_tls_not_after_seconds"
    files = {dict(pairs)["file"] for (name, pairs) in during if name == tls}
    assert files == {"server_cert", "ca_cert"}


async def _settled(harness: Harness, port: int) -> Samples:
    """A scrape once the cancelled Watch stream has ended on the server."""
    for _ in range(100):
        samples = await asyncio.to_thread(scrape, port)
        if value(samples, "facefleet_server_watch_streams") == 0:
            return samples
        await asyncio.sleep(0.05)
    return samples


def test_a_state_with_a_pool_fills_the_pool_family() -> None:
    class Pooled:
        def pool_stats(self) -> Mapping[str, float]:
            return {"pool_size": 10, "pool_available": 7, "requests_waiting": 0}

    assert pool_figures(object()) == {}
    metrics = ServerMetrics()
    metrics.watch(lambda: ServerFigures(pool=pool_figures(Pooled()), rollouts={"active": 1}))
    assert metrics.registry.get_sample_value("facefleet_server_db_pool", {"figure": "pool_available"}) == 7
    assert metrics.registry.get_sample_value("facefleet_server_rollouts", {"state": "active"}) == 1


def test_metrics_listen_and_log_format_are_validated() -> None:
    assert ServerConfig().metrics.listen == "127.0.0.1:9109"
    assert ServerConfig().log_format == "text"
    with pytest.raises(ValueError, match="host:port"):
        ServerConfig.model_validate({"metrics": {"listen": "localhost"}})
    with pytest.raises(ValueError, match="log_format"):
        ServerConfig.model_validate({"log_format": "yaml"})


@pytest.mark.slow
def test_serve_logs_json_lines_and_serves_metrics(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        'insecure_development = true\nlog_format = "json"\n'
        '[listen]\nagents = "127.0.0.1:0"\noperators = "127.0.0.1:0"\nhttp = ""\ngrace_seconds = 1\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
    )
    command = [
        sys.executable,
        "-m",
        "facefleet.server.cli",
        "--config",
        str(config),
        "--state-dir",
        str(tmp_path / "state"),
        "serve",
    ]
    process = subprocess.Popen(command, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()

    def logged(prefix: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in list(lines):
                if line.startswith("{") and (record := json.loads(line))["message"].startswith(prefix):
                    return record  # type: ignore[no-any-return]
            assert process.poll() is None, "".join(lines)
            time.sleep(0.1)
        raise AssertionError(f"{prefix!r} not logged:\n" + "".join(lines))

    try:
        serving_line = logged("serving: ")
        status = serving_line["message"]
        agents = int(status.split("agents on port ")[1].split(",")[0])
        metrics = int(status.split("metrics on port ")[1].split(";")[0])
        with grpc.insecure_channel(f"127.0.0.1:{agents}") as channel:
            fleet = fleet_pb2_grpc.FleetServiceStub(channel)
            fleet.Register(fleet_pb2.RegisterRequest(device_id="box-7"), timeout=10)
            rejected = event("box-7", datetime.now(timezone.utc), 1)
            rejected.event_id = "not-a-uuid"
            reply = fleet.ReportResults(
                fleet_pb2.ReportResultsRequest(device_id="box-7", events=[rejected]), timeout=10
            )
            assert [r.event_id for r in reply.rejected] == ["not-a-uuid"]
        samples = scrape(metrics)
        registered = logged("device box-7 registered")
        refusal = logged("device box-7: 1 reported events rejected")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(10)
    assert process.returncode == 0, "".join(lines)
    assert value(samples, "facefleet_server_reports_total") == 1
    assert value(samples, "facefleet_server_events_ingested_total", outcome="rejected") == 1
    assert value(samples, "facefleet_server_rpcs_total", method=FLEET + "Register", code="OK") == 1
    assert serving_line["level"] == "INFO" and serving_line["logger"] == "facefleet.server.app"
    assert registered["device_id"] == "box-7" and "event_id" not in registered
    assert (refusal["device_id"], refusal["event_id"]) == ("box-7", "not-a-uuid")
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert not [line for line in lines if line.startswith(("INFO ", "WARNING ", "ERROR "))]
