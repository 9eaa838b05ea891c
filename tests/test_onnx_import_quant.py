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


def _float_model(nodes, x_shape, y_shape, inits):
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(nodes, "float",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


def _cnn(rng):
    """conv 3x3 -> relu -> max-pool -> flatten -> matmul, in floats (to be quantized)."""
    return _float_model(
        [node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]),
         node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         node("Flatten", ["p"], ["f"]), node("MatMul", ["f", "w2"], ["y"])],
        [2, 3, 8, 8], [2, 10], {"W": _f32(rng, 4, 3, 3, 3) * 0.3, "B": _f32(rng, 4) * 0.1,
                                "w2": _f32(rng, 64, 10) * 0.3})


@pytest.mark.parametrize("weight_type,per_channel", [("QInt8", False), ("QInt8", True),
                                                     ("QUInt8", False), ("QUInt8", True)])
def test_dynamically_quantized_model_is_exact(rng, tmp_path, weight_type, per_channel):
    """ONNX Runtime's quantize_dynamic: DynamicQuantizeLinear on the activations, MatMulInteger
    and ConvInteger on int8/uint8 weights, scales applied in floats. The integer sums are exact
    and the float steps follow ONNX Runtime's order, so the reference matches bit for bit."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(_cnn(rng), str(tmp_path / "f.onnx"))
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"),
                     weight_type=getattr(QuantType, weight_type), per_channel=per_channel,
                     op_types_to_quantize=["Conv", "MatMul"])
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert {n.op_type for n in model.graph.node} >= {"DynamicQuantizeLinear", "MatMulInteger",
                                                     "ConvInteger"}
    _check_unoptimized(model, {"x": _f32(rng, 2, 3, 8, 8)}, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activations,weights,per_channel", [
    ("QUInt8", "QInt8", False), ("QInt8", "QInt8", True), ("QUInt8", "QUInt8", False)])
def test_statically_quantized_operator_model_is_exact(rng, tmp_path, activations, weights,
                                                      per_channel):
    """quantize_static in QOperator format: QLinearConv (int32 bias) and QLinearMatMul between
    QuantizeLinear and DequantizeLinear, requantized in ONNX Runtime's order of float steps."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": _f32(rng, 2, 3, 8, 8)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    onnx.save(_cnn(rng), str(tmp_path / "f.onnx"))
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                    quant_format=QuantFormat.QOperator,
                    activation_type=getattr(QuantType, activations),
                    weight_type=getattr(QuantType, weights), per_channel=per_channel)
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert {n.op_type for n in model.graph.node} >= {"QLinearConv", "QLinearMatMul"}
    _check_unoptimized(model, {"x": _f32(rng, 2, 3, 8, 8)}, rtol=0, atol=0)


def test_integer_matmul_output_with_per_column_zero_points(rng):
    """MatMulInteger's int32 result as a graph output, B's zero point per column, A quantized
    from a fed tensor."""
    from onnx import TensorProto, helper

    model = _float_model([node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
                          node("MatMulInteger", ["q", "b", "z", "bz"], ["y"])], [5, 7], [5, 3],
                         {"b": rng.integers(-128, 128, (7, 3)).astype(np.int8),
                          "bz": rng.integers(-128, 128, 3).astype(np.int8)})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.INT32, [5, 3]))
    _check_unoptimized(model, {"x": _f32(rng, 5, 7) * 4}, rtol=0, atol=0)
