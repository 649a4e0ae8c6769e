"""FleetService messages the link does not share: event report batches, gallery acknowledgements, model
downloads and model status reports. The link's own messages are converted by facefleet.link.serde."""

from __future__ import annotations

from dataclasses import dataclass

from facefleet.link.checks import MAX_LABEL_CHARS, check_model_id
from facefleet.link.errors import LinkError
from facefleet.link.events import MAX_EVENT_ID_CHARS, Event
from facefleet.link.models import ModelStatus, known_model_precisions, known_model_versions
from facefleet.link.serde import (
    Notes,
    event_from_proto,
    newer_event_values,
    statuses_from_proto,
)
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.rollouts.files import Chunk
from facefleet.v1 import (
    fleet_pb2,
)


@dataclass(frozen=True)
class DecodedReport:
    """A ReportResults request: its valid events; (event_id, reason) of those refused for good; (event_id,
    the value this server does not know, e.g. 'kind 3') of those it defers (ReportResultsResponse.deferred);
    the health figures."""

    events: list[Event]
    rejected: list[tuple[str, str]]
    deferred: list[tuple[str, str]]
    health: dict[str, float]


def report_from_proto(request: fleet_pb2.ReportResultsRequest, device_id: str) -> DecodedReport:
    """An event without a device_id is the reporting device's."""
    decoded = DecodedReport([], [], [], dict(request.health))
    for index, message in enumerate(request.events):
        # the id as sent, cut to the longest valid one: the agent matches it, the log quotes it
        event_id = message.event_id[:MAX_EVENT_ID_CHARS] or f"#{index}"
        newer = newer_event_values(message)
        if newer is not None:
            decoded.deferred.append((event_id, newer))
            continue
        try:
            decoded.events.append(event_from_proto(message, default_device=device_id))
        except LinkError as exc:
            decoded.rejected.append((event_id, str(exc)))
    return decoded


def ack_response(revision: int) -> fleet_pb2.AckGalleryResponse:
    return fleet_pb2.AckGalleryResponse(gallery_revision=revision)


def download_from_proto(request: fleet_pb2.DownloadModelRequest) -> tuple[str, str, int]:
    """(model_id, file name, offset) of a download request."""
    check_model_id(request.model_id)
    if not request.file or len(request.file) > MAX_LABEL_CHARS:
        raise InvalidArgumentError(f"file must be a file name of 1–{MAX_LABEL_CHARS} characters")
    return request.model_id, request.file, request.offset


def chunk_to_proto(chunk: Chunk) -> fleet_pb2.ModelChunk:
    return fleet_pb2.ModelChunk(data=chunk.data, offset=chunk.offset, size=chunk.size)


def report_models_from_proto(
    request: fleet_pb2.ReportModelStatusRequest,
) -> tuple[tuple[ModelStatus, ...], dict[str, str], dict[str, str], Notes]:
    """(statuses, model ids by task, what they run at by task, notes on what was left out) of a report:
    entries of a task, state or precision this server does not know (a newer agent's) are left out; the
    statuses are checked here, the maps where they are stored (ModelDistribution.report)."""
    statuses, ignored = statuses_from_proto(request.statuses, "statuses")
    versions, unknown_versions = known_model_versions(dict(request.model_versions))
    precisions, unknown_precisions = known_model_precisions(dict(request.model_precisions))
    return statuses, versions, precisions, (*ignored, *unknown_versions, *unknown_precisions)


def report_models_response() -> fleet_pb2.ReportModelStatusResponse:
    return fleet_pb2.ReportModelStatusResponse()
