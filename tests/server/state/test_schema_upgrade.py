"""Upgrading the server's schema, on real SQLite and PostgreSQL and real `serve` processes: only `serve`
(alone) and `state migrate` upgrade; commands refuse an older database untouched; a server that finds the
database upgraded past its code stops; servers of the code before the migration runner read the marker as a
newer server's database."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_IO
from facefleet.server.cli.main import main
from facefleet.server.errors import StateOutdatedError
from facefleet.server.state.postgres import schema as pg_schema
from facefleet.server.state.postgres.serving import PgServingLock
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.serving import FileServingLock, ServersRunningError, offline
from facefleet.server.state.sqlite.schema import MARKER, MIGRATIONS
from facefleet.server.state.sqlite.state import SqliteState
from tests.postgres import PostgresCluster

LATEST = MIGRATIONS.latest


def sqlite_one_migration_behind(path: Path) -> None:
    """A state database as the server before migration 11 left it."""
    SqliteState(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM facefleet_migrations WHERE version = ?", (LATEST,))
        conn.execute("ALTER TABLE agents DROP COLUMN model_precisions_json")
        conn.execute(f"PRAGMA user_version = {LATEST - 1}")
    conn.close()


def postgres_one_migration_behind(url: str) -> None:
    """A PostgreSQL state database as the server before its migration 4 left it."""
    PostgresState(url, pool_size=1).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM facefleet_migrations WHERE version = %s", (pg_schema.LATEST,))
        conn.execute("ALTER TABLE agents DROP COLUMN model_precisions_json")


def pg_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(version) FROM facefleet_migrations").fetchone()
    assert row is not None
    return int(row[0])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- commands ----------------------------------------------------------------------------------------------


def test_an_older_sqlite_database_is_refused_untouched_by_commands_and_upgraded_by_serving_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "server.db"
    sqlite_one_migration_behind(path)
    before = digest(path)
    with pytest.raises(StateOutdatedError) as info:
        SqliteState(path, upgrade=False)
    assert str(info.value) == (
        f"state database {path} is at schema {LATEST - 1} and this server needs {LATEST}: restart the "
        "server (systemctl restart facefleet-server), which upgrades it at start; to take a backup first, "
        "`facefleet-server backup DEST` works on it as it is"
    )
    for verb in (["people", "list"], ["tokens", "create", "ops", "--role", "admin"], ["audit", "list"]):
        assert main(["--state-dir", str(tmp_path), *verb]) == EXIT_DATA
        assert f"is at schema {LATEST - 1} and this server needs {LATEST}" in capsys.readouterr().err
    assert digest(path) == before
    SqliteState(path).close()  # as serve opens it
    state = SqliteState(path, upgrade=False)
    assert state.schema_version() == LATEST
    state.close()


def test_a_command_creates_a_new_sqlite_database_with_the_marker(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    state = SqliteState(path, upgrade=False)
    assert state.schema_version() == LATEST
    state.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (MARKER,)
    conn.close()


def test_state_migrate_upgrades_an_older_sqlite_database_only_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    path = tmp_path / "server.db"
    sqlite_one_migration_behind(path)
    before = digest(path)
    url = postgres_cluster.create_database()
    serving = FileServingLock(path)
    try:
        assert main(["--state-dir", str(tmp_path), "state", "migrate", "--to", url]) == EXIT_DATA
        assert "in use by a running server" in capsys.readouterr().err
        assert digest(path) == before  # refused before the open, which would have upgraded it
    finally:
        serving.close()
    assert main(["--state-dir", str(tmp_path), "state", "migrate", "--to", url]) == 0, capsys.readouterr()
    state = SqliteState(path, upgrade=False)
    assert state.schema_version() == LATEST
    state.close()


def test_an_older_postgres_database_is_refused_untouched_by_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.create_database()
    postgres_one_migration_behind(url)
    with pytest.raises(
        StateOutdatedError, match=f"is at schema {pg_schema.LATEST - 1} and this server needs"
    ):
        PostgresState(url, pool_size=1, upgrade=False)
    config = tmp_path / "server.toml"
    config.write_text(f'[state]\nurl = "{url}"\n')
    assert main(["--config", str(config), "--state-dir", str(tmp_path), "people", "list"]) == EXIT_DATA
    assert "stop every server on it, then start one" in capsys.readouterr().err
    assert pg_version(url) == pg_schema.LATEST - 1
    with psycopg.connect(url) as conn:
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns")}
    assert "model_precisions_json" not in columns
    new = postgres_cluster.create_database()
    PostgresState(new, pool_size=1, upgrade=False).close()  # a new database gets the schema
    assert pg_version(new) == pg_schema.LATEST


# -- the serving lock --------------------------------------------------------------------------------------


def test_sqlite_serving_lock_is_had_alone_only_without_other_servers(tmp_path: Path) -> None:
    database = tmp_path / "server.db"
    mine, other = FileServingLock(database), FileServingLock(database)
    with pytest.raises(ServersRunningError, match="stop every server first"), mine.alone():
        pass
    other.close()
    with mine.alone(), pytest.raises(Exception, match="running server"), offline(database, "restore"):
        pass
    with pytest.raises(Exception, match="running server"), offline(database, "restore"):
        pass  # shared again after
    again = FileServingLock(database)  # and another server may start
    again.close()
    mine.close()


def test_postgres_serving_lock_is_had_alone_only_without_other_servers(
    postgres_cluster: PostgresCluster,
) -> None:
    url = postgres_cluster.create_database()
    mine, other = PgServingLock(url), PgServingLock(url)
    with pytest.raises(ServersRunningError, match="1 other server serve it"), mine.alone():
        pass
    other.close()
    with mine.alone(), pytest.raises(Exception, match="being restored or upgraded"):
        PgServingLock(url)  # no server starts while one upgrades
    PgServingLock(url).close()  # shared again after
    mine.close()


# -- serve --------------------------------------------------------------------------------------------------


class Serve:
    """A `facefleet-server serve` process; its log lines collected in `lines`."""

    def __init__(self, root: Path, url: str = "") -> None:
        config = root / "server.toml"
        config.write_text(
            'insecure_development = true\n[listen]\nagents = "127.0.0.1:0"\noperators = "127.0.0.1:0"\n'
            'http = ""\ngrace_seconds = 1\n[metrics]\nlisten = "127.0.0.1:0"\n[fleet]\npoll_seconds = 0.2\n'
            + (f'[state]\nurl = "{url}"\n' if url else "")
        )
        command = [sys.executable, "-m", "facefleet.server.cli", "--config", str(config)]
        command += ["--state-dir", str(root), "serve"]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr or ()))
        self._reader.start()

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any("serving: " in line for line in self.lines):
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.wait()

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_upgrades_an_older_database_only_when_no_other_server_serves_it(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url, path = "", tmp_path / "server.db"
        sqlite_one_migration_behind(path)
        other = FileServingLock(path)  # another server, of the older code
        version = lambda: SqliteState(path).schema_version()  # noqa: E731
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database()
        postgres_one_migration_behind(url)
        other = PgServingLock(url)
        version = lambda: pg_version(url)  # noqa: E731
    refused = Serve(tmp_path, url)
    try:
        assert refused.wait() == EXIT_IO, refused.log  # systemd tries again
    finally:
        other.close()
    assert "is older than this server, and" in refused.log and "stop every server first" in refused.log
    assert "Traceback" not in refused.log
    if backend == "postgresql":
        assert pg_version(url) == pg_schema.LATEST - 1
    else:
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT max(version) FROM facefleet_migrations").fetchone() == (LATEST - 1,)
        conn.close()
    alone = Serve(tmp_path, url)
    try:
        alone.wait_serving()
        assert version() == (LATEST if backend == "sqlite" else pg_schema.LATEST)
    finally:
        alone.stop()
    assert alone.process.returncode == 0, alone.log


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_server_stops_when_a_newer_server_upgraded_its_database(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url, latest = "", LATEST
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url, latest = cluster.create_database(), pg_schema.LATEST
    server = Serve(tmp_path, url)
    try:
        server.wait_serving()
        newer = "INSERT INTO facefleet_migrations (version, name, applied_at) VALUES (%s, 'newer', 0)"
        if backend == "sqlite":
            with sqlite3.connect(tmp_path / "server.db") as conn:
                conn.execute(newer.replace("%s", "?"), (latest + 1,))
            conn.close()
        else:
            with psycopg.connect(url, autocommit=True) as pg:
                pg.execute(newer, (latest + 1,))
        assert server.wait(30) == EXIT_DATA, server.log  # systemd does not restart on 65
    finally:
        server.stop()
    assert (
        f"stopping: the state database was upgraded to schema {latest + 1} by a newer facefleet-server (this "
        f"one has {latest}), and this server's calls would fail on it; upgrade this host"
    ) in server.log
