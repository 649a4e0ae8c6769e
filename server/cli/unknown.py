"""`facefleet-server unknown …`: review the faces agents saw that nobody enrolled, grouped per unseen person;
enrol a cluster as a new person or add it to an enrolled one, or dismiss it. Each change is in the admin
audit log."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from facefleet.core.errors import EXIT_OK
from facefleet.server.cli.context import Context
from facefleet.server.cli.people import person_json
from facefleet.server.domain.snapshots import Snapshot, UnknownCluster
from facefleet.server.errors import ServerError
from facefleet.server.gallery.unknown import UnknownEnrolment


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
        "cluster's id, how many times, when, and on which devices and cameras.",
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
        "facefleet-server unknown enroll CLUSTER --person-id visitor-7 --name 'Visitor 7'",
        "The snapshots' embeddings and face crops become the person's: a new person, or with --existing "
        "more samples of an enrolled one. Agents recognise the person from their next frame.",
    )
    enroll.add_argument("cluster")
    enroll.add_argument("--person-id", required=True, help="the person's id")
    enroll.add_argument("--name", default="", help="display name of a new person")
    enroll.add_argument("--group", action="append", default=[], help="a group of a new person (repeat)")
    enroll.add_argument("--existing", action="store_true", help="add to an enrolled person")
    enroll.add_argument("--json", action="store_true")
    enroll.set_defaults(handler=_enroll)

    dismiss = make(
        verbs, "dismiss", "take a cluster out of the review", "facefleet-server unknown dismiss CLUSTER"
    )
    dismiss.add_argument("cluster")
    dismiss.set_defaults(handler=_dismiss)


def _list(context: Context, args: argparse.Namespace) -> int:
    clusters = asyncio.run(context.operators.unknown.clusters())
    if context.json_output:
        context.print_json([cluster_json(c) for c in clusters])
        return EXIT_OK
    if not clusters:
        context.console.print("no unknown faces to review", markup=False)
        return EXIT_OK
    table = Table()
    table.add_column("cluster", no_wrap=True)
    for column in ("seen", "first", "last", "cameras"):
        table.add_column(column)
    for c in clusters:
        table.add_row(
            c.cluster_id,
            str(c.count),
            f"{c.first_seen:%Y-%m-%d %H:%M}",
            f"{c.last_seen:%Y-%m-%d %H:%M}",
            ", ".join(c.cameras),
        )
    context.console.print(table)
    return EXIT_OK


def _show(context: Context, args: argparse.Namespace) -> int:
    unknown = context.operators.unknown
    cluster = asyncio.run(unknown.cluster(args.cluster))
    if args.save is not None:
        try:
            args.save.mkdir(parents=True, exist_ok=True)
            for snapshot in cluster.snapshots:
                crop = asyncio.run(unknown.image(snapshot.event_id, "crop"))
                (args.save / f"{snapshot.event_id}.jpg").write_bytes(crop)
        except OSError as exc:
            raise ServerError(f"--save {args.save}: cannot write ({exc.strerror})") from None
    if context.json_output:
        context.print_json(cluster_json(cluster))
        return EXIT_OK
    table = Table()
    table.add_column("snapshot", no_wrap=True)
    for column in ("time", "camera", "quality"):
        table.add_column(column)
    for s in cluster.snapshots:
        table.add_row(
            s.event_id, f"{s.time:%Y-%m-%d %H:%M:%S}", f"{s.device_id}/{s.camera}", f"{s.quality:.2f}"
        )
    context.console.print(table)
    return EXIT_OK


def _enroll(context: Context, args: argparse.Namespace) -> int:
    request = UnknownEnrolment(
        args.person_id,
        cluster_id=args.cluster,
        display_name=args.name,
        groups=tuple(args.group),
        existing=args.existing,
    )
    with context.audited("unknown.enrol", args.cluster):
        enrolled = asyncio.run(context.operators.unknown.enrol(request))
    if context.json_output:
        context.print_json(
            {"person": person_json(enrolled.person), "snapshot_ids": list(enrolled.snapshot_ids)}
        )
        return EXIT_OK
    context.console.print(
        f"{enrolled.person.person_id}: enrolled from {len(enrolled.snapshot_ids)} snapshots "
        f"(gallery revision {enrolled.person.revision})",
        markup=False,
    )
    return EXIT_OK


def _dismiss(context: Context, args: argparse.Namespace) -> int:
    with context.audited("unknown.dismiss", args.cluster):
        count = asyncio.run(context.operators.unknown.dismiss(args.cluster, ()))
    context.console.print(f"{count} snapshots dismissed", markup=False)
    return EXIT_OK


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "snapshot_id": snapshot.event_id,
        "device_id": snapshot.device_id,
        "camera": snapshot.camera,
        "time": snapshot.time.isoformat(),
        "decision": snapshot.decision,
        "person_id": snapshot.person_id,
        "quality": snapshot.quality,
        "model_id": snapshot.model_id,
        "status": snapshot.status,
    }


def cluster_json(cluster: UnknownCluster) -> dict[str, Any]:
    return {
        "cluster_id": cluster.cluster_id,
        "model_id": cluster.model_id,
        "count": cluster.count,
        "first_seen": cluster.first_seen.isoformat(),
        "last_seen": cluster.last_seen.isoformat(),
        "devices": list(cluster.devices),
        "cameras": list(cluster.cameras),
        "best_snapshot_id": cluster.best.event_id,
        "snapshots": [snapshot_json(s) for s in cluster.snapshots],
    }
