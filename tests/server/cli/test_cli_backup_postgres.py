"""`facefleet-server backup` and `restore` on a real PostgreSQL (a throwaway cluster): a populated state
backed up with pg_dump restores into a new, empty database that answers the CLI's queries like the
original, and into a database a server started on once; a target holding data, a model store with
differing files and a damaged dump are refused, and leave the target as it was, and so is a database a
server replica serves."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_IO, EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.link.events import AttributesResult, Event
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Embedding, Person
from facefleet.server.api.security import new_token
from facefleet.server.app import FleetServer
from facefleet.server.config import ServerConfig
from facefleet.server.domain.records import Crop
from facefleet.server.errors import StateError
from facefleet.server.paths import ServerPaths
from facefleet.server.state.postgres import schema
from facefleet.server.state.postgres.backup import client_command
from facefleet.server.state.postgres.serving import SERVE_LOCK, refuse_while_serving
from facefleet.server.state.postgres.state import PostgresState
from tests.postgres import PostgresCluster
from tests.server.cli.test_cli import run_cli
from tests.server.cli.test_cli_backup import answers, people, served

MODEL = "face/m/v1/model.onnx"


def populate(url: str, models: Path) -> None:
    """People with crops and embeddings, 50 events over three months, a token, an agent and a model file."""
    state = PostgresState(url, pool_size=1)
    try:
        now = utc_now()
        state.register_agent(Registration("door-1", "0.3.0"), now)
        for name in ("alice", "bob"):
            state.add_person(
                Person(name, display_name=name.title()), [Crop("png", b"\x89PNG" + name.encode(), "t")], now
            )
        vector = np.random.default_rng(3).normal(size=128).astype(np.float32)
        state.add_person(Person("carol", embeddings=(Embedding("sface@2021dec", vector, 0.9, "t"),)), [], now)
        state.add_events(
            [
                Event(
                    str(uuid.uuid4()),
                    "door-1",
                    now - timedelta(minutes=i),
                    "face",
                    "match",
                    person_id="alice",
                )
                for i in range(20)
            ]
            + [
                Event(
                    str(uuid.uuid4()),
                    "door-1",
                    now - timedelta(days=40 * (i % 3), minutes=i),
                    "face",
                    "unknown",
                    attributes=AttributesResult("female", 0.1, 31.0, "30-39") if i % 2 else None,
                )
                for i in range(30)
            ]
        )
        state.add_token(new_token("grafana", "query", now)[1])
    finally:
        state.close()
    (models / MODEL).parent.mkdir(parents=True)
    (models / MODEL).write_bytes(b"weights")


def configure(path: Path, url: str, models: Path) -> Path:
    path.write_text(f'[state]\nurl = "{url}"\n\n[models]\ndir = "{models}"\n')
    return path


def all_answers(capsys: pytest.CaptureFixture[str], state_dir: Path, config: Path) -> tuple[object, ...]:
    """What the CLI says about people, tokens and events (all three months, event by event)."""
    base = ["--state-dir", str(state_dir), "--config", str(config)]
    code, counts, err = run_cli(
        capsys, *base, "query", "counts", "--since", "150d", "--interval", "1d", "--json"
    )
    assert code == EXIT_OK, err
    code, events, err = run_cli(
        capsys, *base, "query", "events", "--since", "150d", "--limit", "1000", "--json"
    )
    assert code == EXIT_OK, err
    code, alice, err = run_cli(capsys, *base, "query", "events", "--person", "alice", "--json")
    assert code == EXIT_OK, err
    return (
        answers(capsys, state_dir, config),
        json.loads(counts),
        sorted(e["event_id"] for e in json.loads(events)),
        len(json.loads(alice)),
    )


def test_backup_restores_into_a_new_database_that_answers_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    source_url = postgres_cluster.create_database()
    populate(source_url, tmp_path / "models")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    source = configure(tmp_path / "source.toml", source_url, tmp_path / "models")
    original = all_answers(capsys, state_dir, source)
    assert len(original[2]) == 50 and original[3] == 20

    dest = tmp_path / "backup"
    code, out, err = run_cli(
        capsys, "--config", str(source), "--state-dir", str(state_dir), "backup", str(dest)
    )
    assert code == EXIT_OK, err
    assert "events 50" in out
    manifest = json.loads((dest / "backup.json").read_text())
    assert manifest["backend"] == "postgresql"
    assert manifest["schema_version"] == schema.LATEST
    assert (dest / "state.pgdump").read_bytes().startswith(b"PGDMP")
    counts = manifest["row_counts"]
    assert (counts["people"], counts["crops"], counts["embeddings"], counts["events"]) == (3, 2, 1, 50)
    assert (counts["tokens"], counts["agents"]) == (1, 1)
    assert list(manifest["models"]) == [MODEL]
    assert (dest / "models" / MODEL).read_bytes() == b"weights"
    assert not (state_dir / "server.db").exists()

    code, _, err = run_cli(
        capsys, "--config", str(source), "--state-dir", str(state_dir), "backup", str(dest)
    )
    assert code == EXIT_DATA
    assert "exists and is not empty" in err

    target_url = postgres_cluster.create_database()
    target = configure(tmp_path / "target.toml", target_url, tmp_path / "restored-models")
    base = ["--config", str(target), "--state-dir", str(tmp_path / "target-state")]
    code, out, err = run_cli(capsys, *base, "restore", str(dest), "--json")
    assert code == EXIT_OK, err
    restored = json.loads(out)
    assert restored["row_counts"] == counts and restored["models_copied"] == 1 and not restored["cleaned"]
    assert (tmp_path / "restored-models" / MODEL).read_bytes() == b"weights"
    assert all_answers(capsys, tmp_path / "target-state", target) == original

    # the restored database goes on: identities after the restored ids, the gallery's revision, partitions
    state, was = PostgresState(target_url, pool_size=1), PostgresState(source_url, pool_size=1)
    try:
        assert state.head_revision() == 3
        assert state.gallery_id() != was.gallery_id()  # agents ahead of the restored revision resync
        state.add_person(Person("dave"), [Crop("png", b"\x89PNGdave", "t")], utc_now())
    finally:
        state.close()
        was.close()
    with psycopg.connect(target_url) as conn:
        assert conn.execute("SELECT id FROM crops WHERE person_id = 'dave'").fetchall() == [(3,)]

    # a database a server started on once (the schema, no data) is restored into as well
    started_url = postgres_cluster.create_database()
    PostgresState(started_url, pool_size=1).close()
    started = configure(tmp_path / "started.toml", started_url, tmp_path / "restored-models")
    code, out, err = run_cli(
        capsys, "--config", str(started), "--state-dir", str(tmp_path), "restore", str(dest)
    )
    assert code == EXIT_OK, err
    assert "0 model files" in out
    assert all_answers(capsys, tmp_path / "target-state", started) == original


def test_restore_refuses_a_target_with_data_differing_models_and_a_damaged_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    source_url = postgres_cluster.create_database()
    populate(source_url, tmp_path / "models")
    source = configure(tmp_path / "source.toml", source_url, tmp_path / "models")
    dest = tmp_path / "backup"
    assert (
        run_cli(capsys, "--config", str(source), "--state-dir", str(tmp_path), "backup", str(dest))[0]
        == EXIT_OK
    )

    busy_url = postgres_cluster.create_database()
    busy_models = tmp_path / "busy-models"
    populate(busy_url, busy_models)
    state = PostgresState(busy_url, pool_size=1)
    try:
        state.add_person(Person("erin"), [], utc_now())
    finally:
        state.close()
    busy = configure(tmp_path / "busy.toml", busy_url, busy_models)
    before = all_answers(capsys, tmp_path, busy)
    code, _, err = run_cli(capsys, "--config", str(busy), "--state-dir", str(tmp_path), "restore", str(dest))
    assert code == EXIT_DATA
    assert "already holds people (4 rows)" in err and "createdb" in err and "--force" in err
    assert all_answers(capsys, tmp_path, busy) == before

    # a model store whose file differs from the backup's is refused as well, before the database changes
    empty_url = postgres_cluster.create_database()
    (tmp_path / "other-models" / MODEL).parent.mkdir(parents=True)
    (tmp_path / "other-models" / MODEL).write_bytes(b"other weights")
    other = configure(tmp_path / "other.toml", empty_url, tmp_path / "other-models")
    code, _, err = run_cli(capsys, "--config", str(other), "--state-dir", str(tmp_path), "restore", str(dest))
    assert code == EXIT_DATA
    assert "differ from the backup's" in err and MODEL in err
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)

    # --force drops the busy database's FaceFleet tables and restores the backup in their place
    code, out, err = run_cli(
        capsys, "--config", str(busy), "--state-dir", str(tmp_path), "restore", str(dest), "--force", "--json"
    )
    assert code == EXIT_OK, err
    assert json.loads(out)["cleaned"]
    assert all_answers(capsys, tmp_path, busy) == all_answers(capsys, tmp_path, source)

    # a damaged dump is refused by its sha256 and leaves the target empty
    dump = dest / "state.pgdump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    fresh = configure(tmp_path / "fresh.toml", postgres_cluster.create_database(), tmp_path / "fresh-models")
    code, _, err = run_cli(capsys, "--config", str(fresh), "--state-dir", str(tmp_path), "restore", str(dest))
    assert code == EXIT_IO
    assert "does not match the manifest" in err and "use another one" in err
    assert not (tmp_path / "fresh-models").exists()


def test_a_sqlite_backup_is_not_restored_into_postgresql(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "backup.json").write_text(json.dumps({"created_at": "x", "schema_version": 9}))
    config = configure(tmp_path / "c.toml", postgres_cluster.create_database(), tmp_path / "models")
    code, _, err = run_cli(
        capsys, "--config", str(config), "--state-dir", str(tmp_path), "restore", str(backup)
    )
    assert code != EXIT_OK
    assert "sqlite state" in err and "state migrate" in err


def test_the_password_goes_to_the_environment_not_the_command_line() -> None:
    conninfo, env = client_command("postgresql://facefleet:s3cret@db.example:5433/state?sslmode=require")
    assert "s3cret" not in conninfo
    assert "host=db.example" in conninfo and "port=5433" in conninfo and "sslmode=require" in conninfo
    assert env["PGPASSWORD"] == "s3cret"


def backed_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> tuple[str, Path, Path, tuple[str, ...]]:
    """A populated state database backed up into tmp_path/backup: its URL, models folder, config file and
    the command line's state arguments."""
    url, models = postgres_cluster.create_database(), tmp_path / "models"
    populate(url, models)
    config = configure(tmp_path / "server.toml", url, models)
    base = ("--state-dir", str(tmp_path / "state"), "--config", str(config))
    assert run_cli(capsys, *base, "backup", str(tmp_path / "backup"))[0] == EXIT_OK
    return url, models, config, base


