"""ONNX import of element-wise indexing (GatherElements, GatherND, ScatterElements,
ScatterND), TopK and the two classification losses (NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss); `graphc.onnx_import` registers these handlers.

Each is a `take` or `scatter_add` on the flattened operand at computed flat positions: the
index tensor's own coordinates give the constant part of each position (folded at import),
the index values the rest, so constant and computed indices (labels fed at run time, the
positions TopK found) take the same path, and gradients flow through `take`/`scatter_add`.
"""

from __future__ import annotations

import math

import numpy as np

from .onnx_layers import text

# TopK unrolls into k rounds of argmax: a bound on the graph it writes.
TOPK_MAX = 256


def _strides(shape) -> np.ndarray:
    return np.cumprod((tuple(shape[1:]) + (1,))[::-1])[::-1].astype(np.int64)


def _wrap(imp, node, idx, n: int, what: str):
    """Indices in [-n, n) made non-negative: a constant is checked at import, a computed one
    wraps with a select (out-of-range values are the backends' to refuse)."""
    if isinstance(idx, np.ndarray):
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise imp.fail(node, f"an index outside [-{n}, {n}) {what}")
        return np.where(idx < 0, idx + n, idx)
    t = imp.t(idx)
    t = t if t.dtype == "i64" else t.astype("i64")
    return imp.b.select(t < 0, t + n, t)


def _lift(imp, v):
    return imp.b.const(v) if isinstance(v, np.ndarray) else v


def along_axis_positions(imp, node, shape, idx, axis: int):
    """Flat positions in x.reshape(-1) (x of `shape`) of take_along_axis(x, idx, axis):
    idx's coordinates on every other axis, its values on `axis`."""
    idx_shape = tuple(np.shape(idx) if isinstance(idx, np.ndarray) else idx.shape)
    if len(idx_shape) != len(shape):
        raise imp.fail(node, f"indices of rank {len(idx_shape)} for data of rank {len(shape)}")
    if any(i > s for a, (i, s) in enumerate(zip(idx_shape, shape, strict=True)) if a != axis):
        raise imp.fail(node, f"indices of shape {idx_shape} for data of shape {tuple(shape)}")
    strides = _strides(shape)
    grid = np.indices(idx_shape, dtype=np.int64)
    base = sum((grid[a] * strides[a] for a in range(len(shape)) if a != axis),
               np.zeros(idx_shape, np.int64))
    idx = _wrap(imp, node, idx, shape[axis], f"along axis {axis}")
    return idx * strides[axis] + base if isinstance(idx, np.ndarray) else \
        idx * int(strides[axis]) + imp.b.const(base)


def _axis_attr(attrs, rank: int, default: int = 0) -> int:
    axis = int(attrs.get("axis", default))
    return axis + rank if axis < 0 else axis


def gather_elements(imp, node, ins, attrs):
    x = imp.t(ins[0])
    flat = along_axis_positions(imp, node, x.shape, ins[1], _axis_attr(attrs, x.ndim))
    return imp.b.take(x.reshape(-1), _lift(imp, flat), axis=0)


def _nd_positions(imp, node, shape, idx, batch_dims: int):
    """GatherND/ScatterND: flat positions over data axes [0, batch_dims + m) of the index
    tuples in idx's last axis (m long), batch coordinates from idx's own."""
    idx_shape = tuple(np.shape(idx) if isinstance(idx, np.ndarray) else idx.shape)
    m = idx_shape[-1] if idx_shape else 0
    b = batch_dims
    if not idx_shape or m < 1 or b + m > len(shape) or idx_shape[:b] != tuple(shape[:b]):
        raise imp.fail(node, f"indices of shape {idx_shape} (batch_dims {b}) for data of "
                             f"shape {tuple(shape)}")
    lead = shape[:b + m]
    strides = _strides(lead)
    grid = np.indices(idx_shape[:-1], dtype=np.int64)
    pos = sum((grid[a] * strides[a] for a in range(b)), np.zeros(idx_shape[:-1], np.int64))
    if isinstance(idx, np.ndarray):
        for j in range(m):
            pos = pos + _wrap(imp, node, idx[..., j], shape[b + j], f"on axis {b + j}") \
                * strides[b + j]
        return pos, lead
    t = imp.t(idx)
    out = imp.b.const(pos)
    for j in range(m):
        start = (0,) * (t.ndim - 1) + (j,)
        part = imp.b.op("slice", t, start=start, stop=t.shape[:-1] + (j + 1,),
                        step=(1,) * t.ndim).reshape(*t.shape[:-1])
        out = out + _wrap(imp, node, part, shape[b + j], f"on axis {b + j}") * int(
            strides[b + j])
    return out, lead


def gather_nd(imp, node, ins, attrs):
    x = imp.t(ins[0])
    flat, lead = _nd_positions(imp, node, x.shape, ins[1], int(attrs.get("batch_dims", 0)))
    rows = x.reshape(int(np.prod(lead)), *x.shape[len(lead):])
    return imp.b.take(rows, _lift(imp, flat), axis=0)


def _scatter(imp, node, rows, flat, upd, reduction: str):
    """rows with upd written (reduction "none") or added ("add") at flat positions along
    axis 0. "none" with repeated positions is undefined in ONNX; here they add up."""
    flat = _lift(imp, flat)
    if reduction == "add":
        return imp.b.scatter_add(rows, flat, upd, axis=0)
    if reduction != "none":
        raise imp.fail(node, f"reduction {reduction!r} is not supported (none, add)")
    zeros = imp.b.zeros_like(rows)
    written = imp.b.scatter_add(zeros, flat, imp.b.ones_like(upd), axis=0) > 0.0
    return imp.b.select(written, imp.b.scatter_add(zeros, flat, upd, axis=0), rows)


