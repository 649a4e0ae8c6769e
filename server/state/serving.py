"""Whether a server serves a state database. Every `serve` holds a shared lock on it for as long as it runs;
the commands that replace the database or move it elsewhere (restore, state migrate) take the lock
exclusively first, so they are refused while any server serves it, and no server starts while they run.

A `serve` that finds the database older than its code upgrades it only alone: it holds the lock
exclusively while it migrates (ServingLock.alone), and refuses while other servers hold it, since those run
the older code and would fail on the new schema (ServersRunningError). Every server is stopped before an
upgrade; the first to start upgrades the database, and the rest find it current.

On SQLite the lock is fcntl.flock on `<database>.lock` beside the file (released by the kernel when the
process ends, however it ends). On PostgreSQL, where replicas on other hosts share the database, it is an
advisory lock (facefleet.server.state.postgres.serving)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from facefleet.server.errors import FailedPreconditionError, StateError

STOP_SERVER = "systemctl stop facefleet-server"
"""How an operator stops the server (the systemd unit in systemd/)."""


class RestoreRunningError(StateError):
    """A command (restore, state migrate) holds the state database: a server neither starts nor goes on
    serving it (exit 74, so that systemd starts it again, to serve once the command has finished)."""


class ServersRunningError(StateError):
    """A `serve` found its database older than its code while other servers serve it: it does not upgrade
    the schema under them (exit 74: systemd tries again for about a minute, so it upgrades if they stop
    meanwhile; else its unit stays failed until started again by hand)."""


def servers_running(where: str, others: str) -> ServersRunningError:
    """The refusal of a server that would upgrade the database `where` under `others` ("2 other servers")."""
    return ServersRunningError(
        f"state database {where} is older than this server, and {others} serve it with the older code, "
        "which would fail on the upgraded schema: stop every server first (systemctl stop "
        "facefleet-server on each replica), then start one, which upgrades it at start, then the rest"
    )


class ServingLock(Protocol):
    """The lock a serving process holds on its state database."""

    def alone(self) -> AbstractContextManager[None]:
        """Hold the lock exclusively for the body (a migration), then shared again: ServersRunningError when
        other servers hold it, RestoreRunningError when a restore took it meanwhile."""

    def renew(self) -> None:
        """Take the lock again if it was lost (the connection that held it broke); RestoreRunningError when
        a restore took it meanwhile (stop serving), StateError while taking it fails otherwise."""

    def close(self) -> None:
        """Let go of the lock (idempotent)."""


def lock_path(database: Path) -> Path:
    """The lock file of an SQLite state database: `server.db.lock` beside `server.db`."""
    return database.with_name(database.name + ".lock")


class FileServingLock:
    """A shared flock on the SQLite database's lock file, held from construction until close()."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = _open(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise RestoreRunningError(
                f"state database {database} is being restored or migrated (a command holds {self.path}); "
                "start the server once it has finished"
            ) from None

    def renew(self) -> None:
        """A flock is never lost while its file stays open."""

    @contextmanager
    def alone(self) -> Iterator[None]:
        """flock converts the shared lock, and may let go of it on the way: it is taken again after."""
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._share()
            raise servers_running(str(self.database), f"other servers ({self.path} is locked)") from None
        try:
            yield
        finally:
            self._share()

    def _share(self) -> None:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RestoreRunningError(
                f"state database {self.database} is being restored or migrated (a command holds "
                f"{self.path}); start the server once it has finished"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextmanager
def offline(database: Path, verb: str) -> Iterator[None]:
    """Hold the SQLite database's lock file exclusively for the body: FailedPreconditionError (nothing done)
    while a server serves the database, or another restore or migration runs. verb: e.g. "restore"."""
    path = lock_path(database)
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPreconditionError(
                f"state database {database} is in use by a running server (or another restore or state "
                f"migrate; {path} is locked): stop the server first: {STOP_SERVER}, then run {verb} again"
            ) from None
        yield
    finally:
        os.close(fd)


def _open(path: Path) -> int:
    """The lock file, made readable to all (it holds nothing) so that a command run as another user than
    the server's does not lock the server out."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"state database lock {path}: cannot open ({exc.strerror})") from None
