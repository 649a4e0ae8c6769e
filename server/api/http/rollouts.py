"""/api/models and /api/rollouts: publish a model version by upload (converted and checked as for
AdminService.PublishModel), list and retire versions; start, list and show rollouts, and pause, resume or roll
them back. Everything here needs an admin token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import PurePath
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from facefleet.link.checks import MAX_REVISION
from facefleet.server.api.http.audited import Change, audited
from facefleet.server.api.http.auth import AdminOperator, AdminRecheck, Handlers
from facefleet.server.api.http.problems import ERROR_RESPONSES, ProblemRoute
from facefleet.server.api.http.uploads import FileStart, FormField, Part, UploadLimits, multipart
from facefleet.server.domain.models import (
    DeviceRollout,
    DeviceState,
    FailureAction,
    MaxFailures,
    PublishedModel,
    Rollout,
    RolloutState,
    Target,
    TargetKind,
)
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.rollouts.uploads import UploadChunk, UploadHeader, UploadPart

router = APIRouter(tags=["models and rollouts"], route_class=ProblemRoute, responses=ERROR_RESPONSES)
FILES_FIELD = "files"
HEADER_FIELDS = ("task", "name", "version", "precision", "licence")
MAX_LISTED_PEOPLE = 1000
"""Most person ids in each list of a started rollout (its counts are complete)."""
ModelId = Annotated[str, Path(description="<name>@<version>")]
RolloutId = Annotated[int, Path(ge=1, le=MAX_REVISION)]


class ModelFileOut(BaseModel):
    name: str
    size: int
    sha256: str


class ModelOut(BaseModel):
    model_id: str
    task: str
    precision: str
    licence: str
    files: list[ModelFileOut] = Field(description="The stored OpenVINO IR files agents download")
    published_at: datetime
    retired_at: datetime | None
    runs_in_place_of: str | None = Field(
        None, description="An INT8 variant published to run in this float model's place (`--in-place`)"
    )

    @classmethod
    def of(cls, m: PublishedModel) -> ModelOut:
        return cls(
            model_id=m.model_id,
            task=m.task,
            precision=m.precision,
            licence=m.licence,
            files=[ModelFileOut(name=f.name, size=f.size, sha256=f.sha256) for f in m.files],
            published_at=m.published_at,
            retired_at=m.retired_at,
            runs_in_place_of=m.runs_in_place_of,
        )


class Models(BaseModel):
    models: list[ModelOut] = Field(description="By task, then model id; retired ones too")


class TargetIO(BaseModel):
    """Which agents: all, those declaring `group`, or `percent` % of the fleet (a canary)."""

    model_config = ConfigDict(extra="forbid")

    kind: TargetKind
    group: str = ""
    percent: int = 0


class MaxFailuresIO(BaseModel):
    """How many agents may refuse the version (a count, or a percent of those it reached); one more stops
    the rollout."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = None
    percent: int | None = None


class RolloutOut(BaseModel):
    rollout_id: int
    task: str
    model_id: str
    target: TargetIO
    state: RolloutState
    created_at: datetime
    updated_at: datetime
    max_failures: MaxFailuresIO | None
    on_failures: FailureAction
    reason: str = Field(description="Why the server paused or rolled it back itself")

    @classmethod
    def of(cls, r: Rollout) -> RolloutOut:
        budget = r.max_failures
        return cls(
            rollout_id=r.rollout_id,
            task=r.task,
            model_id=r.model_id,
            target=TargetIO(kind=r.target.kind, group=r.target.group, percent=r.target.percent),
            state=r.state,
            created_at=r.created_at,
            updated_at=r.updated_at,
            max_failures=None
            if budget is None
            else MaxFailuresIO(count=budget.count, percent=budget.percent),
            on_failures=r.on_failures,
            reason=r.reason,
        )


COUNTED_ROLLOUTS = 50
"""The newest rollouts listed with their agents per state (device_counts)."""


class RolloutListed(RolloutOut):
    device_counts: dict[DeviceState, int] | None = Field(
        description=f"The agents it was announced to, per state (states with none left out): its progress "
        f"as /api/rollouts/{{id}} lists it per agent. Given for the newest {COUNTED_ROLLOUTS} rollouts; null "
        "for older ones"
    )


