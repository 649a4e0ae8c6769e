"""Frames through the agent's real pipeline (detection, embedding, the gallery, the face mesh) into door
controllers, frame by frame at a fixed rate and without cameras or a broker: every frame is decided on, so
a result does not depend on how fast the machine is. For the liveness tests and benchmark."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from facefleet.agent.config import AgentConfig, DoorConfig, MatchingConfig
from facefleet.agent.domain.records import Person
from facefleet.agent.recognition.doors import AccessDecision, DoorController
from facefleet.agent.recognition.gallery import Gallery
from facefleet.agent.recognition.matching import Decision, DecisionPolicy, Matcher
from facefleet.vision.config import QualityConfig
from facefleet.vision.mesh import FaceMesh, face_sample
from facefleet.vision.pipeline import FaceAnalyzer

Frame = npt.NDArray[np.uint8]
START = 1_800_000_000.0
"""Time of a replay's first frame (s since the epoch)."""


@dataclass
class Outcome:
    """Decisions per door, each with the index of the frame that made it."""

    decisions: dict[str, list[tuple[int, AccessDecision]]] = field(default_factory=dict)

    def granted(self, door: str) -> list[tuple[int, AccessDecision]]:
        return [(i, d) for i, d in self.decisions[door] if d.granted]

    def denied(self, door: str) -> list[tuple[int, AccessDecision]]:
        return [(i, d) for i, d in self.decisions[door] if not d.granted]


class DoorReplay:
    """People enrolled from one image each (group "staff"), and doors that let staff in, deciding as the
    agent does: the door's own threshold, faces below the [quality] gate left undecided."""

    def __init__(self, analyzer: FaceAnalyzer, mesh: FaceMesh, people: Mapping[str, Frame]) -> None:
        self.analyzer, self.mesh = analyzer, mesh
        model_id = analyzer.embedding_model_id
        assert model_id is not None
        self.model_id = model_id
        embeddings = []
        for person_id, image in people.items():
            faces = analyzer.analyze(image)
            assert faces, f"no face to enrol {person_id!r} from"
            largest = max(faces, key=lambda f: f.detection.size_wh[0] * f.detection.size_wh[1])
            assert largest.embedding is not None
            embeddings.append(largest.embedding)
        self.people = {pid: Person(pid, pid, ("staff",)) for pid in people}
        self.matcher = Matcher(MatchingConfig().policy())
        self.gate = QualityConfig().policy()
        self.matcher.set_gallery(Gallery.build(model_id, list(people), np.stack(embeddings)))

    def run(self, frames: Iterable[Frame], fps: float, **doors: Mapping[str, Any]) -> Outcome:
        """Play frames at `fps` to doors named by keyword, each with its DoorConfig settings, e.g.
        run(frames, 30, blink={"liveness": "blink"})."""
        configs = {
            name: DoorConfig.model_validate(
                {"name": name, "camera": "cam", "allow_groups": ["staff"], **rules}
            )
            for name, rules in doors.items()
        }
        controllers = {name: DoorController(config, self.people.get) for name, config in configs.items()}
        policies = {}
        for name, config in configs.items():  # each door's own threshold, as the agent applies it
            threshold = AgentConfig().door_threshold(config, self.model_id).threshold
            policies[name] = DecisionPolicy({self.model_id: threshold}, threshold, min_quality=0.3)
        outcome = Outcome({name: [] for name in controllers})
        checking = any(c.liveness is not None for c in controllers.values())
        for index, frame in enumerate(frames):
            now = START + index / fps
            faces = [f for f in self.analyzer.analyze(frame) if f.embedding is not None]
            decision = sample = None
            if faces:
                face = max(faces, key=lambda f: f.detection.size_wh[0] * f.detection.size_wh[1])
                assert face.embedding is not None
                decision = self.matcher.identify(face.embedding, self.model_id, quality=face.quality.score)
                if checking:
                    sample = face_sample(frame, self.mesh(frame, face.detection))
            gate = self.gate.rejections(face.quality) if faces else []
            for name, controller in controllers.items():
                at_door = None
                if decision is not None and gate:  # below the [quality] gate, as the agent leaves it
                    threshold = policies[name].threshold(self.model_id)
                    at_door = Decision("undecided", self.model_id, None, None, None, threshold, gate[0])
                elif decision is not None:
                    at_door = policies[name].decide(self.model_id, decision.candidates, face.quality.score)
                result = controller.observe(at_door, None, now, sample)
                if result is not None:
                    outcome.decisions[name].append((index, result))
        return outcome
