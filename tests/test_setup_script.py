"""scripts/setup's decisions on a machine that has only Python and apt: when apt-get updates and retries, what
a user without root or sudo is told, and how a missing venv module, a broken .venv and a too old Python are
handled. Its functions run in bash against stand-ins for apt-get, sudo, id and a Debian python3 without
python3.N-venv, on a PATH that holds nothing else, so nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup"
# What the functions and the stand-ins run besides bash's builtins.
TOOLS = ("cat", "chmod", "env", "find", "mkdir", "mktemp", "rm", "sed", "touch")
BASH = shutil.which("bash") or "/bin/bash"
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"

APT_GET = """#!/bin/sh
# apt-get: logs its arguments; `install` fails as apt does without package lists, and once more while
# $STUB/fail-once exists; python3.N-venv gives the python stand-in its ensurepip.
echo "apt-get $*" >> "$STUB/calls"
case "$1" in
  update)
    mkdir -p "$FACEFLEET_APT_LISTS/partial"
    touch "$FACEFLEET_APT_LISTS/deb_dists_main_binary-amd64_Packages" "$FACEFLEET_APT_LISTS/partial" ;;
  install)
    if [ ! -f "$FACEFLEET_APT_LISTS/deb_dists_main_binary-amd64_Packages" ] || [ -f "$STUB/fail-once" ]; then
      rm -f "$STUB/fail-once"
      echo "E: Unable to locate package $*" >&2
      exit 100
    fi
    case " $* " in *" python3."*-venv" "*) touch "$STUB/ensurepip" ;; esac ;;
esac
"""
SUDO = """#!/bin/sh
echo "sudo" >> "$STUB/calls"
exec "$@"
"""
ID = """#!/bin/sh
echo "${STUB_UID:-0}"
"""
# A Debian python3: the real interpreter, without ensurepip until python3.N-venv is installed; its venvs are
# the real interpreter too, and one made without ensurepip has no pip, as on Debian.
PYTHON = """#!/bin/sh
if [ "$1 $2" = "-m ensurepip" ]; then
  [ -f "$STUB/ensurepip" ] || { echo "No module named ensurepip" >&2; exit 1; }
  echo "pip 23.0.1"; exit 0
fi
if [ "$1 $2" = "-m venv" ]; then
  echo "venv $3" >> "$STUB/calls"
  mkdir -p "$3/bin"
  if [ -f "$STUB/ensurepip" ]; then
    printf '#!/bin/sh\\nexec "{python}" "$@"\\n' > "$3/bin/python"; chmod +x "$3/bin/python"; exit 0
  fi
  printf '#!/bin/sh\\nexec "{python}" -S "$@"\\n' > "$3/bin/python"; chmod +x "$3/bin/python"
  echo "The virtual environment was not created successfully because ensurepip is not available." >&2
  exit 1
