"""Measure the accuracy of `mathlib` against numpy: JIT one loop per function, run it over dense
grids, random bit patterns and edge cases (0, ±tiny, denormals, ±huge, ±inf, NaN), compare.

The f32 functions are compared with numpy in float64, the f64 ones with numpy in long double
(x87 80-bit: 11 more bits than the result). numpy has no erf: f32 erf is compared with the
float64 `math.erf`, f64 erf with a long-double series (`erf_long_double`). Two measures per
function:

* ulp error: |got − ref| / ulp(ref), ulp of the result's dtype at the exact value (denormal
  spacing below the normal range);
* relative error in units of the dtype's epsilon: |got − ref| / max(|ref|, smallest normal) / eps
  ("ulp-equivalent relative error", never larger than the ulp error).

Non-finite expected values (inf, NaN, or overflow after rounding to the dtype) must match
exactly; each mismatch is counted. Used by the tests and by `benchmarks/llvm_micro.py`.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from .llvm_ir import I64, emit_loop, llvm_type
from .mathlib import MATH_FUNCTIONS, emit_math, mark_avx512
from .target import JitModule, TargetSpec, compile_module

_NP = {"f32": np.float32, "f64": np.float64}


def build_apply_module(names: tuple[str, ...] = MATH_FUNCTIONS, dtype: str = "f32",
                       lanes: int = 1, avx512: bool = False) -> ir.Module:
    """A module with `void apply_<name>(T* x, [T* y,] T* out, i64 n)`: out[i] = name(x[i], ...).

    The loops call the scalar math function; the O3 pipeline inlines and vectorizes them
    (`lanes` > 1 calls the explicit vector variant on blocks of `lanes`, remainder scalar-free:
    n must then be a multiple of `lanes`)."""
    module = ir.Module(name=f"mathlib_apply_{dtype}")
    if avx512:  # as the loop kernels of an AVX-512 target mark theirs
        mark_avx512(module)
    t = llvm_type(dtype)
    for name in names:
        fn_math = emit_math(module, name, dtype, lanes)
        nin = 2 if name == "pow" else 1
        fty = ir.FunctionType(ir.VoidType(), [t.as_pointer()] * (nin + 1) + [I64])
        fn = ir.Function(module, fty, name=f"apply_{name}")
        for a in fn.args[:-1]:
            a.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ptrs, n = fn.args[:-1], fn.args[-1]

        def body(b: ir.IRBuilder, i: ir.Value, _c, ptrs=ptrs, fn_math=fn_math, nin=nin):
            if lanes == 1:
                args = [b.load(b.gep(p, [i])) for p in ptrs[:nin]]
                b.store(b.call(fn_math, args), b.gep(ptrs[nin], [i]))
            else:
                vt = ir.VectorType(t, lanes).as_pointer()
                args = [b.load(b.bitcast(b.gep(p, [i]), vt), align=4) for p in ptrs[:nin]]
                b.store(b.call(fn_math, args), b.bitcast(b.gep(ptrs[nin], [i]), vt), align=4)
            return []

        emit_loop(b, ir.Constant(I64, 0), n, body, step=lanes, name="apply")
        b.ret_void()
    return module


def compile_apply(names: tuple[str, ...] = MATH_FUNCTIONS, dtype: str = "f32",
                  spec: TargetSpec | None = None, lanes: int = 1,
                  avx512: bool = False) -> JitModule:
    return compile_module(build_apply_module(names, dtype, lanes, avx512), spec,
                         name=f"mathlib_apply_{dtype}")


def run_apply(jit: JitModule, name: str, *inputs: np.ndarray) -> np.ndarray:
    """out = name(*inputs) through the JIT-compiled loop."""
    ctype = ctypes.c_void_p
    arrs = [np.ascontiguousarray(a) for a in inputs]
    out = np.empty_like(arrs[0])
    fn = jit.cfunc(f"apply_{name}", None, *([ctype] * (len(arrs) + 1)), ctypes.c_int64)
    fn(*[a.ctypes.data for a in arrs], out.ctypes.data, out.size)
    return out


_TWO_OVER_SQRT_PI = np.longdouble("1.12837916709551257389615890312154517")


def erf_long_double(x: np.ndarray) -> np.ndarray:
    """erf in long double: 2x/√π · e^(−x²) · Σ (2x²)^k / (1·3·…·(2k+1)). Every term is
    positive, so the sum has no cancellation (unlike the Taylor series) and is good to a few
    long-double ulps for every x; from |x| = 7 on erf is 1 to long-double precision."""
    x = np.asarray(x, np.longdouble)
    ax = np.minimum(np.abs(x), np.longdouble(7.0))  # NaN stays NaN
    ax = np.where(np.isnan(ax), np.longdouble(0.0), ax)
    z = 2 * ax * ax
    term = np.ones_like(ax)
    total = np.ones_like(ax)
    for k in range(1, 400):
        term = term * z / (2 * k + 1)
        total = total + term
        if np.all(term <= total * np.longdouble(2.0 ** -70)):
            break
    y = _TWO_OVER_SQRT_PI * ax * np.exp(-ax * ax) * total
    return np.where(np.isnan(x), x, np.copysign(y, x))


def reference(name: str, dtype: str, *inputs: np.ndarray) -> np.ndarray:
    """The exact-enough value: float64 for f32 inputs, long double for f64 inputs."""
    name = _FORM_OF.get(name, name)
    wide = np.float64 if dtype == "f32" else np.longdouble
    xs = [np.asarray(a, wide) for a in inputs]
    x = xs[0]
    with np.errstate(all="ignore"):
        if name == "erf":
            if dtype == "f32":
                return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)
            return erf_long_double(x)
        if name == "sigmoid":
            return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))
        if name == "softplus":
            return np.logaddexp(x, wide(0))
        if name == "rsqrt":
            return 1 / np.sqrt(x)
        if name == "pow":
            return np.power(x, xs[1])
        return getattr(np, {"atan": "arctan"}.get(name, name))(x)


def _edge_values(dtype: str) -> np.ndarray:
    fi = np.finfo(_NP[dtype])
    tiny = float(fi.smallest_subnormal)
    vals = [0.0, tiny, 2 * tiny, 1e-40 if dtype == "f32" else 1e-310, float(fi.smallest_normal),
            1e-30, 1e-10, 1e-7, 1e-4, 0.5, 1.0, 2.0, 10.0, 1e10, 1e30, float(fi.max), np.inf]
    vals = np.array(vals, np.float64)
    return np.concatenate([vals, -vals, [np.nan]])


def _bit_patterns(rng: np.random.Generator, dtype: str, size: int, lo: float,
                  hi: float) -> np.ndarray:
    """Values uniform in their bit pattern (so uniform over binades) with |v| in [lo, hi]."""
    ut, ft = (np.uint32, np.float32) if dtype == "f32" else (np.uint64, np.float64)
    a, b = (np.array([lo, hi], ft).view(ut)).astype(np.float64)
    bits = rng.uniform(a, b, size).astype(ut)
    return bits.view(ft)


# Useful range per function: (dense grid lo, hi), (bit-pattern |x| lo, hi).
_RANGES = {
    "exp": ((-104.0, 89.0), (1e-30, 110.0)), "expm1": ((-20.0, 89.0), (1e-30, 110.0)),
    "log": ((0.25, 4.0), (0.0, 3.4e38)), "log1p": ((-1.0, 4.0), (1e-30, 3.4e38)),
    "tanh": ((-10.0, 10.0), (1e-30, 20.0)), "sigmoid": ((-110.0, 110.0), (1e-30, 120.0)),
    "softplus": ((-110.0, 110.0), (1e-30, 1e30)), "rsqrt": ((0.25, 4.0), (0.0, 3.4e38)),
    "erf": ((-4.5, 4.5), (1e-30, 10.0)), "pow": ((0.0, 4.0), (0.0, 1e10)),
    # sin/cos: every magnitude up to the largest float (the table reduction beyond 2^51)
    "sin": ((-10.0, 10.0), (1e-30, 3.4e38)), "cos": ((-10.0, 10.0), (1e-30, 3.4e38)),
    "atan": ((-8.0, 8.0), (1e-30, 3.4e38)),
}
# Other forms of one function (mathlib builds them for particular kernels): same points and
# reference.
_FORM_OF = {"tanh_exp": "tanh"}
_F64_SCALE = {"exp": 7.0, "expm1": 7.0, "sigmoid": 6.5, "softplus": 6.5, "erf": 1.5}


def sample_points(name: str, dtype: str, size: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Inputs covering the function's useful range densely plus every edge case."""
    name = _FORM_OF.get(name, name)
    rng = np.random.default_rng(seed)
    ft = _NP[dtype]
    (glo, ghi), (blo, bhi) = _RANGES[name]
    if dtype == "f64":
        s = _F64_SCALE.get(name, 1.0)
        glo, ghi = glo * s, ghi * s
        bhi = bhi * s if bhi < 1e20 else 1.7e308
    parts = [np.linspace(glo, ghi, size // 2), _bit_patterns(rng, dtype, size // 4, blo, bhi),
             -_bit_patterns(rng, dtype, size // 4, blo, bhi), _edge_values(dtype)]
    if name in ("tanh", "log1p", "expm1", "sigmoid", "softplus", "erf"):
        small = np.geomspace(1e-9, 1.0, 2000)
        parts += [small, -small]
    if name == "log1p":
        parts.append(-1.0 + np.geomspace(1e-7, 0.5, 2000))
    x = np.concatenate(parts).astype(ft)
    if name != "pow":
        return (x,)
    return _pow_points(rng, dtype, x.size)


def _pow_points(rng: np.random.Generator, dtype: str, size: int) -> tuple[np.ndarray, ...]:
    ft = _NP[dtype]
    lim = 80.0 if dtype == "f32" else 700.0
    x = np.exp(rng.uniform(-12, 12, size))
    # y such that |y·ln x| stays within range (results finite, including denormals).
    y = rng.uniform(-1, 1, size) * (lim + 10) / np.abs(np.log(x))
    # Negative bases with integral exponents, and non-integral (NaN) ones.
    k = size // 8
    x[:k] = -x[:k]
    y[:k] = np.round(y[:k])
    edges = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, np.inf, -np.inf, np.nan,
                      1e-30, -1e-30])
    ey = np.array([0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.5, -0.5, 1e10, -1e10, np.inf,
                   -np.inf, np.nan, 7.0, -7.0])
    gx, gy = np.meshgrid(edges, ey)
    return (np.concatenate([x, gx.ravel()]).astype(ft),
            np.concatenate([y, gy.ravel()]).astype(ft))


@dataclass(frozen=True)
class Accuracy:
    """Worst errors of one function over its test points."""

    name: str
    dtype: str
    points: int
    max_ulp: float
    max_rel_eps: float
    mismatches: int  # non-finite results that differ from the reference's class
    worst_input: tuple[float, ...]


def compare(got: np.ndarray, ref: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """(ulp error, relative error in eps, non-finite mismatch mask) elementwise."""
    ft = _NP[dtype]
    fi = np.finfo(ft)
    with np.errstate(all="ignore"):
        ref_r = ref.astype(ft)
        special = ~np.isfinite(ref_r) | ~np.isfinite(got)
        same = (np.isnan(got) & np.isnan(ref_r)) | (got == ref_r)
        mismatch = special & ~same
        wide = ref.dtype.type
        diff = np.abs(got.astype(wide) - ref)
        mag = np.maximum(np.abs(ref), wide(fi.smallest_normal))
        ulp = np.exp2(np.floor(np.log2(mag)) - fi.nmant).astype(wide)
        ulp_err = np.where(special, 0.0, diff / ulp)
        rel = np.where(special, 0.0, diff / mag / wide(fi.eps))
    return ulp_err.astype(np.float64), rel.astype(np.float64), mismatch


def measure(name: str, dtype: str = "f32", size: int = 200_000, jit: JitModule | None = None,
            seed: int = 0) -> Accuracy:
    """JIT `name` (or use `jit` from `compile_apply`), run it on `sample_points`, compare."""
    jit = jit or compile_apply((name,), dtype)
    inputs = sample_points(name, dtype, size, seed)
    got = run_apply(jit, name, *inputs)
    ref = reference(name, dtype, *inputs)
    ulp_err, rel, mismatch = compare(got, ref, dtype)
    worst = int(np.argmax(ulp_err))
    if mismatch.any():
        worst = int(np.argmax(mismatch))
    return Accuracy(name, dtype, got.size, float(ulp_err.max()), float(rel.max()),
                    int(mismatch.sum()), tuple(float(a[worst]) for a in inputs))
