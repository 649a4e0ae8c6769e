"""The model versions an agent keeps on disk for rollouts: which stored copy serves a release, installing a
verified download as one version, removing refused and surplus versions, and the INT8 variants a rollout
delivered to run in a float model's place."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from facefleet.agent.updates.download import DISK_FULL_ERRNOS, DiskFullError
from facefleet.link.models import ModelRelease
from facefleet.vision.errors import ModelIntegrityError, ModelStoreError
from facefleet.vision.models.manifest import MANIFEST_NAME, ModelManifest, sha256_file
from facefleet.vision.models.quantize import PRECISION as INT8
from facefleet.vision.models.store import ModelStore, StoredModel

log = logging.getLogger(__name__)


class StoredVersions:
    """The rollout side of an agent's model store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def stored(self, release: ModelRelease) -> StoredModel | None:
        """The stored version the release names, whatever its files, or None."""
        name, version = release.name_version
        try:
            return self.store.get(release.task, name, version)
        except ModelStoreError:
            return None

    def by_id(self, task: str, model_id: str) -> StoredModel | None:
        """The stored task model with this id ('name@version'), or None."""
        return next((m for m in self.store.versions(task) if m.manifest.model_id == model_id), None)

    def copy_for(self, release: ModelRelease) -> StoredModel | None:
        """The stored version when its files are the release's, when the release brings none, or when it is
        this agent's own conversion of the same source model at the same precision (OpenVINO versions
        write different IR bytes for the same model, e.g. for the defaults both sides import); None: it is
        to be downloaded."""
        stored = self.stored(release)
        if stored is None:
            if not release.files:
                raise ModelStoreError(
                    f"model {release.model_id} is not stored on this agent and the server sent no files; "
                    "publish it on the server and roll it out again"
                )
            return None
        wanted = {f.name: f.sha256 for f in release.files}
        if release.files and stored.manifest.files != wanted:
            theirs = release_manifest(release)
            ours = stored.manifest
            own_conversion = (ours.source.sha256, ours.precision) == (theirs.source.sha256, theirs.precision)
            if own_conversion and ours.precision != INT8:  # an INT8 model is its calibration's, not the IR's
                log.info("model %s: using this agent's own conversion of the same source", release.model_id)
                return stored
            raise ModelIntegrityError(
                f"model {release.model_id} is stored on this agent with other files than the release; "
                "publish the new files under another version"
            )
        return stored

    def install(self, manifest: ModelManifest, files: dict[str, Path]) -> StoredModel:
        """Move verified downloads (file name → path) into the store as one version, atomically."""
        staged: Path | None = None
        try:
            staged = self.store.staging_dir()
            for name, path in files.items():
                shutil.move(path, staged / name)
                if sha256_file(staged / name) != manifest.files[name]:
                    raise ModelIntegrityError(f"{name}: changed while it was installed")
            return self.store.add(staged, manifest)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(
                    f"disk full while installing model {manifest.model_id} in {self.store.root} "
                    f"({exc.strerror}); free space or lower [models] keep_versions"
                ) from None
            raise
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)

    def discard(self, model: StoredModel) -> None:
        """Remove a refused version (never the active one)."""
        if (
            self.store.active_map().get(model.manifest.task)
            != f"{model.manifest.name}/{model.manifest.version}"
        ):
            self.store.remove(model)

    def forget_downloads(self, keep: set[str]) -> None:
        """Remove partial downloads of versions no longer assigned (a rollback during a download)."""
        for part in (self.store.root / ".downloads").glob("*.part"):
            if part.stem not in keep:
                part.unlink(missing_ok=True)

    def delivered_variants(self, task: str, model_id: str | None) -> list[StoredModel]:
        """The variants a rollout delivered to run in model_id's place (not those built on this agent)."""
        if model_id is None:
            return []
        return [m for m in self.store.versions(task) if m.manifest.runs_in_place_of == model_id]

    def prune(self, task: str, keep_versions: int, protect: str | None = None) -> list[str]:
        """Remove the oldest stored versions of task beyond keep_versions (at least 2), never the active one
        nor `protect` (the version that ran before the switch: the rollback target); the model ids
        removed. An INT8 variant of a stored model (extra.quantized_from) is not a version of its own: it
        goes with its float model."""
        versions = self.store.versions(task)
        active = self.store.active_map().get(task)
        stored = {m.manifest.model_id for m in versions}

        def kept(m: StoredModel) -> bool:
            return f"{m.manifest.name}/{m.manifest.version}" == active or m.manifest.model_id == protect

        variants = [m for m in versions if m.manifest.extra.get("quantized_from") in stored and not kept(m)]
        counted = [m for m in versions if m not in variants]
        surplus = len(counted) - max(2, keep_versions)
        removed = []
        for model in [m for m in counted if not kept(m)][: max(0, surplus)]:
            model_id = model.manifest.model_id
            own = [v for v in variants if v.manifest.extra["quantized_from"] == model_id]
            for doomed in [model, *own]:
                self.store.remove(doomed)
                removed.append(doomed.manifest.model_id)
                log.info("model %s (%s) removed (keep_versions)", doomed.manifest.model_id, task)
        return removed


def release_manifest(release: ModelRelease) -> ModelManifest:
    """The release's manifest, checked to describe exactly this release."""
    try:
        manifest = ModelManifest.from_json(json.loads(release.manifest_json))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelIntegrityError(
            f"model {release.model_id}: unreadable manifest in the release ({exc})"
        ) from None
    files = {f.name: f.sha256 for f in release.files}
    if (manifest.task, manifest.model_id) != (release.task, release.model_id) or manifest.files != files:
        raise ModelIntegrityError(
            f"model {release.model_id}: the release's manifest describes {manifest.task} model "
            f"{manifest.model_id} with other files; the server's catalogue is inconsistent"
        )
    if MANIFEST_NAME in files:
        raise ModelIntegrityError(f"model {release.model_id}: the release lists its manifest as a file")
    return manifest
