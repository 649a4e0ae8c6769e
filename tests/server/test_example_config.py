"""The example configuration shipped next to the server's systemd unit is valid."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from facefleet.server.config import ServerConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "facefleet-server.service"
INSTALL_PREFIX = "/opt/facefleet/bin/"


def test_the_example_config_is_valid() -> None:
    config = load_config(ROOT / "systemd" / "server.example.toml")
    assert config.insecure_development is False
    assert config.listen.agents == "[::]:7443"


def settings(model: BaseModel, prefix: str = "") -> dict[str, object]:
    """Every key of a config model with its value, nested sections as 'section.key'."""
    found: dict[str, object] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found |= settings(value, f"{prefix}{name}.")
        else:
            found[prefix + name] = value
    return found


def test_the_example_config_sets_every_key_to_its_default() -> None:
    """Every key is listed (uncommented or as '# key = …') and each one set holds the code's default."""
    text = (ROOT / "systemd" / "server.example.toml").read_text(encoding="utf-8")
    defaults = settings(ServerConfig())
    given = settings(load_config(ROOT / "systemd" / "server.example.toml"))
    section, listed = "", set()
    for line in text.splitlines():
        stripped = line.strip().lstrip("# ")
        if stripped.startswith("[") and "=" not in stripped:
            section = stripped.strip("[]") + "."
        elif re.match(r"^\w+ = ", stripped):
            listed.add(section + stripped.split(" ", 1)[0])
    assert sorted(set(defaults) - listed) == []
    assert {key: given[key] for key in defaults if given[key] != defaults[key]} == {}
