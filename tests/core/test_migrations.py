"""The migration runner on real SQLite files: applied once and in order, a failing step leaves the previous
version, newer databases and other programs' records are refused untouched, legacy records are adopted."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from facefleet.core.migrations import (
    Legacy,
    Migration,
    Migrations,
    SchemaError,
    SchemaOutdatedError,
    has_table,
)

STEPS = (
    Migration(1, "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",)),
    Migration(2, "tags", ("CREATE TABLE tags (note_id INTEGER NOT NULL, tag TEXT NOT NULL)",)),
    Migration(3, "first_note", ("INSERT INTO notes (text) VALUES ('hello')",)),
)


def plan(steps: tuple[Migration, ...] = STEPS, legacy: Legacy | None = None) -> Migrations:
    return Migrations(
        steps,
        what="notebook",
        program="test",
        fix="upgrade the test",
        upgrade="restart the notebook service",
        legacy=legacy,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "notes.db"


@pytest.fixture
def conn(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(path, isolation_level=None)
    yield connection
    connection.close()


def dump(conn: sqlite3.Connection) -> tuple[object, ...]:
    return (
        conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
        conn.execute(
            "SELECT version, name, applied_at FROM facefleet_migrations ORDER BY version"
        ).fetchall(),
        conn.execute("PRAGMA user_version").fetchone(),
        conn.execute("SELECT * FROM notes").fetchall(),
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_database_gets_every_step_in_order_and_a_record_of_each(
    conn: sqlite3.Connection, path: Path
) -> None:
    assert [m.name for m in plan().pending(conn, path)] == ["notes", "tags", "first_note"]
    assert [m.version for m in plan().apply(conn, path)] == [1, 2, 3]
    assert plan().version(conn, path) == 3
    assert conn.execute("SELECT version, name FROM facefleet_migrations").fetchall() == [
        (1, "notes"),
        (2, "tags"),
        (3, "first_note"),
    ]
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    assert conn.execute("SELECT text FROM notes").fetchall() == [("hello",)]


def test_running_twice_is_a_no_op(conn: sqlite3.Connection, path: Path) -> None:
    plan().apply(conn, path)
    before = dump(conn)
    assert plan().apply(conn, path) == []
    with sqlite3.connect(path, isolation_level=None) as other:  # as another process would
        assert plan().apply(other, path) == []
    other.close()
    assert dump(conn) == before  # the row of step 3 is there once, every record unchanged


def test_a_later_step_is_applied_to_a_database_at_an_earlier_version(
    conn: sqlite3.Connection, path: Path
) -> None:
    plan(STEPS[:2]).apply(conn, path)
    conn.execute("INSERT INTO notes (text) VALUES ('kept')")
    assert [m.name for m in plan().apply(conn, path)] == ["first_note"]
    assert conn.execute("SELECT text FROM notes ORDER BY id").fetchall() == [("kept",), ("hello",)]


def test_a_failing_step_leaves_the_previous_version(conn: sqlite3.Connection, path: Path) -> None:
    plan(STEPS[:1]).apply(conn, path)
    conn.execute("INSERT INTO notes (text) VALUES ('kept')")
    before = dump(conn)

    def fail_half_way(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO notes (text) VALUES ('half')")
        raise RuntimeError("the disk went away")

    broken = (STEPS[0], Migration(2, "tags", STEPS[1].statements, fail_half_way), STEPS[2])
    with pytest.raises(RuntimeError, match="the disk went away"):
        plan(broken).apply(conn, path)
    assert not conn.in_transaction
    assert dump(conn) == before
    assert not has_table(conn, "tags")  # created by the failing step, rolled back with it
    assert [m.version for m in plan().apply(conn, path)] == [2, 3]  # fixed code carries on


def test_a_newer_database_is_refused_and_left_untouched(conn: sqlite3.Connection, path: Path) -> None:
    plan().apply(conn, path)
    digest = sha256(path)
    older = plan(STEPS[:2])
    for call in (older.version, older.pending, older.apply):
        with pytest.raises(SchemaError) as info:
            call(conn, path)
        assert str(info.value) == (
            f"notebook {path} has schema version 3, newer than this test (2): a newer FaceFleet wrote it; "
            "upgrade the test"
        )
    assert sha256(path) == digest


def test_another_programs_record_is_refused(conn: sqlite3.Connection, path: Path) -> None:
    plan(STEPS[:1]).apply(conn, path)
    renamed = (Migration(1, "contacts", STEPS[0].statements), *STEPS[1:])
    with pytest.raises(
        SchemaError, match=f"{path} records migration 1 'notes' where this test has .*'contacts'"
    ):
        plan(renamed).apply(conn, path)


MARKER = 1000
"""What the runner leaves in the old record: code of those days reads it as a newer schema."""


def legacy_table(conn: sqlite3.Connection) -> int | None:
    if not has_table(conn, "old_version"):
        return None
    (version,) = conn.execute("SELECT version FROM old_version").fetchone()
    if version == MARKER:
        return None
    if version > 10:
        raise SchemaError(f"its old version {version} is not one this test knows")
    return int(version)


def supersede_legacy_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS old_version (version INTEGER NOT NULL)")
    conn.execute("DELETE FROM old_version")
    conn.execute("INSERT INTO old_version VALUES (?)", (MARKER,))


def legacy_table_superseded(conn: sqlite3.Connection) -> bool:
    return (
        has_table(conn, "old_version")
        and conn.execute("SELECT 1 FROM old_version WHERE version = ?", (MARKER,)).fetchone() is not None
    )


LEGACY = Legacy(legacy_table, supersede_legacy_table, legacy_table_superseded)


def make_legacy(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """A database migrated to `version` before the runner existed, with its version in a table."""
    for step in STEPS[:version]:
        step.apply(conn)
    conn.execute("CREATE TABLE old_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO old_version VALUES (?)", (version,))
    conn.execute("INSERT INTO notes (text) VALUES ('written before')")


def test_a_legacy_record_is_adopted_and_replaced_keeping_the_data(
    conn: sqlite3.Connection, path: Path
) -> None:
    make_legacy(conn, path, 2)
    assert plan(legacy=LEGACY).version(conn, path) == 2  # read without writing
    assert [m.name for m in plan(legacy=LEGACY).apply(conn, path)] == ["first_note"]
    assert conn.execute("SELECT version, name FROM facefleet_migrations").fetchall() == [
        (1, "notes"),
        (2, "tags"),
        (3, "first_note"),
    ]
    assert conn.execute("SELECT version FROM old_version").fetchall() == [(MARKER,)]
    assert conn.execute("SELECT text FROM notes ORDER BY id").fetchall() == [("written before",), ("hello",)]
    assert plan(legacy=LEGACY).apply(conn, path) == []  # the marker is ignored


def test_a_new_database_gets_the_marker_and_an_upgraded_one_without_it_gets_it_when_upgraded(
    conn: sqlite3.Connection, path: Path
) -> None:
    plan(legacy=LEGACY).apply(conn, path)
    assert conn.execute("SELECT version FROM old_version").fetchall() == [(MARKER,)]
    conn.execute("DROP TABLE old_version")  # as the runner left databases before it kept a marker
    assert plan(legacy=LEGACY).apply(conn, path, upgrade=False) == []
    assert not has_table(conn, "old_version")  # only the programs that upgrade write it
    assert plan(legacy=LEGACY).apply(conn, path) == []
    assert conn.execute("SELECT version FROM old_version").fetchall() == [(MARKER,)]


def test_without_upgrade_a_new_database_is_created_and_an_older_one_refused_untouched(
    conn: sqlite3.Connection, path: Path
) -> None:
    assert [m.version for m in plan(STEPS[:2]).apply(conn, path, upgrade=False)] == [1, 2]
    digest = sha256(path)
    with pytest.raises(SchemaOutdatedError) as info:
        plan().apply(conn, path, upgrade=False)
    assert str(info.value) == (
        f"notebook {path} is at schema 2 and this test needs 3: restart the notebook service"
    )
    assert info.value.exit_code == 65 and sha256(path) == digest and plan().version(conn, path) == 2
    make_legacy_db = sqlite3.connect(path.with_name("legacy.db"), isolation_level=None)
    try:
        make_legacy(make_legacy_db, path, 1)
        with pytest.raises(SchemaOutdatedError, match="is at schema 1 and this test needs 3"):
            plan(legacy=LEGACY).apply(make_legacy_db, path, upgrade=False)
        assert not has_table(make_legacy_db, "facefleet_migrations")
    finally:
        make_legacy_db.close()
    assert [m.version for m in plan().apply(conn, path)] == [3]


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (5, "has schema version 5, newer than this test"),
        (11, "its old version 11 is not one this test knows; upgrade the test"),
    ],
)
def test_a_legacy_record_the_code_cannot_place_is_refused_untouched(
    conn: sqlite3.Connection, path: Path, version: int, message: str
) -> None:
    make_legacy(conn, path, 2)
    conn.execute("UPDATE old_version SET version = ?", (version,))
    digest = sha256(path)
    with pytest.raises(SchemaError, match=f"notebook {path}.*{message}"):
        plan(legacy=LEGACY).apply(conn, path)
    assert not has_table(conn, "facefleet_migrations")
    assert sha256(path) == digest


def test_connections_migrating_at_once_apply_each_step_once(path: Path) -> None:
    started = threading.Barrier(4)
    applied: list[int] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            started.wait()
            applied.extend(m.version for m in plan().apply(connection, path))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(applied) == [1, 2, 3]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT text FROM notes").fetchall() == [("hello",)]
    conn.close()


def test_an_open_transaction_is_refused(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN")
    with pytest.raises(ValueError, match="commit the open one first"):
        plan().apply(conn, path)


@pytest.mark.parametrize(
    ("versions", "error"),
    [((), None), ((1, 2), None), ((1, 3), ValueError), ((2,), ValueError), ((1, 1), ValueError)],
)
def test_versions_must_count_up_from_one(versions: tuple[int, ...], error: type[Exception] | None) -> None:
    steps = tuple(Migration(v, f"m{v}") for v in versions)
    if error is None:
        assert plan(steps).latest == len(versions)
    else:
        with pytest.raises(error, match="must be 1, 2, 3"):
            plan(steps)
