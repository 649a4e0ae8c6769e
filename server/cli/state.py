"""`facefleet-server state migrate --to postgresql://…`: move the state directory's SQLite state into a new
PostgreSQL database (facefleet.server.state.postgres.copy does the work), then point [state] url at it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from facefleet.core.errors import EXIT_OK
from facefleet.server.cli.context import Context
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.state.open import on_postgres, sqlite_database
from facefleet.server.state.postgres.copy import copy_state
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.serving import offline
from facefleet.server.state.sqlite.state import SqliteState


def register(commands: Any, make: Callable[..., Any]) -> None:
    group = make(
        commands,
        "state",
        "move the server state to another database",
        "facefleet-server state migrate --to postgresql://facefleet@db.example/facefleet",
        "Work on the state the configuration names ([state] url, by default the state directory's SQLite "
        "file).",
    )
    verbs = group.add_subparsers(dest="state_command", metavar="VERB", required=True)
    migrate = make(
        verbs,
        "migrate",
        "copy the SQLite state into a new, empty PostgreSQL database and check the counts",
        "facefleet-server state migrate --to postgresql://facefleet@db.example:5432/facefleet",
        "Refused while the server serves the SQLite state (exit 65): systemctl stop facefleet-server "
        "first. Upgrades an older SQLite state to this server's schema first. Copies people, crops, "
        "embeddings, the gallery log, events and their counts, tokens, agents, models, rollouts, devices, "
        "snapshots and the audit log in one transaction, then compares every table's row count. Afterwards "
        "set [state] url to the same URL (and [models] dir to a folder every replica shares) and start the "
        "server.",
    )
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://USER@HOST:PORT/DBNAME")
    migrate.add_argument("--json", action="store_true", help="print the row counts as JSON")
    migrate.set_defaults(handler=_migrate, local_only="state migrate", upgrades_state=True)


def _migrate(context: Context, args: argparse.Namespace) -> int:
    if not args.to.startswith(("postgresql://", "postgres://")):
        raise InvalidArgumentError(f"--to {args.to!r}: give a postgresql://USER@HOST:PORT/DBNAME URL")
    if on_postgres(context.config.state.url):
        raise InvalidArgumentError("the configured state is on PostgreSQL already; nothing to migrate")
    database = sqlite_database(context.config.state.url, context.paths.database)
    context.check_state_exists()
    with offline(database, "state migrate"):  # before the open, which upgrades an older database
        source = context.state
        assert isinstance(source, SqliteState)
        target = PostgresState(args.to, log_revisions=context.config.gallery.log_revisions, pool_size=2)
        try:
            copied = copy_state(source, target)
        finally:
            target.close()
    if context.json_output:
        context.print_json({"to": target.where, "rows": copied.target})
        return EXIT_OK
    counts = ", ".join(f"{table} {n}" for table, n in copied.target.items() if n)
    context.console.print(
        f"copied the state into {target.where}, every table's row count equal ({counts}); set [state] "
        f'url = "{target.where}" (with its password in ~/.pgpass) and start the server',
        markup=False,
    )
    return EXIT_OK
