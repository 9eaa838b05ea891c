"""Vectorizable LLVM math functions vs numpy (float64 for f32, long double for f64; erf vs
math.erf and a long-double series checked against mpmath): at most 2 ulp over dense grids,
random bit patterns and edge cases; vectorized with no libm call."""

from __future__ import annotations

import ctypes
import math
import re

import numpy as np
import pytest
from llvmlite import ir

from graphc.backends.llvm.llvm_ir import I64, emit_loop
from graphc.backends.llvm.mathlib import MATH_FUNCTIONS, emit_math
from graphc.backends.llvm.mathlib_accuracy import (
    compare,
    compile_apply,
    erf_long_double,
    measure,
    reference,
    run_apply,
    sample_points,
)
from graphc.backends.llvm.target import TargetSpec, compile_module
from graphc.backends.math_coefficients import TANH_TABLE_CLAMP
from graphc.ir.errors import GraphError

SIZE = {"f32": 200_000, "f64": 60_000}


@pytest.fixture(scope="module")
def jits():
    return {dt: compile_apply(dtype=dt) for dt in ("f32", "f64")}


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("name", MATH_FUNCTIONS)
def test_accuracy_within_two_ulp(jits, name, dtype):
    acc = measure(name, dtype, SIZE[dtype], jits[dtype])
    assert acc.mismatches == 0, f"non-finite mismatch at {acc.worst_input}"
    assert acc.max_rel_eps <= 2.0, acc
    assert acc.max_ulp <= 2.0, acc


