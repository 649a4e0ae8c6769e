"""Operators' gRPC calls without a known bearer token are refused (UNAUTHENTICATED, with the reason) before
their request message is read: a message over listen.max_message_bytes gets UNAUTHENTICATED, not the
RESOURCE_EXHAUSTED of reading it. A known token's calls go on to the servicers, which check its role; the
agents' and health calls take no token. A connection that sends nothing is closed after the handshake
limit. A method that does not exist is UNIMPLEMENTED, token or not, and adds no series to the metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import admin_pb2, fleet_pb2, query_pb2
from tests.agent.test_metrics import Samples, scrape
from tests.server.conftest import Pki, run, serving

ENROL = "/facefleet.v1.AdminService/EnrollPerson"


async def status(call: Any) -> tuple[str, str]:
    """The status code name and details a call ends with."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def test_operator_calls_without_a_known_token_are_refused_before_their_message_is_read(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    big = admin_pb2.EnrollPersonRequest(person_id="x", images=[bytes(100 * 1024)])  # over the 64 KiB limit

    async def scenario() -> tuple[dict[str, tuple[str, str]], float | None]:
        async with serving(tmp_path, pki, enroller, listen={"max_message_bytes": 64 * 1024}) as harness:
            admin, query = harness.admin(), harness.query()
            unknown = (("authorization", "Bearer ff1.0123456789abcdef.unknown"),)
            r = {
                "no token": await status(admin.EnrollPerson(big)),
                "unknown token": await status(admin.EnrollPerson(big, metadata=unknown)),
                "not bearer": await status(
                    query.FleetStatus(
                        query_pb2.FleetStatusRequest(), metadata=(("authorization", "Basic x"),)
                    )
                ),
                "admin token": await status(admin.EnrollPerson(big, metadata=harness.admin_md)),
                "admin lists": await status(
                    admin.ListPeople(admin_pb2.ListPeopleRequest(), metadata=harness.admin_md)
                ),
                "query token on admin": await status(
                    admin.ListPeople(admin_pb2.ListPeopleRequest(), metadata=harness.query_md)
                ),
                "query token": await status(
                    query.FleetStatus(query_pb2.FleetStatusRequest(), metadata=harness.query_md)
                ),
                "agent": await status(
                    harness.fleet("door-1").Register(
                        fleet_pb2.RegisterRequest(device_id="door-1", agent_version="t")
                    )
                ),
                "health": await status(
                    health_pb2_grpc.HealthStub(harness.operator_channel()).Check(
                        health_pb2.HealthCheckRequest()
                    )
                ),
            }
            counted = harness.server.metrics.registry.get_sample_value(
                "facefleet_server_rpcs_total", {"method": ENROL, "code": "UNAUTHENTICATED"}
            )
            return r, counted

    r, counted = run(scenario)
    assert r["no token"] == ("UNAUTHENTICATED", "missing 'authorization: Bearer <token>' metadata")
    assert r["unknown token"][0] == "UNAUTHENTICATED" and "unknown or revoked token" in r["unknown token"][1]
    assert r["not bearer"] == ("UNAUTHENTICATED", "authorization metadata must be 'Bearer <token>'")
    assert r["admin token"][0] == "RESOURCE_EXHAUSTED"  # a known token's message is read, within its limit
    assert r["admin lists"] == ("OK", "")
    assert r["query token on admin"][0] == "PERMISSION_DENIED" and "'admin'" in r["query token on admin"][1]
    assert r["query token"] == r["agent"] == r["health"] == ("OK", "")
    assert counted == 2


def test_a_grpc_connection_that_sends_nothing_is_closed_after_the_handshake_limit(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def closed_after(port: int) -> float:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while await asyncio.wait_for(reader.read(65536), 30):  # gRPC's own limit: 120 s
                pass
        except ConnectionError:
            pass
        except asyncio.TimeoutError:
            return float("inf")
        finally:
            writer.close()
        return time.monotonic() - started

    async def scenario() -> list[float]:
        async with serving(tmp_path, pki, enroller, listen={"handshake_timeout_seconds": 0.5}) as harness:
            return await asyncio.gather(
                closed_after(harness.agents_port), closed_after(harness.operators_port)
            )

    closed = run(scenario)
    assert max(closed) < float("inf") and min(closed) >= 0.4, closed  # closed, not before the limit


def test_made_up_operator_methods_are_unimplemented_and_add_no_metric_series(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    made_up = [
        f"/facefleet.v1.{service}/Made{i}" for service in ("AdminService", "QueryService") for i in range(3)
    ]

    async def scenario() -> tuple[list[tuple[str, str]], tuple[str, str], set[str], set[str]]:
        async with serving(tmp_path, pki, enroller) as harness:
            port = harness.server.metrics_endpoint.port
            before = await asyncio.to_thread(scrape, port)
            channel = harness.operator_channel()
            codes = [await status(channel.unary_unary(method)(b"")) for method in made_up]
            real = await status(harness.admin().ListPeople(admin_pb2.ListPeopleRequest()))
            after = await asyncio.to_thread(scrape, port)
            return codes, real, methods(before), methods(after)

    codes, real, before, after = run(scenario)
    assert [code for code, _ in codes] == ["UNIMPLEMENTED"] * len(made_up)
    assert real[0] == "UNAUTHENTICATED"
    assert after - before == {"/facefleet.v1.AdminService/ListPeople"}  # the refusal of a real method only


def methods(samples: Samples) -> set[str]:
    """The gRPC methods that have a series of their own among the server's metrics."""
    return {value for _, labels in samples for key, value in labels if key == "method"}
