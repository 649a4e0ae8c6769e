"""The example configuration shipped next to the server's systemd unit is valid."""

from __future__ import annotations

from pathlib import Path

from facefleet.server.config import load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "facefleet-server.service"
INSTALL_PREFIX = "/opt/facefleet/bin/"


def test_the_example_config_is_valid() -> None:
    config = load_config(ROOT / "systemd" / "server.example.toml")
    assert config.insecure_development is False
    assert config.listen.agents == "[::]:7443"
