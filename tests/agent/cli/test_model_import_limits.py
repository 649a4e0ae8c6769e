"""`facefleet-agent models import` converts in a child process held to [models] convert_memory_bytes: a
conversion bomb is refused with that setting named, the agent's store keeps what it held, and the CLI
process never holds the bomb's memory."""

from __future__ import annotations

import resource
import shutil
from pathlib import Path

import pytest

from facefleet.agent.cli.main import main
from facefleet.core.errors import EXIT_DATA
from facefleet.vision.models.store import ModelStore
from tests.vision.models.bombs import constant_bomb_onnx


def test_a_conversion_bomb_is_refused_by_models_import(
    model_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    shutil.copytree(model_store.root, state / "models")
    before = sorted(p.relative_to(state) for p in (state / "models").rglob("*"))
    config = tmp_path / "agent.toml"
    config.write_text("[models]\nconvert_memory_bytes = 1073741824\n")
    bomb = constant_bomb_onnx(tmp_path / "bomb.onnx", 30_000)  # 3.6 GB to convert
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    argv = ["--config", str(config), "--state-dir", str(state), "models", "import", str(bomb)]
    code = main([*argv, "--task", "embedding", "--name", "bomb", "--version", "v1"])
    err = capsys.readouterr().err
    assert code == EXIT_DATA, err
    assert "needs more memory than models.convert_memory_bytes (1073741824 bytes)" in " ".join(err.split())
    assert sorted(p.relative_to(state) for p in (state / "models").rglob("*")) == before
    assert ModelStore(state / "models").active("embedding").manifest.model_id == "sface@2021dec"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 512 * 1024  # the 3.6 GB were asked for in the child, not here
