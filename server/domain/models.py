"""Domain types of model versions and rollouts: published models, rollout targets and states, the releases
an agent should run, and the activation statuses agents report. Frozen dataclasses validated on construction.

Times are timezone-aware UTC datetimes; sizes are bytes; sha256 is lowercase hex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from facefleet.server.domain.records import (
    MAX_LABEL_CHARS,
    MAX_REASON_CHARS,
    check_groups,
    check_model_id,
    check_utc,
)
from facefleet.server.errors import InvalidArgumentError
from facefleet.vision.models.tasks import TASKS

RolloutState = Literal["preparing", "active", "paused", "rolled_back"]
ROLLOUT_STATES: tuple[RolloutState, ...] = ("preparing", "active", "paused", "rolled_back")
DeviceState = Literal["assigned", "downloading", "verifying", "active", "failed"]
DEVICE_STATES: tuple[DeviceState, ...] = ("assigned", "downloading", "verifying", "active", "failed")
Activation = Literal["downloading", "verifying", "active", "failed"]
ACTIVATIONS: tuple[Activation, ...] = ("downloading", "verifying", "active", "failed")
TargetKind = Literal["all", "group", "percent"]
TARGET_KINDS: tuple[TargetKind, ...] = ("all", "group", "percent")
MAX_STATUSES = 16
"""Most model statuses in one ReportModelStatus or Register call."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def check_task(task: str) -> str:
    if task not in TASKS:
        raise InvalidArgumentError(f"task {task[:40]!r} is not one of {', '.join(TASKS)}")
    return task


@dataclass(frozen=True)
class ModelFile:
    """One file of a published model version."""

    name: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if not _FILE_NAME.match(self.name):
            raise InvalidArgumentError(f"model file name {self.name[:80]!r} is not a plain file name")
        if self.size < 0 or not _SHA256.match(self.sha256):
            raise InvalidArgumentError(f"model file {self.name}: bad size or sha256")


@dataclass(frozen=True)
class PublishedModel:
    """A model version in the server's catalogue. manifest_json: its manifest.json text as stored."""

    model_id: str
    task: str
    precision: str
    licence: str
    files: tuple[ModelFile, ...]
    manifest_json: str
    published_at: datetime
    retired_at: datetime | None = None

    def __post_init__(self) -> None:
        check_model_id(self.model_id)
        check_task(self.task)

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


@dataclass(frozen=True)
class Rollout:
    """A model version targeted at part of the fleet. While preparing, updated_at is the preparing
    process's last sign of progress; reason: why it was rolled back when an operator did not do it."""

    rollout_id: int
    task: str
    model_id: str
    target: Target
    state: RolloutState
    created_at: datetime
    updated_at: datetime
    reason: str = ""

    def __post_init__(self) -> None:
        if self.state not in ROLLOUT_STATES:
            raise InvalidArgumentError(f"rollout state must be one of {', '.join(ROLLOUT_STATES)}")


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
class Release:
    """A model version one agent should run for a task. files empty: activate the copy the agent stores."""

    task: str
    model_id: str
    files: tuple[ModelFile, ...] = ()
    manifest_json: str = ""
    rollout_id: int = 0


@dataclass(frozen=True)
class ModelStatus:
    """What an agent reports about an assigned model version (reason: why it failed, or progress)."""

    task: str
    model_id: str
    rollout_id: int
    state: Activation
    reason: str = ""
    time: datetime | None = None

    def __post_init__(self) -> None:
        check_task(self.task)
        check_model_id(self.model_id)
        if self.state not in ACTIVATIONS:
            raise InvalidArgumentError(
                f"model status of {self.model_id}: state must be one of {', '.join(ACTIVATIONS)}"
            )
        if self.rollout_id < 0:
            raise InvalidArgumentError("rollout_id must not be negative")
        if len(self.reason) > MAX_REASON_CHARS:
            raise InvalidArgumentError(
                f"model status of {self.model_id}: reason is {len(self.reason)} characters long; "
                f"the limit is {MAX_REASON_CHARS}"
            )
        # An exception text may hold newlines; keep it on one line rather than refusing the report.
        object.__setattr__(self, "reason", "".join(" " if ord(c) < 32 else c for c in self.reason))
        if self.time is not None:
            object.__setattr__(self, "time", check_utc("model status time", self.time))


def check_statuses(statuses: tuple[ModelStatus, ...]) -> tuple[ModelStatus, ...]:
    if len(statuses) > MAX_STATUSES:
        raise InvalidArgumentError(f"{len(statuses)} model statuses in one call; the limit is {MAX_STATUSES}")
    return statuses


def check_model_versions(versions: dict[str, str]) -> dict[str, str]:
    """Active model ids by task, as an agent reports them."""
    for task, model_id in versions.items():
        check_task(task)
        if len(model_id) > MAX_LABEL_CHARS:
            raise InvalidArgumentError(f"model_versions[{task}] is too long")
        check_model_id(model_id)
    return versions


@dataclass(frozen=True)
class AgentModels:
    """The rollout-related state of one agent: its declared groups and latest status per task."""

    device_id: str
    groups: tuple[str, ...] = ()
    statuses: tuple[ModelStatus, ...] = ()


@dataclass(frozen=True)
class ModelAssignment:
    """The whole set of releases one agent should run, as sent on its Watch stream."""

    releases: tuple[Release, ...]
