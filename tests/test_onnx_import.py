"""ONNX import: models written with onnx.helper (as exporters write them) run through graphc's
reference and LLVM backends and are compared with ONNX Runtime running the same file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc
from graphc.io import load_graph
from graphc.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402


def _ort(model, feeds: dict) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def _check(model, feeds: dict, rtol=1e-4, atol=1e-5, targets=("reference", "llvm")):
    graph = graphc.from_onnx(model)
    _check_outputs(graph, feeds, _ort(model, feeds), rtol, atol, targets, every_output=True)
    return graph


def _check_outputs(graph, feeds: dict, want: dict, rtol=1e-4, atol=1e-5,
                   targets=("reference", "llvm"), every_output: bool = False):
    """The imported graph's outputs against `want` (ONNX Runtime's, or torch's) on each
    target; with `every_output`, the graph has no other outputs."""
    for target in targets:
        got = graphc.compile(graph, target=target)(feeds)
        if every_output:
            assert set(got) == set(want)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=rtol, atol=atol, err_msg=f"{target} {k}")


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_mlp_with_gemm_and_softmax(rng):
    x = _f32(rng, 16, 20)
    w1, b1 = _f32(rng, 32, 20) * 0.3, _f32(rng, 32)  # Gemm transB=1: torch Linear's layout
    w2, b2 = _f32(rng, 32, 10) * 0.3, _f32(rng, 10)
    model = make_model("mlp", [
        node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        node("Relu", ["h"], ["hr"]),
        node("Gemm", ["hr", "w2", "b2"], ["z"], alpha=0.5, beta=2.0),
        node("Softmax", ["z"], ["p"], axis=1),
        node("LogSoftmax", ["z"], ["lp"], axis=-1),
    ], {"x": x}, ["p", "lp"], {"w1": w1, "b1": b1, "w2": w2, "b2": b2})
    graph = _check(model, {"x": x})
    assert set(graph.param_names) == {"w1", "b1", "w2", "b2"}
    assert "%hr = relu(%" in str(graph)  # values print under their ONNX names


def test_two_nodes_computing_the_same_value_are_both_outputs(rng):
    """The builder merges equal nodes; naming the second must not orphan the first."""
    x = _f32(rng, 3, 4)
    model = make_model("twins", [node("Relu", ["x"], ["a"]), node("Relu", ["x"], ["b"]),
                                 node("Tanh", ["a"], ["c"])], {"x": x}, ["a", "b", "c"])
    _check(model, {"x": x})


def test_cnn_conv_batchnorm_pool_flatten(rng):
    x = _f32(rng, 2, 3, 12, 12)
    inits = {"w": _f32(rng, 8, 3, 3, 3) * 0.3, "cb": _f32(rng, 8),
             "g": 1 + 0.1 * _f32(rng, 8), "be": _f32(rng, 8), "m": _f32(rng, 8) * 0.1,
             "v": np.abs(_f32(rng, 8)) + 0.5, "wd": _f32(rng, 8 * 6 * 6, 5) * 0.1,
             "w2": _f32(rng, 4, 4, 3, 3) * 0.3}  # two groups of four input channels
    model = make_model("cnn", [
        node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        node("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"], epsilon=1e-3),
        node("Relu", ["bn"], ["r"]),
        node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["mp", "w2"], ["c2"], group=2, pads=[0, 1, 2, 1], dilations=[1, 2]),
        node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], strides=[1, 1],
             pads=[1, 1, 1, 1], count_include_pad=0),
        node("GlobalAveragePool", ["c2"], ["gap"]),
        node("Flatten", ["mp"], ["f"], axis=1),
        node("MatMul", ["f", "wd"], ["logits"]),
    ], {"x": x}, ["logits", "ap", "gap"], inits)
    graph = _check(model, {"x": x})
    assert {"m", "v"} <= graph.frozen_params()


def test_shape_arithmetic_reshape_transpose_concat(rng):
    """The Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain exporters write for a
    flatten, evaluated at import; axes given as inputs (opset 13)."""
    x = _f32(rng, 2, 3, 4)
    zero = onnx.numpy_helper.from_array(np.asarray(0, np.int64))  # a scalar index
    model = make_model("shapes", [
        node("Constant", [], ["zero"], value=zero),
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Unsqueeze", ["n", "ax0"], ["n1"]),
        node("Concat", ["n1", "minus1"], ["target"], axis=0),
        node("Reshape", ["x", "target"], ["flat"]),
        node("Transpose", ["x"], ["xt"], perm=[2, 0, 1]),
        node("Unsqueeze", ["flat", "ax0"], ["u"]),
        node("Squeeze", ["u", "ax0"], ["sq"]),
        node("Concat", ["sq", "sq"], ["cat"], axis=-1),
        node("Reshape", ["x", "keep"], ["r0"]),
        node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),
        node("ReduceSum", ["x", "ax2"], ["sum"], keepdims=1),
        node("ReduceMax", ["x"], ["mx"], axes=[-1], keepdims=1),
    ], {"x": x}, ["flat", "xt", "cat", "r0", "mean", "sum", "mx"],
        {"ax0": np.asarray([0], np.int64),
         "ax2": np.asarray([2], np.int64), "minus1": np.asarray([-1], np.int64),
         "keep": np.asarray([0, -1], np.int64)})
    model.opset_import[0].version = 17
    _check(model, {"x": x})


def test_shape_arithmetic_through_graph_ops_folds_at_import(rng):
    """Shape numbers computed by ops the importer keeps as graph nodes (a float Constant, Div,
    Floor, Cast; Mod, as torch's exporter writes for attention heads) are still constants:
    the importer evaluates such constant-only subgraphs when a Reshape or Slice needs them."""
    x = _f32(rng, 2, 12, 5)
    half = onnx.numpy_helper.from_array(np.asarray([2.0], np.float32))
    model = make_model("shapes_graph", [
        node("Constant", [], ["half"], value=half),
        node("Shape", ["x"], ["s"]),
        node("Slice", ["s", "one", "two"], ["c"]),
        node("Cast", ["c"], ["cf"], to=onnx.TensorProto.FLOAT),
        node("Div", ["cf", "half"], ["hf"]),
        node("Floor", ["hf"], ["hfl"]),
        node("Cast", ["hfl"], ["h"], to=onnx.TensorProto.INT64),
        node("Concat", ["zero", "two", "h", "minus1"], ["target"], axis=0),
        node("Reshape", ["x", "target"], ["r"]),
        node("Mod", ["seven", "four"], ["end"]),
        node("Slice", ["x", "one", "end", "one"], ["sl"]),
        # torch's expand(2, *shape) at opset 20: -1 entries of the shape replaced by a Where
        # whose bool condition is folded from constants
        node("ConstantOfShape", ["four"], ["ones"],
             value=onnx.numpy_helper.from_array(np.asarray([1], np.int64))),
        node("Mul", ["ones", "minus1"], ["neg"]),
        node("Equal", ["eshape", "neg"], ["is_neg"]),
        node("Where", ["is_neg", "ones", "eshape"], ["wshape"]),
        node("Unsqueeze", ["x", "zero"], ["x1"]),
        node("Expand", ["x1", "wshape"], ["ex"]),
    ], {"x": x}, ["r", "sl", "ex"],
        {"zero": np.asarray([0], np.int64), "one": np.asarray([1], np.int64),
         "two": np.asarray([2], np.int64), "minus1": np.asarray([-1], np.int64),
         "seven": np.asarray([7], np.int64), "four": np.asarray([4], np.int64),
         "eshape": np.asarray([3, -1, 12, 5], np.int64)})
    model.opset_import[0].version = 17
    graph = _check(model, {"x": x})
    assert dict(graph.outputs)["r"].shape == (2, 2, 6, 5)
    assert dict(graph.outputs)["sl"].shape == (2, 2, 5)
    assert dict(graph.outputs)["ex"].shape == (3, 2, 12, 5)


def test_elementwise_ops_and_constants(rng):
    x = _f32(rng, 4, 6)
    y = np.abs(_f32(rng, 4, 6)) + 0.5
    cval = onnx.numpy_helper.from_array(np.full((6,), 0.25, np.float32))
    model = make_model("ew", [
        node("Constant", [], ["c"], value=cval),
        node("Add", ["x", "c"], ["a"]), node("Sub", ["a", "y"], ["s"]),
        node("Mul", ["s", "x"], ["m"]), node("Div", ["m", "y"], ["d"]),
        node("Sigmoid", ["d"], ["sg"]), node("Tanh", ["x"], ["th"]),
        node("Exp", ["th"], ["e"]), node("Log", ["y"], ["lg"]), node("Sqrt", ["y"], ["sq"]),
        node("Neg", ["x"], ["ng"]), node("Abs", ["ng"], ["ab"]),
        node("Reciprocal", ["y"], ["rc"]), node("Softplus", ["x"], ["sp"]),
        node("LeakyRelu", ["x"], ["lr"], alpha=0.1), node("Pow", ["y", "two"], ["pw"]),
        node("Max", ["x", "th"], ["mx"]), node("Min", ["x", "th"], ["mn"]),
        node("Identity", ["mn"], ["idn"]), node("Dropout", ["idn"], ["dr"]),
    ], {"x": x, "y": y}, ["sg", "e", "lg", "sq", "ab", "rc", "sp", "lr", "pw", "mx", "dr"],
        {"two": np.asarray(2.0, np.float32)})
    _check(model, {"x": x, "y": y})


def test_erf_and_gelu(rng):
    """Erf, and Gelu (opset 20) exact and tanh-approximated, as a BERT-style export writes
    them (x/2 (1 + erf(x / sqrt 2))) and as the one op."""
    x = _f32(rng, 4, 33) * 3
    model = make_model("gelu", [
        node("Erf", ["x"], ["e"]),
        node("Div", ["x", "r2"], ["xs"]), node("Erf", ["xs"], ["ex"]),
        node("Add", ["ex", "one"], ["a"]), node("Mul", ["x", "a"], ["m"]),
        node("Mul", ["m", "half"], ["g0"]),
        node("Gelu", ["x"], ["g1"]), node("Gelu", ["x"], ["g2"], approximate="tanh"),
    ], {"x": x}, ["e", "g0", "g1", "g2"], {"r2": np.asarray(np.sqrt(2), np.float32),
                                           "one": np.asarray(1, np.float32),
                                           "half": np.asarray(0.5, np.float32)})
    model.opset_import[0].version = 20
    # ONNX Runtime's tanh form cancels in 1 + tanh near -1 (about 3e-7 absolute at x = -5)
    graph = _check(model, {"x": x}, rtol=2e-6, atol=1e-6)
    assert {n.op for n in graph.nodes} >= {"erf", "gelu"}


def test_slicing_padding_selection_and_more_activations(rng):
    x = _f32(rng, 4, 10, 6)
    y = _f32(rng, 1, 10, 1)
    i64 = lambda *v: np.asarray(v, np.int64)  # noqa: E731
    model = make_model("more", [
        node("Slice", ["x", "s0", "e0", "a0", "st0"], ["sl"]),        # negative ends, step 2
        node("Slice", ["x", "s1", "e1"], ["sl2"]),                   # ends past the end
        node("Split", ["x", "sizes"], ["p0", "p1", "p2"], axis=1),
        node("Split", ["x"], ["q0", "q1"], axis=-1),
        node("Pad", ["x", "pads", "pv"], ["pd"]),
        node("Expand", ["y", "eshape"], ["ex"]),
        node("Greater", ["x", "ex"], ["gt"]),
        node("Where", ["gt", "x", "ex"], ["wh"]),
        node("Clip", ["x", "lo", "hi"], ["cl"]),
        node("Clip", ["x", "", "hi"], ["cl2"]),
        node("HardSigmoid", ["x"], ["hs"], alpha=0.3, beta=0.4),
        node("Elu", ["x"], ["el"], alpha=0.7),
        node("Sum", ["x", "ex", "wh"], ["sm"]),
        node("Mean", ["x", "cl"], ["mn"]),
        node("LessOrEqual", ["x", "cl"], ["le"]),
        node("Where", ["le", "hs", "el"], ["wh2"]),
    ], {"x": x}, ["sl", "sl2", "p0", "p1", "p2", "q0", "q1", "pd", "wh", "cl", "cl2", "sm",
                  "mn", "wh2"],
        {"y": y, "s0": i64(1, -9), "e0": i64(-1, 10**9), "a0": i64(0, 1), "st0": i64(2, 3),
         "s1": i64(0, 0, 2), "e1": i64(3, 100, 5), "sizes": i64(2, 5, 3),
         "pads": i64(0, 1, 2, 1, 0, 3), "pv": np.asarray(1.5, np.float32),
         "eshape": i64(4, 10, 6), "lo": np.asarray(-0.5, np.float32),
         "hi": np.asarray(0.75, np.float32)})
    _check(model, {"x": x})


@pytest.mark.parametrize("attrs, groups", [
    ({"strides": [2, 2]}, 1),
    ({"strides": [2, 1], "pads": [1, 0, 0, 2], "output_padding": [1, 0]}, 1),
    ({"strides": [3, 2], "dilations": [2, 1], "pads": [2, 1, 2, 1]}, 1),
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, 2),
])
def test_conv_transpose(rng, attrs, groups):
    """A decoder's upsampling layer (autoencoders, GAN generators): ConvTranspose as `conv`
    with the input dilated by the stride and the kernel flipped."""
    x = _f32(rng, 2, 4, 5, 6)
    inits = {"w": _f32(rng, 4, 6 // groups, 3, 3) * 0.3, "b": _f32(rng, 6)}
    model = make_model("deconv", [node("ConvTranspose", ["x", "w", "b"], ["y"], group=groups,
                                       **attrs), node("Relu", ["y"], ["r"])],
                       {"x": x}, ["y", "r"], inits)
    _check(model, {"x": x})


def test_transformer_block_exported_by_torch(rng, tmp_path):
    """Self-attention (4-D batched MatMul, Split, Transpose, Softmax), LayerNormalization and a
    GELU feed-forward, as torch.onnx exports them, against torch."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, d: int = 16, heads: int = 2) -> None:
            super().__init__()
            self.heads, self.qkv, self.out = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = (p.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                       for p in self.qkv(x).split(d, dim=-1))
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            x = self.ln1(x + self.out((att @ v).transpose(1, 2).reshape(b, t, d)))
            return self.ln2(x + self.ff(x))

    torch.manual_seed(0)
    net = Block().eval()
    x = torch.from_numpy(_f32(rng, 2, 5, 16))
    path = tmp_path / "block.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    graph = graphc.from_onnx(str(path))
    assert {n.op for n in graph.nodes} >= {"layer_norm", "gelu", "softmax", "matmul"}
    want = net(x).detach().numpy()
    _check_outputs(graph, {"x": x.numpy()}, {"y": want})


def test_torch_encoder_layer_and_pointwise_convs_exported_by_torch(rng, tmp_path):
    """nn.TransformerEncoderLayer (its attention splits heads through shape arithmetic with
    Mod, folded at import) after a patch embedding, and a MobileNet-style inverted residual
    (1x1 convolutions, lowered as matmuls, around a depthwise one), against torch."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 32, 4, stride=4)
            self.inverted = nn.Sequential(
                nn.Conv2d(32, 96, 1), nn.BatchNorm2d(96), nn.ReLU6(),
                nn.Conv2d(96, 96, 3, padding=1, groups=96), nn.ReLU6(), nn.Conv2d(96, 32, 1))
            self.encoder = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)

        def forward(self, x):
            y = self.embed(x)
            y = y + self.inverted(y)
            return self.encoder(y.flatten(2).transpose(1, 2))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.from_numpy(_f32(rng, 2, 3, 16, 16))
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    graph = graphc.from_onnx(str(path))
    with torch.no_grad():
        want = net(x).numpy()
    _check_outputs(graph, {"x": x.numpy()}, {"y": want}, rtol=1e-4, atol=1e-4)


def test_embedding_exported_by_torch(rng, tmp_path):
    """nn.Embedding (Gather of a weight by int64 token ids) into a GRU and a linear head, as
    torch.onnx exports it: outputs against torch, and the embedding's gradient (take's VJP
    scatters into the rows the tokens used)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.rnn, self.head = nn.Embedding(11, 6), nn.GRU(6, 5), nn.Linear(5, 3)

        def forward(self, tokens):
            return self.head(self.rnn(self.emb(tokens))[0])

    torch.manual_seed(0)
    net = Tagger().eval()
    tokens = torch.from_numpy(rng.integers(0, 11, (4, 2)))
    path = tmp_path / "tagger.onnx"
    torch.onnx.export(net, (tokens,), str(path), dynamo=False, input_names=["tokens"],
                      output_names=["y"])
    graph = graphc.from_onnx(str(path))
    want = net(tokens).detach().numpy()
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)({"tokens": tokens.numpy()})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=target)
    emb = [k for k, v in graph.param_values.items() if v.shape == (11, 6)]
    assert len(emb) == 1
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    loss = b.tensor(graph.output("y")).sum()
    g = graphc.autodiff(b.build(outputs={"loss": loss}), "loss", emb)
    grad = graphc.compile(g, target="llvm")({"tokens": tokens.numpy()})[f"grad.{emb[0]}"]
    net.zero_grad()
    net(tokens).sum().backward()
    np.testing.assert_allclose(grad, net.emb.weight.grad.numpy(), rtol=1e-4, atol=1e-6)
    unused = sorted(set(range(11)) - set(tokens.numpy().ravel().tolist()))
    assert np.all(grad[unused] == 0)


