"""Frame sources with real files, folders and sockets: end, loop, retry with backoff, latest frame wins."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.agent.cameras import Camera, CameraSettings, CameraStatus, SourceError, open_reader
from tests.videos import write_video


def numbered_frames(count: int) -> list[np.ndarray]:
    return [np.full((64, 96, 3), (10 * i) % 256, np.uint8) for i in range(count)]


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def collect(camera: Camera, timeout: float = 10.0) -> list[int]:
    numbers, last = [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = camera.next_frame(last, timeout=0.5)
        if frame is None:
            if camera.status.state == "ended":
                break
            continue
        numbers.append(frame.number)
        last = frame.number
    return numbers


def test_video_file_plays_to_its_end(tmp_path: Path) -> None:
    video = write_video(tmp_path / "door.avi", numbered_frames(12), 25.0)
    camera = Camera(CameraSettings("door", str(video), max_fps=50)).start()
    try:
        numbers = collect(camera)
        wait_for(lambda: camera.status.state == "ended")
    finally:
        camera.stop()
    status = camera.status
    assert status.frames_read == 12
    assert numbers[-1] == 12 and numbers == sorted(numbers)
    assert status.frames_dropped == 12 - len(numbers)


def test_looping_file_keeps_going(tmp_path: Path) -> None:
    video = write_video(tmp_path / "loop.avi", numbered_frames(5), 25.0)
    camera = Camera(CameraSettings("loop", str(video), max_fps=200, loop=True)).start()
    try:
        wait_for(lambda: camera.status.frames_read > 12)
        assert camera.status.state == "running"
    finally:
        camera.stop()
    assert camera.status.state == "stopped"


def test_image_folder_in_name_order_skipping_broken_files(tmp_path: Path, astronaut: np.ndarray) -> None:
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"{index}.png"), np.full((32, 32, 3), 50 * (index + 1), np.uint8))
    (tmp_path / "1b.png").write_bytes(b"broken")
    reader = open_reader(CameraSettings("folder", str(tmp_path)))
    values = []
    while (frame := reader.read()) is not None:
        values.append(int(frame[0, 0, 0]))
    assert values == [50, 100, 150]


def test_missing_source_retries_with_growing_backoff(tmp_path: Path) -> None:
    statuses: list[CameraStatus] = []
    settings = CameraSettings("gone", str(tmp_path / "nope.mp4"), backoff_initial_s=0.05, backoff_max_s=0.2)
    camera = Camera(settings, on_status=statuses.append).start()
    try:
        wait_for(lambda: sum(s.state == "retrying" for s in statuses) >= 4)
    finally:
        camera.stop()
    retries = [s for s in statuses if s.state == "retrying"]
    assert retries[0].error is not None and "nope.mp4" in retries[0].error
    assert [s.retry_in_s for s in retries[:4]] == [0.05, 0.1, 0.2, 0.2]
    assert camera.next_frame(0, timeout=0.01) is None


@pytest.mark.slow
def test_stream_that_never_answers_times_out_and_retries() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/video.mjpg"
    camera = Camera(CameraSettings("silent", url, timeout_s=1.0, backoff_initial_s=0.1)).start()
    try:
        wait_for(lambda: camera.status.state == "retrying", timeout=30)
        status = camera.status
        assert status.error is not None and url in status.error
        assert accepted, "the camera never connected"
    finally:
        camera.stop()
        stop.set()
        thread.join()
        listener.close()
        for connection in accepted:
            connection.close()


def test_slow_consumer_gets_the_latest_frame_and_drops_are_counted(tmp_path: Path) -> None:
    video = write_video(tmp_path / "fast.avi", numbered_frames(40), 25.0)
    camera = Camera(CameraSettings("fast", str(video), max_fps=400)).start()
    try:
        wait_for(lambda: camera.status.state == "ended")
        frame = camera.next_frame(3, timeout=1)
    finally:
        camera.stop()
    assert frame is not None and frame.number == 40
    assert camera.status.frames_dropped == 40 - 3 - 1


def test_unreadable_video_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match=r"bad\.mp4: cannot open"):
        open_reader(CameraSettings("bad", str(bad)))
