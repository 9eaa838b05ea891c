"""`simplify`: constant folding, CSE, DCE and algebraic identities, iterated to a fixed point.

Contract: the result has the same signature (inputs, parameters, outputs and their types) and
computes the same values as the input on the reference backend: bit for bit, except that
`x + 0.0` may turn a -0.0 into x's own -0.0 (or vice versa) and x**2 becomes the correctly
rounded x·x (libm's pow may be an ulp off it). It never grows the graph, keeps the
name hints of the nodes it rewrites, and stops when a sweep changes nothing (or after
`max_iterations` sweeps).

One sweep re-emits every node through a fresh Builder, trying in order:
0. empty values (`fold_empty`): a node whose result has no elements becomes a constant, and
   one reading an empty operand into a non-empty result becomes what it computes from nothing
   (a sum over no elements is 0); `fuse` runs this step alone on any graph it is given;
1. constant folding: a node whose operands are all constants is evaluated with its numpy
   reference and becomes a `constant` when the result has at most `fold_limit` elements, or when
   every element is the same (a splat prints as one scalar whatever its shape); elementwise and
   movement ops of splat constants fold without evaluating the full array;
2. algebraic identities (`IDENTITIES`, one small function per op): x+0, 0+x, x-0, x*1, 1*x, x/1,
   x**1, x**2 -> x*x,
   neg(neg x), transpose of transpose, reshape of reshape, broadcast of broadcast, reshape /
   broadcast / transpose / cast / slice that change nothing, consecutive slices of one value
   concatenated back in order (one slice), select with a constant condition or equal branches,
   and x*0 for integer dtypes only (for floats it is not exact: inf*0 and nan*0 are
   nan);
3. CSE: structurally equal nodes (same op, attributes and operands) are merged by the builder's
   structural hash;
then DCE keeps only nodes some output depends on. An identity whose operand is smaller than the
node's result (`add(x[3], zeros[2, 3])`) becomes `broadcast(x)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.builder import Builder, Tensor
from graphc.ir.graph import Graph, Node, Value
from graphc.ir.registry import get_op
from graphc.ir.types import DTYPES, FLOAT_DTYPES, INT_DTYPES, round_to_dtype

from .base import Pass, PassContext

# Folding evaluates at most this many elements, whatever `fold_limit` says about the result.
EVAL_LIMIT = 1 << 16
SPLAT_FOLDABLE_FAMILIES = ("elementwise",)
SPLAT_FOLDABLE_OPS = ("broadcast", "reshape", "transpose")
UNFOLDABLE_OPS = ("constant", "input", "param")

Rewrite = Callable[[Builder, Node], Tensor | None]


# -- constants -------------------------------------------------------------------------------------


def const_array(v: Value) -> np.ndarray | None:
    """The value of `v` if a `constant` node produces it, else None."""
    if v.node.op != "constant":
        return None
    return get_op("constant").reference([], dict(v.node.attrs))


def splat_value(v: Value) -> float | int | bool | None:
    """The single element value of a constant whose elements are all equal, else None."""
    if v.node.op != "constant":
        return None
    value = v.node.attrs["value"]
    if not isinstance(value, tuple):
        return value
    arr = const_array(v)
    return _splat_of(arr)


def _splat_of(arr: np.ndarray) -> float | int | bool | None:
    flat = np.asarray(arr).ravel()
    if flat.size == 0:
        return None
    first = flat[0]
    if flat.dtype.kind == "f":
        if np.isnan(first):
            return first.item() if bool(np.all(np.isnan(flat))) else None
        same = bool(np.all(flat == first)) and bool(np.all(np.signbit(flat) == np.signbit(first)))
    else:
        same = bool(np.all(flat == first))
    return first.item() if same else None


def is_const(v: Value, c: float) -> bool:
    s = splat_value(v)
    return s is not None and not isinstance(s, bool) and s == c


def emit_constant(b: Builder, arr: np.ndarray, dtype: str, name: str | None) -> Tensor:
    """A constant node holding `arr` (a splat when all elements agree)."""
    arr = round_to_dtype(np.asarray(arr), dtype)
    splat = _splat_of(arr)
    if splat is not None or arr.size == 0:
        value = splat if splat is not None else 0
        value = float(value) if dtype in FLOAT_DTYPES else (
            bool(value) if dtype == "bool" else int(value))
    else:
        value = tuple(arr.ravel().tolist())
    return b.op("constant", value=value, shape=arr.shape, dtype=dtype, name=name)


def fold_constants(b: Builder, n: Node, fold_limit: int) -> tuple[Tensor, ...] | None:
    """Evaluate `n` if all its operands are constants and the result is worth keeping."""
    if n.op in UNFOLDABLE_OPS or not all(v.node.op == "constant" for v in n.inputs):
        return None
    opdef = get_op(n.op)
    splats = [splat_value(v) for v in n.inputs]
    splat_ok = n.inputs and all(s is not None for s in splats) and (
        opdef.family in SPLAT_FOLDABLE_FAMILIES or n.op in SPLAT_FOLDABLE_OPS)
    if splat_ok and len(n.outputs) == 1:
        # Elementwise and movement ops of splats give a splat: evaluate on one element.
        scalars = [round_to_dtype(np.asarray(s), v.dtype)
                   for s, v in zip(splats, n.inputs, strict=True)]
        if n.op in SPLAT_FOLDABLE_OPS:
            out = scalars[0]
        else:
            with np.errstate(all="ignore"):
                out = np.asarray(opdef.reference(scalars, dict(n.attrs)))
        full = np.broadcast_to(out, n.outputs[0].shape)
        return (emit_constant(b, full, n.outputs[0].dtype, n.name),)
    sizes = [v.type.size for v in n.inputs] + [o.type.size for o in n.outputs]
    if max(sizes, default=0) > EVAL_LIMIT:
        return None
    with np.errstate(all="ignore"):
        result = opdef.reference([const_array(v) for v in n.inputs], dict(n.attrs))
    results = result if isinstance(result, tuple) else (result,)
    arrays = [round_to_dtype(np.asarray(r), o.dtype)
              for r, o in zip(results, n.outputs, strict=True)]
    if not all(a.size <= fold_limit or _splat_of(a) is not None for a in arrays):
        return None
    name = n.name
    return tuple(emit_constant(b, a, o.dtype, name if len(arrays) == 1 else f"{name}.{i}")
                 for i, (a, o) in enumerate(zip(arrays, n.outputs, strict=True)))


def _zeros(b: Builder, n: Node) -> Tensor:
    out = n.outputs[0]
    return emit_constant(b, np.zeros(out.shape, DTYPES[out.dtype]), out.dtype, n.name)


def _pad_fill(b: Builder, n: Node) -> Tensor:
    out = n.outputs[0]
    return emit_constant(b, np.full(out.shape, n.attrs["value"]), out.dtype, n.name)


def _window_fill(b: Builder, n: Node) -> Tensor | None:
    """Windows over padding alone: the padding's value (-inf for max, 0 for sum)."""
    out = n.outputs[0]
    if n.attrs["kind"] == "sum":
        return _zeros(b, n)
    if out.dtype not in FLOAT_DTYPES:
        return None
    return emit_constant(b, np.full(out.shape, -np.inf), out.dtype, n.name)


