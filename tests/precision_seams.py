"""Seams for tests of precision choices: a timer that reports chosen latencies, and a model made worse on
purpose (every weight tensor scaled by noise), which an accuracy guard must refuse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov


def injected(latencies: dict[str, float], calls: list[str] | None = None) -> Callable[..., float]:
    """A timer that runs the inference once (so the seam is exercised) and reports the given latency."""

    def timer(label: str, run: Callable[[], None]) -> float:
        run()
        if calls is not None:
            calls.append(label)
        return latencies[label]

    return timer


def perturbed_ir(source_xml: Path, target_xml: Path, scale: float = 0.3) -> Path:
    """source_xml's IR with every weight tensor multiplied by 1 + N(0, scale), saved as target_xml."""
    model = ov.Core().read_model(str(source_xml))
    rng = np.random.default_rng(1)
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() not in (ov.Type.f16, ov.Type.f32):
            continue
        data = op.get_data()
        if data.size < 64:
            continue
        noisy = data.astype(np.float32) * (1 + scale * rng.standard_normal(data.shape))
        replacement = ov.opset13.constant(noisy.astype(data.dtype))
        op.output(0).replace(replacement.output(0))
    ov.save_model(model, str(target_xml), compress_to_fp16=False)
    return target_xml
