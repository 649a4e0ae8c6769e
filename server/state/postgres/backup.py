"""Backing up and restoring a PostgreSQL state with pg_dump and pg_restore, and the model store beside it.

A backup is a directory: `state.pgdump` (`pg_dump --format=custom` of the state database), `models/` (a copy
of the [models] dir's files) and `backup.json` (the time, the schema version, row counts per table, the
sha256 of every file, `backend: postgresql`). The row counts and the dump read one snapshot: a REPEATABLE
READ transaction counts the rows and exports its snapshot, and pg_dump runs with `--snapshot`, so both agree
while the servers go on writing.

A restore checks the manifest and every file's sha256 first, then runs `pg_restore --no-owner
--no-privileges --single-transaction --exit-on-error` (all or nothing; no role of the source is needed),
copies the model files and compares the restored row counts with the manifest. It is refused while a
server replica serves the database (facefleet.server.state.postgres.serving). The target database must hold
no FaceFleet data; the FaceFleet tables of one that holds only the empty schema (a server started on it
once) are dropped first. With `force`, so are those of a target that holds data: nothing of them is kept,
and a restore that then fails leaves the database without them (pg_restore's own --clean cannot drop the
partitions of `events` one by one).

Passwords never reach a command line: the URL's password goes to the child's PGPASSWORD and the rest of it
as a libpq keyword/value string."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from facefleet.core.migrations import SchemaError
from facefleet.server.errors import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    NotFoundError,
    StateError,
)
from facefleet.server.state.backup_files import copy_atomically, copy_models, remove_partial, sha256_file
from facefleet.server.state.backup_manifest import MANIFEST, MODELS, BackupManifest
from facefleet.server.state.postgres import schema
from facefleet.server.state.postgres.copy import TABLES
from facefleet.server.state.postgres.serving import refuse_while_serving
from facefleet.server.state.postgres.state import redact
from facefleet.server.state.sql.meta import NEW_GALLERY_SQL

DUMP = "state.pgdump"
DATA_TABLES = ("people", "events", "tokens", "agents", "models", "admin_audit", "snapshots")
"""Tables whose rows make a target database 'hold data' (a restore refuses it without force)."""
OWN_TABLES = (*TABLES, "facefleet_migrations")
"""The tables of a FaceFleet schema (events' partitions go with `events`)."""
OWN_FUNCTIONS = ("facefleet_meta_notify", "facefleet_tokens_notify")
CLIENT_PACKAGE = "postgresql-client"
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class PgRestored:
    """A restore's outcome: the manifest, whether the target's FaceFleet tables were dropped first, and the
    model files copied (those already there with the same sha256 are not)."""

    manifest: BackupManifest
    cleaned: bool
    models_copied: int


# -- client programs -----------------------------------------------------------------------------------


def find_program(name: str) -> Path:
    """`name` (pg_dump, pg_restore) of the newest PostgreSQL installed under /usr/lib/postgresql, else on
    PATH: a client older than the server refuses to dump it."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return Path(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        raise FailedPreconditionError(
            f"{name} is not installed (looked in /usr/lib/postgresql/*/bin and PATH): "
            f"apt install {CLIENT_PACKAGE}"
        )
    return Path(on_path)


def program_major(program: Path) -> int:
    """The major version (16) that `program --version` reports."""
    try:
        done = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise FailedPreconditionError(
            f"cannot run {program} --version ({exc}): apt install {CLIENT_PACKAGE}"
        ) from None
    match = re.search(r"\)\s+(\d+)", done.stdout)
    if match is None:
        raise FailedPreconditionError(f"{program} --version says {done.stdout.strip()!r}, not a version")
    return int(match[1])


def client_command(url: str) -> tuple[str, dict[str, str]]:
    """The libpq keyword/value string of `url` without its password, and the environment of a child that
    connects with it (PGPASSWORD set when the URL has a password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise FailedPreconditionError(f"[state] url {redact(url)} is not a libpq URL ({exc})") from None
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}), env


