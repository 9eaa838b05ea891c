"""Elementwise primitives: unary math, binary arithmetic with numpy broadcasting, comparisons,
bitwise logic on integers, select and cast. Each op's type rule, numpy reference and VJP sit
together in one table row."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DTypeError
from ..registry import Attr, OpDef, register
from ..types import DTYPES, FLOAT_DTYPES, TensorType, round_to_dtype
from .shapes import broadcast_shapes, same_dtype, unbroadcast

# -- type rules ----------------------------------------------------------------------------------


def infer_unary_float(types, attrs):
    (t,) = types
    if t.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"needs a floating-point operand, got {t.dtype}")
    return t


def infer_unary_numeric(types, attrs):
    (t,) = types
    if t.dtype == "bool":
        raise DTypeError("needs a numeric operand, got bool")
    return t


def infer_binary(types, attrs):
    dt = same_dtype(types)
    if dt == "bool":
        raise DTypeError("arithmetic on bool operands; cast them first")
    return TensorType(broadcast_shapes(*(t.shape for t in types)), dt)


def infer_bitwise(types, attrs):
    dt = same_dtype(types)
    if dt not in ("i32", "i64"):
        raise DTypeError(f"bitwise logic needs integer operands, got {dt} (bool: use select "
                         f"or comparisons)")
    return TensorType(broadcast_shapes(*(t.shape for t in types)), dt)


def infer_compare(types, attrs):
    same_dtype(types)
    return TensorType(broadcast_shapes(*(t.shape for t in types)), "bool")


def infer_select(types, attrs):
    cond, a, b = types
    if cond.dtype != "bool":
        raise DTypeError(f"select condition must be bool, got {cond.dtype}")
    dt = same_dtype([a, b])
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), dt)


def infer_cast(types, attrs):
    return types[0].with_dtype(attrs["dtype"])


# -- references ----------------------------------------------------------------------------------


def _stable_sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _softplus(x):
    return np.logaddexp(np.zeros((), x.dtype), x)


def _rsqrt(x):
    return (1 / np.sqrt(x)).astype(x.dtype)


_ERF_F64 = np.frompyfunc(math.erf, 1, 1)


def _erf(x):
    # numpy has no erf: libm's, through math.erf on float64 values (within about an ulp of
    # float64, so exact to f32 and below once rounded). One Python call per element: slow, and
    # the reference can afford it.
    return np.asarray(_ERF_F64(np.asarray(x, np.float64)), np.float64).astype(x.dtype)


UNARY_FNS = {
    "neg": np.negative, "abs": np.abs, "exp": np.exp, "log": np.log, "log1p": np.log1p,
    "sqrt": np.sqrt, "rsqrt": _rsqrt, "reciprocal": lambda x: (1 / x).astype(x.dtype),
    "sigmoid": _stable_sigmoid, "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0).astype(
        x.dtype), "softplus": _softplus, "sign": np.sign, "erf": _erf,
    "floor": np.floor, "ceil": np.ceil, "round": np.rint,  # round: half to even, as ONNX/torch
    "sin": np.sin, "cos": np.cos, "atan": np.arctan,
}
BINARY_FNS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum,
    "minimum": np.minimum, "pow": np.power,
    "div": lambda a, b: np.floor_divide(a, b) if a.dtype.kind in "iu" else np.divide(a, b),
}
BITWISE_FNS = {"bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or,
               "bitwise_xor": np.bitwise_xor, "bitwise_not": np.invert}
COMPARE_FNS = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
               "gt": np.greater, "ge": np.greater_equal}


def _storage(dtype: str, a: np.ndarray) -> np.ndarray:
    return round_to_dtype(a, dtype)


def _dt(x: np.ndarray) -> str:
    return {np.float32: "f32", np.float64: "f64", np.float16: "f16", np.int32: "i32",
            np.int64: "i64", np.bool_: "bool"}[x.dtype.type]


def make_unary_ref(fn):
    def ref(inputs, attrs):
        (x,) = inputs
        with np.errstate(all="ignore"):
            return fn(x).astype(x.dtype, copy=False)
    return ref


def make_binary_ref(fn):
    def ref(inputs, attrs):
        a, b = inputs
        with np.errstate(all="ignore"):
            return np.asarray(fn(a, b)).astype(a.dtype, copy=False)
    return ref


def make_compare_ref(fn):
    def ref(inputs, attrs):
        return np.asarray(fn(*inputs))
    return ref


def ref_select(inputs, attrs):
    c, a, b = inputs
    return np.where(c, a, b).astype(a.dtype, copy=False)


def ref_cast(inputs, attrs):
    (x,) = inputs
    dt = attrs["dtype"]
    if dt in ("i32", "i64") and x.dtype.kind == "f":
        x = np.trunc(x)
    with np.errstate(all="ignore"):
        return round_to_dtype(x.astype(DTYPES[dt]) if dt != "bf16" else x.astype(np.float32), dt)


# -- VJP rules (b: Builder; x, out, ct: Tensors) ---------------------------------------------------


def _zero(b, like):
    return b.const(0, dtype=like.dtype)


def vjp_neg(b, ins, outs, cts, attrs): return (-cts[0],)
def vjp_abs(b, ins, outs, cts, attrs): return (cts[0] * b.sign(ins[0]),)
def vjp_exp(b, ins, outs, cts, attrs): return (cts[0] * outs[0],)
def vjp_log(b, ins, outs, cts, attrs): return (cts[0] / ins[0],)
def vjp_log1p(b, ins, outs, cts, attrs): return (cts[0] / (ins[0] + 1.0),)
def vjp_sqrt(b, ins, outs, cts, attrs): return (cts[0] * 0.5 / outs[0],)
def vjp_rsqrt(b, ins, outs, cts, attrs): return (cts[0] * -0.5 * outs[0] / ins[0],)
def vjp_reciprocal(b, ins, outs, cts, attrs): return (-(cts[0] * outs[0] * outs[0]),)
def vjp_sigmoid(b, ins, outs, cts, attrs): return (cts[0] * (outs[0] * (1.0 - outs[0])),)
def vjp_tanh(b, ins, outs, cts, attrs): return (cts[0] * (1.0 - outs[0] * outs[0]),)
def vjp_relu(b, ins, outs, cts, attrs): return (b.select(ins[0] > 0.0, cts[0], _zero(b, cts[0])),)
def vjp_softplus(b, ins, outs, cts, attrs): return (cts[0] * b.sigmoid(ins[0]),)
def vjp_step(b, ins, outs, cts, attrs):
    # sign, floor, ceil, round: piecewise constant, so the derivative is 0 wherever it exists
    # (no cotangent flows back, as torch's)
    return (None,)


def vjp_sin(b, ins, outs, cts, attrs): return (cts[0] * ins[0].cos(),)
def vjp_cos(b, ins, outs, cts, attrs): return (-(cts[0] * ins[0].sin()),)
def vjp_atan(b, ins, outs, cts, attrs): return (cts[0] / (ins[0] * ins[0] + 1.0),)


def vjp_erf(b, ins, outs, cts, attrs):
    # d erf(x)/dx = 2/√π · exp(−x²)
    return (cts[0] * ((-(ins[0] * ins[0])).exp() * (2.0 / math.sqrt(math.pi))),)


def vjp_add(b, ins, outs, cts, attrs):
    return unbroadcast(b, cts[0], ins[0].shape), unbroadcast(b, cts[0], ins[1].shape)


def vjp_sub(b, ins, outs, cts, attrs):
    return unbroadcast(b, cts[0], ins[0].shape), unbroadcast(b, -cts[0], ins[1].shape)


def vjp_mul(b, ins, outs, cts, attrs):
    x, y = ins
    return unbroadcast(b, cts[0] * y, x.shape), unbroadcast(b, cts[0] * x, y.shape)


def vjp_div(b, ins, outs, cts, attrs):
    x, y = ins
    gx = cts[0] / y
    return unbroadcast(b, gx, x.shape), unbroadcast(b, -(gx * outs[0]), y.shape)


def vjp_pow(b, ins, outs, cts, attrs):
    x, y = ins
    gx = cts[0] * y * b.pow(x, y - 1.0)
    # d/dy x^y = x^y log x, taken as 0 where x <= 0 (where the real power has no derivative in y)
    safe_log = b.select(x > 0.0, b.log(b.select(x > 0.0, x, b.const(1, dtype=x.dtype))),
                        _zero(b, x))
    gy = cts[0] * outs[0] * safe_log
    return unbroadcast(b, gx, x.shape), unbroadcast(b, gy, y.shape)


def _vjp_minmax(b, ins, outs, cts, attrs, first_wins):
    # Ties split the cotangent in half, as torch.maximum/minimum do.
    x, y = ins
    ct = cts[0]
    half = ct * 0.5
    zero = _zero(b, ct)
    gx = b.select(x.eq(y), half, b.select(first_wins(x, y), ct, zero))
    gy = b.select(x.eq(y), half, b.select(first_wins(x, y), zero, ct))
    return unbroadcast(b, gx, x.shape), unbroadcast(b, gy, y.shape)


def vjp_maximum(b, ins, outs, cts, attrs):
    return _vjp_minmax(b, ins, outs, cts, attrs, lambda x, y: x > y)


def vjp_minimum(b, ins, outs, cts, attrs):
    return _vjp_minmax(b, ins, outs, cts, attrs, lambda x, y: x < y)


def vjp_select(b, ins, outs, cts, attrs):
    c, x, y = ins
    zero = _zero(b, cts[0])
    return (None, unbroadcast(b, b.select(c, cts[0], zero), x.shape),
            unbroadcast(b, b.select(c, zero, cts[0]), y.shape))


def vjp_cast(b, ins, outs, cts, attrs):
    (x,) = ins
    if x.dtype not in FLOAT_DTYPES or cts[0].dtype not in FLOAT_DTYPES:
        return (None,)
    return (b.cast(cts[0], dtype=x.dtype),)


UNARY_VJPS = {"neg": vjp_neg, "abs": vjp_abs, "exp": vjp_exp, "log": vjp_log,
              "log1p": vjp_log1p, "sqrt": vjp_sqrt, "rsqrt": vjp_rsqrt,
              "reciprocal": vjp_reciprocal, "sigmoid": vjp_sigmoid, "tanh": vjp_tanh,
              "relu": vjp_relu, "softplus": vjp_softplus, "sign": vjp_step, "erf": vjp_erf,
              "floor": vjp_step, "ceil": vjp_step, "round": vjp_step, "sin": vjp_sin,
              "cos": vjp_cos, "atan": vjp_atan}
BINARY_VJPS = {"add": vjp_add, "sub": vjp_sub, "mul": vjp_mul, "div": vjp_div, "pow": vjp_pow,
               "maximum": vjp_maximum, "minimum": vjp_minimum}
NUMERIC_UNARY = {"neg", "abs", "relu", "sign"}  # also defined on integers


def register_ops() -> None:
    for name, fn in UNARY_FNS.items():
        infer = infer_unary_numeric if name in NUMERIC_UNARY else infer_unary_float
        register(OpDef(name, "elementwise", 1, infer, make_unary_ref(fn), vjp=UNARY_VJPS[name]))
    for name, fn in BINARY_FNS.items():
        register(OpDef(name, "elementwise", 2, infer_binary, make_binary_ref(fn),
                       vjp=BINARY_VJPS[name]))
    for name, fn in COMPARE_FNS.items():
        register(OpDef(name, "elementwise", 2, infer_compare, make_compare_ref(fn),
                       differentiable=False))
    for name, fn in BITWISE_FNS.items():
        arity = 1 if name == "bitwise_not" else 2
        register(OpDef(name, "elementwise", arity, infer_bitwise,
                       make_unary_ref(fn) if arity == 1 else make_binary_ref(fn),
                       differentiable=False, doc=f"{name} of i32/i64 operands (two's complement)"
                       + (", with broadcasting." if arity == 2 else ".")))
    register(
        OpDef("select", "elementwise", 3, infer_select, ref_select, vjp=vjp_select,
              doc="select(cond, a, b): a where cond else b, with broadcasting."),
        OpDef("cast", "elementwise", 1, infer_cast, ref_cast, attrs={"dtype": Attr("dtype")},
              vjp=vjp_cast, doc="Convert dtype; float -> int truncates toward zero."),
    )
