"""Shape arithmetic shared by the op families: broadcasting, axis normalization, and the
`unbroadcast` step every VJP of a broadcasting op needs (sum the cotangent back to the operand's
shape)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DTypeError, ShapeError
from ..types import TensorType


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy broadcasting of several shapes, with a ShapeError naming them on mismatch."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(f"shapes {' and '.join(str(tuple(s)) for s in shapes)} "
                             f"do not broadcast (axis {i - rank})")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def same_dtype(types: Sequence[TensorType]) -> str:
    dts = {t.dtype for t in types}
    if len(dts) != 1:
        raise DTypeError(f"operand dtypes differ: {', '.join(t.dtype for t in types)}")
    return dts.pop()


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def norm_axes(axes: Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """Sorted, non-negative, unique axes; None means all axes."""
    if axes is None:
        return tuple(range(rank))
    out = sorted({norm_axis(a, rank) for a in axes})
    if len(out) != len(axes):
        raise ShapeError(f"repeated axis in {tuple(axes)}")
    # `norm_axis` lets a scalar name its axis 0 (as torch does); there is nothing to reduce
    return tuple(out) if rank else ()


def unbroadcast(b, ct, shape: Sequence[int]):
    """Sum cotangent `ct` (a Tensor) over the axes broadcasting added, back to `shape`."""
    shape = tuple(shape)
    if ct.shape == shape:
        return ct
    lead = len(ct.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and ct.shape[lead + i] != 1)
    summed = b.op("reduce_sum", ct, axes=axes, keepdims=False) if axes else ct
    if summed.shape != shape:
        summed = b.op("reshape", summed, shape=shape)
    return summed
