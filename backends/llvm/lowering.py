"""The LLVM backend's lowering table: every primitive of the op set, keyed by name.

Note: one table
---------------
`LOWERINGS[op]` says how the CPU code generator realizes primitive `op`. Elementwise primitives
are scalar emitters (`lower_add`, `lower_exp`, ...): they receive operand values in their
*compute* type (f16/bf16 compute in f32, bool is i1) and return the result; the loop vectorizer
widens them, so they must stay branch-free and never call libm (transcendentals come from
`mathlib`, inlined polynomials). The other primitives never reach this table as calls: fusion
has already turned them into kernel-IR structure, and the entry records where they are
realized (`index`: index arithmetic of loads; `reduction`: a loop-kernel reduction; `template`:
`codegen_template`; `library`: `codegen_library`; `source`: a buffer). A registry test checks
that every primitive has an entry.

NaN semantics follow the numpy references exactly: `maximum`/`minimum` and `relu` propagate
NaN (`np.maximum`), comparisons with NaN are false except `ne`, `sign(NaN)` is NaN, and a cast of
NaN to bool is True.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir

from graphc.ir.errors import GraphError

from .llvm_ir import F32, F64, I1, intrinsic, lanes_of, scalar_of, splat, vector
from .mathlib import emit_math


@dataclass
class ScalarCtx:
    """What a scalar emitter needs: the builder, and the graphc dtypes of operands and result."""

    builder: ir.IRBuilder
    arg_dtype: str
    out_dtype: str

    @property
    def module(self) -> ir.Module:
        return self.builder.module

    @property
    def is_float(self) -> bool:
        return self.arg_dtype in ("f32", "f64", "f16", "bf16")

    @property
    def math_dtype(self) -> str:
        """The dtype math functions run in (f16/bf16 compute in f32)."""
        return "f64" if self.arg_dtype == "f64" else "f32"


ScalarEmit = Callable[[ScalarCtx, Sequence[ir.Value], dict[str, Any]], ir.Value]


@dataclass(frozen=True)
class Lowering:
    """How one primitive is realized: `kind` and, for elementwise ops, its scalar emitter."""

    kind: str  # scalar | index | reduction | template | library | source | random
    emit: ScalarEmit | None = None
    doc: str = ""


def _const(v: ir.Value, value) -> ir.Constant:
    """A constant of v's type (scalar or vector: every lane) equal to `value`."""
    return splat(v.type, value)


def _fcall(cx: ScalarCtx, name: str, *args: ir.Value) -> ir.Value:
    return cx.builder.call(intrinsic(cx.module, name, args[0].type), list(args))


def _math(cx: ScalarCtx, name: str, *args: ir.Value) -> ir.Value:
    fn = emit_math(cx.module, name, cx.math_dtype, lanes_of(args[0].type))
    return cx.builder.call(fn, list(args))


def lower_tanh(cx, args, attrs):
    # `share_exp`: the kernel also takes the sigmoid of this operand; the exp form of tanh then
    # reuses sigmoid's e^{-|x|} (LLVM's CSE), cheaper than the table form next to it.
    return _math(cx, "tanh_exp" if attrs.get("share_exp") else "tanh", *args)


# -- unary -----------------------------------------------------------------------------------------

def lower_neg(cx, args, attrs):
    (x,) = args
    return cx.builder.fneg(x) if cx.is_float else cx.builder.sub(_const(x, 0), x)


def lower_abs(cx, args, attrs):
    (x,) = args
    if cx.is_float:
        return _fcall(cx, "llvm.fabs", x)
    b = cx.builder
    return b.select(b.icmp_signed("<", x, _const(x, 0)), b.sub(_const(x, 0), x), x)


def _lower_math(name: str) -> ScalarEmit:
    def emit(cx, args, attrs):
        return _math(cx, name, *args)
    emit.__name__ = f"lower_{name}"
    return emit


def lower_sqrt(cx, args, attrs):
    return _fcall(cx, "llvm.sqrt", args[0])