def scatter_elements(imp, node, ins, attrs):
    x, upd = imp.t(ins[0]), imp.t(ins[2])
    flat = along_axis_positions(imp, node, x.shape, ins[1], _axis_attr(attrs, x.ndim))
    out = _scatter(imp, node, x.reshape(-1), flat, upd, text(attrs, "reduction", "none"))
    return out.reshape(*x.shape)


def scatter_nd(imp, node, ins, attrs):
    x, upd = imp.t(ins[0]), imp.t(ins[2])
    flat, lead = _nd_positions(imp, node, x.shape, ins[1], 0)
    rows = x.reshape(int(np.prod(lead)), *x.shape[len(lead):])
    out = _scatter(imp, node, rows, flat, upd, text(attrs, "reduction", "none"))
    return out.reshape(*x.shape)


def top_k(imp, node, ins, attrs):
    """The k largest (or smallest) along an axis, sorted, ties to the lower index: k rounds
    of argmax, each masking what it found with -inf. Values are taken where the indices
    point, so their gradient scatters back. An input holding -inf itself may repeat an
    index once only -inf values are left."""
    x = imp.t(ins[0])
    k = int(imp.ints(node, ins[1], "K")[0])
    axis = _axis_attr(attrs, x.ndim, -1)
    if not 0 < k <= min(x.shape[axis], TOPK_MAX):
        raise imp.fail(node, f"K = {k} along an axis of {x.shape[axis]} (at most {TOPK_MAX})")
    score = x if int(attrs.get("largest", 1)) else -x
    pos = imp.b.op("iota", shape=x.shape, axis=axis, dtype="i64")
    keep_shape = x.shape[:axis] + (1,) + x.shape[axis + 1:]
    found = []
    for _ in range(k):
        i = imp.b.op("argmax", score, axis=axis).reshape(*keep_shape)
        found.append(i)
        score = imp.b.select(pos.eq(i), imp.b.const(-math.inf, dtype=x.dtype), score)
    idx = found[0] if k == 1 else imp.b.op("concat", *found, axis=axis)
    flat = along_axis_positions(imp, node, x.shape, idx, axis)
    return [imp.b.take(x.reshape(-1), flat, axis=0), idx]


def _nll(imp, node, logp, target, weight, attrs):
    """ONNX's NegativeLogLikelihoodLoss on log-probabilities [N, C, d...] and integer targets
    [N, d...]: -logp[n, t[n], ...] times the target's class weight, 0 where the target is
    ignore_index; "mean" divides by the summed weights of the targets kept."""
    reduction = text(attrs, "reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise imp.fail(node, f"reduction {reduction!r}")
    target = imp.t(target) if not isinstance(target, np.ndarray) else target
    ignore = attrs.get("ignore_index")
    if isinstance(target, np.ndarray):
        keep = np.ones(target.shape, bool) if ignore is None else target != int(ignore)
        safe = np.where(keep, target, 0).astype(np.int64)
        keep_t = None if keep.all() else imp.b.const(keep.astype(np.float32), dtype=logp.dtype)
    else:
        t = target if target.dtype == "i64" else target.astype("i64")
        keep_b = t.ne(int(ignore)) if ignore is not None else None
        safe = imp.b.select(keep_b, t, imp.b.zeros_like(t)) if keep_b is not None else t
        keep_t = keep_b.astype(logp.dtype) if keep_b is not None else None
    moved = logp.transpose(0, *range(2, logp.ndim), 1)  # classes last
    idx = safe[..., None] if isinstance(safe, np.ndarray) else safe.reshape(*safe.shape, 1)
    flat = along_axis_positions(imp, node, moved.shape, idx, moved.ndim - 1)
    picked = imp.b.take(moved.reshape(-1), _lift(imp, flat), axis=0).reshape(*moved.shape[:-1])
    w = None
    if weight is not None:
        w = imp.b.take(imp.t(weight), _lift(imp, safe), axis=0)
        if keep_t is not None:
            w = w * keep_t
    elif keep_t is not None:
        w = keep_t
    loss = -picked if w is None else -(picked * w)
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    count = w.sum() if w is not None else float(np.prod(picked.shape))
    return total / count


def nll_loss(imp, node, ins, attrs):
    weight = ins[2] if len(ins) > 2 else None
    return _nll(imp, node, imp.t(ins[0]), ins[1], weight, attrs)


def softmax_cross_entropy(imp, node, ins, attrs):
    scores = imp.t(ins[0])
    logp = imp.b.op("log_softmax", scores, axis=1)
    weight = ins[2] if len(ins) > 2 else None
    loss = _nll(imp, node, logp, ins[1], weight, attrs)
    return [loss, logp] if len(node.output) > 1 else loss


HANDLERS = {
    "GatherElements": gather_elements, "GatherND": gather_nd,
    "ScatterElements": scatter_elements, "Scatter": scatter_elements, "ScatterND": scatter_nd,
    "TopK": top_k, "NegativeLogLikelihoodLoss": nll_loss,
    "SoftmaxCrossEntropyLoss": softmax_cross_entropy,
}

__all__ = ["HANDLERS", "along_axis_positions"]
