"""ONNX import of tensor-algebra and layout ops (`graphc.onnx_import` registers these handlers):
Einsum, CumSum, OneHot, Hardmax, LpNormalization, GlobalMaxPool, DepthToSpace, SpaceToDepth, Pad,
and ConstantOfShape and Range on constants. Each is written with graphc primitives (matmul,
transpose, reshape, reductions, one_hot), so autodiff and every backend take them as they are.
Handlers take the importer, the ONNX node, its inputs (graphc Tensors, or numpy arrays for
constants) and its attributes."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from graphc.ir.builder import Tensor

from .onnx_layers import text

# -- helpers that skip no-op nodes ---------------------------------------------------------------


def _transpose(x: Tensor, perm) -> Tensor:
    perm = tuple(perm)
    return x if perm == tuple(range(x.ndim)) else x.transpose(*perm)


def _reshape(x: Tensor, shape) -> Tensor:
    shape = tuple(int(d) for d in shape)
    return x if shape == x.shape else x.reshape(*shape)


def _opset(imp) -> int:
    return next((int(o.version) for o in imp.model.opset_import if o.domain in ("", "ai.onnx")),
                1)


# -- Einsum ----------------------------------------------------------------------------------------
# Letters of the ellipsis' dimensions: outside what an equation may spell, so no clash.
_ELLIPSIS_LETTERS = "".join(chr(0x3b1 + i) for i in range(24))
_TERM = re.compile(r"[A-Za-z]*(\.\.\.)?[A-Za-z]*")


def einsum_terms(imp, node, equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """The equation's operand terms and output term, one letter per axis: an ellipsis becomes
    private letters, right-aligned across operands (numpy's broadcasting); without `->`, the
    output is the ellipsis then the letters used once, in alphabetical order (ONNX)."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise imp.fail(node, f"equation {equation!r} has {len(terms)} operand terms for "
                             f"{len(ranks)} inputs")
    n_ell = max([r - (len(t) - 3) for t, r in zip(terms, ranks, strict=True) if "..." in t],
                default=0)
    ell = _ELLIPSIS_LETTERS[:n_ell]
    expanded = []
    for t in [*terms, out]:
        if not _TERM.fullmatch(t):
            raise imp.fail(node, f"term {t!r} of {equation!r}: letters a-z, A-Z and at most "
                                 "one ellipsis")
    for t, r in zip(terms, ranks, strict=True):
        if "..." in t:
            k = r - (len(t) - 3)
            t = t.replace("...", ell[n_ell - k:] if k >= 0 else "?")
        if len(t) != r:
            raise imp.fail(node, f"term {t!r} of {equation!r} does not fit a rank-{r} operand")
        expanded.append(t)
    if not arrow:
        counts = Counter("".join(expanded))
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    elif n_ell and "..." not in out:  # ONNX Runtime refuses it too; numpy would not sum them
        raise imp.fail(node, f"{equation!r}: the inputs' ellipsis is missing from the output")
    out = out.replace("...", ell)
    used = set("".join(expanded))
    if len(set(out)) != len(out) or not set(out) <= used:
        raise imp.fail(node, f"output term {out!r} of {equation!r} repeats a letter or names "
                             "one no operand has")
    return expanded, out


def _diagonal(imp, x: Tensor, term: str) -> tuple[Tensor, str]:
    """Take the diagonal of every letter repeated within one term ('ii->i', 'ii->'): the axes
    masked by an identity, then summed over the second occurrence."""
    while len(set(term)) < len(term):
        c = next(c for c in term if term.count(c) > 1)
        i = term.index(c)
        j = term.index(c, i + 1)
        n = x.shape[i]
        if x.shape[j] != n:
            raise ValueError(f"letter {c!r} labels axes of sizes {n} and {x.shape[j]}")
        mask_shape = [1] * x.ndim
        mask_shape[i] = mask_shape[j] = n
        eye = np.eye(n, dtype=np.float32).reshape(mask_shape)
        x = (x * imp.b.const(eye, dtype=x.dtype)).sum((j,))
        term = term[:j] + term[j + 1:]
    return x, term


