"""Enrolment, identification, verification and calibration through facefleet-agent, on real photos."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facefleet.agent.cli.main import main
from facefleet.agent.config import load_config
from facefleet.agent.domain.records import Person, PersonUpsert
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.gallery import GalleryStore
from facefleet.vision.models.store import ModelStore


@pytest.fixture
def state_dir(model_store: ModelStore, model_cache: Path, tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    return state


def run(capsys: pytest.CaptureFixture[str], state_dir: Path, *argv: str) -> tuple[int, Any, str]:
    code = main(["--state-dir", str(state_dir), *argv])
    captured = capsys.readouterr()
    try:
        return code, json.loads(captured.out), captured.err
    except ValueError:
        return code, captured.out, captured.err


def save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def face_crops(group_photo: np.ndarray) -> list[np.ndarray]:
    """The six t1 faces, each cropped with a margin so one face fills the image."""
    boxes = [
        (750, 346, 845, 472),
        (462, 266, 576, 417),
        (1132, 274, 1228, 399),
        (899, 57, 1005, 197),
        (271, 147, 370, 276),
        (52, 266, 170, 400),
    ]
    crops = []
    for x1, y1, x2, y2 in boxes:
        pad_x, pad_y = (x2 - x1) // 2, (y2 - y1) // 2
        crops.append(
            np.ascontiguousarray(
                group_photo[max(0, y1 - pad_y) : y2 + pad_y, max(0, x1 - pad_x) : x2 + pad_x]
            )
        )
    return crops


@pytest.mark.slow
def test_enrol_then_identify_changed_photos_and_strangers(
    state_dir: Path,
    astronaut: np.ndarray,
    group_photo: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photo = save(tmp_path / "in" / "astronaut.png", astronaut)
    code, report, _ = run(
        capsys,
        state_dir,
        "enroll",
        "--person-id",
        "eileen",
        "--name",
        "Eileen C.",
        "--group",
        "crew",
        str(photo),
        "--json",
    )
    assert code == 0 and report["enrolled"] == 1 and report["gallery_revision"] == 1
    changed = {
        "flipped": np.ascontiguousarray(astronaut[:, ::-1]),
        "scaled": cv2.resize(astronaut, None, fx=0.6, fy=0.6),
        "cropped": np.ascontiguousarray(astronaut[30:260, 120:340]),
    }
    for name, image in changed.items():
        code, result, _ = run(
            capsys, state_dir, "identify", str(save(tmp_path / f"{name}.png", image)), "--json"
        )
        (face,) = result["faces"]
        assert face["decision"]["status"] == "match", name
        assert face["decision"]["person_id"] == "eileen"
    code, result, _ = run(
        capsys, state_dir, "identify", str(save(tmp_path / "group.jpg", group_photo)), "--json"
    )
    assert [f["decision"]["status"] for f in result["faces"]] == ["unknown"] * 6


def test_verify_accepts_the_right_claim_and_rejects_a_wrong_one(
    state_dir: Path,
    astronaut: np.ndarray,
    group_photo: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(capsys, state_dir, "enroll", "--person-id", "eileen", str(save(tmp_path / "a.png", astronaut)))
    flipped = save(tmp_path / "flipped.png", np.ascontiguousarray(astronaut[:, ::-1]))
    code, result, _ = run(capsys, state_dir, "verify", "--claim", "eileen", str(flipped), "--json")
    assert code == 0 and result["accepted"] is True
    stranger = save(tmp_path / "stranger.png", face_crops(group_photo)[0])
    code, result, _ = run(capsys, state_dir, "verify", "--claim", "eileen", str(stranger), "--json")
    assert code == 0 and result["accepted"] is False and "claim rejected" in result["decision"]["reason"]
    code, result, _ = run(capsys, state_dir, "verify", "--claim", "nobody", str(flipped), "--json")
    assert code == 0 and result["accepted"] is False and "not enrolled" in result["decision"]["reason"]


def test_two_near_people_are_ambiguous(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, state_dir, "enroll", "--person-id", "eileen", str(save(tmp_path / "a.png", astronaut)))
    twin = save(tmp_path / "twin.png", cv2.GaussianBlur(astronaut, (3, 3), 0))
    run(capsys, state_dir, "enroll", "--person-id", "eileen-twin", str(twin))
    code, result, _ = run(
        capsys, state_dir, "identify", str(save(tmp_path / "probe.jpg", astronaut[:, ::-1].copy())), "--json"
    )
    assert code == 0
    decision = result["faces"][0]["decision"]
    assert decision["status"] == "ambiguous" and decision["person_id"] is None
    assert decision["margin"] < 0.05


@pytest.mark.slow
def test_enrolment_lists_rejected_images_and_keeps_the_rest(
    state_dir: Path,
    astronaut: np.ndarray,
    group_photo: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "eileen"
    save(folder / "1-good.png", astronaut)
    save(folder / "2-empty.png", np.full((300, 300, 3), 90, np.uint8))
    save(folder / "3-group.jpg", group_photo)
    save(folder / "4-tiny.png", cv2.resize(astronaut, (96, 96)))
    save(folder / "5-blurred.png", cv2.GaussianBlur(astronaut, (31, 31), 12))
    (folder / "6-broken.jpg").write_bytes(b"\xff\xd8 nope")
    code, report, _ = run(capsys, state_dir, "enroll", "--person-id", "eileen", str(folder), "--json")
    assert code == 0 and report["enrolled"] == 1
    reasons = {Path(r["image"]).name: r["reason"] for r in report["rejected"]}
    assert "no face" in reasons["2-empty.png"]
    assert "6 faces found" in reasons["3-group.jpg"]
    assert "too small" in reasons["4-tiny.png"]
    assert "6-broken.jpg" in reasons["6-broken.jpg"]
    assert "5-blurred.png" in reasons  # blurred beyond the sharpness minimum, or no face found at all
    code, report, _ = run(
        capsys,
        state_dir,
        "enroll",
        "--person-id",
        "crowd",
        "--largest-face",
        str(folder / "3-group.jpg"),
        "--json",
    )
    assert code == 0 and report["enrolled"] == 1


def test_duplicate_person_id_is_refused_and_nothing_changes(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = save(tmp_path / "a.png", astronaut)
    run(capsys, state_dir, "enroll", "--person-id", "eileen", "--name", "Eileen", str(photo))
    code, _, err = run(capsys, state_dir, "enroll", "--person-id", "eileen", "--name", "Other", str(photo))
    assert code == 65 and "already enrolled" in err
    _, people, _ = run(capsys, state_dir, "people", "list", "--json")
    assert people["gallery_revision"] == 1
    assert people["people"] == [{"person_id": "eileen", "name": "Eileen", "groups": [], "embeddings": 1}]
    flipped = save(tmp_path / "flipped.png", np.ascontiguousarray(astronaut[:, ::-1]))
    code, report, _ = run(
        capsys, state_dir, "enroll", "--person-id", "eileen", "--add", str(flipped), "--json"
    )
    assert code == 0 and report["gallery_revision"] == 2  # one change, one revision
    _, shown, _ = run(capsys, state_dir, "people", "show", "eileen", "--json")
    assert len(shown["embeddings"]) == 2 and shown["embeddings"][0]["model_id"] == "sface@2021dec"


def test_adding_an_identical_sample_is_rejected_and_stores_nothing(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = save(tmp_path / "a.png", astronaut)
    run(capsys, state_dir, "enroll", "--person-id", "eileen", str(photo))
    code, out, _ = run(capsys, state_dir, "enroll", "--person-id", "eileen", "--add", str(photo))
    assert code == 65
    reason = "already enrolled: identical to a stored sample (enrol:a.png)"
    assert f"rejected {photo}: {reason}" in " ".join(out.split())  # rich wraps long lines
    _, shown, _ = run(capsys, state_dir, "people", "show", "eileen", "--json")
    assert len(shown["embeddings"]) == 1
    copy = save(tmp_path / "copy.png", astronaut)
    flipped = save(tmp_path / "flipped.png", np.ascontiguousarray(astronaut[:, ::-1]))
    again = save(tmp_path / "flipped-again.png", np.ascontiguousarray(astronaut[:, ::-1]))
    code, report, _ = run(
        capsys,
        state_dir,
        "enroll",
        "--person-id",
        "eileen",
        "--add",
        str(copy),
        str(flipped),
        str(again),
        "--json",
    )
    assert code == 0 and report["enrolled"] == 1
    assert report["rejected"] == [
        {"image": str(copy), "reason": reason},
        {"image": str(again), "reason": "identical to flipped.png, enrolled in this run"},
    ]
    _, shown, _ = run(capsys, state_dir, "people", "show", "eileen", "--json")
    assert [e["source"] for e in shown["embeddings"]] == ["enrol:a.png", "enrol:flipped.png"]


def test_people_delete_and_unknown_ids(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, state_dir, "enroll", "--person-id", "eileen", str(save(tmp_path / "a.png", astronaut)))
    code, result, _ = run(capsys, state_dir, "people", "delete", "eileen", "--json")
    assert code == 0 and result["deleted"] == "eileen"
    code, _, err = run(capsys, state_dir, "people", "delete", "eileen")
    assert code != 0 and "eileen" in err
    code, result, _ = run(capsys, state_dir, "identify", str(tmp_path / "a.png"), "--json")
    assert result["faces"][0]["decision"]["status"] == "unknown"


def test_a_file_that_is_not_a_store_is_refused_untouched(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (state_dir / "agent.db").write_bytes(b"definitely not sqlite" * 100)
    before = (state_dir / "agent.db").read_bytes()
    code, _, err = run(
        capsys, state_dir, "enroll", "--person-id", "eileen", str(save(tmp_path / "a.png", astronaut))
    )
    assert code == 65 and "not" in err and "agent.db" in err
    assert (state_dir / "agent.db").read_bytes() == before


def test_store_check(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, state_dir, "enroll", "--person-id", "eileen", str(save(tmp_path / "a.png", astronaut)))
    code, result, _ = run(capsys, state_dir, "store", "check", "--json")
    assert code == 0 and result["ok"] is True


@pytest.mark.slow
def test_calibrate_chooses_a_threshold_and_writes_it(
    state_dir: Path,
    astronaut: np.ndarray,
    group_photo: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    people = {"eileen": np.ascontiguousarray(astronaut[20:300, 100:380])} | {
        f"t1-{i}": crop for i, crop in enumerate(face_crops(group_photo))
    }
    folder = tmp_path / "people"
    for name, image in people.items():
        variants = [
            image,
            image[:, ::-1],
            cv2.resize(image, None, fx=1.4, fy=1.4),
            cv2.convertScaleAbs(image, alpha=1.15, beta=10),
        ]
        for index, variant in enumerate(variants):
            save(folder / name / f"{index}.png", np.ascontiguousarray(variant))
    config = tmp_path / "agent.toml"
    config.write_text("# site config\n[matching]\nambiguity_margin = 0.04\n")
    code = main(
        [
            "--config",
            str(config),
            "--state-dir",
            str(state_dir),
            "calibrate",
            str(folder),
            "--target-far",
            "0.01",
            "--write-config",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    # t1's fourth face is turned sideways: its photos are skipped with the reason, the other six people count
    assert code == 0 and report["people"] == 6
    skipped = {Path(s["image"]).parent.name for s in report["skipped"]}
    assert "t1-3" in skipped and report["samples"] == 28 - len(report["skipped"]) >= 20
    assert all("sideways" in s["reason"] for s in report["skipped"])
    best = report["by_scoring"]["best"]
    assert best["genuine"] == report["samples"] and best["impostor"] == report["samples"] * 5
    assert best["far"] <= 0.01 and best["frr"] < 0.2
    assert 0.2 < best["threshold"] < 0.9
    assert best["margin"] == pytest.approx(best["threshold"] - best["impostor_max"], abs=2e-4)
    # above every impostor exactly when none is accepted (margins are rounded: a tie at the top is 0.0)
    assert best["margin"] >= 0 if best["far"] == 0 else best["margin"] <= 0
    assert {k: report[k] for k in ("threshold", "far", "frr", "margin")} == {
        k: best[k] for k in ("threshold", "far", "frr", "margin")
    }  # the configured scoring's proposal
    assert report["separates_better"] in ("best", "template")
    written = load_config(config)
    assert written.matching.thresholds["sface@2021dec"] == pytest.approx(best["threshold"], abs=1e-4)
    assert written.matching.ambiguity_margin == 0.04
    assert config.read_text().startswith("# site config")
    code, out, _ = run(capsys, state_dir, "calibrate", str(folder), "--target-far", "0.01")
    text = " ".join(out.split())
    assert code == 0 and f"threshold {best['threshold']:.4f} for FAR ≤ 0.01" in text
    assert f"FAR {best['far']:.3%}, FRR {best['frr']:.3%}, margin {best['margin']:+.4f}" in text


def test_calibrate_needs_labelled_folders(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, state_dir, "calibrate", str(tmp_path / "empty"))
    assert code == 65 and "at least two people" in err
    code, _, err = run(capsys, state_dir, "calibrate", str(tmp_path / "people"), "--write-config")
    assert code == 78 and "--config" in err
    shutil.rmtree(tmp_path / "empty")


def test_a_missing_photo_exits_66_in_every_command(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.jpg")
    for argv in (("identify", missing), ("verify", "--claim", "eileen", missing), ("analyze", missing)):
        code, _, err = run(capsys, state_dir, *argv)
        assert (code, f"{missing}: no such file" in err) == (66, True), argv
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    code, _, _ = run(capsys, state_dir, "analyze", missing, str(broken))
    assert code == 65  # an unreadable image outweighs a missing one


def test_names_and_file_names_print_as_they_are(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = save(tmp_path / "[bold]eileen[/bold] [/x].png", astronaut)
    name = "Eileen [/x] C. :smile:"
    code, _, err = run(capsys, state_dir, "enroll", "--person-id", "eileen", "--name", name, str(photo))
    assert code == 0, err
    code, out, err = run(capsys, state_dir, "people", "list")
    assert (code, err) == (0, "")
    assert name in out
    code, out, err = run(capsys, state_dir, "analyze", str(photo))
    assert (code, err) == (0, "")
    assert f"{photo} (512×512): 1 face(s)" in out


def store_write_waiting(thread: threading.Thread) -> bool:
    """Whether the thread waits for the store's write lock in a gallery change (BEGIN IMMEDIATE)."""
    frame = sys._current_frames().get(thread.ident or 0)
    files = set()
    while frame is not None:
        files.add((Path(frame.f_code.co_filename).name, frame.f_code.co_name))
        frame = frame.f_back
    return ("connection.py", "write") in files and any(name == "gallery.py" for name, _ in files)


