"""Backing up and restoring the agent's store (`facefleet-agent store backup DEST`, `store restore SRC`).

A backup is a directory, as the server's are: `agent.db`, copied with SQLite's online backup API (one read
transaction: a consistent copy while the service writes in WAL mode, commits still in `agent.db-wal`
included; the copy is in rollback-journal mode, one self-contained file, mode 0600) and `backup.json`
(written last: the time, the schema version, row counts, the copy's sha256 and size, `kind:
facefleet-agent`). A copy SQLite finds damaged is not kept. `cp agent.db` of a running agent is no backup:
it misses the commits still in the log, and may catch a page half-written.

A restore checks the backup (its sha256 against the manifest, SQLite's integrity check, a schema no newer
than this agent's) before it touches the state directory, holds the store's lock (agent.db.lock) for its
whole length, so it is refused while `run` or `store migrate` holds it and neither starts meanwhile, and
moves the current `agent.db`, `agent.db-wal` and `agent.db-shm` aside as `agent.db.before-restore-<time>`
(+ `-wal`, `-shm`) rather than deleting them: a -wal left beside the restored file would be replayed into
it. An older backup is upgraded by `run` at its next start (or `store migrate`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from facefleet.agent.domain.records import (
    StoreCorruptError,
    StoreError,
    StoreFormatError,
)
from facefleet.agent.store.connection import DEFAULT_BUSY_TIMEOUT_MS
from facefleet.agent.store.lock import StoreLock
from facefleet.agent.store.migrations import MIGRATIONS
from facefleet.core.errors import EXIT_DATA, EXIT_NO_INPUT
from facefleet.core.files import fsync_dir, replace_atomic, write_atomic
from facefleet.core.migrations import SchemaError

MANIFEST = "backup.json"
DATABASE = "agent.db"
KIND = "facefleet-agent"
FORMAT = 1
TABLES = ("people", "embeddings", "reports", "snapshots", "outbox", "audit_log")
"""The tables whose row counts the manifest records (those in the store)."""


class BackupExistsError(StoreError):
    """The backup's destination holds something already: nothing is overwritten."""

    exit_code = EXIT_DATA


class BackupMissingError(StoreError):
    """No store to back up, or no backup at the path given."""

    exit_code = EXIT_NO_INPUT


