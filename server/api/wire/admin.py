"""AdminService messages: people (enrol, update, delete, get, list), model versions (publish by upload,
list, retire), rollouts (start, change, list, show) and the admin audit log. `*_from_proto` validate and
raise InvalidArgumentError (or LinkError) naming the field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from facefleet.link.checks import MAX_EMBEDDINGS_PER_PERSON, check_id, check_model_id
from facefleet.link.errors import LinkError
from facefleet.link.gallery import Person
from facefleet.link.serde import (
    embedding_from_proto,
    from_timestamp,
    person_to_proto,
    timestamp,
)
from facefleet.server.domain.audit import AuditCursor, AuditEntry, AuditFilter, AuditPage
from facefleet.server.domain.models import (
    DeviceRollout,
    DeviceState,
    FailureAction,
    MaxFailures,
    PublishedModel,
    Rollout,
    RolloutState,
    Target,
)
from facefleet.server.domain.queries import EPOCH, page_size
from facefleet.server.domain.records import EnrolmentRequest, EnrolmentResult, OnExisting, PersonUpdate
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.rollouts.control import StartedRollout
from facefleet.server.rollouts.uploads import RolloutAction, UploadChunk, UploadHeader, UploadPart
from facefleet.v1 import (
    admin_pb2,
    models_pb2,
)

ON_EXISTING: dict[int, OnExisting] = {
    admin_pb2.ON_EXISTING_FAIL: "fail",
    admin_pb2.ON_EXISTING_REPLACE: "replace",
    admin_pb2.ON_EXISTING_APPEND: "append",
}


def enrolment_from_proto(request: admin_pb2.EnrollPersonRequest) -> EnrolmentRequest:
    if len(request.embeddings) > MAX_EMBEDDINGS_PER_PERSON:
        raise InvalidArgumentError(
            f"{len(request.embeddings)} embeddings; the limit is {MAX_EMBEDDINGS_PER_PERSON}"
        )
    if request.on_existing not in ON_EXISTING:
        raise InvalidArgumentError(f"on_existing {request.on_existing} is not a known OnExisting value")
    return EnrolmentRequest(
        person_id=request.person_id,
        display_name=request.display_name,
        groups=tuple(request.groups),
        metadata_json=request.metadata_json,
        images=tuple(request.images),
        embeddings=tuple(
            embedding_from_proto(e, f"embeddings[{i}]") for i, e in enumerate(request.embeddings)
        ),
        on_existing=ON_EXISTING[request.on_existing],
    )


def enrolment_response(result: EnrolmentResult) -> admin_pb2.EnrollPersonResponse:
    return admin_pb2.EnrollPersonResponse(
        person=person_to_proto(result.person, with_vectors=False),
        faces=[
            admin_pb2.EnrolledFace(
                image_index=f.image_index, box_xyxy=f.box_xyxy, quality=f.quality, model_ids=f.model_ids
            )
            for f in result.faces
        ],
        revision=result.person.revision,
    )


def person_id_from_proto(request: admin_pb2.DeletePersonRequest | admin_pb2.GetPersonRequest) -> str:
    return check_id("person_id", request.person_id)


def update_from_proto(request: admin_pb2.UpdatePersonRequest) -> PersonUpdate:
    return PersonUpdate(
        person_id=request.person_id,
        display_name=request.display_name if request.HasField("display_name") else None,
        groups=tuple(request.groups.groups) if request.HasField("groups") else None,
        metadata_json=request.metadata_json if request.HasField("metadata_json") else None,
    )


def update_response(person: Person) -> admin_pb2.UpdatePersonResponse:
    return admin_pb2.UpdatePersonResponse(
        person=person_to_proto(person, with_vectors=False), revision=person.revision
    )


def delete_response(revision: int) -> admin_pb2.DeletePersonResponse:
    return admin_pb2.DeletePersonResponse(revision=revision)


def get_person_response(person: Person, crops: int, *, with_vectors: bool) -> admin_pb2.GetPersonResponse:
    return admin_pb2.GetPersonResponse(
        person=person_to_proto(person, with_vectors=with_vectors), stored_crops=crops
    )


def people_response(people: Iterable[Person], next_token: str, revision: int) -> admin_pb2.ListPeopleResponse:
    return admin_pb2.ListPeopleResponse(
        people=[person_to_proto(p, with_vectors=False) for p in people],
        next_page_token=next_token,
        gallery_revision=revision,
    )


PRECISIONS: dict[admin_pb2.ModelPrecision, str] = {
    admin_pb2.MODEL_PRECISION_UNSPECIFIED: "FP16",
    admin_pb2.MODEL_PRECISION_FP16: "FP16",
    admin_pb2.MODEL_PRECISION_FP32: "FP32",
}
PRECISION_VALUES = {"FP16": admin_pb2.MODEL_PRECISION_FP16, "FP32": admin_pb2.MODEL_PRECISION_FP32}
ROLLOUT_STATES: dict[RolloutState, admin_pb2.RolloutState] = {
    "preparing": admin_pb2.ROLLOUT_STATE_PREPARING,
    "active": admin_pb2.ROLLOUT_STATE_ACTIVE,
    "paused": admin_pb2.ROLLOUT_STATE_PAUSED,
    "rolled_back": admin_pb2.ROLLOUT_STATE_ROLLED_BACK,
}
DEVICE_STATES: dict[DeviceState, admin_pb2.RolloutDeviceState] = {
    "assigned": admin_pb2.ROLLOUT_DEVICE_STATE_ASSIGNED,
    "downloading": admin_pb2.ROLLOUT_DEVICE_STATE_DOWNLOADING,
    "verifying": admin_pb2.ROLLOUT_DEVICE_STATE_VERIFYING,
    "active": admin_pb2.ROLLOUT_DEVICE_STATE_ACTIVE,
    "failed": admin_pb2.ROLLOUT_DEVICE_STATE_FAILED,
    "retrying": admin_pb2.ROLLOUT_DEVICE_STATE_RETRYING,
}
ROLLOUT_ACTIONS: dict[admin_pb2.RolloutAction, RolloutAction] = {
    admin_pb2.ROLLOUT_ACTION_PAUSE: "pause",
    admin_pb2.ROLLOUT_ACTION_RESUME: "resume",
    admin_pb2.ROLLOUT_ACTION_ROLLBACK: "rollback",
}
FAILURE_ACTIONS: dict[int, FailureAction] = {
    admin_pb2.FAILURE_ACTION_UNSPECIFIED: "pause",
    admin_pb2.FAILURE_ACTION_PAUSE: "pause",
    admin_pb2.FAILURE_ACTION_ROLLBACK: "rollback",
}
FAILURE_ACTION_VALUES: dict[FailureAction, admin_pb2.FailureAction] = {
    "pause": admin_pb2.FAILURE_ACTION_PAUSE,
    "rollback": admin_pb2.FAILURE_ACTION_ROLLBACK,
}
MAX_LISTED_PEOPLE = 1000
"""Most person ids in each list of a StartRolloutResponse (its counts are complete)."""


def upload_part_from_proto(message: admin_pb2.PublishModelRequest) -> UploadPart:
    """One message of a PublishModel upload: its header or a chunk."""
    part = message.WhichOneof("part")
    if part == "header":
        h = message.header
        if h.precision not in PRECISIONS:
            raise InvalidArgumentError("header.precision is unknown; use FP16 or FP32")
        try:
            return UploadHeader(
                task=h.task,
                name=h.name,
                version=h.version,
                precision=PRECISIONS[h.precision],
                licence=h.licence or "unknown",
                files=tuple(h.files),
            )
        except LinkError as exc:
            raise InvalidArgumentError(f"header: {exc}") from None
    if part == "chunk":
        return UploadChunk(message.chunk.file, message.chunk.data)
    raise InvalidArgumentError("a PublishModel message must carry a header or a chunk")


def published_to_proto(model: PublishedModel) -> admin_pb2.PublishedModel:
    message = admin_pb2.PublishedModel(
        model_id=model.model_id,
        task=model.task,
        files=[models_pb2.ModelFile(name=f.name, size=f.size, sha256=f.sha256) for f in model.files],
        precision=PRECISION_VALUES.get(model.precision, admin_pb2.MODEL_PRECISION_UNSPECIFIED),
        licence=model.licence,
        published_at=timestamp(model.published_at),
        runs_in_place_of=model.runs_in_place_of or "",
    )
    if model.retired_at is not None:
        message.retired_at.CopyFrom(timestamp(model.retired_at))
    return message


def publish_response(model: PublishedModel) -> admin_pb2.PublishModelResponse:
    return admin_pb2.PublishModelResponse(model=published_to_proto(model))


def models_response(models: Iterable[PublishedModel]) -> admin_pb2.ListModelsResponse:
    return admin_pb2.ListModelsResponse(models=[published_to_proto(m) for m in models])


def retire_response(model: PublishedModel) -> admin_pb2.RetireModelResponse:
    return admin_pb2.RetireModelResponse(model=published_to_proto(model))


def target_from_proto(message: admin_pb2.RolloutTarget) -> Target:
    kind = message.WhichOneof("kind")
    try:
        if kind == "all":
            if not message.all:
                raise InvalidArgumentError("target.all must be true when set")
            return Target("all")
        if kind == "group":
            return Target("group", group=message.group)
        if kind == "percent":
            return Target("percent", percent=message.percent)
    except LinkError as exc:
        raise InvalidArgumentError(f"target: {exc}") from None
    raise InvalidArgumentError("target is missing: set all = true, a group, or a percent (1–100)")


def target_to_proto(target: Target) -> admin_pb2.RolloutTarget:
    if target.kind == "all":
        return admin_pb2.RolloutTarget(all=True)
    if target.kind == "group":
        return admin_pb2.RolloutTarget(group=target.group)
    return admin_pb2.RolloutTarget(percent=target.percent)


def max_failures_from_proto(message: admin_pb2.MaxFailures) -> MaxFailures:
    return MaxFailures(
        count=message.count if message.HasField("count") else None,
        percent=message.percent if message.HasField("percent") else None,
    )


def max_failures_to_proto(budget: MaxFailures) -> admin_pb2.MaxFailures:
    return admin_pb2.MaxFailures(count=budget.count, percent=budget.percent)


def rollout_to_proto(rollout: Rollout) -> admin_pb2.Rollout:
    message = admin_pb2.Rollout(
        rollout_id=rollout.rollout_id,
        task=rollout.task,
        model_id=rollout.model_id,
        target=target_to_proto(rollout.target),
        state=ROLLOUT_STATES[rollout.state],
        created_at=timestamp(rollout.created_at),
        updated_at=timestamp(rollout.updated_at),
        on_failures=FAILURE_ACTION_VALUES[rollout.on_failures],
        reason=rollout.reason,
    )
    if rollout.max_failures is not None:
        message.max_failures.CopyFrom(max_failures_to_proto(rollout.max_failures))
    return message


@dataclass(frozen=True)
class StartRollout:
    """What a StartRollout request asks for."""

    model_id: str
    target: Target
    max_failures: MaxFailures | None = None
    on_failures: FailureAction = "pause"


def start_rollout_from_proto(request: admin_pb2.StartRolloutRequest) -> StartRollout:
    check_model_id(request.model_id)
    if request.on_failures not in FAILURE_ACTIONS:
        raise InvalidArgumentError(
            f"on_failures {request.on_failures} is not a known FailureAction; use PAUSE or ROLLBACK"
        )
    return StartRollout(
        request.model_id,
        target_from_proto(request.target),
        max_failures_from_proto(request.max_failures) if request.HasField("max_failures") else None,
        FAILURE_ACTIONS[request.on_failures],
    )


def start_rollout_response(started: StartedRollout) -> admin_pb2.StartRolloutResponse:
    return admin_pb2.StartRolloutResponse(
        rollout=rollout_to_proto(started.rollout),
        reembedded_count=len(started.reembedded),
        reembedded=sorted(started.reembedded)[:MAX_LISTED_PEOPLE],
        without_crops_count=len(started.without_crops),
        without_crops=sorted(started.without_crops)[:MAX_LISTED_PEOPLE],
        runs_in_place_of=started.runs_in_place_of or "",
    )


def change_rollout_from_proto(
    request: admin_pb2.ChangeRolloutRequest,
) -> tuple[int, RolloutAction, int | None]:
    """(rollout id, action, percent or None) of a ChangeRollout request."""
    if request.action not in ROLLOUT_ACTIONS:
        raise InvalidArgumentError("action is missing or unknown: use PAUSE, RESUME or ROLLBACK")
    percent = request.percent if request.HasField("percent") else None
    return request.rollout_id, ROLLOUT_ACTIONS[request.action], percent


def change_rollout_response(rollout: Rollout) -> admin_pb2.ChangeRolloutResponse:
    return admin_pb2.ChangeRolloutResponse(rollout=rollout_to_proto(rollout))


def rollouts_response(rollouts: Iterable[Rollout]) -> admin_pb2.ListRolloutsResponse:
    return admin_pb2.ListRolloutsResponse(rollouts=[rollout_to_proto(r) for r in rollouts])


def device_rollout_to_proto(row: DeviceRollout) -> admin_pb2.RolloutDevice:
    return admin_pb2.RolloutDevice(
        device_id=row.device_id,
        state=DEVICE_STATES[row.state],
        previous_model_id=row.previous_model_id,
        reason=row.reason,
        updated_at=timestamp(row.updated_at),
    )


def rollout_response(rollout: Rollout, devices: Iterable[DeviceRollout]) -> admin_pb2.GetRolloutResponse:
    return admin_pb2.GetRolloutResponse(
        rollout=rollout_to_proto(rollout), devices=[device_rollout_to_proto(d) for d in devices]
    )


def audit_query_from_proto(
    request: admin_pb2.ListAuditRequest, now: datetime
) -> tuple[AuditFilter, AuditCursor | None, int]:
    """(filter, where the previous page ended, page size); unset since means the first entry, unset until
    means now."""
    since = from_timestamp(request.since, "since") if request.HasField("since") else EPOCH
    until = (
        from_timestamp(request.until, "until")
        if request.HasField("until")
        else now + timedelta(microseconds=1)
    )
    flt = AuditFilter(since, until, who=request.who, action=request.action_prefix)
    cursor = AuditCursor.decode(request.page_token) if request.page_token else None
    return flt, cursor, page_size(request.page_size)


def audit_entry_to_proto(entry: AuditEntry) -> admin_pb2.AuditEntry:
    return admin_pb2.AuditEntry(
        time=timestamp(entry.time),
        who=entry.who,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        detail=entry.detail,
    )


def audit_response(page: AuditPage) -> admin_pb2.ListAuditResponse:
    return admin_pb2.ListAuditResponse(
        entries=[audit_entry_to_proto(e) for e in page.entries],
        next_page_token=page.next_cursor.encode() if page.next_cursor else "",
    )
