"""Agent service benchmark: the real `facefleet-agent run` process on videos made of the bundled photos,
with a real mosquitto. Prints JSON: analysed frames/s and frame-to-event latency with 1 and 6 faces, the
process's CPU, peak RSS and the peaks of its anonymous and file-backed pages (MemoryPeaks), the frame path
the agent chose (sequential or pipelined, with the frames/s it measured for each), and events/s through the
durable outbox against plain QoS 1 publishing.

The videos run at 60 frames/s (camera_fps): one face for 1 s then 1 s without faces; six faces for 1.5 s
then 0.4 s without faces (at 30 analysed frames/s or more, at least 12 frames without a face, which ends the
tracks: they end after 10 missed frames). Frame rates come from two scrapes of the agent's metrics endpoint,
timed by their answers: camera_fps_read (what the camera delivered), analysed_fps (every frame analysed,
those without faces too; it cannot exceed camera_fps_read, so when the two are close the camera, not the
agent, set the rate), and analysed_fps_on_face_frames: the frames analysed that had faces (one embedding
request each) per second of the video's stretches with faces, the agent's rate on six-face frames alone.

The models are installed as on a site: `facefleet-agent models import-defaults`, which also builds SFace's
INT8 variant. The one-face run is the agent's first start: with no precision measured yet, it measures its
models in a child process before it analyses a frame (first_start: how long until it was online, the
measuring child's peak RSS, and the agent's own peak RSS, which the child's does not add to). The six-face
run starts with those choices cached. Each run is measured after the agent has chosen its frame path
(pipeline = "auto").

Usage: .venv/bin/python benchmarks/agent_service.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facefleet.agent.domain.records import Embedding, Person, PersonUpsert
from facefleet.agent.publish.mqtt import MqttLink, MqttSettings
from facefleet.agent.publish.outbox import OutboxPublisher
from facefleet.agent.store.database import EmbeddingStore
from facefleet.vision.images import read_image
from facefleet.vision.models.store import ModelStore
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime
from tests.agent.conftest import Subscriber
from tests.mosquitto import Mosquitto
from tests.videos import write_video

AGENT = str(Path(sys.executable).with_name("facefleet-agent"))
CAMERA_FPS = 60


def status_kb(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status (VmHWM, VmRSS, RssAnon, RssFile, RssShmem), in KiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            figures[key] = int(value.split()[0])
    return figures


class MemoryPeaks:
    """The agent's resident memory by kind, polled every 50 ms until stopped: the peak of its anonymous
    pages (RssAnon: its own memory: the Python heap, the compiled models and their buffers) and of its
    file-backed pages (RssFile: the libraries and model files it maps, shared and given back under memory
    pressure; how many of a file's pages a mapping holds is the kernel's choice: kernels that map files in
    large folios count more of each library than those that map 4 KiB pages)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.anon_kb = self.file_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop polling; the peaks in MB."""
        self._stop.set()
        self._thread.join()
        return {
            "peak_anonymous_mb": round(self.anon_kb / 1024, 1),
            "peak_file_backed_mb": round(self.file_kb / 1024, 1),
        }

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            try:
                figures = status_kb(self.pid)
            except OSError:
                return  # the agent has ended
            self.anon_kb = max(self.anon_kb, figures.get("RssAnon", 0))
            self.file_kb = max(self.file_kb, figures.get("RssFile", 0) + figures.get("RssShmem", 0))


def process_figures(pid: int, started: float, cpu_start: float) -> dict[str, float]:
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    ticks = (int(stat[13]) + int(stat[14])) / 100.0
    return {
        "cpu_cores_used": round((ticks - cpu_start) / (time.monotonic() - started), 2),
        "peak_rss_mb": round(status_kb(pid)["VmHWM"] / 1024, 1),
    }


class MeasuringChildPeak:
    """The peak RSS (VmHWM) of the child process the agent measures its models' precisions in (a
    multiprocessing spawn child), polled every 20 ms until stopped; 0 when there was none."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop polling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return round(self.peak_kb / 1024, 1)

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != self.pid:
                        continue
                    if b"spawn_main" not in (stat.parent / "cmdline").read_bytes():
                        continue  # another child (a tool run by a library), not the measuring one
                    status = (stat.parent / "status").read_text()
                except (OSError, ValueError, IndexError):
                    continue  # gone meanwhile
                peak = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")]
                self.peak_kb = max([self.peak_kb, *peak])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Counts:
    """The agent's counters at one scrape of its metrics endpoint: frames read from the camera, frames
    analysed, frames analysed that had faces (one embedding request each: a frame's faces go in one batch),
    and when the scrape was answered (time.monotonic())."""

    at: float
    read: float
    analysed: float
    with_faces: float

    @classmethod
    def scrape(cls, metrics_port: int) -> Counts:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        at = time.monotonic()
        figures: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("facefleet_agent_inference_seconds_count{") and 'task="embedding"' in name:
                figures["with_faces"] = figures.get("with_faces", 0.0) + float(value)
            for counter in ("read", "analysed"):
                if name.startswith(f"facefleet_agent_frames_{counter}_total{{"):
                    figures[counter] = figures.get(counter, 0.0) + float(value)
        return cls(at, figures.get("read", 0.0), figures.get("analysed", 0.0), figures.get("with_faces", 0.0))


