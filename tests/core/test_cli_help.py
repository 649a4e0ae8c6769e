"""Both command lines: every command, at every depth, has --help with an example (core.cli.add_command)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import pytest

from facefleet.agent.cli.main import build_parser as agent_parser
from facefleet.agent.cli.main import main as agent_main
from facefleet.server.cli.main import build_parser as server_parser
from facefleet.server.cli.main import main as server_main

PROGRAMS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[Sequence[str]], int]]] = {
    "facefleet-agent": (agent_parser, agent_main),
    "facefleet-server": (server_parser, server_main),
}


def commands_of(parser: argparse.ArgumentParser) -> list[list[str]]:
    """Every sub-command path of a parser, e.g. ['models', 'import']."""
    found: list[list[str]] = []

    def walk(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(parser, [])
    return found


CASES = [(program, command) for program, (build, _) in PROGRAMS.items() for command in commands_of(build())]


@pytest.mark.parametrize(("program", "command"), CASES, ids=[" ".join([p, *c]) for p, c in CASES])
def test_every_command_has_help_with_an_example(
    program: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        PROGRAMS[program][1]([*command, "--help"])
    assert info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_both_programs_have_commands() -> None:
    assert {p for p, _ in CASES} == set(PROGRAMS)
    assert ["models", "import-defaults"] in commands_of(PROGRAMS["facefleet-agent"][0]())
    assert ["rollout", "start"] in commands_of(PROGRAMS["facefleet-server"][0]())
