"""Decompositions of the neural-network composites (`composite_nn` family).

One generic test, parameterized over a case table that must cover every op of the family: after
`decompose` the graph holds primitives only, verifies, round-trips through text, and computes on
the reference backend the same values as the composite's own numpy reference (in f32 and f64).
Golden tests pin the exact IR `decompose` prints for dense+relu, softmax and batch_norm inference;
their expected text is written from the decomposition rules, by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.registry import OPS, get_op
from graphc.ir.text import print_graph
from graphc.ir.verify import verify
from graphc.passes.decompose import decompose

from ..conftest import roundtrip
from .harness import op_graph


def f(*shape):
    return lambda rng: rng.standard_normal(shape).astype(np.float32)


def large(*shape):
    return lambda rng: (rng.standard_normal(shape) * 500).astype(np.float32)


def labels(k, *shape):
    return lambda rng: rng.integers(0, k, shape)


def probs(*shape):
    def make(rng):
        e = np.exp(rng.standard_normal(shape))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return make


def positive(*shape):
    return lambda rng: (rng.random(shape) + 0.5).astype(np.float32)


def scalar_seed(value):
    return lambda rng: np.array(value, np.int64)


BN = [f(4, 3, 5), f(3), f(3), f(3), positive(3)]
BN2 = [f(6, 3), f(3), f(3), f(3), positive(3)]

# (case id, op, input makers, attributes)
CASES = [
    ("mean_all", "mean", [f(3, 4, 5)], {}),
    ("mean_axes_keep", "mean", [f(3, 4, 5)], {"axes": (0, 2), "keepdims": True}),
    ("dense", "dense", [f(4, 3), f(3, 2)], {}),
    ("dense_bias_relu", "dense", [f(4, 3), f(3, 2), f(2)], {"activation": "relu"}),
    ("dense_rank3_softplus", "dense", [f(2, 4, 3), f(3, 2), f(2)], {"activation": "softplus"}),
    ("dense_vector_tanh", "dense", [f(3), f(3, 2)], {"activation": "tanh"}),
    ("dense_sigmoid", "dense", [f(4, 3), f(3, 2)], {"activation": "sigmoid"}),
    ("dense_gelu", "dense", [f(4, 3), f(3, 2), f(2)], {"activation": "gelu"}),
    ("gelu", "gelu", [large(3, 7)], {}),
    ("gelu_tanh", "gelu", [large(3, 7)], {"approximate": "tanh"}),
    ("conv1d", "conv1d", [f(2, 4, 9), f(6, 2, 3), f(6)],
     {"stride": 2, "padding": "same", "dilation": 2, "groups": 2}),
    ("conv2d", "conv2d", [f(2, 3, 6, 7), f(4, 3, 3, 2)], {"padding": 1, "stride": (1, 2)}),
    ("conv2d_bias_groups", "conv2d", [f(1, 4, 5, 5), f(4, 2, 3, 3), f(4)],
     {"groups": 2, "padding": "same"}),
    ("max_pool1d", "max_pool1d", [f(2, 3, 10)], {"kernel": 3, "stride": 2, "padding": 1}),
    ("max_pool2d", "max_pool2d", [f(2, 3, 7, 8)], {"kernel": (3, 2), "stride": (2, 1),
                                                    "padding": (1, 1)}),
    ("avg_pool1d", "avg_pool1d", [f(2, 3, 10)], {"kernel": 4, "stride": 3, "padding": 2}),
    ("avg_pool2d_exclude_pad", "avg_pool2d", [f(2, 3, 7, 8)],
     {"kernel": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    ("avg_pool2d_include_pad", "avg_pool2d", [f(2, 3, 7, 8)],
     {"kernel": 3, "stride": 2, "padding": 1}),
    ("global_avg_pool", "global_avg_pool", [f(2, 3, 4, 5)], {}),
    ("flatten", "flatten", [f(2, 3, 4, 5)], {"start_axis": 2}),
    ("residual_block", "residual_block", [f(4, 5), f(5, 3), f(3, 5)], {}),
    ("residual_block_bias_tanh", "residual_block", [f(4, 5), f(5, 3), f(3, 5), f(3), f(5)],
     {"activation": "tanh"}),
    ("one_hot", "one_hot", [labels(6, 3, 4)], {"depth": 5, "axis": 1}),
    ("one_hot_i32", "one_hot", [lambda rng: np.array([0, 2, 1, 3], np.int32)],
     {"depth": 3, "dtype": "i64"}),
    ("dropout", "dropout", [f(16, 8), scalar_seed(11)], {"rate": 0.25, "stream": 3}),
    ("dropout_eval", "dropout", [f(16, 8), scalar_seed(11)], {"training": False}),
    ("batch_norm_train", "batch_norm", BN, {"training": True, "momentum": 0.2}),
    ("batch_norm_train_2d", "batch_norm", BN2, {"training": True}),
    ("batch_norm_eval", "batch_norm", BN, {"training": False, "eps": 1e-3}),
    ("layer_norm", "layer_norm", [f(4, 6), f(6), f(6)], {}),
    ("layer_norm_two_axes_scale_only", "layer_norm", [large(2, 3, 4, 5), f(4, 5)],
     {"axis": 2, "eps": 1e-3}),
    ("layer_norm_plain_all_axes", "layer_norm", [f(3, 7)], {"axis": 0}),
    ("softmax", "softmax", [f(3, 5)], {}),
    ("softmax_axis0_large", "softmax", [large(4, 3)], {"axis": 0}),
    ("log_softmax", "log_softmax", [f(3, 4, 5)], {"axis": 1}),
    ("cross_entropy_labels", "cross_entropy", [f(4, 5), labels(5, 4)], {}),
    ("cross_entropy_labels_spatial_sum", "cross_entropy", [f(4, 5, 3), labels(5, 4, 3)],
     {"reduction": "sum"}),
    ("cross_entropy_probs_none", "cross_entropy", [f(4, 5), probs(4, 5)],
     {"reduction": "none"}),
    ("mse", "mse", [f(3, 4), f(3, 4)], {}),
    ("mse_none", "mse", [f(3, 4), f(3, 4)], {"reduction": "none"}),
    ("mse_sum", "mse", [f(5), f(5)], {"reduction": "sum"}),
    ("weight_decay", "weight_decay", [f(3, 4), f(4), f(2, 2)], {"lam": 0.05}),
]


def test_every_nn_composite_has_a_decomposition_case():
    family = {name for name, d in OPS.items() if d.family == "composite_nn"}
    assert family == {op for _, op, _, _ in CASES}
    assert all(not OPS[name].primitive for name in family)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("case_id,op,makers,attrs", CASES, ids=[c[0] for c in CASES])
def test_decomposition_matches_reference(case_id, op, makers, attrs, dtype, rng):
    arrays = [m(rng) for m in makers]
    if dtype == "f64":
        arrays = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
    graph = roundtrip(op_graph(op, arrays, attrs))  # canonical attributes survive the text form
    flat = roundtrip(verify(decompose(graph)))
    assert all(get_op(n.op).primitive for n in flat.nodes), sorted({n.op for n in flat.nodes})
    assert [v.type for _, v in flat.outputs] == [v.type for _, v in graph.outputs]
    feed = {f"x{i}": a for i, a in enumerate(arrays)}
    want, got = run_graph(graph, feed), run_graph(flat, feed)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "f32" else {"rtol": 1e-12, "atol": 1e-12}
    for name in want:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_allclose(got[name], want[name], **tol, err_msg=f"{case_id} {name}")


# -- golden text -----------------------------------------------------------------------------------


def golden(graph) -> str:
    flat = verify(decompose(graph))
    return print_graph(flat)


def test_golden_dense_relu():
    b = Builder("g")
    x, w, bias = b.input("x", (4, 3)), b.input("w", (3, 2)), b.input("b", (2,))
    g = b.build(outputs={"y": b.dense(x, w, bias, activation="relu")})
    assert golden(g) == """\
