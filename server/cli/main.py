"""The facefleet-server command line: serve, certificates and devices, operator tokens, models, rollouts,
dashboard queries and the admin audit log.

Exit codes: 0 success (and `serve` stopped by SIGTERM/SIGINT); 1 unexpected failure; 2 bad usage (also a
verb that works on the server host only, given --server); 65 bad input data; 66 not found (a missing input
file too); 69 cannot listen on an address, or a remote server cannot be reached or gave no answer in time;
74 state database or model store unusable (no state database in the state directory, for a verb that does
not start a new install); 77 a token the server does not know, or of a role that may not do this; 78
configuration or TLS files unusable (the systemd unit does not restart on 78 or 65).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from facefleet import __version__
from facefleet.core.cli import add_command, configure_logging, program_parser, run_command
from facefleet.core.config import check_writable
from facefleet.core.errors import EXIT_OK, FaceFleetError
from facefleet.core.logs import set_log_format
from facefleet.core.paths import resolve_state_dir
from facefleet.link.checks import utc_now
from facefleet.server.api.security import new_token
from facefleet.server.cli.audit import register as register_audit
from facefleet.server.cli.backup import register as register_backup
from facefleet.server.cli.context import Context, new_table
from facefleet.server.cli.devices import register_certs, register_devices
from facefleet.server.cli.models import register as register_models
from facefleet.server.cli.people import register as register_people
from facefleet.server.cli.query import register as register_query
from facefleet.server.cli.remote import CA_FILE_ENV, SERVER_ENV, TOKEN_FILE_ENV, NotTheApiError
from facefleet.server.cli.state import register as register_state
from facefleet.server.cli.unknown import register as register_unknown
from facefleet.server.config import load_config
from facefleet.server.domain.records import ROLES
from facefleet.server.paths import TLS_FILES, ServerPaths, check_tls, read_pem

EPILOG = """examples:
  facefleet-server certs init --server-name fleet.example.org
  facefleet-server certs issue door-1
  facefleet-server devices revoke door-1 --wipe --reason stolen
  facefleet-server tokens create dashboard --role query
  facefleet-server people enroll alice --image alice.jpg --group staff
  facefleet-server unknown list
  facefleet-server --config /etc/facefleet-server/server.toml serve
  facefleet-server query events --since 24h --device door-1 --json
  facefleet-server models publish emotion.tflite --task expression --name mini-xception --version v2
  facefleet-server rollout start mini-xception@v2 --percent 10
  facefleet-server audit list --since 7d --action rollouts
  facefleet-server backup /var/backups/facefleet/today
"""


def _parser(commands: Any, name: str, help_text: str, example: str, description: str = "") -> Any:
    """A sub-command declared like the agent's; the caller adds --json where it has one."""
    return add_command(commands, name, help_text, example, description=description, json_output=False)


def build_parser() -> argparse.ArgumentParser:
    parser, commands = program_parser(
        "facefleet-server",
        "FaceFleet central server: enrolled people, the fleet of agents, their events.",
        EPILOG,
        __version__,
        "database, models and TLS files (overrides the config)",
    )
    remote = parser.add_argument_group(
        "remote server", "verbs that read or change fleet state call this server's HTTP API instead"
    )
    remote.add_argument("--server", metavar="URL", help=f"https://host:port (or ${SERVER_ENV})")
    remote.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"a file holding an operator token (or ${TOKEN_FILE_ENV})",
    )
    remote.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help=f"the site CA to trust (or ${CA_FILE_ENV}; default: the system's)",
    )

    serve = _parser(
        commands,
        "serve",
        "run the gRPC server until SIGTERM",
        "facefleet-server --config /etc/facefleet-server/server.toml serve",
        "Serve FleetService to agents (mutual TLS) and Admin/QueryService to operators (bearer tokens).",
    )
    serve.set_defaults(handler=_serve, local_only="serve")

    check = _parser(
        commands, "check-config", "validate a config file", "facefleet-server check-config server.toml"
    )
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    check.set_defaults(handler=_check_config, needs_context=False)

    register_certs(commands, _parser)
    register_devices(commands, _parser)
    _register_tokens(commands)
    register_models(commands, _parser)
    register_query(commands, _parser)
    register_audit(commands, _parser)
    register_people(commands, _parser)
    register_unknown(commands, _parser)
    register_backup(commands, _parser)
    register_state(commands, _parser)
    return parser


