"""Where the agent keeps its state: models, databases and the compiled-model cache."""

from __future__ import annotations

import os
from pathlib import Path

SERVICE_STATE_DIR = Path("/var/lib/facefleet-agent")


def resolve_state_dir(cli_value: Path | None, config_value: Path | None) -> Path:
    """--state-dir, then the config's state_dir, then $FACEFLEET_STATE_DIR, then systemd's
    $STATE_DIRECTORY or /var/lib/facefleet-agent under systemd, else ~/.local/share/facefleet-agent."""
    for candidate in (cli_value, config_value):
        if candidate is not None:
            return candidate.expanduser()
    if os.environ.get("FACEFLEET_STATE_DIR"):
        return Path(os.environ["FACEFLEET_STATE_DIR"]).expanduser()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("INVOCATION_ID"):
        return SERVICE_STATE_DIR
    return Path.home() / ".local" / "share" / "facefleet-agent"


def model_store_dir(state_dir: Path) -> Path:
    return state_dir / "models"
