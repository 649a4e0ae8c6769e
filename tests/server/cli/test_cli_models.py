"""`facefleet-server models …` and `rollout …` on a state directory: output, --json, and exit codes with
messages that name the thing and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facefleet.core.errors import EXIT_DATA, EXIT_NO_INPUT, EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.link.fleet import Registration
from facefleet.link.models import ModelStatus
from facefleet.server.rollouts import plan
from facefleet.server.state.sqlite.state import SqliteState
from tests.server.cli.test_cli import run_cli

NEW = "mini-xception@fer2013-fp32"


def test_models_publish_list_show_retire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_irs: dict[str, Path]
) -> None:
    base = ["--state-dir", str(tmp_path)]
    publish = [
        *base,
        "models",
        "publish",
        str(model_irs[NEW]),
        "--name",
        "mini-xception",
        "--precision",
        "FP32",
    ]
    code, out, _ = run_cli(capsys, *publish, "--task", "expression", "--version", "fer2013-fp32", "--json")
    assert code == EXIT_OK
    published = json.loads(out)
    assert (published["model_id"], published["task"], published["retired_at"]) == (NEW, "expression", None)
    assert {f["name"] for f in published["files"]} == {"model.xml", "model.bin"}
    code, out, _ = run_cli(capsys, *publish, "--task", "expression", "--version", "fer2013-fp32")
    assert (code, f"published {NEW}" in out, "rollout start" in out) == (EXIT_OK, True, True)

    code, _, err = run_cli(capsys, *publish, "--task", "embedding", "--version", "v2")
    assert code == EXIT_DATA
    assert "does not fit task 'embedding'" in err
    missing = [str(tmp_path / "nope.onnx"), "--task", "expression", "--name", "x", "--version", "v1"]
    code, _, err = run_cli(capsys, *base, "models", "publish", *missing)
    assert (code, "nope.onnx: no such model file" in err) == (EXIT_NO_INPUT, True)

    code, out, _ = run_cli(capsys, *base, "models", "list", "--json")
    assert [m["model_id"] for m in json.loads(out)] == [NEW]
    code, out, _ = run_cli(capsys, *base, "models", "list")
    assert NEW in out and "FP32" in out
    code, out, _ = run_cli(capsys, *base, "models", "show", NEW, "--json")
    assert json.loads(json.loads(out)["manifest_json"])["task"] == "expression"
    code, out, _ = run_cli(capsys, *base, "models", "show", NEW)
    assert "model.bin" in out
    code, _, err = run_cli(capsys, *base, "models", "show", "mini-xception@v9")
    assert (code, "not published" in err) == (EXIT_NO_INPUT, True)

    code, out, _ = run_cli(capsys, *base, "models", "retire", NEW)
    assert (code, "retired" in out) == (EXIT_OK, True)
    code, _, err = run_cli(capsys, *base, "rollout", "start", NEW, "--all")
    assert (code, "retired" in err) == (EXIT_DATA, True)


def publish_new(capsys: pytest.CaptureFixture[str], base: list[str], model_irs: dict[str, Path]) -> None:
    """`models publish` of the NEW expression model's IR into the state directory of `base`."""
    publish = [*base, "models", "publish", str(model_irs[NEW]), "--task", "expression"]
    assert run_cli(capsys, *publish, "--name", "mini-xception", "--version", "fer2013-fp32")[0] == EXIT_OK


