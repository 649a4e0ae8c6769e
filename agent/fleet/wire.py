"""The only agent module that touches the generated facefleet.v1 code: gallery deltas from the server into
store records, the agent's face and access event payloads (facefleet.agent.publish.events) into Event
messages, and `FleetClient`, the FleetService calls with domain types in and out.

Conversions validate: a message this agent cannot store, or a payload the server would not understand,
raises WireError naming the person or event and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.agent.domain.fleet import (
    GalleryDelta,
    Heartbeat,
    ModelAssignment,
    ModelFileSpec,
    ModelRelease,
    ModelStatus,
    QueuedReport,
    Registration,
    ReportOutcome,
    Welcome,
    WireError,
)
from facefleet.agent.domain.records import Embedding, InvalidRecordError, Person, PersonUpsert

# The *_pb2_grpc modules carry no annotations; the *_pb2.pyi stubs are found through mypy_path.
from facefleet.v1 import events_pb2, fleet_pb2, fleet_pb2_grpc, gallery_pb2, models_pb2
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.faces import EXPRESSION_LABELS
from facefleet.vision.models.tasks import TASKS

MAX_TEXT = 128
MAX_REASON = 512
MAX_MODEL_FILES = 8
MAX_MODEL_FILE_BYTES = 4 * 1024**3
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_MODEL_STATUSES = 16
DEFINITIVE_DOWNLOAD_ERRORS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
"""DownloadModel failures that a retry would not cure: the version is refused."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}@[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


# -- gallery -------------------------------------------------------------------------------------------


def embedding_from_proto(message: gallery_pb2.Embedding, person_id: str, index: int) -> Embedding:
    """One embedding of a server person; vector: D float32 little-endian, L2-normalised on construction."""
    what = f"person {person_id!r} embedding {index} ({message.model_id or 'no model id'})"
    if message.dim == 0 or len(message.vector) != 4 * message.dim:
        raise WireError(
            f"{what}: vector has {len(message.vector)} bytes but dim {message.dim} needs {4 * message.dim}; "
            "the server sent a malformed embedding"
        )
    vector = np.frombuffer(message.vector, dtype="<f4").astype(np.float32)
    source = f"server:{message.source}" if message.source else "server"
    try:
        return Embedding(message.model_id, vector, float(message.quality), source)
    except InvalidRecordError as exc:
        raise WireError(f"{what}: {exc}") from None


