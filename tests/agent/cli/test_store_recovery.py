"""A damaged, emptied or lost store, as processes: `run` refuses one at start (exit 74, the file and the fix
named) instead of going live without its gallery, `store check` lists what SQLite finds, and `store backup`
and `store restore` bring a store back."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facefleet.agent.domain.records import Embedding, Person
from facefleet.agent.store.database import EmbeddingStore

AGENT = str(Path(sys.executable).with_name("facefleet-agent"))
MODEL = "sface@2021dec"
FIX = "Restore a backup (`facefleet-agent store restore DIR`, with the agent stopped), or move agent.db"


def agent(state: Path, *argv: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    options = ["--config", str(config)] if config else []
    return subprocess.run(
        [AGENT, *options, "--state-dir", str(state), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )


def enrolled(state: Path, *people: str) -> Path:
    """A store with each person and an embedding, closed (every commit in the file itself)."""
    path = state / "agent.db"
    with EmbeddingStore(path) as store:
        for n, person in enumerate(people or ("eileen",)):
            vector = np.random.default_rng(n).standard_normal(128).astype(np.float32)
            store.gallery.add_person(Person(person), [Embedding(MODEL, vector)])
    return path


def damage(path: Path, table: str) -> None:
    """Random bytes over the table's root page, as a failing disk leaves it."""
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    with path.open("r+b") as handle:
        handle.seek((page - 1) * 4096)
        handle.write(np.random.default_rng(5).bytes(4096))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A standalone door: no MQTT, no server; the store is opened before any model or camera is."""
    path = tmp_path / "agent.toml"
    path.write_text(
        '[mqtt]\nenabled = false\n[metrics]\nlisten = ""\n'
        f'[[cameras]]\nname = "door"\nsource = "{tmp_path / "door.avi"}"\n'
    )
    return path


@pytest.mark.parametrize("table", ["embeddings", "server_sync"])
def test_run_refuses_a_damaged_store_at_start_with_exit_74(tmp_path: Path, config: Path, table: str) -> None:
    """A page the gallery loads, and one it never reads but the service writes into."""
    state = tmp_path / "state"
    path = enrolled(state)
    damage(path, table)
    before = digest(path)
    done = agent(state, "run", config=config)
    assert done.returncode == 74, done.stderr
    assert f"store {path} is damaged (SQLite's quick_check: " in done.stderr
    assert FIX in done.stderr and "gets its gallery back from the server" in done.stderr
    assert "camera" not in done.stderr  # refused before anything went live
    assert digest(path) == before
    checked = agent(state, "store", "check")
    assert checked.returncode == 74, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[:2] == [f"{path}: DAMAGED", f"  table {table}: database disk image is malformed"]
    assert lines[-1].startswith(FIX)


def test_run_refuses_an_emptied_store_and_starts_a_new_one_where_there_was_none(
    tmp_path: Path, config: Path
) -> None:
    state = tmp_path / "state"
    path = enrolled(state)
    os.truncate(path, 0)
    done = agent(state, "run", config=config)
    assert done.returncode == 74, done.stderr
    assert f"store {path} exists but holds no tables (a zero-byte file" in done.stderr
    assert FIX in done.stderr and "restart" not in done.stderr
    assert path.stat().st_size == 0
    listed = agent(state, "people", "list")
    assert listed.returncode == 74 and "holds no tables" in listed.stderr
    assert "schema 0" not in listed.stderr and "upgrade" not in listed.stderr
    path.unlink()  # as the message says: moved away, the next start makes an empty store
    done = agent(tmp_path / "state", "store", "check")
    assert done.returncode == 74 and "no store at" in done.stderr


def test_store_backup_and_restore_bring_a_store_back(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = enrolled(state, "ada", "eileen")
    backup = tmp_path / "backup"
    done = agent(state, "store", "backup", str(backup), "--json")
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    assert written["row_counts"]["people"] == 2 and written["kind"] == "facefleet-agent"
    again = agent(state, "store", "backup", str(backup))
    assert again.returncode == 65 and "exists and is not empty: choose a new directory" in again.stderr
    with EmbeddingStore(path) as store:
        store.gallery.delete_person("ada")
    holder = subprocess.Popen(  # the agent service, as far as the lock goes
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from facefleet.agent.store.lock import StoreLock; "
            "StoreLock(Path(sys.argv[1]), 'run'); print('held', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        refused = agent(state, "store", "restore", str(backup))
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 69 and "stop it first (systemctl stop facefleet-agent)" in refused.stderr
    assert json.loads(agent(state, "people", "list", "--json").stdout)["people"][0]["person_id"] == "eileen"
    done = agent(state, "store", "restore", str(backup))
    assert done.returncode == 0, done.stderr
    assert f"moved aside: {state}/agent.db.before-restore-" in done.stdout
    listed = json.loads(agent(state, "people", "list", "--json").stdout)
    assert [p["person_id"] for p in listed["people"]] == ["ada", "eileen"]
    assert agent(state, "store", "check").returncode == 0
