"""Frame sources with real files, folders and sockets: end, loop, retry with backoff (also after unexpected
failures), latest frame wins, frames larger than the agent takes refused."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facefleet.agent import cameras
from facefleet.agent.cameras import (
    MAX_FRAME_PIXELS,
    Camera,
    CameraFrame,
    CameraSettings,
    CameraStatus,
    SourceError,
    open_reader,
    stop_cameras,
)
from tests.mjpeg import MjpegServer, flat_jpeg
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


def test_a_stream_over_the_frame_size_limit_is_refused_with_its_size_and_one_at_the_limit_is_read(
    mjpeg_server: MjpegServer,
) -> None:
    """The size the stream declares is checked before any frame is decoded: a camera sending frames of
    hundreds of megapixels would take GBs."""
    width, height = 4096, 3072
    assert width * height == MAX_FRAME_PIXELS  # 4K (UHD and DCI) and 12 MP cameras fit
    mjpeg_server.streams["limit"] = [flat_jpeg(width, height)]
    mjpeg_server.streams["over"] = [flat_jpeg(width + 16, height)]
    with pytest.raises(SourceError) as refused:
        open_reader(CameraSettings("big", mjpeg_server.url("over")))
    assert str(refused.value) == (
        f"{mjpeg_server.url('over')}: frames of 4112×3072 pixels (12.6 MP) are over the 12.6 MP limit; "
        "set the camera to a lower resolution or use its substream"
    )
    statuses: list[CameraStatus] = []
    over = Camera(
        CameraSettings("big", mjpeg_server.url("over"), backoff_initial_s=0.05), on_status=statuses.append
    )
    at_limit = Camera(CameraSettings("4k", mjpeg_server.url("limit"))).start()
    over.start()
    try:
        frame = at_limit.next_frame(0, timeout=10)
        wait_for(lambda: sum(s.state == "retrying" for s in statuses) >= 2)
    finally:
        at_limit.stop()
        over.stop()
    assert frame is not None and frame.image.shape == (height, width, 3)
    assert over.status.frames_read == 0
    assert all(s.error == str(refused.value) for s in statuses if s.state == "retrying")


def test_a_camera_that_fails_unexpectedly_says_so_retries_and_reads_again(tmp_path: Path) -> None:
    """A failure that is not the source's (here: the process has no file descriptor left, so the folder
    cannot be listed) must not end the camera's thread while its status still says running."""
    cv2.imwrite(str(tmp_path / "0.png"), np.full((32, 32, 3), 90, np.uint8))
    statuses: list[CameraStatus] = []
    settings = CameraSettings("folder", str(tmp_path), loop=True, max_fps=50, backoff_initial_s=0.05)
    camera = Camera(settings, on_status=statuses.append)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # every new descriptor: EMFILE
    try:
        camera.start()
        wait_for(lambda: statuses and statuses[0].state == "retrying", timeout=5)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        wait_for(lambda: camera.status.frames_read >= 3, timeout=5)
        status = camera.status
    finally:
        camera.stop()
    failed = statuses[0]
    assert failed.error is not None and failed.error.startswith(f"{tmp_path}: OSError: [Errno 24]")
    assert failed.retry_in_s == 0.05 and failed.frames_read == 0
    assert (status.state, status.error) == ("running", None)


def test_frame_numbers_go_on_after_a_stream_is_reopened(mjpeg_server: MjpegServer) -> None:
    """The agent asks for frames numbered above the last it took: numbers starting over at a reconnection
    would hide the new frames until they caught up."""
    mjpeg_server.streams["short"] = [flat_jpeg(64, 48)] * 4
    mjpeg_server.rounds = 1  # each connection ends after four frames
    statuses: list[CameraStatus] = []
    settings = CameraSettings("short", mjpeg_server.url("short"), backoff_initial_s=0.05)
    camera = Camera(settings, on_status=statuses.append).start()
    try:
        wait_for(lambda: sum(s.state == "retrying" for s in statuses) >= 2)
    finally:
        camera.stop()
    latest = camera.next_frame(0, timeout=0.0)
    retries = [s for s in statuses if s.state == "retrying"]
    assert retries[0].error == f"{settings.source}: stopped delivering frames"
    assert latest is not None and 4 < latest.number <= camera.status.frames_read  # decoded on demand


def test_cameras_stalled_inside_a_read_are_stopped_together_within_one_timeout(
    mjpeg_server: MjpegServer,
) -> None:
    """Stopping waits for cameras stalled inside a read one timeout in all: not until their reads end (30 s
    each), nor one timeout per camera. The bound leaves a loaded machine two timeouts of room."""
    read_s, timeout = 30.0, 1.0
    mjpeg_server.streams["stalling"] = [flat_jpeg(64, 48)]
    mjpeg_server.stall_after = 3
    settings = [CameraSettings(f"cam{i}", mjpeg_server.url("stalling"), timeout_s=read_s) for i in range(3)]
    cameras = [Camera(s).start() for s in settings]
    try:
        wait_for(lambda: all(c.status.frames_read >= 1 for c in cameras))
        time.sleep(0.3)  # the frame after the third is cut off halfway: each camera waits inside its read
        started = time.monotonic()
        stalled = stop_cameras(cameras, timeout=timeout)
        took = time.monotonic() - started
    finally:
        mjpeg_server.stalls_end.set()  # the connections close, the reads end
    assert stalled == ["cam0", "cam1", "cam2"]
    assert took < len(cameras) * timeout < read_s  # waited in turn, the cameras would take 3 timeouts
    assert stop_cameras(cameras, timeout=5) == []
    assert [c.status.state for c in cameras] == ["stopped"] * 3


