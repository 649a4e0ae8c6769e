"""AdminService's model and rollout calls: receive a model upload into a temporary directory of the state
directory and publish it; list and retire models; start, change, list and show rollouts through the running
server's RolloutControl, so that every change reaches the watching agents at once.

Conversion, re-embedding and the database run in worker threads (they block); the event loop only moves
bytes. An upload's temporary files are removed whatever happens; directories left by a killed server are
removed when the next one starts.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Literal

from facefleet.core.errors import FaceFleetError
from facefleet.link.checks import MAX_LABEL_CHARS, check_model_id, check_task, check_text
from facefleet.server.domain.models import (
    DeviceRollout,
    DeviceState,
    FailureAction,
    MaxFailures,
    PublishedModel,
    Rollout,
    Target,
)
from facefleet.server.errors import (
    InvalidArgumentError,
    ResourceExhaustedError,
    ServerError,
    StateError,
    UnavailableError,
    disk_full,
    is_disk_full,
)
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.control import RolloutControl, StartedRollout
from facefleet.vision.models.importer import PRECISIONS
from facefleet.vision.models.manifest import check_part
from facefleet.vision.runtime import Runtime

CONVERTED = (".onnx", ".tflite")
RolloutAction = Literal["pause", "resume", "rollback"]
ROLLOUT_ACTIONS: tuple[RolloutAction, ...] = ("pause", "resume", "rollback")


def check_file_name(name: str) -> str:
    """A bare file name for an uploaded model file; refuses paths, '.' and '..'."""
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise InvalidArgumentError(
            f"file name {name[:80]!r} has path parts; give the bare file name, e.g. 'emotion.tflite'"
        )
    allowed = name[:1].isalnum() and all(c.isalnum() or c in "._+-" for c in name)
    if not allowed or not name.isascii() or len(name) > MAX_LABEL_CHARS:
        raise InvalidArgumentError(
            f"file name {name[:80]!r} is not valid: use 1–{MAX_LABEL_CHARS} ASCII letters, digits, '.', '_', "
            "'+' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class UploadHeader:
    """What an upload is (task, name, version, precision, licence) and its files: one ONNX or TFLite file,
    or an OpenVINO IR pair NAME.xml + NAME.bin."""

    task: str
    name: str
    version: str
    precision: str
    licence: str
    files: tuple[str, ...]

    def __post_init__(self) -> None:
        check_task(self.task)
        for label, value in (("name", self.name), ("version", self.version)):
            try:
                check_part(label, value)
            except FaceFleetError as exc:
                raise InvalidArgumentError(str(exc)) from None
        if self.precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        check_text("licence", self.licence, MAX_LABEL_CHARS)
        for name in self.files:
            check_file_name(name)
        if len(set(self.files)) != len(self.files):
            raise InvalidArgumentError(f"files: {', '.join(self.files)} names a file twice")
        source_file(self.files)

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def source(self) -> str:
        """The file the catalogue imports (the .xml of an IR pair)."""
        return source_file(self.files)


def source_file(files: tuple[str, ...]) -> str:
    """Of an upload's files, the one to import; InvalidArgumentError unless they form one model."""
    suffixes = sorted(Path(f).suffix.lower() for f in files)
    if len(files) == 1 and suffixes[0] in CONVERTED:
        return files[0]
    if suffixes == [".bin", ".xml"] and len({Path(f).stem for f in files}) == 1:
        return next(f for f in files if f.lower().endswith(".xml"))
    raise InvalidArgumentError(
        "files: announce one .onnx or .tflite file, or an OpenVINO IR pair NAME.xml + NAME.bin "
        f"(got {', '.join(files) or 'none'})"
    )


@dataclass(frozen=True)
class UploadChunk:
    """Bytes of one announced file, appended to what came before."""

    file: str
    data: bytes


UploadPart = UploadHeader | UploadChunk