def test_pow_f64_within_two_ulp_where_y_log_x_is_large():
    """f64 pow carries log|x| and y·log|x| as hi + lo: exponents near the overflow and
    underflow bounds (|y·ln x| up to 745, bases near 1 and near the ends of the log's
    mantissa interval, denormal results) stay within 2 ulp of long-double pow; a plain f64 log
    would lose up to |y·ln x|·2^-53 there (about a thousand ulps)."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(0.7, 1.42, 4000), 1.0 + rng.uniform(-1e-6, 1e-6, 2000),
                        np.exp(rng.uniform(-700, 700, 4000))])
    t = rng.uniform(-744, 709, x.size)
    y = t / np.log(x)
    x = np.concatenate([x, [2.0, 0.5, 10.0, 10.0, 1e-300, np.sqrt(2.0)]])
    y = np.concatenate([y, [-1074.0, 1070.5, 308.2, -323.5, 1.03, 2045.0]])
    got = run_apply(compile_apply(("pow",), "f64", lanes=8), "pow", x[:x.size // 8 * 8],
                    y[:x.size // 8 * 8])
    ulp_err, rel, mismatch = compare(got, reference("pow", "f64", x[:got.size], y[:got.size]),
                                     "f64")
    assert not mismatch.any() and ulp_err.max() <= 2.0 and rel.max() <= 2.0, ulp_err.max()
    got = run_apply(compile_apply(("pow",), "f64"), "pow", x, y)
    ulp_err, rel, mismatch = compare(got, reference("pow", "f64", x, y), "f64")
    assert not mismatch.any() and ulp_err.max() <= 2.0 and rel.max() <= 2.0, ulp_err.max()


def test_tanh_relative_error_near_zero(jits):
    x = np.concatenate([np.geomspace(1e-38, 0.7, 5000), -np.geomspace(1e-38, 0.7, 5000)])
    for dtype, ft in (("f32", np.float32), ("f64", np.float64)):
        xs = x.astype(ft)
        got = run_apply(jits[dtype], "tanh", xs)
        ref = reference("tanh", dtype, xs)
        rel = np.abs(got - ref) / np.abs(ref)
        assert rel.max() <= 2 * np.finfo(ft).eps
        assert np.all(np.signbit(got) == np.signbit(xs))


def test_special_values_exact(jits):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32)
    out = {n: run_apply(jits["f32"], n, x) for n in ("exp", "log", "tanh", "sigmoid", "log1p")}
    np.testing.assert_array_equal(out["exp"], [1, 1, np.inf, 0, np.nan])
    np.testing.assert_array_equal(out["log"], [-np.inf, -np.inf, np.inf, np.nan, np.nan])
    np.testing.assert_array_equal(out["tanh"], [0, -0.0, 1, -1, np.nan])
    assert np.signbit(out["tanh"][1]) and np.signbit(out["log1p"][1])
    np.testing.assert_array_equal(out["sigmoid"], [0.5, 0.5, 1, 0, np.nan])
    tiny = np.array([1e-45, 1e-40, -1e-40], np.float32)  # denormal inputs
    np.testing.assert_array_equal(run_apply(jits["f32"], "exp", tiny), [1, 1, 1])
    np.testing.assert_array_equal(run_apply(jits["f32"], "tanh", tiny), tiny)
    np.testing.assert_allclose(run_apply(jits["f32"], "log", tiny[:2]),
                               np.log(tiny[:2].astype(np.float64)), rtol=1e-7)
    # gradual underflow: exp of -100 is a denormal, not 0
    np.testing.assert_array_equal(run_apply(jits["f32"], "exp", np.float32([-100.0])),
                                  [np.float32(np.exp(-100.0))])


@pytest.mark.parametrize("dtype,lanes", [("f32", 16), ("f64", 8)])
def test_vector_variants_match_scalar(jits, dtype, lanes):
    if not TargetSpec.host().has_avx512:  # 512-bit variants use AVX-512 intrinsics
        pytest.skip("host lacks avx512f")
    names = ("exp", "tanh", "log1p", "erf", "pow")
    jit_v = compile_apply(names, dtype, lanes=lanes)
    for name in names:
        inputs = [a[: a.size // lanes * lanes] for a in sample_points(name, dtype, 4096)]
        got, want = run_apply(jit_v, name, *inputs), run_apply(jits[dtype], name, *inputs)
        if dtype == "f32" and name == "tanh":
            # 16 f32 lanes take the table form, another approximation: both within 2 ulp
            # (each is measured against the reference elsewhere), same signs and specials.
            ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32))
            assert ulps.max() <= 2
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
            continue
        if dtype == "f32" and name == "exp":
            # 16 f32 lanes take the table form (module note), within one ulp of the other.
            nan = np.isnan(want)
            assert np.array_equal(np.isnan(got), nan)
            if name == "exp":  # 16 lanes flush denormal results to zero (module note)
                tiny = want < np.finfo(np.float32).smallest_normal
                assert not got[tiny].any()
                nan |= tiny
            ulps = np.abs(got[~nan].view(np.int32).astype(np.int64) - want[~nan].view(np.int32))
            assert ulps.max() <= 1 and np.count_nonzero(ulps) <= got.size // 5, ulps.max()
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
            continue
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype,lanes", [("f32", 16), ("f64", 8)])
def test_512_bit_variants_within_two_ulp(dtype, lanes):
    """Explicit 512-bit vectors take the AVX-512 forms (vscalef for ldexp, vrcp14 for the
    reciprocal that the quotient correction refines): same accuracy bound, same specials."""
    if not TargetSpec.host().has_avx512:
        pytest.skip("host lacks avx512f")
    names = ("exp", "expm1", "tanh", "tanh_exp", "sigmoid", "softplus", "log1p", "erf", "sin",
             "cos")
    jit_v = compile_apply(names, dtype, lanes=lanes)
    for name in names:
        x = sample_points(name, dtype, SIZE[dtype] // 4)[0]
        x = x[: x.size // lanes * lanes]
        got, want = run_apply(jit_v, name, x), reference(name, dtype, x)
        if dtype == "f32" and name == "exp":  # denormal results flush to zero (module note)
            tiny = want < np.finfo(np.float32).smallest_normal
            assert not got[tiny].any()
            got, want, x = got[~tiny], want[~tiny], x[~tiny]
        ulp_err, rel, mismatch = compare(got, want, dtype)
        assert not mismatch.any(), (name, x[mismatch][:5])
        assert ulp_err.max() <= 2.0 and rel.max() <= 2.0, (name, ulp_err.max(), rel.max())


# Calls a math loop may make: LLVM intrinsics, and sin/cos's table reduction (a function of the
# same module, its body checked like the others).
OWN_CALLEES = ("llvm.", "graphc.math.sin_huge.", "graphc.math.cos_huge.")


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_avx512_module_scalar_code_within_two_ulp(dtype):
    """Scalar math in a module marked for AVX-512 scales with llvm.ldexp (vscalef once
    vectorized): still within 2 ulp, exact specials, no libm call."""
    if not TargetSpec.host().has_avx512:
        pytest.skip("host lacks avx512f")
    names = ("exp", "expm1", "tanh", "sigmoid", "softplus", "erf")
    jit = compile_apply(names, dtype, avx512=True)
    assert "vscalef" in jit.assembly()
    for name in names:
        acc = measure(name, dtype, SIZE[dtype] // 4, jit)
        assert acc.mismatches == 0 and acc.max_ulp <= 2.0 and acc.max_rel_eps <= 2.0, acc
    for body in _function_bodies(jit.optimized_ir).values():
        assert all(c.startswith(OWN_CALLEES) for c in re.findall(r"call [^@]*@\"?([\w.]+)", body))


def _function_bodies(optimized_ir: str) -> dict[str, str]:
    parts = re.split(r"\ndefine [^@]*@", optimized_ir)[1:]
    return {p.split("(")[0].strip('"'): p for p in parts}


def test_no_libm_calls(jits):
    for jit in jits.values():
        bodies = _function_bodies(jit.optimized_ir)
        for name, body in bodies.items():
            callees = set(re.findall(r"call [^@]*@\"?([\w.]+)", body))
            assert all(c.startswith(OWN_CALLEES) for c in callees), (name, callees)
            assert all(c in bodies for c in callees if c.startswith("graphc.")), callees
            assert not any(c.startswith(("llvm.exp", "llvm.log", "llvm.pow")) for c in callees)


@pytest.mark.parametrize("name", ["exp", "erf"])
def test_loop_vectorizes_to_512_bit(jits, name):
    if not TargetSpec.host().has_avx512:
        pytest.skip("host lacks avx512f")
    body = _function_bodies(jits["f32"].optimized_ir)[f"apply_{name}"]
    assert "<16 x float>" in body
    assert not re.search(r"@(expf?|erff?|llvm\.exp)\b", body)


def test_emit_math_declares_once_and_rejects_unknown():
    m = ir.Module()
    assert emit_math(m, "exp", "f32") is emit_math(m, "exp", "f32")
    assert emit_math(m, "exp", "f64") is not emit_math(m, "exp", "f32")
    with pytest.raises(GraphError, match="lgamma"):
        emit_math(m, "lgamma", "f32")
    with pytest.raises(GraphError, match="i32"):
        emit_math(m, "exp", "i32")


def test_tanh_table_within_two_ulp_at_every_interval_edge():
    """The 16-lane f32 table form picks its interval from |x|'s bits: the floats around every
    interval edge (quarter binades from 2^-4) and around the clamp, both signs."""
    if not TargetSpec.host().has_avx512:
        pytest.skip("host lacks avx512f")
    edges = np.float32([2.0 ** -4 * 2.0 ** e * (1 + q / 4) for e in range(8) for q in range(4)]
                       + [TANH_TABLE_CLAMP, 9.0109])
    bits = edges.view(np.int32)[:, None] + np.arange(-64, 64, dtype=np.int32)
    x = bits.ravel().view(np.float32)
    x = np.concatenate([x, -x])
    x = x[: x.size // 16 * 16]
    got = run_apply(compile_apply(("tanh",), "f32", lanes=16), "tanh", x)
    ulp_err, rel, mismatch = compare(got, reference("tanh", "f32", x), "f32")
    assert not mismatch.any() and ulp_err.max() <= 2.0 and rel.max() <= 2.0, ulp_err.max()
    big = np.abs(x) >= TANH_TABLE_CLAMP
    np.testing.assert_array_equal(got[big], np.sign(x[big]))


def test_sigmoid_and_tanh_of_one_x_share_one_exp():
    """f32 sigmoid and the exp form of tanh build e^{-|x|} from the same instructions: in one
    function LLVM merges them into one exp evaluation; the values stay exact matches of the
    separate functions."""
    if not TargetSpec.host().has_avx512:
        pytest.skip("host lacks avx512f")
    m = ir.Module(name="sigmoid_tanh")
    vt = ir.VectorType(ir.FloatType(), 16)
    fns = [emit_math(m, n, "f32", 16) for n in ("sigmoid", "tanh_exp")]
    f = ir.Function(m, ir.FunctionType(ir.VoidType(), [vt.as_pointer()] * 3 + [I64]), "both")
    b = ir.IRBuilder(f.append_basic_block())
    xs, s_out, t_out, n = f.args

    def body(b: ir.IRBuilder, i: ir.Value, _c):
        x = b.load(b.gep(xs, [i]), align=4)
        for fn, out in zip(fns, (s_out, t_out), strict=True):
            b.store(b.call(fn, [x]), b.gep(out, [i]), align=4)
        return []

    emit_loop(b, ir.Constant(I64, 0), n, body, name="both")
    b.ret_void()
    jit = compile_module(m, None, name="sigmoid_tanh")
    # One argument reduction, n = rint(x·log2 e): log2 e appears once (twice without sharing).
    log2e = np.float64(np.float32(np.log2(np.e))).view(np.uint64)
    assert _function_bodies(jit.optimized_ir)["both"].count(f"0x{log2e:016X}") == 1
    x = sample_points("tanh", "f32", 20_000)[0]
    x = x[: x.size // 16 * 16]
    s, t = np.empty_like(x), np.empty_like(x)
    fn = jit.cfunc("both", None, *([ctypes.c_void_p] * 3), ctypes.c_int64)
    fn(x.ctypes.data, s.ctypes.data, t.ctypes.data, x.size // 16)
    jit_v = compile_apply(("sigmoid", "tanh_exp"), "f32", lanes=16)
    np.testing.assert_array_equal(s, run_apply(jit_v, "sigmoid", x))
    np.testing.assert_array_equal(t, run_apply(jit_v, "tanh_exp", x))


# -- erf: numpy has none, so the oracles are math.erf (float64) and mpmath -----------------------


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_erf_special_values(jits, dtype):
    ft = np.float32 if dtype == "f32" else np.float64
    fi = np.finfo(ft)
    clamp = 4.0 if dtype == "f32" else 5.95  # erfc below half an ulp of 1 from here on
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, clamp, -clamp, 6.0, 1e30, -fi.max], ft)
    got = run_apply(jits[dtype], "erf", x)
    np.testing.assert_array_equal(got, [0, -0.0, 1, -1, np.nan, 1, -1, 1, 1, -1])
    assert np.signbit(got[1]) and not np.signbit(got[0])
    # Tiny and denormal inputs: erf(x) ≈ 2x/√π, neither flushed to zero nor off by more than
    # one ulp (denormal spacing for denormal results).
    tiny = np.array([fi.smallest_subnormal, 3 * fi.smallest_subnormal, fi.smallest_normal,
                     1e-30, 1e-20], ft)
    tiny = np.concatenate([tiny, -tiny])
    got = run_apply(jits[dtype], "erf", tiny)
    want = np.array([math.erf(float(v)) for v in tiny])
    if dtype == "f64":
        want = erf_long_double(tiny)
    assert np.array_equal(np.sign(got), np.sign(tiny))
    ulp_err, _, mismatch = compare(got, want, dtype)
    assert not mismatch.any() and ulp_err.max() <= 1.0, ulp_err


def test_erf_f32_dense_grid_within_one_and_a_half_ulp(jits):
    """Every 2^-12 step over [-6, 6] (the branch point 1, the clamp 4, ±1 beyond) and every
    f32 around the branch point against math.erf; odd symmetry holds exactly."""
    grid = np.arange(-6.0, 6.0, 2.0 ** -12)
    near_one = np.arange(1 << 16, dtype=np.uint32) + np.float32(1.0).view(np.uint32) - (1 << 15)
    x = np.concatenate([grid.astype(np.float32), near_one.view(np.float32)])
    got = run_apply(jits["f32"], "erf", x)
    want = np.array([math.erf(float(v)) for v in x])
    ulp_err, _, mismatch = compare(got, want, "f32")
    assert not mismatch.any()
    assert ulp_err.max() <= 1.5, (ulp_err.max(), x[np.argmax(ulp_err)])
    np.testing.assert_array_equal(run_apply(jits["f32"], "erf", -x), -got)


def test_erf_long_double_reference_matches_mpmath():
    """The f64 accuracy tests measure against `erf_long_double`: it must be good to a small
    fraction of an f64 ulp, checked here against mpmath at 40 digits."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-7, 7, 600), np.geomspace(1e-300, 7, 300),
                        [5e-324, 1e-310, 1.0, 5.95, 6.5]])
    got = erf_long_double(x)
    for xv, g in zip(x, got, strict=True):
        m, ex = np.frexp(g)  # the long double's exact value, as an mpf
        g_mp = mp.mpf(int(m * np.longdouble(2.0) ** 64)) * mp.mpf(2) ** (int(ex) - 64)
        want = mp.erf(mp.mpf(float(xv)))
        assert abs(g_mp - want) <= abs(want) * mp.mpf(2.0) ** -58, xv  # 1/32 of an f64 ulp


