"""`facefleet-server people …`: enrol people from photos, list, show, update and delete them. On the state
directory, or with --server through the HTTP API; the JSON is the HTTP API's either way. Each change is one
gallery revision, recorded in the admin audit log."""

from __future__ import annotations

import argparse
import asyncio
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import check_id
from facefleet.server.api.http.enrolment import IMAGES_FIELD, EnrolmentForm, UploadedImage, UploadEnrolment
from facefleet.server.api.http.people import EnrolledFaceOut, PersonDetail, PersonOut
from facefleet.server.cli.context import Context, dump
from facefleet.server.cli.remote import upload_deadline
from facefleet.server.domain.records import MAX_ENROL_IMAGES, OnExisting, PersonUpdate
from facefleet.server.errors import InvalidArgumentError, NotFoundError

PAGE_SIZE = 1000


def register(commands: Any, make: Callable[..., Any]) -> None:
    group = make(
        commands, "people", "enrolled people", "facefleet-server people enroll alice --image alice.jpg"
    )
    verbs = group.add_subparsers(dest="people_command", metavar="VERB", required=True)
    enroll = make(
        verbs,
        "enroll",
        "enrol a person from photos (one face each)",
        "facefleet-server people enroll alice --image a.jpg --image b.jpg --name 'Alice A.' --group staff",
        "Each photo must hold one good face; when one does not, every refused photo is named with the reason "
        "and nothing is stored. The aligned crops are kept for re-embedding with future models.",
    )
    enroll.add_argument("person", help="person id (letters, digits, '.', '_', ':', '@', '-')")
    enroll.add_argument("--image", action="append", type=Path, required=True, help="a photo (repeat)")
    enroll.add_argument("--name", default="", help="display name")
    enroll.add_argument("--group", action="append", default=[], help="a group (repeat), e.g. staff")
    mode = enroll.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true", help="replace an enrolled person's faces")
    mode.add_argument("--append", action="store_true", help="add the photos to an enrolled person")
    enroll.add_argument("--json", action="store_true")
    enroll.set_defaults(handler=_enroll)

    listing = make(verbs, "list", "enrolled people", "facefleet-server people list --group staff --json")
    listing.add_argument("--group", default="", help="only members of this group")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)

    show = make(verbs, "show", "one person and their embeddings", "facefleet-server people show alice")
    show.add_argument("person")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    update = make(
        verbs, "update", "change a name or groups", "facefleet-server people update alice --group staff"
    )
    update.add_argument("person")
    update.add_argument("--name", default=None, help="new display name")
    update.add_argument("--group", action="append", default=None, help="the groups (repeat; replaces them)")
    update.add_argument("--no-groups", action="store_true", help="remove every group")
    update.add_argument("--json", action="store_true")
    update.set_defaults(handler=_update)

    delete = make(verbs, "delete", "delete a person everywhere", "facefleet-server people delete alice")
    delete.add_argument("person")
    delete.set_defaults(handler=_delete)


def _enroll(context: Context, args: argparse.Namespace) -> int:
    person_id = check_id("person id", args.person)
    if len(args.image) > MAX_ENROL_IMAGES:
        raise InvalidArgumentError(f"{len(args.image)} photos; the limit is {MAX_ENROL_IMAGES} per enrolment")
    limit = context.config.gallery.max_image_bytes
    images = [UploadedImage(path.name, _read_photo(path, limit)) for path in args.image]
    on_existing: OnExisting = "replace" if args.replace else "append" if args.append else "fail"
    if context.remote is not None:
        files = [(IMAGES_FIELD, (image.filename, image.data)) for image in images]
        fields = {
            "person_id": person_id,
            "display_name": args.name,
            "groups": args.group,
            "on_existing": on_existing,
        }
        deadline = upload_deadline(sum(len(image.data) for image in images))
        enrolled = context.remote.post(("people",), files=files, data=fields, deadline_s=deadline)
    else:
        form = EnrolmentForm(person_id, args.name, tuple(args.group), "{}", on_existing, tuple(images))
        with context.audited("people.enrol", person_id):
            result = asyncio.run(UploadEnrolment(context.operators.people).enrol(form))
        enrolled = {
            "person": dump(PersonOut.of(result.person)),
            "faces": [
                dump(
                    EnrolledFaceOut(
                        image_index=f.image_index,
                        filename=images[f.image_index].filename,
                        box_xyxy=list(f.box_xyxy),
                        quality=f.quality,
                        model_ids=list(f.model_ids),
                    )
                )
                for f in result.faces
            ],
            "revision": result.person.revision,
        }
    if context.json_output:
        context.print_json(enrolled)
        return EXIT_OK
    for face in enrolled["faces"]:
        box = ", ".join(f"{v:.0f}" for v in face["box_xyxy"])
        context.console.print(
            f"{face['filename']}: face at {box}, quality {face['quality']:.2f}", markup=False
        )
    _say_stored(context, enrolled["person"])
    return EXIT_OK