def test_of_two_enrolments_of_a_new_id_at_once_the_second_is_refused(
    state_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first holds the write lock with the person inserted when the second, which found no such
    person, comes to store its samples: the second is refused, and the first's person stays as it was."""
    photo = save(tmp_path / "a.png", astronaut)
    store = state_dir / "agent.db"
    EmbeddingStore(store).close()
    first = sqlite3.connect(store, isolation_level=None, check_same_thread=False)
    first.execute("BEGIN IMMEDIATE")
    GalleryStore.change_people(first, [PersonUpsert(Person("eileen", "First"))], [], whole_people=False)
    GalleryStore.bump(first)
    outcome: list[tuple[int, Any, str]] = []
    second = threading.Thread(
        target=lambda: outcome.append(
            run(capsys, state_dir, "enroll", "--person-id", "eileen", "--name", "Second", str(photo))
        )
    )
    second.start()
    try:
        while second.is_alive() and not store_write_waiting(second):
            time.sleep(0.01)
    finally:
        first.execute("COMMIT")
        first.close()
    second.join()
    ((code, _, err),) = outcome
    assert code == 65
    assert "person id 'eileen' is already enrolled; use --add for more samples" in err
    _, people, _ = run(capsys, state_dir, "people", "list", "--json")
    assert people["people"] == [{"person_id": "eileen", "name": "First", "groups": [], "embeddings": 0}]
    assert people["gallery_revision"] == 1


def test_verbs_that_read_or_remove_make_no_store_in_a_state_directory_that_has_none(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), np.zeros((64, 64, 3), np.uint8))
    for argv in (
        ("people", "list"),
        ("people", "show", "eileen"),
        ("people", "delete", "eileen"),
        ("store", "check"),
        ("identify", str(photo)),
        ("verify", "--claim", "eileen", str(photo)),
    ):
        code, _, err = run(capsys, state_dir, *argv)
        assert code == 74, argv
        assert f"no store at {state_dir / 'agent.db'}" in err and "check --state-dir" in err, argv
    assert not (state_dir / "agent.db").exists()
