"""Model versions rolled out to real agents end to end: the server's CLI publishes a version and starts a
rollout on the state directory of a running server (mutual TLS on port 0); real agents (AgentService on
threads, or `facefleet-agent run` processes for kill -9) download, verify, compile, smoke-test and switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import onnx
import onnx.numpy_helper
import pytest

from facefleet.agent.config import AgentConfig
from facefleet.agent.recognition.tracking import TrackerSettings
from facefleet.agent.service.loop import AgentService
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.updates.statuses import STATUS_FILE
from facefleet.link.checks import utc_now
from facefleet.server.api import certs
from facefleet.server.cli import main as server_main
from facefleet.server.domain.models import Target
from facefleet.server.domain.queries import EventFilter
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import admin_pb2, models_pb2, query_pb2
from facefleet.vision.models.onnx_fold import fold_blocked_dequantize
from facefleet.vision.models.store import ModelStore
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.fleet.test_agent_sync import until
from tests.videos import write_video

pytestmark = pytest.mark.slow  # agents downloading, compiling and switching for real, some as processes

EXPRESSION_NEW = "mini-xception@fer2013-fp32"
EXPRESSION_TAMPERED = "mini-xception@fer2013-tampered"
EMBEDDING_OLD = "sface@2021dec"
EMBEDDING_NEW = "sface@2021dec-fp32"
EMBEDDING_ROTATED = "sface@rotated"
EMBEDDING_ARCFACE = "arcface@r1"
ARCFACE_DIMENSION = 512
ACTIVE = models_pb2.MODEL_ACTIVATION_ACTIVE
FAILED = models_pb2.MODEL_ACTIVATION_FAILED
T = TypeVar("T")
AGENT_CLI = Path(sys.executable).with_name("facefleet-agent")


def sface_projected(sface_onnx: Path, folder: Path, projection: npt.NDArray[np.float64]) -> Path:
    """SFace followed by a fixed 128×D projection of its output: a real embedding model of another space."""
    folded = folder / "sface-folded.onnx"
    if fold_blocked_dequantize(sface_onnx, folded) == 0:
        shutil.copyfile(sface_onnx, folded)
    model = onnx.load(str(folded))
    output = model.graph.output[0].name
    producer = next(node for node in model.graph.node if output in node.output)
    producer.output[list(producer.output).index(output)] = "unprojected"
    model.graph.initializer.append(onnx.numpy_helper.from_array(projection.astype(np.float32), "projection"))
    model.graph.node.append(onnx.helper.make_node("MatMul", ["unprojected", "projection"], [output]))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[len(dims) - 1].dim_value = projection.shape[1]
    projected = folder / "sface-projected.onnx"
    onnx.save(model, str(projected))
    return projected


@pytest.fixture(scope="module")
def sface_rotated_onnx(tmp_path_factory: pytest.TempPathFactory, sface_onnx: Path) -> Path:
    """SFace followed by a fixed random rotation of its 128-d output: a real embedding model whose vectors
    are unrelated to SFace's (the same face scores about 0 across the two), so any comparison of an
    embedding with the other model's gallery would show up as an unknown face."""
    rotation, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(128, 128)))
    return sface_projected(sface_onnx, tmp_path_factory.mktemp("rotated"), rotation)


@pytest.fixture(scope="module")
def arcface_shaped_onnx(tmp_path_factory: pytest.TempPathFactory, sface_onnx: Path) -> Path:
    """A model of an ArcFace-class shape (112×112 aligned face → 512-d vector) that tells faces apart as
    well as SFace: SFace followed by an isometry into 512 dimensions (orthonormal 128×512 rows)."""
    columns, _ = np.linalg.qr(np.random.default_rng(11).normal(size=(ARCFACE_DIMENSION, 128)))
    return sface_projected(sface_onnx, tmp_path_factory.mktemp("arcface"), columns.T)