def _register_tokens(commands: Any) -> None:
    group = _parser(
        commands, "tokens", "manage operator bearer tokens", "facefleet-server tokens create ops --role admin"
    )
    verbs = group.add_subparsers(dest="tokens_command", metavar="VERB", required=True)
    create = _parser(
        verbs,
        "create",
        "create a token (printed once; only its hash is stored)",
        "facefleet-server tokens create grafana --role query --json",
    )
    create.add_argument("name")
    create.add_argument(
        "--role", choices=ROLES, required=True, help="admin: enrol and query; query: query only"
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_tokens_create, local_only="tokens create", creates_state=True)
    listing = _parser(verbs, "list", "list tokens (names and roles)", "facefleet-server tokens list --json")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_tokens_list, local_only="tokens list")
    revoke = _parser(verbs, "revoke", "revoke a token by name", "facefleet-server tokens revoke grafana")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_tokens_revoke, local_only="tokens revoke")


def _serve(context: Context, args: argparse.Namespace) -> int:
    from facefleet.server.app import serve

    check_writable("state_dir", context.paths.state_dir)
    check_writable("models.dir" if context.config.models.dir else "state_dir", context.paths.models)
    set_log_format(context.config.log_format)
    return serve(context.config, context.paths)


def _check_config(context: Context | None, args: argparse.Namespace) -> int:
    config = load_config(args.file)
    for key in TLS_FILES:
        path = getattr(config.tls, key)
        if path is not None:  # the defaults under the state directory exist once `certs init` ran
            read_pem(path, key)
    paths = ServerPaths.from_config(resolve_state_dir("facefleet-server", None, config.state_dir), config)
    if all(getattr(paths, key).exists() for key in TLS_FILES):  # and work together, as `serve` loads them
        check_tls(paths)
    else:  # a default one present must be usable too
        for key in TLS_FILES:
            if getattr(paths, key).exists():
                read_pem(getattr(paths, key), key)
    print(config.model_dump_json(indent=2) if args.json else f"{args.file}: ok")
    return EXIT_OK


def _tokens_create(context: Context, args: argparse.Namespace) -> int:
    with context.audited("tokens.create", args.name):
        token, record = new_token(args.name, args.role, utc_now())
        context.state.add_token(record)
    if context.json_output:
        context.print_json({"name": record.name, "role": record.role, "token": token})
    else:
        context.console.print(f"token {record.name} ({record.role}); shown once, store it now:", markup=False)
        print(token)
    return EXIT_OK


def _tokens_list(context: Context, args: argparse.Namespace) -> int:
    records = context.state.list_tokens()
    if context.json_output:
        context.print_json(
            [
                {"name": r.name, "role": r.role, "id": r.token_id, "created_at": r.created_at.isoformat()}
                for r in records
            ]
        )
        return EXIT_OK
    table = new_table("name", "role", "id", "created")
    for r in records:
        table.add_row(r.name, r.role, r.token_id, r.created_at.isoformat(timespec="seconds"))
    context.console.print(table)
    return EXIT_OK


def _tokens_revoke(context: Context, args: argparse.Namespace) -> int:
    with context.audited("tokens.revoke", args.name):
        context.state.revoke_token(args.name)
    context.console.print(
        f"token {args.name} revoked (running servers forget it within tokens.cache_seconds)"
    )
    return EXIT_OK


Handler = Callable[[Any, argparse.Namespace], int]


def _answers_checked(handler: Handler) -> Handler:
    """The handler, with a remote answer that lacks what the HTTP API returns (the KeyError or TypeError
    of reading it) turned into NotTheApiError: a clear message instead of a traceback."""

    def checked(context: Any, args: argparse.Namespace) -> int:
        try:
            return handler(context, args)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            remote = getattr(context, "remote", None)
            if remote is None or isinstance(exc, FaceFleetError):
                raise
            raise NotTheApiError(
                f"{remote.settings.url} answered with JSON that lacks what FaceFleet's HTTP API returns "
                f"({type(exc).__name__}: {exc}); check that --server names the server's listen.http and that "
                f"it runs FaceFleet {__version__}"
            ) from None

    return checked


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, logging.INFO if args.command == "serve" else logging.WARNING)
    args.handler = _answers_checked(args.handler)
    return run_command("facefleet-server", args, Context.from_args)


if __name__ == "__main__":
    sys.exit(main())
