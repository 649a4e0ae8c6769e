"""What the running agent says about itself: the retained MQTT status, the figures of the metrics
endpoint, and the health figures sent to the fleet server with every report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from facefleet.agent.cameras import Camera
from facefleet.agent.domain.clock import clock_warning
from facefleet.agent.domain.fleet import SYNC_HEALTH
from facefleet.agent.domain.records import Person
from facefleet.agent.metrics import AgentFigures, CameraFigures
from facefleet.agent.publish.certificates import Validity, expiry_warning, validity_of
from facefleet.agent.publish.events import Versions
from facefleet.agent.publish.mqtt import MqttLink
from facefleet.agent.service.command_desk import CommandDesk
from facefleet.agent.service.doors import DoorAccess
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.updates.statuses import status_to_json
from facefleet.link.checks import MAX_HEALTH_ENTRIES
from facefleet.vision.path_choice import PathChooser
from facefleet.vision.pipeline import FaceAnalyzer

if TYPE_CHECKING:
    from facefleet.agent.fleet.sync import FleetSync

CAMERA_HEALTH = ("fps", "analysed_fps", "dropped", "running")
"""The health figures of each camera, as `camera.<name>.<figure>`."""


class ReportedAgent(Protocol):
    """What the reports read of the running agent (loop.AgentService)."""

    device_id: str
    cameras: dict[str, Camera]
    frames_analysed: dict[str, int]
    store: EmbeddingStore
    link: MqttLink | None
    sync: FleetSync | None
    analyzer: FaceAnalyzer
    doors: DoorAccess
    commands: CommandDesk
    frame_path: PathChooser
    people: dict[str, Person]
    people_revision: int
    model_mismatches: int
    errors: list[str]

    def versions(self) -> Versions: ...


def status(agent: ReportedAgent) -> dict[str, Any]:
    """The retained `status` message: versions, precisions, cameras, doors, queues, model rollouts, the
    frame path and the last errors."""
    cameras = {
        name: {
            "state": s.state,
            "fps": s.fps,
            "frames_read": s.frames_read,
            "frames_dropped": s.frames_dropped,
            "frames_analysed": agent.frames_analysed[name],
            "analysed_fps": camera.analysed_fps,
            "analysed_age_s": camera.analysed_age_s,
            "error": s.error,
            "retry_in_s": s.retry_in_s,
        }
        for name, camera in agent.cameras.items()
        for s in [camera.status]
    }
    store = agent.store
    updater = agent.sync.updater if agent.sync is not None else None
    return {
        "schema": 1,
        "state": "online",
        "device_id": agent.device_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": agent.versions().to_json(),
        "precisions": agent.analyzer.runs_at(),
        "gallery_revision": agent.people_revision,
        "cameras": cameras,
        "doors": sorted(agent.doors.controllers),
        "commands": {"claims_over_rate": agent.commands.claims_over_rate},
        "outbox": {
            "pending": store.outbox.count(),
            "dropped": store.outbox.dropped(),
            "rejected": store.outbox.rejected(),
        },
        "server": agent.sync.status() if agent.sync is not None else None,
        "snapshots": {
            "pending": store.snapshots.count(),
            "bytes": store.snapshots.size(),
            "dropped": store.snapshots.dropped(),
        },
        "models": [] if updater is None else [status_to_json(s) for s in updater.statuses()],
        "frame_path": agent.frame_path.status(),
        "errors": agent.errors[-5:],
        "warnings": warnings(agent),
    }


def figures(agent: ReportedAgent) -> AgentFigures:
    """What the metrics endpoint reads at scrape time (from its own thread)."""
    cameras = {
        name: CameraFigures(
            frames_read=s.frames_read,
            frames_dropped=s.frames_dropped,
            frames_analysed=agent.frames_analysed[name],
            running=s.state == "running",
            analysed_fps=camera.analysed_fps,
            analysed_age_s=camera.analysed_age_s,
        )
        for name, camera in agent.cameras.items()
        for s in [camera.status]
    }
    versions = agent.versions()
    store, link, sync = agent.store, agent.link, agent.sync
    return AgentFigures(
        cameras=cameras,
        outbox_pending=store.outbox.count() if link is not None else None,
        reports_pending=store.reports.count() if sync is not None else None,
        reports_refused=store.reports.refused() if sync is not None else None,
        clock_implausible=_clock_warning(agent) is not None,
        snapshots_pending=store.snapshots.count() if sync is not None else None,
        mqtt_connected=link.connected if link is not None else None,
        server_connected=sync.connected if sync is not None else None,
        models=dict(versions.models),
        gallery_revision=max(agent.people_revision, 0),
        people=len(agent.people),
        versions={"agent": versions.agent, "openvino": versions.openvino},
        frame_path=agent.frame_path.status(),
        certificate_expiry_s={
            kind: validity.seconds_left(time.time()) for kind, (_, validity) in certificates(agent).items()
        },
    )


def health(agent: ReportedAgent) -> dict[str, float]:
    """Figures for the fleet server's dashboard (sent with every report): the totals, then per camera
    `camera.<name>.fps` (read), `.analysed_fps`, `.dropped` (frames dropped) and `.running` (1 or 0), in the
    config's order. The
    server takes at most MAX_HEALTH_ENTRIES figures, some of them the link's own (SYNC_HEALTH): with more
    cameras than fit beside the totals, the last cameras are left out (whole; `cameras` still counts them
    all)."""
    analysed = [camera.analysed_fps for camera in agent.cameras.values()]
    cameras = [camera.status for camera in agent.cameras.values()]
    store = agent.store
    figures = {
        "frames_analysed": float(sum(agent.frames_analysed.values())),
        "fps": float(sum(s.fps for s in cameras)),
        "cameras": float(len(cameras)),
        "cameras_running": float(sum(s.state == "running" for s in cameras)),
        "outbox_pending": float(store.outbox.count()),
        "outbox_dropped": float(store.outbox.dropped()),
        "outbox_rejected": float(store.outbox.rejected()),
        "store_revision": float(max(agent.people_revision, 0)),
        "people": float(len(agent.people)),
        "errors": float(len(agent.errors)),
        "model_mismatches": float(agent.model_mismatches),
        "snapshots_pending": float(store.snapshots.count()),
        "snapshots_dropped": float(store.snapshots.dropped()),
        "reports_pending": float(store.reports.count()),
        "claims_over_rate": float(agent.commands.claims_over_rate),
    }
    room = (MAX_HEALTH_ENTRIES - len(figures.keys() | set(SYNC_HEALTH))) // len(CAMERA_HEALTH)
    for camera, analysed_fps in list(zip(cameras, analysed, strict=True))[: max(room, 0)]:
        values = (camera.fps, analysed_fps, camera.frames_dropped, camera.state == "running")
        for figure, value in zip(CAMERA_HEALTH, values, strict=True):
            figures[f"camera.{camera.name}.{figure}"] = float(value)
    return figures


def warnings(agent: ReportedAgent) -> list[str]:
    """What someone should put right on the box, each naming the fix: a wall clock that cannot be believed
    (before the agent's release, or the server refuses events for their time); a client certificate
    ([server], [mqtt]) that expires within EXPIRY_WARNING_S (30 days), has expired or is not valid yet; TLS
    files of the server link it cannot use (the link's tls_error)."""
    now = time.time()
    found = [_clock_warning(agent)]
    for kind, (path, validity) in certificates(agent).items():
        found.append(expiry_warning(f"{kind}.cert_file", path, validity, now, agent.device_id))
    if agent.sync is not None:
        found.append(agent.sync.tls_error)  # renewed TLS files the server link cannot use yet
    return [warning for warning in found if warning is not None]


def certificates(agent: ReportedAgent) -> dict[str, tuple[Path, Validity]]:
    """This device's client certificates by link ('server', 'mqtt'): the file and its validity. The MQTT
    link's is the one its next connection presents; the server's the one the link presents now (a renewed
    file it cannot use yet, its key not installed, is in the warnings as the link's tls_error)."""
    found: dict[str, tuple[Path, Validity]] = {}
    sync, link = agent.sync, agent.link
    if sync is not None:
        validity = validity_of(sync.certificate_in_use)
        if validity is not None:
            found["server"] = (sync.settings.cert_file, validity)
    if link is not None and link.settings.cert_file is not None:
        validity = link.certificate_validity()
        if validity is not None:
            found["mqtt"] = (link.settings.cert_file, validity)
    return found


def _clock_warning(agent: ReportedAgent) -> str | None:
    refusal = agent.sync.clock_refusal if agent.sync is not None else None
    return clock_warning(time.time(), refusal)
