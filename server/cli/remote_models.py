"""`models` and `rollout` verbs against a remote server: the calls of the local model catalogue and rollout
control that the verbs use, answered by the server's HTTP API (/api/models, /api/rollouts) and read back into
the same domain types, so both print alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from facefleet.link.checks import check_model_id
from facefleet.link.models import ModelFile
from facefleet.server.cli.remote import RemoteServer, upload_deadline
from facefleet.server.domain.models import (
    DeviceRollout,
    FailureAction,
    MaxFailures,
    PublishedModel,
    Rollout,
    Target,
)
from facefleet.server.errors import InvalidArgumentError, NotFoundError
from facefleet.server.rollouts.control import StartedRollout
from facefleet.vision.errors import ModelSpecError
from facefleet.vision.models.importer import ir_weights

MAX_UPLOAD_FILES = 2
"""A model is one .onnx or .tflite file, or an IR's .xml and .bin."""
REEMBED_DEADLINE_S = 3600.0
"""How long `rollout start` waits for its answer: the server re-embeds the gallery of an embedding model
before it answers."""


class RemoteCatalog:
    """The published models of a remote server. conversion_s: how long the server may convert a model
    (its models.convert_timeout_s; the command line's own config gives it), which a publish waits for."""

    def __init__(self, remote: RemoteServer, conversion_s: float) -> None:
        self.remote = remote
        self.conversion_s = conversion_s

    def published(self) -> list[PublishedModel]:
        return [model_from(m) for m in self.remote.get(("models",))["models"]]

    def show(self, model_id: str) -> PublishedModel:
        for model in self.published():
            if model.model_id == model_id:
                return model
        raise NotFoundError(f"no published model {model_id!r}; `facefleet-server models list` shows them")

    def retire(self, model_id: str) -> PublishedModel:
        return model_from(self.remote.post(("models", check_model_id(model_id), "retire")))

    def publish(
        self, path: Path, task: str, name: str, version: str, precision: str, licence: str
    ) -> PublishedModel:
        """Upload a model file, or an IR folder or file (.xml with its .bin), and publish it."""
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".xml", ".bin"))
        elif path.suffix.lower() == ".xml" and path.is_file():
            try:
                files = [path, ir_weights(path)]
            except ModelSpecError as exc:  # not IR, or its .bin is missing: say so before uploading
                raise InvalidArgumentError(str(exc)) from None
        else:
            files = [path]
        if not files or len(files) > MAX_UPLOAD_FILES or not all(f.is_file() for f in files):
            raise InvalidArgumentError(
                f"{path}: give one .onnx or .tflite file, or an OpenVINO IR (.xml beside its .bin)"
            )
        fields = {"task": task, "name": name, "version": version, "precision": precision, "licence": licence}
        handles = [f.open("rb") for f in files]
        try:
            uploads = [("files", (f.name, handle)) for f, handle in zip(files, handles, strict=True)]
            deadline = upload_deadline(sum(f.stat().st_size for f in files), self.conversion_s)
            return model_from(self.remote.post(("models",), data=fields, files=uploads, deadline_s=deadline))
        finally:
            for handle in handles:
                handle.close()


class RemoteControl:
    """The rollouts of a remote server."""

    def __init__(self, remote: RemoteServer) -> None:
        self.remote = remote

    def all_rollouts(self) -> list[Rollout]:
        return [rollout_from(r) for r in self.remote.get(("rollouts",))["rollouts"]]

    def show(self, rollout_id: int) -> tuple[Rollout, list[DeviceRollout]]:
        detail = self.remote.get(("rollouts", rollout_id))
        rollout = rollout_from(detail["rollout"])
        return rollout, [device_from(rollout_id, d) for d in detail["devices"]]

    def start(
        self,
        model_id: str,
        target: Target,
        *,
        max_failures: MaxFailures | None,
        on_failures: FailureAction,
        progress: Callable[[int, int], None] | None = None,
    ) -> StartedRollout:
        body: dict[str, Any] = {
            "model_id": model_id,
            "target": {"kind": target.kind, "group": target.group, "percent": target.percent},
            "on_failures": on_failures,
        }
        if max_failures is not None:
            body["max_failures"] = {"count": max_failures.count, "percent": max_failures.percent}
        started = self.remote.post(("rollouts",), body, deadline_s=REEMBED_DEADLINE_S)
        return StartedRollout(
            rollout_from(started["rollout"]),
            tuple(started["reembedded"]),
            tuple(started["without_crops"]),
            started.get("runs_in_place_of"),
        )

    def pause(self, rollout_id: int) -> Rollout:
        return rollout_from(self.remote.post(("rollouts", rollout_id, "pause"), {}))

    def resume(self, rollout_id: int, percent: int | None = None) -> Rollout:
        return rollout_from(self.remote.post(("rollouts", rollout_id, "resume"), {"percent": percent}))

    def rollback(self, rollout_id: int) -> Rollout:
        return rollout_from(self.remote.post(("rollouts", rollout_id, "rollback"), {}))


def model_from(data: dict[str, Any]) -> PublishedModel:
    return PublishedModel(
        model_id=data["model_id"],
        task=data["task"],
        precision=data["precision"],
        licence=data["licence"],
        files=tuple(ModelFile(f["name"], f["size"], f["sha256"]) for f in data["files"]),
        manifest_json=data.get("manifest_json", ""),
        published_at=_time(data["published_at"]),
        retired_at=_time(data["retired_at"]) if data["retired_at"] else None,
        runs_in_place_of=data.get("runs_in_place_of"),
    )


def rollout_from(data: dict[str, Any]) -> Rollout:
    target, budget = data["target"], data["max_failures"]
    return Rollout(
        rollout_id=data["rollout_id"],
        task=data["task"],
        model_id=data["model_id"],
        target=Target(target["kind"], target.get("group", ""), target.get("percent", 0)),
        state=data["state"],
        created_at=_time(data["created_at"]),
        updated_at=_time(data["updated_at"]),
        reason=data["reason"],
        max_failures=None if budget is None else MaxFailures(budget.get("count"), budget.get("percent")),
        on_failures=data["on_failures"],
    )


def device_from(rollout_id: int, data: dict[str, Any]) -> DeviceRollout:
    return DeviceRollout(
        rollout_id=rollout_id,
        device_id=data["device_id"],
        previous_model_id=data["previous_model_id"],
        state=data["state"],
        reason=data["reason"],
        updated_at=_time(data["updated_at"]),
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
