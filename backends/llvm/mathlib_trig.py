"""sin, cos and atan for `mathlib`: branch-free, vectorizable, accurate over the whole float
range.

Note: argument reduction
------------------------
sin and cos of |x| are evaluated as ±sin(r) or ±cos(r) with r = |x| − q·π/2, |r| ≤ π/4 and the
quadrant q mod 4 choosing the function and the sign (sin is odd: its sign is put back as the
input's sign bit, which keeps −0 and NaN; cos is even). What makes this hard is r: |x| may be
huge, and |x| close to a multiple of π/2 leaves a tiny r whose relative accuracy needs many
more bits of π than a double holds.

* f32 reduces in f64. Below 2^45, q = rint(|x|·2/π) is the nearest integer give or
  take 2^-8 (the rounding of the product), so |r| stays within π/4 + 2^-7, and
  r = |x| − q·(P1 + P2 + P3) (π/2 split into three doubles) takes three fused multiply-adds;
  the first is exact (both terms are multiples of 2^-52 and the difference is below 2), the
  others leave an error of about 2^-52 relative to r: far below f32's ulp. r then becomes an
  f32 pair (hi, lo) and the polynomials run in f32, twice the lanes per register of f64
  (4M points, one thread: 5.2 -> 4.1 ms; 0.50 -> 0.77 ulp).
* From 2^45 on (to f32's largest value), |x| = m·2^k with a 24-bit integer m and
  k ≥ 22. Because m is an integer, (|x|·2/π) mod 4 = m·((2^k·2/π) mod 4) mod 4 (Payne and
  Hanek's reduction), and (2^k·2/π) mod 4 is 2/π's bit string from bit k − 1 on: three
  pieces of it, cut out of four 64-bit constant words by shifts, make exact products with m,
  the integer part is dropped exactly, and the fraction carries 81 bits below the point.
* f64 below 2^45 takes the same q and r as a double-double: |x| − q·P1 is
  exact, q·P2 is split exactly by one more FMA and the sums are error-free (TwoSum), q·P3 is
  added to the low part. The reduced argument is off by about 2^-106 in absolute terms, so
  the result stays within an ulp unless |x| lies within about 2^-50 of a multiple of π/2
  (a handful of doubles; r loses bits there). From 2^45 on, the same reduction as f32's
  takes over, with m split into two 26-bit halves and six 26-bit pieces of 2/π looked up in
  a table indexed by k (`reduction_table`; 980 exponents are too many for shifts of
  constant words). Every product is exact; the sums are error-free, with the integer part
  peeled off as they go.

The table reduction runs only where a lane needs it. Branch-free code would run both paths
for every lane (f32 over 4M points in [−10, 10], one thread: 8.6 ms, of which the direct
path alone 5 ms; f64 40 ms). Instead the scalar function branches to `huge_function`, kept a
call (`noinline`), and that function names masked vector variants of itself for 2 to 16 lanes
in LLVM's `vector-function-abi-variant` attribute. Widening the loop, the vectorizer calls
the variant of its width with the mask of lanes at or above 2^45; the variant returns at once
when no bit is set. Explicit vectors call the variant of their width directly. Same 4M points:
f32 5.2 ms (with the polynomials in f64; 4.1 ms in f32, above), f64 7.3 ms (numpy: 2.1 and
65 ms); the branch changes no result.

The polynomials are Taylor series (coefficients 1/n!): through r^9 / r^10 for f32 (below
2^-28 of the result; r^11 / r^12 in f64 for the table reduction's lanes) and r^17 / r^18 for
f64 (below 2^-62), with the low
part of r folded in as sin(h + l) ≈ sin h + l·cos h, cos(h + l) ≈ cos h − l·sin h.
Measured (`mathlib_accuracy`, dense grids, random bit patterns up to the largest float):
f32 within 0.77 ulp, f64 within 0.80 ulp.

atan reduces |x| around the nearest of tan(kπ/8), k = 0..3: t = (|x| − c)/(1 + |x|·c), or
t = −1/|x| beyond tan(7π/16), so |t| ≤ tan(π/16), and adds atan(c) (π/2 for the last) as a
double-double to t + t·z·Q(z), z = t², Q minimax (`math_coefficients.ATAN_Q`, degree 3 for
f32 in f64, 7 for f64). f64 carries t's rounding errors (the numerator's by TwoSum, the
denominator's by one more FMA, the quotient's residual) and adds base and t error-free:
within 0.51 ulp (f64) and 0.50 ulp (f32).

All constants (the pieces of π/2, the bits of 2/π, atan at the centres) are computed from an
exact integer expansion of π (`math_constants`), not copied.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ..math_constants import (
    ATAN_BREAKS,
    ATAN_CENTRES,
    PIO2,
    TWO_OVER_PI,
    atan_bases,
    reduction_table,
    two_over_pi_words,
)
from .llvm_ir import F64, I32, I64, intrinsic, lanes_of, splat, vector

# From 2^45 on, |x|·2/π rounded to a double may be off by over 2^-8, and q with it: the table
# reduction takes over. f32: k = exponent − 150 runs from 22 to 104 (the largest finite float);
# f64: k = exponent − 1075 from −7 to 971, table pieces of 26 bits, six of them.
DIRECT_MAX = 2.0 ** 45
F32_K = (22, 104)
F64_TABLE = (-7, 971, 26, 6)

# Taylor coefficients, highest order first (Horner in r²).
_SIN32 = tuple((-1) ** n / math.factorial(2 * n + 1) for n in range(5, 0, -1))   # r^11 .. r^3
_COS32 = tuple((-1) ** n / math.factorial(2 * n) for n in range(6, 1, -1))       # r^12 .. r^4
# Evaluated in f32 (the direct path): the next terms are below 2^-28 of the result.
_SIN32_F = _SIN32[1:]   # r^9 .. r^3
_COS32_F = _COS32[1:]   # r^10 .. r^4
_SIN64 = tuple((-1) ** n / math.factorial(2 * n + 1) for n in range(8, 0, -1))   # r^17 .. r^3
_COS64 = tuple((-1) ** n / math.factorial(2 * n) for n in range(9, 1, -1))       # r^18 .. r^4


# -- IR helpers ---------------------------------------------------------------------------------


def _fma(e, a, b, c):
    """A fused multiply-add that is never split: the error-free steps rely on one rounding."""
    return e.b.call(intrinsic(e.b.module, "llvm.fma", e.ty), [a, b, c])


def _two_sum(e, a, b):
    """(s, err) with s = fl(a + b) and s + err = a + b exactly (Knuth)."""
    s = e.add(a, b)
    bb = e.sub(s, a)
    err = e.add(e.sub(a, e.sub(s, bb)), e.sub(b, bb))
    return s, err


def _table(module: ir.Module, name: str, values: tuple[float, ...]) -> ir.GlobalVariable:
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    ty = ir.ArrayType(F64, len(values))
    g = ir.GlobalVariable(module, ty, name=name)
    g.initializer = ir.Constant(ty, [ir.Constant(F64, v) for v in values])
    g.global_constant = True
    g.linkage = "internal"
    return g


def _gather(e, table: ir.GlobalVariable, idx: ir.Value) -> ir.Value:
    """table[idx] lane by lane (what the loop vectorizer makes of the scalar form too: it
    judges a gather slower than separate loads)."""
    b = e.b
    zero = ir.Constant(I64, 0)
    lanes = lanes_of(e.ty)
    if lanes == 1:
        return b.load(b.gep(table, [zero, idx], inbounds=True))
    out = ir.Constant(e.ty, ir.Undefined)
    for lane in range(lanes):
        i = b.extract_element(idx, ir.Constant(I32, lane))
        out = b.insert_element(out, b.load(b.gep(table, [zero, i], inbounds=True)),
                               ir.Constant(I32, lane))
    return out


def _clamp_index(e, k: ir.Value, lo: int, hi: int) -> ir.Value:
    b = e.b
    k = b.select(b.icmp_signed("<", k, e.ic(lo)), e.ic(lo), k)
    return b.select(b.icmp_signed(">", k, e.ic(hi)), e.ic(hi), k)


def _table_pieces(e, k: ir.Value, spec: tuple[int, int, int, int], tag: str) -> list[ir.Value]:
    """The pieces of (2^k·2/π) mod 4 for each lane, loaded from `reduction_table`."""
    k_lo, k_hi, _, pieces = spec
    idx = e.b.sub(_clamp_index(e, k, k_lo, k_hi), e.ic(k_lo))
    tables = reduction_table(*spec)
    return [_gather(e, _table(e.b.module, f"graphc.math.two_over_pi.{tag}.{j}", tables[j]), idx)
            for j in range(pieces)]


def _reduce_f32_huge(e, bits32: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """Payne-Hanek for f32 lanes from 2^45 on, in f64 lanes (`e`): |x| = m·2^k with a 24-bit
    m and (2^k·2/π) mod 4 = t0 + t1 + t2, 2/π's bit string from bit k − 1 on (bit i weighing
    2^-i) cut into 28, 27 and 28 bits by shifts of four 64-bit words of it (k ≤ 104 keeps
    them within the first 256 bits; the vectorizer would load a table lane by lane, judging
    gathers too slow). m·t0 (52 bits), m·t1 (51) and m·t2 are exact; m·t0 minus its integer
    part plus m·t1 is exact too (a multiple of 2^-53 below 1), so the fraction's only
    rounding is the final one: about 2^-58 absolute, far below f32's needs."""
    b = e.b
    k = b.sext(b.sub(b.lshr(bits32, splat(bits32.type, 23)), splat(bits32.type, 150)),
               e.ity)
    m = b.sitofp(b.or_(b.and_(bits32, splat(bits32.type, (1 << 23) - 1)),
                       splat(bits32.type, 1 << 23)), e.ty)
    s = b.sub(_clamp_index(e, k, *F32_K), e.ic(2))  # bit k − 1, from 0
    words = [e.ic(w) for w in two_over_pi_words(4)]
    first = b.icmp_signed("<", s, e.ic(64))
    w0, w1, w2 = (b.select(first, words[j], words[j + 1]) for j in range(3))
    sh = b.and_(s, e.ic(63))
    back = b.sub(e.ic(63), sh)

    def funnel(a, c):  # the 64 bits from bit `sh` of a on, then c's (no shift by 64)
        return b.or_(b.shl(a, sh), b.lshr(b.lshr(c, e.ic(1)), back))

    hi, lo = funnel(w0, w1), funnel(w1, w2)
    t0 = b.lshr(hi, e.ic(36))
    t1 = b.and_(b.lshr(hi, e.ic(9)), e.ic((1 << 27) - 1))
    t2 = b.or_(b.shl(b.and_(hi, e.ic((1 << 9) - 1)), e.ic(19)), b.lshr(lo, e.ic(45)))
    p0 = e.mul(m, e.mul(e.to_float(t0), e.c(2.0 ** -26)))
    n0 = e.call("llvm.rint", p0)
    s1 = e.add(e.sub(p0, n0), e.mul(m, e.mul(e.to_float(t1), e.c(2.0 ** -53))))
    n1 = e.call("llvm.rint", s1)
    frac = e.sub(s1, n1)
    tail = e.mul(m, e.mul(e.to_float(t2), e.c(2.0 ** -81)))
    r_hi, r_lo = _times_pio2(e, frac, tail)
    return r_hi, r_lo, e.to_int(e.add(n0, n1))