def agent_state(tmp_path: Path, model_store: ModelStore, device: str) -> Path:
    """A state directory with its own copy of the default models (activation is per agent)."""
    state = tmp_path / device
    shutil.copytree(model_store.root, state / "models")
    return state


def agent_settings(harness: Harness, pki: Pki, device: str, **extra: Any) -> dict[str, Any]:
    if not pki.device(device).cert.exists():
        certs.issue_device(pki.tls_dir, device)
    return {
        "device_id": device,
        "mqtt": {"enabled": False},
        "service": {"status_interval_s": 1},
        "server": harness.agent_server_section(device, reconnect_max_s=1),
        **extra,
    }


@asynccontextmanager
async def running_agent(config: dict[str, Any], state: Path) -> AsyncIterator[AgentService]:
    service = await asyncio.to_thread(AgentService, AgentConfig.model_validate(config), state)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        yield service
    finally:
        service.stop_event.set()
        await asyncio.to_thread(runner.join, 30)


async def cli(harness: Harness, *args: str) -> int:
    """facefleet-server on the running server's state directory, as an operator on that host runs it."""
    state_dir = str(harness.server.paths.state_dir)
    return await asyncio.to_thread(server_main, ["--state-dir", state_dir, *args])


async def publish(harness: Harness, path: Path, task: str, model_id: str, precision: str = "FP32") -> None:
    name, _, version = model_id.partition("@")
    args = ("models", "publish", str(path), "--task", task, "--name", name, "--version", version)
    assert await cli(harness, *args, "--precision", precision) == 0


async def until_async(
    fetch: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 120.0, what: str = ""
) -> T:
    """Await fetch() until accept(value); the timeout only guards against a hung test."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s: {value}")
        await asyncio.sleep(0.05)


def all_in(devices: list[str], task: str, model_id: str, state: int) -> Callable[[Statuses], bool]:
    """Fleet status shows every device with model_id of task in state."""
    return lambda found: all(
        found.get(device, {}).get(task, ("", 0, ""))[:2] == (model_id, state) for device in devices
    )


Statuses = dict[str, dict[str, tuple[str, int, str]]]


async def statuses(harness: Harness) -> Statuses:
    """device → task → (model id, state, reason), as fleet status shows them."""
    reply = await harness.query().FleetStatus(query_pb2.FleetStatusRequest(), metadata=harness.query_md)
    return {
        agent.device_id: {s.task: (s.model_id, s.state, s.reason) for s in agent.model_statuses}
        for agent in reply.agents
    }


def running_expression(service: AgentService) -> str:
    model = service.analyzer.expression_model
    return model.manifest.model_id if model is not None else ""


def test_every_agent_activates_a_new_expression_version_and_refuses_a_tampered_one(
    tmp_path: Path, pki: Pki, enroller: Enroller, model_store: ModelStore, fer_tflite: Path
) -> None:
    devices = ["box-1", "box-2", "box-3"]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[str], list[str]]:
        async with (
            serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness,
            contextlib.AsyncExitStack() as stack,
        ):
            agents = [
                await stack.enter_async_context(
                    running_agent(agent_settings(harness, pki, d), agent_state(tmp_path, model_store, d))
                )
                for d in devices
            ]
            await until(lambda: set(devices) <= harness.server.fanout.watching(), what="three watchers")
            await publish(harness, fer_tflite, "expression", EXPRESSION_NEW)
            assert await cli(harness, "rollout", "start", EXPRESSION_NEW, "--all") == 0

            after_switch = await until_async(
                lambda: statuses(harness),
                all_in(devices, "expression", EXPRESSION_NEW, ACTIVE),
                what="every agent reporting the new version active",
            )
            switched = [running_expression(s) for s in agents]

            await publish(harness, fer_tflite, "expression", EXPRESSION_TAMPERED)
            binary = harness.server.paths.models / "expression" / "mini-xception" / "fer2013-tampered"
            data = bytearray((binary / "model.bin").read_bytes())
            data[len(data) // 2] ^= 0xFF
            (binary / "model.bin").write_bytes(bytes(data))
            assert await cli(harness, "rollout", "start", EXPRESSION_TAMPERED, "--all") == 0

            refused = await until_async(
                lambda: statuses(harness),
                all_in(devices, "expression", EXPRESSION_TAMPERED, FAILED),
                what="every agent refusing the tampered version",
            )
            kept = [running_expression(s) for s in agents]
            return after_switch, refused, switched, kept

    after_switch, refused, switched, kept = run(scenario)
    assert switched == [EXPRESSION_NEW] * 3
    assert kept == [EXPRESSION_NEW] * 3  # the tampered version never ran
    for device in devices:
        assert after_switch[device]["expression"][:2] == (EXPRESSION_NEW, ACTIVE)
        model_id, state, reason = refused[device]["expression"]
        assert (model_id, state) == (EXPRESSION_TAMPERED, FAILED)
        assert "DATA_LOSS" in reason or "sha256" in reason, reason


def face_events(harness: Harness) -> list[Any]:
    day = EventFilter(
        datetime.now(timezone.utc) - timedelta(hours=1), datetime.now(timezone.utc) + timedelta(hours=1)
    )
    return list(harness.server.state.list_events(day, None, 1000).events)


def decided_faces(events: list[Any]) -> list[Any]:
    """The face events of tracks that voted often enough to decide, from the first match on, oldest first.
    Before that match the agent's gallery may still be on its way ("unknown" is then right), and a visit the
    agent saw in fewer frames (a stall of this shared machine) ends undecided, which reports as "unknown"."""
    faces = sorted((e for e in events if e.kind == "face"), key=lambda e: e.time)
    first = next(i for i, e in enumerate(faces) if e.decision == "match")
    return [e for e in faces[first:] if voting_frames(e) >= TrackerSettings().min_votes]


def voting_frames(event: Any) -> int:
    """How many frames voted in the event's track (its reason reads "track <kind> after N frames")."""
    found = re.fullmatch(r"track \w+ after (\d+) frames", event.reason)
    assert found, event.reason
    return int(found.group(1))


