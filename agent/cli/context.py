"""What every command needs: the loaded config, the state directory, and lazily built runtime parts."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rich.console import Console

from facefleet.agent.config import AgentConfig, load_config
from facefleet.agent.store.database import EmbeddingStore
from facefleet.core.cli import output_console
from facefleet.core.errors import FaceFleetError
from facefleet.core.paths import model_store_dir, resolve_state_dir
from facefleet.vision.models.store import ModelStore
from facefleet.vision.precision.cache import PrecisionCache, cache_path
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.runtime import Runtime


@dataclass
class Context:
    """Parsed global options plus the objects commands share."""

    config: AgentConfig
    state_dir: Path
    config_path: Path | None = None
    json_output: bool = False
    device_override: str | None = None
    console: Console = field(default_factory=output_console)
    errors: Console = field(default_factory=lambda: output_console(stderr=True))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        config = load_config(args.config)
        state_dir = resolve_state_dir("facefleet-agent", args.state_dir, config.state_dir)
        return cls(
            config=config,
            state_dir=state_dir,
            config_path=args.config,
            json_output=bool(getattr(args, "json", False)),
            device_override=getattr(args, "device", None),
        )

    @cached_property
    def runtime(self) -> Runtime:
        runtime_config = self.config.runtime
        if self.device_override:
            runtime_config = runtime_config.model_copy(update={"device": self.device_override})
        return Runtime(runtime_config.settings(self.state_dir))

    @cached_property
    def model_store(self) -> ModelStore:
        return ModelStore(model_store_dir(self.state_dir))

    @cached_property
    def precisions(self) -> PrecisionPlan:
        """What each model runs at: the overrides, or the agent's cached measurements (never measured here:
        models without one run at f32 until `models tune` or the agent measures them)."""
        return PrecisionPlan(
            self.runtime,
            self.model_store,
            self.config.runtime.precision_settings(),
            PrecisionCache(cache_path(self.state_dir)),
            measure=False,
            thresholds=self.decision_thresholds,
            detector=self.config.detector.settings(),
        )

    @property
    def store_path(self) -> Path:
        """The on-device store: <state_dir>/agent.db."""
        return self.state_dir / "agent.db"

    def decision_thresholds(self, model_id: str) -> tuple[float, ...]:
        """The thresholds the agent's precision guard checks for model_id (AgentConfig.decision_thresholds),
        with the server's cluster threshold as the agent last recorded it."""
        return self.config.decision_thresholds(model_id, self.server_cluster_threshold)

    @cached_property
    def server_cluster_threshold(self) -> float | None:
        """The fleet server's cluster threshold as its last Register told the agent (None: not told, or
        no store to read it from)."""
        path = self.store_path
        if not path.is_file():
            return None
        try:
            with EmbeddingStore(path, read_only=True) as store:
                return store.sync.cluster_threshold()
        except FaceFleetError as exc:
            self.errors.print(f"{path}: the server's cluster threshold is not read ({exc})", markup=False)
            return None

    def print_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        sys.stdout.flush()
