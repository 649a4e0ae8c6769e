"""`facefleet-server state migrate --to postgresql://…` on a real PostgreSQL (a throwaway cluster): a
populated SQLite state (rows in every table) copied into an empty database holds every row as it was,
column by column, answers the same queries through the CLI when [state] url points at it, and goes on
numbering after the copied ids. It is refused while a server serves the SQLite state."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.link.events import AttributesResult, Event, FaceSnapshot
from facefleet.link.gallery import Embedding, Person
from facefleet.link.models import ModelFile, ModelStatus
from facefleet.server.domain.audit import AuditEntry
from facefleet.server.domain.devices import Certificate
from facefleet.server.domain.models import PublishedModel, Target
from facefleet.server.state.postgres.copy import TABLES
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sqlite.state import SqliteState
from tests.postgres import PostgresCluster
from tests.server.cli.test_cli import run_cli
from tests.server.cli.test_cli_backup import answers, populate, served


def populate_every_table(state: SqliteState) -> None:
    """Rows in the tables that populate() leaves empty: groups, snapshots, attribute cells, a model with a
    rollout that reached an agent, the agent's groups and model statuses, a device with its certificate."""
    now = utc_now()
    vector = np.random.default_rng(3).normal(size=128).astype(np.float32)
    embedding = Embedding("sface@2021dec", vector, 0.9137, "t")
    state.add_person(Person("carol", groups=("staff",), embeddings=(embedding,)), [], now)
    crop = cv2.imencode(".jpg", np.full((112, 112, 3), 90, np.uint8))[1].tobytes()
    state.add_events(  # events across several months, some with attributes, one with a snapshot
        [
            Event(
                str(uuid.uuid4()),
                "door-1",
                now - timedelta(days=40 * (i % 3), minutes=i),
                "face",
                "unknown",
                score=0.3141 + i / 1000,
                quality=0.7182,
                attributes=AttributesResult("female", 0.1234, 31.37, "30-39") if i % 2 else None,
                snapshot=FaceSnapshot(crop, b"", embedding) if i == 0 else None,
            )
            for i in range(30)
        ]
    )
    state.add_audit(AuditEntry(now, "local", "people.enrol", "carol"))
    model_id = "mini-xception@fer2013-fp32"
    files = (ModelFile("model.xml", 10, "a" * 64), ModelFile("model.bin", 20, "b" * 64))
    state.models.add_model(PublishedModel(model_id, "expression", "FP32", "MIT", files, "{}", now))
    rollout = state.models.add_rollout(model_id, Target("all"), "active", now)
    state.models.announce("door-1", [(rollout.rollout_id, "mini-xception@fer2013")], now)
    status = ModelStatus("expression", model_id, rollout.rollout_id, "failed", "smoke inference: NaN", now)
    state.models.set_agent_models("door-1", now, statuses=[status], groups=["lobby"])
    certificate = Certificate("1f2e3d", "door-1", now - timedelta(days=1), now + timedelta(days=365), now)
    state.devices.add_certificate(certificate, "local")


PG_COLUMNS = (
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
    "AND table_name = %s ORDER BY ordinal_position"
)


def rows_of(
    read: Callable[[str], list[tuple[object, ...]]], table: str, columns: list[str]
) -> list[tuple[object, ...]]:
    """Every row of table, its columns in the given order, sorted; bytes and booleans as SQLite has them."""
    names = ", ".join(columns)
    rows = read(f"SELECT {names} FROM {table}")
    return sorted(
        (
            tuple(
                bytes(v) if isinstance(v, memoryview) else int(v) if isinstance(v, bool) else v for v in row
            )
            for row in rows
        ),
        key=repr,
    )


