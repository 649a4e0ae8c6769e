"""The frame schedule with many cameras: a door's camera is served before busy cameras, which still get their
turns (real models, real videos, an HTTP MJPEG door camera, no broker)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.agent.cameras import CameraFrame
from facefleet.agent.service.loop import DOOR_FRAMES_IN_VIEW
from facefleet.vision.faces import Face
from facefleet.vision.models.store import ModelStore
from tests.agent.test_service_pipeline import make_service
from tests.mjpeg import MjpegServer
from tests.videos import write_video

pytestmark = pytest.mark.slow

BUSY = 4


@pytest.mark.parametrize("door_listed_first", [False, True])
def test_a_door_camera_gets_a_frame_analysed_after_each_busy_cameras_frame(
    tmp_path: Path,
    model_store: ModelStore,
    astronaut: np.ndarray,
    group_photo: np.ndarray,
    mjpeg_server: MjpegServer,
    door_listed_first: bool,
) -> None:
    """Four cameras with six faces in every frame and a door camera (20 frames/s, a face in view): taken one
    frame per camera in config order, the door would get one frame in five; served first, it gets at least
    one after each busy camera's frame (up to DOOR_FRAMES_IN_VIEW while the face is in view), wherever it
    is listed, and every busy camera still gets frames analysed."""
    ok, jpeg = cv2.imencode(".jpg", astronaut)
    assert ok
    mjpeg_server.streams["door"] = [jpeg.tobytes()]
    busy = write_video(tmp_path / "busy.avi", [group_photo] * 30, 30)
    busy_cameras: dict[str, Path | str] = {f"busy{i}": busy for i in range(BUSY)}
    door: dict[str, Path | str] = {"door": mjpeg_server.url("door")}
    cameras = {**door, **busy_cameras} if door_listed_first else {**busy_cameras, **door}
    loops = "".join(f'[[cameras]]\nname = "{n}"\nsource = "{s}"\nloop = true\n' for n, s in cameras.items())
    service = make_service(
        tmp_path,
        model_store,
        "off",
        {},
        loops + '[[doors]]\nname = "front"\ncamera = "door"\nallow_people = ["eileen"]\n',
    )
    seen: list[str] = []
    process = service._process

    def record(frame: CameraFrame, faces: list[Face]) -> None:
        seen.append(frame.camera)
        process(frame, faces)

    service._process = record  # type: ignore[method-assign]
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while sum(c != "door" for c in seen) < 4 * BUSY:
            assert time.monotonic() < deadline, f"frames analysed: {service.frames_analysed}"
            time.sleep(0.05)
    finally:
        service.stop_event.set()
        runner.join(30)
        service.store.close()
    order = list(seen)
    start = order.index("door")  # from the door camera's first frame on (its stream opens last)
    order = order[start:]
    others = [c for c in order if c != "door"]
    doors = len(order) - len(others)
    assert doors >= len(others), order  # in config order it would be a quarter of them
    runs, run = [], 0
    for camera in order:
        if camera == "door":
            run += 1
        else:
            runs.append(run)
            run = 0
    assert max(runs) <= DOOR_FRAMES_IN_VIEW, order  # the busy cameras' share is bounded below
    assert all(others.count(f"busy{i}") >= 2 for i in range(BUSY)), order
