"""updates.json in the model store: the latest status of the version the server assigned for each task, so a
restarted agent neither retries a version it refused for the same rollout nor forgets why it refused it."""

from __future__ import annotations

import json
import logging

from facefleet.agent.domain.fleet import ModelStatus
from facefleet.vision.models.store import ModelStore, write_atomic

log = logging.getLogger(__name__)

STATUS_FILE = "updates.json"


def load_statuses(store: ModelStore) -> dict[str, ModelStatus]:
    """task → the latest status of the version the server assigned for it (empty when none was)."""
    path = store.root / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {task: ModelStatus.from_json(s) for task, s in data["statuses"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s unreadable (%s); model statuses start afresh", path, exc)
        return {}


def save_statuses(store: ModelStore, statuses: dict[str, ModelStatus]) -> None:
    """Replace updates.json atomically; a failure is logged (the statuses still go to the server)."""
    data = {"statuses": {task: s.to_json() for task, s in sorted(statuses.items())}}
    try:
        write_atomic(store.root / STATUS_FILE, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        log.warning("model statuses not saved (%s)", exc)
