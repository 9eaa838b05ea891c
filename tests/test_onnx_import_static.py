"""ONNX ops whose output shape only their input values decide (NonZero, Unique, Compress),
evaluated at import from constants, and MelWeightMatrix (a constant filter bank), against ONNX
Runtime through the reference and LLVM backends; fed values are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from .test_onnx_import import _check  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "static", [helper.make_tensor_value_info(k, F, s)
                                            for k, s in inputs.items()],
                          [helper.make_tensor_value_info(k, F, None) for k in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


@pytest.mark.parametrize("mels,dft,rate,lo,hi", [(8, 256, 16000, 100.0, 4000.0),
                                                 (20, 512, 22050, 0.0, 8000.0),
                                                 (4, 64, 8000, 300.0, 3400.0)])
def test_mel_filter_bank_on_a_spectrum(rng, mels, dft, rate, lo, hi):
    model = _model([helper.make_node("MelWeightMatrix", ["m", "d", "r", "lo", "hi"], ["w"]),
                    helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [3, dft // 2 + 1]},
                   ["y"], {"m": np.int64(mels), "d": np.int64(dft), "r": np.int64(rate),
                           "lo": np.float32(lo), "hi": np.float32(hi)})
    _check(model, {"x": rng.standard_normal((3, dft // 2 + 1)).astype(np.float32)})


def test_compress_by_a_constant_condition(rng):
    model = _model([helper.make_node("Compress", ["x", "keep"], ["y"], axis=1),
                    helper.make_node("Compress", ["x", "flat"], ["z"])], {"x": [3, 4]},
                   ["y", "z"], {"keep": np.array([True, False, True]),
                                "flat": np.array([0, 1, 1, 0, 0, 1], bool)})
    _check(model, {"x": rng.standard_normal((3, 4)).astype(np.float32)})


def test_nonzero_and_unique_of_constants(rng):
    """Unique in order of first occurrence (sorted=0) and sorted along an axis; its inverse
    indices gather a fed tensor."""
    model = _model([
        helper.make_node("NonZero", ["k"], ["nz"]), helper.make_node("Cast", ["nz"], ["nzf"], to=F),
        helper.make_node("Unique", ["u"], ["uy", "ui", "uinv", "uc"], sorted=0),
        helper.make_node("Cast", ["uy"], ["uyf"], to=F),
        helper.make_node("Gather", ["x", "uinv"], ["g"]),
        helper.make_node("Unique", ["rows"], ["ry", "ri", "rinv", "rc"], axis=0),
        helper.make_node("Cast", ["rc"], ["rcf"], to=F),
        helper.make_node("Gather", ["x", "ri"], ["rg"]),
    ], {"x": [6]}, ["nzf", "uyf", "g", "rcf", "rg"],
        {"k": np.array([[0, 2, 0], [1, 0, 3]], np.int64),
         "u": np.array([4, 1, 4, 3, 1, 5], np.int64),
         "rows": np.array([[1, 2], [0, 1], [1, 2], [0, 0]], np.int64)})
    _check(model, {"x": rng.standard_normal(6).astype(np.float32)})


@pytest.mark.parametrize("op,extra", [("NonZero", []), ("Unique", []), ("Compress", ["x"])])
def test_value_dependent_shapes_of_fed_tensors_are_refused(op, extra):
    inputs = ["x", *extra]
    if op == "Compress":  # a fed condition
        model = _model([helper.make_node("Greater", ["x", "zero"], ["c"]),
                        helper.make_node("Compress", ["x", "c"], ["y"])], {"x": [4]}, ["y"],
                       {"zero": np.float32(0)})
    else:
        model = _model([helper.make_node(op, inputs, ["y"])], {"x": [4]}, ["y"], {})
    with pytest.raises(OnnxImportError, match=rf"\({op}\): .*(depends on input values|"
                                              r"must be a constant)"):
        graphc.from_onnx(model)
