"""A small real ArcFace-class embedding network as ONNX, for tests that import or roll out a model of
that shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DIMENSION = 512


def arcface_class_onnx(path: Path, seed: int = 0) -> Path:
    """A small real network of ArcFace's shape: input N×3×112×112, two strided convolutions with ReLU,
    global average pooling and a projection to N×512, with fixed random weights."""
    rng = np.random.default_rng(seed)

    def weights(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        values = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        return numpy_helper.from_array(values, name)

    initializers = [
        weights("conv1_w", 32, 3, 7, 7),
        numpy_helper.from_array(np.zeros(32, np.float32), "conv1_b"),
        weights("conv2_w", 64, 32, 3, 3),
        numpy_helper.from_array(np.zeros(64, np.float32), "conv2_b"),
        weights("fc_w", 64, DIMENSION),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1_w", "conv1_b"], ["c1"], strides=[4, 4], pads=[3, 3, 3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2_w", "conv2_b"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "fc_w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_class",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DIMENSION])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facefleet")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