def test_state_migrate_copies_every_row_of_every_table_and_the_server_answers_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    source = tmp_path / "source"
    populate(source)
    state = SqliteState(source / "server.db")
    populate_every_table(state)
    stored = state.get_person("carol").embeddings[0].vector
    state.close()
    original = answers(capsys, source)

    url = postgres_cluster.create_database()
    code, out, err = run_cli(capsys, "--state-dir", str(source), "state", "migrate", "--to", url, "--json")
    assert code == EXIT_OK, err
    rows = json.loads(out)["rows"]
    assert set(rows) == set(TABLES)
    # every table of either schema is copied (a table left out of TABLES would be lost in the move)
    bookkeeping = {"facefleet_migrations", "sqlite_sequence"}
    with sqlite3.connect(source / "server.db") as db:
        in_sqlite = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    with psycopg.connect(url) as db:
        in_postgres = {
            name
            for (name,) in db.execute(  # tables and partitioned tables, not their partitions
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            )
        }
    assert in_sqlite - bookkeeping == in_postgres - bookkeeping == set(TABLES)
    assert (rows["people"], rows["embeddings"], rows["crops"], rows["events"]) == (3, 1, 2, 50)
    assert rows["tokens"] == 1 and rows["admin_audit"] == 1
    assert [table for table in TABLES if rows[table] == 0] == []
    # and every row arrives as it was, column by column (a column the copy drops or bends shows here)
    with sqlite3.connect(source / "server.db") as lite, psycopg.connect(url) as pg:
        for table in TABLES:
            columns = [row[0] for row in pg.execute(PG_COLUMNS, (table,)).fetchall()]
            sqlite_columns = {row[1] for row in lite.execute(f"PRAGMA table_info({table})")}
            # SQLite numbers events by rowid; PostgreSQL's partitioned events go by event_id alone
            assert sqlite_columns - set(columns) == ({"id"} if table == "events" else set()), table
            assert set(columns) <= sqlite_columns, table
            copied = rows_of(lambda q: pg.execute(q).fetchall(), table, columns)
            assert rows_of(lambda q: lite.execute(q).fetchall(), table, columns) == copied, table

    # the same state directory, now configured for the PostgreSQL copy
    config = tmp_path / "server.toml"
    config.write_text(f'[state]\nurl = "{url}"\n')
    (source / "server.db").rename(source / "server.db.migrated")
    target = tmp_path / "target"
    target.mkdir()
    assert answers(capsys, target, config) == original
    assert not (target / "server.db").exists()
    migrated = PostgresState(url, pool_size=1)
    try:
        assert migrated.get_person("carol").embeddings[0].vector.tolist() == stored.tolist()
        assert migrated.add_audit(AuditEntry(utc_now(), "local", "people.update", "carol")).entry_id == 2
        assert migrated.head_revision() == 3
    finally:
        migrated.close()

    # a second migration into the same database is refused, and leaves it as it is
    (source / "server.db.migrated").rename(source / "server.db")
    code, _, err = run_cli(capsys, "--state-dir", str(tmp_path / "source"), "state", "migrate", "--to", url)
    assert code != EXIT_OK
    assert "already holds" in err


def test_state_migrate_refuses_what_is_not_a_postgresql_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "--state-dir", str(tmp_path), "state", "migrate", "--to", "mysql://x/y")
    assert code != EXIT_OK
    assert "postgresql://USER@HOST:PORT/DBNAME" in err


def test_backup_of_an_unreachable_postgresql_state_names_the_url_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[state]\nurl = "postgresql://facefleet@127.0.0.1:1/none"\n')
    code, _, err = run_cli(
        capsys, "--config", str(config), "--state-dir", str(tmp_path), "backup", str(tmp_path / "b")
    )
    assert code != EXIT_OK
    assert "cannot connect to the state database postgresql://facefleet@127.0.0.1:1/none" in err
    assert "check [state] url" in err and not (tmp_path / "b").exists()


def test_state_migrate_is_refused_while_a_server_serves_the_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    populate(tmp_path / "source")
    url = postgres_cluster.create_database()
    migrate = ("--state-dir", str(tmp_path / "source"), "state", "migrate", "--to", url)

    async def scenario() -> None:
        async with served(tmp_path / "source"):
            code, _, err = run_cli(capsys, *migrate)
            assert code == EXIT_DATA
            assert "stop the server first: systemctl stop facefleet-server, then run state migrate" in err
            with psycopg.connect(url) as conn:  # the events reported meanwhile would have been left behind
                assert conn.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                ).fetchone() == (0,)

    asyncio.run(scenario())
    code, _, err = run_cli(capsys, *migrate)
    assert code == EXIT_OK, err
