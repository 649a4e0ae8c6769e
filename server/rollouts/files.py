"""Model files served to agents in chunks, each file checked against the catalogue's size and sha256 before
it is served. A check is remembered per (path, size, mtime_ns) and shared by concurrent downloads, so 50
agents fetching the same 19 MB file cost one hash; a file changed on disk gets checked again."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from facefleet.link.models import ModelFile
from facefleet.server.errors import DataLossError, OutOfRangeError
from facefleet.vision.models.manifest import sha256_file

log = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20
_CACHE_ENTRIES = 256


@dataclass(frozen=True)
class Chunk:
    """Bytes of a file from offset on; size: the whole file's size in bytes."""

    data: bytes
    offset: int
    size: int


class ModelFiles:
    """Verified, chunked reads of stored model files."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk_bytes = max(1, min(chunk_bytes, CHUNK_BYTES))
        self._checks: OrderedDict[tuple[str, int, int], asyncio.Future[str]] = OrderedDict()

    async def verify(self, path: Path, expected: ModelFile, what: str) -> None:
        """DataLossError when the file is missing or differs from the catalogue."""
        try:
            stat = path.stat()
        except OSError:
            log.error("%s: the server's copy %s is missing", what, path)
            raise DataLossError(f"{what}: the server's copy is missing; publish the model again") from None
        if stat.st_size != expected.size:
            raise DataLossError(
                f"{what}: the server's copy is {stat.st_size} bytes, the catalogue says {expected.size}; "
                "the stored file changed: publish the model again under a new version"
            )
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        future = self._checks.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(sha256_file, path))
            self._checks[key] = future
            while len(self._checks) > _CACHE_ENTRIES:
                self._checks.popitem(last=False)
        try:
            digest = await asyncio.shield(future)
        except OSError as exc:
            self._checks.pop(key, None)
            raise DataLossError(f"{what}: cannot read the server's copy ({exc.strerror})") from None
        if digest != expected.sha256:
            raise DataLossError(
                f"{what}: the server's copy fails its sha256 check (tampered or corrupt); publish the "
                "model again under a new version"
            )

    async def chunks(self, path: Path, expected: ModelFile, offset: int, what: str) -> AsyncIterator[Chunk]:
        """The verified file from offset on, in chunks of at most chunk_bytes."""
        if offset > expected.size:
            raise OutOfRangeError(
                f"{what}: offset {offset} is beyond the end of the file ({expected.size} bytes)"
            )
        await self.verify(path, expected, what)
        if offset == expected.size:
            yield Chunk(b"", offset, expected.size)  # nothing left, but the size tells the agent it is done
            return
        handle = await asyncio.to_thread(open, path, "rb")
        try:
            position = offset
            while position < expected.size:
                data = await asyncio.to_thread(os.pread, handle.fileno(), self.chunk_bytes, position)
                if not data:
                    raise DataLossError(f"{what}: the server's copy ended early at byte {position}")
                yield Chunk(data, position, expected.size)
                position += len(data)
        finally:
            handle.close()