def _sum_out(x: Tensor, term: str, keep) -> tuple[Tensor, str]:
    axes = tuple(i for i, c in enumerate(term) if c not in keep)
    if not axes:
        return x, term
    return x.sum(axes), "".join(c for c in term if c in keep)


def _sizes(pairs) -> dict[str, int]:
    """Each letter's size over the operands that have it; 1 broadcasts against any size."""
    size: dict[str, int] = {}
    for x, term in pairs:
        for c, n in zip(term, x.shape, strict=True):
            if size.get(c, 1) not in (1, n) and n != 1:
                raise ValueError(f"letter {c!r} labels axes of sizes {size[c]} and {n}")
            size[c] = max(size.get(c, 1), n)
    return size


def _arrange(imp, x: Tensor, term: str, order: str, size: dict[str, int]) -> Tensor:
    """x with its axes in `order` (letters it lacks become size-1 axes), broadcast to `size`
    along the letters it has."""
    own = dict(zip(term, x.shape, strict=True))
    x = _transpose(x, [term.index(c) for c in order if c in term])
    x = _reshape(x, [own.get(c, 1) for c in order])
    full = tuple(size[c] if c in term else 1 for c in order)
    return x if x.shape == full else imp.b.broadcast_to(x, full)


def _contract(imp, a: Tensor, ta: str, b: Tensor, tb: str, keep: set[str]
              ) -> tuple[Tensor, str]:
    """Two operands into one term holding the letters in `keep`: a batched matmul over the
    shared letters that vanish, or a broadcast product where none does."""
    a, ta = _sum_out(a, ta, keep | set(tb))
    b, tb = _sum_out(b, tb, keep | set(ta))
    size = _sizes([(a, ta), (b, tb)])
    batch = [c for c in ta if c in tb and c in keep]
    contract = [c for c in ta if c in tb and c not in keep]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    out = "".join(batch + left + right)
    if not contract:
        return _arrange(imp, a, ta, out, size) * _arrange(imp, b, tb, out, size), out
    nb, nl, nk, nr = (math.prod(size[c] for c in g) for g in (batch, left, contract, right))
    am = _reshape(_arrange(imp, a, ta, "".join(batch + left + contract), size),
                  ([nb] if batch else []) + [nl, nk])
    bm = _reshape(_arrange(imp, b, tb, "".join(batch + contract + right), size),
                  ([nb] if batch else []) + [nk, nr])
    return _reshape(am @ bm, [size[c] for c in out]), out


def einsum(imp, node, ins, attrs):
    """Einsum of any number of operands, contracted left to right (each pair as one batched
    matmul), with ellipses, implicit output, broadcasting of size-1 axes, diagonals (a letter
    repeated in a term) and letters summed away."""
    xs = [imp.t(v) for v in ins]
    terms, out = einsum_terms(imp, node, text(attrs, "equation", ""), [x.ndim for x in xs])
    pairs = [_diagonal(imp, x, t) for x, t in zip(xs, terms, strict=True)]
    _sizes(pairs)  # letters of one size across all operands, checked before any node
    acc, term = pairs[0]
    for k in range(1, len(pairs)):
        keep = set(out).union(*(t for _, t in pairs[k + 1:]))
        acc, term = _contract(imp, acc, term, *pairs[k], keep)
    acc, term = _sum_out(acc, term, set(out))
    return _transpose(acc, [term.index(c) for c in out])


# -- scans, one-hot, normalizations ----------------------------------------------------------------


def _axis_of(imp, node, v, rank: int) -> int:
    axis = imp.ints(node, v, "axis")[0]
    if not -rank <= axis < rank:
        raise imp.fail(node, f"axis {axis} of a rank-{rank} input")
    return axis % rank


def cumsum(imp, node, ins, attrs):
    """CumSum as a product with a triangular 0/1 matrix along the axis (one GEMM; exclusive
    and reverse choose the triangle). Quadratic in the axis length, which scans in models
    (positions, masks) keep short."""
    x = imp.t(ins[0])
    axis = _axis_of(imp, node, ins[1], x.ndim)
    n = x.shape[axis]
    i, j = np.indices((n, n))
    exclusive, reverse = bool(attrs.get("exclusive", 0)), bool(attrs.get("reverse", 0))
    tri = (i > j if exclusive else i >= j) if reverse else (i < j if exclusive else i <= j)
    perm = [d for d in range(x.ndim) if d != axis] + [axis]
    moved = _transpose(x, perm)
    flat = _reshape(moved, (math.prod(moved.shape[:-1]), n))
    y = _reshape(flat @ imp.b.const(tri.astype(np.float32), dtype=x.dtype), moved.shape)
    return _transpose(y, np.argsort(perm))


