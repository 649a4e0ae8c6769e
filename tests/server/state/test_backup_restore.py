"""Backups of either backend against tampering and foreign clusters: a manifest whose model file name leads
out of the model store is refused before anything is written; on PostgreSQL a restore needs none of the
source's roles, and a backup reads the state of the current schema, whichever it is."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest

from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding, Person
from facefleet.server.errors import DataLossError
from facefleet.server.state.backup_files import sha256_file
from facefleet.server.state.backup_manifest import MANIFEST
from facefleet.server.state.interface import State
from facefleet.server.state.postgres import backup as postgres_backup
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sqlite import backup as sqlite_backup
from facefleet.server.state.sqlite.state import SqliteState
from tests.postgres import PostgresCluster

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
MODEL = "face/m/v1/model.onnx"


def with_models(root: Path) -> Path:
    models = root / "models"
    (models / MODEL).parent.mkdir(parents=True)
    (models / MODEL).write_bytes(b"weights")
    return models


def tamper(backup: Path) -> None:
    """What an altered backup may hold: a file beside models/ listed, with its true sha256, as ../evil.txt."""
    (backup / "evil.txt").write_text("not a model")
    manifest = json.loads((backup / MANIFEST).read_text())
    manifest["models"]["../evil.txt"] = sha256_file(backup / "evil.txt")
    (backup / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_restore_refuses_a_model_file_name_out_of_the_model_store(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    models = with_models(tmp_path / "source")
    backup, target = tmp_path / "backup", tmp_path / "target"
    restore: Callable[[], object]
    if backend == "sqlite":
        SqliteState(tmp_path / "source" / "server.db").close()
        sqlite_backup.backup_state(tmp_path / "source" / "server.db", models, backup, NOW)
        restore = lambda: sqlite_backup.restore_state(backup, target / "server.db", target / "models", NOW)  # noqa: E731
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        source, into = cluster.create_database(), cluster.create_database()
        PostgresState(source, pool_size=1).close()
        postgres_backup.backup_state(source, models, backup, NOW)
        restore = lambda: postgres_backup.restore_state(backup, into, target / "models")  # noqa: E731
    tamper(backup)
    with pytest.raises(DataLossError, match=r"'\.\./evil\.txt'.*FaceFleet did not write this backup"):
        restore()
    assert not (target / "evil.txt").exists()
    assert not (target / "models" / MODEL).exists()  # refused before anything was copied


def test_a_postgresql_restore_needs_none_of_the_source_roles(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    source, into = postgres_cluster.create_database(), postgres_cluster.create_database()
    state = PostgresState(source, pool_size=1)
    try:
        state.add_person(Person("ada", display_name="Ada"), [], NOW)
    finally:
        state.close()
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source, autocommit=True) as conn:  # a grant the target's cluster cannot replay
        conn.execute(f"CREATE ROLE {role}")  # type: ignore[call-overload]
        conn.execute(f"GRANT SELECT ON people TO {role}")  # type: ignore[call-overload]
    postgres_backup.backup_state(source, with_models(tmp_path), tmp_path / "backup", NOW)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ON people FROM {role}")  # type: ignore[call-overload]
        conn.execute(f"DROP ROLE {role}")  # type: ignore[call-overload]
    restored = postgres_backup.restore_state(tmp_path / "backup", into, tmp_path / "target")
    assert restored.manifest.row_counts["people"] == 1
    state = PostgresState(into, pool_size=1)
    try:
        assert state.get_person("ada").display_name == "Ada"
    finally:
        state.close()


def test_a_postgresql_backup_reads_the_state_of_the_current_schema(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA fleet")
    in_schema = f"{url}?options=-csearch_path%3Dfleet"
    state = PostgresState(in_schema, pool_size=1)
    try:
        state.add_person(Person("ada"), [], NOW)
    finally:
        state.close()
    manifest = postgres_backup.backup_state(in_schema, with_models(tmp_path), tmp_path / "backup", NOW)
    assert manifest.row_counts["people"] == 1 and manifest.schema_version >= 1


def unknown_face(i: int) -> Event:
    """An unknown face seen at NOW (faces of one frame share their time)."""
    embedding = Embedding("sface@2021dec", np.ones(128, np.float32) / np.sqrt(128), 0.8)
    crop = cv2.imencode(".jpg", np.full((112, 112, 3), 128, np.uint8))[1].tobytes()
    snapshot = FaceSnapshot(crop, b"", embedding)
    return Event(str(uuid.UUID(int=i)), "door-1", NOW, "face", "unknown", snapshot=snapshot)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_restored_database_and_its_source_changed_alike_have_different_review_keys(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """The source and the database restored from its backup each see one face of a frame dismissed and
    another of that frame arrive, different faces in each: they count as many snapshot changes and faces
    under review at the same times, and their review keys still differ (the restore's gallery id), so a
    server that clustered one's faces does not serve them for the other's."""
    since = NOW - timedelta(days=1)
    models = with_models(tmp_path / "source")
    backup, target = tmp_path / "backup", tmp_path / "target"
    source: State
    if backend == "sqlite":
        source = SqliteState(tmp_path / "source" / "server.db")
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url, into = cluster.create_database(), cluster.create_database()
        source = PostgresState(url, pool_size=1)
    try:
        source.add_events([unknown_face(1), unknown_face(2)])
        if backend == "sqlite":
            sqlite_backup.backup_state(tmp_path / "source" / "server.db", models, backup, NOW)
            sqlite_backup.restore_state(backup, target / "server.db", target / "models", NOW)
            restored: State = SqliteState(target / "server.db")
        else:
            postgres_backup.backup_state(url, models, backup, NOW)
            postgres_backup.restore_state(backup, into, target / "models")
            restored = PostgresState(into, pool_size=1)
        try:
            for state, (dismissed, arrived) in ((source, (1, 3)), (restored, (2, 4))):
                state.snapshots.set_status([str(uuid.UUID(int=dismissed))], "dismissed")
                state.add_events([unknown_face(arrived)])
            assert source.snapshots.review_key(since)[2:] == restored.snapshots.review_key(since)[2:]
            assert source.snapshots.review_key(since) != restored.snapshots.review_key(since)
        finally:
            restored.close()
    finally:
        source.close()
