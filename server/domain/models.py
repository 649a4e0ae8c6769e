"""Domain types of model versions and rollouts: published models, rollout targets and states, the releases
an agent should run, and the activation statuses agents report. Frozen dataclasses validated on construction.

Times are timezone-aware UTC datetimes; sizes are bytes; sha256 is lowercase hex.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from facefleet.link.checks import (
    check_groups,
    check_model_id,
    check_task,
)
from facefleet.link.models import ModelFile, ModelStatus
from facefleet.server.errors import InvalidArgumentError
from facefleet.vision.models.manifest import ModelManifest

RolloutState = Literal["preparing", "active", "paused", "rolled_back"]
ROLLOUT_STATES: tuple[RolloutState, ...] = ("preparing", "active", "paused", "rolled_back")
DeviceState = Literal["assigned", "downloading", "verifying", "active", "failed", "retrying"]
DEVICE_STATES: tuple[DeviceState, ...] = (
    "assigned",
    "downloading",
    "verifying",
    "active",
    "failed",
    "retrying",
)
"""Where a rollout stands on one device; failed: refused for this rollout; retrying: failed for now, tried
again by the agent."""
TargetKind = Literal["all", "group", "percent"]
TARGET_KINDS: tuple[TargetKind, ...] = ("all", "group", "percent")
FailureAction = Literal["pause", "rollback"]
FAILURE_ACTIONS: tuple[FailureAction, ...] = ("pause", "rollback")
"""What the server does to a rollout once more agents refused it than its max_failures allows."""


@dataclass(frozen=True)
class PublishedModel:
    """A model version in the server's catalogue. manifest_json: its manifest.json text as stored;
    runs_in_place_of: the float model this INT8 variant was published to run in the place of (read from
    manifest_json when not given): its rollout keeps that model's gallery, agents measure the variant."""

    model_id: str
    task: str
    precision: str
    licence: str
    files: tuple[ModelFile, ...]
    manifest_json: str
    published_at: datetime
    retired_at: datetime | None = None
    runs_in_place_of: str | None = None

    def __post_init__(self) -> None:
        check_model_id(self.model_id)
        check_task(self.task)
        if self.runs_in_place_of is None and self.manifest_json:
            object.__setattr__(self, "runs_in_place_of", _in_place_of(self.manifest_json))

    @property
    def name(self) -> str:
        return self.model_id.partition("@")[0]

    @property
    def version(self) -> str:
        return self.model_id.partition("@")[2]

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> ModelFile | None:
        return next((f for f in self.files if f.name == name), None)


@dataclass(frozen=True)
class Target:
    """Which agents a rollout covers: all, those declaring `group`, or `percent` % of the fleet."""

    kind: TargetKind
    group: str = ""
    percent: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise InvalidArgumentError(f"rollout target must be one of {', '.join(TARGET_KINDS)}")
        if self.kind == "group":
            check_groups((self.group,))
        elif self.group:
            raise InvalidArgumentError("a rollout target names a group only when its kind is 'group'")
        if self.kind == "percent" and not 1 <= self.percent <= 100:
            raise InvalidArgumentError(f"rollout percent must be 1–100, got {self.percent}")
        if self.kind != "percent" and self.percent:
            raise InvalidArgumentError("a rollout target has a percent only when its kind is 'percent'")

    def describe(self) -> str:
        return {"all": "all agents", "group": f"group {self.group}", "percent": f"{self.percent} %"}[
            self.kind
        ]


MAX_FAILURE_COUNT = 1_000_000
"""The largest failure budget a rollout takes as a count (more agents than any fleet has)."""


@dataclass(frozen=True)
class MaxFailures:
    """A rollout's failure budget: it tolerates `count` refusals, or refusals from `percent` % of the agents
    it was announced to (exactly one of the two is set); one more stops it."""

    count: int | None = None
    percent: int | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.percent is not None:
            raise InvalidArgumentError("max_failures: give a count or a percent, not both")
        if self.count is None and self.percent is None:
            raise InvalidArgumentError("max_failures: give a count (e.g. 2) or a percent (e.g. 20 %)")
        if self.count is not None and not 0 <= self.count <= MAX_FAILURE_COUNT:
            raise InvalidArgumentError(f"max_failures.count must be 0–{MAX_FAILURE_COUNT}, got {self.count}")
        if self.percent is not None and not 0 <= self.percent <= 100:
            raise InvalidArgumentError(f"max_failures.percent must be 0–100, got {self.percent}")

    @classmethod
    def parse(cls, text: str) -> MaxFailures:
        """'2' (a count) or '20%' (a percent), as an operator types it."""
        number = text.strip().removesuffix("%").strip()
        try:
            value = int(number)
        except ValueError:
            raise InvalidArgumentError(
                f"max_failures {text!r} is neither a count nor a percent; give e.g. 2 or 20%"
            ) from None
        return cls(percent=value) if text.strip().endswith("%") else cls(count=value)

    def exceeded(self, refused: int, announced: int) -> bool:
        """Whether `refused` refusals among `announced` agents are more than this budget tolerates."""
        if self.count is not None:
            return refused > self.count
        return refused > 0 and refused * 100 > (self.percent or 0) * announced

    def describe(self) -> str:
        return f"{self.count}" if self.count is not None else f"{self.percent} %"


@dataclass(frozen=True)
class Rollout:
    """A model version targeted at part of the fleet. While preparing, updated_at is the preparing
    process's last sign of progress. max_failures: how many refusals it tolerates (None: any number);
    on_failures: what the server does to it past them; reason: why it was paused or rolled back when an
    operator did not do it."""

    rollout_id: int
    task: str
    model_id: str
    target: Target
    state: RolloutState
    created_at: datetime
    updated_at: datetime
    reason: str = ""
    max_failures: MaxFailures | None = None
    on_failures: FailureAction = "pause"

    def __post_init__(self) -> None:
        if self.state not in ROLLOUT_STATES:
            raise InvalidArgumentError(f"rollout state must be one of {', '.join(ROLLOUT_STATES)}")
        if self.on_failures not in FAILURE_ACTIONS:
            raise InvalidArgumentError(f"on_failures must be one of {', '.join(FAILURE_ACTIONS)}")


@dataclass(frozen=True)
class DeviceRollout:
    """How one rollout stands on one device. previous_model_id: what the device ran for the task when the
    rollout was first announced to it ('' when it reported nothing)."""

    rollout_id: int
    device_id: str
    previous_model_id: str
    state: DeviceState
    reason: str
    updated_at: datetime


@dataclass(frozen=True)
class AgentModels:
    """The rollout-related state of one agent: its declared groups and latest status per task."""

    device_id: str
    groups: tuple[str, ...] = ()
    statuses: tuple[ModelStatus, ...] = ()


def _in_place_of(manifest_json: str) -> str | None:
    try:
        return ModelManifest.from_json(json.loads(manifest_json)).runs_in_place_of
    except (ValueError, KeyError, TypeError):
        return None