def _concat_nonempty(b: Builder, n: Node) -> Tensor:
    pieces = [b.tensor(v) for v in n.inputs if v.type.size]
    if len(pieces) == 1:
        return pieces[0]
    return b.op("concat", *pieces, axis=n.attrs["axis"], name=n.name)


def _scatter_nothing(b: Builder, n: Node) -> Tensor | None:
    x, _, upd = n.inputs
    return b.tensor(x) if upd.type.size == 0 else None


def _select_scatter_nothing(b: Builder, n: Node) -> Tensor | None:
    return _zeros(b, n) if n.inputs[1].type.size == 0 else None


# A node with an empty operand and a non-empty result: what it computes from nothing.
FROM_EMPTY: dict[str, Rewrite] = {
    "reduce_sum": _zeros, "matmul": _zeros, "conv": _zeros, "pad": _pad_fill,
    "reduce_window": _window_fill, "concat": _concat_nonempty, "scatter_add": _scatter_nothing,
    "select_scatter": _select_scatter_nothing,
}


def fold_empty(b: Builder, n: Node) -> tuple[Tensor, ...] | None:
    """Zero-element values hold nothing to compute: a node whose results are all empty becomes
    a constant of their shape, and one that reads an empty operand into a non-empty result
    becomes what it computes from nothing (`FROM_EMPTY`: a sum of nothing is 0, padding
    around nothing is the fill, a concatenation skips empty pieces). So no kernel has to
    loop over an empty range, and an empty input only ever reaches the outputs."""
    if n.op in UNFOLDABLE_OPS:
        return None
    if all(o.type.size == 0 for o in n.outputs):
        return tuple(emit_constant(b, np.zeros(o.shape, DTYPES[o.dtype]), o.dtype,
                                   n.name if len(n.outputs) == 1 else f"{n.name}.{i}")
                     for i, o in enumerate(n.outputs))
    rule = FROM_EMPTY.get(n.op)
    if rule is None or len(n.outputs) != 1 or all(v.type.size for v in n.inputs):
        return None
    one = rule(b, n)
    return None if one is None else (one,)