def test_rollout_verbs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_irs: dict[str, Path]
) -> None:
    base = ["--state-dir", str(tmp_path)]
    publish_new(capsys, base, model_irs)

    code, _, err = run_cli(capsys, *base, "rollout", "start", "mini-xception@v9", "--all")
    assert (code, "not published" in err) == (EXIT_NO_INPUT, True)
    code, _, err = run_cli(capsys, *base, "rollout", "start", NEW, "--percent", "0")
    assert (code, "1–100" in err) == (EXIT_DATA, True)
    with pytest.raises(SystemExit) as info:
        run_cli(capsys, *base, "rollout", "start", NEW, "--all", "--group", "lobby")
    assert info.value.code == 2

    code, out, _ = run_cli(capsys, *base, "rollout", "start", NEW, "--percent", "10", "--json")
    rollout = json.loads(out)
    rid = str(rollout["rollout_id"])
    assert (code, rollout["state"], rollout["target"]["percent"]) == (EXIT_OK, "active", 10)
    code, out, _ = run_cli(capsys, *base, "rollout", "list")
    assert NEW in out and "10 %" in out

    code, _, err = run_cli(capsys, *base, "models", "retire", NEW)
    assert (code, f"rollout {rid} (active)" in err, "rollout rollback" in err) == (EXIT_DATA, True, True)
    assert json.loads(run_cli(capsys, *base, "rollout", "pause", rid, "--json")[1])["state"] == "paused"
    code, _, err = run_cli(capsys, *base, "rollout", "pause", rid)
    assert (code, "only an active rollout" in err) == (EXIT_DATA, True)
    code, out, _ = run_cli(capsys, *base, "rollout", "resume", rid, "--percent", "50")
    assert (code, "50 %" in out, "now active" in out) == (EXIT_OK, True, True)
    code, _, err = run_cli(capsys, *base, "rollout", "resume", rid, "--percent", "20")
    assert (code, "can only be widened" in err) == (EXIT_DATA, True)

    state = SqliteState(tmp_path / "server.db")
    state.register_agent(
        Registration(
            "door-1",
            model_versions={"expression": "mini-xception@fer2013"},
            model_precisions={"expression": "bf16"},
        ),
        utc_now(),
    )
    state.models.announce("door-1", [(int(rid), "mini-xception@fer2013")], utc_now())
    failure = ModelStatus("expression", NEW, int(rid), "failed", "smoke inference: output is NaN")
    state.models.set_agent_models("door-1", utc_now(), statuses=[failure], groups=["lobby"])
    state.close()
    code, out, _ = run_cli(capsys, *base, "rollout", "show", rid)
    assert code == EXIT_OK
    assert "door-1" in out and "failed" in out and "output is NaN" in out and "mini-xception@fer2013" in out
    code, out, _ = run_cli(capsys, *base, "query", "fleet")
    assert "lobby" in out and "output is NaN" in out
    assert "mini-xception@fer2013 at bf16" in " ".join(out.split())  # the version, then what it runs at
    code, out, _ = run_cli(capsys, *base, "query", "fleet", "--json")
    [agent] = json.loads(out)["agents"]
    assert agent["groups"] == ["lobby"]
    assert agent["model_precisions"] == {"expression": "bf16"}
    assert agent["model_statuses"][0]["reason"] == "smoke inference: output is NaN"

    assert (
        json.loads(run_cli(capsys, *base, "rollout", "rollback", rid, "--json")[1])["state"] == "rolled_back"
    )
    code, _, err = run_cli(capsys, *base, "rollout", "rollback", rid)
    assert (code, "already rolled back" in err) == (EXIT_DATA, True)
    code, _, err = run_cli(capsys, *base, "rollout", "show", "99")
    assert (code, "no rollout 99" in err) == (EXIT_NO_INPUT, True)
    assert run_cli(capsys, *base, "models", "retire", NEW)[0] == EXIT_OK


def test_rollout_start_with_a_failure_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_irs: dict[str, Path]
) -> None:
    base = ["--state-dir", str(tmp_path)]
    publish_new(capsys, base, model_irs)
    start = [*base, "rollout", "start", NEW, "--all"]

    for flags, message in [
        (["--max-failures", "-1"], "max_failures.count must be 0–1000000, got -1"),
        (["--max-failures", "150%"], "max_failures.percent must be 0–100, got 150"),
        (["--max-failures", "lots"], "give e.g. 2 or 20%"),
        (["--on-failures", "rollback"], "--on-failures needs --max-failures"),
    ]:
        code, _, err = run_cli(capsys, *start, *flags)
        assert (code, message in err) == (EXIT_DATA, True), (flags, err)
    with pytest.raises(SystemExit) as info:
        run_cli(capsys, *start, "--max-failures", "1", "--on-failures", "retry")
    assert info.value.code == 2
    code, out, _ = run_cli(capsys, *base, "rollout", "list", "--json")
    assert json.loads(out) == [], "a refused start stores no rollout"

    code, out, _ = run_cli(capsys, *start, "--max-failures", "20%", "--json")
    assert (code, json.loads(out)["max_failures"], json.loads(out)["on_failures"]) == (
        EXIT_OK,
        {"count": None, "percent": 20},
        "pause",
    )
    code, out, _ = run_cli(capsys, *start, "--max-failures", "1", "--on-failures", "rollback")
    assert (code, "max failures 1, then rollback" in out) == (EXIT_OK, True)
    code, out, _ = run_cli(capsys, *base, "rollout", "list")
    assert "20 %, then pause" in out and "1, then rollback" in out
    rollouts = json.loads(run_cli(capsys, *base, "rollout", "list", "--json")[1])
    assert [(r["max_failures"], r["on_failures"]) for r in rollouts] == [
        ({"count": 1, "percent": None}, "rollback"),
        ({"count": None, "percent": 20}, "pause"),
    ]
    rid = rollouts[0]["rollout_id"]

    # two refusals reported to the server pass the budget of 1: rolled back, saying why
    state = SqliteState(tmp_path / "server.db")
    for door, reason in (("door-1", "model.bin: sha256 differs"), ("door-2", "output is NaN")):
        state.models.announce(door, [(rid, "mini-xception@fer2013")], utc_now())
        state.models.set_agent_models(
            door,
            utc_now(),
            statuses=[ModelStatus("expression", NEW, rid, "failed", reason)],
            stop=lambda rollout, devices: plan.stopped(rollout, devices, utc_now()),
        )
    state.close()
    code, out, _ = run_cli(capsys, *base, "rollout", "show", str(rid))
    assert "max failures 1, then rollback" in out
    assert "rolled back because stopped: 2 of 2 agents refused it (limit 1): door-1: model.bin" in out
    shown = json.loads(run_cli(capsys, *base, "rollout", "show", str(rid), "--json")[1])
    assert (shown["state"], shown["reason"]) == (
        "rolled_back",
        "stopped: 2 of 2 agents refused it (limit 1): door-1: model.bin: sha256 differs; "
        "door-2: output is NaN",
    )
