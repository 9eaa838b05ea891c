"""Elementwise ops: reference vs torch CPU (broadcasting, odd and size-1 dims), VJP vs float64
finite differences, and the seed's tanh identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder

from .harness import check_vjp, run_op

UNARY_TORCH = {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log,
    "log1p": torch.log1p, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
    "reciprocal": torch.reciprocal, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "relu": torch.relu, "softplus": torch.nn.functional.softplus, "sign": torch.sign,
    "erf": torch.erf, "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
    "sin": torch.sin, "cos": torch.cos, "atan": torch.atan,
}


def T(a):
    return torch.from_numpy(np.asarray(a))


POSITIVE = {"log", "sqrt", "rsqrt", "log1p", "reciprocal"}
BINARY_TORCH = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
                "pow": torch.pow, "maximum": torch.maximum, "minimum": torch.minimum}
COMPARE_TORCH = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le,
                 "gt": torch.gt, "ge": torch.ge}
SHAPE_PAIRS = [((3, 5), (3, 5)), ((4, 1, 3), (5, 1)), ((1,), (2, 7)), ((), (3, 2)),
               ((2, 3, 1), (1, 3, 4))]


def _input(rng, shape, op):
    x = np.asarray(rng.standard_normal(shape) * 3, np.float32)
    if op in POSITIVE:
        x = np.asarray(np.abs(x) + 0.1, np.float32)
    return x


@pytest.mark.parametrize("op", sorted(UNARY_TORCH))
@pytest.mark.parametrize("shape", [(7,), (3, 1, 5), ()])
def test_unary_matches_torch(op, shape, rng):
    x = _input(rng, shape, op)
    (got,) = run_op(op, [x])
    want = UNARY_TORCH[op](T(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_sigmoid_softplus_extremes_are_stable():
    x = np.array([-1000.0, -80.0, 0.0, 80.0, 1000.0], np.float32)
    (s,) = run_op("sigmoid", [x])
    (sp,) = run_op("softplus", [x])
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(sp))
    np.testing.assert_allclose(s, torch.sigmoid(T(x)).numpy(), atol=1e-7)
    np.testing.assert_allclose(sp, torch.nn.functional.softplus(T(x)).numpy(),
                               rtol=1e-6)


@pytest.mark.parametrize("op", sorted(BINARY_TORCH))
@pytest.mark.parametrize("shapes", SHAPE_PAIRS)
def test_binary_broadcast_matches_torch(op, shapes, rng):
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = rng.standard_normal(shapes[1]).astype(np.float32)
    if op == "pow":
        a = np.abs(a) + 0.5
    (got,) = run_op(op, [a, b])
    want = BINARY_TORCH[op](T(a), T(b)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", sorted(COMPARE_TORCH))
def test_comparisons_give_bool(op, rng):
    a = rng.integers(0, 3, (4, 3)).astype(np.float32)
    b = rng.integers(0, 3, (3,)).astype(np.float32)
    (got,) = run_op(op, [a, b])
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, COMPARE_TORCH[op](T(a),
                                                         T(b)).numpy())


def test_select_and_cast(rng):
    c = rng.random((4, 1)) > 0.5
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((3,)).astype(np.float32)
    (got,) = run_op("select", [c, a, b])
    np.testing.assert_array_equal(got, torch.where(T(c), T(a),
                                                   T(b)).numpy())
    (i,) = run_op("cast", [a * 10], dtype="i32")
    np.testing.assert_array_equal(i, T(a * 10).to(torch.int32).numpy())
    (h,) = run_op("cast", [a], dtype="f16")
    assert h.dtype == np.float16


def test_bf16_cast_rounds_to_nearest_even():
    x = np.array([1.0, 1.00390625, 1.01171875, 3.14159265], np.float32)
    (got,) = run_op("cast", [x], dtype="bf16")
    want = T(x).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", sorted(UNARY_TORCH))
def test_unary_vjp_finite_differences(op, rng):
    x = _input(rng, (3, 4), op).astype(np.float64)
    if op in ("relu", "abs", "sign"):
        x = np.where(np.abs(x) < 0.05, 0.3, x)  # keep away from the kink
    if op in ("floor", "ceil", "round"):
        x = np.floor(x) + 0.3  # away from the steps (integers, and halves for round)
    check_vjp(op, [x])


ROUNDING_EDGES = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 8388609.0,
                           -8388607.5, 1e10, -0.0, 3.0, np.inf, -np.inf, np.nan], np.float32)


@pytest.mark.parametrize("op", ["floor", "ceil", "round"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rounding_at_ties_and_large_values_matches_torch(op, dtype):
    x = ROUNDING_EDGES.astype(dtype)
    (got,) = run_op(op, [x])
    np.testing.assert_array_equal(got, UNARY_TORCH[op](T(x)).numpy())


@pytest.mark.parametrize("op", sorted(BINARY_TORCH))
@pytest.mark.parametrize("shapes", SHAPE_PAIRS[:3])
def test_binary_vjp_finite_differences(op, shapes, rng):
    a = rng.standard_normal(shapes[0])
    b = rng.standard_normal(shapes[1])
    if op == "pow":
        a = np.abs(a) + 0.5
    if op == "div":
        b = np.sign(b) * (np.abs(b) + 0.5)
    if op in ("maximum", "minimum"):
        b = b + 0.01  # no ties
    check_vjp(op, [a, b])


def test_select_vjp(rng):
    c = rng.random((3, 4)) > 0.5
    check_vjp("select", [c, rng.standard_normal((3, 4)), rng.standard_normal((4,))], wrt=[1, 2])


def test_maximum_tie_splits_gradient_like_torch():
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([1.0, 1.0, 4.0], requires_grad=True)
    torch.maximum(a, b).sum().backward()
    from .harness import vjp_graph

    g = vjp_graph("maximum", [a.detach().numpy(), b.detach().numpy()], {},
                  [np.ones(3, np.float32)])
    res = run_graph(g, {"x0": a.detach().numpy(), "x1": b.detach().numpy(),
                        "ct0": np.ones(3, np.float32)})
    np.testing.assert_array_equal(res["g0"], a.grad.numpy())
    np.testing.assert_array_equal(res["g1"], b.grad.numpy())


def test_seed_tanh_is_two_sigmoid_two_x_minus_one(rng):
    """SEED 1: tanh(x) = 2 sigma(2x) - 1, both evaluated by the graph."""
    b = Builder("tanh_identity")
    x = b.input("x", (101,))
    g = b.build(outputs={"lhs": b.tanh(x), "rhs": 2.0 * b.sigmoid(2.0 * x) - 1.0})
    xs = np.linspace(-6, 6, 101).astype(np.float32)
    out = run_graph(g, {"x": xs})
    np.testing.assert_allclose(out["lhs"], out["rhs"], atol=2e-7)
    np.testing.assert_allclose(out["lhs"], np.tanh(xs.astype(np.float64)), atol=1e-6)
