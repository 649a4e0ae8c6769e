"""backup.json, the manifest of a backup of either state backend: the time, the schema version, row counts per
table, the sha256 and size of the state file (`server.db` or `state.pgdump`), the sha256 of each model file
and the backend. The state file's keys are named as each backend has always written them (`database_sha256`,
`dump_sha256`); a manifest without `backend` is of SQLite, as SQLite backups named none before."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from facefleet.core.files import write_atomic
from facefleet.server.errors import DataLossError, FailedPreconditionError, NotFoundError

__all__ = ["FORMAT", "MANIFEST", "MODELS", "Backend", "BackupManifest", "check_model_name"]

MANIFEST = "backup.json"
MODELS = "models"
"""The folder of a backup that holds the copy of the model store."""
FORMAT = 1
Backend = Literal["sqlite", "postgresql"]
_STATE_KEY: dict[Backend, str] = {"sqlite": "database", "postgresql": "dump"}
"""The prefix of the state file's keys per backend: database_sha256, dump_bytes."""
_OTHER_BACKEND_FIX: dict[Backend, str] = {
    "sqlite": "this server's state is SQLite: set [state] url to an empty PostgreSQL database "
    "(postgresql://USER@HOST:PORT/DBNAME) to restore it",
    "postgresql": "[state] url is on PostgreSQL: restore it into an SQLite state directory, then "
    "`facefleet-server state migrate`",
}
"""What to do with a backup of the other backend, by the backend restored into."""


@dataclass(frozen=True)
class BackupManifest:
    """What backup.json records. state_sha256, state_bytes: of the state file (server.db, state.pgdump);
    models: sha256 of each model store file, by its path under models/; server_version, pg_dump_version:
    PostgreSQL only (None on SQLite), the majors (16) of the server dumped and of pg_dump."""

    backend: Backend
    created_at: str
    schema_version: int
    state_sha256: str
    state_bytes: int
    row_counts: dict[str, int]
    models: dict[str, str] = field(default_factory=dict)
    server_version: int | None = None
    pg_dump_version: int | None = None
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        """backup.json's object; the PostgreSQL versions only when set."""
        key = _STATE_KEY[self.backend]
        data: dict[str, Any] = {
            "created_at": self.created_at,
            "schema_version": self.schema_version,
            f"{key}_sha256": self.state_sha256,
            f"{key}_bytes": self.state_bytes,
            "row_counts": dict(self.row_counts),
        }
        if self.server_version is not None:
            data["server_version"] = self.server_version
        if self.pg_dump_version is not None:
            data["pg_dump_version"] = self.pg_dump_version
        data.update(models=dict(self.models), backend=self.backend, format=self.format)
        return data

    def write(self, path: Path) -> None:
        """Write backup.json to `path` at once (indented JSON)."""
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path, backend: Backend) -> BackupManifest:
        """The manifest at `path` of a backup to restore into a `backend` state. FailedPreconditionError when
        the backup is of the other backend, DataLossError when the manifest is unreadable or newer."""
        try:
            data = json.loads(path.read_text())
            found = str(data.get("backend", "sqlite"))
            if found not in _STATE_KEY:
                raise DataLossError(
                    f"backup manifest {path} names the state backend {found!r}, which this server does not "
                    "know: upgrade facefleet-server, or use another backup"
                )
            if found != backend:
                raise FailedPreconditionError(
                    f"backup {path.parent} is of a {found} state, and {_OTHER_BACKEND_FIX[backend]}"
                )
            key = _STATE_KEY[backend]
            postgres = backend == "postgresql"
            manifest = cls(
                backend=backend,
                created_at=str(data["created_at"]),
                schema_version=int(data["schema_version"]),
                state_sha256=str(data[f"{key}_sha256"]),
                state_bytes=int(data[f"{key}_bytes"]),
                row_counts={str(k): int(v) for k, v in data["row_counts"].items()},
                models={str(k): str(v) for k, v in data.get("models", {}).items()},
                server_version=int(data["server_version"]) if postgres else None,
                pg_dump_version=int(data["pg_dump_version"]) if postgres else None,
                format=int(data.get("format", FORMAT)),
            )
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no backup manifest; is this a facefleet-server backup?") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataLossError(f"backup manifest {path} is unreadable ({exc}); use another backup") from None
        for name in manifest.models:
            check_model_name(name, path.parent / MODELS, path)
        if manifest.format > FORMAT:
            raise DataLossError(
                f"backup manifest {path} has format {manifest.format}, newer than this server ({FORMAT}): "
                "upgrade facefleet-server before restoring it"
            )
        return manifest


def check_model_name(name: str, folder: Path, manifest: Path) -> Path:
    """`folder / name` for a model file named in `manifest`, once `name` is a relative path that stays inside
    `folder`; DataLossError naming the entry otherwise (copying it would write outside the model store)."""
    pure = PurePosixPath(name)
    if (
        "\0" in name
        or pure.is_absolute()
        or ".." in pure.parts
        or not pure.parts
        or not _inside(folder, name)
    ):
        raise DataLossError(
            f"backup manifest {manifest} lists the model file {name!r}, which is not a path inside the model "
            "store: FaceFleet did not write this backup (or it was altered); use another backup"
        )
    return folder / name


def _inside(folder: Path, name: str) -> bool:
    """Whether `folder / name` resolves (symbolic links followed) to a place under `folder`."""
    real = Path(os.path.realpath(folder))
    path = Path(os.path.realpath(folder / name))
    return path != real and path.is_relative_to(real)
