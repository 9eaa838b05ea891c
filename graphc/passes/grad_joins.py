"""Cheaper sums of gradient contributions: rewrites `autodiff` applies to the cotangent parts of
one value before adding them up.

- `join_padded_slices`: the cotangents of T disjoint slices of one value are T zero pads of the
  whole; one `concat` of the pieces (and zero gaps) replaces adding T pads.
- `join_matmul_products`: the cotangent of a weight shared by T matmuls (an unrolled recurrence's
  W_x and W_z) is a sum of T products A_t^T B_t, each over a short inner axis (the batch); one
  product of the concatenations, [A_0; ...; A_T]^T [B_0; ...; B_T], replaces them.
"""

from __future__ import annotations

from graphc.ir.builder import Builder, Tensor
from graphc.ir.graph import Node

# Products joined into one matmul at most (more are joined in as many balanced chunks): a
# concatenation kernel of 64 pieces took 0.7 s to compile (16: 0.1 s), and a chunk's operands
# can go as soon as its last step's cotangent is summed. An LSTM over 256 steps compiled in
# 15 s with chunks of 64 (18 s unchunked, 12 s without joining).
MAX_JOINED = 64


def _slice_placement(t: Tensor) -> tuple[int, int, int] | None:
    """(axis, offset, length) when `t` is a zero `pad` along one axis only, with no interior or
    negative padding: a slice's cotangent put back in place."""
    n = t.node
    if n.op != "pad" or n.attrs.get("value", 0.0) != 0.0 or any(n.attrs.get("interior") or ()):
        return None
    low, high = n.attrs["low"], n.attrs["high"]
    axes = [i for i, (lo, hi) in enumerate(zip(low, high, strict=True)) if lo or hi]
    if len(axes) != 1 or low[axes[0]] < 0 or high[axes[0]] < 0:
        return None
    axis = axes[0]
    return axis, low[axis], n.inputs[0].shape[axis]


def join_padded_slices(b: Builder, parts: list[Tensor], label: str) -> list[Tensor]:
    """Contributions that are zero pads of disjoint ranges along one axis (the cotangents of T
    slices of one value, say) become one `concat` of the pieces and zero gaps: adding T pads of
    the whole value costs T times its size, the concat costs it once."""
    by_axis: dict[int, list[tuple[int, int, Tensor]]] = {}
    for p in parts:
        placed = _slice_placement(p)
        if placed is not None:
            by_axis.setdefault(placed[0], []).append((placed[1], placed[2], p))
    joined: set[int] = set()
    out: list[Tensor] = []
    for axis, pieces in by_axis.items():
        pieces.sort(key=lambda q: q[0])
        disjoint = all(o + n <= pieces[i + 1][0] for i, (o, n, _) in enumerate(pieces[:-1]))
        if len(pieces) < 2 or not disjoint:
            continue
        full = pieces[0][2].shape
        seq, cursor = [], 0
        for offset, length, p in pieces:
            if offset > cursor:
                seq.append(b.zeros(full[:axis] + (offset - cursor,) + full[axis + 1:], p.dtype))
            seq.append(b.tensor(p.node.inputs[0]))
            cursor = offset + length
            joined.add(id(p))
        if cursor < full[axis]:
            seq.append(b.zeros(full[:axis] + (full[axis] - cursor,) + full[axis + 1:],
                               pieces[0][2].dtype))
        out.append(b.op("concat", *seq, axis=axis, name=label))
    return out + [p for p in parts if id(p) not in joined]


def _transposed_product(t: Tensor) -> tuple[Node, Node] | None:
    """(A, B) nodes' operands when `t` is matmul(transpose(A), B) of 2-D operands, as the
    weight cotangent of `x @ W` is."""
    n = t.node
    if n.op != "matmul" or len(t.shape) != 2:
        return None
    lhs = n.inputs[0]
    if lhs.node.op != "transpose" or tuple(lhs.node.attrs["perm"]) != (1, 0):
        return None
    return lhs.node.inputs[0], n.inputs[1]


def join_matmul_products(b: Builder, parts: list[Tensor], label: str) -> list[Tensor]:
    """Contributions A_t^T B_t ([K_t, M] and [K_t, N] operands) become one product of the
    operands concatenated along K, where that moves fewer bytes: T accumulated products each
    read and write the [M, N] sum (2(T-1)·M·N elements more than one product), the
    concatenations copy sum K_t·(M + N) elements once. Over an LSTM's 64 steps of batch 32
    (M = 256, N = 1024) the concatenations move 15 % of that, and one GEMM over K = 2048 runs
    at the rate of a large one instead of 64 over K = 32. More than MAX_JOINED products join
    in chunks of consecutive ones, one matmul each."""
    # The reverse walk adds the last use's contribution first: concatenated in forward order
    # instead, consecutive slices of one value (an unrolled loop's steps x_t) concatenate back
    # into that value, which `simplify` then reads in place.
    products = [(p, _transposed_product(p)) for p in reversed(parts)]
    products = [(p, ab) for p, ab in products if ab is not None]
    groups = -(-len(products) // MAX_JOINED)
    joined, merged = [], set()
    for g in range(groups):
        chunk = products[g * len(products) // groups:(g + 1) * len(products) // groups]
        if len(chunk) < 2:
            continue
        m, n = chunk[0][0].shape
        inner = sum(a.shape[0] for _, (a, _b) in chunk)
        if inner * (m + n) > (len(chunk) - 1) * m * n:
            continue
        lhs = b.op("concat", *(b.tensor(a) for _, (a, _b) in chunk), axis=0, name=label)
        rhs = b.op("concat", *(b.tensor(r) for _, (_a, r) in chunk), axis=0, name=label)
        joined.append(b.op("matmul", b.op("transpose", lhs, perm=(1, 0), name=label), rhs,
                           name=label))
        merged.update(id(p) for p, _ab in chunk)
    return joined + [p for p in parts if id(p) not in merged]
