"""FleetService messages the link does not share: event report batches, gallery acknowledgements, model
downloads and model status reports. The link's own messages are converted by facefleet.link.serde."""

from __future__ import annotations

from facefleet.link.checks import MAX_LABEL_CHARS, check_model_id
from facefleet.link.errors import LinkError
from facefleet.link.events import MAX_EVENT_ID_CHARS, Event
from facefleet.link.models import ModelStatus
from facefleet.link.serde import (
    event_from_proto,
    statuses_from_proto,
)
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.rollouts.files import Chunk
from facefleet.v1 import (
    fleet_pb2,
)


def report_from_proto(
    request: fleet_pb2.ReportResultsRequest, device_id: str
) -> tuple[list[Event], list[tuple[str, str]], dict[str, float]]:
    """(valid events, rejections (event_id, reason) of the others, health figures). An event without a
    device_id is the reporting device's."""
    events: list[Event] = []
    rejected: list[tuple[str, str]] = []
    for index, message in enumerate(request.events):
        try:
            events.append(event_from_proto(message, default_device=device_id))
        except LinkError as exc:
            # the id as sent, cut to the longest valid one: the agent matches it, the log quotes it
            rejected.append((message.event_id[:MAX_EVENT_ID_CHARS] or f"#{index}", str(exc)))
    return events, rejected, dict(request.health)


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
) -> tuple[tuple[ModelStatus, ...], dict[str, str], dict[str, str]]:
    """(statuses, model ids by task, what they run at by task) of a report; the statuses checked here, the
    maps where they are stored (ModelDistribution.report)."""
    statuses = statuses_from_proto(request.statuses, "statuses")
    return statuses, dict(request.model_versions), dict(request.model_precisions)


def report_models_response() -> fleet_pb2.ReportModelStatusResponse:
    return fleet_pb2.ReportModelStatusResponse()