# -- algebraic identities (each returns the replacement of the node's single output, or None) -----


def _as_result(b: Builder, x: Value, n: Node) -> Tensor | None:
    """`x` standing in for `n`'s output: itself, or broadcast up to the output's shape."""
    out = n.outputs[0]
    if x.dtype != out.dtype:
        return None
    if x.shape == out.shape:
        return b.tensor(x)
    return b.op("broadcast", b.tensor(x), shape=out.shape, name=n.name)


def simplify_add(b: Builder, n: Node) -> Tensor | None:
    x, y = n.inputs
    if is_const(y, 0):
        return _as_result(b, x, n)
    if is_const(x, 0):
        return _as_result(b, y, n)
    return None


def simplify_sub(b: Builder, n: Node) -> Tensor | None:
    x, y = n.inputs
    return _as_result(b, x, n) if is_const(y, 0) else None


def simplify_mul(b: Builder, n: Node) -> Tensor | None:
    x, y = n.inputs
    if is_const(y, 1):
        return _as_result(b, x, n)
    if is_const(x, 1):
        return _as_result(b, y, n)
    out = n.outputs[0]
    if out.dtype in INT_DTYPES and (is_const(x, 0) or is_const(y, 0)):
        return b.op("constant", value=0, shape=out.shape, dtype=out.dtype, name=n.name)
    return None


def simplify_div(b: Builder, n: Node) -> Tensor | None:
    x, y = n.inputs
    return _as_result(b, x, n) if is_const(y, 1) else None


def simplify_pow(b: Builder, n: Node) -> Tensor | None:
    """x**1 is x and x**2 is x·x, the correctly rounded square (libm's pow may differ from it
    by an ulp): exported models square through Pow (a variance, an RMS norm)."""
    x, y = n.inputs
    if is_const(y, 1):
        return _as_result(b, x, n)
    if is_const(y, 2) and x.shape == n.outputs[0].shape:
        return b.op("mul", b.tensor(x), b.tensor(x), name=n.name)
    return None


def simplify_neg(b: Builder, n: Node) -> Tensor | None:
    (x,) = n.inputs
    return b.tensor(x.node.inputs[0]) if x.node.op == "neg" else None