def cumsum_const(imp, node, ins, attrs):
    x = ins[0]
    axis = _axis_of(imp, node, ins[1], x.ndim)
    if attrs.get("reverse", 0):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if attrs.get("exclusive", 0):
        y = y - x
    return np.flip(y, axis) if attrs.get("reverse", 0) else y


def one_hot(imp, node, ins, attrs):
    """OneHot(indices, depth, values): off + (on - off) * one_hot; negative indices count from
    depth (ONNX), others outside [-depth, depth) give all `off`."""
    idx, depth_v, values = ins
    nums = imp.numbers(depth_v)  # an int initializer or a float Constant
    depth = int(nums.reshape(-1)[0]) if nums is not None else imp.ints(node, depth_v, "depth")[0]
    vals = imp.numbers(values)
    if vals is None or vals.size != 2:
        raise imp.fail(node, "values must be a constant [off, on] pair")
    off, on = (float(v) for v in vals.reshape(-1))
    dtype = "f32" if vals.dtype.kind == "f" else "i64"
    if isinstance(idx, np.ndarray):
        idx = imp.b.const(idx.astype(np.int64), "i64")
    elif idx.dtype not in ("i64", "i32"):
        idx = idx.astype("i64")
    idx = imp.b.op("select", idx < 0, idx + depth, idx)
    axis = int(attrs.get("axis", -1))
    if not -idx.ndim - 1 <= axis <= idx.ndim:
        raise imp.fail(node, f"axis {axis} for rank-{idx.ndim} indices")
    y = imp.b.one_hot(idx, depth=depth, dtype=dtype, axis=axis % (idx.ndim + 1))
    if (off, on) != (0.0, 1.0):
        y = y * imp.b.const(on - off, dtype=dtype) + imp.b.const(off, dtype=dtype)
    return y


def hardmax(imp, node, ins, attrs):
    """1 at the first maximum along the axis (opset 13); before opset 13 along the trailing
    axes from `axis` taken as one, as ONNX defined it then."""
    x = imp.t(ins[0])
    legacy = _opset(imp) < 13
    axis = int(attrs.get("axis", 1 if legacy else -1)) % x.ndim
    shape = x.shape
    if legacy:
        x = _reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:])))
        axis = 1
    y = imp.b.one_hot(imp.b.argmax(x, axis=axis), depth=x.shape[axis], dtype=x.dtype,
                      axis=axis)
    return _reshape(y, shape)


def lp_normalization(imp, node, ins, attrs):
    x = imp.t(ins[0])
    axis = int(attrs.get("axis", -1)) % x.ndim
    p = int(attrs.get("p", 2))
    if p not in (1, 2):
        raise imp.fail(node, f"p={p} (1 or 2)")
    norm = abs(x).sum((axis,), keepdims=True) if p == 1 else (
        (x * x).sum((axis,), keepdims=True).sqrt())
    return x / norm


def global_max_pool(imp, node, ins, attrs):
    x = imp.t(ins[0])
    return x.max(tuple(range(2, x.ndim)), keepdims=True)


# -- layout -------------------------------------------------------------------------------------