def _table_reduce(e, mparts: list[tuple[ir.Value, int]], t: list[ir.Value], bits: int
                  ) -> tuple[ir.Value, ir.Value, ir.Value]:
    """Payne-Hanek in f64 lanes (`e` an f64 emitter): |x| = (Σ m)·2^k over `mparts`, pairs of
    an integer-valued double short enough that its product with a piece of `t` (the pieces
    of (2^k·2/π) mod 4, `bits` long) is exact and the exponent of its lowest bit. Returns
    (r_hi, r_lo, quadrant as integer lanes) with r_hi + r_lo = frac·π/2, |frac| ≤ 1/2."""
    # Every product m·t_j is exact, and so is its reduction mod 4 (|p| ≤ 2 after it). They
    # are summed from the coarsest lowest bit down, each sum error-free (TwoSum) with its
    # integer part peeled off into the quadrant at once, so the running fraction stays within
    # ±1/2 and the rounding errors, collected in `lo`, stay near 2^-105.
    terms = sorted(((lsb + 2 - bits * (j + 1), m, tj) for m, lsb in mparts
                    for j, tj in enumerate(t)), key=lambda term: -term[0])
    quad = hi = lo = e.c(0.0)
    for _, m, tj in terms:
        p = e.mul(m, tj)
        p = e.sub(p, e.mul(e.c(4.0), e.call("llvm.rint", e.mul(p, e.c(0.25)))))
        s, err = _two_sum(e, hi, p)
        n = e.call("llvm.rint", s)
        quad, hi, lo = e.add(quad, n), e.sub(s, n), e.add(lo, err)
    hi, lo = _two_sum(e, hi, lo)
    n = e.call("llvm.rint", hi)  # the low part may have carried |hi| past 1/2
    quad, hi = e.add(quad, n), e.sub(hi, n)
    hi, lo = _two_sum(e, hi, lo)
    return _times_pio2(e, hi, lo) + (e.to_int(quad),)


