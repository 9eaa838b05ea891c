"""Reduction primitives: `reduce_sum` and `reduce_max` over a set of axes, and `argmax` along one
axis. `normalize` stores the axes in canonical form (sorted, non-negative, None -> every axis),
so `x.sum()` and `x.sum((0, 1))` of a matrix are the same node and CSE sees it.

Gradients: a sum sends its cotangent back to every element (reshape to the keepdims shape, then
broadcast); a max sends it to the maximal elements, split equally among ties like `torch.amax`.
`argmax` yields indices and has no gradient.

The mean is a composite (`reduce_sum / count`) and lives in `composite_nn.py`.
"""

from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import FLOAT_DTYPES, TensorType
from .shapes import norm_axes, norm_axis

# -- shapes ----------------------------------------------------------------------------------------


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool
                  ) -> tuple[int, ...]:
    """The shape left after reducing `axes` (already canonical) of `shape`."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def normalize_reduce(types, attrs):
    (t,) = types
    return {**attrs, "axes": norm_axes(attrs["axes"], t.rank)}


def infer_reduce_sum(types, attrs):
    (t,) = types
    if t.dtype == "bool":
        raise DTypeError(f"cannot sum bool tensor {t}; cast it to a number type first")
    return TensorType(reduced_shape(t.shape, attrs["axes"], attrs["keepdims"]), t.dtype)


def infer_reduce_max(types, attrs):
    (t,) = types
    empty = [a for a in attrs["axes"] if t.shape[a] == 0]
    if empty:
        raise ShapeError(f"max over empty axis {empty[0]} of {t} has no value")
    return TensorType(reduced_shape(t.shape, attrs["axes"], attrs["keepdims"]), t.dtype)


def normalize_argmax(types, attrs):
    (t,) = types
    if t.rank == 0:
        raise ShapeError(f"argmax needs an operand of rank >= 1, got {t}")
    return {**attrs, "axis": norm_axis(attrs["axis"], t.rank)}


def infer_argmax(types, attrs):
    (t,) = types
    axis = attrs["axis"]
    if t.shape[axis] == 0:
        raise ShapeError(f"argmax over empty axis {axis} of {t} has no value")
    return TensorType(reduced_shape(t.shape, (axis,), attrs["keepdims"]), "i64")


# -- references ------------------------------------------------------------------------------------


def ref_reduce_sum(inputs, attrs):
    (x,) = inputs
    # f16 accumulates in f32 (as torch does); integers wrap around to their own width.
    acc = np.float32 if x.dtype == np.float16 else None
    out = np.sum(x, axis=attrs["axes"], keepdims=attrs["keepdims"], dtype=acc)
    return np.asarray(out).astype(x.dtype, copy=False)


def ref_reduce_max(inputs, attrs):
    (x,) = inputs
    return np.asarray(np.max(x, axis=attrs["axes"], keepdims=attrs["keepdims"]))


def ref_argmax(inputs, attrs):
    (x,) = inputs
    # numpy, like torch, returns the first maximal index (and the first NaN, if any).
    return np.asarray(np.argmax(x, axis=attrs["axis"], keepdims=attrs["keepdims"]), np.int64)


# -- VJP rules -------------------------------------------------------------------------------------


def _keepdims_ct(b, ct, x_shape, attrs):
    """The cotangent of a reduction reshaped so that it broadcasts against the operand."""
    keep = reduced_shape(x_shape, attrs["axes"], True)
    return ct if ct.shape == keep else b.reshape(ct, keep)


def vjp_reduce_sum(b, ins, outs, cts, attrs):
    (x,), (ct,) = ins, cts
    if ct is None or x.dtype not in FLOAT_DTYPES:
        return (None,)
    return (b.broadcast_to(_keepdims_ct(b, ct, x.shape, attrs), x.shape),)


def vjp_reduce_max(b, ins, outs, cts, attrs):
    (x,), (out,), (ct,) = ins, outs, cts
    if ct is None or x.dtype not in FLOAT_DTYPES:
        return (None,)
    if not attrs["axes"]:
        return (ct,)  # a max over no axes is the identity
    # Every maximal element gets ct / (number of maximal elements in its reduction group).
    peak = _keepdims_ct(b, out, x.shape, attrs)
    mask = b.cast(x.eq(peak), dtype=x.dtype)
    # At least one element equals the maximum, unless a backend recomputed x a rounding apart
    # from the x its maximum was taken of (fused code recomputes cheap operands): then no element
    # is selected, and the floor of 1 keeps the row's gradient at 0 instead of ct / 0 = NaN
    # spreading through everything (softmax's gradient runs through here and is ~0 anyway).
    count = b.maximum(b.reduce_sum(mask, axes=attrs["axes"], keepdims=True),
                      b.const(1, dtype=x.dtype))
    return (mask * (_keepdims_ct(b, ct, x.shape, attrs) / count),)


def register_ops() -> None:
    axes_attrs = {"axes": Attr("axes", None), "keepdims": Attr("bool", False)}
    register(
        OpDef("reduce_sum", "reduction", 1, infer_reduce_sum, ref_reduce_sum, attrs=axes_attrs,
              vjp=vjp_reduce_sum, normalize=normalize_reduce,
              doc="Sum over `axes` (None: all axes; (): none); keepdims keeps them as size 1."),
        OpDef("reduce_max", "reduction", 1, infer_reduce_max, ref_reduce_max, attrs=axes_attrs,
              vjp=vjp_reduce_max, normalize=normalize_reduce,
              doc="Maximum over `axes`; its gradient splits equally among tied maxima."),
        OpDef("argmax", "reduction", 1, infer_argmax, ref_argmax,
              attrs={"axis": Attr("int"), "keepdims": Attr("bool", False)},
              normalize=normalize_argmax, differentiable=False,
              doc="Index (i64) of the first maximal element along `axis`."),
    )
