"""Random op graphs for differential tests of the backends against the reference: a few inputs
of assorted shapes (odd sizes, size-1 axes, rows longer than a vector), then a random chain of
elementwise math, broadcasting binary ops against inputs or new parameters, reductions,
transposes, reshapes, strided slices, matmuls, softmax, layer norm, concatenations and selects,
several of the last values as outputs. Values stay finite by construction (exp of a tanh, log of
|x| + 0.5, division by |x| + 0.5), so any mismatch is the backend's."""

from __future__ import annotations

import random

import numpy as np

from graphc.ir.builder import Builder, Tensor
from graphc.ir.errors import GraphError
from graphc.ir.graph import Graph

UNARY = ("neg", "abs", "sigmoid", "tanh", "relu", "softplus", "erf", "sin", "cos", "atan")
BINARY = ("add", "sub", "mul", "maximum", "minimum")
GUARDED = {
    "exp": lambda b, t: b.exp(b.tanh(t) * 3.0),
    "log": lambda b, t: b.log(b.abs(t) + 0.5),
    "sqrt": lambda b, t: b.sqrt(b.abs(t)),
    "rsqrt": lambda b, t: b.rsqrt(b.abs(t) + 0.25),
    "div": lambda b, t: t / (b.abs(t) + 0.5),
}


def _shape(r: random.Random) -> tuple[int, ...]:
    dims = [r.choice([1, 2, 3, 5, 7, 8, 16, 17, 33]) for _ in range(r.randint(1, 3))]
    if r.random() < 0.3:
        dims[-1] = r.choice([64, 100, 130, 257])
    return tuple(dims)


def _partner(b: Builder, r: random.Random, t: Tensor, u: Tensor, name: str) -> Tensor:
    """u if it broadcasts against t, else a new parameter shaped like a suffix of t's shape
    with some axes of size 1."""
    try:
        np.broadcast_shapes(t.shape, u.shape)
        return u
    except ValueError:
        suffix = t.shape[r.randint(0, t.ndim - 1):]
        return b.param(name, tuple(1 if r.random() < 0.4 else d for d in suffix), init="normal")


def _slice(b: Builder, r: random.Random, t: Tensor) -> Tensor:
    ax = r.randrange(t.ndim)
    lo = r.randint(0, t.shape[ax] - 1)
    start, stop, step = [0] * t.ndim, list(t.shape), [1] * t.ndim
    start[ax], stop[ax], step[ax] = lo, r.randint(lo + 1, t.shape[ax]), r.choice([1, 1, 2])
    return b.slice(t, start=tuple(start), stop=tuple(stop), step=tuple(step))


def _step(b: Builder, r: random.Random, pool: list[Tensor], k: int) -> Tensor:
    t = r.choice(pool)
    if t.ndim == 0:
        t = t.reshape(1)
    kind = r.random()
    if kind < 0.2:
        return b.op(r.choice(UNARY), t)
    if kind < 0.3:
        return GUARDED[r.choice(sorted(GUARDED))](b, t)
    if kind < 0.5:
        return b.op(r.choice(BINARY), t, _partner(b, r, t, r.choice(pool), f"p{k}"))
    if kind < 0.6:
        axes = tuple(sorted(r.sample(range(t.ndim), r.randint(1, t.ndim))))
        return (t.sum if r.random() < 0.5 else t.max)(axes, keepdims=r.random() < 0.5)
    if kind < 0.67 and t.ndim >= 2:
        perm = list(range(t.ndim))
        r.shuffle(perm)
        return t.transpose(*perm)
    if kind < 0.72:
        return t.reshape(-1) if t.ndim > 1 else t.reshape(1, *t.shape)
    if kind < 0.78:
        return _slice(b, r, t)
    if kind < 0.84:
        w = b.param(f"w{k}", (t.shape[-1], r.choice([1, 5, 16, 40])), init="normal")
        return b.matmul(t, w) * (1.0 / t.shape[-1] ** 0.5)
    if kind < 0.88:
        return b.softmax(t, axis=r.randrange(t.ndim))
    if kind < 0.91:
        return b.layer_norm(t, axis=r.randrange(t.ndim))
    if kind < 0.95:
        return b.concat(t, t * 0.5, axis=r.randrange(t.ndim))
    u = _partner(b, r, t, r.choice(pool), f"q{k}")
    return b.select(b.op("gt", t, u), t, u)


def random_graph(seed: int) -> tuple[Graph, dict[str, np.ndarray]]:
    """A random graph and inputs for it, the same for the same seed."""
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    b = Builder(f"random{seed}", seed=seed)
    pool, feeds = [], {}
    for i in range(r.randint(1, 3)):
        shape = _shape(r)
        pool.append(b.input(f"x{i}", shape))
        feeds[f"x{i}"] = rng.standard_normal(shape).astype(np.float32)
    for k in range(r.randint(2, 12)):
        try:
            pool.append(_step(b, r, pool, k))
        except GraphError:  # an op that does not apply to the operand picked
            continue
    last = pool[-6:]
    outs = r.sample(last, min(r.randint(1, 3), len(last)))
    return b.build(outputs={f"y{i}": t for i, t in enumerate(outs)}), feeds
