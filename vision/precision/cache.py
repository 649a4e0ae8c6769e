"""<state_dir>/cache/precision.json: the auto choices measured, per (model id, sha256 of its files, device,
OpenVINO version, the decision thresholds an embedding model's guard checked, and the INT8 variants that
were candidates), so that a restart does not measure again. Another device or OpenVINO version, a model
re-imported under the same id with other files, a changed matching or door threshold, or an INT8 variant
added or replaced since is a miss (and so is an entry of an older format). A variant removed since is not,
unless it was the one chosen: the winner of the candidates then is the winner of the fewer candidates now
(a variant refused by its guard is removed right after the measurement that refused it)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facefleet.core.files import write_atomic
from facefleet.vision.models.manifest import ModelManifest
from facefleet.vision.precision.choice import Choice

log = logging.getLogger(__name__)
CACHE_NAME = "precision.json"
FORMAT_VERSION = 2
"""2: INT8 variants of embedding models are candidates too (a file of format 1 is measured again)."""


def cache_path(state_dir: Path) -> Path:
    """Where an agent keeps its choices: beside OpenVINO's model cache, <state_dir>/cache."""
    return state_dir / "cache" / CACHE_NAME


class PrecisionCache:
    """The measured choices in one JSON file: {"format": 2, "choices": [{model_id, files, device, openvino,
    choice}]}, files: the model's file name → sha256 (its manifest's). Shared by the processes of one state
    directory (the agent, `models tune`): a write holds an exclusive lock on a sibling file, <name>.lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def get(
        self,
        model: ModelManifest,
        device: str,
        openvino: str,
        thresholds: Sequence[float] = (),
        variants: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Choice | None:
        """The choice measured for this model (these very files) on this device and OpenVINO version, its
        guard at these decision thresholds (an embedding model's), with these INT8 variants (model id → its
        files' sha256 by name) among the candidates, or with more of them when none of the others won; or
        None. The measurements of variants no longer given are left out of the choice."""
        now = _sorted_variants(variants)
        for entry in self._entries():
            if (
                _model_of(entry) == (model.model_id, device, openvino)
                and _files_of(entry) == model.files
                and entry.get("thresholds", []) == sorted(set(thresholds))
            ):
                measured_with = entry.get("variants", {})
                if not isinstance(measured_with, dict) or any(
                    measured_with.get(model_id) != files for model_id, files in now.items()
                ):
                    return None
                try:
                    choice = Choice.from_json(entry["choice"])
                except (KeyError, TypeError, ValueError):
                    return None
                if choice.variant is not None and choice.variant not in now:
                    return None  # the variant that won is gone: measure again
                kept = tuple(m for m in choice.measurements if m.variant is None or m.variant in now)
                return dataclasses.replace(choice, measurements=kept)
        return None

    def put(
        self,
        choice: Choice,
        model: ModelManifest,
        device: str,
        openvino: str,
        thresholds: Sequence[float] = (),
        variants: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Record the choice for model on this device and OpenVINO version, guarded at these decision
        thresholds, measured with these INT8 variants among the candidates, replacing what was measured for
        its model id there before (with these files or others)."""
        if choice.model_id != model.model_id:
            raise ValueError(f"a choice for {choice.model_id} cannot be cached for {model.model_id}")
        key = (model.model_id, device, openvino)
        with self._lock, self._exclusive():
            entries = [e for e in self._entries() if _model_of(e) != key]
            entry = {
                "model_id": model.model_id,
                "files": dict(sorted(model.files.items())),
                "thresholds": sorted(set(thresholds)),
                "variants": _sorted_variants(variants),
            }
            entries.append({**entry, "device": device, "openvino": openvino, "choice": choice.to_json()})
            write_atomic(
                self.path, json.dumps({"format": FORMAT_VERSION, "choices": entries}, indent=2) + "\n"
            )

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the exclusive lock of <name>.lock (fcntl.flock; released when the file is closed), so the
        read-modify-write of another process does not drop this one's entries."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); precisions will be measured again", self.path, exc)
            return []
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            return []
        return [e for e in data.get("choices", []) if isinstance(e, dict)]


def _model_of(entry: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return entry.get("model_id"), entry.get("device"), entry.get("openvino")


def _sorted_variants(variants: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, str]]:
    """Variants as JSON keeps them: model id → {file name: sha256}, both sorted."""
    return {model_id: dict(sorted(files.items())) for model_id, files in sorted((variants or {}).items())}


def _files_of(entry: Mapping[str, Any]) -> dict[str, str] | None:
    files = entry.get("files")
    return files if isinstance(files, dict) else None