class ModelAdmin:
    """The handler behind AdminService's model and rollout calls.

    catalog: the running server's catalogue (no runtime needed to list or retire); uploads: where uploads
    are received (emptied now: anything there is left over from a killed server); runtime: builds the
    converter and embedder on first use; control: the running server's RolloutControl for a runtime;
    changed: publishes catalogue changes to the Watch streams."""

    def __init__(
        self,
        catalog: ModelCatalog,
        uploads: Path,
        max_upload_bytes: int,
        *,
        runtime: Callable[[], Runtime],
        control: Callable[[Runtime | None], RolloutControl],
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self.catalog = catalog
        self.uploads = uploads
        self.max_upload_bytes = max_upload_bytes
        self.runtime = runtime
        self.control = control
        self.changed = changed
        self._converting = threading.Lock()
        shutil.rmtree(uploads, ignore_errors=True)

    # -- models --------------------------------------------------------------------------------------

    async def publish(
        self, parts: AsyncIterator[UploadPart], *, still_allowed: Callable[[], object] = lambda: None
    ) -> PublishedModel:
        """Receive an upload (header, then chunks) and publish it; its temporary files are removed.
        still_allowed: raises when the caller may no longer publish (its token revoked while the upload came
        in); asked once all of it is in, before anything is converted or stored."""
        directory = await asyncio.to_thread(self._new_upload_dir)
        started = threading.Event()
        try:
            header = await self._receive(parts, directory)
            still_allowed()
            model = await asyncio.to_thread(self._publish_received, header, directory, started)
        finally:
            if not started.is_set():  # otherwise the worker thread removes it when it is done
                await asyncio.to_thread(shutil.rmtree, directory, True)
        await self.changed()
        return model

    def _new_upload_dir(self) -> Path:
        try:
            self.uploads.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="upload-", dir=self.uploads))
        except OSError as exc:
            raise _storage_error(self.uploads, exc) from None

    async def _receive(self, parts: AsyncIterator[UploadPart], directory: Path) -> UploadHeader:
        header: UploadHeader | None = None
        sizes: dict[str, int] = {}
        handles: dict[str, BinaryIO] = {}
        total = 0
        try:
            async for part in parts:
                if isinstance(part, UploadHeader):
                    if header is not None:
                        raise InvalidArgumentError(
                            "a second header; send the header once, as the first message"
                        )
                    header = part
                    sizes = dict.fromkeys(part.files, 0)
                    continue
                if header is None:
                    raise InvalidArgumentError(
                        "the first message must be the header (task, name, version, files), not a chunk"
                    )
                if part.file not in sizes:
                    raise InvalidArgumentError(
                        f"a chunk of {part.file[:80]!r}, which the header did not announce "
                        f"(announced: {', '.join(sizes)})"
                    )
                total += len(part.data)
                if total > self.max_upload_bytes:
                    raise ResourceExhaustedError(
                        f"upload of {header.model_id} exceeds the server's models.max_upload_bytes "
                        f"({self.max_upload_bytes} bytes); nothing was stored"
                    )
                if part.file not in handles:
                    handles[part.file] = await asyncio.to_thread(_open_new, directory / part.file)
                await asyncio.to_thread(handles[part.file].write, part.data)
                sizes[part.file] += len(part.data)
        except OSError as exc:
            raise _storage_error(self.uploads, exc) from None
        finally:
            for handle in handles.values():
                handle.close()
        if header is None:
            raise InvalidArgumentError(
                "empty upload: send a header (task, name, version, files), then chunks"
            )
        missing = [name for name, size in sizes.items() if size == 0]
        if missing:
            raise InvalidArgumentError(
                f"announced file(s) {', '.join(missing)} of {header.model_id} were not sent (no bytes)"
            )
        return header

    def _publish_received(
        self, header: UploadHeader, directory: Path, started: threading.Event
    ) -> PublishedModel:
        started.set()
        try:
            catalog = ModelCatalog(
                self.catalog.state, self.catalog.store, self.runtime(), self.catalog.limits
            )
            if not self._converting.acquire(blocking=False):  # one at a time, and no thread left waiting
                raise UnavailableError(
                    f"another model is being converted; publish {header.model_id} again when it is done "
                    f"(a conversion takes at most models.convert_timeout_s); nothing was stored"
                )
            try:
                return catalog.publish(
                    directory / header.source,
                    header.task,
                    header.name,
                    header.version,
                    header.precision,
                    header.licence,
                )
            finally:
                self._converting.release()
        except ServerError as exc:
            # the temporary directory means nothing to the caller: name the file as they sent it
            message = str(exc).replace(f"{directory}/", "")
            if message == str(exc):
                raise
            raise type(exc)(message) from None
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    async def models(self, task: str = "") -> list[PublishedModel]:
        """Published models (retired ones too), by task then id; only `task`'s when given."""
        if task:
            check_task(task)
        found = await asyncio.to_thread(self.catalog.published)
        return [m for m in found if not task or m.task == task]

    async def retire(self, model_id: str) -> PublishedModel:
        check_model_id(model_id)
        model = await asyncio.to_thread(self.catalog.retire, model_id)
        await self.changed()
        return model

    # -- rollouts ------------------------------------------------------------------------------------

    async def start(
        self,
        model_id: str,
        target: Target,
        max_failures: MaxFailures | None = None,
        on_failures: FailureAction = "pause",
    ) -> StartedRollout:
        """Start a rollout; for an embedding model this waits for the gallery to be re-embedded."""
        check_model_id(model_id)
        model = await asyncio.to_thread(self.catalog.show, model_id)
        runtime = await asyncio.to_thread(self.runtime) if model.task == "embedding" else None
        start = partial(self.control(runtime).start, max_failures=max_failures, on_failures=on_failures)
        return await asyncio.to_thread(start, model_id, target)

    async def change(self, rollout_id: int, action: RolloutAction, percent: int | None = None) -> Rollout:
        if action not in ROLLOUT_ACTIONS:
            raise InvalidArgumentError(f"action must be one of {', '.join(ROLLOUT_ACTIONS)}")
        if percent is not None and action != "resume":
            raise InvalidArgumentError(f"percent applies only to resume, not to {action}")
        control = self.control(None)
        if action == "pause":
            return await asyncio.to_thread(control.pause, rollout_id)
        if action == "resume":
            return await asyncio.to_thread(control.resume, rollout_id, percent)
        return await asyncio.to_thread(control.rollback, rollout_id)

    async def rollouts(self) -> list[Rollout]:
        """Every rollout, newest first."""
        return await asyncio.to_thread(self.control(None).all_rollouts)

    async def rollout(self, rollout_id: int) -> tuple[Rollout, list[DeviceRollout]]:
        return await asyncio.to_thread(self.control(None).show, rollout_id)

    async def rollouts_counted(self, counted: int) -> list[tuple[Rollout, dict[DeviceState, int] | None]]:
        """Every rollout, newest first, each with its agents per state for the newest `counted` (None past
        them): what a list of rollouts shows of their progress, in one call."""

        control = self.control(None)

        def read() -> list[tuple[Rollout, dict[DeviceState, int] | None]]:
            listed = control.all_rollouts()
            counts = control.state.models.rollout_state_counts([r.rollout_id for r in listed[:counted]])
            return [(r, counts.get(r.rollout_id)) for r in listed]

        return await asyncio.to_thread(read)


def _open_new(path: Path) -> BinaryIO:
    return path.open("xb")


def _storage_error(where: Path, exc: OSError) -> ServerError:
    if is_disk_full(exc):
        return disk_full("upload directory", where)
    return StateError(f"cannot write the upload into {where}: {exc.strerror}")