def test_erf_f64_against_mpmath():
    """f64 erf directly against mpmath (not the long-double series): below one ulp on random
    points, both sides of the branch point 1 and up to the clamp."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.uniform(-6.5, 6.5, 1500), rng.uniform(0.99, 1.4, 500),
                        np.geomspace(1e-300, 1.0, 200)])
    got = run_apply(compile_apply(("erf",), "f64"), "erf", x)
    for xv, g in zip(x, got, strict=True):
        want = mp.erf(mp.mpf(float(xv)))
        ulp = mp.mpf(2) ** (mp.floor(mp.log(abs(want), 2)) - 52)
        assert abs(mp.mpf(float(g)) - want) <= ulp, (xv, g)


# -- sin/cos: argument reduction over the whole range ------------------------------------------


def test_trig_constants_agree_with_mpmath():
    """π (Machin's series), its three-double split and the Payne-Hanek pieces of 2/π."""
    mp = pytest.importorskip("mpmath")
    from graphc.backends.llvm.mathlib_trig import F64_TABLE
    from graphc.backends.math_constants import PIO2, pi_fraction, reduction_table

    mp.mp.prec = 1300
    pi = pi_fraction()
    assert abs(mp.mpf(pi.numerator) / pi.denominator - mp.pi) < mp.mpf(2) ** -1190
    assert abs(sum(mp.mpf(p) for p in PIO2) - mp.pi / 2) < mp.mpf(2) ** -158
    k_lo = F64_TABLE[0]
    pieces = reduction_table(*F64_TABLE)
    for k in (k_lo, 0, 60, 500, F64_TABLE[1]):
        want = mp.fmod(mp.mpf(2) ** k * 2 / mp.pi, 4)
        got = sum(mp.mpf(p[k - k_lo]) for p in pieces)
        assert abs(got - want) < mp.mpf(2) ** -150


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_sin_cos_near_multiples_of_half_pi(jits, dtype):
    """Floats next to k·π/2 (tiny reduced arguments) for k up to 10^30 / 10^300, through the
    direct reduction and the table one: within one ulp of numpy's (glibc's) long-double sin."""
    ft = {"f32": np.float32, "f64": np.float64}[dtype]
    k = np.concatenate([np.arange(1, 5000), np.unique(np.geomspace(
        1, 1e30 if dtype == "f32" else 1e300, 5000).round())])
    x = (k * (np.pi / 2)).astype(ft)
    x = np.concatenate([x, np.nextafter(x, ft(np.inf)), np.nextafter(x, ft(0)), -x])
    for name in ("sin", "cos"):
        ulp_err, _, mismatch = compare(run_apply(jits[dtype], name, x),
                                       reference(name, dtype, x), dtype)
        assert not mismatch.any()
        assert ulp_err.max() <= 1.0, (name, x[np.argmax(ulp_err)])


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_sin_cos_table_reduction_runs_only_for_lanes_that_need_it(jits, dtype):
    """The vectorized loop calls the masked vector variant of the table reduction (LLVM's
    vector function ABI), which branches on its mask; the results do not depend on which
    other values share a vector with a huge one."""
    body = _function_bodies(jits[dtype].optimized_ir)["apply_sin"]
    calls = re.findall(rf"call [^@]*@\"?graphc\.math\.sin_huge\.{dtype}\.v(\d+)\"?\("
                       r"<(\d+) x \w+> %[\w.]+, <(\d+) x i1>", body)
    assert calls and all(a == b == c for a, b, c in calls), calls
    variant = _function_bodies(jits[dtype].optimized_ir)[f"graphc.math.sin_huge.{dtype}.v"
                                                          f"{calls[0][0]}"]
    assert re.search(r"bitcast <\d+ x i1> %\S+ to i\d+", variant) and "br i1" in variant
    ft = {"f32": np.float32, "f64": np.float64}[dtype]
    rng = np.random.default_rng(3)
    x = rng.uniform(-100, 100, 4096).astype(ft)
    x[rng.choice(x.size, 40, replace=False)] = rng.uniform(1e20, 1e30, 40).astype(ft)
    for name in ("sin", "cos"):
        order = np.argsort(np.abs(x), kind="stable")  # the huge ones together at the end
        mixed, grouped = (run_apply(jits[dtype], name, v) for v in (x, x[order]))
        np.testing.assert_array_equal(mixed[order], grouped)
        ulp_err, _, mismatch = compare(mixed, reference(name, dtype, x), dtype)
        assert not mismatch.any() and ulp_err.max() <= 1.0


def test_sin_cos_special_values(jits):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-45], np.float32)
    s, c = (run_apply(jits["f32"], n, x) for n in ("sin", "cos"))
    np.testing.assert_array_equal(s, np.where(np.isfinite(x), x, np.nan))  # sin(x) = x when tiny
    assert np.signbit(s[1]) and not np.signbit(s[0])
    np.testing.assert_array_equal(c, [1.0, 1.0, np.nan, np.nan, np.nan, 1.0, 1.0])
