"""The only agent module that touches the generated facefleet.v1 code (beside facefleet.link.serde): the
agent's face and access event payloads (facefleet.agent.publish.events) into Event messages, and
`FleetClient`, the FleetService calls with link types in and out.

A payload the server would not understand raises LinkError naming the event and what is wrong with it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.agent.domain.fleet import QueuedReport
from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.fleet import Registration, ReportOutcome, Welcome
from facefleet.link.models import ModelStatus

# The *_pb2_grpc modules carry no annotations; the *_pb2.pyi stubs are found through mypy_path.
from facefleet.v1 import events_pb2, fleet_pb2, fleet_pb2_grpc
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.faces import EXPRESSION_LABELS

MAX_TEXT = 128
MAX_REASON = 512
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


# -- models --------------------------------------------------------------------------------------------


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
        raise LinkError(f"{name}: event_id must be a UUID string; the payload is not an agent event")
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
            raise LinkError(f"kind {kind!r} is neither 'face' nor 'access'; it is not reported")
    except LinkError as exc:
        raise LinkError(f"{name}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LinkError(f"{name}: malformed payload ({type(exc).__name__}: {exc})") from None
    return message


def _face_fields(message: events_pb2.Event, payload: Mapping[str, Any]) -> None:
    message.kind = events_pb2.EVENT_KIND_FACE
    identity = payload["identity"]
    status = identity["status"]
    if status not in FACE_DECISIONS:
        raise LinkError(f"identity status {status!r} is not one of {', '.join(FACE_DECISIONS)}")
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
        raise LinkError(f"access decision {decision!r} is not one of {', '.join(ACCESS_DECISIONS)}")
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
        raise LinkError(f"{key} must be text, got {value!r}")
    return value[:MAX_TEXT]


def _number(value: Any) -> float:
    """A finite float; None (not computed) is 0."""
    number = 0.0 if value is None else float(value)
    if not math.isfinite(number):
        raise LinkError(f"a score, margin or quality is {number}")
    return number


def _timestamp(text: Any) -> Timestamp:
    """An ISO 8601 UTC time as published ('2025-01-31T12:00:00.123Z')."""
    if not isinstance(text, str):
        raise LinkError(f"time must be an ISO 8601 string, got {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LinkError(f"time {text!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(timezone.utc))
    return stamp


# -- fleet calls ---------------------------------------------------------------------------------------


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
        except LinkError as exc:
            refused.append((report.event_id, str(exc)))
    return fleet_pb2.ReportResultsRequest(device_id=device_id, events=events, health=dict(health)), refused


class WatchStream:
    """An open Watch call: read() the next update, None when the server ended the stream."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def read(self) -> serde.WatchUpdate | None:
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return None
            update = serde.watch_update_from_proto(message)
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
        response = await self._stub.Register(serde.registration_to_proto(registration), timeout=timeout)
        return serde.welcome_from_proto(response)

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
        outcome = serde.outcome_from_proto(await self._stub.ReportResults(request, timeout=timeout))
        return ReportOutcome(outcome.stored, outcome.duplicates, (*outcome.rejected, *refused))

    async def download(self, model_id: str, file: str, offset: int, timeout: float) -> AsyncIterator[bytes]:
        """The bytes of one file of a published model version from offset on, chunk by chunk; a chunk that
        does not continue where the previous one ended raises LinkError."""
        request = fleet_pb2.DownloadModelRequest(
            device_id=self.device_id, model_id=model_id, file=file, offset=offset
        )
        position = offset
        try:
            async for chunk in self._stub.DownloadModel(request, timeout=timeout):
                if chunk.offset != position:
                    raise LinkError(
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
            statuses=[serde.status_to_proto(s) for s in statuses[-MAX_MODEL_STATUSES:]],
            model_versions=dict(versions),
        )
        await self._stub.ReportModelStatus(request, timeout=timeout)
