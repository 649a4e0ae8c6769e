"""The store's migrations on real SQLite files written as earlier versions wrote them: a store migrated by
sqlite-utils is adopted without losing anything, reports queued as JSON become typed events (or are dropped
and counted), and stores this agent cannot use are refused untouched."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database, Migrations

from facefleet.agent.domain.records import StoreFormatError, StoreOutdatedError
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.migrations import MARKER, MIGRATIONS
from facefleet.agent.store.reports import REPORTS_DROPPED
from facefleet.link.events import Event, ExpressionResult
from tests.agent.store.legacy import make_legacy_store

MODEL = "sface@2021dec"
FACE = {
    "schema": 1,
    "event_id": "0b7e5c2e-0000-4000-8000-000000000001",
    "kind": "face",
    "device_id": "door-box",
    "time": "2025-01-31T12:00:00.125Z",
    "camera": "front",
    "event": "decided",
    "track_id": "t1",
    "identity": {"status": "match", "person_id": "alice", "name": "Alice"},
    "score": 0.75,
    "frames": 5,
    "quality": 0.5,
    "expression": {"label": "happy", "probabilities": {"happy": 0.75, "sad": 1.5}},
    "box_xyxy": [1.0, 2.0, 30.0, 40.0],
    "first_seen": "2025-01-31T11:59:59.000Z",
    "last_seen": "2025-01-31T12:00:00.125Z",
    "models": {"embedding": MODEL},
    "gallery_revision": 12,
}
"""A face event as facefleet.agent.publish.events queued it before reports were typed."""
ACCESS = {
    "schema": 1,
    "event_id": "0b7e5c2e-0000-4000-8000-000000000002",
    "kind": "access",
    "device_id": "door-box",
    "time": "2025-01-31T12:00:01.000Z",
    "door": "main",
    "camera": "front",
    "decision": "granted",
    "reason": "face matched",
    "mode": "identify",
    "claim_id": None,
    "person_id": "alice",
    "score": 0.75,
    "margin": 0.25,
    "frames": 3,
    "models": {"embedding": MODEL},
    "gallery_revision": 12,
}
UNKNOWN_FACE = {
    **FACE,
    "event_id": "0b7e5c2e-0000-4000-8000-000000000003",
    "identity": {"status": "unknown", "person_id": None, "name": None},
    "expression": {"label": None, "probabilities": {}},
}
BROKEN = {
    "not JSON": "{",
    "not an object": "[1, 2]",
    "no kind": json.dumps({**FACE, "kind": None}),
    "a reply": json.dumps({**FACE, "kind": "reply"}),
    "no time": json.dumps({k: v for k, v in FACE.items() if k != "time"}),
    "a bad time": json.dumps({**FACE, "time": "yesterday"}),
    "an infinite score": json.dumps(FACE).replace('"score": 0.75', '"score": Infinity'),
    "a match without a person": json.dumps({**FACE, "identity": {"status": "match"}}),
    "an unknown decision": json.dumps({**ACCESS, "decision": "maybe"}),
    "a bad device id": json.dumps({**ACCESS, "device_id": "has space"}),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def queue_json(db: Any, payloads: list[tuple[str, str]], revision: int = 4) -> None:
    """Rows of the JSON report queue of migration 2: (event_id, payload text)."""
    for n, (event_id, text) in enumerate(payloads):
        db.execute(
            "INSERT INTO reports (event_id, payload, gallery_revision, created_at) VALUES (?, ?, ?, ?)",
            (event_id, text, revision, 1000.0 + n),
        )


def test_a_store_migrated_by_sqlite_utils_is_adopted_and_its_json_reports_become_events(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.db"
    db = make_legacy_store(path, upto=2)
    db.execute("INSERT INTO people (person_id, created_at, updated_at) VALUES ('alice', 0, 0)")
    db.execute("UPDATE gallery SET revision = 9")
    db.execute("UPDATE server_sync SET revision = 30, gallery_id = 'g', models_json = '[\"sface@2021dec\"]'")
    db.execute("INSERT INTO counters (name, value) VALUES (?, 2)", (REPORTS_DROPPED,))
    queue_json(db, [("acked", json.dumps({**FACE, "event_id": "acked"}))])
    db.execute("DELETE FROM reports")  # acknowledged: ids go on from it
    queue_json(db, [(p["event_id"], json.dumps(p)) for p in (FACE, ACCESS, UNKNOWN_FACE)])
    queue_json(db, [(f"broken-{n}", text) for n, text in enumerate(BROKEN.values())])
    db.conn.commit()
    db.close()

    with EmbeddingStore(path) as store:
        assert [p.person_id for p in store.gallery.people()] == ["alice"]
        assert store.gallery.revision() == 9
        point = store.sync.point()
        assert (point.revision, point.gallery_id, point.models) == (30, "g", (MODEL,))
        reports = store.reports.pending()
        assert [(r.report_id, r.gallery_revision, r.created_at) for r in reports] == [
            (2, 4, 1000.0),
            (3, 4, 1001.0),
            (4, 4, 1002.0),
        ]
        face, access, unknown = (r.event for r in reports)
        assert face == Event(
            event_id=FACE["event_id"],
            device_id="door-box",
            time=datetime(2025, 1, 31, 12, 0, 0, 125000, tzinfo=timezone.utc),
            kind="face",
            decision="match",
            camera="front",
            person_id="alice",
            score=0.75,
            expression=ExpressionResult("happy", {"happy": 0.75, "sad": 1.0}),
            quality=0.5,
            model_versions={"embedding": MODEL},
            gallery_revision=4,  # the server revision queued with it, not the store's in the payload
            reason="track decided after 5 frames",
        )
        assert (access.kind, access.decision, access.door, access.margin, access.reason) == (
            "access",
            "granted",
            "main",
            0.25,
            "face matched (identify)",
        )
        assert (unknown.decision, unknown.person_id, unknown.expression) == ("unknown", "", None)
        assert store.reports.dropped() == 2 + len(BROKEN)
        assert store.reports.put(face) is False  # still known by its event id
        assert store.reports.put(dataclasses.replace(face, event_id="new")) is True
        assert store.reports.pending()[-1].report_id > 4 + len(BROKEN)  # after every id ever given
        assert store.integrity_check() == []
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "reports_json" not in tables
        assert conn.execute("SELECT migration_set, name FROM _sqlite_migrations").fetchall() == [
            ("facefleet-agent-store", MARKER)  # what agents of those days read as a newer store's
        ]
        assert conn.execute("SELECT version, name FROM facefleet_migrations").fetchall() == [
            (1, "initial"),
            (2, "sync"),
            (3, "typed_reports"),
            (4, "snapshots"),
            (5, "server_thresholds"),
            (6, "retained_topics"),
        ]
        assert conn.execute("PRAGMA user_version").fetchone() == (MIGRATIONS.latest,)
    conn.close()


def test_other_sqlite_utils_migration_sets_in_the_file_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = make_legacy_store(path, upto=2)
    db["_sqlite_migrations"].insert({"migration_set": "plugin", "name": "0001", "applied_at": "then"})
    db.close()
    with EmbeddingStore(path) as store:
        assert store.schema_version() == MIGRATIONS.latest
    with sqlite3.connect(path) as conn:
        assert set(conn.execute("SELECT migration_set, name FROM _sqlite_migrations")) == {
            ("plugin", "0001"),
            ("facefleet-agent-store", MARKER),
        }
    conn.close()


def test_a_store_newer_than_this_agent_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    EmbeddingStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO facefleet_migrations VALUES (?, 'from_the_future', 0)", (MIGRATIONS.latest + 1,)
        )
    conn.close()
    digest = sha256(path)
    for read_only in (False, True):
        with pytest.raises(StoreFormatError) as info:
            EmbeddingStore(path, read_only=read_only)
        assert str(info.value) == (
            f"store {path} has schema version {MIGRATIONS.latest + 1}, newer than this agent "
            f"({MIGRATIONS.latest}): a newer FaceFleet wrote it; upgrade facefleet"
        )
    assert sha256(path) == digest


def test_sqlite_utils_migrations_this_agent_does_not_know_are_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = make_legacy_store(path, upto=2)
    db["_sqlite_migrations"].insert(
        {"migration_set": "facefleet-agent-store", "name": "0003_future", "applied_at": "then"}
    )
    db.close()
    digest = sha256(path)
    with pytest.raises(StoreFormatError, match=f"store {path}: its sqlite-utils migrations .*0003_future"):
        EmbeddingStore(path)
    assert sha256(path) == digest


def outdated(path: Path, version: int) -> str:
    """The message of a command that finds the store at `version`."""
    return (
        f"store {path} is at schema {version} and this agent needs {MIGRATIONS.latest}: restart the agent "
        "service (systemctl restart facefleet-agent), which upgrades it at start, or stop it and run "
        "`facefleet-agent store migrate`"
    )


@pytest.mark.parametrize("upto", [1, 2])
def test_an_older_store_is_refused_untouched_by_commands_and_upgraded_by_the_service(
    tmp_path: Path, upto: int
) -> None:
    """Only the service (and `store migrate`) upgrade: a command run beside an agent of the older code must
    not change the schema under it (migration 3 renames the table its event writes go to)."""
    path = tmp_path / "agent.db"
    db = make_legacy_store(path, upto=upto)
    db.close()
    digest = sha256(path)
    for read_only in (False, True):
        with pytest.raises(StoreOutdatedError) as info:
            EmbeddingStore(path, read_only=read_only, upgrade=False)
        assert str(info.value) == outdated(path, upto) and info.value.exit_code == 65
    assert sha256(path) == digest
    with EmbeddingStore(path) as store:
        assert store.upgraded == [step.name for step in MIGRATIONS.steps[upto:]]
        assert store.migrate() == []
    for read_only in (False, True):
        with EmbeddingStore(path, read_only=read_only, upgrade=False) as store:
            assert store.schema_version() == MIGRATIONS.latest and store.upgraded == []


def test_an_older_store_of_this_runner_is_refused_by_commands_at_its_version(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    EmbeddingStore(path).close()
    with sqlite3.connect(path) as conn:  # as an agent with one migration fewer left it
        conn.execute("DELETE FROM facefleet_migrations WHERE version = ?", (MIGRATIONS.latest,))
        conn.execute("DROP TABLE mqtt_retained")
    conn.close()
    with pytest.raises(StoreOutdatedError, match=re.escape(outdated(path, MIGRATIONS.latest - 1))):
        EmbeddingStore(path, upgrade=False)


def test_a_command_creates_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.db"
    with EmbeddingStore(path, upgrade=False) as store:
        assert store.schema_version() == MIGRATIONS.latest
        assert store.upgraded == [step.name for step in MIGRATIONS.steps]
    assert legacy_names(path) == {MARKER}


def legacy_names(path: Path) -> set[str]:
    """The migrations of the store as agents that recorded them with sqlite-utils read them."""
    db = Database(sqlite3.connect(path))
    try:
        return {m.name for m in Migrations("facefleet-agent-store").applied(db)}
    finally:
        db.close()


@pytest.mark.parametrize("upto", [0, 2])
def test_old_agents_read_an_upgraded_or_new_store_as_a_newer_ones(tmp_path: Path, upto: int) -> None:
    """Agents that recorded the schema with sqlite-utils refuse a store whose record holds a migration
    they do not know as "written by a newer version"; with no record at all but tables, they would call it
    "not a FaceFleet store" and tell the operator to move it away (the gallery and queued events with it)."""
    path = tmp_path / "agent.db"
    if upto:
        make_legacy_store(path, upto=upto).close()
    EmbeddingStore(path).close()
    names = legacy_names(path)
    assert names == {MARKER} and not names & {"0001_initial", "0002_sync"}
    with EmbeddingStore(path) as store:  # the marker is ignored here
        assert store.schema_version() == MIGRATIONS.latest and store.upgraded == []


def test_a_store_upgraded_before_the_marker_existed_gets_it_from_the_service_only(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    EmbeddingStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE _sqlite_migrations")
    conn.close()
    digest = sha256(path)
    with EmbeddingStore(path, upgrade=False) as store:
        store.schema_version()
    assert sha256(path) == digest and legacy_names(path) == set()
    EmbeddingStore(path).close()
    assert legacy_names(path) == {MARKER}