def person_from_proto(message: gallery_pb2.Person) -> PersonUpsert:
    """A server person with their embeddings (display_name → name, metadata_json → metadata)."""
    person_id = message.person_id
    try:
        metadata = json.loads(message.metadata_json or "{}")
    except ValueError as exc:
        raise WireError(f"person {person_id!r}: metadata_json is not JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise WireError(f"person {person_id!r}: metadata_json must be a JSON object")
    try:
        person = Person(person_id, message.display_name, tuple(message.groups), metadata)
    except InvalidRecordError as exc:
        raise WireError(f"gallery person from the server: {exc}") from None
    embeddings = tuple(embedding_from_proto(e, person_id, i) for i, e in enumerate(message.embeddings))
    return PersonUpsert(person, embeddings)


def delta_from_proto(message: gallery_pb2.GalleryDelta) -> GalleryDelta:
    try:
        return GalleryDelta(
            from_revision=message.from_revision,
            to_revision=message.to_revision,
            snapshot=message.snapshot,
            upserts=tuple(person_from_proto(p) for p in message.upserts),
            deletes=tuple(message.deletes),
            gallery_id=message.gallery_id,
            more_parts=message.more_parts,
        )
    except InvalidRecordError as exc:
        raise WireError(str(exc)) from None


Update = GalleryDelta | Heartbeat | ModelAssignment


def update_from_proto(message: fleet_pb2.WatchResponse) -> Update | None:
    """A Watch message; None for an update kind this agent does not know yet (a later v1 addition)."""
    kind = message.WhichOneof("update")
    if kind == "gallery":
        return delta_from_proto(message.gallery)
    if kind == "heartbeat":
        return Heartbeat(message.heartbeat.gallery_revision)
    if kind == "models":
        return assignment_from_proto(message.models)
    return None


# -- models --------------------------------------------------------------------------------------------

ACTIVATIONS = {
    "downloading": models_pb2.MODEL_ACTIVATION_DOWNLOADING,
    "verifying": models_pb2.MODEL_ACTIVATION_VERIFYING,
    "active": models_pb2.MODEL_ACTIVATION_ACTIVE,
    "failed": models_pb2.MODEL_ACTIVATION_FAILED,
}


def release_from_proto(message: models_pb2.ModelRelease) -> ModelRelease:
    """A model release, checked so that nothing in it can name a path outside the model store or make the
    agent download without bound."""
    what = f"model release {message.model_id[:80]!r} ({message.task[:20]!r})"
    if message.task not in TASKS:
        raise WireError(f"{what}: unknown task; expected one of {', '.join(TASKS)}")
    if not _MODEL_ID.match(message.model_id):
        raise WireError(f"{what}: model_id must be '<name>@<version>' of letters, digits, '.', '_', '+', '-'")
    if len(message.files) > MAX_MODEL_FILES:
        raise WireError(f"{what}: {len(message.files)} files; at most {MAX_MODEL_FILES}")
    files = []
    for spec in message.files:
        if not _FILE_NAME.match(spec.name) or spec.name == "manifest.json":
            raise WireError(f"{what}: file name {spec.name[:80]!r} is not allowed")
        if not 0 < spec.size <= MAX_MODEL_FILE_BYTES:
            raise WireError(f"{what}: file {spec.name} has size {spec.size}; expected 1 B to 4 GiB")
        if not _SHA256.match(spec.sha256):
            raise WireError(f"{what}: file {spec.name} has no valid sha256 (64 lowercase hex digits)")
        files.append(ModelFileSpec(spec.name, spec.size, spec.sha256))
    if len({f.name for f in files}) != len(files):
        raise WireError(f"{what}: a file is listed twice")
    if len(message.manifest_json.encode()) > MAX_MANIFEST_BYTES:
        raise WireError(f"{what}: manifest_json is over {MAX_MANIFEST_BYTES // 1024} KiB")
    if bool(files) != bool(message.manifest_json):
        raise WireError(f"{what}: files and manifest_json come together (both or neither)")
    return ModelRelease(
        message.task, message.model_id, tuple(files), message.manifest_json, message.rollout_id
    )


def assignment_from_proto(message: models_pb2.ModelAssignment) -> ModelAssignment:
    releases = tuple(release_from_proto(r) for r in message.releases)
    tasks = [r.task for r in releases]
    if len(set(tasks)) != len(tasks):
        raise WireError(f"model assignment names a task twice ({', '.join(sorted(tasks))})")
    return ModelAssignment(releases)


def status_to_proto(status: ModelStatus) -> models_pb2.ModelStatus:
    message = models_pb2.ModelStatus(
        task=status.task,
        model_id=status.model_id,
        rollout_id=status.rollout_id,
        state=ACTIVATIONS.get(status.state, models_pb2.MODEL_ACTIVATION_UNSPECIFIED),
        reason=status.reason[:MAX_REASON],
    )
    if status.at > 0:
        message.time.FromNanoseconds(int(status.at * 1e9))
    return message


# -- events --------------------------------------------------------------------------------------------

FACE_DECISIONS = {"match": events_pb2.DECISION_MATCH, "unknown": events_pb2.DECISION_UNKNOWN}
ACCESS_DECISIONS = {"granted": events_pb2.DECISION_GRANTED, "denied": events_pb2.DECISION_DENIED}


def event_to_proto(payload: Mapping[str, Any], gallery_revision: int) -> events_pb2.Event:
    """A face or access event payload (facefleet.agent.publish.events) as an Event message. gallery_revision:
    the server
    revision the agent had applied (the payload's own revision is the store's, which local edits move)."""
    event_id = payload.get("event_id")
    name = f"event {event_id!r}"
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
        raise WireError(f"{name}: event_id must be a UUID string; the payload is not an agent event")
    try:
        kind = payload["kind"]
        message = events_pb2.Event(
            event_id=event_id,
            device_id=_text(payload, "device_id"),
            time=_timestamp(payload["time"]),
            camera=_text(payload, "camera"),
            model_versions={str(k): str(v) for k, v in (payload.get("models") or {}).items()},
            gallery_revision=max(0, int(gallery_revision)),
        )
        if kind == "face":
            _face_fields(message, payload)
        elif kind == "access":
            _access_fields(message, payload)
        else:
            raise WireError(f"kind {kind!r} is neither 'face' nor 'access'; it is not reported")
    except WireError as exc:
        raise WireError(f"{name}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WireError(f"{name}: malformed payload ({type(exc).__name__}: {exc})") from None
    return message


def _face_fields(message: events_pb2.Event, payload: Mapping[str, Any]) -> None:
    message.kind = events_pb2.EVENT_KIND_FACE
    identity = payload["identity"]
    status = identity["status"]
    if status not in FACE_DECISIONS:
        raise WireError(f"identity status {status!r} is not one of {', '.join(FACE_DECISIONS)}")
    message.decision = FACE_DECISIONS[status]
    message.person_id = identity.get("person_id") or ""
    message.score = _number(payload.get("score"))
    message.quality = _number(payload.get("quality"))
    message.reason = f"track {payload.get('event', 'event')} after {int(payload.get('frames') or 0)} frames"
    expression = payload.get("expression") or {}
    if expression.get("label") in EXPRESSION_LABELS:
        message.expression.label = expression["label"]
        probabilities = expression.get("probabilities") or {}
        message.expression.probabilities.update(
            {k: min(1.0, max(0.0, _number(v))) for k, v in probabilities.items() if k in EXPRESSION_LABELS}
        )


def _access_fields(message: events_pb2.Event, payload: Mapping[str, Any]) -> None:
    message.kind = events_pb2.EVENT_KIND_ACCESS
    decision = payload["decision"]
    if decision not in ACCESS_DECISIONS:
        raise WireError(f"access decision {decision!r} is not one of {', '.join(ACCESS_DECISIONS)}")
    message.decision = ACCESS_DECISIONS[decision]
    message.door = _text(payload, "door")
    message.person_id = payload.get("person_id") or ""
    message.score = _number(payload.get("score"))
    message.margin = _number(payload.get("margin"))
    reason = str(payload.get("reason") or "")
    if payload.get("mode"):
        reason = f"{reason} ({payload['mode']})" if reason else str(payload["mode"])
    message.reason = reason[:MAX_REASON]


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key) or ""
    if not isinstance(value, str):
        raise WireError(f"{key} must be text, got {value!r}")
    return value[:MAX_TEXT]


def _number(value: Any) -> float:
    """A finite float; None (not computed) is 0."""
    number = 0.0 if value is None else float(value)
    if not math.isfinite(number):
        raise WireError(f"a score, margin or quality is {number}")
    return number


def _timestamp(text: Any) -> Timestamp:
    """An ISO 8601 UTC time as published ('2025-01-31T12:00:00.123Z')."""
    if not isinstance(text, str):
        raise WireError(f"time must be an ISO 8601 string, got {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WireError(f"time {text!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(timezone.utc))
    return stamp


# -- fleet calls ---------------------------------------------------------------------------------------


def registration_to_proto(registration: Registration) -> fleet_pb2.RegisterRequest:
    return fleet_pb2.RegisterRequest(
        device_id=registration.device_id,
        agent_version=registration.agent_version,
        model_versions=dict(registration.model_versions),
        capabilities=registration.capabilities,
        gallery_revision=registration.gallery_revision,
        gallery_id=registration.gallery_id,
        hostname=registration.hostname,
        model_statuses=[status_to_proto(s) for s in registration.model_statuses[-MAX_MODEL_STATUSES:]],
        groups=registration.groups,
    )


def welcome_from_proto(message: fleet_pb2.RegisterResponse) -> Welcome:
    return Welcome(
        gallery_revision=message.gallery_revision,
        gallery_id=message.gallery_id,
        embedding_models=tuple(message.embedding_models),
        max_report_events=message.max_report_events,
        heartbeat_seconds=message.heartbeat_seconds,
    )


def report_to_proto(
    device_id: str, reports: Sequence[QueuedReport], health: Mapping[str, float]
) -> tuple[fleet_pb2.ReportResultsRequest, list[tuple[str, str]]]:
    """The request for the reports that convert, and (event_id, reason) of those that do not. An event
    queued under another device id (device_id changed since) would make the server refuse the whole batch,
    so it is refused here."""
    events, refused = [], []
    for report in reports:
        queued_as = report.payload.get("device_id")
        if queued_as and queued_as != device_id:
            refused.append((report.event_id, f"queued as device {queued_as!r}, not {device_id!r}"))
            continue
        try:
            events.append(event_to_proto(report.payload, report.gallery_revision))
        except WireError as exc:
            refused.append((report.event_id, str(exc)))
    return fleet_pb2.ReportResultsRequest(device_id=device_id, events=events, health=dict(health)), refused


def outcome_from_proto(message: fleet_pb2.ReportResultsResponse) -> ReportOutcome:
    return ReportOutcome(
        stored=message.stored,
        duplicates=message.duplicates,
        rejected=tuple((r.event_id, r.reason) for r in message.rejected),
    )


class WatchStream:
    """An open Watch call: read() the next update, None when the server ended the stream."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def read(self) -> Update | None:
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return None
            update = update_from_proto(message)
            if update is not None:
                return update

    def cancel(self) -> None:
        self._call.cancel()


class FleetClient:
    """FleetService for one device over one channel; gRPC errors surface as grpc.aio.AioRpcError."""

    def __init__(self, channel: grpc.aio.Channel, device_id: str) -> None:
        self._stub = fleet_pb2_grpc.FleetServiceStub(channel)  # type: ignore[no-untyped-call]
        self.device_id = device_id

    async def register(self, registration: Registration, timeout: float) -> Welcome:
        response = await self._stub.Register(registration_to_proto(registration), timeout=timeout)
        return welcome_from_proto(response)

    def watch(self, from_revision: int, gallery_id: str, models: Sequence[str]) -> WatchStream:
        request = fleet_pb2.WatchRequest(
            device_id=self.device_id,
            from_revision=from_revision,
            gallery_id=gallery_id,
            embedding_models=list(models),
        )
        return WatchStream(self._stub.Watch(request))

    async def acknowledge(self, revision: int, timeout: float) -> int:
        """Tell the server the applied revision; its current revision."""
        request = fleet_pb2.AckGalleryRequest(device_id=self.device_id, gallery_revision=revision)
        response = await self._stub.AckGallery(request, timeout=timeout)
        return int(response.gallery_revision)

    async def report(
        self, reports: Sequence[QueuedReport], health: Mapping[str, float], timeout: float
    ) -> ReportOutcome:
        """Send reports (with health figures); events that cannot even be converted count as refused."""
        request, refused = report_to_proto(self.device_id, reports, health)
        outcome = outcome_from_proto(await self._stub.ReportResults(request, timeout=timeout))
        return ReportOutcome(outcome.stored, outcome.duplicates, (*outcome.rejected, *refused))

    async def download(self, model_id: str, file: str, offset: int, timeout: float) -> AsyncIterator[bytes]:
        """The bytes of one file of a published model version from offset on, chunk by chunk; a chunk that
        does not continue where the previous one ended raises WireError."""
        request = fleet_pb2.DownloadModelRequest(
            device_id=self.device_id, model_id=model_id, file=file, offset=offset
        )
        position = offset
        try:
            async for chunk in self._stub.DownloadModel(request, timeout=timeout):
                if chunk.offset != position:
                    raise WireError(
                        f"model {model_id} {file}: chunk at byte {chunk.offset}, expected {position}; "
                        "the download restarts"
                    )
                position += len(chunk.data)
                yield bytes(chunk.data)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in DEFINITIVE_DOWNLOAD_ERRORS:
                raise  # the connection: retried
            raise ModelStoreError(
                f"the server refused model {model_id} {file} ({exc.code().name}: {exc.details()})"
            ) from None

    async def report_models(
        self, statuses: Sequence[ModelStatus], versions: Mapping[str, str], timeout: float
    ) -> None:
        """Tell the server how assigned model versions are doing and which run now."""
        request = fleet_pb2.ReportModelStatusRequest(
            device_id=self.device_id,
            statuses=[status_to_proto(s) for s in statuses[-MAX_MODEL_STATUSES:]],
            model_versions=dict(versions),
        )
        await self._stub.ReportModelStatus(request, timeout=timeout)
