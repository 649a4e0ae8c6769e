"""A conversion bomb: an ONNX file of 2 KB, shaped like an embedding model, whose conversion
builds an n×n tensor of ones (ConstantOfShape) before folding it to one number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
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
