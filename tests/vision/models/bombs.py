"""Model bombs: files of a few KB, shaped like an embedding model (N×3×112×112 → N×128), that would take
gigabytes or run without end somewhere between conversion and inference: an ONNX whose conversion folds an
n×n tensor (ConstantOfShape), an IR that converts in no time and folds it when compiled (Broadcast), an IR
whose tensor is sized by the batch, an ONNX Loop, and an ONNX that resizes its input by a constant factor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import openvino as ov
import openvino.opset13 as ops
from onnx import TensorProto, helper, numpy_helper


def _embedding_onnx(
    path: Path,
    name: str,
    initializers: list[Any],
    before: tuple[Any, ...] = (),
    after: tuple[Any, ...] = (),
    pooled_from: str = "input",
) -> Path:
    """Save an ONNX graph: the nodes `before`, then `pooled_from` pooled, flattened and projected to 128
    values (`projected`, the output `embedding` when nothing comes `after`), then the nodes `after`."""
    projected = "projected" if after else "embedding"
    graph = helper.make_graph(
        [
            *before,
            helper.make_node("GlobalAveragePool", [pooled_from], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("MatMul", ["features", "projection"], [projected]),
            *after,
        ],
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 128])],
        initializer=[numpy_helper.from_array(np.ones((3, 128), np.float32), "projection"), *initializers],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _embedding_ir(path: Path, name: str, n: int, batch_sized: bool) -> Path:
    """Save an IR: the input pooled and projected, plus the sum of a Broadcast of ones, [n, n], or [N·n, n]
    with the batch N taken from the input at run time (batch_sized)."""
    image = ops.parameter([-1 if batch_sized else 1, 3, 112, 112], np.float32, name="input")
    size: Any = ops.constant(np.array([n, n], np.int64))
    if batch_sized:
        batch = ops.gather(ops.shape_of(image), ops.constant(np.array([0], np.int64)), np.int64(0))
        size = ops.concat([ops.multiply(batch, ops.constant(np.array([n], np.int64))), ops.constant([n])], 0)
    ones = ops.broadcast(ops.constant(np.float32(1.0)), size)
    pooled = ops.reduce_mean(image, np.array([2, 3]), False)
    projected = ops.matmul(pooled, ops.constant(np.ones((3, 128), np.float32)), False, False)
    embedding = ops.add(projected, ops.reduce_sum(ones, np.array([0, 1]), False))
    embedding.output(0).get_tensor().set_names({"embedding"})
    ov.save_model(ov.Model([embedding], [image], name), str(path), compress_to_fp16=False)
    return path


def constant_bomb_onnx(path: Path, n: int) -> Path:
    """Pooled, projected, plus the sum of n×n ones: converting it takes about 4·n² bytes at once (n = 30000:
    3.6 GB)."""
    ones = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    total = (
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["ones"], value=ones),
        helper.make_node("ReduceSum", ["ones"], ["total"], keepdims=0),
    )
    shape = numpy_helper.from_array(np.array([n, n], dtype=np.int64), "bomb_shape")
    added = (helper.make_node("Add", ["projected", "total"], ["embedding"]),)
    return _embedding_onnx(path, "constant-bomb", [shape], before=total, after=added)


def broadcast_bomb_ir(path: Path, n: int) -> Path:
    """path (NAME.xml, with NAME.bin beside it): like constant_bomb_onnx, but with a Broadcast that OpenVINO
    folds only when the model is compiled (n = 30000: 3.6 GB)."""
    return _embedding_ir(path, "broadcast-bomb", n, batch_sized=False)


def batch_bomb_ir(path: Path, n: int) -> Path:
    """An IR with a dynamic batch N whose Broadcast takes its size from the input, [N·n, n]: nothing to fold
    when converted or compiled for any batch, n² floats per face when it runs."""
    return _embedding_ir(path, "batch-bomb", n, batch_sized=True)


def loop_onnx(path: Path, trips: int) -> Path:
    """An embedding-shaped ONNX whose output goes through a Loop of `trips` iterations adding one."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["condition_in"], ["condition_out"]),
            helper.make_node("Add", ["carried_in", "one"], ["carried_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("condition_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_in", TensorProto.FLOAT, [1, 128]),
        ],
        [
            helper.make_tensor_value_info("condition_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, [1, 128]),
        ],
        initializer=[numpy_helper.from_array(np.ones((1, 128), np.float32), "one")],
    )
    loop = (helper.make_node("Loop", ["trips", "keep_going", "projected"], ["embedding"], body=body),)
    counts = [
        numpy_helper.from_array(np.array(trips, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "keep_going"),
    ]
    return _embedding_onnx(path, "loop", counts, after=loop)


def upscale_bomb_onnx(path: Path, factor: float) -> Path:
    """An embedding-shaped ONNX that first resizes its 112×112 input by `factor` (a constant scale): the
    size is known, but the memory is taken only when the model runs (factor 200: 22400² × 3 floats, 6 GB)."""
    resize = (helper.make_node("Resize", ["input", "", "scales"], ["large"], mode="nearest"),)
    scales = numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), "scales")
    return _embedding_onnx(path, "upscale-bomb", [scales], before=resize, pooled_from="large")