def lower_reciprocal(cx, args, attrs):
    return cx.builder.fdiv(_const(args[0], 1.0), args[0])


def lower_relu(cx, args, attrs):
    (x,) = args
    b = cx.builder
    if cx.is_float:
        # np.maximum(x, 0): x where x >= 0 or x is NaN (unordered-or-greater-equal), else 0.
        return b.select(b.fcmp_unordered(">=", x, _const(x, 0.0)), x, _const(x, 0.0))
    return b.select(b.icmp_signed(">", x, _const(x, 0)), x, _const(x, 0))


def lower_sign(cx, args, attrs):
    (x,) = args
    b = cx.builder
    if cx.is_float:
        one = _const(x, 1.0)
        neg = b.select(b.fcmp_ordered("<", x, _const(x, 0.0)), _const(x, -1.0), x)
        return b.select(b.fcmp_ordered(">", x, _const(x, 0.0)), one, neg)  # 0 and NaN stay
    pos = b.zext(b.icmp_signed(">", x, _const(x, 0)), x.type)
    neg = b.zext(b.icmp_signed("<", x, _const(x, 0)), x.type)
    return b.sub(pos, neg)


def _rounding(intrinsic_name: str) -> ScalarEmit:
    def emit(cx, args, attrs):
        return _fcall(cx, intrinsic_name, args[0])
    emit.__name__ = f"lower_{intrinsic_name.split('.')[1]}"
    return emit


# -- binary ----------------------------------------------------------------------------------------

def _arith(fop: str, iop: str) -> ScalarEmit:
    def emit(cx, args, attrs):
        a, c = args
        return getattr(cx.builder, fop if cx.is_float else iop)(a, c)
    emit.__name__ = f"lower_{iop}"
    return emit


def _bitwise(op: str) -> ScalarEmit:
    method = {"and": "and_", "or": "or_", "xor": "xor", "not": "not_"}[op]

    def emit(cx, args, attrs):
        return getattr(cx.builder, method)(*args)
    emit.__name__ = f"lower_bitwise_{op}"
    return emit


def _constant_reciprocal(d: ir.Value) -> float | None:
    """1/d rounded to d's float type, when d is one constant (every lane) whose reciprocal is a
    normal number: then x * (1/d) is within an ulp of x / d and equal to it for 0, inf and NaN
    operands."""
    if not isinstance(d, ir.Constant):
        return None
    lanes = d.constant if isinstance(d.type, ir.VectorType) else [d]
    if not all(isinstance(c, ir.Constant) for c in lanes):
        return None
    values = {float(c.constant) for c in lanes}
    np_type = {F32: np.float32, F64: np.float64}.get(scalar_of(d.type))
    if len(values) != 1 or np_type is None:
        return None
    with np.errstate(all="ignore"):
        r = np_type(1) / np_type(values.pop())
    return float(r) if np.isfinite(r) and abs(r) >= np.finfo(np_type).tiny else None


def lower_div(cx, args, attrs):
    a, d = args
    b = cx.builder
    if cx.is_float:
        # A quotient must have the same bits wherever the kernel IR computes it: the gradient of
        # a max compares a recomputed operand with the stored maximum, and LLVM applies `arcp`
        # (x * (1/d)) at some sites and not at others (one where d divides two values, or is
        # invariant in the loop), which made those comparisons fail and the gradient NaN. So:
        # an exact division, except by a constant, which is always a multiplication by its
        # reciprocal (what InstCombine did under `arcp`, independent of the context).
        r = _constant_reciprocal(d)
        if r is not None:
            return b.fmul(a, splat(d.type, r))
        return b.fdiv(a, d)
    # numpy floor_divide: floor toward -inf; x // 0 is 0 and MIN // -1 wraps (no CPU trap).
    zero, one, m1 = _const(a, 0), _const(a, 1), _const(a, -1)
    is0, ism1 = b.icmp_signed("==", d, zero), b.icmp_signed("==", d, m1)
    safe = b.select(b.or_(is0, ism1), one, d)
    q, r = b.sdiv(a, safe), b.srem(a, safe)
    adjust = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(r, safe), zero))
    q = b.sub(q, b.zext(adjust, a.type))
    q = b.select(ism1, b.sub(zero, a), q)
    return b.select(is0, zero, q)


