"""The precision cache shared by two processes of one state directory (the agent and `models tune`): each
write holds the cache's lock file, so neither drops the other's entries."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from multiprocessing.synchronize import Barrier
from pathlib import Path

from facefleet.vision.models.manifest import ModelManifest
from facefleet.vision.models.store import ModelStore
from facefleet.vision.precision.cache import PrecisionCache, cache_path
from facefleet.vision.precision.choice import Choice

ENTRIES_PER_PROCESS = 40


def write_choices(path: Path, manifest_json: dict[str, object], who: str, start: Barrier) -> None:
    """One process: ENTRIES_PER_PROCESS choices for models of its own (ids who-0, who-1, …)."""
    cache = PrecisionCache(path)
    manifest = ModelManifest.from_json(manifest_json)
    start.wait()
    for index in range(ENTRIES_PER_PROCESS):
        model = replace(manifest, name=f"{who}-{index}")
        choice = Choice(model.task, model.model_id, "f32", "auto", "measured: f32 is the fastest")
        cache.put(choice, model, "CPU (test)", "2026.4")


def test_two_processes_writing_the_cache_keep_each_others_entries(
    model_store: ModelStore, tmp_path: Path
) -> None:
    path = cache_path(tmp_path)
    manifest = model_store.active("expression").manifest
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    writers = [
        spawn.Process(target=write_choices, args=(path, manifest.to_json(), who, start))
        for who in ("agent", "tune")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    kept = {entry["model_id"] for entry in json.loads(path.read_text(encoding="utf-8"))["choices"]}
    written = [f"{who}-{index}" for who in ("agent", "tune") for index in range(ENTRIES_PER_PROCESS)]
    assert kept == {f"{name}@{manifest.version}" for name in written}
    cache = PrecisionCache(path)
    some = replace(manifest, name="tune-7")
    found = cache.get(some, "CPU (test)", "2026.4")
    assert found is not None and found.model_id == some.model_id
