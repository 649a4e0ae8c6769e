"""/api/people: list, get, enrol from uploaded images, update and delete enrolled people, and their retained
face crops as JPEG. Everything here needs an admin token, as AdminService does."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from facefleet.link.checks import check_id
from facefleet.link.gallery import Embedding, Person
from facefleet.server.api.http.audited import audited
from facefleet.server.api.http.auth import AdminOperator, Handlers
from facefleet.server.api.http.enrolment import IMAGES_FIELD, UploadEnrolment, read_form
from facefleet.server.api.http.problems import ERROR_RESPONSES, ProblemRoute
from facefleet.server.api.http.uploads import UploadLimits, multipart
from facefleet.server.domain.records import MAX_ENROL_IMAGES, Crop, PersonUpdate
from facefleet.server.errors import InvalidArgumentError, NotFoundError

router = APIRouter(prefix="/people", tags=["people"], route_class=ProblemRoute, responses=ERROR_RESPONSES)
JPEG = "image/jpeg"
PersonId = Annotated[str, Path(description="1–128 letters, digits, '.', '_', ':', '@', '-'")]


class EmbeddingOut(BaseModel):
    model_id: str
    dim: int
    quality: float
    source: str
    vector: list[float] | None = Field(None, description="Only with include_embeddings=true")

    @classmethod
    def of(cls, embedding: Embedding, *, vector: bool) -> EmbeddingOut:
        values = [float(v) for v in embedding.vector] if vector else None
        return cls(
            model_id=embedding.model_id,
            dim=embedding.dim,
            quality=embedding.quality,
            source=embedding.source,
            vector=values,
        )


class PersonOut(BaseModel):
    person_id: str
    display_name: str
    groups: list[str]
    metadata: dict[str, Any]
    embeddings: list[EmbeddingOut]
    created_at: datetime | None
    updated_at: datetime | None
    revision: int = Field(description="The gallery revision of the person's last change")
    stored_crops: int | None = Field(None, description="In lists: how many face crops are kept")

    @classmethod
    def of(cls, person: Person, *, vectors: bool = False) -> PersonOut:
        return cls(
            person_id=person.person_id,
            display_name=person.display_name,
            groups=list(person.groups),
            metadata=json.loads(person.metadata_json or "{}"),
            embeddings=[EmbeddingOut.of(e, vector=vectors) for e in person.embeddings],
            created_at=person.created_at,
            updated_at=person.updated_at,
            revision=person.revision,
        )


class PeoplePage(BaseModel):
    people: list[PersonOut] = Field(description="Sorted by person_id, without embeddings")
    next_page_token: str = Field(description="Empty on the last page")
    gallery_revision: int


class PersonDetail(BaseModel):
    person: PersonOut
    stored_crops: int = Field(description="Aligned face crops kept: GET …/crops/0 … crops/N-1")


class EnrolledFaceOut(BaseModel):
    image_index: int
    filename: str
    box_xyxy: list[float] = Field(description="Face box in image pixels: left, top, right, bottom")
    quality: float
    model_ids: list[str]


class Enrolled(BaseModel):
    person: PersonOut
    faces: list[EnrolledFaceOut]
    revision: int


class PersonChange(BaseModel):
    """Fields to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = None
    groups: list[str] | None = None
    metadata: dict[str, Any] | None = None


class Updated(BaseModel):
    person: PersonOut
    revision: int


class Deleted(BaseModel):
    revision: int = Field(description="The gallery revision of the deletion")


@router.get("", summary="List people", response_model=PeoplePage)
async def list_people(
    operator: AdminOperator,
    handlers: Handlers,
    group: Annotated[str, Query(description="Only people in this group")] = "",
    q: Annotated[str, Query(description="Only people whose id or display name contains this")] = "",
    person_id: Annotated[
        list[str], Query(description="Only these people (repeat the parameter; at most 100)")
    ] = [],  # noqa: B006
    page_size: Annotated[int, Query(description="1–1000; 0 means 100")] = 0,
    page_token: Annotated[str, Query(description="next_page_token of the previous page")] = "",
) -> PeoplePage:
    people, token = await handlers.people.page(
        page_token=page_token, size=page_size, group=group, search=q.strip(), person_ids=tuple(person_id)
    )
    crops = await handlers.people.crop_counts([p.person_id for p in people])
    return PeoplePage(
        people=[PersonOut.of(p).model_copy(update={"stored_crops": crops[p.person_id]}) for p in people],
        next_page_token=token,
        gallery_revision=handlers.people.fanout.head,
    )


