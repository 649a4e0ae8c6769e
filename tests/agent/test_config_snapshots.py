"""The [snapshots] config section: its defaults, bad values refused naming the key and the fix, and every
key documented with its default in the README and set in the example config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facefleet.agent.config import AgentConfig, SnapshotsConfig, load_config
from facefleet.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[2]


def test_snapshots_of_unknown_faces_go_to_the_server_by_default_and_nothing_is_published() -> None:
    section = AgentConfig().snapshots
    assert (section.report, section.keep_days, section.max_pending_mb) == ("unknown", 7, 256)
    assert (section.context_px, section.jpeg_quality, section.context_jpeg_quality) == (320, 90, 75)
    assert section.publish_latest is False


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('report = "sometimes"', "'snapshots.report': Input should be 'unknown', 'all' or 'none'"),
        ("context_px = 400", "'snapshots.context_px': Input should be less than or equal to 320"),
        ("context_px = 10", "context_px 10 is too small to show a face: use 32–320, or 0 for none"),
        ("max_pending_mb = 0", "'snapshots.max_pending_mb': Input should be greater than or equal to 1"),
        ("keep_days = 0", "'snapshots.keep_days': Input should be greater than or equal to 1"),
        ("jpeg_quality = 101", "'snapshots.jpeg_quality': Input should be less than or equal to 100"),
        ("crop_px = 112", "unknown key 'snapshots.crop_px'"),
    ],
)
def test_a_bad_snapshots_value_is_refused_naming_the_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"[snapshots]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_readme_documents_every_snapshots_key_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("### Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    assert AgentConfig.model_validate(tomllib.loads(block)).snapshots == SnapshotsConfig()
    section = block.split("\n[snapshots]", 1)[1].split("\n[", 1)[0]
    documented = {line.split("=")[0].strip() for line in section.splitlines()[1:] if "=" in line}
    assert documented == set(SnapshotsConfig.model_fields)


def test_the_example_config_sets_every_snapshots_key() -> None:
    path = ROOT / "systemd" / "agent.example.toml"
    assert set(tomllib.loads(path.read_text())["snapshots"]) == set(SnapshotsConfig.model_fields)
    assert load_config(path).snapshots == SnapshotsConfig()
