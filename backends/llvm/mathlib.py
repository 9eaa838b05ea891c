"""Vectorizable math functions written in LLVM IR: exp, expm1, log, log1p, tanh, sigmoid,
softplus, erf, pow, rsqrt for f32 and f64, scalar or `<lanes x float>`.

Note: why not `llvm.exp` or libm
--------------------------------
LLVM vectorizes a loop calling `llvm.exp.f32`, then scalarizes it back into one libm call per
lane (no vector math library is available through llvmlite): no faster than scalar code. The
functions here are straight-line IR (range reduction, polynomials through `llvm.fmuladd`,
exponent bits built with integer ops, special cases through `select`), so the loop vectorizer
widens them like any arithmetic. They are `internal alwaysinline`: inlined into the loop that
calls them, then dropped. `emit_math(module, name, dtype, lanes)` declares one once per module.

Algorithms (all branch-free):
* exp: n = rint(x·log2 e) (by adding and subtracting 1.5·2^mant), r = x − n·ln2 (Cody–Waite,
  two constants), exp(r) by a polynomial (degree-6 minimax for f32, degree-13 Taylor for f64),
  scaled by 2^n built from exponent bits in two halves so that gradual underflow (denormal
  results) and overflow (inf) come out right. The clamps let NaN through, so NaN needs no
  select. On AVX-512 the scaling is one vscalef: explicit 512-bit vectors call it directly,
  scalar code in a module marked by `mark_avx512` (loop kernels of an AVX-512 target) uses
  `llvm.ldexp`, which the loop vectorizer widens into it. Explicit 16-lane f32 vectors (the
  row sweeps of softmax and log-softmax) reduce by sixteenths instead: 2^(j/16) from a
  one-register table (vpermps), a degree-3 polynomial, 12 vector instructions instead of 14
  (softmax 4096 x 4096 with L2-resident rows, one thread: 5.1 -> 4.7 ms; 1.06 ulp instead of
  0.98, one ulp from the scalar form in 11 % of the points). It flushes results below 2^-126
  to zero, as a CPU in flush-to-zero mode would: an instruction that makes a denormal costs
  a microcode assist of about a hundred cycles on x86, and a causal attention mask sends half
  of a softmax's exps to -inf (softmax of 8 x 4 x 128 x 128 causally masked scores, one
  thread: 1.31 -> 0.17 ms, as fast as unmasked). Scalar code keeps gradual underflow.
* expm1: the same reduction; exp(r) − 1 from the polynomial without its constant term, then
  2^n·(e^r − 1) + (2^n − 1) in one fused multiply-add.
* log: frexp by bit manipulation (denormals pre-scaled), mantissa folded into [√½, √2),
  Cephes polynomial (f32) or the fdlibm s = f/(2+f) series (f64).
* log1p: u = 1 + x and the exact rounding error of that sum (Fast2Sum), whose first-order
  effect err/u is added inside the log's small terms: accurate near 0 and near −1.
* tanh: odd polynomial (f32) or rational (f64) in x² for |x| < 0.625 (Cephes); otherwise
  1 − 2/(e^{2|x|} + 1) (f64) or 1 − 2e²/(1 + e²) with e = e^{−|x|} (f32: no overflow, one
  scaling; e² = 2^{2n}·(1 + em1)² from exp's own n and e^r − 1, as accurate as an exp).
* sigmoid: e = exp(−|x|), then 1/(1+e) or e/(1+e): never overflows. In f32 it builds e^{−|x|}
  with the very instructions tanh uses, so sigmoid(x) and tanh(x) of one x in one kernel share
  a single exp evaluation (LLVM's CSE merges them).
* softplus: max(x, 0) + log1p(exp(−|x|)).
  In f64 (and softplus in f32) these carry exp's rounding error as a low part (hi + lo) and
  fold it, the rounding of 1 + e and the division residual into one correction term: within
  about one ulp where the plain formulas reach two. f32 tanh and sigmoid, the throughput-bound
  ones, drop the low part (sigmoid keeps the rounding error of 1 + e): about half the
  instructions, max errors 1.35 and 1.45 ulp instead of 0.86 and 0.93. The correction needs
  only a rough reciprocal of 1 + e: vrcp14ps (2^-14) for 512-bit f32 vectors, an `arcp`
  division elsewhere.
* erf: x + x·S(x²) for |x| < 1; above, 1 − exp(P(|x|)) with P a polynomial fitted to
  log erfc (−x² included, so no exact split of x² is needed: its rounding reaches erf damped
  by erfc/erf < 0.19), exp's reduction inlined, then (1 − 2^n) − 2^n·(e^r − 1) in one
  rounding; |x| clamped where erf rounds to 1 (4 in f32, 5.95 in f64), the sign put back by
  copysign. Weighted-minimax coefficients shared with the Triton helpers
  (`math_coefficients`). Max error 0.99 ulp (f32: every float in [2^-12, 4.25] against
  math.erf; both branches peak next to |x| = 1) and 0.92 ulp (f64: 500,000 points against a
  long-double series that agrees with mpmath to 0.01 ulp).
* pow: exp(y·log|x|) with C99 special cases (x < 0 with integral y, ±0, ±inf, 1, NaN). y·log x
  amplifies the log's error by |y·log x| (up to 745): f32 computes in f64 internally, with
  the polynomials cut to the 2^-40 it needs there (an atanh series of 6 terms for the log,
  Taylor through r^9 for exp: 4M points, one thread, 15.6 -> 13.1 ms, still 0.50 ulp); f64
  carries log|x| (a double-double atanh series) and the product as hi + lo, the low part
  added to exp's reduced argument: 1.18 ulp at most instead of over a thousand.
* rsqrt: 1 / llvm.sqrt (vectorizes to vsqrtps + vdivps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

from llvmlite import ir

from graphc.ir.errors import GraphError

from ..math_coefficients import (
    ERF_BIG,
    ERF_CLAMP,
    ERF_SMALL,
    ERF_SPLIT,
    TANH_TABLE_CLAMP,
    TANH_TABLE_MID,
    TANH_TABLE_P,
)
from .llvm_ir import (
    F64,
    I32,
    I64,
    declare,
    intrinsic,
    lanes_of,
    llvm_type,
    scalar_of,
    splat,
    type_suffix,
    vector,
)
from .mathlib_trig import _fma, _two_sum, build_atan, build_sincos

_AVX512_MARK = "graphc_avx512"


def mark_avx512(module: ir.Module) -> None:
    """Declare that `module` is compiled for an AVX-512 target: math functions emitted into
    it afterwards scale by powers of two with vscalef also in scalar code (which LLVM's loop
    vectorizer widens, e.g. softmax's exp inside a reduction loop)."""
    setattr(module, _AVX512_MARK, True)


MATH_FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "softplus", "erf", "pow",
                  "rsqrt", "sin", "cos", "atan")
