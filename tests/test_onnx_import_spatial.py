"""ONNX import of AffineGrid and GridSample (`graphc/onnx_spatial.py`) against ONNX Runtime
through the reference and LLVM backends, every mode, padding and corner alignment; a spatial
transformer's gradient (through the grid into theta, and into the image) against torch."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.optim import SGD
from graphc.train import train_step

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _f32, _opset  # noqa: E402


@pytest.mark.parametrize("opset, mode", [(16, "bilinear"), (16, "nearest"), (20, "linear"),
                                         (20, "nearest")])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample(rng, opset, mode, padding, align):
    """Grid points up to 1.6 outside [-1, 1]: every padding mode is exercised."""
    x, g = _f32(rng, 2, 3, 5, 7), rng.uniform(-1.6, 1.6, (2, 4, 6, 2)).astype(np.float32)
    model = _opset(make_model("gs", [node("GridSample", ["x", "g"], ["y"], mode=mode,
                                          padding_mode=padding, align_corners=align)],
                              {"x": x, "g": g}, ["y"]), opset)
    _check(model, {"x": x, "g": g}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid(rng, align):
    theta = _f32(rng, 2, 2, 3)
    model = _opset(make_model("ag", [node("AffineGrid", ["t", "s"], ["y"], align_corners=align)],
                              {"t": theta}, ["y"], {"s": np.array([2, 3, 4, 5], np.int64)}), 20)
    _check(model, {"t": theta}, rtol=1e-5, atol=1e-6)


def test_spatial_transformer_gradient_matches_torch(rng):
    """AffineGrid -> GridSample (bilinear, zeros) -> sum of squares: theta's gradient flows
    through the sampling weights, the image's through the gathered pixels."""
    torch = pytest.importorskip("torch")
    x = _f32(rng, 2, 3, 6, 5)
    theta = (np.array([[1.0, 0.1, 0.05], [-0.1, 0.9, 0.0]]) + 0.1 * rng.standard_normal(
        (2, 2, 3))).astype(np.float32)
    model = _opset(make_model("stn", [
        node("AffineGrid", ["theta", "size"], ["grid"]),
        node("GridSample", ["x", "grid"], ["y"]),
        node("Mul", ["y", "y"], ["sq"]), node("ReduceSum", ["sq"], ["loss"], keepdims=0)],
        {"x": x}, ["loss"], {"theta": theta, "size": np.array([2, 3, 4, 4], np.int64)}), 20)
    step = train_step(graphc.from_onnx(model), "loss", SGD(lr=1.0))
    tt = torch.tensor(theta, requires_grad=True)
    grid = torch.nn.functional.affine_grid(tt, [2, 3, 4, 4], align_corners=False)
    y = torch.nn.functional.grid_sample(torch.tensor(x), grid, align_corners=False)
    (y * y).sum().backward()
    for target in ("reference", "llvm"):
        out = graphc.compile(step, target=target)(x=x, step=np.int64(0))
        np.testing.assert_allclose(out["new.theta"], theta - tt.grad.numpy(), rtol=1e-4,
                                   atol=1e-5)


def test_unsupported_grid_sample_is_named(rng):
    x, g = _f32(rng, 1, 1, 4, 4), _f32(rng, 1, 2, 2, 2)
    model = _opset(make_model("gs", [node("GridSample", ["x", "g"], ["y"], mode="cubic")],
                              {"x": x, "g": g}, ["y"]), 20)
    with pytest.raises(graphc.GraphError, match="GridSample.*mode 'cubic'"):
        graphc.from_onnx(model)
