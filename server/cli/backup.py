"""`facefleet-server backup DEST` and `facefleet-server restore SRC`: the state database and the model store,
on the server host. On the embedded SQLite state facefleet.server.state.sqlite.backup does the work; with
[state] url on PostgreSQL, facefleet.server.state.postgres.backup (pg_dump and pg_restore)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.server.cli.context import Context
from facefleet.server.state.open import on_postgres, sqlite_database
from facefleet.server.state.sqlite.backup import backup_state, restore_state


def register(commands: Any, make: Callable[..., Any]) -> None:
    backup = make(
        commands,
        "backup",
        "copy the state database and model store into a new directory (safe while serving)",
        "facefleet-server backup /var/backups/facefleet/2026-12-02",
        "Copy the state, the model store's files, and a backup.json manifest (time, schema version, row "
        "counts, sha256 of each file) into DEST, which must not exist or be empty. SQLite: server.db with "
        "SQLite's online backup API (consistent while the server serves). PostgreSQL ([state] url = "
        "postgresql://…): state.pgdump by `pg_dump --format=custom` (the newest under "
        "/usr/lib/postgresql/*/bin, else PATH; apt install postgresql-client), on the same snapshot as the "
        "row counts, while the servers go on serving.",
    )
    backup.add_argument("dest", type=Path, metavar="DEST", help="a new or empty directory")
    backup.add_argument("--json", action="store_true", help="print the manifest as JSON")
    backup.set_defaults(handler=_backup, local_only="backup")
    restore = make(
        commands,
        "restore",
        "restore a backup into the state (the server stopped)",
        "facefleet-server restore /var/backups/facefleet/2026-12-02",
        "Refused while a server serves the state (exit 65): systemctl stop facefleet-server first (on "
        "PostgreSQL, on every replica); no server starts while it runs. Checks the backup "
        "(sha256 against its manifest, a schema version this server knows) before it changes anything. "
        "SQLite: also PRAGMA integrity_check; copies the model files, then server.db (a temporary file, "
        "fsync, rename); an existing server.db is refused unless --force, which keeps it as "
        "server.db.before-restore-<time>. PostgreSQL: restores into the database of [state] url with "
        "`pg_restore --no-owner --single-transaction --exit-on-error` (all or nothing), copies the model "
        "files into the [models] dir, then compares row counts with the manifest. Create a new, empty "
        "database for it (createdb NAME); the empty FaceFleet tables of a server started on it once are "
        "dropped first. A database holding FaceFleet data is refused unless --force, which drops its "
        "FaceFleet tables before the restore (nothing of them is kept, even if the restore then fails: back "
        "it up first) and overwrites model files that differ from the backup's.",
    )
    restore.add_argument("src", type=Path, metavar="SRC", help="a directory written by `backup`")
    restore.add_argument(
        "--force",
        action="store_true",
        help="SQLite: replace an existing state database (the old one is kept); PostgreSQL: drop the "
        "target's FaceFleet tables and overwrite differing model files (nothing is kept)",
    )
    restore.add_argument("--json", action="store_true", help="print the manifest as JSON")
    restore.set_defaults(handler=_restore, local_only="restore")


def _on_postgres(context: Context) -> bool:
    return on_postgres(context.config.state.url)


def _sqlite_database(context: Context) -> Path:
    """The SQLite file the server serves: [state] url's sqlite:///PATH, else the state directory's."""
    return sqlite_database(context.config.state.url, context.paths.database)


def _backup(context: Context, args: argparse.Namespace) -> int:
    if _on_postgres(context):
        from facefleet.server.state.postgres import backup as pg
        from facefleet.server.state.postgres.state import redact

        manifest = pg.backup_state(context.config.state.url, context.paths.models, args.dest, utc_now())
        source = redact(context.config.state.url)
    else:
        database = _sqlite_database(context)
        manifest = backup_state(database, context.paths.models, args.dest, utc_now())
        source = str(database)
    if context.json_output:
        context.print_json(manifest.to_json())
        return EXIT_OK
    counts = ", ".join(f"{table} {n}" for table, n in manifest.row_counts.items())
    context.console.print(
        f"backed up {source} (schema {manifest.schema_version}; {counts}) and "
        f"{len(manifest.models)} model files to {args.dest}",
        markup=False,
    )
    return EXIT_OK


def _restore(context: Context, args: argparse.Namespace) -> int:
    if _on_postgres(context):
        return _restore_postgres(context, args)
    database = _sqlite_database(context)
    manifest, kept = restore_state(args.src, database, context.paths.models, utc_now(), force=args.force)
    if context.json_output:
        context.print_json({**manifest.to_json(), "kept": None if kept is None else str(kept)})
        return EXIT_OK
    if kept is not None:
        context.console.print(f"kept the previous state database as {kept}", markup=False)
    context.console.print(
        f"restored {args.src} (taken {manifest.created_at}, schema {manifest.schema_version}) into "
        f"{database.parent}; start the server again",
        markup=False,
    )
    return EXIT_OK


def _restore_postgres(context: Context, args: argparse.Namespace) -> int:
    from facefleet.server.state.postgres import backup as pg
    from facefleet.server.state.postgres.state import redact

    url = context.config.state.url
    restored = pg.restore_state(args.src, url, context.paths.models, force=args.force)
    manifest = restored.manifest
    if context.json_output:
        context.print_json(
            {**manifest.to_json(), "cleaned": restored.cleaned, "models_copied": restored.models_copied}
        )
        return EXIT_OK
    counts = ", ".join(f"{table} {n}" for table, n in manifest.row_counts.items())
    context.console.print(
        f"restored {args.src} (taken {manifest.created_at}, schema {manifest.schema_version}; {counts}) into "
        f"{redact(url)} and {restored.models_copied} model files into {context.paths.models}; "
        "start the server again",
        markup=False,
    )
    return EXIT_OK
