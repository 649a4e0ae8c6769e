"""facefleet-agent end to end: real models in a real state directory, real photos, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facefleet.agent.cli.main import main
from facefleet.vision.models.store import ModelStore


@pytest.fixture
def state_dir(model_store: ModelStore) -> Path:
    return model_store.root.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_analyze_json_describes_every_face(
    state_dir: Path, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "--state-dir",
        str(state_dir),
        "analyze",
        str(photo_paths["astronaut"]),
        str(photo_paths["t1"]),
        "--json",
    )
    assert code == 0
    report = json.loads(out)
    astronaut, group = report["images"]
    assert [len(astronaut["faces"]), len(group["faces"])] == [1, 6]
    face = astronaut["faces"][0]
    assert face["expression"]["label"] == "happy"
    assert set(face["landmarks_xy"]) == {"right_eye", "left_eye", "nose", "right_mouth", "left_mouth"}
    assert "embedding" not in face and face["embedding_model"] == "sface@2021dec"
    assert (astronaut["width"], astronaut["height"]) == (512, 512)


def test_analyze_reports_a_bad_image_and_still_analyses_the_rest(
    state_dir: Path, photo_paths: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    code, out, _ = run(
        capsys,
        "--state-dir",
        str(state_dir),
        "analyze",
        str(broken),
        str(photo_paths["astronaut"]),
        "--json",
        "--embeddings",
    )
    assert code == 65
    first, second = json.loads(out)["images"]
    assert "broken.jpg" in first["error"] and first["faces"] == []
    assert len(second["faces"][0]["embedding"]) == 128


def test_analyze_table_output(
    state_dir: Path, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--state-dir", str(state_dir), "analyze", str(photo_paths["astronaut"]))
    assert code == 0 and "1 face(s)" in out and "happy" in out


@pytest.mark.parametrize(
    "command", [["analyze"], ["enroll", "--person-id", "eileen"]], ids=["analyze", "enroll"]
)
def test_folders_without_images_exit_66_naming_them_and_the_suffixes_read(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    code, out, err = run(capsys, "--state-dir", str(state_dir), *command, str(empty), str(notes), "--json")
    assert code == 66 and out == ""
    assert f"{empty}, {notes}: no image files here" in err and ".jpg" in err and ".png" in err


def test_missing_device_exits_69(
    state_dir: Path, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "--state-dir", str(state_dir), "analyze", str(photo_paths["astronaut"]), "--device", "MYRIAD"
    )
    assert code == 69 and "MYRIAD is not available" in err


def test_empty_state_dir_says_to_import_models(
    tmp_path: Path, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--state-dir", str(tmp_path), "analyze", str(photo_paths["astronaut"]))
    assert code == 74 and "import-defaults" in err


def test_models_list_and_verify(state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--state-dir", str(state_dir), "models", "list", "--json")
    assert code == 0
    active = {m["task"]: m["name"] for m in json.loads(out) if m["active"]}
    assert active["detection"] == "yunet" and active["embedding"] == "sface"
    code, out, _ = run(capsys, "--state-dir", str(state_dir), "models", "verify", "--json")
    assert code == 0 and all(m["ok"] for m in json.loads(out)["models"])

    copy = tmp_path / "state"
    shutil.copytree(state_dir, copy)
    xml = next((copy / "models" / "detection").rglob("model.xml"))
    xml.write_text(xml.read_text().replace("cls_8", "cls_9", 1))
    code, out, _ = run(capsys, "--state-dir", str(copy), "models", "verify", "--json")
    assert code == 74
    failed = [m for m in json.loads(out)["models"] if not m["ok"]]
    assert [m["model"] for m in failed] == ["detection/yunet/2023mar"]
    assert "model.xml" in failed[0]["problems"][0]


def test_models_activate_json_prints_the_model_it_made_active(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "state"
    shutil.copytree(state_dir / "models", copy / "models")
    active = copy / "models" / "active.json"
    chosen = json.loads(active.read_text())
    name, version = chosen.pop("expression").split("/")
    active.write_text(json.dumps(chosen))  # no expression model active
    code, out, err = run(
        capsys, "--state-dir", str(copy), "models", "activate", "expression", name, version, "--json"
    )
    assert (code, err) == (0, "")
    model = json.loads(out)
    assert (model["task"], model["name"], model["version"], model["active"]) == (
        "expression",
        name,
        version,
        True,
    )
    assert model["runs_at"] and model["files"]
    assert json.loads(active.read_text())["expression"] == f"{name}/{version}"
    listed = run(capsys, "--state-dir", str(copy), "models", "list", "--json")[1]
    assert [m for m in json.loads(listed) if m["task"] == "expression" and m["active"]] == [model]
    code, out, _ = run(capsys, "--state-dir", str(copy), "models", "activate", "expression", name, version)
    assert (code, out.strip()) == (0, f"active expression model: expression/{name}/{version}")


def test_devices_lists_the_cpu(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--state-dir", str(state_dir), "devices", "--json")
    report = json.loads(out)
    assert code == 0 and "CPU" in report["devices"] and report["devices"]["CPU"]["FULL_DEVICE_NAME"]


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ('[runtime]\ndevice = "CPU"\ninference_precision = "bf16"\n', 0, "ok"),
        ("[runtime]\ndevcie = 'CPU'\n", 78, "unknown key 'runtime.devcie'"),
        ("[detector]\nscore_threshold = 1.5\n", 78, "'detector.score_threshold'"),
        ("[quality\n", 78, "not valid TOML"),
    ],
)
def test_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, code: int, message: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    got, out, err = run(capsys, "check-config", str(path))
    assert got == code and message in out + err


def test_check_config_json_shows_each_doors_threshold_and_where_it_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[matching]\ndoor_thresholds = { "arcface@r1" = 0.42 }\n\n'
        '[[cameras]]\nname = "cam"\nsource = "0"\n\n'
        '[[doors]]\nname = "front"\ncamera = "cam"\n\n'
        '[[doors]]\nname = "vault"\ncamera = "cam"\nthreshold = 0.6\nevidence_frames = 8\n'
    )
    code, out, err = run(capsys, "check-config", str(path), "--json")
    assert code == 0, err
    front, vault = json.loads(out)["doors"]
    assert (front["min_frames"], front["evidence_frames"], vault["evidence_frames"]) == (3, 5, 8)
    sface = front["effective_threshold"]["sface@2021dec"]
    assert sface["source"] == "built-in for sface@2021dec" and sface["threshold"] > 0.363
    assert sface["margin"] == pytest.approx(sface["threshold"] - sface["closest_impostor"], abs=1e-4)
    assert sface["margin"] > 0
    int8 = front["effective_threshold"]["sface@2021dec-int8"]
    assert int8["source"] == "built-in for sface@2021dec-int8" and int8["margin"] > 0
    arcface = front["effective_threshold"]["arcface@r1"]
    assert (arcface["threshold"], arcface["source"], arcface["margin"]) == (
        0.42,
        "matching.door_thresholds",
        None,
    )
    assert front["effective_threshold"]["*"]["source"] == "matching.door_default_threshold"
    assert {t["source"] for t in vault["effective_threshold"].values()} == {"doors.vault.threshold"}
    assert vault["effective_threshold"]["sface@2021dec"]["margin"] == pytest.approx(
        0.6 - sface["closest_impostor"], abs=1e-4
    )


@pytest.mark.slow
def test_console_script_runs(state_dir: Path, photo_paths: dict[str, Path]) -> None:
    script = Path(sys.executable).with_name("facefleet-agent")
    result = subprocess.run(
        [str(script), "--state-dir", str(state_dir), "analyze", str(photo_paths["astronaut"]), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["images"][0]["faces"]) == 1


def test_enroll_refuses_a_person_id_outside_the_id_rule(
    model_store: ModelStore,
    model_cache: Path,
    photo_paths: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    astronaut = str(photo_paths["astronaut"])
    code, _, err = run(capsys, "--state-dir", str(state), "enroll", "--person-id", "../../x", astronaut)
    assert code == 65
    assert "person id '../../x' is not valid: use 1–128 letters, digits" in err
    code, out, _ = run(capsys, "--state-dir", str(state), "people", "list", "--json")
    assert code == 0 and json.loads(out)["people"] == []


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (b"SQLite format 3\x00" + bytes(range(256)) * 64, 74, "is corrupt"),
        (b"definitely not sqlite" * 100, 65, "not a FaceFleet store"),
    ],
)
def test_store_problems_exit_with_the_codes_of_the_readme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, code: int, message: str
) -> None:
    (tmp_path / "agent.db").write_bytes(content)
    got, _, err = run(capsys, "--state-dir", str(tmp_path), "store", "check")
    assert got == code and message in err and "agent.db" in err