_ARITY = {"pow": 2}


class _Emit:
    """Builds one math function body: constants, intrinsics and bit tricks adapted to the float
    type (f32/f64, scalar or vector) so each algorithm is written once."""

    def __init__(self, builder: ir.IRBuilder, fty: ir.Type) -> None:
        self.b = builder
        self.ty = fty
        self.is64 = isinstance(scalar_of(fty), ir.DoubleType)
        lanes = lanes_of(fty)
        self.ity = vector(I64 if self.is64 else I32, lanes)
        self.mant = 52 if self.is64 else 23
        self.bias = 1023 if self.is64 else 127
        # Explicit 512-bit vectors are only requested for AVX-512 targets: those use its
        # vscalef and vrcp14 through x86 intrinsics. Scalar code (vectorized by LLVM for any
        # target) and narrower vectors stay portable IR.
        self.wide = lanes * (64 if self.is64 else 32) == 512
        # Scalar code in a module for an AVX-512 target: `llvm.ldexp`, which the loop
        # vectorizer widens and the backend lowers to vscalef (a libm call elsewhere).
        self.ldexp_intrinsic = not self.wide and getattr(builder.module, _AVX512_MARK, False)

    def _scalef(self, p: ir.Value, n: ir.Value) -> ir.Value:
        """p·2^n for integral float n in one vscalefps/pd (AVX-512), instead of a conversion
        and eight integer and multiply instructions; it rounds once like the two-halves form,
        so the results are identical."""
        mask = ir.IntType(8 if self.is64 else 16)
        fn = declare(self.b.module, f"llvm.x86.avx512.mask.scalef.{'pd' if self.is64 else 'ps'}"
                     ".512", self.ty, [self.ty, self.ty, self.ty, mask, I32])
        return self.b.call(fn, [p, n, self.c(0.0), ir.Constant(mask, -1), ir.Constant(I32, 4)])

    # constants and plain arithmetic
    def c(self, x: float) -> ir.Constant:
        return splat(self.ty, float(x))

    def ic(self, n: int) -> ir.Constant:
        return splat(self.ity, n)

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        return self.b.call(intrinsic(self.b.module, name, self.ty), list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.call("llvm.fmuladd", a, b, c)

    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def rough_rcp(self, d: ir.Value) -> ir.Value:
        """1/d for finite d >= 1, allowed to be off by ~2^-12 relative: `arcp` lets the x86
        backend use vrcp14ps plus one Newton step instead of vdivps (several times the
        throughput); other targets may keep the exact division. Callers correct the quotient
        with its exact residual, so only a rough reciprocal is needed."""
        if self.wide and not self.is64:
            # vrcp14ps alone (relative error < 2^-14): the caller's correction squares that.
            fn = declare(self.b.module, "llvm.x86.avx512.rcp14.ps.512", self.ty,
                         [self.ty, self.ty, ir.IntType(16)])
            return self.b.call(fn, [d, self.c(0.0), ir.Constant(ir.IntType(16), -1)])
        rcp = self.b.fdiv(self.c(1.0), d)
        rcp.flags.extend(["arcp", "ninf"])
        return rcp

    def abs(self, a):
        return self.call("llvm.fabs", a)

    def select(self, cond, a, b):
        return self.b.select(cond, a, b)

    def cmp(self, op: str, a, b) -> ir.Value:
        """Ordered comparison (false when either side is NaN)."""
        return self.b.fcmp_ordered(op, a, b)

    def isnan(self, a) -> ir.Value:
        return self.b.fcmp_unordered("uno", a, a)

    def poly(self, x: ir.Value, coeffs: Sequence[float]) -> ir.Value:
        """Horner: coeffs[0]·x^(n-1) + ... + coeffs[-1], one fused multiply-add per step."""
        acc = self.c(coeffs[0])
        for k in coeffs[1:]:
            acc = self.fma(acc, x, self.c(k))
        return acc

    # bit manipulation
    def to_bits(self, x):
        return self.b.bitcast(x, self.ity)

    def from_bits(self, i):
        return self.b.bitcast(i, self.ty)

    def to_int(self, x):
        return self.b.fptosi(x, self.ity)

    def to_float(self, i):
        return self.b.sitofp(i, self.ty)

    def pow2(self, n: ir.Value) -> ir.Value:
        """2^n for integer n in the normal exponent range, from exponent bits."""
        return self.from_bits(self.b.shl(self.b.add(n, self.ic(self.bias)), self.ic(self.mant)))

    def ldexp(self, p: ir.Value, n: tuple[ir.Value, ir.Value]) -> ir.Value:
        """p·2^n, n given as (float, integer), in two exact halves so results may overflow to
        inf or underflow gradually (|n| may exceed the exponent range by up to a factor of 2)."""
        nf, n = n
        if self.wide:
            return self._scalef(p, nf)
        if self.ldexp_intrinsic:
            n32 = self.b.trunc(n, vector(I32, lanes_of(self.ty))) if self.is64 else n
            fn = declare(self.b.module, f"llvm.ldexp.{type_suffix(self.ty)}."
                         f"{type_suffix(n32.type)}", self.ty, [self.ty, n32.type])
            return self.b.call(fn, [p, n32])
        n1 = self.b.ashr(n, self.ic(1))
        n2 = self.b.sub(n, n1)
        return self.mul(self.mul(p, self.pow2(n1)), self.pow2(n2))


# ---------------------------------------------------------------------------------------------
# exp / expm1


_LOG2E = 1.4426950408889634
# Cody-Waite split of ln 2: n·hi is exact for the n that occur.
_LN2_HI = {False: 0.693359375, True: 6.93147180369123816490e-01}
_LN2_LO = {False: -2.12194440e-4, True: 1.90821492927058770002e-10}
# exp(r) = 1 + r + r²·P(r), |r| ≤ ln2/2: for f32 a degree-4 P (minimax for the relative
# error of e^r, fitted by Lawson's iteration: 2^-28, one FMA less than Cephes' degree 5),
# Taylor 1/k! for f64.
_EXP_P32 = (1.3814539415761828e-3, 8.36874544620514e-3, 4.166838899254799e-2,
            1.666652113199234e-1, 4.999999403953552e-1)
_EXP_P64 = tuple(1.0 / math.factorial(k) for k in range(13, 1, -1))
# f32 pow's exp in f64 needs about 2^-30 relative: Taylor through r^9 (r^10/10! < 2^-37).
_EXP_P64_FOR_F32 = tuple(1.0 / math.factorial(k) for k in range(9, 1, -1))
# Clamps: beyond them the result is 0 / inf (exp) or -1 / inf (expm1) anyway.
_EXP_LO = {False: -104.0, True: -746.0}
_EXP_HI = {False: 89.0, True: 710.0}


def _clamp(e: _Emit, x: ir.Value, lo: float | None, hi: float | None,
           keep_nan: bool) -> ir.Value:
    """x clamped to [lo, hi] (None: that side is left open); with `keep_nan` NaN passes (one
    vmaxps/vminps each on x86, NaN the operand passed on), else maxnum/minnum drop it."""
    if lo is not None:
        x = e.select(e.cmp("<", x, e.c(lo)), e.c(lo), x) if keep_nan \
            else e.call("llvm.maxnum", x, e.c(lo))
    if hi is not None:
        x = e.select(e.cmp(">", x, e.c(hi)), e.c(hi), x) if keep_nan \
            else e.call("llvm.minnum", x, e.c(hi))
    return x


def _two_prod(e: _Emit, a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """a·b as hi + lo exactly (a fused multiply-add, never split, gives the rounding error)."""
    p = e.mul(a, b)
    return p, _fma(e, a, b, e.b.fneg(p))


def _fast_two_sum(e: _Emit, a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """a + b as hi + lo exactly, for |a| >= |b|."""
    s = e.add(a, b)
    return s, e.add(e.sub(a, s), b)


def _exp_reduce(e: _Emit, x: ir.Value, lo: float | None, hi: float | None = _EXP_HI,
                keep_nan: bool = False, coeffs: Sequence[float] | None = None,
                x_lo: ir.Value | None = None
                ) -> tuple[ir.Value, ir.Value, tuple[ir.Value, ir.Value]]:
    """Clamp x to [lo, hi] (None: the caller's x is known to be within it), then
    n = rint(x·log2 e) and r = x − n·ln2 with |r| ≤ ln2/2. Returns (r, e^r − 1, n) with n as
    (float, integer). With `keep_nan` the clamps let NaN through (one vmaxps/vminps each on
    x86, NaN the operand passed on), and so does the rest: exp needs no NaN select. `x_lo`, a
    tiny low part of the argument (f64 pow's), joins r, and r's rounding error is folded into
    e^r − 1; it is dropped where x was clamped (the result is 0 or inf there anyway)."""
    xc = _clamp(e, x, lo, None if hi is None else hi[e.is64], keep_nan)
    # rint(x·log2 e) by the round-to-integer constant 1.5·2^mant: one fused multiply-add and
    # one subtraction instead of a multiply and a (two-uop) round instruction. The integer
    # comes from the same bits (defined for NaN, unlike a float-to-int conversion).
    magic = e.c(1.5 * 2.0 ** e.mant)
    t = e.fma(xc, e.c(_LOG2E), magic)
    n = e.sub(t, magic)
    ni = e.b.sub(e.to_bits(t), e.to_bits(magic))
    r = e.fma(n, e.c(-_LN2_HI[e.is64]), xc)
    if x_lo is None:
        r = e.fma(n, e.c(-_LN2_LO[e.is64]), r)
    else:  # r − n·ln2_hi is exact, the rest small: r + r_err holds the sum exactly
        x_lo = e.select(e.cmp("==", x, xc), x_lo, e.c(0.0))  # clamped, infinite or NaN
        r, r_err = _fast_two_sum(e, r, e.fma(n, e.c(-_LN2_LO[e.is64]), x_lo))
    q = e.poly(r, coeffs or (_EXP_P64 if e.is64 else _EXP_P32))
    em1 = e.fma(q, e.mul(r, r), r)
    if x_lo is not None:  # e^(r + r_err) − 1 = em1 + r_err·(1 + em1) to first order
        em1 = e.fma(r_err, e.add(em1, e.c(1.0)), em1)
    return r, em1, (n, ni)


def _exp_hilo(e: _Emit, x: ir.Value, clamp_lo: bool = True,
              clamp_hi: bool = True) -> tuple[ir.Value, ir.Value]:
    """exp(x) as hi + lo, lo the exact rounding error of hi's last addition (NaN not handled).
    Callers that divide by 1 + exp(x) use lo to stay within one rounding of the exact value;
    those whose x cannot leave the exp range on one side skip that clamp."""
    _, em1, n = _exp_reduce(e, x, _EXP_LO[e.is64] if clamp_lo else None,
                            _EXP_HI if clamp_hi else None)
    one = e.c(1.0)
    s = e.add(one, em1)
    s_err = e.sub(em1, e.sub(s, one))  # Fast2Sum: exact since |em1| < 1
    return e.ldexp(s, n), e.ldexp(s_err, n)


# ln 2^-126: below it exp(x) is a denormal, which the explicit 16-lane exp flushes to 0.
_LN_FLT_MIN = -87.33654475055310898657
# exp(r) − 1 = r + r²·(c2 + c3·r) for |r| ≤ ln2/32 (the table form below): Taylor.
_EXP_TABLE_P32 = (1.0 / 6.0, 0.5)


def _exp_table_f32x16(e: _Emit, x: ir.Value) -> ir.Value:
    """exp of 16 f32 lanes (AVX-512) in sixteenths: x·log2 e = m + j/16 with the integer m and
    j in [0, 16), exp(x) = 2^m · 2^(j/16) · e^r, |r| ≤ ln2/32. 2^(j/16) comes from a table
    held in one register (vpermps, which reads the low four bits of each index: t's bits,
    unchanged), e^r needs a degree-3 polynomial instead of degree 6, and vscalef takes
    m + j/16 as it is (it scales by 2^floor): 12 vector instructions instead of 14.

    Results below 2^-126 flush to +0 (module note): x is clamped to ln 2^-126 first, so no
    instruction makes a denormal."""
    tiny = e.cmp("<", x, e.c(_LN_FLT_MIN))  # false for NaN
    x = _clamp(e, x, _LN_FLT_MIN, _EXP_HI[False], keep_nan=True)
    # Rounding to a multiple of 1/16 by a constant of 1.5·2^19 (its ulp is 2^-4).
    magic = e.c(1.5 * 2.0 ** 19)
    t = e.fma(x, e.c(_LOG2E), magic)
    m = e.sub(t, magic)
    # m·ln2_hi is exact: 16m has at most 12 bits, ln2_hi 9.
    r = e.fma(m, e.c(-_LN2_HI[False]), x)
    r = e.fma(m, e.c(-_LN2_LO[False]), r)
    table = ir.Constant(e.ty, [ir.Constant(ir.FloatType(), 2.0 ** (j / 16)) for j in range(16)])
    perm = declare(e.b.module, "llvm.x86.avx512.permvar.sf.512", e.ty, [e.ty, e.ity])
    scale = e.b.call(perm, [table, e.to_bits(t)])
    q = e.mul(e.fma(e.poly(r, _EXP_TABLE_P32), r, e.c(1.0)), r)  # e^r − 1
    y = e._scalef(e.fma(scale, q, scale), m)  # NaN in, NaN out
    return e.select(tiny, e.c(0.0), y)


def build_exp(e: _Emit, x: ir.Value) -> ir.Value:
    if e.wide and not e.is64:
        return _exp_table_f32x16(e, x)
    _, em1, n = _exp_reduce(e, x, _EXP_LO[e.is64], keep_nan=True)
    return e.ldexp(e.add(em1, e.c(1.0)), n)  # NaN in, NaN out


def build_expm1(e: _Emit, x: ir.Value) -> ir.Value:
    # Below lo, e^x is under half an ulp of 1: expm1 = -1.
    lo = -50.0 if e.is64 else -30.0
    _, em1, nn = _exp_reduce(e, x, lo)
    n = nn[1]
    big = e.mant + 2  # from here on 2^n - 1 rounds to 2^n: use the overflow-safe exp path
    n_small = e.b.select(e.b.icmp_signed(">", n, e.ic(big)), e.ic(big), n)
    t = e.pow2(n_small)
    small = e.fma(t, em1, e.sub(t, e.c(1.0)))
    large = e.ldexp(e.add(em1, e.c(1.0)), nn)
    y = e.select(e.b.icmp_signed(">", n, e.ic(big)), large, small)
    # n = 0 gives em1 itself (r == x): exact sign and tiny values; NaN propagates.
    return e.select(e.isnan(x), x, y)


# ---------------------------------------------------------------------------------------------
# log / log1p

_SQRT_HALF = 0.70710678118654752440
# Cephes logf: log(1+f) = f − f²/2 + f³·P(f), f in [√½ − 1, √2 − 1).
_LOG_P32 = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
            1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
            3.3333331174e-1)
# fdlibm e_log.c: R(z) = z·(Lg1 + z·(Lg2 + ... Lg7·z^6)), z = s², s = f/(2+f).
_LOG_LG64 = (1.479819860511658591e-01, 1.531383769920937332e-01, 1.818357216161805012e-01,
             2.222219843214978396e-01, 2.857142874366239149e-01, 3.999999999940941908e-01,
             6.666666666666735130e-01)


def _frexp(e: _Emit, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """x = m·2^k with m in [√½, √2) (x > 0 finite, denormals included). Returns (m − 1, k)."""
    tiny = e.cmp("<", x, e.c(2.0 ** (1 - e.bias)))
    shift = 54 if e.is64 else 25
    xs = e.select(tiny, e.mul(x, e.c(2.0 ** shift)), x)
    bits = e.to_bits(xs)
    # frexp: m in [0.5, 1), exponent field minus (bias - 1).
    k = e.b.sub(e.b.lshr(bits, e.ic(e.mant)), e.ic(e.bias - 1))
    k = e.b.sub(k, e.b.select(tiny, e.ic(shift), e.ic(0)))
    mant_mask = (1 << e.mant) - 1
    half_bits = (e.bias - 1) << e.mant
    m = e.from_bits(e.b.or_(e.b.and_(bits, e.ic(mant_mask)), e.ic(half_bits)))
    # Fold m into [√½, √2): both branches are exact (Sterbenz).
    low = e.cmp("<", m, e.c(_SQRT_HALF))
    f = e.select(low, e.sub(e.add(m, m), e.c(1.0)), e.sub(m, e.c(1.0)))
    k = e.b.sub(k, e.b.select(low, e.ic(1), e.ic(0)))
    return f, e.to_float(k)


def _log_core(e: _Emit, x: ir.Value, corr: ir.Value | None = None) -> ir.Value:
    """log(x) + corr for finite x > 0, where corr is a tiny correction (log1p's err/u)."""
    f, k = _frexp(e, x)
    corr = corr if corr is not None else e.c(0.0)
    if e.is64:
        s = e.div(f, e.add(e.c(2.0), f))
        z = e.mul(s, s)
        r = e.mul(z, e.poly(z, _LOG_LG64))
        hfsq = e.mul(e.c(0.5), e.mul(f, f))
        small = e.fma(s, e.add(hfsq, r), e.fma(k, e.c(_LN2_LO[True]), corr))
        return e.fma(k, e.c(_LN2_HI[True]), e.sub(f, e.sub(hfsq, small)))
    z = e.mul(f, f)
    y = e.mul(e.mul(e.poly(f, _LOG_P32), f), z)
    y = e.fma(k, e.c(_LN2_LO[False]), y)
    y = e.fma(z, e.c(-0.5), y)
    y = e.add(y, corr)
    return e.fma(k, e.c(_LN2_HI[False]), e.add(f, y))


def _log_specials(e: _Emit, x: ir.Value, y: ir.Value, zero_at: float = 0.0) -> ir.Value:
    """inf for +inf, -inf at `zero_at`, NaN below it or for NaN."""
    y = e.select(e.cmp("==", x, e.c(math.inf)), x, y)
    y = e.select(e.cmp("==", x, e.c(zero_at)), e.c(-math.inf), y)
    return e.select(e.b.fcmp_unordered("<", x, e.c(zero_at)), e.c(math.nan), y)


def build_log(e: _Emit, x: ir.Value) -> ir.Value:
    return _log_specials(e, x, _log_core(e, x))


def build_log1p(e: _Emit, x: ir.Value, x_lo: ir.Value | None = None) -> ir.Value:
    """log(1 + x + x_lo), x_lo an optional tiny low part of the argument (softplus)."""
    one = e.c(1.0)
    u = e.add(one, x)
    # The exact rounding error of 1 + x (Fast2Sum, larger operand first).
    err = e.select(e.cmp(">", x, one), e.sub(one, e.sub(u, x)), e.sub(x, e.sub(u, one)))
    if x_lo is not None:
        err = e.add(err, x_lo)
    y = _log_core(e, u, e.div(err, u))
    y = e.select(e.cmp("==", x, e.c(0.0)), x, y)  # keeps -0
    return _log_specials(e, x, y, zero_at=-1.0)


# ---------------------------------------------------------------------------------------------
# tanh, sigmoid, softplus

# Cephes tanhf: tanh(x) = x + x·z·P(z), z = x², |x| < 0.625.
_TANH_P32 = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
             -3.33332819422e-1)
# Cephes tanh (double): tanh(x) = x + x·z·P(z)/Q(z), Q monic, |x| < 0.625.
_TANH_P64 = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH_Q64 = (1.0, 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)


def _div_plus_one(e: _Emit, num: ir.Value, num_lo: ir.Value, hi: ir.Value, lo: ir.Value,
                  hi_ge_one: bool) -> ir.Value:
    """(num + num_lo) / (1 + hi + lo) within about one rounding: the division residual and the
    rounding errors of 1 + hi and of hi itself are folded into one correction."""
    one = e.c(1.0)
    d = e.add(one, hi)
    d_err = e.sub(one, e.sub(d, hi)) if hi_ge_one else e.sub(hi, e.sub(d, one))  # Fast2Sum
    d_err = e.add(d_err, lo)
    # One division: q need not be the rounded quotient, the exact residual num - q·d corrects
    # it, and the correction only needs a rough 1/d.
    rcp = e.rough_rcp(d)
    q = e.mul(num, rcp)
    res = e.add(e.fma(e.sub(e.c(0.0), q), d, num), num_lo)
    res = e.fma(e.sub(e.c(0.0), q), d_err, res)
    return e.fma(res, rcp, q)


def _div_plus_one_f32(e: _Emit, num: ir.Value, ex: ir.Value, fold_d_err: bool) -> ir.Value:
    """num / (1 + ex) for f32 without the low parts: the rough reciprocal's quotient
    corrected once by its exact residual. exp's own error (< 1 ulp) then reaches the result
    damped by ex/(1 + ex) (sigmoid, x > 0) or undamped (sigmoid, x < 0: about 1.5 ulp at
    most), for about half the instructions of `_div_plus_one`. `fold_d_err` adds the rounding
    error of 1 + ex (ex <= 1) to the residual: sigmoid needs it, tanh's quotient (at most
    0.23 of its result) does not."""
    one = e.c(1.0)
    d = e.add(one, ex)
    rcp = e.rough_rcp(d)
    q = e.mul(num, rcp)
    nq = e.b.fneg(q)
    res = e.fma(nq, d, num)
    if fold_d_err:
        # Sigmoid: 1 + ex's rounding error (Fast2Sum) would otherwise take it to 2 ulp.
        res = e.fma(nq, e.sub(ex, e.sub(d, one)), res)
    return e.fma(res, rcp, q)


def _exp_neg_abs_f32(e: _Emit, x: ir.Value) -> tuple[ir.Value, tuple[ir.Value, ir.Value]]:
    """e^{−|x|} = 2^n·(1 + em1) for f32 sigmoid and tanh, as (em1, n); NaN passes through.
    Both functions build it from the same instructions, so where a kernel computes sigmoid(x)
    and tanh(x) of the same x, LLVM's CSE evaluates it once."""
    _, em1, n = _exp_reduce(e, e.b.fneg(e.abs(x)), _EXP_LO[False], None, keep_nan=True)
    return em1, n


def _tanh_big_f32(e: _Emit, x: ir.Value) -> ir.Value:
    """tanh(|x|) for |x| >= 0.625 as (1 − e²)/(1 + e²), e = e^{−|x|} from the shared exp:
    e² = 2^{2n}·(1 + em1)², with (1 + em1)² = 1 + em1·(em1 + 2) rounded once (as accurate as
    an exp of its own); its error reaches tanh damped by 2e²/(1 − e⁴) ≤ 0.63."""
    em1, (nf, ni) = _exp_neg_abs_f32(e, x)
    em2 = e.fma(em1, em1, e.add(em1, em1))
    n2i = e.b.add(ni, ni)
    if not (e.wide or e.ldexp_intrinsic):
        # 2n reaches −300; the two-halves scaling needs it >= −252 (e² underflows anyway).
        n2i = e.b.select(e.b.icmp_signed("<", n2i, e.ic(-252)), e.ic(-252), n2i)
    e2 = e.ldexp(e.add(em2, e.c(1.0)), (e.add(nf, nf), n2i))
    # 1 − 2·e²/(1 + e²): the rounding of 1 + e² reaches the quotient, at most 0.23 of the
    # result, instead of all of it as in (1 − e²)/(1 + e²).
    q = _div_plus_one_f32(e, e2, e2, fold_d_err=False)
    return e.fma(q, e.c(-2.0), e.c(1.0))


# bits(2^-4) >> 21 less one: (bits(|x|) >> 21) minus it is the table interval of |x| (module
# `math_coefficients`): 0 below 2^-4, then one per quarter binade.
_TANH_TABLE_BASE = (123 << 2) - 1


def _tanh_table_f32x16(e: _Emit, x: ir.Value) -> ir.Value:
    """tanh of 16 f32 lanes (AVX-512) by table: |x| (clamped where tanh rounds to 1) picks one
    of 30 intervals from its exponent and top two mantissa bits, and tanh(|x|) = P(|x| − m)
    there, P of degree 6 (`math_coefficients`). Each coefficient comes from a two-register table
    by vpermi2ps, which reads the low five bits of the index. No exp, no division: 21 vector
    instructions where the exp form takes about 35, and fewer than half on the FMA pipes.

    NaN passes (the clamp keeps it; its interval is arbitrary, the arithmetic NaN); ±0 and
    denormals come back as they are (interval 0 has P(0) = 0 and P'(0) = 1)."""
    a = _clamp(e, e.abs(x), None, TANH_TABLE_CLAMP, keep_nan=True)
    idx = e.b.sub(e.b.lshr(e.to_bits(a), e.ic(21)), e.ic(_TANH_TABLE_BASE))
    idx = e.b.select(e.b.icmp_signed("<", idx, e.ic(0)), e.ic(0), idx)
    perm = declare(e.b.module, "llvm.x86.avx512.vpermi2var.ps.512", e.ty,
                   [e.ty, e.ity, e.ty])

    def table(values: Sequence[float]) -> ir.Value:
        lo, hi = (ir.Constant(e.ty, [ir.Constant(ir.FloatType(), v) for v in half])
                  for half in (values[:16], values[16:]))
        return e.b.call(perm, [lo, idx, hi])

    t = e.sub(a, table(TANH_TABLE_MID))
    y = table(TANH_TABLE_P[0])
    for coeffs in TANH_TABLE_P[1:]:
        y = e.fma(y, t, table(coeffs))
    return e.call("llvm.copysign", y, x)


def build_tanh(e: _Emit, x: ir.Value) -> ir.Value:
    if e.wide and not e.is64:
        return _tanh_table_f32x16(e, x)
    return build_tanh_exp(e, x)


def build_tanh_exp(e: _Emit, x: ir.Value) -> ir.Value:
    """tanh from e^{−|x|}: f32 builds it from the same instructions as sigmoid, so a kernel
    computing both of one x evaluates one exp (the lowering picks this form there)."""
    ax = e.abs(x)
    if not e.is64:
        # Both branches on |x|, the sign put back once: copysign keeps −0 and NaN (the small
        # branch maps +0 to +0, the big one lets NaN through), so no select for them.
        z = e.mul(ax, ax)
        small = e.fma(e.mul(e.poly(z, _TANH_P32), z), ax, ax)
        y = e.select(e.cmp("<", ax, e.c(0.625)), small, _tanh_big_f32(e, x))
        return e.call("llvm.copysign", y, x)
    z = e.mul(x, x)
    pq = e.div(e.poly(z, _TANH_P64), e.poly(z, _TANH_Q64))
    small = e.fma(e.mul(pq, z), x, x)
    # |x| >= 0.625: 1 - 2/(e^{2|x|} + 1); beyond 20 tanh rounds to 1 in f32 and f64.
    a = e.select(e.cmp("<", ax, e.c(20.0)), ax, e.c(20.0))
    hi, lo = _exp_hilo(e, e.add(a, a), clamp_lo=False, clamp_hi=False)  # 2a in [0, 40]
    t = _div_plus_one(e, e.c(2.0), e.c(0.0), hi, lo, hi_ge_one=True)
    big = e.sub(e.c(1.0), t)
    big = e.call("llvm.copysign", big, x)
    y = e.select(e.cmp("<", ax, e.c(0.625)), small, big)
    return e.select(e.b.fcmp_unordered("==", x, e.c(0.0)), x, y)  # NaN and ±0 pass through


def build_sigmoid(e: _Emit, x: ir.Value) -> ir.Value:
    # e^-|x| in (0, 1]: never overflows; -|x| as one sign-bit or
    pos = e.cmp(">=", x, e.c(0.0))
    if e.is64:
        hi, lo = _exp_hilo(e, e.b.fneg(e.abs(x)), clamp_hi=False)
        num = e.select(pos, e.c(1.0), hi)
        num_lo = e.select(pos, e.c(0.0), lo)
        y = _div_plus_one(e, num, num_lo, hi, lo, hi_ge_one=False)
        return e.select(e.isnan(x), x, y)
    em1, n = _exp_neg_abs_f32(e, x)
    ex = e.ldexp(e.add(em1, e.c(1.0)), n)
    # NaN: ex is NaN and so is the quotient (pos is false).
    return _div_plus_one_f32(e, e.select(pos, e.c(1.0), ex), ex, fold_d_err=True)


def build_softplus(e: _Emit, x: ir.Value) -> ir.Value:
    pos = e.select(e.cmp(">", x, e.c(0.0)), x, e.c(0.0))
    hi, lo = _exp_hilo(e, e.sub(e.c(0.0), e.abs(x)))
    y = e.add(pos, build_log1p(e, hi, lo))
    return e.select(e.isnan(x), x, y)


# ---------------------------------------------------------------------------------------------
# erf (coefficients and their fit: `math_coefficients`)


def build_erf(e: _Emit, x: ir.Value) -> ir.Value:
    dt = "f64" if e.is64 else "f32"
    ax = e.abs(x)
    small = e.fma(ax, e.poly(e.mul(ax, ax), ERF_SMALL[dt]), ax)
    # minnum drops NaN here: a NaN lane takes the small branch, which keeps it.
    t = e.call("llvm.minnum", ax, e.c(ERF_CLAMP[dt]))
    # P(t) lies in [-38, -1.8]: exp needs no clamps and 2^n is a normal number.
    # 1 − erfc = (1 − 2^n) − 2^n·em1 in one rounding (f32 max error 0.99 instead of 1.13 ulp
    # with erfc rounded first). 1 − 2^n is exact down to n = −mant − 1; below, erfc is under
    # 0.71 ulp of 1 and the result is 1, off by that much at most.
    _, em1, (_, n) = _exp_reduce(e, e.poly(t, ERF_BIG[dt]), None, None)
    scale = e.pow2(n)
    big = e.fma(e.b.fneg(scale), em1, e.sub(e.c(1.0), scale))
    y = e.select(e.cmp(">=", ax, e.c(ERF_SPLIT)), big, small)
    return e.call("llvm.copysign", y, x)  # odd; keeps -0, and NaN passes


# ---------------------------------------------------------------------------------------------
# pow, rsqrt


# 2·atanh(s) = 2s + s³·(2/3 + z·Q(z)), z = s², Q's coefficients 2/5 ... 2/27: for |s| ≤ 0.1716
# (f in [√½ − 1, √2 − 1)) the next term is below 2^-69 of the sum. 2/3 is carried as hi + lo.
_ATANH_Q64 = tuple(2.0 / (2 * k + 1) for k in range(13, 1, -1))
_TWO_THIRDS = 2.0 / 3.0
_TWO_THIRDS_LO = float(Fraction(2, 3) - Fraction(_TWO_THIRDS))


def _log_dd_f64(e: _Emit, ax: ir.Value) -> tuple[ir.Value, ir.Value]:
    """log(ax) as hi + lo for finite ax > 0, with over ten bits beyond f64's 53 (f64 pow's
    argument: y·log x reaches ±745, and every bit the log loses there is an ulp of the result;
    pow within 1.18 ulp at |y·ln x| near 700 puts the log's relative error below 2^-62).

    ax = 2^k·(1 + f); log(1 + f) = 2·atanh(s), s = f/(2 + f) with its exact residual folded in
    as s_lo; s³ and the series' leading coefficient carried as hi + lo, the rest of the series
    (at most 0.3 % of s³'s term) in plain f64; k·ln2 from the two-part constant (k·ln2_hi
    exact)."""
    f, k = _frexp(e, ax)
    u = e.add(e.c(2.0), f)
    s = e.div(f, u)
    two_s = e.add(s, s)
    # f − s·(2 + f) = (f − 2s) − s·f: f − 2s is exact (Sterbenz), the fma rounds once.
    s_lo = e.div(_fma(e, e.b.fneg(s), f, e.sub(f, two_s)), u)
    z, z_lo = _two_prod(e, s, s)
    w, w_lo = _two_prod(e, s, z)
    w_lo = e.fma(s, z_lo, w_lo)
    q, q_lo = _fast_two_sum(e, e.c(_TWO_THIRDS), e.mul(z, e.poly(z, _ATANH_Q64)))
    q_lo = e.add(q_lo, e.c(_TWO_THIRDS_LO))
    t, t_lo = _two_prod(e, w, q)
    t_lo = e.fma(w, q_lo, e.fma(w_lo, q, t_lo))
    a, a_lo = _fast_two_sum(e, two_s, t)
    # 2·atanh(s + s_lo) = 2·atanh(s) + 2·s_lo·(1 + s²) to first order.
    two_s_lo = e.add(s_lo, s_lo)
    lo = e.add(e.add(a_lo, t_lo), e.fma(two_s_lo, z, two_s_lo))
    lo = e.fma(k, e.c(_LN2_LO[True]), lo)
    # k·ln2_hi (exact) + a: either may be the larger, so the full two-sum.
    hi, err = _two_sum(e, e.mul(k, e.c(_LN2_HI[True])), a)
    return _fast_two_sum(e, hi, e.add(lo, err))


def _pow_abs_f64(e: _Emit, x: ir.Value, y: ir.Value) -> ir.Value:
    """|x|^y = exp(y·log|x|) for f64 with the log and the product as hi + lo, the low part
    added to exp's reduced argument: within about one ulp for every |y·log x| up to the
    overflow bound (a plain f64 log lost up to |y·ln x|·2^-53, a thousand ulps near 700)."""
    ax = e.abs(x)
    lh, ll = _log_dd_f64(e, ax)
    lh = _log_specials(e, ax, lh)  # ±inf and NaN: the low parts are dropped below
    p, p_lo = _two_prod(e, y, lh)
    _, em1, n = _exp_reduce(e, p, _EXP_LO[True], keep_nan=True, x_lo=e.fma(y, ll, p_lo))
    return e.ldexp(e.add(em1, e.c(1.0)), n)


def _log_for_f32_pow(e: _Emit, ax: ir.Value) -> ir.Value:
    """log(ax) in f64 to about 2^-40 relative, all f32 pow needs (y·log x below 2^7 in
    magnitude where the result is finite): k·ln2 + 2s + s³·(2/3 + ... + z^5·2/13)."""
    f, k = _frexp(e, ax)
    s = e.div(f, e.add(e.c(2.0), f))
    z = e.mul(s, s)
    y = e.fma(e.mul(s, z), e.poly(z, _ATANH_Q64[-5:] + (_TWO_THIRDS,)), e.add(s, s))
    return e.fma(k, e.c(_LN2_HI[True] + _LN2_LO[True]), y)


def build_pow(e: _Emit, x: ir.Value, y: ir.Value) -> ir.Value:
    if e.is64:
        r = _pow_abs_f64(e, x, y)
    else:
        # f32: evaluate exp(y·log|x|) in f64, where the amplified log error is harmless.
        e64 = _Emit(e.b, vector(F64, lanes_of(e.ty)))
        ax = e.b.fpext(e.abs(x), e64.ty)
        t = e64.mul(e.b.fpext(y, e64.ty), _log_specials(e64, ax, _log_for_f32_pow(e64, ax)))
        _, em1, n = _exp_reduce(e64, t, _EXP_LO[True], keep_nan=True, coeffs=_EXP_P64_FOR_F32)
        r = e.b.fptrunc(e64.ldexp(e64.add(em1, e64.c(1.0)), n), e.ty)
    return _pow_specials(e, x, y, r)


def _pow_specials(e: _Emit, x: ir.Value, y: ir.Value, r: ir.Value) -> ir.Value:
    """C99 pow special cases on top of r = |x|^y."""
    b = e.b
    y_int = e.cmp("==", e.call("llvm.floor", y), y)  # true for ±inf, false for NaN
    half = e.mul(y, e.c(0.5))
    y_odd = b.and_(y_int, e.cmp("!=", e.call("llvm.floor", half), half))
    x_sign = b.icmp_signed("<", e.to_bits(x), e.ic(0))  # -0 and -inf included
    r = e.select(b.and_(x_sign, y_odd), e.sub(e.c(0.0), r), r)
    neg_finite = b.and_(e.cmp("<", x, e.c(0.0)), e.cmp(">", x, e.c(-math.inf)))
    r = e.select(b.and_(neg_finite, b.not_(y_int)), e.c(math.nan), r)
    y_inf = e.cmp("==", e.abs(y), e.c(math.inf))
    r = e.select(b.and_(e.cmp("==", x, e.c(-1.0)), y_inf), e.c(1.0), r)
    r = e.select(e.cmp("==", x, e.c(1.0)), e.c(1.0), r)
    return e.select(e.cmp("==", y, e.c(0.0)), e.c(1.0), r)


def build_rsqrt(e: _Emit, x: ir.Value) -> ir.Value:
    return e.div(e.c(1.0), e.call("llvm.sqrt", x))


_BUILDERS: dict[str, Callable[..., ir.Value]] = {
    "exp": build_exp, "expm1": build_expm1, "log": build_log, "log1p": build_log1p,
    "tanh": build_tanh, "tanh_exp": build_tanh_exp, "sigmoid": build_sigmoid,
    "softplus": build_softplus, "erf": build_erf,
    "pow": build_pow, "rsqrt": build_rsqrt,
    "sin": lambda e, x: build_sincos(e, x, cos=False),
    "cos": lambda e, x: build_sincos(e, x, cos=True), "atan": build_atan,
}


def math_function_name(name: str, dtype: str, lanes: int = 1) -> str:
    """The symbol `emit_math` gives a function: graphc.math.exp.f32, graphc.math.exp.v16f32."""
    return f"graphc.math.{name}.{'v' + str(lanes) if lanes > 1 else ''}{dtype}"


def emit_math(module: ir.Module, name: str, dtype: str = "f32", lanes: int = 1) -> ir.Function:
    """Declare (once per module) and return the math function `name` on `dtype` ("f32"/"f64"),
    scalar or `<lanes x dtype>`: `float name(float)` (`pow` takes two arguments).

    The function is `internal alwaysinline`: call it from a loop body and the optimizer inlines
    it, then vectorizes the loop. No libm call is ever emitted.
    """
    if name not in _BUILDERS:
        raise GraphError(f"no LLVM math function {name!r} (have {', '.join(MATH_FUNCTIONS)})")
    if dtype not in ("f32", "f64"):
        raise GraphError(f"LLVM math function {name!r} is defined for f32 and f64, not {dtype!r}")
    sym = math_function_name(name, dtype, lanes)
    existing = module.globals.get(sym)
    if existing is not None:
        return existing
    fty = vector(llvm_type(dtype), lanes)
    fn = ir.Function(module, ir.FunctionType(fty, [fty] * _ARITY.get(name, 1)), name=sym)
    fn.linkage = "internal"
    for attr in ("alwaysinline", "nounwind", "readnone", "norecurse"):
        fn.attributes.add(attr)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(_BUILDERS[name](_Emit(builder, fty), *fn.args))
    return fn


def emit_math_inline(builder: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Emit math function `name` directly at the builder's position (no call), on the type of
    `args[0]` (f32/f64, scalar or vector). Used by epilogues working on vectors."""
    if name not in _BUILDERS:
        raise GraphError(f"no LLVM math function {name!r} (have {', '.join(MATH_FUNCTIONS)})")
    return _BUILDERS[name](_Emit(builder, args[0].type), *args)
