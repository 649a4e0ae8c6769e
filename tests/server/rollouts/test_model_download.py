"""DownloadModel end to end: chunks reassemble to the catalogue's sha256, an interrupted download resumes from
an offset, and bad requests get the documented status codes (a tampered stored file: DATA_LOSS)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import grpc
import pytest

from facefleet.link.models import ModelFile
from facefleet.server.errors import DataLossError, OutOfRangeError
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.rollouts.files import ModelFiles
from facefleet.v1 import fleet_pb2
from facefleet.vision.runtime import Runtime
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.rollouts.test_model_rollout import NEW, publish_expression_models

CHUNK = 32 * 1024  # half of the 64 KiB message limit below


async def download(
    harness: Harness, file: str = "model.bin", offset: int = 0, **fields: str
) -> list[fleet_pb2.ModelChunk]:
    stub = harness.fleet(fields.get("device_id", "door-1"))
    request = fleet_pb2.DownloadModelRequest(
        device_id=fields.get("device_id", "door-1"),
        model_id=fields.get("model_id", NEW),
        file=file,
        offset=offset,
    )
    return [chunk async for chunk in stub.DownloadModel(request)]


async def failure(harness: Harness, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await download(harness, **kwargs)  # type: ignore[arg-type]
    return info.value.code(), info.value.details() or ""


def test_downloads_are_chunked_resumable_and_verified(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, listen={"max_message_bytes": 64 * 1024}) as harness:
            models = await publish_expression_models(harness, runtime, model_irs)
            await harness.registered("door-1")
            expected = {f.name: f for f in models[NEW].files}
            for name, entry in expected.items():
                chunks = await download(harness, name)
                data = b"".join(c.data for c in chunks)
                assert hashlib.sha256(data).hexdigest() == entry.sha256
                assert all(len(c.data) <= CHUNK and c.size == entry.size for c in chunks)
                assert [c.offset for c in chunks] == list(range(0, entry.size, CHUNK))
            whole = b"".join(c.data for c in await download(harness))
            resumed = await download(harness, offset=50_001)
            assert b"".join(c.data for c in resumed) == whole[50_001:]
            assert resumed[0].offset == 50_001
            [end] = await download(harness, offset=len(whole))
            assert (end.data, end.offset, end.size) == (b"", len(whole), len(whole))

            code, details = await failure(harness, offset=len(whole) + 1)
            assert code == grpc.StatusCode.OUT_OF_RANGE and "beyond the end" in details
            assert (await failure(harness, model_id="mini-xception@nope"))[0] == grpc.StatusCode.NOT_FOUND
            code, details = await failure(harness, file="manifest.json")
            assert code == grpc.StatusCode.NOT_FOUND and "model.bin, model.xml" in details
            assert (await failure(harness, model_id="no version"))[0] == grpc.StatusCode.INVALID_ARGUMENT
            assert (await failure(harness, file="../server.db"))[0] == grpc.StatusCode.NOT_FOUND
            code, _ = await failure(harness, device_id="door-2")
            assert code == grpc.StatusCode.FAILED_PRECONDITION

            stored = harness.server.catalog.file_path(models[NEW], "model.bin")
            tampered = bytearray(stored.read_bytes())
            tampered[1000] ^= 0xFF
            stat = stored.stat()
            stored.write_bytes(bytes(tampered))
            os.utime(stored, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            code, details = await failure(harness)
            assert code == grpc.StatusCode.DATA_LOSS and "sha256" in details
            # the other file of the release is still served
            assert len(await download(harness, "model.xml")) >= 1

            harness.server.catalog.retire(NEW)
            code, details = await failure(harness, file="model.xml")
            assert code == grpc.StatusCode.NOT_FOUND and "retired" in details

    run(scenario)


def test_a_file_is_hashed_once_per_size_and_modification_time(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    entry = ModelFile("model.bin", path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    files = ModelFiles(chunk_bytes=100_000)

    async def scenario() -> None:
        await asyncio.gather(*(files.verify(path, entry, "m@v/model.bin") for _ in range(50)))
        # the same size and modification time: the earlier check stands (no re-hash of unchanged files)
        stat = path.stat()
        path.write_bytes(b"\xff" + path.read_bytes()[1:])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        chunks = [c async for c in files.chunks(path, entry, 0, "m@v/model.bin")]
        assert [len(c.data) for c in chunks] == [100_000, 100_000, 56_000]
        # touched: checked again, and refused
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
        with pytest.raises(DataLossError, match=r"m@v/model\.bin: the server's copy fails its sha256 check"):
            await files.verify(path, entry, "m@v/model.bin")
        path.write_bytes(b"short")
        with pytest.raises(DataLossError, match="5 bytes, the catalogue says 256000"):
            await files.verify(path, entry, "m@v/model.bin")
        with pytest.raises(OutOfRangeError):
            [c async for c in files.chunks(path, entry, entry.size + 1, "m@v/model.bin")]
        path.unlink()
        with pytest.raises(DataLossError, match="copy is missing; publish the model again") as missing:
            await files.verify(path, entry, "m@v/model.bin")
        assert str(tmp_path) not in str(missing.value)  # agents are not told the server's paths

    asyncio.run(scenario())
