"""Every differentiable primitive's VJP against float64 central finite differences, driven by the
registry: adding a primitive without a case here fails `test_every_primitive_has_a_case`."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.registry import OPS

from .harness import check_vjp

R = np.random.default_rng(7)


def f(*shape):
    return R.standard_normal(shape)


def pos(*shape):
    return np.abs(R.standard_normal(shape)) + 0.5


def away(*shape):
    x = R.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.5, x)


IDX = np.array([2, 0, 2, 1], np.int64)

# op -> (arrays, attrs, wrt or None for all float inputs)
CASES: dict[str, tuple[list, dict, list | None]] = {
    "neg": ([f(3, 2)], {}, None), "abs": ([away(3, 2)], {}, None),
    "exp": ([f(3, 2)], {}, None), "log": ([pos(3, 2)], {}, None),
    "log1p": ([pos(3, 2)], {}, None), "sqrt": ([pos(3, 2)], {}, None),
    "rsqrt": ([pos(3, 2)], {}, None), "reciprocal": ([pos(3, 2)], {}, None),
    "sigmoid": ([f(3, 2)], {}, None), "tanh": ([f(3, 2)], {}, None),
    "relu": ([away(3, 2)], {}, None), "softplus": ([f(3, 2)], {}, None),
    "sign": ([away(3, 2)], {}, None), "erf": ([f(3, 2) * 1.5], {}, None),
    "sin": ([f(3, 2) * 4.0], {}, None), "cos": ([f(3, 2) * 4.0], {}, None),
    "atan": ([f(3, 2) * 3.0], {}, None),
    **{op: ([np.floor(f(3, 2) * 3) + 0.3], {}, None) for op in ("floor", "ceil", "round")},
    "add": ([f(3, 1), f(4)], {}, None), "sub": ([f(2, 3), f(3)], {}, None),
    "mul": ([f(1, 3), f(2, 1)], {}, None), "div": ([f(2, 3), pos(3)], {}, None),
    "pow": ([pos(2, 3), f(3)], {}, None), "maximum": ([f(2, 3), f(2, 3) + 0.05], {}, None),
    "minimum": ([f(2, 3), f(3) + 0.05], {}, None),
    "select": ([R.random((2, 3)) > 0.5, f(2, 3), f(3)], {}, [1, 2]),
    "cast": ([f(2, 3)], {"dtype": "f64"}, None),
    "reduce_sum": ([f(2, 3, 4)], {"axes": (0, 2), "keepdims": True}, None),
    "reduce_max": ([f(2, 3, 4)], {"axes": (1,)}, None),
    "reshape": ([f(2, 6)], {"shape": (3, 4)}, None),
    "transpose": ([f(2, 3, 4)], {"perm": (2, 0, 1)}, None),
    "reverse": ([f(2, 3, 4)], {"axes": (0, 2)}, None),
    "broadcast": ([f(3, 1)], {"shape": (2, 3, 4)}, None),
    "slice": ([f(5, 6)], {"start": (1, 0), "stop": (5, 6), "step": (2, 3)}, None),
    "pad": ([f(3, 4)], {"low": (1, -1), "high": (2, 0), "interior": (1, 0)}, None),
    "concat": ([f(2, 3), f(1, 3)], {"axis": 0}, None),
    "matmul": ([f(2, 3, 4), f(4, 5)], {}, None),
    "conv": ([f(2, 4, 7, 6), f(6, 2, 3, 2)],
             {"stride": (2, 1), "padding": (1, 0, 1, 1), "rhs_dilation": (1, 2), "groups": 2},
             None),
    "reduce_window": ([f(1, 2, 5, 5)], {"kind": "max", "window": (1, 1, 2, 3),
                                        "strides": (1, 1, 2, 2)}, None),
    "select_scatter": ([f(1, 1, 4, 4), f(1, 1, 2, 2)],
                       {"window": (1, 1, 2, 2), "strides": (1, 1, 2, 2)}, [1]),
    "take": ([f(3, 4), IDX], {"axis": 0}, [0]),
    "scatter_add": ([f(3, 2), IDX, f(4, 2)], {"axis": 0}, [0, 2]),
}


def differentiable_primitives() -> list[str]:
    return sorted(n for n, d in OPS.items() if d.primitive and d.differentiable)


def test_every_primitive_has_a_case():
    missing = set(differentiable_primitives()) - set(CASES)
    assert not missing, f"differentiable primitives without a gradient test: {sorted(missing)}"


@pytest.mark.parametrize("op", differentiable_primitives())
def test_vjp_matches_finite_differences(op):
    if op not in CASES:
        pytest.fail(f"no gradient case for {op}")
    arrays, attrs, wrt = CASES[op]
    check_vjp(op, arrays, attrs, wrt=wrt)
