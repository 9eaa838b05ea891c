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

from .test_onnx_import import _check, _f32  # noqa: E402


def _opset(model, version: int):
    model.opset_import[0].version = version
    return model


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
def test_arg_extremes(rng, op, axis, keepdims):
    x = _f32(rng, 3, 5, 4)
    x[1, 2] = x[1, 0]  # ties: the first index wins, as ONNX's default
    model = make_model("arg", [node(op, ["x"], ["y"], axis=axis, keepdims=keepdims)],
                       {"x": x}, [])
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
