"""The agent's Prometheus metrics (`[metrics] listen`, default 127.0.0.1:9108): what the frame loop counts
as it goes (inference latency, identity and door decisions, events), and what is read from the service when
Prometheus scrapes (frames per camera, queue depths, connections, model versions).

Labels are bounded by the configuration: camera and door names, model tasks and ids, outcomes. No person,
event or track id is ever a label."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from facefleet.core.metrics import LATENCY_BUCKETS, MetricsEndpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraFigures:
    """One camera's totals since the agent started."""

    frames_read: int
    frames_dropped: int
    frames_analysed: int
    running: bool
    analysed_fps: float = 0.0
    """Frames analysed per second over the last 10 s."""
    analysed_age_s: float | None = None
    """Seconds from the last analysed frame's arrival to the end of its analysis; None before the first."""


@dataclass(frozen=True)
class AgentFigures:
    """What the agent reports at scrape time; None where a part is off (no MQTT, no server)."""

    cameras: Mapping[str, CameraFigures] = field(default_factory=dict)
    outbox_pending: int | None = None
    reports_pending: int | None = None
    reports_refused: int | None = None
    """Queued events the server refused for good, since the store was created."""
    snapshots_pending: int | None = None
    mqtt_connected: bool | None = None
    server_connected: bool | None = None
    clock_implausible: bool = False
    """The wall clock cannot be believed (domain.clock); the status's warnings say why."""
    models: Mapping[str, str] = field(default_factory=dict)
    """task → model id of the models the frame loop runs."""
    gallery_revision: int = 0
    people: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    """agent and runtime versions."""
    frame_path: Mapping[str, Any] = field(default_factory=dict)
    """How frames are analysed: PathChooser.status() (mode, path, measuring, fps per path)."""
    certificate_expiry_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds until each client certificate's notAfter (negative once expired), by link: server, mqtt."""


