"""A real PostgreSQL server (Debian's `postgresql`) in a throwaway cluster: initdb and pg_ctl in a temporary
folder, a free loopback port, trust authentication on loopback only. Run as the `postgres` system user
when the tests run as root (initdb refuses root). Each test gets a fresh database of its own."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.mosquitto import free_port


def bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (None: not installed)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@dataclass
class PostgresCluster:
    """One postgres server process on 127.0.0.1:port with data in `root`."""

    root: Path
    port: int
    bin: Path

    @classmethod
    def start(cls, parent: Path | None = None) -> PostgresCluster:
        """A new cluster in a folder of its own under `parent`, by default the system's temporary folder
        (pytest's are private to root, out of the postgres user's reach)."""
        found = bindir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed: run scripts/setup (apt package postgresql)")
        root = Path(tempfile.mkdtemp(prefix="facefleet-postgres-", dir=parent))
        cluster = cls(root, free_port(), found)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        cluster._run("initdb", "-D", str(root / "data"), "-U", "facefleet", "--auth=trust", "-E", "UTF8")
        cluster._run(
            "pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {cluster.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            "start",
        )  # fmt: skip
        return cluster

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://facefleet@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[call-overload]
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
