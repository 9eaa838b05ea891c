"""ONNX import of QuantizeLinear/DequantizeLinear (simulated quantization), the signal windows,
CenterCropPad, ReverseSequence, ReduceProd and LpPool (`graphc/onnx_quant.py`) against ONNX
Runtime through the reference and LLVM backends."""

from __future__ import annotations

import numpy as np
import pytest

import graphc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _f32, _opset  # noqa: E402


def _check_unoptimized(model, feeds, **tol):
    """Against ONNX Runtime with its graph optimizations off: optimized, it fuses a
    dequantized weight into a matmul that quantizes the activations too (an approximation)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(feeds)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, err_msg=f"{target} {k}", **tol)


@pytest.mark.parametrize("zp", [np.array(3, np.int8), np.array(128, np.uint8),
                                np.array([1, -2, 0], np.int8), np.array(-7, np.int16)],
                         ids=["int8", "uint8", "per-channel", "int16"])
def test_quantize_dequantize_round_trip(rng, zp):
    """Round half to even, saturation at the type's limits (values up to 3 / 0.02 = 150)."""
    x = (rng.standard_normal((2, 3, 4)) * 3).astype(np.float32)
    x[0, 0, :2] = [0.025, 0.075]  # exact halves of the scale below: ties
    scale = np.array(0.05, np.float32) if zp.ndim == 0 else np.array([0.05, 0.1, 0.02],
                                                                      np.float32)
    model = make_model("qdq", [node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
                               node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)],
                       {"x": x}, ["y"], {"s": scale, "z": zp})
    if zp.dtype == np.int16:
        _opset(model, 21)  # 16-bit quantization is opset 21's
    _check_unoptimized(model, {"x": x}, rtol=0, atol=0)


def test_dequantized_int8_weights(rng):
    x = _f32(rng, 2, 3, 4)
    w = rng.integers(-128, 127, (4, 5)).astype(np.int8)
    model = make_model("dqw", [node("DequantizeLinear", ["w", "ws", "wz"], ["wf"]),
                               node("MatMul", ["x", "wf"], ["y"])], {"x": x}, ["y"],
                       {"w": w, "ws": np.array(0.01, np.float32), "wz": np.array(2, np.int8)})
    _check_unoptimized(model, {"x": x}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows(rng, op, periodic):
    x = _f32(rng, 3, 10)
    model = _opset(make_model("win", [node(op, ["n"], ["w"], periodic=periodic),
                                      node("Mul", ["x", "w"], ["y"])], {"x": x}, ["y"],
                              {"n": np.array(10, np.int64)}), 17)
    _check(model, {"x": x}, rtol=1e-6, atol=1e-7)


def test_center_crop_pad(rng):
    x = _f32(rng, 5, 6, 3)
    model = _opset(make_model("ccp", [node("CenterCropPad", ["x", "sh"], ["y"]),
                                      node("CenterCropPad", ["x", "sh2"], ["z"], axes=[-1, 0])],
                              {"x": x}, ["y", "z"], {"sh": np.array([3, 9, 4], np.int64),
                                                     "sh2": np.array([2, 8], np.int64)}), 18)
    _check(model, {"x": x}, rtol=0, atol=0)


@pytest.mark.parametrize("batch_axis", [0, 1])
@pytest.mark.parametrize("fed", [False, True])
def test_reverse_sequence(rng, batch_axis, fed):
    x = _f32(rng, 6, 3, 2) if batch_axis == 1 else _f32(rng, 3, 6, 2)
    lens = np.array([6, 2, 1], np.int64)
    n = node("ReverseSequence", ["x", "l"], ["y"], batch_axis=batch_axis,
             time_axis=1 - batch_axis)
    if fed:
        model, feeds = make_model("rs", [n], {"x": x, "l": lens}, ["y"]), {"x": x, "l": lens}
    else:
        model, feeds = make_model("rs", [n], {"x": x}, ["y"], {"l": lens}), {"x": x}
    _check(model, feeds, rtol=0, atol=0)


def test_reduce_prod(rng):
    x = rng.uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32) * rng.choice([-1, 1], (2, 3, 4))
    x[0, 1, 2] = 0.0
    model = _opset(make_model("rp", [node("ReduceProd", ["x", "ax"], ["y"], keepdims=0),
                                     node("ReduceProd", ["x"], ["z"])], {"x": x.astype(
                                         np.float32)}, ["y", "z"], {"ax": np.array([1], np.int64)}),
                   18)
    _check(model, {"x": x.astype(np.float32)}, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(rng, p):
    x = _f32(rng, 2, 3, 7, 6)
    model = _opset(make_model("lp", [node("LpPool", ["x"], ["y"], kernel_shape=[3, 2],
                                          strides=[2, 1], pads=[1, 0, 1, 1], p=p)],
                              {"x": x}, ["y"]), 18)
    _check(model, {"x": x}, rtol=1e-5, atol=1e-6)


def test_blocked_quantization_is_refused(rng):
    x = _f32(rng, 2, 4)
    model = _opset(make_model("q", [node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1,
                                         block_size=2),
                                    node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1,
                                         block_size=2)],
                              {"x": x}, ["y"], {"s": np.full((2, 2), 0.1, np.float32),
                                                "z": np.zeros((2, 2), np.int8)}), 21)
    with pytest.raises(graphc.GraphError, match="QuantizeLinear.*block_size"):
        graphc.from_onnx(model)
