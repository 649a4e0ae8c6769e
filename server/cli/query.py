"""`facefleet-server query …`: the dashboard queries, on the state directory or with --server through the
HTTP API, as tables or --json (the HTTP API's JSON either way).

On the state directory no token and no running server are needed; `online` in `query fleet` then comes from
last-seen times only, and `watching` is null (unknown): open Watch streams are known to the serving process
alone, so only `--server` can say whether an agent is watching.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.link.events import AGE_BANDS, DECISIONS, EVENT_KINDS, GENDERS
from facefleet.server.api.http.queries import (
    AgentOut,
    AttributeCountsOut,
    DoorAccess,
    EventOut,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
)
from facefleet.server.cli.context import Context, dump, new_table, when
from facefleet.server.domain.queries import MAX_PAGE_SIZE, EventFilter
from facefleet.server.errors import UsageError

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
            "attributes",
            "estimated gender and age band of face events ([attributes] enabled on agents)",
            "facefleet-server query attributes --since 30d --per-device",
            _attributes,
        ),
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
            verb.add_argument("--camera", action="append", default=[], help="only this camera (repeat)")
            verb.add_argument("--door", action="append", default=[], help="only this door (repeat)")
        verb.add_argument("--device", action="append", default=[], help="only this device (repeat)")
        if name == "events":
            verb.add_argument("--person", action="append", default=[], help="only this person (repeat)")
            verb.add_argument(
                "--limit", type=int, default=50, help=f"events to show, a page (1–{MAX_PAGE_SIZE})"
            )
            pages = verb.add_mutually_exclusive_group()
            pages.add_argument(
                "--page-token", default="", metavar="TOKEN", help="the next page: the token a cut list named"
            )
            pages.add_argument("--all", action="store_true", help="every event, page after page")
        if name == "counts":
            verb.add_argument("--interval", default="1h", help="interval length: 1m, 15m, 1h, 1d …")
        if name in ("expressions", "attributes"):
            verb.add_argument("--per-device", action="store_true")
        verb.set_defaults(handler=handler)


def _filter(args: argparse.Namespace) -> EventFilter:
    now = utc_now()
    return EventFilter(
        start=parse_moment(args.since, now, "--since"),
        end=parse_moment(args.until, now, "--until") if args.until else now + timedelta(microseconds=1),
        device_ids=tuple(args.device),
        person_ids=tuple(getattr(args, "person", [])),
        decisions=tuple(args.decision),
        kinds=tuple(args.kind),
        cameras=tuple(args.camera),
        doors=tuple(args.door),
    )


def parse_moment(text: str, now: datetime, option: str) -> datetime:
    """The moment an option gives: a duration back from now (30m, 24h, 7d) or an ISO time (UTC unless it
    says otherwise); UsageError (exit 2) naming the option otherwise."""
    match = _DURATION.match(text.strip())
    try:
        if match:
            return now - timedelta(seconds=int(match[1]) * _UNITS[match[2]])
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is neither a duration back from now (30m, 24h, 7d) nor an ISO time "
            "(2026-12-01T08:00)"
        ) from None
    except OverflowError:
        raise UsageError(
            f"{option} {text!r} reaches back before the year 1; give a shorter duration"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _duration_s(text: str, option: str) -> int:
    """The seconds of a duration option (15m, 1h, 1d); UsageError (exit 2) naming the option otherwise."""
    match = _DURATION.match(text.strip())
    if not match or int(match[1]) == 0:
        raise UsageError(f"{option} {text!r} is not a duration like 15m, 1h or 1d")
    return int(match[1]) * _UNITS[match[2]]


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The HTTP API's query parameters of the event filter the options give."""
    flt = _filter(args)
    return {
        "start": flt.start.isoformat(),
        "end": flt.end.isoformat(),
        "device_id": list(flt.device_ids),
        "person_id": list(flt.person_ids),
        "decision": list(flt.decisions),
        "kind": list(flt.kinds),
        "camera": list(flt.cameras),
        "door": list(flt.doors),
    }


