"""Frames through the agent's real pipeline (detection, embedding, the gallery, the face mesh) into the
agent's own doors (agent.service.doors.DoorAccess), frame by frame at a fixed rate and without cameras or a
broker: every frame is decided on, so a result does not depend on how fast the machine is. For the door and
liveness tests and the liveness benchmark."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from facefleet.agent.cameras import CameraFrame
from facefleet.agent.config import AgentConfig, MatchingConfig
from facefleet.agent.domain.records import Person
from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.recognition.gallery import Gallery
from facefleet.agent.recognition.matching import Matcher
from facefleet.agent.service.doors import DoorAccess
from facefleet.vision.mesh import FaceMesh
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


class RecordingDoors(DoorAccess):
    """The agent's doors, with each decision recorded instead of acted on (no audit, events or relay)."""

    def __init__(
        self, config: AgentConfig, person: Callable[[str], Person | None], mesh: FaceMesh | None
    ) -> None:
        super().__init__(config, "replay", person, mesh, outlets=None)  # type: ignore[arg-type]
        self.decided: list[AccessDecision] = []

    def act(self, decision: AccessDecision, camera: str) -> None:
        self.decided.append(decision)


class DoorReplay:
    """People enrolled from one image each (group "staff"), and the agent's doors letting staff in, driven as
    its frame loop drives them: the faces of each frame identified, then handed to the doors."""

    CAMERA = "cam"

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
        self.matcher.set_gallery(Gallery.build(model_id, list(people), np.stack(embeddings)))

    def run(self, frames: Iterable[Frame], fps: float, **doors: Mapping[str, Any]) -> Outcome:
        """Play frames at `fps` to doors named by keyword, each with its [[doors]] settings, e.g.
        run(frames, 30, blink={"liveness": "blink"})."""
        config = AgentConfig.model_validate(
            {
                "cameras": [{"name": self.CAMERA, "source": "0"}],
                "doors": [
                    {"name": name, "camera": self.CAMERA, "allow_groups": ["staff"], **rules}
                    for name, rules in doors.items()
                ],
            }
        )
        checking = any(door.liveness != "off" for door in config.doors)
        access = RecordingDoors(config, self.people.get, self.mesh if checking else None)
        access.use_model(self.model_id)
        outcome = Outcome({name: [] for name in doors})
        for index, image in enumerate(frames):
            at = START + index / fps
            frame = CameraFrame(self.CAMERA, index + 1, at, image, seen_at=at)
            faces = [f for f in self.analyzer.analyze(image) if f.embedding is not None]
            decisions = [
                self.matcher.identify(f.embedding, self.model_id, quality=f.quality.score)  # type: ignore[arg-type]
                for f in faces
            ]
            seen = len(access.decided)
            access.observe(frame, faces, decisions, ["replayed"] * len(faces), self.matcher, self.model_id)
            for decision in access.decided[seen:]:
                outcome.decisions[decision.door].append((index, decision))
        return outcome