def depth_to_space(imp, node, ins, attrs):
    """[N, C, H, W] -> [N, C/b², H·b, W·b]: DCR (the default) takes the block offsets from the
    outer channel digits, CRD from the inner ones."""
    x = imp.t(ins[0])
    bs = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if c % (bs * bs):
        raise imp.fail(node, f"{c} channels do not split into blocks of {bs}x{bs}")
    if text(attrs, "mode", "DCR") == "DCR":
        y = x.reshape(n, bs, bs, c // bs ** 2, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // bs ** 2, bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // bs ** 2, h * bs, w * bs)


def space_to_depth(imp, node, ins, attrs):
    x = imp.t(ins[0])
    bs = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if h % bs or w % bs:
        raise imp.fail(node, f"spatial size {h}x{w} does not split into blocks of {bs}")
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * bs * bs, h // bs, w // bs)


# -- constants ----------------------------------------------------------------------------------


def constant_of_shape(imp, node, ins, attrs):
    shape = imp.ints(node, ins[0], "shape") if ins else []
    value = imp.nh.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    return np.full(shape, value.reshape(-1)[0], dtype=value.dtype)


# -- Pad ---------------------------------------------------------------------------------------
_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad(imp, node, ins, attrs):
    """Pad in every mode: `constant` is graphc's `pad` (negative pads crop); `reflect`, `edge`
    and `wrap` crop first, then gather each padded axis at constant positions (numpy's pad of
    the positions 0..n-1 in that mode), so the gradient is take's scatter-add."""
    x = imp.t(ins[0])
    mode = text(attrs, "mode", "constant")
    if mode not in _PAD_MODES:
        raise imp.fail(node, f"mode {mode!r} (one of {', '.join(_PAD_MODES)})")
    pads = imp.ints(node, ins[1], "pads") if len(ins) > 1 else list(attrs["pads"])
    rank = x.ndim
    axes = list(range(rank))
    if len(ins) > 3 and ins[3] is not None:
        axes = [a + rank if a < 0 else a for a in imp.ints(node, ins[3], "axes")]
        if any(not 0 <= a < rank for a in axes) or len(set(axes)) != len(axes):
            raise imp.fail(node, f"axes {axes} for an input of rank {rank}")
    if len(pads) != 2 * len(axes):
        raise imp.fail(node, f"{len(pads)} pads for {len(axes)} axes (two per axis)")
    low, high = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        low[a], high[a] = int(pads[i]), int(pads[i + len(axes)])
    if any(n + lo + hi < 0 for n, lo, hi in zip(x.shape, low, high, strict=True)):
        raise imp.fail(node, f"pads {pads} crop more than the input {x.shape} holds")
    value = 0.0
    if mode == "constant" and len(ins) > 2 and ins[2] is not None:
        # an initializer (imported as a parameter), or computed from constants (a Constant)
        arr = imp.inits.get(node.input[2])
        arr = imp.numbers(ins[2]) if arr is None else arr
        if arr is None:
            raise imp.fail(node, "constant_value must be a constant (it depends on an input)")
        value = float(arr.reshape(-1)[0]) if arr.size else 0.0
    crop = [min(p, 0) for p in low], [min(p, 0) for p in high]
    if mode == "constant" or any(crop[0]) or any(crop[1]):
        lo, hi = (low, high) if mode == "constant" else crop
        if any(lo) or any(hi):
            x = imp.b.op("pad", x, low=tuple(lo), high=tuple(hi), value=value)
        if mode == "constant":
            return x
    for a in range(rank):
        before, after = max(low[a], 0), max(high[a], 0)
        if not before and not after:
            continue
        if x.shape[a] == 0:
            raise imp.fail(node, f"{mode} padding of axis {a}, which is empty")
        at = np.pad(np.arange(x.shape[a]), (before, after), mode=mode)
        x = imp.b.op("take", x, imp.b.const(at.astype(np.int64), "i64"), axis=a)
    return x


def range_(imp, node, ins, attrs):
    start, limit, delta = (imp.numbers(v) for v in ins)
    if start is None or limit is None or delta is None:
        raise imp.fail(node, "start, limit and delta must be constants")
    if float(delta.reshape(-1)[0]) == 0:
        raise imp.fail(node, "delta is 0")
    return np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


HANDLERS = {
    "Einsum": einsum, "CumSum": cumsum, "OneHot": one_hot, "Hardmax": hardmax,
    "LpNormalization": lp_normalization, "GlobalMaxPool": global_max_pool,
    "DepthToSpace": depth_to_space, "SpaceToDepth": space_to_depth,
    "ConstantOfShape": constant_of_shape, "Range": range_, "Pad": pad,
}
# Handlers for nodes whose inputs are all constants (evaluated with numpy at import)
CONST_HANDLERS = {"ConstantOfShape": constant_of_shape, "Range": range_, "CumSum": cumsum_const}

__all__ = ["CONST_HANDLERS", "HANDLERS", "einsum_terms"]