def _auto_pad_conv(rng, mode, size, stride, kernel, dilation=1):
    x = _f32(rng, 2, 3, size, size - 1)
    w = _f32(rng, 4, 3, kernel, kernel) * 0.3
    model = make_model("conv", [node("Conv", ["x", "w"], ["y"], auto_pad=mode,
                                     strides=[stride, stride], dilations=[dilation, dilation])],
                       {"x": x}, ["y"], {"w": w})
    return model, x, w


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("size, stride, kernel", [(9, 1, 3), (9, 2, 3), (8, 2, 3), (10, 3, 4),
                                                  (7, 2, 2), (6, 1, 4)])
def test_conv_auto_pad(rng, mode, size, stride, kernel):
    """auto_pad (as TensorFlow exporters write it) resolved against the static input size."""
    model, x, _ = _auto_pad_conv(rng, mode, size, stride, kernel)
    _check(model, {"x": x})


def test_conv_auto_pad_dilated_matches_torch_same(rng):
    # ONNX Runtime refuses SAME with dilation; torch's padding="same" (stride 1) pads the
    # same way as SAME_UPPER: d (k - 1) in all, the odd one at the end
    torch = pytest.importorskip("torch")
    model, x, w = _auto_pad_conv(rng, "SAME_UPPER", 9, 1, 4, dilation=3)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                                      dilation=3).numpy()
    got = graphc.compile(graphc.from_onnx(model), target="llvm")({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op, extra", [("MaxPool", {}), ("AveragePool", {}),
                                       ("AveragePool", {"count_include_pad": 1})])
