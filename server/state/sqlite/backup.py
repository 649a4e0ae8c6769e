"""Backing up and restoring the SQLite state: `server.db` and the model store of one state directory.

A backup is a directory: `server.db` (copied with SQLite's online backup API, so it is consistent while the
server serves and writes in WAL mode; the copy is in rollback-journal mode, one self-contained file),
`models/` (a copy of the model store's files) and `backup.json` (the time, the schema version, row counts and
the sha256 of every file). A restore checks all of that before it touches the state directory, and must run
while the server is stopped."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from facefleet.core.files import write_atomic
from facefleet.core.migrations import SchemaError
from facefleet.server.errors import AlreadyExistsError, DataLossError, NotFoundError, StateError
from facefleet.server.state.backup_files import copy_atomically, copy_models, sha256_file
from facefleet.server.state.sqlite.schema import MIGRATIONS
from facefleet.server.state.sqlite.state import BUSY_TIMEOUT_MS

MANIFEST = "backup.json"
DATABASE = "server.db"
MODELS = "models"
FORMAT = 1
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


@dataclass(frozen=True)
class BackupManifest:
    """What backup.json records. models: sha256 of each model store file, by its path under models/."""

    created_at: str
    schema_version: int
    database_sha256: str
    database_bytes: int
    row_counts: dict[str, int]
    models: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> BackupManifest:
        try:
            data = json.loads(path.read_text())
            return cls(
                created_at=str(data["created_at"]),
                schema_version=int(data["schema_version"]),
                database_sha256=str(data["database_sha256"]),
                database_bytes=int(data["database_bytes"]),
                row_counts={str(k): int(v) for k, v in data["row_counts"].items()},
                models={str(k): str(v) for k, v in data.get("models", {}).items()},
                format=int(data.get("format", FORMAT)),
            )
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no backup manifest; is this a facefleet-server backup?") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataLossError(f"backup manifest {path} is unreadable ({exc})") from None


def backup_state(database: Path, models: Path, dest: Path, now: datetime) -> BackupManifest:
    """Copy the state database (online, consistent while the server writes) and the model store into
    `dest`, a new or empty directory, and write its manifest last."""
    if not database.is_file():
        raise NotFoundError(f"state database {database} does not exist: nothing to back up")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AlreadyExistsError(f"backup destination {dest} exists and is not empty: choose a new directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        copy = dest / DATABASE
        _online_copy(database, copy)
        schema_version, counts = _describe(copy)
        model_sums = copy_models(models, dest / MODELS)
        manifest = BackupManifest(
            created_at=now.isoformat(),
            schema_version=schema_version,
            database_sha256=sha256_file(copy),
            database_bytes=copy.stat().st_size,
            row_counts=counts,
            models=model_sums,
        )
        write_atomic(dest / MANIFEST, (json.dumps(manifest.to_json(), indent=2) + "\n").encode())
    except sqlite3.Error as exc:
        raise StateError(f"cannot back up state database {database} to {dest} ({exc})") from None
    except OSError as exc:
        raise StateError(f"cannot back up the state to {dest} ({exc.strerror or exc})") from None
    return manifest


def verify_backup(src: Path) -> BackupManifest:
    """The backup's manifest, once its database matches its sha256, passes `PRAGMA integrity_check` and is
    not newer than this server, and its model files match theirs."""
    manifest = BackupManifest.load(src / MANIFEST)
    database = src / DATABASE
    if not database.is_file():
        raise NotFoundError(f"backup {src} has no {DATABASE}")
    actual = sha256_file(database)
    if actual != manifest.database_sha256:
        raise DataLossError(
            f"backup {database}: sha256 {actual} does not match the manifest's {manifest.database_sha256}; "
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
    """Restore a verified backup into the state directory of `database`, which no server may have open.
    An existing database is refused unless `force`, which keeps it (and its -wal/-shm files) as
    `server.db.before-restore-<time>`; returns the manifest and where the old database went (None: none)."""
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
        copy_atomically(src / DATABASE, database)
    except OSError as exc:
        raise StateError(
            f"cannot restore the backup {src} into {database.parent} ({exc.strerror or exc})"
        ) from None
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
