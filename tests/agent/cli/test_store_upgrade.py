"""Upgrading the store, as processes: only `run` (at start) and `store migrate` migrate it; every other verb
refuses an older store untouched, naming the fix; `run` holds the store's lock, so a second service and a
migration under it are refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.lock import StoreLock
from facefleet.agent.store.migrations import MIGRATIONS
from facefleet.vision.models.store import ModelStore
from tests.agent.store.legacy import make_legacy_store
from tests.videos import write_video

AGENT = str(Path(sys.executable).with_name("facefleet-agent"))


def agent(state: Path, *argv: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    options = ["--config", str(config)] if config else []
    return subprocess.run(
        [AGENT, *options, "--state-dir", str(state), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def old_store(state: Path) -> Path:
    """A store as agents of two migrations left it, with one person enrolled."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "agent.db"
    db = make_legacy_store(path, upto=2)
    db.execute("INSERT INTO people (person_id, name, created_at, updated_at) VALUES ('ada', 'Ada', 0, 0)")
    db.conn.commit()
    db.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verbs_refuse_an_older_store_untouched_and_store_migrate_upgrades_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = old_store(state)
    before = digest(path)
    for verb in (
        ["people", "list"],
        ["people", "show", "ada"],
        ["people", "delete", "ada"],
        ["store", "check"],
    ):
        done = agent(state, *verb)
        assert done.returncode == 65, (verb, done.stderr)
        assert (
            f"store {path} is at schema 2 and this agent needs {MIGRATIONS.latest}: restart the agent "
            "service (systemctl restart facefleet-agent), which upgrades it at start, or stop it and run "
            "`facefleet-agent store migrate`"
        ) in done.stderr
        assert "open it writable" not in done.stderr
    assert digest(path) == before and not path.with_name("agent.db-wal").exists()
    done = agent(state, "store", "migrate", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "store": str(path),
        "schema_version": MIGRATIONS.latest,
        "applied": [step.name for step in MIGRATIONS.steps[2:]],
    }
    done = agent(state, "people", "list", "--json")
    assert done.returncode == 0 and [p["person_id"] for p in json.loads(done.stdout)["people"]] == ["ada"]
    done = agent(state, "store", "migrate")
    assert done.returncode == 0 and "nothing to do" in done.stdout


def test_store_migrate_without_a_store_creates_nothing(tmp_path: Path) -> None:
    done = agent(tmp_path / "nowhere", "store", "migrate")
    assert done.returncode == 74 and "no store at" in done.stderr
    assert not (tmp_path / "nowhere").exists()


def test_the_service_upgrades_at_start_and_holds_the_store_against_a_second_service_and_a_migration(
    model_store: ModelStore, model_cache: Path, astronaut: np.ndarray, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    path = old_store(state)
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    video = write_video(tmp_path / "door.avi", [astronaut] * 4, fps=4)
    config = tmp_path / "agent.toml"
    config.write_text(
        '[mqtt]\nenabled = false\n[metrics]\nlisten = ""\n[service]\npipeline = "off"\n'
        f'[[cameras]]\nname = "door"\nsource = "{video}"\nloop = true\nmax_fps = 2\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(120)  # models compile first, slowly on a loaded machine
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    command = [AGENT, "--config", str(config), "--state-dir", str(state), "run"]
    service = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        with EmbeddingStore(path, read_only=True, upgrade=False) as store:  # upgraded at start
            assert store.schema_version() == MIGRATIONS.latest
        second = agent(state, "run", config=config)
        assert second.returncode == 69, second.stderr
        assert f"store {path} is in use by another agent service" in second.stderr
        migrate = agent(state, "store", "migrate")
        assert migrate.returncode == 69, migrate.stderr
        assert f"store {path} is in use by the running agent service ({path}.lock is locked): restart it" in (
            migrate.stderr
        )
        assert agent(state, "people", "list").returncode == 0  # rows are not the lock's business
    finally:
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
        notify.close()
    assert service.returncode == 0, stderr
    migrate = agent(state, "store", "migrate")
    assert migrate.returncode == 0 and "nothing to do" in migrate.stdout, migrate.stderr


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    """A flock goes with the process, however it ends: a killed service does not lock its store out."""
    state = tmp_path / "state"
    old_store(state)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from facefleet.agent.store.lock import StoreLock; "
            "StoreLock(Path(sys.argv[1]), 'run'); print('held', flush=True); time.sleep(60)",
            str(state / "agent.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert agent(state, "store", "migrate").returncode == 69
    finally:
        holder.kill()
        holder.wait()
    assert agent(state, "store", "migrate").returncode == 0


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)
def test_the_lock_file_root_makes_under_a_strict_umask_does_not_lock_the_service_out() -> None:
    """`store migrate` run as root with umask 077 makes the lock file; the service's user can take it."""
    folder = Path(tempfile.mkdtemp(prefix="facefleet-lock-"))  # pytest's tmp_path is root's alone
    folder.chmod(0o755)
    store = folder / "agent.db"
    previous = os.umask(0o077)
    try:
        StoreLock(store, "store migrate").close()
    finally:
        os.umask(previous)
    taken = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from facefleet.agent.store.lock import StoreLock; "
            "StoreLock(Path(sys.argv[1]), 'run').close(); print('taken')",
            str(store),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    shutil.rmtree(folder)
    assert (taken.returncode, taken.stdout) == (0, "taken\n"), taken.stderr
