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
    assert all("/etc/facefleet-server/%i.toml" in line for line in settings["ExecStart"])
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


def seconds(timespan: str) -> float:
    """A systemd time span such as '5s' or '10min' in seconds."""
    number = timespan.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(number) * {"": 1, "s": 1, "min": 60, "h": 3600}[timespan[len(number) :]]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_config_error_stops_the_unit_for_good(unit: Path, tmp_path: Path) -> None:
    """systemd checks RestartPreventExitStatus= against ExecStart= only: the command the unit starts must
    itself exit with that status on a bad config, and nothing before it may fail in its place."""
    settings = unit_settings(unit)
    assert "ExecStartPre" not in settings
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime]\ndevcie = 'CPU'\n")
    [command] = settings["ExecStart"]
    argv = command.replace(INSTALL_PREFIX, str(Path(sys.executable).parent) + "/").split()
    argv[argv.index("--config") + 1] = str(bad)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")
    assert str(result.returncode) in settings["RestartPreventExitStatus"][0].split(), result.stderr
    assert "unknown key 'runtime.devcie'" in result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_failure_that_restarts_cannot_fix_stops_restarting(unit: Path) -> None:
    """69 and 74 are retried; the start limit must be reachable at RestartSec=, so a device or a model store
    that stays missing leaves the unit failed rather than starting it every few seconds forever."""
    settings = unit_settings(unit)
    [burst] = settings["StartLimitBurst"]
    [interval] = settings["StartLimitIntervalSec"]
    [restart] = settings["RestartSec"]
    assert int(burst) >= 3 and int(burst) * seconds(restart) < seconds(interval)


def test_agent_unit_reaches_cameras_and_accelerators() -> None:
    settings = unit_settings(ROOT / "systemd" / "facefleet-agent.service")
    allowed = " ".join(settings["DeviceAllow"])
    for device in ("char-video4linux", "char-drm", "char-accel", "char-usb_device"):
        assert device in allowed
    assert "video" in settings["SupplementaryGroups"][0]


def test_agent_unit_reaches_the_devices_of_the_documented_door_actions() -> None:
    """gpioset opens /dev/gpiochipN; a USB relay is /dev/ttyUSBN or /dev/ttyACMN."""
    allowed = unit_settings(ROOT / "systemd" / "facefleet-agent.service")["DeviceAllow"]
    for device in ("char-gpiochip rw", "char-ttyUSB rw", "char-ttyACM rw"):
        assert device in allowed


def test_agent_unit_caps_its_memory_with_room_for_many_cameras() -> None:
    [limit] = unit_settings(ROOT / "systemd" / "facefleet-agent.service")["MemoryMax"]
    assert limit.endswith("G") and 2 <= int(limit[:-1]) <= 16


def test_server_unit_reloads_its_certificates_with_sighup() -> None:
    """`systemctl reload` sends SIGHUP, which the server takes as "reread the TLS files" (not a stop)."""
    settings = unit_settings(ROOT / "systemd" / "facefleet-server.service")
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