def _run(program: Path, arguments: Sequence[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            [str(program), *arguments], capture_output=True, text=True, env=env, check=False
        )
    except OSError as exc:
        raise FailedPreconditionError(f"cannot run {program} ({exc}): apt install {CLIENT_PACKAGE}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).replace("\n", "; ")
        raise StateError(f"{what}: {program.name} failed ({done.returncode}): {detail[:2000]}")


@contextmanager
def _connect(url: str, purpose: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise StateError(
            f"cannot connect to the state database {redact(url)} to {purpose} ({str(exc).strip()}); check "
            "[state] url and that PostgreSQL runs"
        ) from None
    try:
        yield conn
    finally:
        conn.close()


# -- backup --------------------------------------------------------------------------------------------


def backup_state(url: str, models: Path, dest: Path, now: datetime) -> BackupManifest:
    """pg_dump the state database at `url` and copy the model store into `dest`, a new or empty directory;
    the manifest is written last. Consistent while servers write (one exported snapshot)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AlreadyExistsError(f"backup destination {dest} exists and is not empty: choose a new directory")
    pg_dump = find_program("pg_dump")
    dump_major = program_major(pg_dump)
    conninfo, env = client_command(url)
    where = redact(url)
    with _connect(url, "back it up with pg_dump") as conn:
        server_major = conn.info.server_version // 10000
        if dump_major < server_major:
            raise FailedPreconditionError(
                f"{pg_dump} is version {dump_major}, older than the PostgreSQL server {server_major} at "
                f"{where}, and would refuse to dump it: apt install {CLIENT_PACKAGE}-{server_major}"
            )
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            schema_version = _schema_version(conn, where)
            counts = _row_counts(conn)
            snapshot = str(_one(conn, "SELECT pg_export_snapshot()"))
        except psycopg.Error as exc:
            raise StateError(f"cannot read the state database {where} ({str(exc).strip()})") from None
        created = not dest.exists()
        try:
            dest.mkdir(parents=True, exist_ok=True)
            dump = dest / DUMP
            _run(
                pg_dump,
                ["--format=custom", f"--snapshot={snapshot}", "--file", str(dump), "--dbname", conninfo],
                env,
                f"cannot back up the state database {where} to {dump}",
            )
            conn.rollback()
            model_sums = copy_models(models, dest / MODELS)
            manifest = BackupManifest(
                backend="postgresql",
                created_at=now.isoformat(),
                schema_version=schema_version,
                state_sha256=sha256_file(dump),
                state_bytes=dump.stat().st_size,
                row_counts=counts,
                server_version=server_major,
                pg_dump_version=dump_major,
                models=model_sums,
            )
            manifest.write(dest / MANIFEST)
        except BaseException as exc:
            remove_partial(dest, created, (DUMP,))
            if isinstance(exc, OSError):
                raise StateError(f"cannot back up the state to {dest} ({exc.strerror or exc})") from None
            raise
    return manifest


# -- restore -------------------------------------------------------------------------------------------


def verify_backup(src: Path) -> BackupManifest:
    """The backup's manifest, once its dump and model files match their sha256 and its schema version is one
    this server knows."""
    manifest = BackupManifest.load(src / MANIFEST, "postgresql")
    dump = src / DUMP
    if not dump.is_file():
        raise NotFoundError(f"backup {src} has no {DUMP}; the backup is incomplete, use another one")
    actual = sha256_file(dump)
    if actual != manifest.state_sha256:
        raise DataLossError(
            f"backup {dump}: sha256 {actual} does not match the manifest's {manifest.state_sha256}; "
            "the backup is damaged, use another one"
        )
    if manifest.schema_version > schema.LATEST:
        raise SchemaError(
            f"backup {src} has schema version {manifest.schema_version}, newer than this server "
            f"({schema.LATEST}): upgrade facefleet-server before restoring it"
        )
    if manifest.schema_version < 1:
        raise DataLossError(f"backup manifest {src / MANIFEST} has no schema version; use another backup")
    for name, expected in manifest.models.items():
        path = src / MODELS / name
        if not path.is_file() or sha256_file(path) != expected:
            raise DataLossError(
                f"backup model file {path} is missing or does not match the manifest's sha256; the backup is "
                "damaged, use another one"
            )
    return manifest


def restore_state(src: Path, url: str, models: Path, *, force: bool = False) -> PgRestored:
    """Restore a verified backup into the database at `url` and the model store `models`. A target holding
    FaceFleet data, or a model file that differs from the backup's, is refused unless `force` (which drops
    the target's FaceFleet tables and overwrites the model files). StateError when pg_restore fails (the
    database then holds what it held, but for the dropped tables); DataLossError when the restored row
    counts differ from the manifest. Refused (FailedPreconditionError) while a server replica serves the
    database; no replica starts while it runs (facefleet.server.state.postgres.serving)."""
    manifest = verify_backup(src)
    pg_restore = find_program("pg_restore")
    restore_major = program_major(pg_restore)
    dumped_by = manifest.pg_dump_version  # always set on a PostgreSQL manifest
    if dumped_by is not None and restore_major < dumped_by:
        raise FailedPreconditionError(
            f"{pg_restore} is version {restore_major}, older than the pg_dump ({dumped_by}) that wrote "
            f"{src / DUMP}: apt install {CLIENT_PACKAGE}-{dumped_by}"
        )
    where = redact(url)
    with _connect(url, "restore into it") as guard:
        guard.autocommit = True
        try:
            refuse_while_serving(guard, where)  # until the guard closes, at the end of the restore
        except psycopg.Error as exc:
            raise StateError(f"cannot read the target database {where} ({str(exc).strip()})") from None
        return _restore(src, url, models, manifest, pg_restore, force=force)


def _restore(
    src: Path, url: str, models: Path, manifest: BackupManifest, pg_restore: Path, *, force: bool
) -> PgRestored:
    where = redact(url)
    conninfo, env = client_command(url)
    with _connect(url, "restore into it") as conn:
        conn.autocommit = True
        try:
            present = _tables(conn)
            holding = {t: n for t in DATA_TABLES if t in present and (n := _count(conn, t)) > 0}
        except psycopg.Error as exc:
            raise StateError(f"cannot read the target database {where} ({str(exc).strip()})") from None
    if holding and not force:
        held = ", ".join(f"{table} ({n} rows)" for table, n in holding.items())
        raise AlreadyExistsError(
            f"target database {where} already holds {held}: restore into a new, empty database "
            "(createdb NAME, then point [state] url at it), or pass --force to drop its FaceFleet tables"
        )
    conflicts = _model_conflicts(models, manifest.models)
    if conflicts and not force:
        raise AlreadyExistsError(
            f"model store {models} has {len(conflicts)} files that differ from the backup's "
            f"({', '.join(conflicts[:3])}): pass --force to overwrite them, or configure an empty "
            "[models] dir"
        )
    cleaned = bool(present & set(OWN_TABLES))
    if cleaned:
        _drop_own_objects(url, where)
    _run(
        pg_restore,
        [
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "--dbname",
            conninfo,
            str(src / DUMP),
        ],
        env,
        f"cannot restore {src / DUMP} into {where} "
        + ("(its FaceFleet tables were dropped before)" if cleaned else "(nothing was changed)"),
    )
    try:
        copied = _restore_models(src / MODELS, models, manifest.models)
    except OSError as exc:
        raise StateError(
            f"restored the database but cannot copy the model files into {models} ({exc.strerror or exc}); "
            "fix that and copy them from the backup's models/ folder"
        ) from None
    with _connect(url, "check the restore") as conn:
        conn.autocommit = True
        version = _schema_version(conn, where)
        counts = _row_counts(conn)
    differing = {t: (n, counts.get(t, 0)) for t, n in manifest.row_counts.items() if counts.get(t, 0) != n}
    if differing or version != manifest.schema_version:
        detail = ", ".join(
            f"{t} {want} in the backup, {got} restored" for t, (want, got) in differing.items()
        )
        raise DataLossError(
            f"restored {where} does not match the backup's manifest ({detail or 'schema version'}): "
            "restore again into a new, empty database"
        )
    with _connect(url, "give the restored gallery its own id") as conn:
        conn.autocommit = True
        conn.execute(NEW_GALLERY_SQL.replace("?", "%s"), (str(uuid.uuid4()),))
    return PgRestored(manifest, cleaned, copied)


# -- helpers -------------------------------------------------------------------------------------------


def _one(conn: psycopg.Connection[tuple[Any, ...]], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def _drop_own_objects(url: str, where: str) -> None:
    """Drop the FaceFleet tables (with their partitions, sequences and triggers) and functions of the
    database at `url`, in one transaction; other objects stay."""
    with _connect(url, "drop its FaceFleet tables") as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.MIGRATION_LOCK,))
                for table in reversed(OWN_TABLES):
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
                for function in OWN_FUNCTIONS:
                    conn.execute(
                        sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(sql.Identifier(function))
                    )
        except psycopg.Error as exc:
            raise StateError(
                f"cannot drop the FaceFleet tables of {where} before the restore ({str(exc).strip()}); "
                "nothing was changed: restore into a new, empty database instead (createdb NAME)"
            ) from None


def _tables(conn: psycopg.Connection[tuple[Any, ...]]) -> set[str]:
    """The tables of the current schema (partitioned parents included)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
    ).fetchall()
    return {str(row[0]) for row in rows}


def _count(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT COUNT(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def _row_counts(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
    """Rows per FaceFleet table present, in the caller's transaction."""
    present = _tables(conn)
    return {table: _count(conn, table) for table in TABLES if table in present}


def _schema_version(conn: psycopg.Connection[tuple[Any, ...]], where: str) -> int:
    if "facefleet_migrations" not in _tables(conn):
        raise FailedPreconditionError(
            f"{where} holds no FaceFleet schema (no facefleet_migrations table): check [state] url"
        )
    version = _one(conn, "SELECT COALESCE(MAX(version), 0) FROM facefleet_migrations")
    return int(version)


def _model_conflicts(models: Path, sums: dict[str, str]) -> list[str]:
    """Model files (paths under models/) present in the store with another sha256 than the backup's."""
    return [
        name
        for name, sum_ in sums.items()
        if (models / name).is_file() and sha256_file(models / name) != sum_
    ]


def _restore_models(backup: Path, models: Path, sums: dict[str, str]) -> int:
    """Copy the backup's model files that the store lacks or holds otherwise; how many were copied."""
    copied = 0
    for name, sum_ in sums.items():
        target = models / name
        if target.is_file() and sha256_file(target) == sum_:
            continue
        copy_atomically(backup / name, target)
        copied += 1
    return copied
