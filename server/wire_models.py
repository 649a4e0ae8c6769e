"""Conversions of the model-version messages (models.proto and their uses in FleetService and QueryService)
to and from server.model_types; the companion of server.wire, the only other module that touches generated
code. `*_from_proto` validate and raise InvalidArgumentError naming the field."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from facefleet.v1 import fleet_pb2, models_pb2, query_pb2

from server.domain import MAX_LABEL_CHARS, check_model_id
from server.errors import InvalidArgumentError
from server.model_files import Chunk
from server.model_types import (
    MAX_STATUSES,
    Activation,
    ModelAssignment,
    ModelStatus,
    Release,
)
from server.queries import AgentStatus
from server.wire import from_timestamp, timestamp

ACTIVATIONS: dict[models_pb2.ModelActivation, Activation] = {
    models_pb2.MODEL_ACTIVATION_DOWNLOADING: "downloading",
    models_pb2.MODEL_ACTIVATION_VERIFYING: "verifying",
    models_pb2.MODEL_ACTIVATION_ACTIVE: "active",
    models_pb2.MODEL_ACTIVATION_FAILED: "failed",
}
ACTIVATION_VALUES = {name: value for value, name in ACTIVATIONS.items()}


def status_from_proto(message: models_pb2.ModelStatus, name: str) -> ModelStatus:
    if message.state not in ACTIVATIONS:
        raise InvalidArgumentError(f"{name}: state is missing or unknown")
    stamp = message.time
    time = from_timestamp(stamp, f"{name}.time") if stamp.seconds or stamp.nanos else None
    try:
        return ModelStatus(
            task=message.task,
            model_id=message.model_id,
            rollout_id=message.rollout_id,
            state=ACTIVATIONS[message.state],
            reason=message.reason,
            time=time,
        )
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{name}: {exc}") from None


def statuses_from_proto(messages: Sequence[models_pb2.ModelStatus], field: str) -> tuple[ModelStatus, ...]:
    if len(messages) > MAX_STATUSES:
        raise InvalidArgumentError(f"{field}: {len(messages)} statuses; the limit is {MAX_STATUSES}")
    return tuple(status_from_proto(m, f"{field}[{i}]") for i, m in enumerate(messages))


def status_to_proto(status: ModelStatus) -> models_pb2.ModelStatus:
    return models_pb2.ModelStatus(
        task=status.task,
        model_id=status.model_id,
        rollout_id=status.rollout_id,
        state=ACTIVATION_VALUES[status.state],
        reason=status.reason,
        time=timestamp(status.time),
    )


def release_to_proto(release: Release) -> models_pb2.ModelRelease:
    return models_pb2.ModelRelease(
        task=release.task,
        model_id=release.model_id,
        files=[models_pb2.ModelFile(name=f.name, size=f.size, sha256=f.sha256) for f in release.files],
        manifest_json=release.manifest_json,
        rollout_id=release.rollout_id,
    )


def assignment_to_proto(assignment: ModelAssignment) -> fleet_pb2.WatchResponse:
    return fleet_pb2.WatchResponse(
        models=models_pb2.ModelAssignment(releases=[release_to_proto(r) for r in assignment.releases])
    )


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
) -> tuple[tuple[ModelStatus, ...], dict[str, str]]:
    return statuses_from_proto(request.statuses, "statuses"), dict(request.model_versions)


def report_models_response() -> fleet_pb2.ReportModelStatusResponse:
    return fleet_pb2.ReportModelStatusResponse()


def fleet_response(
    agents: Iterable[AgentStatus], revision: int, now: datetime
) -> query_pb2.FleetStatusResponse:
    return query_pb2.FleetStatusResponse(
        agents=[
            query_pb2.AgentStatus(
                device_id=a.device_id,
                online=a.online,
                watching=a.watching,
                last_seen=timestamp(a.last_seen),
                registered_at=timestamp(a.registered_at),
                agent_version=a.agent_version,
                hostname=a.hostname,
                model_versions=dict(a.model_versions),
                capabilities=a.capabilities,
                gallery_revision=a.gallery_revision,
                revision_lag=a.revision_lag,
                health=dict(a.health),
                model_statuses=[status_to_proto(s) for s in a.model_statuses],
                groups=a.groups,
            )
            for a in agents
        ],
        gallery_revision=revision,
        server_time=timestamp(now),
    )
