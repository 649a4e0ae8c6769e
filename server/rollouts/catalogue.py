"""The catalogue of model versions the server can roll out: publish (convert with the agents' own importer
into the server's model store, then record files, sizes, sha256 and manifest), list, show, retire.

A model id ("name@version") is unique across tasks. Publishing the same source again is a no-op; another
file under a published id is refused. A model that does not fit its task is refused before anything is
stored (the importer converts into a staging directory and checks the model's inputs and outputs first).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from facefleet.core.errors import FaceFleetError
from facefleet.link.checks import MAX_LABEL_CHARS, check_task, check_text, utc_now
from facefleet.link.models import ModelFile
from facefleet.server.domain.models import PublishedModel
from facefleet.server.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    disk_full,
    is_disk_full,
)
from facefleet.server.state.models import ModelState
from facefleet.vision.errors import ConversionLimitError, ModelSpecError, StorageFullError
from facefleet.vision.models.conversion import ConversionLimits
from facefleet.vision.models.importer import MODEL_SUFFIXES, PRECISIONS, import_model
from facefleet.vision.models.manifest import MANIFEST_NAME, check_part
from facefleet.vision.models.store import MODEL_XML, ModelStore, StoredModel
from facefleet.vision.runtime import Runtime


class ModelCatalog:
    """Published models: their records in `state` and their files in `store` (the server's model store).
    runtime: converts models on publish (not needed to list, show, retire or serve downloads); limits: a
    published file is converted in a child process held to them (None: in this process)."""

    def __init__(
        self,
        state: ModelState,
        store: ModelStore,
        runtime: Runtime | None = None,
        limits: ConversionLimits | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.runtime = runtime
        self.limits = limits

    def publish(
        self,
        path: Path,
        task: str,
        name: str,
        version: str,
        precision: str = "FP16",
        licence: str = "unknown",
        now: datetime | None = None,
    ) -> PublishedModel:
        """Convert and store a model file (.onnx/.tflite, or an IR's .xml with its .bin beside it) or a
        directory holding model.xml (+ model.bin) or exactly one model file; record it in the catalogue and
        return the record."""
        check_task(task)
        for label, value in (("name", name), ("version", version)):
            try:
                check_part(label, value)
            except FaceFleetError as exc:
                raise InvalidArgumentError(str(exc)) from None
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        check_text("licence", licence, MAX_LABEL_CHARS)
        if self.runtime is None:
            raise FailedPreconditionError("publishing a model needs an inference runtime to convert it")
        source = model_source(path)
        model_id = f"{name}@{version}"
        try:
            existing: PublishedModel | None = self.state.get_model(model_id)
        except NotFoundError:
            existing = None
        if existing is not None and existing.task != task:
            raise AlreadyExistsError(
                f"model id {model_id} is already published for task {existing.task}; model ids are unique "
                "across tasks: choose another --name or --version"
            )
        try:
            stored = import_model(
                self.runtime,
                self.store,
                source,
                task=task,
                name=name,
                version=version,
                licence=licence,
                precision=precision,
                activate=False,
                limits=self.limits,
            )
        except ModelSpecError as exc:
            raise InvalidArgumentError(f"cannot publish {model_id}: {exc}") from None
        except ConversionLimitError as exc:
            raise ResourceExhaustedError(f"cannot publish {model_id}: {exc}") from None
        except StorageFullError:
            raise disk_full("model store", self.store.root) from None
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full("model store", self.store.root) from None
            raise
        except FaceFleetError as exc:
            if "already exists with other files" in str(exc):
                raise AlreadyExistsError(
                    f"model {model_id} is already published with other files; publish this one under "
                    "another --version"
                ) from None
            raise
        return self.record(stored, now)

    def record(self, stored: StoredModel, now: datetime | None = None) -> PublishedModel:
        """Record a model already in the store (e.g. the defaults) in the catalogue; idempotent."""
        manifest = stored.manifest
        files = tuple(
            ModelFile(file_name, (stored.directory / file_name).stat().st_size, sha256)
            for file_name, sha256 in sorted(manifest.files.items())
        )
        return self.state.add_model(
            PublishedModel(
                model_id=manifest.model_id,
                task=manifest.task,
                precision=manifest.precision,
                licence=manifest.licence[:MAX_LABEL_CHARS],
                files=files,
                manifest_json=(stored.directory / MANIFEST_NAME).read_text(encoding="utf-8"),
                published_at=now or utc_now(),
            )
        )

    def record_all(self, models: Sequence[StoredModel]) -> list[PublishedModel]:
        return [self.record(model) for model in models]

    def published(self) -> list[PublishedModel]:
        """Every published model (retired ones too), by task then id."""
        return self.state.list_models()

    def show(self, model_id: str) -> PublishedModel:
        return self.state.get_model(model_id)

    def retire(self, model_id: str, now: datetime | None = None) -> PublishedModel:
        return self.state.retire_model(model_id, now or utc_now())

    def stored(self, model: PublishedModel) -> StoredModel:
        """The store's copy of a published model (ModelStoreError when it has vanished)."""
        return self.store.get(model.task, model.name, model.version)

    def file_path(self, model: PublishedModel, file_name: str) -> Path:
        """Where a file of a published model lives in the store (the name must be one of its files)."""
        if model.file(file_name) is None:
            raise NotFoundError(f"model {model.model_id} has no file {file_name[:80]!r}")
        return self.store.root / model.task / model.name / model.version / file_name


def model_source(path: Path) -> Path:
    """The file to import: path itself, or in a directory its model.xml, else its one model file."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise InvalidArgumentError(f"{path}: no such model file or directory")
    if (path / MODEL_XML).is_file():
        return path / MODEL_XML
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise InvalidArgumentError(
            f"{path}: a model directory must hold model.xml (+ model.bin) or exactly one model file "
            f"({', '.join(MODEL_SUFFIXES)}); found {listed}: give the file itself"
        )
    return found[0]
