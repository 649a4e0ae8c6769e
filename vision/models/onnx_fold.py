"""Fold block-quantised DequantizeLinear constants of an ONNX model to float32 weights.

OpenCV Zoo's *_int8bq models store weights as int8 blocks with one scale per block (ONNX opset 21
`block_size`), which OpenVINO's ONNX reader rejects. Folding x → (x − zero_point) · scale per block gives
an equivalent float model that any reader accepts; FP16 compression on import then halves it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from facefleet.vision.errors import ModelSpecError


def fold_blocked_dequantize(source: Path, target: Path) -> int:
    """Write source with every constant block-quantised DequantizeLinear folded to target; returns how
    many were (0: nothing was written)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelSpecError(
            f"{source}: folding its block-quantised weights needs the 'onnx' package; "
            "install it with `pip install 'facefleet[import]'`"
        ) from None
    try:
        model = onnx.load(str(source))
    except MemoryError:
        raise
    except Exception as exc:
        raise ModelSpecError(
            f"{source}: not a readable ONNX model, OpenVINO cannot convert it ({exc})"
        ) from None
    graph = model.graph
    blocked = [
        node
        for node in graph.node
        if node.op_type == "DequantizeLinear"
        and any(a.name == "block_size" and onnx.helper.get_attribute_value(a) for a in node.attribute)
    ]
    if not blocked:
        return 0
    wanted = {name for node in blocked for name in node.input if name}
    constants: dict[str, npt.NDArray[Any]] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer if init.name in wanted
    }
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and node.output[0] in wanted
            and node.attribute
            and node.attribute[0].name == "value"
        ):
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    folded: list[Any] = []
    for node in blocked:
        if not all(name in constants for name in node.input if name):
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        quantized, scale = constants[node.input[0]], constants[node.input[1]]
        zero_point = constants[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        axis, block_size = int(attributes.get("axis", 1)), int(attributes["block_size"])
        try:
            values = dequantize(quantized, scale, zero_point, axis, block_size)
        except (ValueError, IndexError) as exc:
            raise ModelSpecError(
                f"{source}: its block-quantised weights {node.name or node.output[0]!r} do not fit their "
                f"scales (axis {axis}, block size {block_size}): {exc}"
            ) from None
        graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
        folded.append(node)
    if not folded:
        return 0
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in list(graph.initializer):
        if init.name not in used and init.name not in {o.name for o in graph.output}:
            graph.initializer.remove(init)
    initializers = {init.name for init in graph.initializer}
    for graph_input in list(graph.input):
        if graph_input.name in initializers or graph_input.name not in used:
            graph.input.remove(graph_input)
    onnx.save(model, str(target))
    return len(folded)


def dequantize(
    quantized: npt.NDArray[Any],
    scale: npt.NDArray[Any],
    zero_point: npt.NDArray[Any] | None,
    axis: int,
    block_size: int,
) -> npt.NDArray[np.float32]:
    """(quantized − zero_point) · scale with scale and zero_point given per block of block_size along axis."""
    axis = axis % quantized.ndim
    length = quantized.shape[axis]

    def expand(per_block: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.repeat(per_block, block_size, axis=axis).take(np.arange(length), axis=axis)

    offset = np.zeros(1, dtype=np.float32) if zero_point is None else expand(zero_point).astype(np.float32)
    return ((quantized.astype(np.float32) - offset) * expand(scale).astype(np.float32)).astype(np.float32)
