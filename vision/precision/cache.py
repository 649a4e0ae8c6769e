"""<state_dir>/cache/precision.json: the auto choices measured, per (model id, device, OpenVINO version),
so that a restart does not measure again. Another device or OpenVINO version is a miss."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from facefleet.core.files import write_atomic
from facefleet.vision.precision.choice import Choice

log = logging.getLogger(__name__)
CACHE_NAME = "precision.json"
FORMAT_VERSION = 1


def cache_path(state_dir: Path) -> Path:
    """Where an agent keeps its choices: beside OpenVINO's model cache, <state_dir>/cache."""
    return state_dir / "cache" / CACHE_NAME


class PrecisionCache:
    """The measured choices in one JSON file: {"format": 1, "choices": [{model_id, device, openvino, …}]}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def get(self, model_id: str, device: str, openvino: str) -> Choice | None:
        """The choice measured for this model on this device and OpenVINO version, or None."""
        for entry in self._entries():
            if (entry.get("model_id"), entry.get("device"), entry.get("openvino")) == (
                model_id,
                device,
                openvino,
            ):
                try:
                    return Choice.from_json(entry["choice"])
                except (KeyError, TypeError, ValueError):
                    return None
        return None

    def put(self, choice: Choice, device: str, openvino: str) -> None:
        """Record (or replace) the choice for its model on this device and OpenVINO version."""
        with self._lock:
            key = (choice.model_id, device, openvino)
            entries = [
                e for e in self._entries() if (e.get("model_id"), e.get("device"), e.get("openvino")) != key
            ]
            entry = {"model_id": choice.model_id, "device": device, "openvino": openvino}
            entries.append({**entry, "choice": choice.to_json()})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(
                self.path, json.dumps({"format": FORMAT_VERSION, "choices": entries}, indent=2) + "\n"
            )

    def _entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); precisions will be measured again", self.path, exc)
            return []
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            return []
        return [e for e in data.get("choices", []) if isinstance(e, dict)]
