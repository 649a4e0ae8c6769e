"""Model store on disk: <root>/<task>/<name>/<version>/ holding model.xml, model.bin and manifest.json,
plus active.json naming the active version of each task, replaced atomically (write, fsync, rename)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from facefleet.core.files import fsync_dir, write_atomic
from facefleet.vision.errors import ModelIntegrityError, ModelStoreError
from facefleet.vision.models.manifest import MANIFEST_NAME, ModelManifest, check_part, sha256_file

ACTIVE_NAME = "active.json"
MODEL_XML = "model.xml"


@dataclass(frozen=True)
class StoredModel:
    """A model version in the store."""

    manifest: ModelManifest
    directory: Path

    @property
    def xml_path(self) -> Path:
        return self.directory / MODEL_XML


class ModelStore:
    """The models under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def staging_dir(self) -> Path:
        """A fresh directory inside the store to build a model in before add() moves it into place."""
        staging = self.root / ".staging"
        try:
            staging.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(dir=staging))
        except OSError as exc:
            raise ModelStoreError(
                f"model store {self.root}: cannot create {exc.filename or staging} ({exc.strerror}); make it "
                "writable for this user (under systemd outside StateDirectory=: ReadWritePaths= it), or "
                "choose another state directory"
            ) from None

    def add(self, staged: Path, manifest: ModelManifest) -> StoredModel:
        """Move a staged model directory into place with its manifest; identical re-adds are a no-op, also
        when another process (a replica sharing the store) puts the same version in place at the same time."""
        target = self._path(manifest.task, manifest.name, manifest.version)
        (staged / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync_tree(staged)
            try:
                os.replace(staged, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # another process moved the same version in place since the check: compare with it
            else:
                fsync_dir(target.parent)
                return StoredModel(manifest, target)
        existing = self.get(manifest.task, manifest.name, manifest.version)
        shutil.rmtree(staged, ignore_errors=True)
        if existing.manifest.files == manifest.files:
            return existing
        raise ModelStoreError(
            f"model {manifest.task}/{manifest.name}/{manifest.version} already exists with other files; "
            "import it under another --version"
        )

    def get(self, task: str, name: str, version: str) -> StoredModel:
        directory = self._path(task, name, version)
        manifest_path = directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ModelStoreError(f"no model {task}/{name}/{version} in {self.root}")
        return StoredModel(ModelManifest.load(manifest_path), directory)

    def models(self) -> list[StoredModel]:
        """Every stored model, sorted by task, name and version."""
        if not self.root.is_dir():
            return []
        found = [
            StoredModel(ModelManifest.load(path), path.parent)
            for path in self.root.glob(f"*/*/*/{MANIFEST_NAME}")
            if not any(part.startswith(".") for part in path.parts[-4:-1])
        ]
        return sorted(found, key=lambda m: (m.manifest.task, m.manifest.name, m.manifest.version))

    def active_map(self) -> dict[str, str]:
        """task → 'name/version' of the active model."""
        path = self.root / ACTIVE_NAME
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelStoreError(
                f"{path}: unreadable ({exc}); re-run `facefleet-agent models activate`"
            ) from None
        return {str(k): str(v) for k, v in data.items()}

    def active(self, task: str) -> StoredModel:
        """The active model of a task, or an error that says how to get one."""
        ref = self.active_map().get(task)
        if ref is None:
            raise ModelStoreError(
                f"no active {task} model in {self.root}; run `facefleet-agent models import-defaults`"
            )
        name, _, version = ref.partition("/")
        return self.get(task, name, version)

    def activate(self, task: str, name: str, version: str) -> StoredModel:
        """Make a stored version the active one of its task, atomically."""
        model = self.get(task, name, version)
        active = self.active_map()
        active[task] = f"{name}/{version}"
        write_atomic(self.root / ACTIVE_NAME, json.dumps(dict(sorted(active.items())), indent=2) + "\n")
        return model

    def verify_files(self, model: StoredModel) -> list[str]:
        """Problems with a model's files (missing, changed, unexpected), each naming the file."""
        return verify_files(model)

    def check(self, model: StoredModel) -> None:
        """Raise ModelIntegrityError when any file of the model fails verification."""
        check_model(model)

    def versions(self, task: str) -> list[StoredModel]:
        """The stored versions of a task, oldest first (by when they were added to this store)."""
        found = [m for m in self.models() if m.manifest.task == task]
        return sorted(found, key=lambda m: (m.directory.stat().st_mtime_ns, m.manifest.version))

    def remove(self, model: StoredModel) -> None:
        """Delete a stored version; the active one of its task is refused (ModelStoreError)."""
        ref = f"{model.manifest.name}/{model.manifest.version}"
        if self.active_map().get(model.manifest.task) == ref:
            raise ModelStoreError(f"model {model.manifest.task}/{ref} is active; activate another first")
        doomed = model.directory.with_name(f".removing-{model.directory.name}")
        os.replace(model.directory, doomed)  # gone from listings at once, even if the rmtree is cut short
        shutil.rmtree(doomed, ignore_errors=True)

    def clean_staging(self) -> None:
        """Remove what an interrupted import or download left in .staging (not .downloads: those resume)."""
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        for leftover in self.root.glob("*/*/.removing-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _path(self, task: str, name: str, version: str) -> Path:
        for label, value in (("task", task), ("name", name), ("version", version)):
            check_part(label, value)
        return self.root / task / name / version


def verify_files(model: StoredModel) -> list[str]:
    """Problems with a model's files (missing, changed), each naming the file."""
    problems = []
    for file_name, expected in sorted(model.manifest.files.items()):
        path = model.directory / file_name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{path}: sha256 differs from the manifest (file changed or corrupt)")
    return problems


def check_model(model: StoredModel) -> None:
    """Raise ModelIntegrityError when any file of the model fails verification, naming the fix."""
    problems = verify_files(model)
    if problems:
        raise ModelIntegrityError(f"{'; '.join(problems)}; {repair_hint(model)}")


def repair_hint(model: StoredModel) -> str:
    """What to do about a stored version whose files fail verification: run the version of its task stored
    before it (an INT8 variant is not one to activate), then remove this one's folder so that the updater
    fetches it again while the fleet server rolls it out, or import it again. A version staged outside the
    store's layout (<root>/<task>/<name>/<version>) only gets the removal."""
    task, name, version = model.manifest.task, model.manifest.name, model.manifest.version
    directory = model.directory
    again = (
        f"remove {directory} so that the updater fetches it again (while the fleet server rolls it out), or "
        "import it again (`facefleet-agent models import-defaults` for the bundled models)"
    )
    if directory.parts[-3:] != (task, name, version):
        return f"fix: {again}"
    try:
        versions = ModelStore(directory.parents[2]).versions(task)  # oldest first
    except (OSError, ModelStoreError, ValueError):  # another version's manifest is unreadable
        versions = []
    places = [m.directory for m in versions]
    mine = places.index(directory) if directory in places else len(places)
    others = [m for m in versions if m.directory != directory and not m.manifest.extra.get("quantized_from")]
    if not others:
        return f"fix: {again}; until then no other {task} model is stored here to run instead"
    before = [m for m in others if places.index(m.directory) < mine]
    previous = (before or others)[-1].manifest
    return (
        f"fix: `facefleet-agent models activate {task} {previous.name} {previous.version}` to run "
        f"{previous.model_id} instead, then {again}"
    )


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(directory)