graph g(%x: f32[4, 3], %w: f32[3, 2], %b: f32[2]) {
  %dense0.matmul = matmul(%x, %w) : f32[4, 2]
  %dense0.add = add(%dense0.matmul, %b) : f32[4, 2]
  %dense0.relu = relu(%dense0.add) : f32[4, 2]
  return y=%dense0.relu
}
"""


def test_golden_softmax():
    b = Builder("g")
    g = b.build(outputs={"y": b.softmax(b.input("x", (2, 5)))})
    assert golden(g) == """\
graph g(%x: f32[2, 5]) {
  %softmax0.reduce_max = reduce_max(%x) {axes=(1,), keepdims=true} : f32[2, 1]
  %softmax0.sub = sub(%x, %softmax0.reduce_max) : f32[2, 5]
  %softmax0.exp = exp(%softmax0.sub) : f32[2, 5]
  %softmax0.reduce_sum = reduce_sum(%softmax0.exp) {axes=(1,), keepdims=true} : f32[2, 1]
  %softmax0.reciprocal = reciprocal(%softmax0.reduce_sum) : f32[2, 1]
  %softmax0.mul = mul(%softmax0.exp, %softmax0.reciprocal) : f32[2, 5]
  return y=%softmax0.mul
}
"""


def test_golden_batch_norm_inference():
    b = Builder("g")
    x = b.input("x", (2, 3, 4))
    stats = [b.input(n, (3,)) for n in ("gamma", "beta", "mean", "var")]
    g = b.build(outputs={"y": b.batch_norm(x, *stats, training=False)})
    assert golden(g) == """\
graph g(%x: f32[2, 3, 4], %gamma: f32[3], %beta: f32[3], %mean: f32[3], %var: f32[3]) {
  %batch_norm0.constant = constant() {value=1e-05} : f32[]
  %batch_norm0.add = add(%var, %batch_norm0.constant) : f32[3]
  %batch_norm0.rsqrt = rsqrt(%batch_norm0.add) : f32[3]
  %batch_norm0.mul = mul(%gamma, %batch_norm0.rsqrt) : f32[3]
  %batch_norm0.reshape = reshape(%mean) {shape=(1, 3, 1)} : f32[1, 3, 1]
  %batch_norm0.sub = sub(%x, %batch_norm0.reshape) : f32[2, 3, 4]
  %batch_norm0.reshape_1 = reshape(%batch_norm0.mul) {shape=(1, 3, 1)} : f32[1, 3, 1]
  %batch_norm0.mul_1 = mul(%batch_norm0.sub, %batch_norm0.reshape_1) : f32[2, 3, 4]
  %batch_norm0.reshape_2 = reshape(%beta) {shape=(1, 3, 1)} : f32[1, 3, 1]
  %batch_norm0.add_1 = add(%batch_norm0.mul_1, %batch_norm0.reshape_2) : f32[2, 3, 4]
  return y=%batch_norm0.add_1
}
"""