def frame_rates(before: Counts, after: Counts, face_share: float) -> dict[str, float]:
    """Frames/s between two scrapes: read from the camera, analysed, and analysed with faces per second of
    the stretches of the video that show faces (face_share: their share of its frames)."""
    elapsed = after.at - before.at
    with_faces = after.with_faces - before.with_faces
    return {
        "camera_fps_read": round((after.read - before.read) / elapsed, 1),
        "analysed_fps": round((after.analysed - before.analysed) / elapsed, 1),
        "analysed_fps_on_face_frames": round(with_faces / (elapsed * face_share), 1),
    }


def run_service(
    root: Path, state: Path, port: int, video: Path, face_share: float, seconds: float
) -> dict[str, Any]:
    config = root / f"{video.stem}.toml"
    metrics_port = free_port()
    config.write_text(
        f'device_id = "bench"\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n[service]\nstatus_interval_s = 1\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        f'[[cameras]]\nname = "cam"\nsource = "{video}"\nloop = true\n'
    )
    watcher = Subscriber(port, "facefleet/bench/#", client_id=f"bench-{video.stem}")
    process = subprocess.Popen(
        [AGENT, "--config", str(config), "--state-dir", str(state), "run"], stderr=subprocess.DEVNULL
    )
    children = MeasuringChildPeak(process.pid)
    memory = MemoryPeaks(process.pid)
    launched = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while not [s for s in watcher.on("facefleet/bench/status") if s.get("state") == "online"]:
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not come online")
            time.sleep(0.05)
        online_after = round(time.monotonic() - launched, 1)
        start_up = {"online_after_s": online_after, "measuring_child_peak_rss_mb": children.stop()}
        while True:  # warm-up: until the agent has chosen its frame path
            path = watcher.on("facefleet/bench/status")[-1]["frame_path"]
            if not path["measuring"]:
                break
            if time.monotonic() > deadline + 60:
                raise RuntimeError("the agent did not choose its frame path")
            time.sleep(0.1)
        time.sleep(1.0)
        stat = Path(f"/proc/{process.pid}/stat").read_text().split()
        cpu_start = (int(stat[13]) + int(stat[14])) / 100.0
        started = time.monotonic()
        before = Counts.scrape(metrics_port)
        received_before = len(watcher.messages)
        time.sleep(seconds)
        after = Counts.scrape(metrics_port)
        resources = {**process_figures(process.pid, started, cpu_start), **memory.stop()}
        after_status = watcher.on("facefleet/bench/status")[-1]
        frame_path = after_status["frame_path"]
    finally:
        children.stop()
        memory.stop()
        process.terminate()
        process.wait(30)
        watcher.close()
    latencies = []
    with watcher._lock:
        arrivals = list(watcher.arrivals[received_before:])
    for arrived, (topic, payload, _) in zip(arrivals, watcher.messages[received_before:], strict=False):
        if topic.endswith("events/face") and payload["event"] == "decided":
            first_seen = datetime.fromisoformat(payload["first_seen"].replace("Z", "+00:00")).timestamp()
            latencies.append((arrived - first_seen) * 1000)
    return {
        **frame_rates(before, after, face_share),
        "frame_to_decided_event_ms_median": round(statistics.median(latencies), 1) if latencies else None,
        "decided_events": len(latencies),
        **resources,
        "frame_path": {"path": frame_path["path"], "measured_fps": frame_path["fps"]},
        "start": start_up,
        "runs_at": after_status["precisions"],
    }