def _times_pio2(e, hi: ir.Value, lo: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(hi + lo)·π/2 as a double-double."""
    r_hi = e.mul(hi, e.c(PIO2[0]))
    r_lo = e.add(_fma(e, hi, e.c(PIO2[0]), e.b.fneg(r_hi)),
                 _fma(e, lo, e.c(PIO2[0]), e.mul(hi, e.c(PIO2[1]))))
    return r_hi, r_lo


def _direct_reduce(e, ax: ir.Value, double_double: bool
                   ) -> tuple[ir.Value, ir.Value, ir.Value]:
    """Cody-Waite in f64 lanes for |x| below 2^45: (r_hi, r_lo, quadrant)."""
    q = e.call("llvm.rint", e.mul(ax, e.c(TWO_OVER_PI)))
    nq = e.b.fneg(q)
    r1 = _fma(e, nq, e.c(PIO2[0]), ax)  # exact (module note)
    if not double_double:
        r = _fma(e, nq, e.c(PIO2[2]), _fma(e, nq, e.c(PIO2[1]), r1))
        return r, e.c(0.0), e.to_int(q)
    th = e.mul(q, e.c(PIO2[1]))
    tl = _fma(e, q, e.c(PIO2[1]), e.b.fneg(th))
    s, err = _two_sum(e, r1, e.b.fneg(th))
    lo = _fma(e, nq, e.c(PIO2[2]), e.sub(err, tl))
    r_hi, r_lo = _two_sum(e, s, lo)
    return r_hi, r_lo, e.to_int(q)


def _kernel(e, r: ir.Value, r_lo: ir.Value, quad: ir.Value, cos: bool,
            coeffs: tuple[tuple[float, ...], tuple[float, ...]]) -> ir.Value:
    """±sin(r) or ±cos(r) by quadrant, with the low part of r folded in; `coeffs` are the sin
    and cos polynomials for `e`'s float type."""
    sin_c, cos_c = coeffs
    z = e.mul(r, r)
    # sin(h + l) ≈ h + (h³·S(h²) + l·(1 − h²/2))
    sin_corr = e.fma(e.mul(e.poly(z, sin_c), z), r,
                     e.mul(r_lo, e.fma(z, e.c(-0.5), e.c(1.0))))
    s = e.add(r, sin_corr)
    # cos(h + l) ≈ (1 − h²/2) + (h⁴·C(h²) − h·l); 1 − h²/2 with its rounding error kept
    hz = e.mul(z, e.c(0.5))
    w = e.sub(e.c(1.0), hz)
    w_err = e.sub(e.sub(e.c(1.0), w), hz)
    c = e.add(w, e.add(w_err, e.fma(e.mul(e.poly(z, cos_c), z), z, e.b.fneg(e.mul(r, r_lo)))))
    if cos:
        quad = e.b.add(quad, e.ic(1))  # cos(x) = sin(x + π/2)
    use_cos = e.b.icmp_signed("!=", e.b.and_(quad, e.ic(1)), e.ic(0))
    negate = e.b.icmp_signed("!=", e.b.and_(quad, e.ic(2)), e.ic(0))
    v = e.select(use_cos, c, s)
    return e.select(negate, e.b.fneg(v), v)


def _sincos(e, x: ir.Value, cos: bool, huge: bool) -> ir.Value:
    """sin(x) or cos(x) for f32/f64 lanes `x` through one reduction: the direct one (right below
    2^45, and for ±inf and NaN, which it turns into NaN) or the table one (`huge`: right from
    2^45 on)."""
    b = e.b
    lanes = lanes_of(e.ty)
    e64 = e if e.is64 else type(e)(b, vector(F64, lanes))
    ax = e.abs(x)
    coeffs = (_SIN64, _COS64) if e.is64 else (_SIN32, _COS32)
    if not huge and not e.is64:
        # f32: the reduction in f64 (module note), then r as an f32 pair (r − hi is exact in
        # f64 and fits f32's 24 bits to well within its last one) and the polynomials in f32.
        r64, _, quad = _direct_reduce(e64, b.fpext(ax, e64.ty), double_double=False)
        r = b.fptrunc(r64, e.ty)
        r_lo = b.fptrunc(e64.sub(r64, b.fpext(r, e64.ty)), e.ty)
        v = _kernel(e, r, r_lo, b.trunc(quad, e.ity), cos, (_SIN32_F, _COS32_F))
        return v if cos else _put_sign(e, v, x)
    if not huge:
        r, r_lo, quad = _direct_reduce(e64, ax, double_double=True)
    elif e.is64:
        bits = e.to_bits(ax)
        expo = b.lshr(bits, e.ic(52))
        mant = b.or_(b.and_(bits, e.ic((1 << 52) - 1)), e.ic(1 << 52))
        k = b.sub(expo, e.ic(1075))
        lo_bits = b.and_(mant, e.ic((1 << 26) - 1))
        mparts = [(e.to_float(b.sub(mant, lo_bits)), 26), (e.to_float(lo_bits), 0)]
        r, r_lo, quad = _table_reduce(e, mparts, _table_pieces(e, k, F64_TABLE, "f64"),
                                      F64_TABLE[2])
    else:
        r, r_lo, quad = _reduce_f32_huge(e64, e.to_bits(ax))
    v = _kernel(e64, r, r_lo, quad, cos, coeffs)
    if not e.is64:
        v = b.fptrunc(v, e.ty)
    return v if cos else _put_sign(e, v, x)


def _put_sign(e, v: ir.Value, x: ir.Value) -> ir.Value:
    """sin is odd: v, computed for |x|, with x's sign bit put back (keeps −0 and NaN)."""
    sign = e.b.and_(e.to_bits(x), e.ic(-(1 << (63 if e.is64 else 31))))
    return e.from_bits(e.b.xor(e.to_bits(v), sign))


def build_sincos(e, x: ir.Value, cos: bool) -> ir.Value:
    """sin(x) (`cos` False) or cos(x) for f32/f64 lanes `x` (`e`: mathlib's emitter).

    The table reduction runs only where some lane needs it (module note): in a math function
    of its own (scalar code), behind a branch to `huge_function`, whose masked vector
    variants the loop vectorizer calls once it widens the loop; for explicit vectors, through
    the variant of their width, which returns at once when no lane is set."""
    b = e.b
    v = _sincos(e, x, cos, huge=False)
    ax = e.abs(x)
    huge = b.and_(e.cmp(">=", ax, e.c(DIRECT_MAX)), e.cmp("<", ax, e.c(math.inf)))
    dtype = "f64" if e.is64 else "f32"
    lanes = lanes_of(e.ty)
    if lanes > 1:
        fn = huge_function(b.module, type(e), cos, dtype, lanes)
        return e.select(huge, b.call(fn, [x, huge]), v)
    fn = huge_function(b.module, type(e), cos, dtype)
    if not b.function.name.startswith("graphc.math."):
        # Emitted inline into a caller's block (an epilogue): no blocks of our own there.
        return e.select(huge, b.call(fn, [x]), v)
    direct_block = b.block
    far, join = (b.function.append_basic_block(n) for n in ("huge", "join"))
    b.cbranch(huge, far, join)
    b.position_at_end(far)
    v_far = b.call(fn, [x])
    b.branch(join)
    b.position_at_end(join)
    out = b.phi(e.ty)
    out.add_incoming(v, direct_block)
    out.add_incoming(v_far, far)
    return out


# The vector widths whose masked variants a scalar huge-argument function advertises to the loop
# vectorizer (AVX-512 and AVX2 registers and their halves).
HUGE_VARIANT_LANES = {"f32": (4, 8, 16), "f64": (2, 4, 8)}


def huge_function(module: ir.Module, emitter, cos: bool, dtype: str, lanes: int = 1
                  ) -> ir.Function:
    """sin or cos by the table reduction alone, declared once per module: scalar
    `T f(T x)`, or the masked vector variant `<n x T> f(<n x T> x, <n x i1> mask)`, which
    returns x unchanged when no lane is set (its lanes are the caller's to select).

    The scalar function is `noinline` and names its variants in the
    `vector-function-abi-variant` attribute (LLVM's vector function ABI), so the vectorizer
    keeps it a call, made only under its condition. The variants stay `internal`, kept until
    then by `@llvm.compiler.used` (`_keep_alive`)."""
    base = f"graphc.math.{'cos' if cos else 'sin'}_huge.{dtype}"
    name = base if lanes == 1 else f"{base}.v{lanes}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fty = vector(F64 if dtype == "f64" else ir.FloatType(), lanes)
    mask = vector(ir.IntType(1), lanes)
    fn = ir.Function(module, ir.FunctionType(fty, [fty] if lanes == 1 else [fty, mask]),
                     name=name)
    fn.linkage = "internal"
    for attr in ("nounwind", "readnone", "norecurse"):
        fn.attributes.add(attr)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if lanes == 1:
        fn.attributes.add("noinline")
        variants = ",".join(f"_ZGV_LLVM_M{n}v_{name}({name}.v{n})"
                            for n in HUGE_VARIANT_LANES[dtype])
        # llvmlite knows no string attributes; its attribute set prints each entry verbatim.
        set.add(fn.attributes, f'"vector-function-abi-variant"="{variants}"')
        for n in HUGE_VARIANT_LANES[dtype]:
            huge_function(module, emitter, cos, dtype, n)
    else:
        work, idle = fn.append_basic_block("work"), fn.append_basic_block("idle")
        bits = ir.IntType(lanes)
        b.cbranch(b.icmp_unsigned("!=", b.bitcast(fn.args[1], bits), ir.Constant(bits, 0)),
                  work, idle)
        b.position_at_end(idle)
        b.ret(fn.args[0])
        b.position_at_end(work)
        _keep_alive(module, fn)
    b.ret(_sincos(emitter(b, fty), fn.args[0], cos, huge=True))
    return fn


class _CompilerUsed:
    """`@llvm.compiler.used`, printed from the functions listed when the module is printed:
    internal functions nothing calls yet are deleted early in the optimization pipeline, and
    the vector variants are only called once the loop vectorizer has widened a loop."""

    name = "llvm.compiler.used"

    def __init__(self) -> None:
        self.functions: list[ir.Function] = []

    def __str__(self) -> str:
        refs = ", ".join(f"ptr {f.get_reference()}" for f in self.functions)
        return (f"@llvm.compiler.used = appending global [{len(self.functions)} x ptr] "
                f'[{refs}], section "llvm.metadata"')


def _keep_alive(module: ir.Module, fn: ir.Function) -> None:
    used = module.globals.get(_CompilerUsed.name)
    if used is None:
        used = module.globals[_CompilerUsed.name] = _CompilerUsed()
    used.functions.append(fn)


def _pick(e, conds: list[ir.Value], values: tuple[float, ...]) -> ir.Value:
    """values[k] for the first k whose condition holds (conds[k]), values[-1] if none."""
    out = e.c(values[-1])
    for cond, v in zip(reversed(conds), reversed(values[:-1]), strict=True):
        out = e.select(cond, e.c(v), out)
    return out


def build_atan(e, x: ir.Value) -> ir.Value:
    """atan(x) for f32/f64 lanes (module note: reduction around tan(kπ/8)); odd, so computed
    on |x| with the sign bit put back (−0 and NaN kept, ±inf gives ±π/2)."""
    from ..math_coefficients import ATAN_Q

    b = e.b
    e64 = e if e.is64 else type(e)(b, vector(F64, lanes_of(e.ty)))
    ax = e.abs(x)
    a = ax if e.is64 else b.fpext(ax, e64.ty)
    inside = [e64.cmp("<=", a, e64.c(t)) for t in ATAN_BREAKS]  # NaN: none holds (k = 4)
    far = b.not_(inside[-1])
    c = _pick(e64, inside, ATAN_CENTRES + (0.0,))
    bases = atan_bases()
    base_hi = _pick(e64, inside, tuple(h for h, _ in bases))
    base_lo = _pick(e64, inside, tuple(lo for _, lo in bases))
    one = e64.c(1.0)
    d = _fma(e64, a, c, one)
    if e.is64:
        # t = n/d to about 2^-106: the numerator's and denominator's rounding errors (n
        # exactly by TwoSum, d's by one more fused multiply-add) and the quotient's residual
        n, n_err = _two_sum(e64, a, b.fneg(c))
        d_err = _fma(e64, a, c, e64.sub(one, d))
        n, n_err = e64.select(far, e64.c(-1.0), n), e64.select(far, e64.c(0.0), n_err)
        d, d_err = e64.select(far, a, d), e64.select(far, e64.c(0.0), d_err)
        t = e64.div(n, d)
        resid = _fma(e64, b.fneg(t), d, n)
        t_lo = e64.div(e64.sub(e64.add(resid, n_err), e64.mul(t, d_err)), d)
        # |x| = inf: t = −0 exactly, and the residual 0·inf would be NaN
        t_lo = e64.select(e64.cmp("<", a, e64.c(math.inf)), t_lo, e64.c(0.0))
    else:
        t = e64.div(e64.select(far, e64.c(-1.0), e64.sub(a, c)), e64.select(far, a, d))
        t_lo = e64.c(0.0)
    z = e64.mul(t, t)
    poly = e64.mul(e64.mul(t, z), e64.poly(z, ATAN_Q["f64" if e.is64 else "f32"]))
    # atan(t + t_lo) ≈ atan(t) + t_lo/(1 + z); the base's and t's sum error-free
    corr = e64.add(e64.fma(t_lo, e64.sub(one, z), poly), base_lo)
    s, s_err = _two_sum(e64, base_hi, t)
    v = e64.add(s, e64.add(s_err, corr))
    if not e.is64:
        v = b.fptrunc(v, e.ty)
    sign = b.and_(e.to_bits(x), e.ic(-(1 << (63 if e.is64 else 31))))
    return e.from_bits(b.xor(e.to_bits(v), sign))
