"""The liveness keys of a [[doors]] section: off by default, and a bad value is an error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from facefleet.agent.config import load_config
from facefleet.core.errors import ConfigError

BASE = """
[[cameras]]
name = "front"
source = "0"
[[doors]]
name = "front"
camera = "front"
"""


def test_liveness_is_off_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BASE)
    (door,) = load_config(path).doors
    assert (door.liveness, door.liveness_timeout_s, door.liveness_turn_deg) == ("off", 5.0, 15.0)
    path.write_text(BASE + 'liveness = "blink_turn"\nliveness_timeout_s = 8\nliveness_turn_deg = 20\n')
    (door,) = load_config(path).doors
    assert (door.liveness, door.liveness_timeout_s, door.liveness_turn_deg) == ("blink_turn", 8.0, 20.0)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('liveness = "wink"', "liveness"),
        ("liveness = true", "liveness"),
        ("liveness_timeout_s = 0", "liveness_timeout_s"),
        ("liveness_timeout_s = 600", "liveness_timeout_s"),
        ("liveness_turn_deg = 1", "liveness_turn_deg"),
    ],
)
def test_a_bad_liveness_value_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + line + "\n")
    with pytest.raises(ConfigError, match=key):
        load_config(path)
