"""Backing up and restoring the store on real SQLite files: a backup taken while commits are still in the
write-ahead log holds them; a restore moves the current files aside (a newer -wal is never replayed into the
restored store), is refused while the service holds the store's lock, and refuses damaged or newer backups
before it touches anything."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from facefleet.agent.domain.records import (
    Embedding,
    Person,
    StoreBusyError,
    StoreCorruptError,
    StoreFormatError,
)
from facefleet.agent.store.backup import (
    BackupExistsError,
    BackupManifest,
    backup_store,
    restore_store,
)
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.lock import StoreLock
from facefleet.agent.store.migrations import MIGRATIONS

MODEL = "sface@2021dec"
NOW = datetime(2026, 12, 2, 3, 4, 5, tzinfo=timezone.utc)


def add(store: EmbeddingStore, *people: str) -> None:
    for person in people:
        vector = np.random.default_rng(len(person)).standard_normal(128).astype(np.float32)
        store.gallery.add_person(Person(person), [Embedding(MODEL, vector)])


def people(path: Path) -> list[str]:
    with EmbeddingStore(path, read_only=True) as store:
        return [p.person_id for p in store.gallery.people()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _add_and_lose_power(path: str, names: list[str]) -> None:
    store = EmbeddingStore(Path(path))
    add(store, *names)
    os._exit(0)  # no close, no checkpoint: the commits are in agent.db-wal only


def crash_after_adding(path: Path, *names: str) -> None:
    child = multiprocessing.get_context("fork").Process(
        target=_add_and_lose_power, args=(str(path), list(names))
    )
    child.start()
    child.join()
    assert path.with_name("agent.db-wal").stat().st_size > 0


def test_a_backup_holds_the_commits_still_in_the_wal_and_is_one_private_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.db"
    EmbeddingStore(path).close()
    crash_after_adding(path, "p1", "p2")
    dest = tmp_path / "backup"
    manifest = backup_store(path, dest, NOW)
    assert sorted(p.name for p in dest.iterdir()) == ["agent.db", "backup.json"]
    assert stat.S_IMODE((dest / "agent.db").stat().st_mode) == 0o600
    assert people(dest / "agent.db") == ["p1", "p2"]
    assert json.loads((dest / "backup.json").read_text()) == manifest.to_json()
    assert manifest.schema_version == MIGRATIONS.latest and manifest.row_counts["people"] == 2
    assert manifest.store_sha256 == sha256(dest / "agent.db") and manifest.created_at == NOW.isoformat()
    with sqlite3.connect(dest / "agent.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_backup_while_the_store_is_open_and_written(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        add(store, "p1")
        backup_store(path, tmp_path / "b1", NOW)
        add(store, "p2")  # the service goes on writing
        backup_store(path, tmp_path / "b2", NOW)
    assert people(tmp_path / "b1" / "agent.db") == ["p1"]
    assert people(tmp_path / "b2" / "agent.db") == ["p1", "p2"]


def test_a_backup_refuses_a_destination_that_is_not_empty_and_leaves_it(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    EmbeddingStore(path).close()
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(BackupExistsError, match=f"backup destination {dest} exists and is not empty") as info:
        backup_store(path, dest, NOW)
    assert info.value.exit_code == 65
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    backup_store(path, empty, NOW)  # an empty directory is fine


def test_a_damaged_store_is_not_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        add(store, "p1")
    with sqlite3.connect(path) as conn:
        (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'embeddings'").fetchone()
    conn.close()
    with path.open("r+b") as handle:
        handle.seek((page - 1) * 4096)
        handle.write(np.random.default_rng(2).bytes(4096))
    with pytest.raises(StoreCorruptError, match=rf"store {path} is damaged .*a copy of it is no backup"):
        backup_store(path, tmp_path / "backup", NOW)
    assert not (tmp_path / "backup").exists()


def test_a_restore_moves_the_newer_files_aside_instead_of_replaying_their_log(tmp_path: Path) -> None:
    """The operator restores an older backup while the store's newer commits are still in its -wal: by
    `cp`, SQLite would replay them into the restored file; the restore moves the -wal aside with it."""
    path = tmp_path / "state" / "agent.db"
    with EmbeddingStore(path) as store:
        add(store, "p1")
    backup_store(path, tmp_path / "backup", NOW)
    crash_after_adding(path, "p3", "p4")
    wal_before = sha256(path.with_name("agent.db-wal"))
    manifest, kept = restore_store(tmp_path / "backup", path, NOW)
    stamp = "agent.db.before-restore-20261202T030405Z"
    assert [k.name for k in kept] == [stamp, f"{stamp}-wal", f"{stamp}-shm"]
    assert not path.with_name("agent.db-wal").exists() and not path.with_name("agent.db-shm").exists()
    assert sha256(path.with_name(f"{stamp}-wal")) == wal_before
    assert people(path) == ["p1"] and manifest.row_counts["people"] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert people(path.with_name(stamp)) == ["p1", "p3", "p4"]  # nothing of the newer store is lost
    with EmbeddingStore(path) as store:  # as the service opens it next
        assert store.integrity_check() == []


def test_a_restore_into_a_state_directory_without_a_store(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        add(store, "p1")
    backup_store(path, tmp_path / "backup", NOW)
    target = tmp_path / "new-box" / "agent.db"
    _, kept = restore_store(tmp_path / "backup", target, NOW)
    assert kept == [] and people(target) == ["p1"]


def test_a_restore_is_refused_while_the_service_holds_the_store(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        add(store, "p1")
    backup_store(path, tmp_path / "backup", NOW)
    before = sha256(path)
    with StoreLock(path, "run"), pytest.raises(StoreBusyError) as info:
        restore_store(tmp_path / "backup", path, NOW)
    assert info.value.exit_code == 69
    assert f"store {path} is in use by the running agent service" in str(info.value)
    assert "stop it first (systemctl stop facefleet-agent)" in str(info.value)
    assert sha256(path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "agent.db",
        "agent.db.lock",
        "backup",
    ]


def test_a_backup_of_a_newer_schema_or_damaged_is_refused_before_anything_moves(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        add(store, "p1")
    backup = tmp_path / "backup"
    backup_store(path, backup, NOW)
    before = sha256(path)
    copy = backup / "agent.db"
    with sqlite3.connect(copy) as conn:  # as a newer agent would have left it
        conn.execute(
            "INSERT INTO facefleet_migrations (version, name, applied_at) VALUES (?, 'from_the_future', 0)",
            (MIGRATIONS.latest + 1,),
        )
        conn.execute(f"PRAGMA user_version = {MIGRATIONS.latest + 1}")
    conn.close()
    manifest = BackupManifest.load(backup / "backup.json")
    data = {**manifest.to_json(), "store_sha256": sha256(copy), "store_bytes": copy.stat().st_size}
    (backup / "backup.json").write_text(json.dumps(data))
    with pytest.raises(
        StoreFormatError, match=r"newer than this agent .*upgrade facefleet-agent before"
    ) as info:
        restore_store(backup, path, NOW)
    assert info.value.exit_code == 65
    with copy.open("r+b") as handle:  # a bit flipped after the backup was written
        handle.seek(200)
        handle.write(b"\xff")
    with pytest.raises(StoreCorruptError, match="does not match the manifest's"):
        restore_store(backup, path, NOW)
    assert sha256(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["agent.db", "backup"]