def _read_photo(path: Path, limit: int) -> bytes:
    """A photo's bytes, at most limit (gallery.max_image_bytes) of them: its size is looked at first and
    no more than limit + 1 bytes are read (a file may grow, or be a device that never ends)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise InvalidArgumentError(f"--image {path}: {kind}; give a photo file")
        if info.st_size > limit:
            raise InvalidArgumentError(
                f"--image {path}: {info.st_size} bytes, over the {limit}-byte limit "
                "(gallery.max_image_bytes); downscale it first"
            )
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"--image {path}: no such file") from None
    except OSError as exc:
        raise NotFoundError(f"--image {path}: cannot read it ({exc.strerror})") from None
    if len(data) > limit:
        raise InvalidArgumentError(
            f"--image {path}: grew over the {limit}-byte limit (gallery.max_image_bytes) while it was read"
        )
    return data


def _list(context: Context, args: argparse.Namespace) -> int:
    people: list[dict[str, Any]] = []
    token = ""
    while True:
        if context.remote is not None:
            params = {"group": args.group, "page_size": PAGE_SIZE, "page_token": token}
            page = context.remote.get(("people",), params)
            people += page["people"]
            token = page["next_page_token"]
        else:
            found, token = asyncio.run(
                context.operators.people.page(page_token=token, size=PAGE_SIZE, group=args.group)
            )
            crops = asyncio.run(context.operators.people.crop_counts([p.person_id for p in found]))
            people += [
                dump(PersonOut.of(p).model_copy(update={"stored_crops": crops[p.person_id]})) for p in found
            ]
        if not token:
            break
    if context.json_output:
        context.print_json(people)
        return EXIT_OK
    if not people:
        context.console.print(
            "nobody is enrolled; `facefleet-server people enroll` adds someone", markup=False
        )
        return EXIT_OK
    table = Table()
    table.add_column("person", no_wrap=True)
    for column in ("name", "groups", "revision"):
        table.add_column(column, overflow="fold")
    for person in people:
        table.add_row(
            person["person_id"], person["display_name"], ", ".join(person["groups"]), str(person["revision"])
        )
    context.console.print(table)
    return EXIT_OK


def _show(context: Context, args: argparse.Namespace) -> int:
    person_id = check_id("person id", args.person)
    if context.remote is not None:
        detail = context.remote.get(("people", person_id))
    else:
        view = asyncio.run(context.operators.people.get(person_id))
        detail = dump(PersonDetail(person=PersonOut.of(view.person), stored_crops=view.stored_crops))
    if context.json_output:
        context.print_json(detail)
        return EXIT_OK
    person = detail["person"]
    for key in ("person_id", "display_name", "groups", "revision", "created_at", "updated_at"):
        context.console.print(f"{key}: {person[key]}", markup=False)
    context.console.print(f"stored_crops: {detail['stored_crops']}", markup=False)
    for embedding in person["embeddings"]:
        context.console.print(
            f"  {embedding['model_id']} quality {embedding['quality']:.2f} from {embedding['source']}",
            markup=False,
        )
    return EXIT_OK


def _update(context: Context, args: argparse.Namespace) -> int:
    person_id = check_id("person id", args.person)
    groups = [] if args.no_groups else args.group
    if context.remote is not None:
        body = {k: v for k, v in (("display_name", args.name), ("groups", groups)) if v is not None}
        person = context.remote.patch(("people", person_id), body)["person"]
    else:
        update = PersonUpdate(
            person_id, display_name=args.name, groups=None if groups is None else tuple(groups)
        )
        with context.audited("people.update", person_id):
            person = dump(PersonOut.of(asyncio.run(context.operators.people.update(update))))
    if context.json_output:
        context.print_json(person)
    else:
        _say_stored(context, person)
    return EXIT_OK


def _delete(context: Context, args: argparse.Namespace) -> int:
    person_id = check_id("person id", args.person)
    if context.remote is not None:
        revision = context.remote.delete(("people", person_id))["revision"]
    else:
        with context.audited("people.delete", person_id):
            revision = asyncio.run(context.operators.people.delete(person_id))
    context.console.print(f"{person_id} deleted (gallery revision {revision})", markup=False)
    return EXIT_OK


def _say_stored(context: Context, person: dict[str, Any]) -> None:
    embeddings, revision = len(person["embeddings"]), person["revision"]
    context.console.print(
        f"{person['person_id']}: {embeddings} embeddings, gallery revision {revision}", markup=False
    )