def publish_rate(root: Path, port: int, count: int, durable: bool) -> int:
    """Events/s from first publish to last PUBACK, through the outbox (durable) or straight to paho."""
    store = EmbeddingStore(root / f"outbox-{durable}.db", outbox_limit=count * 2)
    acked = threading.Semaphore(0)
    holder: dict[str, OutboxPublisher] = {}

    def on_ack(mid: int) -> None:
        if "publisher" in holder:
            holder["publisher"].acknowledged(mid)
        acked.release()

    def on_connection(up: bool, reason: str) -> None:
        if "publisher" in holder:
            holder["publisher"].connection_changed(up)

    settings = MqttSettings("127.0.0.1", port, "facefleet/bench/", f"bench-{durable}", max_inflight=100)
    link = MqttLink(settings, on_ack, lambda topic, payload: None, on_connection)
    if durable:
        holder["publisher"] = OutboxPublisher(store, link.publish, window=100)
        holder["publisher"].start()
    link.start()
    link.wait_connected(10)
    payload = json.dumps({"schema": 1, "event_id": "x" * 36, "kind": "face", "score": 0.9})
    start = time.perf_counter()
    for _ in range(count):
        if durable:
            holder["publisher"].submit("events/face", payload)
        else:
            while link.publish("events/face", payload.encode()) is None:
                time.sleep(0.001)
    if durable:
        holder["publisher"].flush(120)
        holder["publisher"].stop()
    else:
        for _ in range(count):
            acked.acquire(timeout=60)
    elapsed = time.perf_counter() - start
    link.stop()
    store.close()
    return round(count / elapsed)


def outbox_throughput(root: Path, port: int, count: int) -> dict[str, Any]:
    plain = publish_rate(root, port, count, durable=False)
    durable = publish_rate(root, port, count, durable=True)
    return {
        "events": count,
        "plain_qos1_events_per_s": plain,
        "outbox_events_per_s": durable,
        "outbox_vs_plain": round(durable / plain, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds, events = (4.0, 1000) if args.quick else (15.0, 5000)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        state = root / "state"
        store = ModelStore(state / "models")
        runtime = Runtime()
        install = [AGENT, "--state-dir", str(state), "models", "import-defaults"]
        subprocess.run(install, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        astronaut, group = read_image(sample_photo("astronaut")), read_image(sample_photo("t1"))
        (face,) = FaceAnalyzer(runtime, store).analyze(astronaut)
        with EmbeddingStore(state / "agent.db") as agent_store:
            agent_store.gallery.apply_batch(
                [PersonUpsert(Person("eileen"), (Embedding("sface@2021dec", face.embedding),))]
            )
        blank = np.full_like(astronaut, 40)
        one = write_video(root / "one.avi", [blank] * 60 + [astronaut] * 60, fps=CAMERA_FPS)
        six_blank = [cv2.resize(blank, (1280, 886))] * 24
        six = write_video(root / "six.avi", [group] * 90 + six_blank, fps=CAMERA_FPS)
        broker = Mosquitto(root).start()
        try:
            report = {
                "kernel": platform.release(),
                "camera_fps": CAMERA_FPS,
                "one_face_first_start": run_service(root, state, broker.port, one, 60 / 120, seconds),
                "six_faces": run_service(root, state, broker.port, six, 90 / 114, seconds),
                "outbox": outbox_throughput(root, broker.port, events),
            }
        finally:
            broker.stop()
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
