"""`facefleet-agent models import-defaults`: the default models, then an INT8 variant of the embedding
model built on site on the bundled photos (once), which the agent may run in the float model's place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from facefleet.agent.cli import models as models_cli
from facefleet.agent.cli.main import main
from facefleet.core.errors import EXIT_OK
from facefleet.vision.models.store import ModelStore


def import_defaults(
    state: Path, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[dict[str, dict[str, Any]], str]:
    """Run the command; the embedding models it lists by version, and its stderr."""
    code = main(["--state-dir", str(state), "models", "import-defaults", "--json", *options])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    listed = {m["version"]: m for m in json.loads(captured.out) if m["task"] == "embedding"}
    return listed, captured.err


def int8_models(state: Path) -> list[str]:
    stored = ModelStore(state / "models").models()
    return [m.manifest.model_id for m in stored if m.manifest.precision == "INT8"]


@pytest.fixture
def state(model_store: ModelStore, tmp_path: Path) -> Path:
    """A state directory holding a copy of the session's float models (what the command adds stays here)."""
    state = tmp_path / "state"
    shutil.copytree(model_store.root, state / "models")
    return state


@pytest.mark.slow  # NNCF calibration and the guard: ~10 s
def test_the_int8_variant_is_built_once_beside_the_active_float_model(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    listed, err = import_defaults(state, capsys)
    variant = listed["2021dec-int8-local"]
    assert variant["precision"] == "INT8" and variant["active"] is False
    assert variant["extra"]["quantized_from"] == "sface@2021dec"
    assert variant["extra"]["quantization"]["guard"]["passed"] is True
    assert listed["2021dec"]["active"] is True
    assert "built sface@2021dec-int8-local" in err and "runs it in sface@2021dec's place" in err

    again, err = import_defaults(state, capsys)
    assert "built" not in err and again["2021dec-int8-local"]["files"] == variant["files"]
    assert int8_models(state) == ["sface@2021dec-int8-local"]
    monkeypatch.delenv("COLUMNS", raising=False)  # into a pipe, tables are wide enough for every column
    assert main(["--state-dir", str(state), "models", "list"]) == EXIT_OK
    assert "variant of sface@2021dec" in capsys.readouterr().out


def test_no_int8_or_no_nncf_leaves_the_float_models_alone_and_says_how_to_get_it(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    listed, err = import_defaults(state, capsys, "--no-int8")
    assert set(listed) == {"2021dec"} and err == ""
    monkeypatch.setattr(models_cli, "quantizer_installed", lambda: False)  # NNCF is an optional extra
    listed, err = import_defaults(state, capsys)
    assert set(listed) == {"2021dec"}
    assert "NNCF is not installed" in err and "pip install 'facefleet[quantize]'" in err
    assert int8_models(state) == []
