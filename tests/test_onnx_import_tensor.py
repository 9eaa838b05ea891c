"""ONNX import of the tensor-algebra and layout ops (`graphc/onnx_tensor.py`), 3-D convolution
and pooling, and training-mode batch norm, against ONNX Runtime on the same file through the
reference and LLVM backends; Einsum's gradient against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.onnx_import import OnnxImportError
from graphc.optim import SGD
from graphc.train import train_step

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _check_outputs, _f32, _opset  # noqa: E402


def _i64(*v):
    return np.asarray(v, np.int64)



EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 5, 4), (2, 3, 6, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 3, 4), (1, 3, 4, 2)]),
    ("...j,...j->...", [(3, 1, 4), (1, 5, 4)]),
    ("ij->ji", [(3, 4)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("ij->", [(3, 4)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,j->i", [(3, 4), (4,)]),
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 2)]),
    ("ij,jk", [(3, 4), (4, 2)]),
    ("bji,bjk->kbi", [(2, 4, 3), (2, 4, 5)]),
    ("ijk,ikj->i", [(2, 3, 4), (2, 4, 3)]),
    ("bik,k->bi", [(2, 3, 4), (4,)]),
    ("ij,kl->ijkl", [(2, 3), (2, 2)]),
]


@pytest.mark.parametrize("equation, shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum(rng, equation, shapes):
    names = [f"x{i}" for i in range(len(shapes))]
    feeds = {n: _f32(rng, *s) for n, s in zip(names, shapes, strict=True)}
    model = make_model("es", [node("Einsum", names, ["y"], equation=equation)], feeds, ["y"])
    _check(model, feeds)


def test_einsum_ellipses_of_different_ranks_broadcast_as_numpy(rng):
    """ONNX allows it; ONNX Runtime refuses it, so numpy's einsum is the oracle."""
    a, c, d = _f32(rng, 2, 3, 3, 4), _f32(rng, 3, 4, 2), _f32(rng, 2, 3, 3)
    model = make_model("es", [node("Einsum", ["a", "c"], ["y"], equation="...ij,...jk->...ik"),
                              node("Einsum", ["d"], ["t"], equation="...ii->...")],
                       {"a": a, "c": c, "d": d}, ["y", "t"])
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(a=a, c=c, d=d)
        np.testing.assert_allclose(got["y"], np.einsum("...ij,...jk->...ik", a, c), rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(got["t"], np.einsum("...ii->...", d), rtol=1e-5)


def test_einsum_gradient_matches_torch(rng):
    torch = pytest.importorskip("torch")
    eq = "bhqd,bhkd->bhqk"
    a, w = _f32(rng, 2, 3, 5, 4), _f32(rng, 2, 3, 6, 4)
    model = make_model("esg", [node("Einsum", ["a", "w"], ["s"], equation=eq),
                               node("Tanh", ["s"], ["t"]),
                               node("ReduceSum", ["t"], ["loss"], keepdims=0)],
                       {"a": a}, ["loss"], {"w": w})
    graph = graphc.from_onnx(model)
    step = train_step(graph, "loss", SGD(lr=1.0))
    out = graphc.compile(step, target="llvm")(a=a, step=np.int64(0))
    ta, tw = torch.tensor(a), torch.tensor(w, requires_grad=True)
    torch.tanh(torch.einsum(eq, ta, tw)).sum().backward()
    np.testing.assert_allclose(out["new.w"], w - tw.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("equation, shapes, match", [
    ("ij,jk->ik", [(3, 4), (5, 6)], "sizes 4 and 5"),
    ("ij->k", [(3, 4)], "names one no operand has"),
    ("ijk->i", [(3, 4)], "does not fit a rank-2 operand"),
    ("ij,jk->ik", [(3, 4)], "2 operand terms for 1 inputs"),
    ("i2,jk->ik", [(3, 4), (4, 2)], "letters a-z, A-Z"),
    ("...i->i", [(2, 3)], "ellipsis is missing from the output"),
])
def test_bad_einsum_equations_are_named(rng, equation, shapes, match):
    names = [f"x{i}" for i in range(len(shapes))]
    feeds = {n: _f32(rng, *s) for n, s in zip(names, shapes, strict=True)}
    model = make_model("bad", [node("Einsum", names, ["y"], equation=equation, name="mix")],
                       feeds, [])
    model.graph.output.append(onnx.helper.make_tensor_value_info("y", 1, None))
    with pytest.raises(OnnxImportError, match=rf"'mix' \(Einsum\).*{match}"):
        graphc.from_onnx(model)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive, reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(rng, axis, exclusive, reverse):
    x = _f32(rng, 3, 5, 4)
    model = make_model("cs", [node("CumSum", ["x", "ax"], ["y"], exclusive=exclusive,
                                   reverse=reverse)], {"x": x}, ["y"], {"ax": _i64(axis)})
    _check(model, {"x": x})


def test_cumsum_of_constants_is_folded_at_import(rng):
    x = _f32(rng, 2, 3)
    model = make_model("csc", [node("CumSum", ["c", "ax"], ["s"], reverse=1, exclusive=1),
                               node("Cast", ["s"], ["sf"], to=1),
                               node("Add", ["x", "sf"], ["y"])],
                       {"x": x}, ["y"], {"c": _i64(1, 2, 3), "ax": _i64(0)})
    graph = _check(model, {"x": x})
    assert "matmul" not in str(graph)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(rng, axis):
    idx = _i64(0, 3, -1, 2, 5, -5)  # 5 and -5 are out of range: all `off`
    idx = idx.reshape(2, 3)
    model = make_model("oh", [node("OneHot", ["i", "depth", "vals"], ["y"], axis=axis)],
                       {}, ["y"], {"depth": _i64(4), "vals": np.asarray([-1.0, 2.5], np.float32)})
    model.graph.input.append(onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64,
                                                                [2, 3]))
    _check(model, {"i": idx})


@pytest.mark.parametrize("opset, axis", [(13, -1), (13, 1), (11, 1), (11, 2)])
def test_hardmax(rng, opset, axis):
    x = _f32(rng, 2, 3, 4)
    x[0, 1, 2] = x[0, 1, 0] = 9.0  # a tie: the first maximum wins
    model = _opset(make_model("hm", [node("Hardmax", ["x"], ["y"], axis=axis)], {"x": x}, ["y"]),
                   opset)
    _check(model, {"x": x})


@pytest.mark.parametrize("p, axis", [(1, -1), (2, 1), (2, 0)])
def test_lp_normalization(rng, p, axis):
    x = _f32(rng, 3, 4, 5)
    model = make_model("lp", [node("LpNormalization", ["x"], ["y"], p=p, axis=axis)],
                       {"x": x}, ["y"])
    _check(model, {"x": x})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(rng, mode):
    x = _f32(rng, 2, 12, 3, 4)
    model = make_model("d2s", [node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode),
                               node("SpaceToDepth", ["y"], ["z"], blocksize=2),
                               node("SpaceToDepth", ["x"], ["w"], blocksize=1)],
                       {"x": x}, ["y", "z", "w"])
    _check(model, {"x": x})