ENROL_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGES_FIELD],
                    "properties": {
                        IMAGES_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "maxItems": MAX_ENROL_IMAGES,
                            "description": "Photos (JPEG, PNG, BMP, WebP, TIFF), each with exactly one good "
                            "face; each at most gallery.max_image_bytes",
                        },
                        "person_id": {"type": "string", "description": "Empty: the server assigns a UUID"},
                        "display_name": {"type": "string"},
                        "groups": {"type": "array", "items": {"type": "string"}},
                        "metadata": {"type": "string", "description": "A JSON object"},
                        "on_existing": {"type": "string", "enum": ["fail", "replace", "append"]},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    summary="Enrol a person from uploaded photos",
    description="Each photo must show exactly one good face. When any photo is refused, the problem "
    "detail lists every refused photo in `images` (index, filename, reason) and nothing is stored. "
    "on_existing: fail (409 when the id is taken), replace or append.",
    status_code=201,
    response_model=Enrolled,
    openapi_extra=ENROL_FORM,
)
async def enrol(request: Request, operator: AdminOperator, handlers: Handlers) -> Enrolled:
    enrolment: UploadEnrolment = request.app.state.enrolment
    limits: UploadLimits = request.app.state.image_limits
    async with audited(handlers, operator, "people.enrol") as change:
        form = await read_form(multipart(request, limits))
        change.target = form.person_id
        result = await enrolment.enrol(form)
        change.target = result.person.person_id
    names = [image.filename for image in form.images]
    return Enrolled(
        person=PersonOut.of(result.person),
        faces=[
            EnrolledFaceOut(
                image_index=f.image_index,
                filename=names[f.image_index],
                box_xyxy=list(f.box_xyxy),
                quality=f.quality,
                model_ids=list(f.model_ids),
            )
            for f in result.faces
        ],
        revision=result.person.revision,
    )


@router.get("/{person_id}", summary="Get a person", response_model=PersonDetail)
async def get_person(
    person_id: PersonId,
    operator: AdminOperator,
    handlers: Handlers,
    include_embeddings: Annotated[bool, Query(description="Include the embedding vectors")] = False,
) -> PersonDetail:
    view = await handlers.people.get(check_id("person_id", person_id))
    return PersonDetail(
        person=PersonOut.of(view.person, vectors=include_embeddings), stored_crops=view.stored_crops
    )


@router.patch("/{person_id}", summary="Change a person's name, groups or metadata", response_model=Updated)
async def update_person(
    person_id: PersonId, change: PersonChange, operator: AdminOperator, handlers: Handlers
) -> Updated:
    async with audited(handlers, operator, "people.update", person_id):
        if change.display_name is None and change.groups is None and change.metadata is None:
            raise InvalidArgumentError(
                f"{person_id}: nothing to change; give display_name, groups or metadata"
            )
        metadata = None if change.metadata is None else json.dumps(change.metadata)
        groups = None if change.groups is None else tuple(change.groups)
        update = PersonUpdate(person_id, change.display_name, groups, metadata)
        person = await handlers.people.update(update)
    return Updated(person=PersonOut.of(person), revision=person.revision)


@router.delete("/{person_id}", summary="Delete a person, their embeddings and crops", response_model=Deleted)
async def delete_person(person_id: PersonId, operator: AdminOperator, handlers: Handlers) -> Deleted:
    async with audited(handlers, operator, "people.delete", person_id):
        revision = await handlers.people.delete(check_id("person_id", person_id))
    return Deleted(revision=revision)


@router.get(
    "/{person_id}/crops/{index}",
    summary="One retained aligned face crop (112×112) as JPEG",
    response_class=Response,
    responses={200: {"content": {JPEG: {}}, "description": "The crop"}},
)
async def crop(
    person_id: PersonId,
    index: Annotated[int, Path(ge=0, description="0 … stored_crops - 1")],
    operator: AdminOperator,
    handlers: Handlers,
) -> Response:
    check_id("person_id", person_id)
    await handlers.people.get(person_id)  # NOT_FOUND for an unknown person
    crops = await asyncio.to_thread(handlers.people.state.crops, person_id)
    if index >= len(crops):
        raise NotFoundError(f"person {person_id!r} has {len(crops)} stored crops; there is no crop {index}")
    return Response(await asyncio.to_thread(as_jpeg, crops[index]), media_type=JPEG)


def as_jpeg(crop: Crop) -> bytes:
    """A stored crop as JPEG (crops may be kept as PNG)."""
    if crop.image_format == "jpeg":
        return crop.data
    image = cv2.imdecode(np.frombuffer(crop.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    ok, encoded = (
        (False, None) if image is None else cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    )
    if not ok or encoded is None:
        raise RuntimeError(f"a stored crop ({crop.source}) cannot be converted to JPEG")
    return bytes(encoded.tobytes())
