"""Indexing primitives: `take` (gather along one axis), `scatter_add` (its transpose) and `iota`.

Index semantics, shared by `take` and `scatter_add` and by every backend that lowers them:

- `idx` is an i32 or i64 tensor of any shape (a scalar included). The op works along one axis
  of `x` of size `n`; the output (take) or update (scatter_add) shape is
  `x.shape[:axis] + idx.shape + x.shape[axis+1:]`.
- Valid indices lie in `[-n, n)`; a negative index counts from the end, as in numpy. Any other
  index is an error: the reference raises a GraphError naming the op and the offending index
  (a value check at run time, since indices are data).
- `scatter_add` accumulates duplicate indices (`np.add.at`), so it is the exact transpose of
  `take`: VJP(take) w.r.t. x is scatter_add into zeros, VJP(scatter_add) w.r.t. upd is take.

The `axis` attribute is stored normalized (non-negative), so backends never see `-1`.
"""

from __future__ import annotations

import numpy as np

from ..errors import DTypeError, GraphError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import DTYPES, INT_DTYPES, TensorType
from .shapes import norm_axis

# -- shared index checks -------------------------------------------------------------------------


def _gather_axis(x: TensorType, idx: TensorType, axis: int, what: str) -> int:
    """Check the operand/index types of take/scatter_add; return the normalized axis."""
    if idx.dtype not in INT_DTYPES:
        raise DTypeError(f"{what} indices must be i32 or i64, got {idx}")
    if x.rank == 0:
        raise ShapeError(f"{what} needs an operand of rank >= 1, got scalar {x}")
    return norm_axis(axis, x.rank)


def _gathered_shape(x: TensorType, idx: TensorType, axis: int) -> tuple[int, ...]:
    return x.shape[:axis] + idx.shape + x.shape[axis + 1:]


def check_index_range(op: str, idx: np.ndarray, size: int, axis: int,
                      shape: tuple[int, ...]) -> None:
    """Raise a GraphError naming `op` and the first index outside [-size, size)."""
    bad = (idx < -size) | (idx >= size)
    if np.any(bad):
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        value = int(idx[pos]) if idx.ndim else int(idx)
        raise GraphError(f"{op}: index {value} (at index position {pos}) is out of range "
                         f"[{-size}, {size}) for axis {axis} of operand shape {shape}")


def _axis_slices(axis: int, idx: np.ndarray) -> tuple:
    # One advanced index among full slices keeps its place: x[:, idx] has shape
    # x.shape[:axis] + idx.shape + x.shape[axis+1:], the gathered shape.
    return (slice(None),) * axis + (idx,)


# -- take ------------------------------------------------------------------------------------------


def normalize_take(types, attrs):
    x, idx = types[0], types[1]
    return {**attrs, "axis": _gather_axis(x, idx, attrs["axis"], "take")}


def infer_take(types, attrs):
    x, idx = types
    axis = _gather_axis(x, idx, attrs["axis"], "take")
    return TensorType(_gathered_shape(x, idx, axis), x.dtype)


def ref_take(inputs, attrs):
    x, idx = inputs
    axis = attrs["axis"]
    check_index_range("take", idx, x.shape[axis], axis, x.shape)
    return np.take(x, idx.astype(np.int64), axis=axis)


def vjp_take(b, ins, outs, cts, attrs):
    x, idx = ins
    ct = cts[0]
    if ct is None or not x.type.is_float:
        return None, None
    return b.scatter_add(b.zeros_like(x), idx, ct, axis=attrs["axis"]), None


# -- scatter_add -----------------------------------------------------------------------------------


def _scatter_types(types, attrs) -> int:
    x, idx, upd = types
    axis = _gather_axis(x, idx, attrs["axis"], "scatter_add")
    if x.dtype == "bool":
        raise DTypeError(f"scatter_add adds; operand must be numeric, got {x}")
    if upd.dtype != x.dtype:
        raise DTypeError(f"scatter_add updates {upd} must have the operand's dtype {x.dtype}")
    want = _gathered_shape(x, idx, axis)
    if upd.shape != want:
        raise ShapeError(f"scatter_add updates have shape {upd.shape}; operand {x} with "
                         f"indices {idx} along axis {axis} needs {want}")
    return axis


def normalize_scatter_add(types, attrs):
    return {**attrs, "axis": _scatter_types(types, attrs)}


def infer_scatter_add(types, attrs):
    _scatter_types(types, attrs)
    return types[0]


def ref_scatter_add(inputs, attrs):
    x, idx, upd = inputs
    axis = attrs["axis"]
    check_index_range("scatter_add", idx, x.shape[axis], axis, x.shape)
    out = np.array(x, copy=True)
    np.add.at(out, _axis_slices(axis, idx.astype(np.int64)), upd)
    return out


def vjp_scatter_add(b, ins, outs, cts, attrs):
    x, idx, upd = ins
    ct = cts[0]
    if ct is None or not x.type.is_float:
        return None, None, None
    return ct, None, b.take(ct, idx, axis=attrs["axis"])


# -- iota ------------------------------------------------------------------------------------------


def _iota_axis(attrs) -> int:
    if attrs["dtype"] == "bool":
        raise DTypeError("iota counts; dtype must be numeric, got bool")
    return norm_axis(attrs["axis"], len(attrs["shape"]))


def normalize_iota(types, attrs):
    return {**attrs, "axis": _iota_axis(attrs)}


def infer_iota(types, attrs):
    _iota_axis(attrs)
    return TensorType(attrs["shape"], attrs["dtype"])


def ref_iota(inputs, attrs):
    shape, axis = attrs["shape"], attrs["axis"]
    if not shape:
        return np.zeros((), DTYPES[attrs["dtype"]])
    line = np.arange(shape[axis], dtype=np.int64)
    line = line.reshape((1,) * axis + (shape[axis],) + (1,) * (len(shape) - axis - 1))
    return np.ascontiguousarray(np.broadcast_to(line, shape)).astype(DTYPES[attrs["dtype"]])


def register_ops() -> None:
    register(
        OpDef("take", "indexing", 2, infer_take, ref_take, attrs={"axis": Attr("int", 0)},
              vjp=vjp_take, normalize=normalize_take,
              doc="take(x, idx){axis}: numpy take along one axis; indices in [-n, n)."),
        OpDef("scatter_add", "indexing", 3, infer_scatter_add, ref_scatter_add,
              attrs={"axis": Attr("int", 0)}, vjp=vjp_scatter_add,
              normalize=normalize_scatter_add,
              doc="scatter_add(x, idx, upd){axis}: x with upd added at idx along axis; "
                  "duplicate indices accumulate (np.add.at)."),
        OpDef("iota", "indexing", 0, infer_iota, ref_iota,
              attrs={"shape": Attr("ints"), "axis": Attr("int"), "dtype": Attr("dtype", "i64")},
              normalize=normalize_iota, differentiable=False,
              doc="iota(){shape, axis, dtype}: 0, 1, 2, ... along axis, constant elsewhere."),
    )
