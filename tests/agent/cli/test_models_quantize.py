"""`facefleet-agent models quantize`: the INT8 version, its guard's figures (--json), --activate, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facefleet.agent.cli.main import main
from facefleet.agent.recognition.doors import DOOR_THRESHOLDS
from facefleet.core.errors import EXIT_DATA, EXIT_OK
from facefleet.vision.models.store import ModelStore
from tests.vision.models.test_quantize import photo_folder

pytestmark = pytest.mark.slow  # NNCF calibration and the guard: ~8 s a quantization


def test_the_cli_quantizes_prints_the_figures_and_activates(
    model_store: ModelStore, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(model_store.root, state / "models")
    photos = photo_folder(tmp_path / "photos", photo_paths)
    config = tmp_path / "agent.toml"  # a door decides at its own, stricter threshold
    config.write_text('[[cameras]]\nname = "cam"\nsource = "0"\n\n[[doors]]\nname = "front"\ncamera = "cam"')
    argv = ["--state-dir", str(state), "models", "quantize", "sface@2021dec", "--photos", str(photos)]
    options = ["--samples", "60", "--version", "2021dec-q60", "--activate", "--json"]
    code = main(["--config", str(config), *argv, *options])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    report = json.loads(out)
    assert report["model_id"] == "sface@2021dec-q60"
    assert report["quantized_from"] == "sface@2021dec"
    assert report["guard"]["passed"] is True
    assert report["guard"]["thresholds"] == [0.363, DOOR_THRESHOLDS["sface@2021dec"][0]]  # matching, door
    assert report["guard"]["calibration_samples"] == 60
    assert ModelStore(state / "models").active_map()["embedding"] == "sface/2021dec-q60"

    code = main([*argv, "--samples", "10", "--version", "2021dec-q10"])
    assert code == EXIT_OK
    assert "held-out samples" in capsys.readouterr().out

    code = main(["--state-dir", str(state), "models", "quantize", "yunet@2023mar", "--photos", str(photos)])
    assert code == EXIT_DATA
    assert "detection models stay in float" in capsys.readouterr().err
