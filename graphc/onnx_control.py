"""ONNX control flow and sequences at import: If, Loop, Scan, the Sequence ops and Optional.

Note: why control flow disappears at import
-------------------------------------------
graphc compiles graphs of static shapes ahead of time, so control flow is resolved while the
model is imported, the way the LSTM op is unrolled:

* **If** whose condition folds to a constant (exporters branch on shapes and ranks, which are
  numbers once the symbolic dimensions are bound) imports the taken branch only. A condition
  that depends on input values computes both branches and picks per output with `select`;
  that needs both branches to give the same shapes and element types.
* **Loop** runs its body once per iteration at import, with the trip count and the
  condition known at import (the condition may be computed inside the body, as long as it
  folds to a constant each time): the carried values flow from one copy of the body to the
  next, and the scan outputs are stacked along a new first axis.
* **Scan** unrolls along each scan input's axis (either direction), stacking its scan
  outputs along their axes.
* **Sequences** are lists of tensors known at import; SequenceAt, SequenceInsert and
  SequenceErase need constant positions, SplitToSequence and ConcatFromSequence become slices
  and a concatenation, SequenceMap runs its body per element. **Optional** values are a
  tensor, a sequence or nothing, known at import.

A subgraph sees the names of the scopes around it (ONNX's lexical scoping); the names it
defines vanish when it ends. Each copy of a body names its nodes after the ONNX values with
a counter (`h_1`, `h_2` ...), so the unrolled graph stays readable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.builder import Tensor

MAX_TRIPS = 4096  # body copies one Loop or Scan may unroll into


class Sequence(list):
    """An ONNX sequence value: a list of tensors (or numpy constants) known at import."""


class Optional:
    """An ONNX optional value: `value` is a tensor, a sequence, or None (empty)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def as_tensor(imp, v) -> Tensor:
    """A graph tensor for `v`, a numpy constant keeping its integer or boolean element type."""
    if isinstance(v, np.ndarray) and v.dtype.kind in "biu":
        return imp.b.const(v)
    return imp.t(v)


def run_subgraph(imp, node, graph, bindings: list) -> list:
    """Import the nodes of `graph` (a GraphProto attribute of `node`) with its inputs bound to
    `bindings`; returns its outputs. Names resolve in the subgraph, then in enclosing scopes."""
    if len(bindings) != len(graph.input):
        raise imp.fail(node, f"subgraph {graph.name!r} takes {len(graph.input)} inputs, "
                             f"given {len(bindings)}")
    outer = imp.env
    imp.env = dict(outer)
    try:
        for t in graph.initializer:
            imp.env[t.name] = imp.nh.to_array(t)
        for vi, v in zip(graph.input, bindings, strict=True):
            imp.env[vi.name] = v
        imp.import_nodes(graph.node)
        outs = []
        for vi in graph.output:
            if vi.name in imp.skipped:
                raise imp.skipped_output(vi.name)
            outs.append(imp.env[vi.name])
        return outs
    finally:
        imp.env = outer


def _truth(imp, node, v, what: str) -> bool | None:
    """A boolean scalar known at import, or None where it depends on input values."""
    values = imp.numbers(v)
    if values is None:
        return None
    if values.size != 1:
        raise imp.fail(node, f"{what} must be one boolean, got shape {list(values.shape)}")
    return bool(values.reshape(-1)[0])


def if_(imp, node, ins, attrs):
    cond = _truth(imp, node, ins[0], "the condition")
    if cond is not None:
        return run_subgraph(imp, node, attrs["then_branch" if cond else "else_branch"], [])
    then = run_subgraph(imp, node, attrs["then_branch"], [])
    other = run_subgraph(imp, node, attrs["else_branch"], [])
    flag = as_tensor(imp, ins[0])
    flag = flag.reshape() if flag.shape != () else flag  # a [1] condition selects whole outputs
    outs = []
    for k, (a, c) in enumerate(zip(then, other, strict=True)):
        if isinstance(a, (Sequence, Optional)) or isinstance(c, (Sequence, Optional)):
            raise imp.fail(node, f"output {k}: a sequence or optional chosen by a condition "
                                 "that depends on input values")
        a, c = as_tensor(imp, a), as_tensor(imp, c)
        if a.shape != c.shape or a.dtype != c.dtype:
            raise imp.fail(node, f"output {k}: the branches give {a.dtype}{list(a.shape)} and "
                                 f"{c.dtype}{list(c.shape)}; a condition that depends on input "
                                 "values needs both alike")
        outs.append(imp.b.op("select", flag, a, c))
    return outs


def _stack(imp, values: list, axis: int = 0):
    """Stack equal-shaped values along a new `axis` (numpy when all are constants)."""
    if all(isinstance(v, np.ndarray) for v in values):
        return np.stack(values, axis=axis)
    parts = []
    for v in values:
        t = as_tensor(imp, v)
        parts.append(t.reshape(*t.shape[:axis], 1, *t.shape[axis:]))
    return parts[0] if len(parts) == 1 else imp.b.op("concat", *parts, axis=axis)


