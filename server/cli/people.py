"""`facefleet-server people …`: enrol people from photos, list, show, update and delete them. Each change is
one gallery revision, recorded in the admin audit log."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from facefleet.core.errors import EXIT_OK
from facefleet.link.gallery import Person
from facefleet.server.cli.context import Context
from facefleet.server.domain.records import MAX_ENROL_IMAGES, EnrolmentRequest, PersonUpdate
from facefleet.server.errors import InvalidArgumentError, NotFoundError


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
        "Each photo must hold one good face; a photo that does not is named with the reason and nothing is "
        "stored. The aligned crops are kept for re-embedding with future models.",
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
    if len(args.image) > MAX_ENROL_IMAGES:
        raise InvalidArgumentError(f"{len(args.image)} photos; the limit is {MAX_ENROL_IMAGES} per enrolment")
    images = []
    for path in args.image:
        try:
            images.append(path.read_bytes())
        except OSError as exc:
            raise NotFoundError(f"--image {path}: cannot read it ({exc.strerror})") from None
    request = EnrolmentRequest(
        person_id=args.person,
        display_name=args.name,
        groups=tuple(args.group),
        images=tuple(images),
        on_existing="replace" if args.replace else "append" if args.append else "fail",
    )
    with context.audited("people.enrol", args.person):
        result = asyncio.run(context.operators.people.enrol(request))
    if context.json_output:
        context.print_json(person_json(result.person))
        return EXIT_OK
    for face in result.faces:
        context.console.print(
            f"{args.image[face.image_index]}: face at {', '.join(f'{v:.0f}' for v in face.box_xyxy)}, "
            f"quality {face.quality:.2f}",
            markup=False,
        )
    _say_stored(context, result.person)
    return EXIT_OK


def _list(context: Context, args: argparse.Namespace) -> int:
    people: list[Person] = []
    token = ""
    while True:
        page, token = asyncio.run(
            context.operators.people.page(page_token=token, size=1000, group=args.group)
        )
        people += page
        if not token:
            break
    if context.json_output:
        context.print_json([person_json(p, embeddings=False) for p in people])
        return EXIT_OK
    if not people:
        context.console.print(
            "nobody is enrolled; `facefleet-server people enroll` adds someone", markup=False
        )
        return EXIT_OK
    table = Table()
    table.add_column("person", no_wrap=True)
    for column in ("name", "groups", "revision"):
        table.add_column(column)
    for person in people:
        table.add_row(person.person_id, person.display_name, ", ".join(person.groups), str(person.revision))
    context.console.print(table)
    return EXIT_OK


def _show(context: Context, args: argparse.Namespace) -> int:
    view = asyncio.run(context.operators.people.get(args.person))
    data = {**person_json(view.person), "stored_crops": view.stored_crops}
    if context.json_output:
        context.print_json(data)
        return EXIT_OK
    for key, value in data.items():
        if key != "embeddings":
            context.console.print(f"{key}: {value}", markup=False)
    for embedding in data["embeddings"]:
        context.console.print(
            f"  {embedding['model_id']} quality {embedding['quality']:.2f} from {embedding['source']}",
            markup=False,
        )
    return EXIT_OK


def _update(context: Context, args: argparse.Namespace) -> int:
    groups = () if args.no_groups else None if args.group is None else tuple(args.group)
    update = PersonUpdate(args.person, display_name=args.name, groups=groups)
    with context.audited("people.update", args.person):
        person = asyncio.run(context.operators.people.update(update))
    if context.json_output:
        context.print_json(person_json(person))
    else:
        _say_stored(context, person)
    return EXIT_OK


def _delete(context: Context, args: argparse.Namespace) -> int:
    with context.audited("people.delete", args.person):
        revision = asyncio.run(context.operators.people.delete(args.person))
    context.console.print(f"{args.person} deleted (gallery revision {revision})", markup=False)
    return EXIT_OK


def _say_stored(context: Context, person: Person) -> None:
    context.console.print(
        f"{person.person_id}: {len(person.embeddings)} embeddings, gallery revision {person.revision}",
        markup=False,
    )


def person_json(person: Person, *, embeddings: bool = True) -> dict[str, Any]:
    """A person as JSON; embeddings (model, dimension, quality, source; no vectors) unless left out."""
    data: dict[str, Any] = {
        "person_id": person.person_id,
        "display_name": person.display_name,
        "groups": list(person.groups),
        "revision": person.revision,
        "created_at": person.created_at.isoformat() if person.created_at else None,
        "updated_at": person.updated_at.isoformat() if person.updated_at else None,
    }
    if embeddings:
        data["embeddings"] = [
            {"model_id": e.model_id, "dim": e.dim, "quality": e.quality, "source": e.source}
            for e in person.embeddings
        ]
    return data
