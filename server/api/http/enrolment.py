"""Enrolment from uploaded images: read the multipart form, check every image on its own (exactly one good
face, as for AdminService.EnrollPerson), and store the person as one gallery revision only when every image
passed. When any image is refused, the refusal lists every refused image with its reason, and nothing is
stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import get_args

from facefleet.link.checks import MAX_NAME_CHARS, check_groups, check_id, check_metadata, check_text
from facefleet.link.gallery import Person
from facefleet.server.api.http.problems import DetailedError
from facefleet.server.api.http.uploads import FileChunk, FileStart, FormField, Part
from facefleet.server.domain.records import MAX_ENROL_IMAGES, EnrolmentResult, OnExisting
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.gallery.embedder import EmbeddedImages, Enroller
from facefleet.server.gallery.people import MAX_CONCURRENT_ENROLMENTS, PeopleHandler

IMAGES_FIELD = "images"
FIELDS = ("person_id", "display_name", "groups", "metadata", "on_existing")
ON_EXISTING: dict[str, OnExisting] = {value: value for value in get_args(OnExisting)}
APPEND: dict[OnExisting, bool | None] = {"fail": None, "replace": False, "append": True}
"""on_existing → PeopleHandler.enrol_embedded's append (None: a new person, ALREADY_EXISTS if taken)."""


@dataclass(frozen=True)
class UploadedImage:
    filename: str
    data: bytes


@dataclass(frozen=True)
class EnrolmentForm:
    """An enrolment as uploaded: person fields (person_id '' = assign one) and the images in order."""

    person_id: str
    display_name: str
    groups: tuple[str, ...]
    metadata_json: str
    on_existing: OnExisting
    images: tuple[UploadedImage, ...]


async def read_form(parts: AsyncIterator[Part]) -> EnrolmentForm:
    """The enrolment form of a multipart upload; INVALID_ARGUMENT naming a field that is not valid."""
    fields: dict[str, list[str]] = {}
    images: list[tuple[str, bytearray]] = []
    async for part in parts:
        if isinstance(part, FormField):
            if part.name not in FIELDS:
                raise InvalidArgumentError(
                    f"unknown form field {part.name[:80]!r}; known: {', '.join(FIELDS)}"
                )
            fields.setdefault(part.name, []).append(part.value)
        elif isinstance(part, FileStart):
            if part.name != IMAGES_FIELD:
                raise InvalidArgumentError(f"send the images as files of the field {IMAGES_FIELD!r}")
            images.append((part.filename, bytearray()))
        elif isinstance(part, FileChunk):
            images[-1][1].extend(part.data)
    if not images:
        raise InvalidArgumentError(f"no image: send 1–{MAX_ENROL_IMAGES} files in the field {IMAGES_FIELD!r}")
    for name in ("person_id", "display_name", "metadata", "on_existing"):
        if len(fields.get(name, ())) > 1:
            raise InvalidArgumentError(f"form field {name!r} is given more than once")
    person_id, display_name, metadata, on_existing = (
        fields.get(name, [""])[0] for name in ("person_id", "display_name", "metadata", "on_existing")
    )
    choice = ON_EXISTING.get(on_existing or "fail")
    if choice is None:
        raise InvalidArgumentError(f"on_existing {on_existing[:40]!r}: use one of {', '.join(ON_EXISTING)}")
    return EnrolmentForm(
        person_id=check_id("person_id", person_id) if person_id else "",
        display_name=check_text("display_name", display_name, MAX_NAME_CHARS),
        groups=check_groups(tuple(fields.get("groups", ()))),
        metadata_json=check_metadata(metadata),
        on_existing=choice,
        images=tuple(UploadedImage(name, bytes(data)) for name, data in images),
    )


class UploadEnrolment:
    """Enrols people from uploaded images through the server's PeopleHandler; at most
    MAX_CONCURRENT_ENROLMENTS requests compute embeddings at once."""

    def __init__(self, people: PeopleHandler) -> None:
        self.people = people
        self._embedding = asyncio.Semaphore(MAX_CONCURRENT_ENROLMENTS)

    async def enrol(self, form: EnrolmentForm) -> EnrolmentResult:
        """Check and embed every image, then store the person as one revision; DetailedError listing each
        refused image (as `images`: index, filename, reason) when any is refused."""
        async with self._embedding:
            enroller = await asyncio.to_thread(self.people.enroller)
            embedded = await asyncio.to_thread(_embed_each, enroller, form.images)
        person = Person(
            person_id=form.person_id or str(uuid.uuid4()),
            display_name=form.display_name,
            groups=form.groups,
            metadata_json=form.metadata_json,
            embeddings=embedded.embeddings,
        )
        stored = await self.people.enrol_embedded(person, embedded.crops, append=APPEND[form.on_existing])
        return EnrolmentResult(stored, embedded.faces)


def _embed_each(enroller: Enroller, images: Sequence[UploadedImage]) -> EmbeddedImages:
    """Every image embedded on its own, numbered by its place in the upload (blocking)."""
    embeddings, crops, faces = [], [], []
    refused: list[dict[str, object]] = []
    for index, image in enumerate(images):
        try:
            one = enroller.embed([image.data])
        except InvalidArgumentError as exc:
            reason = str(exc).replace("images[0]", f"image {image.filename!r}", 1)
            refused.append({"index": index, "filename": image.filename, "reason": reason})
            continue
        source = f"image:{index}"
        embeddings += [replace(e, source=source) for e in one.embeddings]
        crops += [replace(c, source=source) for c in one.crops]
        faces += [replace(f, image_index=index) for f in one.faces]
    if refused:
        reasons = "; ".join(str(r["reason"]) for r in refused)
        raise DetailedError(
            f"{len(refused)} of {len(images)} images cannot be enrolled, so nothing was stored: {reasons}",
            images=refused,
        )
    return EmbeddedImages(tuple(embeddings), tuple(crops), tuple(faces))
