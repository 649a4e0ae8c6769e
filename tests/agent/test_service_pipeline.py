"""The service's frame paths: pipelined frames handled in order, drained before a model switch and at a
path change, and the path in use in the status and metrics (real models, no broker)."""

from __future__ import annotations

import concurrent.futures
import errno
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facefleet.agent.cameras import CameraFrame
from facefleet.agent.config import load_config
from facefleet.agent.domain.records import Embedding, Person
from facefleet.agent.recognition.matching import MatchError
from facefleet.agent.service.loop import MAX_FAILED_FRAMES, AgentService
from facefleet.agent.updates.updater import Switch
from facefleet.vision import detection
from facefleet.vision.faces import Face
from facefleet.vision.models.store import ModelStore
from facefleet.vision.path_choice import PathChooser
from facefleet.vision.pipeline import FaceAnalyzer
from tests.variants import store_variant_copy
from tests.videos import write_video


def make_service(
    tmp_path: Path, model_store: ModelStore, pipeline: str, cameras: dict[str, Path], more_config: str = ""
) -> AgentService:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    if not (state / "models").exists():
        (state / "models").symlink_to(model_store.root, target_is_directory=True)
    camera_lines = "".join(f'[[cameras]]\nname = "{n}"\nsource = "{s}"\n' for n, s in cameras.items())
    config = tmp_path / "agent.toml"
    config.write_text(
        'device_id = "pipe"\n[runtime]\ninference_precision = "f32"\n[mqtt]\nenabled = false\n'
        f'[metrics]\nlisten = ""\n[service]\npipeline = "{pipeline}"\n{camera_lines}{more_config}'
    )
    service = AgentService(load_config(config), state)
    service._refresh_gallery()  # as run() does before its first frame
    return service


@pytest.fixture
def video(tmp_path: Path, astronaut: np.ndarray) -> Path:
    return write_video(tmp_path / "still.avi", [astronaut], 30)


@pytest.fixture
def service(tmp_path: Path, model_store: ModelStore, video: Path) -> Iterator[AgentService]:
    service = make_service(tmp_path, model_store, "on", {"cam": video})
    yield service
    service.store.close()


def recorded(service: AgentService, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, FaceAnalyzer]]:
    """(camera, frame number, analyzer running) of each frame the service handles, in handling order."""
    seen: list[tuple[str, int, FaceAnalyzer]] = []
    process = service._process

    def record(frame: CameraFrame, faces: list[Face]) -> None:
        seen.append((frame.camera, frame.number, service.analyzer))
        process(frame, faces)

    monkeypatch.setattr(service, "_process", record)
    return seen


def frames(images: list[np.ndarray], camera: str = "cam") -> list[CameraFrame]:
    return [CameraFrame(camera, n, time.time(), image) for n, image in enumerate(images, 1)]


@pytest.mark.slow
def test_pipelined_frames_of_two_cameras_are_handled_once_each_in_order(
    tmp_path: Path, model_store: ModelStore, astronaut: np.ndarray, group_photo: np.ndarray
) -> None:
    one = write_video(tmp_path / "one.avi", [astronaut, np.full_like(astronaut, 40)] * 10, 30)
    six = write_video(tmp_path / "six.avi", [group_photo] * 20, 30)
    service = make_service(tmp_path, model_store, "on", {"one": one, "six": six})
    seen: list[tuple[str, int]] = []
    process = service._process
    service._process = lambda frame, faces: (
        seen.append((frame.camera, frame.number)),
        process(frame, faces),
    )[1]  # type: ignore[method-assign]
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ended = all(c.status.state == "ended" for c in service.cameras.values())
            if ended and not service._pipeline.in_flight and service.frames_analysed["six"]:
                break
            time.sleep(0.05)
        status = service.status()
    finally:
        service.stop_event.set()
        runner.join(30)
        service.store.close()
    for camera in ("one", "six"):
        numbers = [n for c, n in seen if c == camera]
        assert numbers and numbers == sorted(set(numbers)), camera
        assert service.frames_analysed[camera] == len(numbers)
    assert status["frame_path"] == {"mode": "on", "path": "pipelined", "measuring": False, "fps": {}}
    assert status["precisions"] == {"detection": "f32", "embedding": "f32", "expression": "f32"}
    counts = {
        s.labels["task"]: s.value
        for metric in service.metrics.registry.collect()
        if metric.name == "facefleet_agent_inference_seconds"
        for s in metric.samples
        if s.name.endswith("_count")
    }
    assert counts["detection"] == len(seen) and counts["embedding"] > 0


