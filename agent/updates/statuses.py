"""updates.json in the model store: the latest status of the version the server assigned for each task, so a
restarted agent neither retries a version it refused for the same rollout nor forgets why it refused it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from facefleet.core.files import write_atomic
from facefleet.link.models import ModelStatus
from facefleet.vision.models.store import ModelStore

log = logging.getLogger(__name__)

STATUS_FILE = "updates.json"


def load_statuses(store: ModelStore) -> dict[str, ModelStatus]:
    """task → the latest status of the version the server assigned for it (empty when none was)."""
    path = store.root / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {task: status_from_json(s) for task, s in data["statuses"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:  # LinkError is a ValueError
        log.warning("%s unreadable (%s); model statuses start afresh", path, exc)
        return {}


def save_statuses(store: ModelStore, statuses: dict[str, ModelStatus]) -> None:
    """Replace updates.json atomically; a failure is logged (the statuses still go to the server)."""
    data = {"statuses": {task: status_to_json(s) for task, s in sorted(statuses.items())}}
    try:
        write_atomic(store.root / STATUS_FILE, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        log.warning("model statuses not saved (%s)", exc)


def status_to_json(status: ModelStatus) -> dict[str, Any]:
    """A status as updates.json and the agent's status payloads hold it; at: unix seconds (0 when unknown)."""
    return {
        "task": status.task,
        "model_id": status.model_id,
        "rollout_id": status.rollout_id,
        "state": status.state,
        "reason": status.reason,
        "at": status.time.timestamp() if status.time is not None else 0.0,
        "final": status.final,
    }


def status_from_json(data: Mapping[str, Any]) -> ModelStatus:
    """The inverse of status_to_json; a malformed entry raises ValueError, KeyError or TypeError."""
    at = float(data.get("at", 0.0))
    return ModelStatus(
        str(data["task"]),
        str(data["model_id"]),
        int(data.get("rollout_id", 0)),
        data["state"],
        str(data.get("reason", "")),
        datetime.fromtimestamp(at, timezone.utc) if at > 0 else None,
        bool(data.get("final", True)),
    )
