"""Source ops: graph inputs, parameters and constants."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..registry import Attr, OpDef, register
from ..types import DTYPES, TensorType, round_to_dtype


def _no_infer(types, attrs):
    raise ShapeError("input/param nodes live in the graph header, not in its body")


def infer_constant(types, attrs):
    shape = attrs["shape"]
    value = attrs["value"]
    if isinstance(value, tuple) and len(value) != int(np.prod(shape, dtype=np.int64)):
        raise ShapeError(f"constant has {len(value)} elements but shape {shape}")
    return TensorType(shape, attrs["dtype"])


def ref_constant(inputs, attrs):
    value = attrs["value"]
    dt = attrs["dtype"]
    if isinstance(value, tuple):
        arr = np.asarray(value, dtype=DTYPES[dt]).reshape(attrs["shape"])
    else:
        arr = np.full(attrs["shape"], value, dtype=DTYPES[dt])
    return round_to_dtype(arr, dt)


def register_ops() -> None:
    register(
        OpDef("input", "source", 0, _no_infer, _no_infer,
              attrs={"name": Attr("str")}, differentiable=False,
              doc="A graph input; its value comes from the caller."),
        OpDef("param", "source", 0, _no_infer, _no_infer,
              attrs={"name": Attr("str"), "frozen": Attr("bool", False)}, differentiable=False,
              doc="A trainable parameter; its value lives in the graph's side table."),
        OpDef("constant", "source", 0, infer_constant, ref_constant,
              attrs={"value": Attr("any"), "shape": Attr("ints", ()),
                     "dtype": Attr("dtype", "f32")},
              differentiable=False,
              doc="A scalar splatted to `shape`, or a flat tuple of all elements."),
    )