def test_pool_auto_pad(rng, op, extra):
    x = _f32(rng, 2, 3, 7, 9)
    for mode, kernel, stride in (("SAME_UPPER", 3, 1), ("SAME_LOWER", 3, 2), ("VALID", 2, 2)):
        model = make_model("pool", [node(op, ["x"], ["y"], auto_pad=mode, kernel_shape=[kernel,
                                                                                     kernel],
                                         strides=[stride, stride], **extra)],
                           {"x": x}, ["y"])
        _check(model, {"x": x})
    # SAME with an even kernel pads one side more: reduce_window with its own pads
    odd = make_model("pool", [node(op, ["x"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[2, 2],
                                   **extra)], {"x": x}, ["y"])
    _check(odd, {"x": x})


@pytest.mark.parametrize("op, extra", [("MaxPool", {}), ("AveragePool", {}),
                                       ("AveragePool", {"count_include_pad": 1})])
@pytest.mark.parametrize("kernel, stride, pads, ceil", [
    (2, 2, [0, 0, 0, 0], 1), (3, 2, [1, 1, 1, 1], 1), (3, 2, [0, 1, 1, 0], 0),
    (3, 3, [1, 0, 2, 1], 1), (2, 1, [1, 0, 0, 1], 0), (3, 2, [0, 0, 0, 0], 1)])
def test_pool_ceil_mode_and_asymmetric_pads(rng, op, extra, kernel, stride, pads, ceil):
    x = _f32(rng, 2, 3, 7, 8)
    model = make_model("pool", [node(op, ["x"], ["y"], kernel_shape=[kernel, kernel],
                                     strides=[stride, stride], pads=pads, ceil_mode=ceil,
                                     **extra)], {"x": x}, ["y"])
    _check(model, {"x": x})


@pytest.mark.parametrize("op, extra", [("MaxPool", {}), ("AveragePool", {}),
                                       ("AveragePool", {"count_include_pad": 1})])
@pytest.mark.parametrize("shape, kernel, stride, dilation, pads, ceil", [
    ((2, 3, 9, 10), [3, 3], [1, 1], [2, 2], [0, 0, 0, 0], 0),
    ((2, 3, 9, 10), [2, 3], [2, 1], [3, 2], [1, 2, 0, 1], 0),
    ((1, 2, 11, 8), [3, 2], [2, 2], [2, 3], [1, 0, 1, 1], 1),
    ((2, 3, 13), [3], [2], [3], [2, 1], 1),
    ((1, 2, 5, 6, 7), [2, 2, 2], [1, 2, 1], [2, 1, 3], [0, 1, 0, 1, 0, 1], 0)])
def test_dilated_pooling(rng, op, extra, shape, kernel, stride, dilation, pads, ceil):
    """Dilated windows (MaxPool; AveragePool from opset 19) in 1-D to 3-D, with asymmetric pads
    and ceil_mode: one strided slice per window offset, against ONNX Runtime."""
    x = _f32(rng, *shape)
    model = _opset(make_model("pool", [node(op, ["x"], ["y"], kernel_shape=kernel,
                                            strides=stride, dilations=dilation, pads=pads,
                                            ceil_mode=ceil, **extra)], {"x": x}, ["y"]), 19)
    _check(model, {"x": x})


def test_pool_1d_ceil_mode(rng):
    x = _f32(rng, 2, 3, 10)
    for op in ("MaxPool", "AveragePool"):
        model = make_model("pool", [node(op, ["x"], ["y"], kernel_shape=[3], strides=[2],
                                         pads=[1, 0], ceil_mode=1)], {"x": x}, ["y"])
        _check(model, {"x": x})


@pytest.mark.parametrize("axis, scale_shape, with_bias", [
    (-1, (8,), True), (1, (3, 8), True), (-2, (3, 8), False), (1, (1, 8), True)])
def test_layer_normalization(rng, axis, scale_shape, with_bias):
    x = _f32(rng, 4, 3, 8) * 2 + 1
    inits = {"s": _f32(rng, *scale_shape)}
    inputs = ["x", "s"]
    if with_bias:
        inits["b"] = _f32(rng, *scale_shape)
        inputs.append("b")
    model = make_model("ln", [node("LayerNormalization", inputs, ["y"], axis=axis,
                                   epsilon=1e-3)], {"x": x}, ["y"], inits)
    _check(model, {"x": x})


def test_transfer_learning_on_a_frozen_imported_backbone(rng):
    """A pretrained ONNX backbone imported frozen, a new head built on it, one SGD step: the
    head moves by lr * its gradient (checked in closed form for the bias), the backbone
    does not move and gets no update outputs."""
    from graphc.optim import SGD
    from graphc.train import train_step

    x = _f32(rng, 8, 6)
    backbone = make_model("backbone", [node("Gemm", ["x", "w", "b"], ["h"], transB=1),
                                       node("Relu", ["h"], ["feat"])],
                          {"x": x}, ["feat"], {"w": _f32(rng, 5, 6), "b": _f32(rng, 5)})
    graph = graphc.from_onnx(backbone, frozen=True)
    assert graph.frozen_params() == {"w", "b"}
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    feat = b.tensor(graph.output("feat"))
    head_w = b.param("head_w", (5, 1), init="glorot")
    head_b = b.param("head_b", (1,), init="zeros")
    target = b.input("target", (8, 1))
    loss = (((feat @ head_w + head_b) - target) ** 2).mean()
    model = b.build(outputs={"loss": loss})
    step = train_step(model, "loss", SGD(lr=0.1))
    t = _f32(rng, 8, 1)
    out = graphc.compile(step, target="llvm")(x=x, target=t, step=np.int64(0))
    assert {k for k in out if k.startswith("new.")} == {"new.head_w", "new.head_b"}
    feat_v = np.maximum(x @ np.asarray(graph.param_values["w"]).T + graph.param_values["b"], 0)
    pred = feat_v @ model.param_values["head_w"] + model.param_values["head_b"]
    grad_b = 2 * (pred - t).mean(0)
    np.testing.assert_allclose(out["new.head_b"], -0.1 * grad_b, rtol=1e-4, atol=1e-6)
    with pytest.raises(OnnxImportError, match=r"frozen names \['nope'\]"):
        graphc.from_onnx(backbone, frozen=["nope"])


_TRITON = textwrap.dedent("""
    import sys, numpy as np, graphc
    for stem in sys.argv[1:]:
        graph = graphc.from_onnx(stem + ".onnx")
        feeds = dict(np.load(stem + ".in.npz"))
        want = dict(np.load(stem + ".want.npz"))
        got = graphc.compile(graph, target="triton")(feeds)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5, err_msg=stem + " " + k)
    print("ok")
""")


def _opset18(model):
    return _opset(model, 18)


def _opset(model, version: int):
    model.opset_import[0].version = version
    return model


def _triton_models(rng) -> dict:
    """Small models covering the importer's op families, for Triton's interpreter."""
    x2, x4, xs = _f32(rng, 4, 8), _f32(rng, 2, 3, 6, 6), _f32(rng, 3, 2, 4)
    h = 3
    i64 = lambda *v: np.asarray(v, np.int64)  # noqa: E731
    tf = {"q": _f32(rng, 2, 2, 3, 4), "k": _f32(rng, 2, 2, 5, 4), "x": _f32(rng, 1, 8, 2, 3),
          "v": _f32(rng, 1, 2, 3, 4, 3), "ids": i64(2, -1, 0)}
    return {
        "dense": (make_model("dense", [node("Gemm", ["x", "w", "b"], ["h"]),
                                       node("Tanh", ["h"], ["y"]),
                                       node("Softmax", ["h"], ["p"])],
                             {"x": x2}, ["y", "p"], {"w": _f32(rng, 8, 5), "b": _f32(rng, 5)}),
                  {"x": x2}),
        "cnn": (make_model("cnn", [
            node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
            node("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"]),
            node("Relu", ["bn"], ["r"]),
            node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
            node("ConvTranspose", ["mp", "wt"], ["up"], strides=[2, 2]),
            node("Elu", ["up"], ["y"]),
            node("Flatten", ["mp"], ["f"]),
            node("AveragePool", ["r"], ["ap"], kernel_shape=[3, 3], strides=[2, 2],
                 pads=[0, 1, 1, 0], ceil_mode=1),
        ], {"x": x4}, ["y", "f", "ap"], {"w": _f32(rng, 4, 3, 3, 3) * 0.3, "cb": _f32(rng, 4),
                                   "g": 1 + 0.1 * _f32(rng, 4), "be": _f32(rng, 4),
                                   "m": _f32(rng, 4) * 0.1, "v": np.abs(_f32(rng, 4)) + 0.5,
                                   "wt": _f32(rng, 4, 2, 2, 2) * 0.3}), {"x": x4}),
        "seq": (make_model("seq", [
            node("LSTM", ["x", "W", "R", "B"], ["y", "yh", "yc"], hidden_size=h,
                 direction="bidirectional"),
            node("Slice", ["y", "s", "e", "a"], ["sl"]),
            node("Pad", ["sl", "pads"], ["pd"]),
        ], {"x": xs}, ["y", "yh", "pd"], {"W": _f32(rng, 2, 4 * h, 4) * 0.4,
                                          "R": _f32(rng, 2, 4 * h, h) * 0.4,
                                          "B": _f32(rng, 2, 8 * h) * 0.3, "s": i64(1),
                                          "e": i64(3), "a": i64(0),
                                          "pads": i64(0, 0, 1, 0, 0, 0, 0, 2)}), {"x": xs}),
        "more": (_opset18(make_model("more", [
            node("HardSwish", ["x"], ["hs"]), node("PRelu", ["hs", "sl"], ["pr"]),
            node("Mish", ["pr"], ["mi"]),
            node("InstanceNormalization", ["mi", "s", "b"], ["inn"]),
            node("ReduceLogSumExp", ["inn", "ax"], ["lse"], keepdims=0),
            node("Tile", ["lse", "reps"], ["y"]),
        ], {"x": x4}, ["y"], {"sl": _f32(rng, 3, 1, 1), "s": _f32(rng, 3), "b": _f32(rng, 3),
                              "ax": i64(1, 3), "reps": i64(2, 3)})), {"x": x4}),
        "tensor": (_opset18(make_model("tensor", [
            node("Einsum", ["q", "k"], ["s"], equation="bhqd,bhkd->bhqk"),
            node("CumSum", ["s", "ax"], ["cs"], reverse=1),
            node("LpNormalization", ["cs"], ["lp"], axis=1),
            node("Hardmax", ["s"], ["hm"]),
            node("DepthToSpace", ["x"], ["d2s"], blocksize=2, mode="CRD"),
            node("Conv", ["v", "w3", "b3"], ["c3"], pads=[1, 0, 1, 1, 0, 1]),
            node("MaxPool", ["c3"], ["p3"], kernel_shape=[2, 2, 2], ceil_mode=1,
                 strides=[2, 2, 2]),
            node("OneHot", ["ids", "depth", "vals"], ["oh"], axis=1),
        ], tf, ["lp", "hm", "d2s", "p3", "oh"],
            {"ax": i64(2), "w3": _f32(rng, 3, 2, 2, 3, 2) * 0.4, "b3": _f32(rng, 3),
             "depth": i64(3), "vals": np.asarray([0.5, -2.0], np.float32)})), tf),
        "math": (_opset18(make_model("math", [
            node("Sin", ["x"], ["s"]), node("Cos", ["s"], ["c"]), node("Sinh", ["c"], ["sh"]),
            node("Asinh", ["sh"], ["ash"]), node("Trilu", ["ash", "k"], ["tr"], upper=0),
            node("LRN", ["x"], ["lrn"], size=3), node("Mod", ["x", "d"], ["md"], fmod=1),
            node("GatherElements", ["x", "gi"], ["ge"], axis=2), node("Det", ["x"], ["dt"]),
        ], {"x": x4}, ["tr", "lrn", "md", "ge", "dt"],
            {"k": i64(1), "d": np.asarray(0.7, np.float32),
             "gi": rng.integers(-6, 6, (2, 3, 2, 6))})), {"x": x4}),
        "index": (make_model("index", [
            node("GatherND", ["x", "gi"], ["gnd"]),
            node("ScatterElements", ["x", "si", "su"], ["sc"], axis=1, reduction="add"),
            node("TopK", ["sc", "k"], ["tv", "ti"], axis=1),
            node("SoftmaxCrossEntropyLoss", ["x", "lab"], ["ce"], ignore_index=1),
        ], {"x": x2, "lab": i64(0, 1, 7, 3)}, ["gnd", "tv", "ce"],
            {"gi": rng.integers(0, 4, (3, 2)), "si": rng.integers(-8, 8, (4, 3)),
             "su": _f32(rng, 4, 3), "k": i64(3)}), {"x": x2, "lab": i64(0, 1, 7, 3)}),
        "attention": (_opset(make_model("attention", [
            node("RotaryEmbedding", ["q", "cos", "sin", "pos"], ["qr"]),
            node("Attention", ["qr", "k", "k"], ["y"], is_causal=1),
        ], {"q": tf["q"], "k": tf["k"][:, :1, :2], "pos": i64(0, 2, 1, 3, 4, 0).reshape(2, 3)},
            ["y"], {"cos": _f32(rng, 5, 2), "sin": _f32(rng, 5, 2)}), 23),
            {"q": tf["q"], "k": tf["k"][:, :1, :2],
             "pos": i64(0, 2, 1, 3, 4, 0).reshape(2, 3)}),
        "spatial": (_opset(make_model("spatial", [
            node("AffineGrid", ["theta", "size"], ["grid"]),
            node("GridSample", ["x", "grid"], ["y"], padding_mode="reflection"),
        ], {"x": x4}, ["y"], {"theta": _f32(rng, 2, 2, 3),
                              "size": i64(2, 3, 4, 5)}), 20), {"x": x4}),
        "unpool": (_opset(make_model("unpool", [
            node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 1, 1, 1]),
            node("MaxUnpool", ["y", "i", "xs"], ["u"], kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 1, 1, 1]),
            node("Col2Im", ["cols", "im", "bl"], ["c2i"], strides=[2, 1], pads=[1, 0, 1, 1]),
        ], {"x": x4, "cols": _f32(rng, 2, 12, 15)}, ["u", "c2i"],
            {"xs": i64(*x4.shape), "im": i64(6, 5), "bl": i64(3, 2)}), 18),
            {"x": x4, "cols": _f32(rng, 2, 12, 15)}),
        "kvcache": (_opset(make_model("kvcache", [
            node("TensorScatter", ["past", "upd", "w"], ["y"], mode="circular"),
        ], {"past": tf["q"], "upd": tf["k"][:, :, :2], "w": i64(3, 0)}, ["y"]), 24),
            {"past": tf["q"], "upd": tf["k"][:, :, :2], "w": i64(3, 0)}),
        "quant": (make_model("quant", [
            node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
            node("MatMulInteger", ["q", "b", "z", "bz"], ["acc"]),
            node("Cast", ["acc"], ["accf"], to=1), node("Mul", ["accf", "s"], ["y"]),
        ], {"x": x2}, ["y"], {"b": rng.integers(-128, 128, (8, 3)).astype(np.int8),
                              "bz": np.int8(3)}), {"x": x2}),
        "gru": (make_model("gru", [
            node("GRU", ["x", "W", "R", "B"], ["y"], hidden_size=h, direction="reverse"),
            node("LayerNormalization", ["y", "s"], ["ln"], epsilon=1e-3),
        ], {"x": xs}, ["ln"], {"W": _f32(rng, 1, 3 * h, 4) * 0.5,
                               "R": _f32(rng, 1, 3 * h, h) * 0.5, "B": _f32(rng, 1, 6 * h) * 0.3,
                               "s": _f32(rng, h)}), {"x": xs}),
    }