def test_positions_from_range_and_constant_of_shape(rng):
    """The position ramp exporters write: Range over a dimension read from Shape, and a filled
    tensor shaped like the input; both constants at import."""
    x = _f32(rng, 2, 5)
    model = make_model("pos", [
        node("Shape", ["x"], ["shp"]),
        node("Gather", ["shp", "one"], ["n"], axis=0),
        node("Range", ["zero", "n", "step"], ["pos"]),
        node("Cast", ["pos"], ["posf"], to=1),
        node("Add", ["x", "posf"], ["a"]),
        node("ConstantOfShape", ["shp"], ["fill"],
             value=onnx.helper.make_tensor("v", 1, [1], [0.5])),
        node("Mul", ["a", "fill"], ["y"]),
        node("ConstantOfShape", ["shp"], ["zeros"]),
        node("Add", ["y", "zeros"], ["z"]),
        node("Range", ["f0", "f1", "fd"], ["fr"]),
        node("Add", ["z", "fr"], ["out"]),
    ], {"x": x}, ["out"], {"one": np.int64(1), "zero": np.int64(0), "step": np.int64(1),
                           "f0": np.float32(0.5), "f1": np.float32(2.9),
                           "fd": np.float32(0.5)})
    graph = _check(model, {"x": x})
    assert set(graph.param_names) == set()


