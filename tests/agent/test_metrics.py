"""The agent's Prometheus endpoint and JSON logs: `facefleet-agent run` as a process on a video of a real
photo, scraped over HTTP while it runs, its stderr parsed line by line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from facefleet.agent.config import AgentConfig
from facefleet.agent.metrics import AgentFigures, AgentMetrics
from facefleet.vision.pipeline import FaceAnalyzer, FramePipeline
from tests.agent.test_service import state_dir  # noqa: F401 (a fixture)
from tests.mosquitto import Mosquitto
from tests.videos import write_video

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of GET /metrics, by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def json_records(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON log lines among a process's stderr lines (a library may print something else)."""
    return [json.loads(line) for line in list(lines) if line.startswith("{")]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("then_drain", [True, False])
def test_timed_analysis_finds_the_same_faces_as_the_analyzer(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, group_photo: np.ndarray, then_drain: bool
) -> None:
    """Sequential (drained after each frame) or pipelined: each frame's models timed once each."""
    metrics = AgentMetrics()
    pipeline: FramePipeline[int] = FramePipeline(analyzer, 1, metrics.observe)
    images = (astronaut, group_photo)
    timed = []
    for tag, image in enumerate(images):
        timed += pipeline.submit(tag, image) + (pipeline.drain() if then_drain else [])
    timed += pipeline.drain()
    assert [tag for tag, _ in timed] == [0, 1]
    for (_, faces), image in zip(timed, images, strict=True):
        plain = analyzer.analyze(image)
        assert len(faces) == len(plain) > 0
        for a, b in zip(faces, plain, strict=True):
            assert a.detection.box_xyxy == pytest.approx(b.detection.box_xyxy)
            assert a.embedding is not None and b.embedding is not None
            assert float(a.embedding @ b.embedding) > 0.9999
            assert a.embedding_model == b.embedding_model
            assert a.expression is not None and b.expression is not None
            assert a.expression.label == b.expression.label
            assert a.quality.score == pytest.approx(b.quality.score)
    detector = analyzer.detector_model.manifest.model_id
    count = metrics.registry.get_sample_value(
        "facefleet_agent_inference_seconds_count", {"task": "detection", "model": detector}
    )
    assert count == 2
    assert (
        metrics.registry.get_sample_value(
            "facefleet_agent_inference_seconds_count", {"task": "embedding", "model": "sface@2021dec"}
        )
        == 2
    )


def test_metrics_listen_is_validated() -> None:
    assert AgentConfig().metrics.listen == "127.0.0.1:9108"
    assert AgentConfig.model_validate({"metrics": {"listen": ""}}).metrics.listen == ""
    with pytest.raises(ValueError, match="host:port"):
        AgentConfig.model_validate({"metrics": {"listen": "9108"}})
    with pytest.raises(ValueError, match="log_format"):
        AgentConfig.model_validate({"log_format": "xml"})


def test_certificate_expiry_is_a_gauge_per_link() -> None:
    figures = AgentFigures(certificate_expiry_s={"server": -5.0, "mqtt": 86400.0})
    registry = AgentMetrics(lambda: figures).registry
    name = "facefleet_agent_certificate_expiry_seconds"
    assert registry.get_sample_value(name, {"kind": "mqtt"}) == 86400.0
    assert registry.get_sample_value(name, {"kind": "server"}) == -5.0
    none = AgentMetrics(lambda: AgentFigures()).registry  # no client certificate: no sample
    assert none.get_sample_value(name, {"kind": "mqtt"}) is None


@pytest.mark.slow
def test_a_running_agent_serves_moving_counters_and_logs_json_lines(
    state_dir: Path,  # noqa: F811
    analyzer: FaceAnalyzer,
    astronaut: np.ndarray,
    broker: Mosquitto,
    tmp_path: Path,
) -> None:
    state = state_dir
    blank = np.full_like(astronaut, 40)
    video = write_video(tmp_path / "door.avi", [astronaut] * 8 + [blank] * 8, 8)
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
device_id = "door-box"
log_format = "json"
[metrics]
listen = "127.0.0.1:0"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
reconnect_max_s = 1
[[cameras]]
name = "door"
source = "{video}"
loop = true
max_fps = 8
[[doors]]
name = "front"
camera = "door"
allow_groups = ["crew"]
min_frames = 3
"""
    )
    command = [
        str(Path(sys.executable).with_name("facefleet-agent")),
        "-v",
        "--config",
        str(config),
        "--state-dir",
        str(state),
        "run",
    ]
    process = subprocess.Popen(command, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()

    def logged(predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in json_records(lines):
                if predicate(record):
                    return record
            assert process.poll() is None, "".join(lines)
            time.sleep(0.1)
        raise AssertionError("not logged:\n" + "".join(lines))

    try:
        serving = logged(lambda r: r["message"].startswith("metrics on http://127.0.0.1:"))
        port = int(serving["message"].rsplit(":", 1)[1].split("/")[0])
        granted = logged(lambda r: r["message"].startswith("door front: granted eileen"))
        first = scrape(port)
        deadline = time.monotonic() + 30
        while True:
            second = scrape(port)
            moved = value(second, "facefleet_agent_frames_analysed_total", camera="door") > value(
                first, "facefleet_agent_frames_analysed_total", camera="door"
            )
            if moved or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(10)
    assert process.returncode == 0, "".join(lines)
    assert moved, "frames_analysed did not move between two scrapes"
    assert value(second, "facefleet_agent_frames_read_total", camera="door") >= value(
        second, "facefleet_agent_frames_analysed_total", camera="door"
    )
    assert value(second, "facefleet_agent_access_decisions_total", door="front", outcome="granted") >= 1
    assert value(second, "facefleet_agent_identity_decisions_total", camera="door", outcome="match") >= 3
    assert value(second, "facefleet_agent_events_total", kind="access") >= 1
    detector = analyzer.detector_model.manifest.model_id
    assert value(second, "facefleet_agent_inference_seconds_count", task="detection", model=detector) >= 3
    assert (
        value(second, "facefleet_agent_inference_seconds_count", task="embedding", model="sface@2021dec") >= 3
    )
    assert (
        value(
            second,
            "facefleet_agent_inference_seconds_count",
            task="expression",
            model="mini-xception@fer2013",
        )
        >= 3
    )
    assert value(second, "facefleet_agent_mqtt_connected") == 1
    assert value(second, "facefleet_agent_camera_running", camera="door") == 1
    assert value(second, "facefleet_agent_camera_analysed_fps", camera="door") > 0
    assert value(second, "facefleet_agent_camera_frame_age_seconds", camera="door") >= 0
    assert value(second, "facefleet_agent_model_info", task="embedding", model="sface@2021dec") == 1
    assert value(second, "facefleet_agent_people") == 1
    assert ("facefleet_agent_outbox_depth", ()) in second
    assert ("facefleet_agent_server_connected", ()) not in second  # no [server]: no such gauge
    # every log line is a JSON object with the four fields, and the agent's device id
    assert not [line for line in lines if re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) facefleet", line)]
    records = json_records(lines)
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert all(r["device_id"] == "door-box" for r in records)
    assert granted["level"] == "INFO" and granted["logger"] == "facefleet.agent.service.doors"
    assert len(granted["event_id"]) == 36 and granted["time"].endswith("+00:00")
