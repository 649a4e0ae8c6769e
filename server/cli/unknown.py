"""`facefleet-server unknown …`: review the faces agents saw that nobody enrolled, grouped per unseen person;
enrol a cluster as a new person or add it to an enrolled one, or dismiss it. A change names the cluster's
version as `list` or `show` gave it, and is refused (nothing changes) if faces joined or left the cluster
since. On the state directory, or with --server through the HTTP API; the JSON is the HTTP API's either way.
Each change is in the admin audit log."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import check_id
from facefleet.server.api.http.people import PersonOut
from facefleet.server.api.http.unknown import ClusterOut, ClusterSummary, SnapshotOut
from facefleet.server.cli.context import Context, dump, when
from facefleet.server.cli.remote import NotTheApiError
from facefleet.server.errors import ServerError
from facefleet.server.gallery.unknown import UnknownEnrolment

VERSION_HELP = (
    "the cluster's version as `unknown list` or `show` gave it: if faces joined or left the cluster since, "
    "nothing is done"
)


def register(commands: Any, make: Callable[..., Any]) -> None:
    group = make(
        commands, "unknown", "faces nobody enrolled, per unseen person", "facefleet-server unknown list"
    )
    verbs = group.add_subparsers(dest="unknown_command", metavar="VERB", required=True)
    listing = make(
        verbs,
        "list",
        "clusters of unknown faces, newest first",
        "facefleet-server unknown list --json",
        "Unknown faces of the last `snapshots.cluster_window_days`, grouped by who they probably are: each "
        "cluster's id and version, how many times, when, and on which devices and cameras.",
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)

    show = make(verbs, "show", "one cluster's snapshots", "facefleet-server unknown show CLUSTER --save DIR")
    show.add_argument("cluster")
    show.add_argument("--save", type=Path, help="write each snapshot's face crop to DIR/<snapshot id>.jpg")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    enroll = make(
        verbs,
        "enroll",
        "enrol a cluster as a person",
        "facefleet-server unknown enroll CLUSTER --version VERSION --person-id visitor-7 --name 'Visitor 7'",
        "The snapshots' embeddings and face crops become the person's: a new person, or with --existing "
        "more samples of an enrolled one. Agents recognise the person from their next frame.",
    )
    enroll.add_argument("cluster")
    enroll.add_argument("--version", required=True, help=VERSION_HELP)
    enroll.add_argument("--person-id", required=True, help="the person's id")
    enroll.add_argument("--name", default="", help="display name of a new person")
    enroll.add_argument("--group", action="append", default=[], help="a group of a new person (repeat)")
    enroll.add_argument("--existing", action="store_true", help="add to an enrolled person")
    enroll.add_argument("--json", action="store_true")
    enroll.set_defaults(handler=_enroll)

    dismiss = make(
        verbs,
        "dismiss",
        "take a cluster out of the review",
        "facefleet-server unknown dismiss CLUSTER --version VERSION",
    )
    dismiss.add_argument("cluster")
    dismiss.add_argument("--version", required=True, help=VERSION_HELP)
    dismiss.set_defaults(handler=_dismiss)


def _list(context: Context, args: argparse.Namespace) -> int:
    if context.remote is not None:
        clusters = context.remote.get(("unknown", "clusters"))["clusters"]
    else:
        clusters = [dump(ClusterSummary.of(c)) for c in asyncio.run(context.operators.unknown.clusters())]
    if context.json_output:
        context.print_json(clusters)
        return EXIT_OK
    if not clusters:
        context.console.print("no unknown faces to review", markup=False)
        return EXIT_OK
    table = Table()
    table.add_column("cluster", no_wrap=True)
    table.add_column("version", no_wrap=True)
    for column in ("seen", "first", "last", "cameras"):
        table.add_column(column, overflow="fold")
    for c in clusters:
        table.add_row(
            c["cluster_id"],
            c["version"],
            str(c["count"]),
            when(c["first_seen"]),
            when(c["last_seen"]),
            ", ".join(c["cameras"]),
        )
    context.console.print(table)
    return EXIT_OK


def _show(context: Context, args: argparse.Namespace) -> int:
    cluster_id = check_id("cluster id", args.cluster)
    remote = context.remote
    if remote is not None:
        cluster = remote.get(("unknown", "clusters", cluster_id))
    else:
        found = asyncio.run(context.operators.unknown.cluster(cluster_id))
        cluster = dump(
            ClusterOut(
                **ClusterSummary.of(found).model_dump(),
                snapshots=[SnapshotOut.of(s) for s in found.snapshots],
            )
        )
    if args.save is not None:
        try:
            args.save.mkdir(parents=True, exist_ok=True)
            for snapshot in cluster["snapshots"]:
                snapshot_id = _snapshot_id(snapshot["snapshot_id"])
                if remote is not None:
                    crop = remote.image(("snapshots", snapshot_id, "crop"))
                else:
                    crop = asyncio.run(context.operators.unknown.image(snapshot_id, "crop"))
                (args.save / f"{snapshot_id}.jpg").write_bytes(crop)
        except OSError as exc:
            raise ServerError(f"--save {args.save}: cannot write ({exc.strerror})") from None
    if context.json_output:
        context.print_json(cluster)
        return EXIT_OK
    table = Table(title=Text(f"cluster {cluster['cluster_id']}, version {cluster['version']}"))
    table.add_column("snapshot", no_wrap=True)
    for column in ("time", "camera", "quality"):
        table.add_column(column, overflow="fold")
    for s in cluster["snapshots"]:
        table.add_row(
            s["snapshot_id"],
            when(s["time"], seconds=True),
            f"{s['device_id']}/{s['camera']}",
            f"{s['quality']:.2f}",
        )
    context.console.print(table)
    return EXIT_OK


def _enroll(context: Context, args: argparse.Namespace) -> int:
    cluster_id = check_id("cluster id", args.cluster)
    check_id("person id", args.person_id)
    if context.remote is not None:
        body = {
            "person_id": args.person_id,
            "display_name": args.name,
            "groups": args.group,
            "existing": args.existing,
        }
        enrolled = context.remote.post(
            ("unknown", "clusters", cluster_id, "enrol"), body, params={"version": args.version}
        )
    else:
        request = UnknownEnrolment(
            args.person_id,
            cluster_id=cluster_id,
            cluster_version=args.version,
            display_name=args.name,
            groups=tuple(args.group),
            existing=args.existing,
        )
        with context.audited("unknown.enrol", args.person_id):
            result = asyncio.run(context.operators.unknown.enrol(request))
        enrolled = {
            "person": dump(PersonOut.of(result.person)),
            "snapshot_ids": list(result.snapshot_ids),
            "revision": result.person.revision,
        }
    if context.json_output:
        context.print_json(enrolled)
        return EXIT_OK
    context.console.print(
        f"{enrolled['person']['person_id']}: enrolled from {len(enrolled['snapshot_ids'])} snapshots "
        f"(gallery revision {enrolled['revision']})",
        markup=False,
    )
    return EXIT_OK


def _dismiss(context: Context, args: argparse.Namespace) -> int:
    cluster_id = check_id("cluster id", args.cluster)
    if context.remote is not None:
        dismissed = context.remote.post(
            ("unknown", "clusters", cluster_id, "dismiss"), params={"version": args.version}
        )
        count = dismissed["count"]
    else:
        with context.audited("unknown.dismiss", cluster_id):
            count = asyncio.run(context.operators.unknown.dismiss(cluster_id, (), args.version))
    context.console.print(f"{count} snapshots dismissed", markup=False)
    return EXIT_OK


def _snapshot_id(value: object) -> str:
    """A snapshot id from the server's answer, checked before it names a file under --save: a server that
    sends '../x' cannot make the command write outside the folder."""
    try:
        return check_id("snapshot id", str(value))
    except ValueError as exc:
        raise NotTheApiError(f"the server's answer holds a bad {exc}; nothing more was saved") from None
