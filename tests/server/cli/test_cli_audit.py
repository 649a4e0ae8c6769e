"""`facefleet-server audit list` and what the command line records in the admin audit log (who "local")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facefleet.core.errors import EXIT_NO_INPUT, EXIT_OK
from tests.server.cli.test_cli import run_cli
from tests.server.cli.test_cli_models import NEW, publish_new


def test_cli_changes_are_listed_as_local(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model_irs: dict[str, Path],
) -> None:
    base = ["--state-dir", str(tmp_path)]
    assert run_cli(capsys, *base, "tokens", "create", "grafana", "--role", "query")[0] == EXIT_OK
    publish_new(capsys, base, model_irs)
    assert run_cli(capsys, *base, "models", "retire", NEW)[0] == EXIT_OK
    assert run_cli(capsys, *base, "tokens", "revoke", "nobody")[0] == EXIT_NO_INPUT  # refused: recorded too

    code, out, _ = run_cli(capsys, *base, "audit", "list", "--json")
    assert code == EXIT_OK
    entries = json.loads(out)
    assert [(e["who"], e["action"], e["target"], e["outcome"]) for e in entries] == [
        ("local", "tokens.revoke", "nobody", "NOT_FOUND"),
        ("local", "models.retire", NEW, "ok"),
        ("local", "models.publish", NEW, "ok"),
        ("local", "tokens.create", "grafana", "ok"),
    ]

    code, out, _ = run_cli(capsys, *base, "audit", "list", "--action", "tokens", "--who", "local", "--json")
    assert [e["action"] for e in json.loads(out)] == ["tokens.revoke", "tokens.create"]
    code, out, _ = run_cli(capsys, *base, "audit", "list", "--since", "1h", "--who", "ops")
    assert (code, "no audit entries" in out) == (EXIT_OK, True)
    code, out, _ = run_cli(capsys, *base, "audit", "list")
    assert (code, "models.retire" in out, "NOT_FOUND" in out) == (EXIT_OK, True, True)
