"""Converting a model in a child process held to limits: the same IR as converting here, and a conversion
bomb (2 KB that build gigabytes) or a conversion that takes too long is refused with the
setting to change, without harm to this process and with nothing stored."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from facefleet.vision.errors import ConversionLimitError, ModelSpecError
from facefleet.vision.models.conversion import ConversionLimits
from facefleet.vision.models.importer import import_model
from facefleet.vision.models.manifest import sha256_file
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime
from tests.vision.models.bombs import (
    batch_bomb_ir,
    broadcast_bomb_ir,
    constant_bomb_onnx,
    loop_onnx,
    upscale_bomb_onnx,
)
from tests.vision.models.test_model_store import default_path

LIMITS = ConversionLimits(1 << 30, 120, "models.convert_memory_bytes", "models.convert_timeout_s")
"""1 GiB: SFace needs about 300 MiB in the child; each bomb below wants gigabytes."""


def stored_files(store: ModelStore) -> list[Path]:
    return sorted(p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file())


def generic_names(xml: Path) -> str:
    """An IR's graph with OpenVINO's numbered node names (Constant_5498: a counter of the process)
    numbered alike."""
    return re.sub(r"_\d+", "_N", xml.read_text(encoding="utf-8"))


def test_a_model_converted_in_a_child_is_the_one_converted_here(runtime: Runtime, tmp_path: Path) -> None:
    source = default_path("embedding")  # block-quantised weights: folded first, in the child too
    here = import_model(
        runtime, ModelStore(tmp_path / "here"), source, task="embedding", name="s", version="1"
    )
    child_store = ModelStore(tmp_path / "child")
    there = import_model(runtime, child_store, source, task="embedding", name="s", version="1", limits=LIMITS)
    assert (there.manifest.inputs, there.manifest.outputs) == (here.manifest.inputs, here.manifest.outputs)
    assert sha256_file(there.directory / "model.bin") == sha256_file(here.directory / "model.bin")
    assert generic_names(there.xml_path) == generic_names(here.xml_path)
    assert child_store.verify_files(there) == []


BOMBS = {".onnx": constant_bomb_onnx, ".xml": broadcast_bomb_ir}
"""The bombs by the suffix of their files: the ONNX folds its tensor when converted, the IR when compiled
(n = 30000: 3.6 GB)."""


@pytest.mark.parametrize("suffix", sorted(BOMBS))
def test_a_model_bomb_is_stopped_by_the_memory_limit_and_nothing_is_stored(
    suffix: str, runtime: Runtime, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    small = BOMBS[suffix](tmp_path / f"small{suffix}", 100)
    kept = import_model(runtime, store, small, task="embedding", name="m", version="small", limits=LIMITS)
    before = stored_files(store)
    bomb = BOMBS[suffix](tmp_path / f"bomb{suffix}", 30_000)
    assert sum(p.stat().st_size for p in tmp_path.glob("bomb.*")) < 8192
    with pytest.raises(ConversionLimitError) as refused:
        import_model(runtime, store, bomb, task="embedding", name="m", version="bomb", limits=LIMITS)
    message = str(refused.value)
    assert "needs more memory than models.convert_memory_bytes (1073741824 bytes)" in message
    assert "nothing was stored" in message
    assert stored_files(store) == before
    assert [m.manifest.version for m in store.models()] == ["small"]
    assert store.active("embedding").manifest.model_id == kept.manifest.model_id


def test_a_conversion_that_takes_too_long_is_stopped(runtime: Runtime, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    limits = ConversionLimits(1 << 30, 0.05, "models.convert_memory_bytes", "models.convert_timeout_s")
    with pytest.raises(ConversionLimitError, match=r"longer than models\.convert_timeout_s \(0\.05 s\)"):
        import_model(
            runtime, store, default_path("embedding"), task="embedding", name="s", version="1", limits=limits
        )
    assert stored_files(store) == []


def test_a_model_the_child_cannot_convert_is_a_model_spec_error(runtime: Runtime, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(default_path("embedding").read_bytes()[:5000])
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelSpecError, match=r"broken\.onnx: "):
        import_model(runtime, store, broken, task="embedding", name="b", version="1", limits=LIMITS)
    assert stored_files(store) == []


@pytest.mark.parametrize(
    ("make", "refusal", "said"),
    [
        (
            lambda path: batch_bomb_ir(path / "batch.xml", 30_000),
            ModelSpecError,
            "takes its output size from a tensor computed at run time",
        ),
        (lambda path: loop_onnx(path / "loop.onnx", 10**12), ModelSpecError, "uses control flow (Loop"),
        (
            lambda path: upscale_bomb_onnx(path / "upscale.onnx", 200.0),
            ConversionLimitError,
            "needs more memory than models.convert_memory_bytes",
        ),
    ],
    ids=["size-from-the-batch", "loop", "memory-taken-when-run"],
)
def test_models_that_would_grow_or_run_without_bound_later_are_refused(
    make: Callable[[Path], Path], refusal: type[Exception], said: str, runtime: Runtime, tmp_path: Path
) -> None:
    """Each converts and compiles in no time at the shape it declares: the first takes n² floats per face
    of a batch, the second loops 10¹² times, the third takes 6 GB only when it runs."""
    store = ModelStore(tmp_path / "models")
    with pytest.raises(refusal) as refused:
        import_model(runtime, store, make(tmp_path), task="embedding", name="m", version="1", limits=LIMITS)
    assert said in " ".join(str(refused.value).split())
    assert stored_files(store) == []


def test_a_model_that_grows_by_a_constant_factor_within_the_limit_is_taken(
    runtime: Runtime, tmp_path: Path
) -> None:
    model = upscale_bomb_onnx(tmp_path / "upscale.onnx", 2.0)
    stored = import_model(
        runtime,
        ModelStore(tmp_path / "models"),
        model,
        task="embedding",
        name="m",
        version="1",
        limits=LIMITS,
    )
    assert stored.manifest.outputs[0].shape == (1, 128)
