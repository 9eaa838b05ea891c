"""ONNX import of the further activations, reductions and normalizations (`graphc/onnx_more.py`)
against ONNX Runtime on the same file, through the reference and LLVM backends."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _f32, _opset  # noqa: E402


def test_activations(rng):
    x = _f32(rng, 2, 3, 4, 5) * 3
    model = _opset(make_model("acts", [
        node("PRelu", ["x", "slope"], ["pr"]),
        node("PRelu", ["x", "s1"], ["pr1"]),
        node("Selu", ["x"], ["se"]), node("Selu", ["x"], ["se2"], alpha=1.5, gamma=0.7),
        node("Celu", ["x"], ["ce"], alpha=0.6),
        node("HardSwish", ["x"], ["hs"]), node("Softsign", ["x"], ["ss"]),
        node("Mish", ["x"], ["mi"]), node("ThresholdedRelu", ["x"], ["tr"], alpha=0.4),
        node("Sign", ["x"], ["sg"]),
    ], {"x": x}, ["pr", "pr1", "se", "se2", "ce", "hs", "ss", "mi", "tr", "sg"],
        {"slope": _f32(rng, 3, 1, 1), "s1": np.asarray([0.25], np.float32)}), 18)
    _check(model, {"x": x})


@pytest.mark.parametrize("op", ["ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
                                "ReduceLogSumExp"])
@pytest.mark.parametrize("axes, keepdims", [([1], 1), ([0, 2], 0), (None, 1), ([-1], 0)])
def test_reductions(rng, op, axes, keepdims):
    x = _f32(rng, 3, 4, 5) * 2
    ins = ["x"] + (["axes"] if axes is not None else [])
    inits = {"axes": np.asarray(axes, np.int64)} if axes is not None else {}
    model = _opset(make_model("red", [node(op, ins, ["y"], keepdims=keepdims)], {"x": x}, ["y"],
                              inits), 18)
    _check(model, {"x": x})


def test_log_sum_exp_of_large_values_does_not_overflow(rng):
    x = _f32(rng, 4, 6) * 30 + 200
    model = _opset(make_model("lse", [node("ReduceLogSumExp", ["x", "a"], ["y"], keepdims=0)],
                              {"x": x}, ["y"], {"a": np.asarray([1], np.int64)}), 18)
    graph = graphc.from_onnx(model)
    got = graphc.compile(graph, target="llvm")({"x": x})["y"]
    x64 = x.astype(np.float64)
    want = np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1)) + x64.max(1)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis, keepdims", [(0, 1), (-1, 0), (1, 1)])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_extremes(rng, op, axis, keepdims, last):
    """Ties along every axis (three values only): the first index wins by default, the last
    with select_last_index=1."""
    x = np.round(_f32(rng, 3, 5, 4)).clip(-1, 1)
    model = make_model("arg", [node(op, ["x"], ["y"], axis=axis, keepdims=keepdims,
                                    select_last_index=last)], {"x": x}, [])
    model.graph.output.append(onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64,
                                                                 None))
    _check(model, {"x": x})


@pytest.mark.parametrize("reps", [[2, 1, 3], [1, 1, 1], [3, 2, 1]])
def test_tile(rng, reps):
    x = _f32(rng, 2, 3, 4)
    model = make_model("tile", [node("Tile", ["x", "r"], ["y"])], {"x": x}, ["y"],
                       {"r": np.asarray(reps, np.int64)})
    _check(model, {"x": x})


def test_instance_and_group_normalization(rng):
    x = _f32(rng, 2, 6, 5, 4) * 2 + 1
    model = _opset(make_model("norms", [
        node("InstanceNormalization", ["x", "s", "b"], ["i"], epsilon=1e-3),
        node("GroupNormalization", ["x", "s", "b"], ["g"], num_groups=3, epsilon=1e-4),
        node("GroupNormalization", ["x", "s", "b"], ["g1"], num_groups=1),
    ], {"x": x}, ["i", "g", "g1"], {"s": _f32(rng, 6), "b": _f32(rng, 6)}), 21)
    _check(model, {"x": x})


def test_bad_group_counts_are_named(rng):
    x = _f32(rng, 2, 6, 5)
    model = _opset(make_model("gn", [node("GroupNormalization", ["x", "s", "b"], ["g"],
                                          num_groups=4)], {"x": x}, ["g"],
                              {"s": _f32(rng, 6), "b": _f32(rng, 6)}), 21)
    with pytest.raises(OnnxImportError, match=r"\(GroupNormalization\): 4 groups for an input "
                                              r"of shape \(2, 6, 5\)"):
        graphc.from_onnx(model)


@pytest.mark.parametrize("mode, ctm, nearest_mode", [
    ("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_floor"),
    ("nearest", "half_pixel", "round_prefer_ceil"), ("nearest", "align_corners", "ceil"),
    ("linear", "half_pixel", "floor"), ("linear", "align_corners", "floor"),
    ("linear", "asymmetric", "floor"), ("linear", "pytorch_half_pixel", "floor")])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 1.5, 0.6], [1, 2, 3, 1]])
def test_resize_by_scales(rng, mode, ctm, nearest_mode, scales):
    x = _f32(rng, 2, 3, 5, 7)
    model = _opset(make_model("resize", [
        node("Resize", ["x", "", "s"], ["y"], mode=mode, coordinate_transformation_mode=ctm,
             nearest_mode=nearest_mode)], {"x": x}, ["y"],
        {"s": np.asarray(scales, np.float32)}), 18)
    _check(model, {"x": x})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_by_sizes_and_axes(rng, mode):
    x = _f32(rng, 2, 3, 6, 4)
    model = _opset(make_model("resize", [
        node("Resize", ["x", "", "", "sz"], ["y"], mode=mode),
        node("Resize", ["x", "", "", "sz2"], ["y2"], mode=mode, axes=[-1, 2])],
        {"x": x}, ["y", "y2"],
        {"sz": np.asarray([2, 3, 9, 10], np.int64), "sz2": np.asarray([3, 4], np.int64)}), 18)
    _check(model, {"x": x})


def test_upsample_and_its_gradient(rng):
    """A decoder's nearest x2 upsampling (broadcast, no matmul) then a conv: its gradient
    reaches the input summed over each 2 x 2 block."""
    x = _f32(rng, 1, 2, 3, 4)
    model = _opset(make_model("up", [node("Upsample", ["x", "s"], ["y"], mode="nearest")],
                              {"x": x}, ["y"], {"s": np.asarray([1, 1, 2, 2], np.float32)}), 9)
    graph = _check(model, {"x": x})
    assert "matmul" not in {n.op for n in graph.nodes}
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    w = rng.standard_normal((1, 2, 6, 8)).astype(np.float32)
    loss = (b.tensor(graph.output("y")) * b.const(w)).sum()
    g = graphc.autodiff(b.build(outputs={"loss": loss}), "loss", ["x"])
    got = graphc.compile(g, target="llvm")({"x": x})["grad.x"]
    want = w.reshape(1, 2, 3, 2, 4, 2).sum(axis=(3, 5))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric",
                                 "pytorch_half_pixel"])
@pytest.mark.parametrize("scales, extra", [
    ([1, 1, 2, 2], {}), ([1, 1, 1.5, 0.6], {"exclude_outside": 1}),
    ([1, 1, 3, 0.5], {"cubic_coeff_a": -0.5}), ([1, 1, 0.8, 2.5], {"exclude_outside": 1,
                                                                   "cubic_coeff_a": -0.6})])
def test_cubic_resize(rng, ctm, scales, extra):
    x = _f32(rng, 2, 3, 5, 7)
    model = _opset(make_model("resize", [
        node("Resize", ["x", "", "s"], ["y"], mode="cubic", coordinate_transformation_mode=ctm,
             **extra)], {"x": x}, ["y"], {"s": np.asarray(scales, np.float32)}), 18)
    _check(model, {"x": x})


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales, extra", [
    ([1, 1, 0.5, 0.5], {}), ([1, 1, 0.37, 0.6], {}), ([1, 1, 0.3, 1.4], {}),
    ([1, 1, 0.45, 0.25], {"exclude_outside": 1}),
    ([1, 1, 0.6, 0.5], {"coordinate_transformation_mode": "align_corners"}),
    ([1, 1, 0.5, 0.7], {"coordinate_transformation_mode": "asymmetric"})])
def test_antialiased_resize(rng, mode, scales, extra):
    """antialias=1: downsampling widens the linear or cubic filter by 1/scale (upsampling
    axes keep the plain one), against ONNX Runtime."""
    x = _f32(rng, 2, 3, 17, 13)
    model = _opset(make_model("resize", [
        node("Resize", ["x", "", "s"], ["y"], mode=mode, antialias=1, **extra)], {"x": x},
        ["y"], {"s": np.asarray(scales, np.float32)}), 18)
    _check(model, {"x": x})


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_keeping_the_aspect_ratio(rng, policy, mode):
    """keep_aspect_ratio_policy: one scale for every resized axis (the smaller or the larger
    of size / shape), the output sizes rounded half up, against ONNX Runtime."""
    x = _f32(rng, 1, 2, 9, 14)
    model = _opset(make_model("resize", [
        node("Resize", ["x", "", "", "sz"], ["y"], mode=mode, axes=[2, 3],
             keep_aspect_ratio_policy=policy)], {"x": x}, ["y"],
        {"sz": np.asarray([5, 11], np.int64)}), 18)
    _check(model, {"x": x})


def test_bicubic_upsampling_exported_by_torch(rng, tmp_path):
    """nn.Upsample(mode="bicubic") as torch.onnx exports it (a = -0.75, the half-pixel
    transform of align_corners=False), against torch itself."""
    torch = pytest.importorskip("torch")
    up = torch.nn.Upsample(scale_factor=2, mode="bicubic", align_corners=False)
    x = torch.from_numpy(_f32(rng, 1, 2, 5, 6))
    path = tmp_path / "bicubic.onnx"
    torch.onnx.export(up, (x,), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"])
    got = graphc.compile(graphc.from_onnx(str(path)), target="llvm")(x=x.numpy())["y"]
    np.testing.assert_allclose(got, up(x).numpy(), rtol=1e-4, atol=1e-5)


def test_unknown_aspect_ratio_policy_is_refused(rng):
    x = _f32(rng, 1, 1, 4, 4)
    model = _opset(make_model("resize", [node("Resize", ["x", "", "", "sz"], ["y"],
                                              keep_aspect_ratio_policy="fit")],
                              {"x": x}, ["y"], {"sz": np.asarray([1, 1, 2, 2], np.int64)}), 18)
    with pytest.raises(OnnxImportError, match=r"\(Resize\): keep_aspect_ratio_policy 'fit'"):
        graphc.from_onnx(model)


def test_mobilenet_style_net_exported_by_torch(rng, tmp_path):
    """Depthwise convolution, squeeze-excitation (global pool, 1x1 convs, HardSigmoid gate),
    HardSwish, inference batch norm, a residual and a bilinear upsampling whose scales come
    from a Constant node, as torch.onnx exports them: against torch."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c: int = 8, e: int = 24) -> None:
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e),
                                        nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False),
                                    nn.BatchNorm2d(e), nn.Hardswish())
            self.squeeze, self.excite = nn.Conv2d(e, e // 4, 1), nn.Conv2d(e // 4, e, 1)
            self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            y = self.dw(self.expand(x))
            gate = nn.functional.adaptive_avg_pool2d(y, 1)
            gate = nn.functional.hardsigmoid(self.excite(torch.relu(self.squeeze(gate))))
            return x + self.project(y * gate)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Hardswish())
            self.block = Block()
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            y = self.up(self.block(self.stem(x)))
            return self.head(y.mean((2, 3))), y

    torch.manual_seed(0)
    net = Net().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # running statistics away from the identity
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.from_numpy(_f32(rng, 2, 3, 16, 16))
    path = tmp_path / "mbnet.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits", "features"])
    graph = graphc.from_onnx(str(path))
    want = [t.detach().numpy() for t in net(x)]
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)({"x": x.numpy()})
        for name, w in zip(("logits", "features"), want, strict=True):
            np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5, err_msg=target)


def test_normalizing_a_zero_vector_has_finite_gradients(rng):
    """F.normalize (ReduceL2, Clip at eps, Div) of rows one of which is all zeros (a padding
    embedding): the norm's gradient at the zero row is 0, as torch's, not 0 · inf = NaN."""
    torch = pytest.importorskip("torch")
    import io

    x = _f32(rng, 4, 6)
    x[1] = 0.0
    net = type("Normalize", (torch.nn.Module,), {
        "forward": lambda self, t: torch.nn.functional.normalize(t, dim=-1) * 3.0})()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.from_numpy(x),), buf, dynamo=False, input_names=["x"],
                      output_names=["y"])
    graph = graphc.from_onnx(buf.getvalue())
    xt = torch.from_numpy(x).requires_grad_(True)
    w = _f32(rng, 4, 6)
    (net(xt) * torch.from_numpy(w)).sum().backward()
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    loss = (b.tensor(dict(graph.outputs)["y"]) * b.const(w)).sum()
    grads = graphc.autodiff(b.build(outputs={"loss": loss}), "loss", wrt=["x"])
    for target in ("reference", "llvm"):
        got = graphc.compile(grads, target=target)(x=x)["grad.x"]
        assert np.isfinite(got).all(), target
        np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=target)