def _splat_constant(v: ir.Value) -> float | None:
    """The value of a scalar constant or a constant vector whose lanes are all equal."""
    if not isinstance(v, ir.Constant):
        return None
    c = v.constant
    if isinstance(c, list):
        values = {getattr(e, "constant", None) for e in c}
        return values.pop() if len(values) == 1 and None not in values else None
    return c if isinstance(c, (int, float)) else None


def lower_pow(cx, args, attrs):
    if cx.is_float:
        # x**3 and x**4 by multiplication (an ulp or two from the correctly rounded power,
        # where the general pow costs an exp and a log in f64): GELU's tanh form as exporters
        # write it (0.044715·x³) and a fourth moment
        n = _splat_constant(args[1])
        b, x = cx.builder, args[0]
        if n == 3.0:
            return b.fmul(b.fmul(x, x), x)
        if n == 4.0:
            sq = b.fmul(x, x)
            return b.fmul(sq, sq)
        if n == 2.0:
            return b.fmul(x, x)
        return _math(cx, "pow", *args)
    if isinstance(args[0].type, ir.VectorType):
        raise GraphError("integer pow has no vector lowering")
    return cx.builder.call(_int_pow_function(cx.module, args[0].type), list(args))


def _int_pow_function(module: ir.Module, ty: ir.IntType) -> ir.Function:
    """`ipow(x, e)` by binary exponentiation (wrapping); e < 0 gives 0 (numpy raises)."""
    name = f"graphc.ipow.i{ty.width}"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(ty, [ty, ty]), name=name)
    fn.linkage = "internal"
    x, e = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    loop, done = fn.append_basic_block("loop"), fn.append_basic_block("done")
    entry = b.block
    # e == 0 gives 1, e < 0 gives 0 (the loop does not run)
    trivial = b.zext(b.icmp_signed("==", e, ir.Constant(ty, 0)), ty)
    b.cbranch(b.icmp_signed(">", e, ir.Constant(ty, 0)), loop, done)
    b.position_at_end(loop)
    acc, base, exp = (b.phi(ty) for _ in range(3))
    odd = b.trunc(exp, I1)
    acc_n = b.select(odd, b.mul(acc, base), acc)
    base_n, exp_n = b.mul(base, base), b.lshr(exp, ir.Constant(ty, 1))
    for phi, start, nxt in ((acc, ir.Constant(ty, 1), acc_n), (base, x, base_n), (exp, e, exp_n)):
        phi.add_incoming(start, entry)
        phi.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed(">", exp_n, ir.Constant(ty, 0)), loop, done)
    b.position_at_end(done)
    res = b.phi(ty)
    res.add_incoming(trivial, entry)
    res.add_incoming(acc_n, loop)
    b.ret(res)
    return fn


def _minmax(is_max: bool) -> ScalarEmit:
    def emit(cx, args, attrs):
        a, c = args
        b = cx.builder
        if cx.is_float:
            # numpy: a where (a >= c or a is NaN) [max], (a <= c or a is NaN) [min], else c.
            keep = b.or_(b.fcmp_ordered(">=" if is_max else "<=", a, c),
                         b.fcmp_unordered("uno", a, a))
            return b.select(keep, a, c)
        if scalar_of(a.type) == I1:
            return b.or_(a, c) if is_max else b.and_(a, c)
        return b.select(b.icmp_signed(">" if is_max else "<", a, c), a, c)
    emit.__name__ = "lower_maximum" if is_max else "lower_minimum"
    return emit


