"""Backing up and restoring the SQLite state: `server.db` and the model store of one state directory.

A backup is a directory: `server.db` (copied with SQLite's online backup API, so it is consistent while the
server serves and writes in WAL mode; the copy is in rollback-journal mode, one self-contained file),
`models/` (a copy of the model store's files) and `backup.json` (the time, the schema version, row counts,
the sha256 of every file, `backend: sqlite`). A restore checks all of that before it touches the state
directory, and is refused while a server serves the database."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path

from facefleet.core.files import fsync_dir
from facefleet.core.migrations import SchemaError
from facefleet.server.errors import AlreadyExistsError, DataLossError, NotFoundError, StateError
from facefleet.server.state.backup_files import copy_atomically, copy_models, remove_partial, sha256_file
from facefleet.server.state.backup_manifest import MANIFEST, MODELS, BackupManifest
from facefleet.server.state.serving import offline
from facefleet.server.state.sql.meta import NEW_GALLERY_SQL
from facefleet.server.state.sqlite.schema import MIGRATIONS
from facefleet.server.state.sqlite.state import BUSY_TIMEOUT_MS

DATABASE = "server.db"
TABLES = (
    "people",
    "embeddings",
    "crops",
    "events",
    "tokens",
    "agents",
    "devices",
    "models",
    "rollouts",
    "snapshots",
    "admin_audit",
)
"""The tables whose row counts the manifest records (those that exist in the database)."""


def backup_state(database: Path, models: Path, dest: Path, now: datetime) -> BackupManifest:
    """Copy the state database (online, consistent while the server writes) and the model store into
    `dest`, a new or empty directory, and write its manifest last."""
    if not database.is_file():
        raise NotFoundError(f"state database {database} does not exist: nothing to back up")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AlreadyExistsError(f"backup destination {dest} exists and is not empty: choose a new directory")
    created = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        copy = dest / DATABASE
        _online_copy(database, copy)
        schema_version, counts = _describe(copy)
        model_sums = copy_models(models, dest / MODELS)
        manifest = BackupManifest(
            backend="sqlite",
            created_at=now.isoformat(),
            schema_version=schema_version,
            state_sha256=sha256_file(copy),
            state_bytes=copy.stat().st_size,
            row_counts=counts,
            models=model_sums,
        )
        manifest.write(dest / MANIFEST)
    except BaseException as exc:
        remove_partial(dest, created, (DATABASE,))  # a retry into the same dest works
        if isinstance(exc, sqlite3.Error):
            raise StateError(f"cannot back up state database {database} to {dest} ({exc})") from None
        if isinstance(exc, OSError):
            raise StateError(f"cannot back up the state to {dest} ({exc.strerror or exc})") from None
        raise
    return manifest


def verify_backup(src: Path) -> BackupManifest:
    """The backup's manifest, once its database matches its sha256, passes `PRAGMA integrity_check` and is
    not newer than this server, and its model files match theirs."""
    manifest = BackupManifest.load(src / MANIFEST, "sqlite")
    database = src / DATABASE
    if not database.is_file():
        raise NotFoundError(f"backup {src} has no {DATABASE}")
    actual = sha256_file(database)
    if actual != manifest.state_sha256:
        raise DataLossError(
            f"backup {database}: sha256 {actual} does not match the manifest's {manifest.state_sha256}; "
            "the backup is damaged, use another one"
        )
    try:
        conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise DataLossError(f"backup {database} is not a usable SQLite database ({exc})") from None
    if result != ["ok"]:
        raise DataLossError(f"backup {database} fails its integrity check: {'; '.join(result[:5])}")
    if version > MIGRATIONS.latest:
        raise SchemaError(
            f"backup {database} has schema version {version}, newer than this server ({MIGRATIONS.latest}): "
            "upgrade facefleet-server before restoring it"
        )
    for name, expected in manifest.models.items():
        path = src / MODELS / name
        if not path.is_file() or sha256_file(path) != expected:
            raise DataLossError(
                f"backup model file {path} is missing or does not match the manifest's sha256"
            )
    return manifest


def restore_state(
    src: Path, database: Path, models: Path, now: datetime, *, force: bool = False
) -> tuple[BackupManifest, Path | None]:
    """Restore a verified backup into the state directory of `database`, which no server may have open
    (FailedPreconditionError while one serves it: facefleet.server.state.serving). An existing database is
    refused unless `force`, which keeps it (and its -wal/-shm files) as `server.db.before-restore-<time>`;
    returns the manifest and where the old database went (None: none)."""
    with offline(database, "restore"):
        return _restore(src, database, models, now, force)


def _restore(
    src: Path, database: Path, models: Path, now: datetime, force: bool
) -> tuple[BackupManifest, Path | None]:
    manifest = verify_backup(src)
    kept: Path | None = None
    if database.exists() and not force:
        raise AlreadyExistsError(
            f"state database {database} exists: pass --force to replace it (it is kept as "
            f"{database.name}.before-restore-<time>)"
        )
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        for name in manifest.models:
            copy_atomically(src / MODELS / name, models / name)
        if database.exists():
            kept = database.with_name(f"{database.name}.before-restore-{now.strftime('%Y%m%dT%H%M%SZ')}")
            if kept.exists():
                raise AlreadyExistsError(f"{kept} exists already: move it away and run the restore again")
            database.rename(kept)
        for suffix in ("-wal", "-shm"):  # a stale WAL next to the restored file would be replayed into it
            stale = database.with_name(database.name + suffix)
            if stale.exists():
                if kept is not None:
                    stale.rename(kept.with_name(kept.name + suffix))
                else:
                    stale.unlink()
        restoring = database.with_name(database.name + ".restoring")  # given its own gallery id first
        copy_atomically(src / DATABASE, restoring)
        with contextlib.closing(sqlite3.connect(restoring)) as conn, conn:
            conn.execute(NEW_GALLERY_SQL, (str(uuid.uuid4()),))
        os.replace(restoring, database)
        fsync_dir(database.parent)
    except (OSError, sqlite3.Error) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else None) or exc
        raise StateError(f"cannot restore the backup {src} into {database.parent} ({why})") from None
    return manifest, kept


def _online_copy(database: Path, copy: Path) -> None:
    source = sqlite3.connect(
        database, timeout=BUSY_TIMEOUT_MS / 1000
    )  # reads only; WAL readers need the -shm
    try:
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal to carry along
            target.commit()
        finally:
            target.close()
    finally:
        source.close()


def _describe(database: Path) -> tuple[int, dict[str, int]]:
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = {
            table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 (fixed names)
            for table in TABLES
            if table in present
        }
    finally:
        conn.close()
    return version, counts
