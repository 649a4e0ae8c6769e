"""manifest.json: what a stored model is, where it came from, and the sha256 of each of its files."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facefleet.vision.errors import ModelStoreError
from facefleet.vision.runtime import TensorSpec

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
IN_PLACE_KEY = "runs_in_place_of"
"""Manifest extra of an INT8 variant published to run in its float model's place (`models quantize
--in-place` on a server): the float model's id. Its rollout keeps the agents' float model, its id and its
gallery, and adds the variant to what they measure; without it an INT8 version is a model of its own."""
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class Source:
    """Where a model file came from: a package (name, version) and the file's path and sha256 in it; for an
    OpenVINO IR, path and sha256 are its .xml's and weights_sha256 is its .bin's."""

    path: str
    sha256: str
    package: str | None = None
    package_version: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class ModelManifest:
    """A stored model. files: file name → sha256 hex; precision: weight precision of the IR (FP16, FP32)."""

    task: str
    name: str
    version: str
    files: dict[str, str]
    source: Source
    licence: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, value in (("task", self.task), ("name", self.name), ("version", self.version)):
            check_part(label, value)

    @property
    def model_id(self) -> str:
        """Short identity used wherever results must name the model, e.g. 'sface@2021dec'."""
        return f"{self.name}@{self.version}"

    @property
    def runs_in_place_of(self) -> str | None:
        """The float model id this variant was published to run in the place of (IN_PLACE_KEY), or None."""
        value = self.extra.get(IN_PLACE_KEY)
        return value if isinstance(value, str) and value else None

    def to_json(self) -> dict[str, Any]:
        source: dict[str, Any] = {
            "path": self.source.path,
            "sha256": self.source.sha256,
            "package": self.source.package,
            "package_version": self.source.package_version,
        }
        if self.source.weights_sha256 is not None:
            source["weights_sha256"] = self.source.weights_sha256
        return {
            "format": FORMAT_VERSION,
            "task": self.task,
            "name": self.name,
            "version": self.version,
            "files": dict(sorted(self.files.items())),
            "source": source,
            "licence": self.licence,
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
            "precision": self.precision,
            "created_at": self.created_at,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelManifest:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported manifest format {data.get('format')!r}")
        source = data["source"]
        return cls(
            task=data["task"],
            name=data["name"],
            version=data["version"],
            files={str(k): str(v) for k, v in data["files"].items()},
            source=Source(
                path=source["path"],
                sha256=source["sha256"],
                package=source.get("package"),
                package_version=source.get("package_version"),
                weights_sha256=source.get("weights_sha256"),
            ),
            licence=data["licence"],
            inputs=tuple(TensorSpec.from_json(s) for s in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(s) for s in data["outputs"]),
            precision=data["precision"],
            created_at=data["created_at"],
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def load(cls, path: Path) -> ModelManifest:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(f"{path}: unreadable model manifest ({exc})") from None


def check_part(label: str, value: str) -> None:
    """A task, name or version becomes a folder name: letters, digits and . _ + - only."""
    if not _SAFE_PART.fullmatch(value):
        raise ModelStoreError(
            f"model {label} '{value}' is not allowed: use 1–64 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
