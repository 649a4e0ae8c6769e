"""The task checks of an imported model, on hand-made input and output descriptions."""

from __future__ import annotations

import pytest

from facefleet.vision.detection import OUTPUT_WIDTHS, STRIDES
from facefleet.vision.errors import ModelSpecError
from facefleet.vision.models.tasks import check_fits
from facefleet.vision.runtime import ModelIO, TensorSpec


def yunet_io(widths: dict[str, int], cells: int = -1) -> ModelIO:
    """A detector's inputs and outputs: one (1, cells, width) output per kind and stride."""
    outputs = tuple(
        TensorSpec(f"{kind}_{stride}", (1, cells, widths[kind]), "f32")
        for kind in OUTPUT_WIDTHS
        for stride in STRIDES
    )
    return ModelIO(inputs=(TensorSpec("input", (1, 3, -1, -1), "f32"),), outputs=outputs)


def test_a_detector_with_yunets_values_per_cell_fits() -> None:
    check_fits("detection", yunet_io(OUTPUT_WIDTHS), "yunet.onnx")
    check_fits("detection", yunet_io({kind: -1 for kind in OUTPUT_WIDTHS}), "dynamic.onnx")


def test_a_detector_whose_outputs_hold_other_values_per_cell_is_refused_by_name() -> None:
    widths = {**OUTPUT_WIDTHS, "kps": 136}  # 68 landmarks, not YuNet's 5
    with pytest.raises(ModelSpecError, match=r"other\.onnx: .*outputs kps_8\[1, 4096, 136\], kps_16"):
        check_fits("detection", yunet_io(widths, cells=4096), "other.onnx")