_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _compare(op: str) -> ScalarEmit:
    def emit(cx, args, attrs):
        a, c = args
        b = cx.builder
        if cx.is_float:
            if op == "ne":
                return b.fcmp_unordered("!=", a, c)  # NaN != anything is True
            return b.fcmp_ordered(_CMP[op], a, c)
        if scalar_of(a.type) == I1:
            return b.icmp_unsigned(_CMP[op], a, c)  # False < True
        return b.icmp_signed(_CMP[op], a, c)
    emit.__name__ = f"lower_{op}"
    return emit


def lower_select(cx, args, attrs):
    c, a, d = args
    return cx.builder.select(c, a, d)


def lower_cast(cx, args, attrs):
    return cast_value(cx.builder, args[0], cx.arg_dtype, attrs["dtype"])


# -- casts -----------------------------------------------------------------------------------------

_FLOATS = ("f32", "f64", "f16", "bf16")
_INTS = ("i32", "i64")


def compute_type(dtype: str) -> ir.Type:
    """The LLVM type a value of `dtype` is computed in (f16/bf16 in f32, bool as i1)."""
    if dtype in ("f32", "f16", "bf16"):
        return F32
    if dtype == "f64":
        return F64
    if dtype == "bool":
        return I1
    if dtype in _INTS:
        return ir.IntType(32 if dtype == "i32" else 64)
    raise GraphError(f"the LLVM backend has no compute type for dtype {dtype!r}")


def round_f32_to(builder: ir.IRBuilder, x: ir.Value, dtype: str) -> ir.Value:
    """Round an f32 value to the precision of f16/bf16 (still an f32 value)."""
    b = builder
    lanes = lanes_of(x.type)
    if dtype == "f16":
        return b.fpext(b.fptrunc(x, vector(ir.HalfType(), lanes)), x.type)
    if dtype == "bf16":
        i32 = vector(ir.IntType(32), lanes)
        bits = b.bitcast(x, i32)
        lsb = b.and_(b.lshr(bits, splat(i32, 16)), splat(i32, 1))
        rounded = b.add(b.add(bits, splat(i32, 0x7FFF)), lsb)
        return b.bitcast(b.and_(rounded, splat(i32, 0xFFFF0000)), x.type)
    return x


def cast_value(builder: ir.IRBuilder, x: ir.Value, src: str, dst: str) -> ir.Value:
    """Convert a compute value of dtype `src` to dtype `dst` with the reference's semantics
    (float -> int truncates toward zero, anything -> bool is `!= 0`)."""
    b = builder
    to = vector(compute_type(dst), lanes_of(x.type))
    if src == dst:
        return x
    if src in _FLOATS:
        if dst == "bool":
            return b.fcmp_unordered("!=", x, splat(x.type, 0.0))
        if dst in _INTS:
            return b.fptosi(x, to)
        if x.type != to:
            x = b.fpext(x, to) if scalar_of(to) == F64 else b.fptrunc(x, to)
        return round_f32_to(b, x, dst)
    if src == "bool":
        return b.uitofp(x, to) if dst in _FLOATS else b.zext(x, to)
    # integer source
    if dst == "bool":
        return b.icmp_signed("!=", x, splat(x.type, 0))
    if dst in _FLOATS:
        return round_f32_to(b, b.sitofp(x, to), dst)
    width, src_width = scalar_of(to).width, scalar_of(x.type).width
    if width > src_width:
        return b.sext(x, to)
    return b.trunc(x, to) if width < src_width else x


# -- the table -------------------------------------------------------------------------------------

