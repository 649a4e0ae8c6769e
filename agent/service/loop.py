"""The agent's loop: cameras → faces → identities → tracks → events over MQTT, the doors fed with every
frame, commands from `cmd/#` between frames, model switches between two frames, a retained status, and
systemd notifications. After each connect to the broker the frame loop publishes what is retained (Home
Assistant discovery, the cameras' states) and removes what earlier runs left retained that the config no
longer has (facefleet.agent.publish.retained).

Frames are analysed as they come (latest frame wins per camera), the door cameras' first: each turn of the
loop takes every door camera's new frame (several while a face is in view there), then one new frame of the
other cameras in turn, so busy cameras never keep a door waiting for its evidence (_next_frames). One at a
time or pipelined (the next frame's inference runs while the loop handles the last one's faces), whichever
`[service] pipeline` and the measured frames/s choose; frames are handled in order either way. The outbox
makes every event durable first.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from facefleet import __version__
from facefleet.agent.cameras import Camera, CameraFrame, CameraSettings, stop_cameras
from facefleet.agent.config import AgentConfig
from facefleet.agent.domain.records import Person, StoreCorruptError, StoreError
from facefleet.agent.metrics import AgentFigures, AgentMetrics
from facefleet.agent.publish.discovery import discovery_messages, former_discovery_topics
from facefleet.agent.publish.events import (
    AccessEvent,
    AgentEvent,
    Versions,
    face_event,
    mqtt_payload,
)
from facefleet.agent.publish.mqtt import ACK_TIMEOUT_KEEPALIVES, MqttLink
from facefleet.agent.publish.outbox import OutboxPublisher
from facefleet.agent.publish.retained import CameraStates, RetainedMessages
from facefleet.agent.recognition.matching import Decision, Matcher
from facefleet.agent.recognition.snapshots import (
    FaceCrop,
    SnapshotSettings,
    crop_jpeg,
    face_crop,
    reported,
    snapshot_of,
)
from facefleet.agent.recognition.tracking import UNKNOWN, Observation, Tracker, TrackEvent
from facefleet.agent.service import reports
from facefleet.agent.service.command_desk import CommandDesk
from facefleet.agent.service.doors import DoorAccess, DoorOutlets, face_mesh
from facefleet.agent.service.wiring import model_updater, mqtt_settings, sync_settings
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.updates.updater import Switch
from facefleet.core import notify
from facefleet.core.metrics import MetricsBindError
from facefleet.core.paths import model_store_dir
from facefleet.link.errors import LinkError
from facefleet.link.events import FaceSnapshot
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.faces import EXPRESSION_LABELS, Face
from facefleet.vision.images import to_bgr8
from facefleet.vision.models.store import ModelStore
from facefleet.vision.path_choice import FramePath, PathChooser
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer, FramePipeline
from facefleet.vision.precision.cache import PrecisionCache, cache_path
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.runtime import Runtime

if TYPE_CHECKING:
    from facefleet.agent.fleet.sync import FleetSync

log = logging.getLogger(__name__)
MAX_FAILED_FRAMES = 30
"""Frames in a row whose analysis may fail (each logged and skipped) before the service stops with the error,
for systemd to restart it with its models loaded afresh."""
CAMERAS_STOP_S = 5.0
"""How long shutdown waits for the cameras' threads, all together: a stalled stream can hold its read for the
camera's timeout_s, and systemd kills the agent 30 s after asking it to stop."""
DOOR_FRAMES_IN_VIEW = 4
"""Frames of a door's camera analysed in a row, while a face is in view there, before another camera's frame
(one when nobody is): the door decides from several frames of the person in front of it."""
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
        self.store = EmbeddingStore(
            state_dir / "agent.db",
            outbox_limit=config.mqtt.outbox_limit,
            report_limit=config.server.queue_limit,
            snapshot_limit_bytes=config.snapshots.max_pending_mb << 20,
            snapshot_keep_s=86400.0 * config.snapshots.keep_days,
        )
        try:
            self.precisions = PrecisionPlan(  # measures, at start, the models with no cached choice
                self.runtime,
                self.models,
                config.runtime.precision_settings(),
                PrecisionCache(cache_path(state_dir)),
                thresholds=self._guard_thresholds,
                detector=settings.detector,
                measure_in_child=True,  # the candidates' memory goes with the child
            )
            self.analyzer = FaceAnalyzer(self.runtime, self.models, settings, precisions=self.precisions)
            model_id = self.analyzer.embedding_model_id
            assert model_id is not None
            self.model_id = model_id
            self.matcher = Matcher(config.matching.policy())
            self.cameras = {
                c.name: Camera(CameraSettings(c.name, c.source, c.max_fps, c.loop, timeout_s=c.timeout_s))
                for c in config.cameras
            }
            self.trackers = {name: Tracker(min_quality=config.matching.min_quality) for name in self.cameras}
            watched = {door.camera for door in config.doors}
            self._door_cameras = [name for name in self.cameras if name in watched]
            """Cameras a door decides from: their frames are analysed before the other cameras'."""
            self._other_cameras = [name for name in self.cameras if name not in watched]
            self._turn = 0
            """The index in _other_cameras of the camera whose new frame is taken next."""
            self.stop_event = threading.Event()
            self._stop_requested = False
            self.errors: list[str] = []
            self.people: dict[str, Person] = {}
            self.people_revision = -1
            self.frames_analysed = dict.fromkeys(self.cameras, 0)
            self.model_mismatches = 0
            self._switches: queue.Queue[Switch] = queue.Queue()
            self.outbox = OutboxPublisher(
                self.store,
                self._publish,
                ack_timeout_s=ACK_TIMEOUT_KEEPALIVES * config.mqtt.keepalive_s,
                stalled=self._broker_stalled,
            )
            self.metrics = AgentMetrics(self.figures)
            outlets = DoorOutlets(
                self.metrics, self.store.audit, self._emit, self._command, self._guarded, self.versions
            )
            mesh = face_mesh(config, self.runtime, self.models, self.precisions)
            self.doors = DoorAccess(config, self.device_id, self._person, mesh, outlets)
            self.doors.use_model(self.model_id)
            self.commands = CommandDesk(
                self.device_id,
                self.doors,
                self.outbox if config.mqtt.enabled else None,
                self._guarded,
                self._record_error,
                self._person,
            )
            self.link = self._make_link() if config.mqtt.enabled else None
            self._connected_anew = threading.Event()
            """Set on each connect to the broker: the frame loop publishes what is retained."""
            self.retained, self.camera_states = None, None
            if self.link is not None:
                self.retained = self._retained_messages(self.link)
                self.camera_states = CameraStates(self.link, list(self.cameras))
            self.sync = self._make_sync() if config.server.enabled else None
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
        except BaseException:  # a refused start leaves no store open
            self.store.close()
            raise

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
            if self.retained is not None:
                self._guarded(self.retained.start)
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
                self.commands.execute_waiting()
                self._apply_switches()
                self._refresh_gallery()
                self._publish_retained()
                busy = self._next_frames(last_frame)
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

    def _next_frames(self, last_frame: dict[str, int]) -> bool:
        """One turn of the frame schedule: every door camera's new frame (up to DOOR_FRAMES_IN_VIEW of them
        while a face is in view there), then the next new frame of the other cameras, taken in turn. A door
        gets a frame analysed after each other camera's frame however many cameras are busy, and the other
        cameras keep at least one frame in 1 + DOOR_FRAMES_IN_VIEW × doors. Whether a frame was analysed."""
        busy = False
        for name in self._door_cameras:
            for _ in range(DOOR_FRAMES_IN_VIEW if self.trackers[name].active_tracks else 1):
                if not self._next_frame(name, last_frame):
                    break
                busy = True
        others = self._other_cameras
        for turn in range(len(others)):
            name = others[(self._turn + turn) % len(others)]
            if self._next_frame(name, last_frame):
                self._turn = (self._turn + turn + 1) % len(others)
                return True
        return busy

    def _next_frame(self, name: str, last_frame: dict[str, int]) -> bool:
        """Analyse camera `name`'s newest frame if it has one not analysed yet (whether it had); a camera
        that ended or stopped has its tracks finished."""
        camera = self.cameras[name]
        frame = camera.next_frame(last_frame[name], timeout=0.0)
        if frame is not None:
            last_frame[name] = frame.number
            self._analyse(frame)
            return True
        if camera.status.state in ("ended", "stopped") and self.trackers[name].active_tracks:
            self._settle()
            self._publish_track_events(name, self.trackers[name].finish(), time.time())
        return False

    def _shutdown(self) -> None:
        notify.notify("STOPPING=1", "STATUS=stopping: flushing events")
        stalled = stop_cameras(self.cameras.values(), CAMERAS_STOP_S)
        if stalled:
            log.warning(
                "camera(s) %s still inside a read at shutdown: left to end with the process",
                ", ".join(stalled),
            )
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
            self._record_error(message)
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
        self.cameras[frame.camera].analysed(frame)
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
        events = self.trackers[frame.camera].update(observations, frame.captured_at, frame.seen_at)
        self._publish_track_events(frame.camera, events, frame.captured_at)
        self._update_camera_state(frame.camera, faces, decisions)
        track_ids = self.trackers[frame.camera].last_track_ids
        self.doors.observe(frame, faces, decisions, track_ids, self.matcher, self.model_id)

    # ---- events, status, commands ------------------------------------------------------------------------

    def _publish_track_events(self, camera: str, events: list[TrackEvent], when: float) -> None:
        for track in events:
            person = self.people.get(track.identity)
            name = person.name if person else None
            snapshot = self._snapshot(camera, track)
            self._emit(face_event(self.device_id, camera, track, name, self.versions(), when, snapshot))

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
            if config.publish_latest and self.link is not None and self.camera_states is not None:
                jpeg = snapshot.crop_jpeg if snapshot is not None else crop_jpeg(best, self.snapshot_settings)
                if self.link.publish_latest(f"cameras/{camera}/face", jpeg, config.latest_expiry_s):
                    self.camera_states.face_published(camera, track.identity if known else None)
        except ValueError as exc:  # LinkError too: a JPEG past the link's limits
            log.error("camera %s: no snapshot of track %s: %s", camera, track.track_id, exc)
        return snapshot

    def _emit(self, event: AgentEvent) -> None:
        """Publish an event over MQTT and queue it for the fleet server (each where there is one), both in
        one store transaction: a crash or a full disk leaves both or neither."""
        self.metrics.events.labels("access" if isinstance(event, AccessEvent) else event.track.kind).inc()
        sync = self.sync
        report = None
        if sync is not None:
            try:
                report = sync.prepare(event)
            except (LinkError, StoreError) as exc:  # past the link's limits: published, but not reported
                log.error(
                    "event %s is not reported to the server: %s",
                    event.envelope.event_id,
                    exc,
                    extra={"device_id": self.device_id, "event_id": event.envelope.event_id},
                )
        payload = json.dumps(mqtt_payload(event))
        if self.link is not None and sync is not None and report is not None:
            queued = report
            self._guarded(lambda: self.store.queue_event(event.topic, payload, queued))
            self.outbox.wake()
            sync.wake()
        elif self.link is not None:
            self._guarded(lambda: self.outbox.submit(event.topic, payload))
        elif sync is not None and report is not None:
            queued = report
            self._guarded(lambda: sync.queue(queued))

    def _command(self, topic_suffix: str, payload: dict[str, Any], expiry_s: int) -> bool:
        """Publish a command (a relay's 'open') now, QoS 0 and expiring: never queued, never replayed."""
        link = self.link
        if link is None:
            return False
        return link.publish(topic_suffix, json.dumps(payload).encode(), qos=0, expiry_s=expiry_s) is not None

    def _guarded(self, write: Callable[[], object]) -> None:
        """Run a store write; a full disk or a locked file is logged and reported, never fatal."""
        try:
            write()
        except StoreError as exc:
            message = f"store write failed: {exc}"
            log.error("%s", message)
            self._record_error(message)

    def _record_error(self, message: str) -> None:
        """Keep `message` among the last ten errors (the status shows the last five)."""
        self.errors = [*self.errors[-9:], message]

    def _publish(self, topic_suffix: str, payload: bytes, qos: int) -> int | None:
        return None if self.link is None else self.link.publish(topic_suffix, payload, qos)

    def status(self) -> dict[str, Any]:
        """The retained `status` message (reports.status)."""
        return reports.status(self)

    def figures(self) -> AgentFigures:
        """The metrics endpoint's figures (reports.figures)."""
        return reports.figures(self)

    def health(self) -> dict[str, float]:
        """The health figures sent to the fleet server (reports.health)."""
        return reports.health(self)

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
        if self.camera_states is None:
            return
        best = max(faces, key=lambda f: f.quality.score, default=None)
        expression = best.expression if best is not None else None
        matched = next((d.person_id for d in decisions if d.person_id), None)
        label = expression.label if expression is not None else None
        self.camera_states.update(camera, len(faces), matched, label)

    def _publish_retained(self) -> None:
        """After a connect: remove what earlier runs left retained and this config no longer has, publish
        the discovery configs and every camera's state. Forget the removals the broker acknowledged."""
        if self.retained is None or self.camera_states is None:
            return
        if self._connected_anew.is_set():
            self._connected_anew.clear()  # first: a connect while publishing publishes again
            self.retained.announce()
            self.camera_states.republish()
        self._guarded(self.retained.settle)

    def _retained_messages(self, link: MqttLink) -> RetainedMessages:
        """What this config keeps retained: the status, discovery configs (with discovery_prefix), each
        camera's state, and its face crop with snapshots.publish_latest; and what agents that kept no record
        of them published (their discovery topics, and face crops)."""
        cameras, doors = list(self.cameras), list(self.doors.controllers)
        discovery_prefix = self.config.mqtt.discovery_prefix
        publish_latest = self.config.snapshots.publish_latest
        discovery = []
        former = [link.topic(f"cameras/{camera}/face") for camera in cameras]
        if discovery_prefix:
            discovery = discovery_messages(
                discovery_prefix, self.prefix, self.device_id, __version__, cameras, doors, publish_latest
            )
            former += former_discovery_topics(discovery_prefix, self.device_id, cameras, doors)
        topics = [link.topic("status"), *(link.topic(f"cameras/{camera}/state") for camera in cameras)]
        if publish_latest:
            topics += [link.topic(f"cameras/{camera}/face") for camera in cameras]
        return RetainedMessages(link, self.store.retained, discovery, topics, former)

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
            self.doors.use_model(self.model_id)
        self.analyzer = switch.analyzer
        self._pipeline = self._new_pipeline()
        self.frame_path.restart()  # other models, other costs
        log.info("now running %s model %s", manifest.task, manifest.model_id)

    # ---- helpers ------------------------------------------------------------------------------------------

    def _refresh_gallery(self) -> None:
        """Bring the matcher up to the store's gallery, and the people the doors check (groups) with it:
        also when a model switch moved the matcher on by itself."""
        try:
            self.matcher.refresh(self.store.gallery, [self.model_id])
            if (self.matcher.revision or 0) != self.people_revision:
                self.people = {p.person_id: p for p in self.store.gallery.people()}
                self.people_revision = self.matcher.revision or 0
                if self.camera_states is not None:  # no retained state names a person erased
                    self.camera_states.forget_people(self.people)
        except StoreCorruptError:
            raise  # stop (exit 74): deciding on without the store, or writing into it, is not safe
        except StoreError as exc:
            log.error("gallery refresh: %s (keeping the last gallery)", exc)

    def _guard_thresholds(self, model_id: str) -> tuple[float, ...]:
        """The thresholds a faster precision of embedding model model_id must not change a decision at:
        the config's, and the fleet server's cluster threshold as its last Register told this agent."""
        try:
            cluster_threshold = self.store.sync.cluster_threshold()
        except StoreError as exc:
            log.error("the server's cluster threshold is not read (%s); guarding without it", exc)
            cluster_threshold = None
        return self.config.decision_thresholds(model_id, cluster_threshold)

    def _person(self, person_id: str) -> Person | None:
        """The person as the gallery last loaded them (the dict is replaced at each refresh)."""
        return self.people.get(person_id)

    def versions(self) -> Versions:
        models = {"detection": self.analyzer.detector_model.manifest.model_id, "embedding": self.model_id}
        if self.analyzer.expression_model is not None:
            models["expression"] = self.analyzer.expression_model.manifest.model_id
        if self.analyzer.attributes_model is not None:
            models["attributes"] = self.analyzer.attributes_model.manifest.model_id
        return Versions(__version__, self.runtime.version, models, self.people_revision)

    def _make_link(self) -> MqttLink:
        settings = mqtt_settings(self.config, self.prefix, self.device_id)
        return MqttLink(
            settings,
            self.outbox.acknowledged,
            self.commands.queue,
            self._connection_changed,
            self.commands.refuse_oversized,
            self.outbox.refused,
            self._record_error,
        )

    def _make_sync(self) -> FleetSync:
        # imported here: gRPC and cryptography cost an agent without [server] about 17 MB of memory
        from facefleet.agent.fleet.sync import FleetSync

        models = self.versions().models
        settings = sync_settings(self.config, self.device_id, self.model_id, models, self.analyzer.runs_at())
        updater = model_updater(self.config, self.models, lambda: self.analyzer, self._queue_switch)
        return FleetSync(settings, self.store, self.health, updater)

    def _connection_changed(self, connected: bool, reason: str) -> None:
        self.outbox.connection_changed(connected)
        if connected:
            self._connected_anew.set()

    def _broker_stalled(self, waited_s: float) -> None:
        """The broker has left the oldest outbox message unanswered for waited_s: connect again."""
        if self.link is not None:
            self.link.drop_stalled_connection(waited_s)


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