def simplify_transpose(b: Builder, n: Node) -> Tensor | None:
    (x,) = n.inputs
    perm = tuple(n.attrs["perm"])
    if perm == tuple(range(len(perm))):
        return b.tensor(x)
    if x.node.op != "transpose":
        return None
    inner = tuple(x.node.attrs["perm"])
    composed = tuple(inner[p] for p in perm)
    src = x.node.inputs[0]
    if composed == tuple(range(len(composed))):
        return b.tensor(src)
    return b.op("transpose", b.tensor(src), perm=composed, name=n.name)


def simplify_reshape(b: Builder, n: Node) -> Tensor | None:
    (x,) = n.inputs
    shape = tuple(n.attrs["shape"])
    if shape == x.shape:
        return b.tensor(x)
    if x.node.op != "reshape":
        return None
    src = x.node.inputs[0]
    if src.shape == shape:
        return b.tensor(src)
    return b.op("reshape", b.tensor(src), shape=shape, name=n.name)


def simplify_broadcast(b: Builder, n: Node) -> Tensor | None:
    (x,) = n.inputs
    shape = tuple(n.attrs["shape"])
    if shape == x.shape:
        return b.tensor(x)
    if x.node.op != "broadcast":
        return None
    # broadcast_to(broadcast_to(x, s1), s2) == broadcast_to(x, s2) whenever both are valid.
    return b.op("broadcast", b.tensor(x.node.inputs[0]), shape=shape, name=n.name)


def simplify_cast(b: Builder, n: Node) -> Tensor | None:
    (x,) = n.inputs
    return b.tensor(x) if n.attrs["dtype"] == x.dtype else None


def simplify_select(b: Builder, n: Node) -> Tensor | None:
    c, x, y = n.inputs
    if x.node is y.node and x.index == y.index:
        return _as_result(b, x, n)
    cond = splat_value(c)
    if cond is None or not isinstance(cond, bool):
        return None
    return _as_result(b, x if cond else y, n)


def _axis_range(v: Value, axis: int) -> tuple[Value, int, int] | None:
    """(source, start, stop) when `v` is a unit-step slice of its source along `axis` only."""
    n = v.node
    if n.op != "slice" or any(st != 1 for st in n.attrs["step"]):
        return None
    src = n.inputs[0]
    for i, (lo, hi, d) in enumerate(zip(n.attrs["start"], n.attrs["stop"], src.shape,
                                        strict=True)):
        if i != axis and (lo, hi) != (0, d):
            return None
    return src, n.attrs["start"][axis], n.attrs["stop"][axis]


def simplify_slice(b: Builder, n: Node) -> Tensor | None:
    (x,) = n.inputs
    return b.tensor(x) if n.outputs[0].shape == x.shape else None


def simplify_concat(b: Builder, n: Node) -> Tensor | None:
    """Consecutive slices of one value, concatenated back in order, are one slice of it. Along
    axis 0 a piece may be a reshape of such a slice (an unrolled loop's step x_t, say): a
    range of leading rows is a range of the flat data, and so is their concatenation; when
    they cover the value, the concatenation is a reshape of it."""
    axis = n.attrs["axis"]
    ranges = []
    for v in n.inputs:
        reshaped = axis == 0 and v.node.op == "reshape"
        r = _axis_range(v.node.inputs[0] if reshaped else v, axis)
        if r is None or (ranges and (r[0] is not ranges[-1][0] or r[1] != ranges[-1][2])):
            return None
        ranges.append(r)
    src, lo, hi = ranges[0][0], ranges[0][1], ranges[-1][2]
    if len(ranges) < 2 and n.inputs[0].node.op != "slice":
        return None
    shape, rank = n.outputs[0].shape, len(src.shape)
    if (lo, hi) == (0, src.shape[axis]):
        return b.tensor(src) if src.shape == shape else b.op("reshape", b.tensor(src),
                                                              shape=shape, name=n.name)
    start = tuple(lo if i == axis else 0 for i in range(rank))
    stop = tuple(hi if i == axis else d for i, d in enumerate(src.shape))
    if tuple(hi - lo if i == axis else d for i, d in enumerate(src.shape)) != shape:
        return None  # a slice and a reshape: the graph would grow where the pieces stay used
    return b.op("slice", b.tensor(src), start=start, stop=stop, step=(1,) * rank, name=n.name)


