"""`facefleet-server backup` and `restore` end to end on real SQLite: a backup taken while another connection
writes restores into an empty state directory that answers like the original; a damaged backup, or a restore
over an existing database without --force, is refused, and so is a PostgreSQL backup. A backup leaves out
the model store's work in progress, and one that fails leaves its destination as it found it. A restore is
refused while a server serves the state, and no server starts while a restore runs."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_IO, EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.link.events import Event
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Person
from facefleet.server.api.security import new_token
from facefleet.server.app import FleetServer
from facefleet.server.config import ServerConfig
from facefleet.server.domain.records import Crop
from facefleet.server.errors import StateError
from facefleet.server.paths import ServerPaths
from facefleet.server.state.serving import offline
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.vision.models.store import ModelStore
from tests.server.cli.test_cli import run_cli
from tests.tmpfs import mounted_tmpfs


def populate(state_dir: Path) -> None:
    state = SqliteState(state_dir / "server.db")
    now = utc_now()
    state.register_agent(Registration("door-1", "0.3.0"), now)
    for name in ("alice", "bob"):
        state.add_person(
            Person(name, display_name=name.title()), [Crop("png", b"\x89PNG" + name.encode(), "t")], now
        )
    state.add_events(
        [
            Event(str(uuid.uuid4()), "door-1", now - timedelta(minutes=i), "face", "match", person_id="alice")
            for i in range(20)
        ]
    )
    state.add_token(new_token("grafana", "query", now)[1])
    state.close()
    model = state_dir / "models" / "face" / "m" / "v1"
    model.mkdir(parents=True)
    (model / "model.onnx").write_bytes(b"weights")


def backed_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A populated state directory and a backup of it made with the CLI: (state dir, backup)."""
    source = tmp_path / "source"
    populate(source)
    dest = tmp_path / "backup"
    assert run_cli(capsys, "--state-dir", str(source), "backup", str(dest))[0] == EXIT_OK
    return source, dest


def answers(
    capsys: pytest.CaptureFixture[str], state_dir: Path, config: Path | None = None
) -> tuple[object, ...]:
    base = ["--state-dir", str(state_dir), *(["--config", str(config)] if config else [])]
    code, people, err = run_cli(capsys, *base, "people", "list", "--json")
    assert code == EXIT_OK, err
    code, counts, err = run_cli(capsys, *base, "query", "counts", "--interval", "1d", "--json")
    assert code == EXIT_OK, err
    code, tokens, err = run_cli(capsys, *base, "tokens", "list", "--json")
    assert code == EXIT_OK, err
    return (
        json.loads(people),
        sum(r["count"] for r in json.loads(counts)),
        [(t["name"], t["role"], t["id"]) for t in json.loads(tokens)],
    )


def test_backup_while_writing_restores_the_same_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    populate(source)
    original = answers(capsys, source)
    assert original[1] == 20

    stop = threading.Event()

    def write() -> None:  # another connection keeps writing while the backup runs
        conn = sqlite3.connect(source / "server.db", timeout=10)
        conn.execute("PRAGMA journal_mode = WAL")
        while not stop.is_set():
            conn.execute("INSERT INTO meta (key, value) VALUES (?, 'x')", (str(uuid.uuid4()),))
            conn.commit()
        conn.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        dest = tmp_path / "backup"
        code, out, err = run_cli(capsys, "--state-dir", str(source), "backup", str(dest), "--json")
    finally:
        stop.set()
        writer.join()
    assert code == EXIT_OK, err
    manifest = json.loads(out)
    assert manifest == json.loads((dest / "backup.json").read_text())
    assert manifest["row_counts"]["people"] == 2
    assert manifest["row_counts"]["crops"] == 2
    assert manifest["row_counts"]["events"] == 20
    assert manifest["row_counts"]["tokens"] == 1
    assert manifest["schema_version"] > 0
    assert list(manifest["models"]) == ["face/m/v1/model.onnx"]

    code, _, err = run_cli(capsys, "--state-dir", str(source), "backup", str(dest))
    assert code == EXIT_DATA
    assert "exists and is not empty" in err

    restored = tmp_path / "restored"
    code, _, err = run_cli(capsys, "--state-dir", str(restored), "restore", str(dest))
    assert code == EXIT_OK, err
    assert (restored / "models" / "face" / "m" / "v1" / "model.onnx").read_bytes() == b"weights"
    assert answers(capsys, restored) == original
    was, now = SqliteState(source / "server.db"), SqliteState(restored / "server.db")
    try:  # a gallery of its own: agents ahead of the restored revision take a whole snapshot
        assert now.head_revision() == was.head_revision() and now.gallery_id() != was.gallery_id()
    finally:
        was.close()
        now.close()