class Rollouts(BaseModel):
    rollouts: list[RolloutListed] = Field(description="Newest first")


class RolloutStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    target: TargetIO
    max_failures: MaxFailuresIO | None = None
    on_failures: FailureAction = "pause"


class Started(BaseModel):
    rollout: RolloutOut
    reembedded_count: int = Field(description="Embedding models: people re-embedded from their crops")
    reembedded: list[str] = Field(description=f"The first {MAX_LISTED_PEOPLE} of them, sorted")
    without_crops_count: int = Field(description="Embedding models: people who must be re-enrolled")
    without_crops: list[str] = Field(description=f"The first {MAX_LISTED_PEOPLE} of them, sorted")
    runs_in_place_of: str | None = Field(
        None,
        description="An INT8 variant: the float model whose gallery was completed and that it runs beside",
    )


class RolloutChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percent: int | None = Field(None, description="resume only: widen a percent rollout to this")


class RolloutDeviceOut(BaseModel):
    device_id: str
    state: DeviceState
    previous_model_id: str
    reason: str
    updated_at: datetime

    @classmethod
    def of(cls, d: DeviceRollout) -> RolloutDeviceOut:
        return cls(
            device_id=d.device_id,
            state=d.state,
            previous_model_id=d.previous_model_id,
            reason=d.reason,
            updated_at=d.updated_at,
        )


class RolloutDetail(BaseModel):
    rollout: RolloutOut
    devices: list[RolloutDeviceOut] = Field(description="The agents it was announced to, by device id")


@router.get("/models", summary="Published model versions", response_model=Models)
async def models(
    operator: AdminOperator,
    handlers: Handlers,
    task: Annotated[str, Query(description="Only this task's models")] = "",
) -> Models:
    return Models(models=[ModelOut.of(m) for m in await handlers.models.models(task)])


PUBLISH_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["task", "name", "version", FILES_FIELD],
                    "properties": {
                        "task": {
                            "type": "string",
                            "enum": ["detection", "embedding", "expression", "landmarks"],
                        },
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "precision": {"type": "string", "enum": ["FP16", "FP32"], "default": "FP16"},
                        "licence": {"type": "string", "default": "unknown"},
                        FILES_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "maxItems": 2,
                            "description": "One .onnx or .tflite file, or an OpenVINO IR pair NAME.xml "
                            "+ NAME.bin (bare file names); at most models.max_upload_bytes together, "
                            "converted within models.convert_memory_bytes and models.convert_timeout_s "
                            "(413 otherwise). The fields come first.",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/models",
    summary="Publish a model version by upload",
    description="The form fields must come before the files. The upload is converted to OpenVINO IR with the "
    "agents' importer and checked against its task; nothing is stored when it is refused. Publishing the "
    "same files again returns the published model.",
    status_code=201,
    response_model=ModelOut,
    openapi_extra=PUBLISH_FORM,
)
async def publish(
    request: Request, operator: AdminOperator, recheck: AdminRecheck, handlers: Handlers
) -> ModelOut:
    limits: UploadLimits = request.app.state.model_limits
    async with audited(handlers, operator, "models.publish") as change:
        model = await handlers.models.publish(
            _upload_parts(multipart(request, limits), change), still_allowed=recheck
        )
        change.target = model.model_id
    return ModelOut.of(model)


async def _upload_parts(parts: AsyncIterator[Part], change: Change) -> AsyncIterator[UploadPart]:
    """A model upload as ModelAdmin receives it: the header (from the form fields and the first file's
    name, which tells the files that follow), then chunks of the files."""
    fields: dict[str, str] = {}
    header: UploadHeader | None = None
    current = ""
    async for part in parts:
        if isinstance(part, FormField):
            if header is not None:
                raise InvalidArgumentError(
                    f"send the form fields ({', '.join(HEADER_FIELDS)}) before the files"
                )
            if part.name not in HEADER_FIELDS or part.name in fields:
                raise InvalidArgumentError(
                    f"form field {part.name[:80]!r} is unknown or repeated; "
                    f"give {', '.join(HEADER_FIELDS)} once each"
                )
            fields[part.name] = part.value
        elif isinstance(part, FileStart):
            if part.name != FILES_FIELD:
                raise InvalidArgumentError(f"send the model files as files of the field {FILES_FIELD!r}")
            if header is None:
                header = _header(fields, part.filename)
                change.target = header.model_id
                yield header
            current = part.filename
        else:
            yield UploadChunk(current, part.data)
    if header is None:
        raise InvalidArgumentError(f"no model file: send one in the field {FILES_FIELD!r}")


