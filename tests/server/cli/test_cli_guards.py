"""The server command line on the server host: stored text printed as it is, no state database made up in
a mistyped --state-dir, host-only verbs refusing --server, usage errors as exit 2 on stderr, event pages
that say when they are cut, and photo files read no further than their limit."""

from __future__ import annotations

import argparse
import json
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_IO, EXIT_NO_INPUT, EXIT_OK, EXIT_USAGE
from facefleet.link.checks import utc_now
from facefleet.link.events import Event
from facefleet.link.gallery import Person
from facefleet.server.cli.main import build_parser
from facefleet.server.domain.audit import AuditEntry
from facefleet.server.domain.records import Crop
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.state.sqlite.state import SqliteState
from tests.server.cli.test_cli import run_cli

MARKUP_NAME = "Eileen [/x] C. [bold]:smile:"


def test_stored_text_is_printed_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = SqliteState(tmp_path / "server.db")
    now = utc_now()
    state.add_person(Person("eileen", MARKUP_NAME, ("[red]crew",)), [], now)
    refused = InvalidArgumentError("display name [/x] refused")
    state.add_audit(AuditEntry.of(now, "ops", "people.update", "eileen", refused))
    state.close()
    base = ["--state-dir", str(tmp_path)]
    code, out, err = run_cli(capsys, *base, "people", "list")
    assert (code, err) == (EXIT_OK, "")
    assert MARKUP_NAME in out and "[red]crew" in out
    code, out, err = run_cli(capsys, *base, "audit", "list")
    assert (code, err) == (EXIT_OK, "")
    assert "display name [/x] refused" in out


def test_a_state_dir_without_a_database_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo"
    for argv in (
        ("people", "list"),
        ("devices", "list"),
        ("audit", "list"),
        ("query", "fleet"),
        ("tokens", "list"),
        ("models", "list"),
    ):
        code, out, err = run_cli(capsys, "--state-dir", str(typo), *argv)
        assert (code, out) == (EXIT_IO, ""), argv
        assert f"no state database at {typo / 'server.db'}: check --state-dir" in err, argv
    assert not typo.exists()
    hint = " ".join(err.split())  # as wrapped to the terminal's width
    starters = sorted(verbs_that_create_the_state(build_parser()))
    assert "certs init" in starters and "models publish" in starters
    assert all(f"`{verb}" in hint or f"`facefleet-server {verb}" in hint for verb in starters), hint
    code, out, _ = run_cli(capsys, "--state-dir", str(typo), "tokens", "create", "ops", "--role", "admin")
    assert code == EXIT_OK
    assert (typo / "server.db").is_file()
    assert run_cli(capsys, "--state-dir", str(typo), "people", "list")[0] == EXIT_OK


