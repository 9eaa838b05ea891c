"""MaxPool's Indices output and MaxUnpool (a SegNet-style decoder's unpooling), against ONNX
Runtime on the same file through the reference and LLVM backends: 1-D to 3-D, padding,
overlapping windows (indices that repeat), ceil_mode, column-major indices; Col2Im (torch's
fold) against ONNX Runtime and its gradient against torch."""

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
    ((1, 2, 9, 8), dict(kernel_shape=[3, 2], strides=[2, 1], dilations=[2, 3], pads=[1, 0, 1, 1],
                        ceil_mode=1), False),
]


@pytest.mark.parametrize("shape,attrs,unpool", CASES,
                         ids=["2x2", "3x3-overlapping-padded", "ceil-mode", "column-major",
                              "1d", "3d", "dilated"])
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


COL2IM = [([5, 5], [2, 2], {}),
          ([6, 7], [3, 2], dict(strides=[2, 1], pads=[1, 0, 1, 1], dilations=[1, 2])),
          ([9], [3], dict(strides=[2], pads=[1, 1])),
          ([4, 4, 4], [2, 2, 2], dict(strides=[2, 2, 2]))]


def _col2im_model(image, block, attrs):
    r = len(image)
    st, pd = attrs.get("strides", [1] * r), attrs.get("pads", [0] * 2 * r)
    dl = attrs.get("dilations", [1] * r)
    pos = [(image[i] + pd[i] + pd[i + r] - dl[i] * (block[i] - 1) - 1) // st[i] + 1
           for i in range(r)]
    shape = [2, 3 * int(np.prod(block)), int(np.prod(pos))]
    g = helper.make_graph(
        [helper.make_node("Col2Im", ["x", "im", "bl"], ["y"], **attrs)], "c2i",
        [helper.make_tensor_value_info("x", F, shape)], [helper.make_tensor_value_info("y", F,
                                                                                        None)],
        [onnx.numpy_helper.from_array(np.array(image, np.int64), "im"),
         onnx.numpy_helper.from_array(np.array(block, np.int64), "bl")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model, shape


@pytest.mark.parametrize("image,block,attrs", COL2IM, ids=["2d", "strided-padded-dilated",
                                                          "1d", "3d"])
def test_col2im_sums_the_blocks_back(rng, image, block, attrs):
    model, shape = _col2im_model(image, block, attrs)
    x = rng.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(x=x)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=target)


def test_col2im_gradient_against_torch_fold(rng):
    """Col2Im is torch's `fold`: the gradient of sum(y * r) against torch autograd."""
    torch = pytest.importorskip("torch")
    image, block = [6, 7], [3, 2]
    attrs = dict(strides=[2, 1], pads=[1, 1, 1, 1], dilations=[1, 2])  # torch pads alike
    model, shape = _col2im_model(image, block, attrs)
    graph = graphc.from_onnx(model)
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    xin = graph.input("x")
    r = rng.standard_normal((2, 3, *image)).astype(np.float32)
    y = b.tensor(graph.output("y"))
    g = graphc.autodiff(b.build(outputs={"loss": (y * b.const(r)).sum()}), "loss",
                        [xin.node.attrs["name"]])
    x = rng.standard_normal(shape).astype(np.float32)
    got = graphc.compile(g, target="llvm")(x=x)["grad.x"]
    tx = torch.tensor(x, requires_grad=True)
    st, pd, dl = attrs["strides"], attrs["pads"], attrs["dilations"]
    folded = torch.nn.functional.fold(
        tx, image, block, dilation=dl, stride=st, padding=(pd[0], pd[1]))
    (folded * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
