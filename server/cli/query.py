"""`facefleet-server query …`: the dashboard queries on the local state database, as tables or --json.

These read the state directory directly (no token, no running server needed). `online` in `query fleet`
then comes from last-seen times only, since open Watch streams are known to the serving process alone.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.table import Table

from facefleet.core.errors import EXIT_OK, EXIT_USAGE
from facefleet.link.checks import utc_now
from facefleet.link.events import DECISIONS, EVENT_KINDS, Event
from facefleet.server.cli.context import Context
from facefleet.server.domain.queries import EventFilter
from facefleet.server.fleet.queries import QueryHandler

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(commands: Any, make: Callable[..., Any]) -> None:
    group = make(
        commands, "query", "dashboard queries on the local state", "facefleet-server query fleet --json"
    )
    verbs = group.add_subparsers(dest="query_command", metavar="VERB", required=True)
    specs = (
        (
            "events",
            "events, newest first",
            "facefleet-server query events --since 2h --decision unknown",
            _events,
        ),
        (
            "counts",
            "events per interval per device",
            "facefleet-server query counts --since 7d --interval 1d",
            _counts,
        ),
        (
            "expressions",
            "expression distribution of face events",
            "facefleet-server query expressions",
            _expressions,
        ),
        (
            "unknown-rate",
            "share of unknown faces",
            "facefleet-server query unknown-rate --since 24h",
            _unknown,
        ),
        ("access", "granted/denied per door", "facefleet-server query access --since 7d --json", _access),
        (
            "fleet",
            "agents: online, last seen, versions, model activations, lag",
            "facefleet-server query fleet",
            _fleet,
        ),
    )
    for name, help_text, example, handler in specs:
        verb = make(verbs, name, help_text, example)
        verb.add_argument("--json", action="store_true")
        if name != "fleet":
            verb.add_argument(
                "--since", default="24h", help="start: a duration back from now (30m, 24h, 7d) or ISO"
            )
            verb.add_argument(
                "--until", default="", help="end: ISO time or duration back from now (default: now)"
            )
            verb.add_argument("--kind", action="append", choices=EVENT_KINDS, default=[])
            verb.add_argument("--decision", action="append", choices=DECISIONS, default=[])
        verb.add_argument("--device", action="append", default=[], help="only this device (repeat)")
        if name == "events":
            verb.add_argument("--person", action="append", default=[], help="only this person (repeat)")
            verb.add_argument("--limit", type=int, default=50, help="events to show (1–1000)")
        if name == "counts":
            verb.add_argument("--interval", default="1h", help="interval length: 1m, 15m, 1h, 1d …")
        if name == "expressions":
            verb.add_argument("--per-device", action="store_true")
        verb.set_defaults(handler=handler)


def _dashboard(context: Context) -> QueryHandler:
    return QueryHandler(
        context.state, online_window=timedelta(seconds=context.config.fleet.online_window_seconds)
    )


def _filter(args: argparse.Namespace) -> EventFilter:
    now = utc_now()
    return EventFilter(
        start=parse_moment(args.since, now),
        end=parse_moment(args.until, now) if args.until else now + timedelta(microseconds=1),
        device_ids=tuple(args.device),
        person_ids=tuple(getattr(args, "person", [])),
        decisions=tuple(args.decision),
        kinds=tuple(args.kind),
    )


def parse_moment(text: str, now: datetime) -> datetime:
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"facefleet-server: error: {text!r} is neither a duration (24h) nor an ISO time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _events(context: Context, args: argparse.Namespace) -> int:
    page = asyncio.run(_dashboard(context).events(_filter(args), "", args.limit))
    if context.json_output:
        context.print_json([_plain(e) for e in page.events])
        return EXIT_OK
    table = Table("time", "device", "camera", "kind", "decision", "person", "score", "expression", "door")
    for e in page.events:
        table.add_row(*_event_row(e))
    context.console.print(table)
    return EXIT_OK


def _event_row(e: Event) -> list[str]:
    return [
        e.time.isoformat(timespec="seconds"),
        e.device_id,
        e.camera,
        e.kind,
        e.decision,
        e.person_id,
        f"{e.score:.3f}",
        e.expression.label if e.expression else "",
        e.door,
    ]


def _counts(context: Context, args: argparse.Namespace) -> int:
    match = _DURATION.match(args.interval)
    if not match:
        print(f"facefleet-server: error: --interval {args.interval!r} is not a duration like 15m or 1h")
        return EXIT_USAGE
    seconds = int(match[1]) * _UNITS[match[2]]
    rows = asyncio.run(_dashboard(context).counts(_filter(args), seconds))
    return _show(context, rows, ("start", "device_id", "count"))


def _expressions(context: Context, args: argparse.Namespace) -> int:
    rows = asyncio.run(_dashboard(context).expressions(_filter(args), per_device=args.per_device))
    return _show(context, rows, ("device_id", "label", "count"))


def _unknown(context: Context, args: argparse.Namespace) -> int:
    total, rows = asyncio.run(_dashboard(context).unknown_rate(_filter(args)))
    data = [{**_plain(r), "rate": round(r.rate, 4)} for r in (total, *rows)]
    if context.json_output:
        context.print_json({"total": data[0], "per_device": data[1:]})
        return EXIT_OK
    table = Table("device", "face events", "unknown", "rate")
    for row in data:
        table.add_row(
            row["device_id"] or "(all)",
            str(row["face_events"]),
            str(row["unknown_events"]),
            f"{row['rate']:.1%}",
        )
    context.console.print(table)
    return EXIT_OK


def _access(context: Context, args: argparse.Namespace) -> int:
    rows = asyncio.run(_dashboard(context).access(_filter(args)))
    return _show(context, rows, ("device_id", "door", "granted", "denied"))


def _fleet(context: Context, args: argparse.Namespace) -> int:
    agents, head = asyncio.run(_dashboard(context).fleet(tuple(args.device)))
    if context.json_output:
        context.print_json({"gallery_revision": head, "agents": [_plain(a) for a in agents]})
        return EXIT_OK
    table = Table()
    table.add_column("device", no_wrap=True)  # the one column that must stay whole on a narrow terminal
    for column in ("online", "last seen", "version", "groups", "models", "model status", "revision (lag)"):
        table.add_column(column)
    table.add_column("certificate")
    for a in agents:
        expires = a.certificate_expires_at
        table.add_row(
            a.device_id + ("" if a.device_status == "active" else f" ({a.device_status})"),
            "yes" if a.online else "no",
            a.last_seen.isoformat(timespec="seconds"),
            a.agent_version,
            ", ".join(a.groups),
            "\n".join(f"{task}: {model_id}" for task, model_id in sorted(a.model_versions.items())),
            "\n".join(
                f"{s.model_id} {s.state}" + (f": {s.reason}" if s.reason else "") for s in a.model_statuses
            ),
            f"{a.gallery_revision} ({a.revision_lag})",
            "-" if expires is None else f"until {expires:%Y-%m-%d}",
        )
    context.console.print(f"gallery revision {head}", markup=False)
    context.console.print(table)
    return EXIT_OK


def _show(context: Context, rows: list[Any], columns: tuple[str, ...]) -> int:
    data = [_plain(row) for row in rows]
    if context.json_output:
        context.print_json(data)
        return EXIT_OK
    table = Table(*columns)
    for row in data:
        table.add_row(*(str(row[c]) for c in columns))
    context.console.print(table)
    return EXIT_OK


def _plain(item: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready values (times as ISO text)."""
    assert is_dataclass(item)
    assert not isinstance(item, type)

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return {key: convert(value) for key, value in asdict(item).items()}
