"""Helpers for op tests: run one op on the reference backend, and check an op's VJP rule against
central finite differences in float64 (independently of the autodiff pass)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.registry import get_op
from graphc.ir.types import dtype_of_array
from graphc.ir.verify import verify


def op_graph(op: str, arrays: Sequence[np.ndarray], attrs: dict | None = None):
    """A graph with one input per array (x0, x1, ...) and the op's outputs (y0, y1, ...)."""
    b = Builder(op)
    ins = [b.input(f"x{i}", a.shape, dtype_of_array(np.asarray(a))) for i, a in enumerate(arrays)]
    res = b.op(op, *ins, **(attrs or {}))
    outs = res if isinstance(res, tuple) else (res,)
    return verify(b.build(outputs={f"y{i}": t for i, t in enumerate(outs)}))


def run_op(op: str, arrays: Sequence[np.ndarray], **attrs) -> tuple[np.ndarray, ...]:
    """Evaluate `op` on `arrays` with its numpy reference; returns all outputs."""
    g = op_graph(op, arrays, attrs)
    res = run_graph(g, {f"x{i}": a for i, a in enumerate(arrays)})
    return tuple(res[f"y{i}"] for i in range(len(res)))


def vjp_graph(op: str, arrays: Sequence[np.ndarray], attrs: dict, cts: Sequence[np.ndarray]):
    """A graph computing op's outputs and, through its VJP rule, one gradient per input."""
    opdef = get_op(op)
    b = Builder(f"vjp_{op}")
    ins = [b.input(f"x{i}", a.shape, dtype_of_array(a)) for i, a in enumerate(arrays)]
    res = b.op(op, *ins, **attrs)
    outs = res if isinstance(res, tuple) else (res,)
    ct_ins = [b.input(f"ct{j}", c.shape, dtype_of_array(c)) if c is not None else None
              for j, c in enumerate(cts)]
    full = dict(outs[0].node.attrs)
    grads = opdef.vjp(b, tuple(ins), tuple(outs), tuple(ct_ins), full)
    assert len(grads) == len(ins), f"vjp of {op} returned {len(grads)} grads for {len(ins)} inputs"
    named = {f"y{i}": t for i, t in enumerate(outs)}
    for i, g in enumerate(grads):
        if g is not None:
            assert g.shape == ins[i].shape, f"grad {i} of {op}: {g.shape} vs {ins[i].shape}"
            named[f"g{i}"] = g
    return verify(b.build(outputs=named))


def check_vjp(op: str, arrays: Sequence[np.ndarray], attrs: dict | None = None,
              wrt: Sequence[int] | None = None, eps: float = 1e-6, rtol: float = 1e-5,
              atol: float = 1e-7, seed: int = 0) -> None:
    """Assert op's VJP equals central finite differences of <ct, op(x)> in float64.

    Float arrays are promoted to float64; `wrt` lists the input indices to check (default: all
    float inputs). Integer/bool inputs are passed through unchanged.
    """
    attrs = attrs or {}
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
              for a in arrays]
    outs = run_op(op, arrays, **attrs)
    cts = [rng.standard_normal(o.shape) if o.dtype.kind == "f" else None for o in outs]
    g = vjp_graph(op, arrays, attrs, cts)
    feed = {f"x{i}": a for i, a in enumerate(arrays)}
    feed.update({f"ct{j}": c for j, c in enumerate(cts) if c is not None})
    got = run_graph(g, feed)
    if wrt is None:
        wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]

    def objective(xs):
        ys = run_op(op, xs, **attrs)
        return sum(float(np.sum(c * y)) for c, y in zip(cts, ys, strict=True) if c is not None)

    for i in wrt:
        x = arrays[i]
        num = np.zeros_like(x)
        flat = num.reshape(-1)
        for k in range(x.size):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[i].reshape(-1)[k] += eps
            minus[i].reshape(-1)[k] -= eps
            flat[k] = (objective(plus) - objective(minus)) / (2 * eps)
        # central differences lose ~1e-16 * |objective| / eps to cancellation
        tol = atol + 1e-15 * abs(objective(arrays)) / eps
        ana = got.get(f"g{i}")
        if ana is None:
            ana = np.zeros_like(x)
        np.testing.assert_allclose(ana, num, rtol=rtol, atol=tol,
                                   err_msg=f"VJP of {op} w.r.t. input {i} ({attrs})")