def verbs_that_create_the_state(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> set[str]:
    """The verbs (as typed after the program's name) whose parser sets creates_state."""
    found = {" ".join(words)} if parser.get_default("creates_state") else set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= verbs_that_create_the_state(sub, (*words, name))
    return found


def test_host_only_verbs_refuse_a_remote_server_as_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--state-dir", str(tmp_path / "client")]
    server = ["--server", "https://fleet.example.org:7445"]
    for argv in (
        ("tokens", "create", "ops", "--role", "admin"),
        ("tokens", "list"),
        ("tokens", "revoke", "ops"),
        ("certs", "init"),
        ("certs", "issue", "door-1"),
        ("certs", "renew", "door-1"),
        ("certs", "server", "--server-name", "x"),
        ("backup", str(tmp_path / "copy")),
        ("restore", str(tmp_path / "copy")),
        ("state", "migrate", "--to", "postgresql://ops@db:5432/facefleet"),
        ("models", "import-defaults"),
        ("models", "quantize", "sface@2021dec"),
        ("serve",),
    ):
        code, out, err = run_cli(capsys, *base, *server, *argv)
        assert (code, out) == (EXIT_USAGE, ""), argv
        verb = " ".join(argv[:1] if argv[0] in ("backup", "restore") else argv[:2])
        assert f"{verb} works on the server host's own state directory, never through --server" in err, argv
    monkeypatch.setenv("FACEFLEET_SERVER", "https://fleet.example.org:7445")
    for argv in (("tokens", "create", "ops", "--role", "admin"), ("backup", str(tmp_path / "copy"))):
        code, _, err = run_cli(capsys, *base, *argv)
        assert code == EXIT_USAGE, argv
        assert "without --server (and without $FACEFLEET_SERVER)" in err, argv
    assert not (tmp_path / "client").exists() and not (tmp_path / "copy").exists()


def test_usage_errors_exit_2_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SqliteState(tmp_path / "server.db").close()
    base = ["--state-dir", str(tmp_path)]
    for argv, expected in (
        (("query", "events", "--since", "yesterday"), "--since 'yesterday' is neither a duration"),
        (("query", "access", "--until", "noon"), "--until 'noon' is neither a duration"),
        (("query", "events", "--since", "999999999d"), "--since '999999999d' reaches back before the year 1"),
        (("query", "counts", "--interval", "1x", "--json"), "--interval '1x' is not a duration"),
        (("query", "counts", "--interval", "0h"), "--interval '0h' is not a duration"),
        (("query", "events", "--limit", "0"), "--limit 0: give 1–1000 events a page"),
        (("query", "events", "--limit", "1001", "--json"), "--limit 1001: give 1–1000"),
        (("audit", "list", "--since", "yesterday"), "--since 'yesterday' is neither a duration"),
        (("audit", "list", "--limit", "0"), "--limit 0: give 1–1000 entries"),
    ):
        code, out, err = run_cli(capsys, *base, *argv)
        assert (code, out) == (EXIT_USAGE, ""), argv
        assert expected in err, argv


def test_events_past_the_limit_are_paged_and_the_cut_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = SqliteState(tmp_path / "server.db")
    now = utc_now()
    events = [
        Event(str(uuid.uuid4()), "door-1", now - timedelta(minutes=i), "face", "unknown", camera="hall")
        for i in range(5)
    ]
    state.add_events(events)
    state.close()
    base = ["--state-dir", str(tmp_path), "query", "events", "--since", "1h"]
    newest_first = [e.event_id for e in events]
    code, out, err = run_cli(capsys, *base, "--limit", "2", "--json")
    assert (code, [e["event_id"] for e in json.loads(out)]) == (EXIT_OK, newest_first[:2])
    assert "more events than --limit 2: the next page with --page-token " in err
    token = err.split("--page-token ")[1].split(",")[0]
    code, out, err = run_cli(capsys, *base, "--limit", "2", "--page-token", token, "--json")
    assert [e["event_id"] for e in json.loads(out)] == newest_first[2:4]
    code, out, err = run_cli(capsys, *base, "--limit", "2", "--all", "--json")
    assert ([e["event_id"] for e in json.loads(out)], err) == (newest_first, "")
    code, out, err = run_cli(capsys, *base, "--limit", "5")
    assert (code, err) == (EXIT_OK, "")


def test_people_list_json_counts_the_kept_crops_as_the_api_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = SqliteState(tmp_path / "server.db")
    crops = [Crop("png", b"crop-1", "enrol:a.png"), Crop("png", b"crop-2", "enrol:b.png")]
    state.add_person(Person("eileen"), crops, utc_now())
    state.add_person(Person("ada"), [], utc_now())
    state.close()
    code, out, _ = run_cli(capsys, "--state-dir", str(tmp_path), "people", "list", "--json")
    assert code == EXIT_OK
    assert {p["person_id"]: p["stored_crops"] for p in json.loads(out)} == {"ada": 0, "eileen": 2}


def test_a_photo_is_read_no_further_than_its_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SqliteState(tmp_path / "server.db").close()
    config = tmp_path / "server.toml"
    config.write_text("[gallery]\nmax_image_bytes = 4096\n")
    big = tmp_path / "big.jpg"
    with big.open("wb") as file:
        file.truncate(40 * 2**20)  # sparse: 40 MiB that take no disk
    base = ["--config", str(config), "--state-dir", str(tmp_path), "people", "enroll", "eileen", "--image"]
    code, out, err = run_cli(capsys, *base, str(big))
    assert (code, out) == (EXIT_DATA, "")
    assert f"--image {big}: {40 * 2**20} bytes, over the 4096-byte limit (gallery.max_image_bytes)" in err
    code, _, err = run_cli(capsys, *base, str(tmp_path))
    assert (code, f"--image {tmp_path}: a directory; give a photo file" in err) == (EXIT_DATA, True)
    code, _, err = run_cli(capsys, *base, str(tmp_path / "nope.jpg"))
    assert (code, f"--image {tmp_path / 'nope.jpg'}: no such file" in err) == (EXIT_NO_INPUT, True)
    if os.path.exists("/dev/zero"):
        code, _, err = run_cli(capsys, *base, "/dev/zero")
        assert (code, "--image /dev/zero: not a regular file" in err) == (EXIT_DATA, True)
