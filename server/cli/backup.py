"""`facefleet-server backup DEST` and `facefleet-server restore SRC`: the state database and the model store
of the state directory, on the server host (facefleet.server.state.sqlite.backup does the work)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.server.cli.context import Context
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.state.sqlite.backup import backup_state, restore_state


def register(commands: Any, make: Callable[..., Any]) -> None:
    backup = make(
        commands,
        "backup",
        "copy the state database and model store into a new directory (safe while serving)",
        "facefleet-server backup /var/backups/facefleet/2026-12-02",
        "Copy server.db with SQLite's online backup API (consistent while the server serves), the model "
        "store's files, and a backup.json manifest (time, schema version, row counts, sha256 of each file) "
        "into DEST, which must not exist or be empty.",
    )
    backup.add_argument("dest", type=Path, metavar="DEST", help="a new or empty directory")
    backup.add_argument("--json", action="store_true", help="print the manifest as JSON")
    backup.set_defaults(handler=_backup)
    restore = make(
        commands,
        "restore",
        "restore a backup into the state directory (stop the server first)",
        "facefleet-server restore /var/backups/facefleet/2026-12-02",
        "Run this only while the server is stopped (systemctl stop facefleet-server). Checks the backup "
        "(sha256 against its manifest, PRAGMA integrity_check, a schema version this server knows), copies "
        "the model files, then server.db (a temporary file, fsync, rename). An existing server.db is refused "
        "unless --force, which keeps it as server.db.before-restore-<time>.",
    )
    restore.add_argument("src", type=Path, metavar="SRC", help="a directory written by `backup`")
    restore.add_argument(
        "--force", action="store_true", help="replace an existing state database (the old one is kept)"
    )
    restore.add_argument("--json", action="store_true", help="print the manifest as JSON")
    restore.set_defaults(handler=_restore)


def _local_only(context: Context, verb: str) -> None:
    if context.remote is not None:
        raise InvalidArgumentError(f"{verb} works on the server host's state directory; drop --server")
    if context.config.state.url.startswith(("postgresql://", "postgres://")):
        raise InvalidArgumentError(
            f"{verb} copies the embedded SQLite state, and [state] url is on PostgreSQL: use "
            "`pg_dump --format=custom --file state.pgdump URL` and "
            "`pg_restore --dbname NEW_URL state.pgdump` with a copy of the [models] dir"
        )


def _backup(context: Context, args: argparse.Namespace) -> int:
    _local_only(context, "backup")
    manifest = backup_state(context.paths.database, context.paths.models, args.dest, utc_now())
    if context.json_output:
        context.print_json(manifest.to_json())
        return EXIT_OK
    counts = ", ".join(f"{table} {n}" for table, n in manifest.row_counts.items())
    context.console.print(
        f"backed up {context.paths.database} (schema {manifest.schema_version}; {counts}) and "
        f"{len(manifest.models)} model files to {args.dest}",
        markup=False,
    )
    return EXIT_OK


def _restore(context: Context, args: argparse.Namespace) -> int:
    _local_only(context, "restore")
    manifest, kept = restore_state(
        args.src, context.paths.database, context.paths.models, utc_now(), force=args.force
    )
    if context.json_output:
        context.print_json({**manifest.to_json(), "kept": None if kept is None else str(kept)})
        return EXIT_OK
    if kept is not None:
        context.console.print(f"kept the previous state database as {kept}", markup=False)
    context.console.print(
        f"restored {args.src} (taken {manifest.created_at}, schema {manifest.schema_version}) into "
        f"{context.paths.state_dir}; start the server again",
        markup=False,
    )
    return EXIT_OK