def test_imported_models_run_on_triton_under_the_interpreter(rng, tmp_path):
    """Triton's interpreter must be chosen before triton is imported: a process of its own."""
    pytest.importorskip("triton")
    pytest.importorskip("torch")
    stems = []
    for name, (model, feeds) in _triton_models(rng).items():
        stem = str(tmp_path / name)
        onnx.save(model, stem + ".onnx")
        np.savez(stem + ".in.npz", **feeds)
        np.savez(stem + ".want.npz", **_ort(model, feeds))
        stems.append(stem)
    res = subprocess.run([sys.executable, "-c", _TRITON, *stems], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_file_import_and_gradients_of_imported_parameters(tmp_path, rng):
    x = _f32(rng, 8, 4)
    model = make_model("lin", [node("Gemm", ["x", "w", "b"], ["y"]),
                               node("ReduceSum", ["y"], ["loss"], keepdims=0)],
                       {"x": x}, ["y", "loss"], {"w": _f32(rng, 4, 3), "b": _f32(rng, 3)})
    path = tmp_path / "lin.onnx"
    onnx.save(model, str(path))
    graph = load_graph(path)
    assert graph.input_names == ["x"] and graph.output_names == ["y", "loss"]
    want = _ort(model, {"x": x})
    np.testing.assert_allclose(graphc.compile(graph, target="llvm")(x=x)["y"], want["y"],
                               rtol=1e-5, atol=1e-6)
    # imported parameters take part in autodiff like any others: d sum(x w + b) = (x^T 1, N)
    out = graphc.compile(graphc.autodiff(graph, "loss"), target="reference")(x=x)
    np.testing.assert_allclose(out["grad.b"], np.full(3, 8.0), rtol=1e-6)
    np.testing.assert_allclose(out["grad.w"], np.repeat(x.sum(0)[:, None], 3, 1), rtol=1e-5)


@pytest.mark.parametrize("build, match", [
    (lambda x: make_model("u", [node("BitShift", ["x", "x"], ["y"], direction="LEFT")],
                          {"x": x}, ["y"]),
     r"node 'y' \(BitShift\): op not supported"),
    (lambda x: make_model("u", [node("BitwiseNot", ["x"], ["y"])], {"x": x}, ["y"]),
     r"node 'y' \(BitwiseNot\): f32 operands \(int32 and int64 only\)"),
    (lambda x: make_model("u", [node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                     dilations=[2])], {"x": x}, ["y"]),
     r"\(MaxPool\): dilations \[2\] for 2 spatial axes"),
    (lambda x: make_model("u", [node("Reshape", ["x", "x"], ["y"])], {"x": x}, ["y"]),
     r"\(Reshape\): shape must be a constant"),
    (lambda x: make_model("u", [node("MaxPool", ["x"], ["y"])], {"x": x}, ["y"]),
     r"\(MaxPool\): malformed node \(KeyError: 'kernel_shape'\)"),
    (lambda x: make_model("u", [node("Conv", ["x", "w"], ["y"])], {"x": x}, ["y"],
                          {"w": np.zeros((2, 3, 3, 3), np.float32)}),
     r"node 'y' \(Conv\): .*"),
    (lambda x: make_model("u", [node("Relu", ["nope"], ["y"])], {"x": x}, ["y"]),
     r"input 'nope' is not defined"),
    (lambda x: make_model("u", [node("Dropout", ["x"], ["y", "m"]),
                                node("Cast", ["m"], ["f"], to=1)], {"x": x}, ["y", "f"]),
     r"node 'y' \(Dropout\): output 1 \('m'\) is not supported by the importer, and the "
     r"model uses it"),
    (lambda x: make_model("u", [node("LayerNormalization", ["x", "s"], ["y", "m"])], {"x": x},
                          ["y", "m"], {"s": np.ones(4, np.float32)}),
     r"\(LayerNormalization\): output 1 \('m'\) is not supported"),
    # 0/1 flags with other values: ONNX Runtime drops the axis for keepdims=-1 and keeps it
    # for 1, so no reading of them is safe
    (lambda x: make_model("u", [node("ReduceSum", ["x"], ["y"], keepdims=-1)], {"x": x},
                          ["y"]),
     r"node 'y' \(ReduceSum\): attribute keepdims=-1 must be 0 or 1"),
    (lambda x: make_model("u", [node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                     ceil_mode=2)], {"x": x}, ["y"]),
     r"\(MaxPool\): attribute ceil_mode=2 must be 0 or 1"),
    (lambda x: make_model("u", [node("LpPool", ["x"], ["y"], kernel_shape=[2, 2], p=0)],
                          {"x": x}, ["y"]),
     r"\(LpPool\): p=0 must be positive"),
])
def test_unsupported_input_is_a_clear_error(build, match, rng):
    with pytest.raises(OnnxImportError, match=match):
        graphc.from_onnx(build(_f32(rng, 1, 1, 4, 4)))


def test_symbolic_shapes_need_shapes_and_bad_files_are_named(tmp_path, rng):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dyn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxImportError, match=r"input 'x' has shape \['batch', 4\].*shapes="):
        graphc.from_onnx(model)
    graph = graphc.from_onnx(model, shapes={"x": (3, 4)})
    x = _f32(rng, 3, 4)
    np.testing.assert_array_equal(graphc.compile(graph, target="reference")(x=x)["y"],
                                  np.maximum(x, 0))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a model at all")
    with pytest.raises(OnnxImportError, match="bad.onnx"):
        load_graph(bad)
    # serialized bytes import as the model does; other objects are refused by name
    np.testing.assert_array_equal(graphc.compile(graphc.from_onnx(
        model.SerializeToString(), shapes={"x": (3, 4)}), target="reference")(x=x)["y"],
        np.maximum(x, 0))
    with pytest.raises(OnnxImportError, match="not a readable ONNX model"):
        graphc.from_onnx(b"\x08\x07not a model at all")
    with pytest.raises(OnnxImportError, match="not dict"):
        graphc.from_onnx({"graph": None})
