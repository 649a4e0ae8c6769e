"""Liveness at doors in the running agent (real mosquitto, real models): one camera watched by a door
without liveness, one asking for a blink and one for a blink and a head turn, shown the real man of the
packaged footage and then photos of three enrolled people held up to it."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facefleet.agent.config import load_config
from facefleet.agent.domain.records import Embedding, Person, PersonUpsert
from facefleet.agent.service.loop import AgentService
from facefleet.agent.store.database import EmbeddingStore
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from tests.mosquitto import Mosquitto
from tests.videos import write_video
from tests.vision.liveness_media import attack_photos, attack_video, genuine_frames

pytestmark = pytest.mark.slow  # a broker and a 30 s camera video in real time

PREFIX = "facefleet/door-box/"
FPS = 8.0
ATTACKS = {"astronaut": "tilted", "feat-f1": "screen"}
"""Enrolled person (from their photo) → how their photo is presented (tests/agent/test_liveness_attacks.py
presents every kind to the doors without the service)."""


@contextlib.contextmanager
def running(service: AgentService) -> Iterator[AgentService]:
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        yield service
    finally:
        service.stop_event.set()
        runner.join(30)


def config_text(port: int, video: Path) -> str:
    doors = "".join(
        f'[[doors]]\nname = "{name}"\ncamera = "door"\nallow_groups = ["staff"]\n{extra}\n'
        for name, extra in (
            ("open", ""),
            ("blink", 'liveness = "blink"\nliveness_timeout_s = 3.0'),
            ("turn", 'liveness = "blink_turn"\nliveness_timeout_s = 3.0'),
        )
    )
    return f"""
device_id = "door-box"
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max_s = 1
[[cameras]]
name = "door"
source = "{video}"
{doors}"""


@pytest.fixture
def state_dir(model_store: ModelStore, analyzer: FaceAnalyzer, tmp_path: Path) -> Path:
    """Models, and three people of group staff: the man (from a frame of his footage) and the people of
    ATTACKS (each from their photo)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    photos = attack_photos(analyzer)
    sources = {"man": genuine_frames()[0], **{person: photos[person] for person in ATTACKS}}
    people = []
    for person_id, image in sources.items():
        face = max(analyzer.analyze(image), key=lambda f: f.detection.size_wh[0] * f.detection.size_wh[1])
        assert face.embedding is not None
        embedding = Embedding("sface@2021dec", face.embedding)
        people.append(PersonUpsert(Person(person_id, person_id, ("staff",)), (embedding,)))
    with EmbeddingStore(state / "agent.db") as store:
        store.gallery.apply_batch(people)
    return state


def door_video(analyzer: FaceAnalyzer, path: Path) -> Path:
    """The man (frames 10–59 of his footage, the blink at 2 s), then each photo attack for 5 s; a second of
    empty wall between them."""
    wall = np.full((480, 640, 3), 150, np.uint8)
    man = genuine_frames()[10:60]
    frames = [np.pad(frame, ((60, 60), (0, 0), (0, 0)), constant_values=150) for frame in man]
    photos = attack_photos(analyzer)
    for person, kind in ATTACKS.items():
        frames += [wall] * 8 + attack_video(photos[person], kind, frames=40)
    return write_video(path, [*frames, *[wall] * 8], FPS)


def test_photos_are_refused_where_liveness_is_asked_and_the_real_man_gets_in(
    state_dir: Path,
    analyzer: FaceAnalyzer,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
) -> None:
    video = door_video(analyzer, tmp_path / "door.avi")
    config_path = tmp_path / "agent.toml"
    config_path.write_text(config_text(broker.port, video))
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    service = AgentService(load_config(config_path), state_dir)
    with running(service):
        watcher.wait_for(lambda: service.cameras["door"].status.state == "ended", timeout=120)
    watcher.wait_for(lambda: watcher.on(PREFIX + "status")[-1]["state"] == "offline")
    decisions = {door: watcher.on(PREFIX + f"access/{door}") for door in ("open", "blink", "turn")}
    granted = {
        door: [e["person_id"] for e in events if e["decision"] == "granted"]
        for door, events in decisions.items()
    }
    assert set(granted["open"]) == {"man", *ATTACKS}  # every photo fools recognition alone
    assert granted["blink"] == ["man"]  # only the man, who blinked
    (man,) = [e for e in decisions["blink"] if e["decision"] == "granted"]
    assert man["reason"] == "recognised and allowed; liveness passed (blink)"
    assert granted["turn"] == []  # he never turned his head; the photos neither blinked nor turned
    refusals = [e for e in decisions["blink"] + decisions["turn"] if e["decision"] == "denied"]
    assert {e["person_id"] for e in refusals if e["reason"].startswith("liveness: no blink")} == set(ATTACKS)
    assert any(e["reason"] == "liveness: no head turn of 15° within 3.0 s" for e in decisions["turn"])


def test_a_door_with_liveness_refuses_to_start_without_the_face_mesh(
    state_dir: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    models = tmp_path / "models-without-mesh"
    models.mkdir()
    for task in ("detection", "embedding", "expression"):
        (models / task).symlink_to((state_dir / "models" / task).resolve(), target_is_directory=True)
    active = (state_dir / "models" / "active.json").read_text()
    (models / "active.json").write_text(active.replace('"landmarks"', '"unused"'))
    (state_dir / "models").unlink()
    (state_dir / "models").symlink_to(models, target_is_directory=True)
    config_path = tmp_path / "agent.toml"
    config_path.write_text(config_text(broker.port, tmp_path))
    with pytest.raises(ModelStoreError, match=r"door 'blink' checks liveness.*models import-defaults"):
        AgentService(load_config(config_path), state_dir)
    assert str(state_dir / "agent.db") not in open_files()  # the refused start closed the store it opened


def open_files() -> set[str]:
    """The files this process holds open (Linux)."""
    opened = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            opened.add(os.readlink(f"/proc/self/fd/{fd}"))
    return opened
