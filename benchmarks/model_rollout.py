"""Model rollout benchmark: how long a new model version takes to reach the whole fleet, and whether an agent
stops recognising while it switches. Prints one JSON document; every figure is measured in this run, each
next to a baseline from the same run:

- fleet: `facefleet-server rollout start MODEL --all` until fleet status (QueryService.FleetStatus) shows
  all 50 simulated agents with the version active, vs the same rollout to a single agent; per agent,
  median/p95/max from the start to its own active report; how long `rollout start` and `models publish`
  take; then `rollout rollback` until every agent reports the previous version active again. Two versions:
  the expression model at FP32 (0.14 MB) and SFace at FP32 (39 MB, an embedding model: the server re-embeds
  its gallery, here one person, before any agent hears of it). The issue sets no target for these.
- agent: the real agent service analysing frames back to back from a looping video of the bundled astronaut
  photo (one person enrolled), through a rollout of each version and its rollback: the longest gap between
  two analysed frames from the command until the agent reports the version active, vs the longest gap in a
  window of the same length just before; frames/s in both. Target: no downtime, i.e. frames keep being
  processed on the old model until the new one is ready; counted as met when the longest gap stays under
  0.5 s (a face passing a door is in view for longer), and the gap at the switch frame is reported too.
  Last, SFace's INT8 variant quantized by the server (`models quantize --in-place`, on the bundled photos) and
  rolled out to run in the float model's place: the agent measures it in its child and switches to what wins
  (`runs_at`, `agent_reason`); then its rollback, which withdraws it.

The server is a real `facefleet-server serve` process (mutual TLS, SQLite in a temporary state directory,
[fleet] poll_seconds = 0.2) driven by its real CLI. The simulated agents are asyncio clients in this process,
one mTLS channel each, speaking the agent's protocol: Register, Watch, and for each assigned release that
differs from what they run, DownloadModel (1 MiB chunks, size and sha256 checked in memory, nothing written to
disk), ReportModelStatus downloading / verifying / active; an embedding release re-watches with both models
for the new gallery first, as the agent does. They do not compile or smoke-test the model (no OpenVINO):
that cost is in the agent figures. All of them share one Python process (one core for their TLS and sha256)
and this machine with the server, which 50 separate boxes would not.

The real agent is facefleet.agent.service.loop.AgentService (what `facefleet-agent run` runs; MQTT off) on a
thread of this process, connected to the server over mutual TLS; each analysed frame is timestamped as the
service counts it. Server, CLI and agent share this machine's cores, unlike a real site: the CPU the server
and the CLI used during each switch is reported alongside, and the window from the agent's first status
(downloading or verifying) to active shows what the edge box alone goes through.

Usage: .venv/bin/python benchmarks/model_rollout.py [--quick] [--agents N]  (--quick: 10 agents, shorter
windows)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import hashlib
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
from fleet_server import ServerProcess, new_state, progress

from facefleet.agent.config import AgentConfig
from facefleet.agent.service.loop import AgentService
from facefleet.agent.updates.statuses import STATUS_FILE
from facefleet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    models_pb2,
    query_pb2,
    query_pb2_grpc,
)
from facefleet.vision.images import read_image
from facefleet.vision.models.importer import DEFAULT_MODELS, import_defaults, locate_default
from facefleet.vision.models.store import ModelStore
from facefleet.vision.photos import sample_photo
from facefleet.vision.runtime import Runtime

SERVER_CLI = str(Path(sys.executable).with_name("facefleet-server"))
EXPRESSION = ("expression", "mini-xception@fer2013", "mini-xception@fer2013-fp32")
EMBEDDING = ("embedding", "sface@2021dec", "sface@2021dec-fp32")
IN_PLACE = "sface@2021dec-int8"
"""SFace's INT8 variant built by the server (`models quantize --in-place`) to run in the float model's
place."""
ANALYZER_TASKS = ("detection", "embedding", "expression")
DOWNLOADING, VERIFYING, ACTIVE = (
    models_pb2.MODEL_ACTIVATION_DOWNLOADING,
    models_pb2.MODEL_ACTIVATION_VERIFYING,
    models_pb2.MODEL_ACTIVATION_ACTIVE,
)
POLL_SECONDS = 0.2


# -- set-up ------------------------------------------------------------------------------------------


def prepare(root: Path, devices: Sequence[str]) -> dict[str, Any]:
    """PKI, tokens and the default models in a fresh server state directory; the default versions' files
    (which every agent starts with) by model id."""
    state_dir, state, metadata = new_state(root, devices)
    stored = {m.model_id: {f.name: f.sha256 for f in m.files} for m in state.models.list_models()}
    running = {m.task: m.model_id for m in state.models.list_models()}
    state.close()
    return {"state_dir": state_dir, **metadata, "stored": stored, "running": running}


def server_cli(setup: dict[str, Any], *args: str) -> tuple[float, Any]:
    """`facefleet-server ARGS --json` on the running server's state directory: (wall seconds, its output)."""
    command = [SERVER_CLI, "--config", str(setup["config"]), "--state-dir", str(setup["state_dir"])]
    start = time.perf_counter()
    done = subprocess.run([*command, *args, "--json"], capture_output=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"facefleet-server {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return seconds, json.loads(done.stdout)


def publish(setup: dict[str, Any], task: str, model_id: str, default_index: int) -> dict[str, Any]:
    located = locate_default(DEFAULT_MODELS[default_index])
    if located is None:
        raise RuntimeError(f"{DEFAULT_MODELS[default_index].package} is not installed; run scripts/setup")
    name, _, version = model_id.partition("@")
    seconds, model = server_cli(
        setup, "models", "publish", str(located[0]), "--task", task, "--name", name, "--version", version,
        "--precision", "FP32",
    )  # fmt: skip
    return {"model": model_id, "size_mb": round(model["size"] / 1e6, 2), "publish_s": round(seconds, 2)}


def spread(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[round(0.95 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
    }


# -- simulated agents --------------------------------------------------------------------------------


class SimulatedAgent:
    """One agent's side of the model protocol on its own mTLS channel (see the module docstring).
    times[(model_id, rollout_id)]: perf_counter moments the release was "assigned" and became "active"."""

    def __init__(self, server: ServerProcess, device: str, setup: dict[str, Any]) -> None:
        self.device = device
        self.channel = server.agent_channel(device)
        self.stub = fleet_pb2_grpc.FleetServiceStub(self.channel)
        self.stored: dict[str, dict[str, str]] = {k: dict(v) for k, v in setup["stored"].items()}
        self.running: dict[str, str] = dict(setup["running"])
        self.watched: tuple[str, ...] = (self.running["embedding"],)
        self.statuses: dict[str, models_pb2.ModelStatus] = {}
        self.assignment = models_pb2.ModelAssignment()
        self.assigned, self.gallery = asyncio.Event(), asyncio.Event()
        self.times: dict[tuple[str, int], dict[str, float]] = {}
        self.downloaded = 0
        self._watch: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self._session()
        while True:
            await self._until(self.assigned)
            self.assigned.clear()
            for release in self.assignment.releases:
                if release.task in ANALYZER_TASKS and self.running.get(release.task) != release.model_id:
                    await self._apply(release)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.channel.close()

    async def _session(self) -> None:
        """Register, then watch from revision 0: a snapshot of the watched models, then assignments."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        self.gallery.clear()
        await self.stub.Register(
            fleet_pb2.RegisterRequest(
                device_id=self.device,
                agent_version="simulated",
                model_versions=self.running,
                capabilities=["openvino:CPU", "expression"],
                hostname="bench",
                model_statuses=[self.statuses[t] for t in sorted(self.statuses)],
            )
        )
        request = fleet_pb2.WatchRequest(device_id=self.device, embedding_models=self.watched)
        self._watch = asyncio.create_task(self._read(request))
        await self._until(self.gallery)

    async def _read(self, request: fleet_pb2.WatchRequest) -> None:
        async for message in self.stub.Watch(request):
            kind = message.WhichOneof("update")
            if kind == "gallery" and not message.gallery.more_parts:
                ack = fleet_pb2.AckGalleryRequest(
                    device_id=self.device, gallery_revision=message.gallery.to_revision
                )
                await self.stub.AckGallery(ack)
                self.gallery.set()
            elif kind == "models":
                now = time.perf_counter()
                for release in message.models.releases:
                    self.times.setdefault((release.model_id, release.rollout_id), {"assigned": now})
                self.assignment = message.models
                self.assigned.set()

    async def _until(self, event: asyncio.Event) -> None:
        """The event, unless the watch stream fails or ends first."""
        waiter = asyncio.ensure_future(event.wait())
        assert self._watch is not None
        try:
            done, _ = await asyncio.wait({waiter, self._watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if waiter not in done:
            self._watch.result()
            raise RuntimeError(f"{self.device}: the server ended the watch stream")

    async def _apply(self, release: models_pb2.ModelRelease) -> None:
        wanted = {f.name: f.sha256 for f in release.files}
        if wanted and self.stored.get(release.model_id) != wanted:
            await self._report(release, DOWNLOADING)
            for spec in release.files:
                await self._download(release.model_id, spec)
            self.stored[release.model_id] = wanted
        elif release.model_id not in self.stored:
            raise RuntimeError(f"{self.device}: {release.model_id} is not stored and came without files")
        await self._report(release, VERIFYING)
        if release.task == "embedding":  # the new model's gallery first, like facefleet.agent.updates.updater
            self.watched = (self.running["embedding"], release.model_id)
            await self._session()
        self.running[release.task] = release.model_id
        await self._report(release, ACTIVE)
        self.times[(release.model_id, release.rollout_id)]["active"] = time.perf_counter()
        if release.task == "embedding":
            self.watched = (release.model_id,)
            await self._session()

    async def _download(self, model_id: str, spec: models_pb2.ModelFile) -> None:
        request = fleet_pb2.DownloadModelRequest(device_id=self.device, model_id=model_id, file=spec.name)
        digest, size = hashlib.sha256(), 0
        async for chunk in self.stub.DownloadModel(request):
            if chunk.offset != size:
                raise RuntimeError(
                    f"{self.device}: {model_id} {spec.name}: chunk at {chunk.offset}, not {size}"
                )
            digest.update(chunk.data)
            size += len(chunk.data)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise RuntimeError(
                f"{self.device}: {model_id} {spec.name}: size or sha256 differs from the release"
            )
        self.downloaded += size

    async def _report(self, release: models_pb2.ModelRelease, state: models_pb2.ModelActivation) -> None:
        status = models_pb2.ModelStatus(
            task=release.task, model_id=release.model_id, rollout_id=release.rollout_id, state=state
        )
        status.time.GetCurrentTime()
        self.statuses[release.task] = status
        request = fleet_pb2.ReportModelStatusRequest(
            device_id=self.device,
            statuses=[self.statuses[t] for t in sorted(self.statuses)],
            model_versions=self.running,
        )
        await self.stub.ReportModelStatus(request)


# -- part 1: publish → the whole fleet ---------------------------------------------------------------


async def until_fleet(
    query: query_pb2_grpc.QueryServiceStub,
    setup: dict[str, Any],
    devices: Sequence[str],
    want: tuple[str, str, int],
    runners: Sequence[asyncio.Task[None]],
) -> float:
    """perf_counter when fleet status first shows every device with (task, model_id, rollout_id) active."""
    task, model_id, rollout_id = want
    deadline = time.monotonic() + 300
    while True:
        reply = await query.FleetStatus(
            query_pb2.FleetStatusRequest(device_ids=devices), metadata=setup["query_md"]
        )
        now = time.perf_counter()
        done = {
            a.device_id
            for a in reply.agents
            for s in a.model_statuses
            if (s.task, s.model_id, s.rollout_id, s.state) == (task, model_id, rollout_id, ACTIVE)
        }
        if done >= set(devices):
            return now
        for runner in runners:
            if runner.done():
                runner.result()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(done)} of {len(devices)} agents run {model_id} after 300 s")
        await asyncio.sleep(0.05)


async def rollout_round(
    server: ServerProcess, setup: dict[str, Any], devices: Sequence[str], model: tuple[str, str, str]
) -> dict[str, Any]:
    """`rollout start NEW --all` to these simulated agents until all run it, then `rollout rollback`."""
    task, old, new = model
    agents = [SimulatedAgent(server, d, setup) for d in devices]
    runners = [asyncio.create_task(a.run()) for a in agents]
    operator = server.operator_channel()
    query = query_pb2_grpc.QueryServiceStub(operator)
    try:
        ready = asyncio.gather(*(a.gallery.wait() for a in agents))
        await asyncio.wait_for(ready, 120)
        await asyncio.sleep(0.5)  # leftovers of earlier rounds (a rolled-back version) settle
        figures: dict[str, Any] = {"agents": len(devices)}
        for phase, verb in (("rollout", "start"), ("rollback", "rollback")):
            downloaded = sum(a.downloaded for a in agents)
            start = time.perf_counter()
            if verb == "start":
                command_s, started = await asyncio.to_thread(
                    server_cli, setup, "rollout", "start", new, "--all"
                )
                rollout_id, want = started["rollout_id"], (task, new, started["rollout_id"])
            else:
                command_s, _ = await asyncio.to_thread(
                    server_cli, setup, "rollout", "rollback", str(rollout_id)
                )
                want = (task, old, 0)
            seen_all = await until_fleet(query, setup, devices, want, runners)
            while not all("active" in a.times.get(want[1:], {}) for a in agents):
                await asyncio.sleep(0.01)  # the server committed the report before its reply arrived
            times = [a.times[want[1:]] for a in agents]
            figures[phase] = {
                "model": want[1],
                "command_s": round(command_s, 2),
                "fleet_status_all_active_s": round(seen_all - start, 3),
                "per_agent_assignment_received_s": spread(t["assigned"] - start for t in times),
                "per_agent_active_s": spread(t["active"] - start for t in times),
                "per_agent_assignment_to_active_s": spread(t["active"] - t["assigned"] for t in times),
                "downloaded_mb": round((sum(a.downloaded for a in agents) - downloaded) / 1e6, 1),
            }
        return figures
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        for agent in agents:
            await agent.close()
        await operator.close()


def versus(fleet: dict[str, Any], single: dict[str, Any]) -> dict[str, Any]:
    """Fleet / single agent: until fleet status shows all active (CLI start-up included), and the slowest
    agent from its assignment to its active report (the distribution itself)."""
    return {
        phase: {
            "all_active": round(
                fleet[phase]["fleet_status_all_active_s"] / single[phase]["fleet_status_all_active_s"], 2
            ),
            "slowest_assignment_to_active": round(
                fleet[phase]["per_agent_assignment_to_active_s"]["max"]
                / single[phase]["per_agent_assignment_to_active_s"]["max"],
                1,
            ),
        }
        for phase in ("rollout", "rollback")
    }


async def fleet_rollouts(server: ServerProcess, setup: dict[str, Any], size: int) -> dict[str, Any]:
    operator = server.operator_channel()
    jpeg = cv2.imencode(".jpg", read_image(sample_photo("astronaut")))[1].tobytes()
    request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[jpeg])
    await admin_pb2_grpc.AdminServiceStub(operator).EnrollPerson(request, metadata=setup["admin_md"])
    await operator.close()
    fleet = [f"sim-{i:03d}" for i in range(size)]
    results = {}
    for model in (EXPRESSION, EMBEDDING):
        progress(f"{model[2]}: rollout and rollback, 1 agent")
        single = await rollout_round(server, setup, ["solo"], model)
        progress(f"{model[2]}: rollout and rollback, {size} agents")
        many = await rollout_round(server, setup, fleet, model)
        results[model[0]] = {
            f"fleet_of_{size}": many,
            "single_agent_baseline": single,
            "fleet_vs_single_agent": versus(many, single),
        }
    gc.collect()  # the closed channels' last events reach this loop before it closes
    await asyncio.sleep(0.5)
    return results


# -- part 2: recognition during a switch on a real agent ---------------------------------------------


class FrameLog(dict[str, int]):
    """Stands in for AgentService.frames_analysed: also notes when each frame is counted (just before it is
    analysed) and the analyzer that analyses it."""

    def __init__(self, service: AgentService) -> None:
        super().__init__(service.frames_analysed)
        self.service = service
        self.frames: list[tuple[float, Any]] = []

    def __setitem__(self, camera: str, count: int) -> None:
        self.frames.append((time.time(), self.service.analyzer))
        super().__setitem__(camera, count)


def window(times: Sequence[float], start: float, end: float) -> dict[str, float]:
    """Frames counted in [start, end]: how many, per second, and the longest time without one."""
    inside = [t for t in times if start <= t <= end]
    points = [start, *inside, end]
    gaps = [b - a for a, b in itertools.pairwise(points)]
    return {
        "window_s": round(end - start, 2),
        "frames": len(inside),
        "frames_per_s": round(len(inside) / (end - start), 1) if end > start else 0.0,
        "median_gap_ms": round(statistics.median(gaps) * 1000, 1),
        "longest_gap_ms": round(max(gaps) * 1000, 1),
    }


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def model_of(analyzer: Any, task: str) -> str:
    model = analyzer.embedding_model if task == "embedding" else analyzer.expression_model
    return str(model.manifest.model_id) if model is not None else ""


class Switch:
    """One rollout (or rollback) to the running agent: `facefleet-server ARGS` while following the agent's
    status of `target` in updates.json until it is active or failed."""

    def __init__(self, setup: dict[str, Any], status_file: Path, task: str, target: str) -> None:
        self.setup, self.status_file, self.task, self.target = setup, status_file, task, target
        self.seen: dict[str, float] = {}  # state → unix time the agent recorded it
        self.reason = ""

    def run(self, *args: str) -> tuple[float, Any]:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            command = pool.submit(server_cli, self.setup, *args)
            deadline = time.monotonic() + 300
            while not {"active", "failed"} & self.seen.keys():
                self._look()
                if command.done() and command.exception() is not None:
                    command.result()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the agent did not activate {self.target} within 300 s")
                time.sleep(0.01)
            return command.result()

    def _look(self) -> None:
        try:
            status = json.loads(self.status_file.read_text())["statuses"][self.task]
        except (OSError, ValueError, KeyError):
            return
        if status.get("model_id") == self.target:
            self.seen.setdefault(status["state"], status["at"])
            self.reason = status.get("reason", "")


def agent_switch(
    server: ServerProcess, log: FrameLog, switch: Switch, args: Sequence[str], since: float, after_s: float
) -> dict[str, Any]:
    """Frames before, during and after one switch of the running agent, and the agent's phases. since: the
    earliest moment of the baseline window (after the previous switch settled)."""
    assert server.process is not None
    server_cpu, cli_cpu = cpu_seconds(server.process.pid), children_cpu()
    start = time.time()
    command_s, output = switch.run(*args)
    seen = switch.seen
    end = seen.get("active", seen.get("failed", 0.0))
    server_cpu, cli_cpu = cpu_seconds(server.process.pid) - server_cpu, children_cpu() - cli_cpu
    time.sleep(after_s)
    frames = [f for f in log.frames if f[0] >= since]
    times = [t for t, _ in frames]
    during = window(times, start, end)
    before = window(times, max(since, 2 * start - end), start)
    first_status = min(seen.values())
    result: dict[str, Any] = {
        "model": switch.target,
        "outcome": "active" if "active" in seen else f"refused: {switch.reason}",
        "command_s": round(command_s, 2),
        "command_to_active_on_agent_s": round(end - start, 2),
        "command_to_first_agent_status_s": round(first_status - start, 2),
        "agent_statuses_s": {
            state: round(at - first_status, 3) for state, at in sorted(seen.items(), key=lambda x: x[1])
        },
        "during": during,
        "before_baseline": before,
        "longest_gap_vs_baseline": round(during["longest_gap_ms"] / before["longest_gap_ms"], 2),
        "frames_per_s_vs_baseline": round(during["frames_per_s"] / before["frames_per_s"], 2),
        # from the agent's first status on: what an edge box sees while the server and the CLI run elsewhere
        "agent_side_only": window(times, first_status, end),
        "co_located_cpu_s": {"server": round(server_cpu, 2), "cli": round(cli_cpu, 2)},
    }
    switched = [
        i for i, (t, a) in enumerate(frames) if t >= start and model_of(a, switch.task) == switch.target
    ]
    if switched:
        first = switched[0]
        result["switch_frame_gap_ms"] = round((frames[first][0] - frames[first - 1][0]) * 1000, 1)
        result["frames_on_previous_model_after_command"] = sum(1 for t in times[:first] if t >= start)
    result["after"] = window(times, end, end + after_s)
    result["_end"], result["_rollout_id"] = end, output.get("rollout_id", 0)
    return result


def photos(root: Path) -> Path:
    """A folder of the bundled photos (14 faces with their mirror images) to quantize on."""
    folder = root / "photos"
    folder.mkdir(exist_ok=True)
    for name in ("astronaut", "t1"):
        source = sample_photo(name)
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


def write_video(path: Path, frame: np.ndarray, count: int, fps: float) -> Path:
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    for _ in range(count):
        writer.write(frame)
    writer.release()
    return path


def agent_switches(server: ServerProcess, setup: dict[str, Any], root: Path, quick: bool) -> dict[str, Any]:
    state = root / "edge-1"
    import_defaults(Runtime(), ModelStore(state / "models"))
    video = write_video(root / "astronaut.avi", read_image(sample_photo("astronaut")), 30, 30)
    devices = setup["state_dir"] / "tls" / "devices"
    config = AgentConfig.model_validate(
        {
            "device_id": "edge-1",
            "mqtt": {"enabled": False},
            "service": {"status_interval_s": 1},
            "server": {
                "enabled": True,
                "address": f"localhost:{server.agents}",
                "ca_file": str(setup["state_dir"] / "tls" / "ca.pem"),
                "cert_file": str(devices / "edge-1.pem"),
                "key_file": str(devices / "edge-1.key"),
                "reconnect_max_s": 1,
            },
            "cameras": [{"name": "door", "source": str(video), "max_fps": 100, "loop": True}],
        }
    )
    service = AgentService(config, state)
    log = FrameLog(service)
    service.frames_analysed = log
    runner = threading.Thread(target=service.run, name="agent", daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while service.sync is None or not service.sync.connected or len(log.frames) < 10:
            if time.monotonic() > deadline or not runner.is_alive():
                raise RuntimeError(f"the agent did not start: {service.errors}")
            time.sleep(0.05)
        since = time.time() + 3.0  # warm-up: the first frames and the first gallery
        results: dict[str, Any] = {}
        after_s, rollback_s = (3.0, 5.0) if quick else (5.0, 8.0)
        status_file = state / "models" / STATUS_FILE

        def there_and_back(task: str, old: str, new: str, baseline_s: float) -> dict[str, Any]:
            nonlocal since
            time.sleep(max(0.0, since + baseline_s - time.time()))
            progress(f"{new}: rollout and rollback on the real agent")
            switch = Switch(setup, status_file, task, new)
            rollout = agent_switch(server, log, switch, ("rollout", "start", new, "--all"), since, after_s)
            rollout["agent_reason"] = switch.reason
            rollout["runs_at"] = service.analyzer.runs_at()[task]
            since = rollout.pop("_end") + 1.0
            time.sleep(max(0.0, since + rollback_s - time.time()))
            args = ("rollout", "rollback", str(rollout.pop("_rollout_id")))
            rollback = agent_switch(server, log, Switch(setup, status_file, task, old), args, since, after_s)
            rollback["runs_at"] = service.analyzer.runs_at()[task]
            since = rollback.pop("_end") + 1.0
            rollback.pop("_rollout_id")
            return {"rollout": rollout, "rollback": rollback}

        results["expression"] = there_and_back(*EXPRESSION, 6.0 if quick else 10.0)
        results["embedding"] = there_and_back(*EMBEDDING, 12.0 if quick else 20.0)
        progress(f"{IN_PLACE}: quantized on the server, to run in {EMBEDDING[1]}'s place")
        quantize = ("models", "quantize", EMBEDDING[1], "--photos", str(photos(root)), "--in-place")
        quantize_s, _ = server_cli(setup, *quantize)
        since = time.time() + 1.0  # the baseline window starts after the quantization's load
        results["embedding_int8_in_place"] = there_and_back(
            "embedding", EMBEDDING[1], IN_PLACE, 12.0 if quick else 20.0
        )
        results["embedding_int8_in_place"]["rollout"]["server_quantize_s"] = round(quantize_s, 2)
        return results
    finally:
        service.stop_event.set()
        runner.join(30)


# -- main --------------------------------------------------------------------------------------------


def measure(root: Path, size: int, quick: bool) -> dict[str, Any]:
    setup = prepare(root, [*(f"sim-{i:03d}" for i in range(size)), "solo", "edge-1"])
    with ServerProcess(root, setup["state_dir"], poll_seconds=POLL_SECONDS) as server:
        setup["config"] = server.config
        progress("publishing the new versions")
        published = {
            "expression": publish(setup, EXPRESSION[0], EXPRESSION[2], 2),
            "embedding": publish(setup, EMBEDDING[0], EMBEDDING[2], 1),
        }
        fleet = asyncio.run(fleet_rollouts(server, setup, size))
        agent = agent_switches(server, setup, root, quick)
    for task, figures in fleet.items():
        rollout = figures[f"fleet_of_{size}"]["rollout"]
        figures["publish_plus_rollout_to_fleet_active_s"] = round(
            published[task]["publish_s"] + rollout["fleet_status_all_active_s"], 2
        )
    return {"published": published, "fleet_rollout": fleet, "agent_switch": agent}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 simulated agents and shorter windows")
    parser.add_argument("--agents", type=int, default=None, help="simulated agents (default 50)")
    args = parser.parse_args()
    size = args.agents or (10 if args.quick else 50)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as tmp:
        figures = measure(Path(tmp), size, args.quick)
    gaps = {
        f"{task}_{phase}": switch["during"]["longest_gap_ms"]
        for task, switches in figures["agent_switch"].items()
        for phase, switch in switches.items()
    }
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": round(load, 2),
            "python": platform.python_version(),
            "grpc": grpc.__version__,
        },
        "simulated_agents": size,
        "server_poll_seconds": POLL_SECONDS,
        **figures,
        "targets": {f"agent_{name}_longest_frame_gap_under_500ms": gap < 500 for name, gap in gaps.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
