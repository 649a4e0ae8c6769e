"""The precision cache shared by two processes of one state directory (the agent and `models tune`): each
write holds the cache's lock file, so neither drops the other's entries; and which INT8 variants a cached
choice still answers for."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from multiprocessing.synchronize import Barrier
from pathlib import Path

from facefleet.vision.models.manifest import ModelManifest
from facefleet.vision.models.store import ModelStore
from facefleet.vision.precision.cache import PrecisionCache, cache_path
from facefleet.vision.precision.choice import Choice, Measurement
from facefleet.vision.precision.guards import REFERENCE, GuardResult

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


def test_a_cached_choice_still_answers_once_a_variant_that_did_not_win_is_removed(
    model_store: ModelStore, tmp_path: Path
) -> None:
    """A variant refused by its guard leaves the store right after the measurement: the choice among the
    candidates left is the one measured, so a restart does not measure again. Not when the removed variant
    was the winner, nor when a variant is added or replaced."""
    cache = PrecisionCache(cache_path(tmp_path))
    manifest = model_store.active("embedding").manifest
    device, version, thresholds = "CPU (test)", "2026.4", (0.363, 0.5)
    refused, kept = {"bin": "b" * 64, "xml": "a" * 64}, {"bin": "d" * 64, "xml": "c" * 64}
    measurements = (
        Measurement("f32", "f32", None, 8.0, REFERENCE),
        Measurement("bf16", "bf16", None, 5.0, GuardResult(True, "passed")),
        Measurement("int8", "f32", "sface-int8-bad", 3.0, GuardResult(False, "cosine 0.91 < 0.985")),
        Measurement("int8", "f32", "sface-int8-ok", 6.0, GuardResult(True, "passed")),
    )
    bf16 = Choice("embedding", manifest.model_id, "bf16", "auto", "measured: bf16", None, measurements)
    both = {"sface-int8-bad": refused, "sface-int8-ok": kept}
    cache.put(bf16, manifest, device, version, thresholds, both)

    found = cache.get(manifest, device, version, thresholds, {"sface-int8-ok": kept})
    assert found is not None and (found.precision, found.variant) == ("bf16", None)
    assert [m.variant for m in found.measurements] == [None, None, "sface-int8-ok"]
    assert cache.get(manifest, device, version, thresholds, {}) is not None
    assert cache.get(manifest, device, version, thresholds, both) == bf16
    replaced = {"sface-int8-ok": {"bin": "f" * 64, "xml": "e" * 64}}
    assert cache.get(manifest, device, version, thresholds, replaced) is None
    added = {**both, "sface-int8-new": kept}
    assert cache.get(manifest, device, version, thresholds, added) is None
    assert cache.get(manifest, device, version, (0.363,), {}) is None

    int8 = replace(bf16, precision="f32", variant="sface-int8-ok", variant_files=tuple(sorted(kept.items())))
    cache.put(int8, manifest, device, version, thresholds, both)
    assert cache.get(manifest, device, version, thresholds, {"sface-int8-ok": kept}) is not None
    assert cache.get(manifest, device, version, thresholds, {}) is None  # the winner is gone
