"""Window primitives: `reduce_window` (max/sum pooling over every axis of x, XLA ReduceWindow)
and `select_scatter` (XLA SelectAndScatter: the max-pool gradient scatter).

Geometry per axis: the input padded by (lo, hi) (negative crops) has size P; window w, stride s;
output size (P - w) // s + 1, window o covering padded positions o*s .. o*s + w - 1.

Gradients are built from movement and elementwise ops only:
  - sum: each window offset contributes the cotangent, interior-padded by s - 1 and shifted by
    the offset; windows are separable, so this runs axis by axis (sum(window) pads, not prod).
  - max: `select_scatter(x, ct)` routes each cotangent to its window's first maximum.
  - select_scatter w.r.t. src: for every window offset (row-major), a strided slice of the
    padded cotangent times a 0/1 mask "this offset holds the window's first maximum".
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import AttributeSchemaError, DTypeError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import FLOAT_DTYPES, TensorType
from .linalg import accumulate_dtype, pad_or_crop

# -- attributes and geometry -------------------------------------------------------------------


def _ints(value, n: int, name: str, where: str) -> tuple[int, ...]:
    if (not isinstance(value, tuple) or len(value) != n
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise AttributeSchemaError(f"{name}={value!r} must be {n} ints, one per axis of {where}")
    return value


def normalize_window(types, attrs):
    """Fill default strides (ones) and padding (zeros); flatten (lo, hi) pairs."""
    x = types[0]
    n = x.rank
    where = f"x {x.shape}"
    out = dict(attrs)
    window = _ints(attrs["window"], n, "window", where)
    strides = _ints(attrs["strides"] if attrs["strides"] is not None else (1,) * n, n,
                    "strides", where)
    padding = attrs["padding"]
    if padding is None:
        padding = (0,) * (2 * n)
    elif (isinstance(padding, tuple) and len(padding) == n
          and all(isinstance(p, tuple) and len(p) == 2 for p in padding)):
        padding = tuple(v for p in padding for v in p)
    padding = _ints(padding, 2 * n, "padding", f"{where} as (lo, hi) pairs")
    if any(v < 1 for v in window + strides):
        raise AttributeSchemaError(f"window {window} and strides {strides} must be >= 1")
    out.update(window=window, strides=strides, padding=padding)
    return out


def _pairs(flat: Sequence[int]) -> list[tuple[int, int]]:
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]


def window_out_shape(shape: Sequence[int], attrs) -> tuple[int, ...]:
    """reduce_window's output shape; ShapeError for a non-positive output size."""
    out = []
    for i, (d, w, s, (lo, hi)) in enumerate(zip(shape, attrs["window"], attrs["strides"],
                                                _pairs(attrs["padding"]), strict=True)):
        span = d + lo + hi - w
        if span < 0 and d == 0:  # an empty axis has no windows (a batch of no images)
            out.append(0)
            continue
        if span < 0:
            raise ShapeError(f"window {attrs['window']} does not fit x {tuple(shape)} padded by "
                             f"{attrs['padding']} (axis {i})")
        out.append(span // s + 1)
    return tuple(out)


def _windows(xp: np.ndarray, attrs) -> np.ndarray:
    """Strided window view of a padded array: [*out, *window]."""
    win = sliding_window_view(xp, attrs["window"])
    return win[tuple(slice(None, None, s) for s in attrs["strides"])]


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


# -- reduce_window -------------------------------------------------------------------------------


def infer_reduce_window(types, attrs):
    (x,) = types
    if x.dtype == "bool":
        raise DTypeError("reduce_window of a bool operand; cast it first")
    return TensorType(window_out_shape(x.shape, attrs), x.dtype)


def ref_reduce_window(inputs, attrs):
    (x,) = inputs
    out_shape = window_out_shape(x.shape, attrs)
    if 0 in out_shape:
        return np.zeros(out_shape, x.dtype)
    axes = tuple(range(x.ndim))
    win_axes = tuple(range(x.ndim, 2 * x.ndim))
    if attrs["kind"] == "max":
        xp = pad_or_crop(x, _pairs(attrs["padding"]), axes, _lowest(x.dtype))
        return _windows(xp, attrs).max(axis=win_axes)
    xp = pad_or_crop(x.astype(accumulate_dtype(x.dtype)), _pairs(attrs["padding"]), axes)
    return _windows(xp, attrs).sum(axis=win_axes).astype(x.dtype)


def _sum_window_grad(b, ct, x_shape, attrs):
    """Adjoint of a sum window: per axis, add the interior-padded cotangent at every offset."""
    g = ct
    for ax, (w, s, (lo, hi)) in enumerate(zip(attrs["window"], attrs["strides"],
                                              _pairs(attrs["padding"]), strict=True)):
        n_out = ct.shape[ax]
        padded = x_shape[ax] + lo + hi
        if (w, s, lo, hi) == (1, 1, 0, 0):
            continue
        total = None
        for off in range(w):
            low = [0] * ct.ndim
            high = [0] * ct.ndim
            interior = [0] * ct.ndim
            # window o, offset off lands on padded position o*s + off, i.e. x position - lo
            low[ax] = off - lo
            high[ax] = padded - 1 - (n_out - 1) * s - off - hi
            interior[ax] = s - 1
            term = b.op("pad", g, low=tuple(low), high=tuple(high), interior=tuple(interior))
            total = term if total is None else total + term
        g = total
    return g


def vjp_reduce_window(b, ins, outs, cts, attrs):
    (x,) = ins
    ct = cts[0]
    if ct is None or x.dtype not in FLOAT_DTYPES:
        return (None,)
    if x.type.size == 0:
        return (b.zeros_like(x),)
    if attrs["kind"] == "sum":
        return (_sum_window_grad(b, ct, x.shape, attrs),)
    return (b.op("select_scatter", x, ct, window=attrs["window"], strides=attrs["strides"],
                 padding=attrs["padding"]),)


# -- select_scatter ------------------------------------------------------------------------------


def infer_select_scatter(types, attrs):
    x, src = types
    if x.dtype == "bool":
        raise DTypeError("select_scatter on a bool operand; cast it first")
    if src.dtype != x.dtype:
        raise DTypeError(f"select_scatter operand dtypes differ: x {x.dtype}, src {src.dtype}")
    want = window_out_shape(x.shape, attrs)
    if src.shape != want:
        raise ShapeError(f"src {src.shape} must have the window output shape {want} of x "
                         f"{x.shape} (window {attrs['window']}, strides {attrs['strides']}, "
                         f"padding {attrs['padding']})")
    return x


def ref_select_scatter(inputs, attrs):
    """Add each src element at its window's first (row-major) maximum; padding never wins."""
    x, src = inputs
    if x.size == 0 or src.size == 0:
        return np.zeros(x.shape, x.dtype)
    if x.ndim == 0:  # one window of one element: as a vector of one
        one = {"window": (1,), "strides": (1,), "padding": (0, 0)}
        return ref_select_scatter((x.reshape(1), src.reshape(1)), one).reshape(())
    n = x.ndim
    axes = tuple(range(n))
    pairs = _pairs(attrs["padding"])
    valid = _windows(pad_or_crop(np.ones(x.shape, bool), pairs, axes, False), attrs)
    vals = _windows(pad_or_crop(x, pairs, axes, 0), attrs)
    out_shape = vals.shape[:n]
    size = int(np.prod(attrs["window"], dtype=np.int64))
    vals = vals.reshape(out_shape + (size,))
    valid = valid.reshape(out_shape + (size,))
    best = np.where(valid, vals, _lowest(x.dtype)).max(axis=-1, keepdims=True)
    hit = valid & (vals == best)
    first = hit.argmax(axis=-1)  # first True in row-major window order
    found = hit.any(axis=-1)
    offsets = np.unravel_index(first, attrs["window"])
    grid = np.indices(out_shape)
    coords = tuple(grid[a] * attrs["strides"][a] + offsets[a] - pairs[a][0] for a in axes)
    acc = accumulate_dtype(src.dtype)
    out = np.zeros(x.shape, acc)
    np.add.at(out, tuple(c[found] for c in coords), src[found].astype(acc))
    return out.astype(x.dtype)


def _first_max_masks(b, x, attrs):
    """One 0/1 tensor (window output shape) per window offset: 'this offset is the first max'."""
    pairs = _pairs(attrs["padding"])
    low = tuple(p[0] for p in pairs)
    high = tuple(p[1] for p in pairs)
    xp = b.op("pad", x, low=low, high=high, value=-np.inf)
    best = b.op("reduce_window", x, kind="max", window=attrs["window"], strides=attrs["strides"],
                padding=attrs["padding"])
    has_pad = any(v > 0 for v in attrs["padding"])
    validp = b.op("pad", b.ones_like(x), low=low, high=high) if has_pad else None
    one, zero = b.const(1, dtype=x.dtype), b.const(0, dtype=x.dtype)
    taken = None
    masks = []
    for off in itertools.product(*(range(w) for w in attrs["window"])):
        xs = _offset_slice(b, xp, off, best.shape, attrs["strides"])
        is_max = b.op("select", xs.eq(best), one, zero)
        if validp is not None:  # an element equal to -inf must not lose to padding before it
            is_max = is_max * _offset_slice(b, validp, off, best.shape, attrs["strides"])
        sel = is_max if taken is None else is_max * (1.0 - taken)
        taken = is_max if taken is None else b.op("maximum", taken, is_max)
        masks.append((off, sel))
    return masks


def _offset_slice(b, t, off, out_shape, strides):
    """Elements o*stride + off of padded tensor t, for every window output position o."""
    start = tuple(off)
    stop = tuple(o + (m - 1) * s + 1 for o, m, s in zip(off, out_shape, strides, strict=True))
    return b.op("slice", t, start=start, stop=stop, step=tuple(strides))


def vjp_select_scatter(b, ins, outs, cts, attrs):
    x, src = ins
    ct = cts[0]
    if ct is None or x.dtype not in FLOAT_DTYPES:
        return None, None
    if x.type.size == 0 or src.type.size == 0:
        return None, b.zeros_like(src)
    pairs = _pairs(attrs["padding"])
    ctp = b.op("pad", ct, low=tuple(p[0] for p in pairs), high=tuple(p[1] for p in pairs))
    total = None
    for off, mask in _first_max_masks(b, x, attrs):
        term = _offset_slice(b, ctp, off, src.shape, attrs["strides"]) * mask
        total = term if total is None else total + term
    return None, total  # the scatter is piecewise constant in x


WINDOW_ATTRS = {"window": Attr("ints"), "strides": Attr("ints", None),
                "padding": Attr("any", None)}


def register_ops() -> None:
    register(
        OpDef("reduce_window", "window", 1, infer_reduce_window, ref_reduce_window,
              vjp=vjp_reduce_window, normalize=normalize_window,
              attrs={"kind": Attr("str", choices=("max", "sum")), **WINDOW_ATTRS},
              doc="Max or sum over sliding windows on every axis of x; padding (flattened "
                  "(lo, hi) pairs per axis) counts as -inf for max and 0 for sum."),
        OpDef("select_scatter", "window", 2, infer_select_scatter, ref_select_scatter,
              vjp=vjp_select_scatter, normalize=normalize_window, attrs=dict(WINDOW_ATTRS),
              doc="Output x.shape: each src element added at the first maximum of x in its "
                  "window (row-major), the max-pool gradient."),
    )
