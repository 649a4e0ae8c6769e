"""The command line against a remote server: `--server https://… --token-file F --ca-file CA` calls a real
server's HTTP API (TLS with the site CA, bearer token) and prints what the same verb prints on the server
host; refusals keep their messages and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from facefleet.core.errors import EXIT_CONFIG, EXIT_DATA, EXIT_NO_INPUT, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from facefleet.link.checks import utc_now
from facefleet.link.events import AttributesResult, Event
from facefleet.server.domain.audit import AuditFilter
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import fleet_pb2
from tests.server.cli.test_cli import run_cli
from tests.server.conftest import Harness, Pki, next_delta, run, serving
from tests.server.gallery.test_unknown_faces import Seen, face_event, report, strangers  # noqa: F401


def token_file(tmp_path: Path, token: str, name: str = "token") -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def remote(harness: Harness, tmp_path: Path, token: str | None = None) -> list[str]:
    """Global options that point the command line at the harness's HTTP API (no local state directory)."""
    return [
        "--state-dir",
        str(tmp_path / "not-used"),
        "--server",
        harness.http_url,
        "--token-file",
        str(token_file(tmp_path, token or harness.admin_token)),
        "--ca-file",
        str(harness.pki.tls_dir / "ca.pem"),
    ]


def test_people_and_unknown_faces_through_a_remote_server(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    photo_paths: dict[str, Path],
    strangers: list[tuple[Seen, Seen]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            base = remote(harness, tmp_path)

            def cli(*argv: str) -> tuple[int, str, str]:
                return run_cli(capsys, *base, *argv)

            code, out, err = await asyncio.to_thread(
                cli, "people", "enroll", "eileen", "--image", str(photo_paths["astronaut"]), "--group", "crew"
            )
            assert code == EXIT_OK, err
            assert "astronaut.png: face at" in out and "eileen: 1 embeddings, gallery revision 1" in out
            code, _, err = await asyncio.to_thread(
                cli, "people", "enroll", "crowd", "--image", str(photo_paths["t1"])
            )
            assert code == EXIT_DATA
            assert "t1.jpg" in err and "faces are good enough" in err
            code, _, err = await asyncio.to_thread(
                cli, "people", "enroll", "eileen", "--image", str(photo_paths["astronaut"])
            )
            assert code == EXIT_DATA
            assert "already enrolled" in err
            code, out, _ = await asyncio.to_thread(cli, "people", "list", "--json")
            assert [p["person_id"] for p in json.loads(out)] == ["eileen"]
            code, out, _ = await asyncio.to_thread(
                cli, "people", "update", "eileen", "--name", "Eileen C.", "--json"
            )
            assert json.loads(out)["display_name"] == "Eileen C."
            assert (await asyncio.to_thread(cli, "people", "show", "nobody"))[0] == EXIT_NO_INPUT

            events = [face_event(seen, utc_now() - timedelta(minutes=2)) for seen in strangers[0]]
            await report(harness, events)
            doors = [
                Event(str(uuid.uuid4()), "door-1", utc_now() - timedelta(minutes=1), "access", decision,
                      camera="gate", door=door)
                for decision, door in (("granted", "main"), ("denied", "side"))
            ]  # fmt: skip
            await report(harness, doors)
            code, out, _ = await asyncio.to_thread(cli, "unknown", "list", "--json")
            (cluster,) = json.loads(out)
            assert (cluster["cluster_id"], cluster["count"]) == (events[0].event_id, 2)
            saved = tmp_path / "crops"
            code, out, _ = await asyncio.to_thread(
                cli, "unknown", "show", cluster["cluster_id"], "--save", str(saved)
            )
            assert code == EXIT_OK
            assert sorted(p.stem for p in saved.iterdir()) == sorted(e.event_id for e in events)
            code, out, err = await asyncio.to_thread(
                cli,
                "unknown",
                "enroll",
                cluster["cluster_id"],
                "--version",
                cluster["version"],
                "--person-id",
                "visitor-1",
            )
            assert code == EXIT_OK, err
            assert "visitor-1: enrolled from 2 snapshots" in out
            assert [p.person_id for p in harness.server.state.list_people()] == ["eileen", "visitor-1"]
            since = utc_now() - timedelta(hours=1)
            audit = harness.server.state.list_audit(AuditFilter(since, utc_now(), who="admin"), None, 20)
            assert ("unknown.enrol", "visitor-1") in [(e.action, e.target) for e in audit.entries]

            code, out, _ = await asyncio.to_thread(cli, "devices", "disable", "door-1", "--reason", "moved")
            assert "device door-1 is now disabled" in out
            code, out, _ = await asyncio.to_thread(cli, "devices", "list", "--json")
            assert [(d["device_id"], d["status"], d["changed_by"]) for d in json.loads(out)] == [
                ("door-1", "disabled", "admin")
            ]
            code, out, _ = await asyncio.to_thread(cli, "audit", "list", "--action", "devices", "--json")
            assert [(e["who"], e["action"], e["target"]) for e in json.loads(out)] == [
                ("admin", "devices.disable", "door-1")
            ]

            (tmp_path / "query").mkdir()
            query_only = remote(harness, tmp_path / "query", harness.query_token)
            code, _, err = await asyncio.to_thread(run_cli, capsys, *query_only, "people", "list")
            assert code != EXIT_OK
            assert "needs 'admin'" in err
            code, out, _ = await asyncio.to_thread(
                run_cli, capsys, *query_only, "query", "events", "--since", "1h", "--json"
            )
            assert sorted(e["event_id"] for e in json.loads(out)) == sorted(
                e.event_id for e in events + doors
            )
            code, out, _ = await asyncio.to_thread(
                run_cli, capsys, *query_only, "query", "events", "--camera", "entrance", "--json"
            )
            assert sorted(e["event_id"] for e in json.loads(out)) == sorted(e.event_id for e in events)
            code, out, _ = await asyncio.to_thread(
                run_cli,
                capsys,
                *query_only,
                "query",
                "events",
                "--door",
                "main",
                "--camera",
                "gate",
                "--json",
            )
            assert [e["event_id"] for e in json.loads(out)] == [doors[0].event_id]
            code, out, _ = await asyncio.to_thread(
                run_cli, capsys, *query_only, "query", "access", "--door", "side", "--json"
            )
            assert json.loads(out) == [{"device_id": "door-1", "door": "side", "granted": 0, "denied": 1}]
            code, out, _ = await asyncio.to_thread(
                run_cli,
                capsys,
                *query_only,
                "query",
                "counts",
                "--interval",
                "1h",
                "--camera",
                "gate",
                "--json",
            )
            assert sum(r["count"] for r in json.loads(out)) == 2
            code, _, err = await asyncio.to_thread(
                run_cli, capsys, *query_only, "query", "events", "--door", "front\x07door"
            )
            assert code == EXIT_DATA
            assert "filter doors: 'front\\x07door' is not a door name" in err
            code, out, _ = await asyncio.to_thread(run_cli, capsys, *query_only, "query", "fleet", "--json")
            (agent,) = json.loads(out)["agents"]
            assert (agent["device_id"], agent["device_status"]) == ("door-1", "disabled")
            code, out, _ = await asyncio.to_thread(
                run_cli, capsys, *query_only, "query", "unknown-rate", "--json"
            )
            assert json.loads(out)["total"]["unknown_events"] == 2

    run(scenario)


def test_the_attribute_distribution_through_a_remote_server_is_what_the_host_prints(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    estimates = (
        AttributesResult("female", 0.12, 27.3, "20-29"),
        AttributesResult("male", 0.5, 12.5, "13-19"),
        AttributesResult("female", 0.5, 64.0, "60+"),
        None,
    )
    now = utc_now()
    events = [
        Event(str(uuid.uuid4()), "door-1", now - timedelta(minutes=i), "face", ("unknown", "match")[i % 2],
              person_id="alice" if i % 2 else "", camera=("porch", "hall")[i % 3 == 0],
              attributes=estimates[i % 4])
        for i in range(10)
    ]  # fmt: skip
    runs = (
        ("--json",),
        ("--json", "--per-device", "--decision", "unknown"),
        ("--json", "--camera", "porch", "--since", "2h"),
        ("--per-device",),
    )

    async def scenario() -> dict[str, list[tuple[int, str, str]]]:
        async with serving(tmp_path, pki, enroller) as harness:
            await report(harness, events)
            await report(harness, events[:3])  # repeats count once
            (tmp_path / "query").mkdir()
            sides = {
                "remote": remote(harness, tmp_path / "query", harness.query_token),
                "local": ["--state-dir", str(tmp_path / "state")],
            }
            outputs: dict[str, list[tuple[int, str, str]]] = {}
            for side, base in sides.items():
                outputs[side] = [
                    await asyncio.to_thread(run_cli, capsys, *base, "query", "attributes", *argv)
                    for argv in runs
                ]
                outputs[side].append(
                    await asyncio.to_thread(run_cli, capsys, *base, "query", "attributes", "--door", "")
                )
            return outputs

    outputs = run(scenario)
    assert outputs["remote"] == outputs["local"]
    everything, unknown, porch, table, refused = outputs["remote"]
    assert all(code == EXIT_OK for code, _, _ in (everything, unknown, porch, table))

    def expected(chosen: list[Event]) -> tuple[int, int, dict[str, int], dict[tuple[str, str], int]]:
        estimated = [e.attributes for e in chosen if e.attributes is not None]
        genders = {g: sum(a.gender == g for a in estimated) for g in ("female", "male")}
        return len(chosen), len(estimated), genders, dict(Counter((a.gender, a.age_band) for a in estimated))

    def got(row: dict[str, Any]) -> tuple[int, int, dict[str, int], dict[tuple[str, str], int]]:
        cells = {(c["gender"], c["age_band"]): c["count"] for c in row["gender_age_bands"]}
        return row["face_events"], row["estimated"], row["genders"], cells

    assert (
        got(json.loads(everything[1])["total"])
        == expected(events)
        == (
            10,
            8,
            {"female": 5, "male": 3},
            {("female", "20-29"): 3, ("male", "13-19"): 3, ("female", "60+"): 2},
        )
    )
    found = json.loads(unknown[1])
    assert [r["device_id"] for r in found["per_device"]] == ["door-1"]
    assert (
        got(found["total"])
        == got(found["per_device"][0])
        == expected([e for e in events if e.decision == "unknown"])
    )
    assert got(json.loads(porch[1])["total"]) == expected([e for e in events if e.camera == "porch"])
    assert "(all)" in table[1] and "door-1" in table[1] and "60+" in table[1]
    assert refused[0] == EXIT_DATA and "filter doors: '' is not a door name" in refused[2]


def test_remote_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = token_file(tmp_path, "ff1.abc.def")
    code, _, err = run_cli(capsys, "--server", "https://localhost:1", "people", "list")
    assert code == EXIT_CONFIG
    assert "--token-file" in err
    code, _, err = run_cli(capsys, "--server", "ftp://x", "--token-file", str(token), "people", "list")
    assert code == EXIT_CONFIG
    code, _, err = run_cli(
        capsys, "--server", "http://192.0.2.1:7445", "--token-file", str(token), "people", "list"
    )
    assert code == EXIT_CONFIG
    assert "clear text" in err
    code, _, err = run_cli(capsys, "--server", "http://[::1]:1", "--token-file", str(token), "people", "list")
    assert code == EXIT_UNAVAILABLE  # this machine: tried
    token.chmod(0o644)
    code, _, err = run_cli(
        capsys, "--server", "https://localhost:1", "--token-file", str(token), "people", "list"
    )
    assert code == EXIT_CONFIG
    assert f"chmod 600 {token}" in err
    token.chmod(0o600)
    code, _, err = run_cli(
        capsys, "--server", "https://127.0.0.1:1", "--token-file", str(token), "people", "list"
    )
    assert code == EXIT_UNAVAILABLE
    assert "cannot reach https://127.0.0.1:1" in err
    fifo = tmp_path / "token-fifo"  # read as it was, a FIFO nobody writes to held the command for ever
    os.mkfifo(fifo, 0o600)
    code, _, err = run_cli(
        capsys, "--server", "https://127.0.0.1:1", "--token-file", str(fifo), "people", "list"
    )
    assert code == EXIT_CONFIG
    assert f"--token-file {fifo}: not a token file (not a regular file)" in err


def test_models_and_rollouts_through_a_remote_server(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    fer_tflite: Path,
    model_irs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ir = tmp_path / "ir"
    ir.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copyfile(model_irs["mini-xception@fer2013-fp32"] / f"model{suffix}", ir / f"emotion{suffix}")

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            base = remote(harness, tmp_path)

            def cli(*argv: str) -> tuple[int, str, str]:
                return run_cli(capsys, *base, *argv)

            await harness.registered("door-1")
            code, out, err = await asyncio.to_thread(
                cli, "models", "publish", str(fer_tflite), "--task", "expression", "--name", "mini-xception",
                "--version", "remote", "--precision", "FP32", "--json",
            )  # fmt: skip
            assert code == EXIT_OK, err
            published = json.loads(out)
            assert (published["model_id"], published["task"]) == ("mini-xception@remote", "expression")
            assert {f["name"] for f in published["files"]} == {"model.xml", "model.bin"}
            publish_ir = ["models", "publish", str(ir / "emotion.xml"), "--task", "expression"]
            code, out, err = await asyncio.to_thread(
                cli, *publish_ir, "--name", "mini-xception", "--version", "remote-ir", "--json"
            )
            assert code == EXIT_OK, err
            assert json.loads(out)["model_id"] == "mini-xception@remote-ir"
            (ir / "emotion.bin").unlink()  # half an IR is refused before anything is sent
            code, _, err = await asyncio.to_thread(
                cli, *publish_ir, "--name", "mini-xception", "--version", "half"
            )
            assert code == EXIT_DATA and "put emotion.bin next to emotion.xml" in err, err
            code, out, _ = await asyncio.to_thread(cli, "models", "list", "--json")
            assert "mini-xception@remote" in [m["model_id"] for m in json.loads(out)]
            code, out, err = await asyncio.to_thread(
                cli,
                "rollout",
                "start",
                "mini-xception@remote",
                "--percent",
                "100",
                "--max-failures",
                "1",
                "--json",
            )
            assert code == EXIT_OK, err
            started = json.loads(out)
            assert (started["state"], started["max_failures"]) == ("active", {"count": 1, "percent": None})
            rid = str(started["rollout_id"])
            code, out, _ = await asyncio.to_thread(cli, "rollout", "show", rid, "--json")
            assert json.loads(out)["model_id"] == "mini-xception@remote"
            code, out, _ = await asyncio.to_thread(cli, "rollout", "pause", rid, "--json")
            assert json.loads(out)["state"] == "paused"
            code, _, err = await asyncio.to_thread(cli, "models", "retire", "mini-xception@remote")
            assert code == EXIT_DATA
            assert "rollout" in err
            code, out, _ = await asyncio.to_thread(cli, "rollout", "rollback", rid, "--json")
            assert json.loads(out)["state"] == "rolled_back"
            assert (await asyncio.to_thread(cli, "models", "retire", "mini-xception@remote"))[0] == EXIT_OK
            code, out, _ = await asyncio.to_thread(cli, "rollout", "list")
            assert "mini-xception@remote" in out and "rolled_back" in out
            assert (await asyncio.to_thread(cli, "models", "import-defaults"))[0] == EXIT_USAGE
            actions = [e.action for e in harness.server.state.list_audit(
                AuditFilter(utc_now() - timedelta(hours=1), utc_now()), None, 20).entries]  # fmt: skip
            assert actions[:5] == ["models.retire", "rollouts.rollback", "models.retire", "rollouts.pause",
                                   "rollouts.start"]  # fmt: skip

    run(scenario)


def test_whether_an_agent_is_watching_is_said_by_the_server_and_left_unknown_on_the_state_directory(
    tmp_path: Path, pki: Pki, enroller: Enroller, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the serving process knows its open Watch streams: through --server a watching agent is
    `watching: true`; on the state directory the same agent is `watching: null`, never false."""

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = await harness.registered("door-1")
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
            await next_delta(stream)
            through_server = await asyncio.to_thread(
                run_cli, capsys, *remote(harness, tmp_path), "query", "fleet", "--json"
            )
            on_the_host = await asyncio.to_thread(
                run_cli, capsys, "--state-dir", str(tmp_path / "state"), "query", "fleet", "--json"
            )
            stream.cancel()
        for code, _, err in (through_server, on_the_host):
            assert (code, err) == (EXIT_OK, "")
        [served] = json.loads(through_server[1])["agents"]
        [local] = json.loads(on_the_host[1])["agents"]
        assert (served["device_id"], served["online"], served["watching"]) == ("door-1", True, True)
        assert (local["device_id"], local["online"], local["watching"]) == ("door-1", True, None)

    run(scenario)