@dataclass(frozen=True)
class BackupManifest:
    """What backup.json records."""

    created_at: str
    schema_version: int
    store_sha256: str
    store_bytes: int
    row_counts: dict[str, int]
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format": self.format,
            "created_at": self.created_at,
            "schema_version": self.schema_version,
            "store_sha256": self.store_sha256,
            "store_bytes": self.store_bytes,
            "row_counts": dict(self.row_counts),
        }

    @classmethod
    def load(cls, path: Path) -> BackupManifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("kind") != KIND:
                raise StoreFormatError(
                    f"{path} is not the manifest of a facefleet-agent backup (kind {data.get('kind')!r}); "
                    "give a directory written by `facefleet-agent store backup`"
                )
            manifest = cls(
                created_at=str(data["created_at"]),
                schema_version=int(data["schema_version"]),
                store_sha256=str(data["store_sha256"]),
                store_bytes=int(data["store_bytes"]),
                row_counts={str(k): int(v) for k, v in data["row_counts"].items()},
                format=int(data.get("format", FORMAT)),
            )
        except FileNotFoundError:
            raise BackupMissingError(
                f"{path}: no backup manifest; give a directory written by `facefleet-agent store backup`"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorruptError(
                f"backup manifest {path} is unreadable ({exc}); use another backup"
            ) from None
        if manifest.format > FORMAT:
            raise StoreFormatError(
                f"backup manifest {path} has format {manifest.format}, newer than this agent ({FORMAT}): "
                "upgrade facefleet-agent before restoring it"
            )
        return manifest


def backup_store(store: Path, dest: Path, now: datetime) -> BackupManifest:
    """Copy the store into `dest`, a new or empty directory, while the service may run and write; the
    manifest is written last. Nothing is left in `dest` when it fails."""
    if not store.is_file():
        raise BackupMissingError(
            f"no store at {store} to back up; check --state-dir or state_dir in --config"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupExistsError(f"backup destination {dest} exists and is not empty: choose a new directory")
    created = not dest.exists()
    copy = dest / DATABASE
    try:
        dest.mkdir(parents=True, exist_ok=True)
        _online_copy(store, copy)
        problems = _integrity(copy)
        if problems:
            raise StoreCorruptError(
                f"store {store} is damaged ({'; '.join(problems[:3])}): a copy of it is no backup, none was "
                "written; `facefleet-agent store check` lists the damage"
            )
        version, counts = _describe(copy, store)
        manifest = BackupManifest(now.isoformat(), version, _sha256(copy), copy.stat().st_size, counts)
        write_atomic(dest / MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")
    except BaseException as exc:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for name in (DATABASE, f"{DATABASE}-journal", MANIFEST):
                (dest / name).unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot back up store {store} to {dest} ({exc})") from None
        if isinstance(exc, OSError):
            raise StoreError(f"cannot back up store {store} to {dest} ({exc.strerror or exc})") from None
        raise
    return manifest


def verify_backup(src: Path) -> BackupManifest:
    """The backup's manifest, once its store matches its sha256, passes SQLite's integrity check and is a
    store no newer than this agent."""
    manifest = BackupManifest.load(src / MANIFEST)
    copy = src / DATABASE
    if not copy.is_file():
        raise BackupMissingError(f"backup {src} has no {DATABASE}; use another backup")
    actual = _sha256(copy)
    if actual != manifest.store_sha256:
        raise StoreCorruptError(
            f"backup {copy}: sha256 {actual} does not match the manifest's {manifest.store_sha256}; the "
            "backup is damaged, use another one"
        )
    problems = _integrity(copy)
    if problems:
        raise StoreCorruptError(f"backup {copy} fails its integrity check: {'; '.join(problems[:3])}")
    with _read_only(copy) as conn:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > MIGRATIONS.latest:
        raise StoreFormatError(
            f"backup {copy} has schema version {version}, newer than this agent ({MIGRATIONS.latest}): "
            "a newer FaceFleet wrote it; upgrade facefleet-agent before restoring it"
        )
    _describe(copy, copy)  # a FaceFleet store whose record this agent knows
    return manifest


def restore_store(src: Path, store: Path, now: datetime) -> tuple[BackupManifest, list[Path]]:
    """Put a verified backup in place of the store, holding the store's lock (StoreBusyError, exit 69,
    while the service or a migration holds it). The files moved aside (the old agent.db, -wal, -shm)."""
    manifest = verify_backup(src)
    with StoreLock(store, "`facefleet-agent store restore`"):
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        moves = [
            (
                store.with_name(store.name + suffix),
                store.with_name(f"{store.name}.before-restore-{stamp}{suffix}"),
            )
            for suffix in ("", "-wal", "-shm")
        ]
        for _, kept in moves:
            if kept.exists():
                raise BackupExistsError(f"{kept} exists already: move it away and run the restore again")
        kept_files: list[Path] = []
        try:
            restoring = store.with_name(store.name + ".restoring")
            with (src / DATABASE).open("rb") as source:
                replace_atomic(
                    restoring,
                    lambda out: shutil.copyfileobj(source, out, 1 << 20),
                    mode=0o600,
                    owner=_owner(store),
                )
            for current, kept in moves:  # the store first: its -wal is never left beside another file
                if current.exists():
                    current.rename(kept)
                    kept_files.append(kept)
            os.replace(restoring, store)
            fsync_dir(store.parent)
        except OSError as exc:
            raise StoreError(
                f"cannot restore the backup {src} into {store.parent} ({exc.strerror or exc}); what was "
                f"moved aside: {', '.join(map(str, kept_files)) or 'nothing'}"
            ) from None
    return manifest, kept_files


def _owner(store: Path) -> tuple[int, int] | None:
    """Whom the restored file belongs to when root restores it: the store's owner (else its directory's),
    so that the service's user can open it; None for anyone else (their own)."""
    if os.geteuid() != 0:
        return None
    found = store if store.exists() else store.parent
    info = found.stat()
    return info.st_uid, info.st_gid


def _online_copy(store: Path, copy: Path) -> None:
    """SQLite's backup API in one step: one read transaction, so the copy is the store as of one commit."""
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # reads only; opened read-write as the service's own connections are: a read-only one would leave the
    # -wal and -shm it needs behind when the service is stopped (SQLite removes them at the last close)
    source = sqlite3.connect(store, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000)
    try:
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal to carry along
            target.commit()
        finally:
            target.close()
    finally:
        source.close()


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def _integrity(path: Path) -> list[str]:
    try:
        with _read_only(path) as conn:
            return [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


def _describe(copy: Path, named: Path) -> tuple[int, dict[str, int]]:
    """The copy's schema version and row counts; StoreFormatError when it is no store of this agent."""
    with _read_only(copy) as conn:
        try:
            version = MIGRATIONS.version(conn, named)
        except SchemaError as exc:
            raise StoreFormatError(str(exc)) from None
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and not present - {"_sqlite_migrations"}:
            raise StoreFormatError(f"{named} holds no FaceFleet store tables; use another backup")
        counts = {
            table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 (fixed names)
            for table in TABLES
            if table in present
        }
    return version, counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
