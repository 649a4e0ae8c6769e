"""Agents behind a TCP load balancer (tests.balancer, as HAProxy with TLS passthrough) in front of two server
replicas on one PostgreSQL database: Watch streams end at their maximum age and the agents reconnect through
the balancer to the other replica without a warning; and when a replica is killed (`kill -9` of a real
`facefleet-server serve` process), its agents reconnect to the other one and miss no gallery revision and
no event."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import replace
from pathlib import Path

import grpc
import psycopg
import pytest

from facefleet.agent.fleet.sync import FleetSync
from facefleet.agent.store.database import EmbeddingStore
from facefleet.link.checks import utc_now
from facefleet.server.api.security import new_token
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.state.open import open_state
from facefleet.v1 import admin_pb2_grpc
from facefleet.vision.models.store import ModelStore
from tests.balancer import TcpBalancer
from tests.mosquitto import free_port
from tests.postgres import PostgresCluster
from tests.server.conftest import Pki, run, serving
from tests.server.fleet.test_agent_sync import (
    enrol,
    face_payload,
    settings,
    sync_settings,
    syncing,
    until,
    vector_person,
)


def test_watch_streams_end_at_their_maximum_age_and_agents_move_to_the_other_replica(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    postgres_cluster: PostgresCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sections = {"state": {"url": postgres_cluster.create_database()}, "fleet": {"watch_max_age_seconds": 2}}

    async def scenario() -> tuple[int, int, list[str], int | None, str | None]:
        async with (
            serving(tmp_path / "a", pki, enroller, **sections) as a,
            serving(tmp_path / "b", pki, enroller, **sections) as b,
        ):
            replicas = [("127.0.0.1", a.agents_port), ("127.0.0.1", b.agents_port)]
            balancer = TcpBalancer(replicas).start()
            try:
                with EmbeddingStore(tmp_path / "agent.db") as store:
                    async with syncing(replace(settings(a, pki), address=balancer.address), store) as sync:
                        await until(lambda: sync.connected, what="the first connection")
                        first = "a" if a.server.fanout and a.server.fanout.watching() else "b"
                        # 85-100 % of 2 s per stream: three more sessions within a few seconds, alternating
                        await until(lambda: sync.connects >= 4, timeout=30, what="three reconnections")
                        await until(lambda: sync.connected, what="the current connection")
                        head = await enrol(a if first == "b" else b, vector_person("eileen", 1))
                        await until(lambda: sync.applied_revision == head, what="the enrolment")
                        people = [p.person_id for p in store.gallery.people()]
                        return (
                            balancer.count(replicas[0]),
                            balancer.count(replicas[1]),
                            people,
                            sync.applied_revision,
                            sync.last_error,
                        )
            finally:
                balancer.close()

    with caplog.at_level(logging.INFO, logger="facefleet.agent.fleet.sync"):
        on_a, on_b, people, revision, last_error = run(scenario)
    assert on_a >= 2 and on_b >= 2  # each new connection went to the other replica in turn
    assert people == ["eileen"] and revision == 1
    assert last_error is None  # never the backoff path: a planned end is not an outage
    assert "the watch stream reached the server's maximum age; reconnecting" in caplog.text
    # no warning from the agent's loggers (what the test balancer logs as it closes is not the agent's)
    agent_records = [r for r in caplog.records if r.name.startswith("facefleet.agent")]
    assert not [r for r in agent_records if r.levelno >= logging.WARNING]


def write_replica_config(
    path: Path, pki: Pki, url: str, models: Path, agents_port: int, operators_port: int
) -> Path:
    tls = pki.tls_dir
    path.write_text(
        f'[listen]\nagents = "127.0.0.1:{agents_port}"\noperators = "127.0.0.1:{operators_port}"\n'
        'http = ""\ngrace_seconds = 1\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[tls]\nca_cert = "{tls / "ca.pem"}"\nserver_cert = "{tls / "server.pem"}"\n'
        f'server_key = "{tls / "server.key"}"\n'
        f'[state]\nurl = "{url}"\n[models]\ndir = "{models}"\n'
    )
    return path


class Replica:
    """A `facefleet-server serve` process on fixed ports; its log lines collected in `lines`."""

    def __init__(self, root: Path, pki: Pki, url: str, models: Path) -> None:
        root.mkdir(parents=True)
        self.agents_port, self.operators_port = free_port(), free_port()
        config = write_replica_config(
            root / "server.toml", pki, url, models, self.agents_port, self.operators_port
        )
        command = [sys.executable, "-m", "facefleet.server.cli", "--config", str(config)]
        command += ["--state-dir", str(root / "state"), "serve"]
        self.process = subprocess.Popen(command, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr or ()))
        self._reader.start()

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any("serving: " in line for line in self.lines):
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)


@pytest.mark.slow
def test_agents_of_a_killed_replica_reconnect_to_the_other_and_miss_no_revision_and_no_event(
    tmp_path: Path, pki: Pki, model_store: ModelStore, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.create_database()
    devices = ("door-1", "door-2", "lobby")
    with ExitStack() as stack:
        a = Replica(tmp_path / "a", pki, url, model_store.root)
        stack.callback(a.stop)
        a.wait_serving()  # the first one migrates the empty database
        b = Replica(tmp_path / "b", pki, url, model_store.root)
        stack.callback(b.stop)
        b.wait_serving()
        state = open_state(url, tmp_path / "unused.db", log_revisions=1000, pool_size=1)
        token, record = new_token("failover-admin", "admin", utc_now())
        state.add_token(record)
        state.close()
        replicas = [("127.0.0.1", a.agents_port), ("127.0.0.1", b.agents_port)]
        balancer = TcpBalancer(replicas).start()
        stack.callback(balancer.close)
        submitted, heads = asyncio.run(_fleet_through_a_kill(tmp_path, pki, token, a, b, balancer, devices))
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT event_id FROM events").fetchall()
    stored = [str(row[0]) for row in rows]
    assert len(stored) == len(set(stored))  # none stored twice
    assert set(stored) == submitted  # and none lost
    assert len(submitted) >= 3 * 40
    assert set(heads.values()) == {6}  # every agent applied every revision, those made during the outage too


async def _fleet_through_a_kill(
    tmp_path: Path,
    pki: Pki,
    token: str,
    a: Replica,
    b: Replica,
    balancer: TcpBalancer,
    devices: tuple[str, ...],
) -> tuple[set[str], dict[str, int]]:
    """Three agents through the balancer (round robin: some on each replica) report events all along;
    people are enrolled through A before, during and after B is killed. The event ids submitted, and each
    agent's applied gallery revision at the end."""
    channel = grpc.aio.secure_channel(f"127.0.0.1:{a.operators_port}", grpc.ssl_channel_credentials(pki.ca))
    admin = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
    metadata = (("authorization", f"Bearer {token}"),)
    submitted: set[str] = set()

    async def enrol_through_a(n: int) -> None:
        reply = await admin.EnrollPerson(vector_person(f"person-{n}", n), metadata=metadata)
        assert reply.revision == n

    async def report(syncs: list[FleetSync], rounds: int) -> None:
        for _ in range(rounds):
            for sync, device in zip(syncs, devices, strict=True):
                payload = face_payload(device, None, time.time())
                assert sync.submit(payload)
                submitted.add(payload.envelope.event_id)
            await asyncio.sleep(0.05)

    async with AsyncExitStack() as stack:
        stack.push_async_callback(channel.close)
        syncs: list[FleetSync] = []
        for device in devices:
            store = stack.enter_context(EmbeddingStore(tmp_path / f"{device}.db"))
            options = sync_settings(balancer.address, pki, device)
            syncs.append(await stack.enter_async_context(syncing(options, store)))
        await until(lambda: all(sync.connected for sync in syncs), what="every agent connected")
        assert balancer.count(("127.0.0.1", b.agents_port)) >= 1  # some agent is on the replica to be killed
        for n in (1, 2):
            await enrol_through_a(n)
        await report(syncs, 20)
        b.kill()
        during = asyncio.ensure_future(report(syncs, 20))  # queued on the agents while they reconnect
        for n in (3, 4):
            await enrol_through_a(n)
        await during
        for n in (5, 6):
            await enrol_through_a(n)
        await until(
            lambda: all(sync.store.reports.count() == 0 for sync in syncs),
            timeout=60,
            what="every event reported",
        )
        await until(
            lambda: all(sync.applied_revision == 6 for sync in syncs), timeout=60, what="every revision"
        )
        heads = {device: sync.applied_revision for device, sync in zip(devices, syncs, strict=True)}
        assert sum(sync.connects for sync in syncs) > len(devices)  # B's agents connected again, to A
    return submitted, heads
