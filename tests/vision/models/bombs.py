"""Model bombs: files of a few KB, shaped like an embedding model, that build an n×n tensor of ones before
folding it to one number: an ONNX whose conversion does so (ConstantOfShape), and an OpenVINO IR that
converts in no time and does so when it is compiled (Broadcast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import openvino.opset13 as ops
from onnx import TensorProto, helper, numpy_helper


def constant_bomb_onnx(path: Path, n: int) -> Path:
    """Input N×3×112×112 → N×128 (pooled, projected, plus the sum of n×n ones): converting it takes about
    4·n² bytes at once (n = 20000: 1.6 GB)."""
    initializers = [
        numpy_helper.from_array(np.array([n, n], dtype=np.int64), "bomb_shape"),
        numpy_helper.from_array(np.ones((3, 128), np.float32), "projection"),
    ]
    ones = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["ones"], value=ones),
        helper.make_node("ReduceSum", ["ones"], ["total"], keepdims=0),
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "projection"], ["projected"]),
        helper.make_node("Add", ["projected", "total"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant-bomb",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 128])],
        initializer=initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def broadcast_bomb_ir(path: Path, n: int) -> Path:
    """path (NAME.xml, with NAME.bin beside it): input N×3×112×112 → N×128, like constant_bomb_onnx but
    with a Broadcast that OpenVINO folds only when the model is compiled (n = 20000: 1.6 GB)."""
    image = ops.parameter([1, 3, 112, 112], np.float32, name="input")
    pooled = ops.reduce_mean(image, np.array([2, 3]), False)
    projected = ops.matmul(pooled, ops.constant(np.ones((3, 128), np.float32)), False, False)
    ones = ops.broadcast(ops.constant(np.float32(1.0)), ops.constant(np.array([n, n], np.int64)))
    embedding = ops.add(projected, ops.reduce_sum(ones, np.array([0, 1]), False))
    embedding.output(0).get_tensor().set_names({"embedding"})
    ov.save_model(ov.Model([embedding], [image], "broadcast-bomb"), str(path), compress_to_fp16=False)
    return path


def batch_bomb_ir(path: Path, n: int) -> Path:
    """An IR with a dynamic batch N whose Broadcast takes its size from the input, [N·n, n]: nothing to fold
    when converted or compiled for any batch, n² floats per face when it runs."""
    image = ops.parameter([-1, 3, 112, 112], np.float32, name="input")
    batch = ops.gather(ops.shape_of(image), ops.constant(np.array([0], np.int64)), np.int64(0))
    size = ops.concat([ops.multiply(batch, ops.constant(np.array([n], np.int64))), ops.constant([n])], 0)
    ones = ops.broadcast(ops.constant(np.float32(1.0)), size)
    pooled = ops.reduce_mean(image, np.array([2, 3]), False)
    projected = ops.matmul(pooled, ops.constant(np.ones((3, 128), np.float32)), False, False)
    embedding = ops.add(projected, ops.reduce_sum(ones, np.array([0, 1]), False))
    embedding.output(0).get_tensor().set_names({"embedding"})
    ov.save_model(ov.Model([embedding], [image], "batch-bomb"), str(path), compress_to_fp16=False)
    return path


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
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "projection"], ["projected"]),
        helper.make_node("Loop", ["trips", "keep_going", "projected"], ["embedding"], body=body),
    ]
    graph = helper.make_graph(
        nodes,
        "loop",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 128])],
        initializer=[
            numpy_helper.from_array(np.ones((3, 128), np.float32), "projection"),
            numpy_helper.from_array(np.array(trips, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "keep_going"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def upscale_bomb_onnx(path: Path, factor: float) -> Path:
    """An embedding-shaped ONNX that first resizes its 112×112 input by `factor` (a constant scale): the
    size is known, but the memory is taken only when the model runs (factor 200: 22400² × 3 floats, 6 GB)."""
    nodes = [
        helper.make_node("Resize", ["input", "", "scales"], ["large"], mode="nearest"),
        helper.make_node("GlobalAveragePool", ["large"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "projection"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "upscale-bomb",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 128])],
        initializer=[
            numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), "scales"),
            numpy_helper.from_array(np.ones((3, 128), np.float32), "projection"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