def test_restore_is_refused_while_a_replica_serves_the_database_even_after_its_connection_broke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    url, models, config, base = backed_up(tmp_path, capsys, postgres_cluster)
    restore = (*base, "restore", str(tmp_path / "backup"), "--force")

    async def scenario() -> None:
        sections: dict[str, Any] = {"state": {"url": url}, "models": {"dir": str(models)}}
        async with served(tmp_path / "state", fleet={"poll_seconds": 0.1}, **sections) as server:
            code, _, err = run_cli(capsys, *restore)
            assert code == EXIT_DATA
            assert "1 running server serves the state database" in err and "on every replica" in err
            server.state.delete_person("bob", utc_now())  # a change after the refusal is kept
            # the lock's connection breaks (the database restarted): the replica takes the lock again
            lost = await lose_serving_lock(url)
            deadline = time.monotonic() + 15
            while not (held := holders(url)) or lost in held:
                assert time.monotonic() < deadline, "the replica never took the serving lock again"
                await asyncio.sleep(0.05)
            code, _, err = run_cli(capsys, *restore)
            assert code == EXIT_DATA

    asyncio.run(scenario())
    assert people(capsys, tmp_path / "state", "--config", str(config)) == ["alice", "carol"]
    with psycopg.connect(url) as guard:  # while a restore runs, no replica starts
        refuse_while_serving(guard, url)
        server_config = ServerConfig.model_validate({"state": {"url": url}, "metrics": {"listen": ""}})
        with pytest.raises(StateError, match="is being restored"):
            FleetServer(server_config, ServerPaths.from_config(tmp_path / "state", server_config))
    code, _, err = run_cli(capsys, *restore)
    assert code == EXIT_OK, err
    assert people(capsys, tmp_path / "state", "--config", str(config)) == ["alice", "bob", "carol"]


