"""Every systemd unit of the project passes `systemd-analyze verify` (Debian package `systemd`) cleanly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
INSTALL_PREFIX = "/opt/facefleet/bin/"


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)"
)
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text(encoding="utf-8")
    assert INSTALL_PREFIX in text
    # verify checks that ExecStart= binaries exist: point them at this venv's console scripts.
    copy = tmp_path / unit.name
    copy.write_text(text.replace(INSTALL_PREFIX, str(Path(sys.executable).parent) + "/"), encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)"
)
def test_the_readmes_replica_template_verifies_and_names_config_and_state_per_instance(
    tmp_path: Path,
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [command] = [
        line for line in readme.splitlines() if line.startswith("sed ") and "server@.service" in line
    ]
    script, _, _ = command.rpartition(" > ")
    template = tmp_path / "facefleet-server@.service"
    made = subprocess.run(
        script, shell=True, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    template.write_text(made.stdout.replace(INSTALL_PREFIX, str(Path(sys.executable).parent) + "/"))
    settings = unit_settings(template)
    assert settings["StateDirectory"] == ["facefleet-server/%i"]
    assert all(
        "/etc/facefleet-server/%i.toml" in line for line in settings["ExecStart"] + settings["ExecStartPre"]
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "facefleet-server@a.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [
        line for line in (result.stdout + result.stderr).splitlines() if "facefleet-server@" in line
    ] == []


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_a_hardened_notify_service_that_does_not_loop_on_bad_config(unit: Path) -> None:
    settings = unit_settings(unit)
    name = unit.stem
    assert settings["Type"] == ["notify"]
    assert settings["User"] == [name]
    assert settings["StateDirectory"] == [name]
    assert settings["ConfigurationDirectory"] == [name]
    assert "78" in settings["RestartPreventExitStatus"][0].split()
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert settings[key] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert "WatchdogSec" in settings


def test_agent_unit_reaches_cameras_and_accelerators() -> None:
    settings = unit_settings(ROOT / "systemd" / "facefleet-agent.service")
    allowed = " ".join(settings["DeviceAllow"])
    for device in ("char-video4linux", "char-drm", "char-accel", "char-usb_device"):
        assert device in allowed
    assert "video" in settings["SupplementaryGroups"][0]


def test_agent_unit_caps_its_memory_with_room_for_many_cameras() -> None:
    [limit] = unit_settings(ROOT / "systemd" / "facefleet-agent.service")["MemoryMax"]
    assert limit.endswith("G") and 2 <= int(limit[:-1]) <= 16
