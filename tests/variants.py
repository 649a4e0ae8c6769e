"""A stored model's files stored again as its INT8 variant, for tests of how variants are found, chosen,
checked and pruned (not of quantization: tests/vision/models/test_quantize.py quantizes for real)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from facefleet.vision.models.manifest import IN_PLACE_KEY, ModelManifest, sha256_file
from facefleet.vision.models.store import MODEL_XML, ModelStore, StoredModel


def store_variant_copy(
    store: ModelStore,
    source: StoredModel,
    version: str | None = None,
    *,
    ir: Path | None = None,
    in_place: bool = False,
) -> StoredModel:
    """source's IR (or ir: another IR's .xml, with its .bin) under version (default: its version + '-int8')
    with an INT8 variant's manifest: precision INT8, extra.quantized_from naming source, and source's IR as
    its source. in_place: as a server publishes one to run in source's place (`models quantize
    --in-place`), from another conversion of source's source file (another IR sha256)."""
    staged = store.staging_dir()
    for name in source.manifest.files:
        origin = source.directory / name if ir is None else ir.with_suffix(Path(name).suffix)
        shutil.copy(origin, staged / name)
    recorded: dict[str, Any] = source.manifest.to_json()
    extra: dict[str, Any] = {"quantized_from": source.manifest.model_id}
    if in_place:
        extra.update(
            {IN_PLACE_KEY: source.manifest.model_id, "quantized_from_source": source.manifest.source.sha256}
        )
    manifest = ModelManifest.from_json(
        {
            **recorded,
            "version": version or f"{source.manifest.version}-int8",
            "precision": "INT8",
            "files": {name: sha256_file(staged / name) for name in source.manifest.files},
            "source": {
                **recorded["source"],
                "sha256": "0" * 64 if in_place else source.manifest.files[MODEL_XML],
            },
            "extra": extra,
        }
    )
    return store.add(staged, manifest)
