"""RTSP cameras against a real RTSP server (GStreamer's, H.264 over RTP) that goes away and comes back on
the same port: frames, retries with backoff and the error in the camera's status, reconnection, and the
agent recognising the enrolled person before and after the outage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facefleet.agent.cameras import Camera, CameraFrame, CameraSettings, CameraStatus
from facefleet.agent.config import load_config
from facefleet.agent.service.loop import AgentService
from tests.agent.test_service import PREFIX, running, state_dir
from tests.mosquitto import Mosquitto
from tests.rtsp import RtspServer
from tests.videos import write_video

__all__ = ["state_dir"]  # the service tests' state: the default models, Eileen (the astronaut) enrolled

BLANK = 40  # grey level of the frames where nobody is in view


@pytest.fixture
def door_video(astronaut: np.ndarray, tmp_path: Path) -> Path:
    """8 fps: Eileen in view for 1 s, then nobody for 1.75 s (her track ends); the server loops it."""
    blank = np.full_like(astronaut, BLANK)
    return write_video(tmp_path / "door.avi", [astronaut] * 8 + [blank] * 14, fps=8)


@pytest.fixture
def rtsp_server(door_video: Path, tmp_path: Path) -> Iterator[RtspServer]:
    server = RtspServer(door_video, tmp_path, "/door").start()
    yield server
    server.stop()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll until predicate() is true; timeout (s) is only an upper bound."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def frames_after(camera: Camera, number: int, count: int, timeout: float = 60.0) -> list[CameraFrame]:
    """The next `count` frames numbered above `number` that the camera delivers."""
    frames: list[CameraFrame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        assert time.monotonic() < deadline, f"{len(frames)} of {count} frames in {timeout} s: {camera.status}"
        frame = camera.next_frame(frames[-1].number if frames else number, timeout=0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def difference(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference of two images, in grey levels."""
    return float(np.abs(image.astype(np.int16) - reference.astype(np.int16)).mean())


def retries_since(statuses: list[CameraStatus], start: int) -> list[CameraStatus]:
    return [s for s in statuses[start:] if s.state == "retrying"]


def test_camera_reads_the_frames_of_an_rtsp_stream(rtsp_server: RtspServer, astronaut: np.ndarray) -> None:
    camera = Camera(CameraSettings("door", rtsp_server.url, timeout_s=2.0)).start()
    try:
        frames = frames_after(camera, 0, 30)  # more than one loop of the video
        status = camera.status
    finally:
        camera.stop()
    assert (status.state, status.error) == ("running", None)
    assert status.frames_read >= 30 and status.fps > 0
    assert [f.number for f in frames] == sorted({f.number for f in frames})
    assert all(f.camera == "door" and f.image.shape == astronaut.shape for f in frames)
    blank = np.full_like(astronaut, BLANK)
    assert min(difference(f.image, astronaut) for f in frames) < 10  # H.264 keeps the photo recognisable
    assert min(difference(f.image, blank) for f in frames) < 10
    assert camera.status.state == "stopped"


@pytest.mark.slow
def test_camera_retries_with_backoff_while_the_server_is_away_and_reads_again_when_it_returns(
    rtsp_server: RtspServer,
) -> None:
    statuses: list[CameraStatus] = []
    settings = CameraSettings(
        "door", rtsp_server.url, timeout_s=2.0, backoff_initial_s=0.2, backoff_max_s=0.8
    )
    camera = Camera(settings, on_status=statuses.append).start()
    try:
        (before,) = frames_after(camera, 0, 1)
        rtsp_server.stop()
        wait_for(lambda: len(retries_since(statuses, 0)) >= 4, 60, "four retries while the server is away")
        away = retries_since(statuses, 0)
        last = camera.next_frame(0, timeout=0.0)
        assert last is not None
        rtsp_server.start()
        (after,) = frames_after(camera, last.number, 1)
        back = len(statuses)
        assert statuses[-1].state == "running" and camera.status.error is None
        rtsp_server.stop()  # a second outage, after frames flowed again
        wait_for(lambda: retries_since(statuses, back), 60, "a retry in the second outage")
        again = retries_since(statuses, back)[0]
    finally:
        camera.stop()
    assert after.number > last.number >= before.number
    assert away[0].error == f"{rtsp_server.url}: stopped delivering frames"
    assert all(
        s.error is not None and s.error.startswith(f"{rtsp_server.url}: cannot open") for s in away[1:]
    )
    assert [s.retry_in_s for s in away[:4]] == [0.2, 0.4, 0.8, 0.8]
    assert again.retry_in_s == 0.2  # the backoff starts over once the stream delivered frames again


