"""Where a FaceFleet program keeps its state: models, databases and the compiled-model cache."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_state_dir(program: str, cli_value: Path | None, config_value: Path | None) -> Path:
    """--state-dir, then the config's state_dir, then $FACEFLEET_STATE_DIR, then systemd's
    $STATE_DIRECTORY or /var/lib/<program> under systemd, else ~/.local/share/<program>.

    `program` is "facefleet-agent" or "facefleet-server"."""
    for candidate in (cli_value, config_value):
        if candidate is not None:
            return candidate.expanduser()
    if os.environ.get("FACEFLEET_STATE_DIR"):
        return Path(os.environ["FACEFLEET_STATE_DIR"]).expanduser()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("INVOCATION_ID"):
        return Path("/var/lib") / program
    return Path.home() / ".local" / "share" / program


def model_store_dir(state_dir: Path) -> Path:
    """The model store under a state directory."""
    return state_dir / "models"
