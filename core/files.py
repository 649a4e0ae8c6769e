"""Files only their owner may read: databases holding embeddings, token hashes and queued events."""

from __future__ import annotations

import os
from pathlib import Path


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 (whatever the umask) unless it exists; OSError when it cannot be.
    SQLite gives the -wal and -shm files it creates next to a database the database's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
