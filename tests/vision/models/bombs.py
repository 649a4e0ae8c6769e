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