def test_a_damaged_backup_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, dest = backed_up(tmp_path, capsys)
    db = dest / "server.db"
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 0xFF
    db.write_bytes(bytes(data))
    restored = tmp_path / "restored"
    code, _, err = run_cli(capsys, "--state-dir", str(restored), "restore", str(dest))
    assert code == EXIT_IO
    assert "does not match the manifest" in err
    assert not (restored / "server.db").exists()


def test_restore_over_an_existing_database_needs_force_and_keeps_the_old_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = backed_up(tmp_path, capsys)
    target = tmp_path / "target"
    SqliteState(target / "server.db").close()
    before = (target / "server.db").read_bytes()

    code, _, err = run_cli(capsys, "--state-dir", str(target), "restore", str(dest))
    assert code == EXIT_DATA
    assert "pass --force" in err
    assert (target / "server.db").read_bytes() == before

    code, out, err = run_cli(capsys, "--state-dir", str(target), "restore", str(dest), "--force", "--json")
    assert code == EXIT_OK, err
    kept = Path(json.loads(out)["kept"])
    assert kept.parent == target
    assert kept.name.startswith("server.db.before-restore-")
    assert kept.read_bytes() == before
    assert answers(capsys, target) == answers(capsys, source)


def test_a_backup_from_before_the_backend_key_still_restores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = backed_up(tmp_path, capsys)
    manifest = json.loads((dest / "backup.json").read_text())
    assert manifest.pop("backend") == "sqlite"
    (dest / "backup.json").write_text(json.dumps(manifest))
    restored = tmp_path / "restored"
    code, _, err = run_cli(capsys, "--state-dir", str(restored), "restore", str(dest))
    assert code == EXIT_OK, err
    assert answers(capsys, restored) == answers(capsys, source)


def test_a_postgresql_backup_is_not_restored_into_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "backup.json").write_text(
        json.dumps({"created_at": "x", "schema_version": 2, "backend": "postgresql"})
    )
    restored = tmp_path / "restored"
    code, _, err = run_cli(capsys, "--state-dir", str(restored), "restore", str(backup))
    assert code == EXIT_DATA
    assert "postgresql state" in err and "set [state] url" in err
    assert not (restored / "server.db").exists()


def test_a_backup_leaves_out_models_in_progress_and_files_gone_meanwhile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    populate(source)
    store = ModelStore(source / "models")
    (store.staging_dir() / "model.bin").write_bytes(b"being published")  # what ModelStore.add moves in place
    removing = source / "models" / "face" / "m" / ".removing-v0"  # what ModelStore.remove was deleting
    removing.mkdir()
    (removing / "model.onnx").write_bytes(b"old weights")
    (source / "models" / "face" / "m" / "v1" / ".model.onnx.tmp").write_bytes(b"half written")
    (source / "models" / "face" / "m" / "v1" / "gone.bin").symlink_to(
        tmp_path / "nothing"
    )  # listed, not found
    dest = tmp_path / "backup"
    code, out, err = run_cli(capsys, "--state-dir", str(source), "backup", str(dest), "--json")
    assert code == EXIT_OK, err
    assert list(json.loads(out)["models"]) == ["face/m/v1/model.onnx"]
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "backup.json",
        "models/face/m/v1/model.onnx",
        "server.db",
    ]
    restored = tmp_path / "restored"
    code, _, err = run_cli(capsys, "--state-dir", str(restored), "restore", str(dest))
    assert code == EXIT_OK, err