def test_global_max_pool_2d_and_3d(rng):
    x2, x3 = _f32(rng, 2, 3, 4, 5), _f32(rng, 2, 3, 3, 4, 2)
    model = make_model("gmp", [node("GlobalMaxPool", ["a"], ["y"]),
                               node("GlobalMaxPool", ["b"], ["z"]),
                               node("GlobalAveragePool", ["b"], ["w"])],
                       {"a": x2, "b": x3}, ["y", "z", "w"])
    _check(model, {"a": x2, "b": x3})


@pytest.mark.parametrize("kw", [
    {},
    {"pads": [1, 0, 1, 1, 1, 0], "strides": [1, 2, 1]},
    {"dilations": [1, 2, 1], "pads": [0, 2, 1, 0, 2, 1]},
    {"group": 2, "strides": [2, 1, 2]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2, 1]},
], ids=["plain", "pads-strides", "dilation", "groups", "same"])
def test_conv3d(rng, kw):
    x = _f32(rng, 2, 4, 5, 6, 4)
    g = kw.get("group", 1)
    w, bias = _f32(rng, 6, 4 // g, 3, 2, 3) * 0.3, _f32(rng, 6)
    model = make_model("c3", [node("Conv", ["x", "w", "b"], ["y"], **kw),
                              node("Relu", ["y"], ["r"])],
                       {"x": x}, ["r"], {"w": w, "b": bias})
    _check(model, {"x": x})


@pytest.mark.parametrize("op, kw", [
    ("MaxPool", {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    ("MaxPool", {"kernel_shape": [3, 2, 2], "pads": [1, 0, 1, 1, 0, 0], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3, 3], "pads": [1, 1, 1, 1, 1, 1],
                     "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2, 2], "pads": [0, 1, 0, 1, 0, 1], "strides": [2, 2, 2],
                     "ceil_mode": 1}),
])
def test_pool3d(rng, op, kw):
    x = _f32(rng, 2, 3, 5, 6, 4)
    model = make_model("p3", [node(op, ["x"], ["y"], **kw)], {"x": x}, ["y"])
    _check(model, {"x": x})


def test_conv_transpose_3d(rng):
    x = _f32(rng, 1, 4, 3, 4, 2)
    model = make_model("ct3", [node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 1, 2],
                                    pads=[0, 1, 1, 1, 0, 0], output_padding=[1, 0, 0])],
                       {"x": x}, ["y"], {"w": _f32(rng, 4, 3, 2, 3, 2) * 0.3, "b": _f32(rng, 3)})
    _check(model, {"x": x})


def test_training_mode_batch_norm_and_its_running_statistics(rng):
    x = _f32(rng, 4, 3, 5, 2) * 2 + 1
    inits = {"g": 1 + 0.1 * _f32(rng, 3), "be": _f32(rng, 3), "m": _f32(rng, 3) * 0.1,
             "v": np.abs(_f32(rng, 3)) + 0.5}
    model = _opset(make_model("bnt", [
        node("BatchNormalization", ["x", "g", "be", "m", "v"], ["y", "rm", "rv"],
             training_mode=1, momentum=0.8, epsilon=1e-3)], {"x": x}, ["y", "rm", "rv"], inits),
        15)
    _check(model, {"x": x})
    # and the formula written out: batch statistics, biased variance, ONNX's momentum
    x64 = x.astype(np.float64)
    mu, var = x64.mean((0, 2, 3)), x64.var((0, 2, 3))
    got = graphc.compile(graphc.from_onnx(model), target="reference")({"x": x})
    np.testing.assert_allclose(got["rv"], inits["v"] * 0.8 + var * 0.2, rtol=1e-5)
    want_y = (x64 - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3)
    want_y = want_y * inits["g"][:, None, None] + inits["be"][:, None, None]
    np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)