fi
exec "{python}" "$@"
"""


@dataclass
class Machine:
    """A checkout folder, a stub folder and the environment of a bash that sources scripts/setup."""

    work: Path
    stub: Path
    lists: Path
    env: dict[str, str]

    def run(self, *commands: str) -> subprocess.CompletedProcess[str]:
        script = f'source "{SETUP}"\n' + "\n".join(commands)
        return subprocess.run(
            [BASH, "-c", script], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=30
        )

    def calls(self) -> list[str]:
        path = self.stub / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def fresh_lists(self) -> None:
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.lists / "deb_dists_main_binary-amd64_Packages").touch()

    def age_lists(self, days: float) -> None:
        then = time.time() - days * 86400
        for path in (self.lists, self.lists / "partial"):
            os.utime(path, (then, then))


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    stub, work, lists = tmp_path / "stub", tmp_path / "work", tmp_path / "lists"
    bin_dir = stub / "bin"
    bin_dir.mkdir(parents=True)
    work.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    executable(bin_dir / "apt-get", APT_GET)
    executable(bin_dir / "id", ID)
    executable(stub / "python3", PYTHON.replace("{python}", sys.executable))
    (work / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.10"\n')
    env = {
        "PATH": str(bin_dir),
        "STUB": str(stub),
        "FACEFLEET_APT_LISTS": str(lists),
        "PYTHON": str(stub / "python3"),
        "HOME": str(tmp_path),
    }
    return Machine(work, stub, lists, env)


INSTALL = "apt-get install -y -qq --no-install-recommends mosquitto curl"


def test_no_package_lists_updates_them_before_installing(machine: Machine) -> None:
    result = machine.run("apt_install mosquitto curl")
    assert result.returncode == 0, result.stderr
    assert machine.calls() == ["apt-get update -qq", INSTALL]


def test_lists_of_today_install_at_once_and_old_ones_are_updated_first(machine: Machine) -> None:
    machine.fresh_lists()
    machine.age_lists(0.5)
    assert machine.run("apt_install mosquitto curl").returncode == 0
    assert machine.calls() == [INSTALL]
    machine.age_lists(3)
    assert machine.run("apt_install mosquitto curl").returncode == 0
    assert machine.calls() == [INSTALL, "apt-get update -qq", INSTALL]


def test_an_install_that_fails_on_fresh_lists_updates_and_tries_once_more(machine: Machine) -> None:
    machine.fresh_lists()
    (machine.stub / "fail-once").touch()
    result = machine.run("apt_install mosquitto curl")
    assert result.returncode == 0, result.stderr
    assert machine.calls() == [INSTALL, "apt-get update -qq", INSTALL]
    assert result.stderr == ""


def test_an_install_that_fails_twice_stops_with_apts_error(machine: Machine) -> None:
    executable(
        machine.stub / "bin" / "apt-get",
        '#!/bin/sh\necho "apt-get $*" >> "$STUB/calls"\n'
        '[ "$1" = update ] || { echo "E: Unable to locate package nosuch" >&2; exit 100; }\n',
    )
    result = machine.run("apt_install nosuch", "echo not reached")
    assert result.returncode == 1
    assert machine.calls() == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends nosuch",
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends nosuch",
    ]
    assert "E: Unable to locate package nosuch" in result.stderr
    assert "setup: apt-get install nosuch failed" in result.stderr
    assert "not reached" not in result.stdout


def test_a_user_without_sudo_is_told_what_root_must_install(machine: Machine) -> None:
    machine.env["STUB_UID"] = "1000"
    result = machine.run("apt_install mosquitto curl")
    assert result.returncode == 1
    assert machine.calls() == []
    assert "installing mosquitto curl needs root, and sudo is not installed" in result.stderr
    assert "'apt-get install mosquitto curl'" in result.stderr


def test_a_user_with_sudo_installs_through_it(machine: Machine) -> None:
    machine.env["STUB_UID"] = "1000"
    executable(machine.stub / "bin" / "sudo", SUDO)
    machine.fresh_lists()
    result = machine.run("apt_install mosquitto curl")
    assert result.returncode == 0, result.stderr
    assert machine.calls() == ["sudo", INSTALL]


def test_a_debian_python_without_venv_gets_its_venv_package_then_a_venv_with_pip(machine: Machine) -> None:
    result = machine.run("prepare_machine", 'echo "venv: $(venv_problem)"')
    assert result.returncode == 0, result.stderr
    calls = machine.calls()
    [install] = [call for call in calls if call.startswith("apt-get install")]
    assert f" python{VERSION}-venv " in install + " "
    assert calls.index(install) < calls.index("venv .venv")
    assert result.stdout == "venv: \n"
    assert "setup: creating .venv" in result.stderr


def test_a_venv_without_pip_is_made_again(machine: Machine) -> None:
    # The first run on a machine whose python3 lacks ensurepip leaves a .venv with a python but no pip.
    assert machine.run('"$PYTHON" -m venv .venv || true').returncode == 0
    assert machine.run("venv_problem").stdout == (
        ".venv has no pip (it was made without ensurepip): making .venv again\n"
    )
    result = machine.run("prepare_machine", "venv_problem")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert machine.calls().count("venv .venv") == 2
    assert "making .venv again" in result.stderr


def test_a_python_older_than_requires_python_stops_with_what_to_do(machine: Machine) -> None:
    (machine.work / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.99"\n')
    result = machine.run("prepare_machine", "echo not reached")
    assert result.returncode == 1
    assert f"is Python {VERSION}, and FaceFleet needs Python >= 3.99 (pyproject.toml)" in result.stderr
    assert "PYTHON=/path/to/python3.N scripts/setup" in result.stderr
    assert machine.calls() == []
    assert not (machine.work / ".venv").exists()


def test_a_venv_of_a_python_now_too_old_is_named(machine: Machine) -> None:
    (machine.work / ".venv" / "bin").mkdir(parents=True)
    (machine.work / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (machine.work / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.99"\n')
    assert machine.run("venv_problem").stdout == (
        f".venv has Python {VERSION}, older than 3.99: making .venv again\n"
    )