def _events(context: Context, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_PAGE_SIZE:
        raise UsageError(f"--limit {args.limit}: give 1–{MAX_PAGE_SIZE} events a page")
    events: list[dict[str, Any]] = []
    token = args.page_token
    while True:
        found, token = _events_page(context, args, token)
        events += found
        if not (args.all and token):
            break
    if token:  # the list is cut: say how to go on, apart from the output that scripts read
        context.errors.print(
            f"more events than --limit {args.limit}: the next page with --page-token {token}, or every "
            "event with --all",
            markup=False,
        )
    if context.json_output:
        context.print_json(events)
        return EXIT_OK
    table = new_table("time", "device", "camera", "kind", "decision", "person", "score", "expression", "door")
    for e in events:
        expression = e["expression"]["label"] if e["expression"] else ""
        table.add_row(
            when(e["time"], seconds=True),
            e["device_id"],
            e["camera"],
            e["kind"],
            e["decision"],
            e["person_id"],
            f"{e['score']:.3f}",
            expression,
            e["door"],
        )
    context.console.print(table)
    return EXIT_OK


def _events_page(context: Context, args: argparse.Namespace, token: str) -> tuple[list[dict[str, Any]], str]:
    """One page of events from the page token on, and the token of the next page ('' after the last)."""
    if context.remote is not None:
        params = {**_params(args), "page_size": args.limit, "page_token": token}
        page = context.remote.get(("events",), params)
        return page["events"], page["next_page_token"]
    found = asyncio.run(context.operators.queries.events(_filter(args), token, args.limit))
    following = found.next_cursor.encode() if found.next_cursor else ""
    return [dump(EventOut.of(e)) for e in found.events], following


def _counts(context: Context, args: argparse.Namespace) -> int:
    seconds = _duration_s(args.interval, "--interval")
    if context.remote is not None:
        params = {**_params(args), "interval_seconds": seconds}
        rows = context.remote.get(("events", "counts"), params)["counts"]
    else:
        found = asyncio.run(context.operators.queries.counts(_filter(args), seconds))
        rows = [dump(IntervalCount(start=c.start, device_id=c.device_id, count=c.count)) for c in found]
    return _show(context, rows, ("start", "device_id", "count"))


def _expressions(context: Context, args: argparse.Namespace) -> int:
    if context.remote is not None:
        params = {**_params(args), "per_device": args.per_device}
        rows = context.remote.get(("events", "expressions"), params)["counts"]
    else:
        found = asyncio.run(context.operators.queries.expressions(_filter(args), per_device=args.per_device))
        rows = [dump(ExpressionCount(device_id=c.device_id, label=c.label, count=c.count)) for c in found]
    return _show(context, rows, ("device_id", "label", "count"))


def _unknown(context: Context, args: argparse.Namespace) -> int:
    if context.remote is not None:
        rates = context.remote.get(("events", "unknown-rate"), _params(args))
    else:
        total, per_device = asyncio.run(context.operators.queries.unknown_rate(_filter(args)))
        rows = [
            dump(UnknownRate(device_id=r.device_id, face_events=r.face_events,
                             unknown_events=r.unknown_events, rate=r.rate))
            for r in (total, *per_device)
        ]  # fmt: skip
        rates = {"total": rows[0], "per_device": rows[1:]}
    if context.json_output:
        context.print_json(rates)
        return EXIT_OK
    table = new_table("device", "face events", "unknown", "rate")
    for row in (rates["total"], *rates["per_device"]):
        table.add_row(
            row["device_id"] or "(all)",
            str(row["face_events"]),
            str(row["unknown_events"]),
            f"{row['rate']:.1%}",
        )
    context.console.print(table)
    return EXIT_OK


def _access(context: Context, args: argparse.Namespace) -> int:
    if context.remote is not None:
        rows = context.remote.get(("events", "access"), _params(args))["doors"]
    else:
        found = asyncio.run(context.operators.queries.access(_filter(args)))
        rows = [
            dump(DoorAccess(device_id=d.device_id, door=d.door, granted=d.granted, denied=d.denied))
            for d in found
        ]
    return _show(context, rows, ("device_id", "door", "granted", "denied"))


ATTRIBUTE_COLUMNS = ("device", "face events", "estimated", *GENDERS, *AGE_BANDS)
WIDE_ATTRIBUTE_COLUMNS = 105
"""`query attributes` prints a table on terminals at least this wide, a few lines per row on narrower ones."""


def _attributes(context: Context, args: argparse.Namespace) -> int:
    if context.remote is not None:
        found = context.remote.get(("events", "attributes"), {**_params(args), "per_device": args.per_device})
    else:
        total, devices = asyncio.run(
            context.operators.queries.attributes(_filter(args), per_device=args.per_device)
        )
        found = {
            "total": dump(AttributeCountsOut.of(total)),
            "per_device": [dump(AttributeCountsOut.of(r)) for r in devices],
        }
    if context.json_output:
        context.print_json(found)
        return EXIT_OK
    rows = [found["total"], *found["per_device"]]
    if context.console.width < WIDE_ATTRIBUTE_COLUMNS:  # twelve columns would not fit: a block each
        for row in rows:
            context.console.print(_attribute_block(row), markup=False)
        return EXIT_OK
    table = new_table(*ATTRIBUTE_COLUMNS, whole=("device",))
    for row in rows:
        table.add_row(
            row["device_id"] or "(all)",
            str(row["face_events"]),
            str(row["estimated"]),
            *(str(row["genders"].get(g, 0)) for g in GENDERS),
            *(str(row["age_bands"].get(b, 0)) for b in AGE_BANDS),
        )
    context.console.print(table)
    return EXIT_OK


def _attribute_block(row: dict[str, Any]) -> str:
    """One row of `query attributes` as three lines, for a terminal too narrow for the table."""
    return "\n".join(
        (
            f"{row['device_id'] or '(all)'}: {row['face_events']} face events, {row['estimated']} estimated",
            "  " + ", ".join(f"{g} {row['genders'].get(g, 0)}" for g in GENDERS),
            "  " + ", ".join(f"{b}: {row['age_bands'].get(b, 0)}" for b in AGE_BANDS),
        )
    )


FLEET_COLUMNS = (
    "device", "online", "last seen", "version", "groups", "models", "model status", "rev (lag)", "cert until"
)  # fmt: skip
WIDE_TABLE_COLUMNS = 120
"""`query fleet` prints a table on terminals at least this wide, one block per agent on narrower ones."""


def _fleet(context: Context, args: argparse.Namespace) -> int:
    if context.remote is not None:
        fleet = context.remote.get(("fleet",), {"device_id": args.device})
    else:
        agents, head = asyncio.run(context.operators.queries.fleet(tuple(args.device)))
        # no Watch stream is open to this process: whether an agent watches a server is not known here
        fleet = {
            "gallery_revision": head,
            "agents": [{**dump(AgentOut.of(a)), "watching": None} for a in agents],
        }
    if context.json_output:
        context.print_json({"gallery_revision": fleet["gallery_revision"], "agents": fleet["agents"]})
        return EXIT_OK
    agents = fleet["agents"]
    rows = [
        {
            "device": a["device_id"] + ("" if a["device_status"] == "active" else f" ({a['device_status']})"),
            "online": "yes" if a["online"] else "no",
            "last seen": when(a["last_seen"], seconds=True)[5:],
            "version": a["agent_version"],
            "groups": ", ".join(a["groups"]),
            "models": "\n".join(
                model_id
                + (f" at {precision}" if (precision := a.get("model_precisions", {}).get(task)) else "")
                for task, model_id in sorted(a["model_versions"].items())
            ),
            "model status": "\n".join(
                f"{s['model_id']} {s['state']}" + (f": {s['reason']}" if s["reason"] else "")
                for s in a["model_statuses"]
            ),
            "rev (lag)": f"{a['gallery_revision']} ({a['revision_lag']})",
            "cert until": (a["certificate_expires"] or "-")[:10],
        }
        for a in agents
    ]
    context.console.print(f"gallery revision {fleet['gallery_revision']}", markup=False)
    if context.console.width < WIDE_TABLE_COLUMNS:  # a table of nine columns would not fit: one block each
        for row in rows:
            context.console.print(_fleet_block(row), markup=False)
        return EXIT_OK
    columns = [c for c in FLEET_COLUMNS if c not in ("groups", "model status") or any(r[c] for r in rows)]
    table = new_table(*columns, whole=("device", "online", "rev (lag)"))
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    context.console.print(table)
    return EXIT_OK


def _fleet_block(row: dict[str, str]) -> str:
    """One agent of `query fleet` as a few lines, for a terminal too narrow for the table."""
    groups = f", groups {row['groups']}" if row["groups"] else ""
    lines = [
        f"{row['device']}: online {row['online']}, last seen {row['last seen']}, agent {row['version']}, "
        f"revision {row['rev (lag)']}, certificate until {row['cert until']}{groups}",
        "  models: " + ", ".join(row["models"].splitlines()),
    ]
    lines += [f"  {status}" for status in row["model status"].splitlines()]
    return "\n".join(lines)


def _show(context: Context, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> int:
    if context.json_output:
        context.print_json(rows)
        return EXIT_OK
    table = new_table(*columns)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    context.console.print(table)
    return EXIT_OK
