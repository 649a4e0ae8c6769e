"""Model versions on the link: the releases an agent should run (its assignment) and the activation
statuses it reports. Sizes are bytes; sha256 is lowercase hex."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from facefleet.link.checks import (
    MAX_LABEL_CHARS,
    MAX_REASON_CHARS,
    check_model_id,
    check_task,
    check_task_name,
    check_utc,
)
from facefleet.link.errors import LinkError
from facefleet.vision.models.tasks import TASKS

Activation = Literal["downloading", "verifying", "active", "failed"]
ACTIVATIONS: tuple[Activation, ...] = ("downloading", "verifying", "active", "failed")
MAX_STATUSES = 16
"""Most model statuses in one ReportModelStatus or Register call."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class ModelFile:
    """One file of a published model version."""

    name: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if not _FILE_NAME.fullmatch(self.name):
            raise LinkError(f"model file name {self.name[:80]!r} is not a plain file name")
        if self.size < 0 or not _SHA256.fullmatch(self.sha256):
            raise LinkError(f"model file {self.name}: bad size or no valid sha256 (64 lowercase hex digits)")


MAX_RELEASE_FILES = 8
MAX_RELEASE_FILE_BYTES = 4 * 1024**3
MAX_MANIFEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ModelRelease:
    """A model version one agent should run for a task. files empty: activate the copy the agent stores (a
    rollback); manifest_json: the version's manifest.json text ('' when files is empty). Checked so that
    nothing in it can name a path outside a model store or make an agent download without bound."""

    task: str
    model_id: str
    files: tuple[ModelFile, ...] = ()
    manifest_json: str = ""
    rollout_id: int = 0

    def __post_init__(self) -> None:
        what = f"model release {self.model_id[:80]!r} ({self.task[:20]!r})"
        try:
            check_task(self.task)
            check_model_id(self.model_id)
        except LinkError as exc:
            raise LinkError(f"{what}: {exc}") from None
        object.__setattr__(self, "files", tuple(self.files))
        if len(self.files) > MAX_RELEASE_FILES:
            raise LinkError(f"{what}: {len(self.files)} files; at most {MAX_RELEASE_FILES}")
        for file in self.files:
            if file.name == "manifest.json" or len(file.name) > 64:
                raise LinkError(f"{what}: file name {file.name[:80]!r} is not allowed")
            if not 0 < file.size <= MAX_RELEASE_FILE_BYTES:
                raise LinkError(f"{what}: file {file.name} has size {file.size}; expected 1 B to 4 GiB")
        if len({f.name for f in self.files}) != len(self.files):
            raise LinkError(f"{what}: a file is listed twice")
        if len(self.manifest_json.encode()) > MAX_MANIFEST_BYTES:
            raise LinkError(f"{what}: manifest_json is over {MAX_MANIFEST_BYTES // 1024} KiB")
        if bool(self.files) != bool(self.manifest_json):
            raise LinkError(f"{what}: files and manifest_json come together (both or neither)")
        if self.rollout_id < 0:
            raise LinkError(f"{what}: rollout_id must not be negative")

    @property
    def name_version(self) -> tuple[str, str]:
        name, _, version = self.model_id.partition("@")
        return name, version


@dataclass(frozen=True)
class ModelStatus:
    """What an agent reports about an assigned model version (reason: why it failed, or progress; time:
    when). final: whether a failure refuses the version for this rollout (False: the agent tries it again;
    `retrying` on the wire)."""

    task: str
    model_id: str
    rollout_id: int
    state: Activation
    reason: str = ""
    time: datetime | None = None
    final: bool = True

    def __post_init__(self) -> None:
        check_task_name(self.task)  # also one this release does not know: an agent refuses its release
        check_model_id(self.model_id)
        if self.state not in ACTIVATIONS:
            raise LinkError(f"model status of {self.model_id}: state must be one of {', '.join(ACTIVATIONS)}")
        if self.rollout_id < 0:
            raise LinkError("rollout_id must not be negative")
        if len(self.reason) > MAX_REASON_CHARS:
            raise LinkError(
                f"model status of {self.model_id}: reason is {len(self.reason)} characters long; "
                f"the limit is {MAX_REASON_CHARS}"
            )
        # An exception text may hold newlines; keep it on one line rather than refusing the report.
        object.__setattr__(self, "reason", "".join(" " if ord(c) < 32 else c for c in self.reason))
        if self.time is not None:
            object.__setattr__(self, "time", check_utc("model status time", self.time))


