"""`facefleet-server state migrate --to postgresql://…` on a real PostgreSQL (a throwaway cluster): a
populated SQLite state copied into an empty database has every table's row count, answers the same
queries through the CLI when [state] url points at it, and goes on numbering after the copied ids."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.link.events import AttributesResult, Event
from facefleet.link.gallery import Embedding, Person
from facefleet.server.domain.audit import AuditEntry
from facefleet.server.state.postgres.copy import TABLES
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sqlite.state import SqliteState
from tests.postgres import PostgresCluster
from tests.server.cli.test_cli import run_cli
from tests.server.cli.test_cli_backup import answers, populate


def test_state_migrate_copies_every_table_and_the_server_answers_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    source = tmp_path / "source"
    populate(source)
    state = SqliteState(source / "server.db")
    now = utc_now()
    vector = np.random.default_rng(3).normal(size=128).astype(np.float32)
    state.add_person(Person("carol", embeddings=(Embedding("sface@2021dec", vector, 0.9, "t"),)), [], now)
    state.add_events(  # events across several months, some with attributes
        [
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
    state.add_audit(AuditEntry(now, "local", "people.enrol", "carol"))
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
        assert migrated.add_audit(AuditEntry(now, "local", "people.update", "carol")).entry_id == 2
        assert migrated.head_revision() == 3
    finally:
        migrated.close()

    # a second migration into the same database is refused, and leaves it as it is
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