class AgentMetrics:
    """The agent's registry: the frame loop's own counters and a collector reading `figures` at scrape
    time (a failing read is logged and leaves those metrics out of that scrape)."""

    def __init__(self, figures: Callable[[], AgentFigures] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.inference = Histogram(
            "facefleet_agent_inference_seconds",
            "Inference time of one frame's request to a model (all faces of the frame in one batch): "
            "OpenVINO's time from its start to its completion, without the Python work around it; on the "
            "pipelined path it includes waiting behind another frame's request running at the same time",
            ["task", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.identities = Counter(
            "facefleet_agent_identity_decisions",
            "Identity decisions on analysed faces, by outcome (match, unknown, ambiguous, undecided)",
            ["camera", "outcome"],
            registry=self.registry,
        )
        self.access = Counter(
            "facefleet_agent_access_decisions",
            "Door access decisions, by outcome (granted, denied)",
            ["door", "outcome"],
            registry=self.registry,
        )
        self.relay_unsent = Counter(
            "facefleet_agent_relay_unsent",
            "Granted opens whose relay message could not be sent (the broker not connected); never queued",
            ["door"],
            registry=self.registry,
        )
        self.events = Counter(
            "facefleet_agent_events",
            "Events emitted, by kind (decided, changed and ended face events; access)",
            ["kind"],
            registry=self.registry,
        )
        if figures is not None:
            self.registry.register(_FiguresCollector(figures))

    def observe(self, task: str, model_id: str, seconds: float) -> None:
        """One frame's inference time of one model (FramePipeline's observe)."""
        self.inference.labels(task, model_id).observe(seconds)

    def serve(self, listen: str) -> MetricsEndpoint:
        """The endpoint of this registry on `listen` ('' = off), not yet started."""
        return MetricsEndpoint(self.registry, listen)


class _FiguresCollector(Collector):
    def __init__(self, figures: Callable[[], AgentFigures]) -> None:
        self.figures = figures

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        try:
            figures = self.figures()
        except Exception as exc:
            log.warning("metrics: cannot read the agent's figures: %s", exc)
            return []
        return list(_families(figures))


def _families(f: AgentFigures) -> Iterable[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
    counters = (
        ("facefleet_agent_frames_read", "Frames read from the camera", "frames_read"),
        ("facefleet_agent_frames_analysed", "Frames the pipeline analysed", "frames_analysed"),
        (
            "facefleet_agent_frames_dropped",
            "Frames read but never analysed (a newer one came)",
            "frames_dropped",
        ),
    )
    for name, documentation, attribute in counters:
        counter = CounterMetricFamily(name, documentation, labels=["camera"])
        for camera, figures in f.cameras.items():
            counter.add_metric([camera], getattr(figures, attribute))
        yield counter
    running = GaugeMetricFamily(
        "facefleet_agent_camera_running", "1 while the camera delivers frames", labels=["camera"]
    )
    for camera, figures in f.cameras.items():
        running.add_metric([camera], float(figures.running))
    yield running
    analysed = GaugeMetricFamily(
        "facefleet_agent_camera_analysed_fps",
        "Frames of the camera analysed per second over the last 10 s (beside frames_read: how much of what "
        "the camera delivers the agent keeps up with)",
        labels=["camera"],
    )
    age = GaugeMetricFamily(
        "facefleet_agent_camera_frame_age_seconds",
        "Seconds from the arrival of the camera's last analysed frame to the end of its analysis",
        labels=["camera"],
    )
    for camera, figures in f.cameras.items():
        analysed.add_metric([camera], figures.analysed_fps)
        if figures.analysed_age_s is not None:
            age.add_metric([camera], figures.analysed_age_s)
    yield analysed
    yield age
    depths = (
        ("facefleet_agent_outbox_depth", "Messages waiting in the MQTT outbox", f.outbox_pending),
        (
            "facefleet_agent_report_queue_depth",
            "Events waiting to be reported to the server",
            f.reports_pending,
        ),
        ("facefleet_agent_snapshots_pending", "Face snapshots waiting to be reported", f.snapshots_pending),
    )
    for name, documentation, value in depths:
        if value is not None:
            yield GaugeMetricFamily(name, documentation, value=float(value))
    if f.reports_refused is not None:
        yield CounterMetricFamily(
            "facefleet_agent_reports_refused",
            "Queued events the server refused for good (e.g. for a time its clock cannot believe), dropped",
            value=f.reports_refused,
        )
    yield GaugeMetricFamily(
        "facefleet_agent_clock_implausible",
        "1 while the wall clock cannot be believed (before the agent's release, or the server refuses events "
        "for their time)",
        value=float(f.clock_implausible),
    )
    connections = (
        ("facefleet_agent_mqtt_connected", "1 while connected to the MQTT broker", f.mqtt_connected),
        ("facefleet_agent_server_connected", "1 while connected to the fleet server", f.server_connected),
    )
    for name, documentation, connected in connections:
        if connected is not None:
            yield GaugeMetricFamily(name, documentation, value=float(connected))
    expiry = GaugeMetricFamily(
        "facefleet_agent_certificate_expiry_seconds",
        "Seconds until this device's client certificate expires (negative once it has), by the link that "
        "presents it (server, mqtt); the status's warnings name it from 30 days before",
        labels=["kind"],
    )
    for kind, seconds in sorted(f.certificate_expiry_s.items()):
        expiry.add_metric([kind], seconds)
    yield expiry
    models = InfoMetricFamily(
        "facefleet_agent_model", "The model the agent runs for each task", labels=["task"]
    )
    for task, model_id in sorted(f.models.items()):
        models.add_metric([task], {"model": model_id})
    yield models
    yield GaugeMetricFamily(
        "facefleet_agent_gallery_revision",
        "Gallery revision of the on-device store",
        value=f.gallery_revision,
    )
    yield GaugeMetricFamily("facefleet_agent_people", "People in the on-device gallery", value=f.people)
    if f.versions:
        yield InfoMetricFamily("facefleet_agent_build", "Agent and runtime versions", value=dict(f.versions))
    if f.frame_path:
        yield InfoMetricFamily(
            "facefleet_agent_frame_path",
            "How frames are analysed: mode (auto, on, off) and path (sequential, pipelined)",
            value={"mode": str(f.frame_path["mode"]), "path": str(f.frame_path["path"])},
        )
        measured = GaugeMetricFamily(
            "facefleet_agent_frame_path_fps",
            "Frames/s each path reached when the agent last measured both (pipeline = auto)",
            labels=["path"],
        )
        for path, fps in sorted(f.frame_path.get("fps", {}).items()):
            measured.add_metric([path], float(fps))
        yield measured
