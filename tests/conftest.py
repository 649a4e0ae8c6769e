"""Shared fixtures: the default models imported once per session into a temporary store, a runtime
pinned to f32 on CPU so numbers are reproducible, and the real sample photos from installed wheels;
`link_session_models` for state directories that use the session's models as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.vision.images import read_image
from facefleet.vision.models.importer import import_defaults
from facefleet.vision.models.store import ModelStore
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime, RuntimeSettings

SFACE_THRESHOLD = 0.363


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    return Runtime(RuntimeSettings(device="CPU", inference_precision="f32"))


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("state") / "models")
    import_defaults(runtime, store)
    return store


def link_session_models(state: Path, model_store: ModelStore) -> Path:
    """Make `state` a state directory that links to the session's default models and to the cache of
    their compiled forms (`<state_dir>/cache`), so each model compiles once per session instead of once per
    test. Only for tests that leave the models as they are: one that imports or activates needs a copy."""
    cache = model_store.root.parent / "cache"
    cache.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(cache, target_is_directory=True)
    return state


@pytest.fixture(scope="session")
def analyzer(runtime: Runtime, model_store: ModelStore) -> FaceAnalyzer:
    return FaceAnalyzer(runtime, model_store)


@pytest.fixture(scope="session")
def astronaut() -> npt.NDArray[np.uint8]:
    return read_image(sample_photo("astronaut"))


@pytest.fixture(scope="session")
def group_photo() -> npt.NDArray[np.uint8]:
    return read_image(sample_photo("t1"))


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, Path]:
    return {"astronaut": sample_photo("astronaut"), "t1": sample_photo("t1")}