@pytest.mark.parametrize(
    ("new_model", "dimension"),
    [(EMBEDDING_ROTATED, 128), (EMBEDDING_ARCFACE, ARCFACE_DIMENSION)],
    ids=["sface-rotated", "arcface-class-512"],
)
def test_identification_keeps_working_across_an_embedding_model_switch(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    model_store: ModelStore,
    astronaut: npt.NDArray[np.uint8],
    astronaut_jpeg: bytes,
    request: pytest.FixtureRequest,
    new_model: str,
    dimension: int,
) -> None:
    """The agent identifies the enrolled person with the old model, then (once the server re-embedded the
    gallery and the agent verified, compiled and switched) with the new one: a rotation of SFace's space,
    or a user's own model of an ArcFace-class shape (112×112 → 512)."""
    source = request.getfixturevalue(
        "sface_rotated_onnx" if new_model == EMBEDDING_ROTATED else "arcface_shaped_onnx"
    )
    blank = np.full_like(astronaut, 40)
    video = write_video(tmp_path / "door.avi", [astronaut] * 8 + [blank] * 14, fps=8)  # visits end
    state = agent_state(tmp_path, model_store, "door-1")

    async def scenario() -> tuple[list[Any], AgentService, int, int, dict[str, Any]]:
        async with (
            serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness,
            door_agent(harness, pki, state, video, astronaut_jpeg) as service,
        ):
            await publish(harness, source, "embedding", new_model, "FP16")
            starting = asyncio.ensure_future(cli(harness, "rollout", "start", new_model, "--all"))
            verifying = await until(
                lambda: frames_when(service, state, new_model, "verifying"),
                timeout=120,
                what="verification",
            )
            await until(lambda: service.model_id == new_model, timeout=120, what="the switch")
            switched_at = sum(service.frames_analysed.values())
            assert await starting == 0
            await until(
                lambda: any(
                    e.person_id == "eileen" and e.model_versions.get("embedding") == new_model
                    for e in face_events(harness)
                ),
                timeout=60,
                what="eileen recognised with the new model",
            )
            person = harness.server.state.get_person("eileen")
            by_model = {e.model_id: e.vector for e in person.embeddings}
            return face_events(harness), service, verifying, switched_at, by_model

    events, service, verifying, switched_at, by_model = run(scenario)
    assert by_model[new_model].shape == (dimension,)
    if dimension == by_model[EMBEDDING_OLD].shape[0]:
        across = float(by_model[EMBEDDING_OLD] @ by_model[new_model])
        assert abs(across) < 0.3  # the same face in the two models' spaces: a cross-model match is impossible
    assert service.model_mismatches == 0
    assert switched_at > verifying  # frames kept flowing on the old model while the new one was prepared
    faces = decided_faces(events)
    assert {e.model_versions["embedding"] for e in faces} == {EMBEDDING_OLD, new_model}
    assert all((e.decision, e.person_id) == ("match", "eileen") for e in faces), [
        (e.decision, e.person_id, e.model_versions.get("embedding"), e.reason) for e in faces
    ]
    with EmbeddingStore(state / "agent.db") as store:
        person_ids, matrix, _ = store.gallery.load_embeddings(new_model)
    assert list(person_ids) == ["eileen"] and matrix.shape[1] == dimension
    assert ModelStore(state / "models").active("embedding").manifest.model_id == new_model


