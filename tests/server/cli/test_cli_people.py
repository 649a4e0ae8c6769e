"""`facefleet-server people …` and `unknown …` on the server host: real enrolment from photos with the real
models, unknown faces reported with snapshots clustered, enrolled and dismissed; every change audited."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_NO_INPUT, EXIT_OK
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from tests.server.cli.test_cli import run_cli
from tests.server.gallery.test_unknown_faces import Seen, face_event, strangers  # noqa: F401


@pytest.fixture
def state_dir(tmp_path: Path, model_store: ModelStore, model_cache: Path) -> Path:
    """A server state directory holding the session's imported models."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    SqliteState(state / "server.db").close()  # as `models import-defaults` leaves it
    return state


def test_people_are_enrolled_listed_updated_and_deleted(
    state_dir: Path, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--state-dir", str(state_dir), "people"]
    code, out, err = run_cli(
        capsys,
        *base,
        "enroll",
        "eileen",
        "--image",
        str(photo_paths["astronaut"]),
        "--name",
        "Eileen",
        "--group",
        "crew",
    )
    assert code == EXIT_OK, err
    assert "eileen: 1 embeddings, gallery revision 1" in out
    code, _, err = run_cli(capsys, *base, "enroll", "crowd", "--image", str(photo_paths["t1"]))
    assert code == EXIT_DATA
    assert "image 't1.jpg': 5 faces are good enough" in err
    code, _, err = run_cli(capsys, *base, "enroll", "eileen", "--image", str(photo_paths["astronaut"]))
    assert code == EXIT_DATA
    assert "already enrolled" in err
    code, _, err = run_cli(capsys, *base, "enroll", "x", "--image", str(state_dir / "missing.jpg"))
    assert code == EXIT_NO_INPUT

    code, out, _ = run_cli(capsys, *base, "list", "--json")
    (person,) = json.loads(out)
    assert (person["person_id"], person["display_name"], person["groups"]) == ("eileen", "Eileen", ["crew"])
    assert person["embeddings"] == []  # listings leave them out
    code, out, _ = run_cli(capsys, *base, "update", "eileen", "--group", "staff", "--group", "crew", "--json")
    assert json.loads(out)["groups"] == ["staff", "crew"]
    code, out, _ = run_cli(capsys, *base, "show", "eileen", "--json")
    shown = json.loads(out)
    assert shown["stored_crops"] == 1
    embeddings = shown["person"]["embeddings"]
    assert [(e["model_id"], e["source"]) for e in embeddings] == [("sface@2021dec", "image:0")]
    code, out, _ = run_cli(capsys, *base, "list")
    assert "eileen" in out and "Eileen" in out
    assert run_cli(capsys, *base, "delete", "eileen")[0] == EXIT_OK
    assert run_cli(capsys, *base, "show", "eileen")[0] == EXIT_NO_INPUT

    code, out, _ = run_cli(
        capsys, "--state-dir", str(state_dir), "audit", "list", "--action", "people", "--json"
    )
    assert [(e["action"], e["outcome"]) for e in json.loads(out)] == [
        ("people.delete", "ok"),
        ("people.update", "ok"),
        ("people.enrol", "ALREADY_EXISTS"),
        ("people.enrol", "INVALID_ARGUMENT"),
        ("people.enrol", "ok"),
    ]


def test_unknown_faces_are_reviewed_and_enrolled_from_the_command_line(
    state_dir: Path,
    strangers: list[tuple[Seen, Seen]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    analyzer: FaceAnalyzer,
    group_photo: npt.NDArray[np.uint8],
) -> None:
    from datetime import timedelta

    from facefleet.link.checks import utc_now

    start = utc_now() - timedelta(minutes=5)
    events = [
        face_event(seen, start + timedelta(seconds=10 * person + view))
        for person, pair in enumerate(strangers[:2])
        for view, seen in enumerate(pair)
    ]
    state = SqliteState(state_dir / "server.db")
    state.add_events(events)
    state.close()
    base = ["--state-dir", str(state_dir), "unknown"]
    code, out, _ = run_cli(capsys, *base, "list", "--json")
    assert code == EXIT_OK
    assert [(c["cluster_id"], c["count"]) for c in json.loads(out)] == [
        (events[2].event_id, 2),
        (events[0].event_id, 2),
    ]
    versions = {c["cluster_id"]: c["version"] for c in json.loads(out)}
    code, out, _ = run_cli(capsys, *base, "list")
    assert events[0].event_id in out  # ids are never cut, however narrow the terminal

    saved = state_dir / "review"
    code, out, _ = run_cli(capsys, *base, "show", events[0].event_id, "--save", str(saved))
    assert code == EXIT_OK
    assert sorted(p.stem for p in saved.iterdir()) == sorted(e.event_id for e in events[:2])

    code, out, err = run_cli(
        capsys,
        *base,
        "enroll",
        events[0].event_id,
        "--version",
        versions[events[0].event_id],
        "--person-id",
        "visitor-1",
        "--json",
    )
    assert code == EXIT_OK, err
    enrolled = json.loads(out)
    assert enrolled["person"]["person_id"] == "visitor-1"
    assert len(enrolled["person"]["embeddings"]) == 2
    dismissed = versions[events[2].event_id]
    assert run_cli(capsys, *base, "dismiss", events[2].event_id, "--version", dismissed)[0] == EXIT_OK
    code, out, _ = run_cli(capsys, *base, "list")
    assert "no unknown faces to review" in out
    code, _, err = run_cli(
        capsys, *base, "enroll", events[2].event_id, "--version", dismissed, "--person-id", "late"
    )
    assert code == EXIT_NO_INPUT
    assert "list the clusters again" in err
