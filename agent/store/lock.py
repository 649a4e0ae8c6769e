"""The lock of the agent service on its store: `facefleet-agent run` holds an exclusive flock on
`agent.db.lock` beside `agent.db` for as long as it runs (released by the kernel when the process ends,
however it ends), and so does `store migrate` while it migrates. A second service on the same store, and a
migration or a restore (`store restore`, which holds it too) under a running service, are refused; commands
that only read or write rows do not take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from facefleet.agent.domain.records import StoreBusyError, StoreError

RESTART_AGENT = "systemctl restart facefleet-agent"
"""How an operator restarts the agent service (the systemd unit in systemd/)."""


def lock_path(store: Path) -> Path:
    """The lock file of a store: `agent.db.lock` beside `agent.db`."""
    return store.with_name(store.name + ".lock")


class StoreLock:
    """An exclusive flock on the store's lock file, held from construction until close(). who: what takes
    it, for the message when it is held already: "run" (the service) or "store migrate"."""

    def __init__(self, store: Path, who: str) -> None:
        self.path = lock_path(store)
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_uid == os.geteuid():
                # readable to all whatever the umask (it holds nothing): a command run as root, which made
                # it, does not lock the service out
                os.fchmod(self._fd, 0o644)
        except OSError as exc:
            raise StoreError(
                f"store lock {self.path}: cannot open ({exc.strerror}); check its directory"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise StoreBusyError(_held(store, self.path, who)) from None

    def close(self) -> None:
        """Let go of the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _held(store: Path, path: Path, who: str) -> str:
    if who == "run":
        return (
            f"store {store} is in use by another agent service or a `facefleet-agent store migrate` ({path} "
            "is locked): one service per state directory; stop the other one, or give this one its own "
            "--state-dir (under systemd, a migration's end lets the service start on its next try)"
        )
    if "migrate" in who:
        return (
            f"store {store} is in use by the running agent service ({path} is locked): restart it instead "
            f"({RESTART_AGENT}), which upgrades the store at start, or stop it first and run {who} again"
        )
    return (
        f"store {store} is in use by the running agent service or a `facefleet-agent store migrate` ({path} "
        f"is locked): stop it first (systemctl stop facefleet-agent), run {who} again, then start it"
    )