def loop(imp, node, ins, attrs):
    body = attrs["body"]
    trips = imp.numbers(ins[0]) if ins and ins[0] is not None else None
    if ins and ins[0] is not None and trips is None:
        raise imp.fail(node, "the trip count must be a constant (computed from static shapes)")
    trips = int(trips.reshape(-1)[0]) if trips is not None else None
    cond = True
    if len(ins) > 1 and ins[1] is not None:
        cond = _truth(imp, node, ins[1], "the initial condition")
        if cond is None:
            raise imp.fail(node, "the initial condition depends on input values; the trip "
                                 "count must be known at import")
    carried = list(ins[2:])
    n_scan = len(body.output) - 1 - len(carried)
    scans: list[list] = [[] for _ in range(n_scan)]
    i = 0
    while cond and (trips is None or i < trips):
        if i >= MAX_TRIPS:
            raise imp.fail(node, f"the loop runs more than {MAX_TRIPS} iterations at import"
                                 + ("" if trips is not None else " (no trip count given)"))
        outs = run_subgraph(imp, node, body, [np.array(i, np.int64), np.array(cond), *carried])
        cond = _truth(imp, node, outs[0], "the body's condition")
        if cond is None:
            raise imp.fail(node, f"the body's condition depends on input values (iteration "
                                 f"{i}); the trip count must be known at import")
        carried = outs[1:1 + len(carried)]
        for acc, v in zip(scans, outs[1 + len(carried):], strict=True):
            acc.append(v)
        i += 1
    if n_scan and i == 0:
        raise imp.fail(node, "the loop runs no iteration, so its scan outputs have no shape")
    return carried + [_stack(imp, acc) for acc in scans]


def scan(imp, node, ins, attrs):
    body = attrs["body"]
    m = int(attrs["num_scan_inputs"])
    states, xs = list(ins[:len(ins) - m]), [as_tensor(imp, v) for v in ins[len(ins) - m:]]
    in_axes = [a + x.ndim if a < 0 else a
               for a, x in zip(attrs.get("scan_input_axes") or [0] * m, xs, strict=True)]
    in_dirs = attrs.get("scan_input_directions") or [0] * m
    lengths = {x.shape[a] for x, a in zip(xs, in_axes, strict=True)}
    if len(lengths) != 1:
        raise imp.fail(node, f"scan inputs have different lengths {sorted(lengths)}")
    (length,) = lengths
    if length > MAX_TRIPS:
        raise imp.fail(node, f"the scan runs {length} iterations, more than {MAX_TRIPS}")
    n_out = len(body.output) - len(states)
    scans: list[list] = [[] for _ in range(n_out)]
    for t in range(length):
        steps = []
        for x, a, d in zip(xs, in_axes, in_dirs, strict=True):
            k = length - 1 - t if d else t
            start, stop = [0] * x.ndim, list(x.shape)
            start[a], stop[a] = k, k + 1
            piece = imp.b.op("slice", x, start=tuple(start), stop=tuple(stop))
            steps.append(piece.reshape(*(s for j, s in enumerate(x.shape) if j != a)))
        outs = run_subgraph(imp, node, body, [*states, *steps])
        states = outs[:len(states)]
        for acc, v in zip(scans, outs[len(states):], strict=True):
            acc.append(v)
    out_axes = attrs.get("scan_output_axes") or [0] * n_out
    out_dirs = attrs.get("scan_output_directions") or [0] * n_out
    stacked = []
    for acc, a, d in zip(scans, out_axes, out_dirs, strict=True):
        rank = np.ndim(acc[0]) if isinstance(acc[0], np.ndarray) else acc[0].ndim
        stacked.append(_stack(imp, acc[::-1] if d else acc, a + rank + 1 if a < 0 else a))
    return states + stacked


# -- sequences and optionals ---------------------------------------------------------------------


def _position(imp, node, v, size: int, insert: bool = False) -> int:
    pos = imp.ints(node, v, "the position")[0]
    lo, hi = -size, size if insert else size - 1
    if not lo <= pos <= hi:
        raise imp.fail(node, f"position {pos} is outside a sequence of {size}")
    return pos + size if pos < 0 else pos


def _sequence(imp, node, v) -> Sequence:
    if not isinstance(v, Sequence):
        raise imp.fail(node, f"expected a sequence, got {type(v).__name__}")
    return v


# A handler's list is its outputs: a sequence it returns goes inside one.
def sequence_empty(imp, node, ins, attrs):
    return [Sequence()]


def sequence_construct(imp, node, ins, attrs):
    return [Sequence(ins)]