def test_one_hot_values_must_be_constant(rng):
    model = make_model("ohv", [node("OneHot", ["i", "depth", "v"], ["y"], name="hot")],
                       {"v": np.zeros(2, np.float32)}, ["y"], {"depth": _i64(3)})
    model.graph.input.append(onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64,
                                                                [2]))
    with pytest.raises(OnnxImportError, match=r"'hot' \(OneHot\).*values must be a constant"):
        graphc.from_onnx(model)



def test_video_net_with_einsum_attention_exported_by_torch(rng, tmp_path):
    """A 3-D convolutional stem (Conv3d, BatchNorm3d, MaxPool3d with ceil_mode), pixel shuffle
    (DepthToSpace), and attention pooling over the frames written with torch.einsum, as
    torch.onnx exports them: against torch, and the gradients of the parameters."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv3d(3, 8, (3, 3, 3), padding=1, stride=(1, 2, 2)),
                                      nn.BatchNorm3d(8), nn.ReLU(),
                                      nn.MaxPool3d(2, ceil_mode=True))
            self.shuffle = nn.PixelShuffle(2)
            self.query = nn.Parameter(torch.randn(2))
            self.head = nn.Linear(2, 4)

        def forward(self, x):
            f = self.stem(x)                                     # [N, 8, T, H, W]
            n, c, t, h, w = f.shape
            s = self.shuffle(f.transpose(1, 2).reshape(n * t, c, h, w))  # [N*T, 2, 2H, 2W]
            tokens = s.mean((2, 3)).reshape(n, t, 2)
            att = torch.softmax(torch.einsum("ntc,c->nt", tokens, self.query), dim=1)
            return self.head(torch.einsum("nt,ntc->nc", att, tokens))

    torch.manual_seed(0)
    net = Net().eval()
    net.stem[1].running_mean.uniform_(-0.5, 0.5)
    net.stem[1].running_var.uniform_(0.5, 2.0)
    x = _f32(rng, 2, 3, 5, 8, 8)
    path = tmp_path / "video.onnx"
    torch.onnx.export(net, (torch.from_numpy(x),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"])
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert {"Einsum", "DepthToSpace", "Conv", "MaxPool"} <= ops, ops
    graph = graphc.from_onnx(model)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    _check_outputs(graph, {"x": x}, {"logits": want})
    loss_model = graphc.Builder.from_graph(graph)
    loss_model.copy_body(graph)
    loss = loss_model.tensor(graph.output("logits")).tanh().sum()
    step = train_step(loss_model.build(outputs={"loss": loss}), "loss", SGD(lr=1.0))
    out = graphc.compile(step, target="llvm")(x=x, step=np.int64(0))
    net.zero_grad()
    torch.tanh(net(torch.from_numpy(x))).sum().backward()
    for name, p in (("query", net.query), ("head.weight", net.head.weight)):
        np.testing.assert_allclose(out[f"new.{name}"], (p - p.grad).detach().numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)
    # the exporter folded the batch norm into the convolution: W' = W s per output channel,
    # so dL/dW' = (dL/dW) / s
    bn = net.stem[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    conv_w = net.stem[0].weight
    folded = (conv_w.detach().numpy() * scale[:, None, None, None, None])
    folded_name = next(n for n in graph.param_names if graph.param_values[n].shape == folded.shape)
    want_w = folded - conv_w.grad.numpy() / scale[:, None, None, None, None]
    np.testing.assert_allclose(out[f"new.{folded_name}"], want_w, rtol=1e-4, atol=1e-5)


def test_floor_ceil_round(rng):
    x = np.concatenate([np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 8388609.0],
                                 np.float32), (_f32(rng, 8) * 4)]).reshape(2, 8)
    model = make_model("rnd", [node("Floor", ["x"], ["f"]), node("Ceil", ["x"], ["c"]),
                               node("Round", ["x"], ["r"])], {"x": x}, ["f", "c", "r"])
    _check(model, {"x": x}, rtol=0, atol=0)