LOWERINGS: dict[str, Lowering] = {
    "neg": Lowering("scalar", lower_neg),
    "abs": Lowering("scalar", lower_abs),
    "exp": Lowering("scalar", _lower_math("exp"), "mathlib polynomial, vectorizes"),
    "log": Lowering("scalar", _lower_math("log")),
    "log1p": Lowering("scalar", _lower_math("log1p")),
    "sqrt": Lowering("scalar", lower_sqrt, "llvm.sqrt (vsqrtps)"),
    "rsqrt": Lowering("scalar", _lower_math("rsqrt")),
    "reciprocal": Lowering("scalar", lower_reciprocal),
    "sigmoid": Lowering("scalar", _lower_math("sigmoid")),
    "tanh": Lowering("scalar", lower_tanh, "mathlib; the exp form beside a sigmoid of its x"),
    "relu": Lowering("scalar", lower_relu, "NaN propagates, as np.maximum(x, 0)"),
    "softplus": Lowering("scalar", _lower_math("softplus")),
    "erf": Lowering("scalar", _lower_math("erf")),
    "sin": Lowering("scalar", _lower_math("sin"), "mathlib: Payne-Hanek beyond 2^45"),
    "cos": Lowering("scalar", _lower_math("cos"), "mathlib: Payne-Hanek beyond 2^45"),
    "atan": Lowering("scalar", _lower_math("atan")),
    "sign": Lowering("scalar", lower_sign),
    **{op: Lowering("scalar", _rounding(f"llvm.{fn}"), f"llvm.{fn} (vrndscale)")
       for op, fn in (("floor", "floor"), ("ceil", "ceil"), ("round", "roundeven"))},
    "add": Lowering("scalar", _arith("fadd", "add")),
    "sub": Lowering("scalar", _arith("fsub", "sub")),
    "mul": Lowering("scalar", _arith("fmul", "mul")),
    "div": Lowering("scalar", lower_div, "integers: floor division, x // 0 = 0"),
    "pow": Lowering("scalar", lower_pow),
    "maximum": Lowering("scalar", _minmax(True), "NaN propagates"),
    "minimum": Lowering("scalar", _minmax(False), "NaN propagates"),
    **{op: Lowering("scalar", _compare(op)) for op in _CMP},
    **{f"bitwise_{op}": Lowering("scalar", _bitwise(op), "integer and/or/xor/not")
       for op in ("and", "or", "xor", "not")},
    "select": Lowering("scalar", lower_select),
    "cast": Lowering("scalar", lower_cast),
    "reduce_sum": Lowering("reduction", doc="loop-kernel sum (reassociated, vectorized)"),
    "reduce_max": Lowering("reduction", doc="loop-kernel max (llvm.maximum: NaN propagates)"),
    "argmax": Lowering("reduction", doc="loop-kernel argmax (first maximum; NaN wins)"),
    "reduce_window": Lowering("reduction", doc="loop kernel: window offsets are the reduce "
                                               "domain"),
    "reshape": Lowering("index"), "transpose": Lowering("index"), "reverse": Lowering("index"),
    "broadcast": Lowering("index"), "slice": Lowering("index"),
    "pad": Lowering("index", doc="masked loads + select of the fill value"),
    "concat": Lowering("index", doc="masked loads, one per piece"),
    "iota": Lowering("index", doc="IndexValue"),
    "random_uniform": Lowering("random", doc="Philox4x32-10 in IR (codegen_expr.emit_philox)"),
    "matmul": Lowering("template", doc="codegen_template.emit_matmul"),
    "conv": Lowering("template", doc="codegen_template.emit_conv"),
    "take": Lowering("library", doc="codegen_library.emit_take"),
    "scatter_add": Lowering("library", doc="codegen_library.emit_scatter_add"),
    "select_scatter": Lowering("library", doc="codegen_library.emit_select_scatter"),
    "constant": Lowering("source", doc="a global constant in the module"),
    "input": Lowering("source"), "param": Lowering("source"),
}


def emit_elementwise(builder: ir.IRBuilder, op: str, args: Sequence[ir.Value],
                     attrs: dict[str, Any], arg_dtype: str, out_dtype: str) -> ir.Value:
    """Emit elementwise primitive `op` on compute values `args` (lookup in LOWERINGS)."""
    entry = LOWERINGS.get(op)
    if entry is None or entry.emit is None:
        raise GraphError(f"the LLVM backend has no scalar lowering for op {op!r}")
    return entry.emit(ScalarCtx(builder, arg_dtype, out_dtype), args, attrs)
