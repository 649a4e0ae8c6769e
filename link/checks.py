"""Limits and checks of the values the agent-server link carries: ids, names, groups, metadata, model
ids, tasks, times. Each check raises LinkError naming the field and the limit."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone

import numpy as np
import numpy.typing as npt

from facefleet.link.errors import LinkError
from facefleet.vision.models.tasks import TASKS

FloatArray = npt.NDArray[np.float32]
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
"""person_id and device_id: 1–128 letters, digits, '.', '_', ':', '@', '-', starting alphanumeric."""
MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}@[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MAX_NAME_CHARS = 200
MAX_GROUPS = 64
MAX_LABEL_CHARS = 128
MAX_METADATA_BYTES = 16 * 1024
MAX_EMBEDDINGS_PER_PERSON = 256
MIN_DIM, MAX_DIM = 16, 4096
MAX_MAP_ENTRIES = 32
MAX_HEALTH_ENTRIES = 128
"""Health figures of one agent: its totals, the link's own and a few per camera ("camera.<name>.fps")."""
MAX_HEALTH_KEY_CHARS = 64
MAX_REASON_CHARS = 512
MAX_REVISION = 2**63 - 1
"""The largest gallery revision: what a signed 64-bit database integer holds."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_id(kind: str, value: str) -> str:
    if not ID_PATTERN.fullmatch(value):  # not match with `$`: that takes a trailing newline
        raise LinkError(
            f"{kind} {value[:80]!r} is not valid: use 1–128 letters, digits, '.', '_', ':', '@' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_text(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise LinkError(f"{name} is {len(value)} characters long; the limit is {limit}")
    if any(ord(ch) < 32 for ch in value):
        raise LinkError(f"{name} contains control characters")
    return value


def check_model_id(value: str) -> str:
    if not MODEL_ID_PATTERN.fullmatch(value):
        raise LinkError(f"model id {value[:80]!r} is not valid: expected '<name>@<version>'")
    return value


def check_metadata(value: str) -> str:
    """A JSON object as compact text; '' means '{}'."""
    if not value:
        return "{}"
    if len(value.encode("utf-8")) > MAX_METADATA_BYTES:
        raise LinkError(f"metadata_json is over the {MAX_METADATA_BYTES // 1024} KiB limit")
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise LinkError(f"metadata_json is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise LinkError(f"metadata_json must be a JSON object, got {type(parsed).__name__}")
    return json.dumps(parsed, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def check_groups(groups: tuple[str, ...]) -> tuple[str, ...]:
    if len(groups) > MAX_GROUPS:
        raise LinkError(f"{len(groups)} groups; the limit is {MAX_GROUPS}")
    for group in groups:
        if not group or len(group) > MAX_LABEL_CHARS or any(ord(ch) < 33 for ch in group):
            raise LinkError(
                f"group {group[:80]!r} is not valid: 1–{MAX_LABEL_CHARS} characters without spaces"
            )
    return tuple(dict.fromkeys(groups))


def check_utc(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise LinkError(f"{name} must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc)


def check_health(health: Mapping[str, float]) -> dict[str, float]:
    """Agent health figures: at most MAX_HEALTH_ENTRIES names of 1–MAX_HEALTH_KEY_CHARS characters with
    finite values."""
    if len(health) > MAX_HEALTH_ENTRIES or any(
        not key or len(key) > MAX_HEALTH_KEY_CHARS or not math.isfinite(value)
        for key, value in health.items()
    ):
        raise LinkError(
            f"health: at most {MAX_HEALTH_ENTRIES} figures with 1–{MAX_HEALTH_KEY_CHARS} character names, "
            "finite values"
        )
    return dict(health)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise LinkError(f"task {task[:40]!r} is not one of {', '.join(TASKS)}")
    return task


TASK_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""A task's name, known to this release or not (one a later release adds): 1–32 lower-case characters."""


def check_task_name(task: str) -> str:
    """A well-formed task name, whether or not this release knows the task (check_task)."""
    if not TASK_NAME_PATTERN.fullmatch(task):
        raise LinkError(f"task {task[:40]!r} is not a task name: 1–32 lower-case letters, digits, '_' or '-'")
    return task