def test_frames_nobody_takes_are_grabbed_but_not_converted(tmp_path: Path) -> None:
    """A camera the agent seldom gets to converts about the frames it hands out, not every frame of the
    source: here (a consumer back every 20 frames, before a frame waiting for it would be refreshed) the one
    after each take, and those of the DUE_FRAMES frames or so before the consumer is due back."""
    video = write_video(tmp_path / "busy.avi", numbered_frames(30), 30.0)
    converted = []

    def counting(settings: CameraSettings) -> Any:
        reader = open_reader(settings)
        for name in ("read", "retrieve"):  # whatever turns a frame into an image
            if hasattr(reader, name):
                convert = getattr(reader, name)
                setattr(reader, name, lambda convert=convert: converted.append(1) or convert())
        return reader

    camera = Camera(CameraSettings("busy", str(video), max_fps=100, loop=True), opener=counting).start()
    taken: list[int] = []
    try:
        wait_for(lambda: camera.status.frames_read >= 20)
        for _ in range(8):
            frame = camera.next_frame(taken[-1] if taken else 0, timeout=5)
            assert frame is not None
            taken.append(frame.number)
            time.sleep(0.2)  # 20 frames of the source
        read = camera.status.frames_read
    finally:
        camera.stop()
    assert read >= 20 * len(taken) and taken == sorted(taken)
    assert len(converted) <= 1 + len(taken) * (cameras.DUE_FRAMES + 2), (len(converted), read)


def test_a_consumer_back_from_an_analysis_gets_one_of_the_newest_frames(mjpeg_server: MjpegServer) -> None:
    """A consumer that takes a frame, analyses it for four frames of a 20 frames/s stream and takes the next:
    the frame it gets is one of the last the camera sent, not the one converted just after its last take
    (four frames behind, and as old as the analysis)."""
    mjpeg_server.streams["door"] = [numbered_jpeg(i) for i in range(512)]
    camera = Camera(CameraSettings("door", mjpeg_server.url("door"))).start()
    behind = []
    try:
        frame = camera.next_frame(0, timeout=10)
        assert frame is not None, camera.status
        for _ in range(12):
            time.sleep(0.2)  # the analysis
            frame = camera.next_frame(frame.number, timeout=5)
            assert frame is not None, camera.status
            behind.append(mjpeg_server.sent["door"] - 1 - index_of(frame.image))
    finally:
        camera.stop()
    assert max(behind[2:]) <= 2, behind  # after two takes, the camera knows when the consumer is back


def numbered_jpeg(index: int) -> bytes:
    """A small JPEG carrying `index` (< 512) as three grey blocks, one per octal digit."""
    image = np.zeros((16, 48, 3), np.uint8)
    for place in range(3):
        image[:, place * 16 : (place + 1) * 16] = (index >> (3 * place) & 7) * 32 + 16
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def index_of(image: np.ndarray) -> int:
    return sum(round((int(image[8, place * 16 + 8, 0]) - 16) / 32) << (3 * place) for place in range(3))


def test_max_fps_on_a_stream_hands_out_fresh_frames_at_most_that_often(mjpeg_server: MjpegServer) -> None:
    """A 20 frames/s stream read with max_fps = 5: the stream is read at its own rate and the frames between
    discarded, so a frame handed out is one of the last few the camera sent, not one that waited in the
    socket while the reader slept (3 of 4 frames queued: ever older frames, stamped as fresh)."""
    mjpeg_server.streams["door"] = [numbered_jpeg(i) for i in range(512)]
    camera = Camera(CameraSettings("door", mjpeg_server.url("door"), max_fps=5)).start()
    behind = []
    try:
        last = 0
        while len(behind) < 20:
            frame = camera.next_frame(last, timeout=5)
            assert frame is not None, camera.status
            sent = mjpeg_server.sent["door"]
            behind.append(sent - 1 - index_of(frame.image))
            last = frame.number
        read, sent = camera.status.frames_read, mjpeg_server.sent["door"]
    finally:
        camera.stop()
    assert sent >= 60  # 20 frames handed out at 5 a second of a 20 frames/s stream
    assert read <= sent // 2  # the frames between discarded
    assert max(behind[-10:]) <= 8, behind  # frames the camera sent lately, not seconds ago


def test_rates_are_those_of_the_last_ten_seconds() -> None:
    """A camera that sent 20 frames/s for 20 s, then 1 frame/s: its rate 20 s later is 1, not the mean since
    it was opened (about 10)."""
    from facefleet.agent.cameras import RateWindow

    window = RateWindow(10.0)
    times = [i / 20 for i in range(400)] + [20.0 + i for i in range(20)]
    for at in times:
        window.add(at)
    assert window.rate(20.0 + 19) == 1.0
    assert window.rate(20.0 + 19 + 30) == 0.0  # nothing for 30 s


def test_a_camera_tells_its_analysed_rate_and_the_age_of_the_frames_analysed(tmp_path: Path) -> None:
    camera = Camera(CameraSettings("door", str(tmp_path)))
    assert (camera.analysed_fps, camera.analysed_age_s) == (0.0, None)
    now = time.monotonic()
    for step in range(6):  # 2 frames a second for the last 2.5 s, each analysed 0.3 s after it was read
        at = now - 2.5 + step / 2
        camera.analysed(CameraFrame("door", step + 1, time.time(), numbered_frames(1)[0], at - 0.3), at)
    assert camera.analysed_age_s == pytest.approx(0.3)
    assert 1.9 <= camera.analysed_fps <= 2.0  # 5 intervals in 2.5 s, up to the moment it is asked
