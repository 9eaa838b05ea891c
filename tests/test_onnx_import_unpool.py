"""MaxPool's Indices output and MaxUnpool (a SegNet-style decoder's unpooling), against ONNX
Runtime on the same file through the reference and LLVM backends: 1-D to 3-D, padding,
overlapping windows (indices that repeat), ceil_mode, column-major indices."""

from __future__ import annotations

import numpy as np
import pytest

import graphc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

F = TensorProto.FLOAT

CASES = [
    ((2, 3, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2]), True),
    ((2, 3, 7, 9), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), True),
    ((1, 2, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 0, 1], ceil_mode=1),
     False),
    ((1, 2, 6, 5), dict(kernel_shape=[2, 2], strides=[2, 2], storage_order=1), False),
    ((2, 3, 10), dict(kernel_shape=[3], strides=[2], pads=[1, 1]), True),
    ((1, 2, 4, 6, 6), dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2]), True),
]


@pytest.mark.parametrize("shape,attrs,unpool", CASES,
                         ids=["2x2", "3x3-overlapping-padded", "ceil-mode", "column-major",
                              "1d", "3d"])
def test_max_pool_indices_and_unpooling(rng, shape, attrs, unpool):
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)]
    outputs = [helper.make_tensor_value_info("y", F, None),
               helper.make_tensor_value_info("i", TensorProto.INT64, None)]
    if unpool:  # back to x's shape (given: the default would drop a trailing row or column)
        keep = {k: v for k, v in attrs.items() if k in ("kernel_shape", "strides", "pads")}
        nodes += [helper.make_node("Shape", ["x"], ["xs"]),
                  helper.make_node("MaxUnpool", ["y", "i", "xs"], ["u"], **keep)]
        outputs.append(helper.make_tensor_value_info("u", F, None))
    g = helper.make_graph(nodes, "unpool", [helper.make_tensor_value_info("x", F, list(shape))],
                          outputs)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    x = rng.standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = list(graphc.compile(graph, target=target)(x=x).values())
        assert [(v.shape, v.dtype) for v in got] == [(w.shape, w.dtype) for w in want]
        for v, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(v, w, err_msg=target)


def test_unpooling_passes_gradients_to_the_pooled_values(rng):
    """MaxUnpool is differentiable in its values: d sum(u * r) / dy = r at each index."""
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Mul", ["x", "w"], ["xw"]),
             helper.make_node("MaxPool", ["xw"], ["yw"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxUnpool", ["yw", "i"], ["u"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("ReduceSum", ["u"], ["loss"], keepdims=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("loss", F, None)],
                          [onnx.numpy_helper.from_array(np.full((1, 1, 4, 4), 2.0, np.float32),
                                                        "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    out = graphc.compile(graphc.autodiff(graphc.from_onnx(model), "loss"), target="llvm")(x=x)
    windows = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)
    hit = np.zeros(16, np.float32)
    for k, row in enumerate(windows):  # each window's maximum, in x's flat order
        r, c = divmod(k, 2)
        a = int(np.argmax(row))
        hit[(2 * r + a // 2) * 4 + 2 * c + a % 2] = 1.0
    np.testing.assert_allclose(out["grad.w"].reshape(-1), x.reshape(-1) * hit, rtol=1e-6)
