"""Config sections of the vision pipeline that agent and server share: [runtime], [detector], [quality],
and the conversion limits of their [models] sections."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from facefleet.core.config import StrictSection
from facefleet.vision.detection import DetectorSettings
from facefleet.vision.models.conversion import ConversionLimits
from facefleet.vision.models.tasks import TASKS
from facefleet.vision.precision.plan import PrecisionSettings
from facefleet.vision.quality import QualityPolicy
from facefleet.vision.runtime import PrecisionSetting, RuntimeSettings


class RuntimeConfig(StrictSection):
    """[runtime] How OpenVINO compiles and runs the models."""

    device: str = Field("CPU", description="OpenVINO device: CPU, GPU, NPU, AUTO, HETERO:GPU,CPU, MULTI:…")
    fallback_to_cpu: bool = Field(False, description="Use CPU with a warning when the device is missing")
    performance_hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] = Field(
        "LATENCY", description="OpenVINO performance hint"
    )
    inference_precision: PrecisionSetting = Field(
        "auto",
        description="Inference precision: auto measures f32, bf16/f16 and INT8 variants per model on the "
        "device and runs the fastest that passes its accuracy guard; f32 (reproducible), bf16 or f16 "
        "for every model",
    )
    precision: dict[str, PrecisionSetting] = Field(
        default_factory=dict,
        description='Per-task override of inference_precision, e.g. {embedding = "f32"}',
    )
    model_cache: bool = Field(
        True, description="Cache compiled models under <state_dir>/cache for fast restarts"
    )
    num_streams: int = Field(
        0, ge=0, le=64, description="Parallel inference streams per model; 0 = from the hint"
    )
    num_threads: int = Field(0, ge=0, le=1024, description="Inference threads per model; 0 = all cores")
    jobs: int = Field(0, ge=0, le=64, description="Asynchronous requests in flight per model; 0 = automatic")

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        return check_device(device)

    @field_validator("precision")
    @classmethod
    def _known_tasks(cls, value: dict[str, PrecisionSetting]) -> dict[str, PrecisionSetting]:
        unknown = sorted(set(value) - set(TASKS))
        if unknown:
            raise ValueError(
                f"unknown task {', '.join(repr(t) for t in unknown)}; the keys of [runtime] precision are "
                f'tasks: {", ".join(TASKS)} (e.g. precision = {{embedding = "f32"}})'
            )
        return value

    def precision_settings(self) -> PrecisionSettings:
        return PrecisionSettings(self.inference_precision, dict(self.precision))

    def settings(self, state_dir: Path) -> RuntimeSettings:
        return RuntimeSettings(
            device=self.device,
            fallback_to_cpu=self.fallback_to_cpu,
            performance_hint=self.performance_hint,
            inference_precision=self.inference_precision,
            cache_dir=state_dir / "cache" if self.model_cache else None,
            num_streams=self.num_streams or None,
            num_threads=self.num_threads or None,
        )


PHYSICAL_DEVICES = ("CPU", "GPU", "NPU", "GNA", "MYRIAD", "HDDL", "VPUX")
"""OpenVINO plugins a device name may start with (the last four: older runtimes and accelerators)."""
_PHYSICAL = re.compile(rf"(?:{'|'.join(PHYSICAL_DEVICES)})(?:\.[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_DEVICE_FORMS = "CPU, GPU, GPU.1, NPU, AUTO, AUTO:GPU,CPU, HETERO:GPU,CPU, MULTI:GPU,CPU or BATCH:GPU(4)"


def check_device(device: str) -> str:
    """An OpenVINO device name by its form (whether the device is present only `run` can tell): a plugin
    with an optional id (GPU.1), AUTO, or AUTO:/HETERO:/MULTI: with a list of them, or BATCH:DEVICE(N).
    ValueError names the forms."""
    head, colon, tail = device.partition(":")
    names = [name.strip() for name in tail.split(",")] if colon else []
    if not colon:
        valid = head == "AUTO" or bool(_PHYSICAL.fullmatch(head))
    elif head in ("AUTO", "HETERO", "MULTI"):
        if head == "AUTO":  # AUTO:-CPU leaves a device out
            names = [name.removeprefix("-") for name in names]
        valid = bool(names) and all(_PHYSICAL.fullmatch(name) for name in names)
    elif head == "BATCH":
        found = re.fullmatch(r"(.+?)(?:\((\d+)\))?", tail)
        valid = found is not None and bool(_PHYSICAL.fullmatch(found.group(1)))
    else:
        valid = False
    if not valid:
        raise ValueError(
            f"{device!r} is not an OpenVINO device name: use {_DEVICE_FORMS} (upper case; "
            "`facefleet-agent devices` lists those present)"
        )
    return device


class DetectorConfig(StrictSection):
    """[detector] Face detection."""

    long_side: int = Field(640, ge=64, le=4096, description="Larger frames are scaled down to this (px)")
    upscale: bool = Field(False, description="Scale smaller frames up to long_side too (more work)")
    score_threshold: float = Field(0.6, gt=0, lt=1, description="Minimum detection confidence")
    nms_threshold: float = Field(0.3, gt=0, lt=1, description="Overlap (IoU) above which boxes are merged")
    max_faces: int = Field(100, ge=1, le=1000, description="Most faces kept per frame, best first")

    def settings(self) -> DetectorSettings:
        return DetectorSettings(
            long_side=self.long_side,
            upscale=self.upscale,
            score_threshold=self.score_threshold,
            nms_threshold=self.nms_threshold,
            max_faces=self.max_faces,
        )


MAX_SHARPNESS = 100_000.0
"""Above any Laplacian variance a real 112×112 face reaches; a larger minimum would refuse every face."""


class QualityConfig(StrictSection):
    """[quality] Minimums for a face to be used for enrolment and identity decisions."""

    min_face_px: float = Field(
        40.0, ge=0, le=4096, description="Shorter side of the face box (px; at most 4096, a frame's size)"
    )
    min_sharpness: float = Field(
        15.0,
        ge=0,
        le=MAX_SHARPNESS,
        description="Laplacian variance of the aligned face (at most 100000: sharper is noise, not detail)",
    )
    max_yaw: float = Field(0.6, ge=0, le=1, description="Largest left/right turn (0 frontal, 1 profile)")
    max_pitch: float = Field(0.6, ge=0, le=1, description="Largest up/down tilt (0 frontal, 1 extreme)")
    min_score: float = Field(0.3, ge=0, le=1, description="Minimum overall quality")

    def policy(self) -> QualityPolicy:
        return QualityPolicy(
            min_face_px=self.min_face_px,
            min_sharpness=self.min_sharpness,
            max_yaw=self.max_yaw,
            max_pitch=self.max_pitch,
            min_score=self.min_score,
        )


class ConversionConfig(StrictSection):
    """The limits of a model file's conversion in [models]: a model the server publishes, or one an agent's
    `models import` reads, is converted in a child process held to them (see vision.models.conversion)."""

    convert_memory_bytes: int = Field(
        4 * 1024 * 1024 * 1024,
        ge=512 * 1024 * 1024,
        le=1024 * 1024 * 1024 * 1024,
        description="Memory a model's conversion may take (published on the server, `models import` on an "
        "agent); a model that needs more is refused (RESOURCE_EXHAUSTED) and nothing is stored",
    )
    convert_timeout_s: float = Field(
        600, ge=1, le=86400, description="Seconds a model's conversion may take, likewise"
    )

    def conversion_limits(self) -> ConversionLimits:
        """The limits of a model's conversion, naming these settings."""
        return ConversionLimits(
            self.convert_memory_bytes,
            self.convert_timeout_s,
            memory_setting="models.convert_memory_bytes",
            seconds_setting="models.convert_timeout_s",
        )