@pytest.mark.parametrize("new", [True, False], ids=["new dest", "empty dest"])
def test_a_failed_backup_removes_what_it_wrote_so_a_retry_into_the_same_dest_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], new: bool
) -> None:
    source = tmp_path / "source"
    populate(source)
    big = source / "models" / "face" / "m" / "v2" / "model.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(5 << 20))
    with mounted_tmpfs(tmp_path / "small-disk", "4m") as disk:
        dest = disk / "today" if new else disk
        code, _, err = run_cli(capsys, "--state-dir", str(source), "backup", str(dest))
        assert code == EXIT_IO
        assert f"cannot back up the state to {dest}" in err and "No space left on device" in err
        assert list(disk.iterdir()) == []
        big.unlink()
        code, out, err = run_cli(capsys, "--state-dir", str(source), "backup", str(dest), "--json")
        assert code == EXIT_OK, err
        assert list(json.loads(out)["models"]) == ["face/m/v1/model.onnx"]


@asynccontextmanager
async def served(state_dir: Path, **sections: Any) -> AsyncIterator[FleetServer]:
    """A real server on the state directory (plaintext listeners on loopback ports 0, no metrics)."""
    config = ServerConfig.model_validate(
        {
            "insecure_development": True,
            "listen": {"agents": "127.0.0.1:0", "operators": "127.0.0.1:0", "http": "127.0.0.1:0"},
            "metrics": {"listen": ""},
            **sections,
        }
    )
    server = FleetServer(config, ServerPaths.from_config(state_dir, config))
    try:
        await server.start()
        yield server
    finally:
        await server.stop(0)


def people(capsys: pytest.CaptureFixture[str], state_dir: Path, *config: str) -> list[str]:
    code, out, err = run_cli(capsys, "--state-dir", str(state_dir), *config, "people", "list", "--json")
    assert code == EXIT_OK, err
    return [p["person_id"] for p in json.loads(out)]


def test_restore_is_refused_while_a_server_serves_the_state_and_works_once_it_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = backed_up(tmp_path, capsys)
    database = source / "server.db"

    async def scenario() -> None:
        async with served(source) as server:
            inode = database.stat().st_ino
            code, _, err = run_cli(capsys, "--state-dir", str(source), "restore", str(dest), "--force")
            assert code == EXIT_DATA
            assert f"state database {database} is in use by a running server" in err
            assert "stop the server first: systemctl stop facefleet-server, then run restore again" in err
            assert database.stat().st_ino == inode
            assert sorted(p.name for p in source.glob("server.db*")) == [
                "server.db",
                "server.db-shm",
                "server.db-wal",
                "server.db.lock",
            ]
            server.state.delete_person("bob", utc_now())  # a change after the refusal is kept

    asyncio.run(scenario())
    assert people(capsys, source) == ["alice"]
    code, out, err = run_cli(capsys, "--state-dir", str(source), "restore", str(dest), "--force", "--json")
    assert code == EXIT_OK, err
    assert Path(json.loads(out)["kept"]).name.startswith("server.db.before-restore-")
    assert people(capsys, source) == ["alice", "bob"]


def test_a_server_does_not_start_while_a_restore_runs(tmp_path: Path) -> None:
    config = ServerConfig.model_validate({"metrics": {"listen": ""}})
    paths = ServerPaths.from_config(tmp_path, config)
    with (
        offline(paths.database, "restore"),
        pytest.raises(StateError, match="is being restored or migrated") as refused,
    ):
        FleetServer(config, paths)
    assert refused.value.exit_code == EXIT_IO  # systemd starts it again a little later
    assert not paths.database.exists()


def test_backup_and_restore_use_the_sqlite_file_of_the_state_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(tmp_path / "elsewhere")
    config = tmp_path / "server.toml"
    config.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "elsewhere" / "server.db"}"\n')
    base = ["--state-dir", str(tmp_path / "state"), "--config", str(config)]
    code, out, err = run_cli(capsys, *base, "backup", str(tmp_path / "backup"), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["row_counts"]["people"] == 2
    code, _, err = run_cli(capsys, *base, "restore", str(tmp_path / "backup"), "--force")
    assert code == EXIT_OK, err
    assert [p.name[:25] for p in (tmp_path / "elsewhere").glob("*.before-restore-*")] == [
        "server.db.before-restore-"
    ]
    assert people(capsys, tmp_path / "state", "--config", str(config)) == ["alice", "bob"]
    assert not (tmp_path / "state" / "server.db").exists()
