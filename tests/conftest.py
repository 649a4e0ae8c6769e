"""Shared fixtures: the default models imported once per session into a temporary store, a runtime
pinned to f32 on CPU so numbers are reproducible, the cache of those models compiled, the real sample
photos from installed wheels, and command output as wide as a pipe's whatever $COLUMNS the shell has."""

from __future__ import annotations

from collections.abc import Iterator
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
from tests.postgres import PostgresCluster

SFACE_THRESHOLD = 0.363


@pytest.fixture(autouse=True)
def piped_output_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Command output captured by a test goes to a pipe, which is 200 columns wide unless $COLUMNS says
    otherwise: a COLUMNS the developer's shell or a test runner exported would wrap the tables the tests
    read, so tests start without it (those about the width set it themselves)."""
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    return Runtime(RuntimeSettings(device="CPU", inference_precision="f32"))


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("state") / "models")
    import_defaults(runtime, store)
    return store


@pytest.fixture(scope="session")
def model_cache(model_store: ModelStore) -> Path:
    """OpenVINO's cache of compiled models, where an agent keeps it (`<state_dir>/cache`) next to the
    session's models. Agents and CLI runs on links or copies of those models that use it compile each model
    once per session instead of once per test."""
    cache = model_store.root.parent / "cache"
    cache.mkdir(exist_ok=True)
    return cache


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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL server for the session (tests.postgres); each test makes its own database."""
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
