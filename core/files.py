"""Files only their owner may read (databases holding embeddings, token hashes and queued events), and files
replaced whole or not at all."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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


def write_atomic(path: Path, content: str | bytes) -> None:
    """Replace `path` with `content` (text as UTF-8) all at once (see replace_atomic)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    replace_atomic(path, lambda handle: handle.write(data))


def replace_atomic(
    path: Path,
    write: Callable[[BinaryIO], object],
    *,
    mode: int | None = None,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace `path` with what `write` writes to a temporary file beside it (given `mode`, else mkstemp's
    0600, and owner (uid, gid), else the writer's), fsynced, renamed over it, and the folder fsynced: a
    crash leaves the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_small(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, read no further than that. OSError, whose
    strerror says why, for anything else: a device or a FIFO (which may never end, or never start) or a
    larger file, as for a file that cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO with no writer would block the open
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data
