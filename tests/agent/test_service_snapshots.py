"""Face snapshots in the running agent: real mosquitto, real models, a camera that is a video made of real
photos (the enrolled astronaut, then a stranger). The best face of each ended track waits in the store for
an unreachable server by the [snapshots] policy, MQTT carries only its id, and the latest crop of each
camera can be published retained as a JPEG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.config import load_config
from facefleet.agent.publish.discovery import object_id
from facefleet.agent.service.loop import AgentService
from facefleet.agent.store.database import EmbeddingStore
from facefleet.link.events import Event
from facefleet.server.api import certs
from facefleet.vision.pipeline import FaceAnalyzer
from tests.agent.recognition.test_snapshots import decode, embed_aligned
from tests.agent.test_service import running, state_dir, stranger  # noqa: F401 (a fixture)
from tests.mosquitto import Mosquitto, free_port
from tests.videos import write_video

pytestmark = pytest.mark.slow  # the service end to end: a broker and a camera in real time

PREFIX = "facefleet/door-box/"


def config_file(tmp_path: Path, port: int, video: Path, snapshots: str, server: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
device_id = "door-box"
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max_s = 1
[service]
status_interval_s = 1
[[cameras]]
name = "door"
source = "{video}"
max_fps = 8
[snapshots]
{snapshots}
{server}"""
    )
    return path


def unreachable_server(tmp_path: Path) -> str:
    """A [server] section with real certificates for a port nobody listens on: reports wait in the store."""
    tls = tmp_path / "tls"
    certs.init_ca(tls, server_names=["127.0.0.1"])
    device = certs.issue_device(tls, "door-box")
    return f"""[server]
enabled = true
address = "127.0.0.1:{free_port()}"
ca_file = "{tls / "ca.pem"}"
cert_file = "{device.cert}"
key_file = "{device.key}"
reconnect_max_s = 60
"""


@pytest.fixture
def door_video(tmp_path: Path, astronaut: npt.NDArray[np.uint8], group_photo: npt.NDArray[np.uint8]) -> Path:
    """The enrolled astronaut, an empty scene, a stranger, an empty scene (each face a track that ends)."""
    blank = np.full_like(astronaut, 40)
    frames = [astronaut] * 8 + [blank] * 14 + [stranger(group_photo)] * 8 + [blank] * 14
    return write_video(tmp_path / "door.avi", frames, fps=8)


def stranger_embedding(analyzer: FaceAnalyzer, video: Path) -> npt.NDArray[np.float32]:
    """The stranger's embedding in the frames the agent read (the same decoder, the same pixels)."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    (face,) = analyzer.analyze(frames[26])
    assert face.embedding is not None
    return face.embedding


def ended_faces(watcher: Any) -> list[dict[str, Any]]:
    return [e for e in watcher.on(PREFIX + "events/face") if e["event"] == "ended"]


@pytest.mark.parametrize("policy", ["unknown", "all", "none"])
def test_the_policy_picks_the_tracks_whose_best_face_waits_for_the_server(
    policy: str,
    state_dir: Path,  # noqa: F811
    door_video: Path,
    analyzer: FaceAnalyzer,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
) -> None:
    config = config_file(
        tmp_path, broker.port, door_video, f'report = "{policy}"', unreachable_server(tmp_path)
    )
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    service = AgentService(load_config(config), state_dir)
    with running(service):
        watcher.wait_for(lambda: len(ended_faces(watcher)) >= 2, timeout=60)
        watcher.wait_for(lambda: service.store.reports.count() >= 4)  # decided and ended, both faces
        status, health = service.status(), service.health()
    published = {e["event_id"]: e for e in watcher.on(PREFIX + "events/face")}
    with EmbeddingStore(state_dir / "agent.db") as store:
        queued = [r.event for r in store.reports.pending()]
    ended: dict[str, list[Event]] = {"eileen": [], "unknown": []}
    for event in queued:
        payload = published[event.event_id]
        assert payload["snapshot_id"] == (event.event_id if event.snapshot is not None else None)
        assert len(json.dumps(payload)) < 2000  # never the image
        if payload["event"] == "ended":
            ended[event.person_id or event.decision].append(event)
        else:
            assert event.snapshot is None  # only a track's end carries its best face
    assert ended["eileen"] and ended["unknown"]
    expected = {"unknown": (False, True), "all": (True, True), "none": (False, False)}[policy]
    assert all((e.snapshot is not None) == expected[0] for e in ended["eileen"])
    assert all((e.snapshot is not None) == expected[1] for e in ended["unknown"])
    snapshots = [e.snapshot for e in queued if e.snapshot is not None]
    assert status["snapshots"]["pending"] == health["snapshots_pending"] == len(snapshots)
    assert status["snapshots"]["dropped"] == health["snapshots_dropped"] == 0
    if not expected[1]:
        return
    (unknown,) = ended["unknown"]
    snapshot = unknown.snapshot
    assert snapshot is not None
    crop = decode(snapshot.crop_jpeg)
    assert crop.shape == (112, 112, 3)
    assert max(decode(snapshot.context_jpeg).shape[:2]) <= 320
    assert (snapshot.embedding.model_id, snapshot.embedding.source) == ("sface@2021dec", "camera:door")
    assert float(snapshot.embedding.vector @ stranger_embedding(analyzer, door_video)) > 0.99
    assert float(embed_aligned(analyzer, crop) @ snapshot.embedding.vector) > 0.9  # the crop is that face


def test_each_cameras_latest_face_crop_is_published_retained_as_a_jpeg(
    state_dir: Path,  # noqa: F811
    door_video: Path,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
) -> None:
    config = config_file(tmp_path, broker.port, door_video, 'report = "all"\npublish_latest = true')
    watcher = subscriber_factory(broker.port, "#")
    service = AgentService(load_config(config), state_dir)
    with running(service):
        watcher.wait_for(lambda: len(ended_faces(watcher)) >= 2, timeout=60)
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "cameras/door/face")) >= 4)
    crops = watcher.on(PREFIX + "cameras/door/face")
    assert all(isinstance(c, bytes) and decode(c).shape == (112, 112, 3) for c in crops)
    assert all(e["snapshot_id"] is None for e in watcher.on(PREFIX + "events/face"))  # no server: no report
    image_entity = f"homeassistant/image/{object_id('door-box', 'door', 'face')}/config"
    discovery = watcher.on(image_entity)[0]
    assert discovery["image_topic"] == PREFIX + "cameras/door/face"
    assert discovery["content_type"] == "image/jpeg"
    later = subscriber_factory(broker.port, PREFIX + "cameras/door/face")  # after the agent stopped
    later.wait_for(lambda: later.messages)
    ((_, latest, retained),) = later.messages
    assert retained and latest == crops[-1]
    assert 0 < (later.expiries[PREFIX + "cameras/door/face"] or 0) <= 600  # the broker forgets it by then

    config.write_text(config.read_text().replace("publish_latest = true", "publish_latest = false"))
    again = AgentService(load_config(config), state_dir)  # turned off: what the last run left goes
    with running(again):
        watcher.wait_for(lambda: b"" in watcher.on(PREFIX + "cameras/door/face"))
    after = subscriber_factory(broker.port, "#")
    after.wait_for(lambda: after.on(PREFIX + "status"))
    assert after.on(PREFIX + "cameras/door/face") == []
    assert after.on(image_entity) == []
