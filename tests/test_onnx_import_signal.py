"""ONNX import of DFT and STFT (`graphc/onnx_signal.py`) against ONNX Runtime through the
reference and LLVM backends: real and complex signals, one-sided, inverse, padded and
truncated lengths, opset 17's axis attribute and opset 20's axis input; the gradient of a
spectrum's energy against torch.fft."""

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


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("parts, onesided, inverse", [(1, 0, 0), (1, 1, 0), (2, 0, 0),
                                                      (2, 0, 1), (1, 0, 1)])
def test_dft(rng, opset, parts, onesided, inverse):
    x = _f32(rng, 2, 8, 3, parts)
    attrs = {"onesided": onesided, "inverse": inverse}
    if opset == 17:
        model = make_model("dft", [node("DFT", ["x"], ["y"], axis=1, **attrs)], {"x": x}, ["y"])
    else:
        model = make_model("dft", [node("DFT", ["x", "", "ax"], ["y"], **attrs)], {"x": x},
                           ["y"], {"ax": np.array(1, np.int64)})
    _check(_opset(model, opset), {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [5, 12])
def test_dft_length_truncates_and_pads(rng, length):
    x = _f32(rng, 2, 8, 2)
    model = make_model("dft", [node("DFT", ["x", "n", "ax"], ["y"])], {"x": x}, ["y"],
                       {"n": np.array(length, np.int64), "ax": np.array(1, np.int64)})
    _check(_opset(model, 20), {"x": x}, rtol=1e-5, atol=2e-5)


def test_stft(rng):
    sig = _f32(rng, 2, 40, 1)
    windowed = make_model("stft", [node("STFT", ["x", "step", "w"], ["y"])], {"x": sig}, ["y"],
                          {"step": np.array(8, np.int64), "w": np.hanning(16).astype(
                              np.float32)})
    _check(_opset(windowed, 17), {"x": sig}, rtol=1e-5, atol=1e-5)
    two_sided = make_model("stft", [node("STFT", ["x", "step", "", "n"], ["y"], onesided=0)],
                           {"x": sig}, ["y"], {"step": np.array(6, np.int64),
                                               "n": np.array(10, np.int64)})
    _check(_opset(two_sided, 17), {"x": sig}, rtol=1e-5, atol=2e-5)


def test_spectrum_energy_gradient_matches_torch(rng):
    """|rfft(x·w)|² summed: the gradient into w through the DFT's matmuls."""
    torch = pytest.importorskip("torch")
    x, w = _f32(rng, 3, 16, 1), _f32(rng, 16, 1)
    model = _opset(make_model("spec", [
        node("Mul", ["x", "w"], ["xw"]), node("DFT", ["xw", "", "ax"], ["f"], onesided=1),
        node("Mul", ["f", "f"], ["p"]), node("ReduceSum", ["p"], ["loss"], keepdims=0)],
        {"x": x}, ["loss"], {"w": w, "ax": np.array(1, np.int64)}), 20)
    step = train_step(graphc.from_onnx(model), "loss", SGD(lr=1.0))
    tw = torch.tensor(w, requires_grad=True)
    spec = torch.fft.rfft((torch.tensor(x) * tw)[..., 0], dim=1)
    (spec.real ** 2 + spec.imag ** 2).sum().backward()
    for target in ("reference", "llvm"):
        out = graphc.compile(step, target=target)(x=x, step=np.int64(0))
        np.testing.assert_allclose(out["new.w"], w - tw.grad.numpy(), rtol=1e-4, atol=1e-4)
