"""OpenVINO's compiled-model cache kept per model: copies of a model share their blobs, and the blobs of a
model no longer stored anywhere (or compiled by another OpenVINO) go at the next runtime's start."""

from __future__ import annotations

import shutil
from pathlib import Path

from facefleet.vision.compiled_cache import COMPILED, SOURCE
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime, RuntimeSettings


def model_copy(model_store: ModelStore, task: str, folder: Path) -> Path:
    """The active model of task copied into folder (IR and weights); its .xml."""
    shutil.copytree(model_store.active(task).xml_path.parent, folder)
    return folder / "model.xml"


def cached(cache: Path) -> dict[str, list[str]]:
    """Folder name → the paths its SOURCE lists, for every model folder in the cache."""
    return {
        folder.name: (folder / SOURCE).read_text().splitlines()[1:]
        for folder in (cache / COMPILED).iterdir()
        if any(folder.glob("*.blob"))
    }


def test_a_models_blobs_are_kept_while_one_copy_is_stored_and_removed_after(
    model_store: ModelStore, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = model_copy(model_store, "expression", tmp_path / "a")
    second = model_copy(model_store, "expression", tmp_path / "b")
    detector = model_copy(model_store, "detection", tmp_path / "c")
    runtime = Runtime(RuntimeSettings(cache_dir=cache))
    for model in (first, second, detector):
        runtime.compile(model)
    folders = cached(cache)
    assert sorted(folders.values()) == [[str(first), str(second)], [str(detector)]]  # one folder a model
    expression = next(name for name, paths in folders.items() if str(first) in paths)
    (cache / "4267411342689807332.blob").write_bytes(b"from before folders per model")
    other = cache / COMPILED / "0123456789abcdef"
    other.mkdir()
    (other / SOURCE).write_text(f"2019.1.0\n{detector}\n")  # an older OpenVINO's

    shutil.rmtree(first.parent)
    Runtime(RuntimeSettings(cache_dir=cache))
    assert set(cached(cache)) == set(folders)  # the second copy still uses the expression blobs
    assert not (cache / "4267411342689807332.blob").exists() and not other.exists()

    shutil.rmtree(second.parent)
    removed = Runtime(RuntimeSettings(cache_dir=cache)).sweep_compiled_cache()
    assert removed == [] and set(cached(cache)) == set(folders) - {expression}


def test_a_model_changed_in_place_compiles_into_a_folder_of_its_own(
    model_store: ModelStore, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    model = model_copy(model_store, "expression", tmp_path / "a")
    runtime = Runtime(RuntimeSettings(cache_dir=cache))
    runtime.compile(model)
    shutil.copy(model_store.active("detection").xml_path.with_suffix(".bin"), model.with_suffix(".bin"))
    shutil.copy(model_store.active("detection").xml_path, model)
    runtime.compile(model)
    assert len(cached(cache)) == 2


def test_a_folder_swept_while_its_model_was_compiled_is_listed_again(
    model_store: ModelStore, tmp_path: Path
) -> None:
    """Another process's sweep removed the folder while OpenVINO wrote its blob, which made the folder again
    without SOURCE: the next compilation lists the model there, and the blob is kept."""
    cache = tmp_path / "cache"
    model = model_copy(model_store, "expression", tmp_path / "a")
    runtime = Runtime(RuntimeSettings(cache_dir=cache))
    runtime.compile(model)
    (folder,) = (cache / COMPILED).iterdir()
    (folder / SOURCE).unlink()
    runtime.compile(model)
    assert runtime.sweep_compiled_cache() == [] and cached(cache) == {folder.name: [str(model)]}
