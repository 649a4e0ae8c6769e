"""backup.json of either backend: each writes the keys it always wrote (SQLite's `database_*`, PostgreSQL's
`dump_*` and versions) plus `backend`; a manifest of the other backend is refused naming it and the fix, one
without `backend` is of SQLite, a newer format or a missing key is unreadable, and a model file name that
leads out of the model store is refused naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from facefleet.server.errors import DataLossError, FailedPreconditionError, NotFoundError
from facefleet.server.state.backup_manifest import Backend, BackupManifest

SQLITE = BackupManifest(
    backend="sqlite",
    created_at="2026-12-02T10:00:00+00:00",
    schema_version=7,
    state_sha256="ab" * 32,
    state_bytes=4096,
    row_counts={"people": 2, "events": 20},
    models={"face/m/v1/model.onnx": "cd" * 32},
)
POSTGRES = BackupManifest(
    backend="postgresql",
    created_at="2026-12-02T10:00:00+00:00",
    schema_version=2,
    state_sha256="ef" * 32,
    state_bytes=8192,
    row_counts={"people": 2},
    server_version=16,
    pg_dump_version=17,
)


def test_each_backend_writes_its_own_keys_and_loads_them_back(tmp_path: Path) -> None:
    SQLITE.write(tmp_path / "sqlite.json")
    POSTGRES.write(tmp_path / "postgres.json")
    sqlite = json.loads((tmp_path / "sqlite.json").read_text())
    postgres = json.loads((tmp_path / "postgres.json").read_text())
    assert list(sqlite) == [
        "created_at",
        "schema_version",
        "database_sha256",
        "database_bytes",
        "row_counts",
        "models",
        "backend",
        "format",
    ]
    assert list(postgres) == [
        "created_at",
        "schema_version",
        "dump_sha256",
        "dump_bytes",
        "row_counts",
        "server_version",
        "pg_dump_version",
        "models",
        "backend",
        "format",
    ]
    assert sqlite["backend"] == "sqlite" and postgres["backend"] == "postgresql"
    assert BackupManifest.load(tmp_path / "sqlite.json", "sqlite") == SQLITE
    assert BackupManifest.load(tmp_path / "postgres.json", "postgresql") == POSTGRES


def test_a_sqlite_manifest_without_backend_still_loads(tmp_path: Path) -> None:
    data = SQLITE.to_json()
    del data["backend"]
    (tmp_path / "backup.json").write_text(json.dumps(data))
    assert BackupManifest.load(tmp_path / "backup.json", "sqlite") == SQLITE


@pytest.mark.parametrize(
    ("manifest", "into", "says"),
    [
        (SQLITE, "postgresql", ["is of a sqlite state", "state migrate"]),
        (POSTGRES, "sqlite", ["is of a postgresql state", "set [state] url"]),
    ],
)
def test_a_backup_of_the_other_backend_is_refused_with_the_fix(
    tmp_path: Path, manifest: BackupManifest, into: Backend, says: list[str]
) -> None:
    manifest.write(tmp_path / "backup.json")
    with pytest.raises(FailedPreconditionError) as raised:
        BackupManifest.load(tmp_path / "backup.json", into)
    assert all(s in str(raised.value) for s in says)


def test_a_missing_manifest_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no backup manifest"):
        BackupManifest.load(tmp_path / "backup.json", "sqlite")


@pytest.mark.parametrize(
    ("backend", "data", "match"),
    [
        ("postgresql", {**POSTGRES.to_json(), "pg_dump_version": None}, "unreadable"),
        ("sqlite", {k: v for k, v in SQLITE.to_json().items() if k != "database_sha256"}, "unreadable"),
        ("sqlite", [1, 2], "unreadable"),
        ("sqlite", {**SQLITE.to_json(), "format": 2}, "newer than this server"),
        ("sqlite", {**SQLITE.to_json(), "backend": "oracle"}, "does not know"),
    ],
)
def test_a_damaged_or_newer_manifest_is_refused(
    tmp_path: Path, backend: Backend, data: object, match: str
) -> None:
    path = tmp_path / "backup.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataLossError, match=match):
        BackupManifest.load(path, backend)


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/etc/evil.txt", "face/../../evil.txt", "face/..", "", ".", "a\0b"]
)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_model_file_name_outside_the_model_store_is_refused(
    tmp_path: Path, backend: Backend, name: str
) -> None:
    manifest = SQLITE if backend == "sqlite" else POSTGRES
    path = tmp_path / "backup.json"
    path.write_text(json.dumps({**manifest.to_json(), "models": {name: "cd" * 32}}))
    with pytest.raises(DataLossError) as raised:
        BackupManifest.load(path, backend)
    assert repr(name) in str(raised.value) and "FaceFleet did not write this backup" in str(raised.value)


def test_a_model_file_behind_a_link_out_of_the_backup_is_refused(tmp_path: Path) -> None:
    (tmp_path / "backup" / "models").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "backup" / "models" / "face").symlink_to(tmp_path / "elsewhere")
    path = tmp_path / "backup" / "backup.json"
    path.write_text(json.dumps(SQLITE.to_json()))  # its model file is face/m/v1/model.onnx
    with pytest.raises(DataLossError, match=re.escape("'face/m/v1/model.onnx'")):
        BackupManifest.load(path, "sqlite")
