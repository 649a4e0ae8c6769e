"""`facefleet-server audit list`: the admin audit log, on the state directory or with --server through the
HTTP API, as a table or --json (the HTTP API's JSON either way).

Every change to people, tokens, models and rollouts is there, made through AdminService (who = the
token's name), this command line (who = "local") or by the server itself (who = "server"), refused ones too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.server.api.http.audit import AuditEntryOut
from facefleet.server.cli.context import Context, dump, new_table, when
from facefleet.server.cli.query import parse_moment
from facefleet.server.domain.audit import AuditFilter
from facefleet.server.domain.queries import MAX_PAGE_SIZE
from facefleet.server.errors import UsageError


def register(commands: Any, make: Callable[..., Any]) -> None:
    group = make(
        commands,
        "audit",
        "the admin audit log: who changed what, when",
        "facefleet-server audit list --since 7d",
    )
    verbs = group.add_subparsers(dest="audit_command", metavar="VERB", required=True)
    listing = make(
        verbs,
        "list",
        "audit entries, newest first",
        "facefleet-server audit list --since 24h --who ops --action people --json",
        "Changes to people, tokens, models and rollouts, newest first: when, who (a token name, 'local' for "
        "this command line, 'server' for the server itself), the action and its target, and the outcome "
        "('ok' or the refusal's status, with its message).",
    )
    listing.add_argument(
        "--since", default="24h", help="start: a duration back from now (30m, 24h, 7d) or ISO"
    )
    listing.add_argument("--until", default="", help="end: ISO time or duration back from now (default: now)")
    listing.add_argument("--who", default="", help="only entries by this token name, 'local' or 'server'")
    listing.add_argument(
        "--action",
        default="",
        metavar="PREFIX",
        help="only actions starting with this (people, rollouts.start)",
    )
    listing.add_argument("--limit", type=int, default=100, help=f"entries to show (1–{MAX_PAGE_SIZE})")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)


def _list(context: Context, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_PAGE_SIZE:
        raise UsageError(f"--limit {args.limit}: give 1–{MAX_PAGE_SIZE} entries")
    now = utc_now()
    flt = AuditFilter(
        since=parse_moment(args.since, now, "--since"),
        until=parse_moment(args.until, now, "--until") if args.until else now + timedelta(microseconds=1),
        who=args.who,
        action=args.action,
    )
    if context.remote is not None:
        params = {
            "since": flt.since.isoformat(),
            "until": flt.until.isoformat(),
            "who": flt.who,
            "action_prefix": flt.action,
            "page_size": args.limit,
        }
        entries = context.remote.get(("audit",), params)["entries"]
    else:
        entries = [dump(AuditEntryOut.of(e)) for e in context.state.list_audit(flt, None, args.limit).entries]
    if context.json_output:
        context.print_json(entries)
        return EXIT_OK
    if not entries:
        context.console.print("no audit entries in that range; widen it with --since 30d", markup=False)
        return EXIT_OK
    table = new_table("time", "who", "action", "target", "outcome", "detail")
    for e in entries:
        table.add_row(
            when(e["time"], seconds=True), e["who"], e["action"], e["target"], e["outcome"], e["detail"]
        )
    context.console.print(table)
    return EXIT_OK