@asynccontextmanager
async def door_agent(
    harness: Harness, pki: Pki, state: Path, video: Path, astronaut_jpeg: bytes
) -> AsyncIterator[AgentService]:
    """Eileen enrolled on the server, and door-1's agent running on the video (8 frames/s, looped) once it
    has recognised her with its first embedding model."""
    request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg])
    await harness.admin().EnrollPerson(request, metadata=harness.admin_md)
    camera = {"name": "door", "source": str(video), "max_fps": 8, "loop": True}
    config = agent_settings(harness, pki, "door-1", cameras=[camera])
    async with running_agent(config, state) as service:
        await until(
            lambda: any(e.person_id == "eileen" for e in face_events(harness)),
            timeout=120,
            what="eileen recognised with the first model",
        )
        yield service


def frames_when(service: AgentService, state: Path, model_id: str, wanted: str) -> int | None:
    """Frames analysed so far once the agent reports `wanted` for the embedding model_id (else None)."""
    path = state / "models" / STATUS_FILE
    try:
        status = json.loads(path.read_text())["statuses"]["embedding"]
    except (OSError, ValueError, KeyError):
        return None
    if (status["model_id"], status["state"]) != (model_id, wanted):
        return None
    return sum(service.frames_analysed.values()) or None


def agent_process(config: dict[str, Any], state: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    path = tmp_path / "agent.toml"
    path.write_text(toml(config))
    command = [
        str(AGENT_CLI),
        "--config",
        str(path),
        "--state-dir",
        str(state),
        "run",
    ]
    return subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def toml(config: dict[str, Any]) -> str:
    """The few shapes an agent config needs here: top-level scalars and one level of tables."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for table, values in config.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def test_an_agent_killed_during_a_switch_comes_back_on_a_working_version(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    model_store: ModelStore,
    sface_onnx: Path,
    astronaut_jpeg: bytes,
) -> None:
    state = agent_state(tmp_path, model_store, "door-9")
    status_file = state / "models" / STATUS_FILE

    def reported(wanted: str) -> bool:
        try:
            status = json.loads(status_file.read_text())["statuses"]["embedding"]
        except (OSError, ValueError, KeyError):
            return False
        return bool(status["model_id"] == EMBEDDING_NEW and status["state"] == wanted)

    def partial_download() -> bool:
        return any(p.stat().st_size > 0 for p in (state / "models" / ".downloads").glob("*.part"))

    async def scenario() -> tuple[list[str], dict[str, Any]]:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness:
            request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg])
            await harness.admin().EnrollPerson(request, metadata=harness.admin_md)
            config = agent_settings(harness, pki, "door-9")
            seen: list[str] = []

            def watching() -> bool:
                return "door-9" in harness.server.fanout.watching()

            process = agent_process(config, state, tmp_path)
            try:
                # a process start (imports, model compilation) can take long on a loaded 2-core machine
                await until(watching, timeout=120, what="the agent watching")
                await publish(harness, sface_onnx, "embedding", EMBEDDING_NEW)
                assert await cli(harness, "rollout", "start", EMBEDDING_NEW, "--all") == 0
                for moment in (partial_download, lambda: reported("verifying")):
                    await until(moment, timeout=120, what="the moment to kill the agent")
                    process.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(process.wait, 30)
                    await until(lambda: not watching(), timeout=60, what="the killed agent's stream gone")
                    process = agent_process(config, state, tmp_path)
                    await until(watching, timeout=120, what="the restarted agent watching")
                    agent = harness.server.state.get_agent("door-9")
                    assert agent is not None
                    seen.append(agent.model_versions["embedding"])
                found = await until_async(
                    lambda: statuses(harness),
                    all_in(["door-9"], "embedding", EMBEDDING_NEW, ACTIVE),
                    what="the new embedding model active after the kills",
                )
                return seen, found
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(process.wait, 30)
                except subprocess.TimeoutExpired:
                    process.kill()  # never leave an agent running past the test
                    await asyncio.to_thread(process.wait, 10)
                    raise

    seen, found = run(scenario)
    assert all(version in (EMBEDDING_OLD, EMBEDDING_NEW) for version in seen)
    assert found["door-9"]["embedding"][:2] == (EMBEDDING_NEW, ACTIVE)
    store = ModelStore(state / "models")
    assert store.active("embedding").manifest.model_id == EMBEDDING_NEW
    for model in store.models():
        assert store.verify_files(model) == []  # nothing half-written in the store
    assert not (state / "models" / ".staging").exists() or not any((state / "models" / ".staging").iterdir())
    with EmbeddingStore(state / "agent.db") as db:
        assert [p.person_id for p in db.gallery.people()] == ["eileen"]
        assert list(db.gallery.load_embeddings(EMBEDDING_NEW)[0]) == ["eileen"]
    verify = subprocess.run(
        [
            str(Path(sys.executable).with_name("facefleet-agent")),
            "--state-dir",
            str(state),
            "models",
            "verify",
        ],
        capture_output=True,
        env={**os.environ},
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_people_enrolled_before_the_server_noticed_an_embedding_rollout_get_the_new_model(
    tmp_path: Path, pki: Pki, enroller: Enroller, sface_onnx: Path, astronaut_jpeg: bytes
) -> None:
    """The rollout command sweeps twice; whoever a slow server enrolled with the old models alone after
    that is embedded by the server itself once its enroller follows the rollout."""

    async def scenario() -> tuple[list[str], list[str]]:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness:
            request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg])
            await harness.admin().EnrollPerson(request, metadata=harness.admin_md)
            await publish(harness, sface_onnx, "embedding", EMBEDDING_NEW)
            state = harness.server.state
            before = state.models.people_without_model(EMBEDDING_NEW)
            # a rollout in preparation whose sweeps missed eileen (as if she was enrolled in between)
            state.models.add_rollout(EMBEDDING_NEW, Target("all"), "preparing", utc_now())
            await until(
                lambda: not state.models.people_without_model(EMBEDDING_NEW),
                timeout=60,
                what="the server embedding eileen with the new model",
            )
            person = state.get_person("eileen")
            return before, [e.model_id for e in person.embeddings]

    before, models = run(scenario)
    assert before == ["eileen"]
    assert sorted(set(models)) == [EMBEDDING_OLD, EMBEDDING_NEW]