def sequence_at(imp, node, ins, attrs):
    seq = _sequence(imp, node, ins[0])
    return [seq[_position(imp, node, ins[1], len(seq))]]


def sequence_length(imp, node, ins, attrs):
    return np.array(len(_sequence(imp, node, ins[0])), np.int64)


def sequence_insert(imp, node, ins, attrs):
    seq = Sequence(_sequence(imp, node, ins[0]))
    pos = (_position(imp, node, ins[2], len(seq), insert=True)
           if len(ins) > 2 and ins[2] is not None else len(seq))
    seq.insert(pos, ins[1])
    return [seq]


def sequence_erase(imp, node, ins, attrs):
    seq = Sequence(_sequence(imp, node, ins[0]))
    if not seq:
        raise imp.fail(node, "erasing from an empty sequence")
    pos = (_position(imp, node, ins[1], len(seq))
           if len(ins) > 1 and ins[1] is not None else len(seq) - 1)
    del seq[pos]
    return [seq]


def split_to_sequence(imp, node, ins, attrs):
    x = as_tensor(imp, ins[0])
    axis = int(attrs.get("axis", 0))
    axis = axis + x.ndim if axis < 0 else axis
    n = x.shape[axis]
    split = imp.numbers(ins[1]) if len(ins) > 1 and ins[1] is not None else None
    if len(ins) > 1 and ins[1] is not None and split is None:
        raise imp.fail(node, "split must be a constant")
    keep = split is not None or int(attrs.get("keepdims", 1))
    if split is None:
        sizes = [1] * n
    elif split.ndim == 0:  # pieces of this size, the last one smaller
        part = int(split)
        sizes = [min(part, n - k) for k in range(0, n, part)]
    else:
        sizes = [int(s) for s in split]
    if sum(sizes) != n or min(sizes, default=1) < 0:
        raise imp.fail(node, f"split sizes {sizes} do not cover axis {axis} of {list(x.shape)}")
    out, lo = Sequence(), 0
    for size in sizes:
        start, stop = [0] * x.ndim, list(x.shape)
        start[axis], stop[axis] = lo, lo + size
        piece = imp.b.op("slice", x, start=tuple(start), stop=tuple(stop))
        if not keep:
            piece = piece.reshape(*(s for j, s in enumerate(x.shape) if j != axis))
        out.append(piece)
        lo += size
    return [out]


def concat_from_sequence(imp, node, ins, attrs):
    seq = _sequence(imp, node, ins[0])
    if not seq:
        raise imp.fail(node, "concatenating an empty sequence")
    rank = np.ndim(seq[0]) if isinstance(seq[0], np.ndarray) else seq[0].ndim
    axis = int(attrs["axis"])
    if int(attrs.get("new_axis", 0)):
        return _stack(imp, list(seq), axis + rank + 1 if axis < 0 else axis)
    parts = [as_tensor(imp, v) for v in seq]
    axis = axis + rank if axis < 0 else axis
    return parts[0] if len(parts) == 1 else imp.b.op("concat", *parts, axis=axis)


def sequence_map(imp, node, ins, attrs):
    body = attrs["body"]
    seq = _sequence(imp, node, ins[0])
    extra = ins[1:]
    for v in extra:
        if isinstance(v, Sequence) and len(v) != len(seq):
            raise imp.fail(node, f"sequences of lengths {len(seq)} and {len(v)}")
    outs: list[Sequence] = [Sequence() for _ in body.output]
    for i, item in enumerate(seq):
        args = [item] + [v[i] if isinstance(v, Sequence) else v for v in extra]
        for acc, v in zip(outs, run_subgraph(imp, node, body, args), strict=True):
            acc.append(v)
    return outs


def optional(imp, node, ins, attrs):
    return Optional(ins[0] if ins and ins[0] is not None else None)


def optional_has_element(imp, node, ins, attrs):
    v = ins[0] if ins else None
    present = v.value is not None if isinstance(v, Optional) else v is not None
    return np.array(present)


def optional_get_element(imp, node, ins, attrs):
    v = ins[0]
    if isinstance(v, Optional):
        if v.value is None:
            raise imp.fail(node, "the optional value is empty")
        return [v.value]
    return [v]


HANDLERS = {
    "If": if_, "Loop": loop, "Scan": scan, "SequenceEmpty": sequence_empty,
    "SequenceConstruct": sequence_construct, "SequenceAt": sequence_at,
    "SequenceLength": sequence_length, "SequenceInsert": sequence_insert,
    "SequenceErase": sequence_erase, "SplitToSequence": split_to_sequence,
    "ConcatFromSequence": concat_from_sequence, "SequenceMap": sequence_map,
    "Optional": optional, "OptionalHasElement": optional_has_element,
    "OptionalGetElement": optional_get_element,
}

__all__ = ["HANDLERS", "MAX_TRIPS", "Optional", "Sequence", "run_subgraph"]