@pytest.mark.slow
def test_a_stalled_stream_is_noticed_within_its_read_timeout_and_read_again_when_it_flows(
    rtsp_server: RtspServer,
) -> None:
    """A server that stops sending without closing its connection (as behind a dead link): only the read
    timeout can notice it (OpenCV's own default is 30 s per attempt)."""
    statuses: list[CameraStatus] = []
    settings = CameraSettings(
        "door", rtsp_server.url, timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=0.4
    )
    camera = Camera(settings, on_status=statuses.append).start()
    try:
        frames_after(camera, 0, 1)
        rtsp_server.freeze()
        wait_for(lambda: retries_since(statuses, 0), 30, "a retry after the stream stalled")
        (stalled, *_) = retries_since(statuses, 0)
        last = camera.next_frame(0, timeout=0.0)
        assert last is not None
        rtsp_server.thaw()
        (after,) = frames_after(camera, last.number, 1)
    finally:
        camera.stop()
    assert stalled.error == f"{rtsp_server.url}: stopped delivering frames" and stalled.retry_in_s == 0.2
    assert after.number > last.number


def agent_config(tmp_path: Path, mqtt_port: int, camera_url: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
device_id = "door-box"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
reconnect_max_s = 1
[service]
status_interval_s = 1
[[cameras]]
name = "door"
source = "{camera_url}"
max_fps = 8
timeout_s = 2
"""
    )
    return path


@pytest.mark.slow
def test_the_agent_recognises_faces_on_an_rtsp_camera_before_and_after_the_server_goes_away(
    state_dir: Path,
    rtsp_server: RtspServer,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
) -> None:
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    service = AgentService(load_config(agent_config(tmp_path, broker.port, rtsp_server.url)), state_dir)

    def decided() -> list[dict[str, Any]]:
        return [e for e in watcher.on(PREFIX + "events/face") if e["event"] == "decided"]

    def cameras() -> list[dict[str, Any]]:
        return [status["cameras"]["door"] for status in watcher.on(PREFIX + "status") if "cameras" in status]

    with running(service):
        watcher.wait_for(decided, timeout=120)
        rtsp_server.stop()
        watcher.wait_for(lambda: any(c["state"] == "retrying" for c in cameras()), timeout=60)
        tracks_before = {e["track_id"] for e in decided()}
        statuses_before = len(cameras())
        rtsp_server.start()
        watcher.wait_for(lambda: {e["track_id"] for e in decided()} - tracks_before, timeout=60)
        watcher.wait_for(lambda: cameras()[-1]["state"] == "running", timeout=30)
    away = next(c for c in cameras() if c["state"] == "retrying")
    assert away["error"].startswith(rtsp_server.url)
    assert away["retry_in_s"] is not None and away["retry_in_s"] > 0
    back = cameras()[statuses_before:]
    assert back[-1]["error"] is None and back[-1]["frames_read"] > away["frames_read"]
    events = decided()
    assert {e["camera"] for e in events} == {"door"}
    assert all(
        e["identity"] == {"status": "match", "person_id": "eileen", "name": "Eileen C."} for e in events
    )
    assert len(events) >= 2 and events[-1]["track_id"] not in tracks_before