IDENTITIES: dict[str, Rewrite] = {
    "add": simplify_add, "sub": simplify_sub, "mul": simplify_mul, "div": simplify_div,
    "pow": simplify_pow,
    "neg": simplify_neg, "transpose": simplify_transpose, "reshape": simplify_reshape,
    "broadcast": simplify_broadcast, "cast": simplify_cast, "select": simplify_select,
    "slice": simplify_slice, "concat": simplify_concat,
}


# -- the sweep -------------------------------------------------------------------------------------


def _sweep(graph: Graph, fold_limit: int | None) -> tuple[Graph, bool]:
    """One rewrite pass over the body, then DCE; reports whether anything changed. With
    `fold_limit` None it only folds empty values (`fold_empty`)."""
    b = Builder.from_graph(graph)
    vmap: dict[tuple[int, int], Value] = {}
    changed = False

    def m(v: Value) -> Value:
        return vmap.get((id(v.node), v.index), v)

    for n in graph.nodes:
        inputs = tuple(m(v) for v in n.inputs)
        same = all(a is c for a, c in zip(inputs, n.inputs, strict=True))
        node = n if same else n.with_inputs(inputs)
        new = fold_empty(b, node)
        if new is None and fold_limit is not None:
            new = fold_constants(b, node, fold_limit)
        if new is None and fold_limit is not None and len(node.outputs) == 1 and (
                node.op in IDENTITIES):
            one = IDENTITIES[node.op](b, node)
            new = (one,) if one is not None else None
        if new is not None:
            changed = True
            new_values = tuple(t.value for t in new)
        else:
            added = b.add_node(node)
            changed = changed or added is not node
            new_values = added.outputs
        for old, nv in zip(n.outputs, new_values, strict=True):
            vmap[(id(n), old.index)] = nv
    outs = [(name, m(v)) for name, v in graph.outputs]
    built = b.build(outputs={k: b.tensor(v) for k, v in outs})
    live = built.live_nodes()
    changed = changed or len(live) != len(built.nodes)
    return Graph(graph.name, graph.inputs, graph.params, live, built.outputs,
                 graph.param_values), changed


def fold_empty_values(graph: Graph) -> Graph:
    """`graph` with every empty value folded (`fold_empty`) and dead nodes dropped: one sweep
    does it, since whether a value is empty depends on its type alone."""
    if not any(v.type.size == 0 for n in graph.nodes for v in n.inputs + n.outputs):
        return graph
    return _sweep(graph, None)[0]


def simplify(graph: Graph, fold_limit: int = 64, max_iterations: int = 32) -> Graph:
    """Return `graph` simplified to a fixed point (see the module docstring)."""
    return simplify_with_stats(graph, fold_limit, max_iterations)[0]


def simplify_with_stats(graph: Graph, fold_limit: int = 64, max_iterations: int = 32
                        ) -> tuple[Graph, dict[str, int]]:
    """`simplify`, also returning {nodes_before, nodes_after, iterations}."""
    before = len(graph.nodes)
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported below
        graph, changed = _sweep(graph, fold_limit)
        if not changed:
            break
    return graph, {"nodes_before": before, "nodes_after": len(graph.nodes),
                   "iterations": iterations}


@dataclass
class SimplifyPass(Pass):
    """Fold constants, merge duplicates, drop dead nodes, apply identities (module docstring).

    Options: `fold_limit` (largest non-splat constant folding may create), `max_iterations`.
    Logs node counts before and after and the number of sweeps in the PassContext.
    """

    name: ClassVar[str] = "simplify"
    fold_limit: int = 64
    max_iterations: int = 32

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        out, stats = simplify_with_stats(graph, self.fold_limit, self.max_iterations)
        ctx.log.append({"pass": self.name, **stats})
        return out
