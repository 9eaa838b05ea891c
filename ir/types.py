"""Tensor types: a static shape and a dtype."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import DTypeError, ShapeError

# dtype name in the IR text -> numpy storage dtype. bfloat16 has no numpy dtype: the reference
# stores it as float32 and rounds every result to bfloat16 precision (see `round_to_dtype`).
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(np.float32),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
MAX_ELEMENTS = 1 << 56  # byte offsets of any dtype stay far inside a signed 64-bit integer
FLOAT_DTYPES = frozenset({"f32", "f64", "f16", "bf16"})
INT_DTYPES = frozenset({"i32", "i64"})

_NUMPY_TO_NAME = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
                  np.dtype(np.float16): "f16", np.dtype(np.int32): "i32",
                  np.dtype(np.int64): "i64", np.dtype(np.bool_): "bool"}


def check_dtype(name: str) -> str:
    if name not in DTYPES:
        raise DTypeError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return name


def dtype_of_array(a: np.ndarray) -> str:
    """IR dtype name of a numpy array."""
    try:
        return _NUMPY_TO_NAME[np.dtype(a.dtype)]
    except KeyError:
        raise DTypeError(f"numpy dtype {a.dtype} has no graphc equivalent") from None


def round_to_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """Convert `a` to the storage dtype of `dtype`, rounding bf16 to nearest-even."""
    a = np.asarray(a)
    if dtype != "bf16":
        return a.astype(DTYPES[dtype], copy=False)
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    # ascontiguousarray makes a 0-d array 1-d: the result takes `a`'s shape back
    out = (rounded & np.uint32(0xFFFF0000)).view(np.float32).reshape(a.shape)
    return np.where(np.isnan(a), np.float32(np.nan), out)


@dataclass(frozen=True)
class TensorType:
    """A static shape and a dtype. Prints as `f32[4, 2]`; a scalar is `f32[]`."""

    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self) -> None:
        if isinstance(self.shape, (str, bytes)) or not isinstance(self.shape, Iterable):
            raise ShapeError(f"a shape is a sequence of integers, got {self.shape!r}")
        shape = tuple(self.shape)
        bad = [d for d in shape if not isinstance(d, numbers.Integral) or isinstance(d, bool)]
        if bad:  # int(2.5) would quietly make it 2
            raise ShapeError(f"dimension {bad[0]!r} in shape {shape} is not an integer")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        check_dtype(self.dtype)
        if any(d < 0 for d in self.shape):
            raise ShapeError(f"negative dimension in shape {self.shape}")
        if self.size > MAX_ELEMENTS:  # compiled code indexes with 64-bit integers
            raise ShapeError(f"shape {self.shape} has {self.size} elements; at most 2**56")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * itemsize(self.dtype)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def with_shape(self, shape) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"


def itemsize(dtype: str) -> int:
    return {"f32": 4, "f64": 8, "f16": 2, "bf16": 2, "i32": 4, "i64": 8, "bool": 1}[dtype]
