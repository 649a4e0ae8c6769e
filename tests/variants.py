"""A stored model's files stored again as its INT8 variant, for tests of how variants are found, chosen,
checked and pruned (not of quantization: tests/vision/models/test_quantize.py quantizes for real)."""

from __future__ import annotations

import shutil
from typing import Any

from facefleet.vision.models.manifest import ModelManifest, sha256_file
from facefleet.vision.models.store import MODEL_XML, ModelStore, StoredModel


def store_variant_copy(store: ModelStore, source: StoredModel, version: str | None = None) -> StoredModel:
    """source's IR under version (default: its version + '-int8') with an INT8 variant's manifest:
    precision INT8, extra.quantized_from naming source, and source's IR as its source."""
    staged = store.staging_dir()
    for name in source.manifest.files:
        shutil.copy(source.directory / name, staged / name)
    recorded: dict[str, Any] = source.manifest.to_json()
    manifest = ModelManifest.from_json(
        {
            **recorded,
            "version": version or f"{source.manifest.version}-int8",
            "precision": "INT8",
            "files": {name: sha256_file(staged / name) for name in source.manifest.files},
            "source": {**recorded["source"], "sha256": source.manifest.files[MODEL_XML]},
            "extra": {"quantized_from": source.manifest.model_id},
        }
    )
    return store.add(staged, manifest)