def test_a_model_switch_waits_for_the_frames_in_flight_and_the_new_model_starts_afresh(
    service: AgentService, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recorded(service, monkeypatch)
    old = service.analyzer
    pending = frames([astronaut, astronaut[:, ::-1].copy(), astronaut, astronaut])
    for frame in pending[:3]:
        service._analyse(frame)
    assert service._pipeline.in_flight > 0  # some frames are still running on the old analyzer
    model = service.models.active("expression")
    switch = Switch(
        release=None, model=model, analyzer=old.with_model(model), done=concurrent.futures.Future()
    )  # type: ignore[arg-type]
    service._queue_switch(switch)
    service._apply_switches()
    assert switch.done.result(timeout=0) is None
    assert [(n, a) for _, n, a in seen] == [(1, old), (2, old), (3, old)]
    assert service.analyzer is switch.analyzer and service._pipeline.analyzer is switch.analyzer
    assert service._pipeline.in_flight == 0
    service._analyse(pending[3])
    service._settle()
    assert seen[-1][1:] == (4, switch.analyzer)


def test_a_failed_embedding_switch_leaves_the_model_its_gallery_and_the_doors_as_they_were(
    tmp_path: Path, model_store: ModelStore, video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full when a new embedding model is activated: the switch fails with that error, and the
    agent goes on with the model, gallery and door thresholds it had; the same switch works once it can."""
    (tmp_path / "state").mkdir()
    shutil.copytree(model_store.root, tmp_path / "state" / "models")  # its own store: a model is added
    door = '[[doors]]\nname = "front"\ncamera = "cam"\nallow_groups = ["staff"]\n'
    service = make_service(tmp_path, model_store, "on", {"cam": video}, door)
    try:
        running, analyzer = service.model_id, service.analyzer
        other = store_variant_copy(service.models, service.models.active("embedding"), "2021dec-other")
        new_id = other.manifest.model_id

        def switch() -> Switch:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            return Switch(release=None, model=other, analyzer=analyzer.with_model(other), done=done)

        def full_disk(*args: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        failing = switch()
        with monkeypatch.context() as patched:
            patched.setattr(service.models, "activate", full_disk)
            service._queue_switch(failing)
            service._apply_switches()
        with pytest.raises(OSError, match="No space left"):
            failing.done.result(timeout=0)
        assert service.model_id == running and service.analyzer is analyzer
        assert service._pipeline.analyzer is analyzer
        assert service.models.active("embedding").manifest.model_id == running
        assert service.matcher.gallery(running).model_id == running
        with pytest.raises(MatchError, match="no gallery loaded"):
            service.matcher.gallery(new_id)
        assert list(service.doors.policies["front"].thresholds) == [running]

        working = switch()
        service._queue_switch(working)
        service._apply_switches()
        assert working.done.result(timeout=0) is None
        assert service.model_id == new_id and service.analyzer is working.analyzer
        assert service.models.active("embedding").manifest.model_id == new_id
        assert service.matcher.gallery(new_id).model_id == new_id
        assert list(service.doors.policies["front"].thresholds) == [new_id]
    finally:
        service.store.close()


def test_the_people_doors_check_follow_a_gallery_change_made_while_a_model_switch_was_prepared(
    tmp_path: Path, model_store: ModelStore, video: Path
) -> None:
    """Ada's group is taken away after the new embedding model's gallery was loaded and before the switch:
    the switch brings the matcher up to that change, and the doors see it too."""
    (tmp_path / "state").mkdir()
    shutil.copytree(model_store.root, tmp_path / "state" / "models")
    door = '[[doors]]\nname = "front"\ncamera = "cam"\nallow_groups = ["staff"]\n'
    service = make_service(tmp_path, model_store, "on", {"cam": video}, door)
    try:
        other = store_variant_copy(service.models, service.models.active("embedding"), "2021dec-other")
        vector = np.random.default_rng(0).normal(size=128).astype(np.float32)
        vectors = [Embedding(model_id, vector) for model_id in (service.model_id, other.manifest.model_id)]
        service.store.gallery.add_person(Person("ada", "Ada", ("staff",)), vectors)
        service._refresh_gallery()
        assert service.people["ada"].groups == ("staff",)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        switch = Switch(release=None, model=other, analyzer=service.analyzer.with_model(other), done=done)
        service._queue_switch(switch)  # loads the new model's gallery
        revoked = service.store.gallery.upsert_person(Person("ada", "Ada", ()))
        service._apply_switches()
        assert done.result(timeout=0) is None and service.matcher.revision == revoked
        for _ in range(3):  # the loop's next rounds
            service._refresh_gallery()
        assert service.people["ada"].groups == ()
        assert service.people_revision == revoked  # what audit rows and events carry
    finally:
        service.store.close()


def test_a_change_of_path_keeps_the_frame_order_and_the_choice_is_reported(
    service: AgentService, astronaut: np.ndarray, group_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recorded(service, monkeypatch)
    service.frame_path = PathChooser("auto", window=2, rounds=2)
    paths = []
    for frame in frames([astronaut, group_photo, np.zeros((120, 160, 3), np.uint8)] * 6):
        paths.append(service.frame_path.path)
        service._analyse(frame)
    service._settle()
    assert [n for _, n, _ in seen] == list(range(1, 19))
    assert "sequential" in paths[:2] and "pipelined" in paths  # warm-up, then both measured
    status: dict[str, Any] = service.status()["frame_path"]
    assert status["mode"] == "auto" and not status["measuring"]
    assert set(status["fps"]) == {"sequential", "pipelined"} and min(status["fps"].values()) > 0
    assert status["path"] == service.frame_path.path
    exposition = {m.name: m for m in service.metrics.registry.collect()}
    info = exposition["facefleet_agent_frame_path"].samples[0].labels
    assert info == {"mode": "auto", "path": status["path"]}
    fps = {s.labels["path"]: s.value for s in exposition["facefleet_agent_frame_path_fps"].samples}
    assert fps == status["fps"]


def test_pipeline_off_handles_each_frame_before_the_next(
    tmp_path: Path,
    model_store: ModelStore,
    video: Path,
    astronaut: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = make_service(tmp_path, model_store, "off", {"cam": video})
    try:
        seen = recorded(service, monkeypatch)
        for frame in frames([astronaut] * 3):
            service._analyse(frame)
            assert seen[-1][1] == frame.number and service._pipeline.in_flight == 0
        assert service.status()["frame_path"]["path"] == "sequential"
        count = service.metrics.registry.get_sample_value(
            "facefleet_agent_inference_seconds_count", {"task": "detection", "model": "yunet@2023mar"}
        )
        assert count == 3
    finally:
        service.store.close()


@pytest.mark.parametrize("pipeline", ["on", "off"])
def test_a_frame_whose_analysis_fails_is_skipped_and_too_many_in_a_row_stop_the_service(
    tmp_path: Path,
    model_store: ModelStore,
    video: Path,
    astronaut: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    pipeline: str,
) -> None:
    """The second frame's detection output cannot be decoded: frames 1, 3, 4 and 5 are handled in order, the
    error is in the status; then MAX_FAILED_FRAMES failing frames in a row end the frame loop."""
    service = make_service(tmp_path, model_store, pipeline, {"cam": video})
    seen = recorded(service, monkeypatch)
    decode = detection.decode
    failing: set[int] = {2}
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] in failing:
            raise ValueError("detector output 'score' has 7 values, expected 4200×1")
        return decode(*args, **kwargs)

    monkeypatch.setattr(detection, "decode", flaky)
    try:
        for frame in frames([astronaut] * 5):
            service._analyse(frame)
        service._settle()
        assert [n for _, n, _ in seen] == [1, 3, 4, 5]
        assert service._pipeline.in_flight == 0
        assert (
            "a frame could not be analysed and was skipped: ValueError: detector output" in service.errors[-1]
        )

        failing.update(range(calls[0] + 1, calls[0] + 1 + MAX_FAILED_FRAMES))

        def failing_frames() -> None:
            for frame in frames([astronaut] * (MAX_FAILED_FRAMES + 2)):
                service._analyse(frame)
            service._settle()

        with pytest.raises(ValueError, match="'score'"):
            failing_frames()
        assert len(seen) == 4
    finally:
        service.store.close()
