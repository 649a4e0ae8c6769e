"""A damaged or emptied store file on real SQLite files, damaged as a failing disk or a careless copy does:
random bytes over one table's page, a zero-byte file, a copy without the commits still in its write-ahead
log. The service's open (and `store migrate`'s) refuses each, exit 74, naming the file and the fix, before
anything is written; a genuinely first start still creates the store."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from facefleet.agent.domain.records import Embedding, Person, StoreCorruptError
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.migrations import MIGRATIONS

MODEL = "sface@2021dec"
FIX = "Restore a backup (`facefleet-agent store restore DIR`, with the agent stopped), or move agent.db"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def enrolled(path: Path) -> Path:
    """A store with one person and their embedding, every commit in the file itself (closed)."""
    with EmbeddingStore(path) as store:
        vector = np.random.default_rng(1).standard_normal(128).astype(np.float32)
        store.gallery.add_person(Person("eileen", "Eileen"), [Embedding(MODEL, vector)])
    assert not path.with_name("agent.db-wal").exists()
    return path


def root_page(path: Path, table: str) -> int:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    return int(page)


def overwrite_page(path: Path, page: int, data: bytes) -> None:
    with path.open("r+b") as handle:
        handle.seek((page - 1) * 4096)
        handle.write(data)


@pytest.mark.parametrize("table", ["embeddings", "people", "gallery", "server_sync", "outbox"])
def test_a_page_of_random_bytes_stops_the_service_open_naming_the_file_and_the_fix(
    tmp_path: Path, table: str
) -> None:
    """Each table's root page: those the gallery loads at start, and those it never reads but the service
    writes into."""
    path = enrolled(tmp_path / "agent.db")
    overwrite_page(path, root_page(path, table), np.random.default_rng(7).bytes(4096))
    before = sha256(path)
    with pytest.raises(StoreCorruptError) as info:
        EmbeddingStore(path)  # as the service opens it at start
    message = str(info.value)
    assert info.value.exit_code == 74
    assert message.startswith(f"store {path} is damaged (SQLite's quick_check: ")
    assert "nothing was written to it" in message and FIX in message
    assert "gets its gallery back from the server" in message and "must enrol its people again" in message
    assert "`facefleet-agent store check` lists the damage" in message
    with pytest.raises(StoreCorruptError):
        EmbeddingStore(path, upgrade=False, check=True)
    assert sha256(path) == before
    with EmbeddingStore(path, read_only=True) as store:  # what a refused start leaves can still be read
        problems = store.integrity_check()
    assert problems and problems[0] == f"table {table}: database disk image is malformed"


def test_zeroed_pages_are_found_too(tmp_path: Path) -> None:
    path = enrolled(tmp_path / "agent.db")
    overwrite_page(path, root_page(path, "embeddings"), bytes(4096))
    with pytest.raises(StoreCorruptError, match="is damaged"):
        EmbeddingStore(path)


def test_a_healthy_store_opens_and_commands_do_not_pay_for_the_check(tmp_path: Path) -> None:
    path = enrolled(tmp_path / "agent.db")
    with EmbeddingStore(path) as store:
        assert store.connection.quick_check() == [] and store.integrity_check() == []
    overwrite_page(path, root_page(path, "server_sync"), np.random.default_rng(3).bytes(4096))
    with EmbeddingStore(path, read_only=True) as store:  # people list, store check: not refused at open
        assert [p.person_id for p in store.gallery.people()] == ["eileen"]


@pytest.mark.parametrize("read_only", [False, True])
def test_a_zero_byte_store_is_refused_not_made_a_new_empty_one(tmp_path: Path, read_only: bool) -> None:
    path = enrolled(tmp_path / "agent.db")
    os.truncate(path, 0)
    with pytest.raises(StoreCorruptError) as info:
        EmbeddingStore(path, read_only=read_only)
    message = str(info.value)
    assert info.value.exit_code == 74
    assert message.startswith(f"store {path} exists but holds no tables (a zero-byte file, or a copy taken")
    assert FIX in message and "restart" not in message and "schema 0" not in message
    assert path.stat().st_size == 0


def _create_as_earlier_agents_did_and_lose_power(path: str) -> None:
    """Earlier agents made the file, switched it to WAL, then committed the migrations: into the log."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    MIGRATIONS.apply(conn, Path(path))
    store = EmbeddingStore(Path(path))
    vector = np.ones(128, np.float32)
    store.gallery.add_person(Person("p1"), [Embedding(MODEL, vector)])
    os._exit(0)  # no close, no checkpoint: every commit is still in agent.db-wal


def test_a_copy_taken_while_the_commits_were_in_the_wal_is_refused(tmp_path: Path) -> None:
    live = tmp_path / "live" / "agent.db"
    live.parent.mkdir()
    child = multiprocessing.get_context("fork").Process(
        target=_create_as_earlier_agents_did_and_lose_power, args=(str(live),)
    )
    child.start()
    child.join()
    assert live.with_name("agent.db-wal").stat().st_size > 0
    copy = tmp_path / "copy" / "agent.db"
    copy.parent.mkdir()
    shutil.copy(live, copy)  # `cp agent.db` alone, as an operator would back it up
    for read_only in (True, False):
        with pytest.raises(StoreCorruptError, match=f"store {copy} exists but holds no tables"):
            EmbeddingStore(copy, read_only=read_only)
    with EmbeddingStore(live) as store:  # the live one, with its log, has it all
        assert [p.person_id for p in store.gallery.people()] == ["p1"]


def test_a_first_start_creates_the_store_with_its_tables_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.db"
    with EmbeddingStore(path) as store:
        assert store.upgraded == [step.name for step in MIGRATIONS.steps]
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []
    with sqlite3.connect(path) as conn:  # in the file, not only in its log
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 5
    conn.close()
    with EmbeddingStore(path) as store:
        assert store.upgraded == [] and store.gallery.people() == []


def test_a_write_ahead_log_where_no_store_is_is_refused(tmp_path: Path) -> None:
    """Moving agent.db away but not its -wal: SQLite would replay the old commits into the new file."""
    path = enrolled(tmp_path / "agent.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO counters (name, value) VALUES ('x', 1)")
    wal = path.with_name("agent.db-wal")
    kept = tmp_path / "kept-wal"
    shutil.copy(wal, kept)
    writer.close()
    path.unlink()
    shutil.copy(kept, wal)
    with pytest.raises(StoreCorruptError, match=f"store {path} is missing but its write-ahead log {wal}"):
        EmbeddingStore(path)
    assert not path.exists()


def test_a_first_start_on_a_file_system_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        assert store.upgraded == [step.name for step in MIGRATIONS.steps]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with EmbeddingStore(path) as store:
        assert store.upgraded == []
