"""The Triton lowering table: how every primitive of the graph IR reaches Triton source.

`LOWERING` is keyed by every primitive name (a test checks it against the registry). Elementwise
primitives become Triton expressions here (`emit_op`); the others name the code generator that
handles them, because fusion has already turned them into index arithmetic (movement ops), loop
kernels (reductions, windows), templates (matmul, conv) or library kernels.

Numerics, and why:
- f16 and bf16 values are carried as f32 and rounded back after every operation (`round_to`),
  exactly as the reference rounds every node to its dtype. bf16 rounding is done on the bits
  (round to nearest even) because the Triton interpreter truncates in `.to(tl.bfloat16)`.
- No libdevice: the interpreter does not implement it. tanh, log1p, pow, softplus, sigmoid and
  erf are small `@triton.jit` helpers (`HELPERS`) written with `tl.exp`/`tl.log` only, accurate
  to a few ulp in f32 and f64. erf evaluates the LLVM mathlib's polynomials
  (`math_coefficients`), with f64 ones for f64 (`_erf_f64`): x + x·S(x²) below 1,
  1 − exp(P(|x|)) above.
- maximum/minimum propagate NaN like numpy; relu keeps NaN (`where(x < 0, 0, x)`).
- Integer division floors (numpy `floor_divide`), Triton's `//` truncates: `_floordiv_int`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphc.ir.errors import GraphError
from graphc.ir.types import round_to_dtype

from ..math_coefficients import ATAN_Q, ERF_BIG, ERF_CLAMP, ERF_SMALL, ERF_SPLIT
from ..math_constants import ATAN_BREAKS, ATAN_CENTRES, atan_bases

TL_DTYPE = {"f32": "tl.float32", "f64": "tl.float64", "f16": "tl.float16",
            "bf16": "tl.bfloat16", "i32": "tl.int32", "i64": "tl.int64", "bool": "tl.int1"}
# The Triton signature type of a pointer to each dtype (AOT compilation).
PTR_TYPE = {"f32": "*fp32", "f64": "*fp64", "f16": "*fp16", "bf16": "*bf16", "i32": "*i32",
            "i64": "*i64", "bool": "*i1"}
# f16/bf16 values are computed in f32 and rounded after each operation.
COMPUTE_DTYPE = {"f16": "f32", "bf16": "f32"}
FLOATS = ("f32", "f64", "f16", "bf16")

# Every primitive -> how it is lowered. Elementwise ones map to "elementwise" (see `emit_op`).
UNARY = ("neg", "abs", "exp", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "sigmoid", "tanh",
         "relu", "softplus", "sign", "erf", "floor", "ceil", "round", "sin", "cos", "atan")
BINARY = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
BITWISE = {"bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^"}
LOWERING: dict[str, str] = {
    **{op: "elementwise" for op in UNARY + BINARY + tuple(COMPARE) + tuple(BITWISE)
       + ("bitwise_not", "select", "cast")},
    "reduce_sum": "loop kernel reduction (sum)",
    "reduce_max": "loop kernel reduction (max)",
    "argmax": "loop kernel reduction (argmax)",
    "reduce_window": "loop kernel reduction over the window",
    "reshape": "index arithmetic", "transpose": "index arithmetic", "reverse": "index arithmetic",
    "broadcast": "index arithmetic", "slice": "index arithmetic",
    "pad": "index arithmetic + masked load", "concat": "index arithmetic + select",
    "iota": "index value", "random_uniform": "Philox4x32-10 helper (_philox_uniform)",
    "constant": "immediate or constant buffer",
    "input": "kernel argument", "param": "kernel argument",
    "matmul": "matmul template (tl.dot)", "conv": "implicit-GEMM conv template (tl.dot)",
    "take": "library kernel (gather)", "scatter_add": "library kernel (copy + atomic_add)",
    "select_scatter": "library kernel (zero + window argmax + atomic_add)",
}

# -- helper functions placed in a generated module when a kernel uses them -----------------------


def _horner(acc: str, var: str, coeffs: tuple[float, ...]) -> list[str]:
    """Source lines evaluating the polynomial `coeffs` (highest degree first) at `var` into
    `acc`. Every literal meets a tensor operand, so Triton makes it a constant of the tensor's
    dtype straight from the Python float: f64 coefficients are not rounded to f32 first."""
    def term(c: float) -> str:
        return f"- {-c!r}" if c < 0 else f"+ {c!r}"

    lines = [f"    {acc} = {coeffs[0]!r} * {var} {term(coeffs[1])}"]
    lines += [f"    {acc} = {acc} * {var} {term(c)}" for c in coeffs[2:]]
    return lines


def _erf_helper(name: str, dtype: str) -> str:
    return "\n".join([
        "", "@triton.jit", f"def {name}(x):",
        f"    # |x| < {ERF_SPLIT!r}: x + x*S(x^2); above, 1 - exp(P(|x|)) with P ~ log(erfc), |x|",
        f"    # clamped to {ERF_CLAMP[dtype]!r}, where erf rounds to 1 (the LLVM mathlib's "
        "polynomials)",
        "    s = x * x", *_horner("p", "s", ERF_SMALL[dtype]), "    small = x + x * p",
        "    ax = tl.abs(x)", f"    t = tl.minimum(ax, {ERF_CLAMP[dtype]!r})",
        *_horner("q", "t", ERF_BIG[dtype]), "    big = 1.0 - tl.exp(q)",
        "    # NaN fails the comparison and keeps the small branch's NaN; -0 stays -0 there",
        f"    return tl.where(ax >= {ERF_SPLIT!r}, tl.where(x < 0.0, -big, big), small)", ""])


def _atan_helper(name: str, dtype: str) -> str:
    def pick(values) -> str:
        # constants added to a zero tensor take its dtype (a bare Python float in tl.where
        # would be an f32 constant, also in the f64 helper)
        out = f"zero + {values[-1]!r}"
        for brk, v in zip(ATAN_BREAKS[::-1], values[-2::-1], strict=True):
            out = f"tl.where(a <= {brk!r}, zero + {v!r}, {out})"
        return out

    bases = atan_bases()
    return "\n".join([
        "", "@triton.jit", f"def {name}(x):",
        "    # |x| reduced to |t| <= tan(pi/16) around the nearest tan(k pi/8), or t = -1/|x|",
        "    # beyond tan(7 pi/16); atan(t) = t + t z Q(z) (the LLVM mathlib's reduction and",
        "    # polynomial); odd: the sign bit put back",
        "    a = tl.abs(x)", "    zero = tl.zeros_like(a)",
        f"    c = {pick(ATAN_CENTRES + (0.0,))}",
        f"    hi = {pick(tuple(h for h, _ in bases))}",
        f"    lo = {pick(tuple(lo for _, lo in bases))}",
        f"    t = tl.where(a <= {ATAN_BREAKS[-1]!r}, (a - c) / (a * c + 1.0), -1.0 / a)",
        "    z = t * t", *_horner("q", "z", ATAN_Q[dtype]),
        "    r = hi + (t + (lo + t * z * q))",
        "    return tl.where(_sign_bit(x), -r, r)", ""])


def _rint_helper(name: str, mantissa_bits: int) -> str:
    big = float(2 ** mantissa_bits)
    return f'''
@triton.jit
def {name}(x):
    # round half to even: below 2^{mantissa_bits}, adding and subtracting that power of two
    # rounds |x| to an integer in the hardware's nearest-even arithmetic; larger floats (and
    # inf, NaN) are integers already
    a = tl.abs(x)
    r = (a + {big!r}) - {big!r}
    return tl.where(a < {big!r}, tl.where(x < 0.0, -r, r), x)
'''


HELPERS: dict[str, str] = {
    "_round_bf16": '''
@triton.jit
def _round_bf16(x):
    # f32 -> nearest-even bf16 value (kept in f32), NaN preserved
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
''',
    "_log1p": '''
@triton.jit
def _log1p(x):
    # log(1 + x) without cancellation: log(u) * x / (u - 1) with u = 1 + x (Goldberg)
    u = 1.0 + x
    d = u - 1.0
    r = tl.where(d == 0.0, x, tl.log(u) * (x / d))
    return tl.where(u == float("inf"), u, r)
''',
    "_tanh": '''
@triton.jit
def _tanh(x):
    # |x| < 0.625: odd rational approximation (Cephes); else 1 - 2 / (exp(2|x|) + 1)
    ax = tl.abs(x)
    big = 1.0 - 2.0 / (tl.exp(2.0 * ax) + 1.0)
    big = tl.where(x < 0.0, -big, big)
    z = x * x
    p = ((-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
         - 1.61468768441708447952e3)
    q = (((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
         + 4.84406305325125486048e3)
    small = x + x * z * (p / q)
    return tl.where(ax < 0.625, small, big)
''',
    "_sigmoid": '''
@triton.jit
def _sigmoid(x):
    # the stable form of the reference: never exp of a large positive number
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
''',
    "_softplus": '''
@triton.jit
def _softplus(x):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))
    return tl.where(x > 0.0, x, 0.0) + _log1p(tl.exp(-tl.abs(x)))
''',
    "_erf": _erf_helper("_erf", "f32"),
    "_erf_f64": _erf_helper("_erf_f64", "f64"),
    "_atan": _atan_helper("_atan", "f32"),
    "_atan_f64": _atan_helper("_atan_f64", "f64"),
    "_rint": _rint_helper("_rint", 23),
    "_rint_f64": _rint_helper("_rint_f64", 52),
    "_pow": '''
@triton.jit
def _pow(a, b):
    # numpy (C99) power for floats: |a|**b, negated for a < 0 or -0 and odd integer b, NaN
    # for finite a < 0 and fractional b (-inf to a fractional power is |a|**b), 1 for
    # b == 0, for a == 1 and for a == -1 with b = ±inf. One operand may be a scalar load:
    # the interpreter cannot `&` its tests with the other's block, so both take one shape.
    a, b = tl.broadcast(a, b)
    mag = tl.exp(b * tl.log(tl.abs(a)))
    whole = tl.floor(b) == b
    odd = whole & (tl.floor(b * 0.5) * 2.0 != b)
    r = tl.where(_sign_bit(a) & odd, -mag, mag)
    finite_neg = (a < 0.0) & (a != float("-inf"))
    r = tl.where(finite_neg & (b == b) & (tl.floor(b) != b), float("nan"), r)
    r = tl.where((a == 1.0) | ((a == -1.0) & (tl.abs(b) == float("inf"))), 1.0, r)
    return tl.where(b == 0.0, 1.0, r)
''',
    "_sign_bit": '''
@triton.jit
def _sign_bit(a):
    # a < 0, -0 included (1/-0 is -inf)
    return (a < 0.0) | ((a == 0.0) & (1.0 / a < 0.0))
''',
    "_pow_int": '''
@triton.jit
def _pow_int(a, b, BITS: tl.constexpr):
    # integer power by squaring (numpy rejects negative exponents; they give 1 here)
    r = a * 0 + 1
    for _ in tl.static_range(BITS):
        r = tl.where((b & 1) != 0, r * a, r)
        a = a * a
        b = b >> 1
    return r
''',
    "_floordiv_int": '''
@triton.jit
def _floordiv_int(a, b):
    # numpy floor_divide: Triton's // truncates toward zero
    q = a // b
    return tl.where(((a % b) != 0) & ((a < 0) != (b < 0)), q - 1, q)
''',
}
HELPER_DEPS = {"_softplus": ("_log1p",), "_pow": ("_sign_bit",), "_atan": ("_sign_bit",),
               "_atan_f64": ("_sign_bit",)}


def _is_float(dtype: str) -> bool:
    return dtype in FLOATS


def float_literal(value: float) -> str:
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    return repr(float(value))


def const_code(value, dtype: str) -> str:
    """A Triton scalar of `dtype` (f16/bf16 as their rounded value in f32)."""
    if dtype == "bool":
        return "tl.full([], 1, tl.int1)" if value else "tl.full([], 0, tl.int1)"
    if dtype in ("f16", "bf16", "f32"):
        v = float(np.asarray(round_to_dtype(np.asarray(float(value)), dtype)).astype(np.float64))
        return float_literal(v)
    if dtype == "f64":  # a bare literal would be rounded to f32 first
        return f"tl.full([], {float_literal(float(value))}, tl.float64)"
    return f"tl.full([], {int(value)}, {TL_DTYPE[dtype]})"


def round_to(code: str, dtype: str, use: Callable[[str], None]) -> str:
    """Round an f32-carried value to f16/bf16 precision (no-op for other dtypes)."""
    if dtype == "f16":
        return f"{code}.to(tl.float16).to(tl.float32)"
    if dtype == "bf16":
        use("_round_bf16")
        return f"_round_bf16({code})"
    return code


def cast_code(x: str, src: str, dst: str, use: Callable[[str], None]) -> str:
    """`cast<dst>` of a value of dtype `src` (both as carried: f16/bf16 in f32)."""
    if dst == "bool":
        return f"({x} != 0)"
    if dst == "f16":
        return f"{x}.to(tl.float16).to(tl.float32)"
    if dst == "bf16":
        use("_round_bf16")
        return f"_round_bf16({x}.to(tl.float32))"
    cdst = COMPUTE_DTYPE.get(dst, dst)
    csrc = COMPUTE_DTYPE.get(src, src)
    if csrc == cdst:
        return x
    return f"{x}.to({TL_DTYPE[cdst]})"


def _one(dtype: str) -> str:
    return "1.0" if _is_float(dtype) else "1"


def _unary(op: str, x: str, dtype: str, use: Callable[[str], None]) -> str:
    fl = _is_float(dtype)
    if op == "neg":
        return f"-{x}"
    if op == "abs":
        return f"tl.abs({x})"
    if op == "relu":
        return f"tl.where({x} < 0, 0, {x})" if not fl else f"tl.where({x} < 0.0, 0.0, {x})"
    if op == "sign":
        one = _one(dtype)
        return f"tl.where({x} > 0, {one}, tl.where({x} < 0, -{one}, {x}))"
    if not fl:
        raise GraphError(f"triton: {op} of an integer ({dtype}) operand is not supported")
    simple = {"exp": "tl.exp({})", "log": "tl.log({})", "sqrt": "tl.sqrt({})",
              "rsqrt": "tl.rsqrt({})", "reciprocal": "1.0 / {}", "floor": "tl.floor({})",
              "ceil": "tl.ceil({})", "sin": "tl.sin({})", "cos": "tl.cos({})"}
    if op in simple:
        return simple[op].format(x)
    helper = {"log1p": "_log1p", "tanh": "_tanh", "sigmoid": "_sigmoid",
              "softplus": "_softplus", "erf": "_erf_f64" if dtype == "f64" else "_erf",
              "round": "_rint_f64" if dtype == "f64" else "_rint",
              "atan": "_atan_f64" if dtype == "f64" else "_atan"}[op]
    use(helper)
    return f"{helper}({x})"


def _tensor_operand(code: str, const: float | None) -> str:
    """A constant operand as a 0-d tensor: a bare Python float literal (Adam's beta in
    beta ** step, an infinite exponent) cannot go through `_pow`'s tests. Constants already
    written as tensors (f64 ones) stay as they are."""
    if const is None or code.startswith("tl."):
        return code
    return f"tl.full([], {code}, tl.float32)"


def _binary(op: str, a: str, b: str, dtype: str, use: Callable[[str], None],
            b_const: float | None, a_const: float | None = None) -> str:
    fl = _is_float(dtype)
    if op in ("add", "sub", "mul"):
        return f"{a} {dict(add='+', sub='-', mul='*')[op]} {b}"
    if op == "div":
        if fl:
            return f"{a} / {b}"
        use("_floordiv_int")
        return f"_floordiv_int({a}, {b})"
    if op in ("maximum", "minimum"):
        fn = "tl.maximum" if op == "maximum" else "tl.minimum"
        return f"{fn}({a}, {b}, propagate_nan=tl.PropagateNan.ALL)" if fl else f"{fn}({a}, {b})"
    if op == "pow":
        if fl and b_const is not None:
            if b_const == 1.0:
                return a
            if b_const == 2.0:
                return f"{a} * {a}"
            if b_const == 0.5:
                return f"tl.sqrt({a})"
            if b_const == 0.0:  # numpy: x**0 is 1 for every x, NaN and inf included
                return f"(tl.zeros_like({a}) + 1.0)"
            if math.isfinite(b_const):
                # The exponent's kind is known here: `_pow`'s tests on it would run on a
                # Python float, which the interpreter cannot combine with `&`.
                mag = f"tl.exp({float_literal(b_const)} * tl.log(tl.abs({a})))"
                if not float(b_const).is_integer():
                    return (f"tl.where(({a} < 0.0) & ({a} != float('-inf')), float('nan'), "
                            f"{mag})")
                if b_const % 2 == 1:
                    use("_sign_bit")
                    return f"tl.where(_sign_bit({a}), -{mag}, {mag})"
                return mag
        if fl:
            use("_pow")
            return f"_pow({_tensor_operand(a, a_const)}, {_tensor_operand(b, b_const)})"
        use("_pow_int")
        return f"_pow_int({a}, {b}, {32 if dtype == 'i32' else 64})"
    raise GraphError(f"triton: no lowering for elementwise op {op!r}")


def emit_op(op: str, args: list[str], arg_dtypes: list[str], dtype: str,
            attrs: dict, use: Callable[[str], None], consts: list[float | None]) -> str:
    """Triton source for the elementwise primitive `op` (result carried in its compute dtype,
    before f16/bf16 rounding, which the caller applies)."""
    if op in COMPARE:
        return f"({args[0]} {COMPARE[op]} {args[1]})"
    if op in BITWISE:
        return f"({args[0]} {BITWISE[op]} {args[1]})"
    if op == "bitwise_not":
        return f"(~{args[0]})"
    if op == "select":
        return f"tl.where({args[0]}, {args[1]}, {args[2]})"
    if op == "cast":
        return cast_code(args[0], arg_dtypes[0], attrs["dtype"], use)
    if op in UNARY:
        return _unary(op, args[0], dtype, use)
    if op in BINARY:
        return _binary(op, args[0], args[1], dtype, use, consts[1], consts[0])
    raise GraphError(f"triton: no lowering for elementwise op {op!r}")


def helper_source(used: set[str]) -> str:
    """The helper functions in `used` (and what they call), in a fixed order."""
    want = set(used)
    for h in list(want):
        want.update(HELPER_DEPS.get(h, ()))
    return "".join(HELPERS[h] for h in HELPERS if h in want)