def _header(fields: dict[str, str], first_file: str) -> UploadHeader:
    """The upload's header; its files: the first one, and for an IR file its partner (NAME.xml, NAME.bin)."""
    missing = [name for name in ("task", "name", "version") if not fields.get(name)]
    if missing:
        raise InvalidArgumentError(f"form field(s) {', '.join(missing)} missing (they come before the files)")
    path = PurePath(first_file)
    if path.suffix.lower() == ".xml":
        files: tuple[str, ...] = (first_file, f"{path.stem}.bin")
    elif path.suffix.lower() == ".bin":
        files = (f"{path.stem}.xml", first_file)
    else:
        files = (first_file,)
    return UploadHeader(
        task=fields["task"],
        name=fields["name"],
        version=fields["version"],
        precision=fields.get("precision") or "FP16",
        licence=fields.get("licence") or "unknown",
        files=files,
    )


@router.post("/models/{model_id}/retire", summary="Stop offering a model version", response_model=ModelOut)
async def retire(model_id: ModelId, operator: AdminOperator, handlers: Handlers) -> ModelOut:
    async with audited(handlers, operator, "models.retire", model_id):
        return ModelOut.of(await handlers.models.retire(model_id))


@router.get("/rollouts", summary="Every rollout, newest first", response_model=Rollouts)
async def rollouts(operator: AdminOperator, handlers: Handlers) -> Rollouts:
    listed = await handlers.models.rollouts_counted(COUNTED_ROLLOUTS)
    return Rollouts(
        rollouts=[
            RolloutListed(**RolloutOut.of(r).model_dump(), device_counts=counts) for r, counts in listed
        ]
    )


@router.post(
    "/rollouts",
    summary="Roll a published version out",
    description="An embedding model first re-embeds every enrolled person from the retained crops (the "
    "request waits for it).",
    status_code=201,
    response_model=Started,
)
async def start(body: RolloutStart, operator: AdminOperator, handlers: Handlers) -> Started:
    async with audited(handlers, operator, "rollouts.start", body.model_id):
        target = Target(body.target.kind, body.target.group, body.target.percent)
        budget = body.max_failures
        failures = None if budget is None else MaxFailures(budget.count, budget.percent)
        started = await handlers.models.start(body.model_id, target, failures, body.on_failures)
    return Started(
        rollout=RolloutOut.of(started.rollout),
        reembedded_count=len(started.reembedded),
        reembedded=sorted(started.reembedded)[:MAX_LISTED_PEOPLE],
        without_crops_count=len(started.without_crops),
        without_crops=sorted(started.without_crops)[:MAX_LISTED_PEOPLE],
        runs_in_place_of=started.runs_in_place_of,
    )


@router.get("/rollouts/{rollout_id}", summary="A rollout and how it stands on each agent")
async def rollout(rollout_id: RolloutId, operator: AdminOperator, handlers: Handlers) -> RolloutDetail:
    found, devices = await handlers.models.rollout(rollout_id)
    return RolloutDetail(rollout=RolloutOut.of(found), devices=[RolloutDeviceOut.of(d) for d in devices])


@router.post(
    "/rollouts/{rollout_id}/{action}",
    summary="Pause, resume (or widen) or roll back a rollout",
    response_model=RolloutOut,
)
async def change(
    rollout_id: RolloutId,
    action: Literal["pause", "resume", "rollback"],
    operator: AdminOperator,
    handlers: Handlers,
    body: RolloutChange | None = None,
) -> RolloutOut:
    async with audited(handlers, operator, f"rollouts.{action}", str(rollout_id)):
        percent = None if body is None else body.percent
        return RolloutOut.of(await handlers.models.change(rollout_id, action, percent))