def check_statuses(statuses: tuple[ModelStatus, ...]) -> tuple[ModelStatus, ...]:
    if len(statuses) > MAX_STATUSES:
        raise LinkError(f"{len(statuses)} model statuses in one call; the limit is {MAX_STATUSES}")
    return statuses


def check_model_versions(versions: dict[str, str]) -> dict[str, str]:
    """Active model ids by task, as an agent reports them."""
    for task, model_id in versions.items():
        check_task(task)
        if len(model_id) > MAX_LABEL_CHARS:
            raise LinkError(f"model_versions[{task}] is too long")
        check_model_id(model_id)
    return versions


_PRECISION_LABEL = re.compile(r"^(?:f32|f16|bf16|int8 \((.+)\))$")
"""An OpenVINO inference precision hint, or an INT8 variant (its model id) run in a float model's place."""


def check_model_precisions(precisions: dict[str, str]) -> dict[str, str]:
    """What each active model runs at on the agent's device, by task, as an agent reports it: 'f32', 'bf16',
    'f16', or 'int8 (<model id>)' for an INT8 variant run in the float model's place."""
    for task, label in precisions.items():
        check_task(task)
        match = _PRECISION_LABEL.match(label) if len(label) <= MAX_LABEL_CHARS else None
        if match is None:
            raise LinkError(
                f"model_precisions[{task}] {label[:80]!r} is not a precision: expected e.g. 'bf16' or "
                "'int8 (<model id>)'"
            )
        if match.group(1) is not None:
            check_model_id(match.group(1))
    return precisions


def known_model_versions(versions: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The entries of an agent's model_versions whose task this release knows, and a note on each other
    one (a task of a newer agent), for the caller to log."""
    known = {task: model_id for task, model_id in versions.items() if task in TASKS}
    notes = tuple(
        f"model_versions[{task[:40]!r}]: task {task[:40]!r}" for task in versions if task not in TASKS
    )
    return known, notes


def known_model_precisions(precisions: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The entries of an agent's model_precisions with a task and a precision this release knows, and a
    note on each other one (a newer agent's task or precision, e.g. 'int4'), for the caller to log."""
    known: dict[str, str] = {}
    notes: list[str] = []
    for task, label in precisions.items():
        if task not in TASKS:
            notes.append(f"model_precisions[{task[:40]!r}]: task {task[:40]!r}")
        elif len(label) > MAX_LABEL_CHARS or not _PRECISION_LABEL.match(label):
            notes.append(f"model_precisions[{task!r}]: precision {label[:40]!r}")
        else:
            known[task] = label
    return known, tuple(notes)


@dataclass(frozen=True)
class UnsupportedRelease:
    """A release of a task this agent does not know (a later release added it): not run, reported failed."""

    task: str
    model_id: str
    rollout_id: int = 0

    def refusal(self, agent_version: str) -> str:
        """Why the agent refuses it, as its failed model status says."""
        return (
            f"this agent (version {agent_version or 'unknown'}) does not know the task {self.task!r} of "
            f"model {self.model_id}: the server is newer; upgrade the agent to run it"
        )


@dataclass(frozen=True)
class ModelAssignment:
    """The whole set of releases one agent should run, as sent on its Watch stream: at most one per task.
    unsupported: releases of tasks this side does not know, left out of `releases` (facefleet.link.serde)."""

    releases: tuple[ModelRelease, ...] = ()
    unsupported: tuple[UnsupportedRelease, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "releases", tuple(self.releases))
        object.__setattr__(self, "unsupported", tuple(self.unsupported))
        tasks = [r.task for r in self.releases]
        if len(set(tasks)) != len(tasks):
            raise LinkError(f"model assignment names a task twice ({', '.join(sorted(tasks))})")

    def by_task(self) -> dict[str, ModelRelease]:
        return {release.task: release for release in self.releases}