def holders(url: str, mode: str = "ShareLock", granted: bool = True) -> list[int]:
    """The sessions that hold the serving lock (or wait for it) in `mode`: shared, one per serving replica."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND mode = %s "
            "AND granted = %s",
            (SERVE_LOCK, mode, granted),
        ).fetchall()
    return [int(row[0]) for row in rows]


async def lose_serving_lock(url: str) -> int:
    """End the session that holds the one replica's serving lock (as a database restart would), and wait
    until it is gone; its pid."""
    (lost,) = holders(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (lost,))
    deadline = time.monotonic() + 5
    while lost in holders(url):
        assert time.monotonic() < deadline, "the serving lock's session did not end"
        await asyncio.sleep(0.02)
    return lost


def test_restore_is_refused_while_a_replica_that_lost_its_lock_is_still_connected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    url, models, _, base = backed_up(tmp_path, capsys, postgres_cluster)

    async def scenario() -> None:
        sections: dict[str, Any] = {"state": {"url": url}, "models": {"dir": str(models)}}
        async with served(tmp_path / "state", fleet={"poll_seconds": 60}, **sections):
            await lose_serving_lock(url)  # not taken again before the next look, a minute away
            code, _, err = run_cli(capsys, *base, "restore", str(tmp_path / "backup"), "--force")
            assert code == EXIT_DATA
            assert "server or facefleet-server command (application_name facefleet-server)" in err, err
            assert "on every replica" in err

    asyncio.run(scenario())


def test_a_replica_that_finds_a_restore_holding_the_state_stops_serving_with_exit_74(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.create_database()
    config = ServerConfig.model_validate(
        {
            "insecure_development": True,
            "listen": {"agents": "127.0.0.1:0", "operators": "127.0.0.1:0", "http": "127.0.0.1:0"},
            "metrics": {"listen": ""},
            "state": {"url": url},
            "fleet": {"poll_seconds": 0.1},
        }
    )

    async def scenario() -> int:
        server = FleetServer(config, ServerPaths.from_config(tmp_path / "state", config))
        serving = asyncio.create_task(server.run())
        with psycopg.connect(url, autocommit=True) as restore:  # as a restore would, once the lock is free
            taking = asyncio.create_task(
                asyncio.to_thread(restore.execute, "SELECT pg_advisory_lock(%s)", (SERVE_LOCK,))
            )
            while not holders(url, "ExclusiveLock", granted=False):
                await asyncio.sleep(0.02)
            await lose_serving_lock(url)
            await taking
            return await asyncio.wait_for(serving, 10)  # it stops by itself, with no signal

    try:
        code = asyncio.run(scenario())
    finally:
        gc.unfreeze()  # run() froze what the test process had built
    assert code == EXIT_IO
