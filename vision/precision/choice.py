"""What a model runs at: the precision chosen for it on a device, why, and the measurements behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from facefleet.vision.precision.guards import GuardResult
from facefleet.vision.runtime import Precision

Source = Literal["auto", "override", "task override", "default"]
"""auto: measured on this device; override: [runtime] inference_precision; task override: [runtime]
precision.<task>; default: not measured (yet), f32."""


@dataclass(frozen=True)
class Measurement:
    """One candidate measured: label (f32, bf16, f16, int8), the hint it was compiled with, the INT8 variant
    it runs instead of the float model (model id, or None), its median latency (ms per run of the probe's
    timing input) and its guard."""

    label: str
    precision: Precision
    variant: str | None
    median_ms: float
    guard: GuardResult

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.label,
            "precision": self.precision,
            "variant": self.variant,
            "median_ms": self.median_ms,
            "guard": self.guard.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        return cls(
            label=str(data["candidate"]),
            precision=cast(Precision, data["precision"]),
            variant=data.get("variant"),
            median_ms=float(data["median_ms"]),
            guard=GuardResult.from_json(data["guard"]),
        )


@dataclass(frozen=True)
class Choice:
    """The precision a model (task, model_id) runs at: the hint, and the INT8 variant compiled instead of
    it (its model id, and its files' sha256 by name as measured) when that won; source and reason say why;
    measurements: the candidates of an auto choice."""

    task: str
    model_id: str
    precision: Precision
    source: Source
    reason: str
    variant: str | None = None
    measurements: tuple[Measurement, ...] = ()
    variant_files: tuple[tuple[str, str], ...] = ()

    def runs_same_as(self, other: Choice) -> bool:
        """Whether both compile the same thing: the same hint and the same INT8 variant (its very files)."""
        return (self.precision, self.variant, self.variant_files) == (
            other.precision,
            other.variant,
            other.variant_files,
        )

    @property
    def label(self) -> str:
        """What it runs at in one word or two: 'bf16', 'int8 (sface@2021dec-int8)'."""
        return f"int8 ({self.variant})" if self.variant else self.precision

    def summary(self) -> dict[str, Any]:
        """For listings (`devices`, `models list`): precision, variant, source, reason."""
        return {
            "precision": self.precision,
            "variant": self.variant,
            "source": self.source,
            "reason": self.reason,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model_id": self.model_id,
            **self.summary(),
            "measurements": [m.to_json() for m in self.measurements],
            "variant_files": dict(self.variant_files),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Choice:
        return cls(
            task=str(data["task"]),
            model_id=str(data["model_id"]),
            precision=cast(Precision, data["precision"]),
            source=cast(Source, data["source"]),
            reason=str(data["reason"]),
            variant=data.get("variant"),
            measurements=tuple(Measurement.from_json(m) for m in data.get("measurements", [])),
            variant_files=tuple(sorted(dict(data.get("variant_files", {})).items())),
        )
