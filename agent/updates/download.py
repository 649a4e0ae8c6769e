"""Resumable downloads of model files: bytes go to `<store>/.downloads/<sha256>.part`, appended and
fsynced every few MiB, so a broken connection (or a restarted agent) continues from the bytes it has. A
finished file is checked against the release's size and sha256 before it is used; a file that fails the
check is deleted, so the next attempt starts clean.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from facefleet.link.models import ModelFile
from facefleet.vision.errors import ModelIntegrityError, ModelStoreError

Fetch = Callable[[str, int], AsyncIterator[bytes]]
"""(file name, offset) → the file's bytes from offset on, in chunks."""
FSYNC_BYTES = 4 * 1024 * 1024


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""A full disk, or the user's quota spent: worth another try once space is freed."""


class DiskFullError(ModelStoreError):
    """The disk filled up (or the quota was spent) while a model was downloaded or stored."""


def part_path(directory: Path, spec: ModelFile) -> Path:
    return directory / f"{spec.sha256}.part"


async def download(fetch: Fetch, spec: ModelFile, directory: Path) -> Path:
    """The verified file `spec` in directory, fetched from where an earlier attempt stopped.

    A resumed file that fails the check is fetched once more from the start (its earlier part may have been
    cut short by a crash). ModelIntegrityError when the file still has another size or sha256 than the
    release says; DiskFullError when the disk fills up or the quota is spent; either way the partial file is
    removed."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(
                f"disk full while making {directory} for {spec.name} ({exc.strerror}); free space or lower "
                "[models] keep_versions"
            ) from None
        raise
    path = part_path(directory, spec)
    resumed = path.exists() and 0 < path.stat().st_size <= spec.size
    try:
        await _fetch_rest(fetch, spec, path)
        check_file(path, spec)
    except ModelIntegrityError:
        if not resumed:
            raise
        await _fetch_rest(fetch, spec, path)  # check_file removed the suspect part: from byte 0
        check_file(path, spec)
    return path


async def _fetch_rest(fetch: Fetch, spec: ModelFile, path: Path) -> None:
    """Append the bytes path lacks, fsynced every FSYNC_BYTES and at the end; writes run off the loop."""
    have = path.stat().st_size if path.exists() else 0
    if have > spec.size:
        path.unlink()
        have = 0
    if have == spec.size:
        return
    unsynced = 0
    try:
        with path.open("ab") as handle:
            async for chunk in fetch(spec.name, have):
                if have + len(chunk) > spec.size:
                    raise ModelIntegrityError(
                        f"{spec.name}: the server sent more than the {spec.size} bytes of the release"
                    )
                await asyncio.to_thread(handle.write, chunk)
                have += len(chunk)
                unsynced += len(chunk)
                if unsynced >= FSYNC_BYTES:
                    await asyncio.to_thread(_sync, handle)
                    unsynced = 0
            await asyncio.to_thread(_sync, handle)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            path.unlink(missing_ok=True)
            raise DiskFullError(
                f"disk full while downloading {spec.name} ({spec.size / 2**20:.1f} MiB) into {path.parent} "
                f"({exc.strerror}); free space or lower [models] keep_versions"
            ) from None
        raise
    except ModelIntegrityError:
        path.unlink(missing_ok=True)
        raise
    if have < spec.size:
        raise ConnectionError(f"{spec.name}: the download ended at byte {have} of {spec.size}; it resumes")


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def check_file(path: Path, spec: ModelFile) -> None:
    """Raise ModelIntegrityError (and delete the file) when size or sha256 differ from spec."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if size != spec.size or digest.hexdigest() != spec.sha256:
        path.unlink(missing_ok=True)
        raise ModelIntegrityError(
            f"{spec.name}: {size} bytes with sha256 {digest.hexdigest()[:12]}…, but the release says "
            f"{spec.size} bytes with sha256 {spec.sha256[:12]}…; the file was corrupted or tampered with"
        )
