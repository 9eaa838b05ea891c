"""Generated GEMM vs numpy float64: any M, N, K (1, primes, several K/M/N blocks), transposed
and strided operands, batch broadcast, threads, workspace, f64, accumulate, fused epilogues."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import ir

from graphc.backends.llvm.gemm import (
    ZEN_F32_BLOCKS,
    GemmConfig,
    emit_gemm,
    gemm_ctypes_signature,
    gemm_numpy_args,
    prepacked_b_elements,
)
from graphc.backends.llvm.gemm_microkernel import EpilogueContext
from graphc.backends.llvm.llvm_ir import F32, I64, masked_load
from graphc.backends.llvm.mathlib import emit_math_inline
from graphc.backends.llvm.target import TargetSpec, compile_module
from graphc.ir.errors import GraphError

LANES = TargetSpec.host().vector_bits // 32
# Tiny blocks: small shapes cross several K blocks, row blocks, column blocks, micro-panels
# and edge tiles.
SMALL = GemmConfig(lanes=LANES, mr=4, nv=2, kc=16, mc=12, nc=4 * LANES)
DEFAULT = GemmConfig.for_vector_bits(32 * LANES)
# One-vector panels: tasks of up to four panels, so the first panel packs A as it reads it.
NARROW_PANELS = GemmConfig(lanes=LANES, mr=4, nv=1, kc=16, mc=12, nc=4 * LANES)


def _compile(config: GemmConfig, epilogue=None, extra=()):
    m = ir.Module(name="gemm_test")
    emit_gemm(m, "gemm", config, epilogue)
    jit = compile_module(m, name="gemm_test")
    return jit.cfunc("gemm", None, *gemm_ctypes_signature(config), *extra)


@pytest.fixture(scope="module")
def gemm_small():
    return _compile(SMALL)


@pytest.fixture(scope="module")
def gemm_default():
    return _compile(DEFAULT)


def _operands(rng, batch, m, n, k, ta=False, tb=False, dtype=np.float32):
    a = rng.standard_normal((batch, k, m) if ta else (batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, n, k) if tb else (batch, k, n)).astype(dtype)
    return (a.transpose(0, 2, 1) if ta else a), (b.transpose(0, 2, 1) if tb else b)


def _check(fn, a, b, nthreads=1, c=None, tol_scale=4.0):
    batch, m, _ = a.shape
    c = np.full((batch, m, b.shape[2]), np.nan, a.dtype) if c is None else c
    fn(*gemm_numpy_args(a, b, c, nthreads))
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    bound = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))
    eps = np.finfo(a.dtype).eps
    assert np.all(np.abs(c - ref) <= tol_scale * max(a.shape[2], 1) * eps * bound + 1e-30)
    return c


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 50),
       batch=st.integers(1, 3), ta=st.booleans(), tb=st.booleans(),
       threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_gemm_matches_numpy(gemm_small, m, n, k, batch, ta, tb, threads, seed):
    a, b = _operands(np.random.default_rng(seed), batch, m, n, k, ta, tb)
    _check(gemm_small, a, b, threads)


@pytest.fixture(scope="module")
def gemm_narrow_panels():
    return _compile(NARROW_PANELS)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 50),
       batch=st.integers(1, 2), ta=st.booleans(), tb=st.booleans(),
       threads=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_gemm_first_panel_packing_a_matches_numpy(gemm_narrow_panels, m, n, k, batch, ta, tb,
                                                  threads, seed):
    """Tasks of three panels or more pack A in their first panel's microkernels (row tiles and
    row edges, row-major and transposed A, with and without B packed alongside)."""
    a, b = _operands(np.random.default_rng(seed), batch, m, n, k, ta, tb)
    _check(gemm_narrow_panels, a, b, threads)


# Beyond 48 rows the first row tile of a task packs B as it reads it; narrow panels (1, 2 or
# 3 vectors of valid columns, all present or not: N = 10, 16, 32, 40, 48 and the last panels
# of 80, 96, 131), several row blocks (M > 240) and uneven K blocks (K = 520, 784) each take
# their own path through it, and so does A read in place (at most 2 panels: N = 10, 32, 65,
# 97, 128).
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 97, 13), (97, 1, 13), (13, 31, 1),
                                   (257, 131, 97), (64, 128, 300), (128, 10, 256),
                                   (300, 17, 520), (61, 200, 784), (250, 65, 40),
                                   (49, 600, 33), (128, 32, 256), (70, 40, 300), (50, 48, 100),
                                   (61, 80, 130), (130, 96, 64), (20, 16, 40), (33, 35, 17)])
def test_gemm_default_blocks_odd_sizes(gemm_default, m, n, k, rng):
    a, b = _operands(rng, 1, m, n, k)
    c1 = _check(gemm_default, a, b, 1)
    c2 = _check(gemm_default, a, b, 2)
    np.testing.assert_array_equal(c1, c2)  # thread count never changes the summation order


def test_zen_blocks_are_chosen_by_cpu_name():
    assert GemmConfig.for_vector_bits(512, cpu="znver4").kc == ZEN_F32_BLOCKS["kc"]
    assert GemmConfig.for_vector_bits(512, cpu="sapphirerapids").kc == GemmConfig().kc
    assert GemmConfig.for_vector_bits(512, "f64", cpu="znver4").kc == 256  # f64 keeps its own
    assert GemmConfig.for_vector_bits(256, cpu="znver3").kc == GemmConfig().kc


@pytest.fixture(scope="module")
def gemm_zen_blocks():
    return _compile(GemmConfig.for_vector_bits(32 * LANES, **ZEN_F32_BLOCKS))


# Whatever CPU runs the tests: the AMD Zen blocks (K blocks up to 768, A blocks of 48 rows)
# across their edges, at one and two threads.
@pytest.mark.parametrize("m,n,k", [(49, 70, 769), (97, 130, 1600), (48, 64, 768),
                                   (130, 33, 900), (5, 200, 1537)])
def test_gemm_zen_blocks(gemm_zen_blocks, m, n, k, rng):
    a, b = _operands(rng, 1, m, n, k)
    np.testing.assert_array_equal(_check(gemm_zen_blocks, a, b, 1),
                                  _check(gemm_zen_blocks, a, b, 2))


@pytest.mark.parametrize("m,n,k", [(600, 130, 100), (513, 512, 40), (150, 1030, 64),
                                   (97, 2100, 30), (800, 768, 20), (100, 1280, 30),
                                   (13, 1100, 20)])
@pytest.mark.parametrize("threads", [2, 3])
def test_gemm_splits_rows_or_columns_for_threads(gemm_default, m, n, k, threads, rng):
    """Too few column blocks for the threads: rows are split when N <= M (each task repacks
    its columns of B), columns otherwise (each task repacks A); column blocks of equal width
    (N = 768: 384 + 384), and blocks the threads cannot share evenly (N = 1280: three) split
    into row blocks too, as far as M allows. Whatever the grid, the result is the one-thread
    result, bit for bit."""
    a, b = _operands(rng, 1, m, n, k)
    np.testing.assert_array_equal(_check(gemm_default, a, b, threads),
                                  _check(gemm_default, a, b, 1))


@pytest.mark.parametrize("m,n,k,tb,batch", [(128, 256, 784, False, 1), (40, 10, 300, True, 1),
                                            (300, 70, 33, False, 2), (7, 130, 520, True, 3)])
def test_gemm_prepacked_b_is_filled_once_then_used(gemm_default, m, n, k, tb, batch, rng):
    """bpre_fill packs all of B first; later calls read only the packed copy (B zeroed in
    between must not change the result), for one and two threads and a shared B."""
    from graphc.backends.llvm.runtime import aligned_empty

    a, b = _operands(rng, batch, m, n, k, tb=tb)
    b = np.broadcast_to(b[:1], b.shape)  # one B for every batch item (batch stride 0)
    want = _check(gemm_default, a, b, 1)
    pre = aligned_empty((prepacked_b_elements(DEFAULT, k, n),), np.dtype(np.float32))
    for threads, fill in ((1, True), (2, False), (1, False)):
        c = np.full(want.shape, np.nan, np.float32)
        gemm_default(*gemm_numpy_args(a, b if fill else np.zeros_like(b), c, threads,
                                      bpre=pre.ctypes.data, bpre_fill=fill))
        np.testing.assert_array_equal(c, want)


@pytest.mark.parametrize("batch,shared,m", [(1, False, 40), (3, False, 40), (3, True, 40),
                                            (1, False, 5), (1, False, 1), (3, False, 3)])
def test_gemm_few_rows_and_a_large_b(gemm_default, batch, shared, m, rng):
    """Tasks of few rows read B in place while all of B fits DIRECT_B_MAX_BYTES, and pack it
    beyond (one B of 1.5 MiB, three of 0.5 MiB; one shared 0.5 MiB B stays in place): the
    same products either way, for one and two threads. Fewer rows than a register tile pack
    B up front (packing as it reads needs a full tile: a 6-row tile over 5 rows once wrote
    past C)."""
    k, n = (384, 1024) if batch == 1 else (128, 1024)
    a, b = _operands(rng, batch, m, n, k)
    if shared:
        b = np.broadcast_to(b[:1], b.shape)
    np.testing.assert_array_equal(_check(gemm_default, a, b, 2), _check(gemm_default, a, b, 1))


@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (True, True)])
def test_gemm_default_transposed(gemm_default, ta, tb, rng):
    a, b = _operands(rng, 2, 45, 70, 83, ta, tb)
    _check(gemm_default, a, b, 2)


def test_batch_broadcast_with_stride_zero(gemm_small, rng):
    a, b = _operands(rng, 1, 9, 21, 17)
    a3 = np.broadcast_to(a, (3, 9, 17))
    scale = np.float32([1, 2, 3])[:, None, None]
    b3 = np.ascontiguousarray(np.broadcast_to(b, (3, 17, 21)) * scale)
    _check(gemm_small, a3, b3, 2)
    _check(gemm_small, b3.transpose(0, 2, 1), np.broadcast_to(a.transpose(0, 2, 1), (3, 17, 9)))


def test_general_strides(gemm_small, rng):
    big_a = rng.standard_normal((2, 30, 40)).astype(np.float32)
    big_b = rng.standard_normal((2, 50, 60)).astype(np.float32)
    a = big_a[:, ::2, 1::2]  # [2, 15, 20], strides (1200, 80, 2) elements
    b = big_b[:, ::2, ::3][:, :20, :]  # [2, 20, 20]
    _check(gemm_small, a, b, 3)
    c = np.full((2, 15, 32), np.nan, np.float32)[:, :, :20]  # row stride 32 > N
    _check(gemm_small, a, b, 1, c=c)


def test_zero_sized(gemm_small):
    a = np.ones((1, 5, 0), np.float32)
    b = np.ones((1, 0, 7), np.float32)
    c = np.full((1, 5, 7), np.nan, np.float32)
    gemm_small(*gemm_numpy_args(a, b, c, 2))
    np.testing.assert_array_equal(c, 0)  # K = 0: C = 0
    c0 = np.full((1, 0, 7), np.nan, np.float32)
    gemm_small(*gemm_numpy_args(np.ones((1, 0, 3), np.float32), np.ones((1, 3, 7), np.float32),
                                c0, 2))


def test_caller_workspace(gemm_small, rng):
    a, b = _operands(rng, 2, 33, 40, 35)
    ws = np.zeros(SMALL.workspace_bytes(3), np.uint8)
    c1 = np.empty((2, 33, 40), np.float32)
    c2 = np.empty((2, 33, 40), np.float32)
    gemm_small(*gemm_numpy_args(a, b, c1, 3, ws.ctypes.data))
    gemm_small(*gemm_numpy_args(a, b, c2, 3))
    np.testing.assert_array_equal(c1, c2)


@pytest.mark.parametrize("cfg_name", ["small", "default"])
@pytest.mark.parametrize("m,n,k,threads", [(7, 1, 1, 1), (30, 65, 17, 2), (13, 200, 0, 3),
                                           (50, 1100, 400, 2), (40, 64, 800, 1),
                                           (9, 129, 385, 4)])
def test_workspace_sized_for_the_product(cfg_name, m, n, k, threads, gemm_small, gemm_default,
                                         rng):
    """A workspace of exactly `workspace_bytes(threads, N, K)` is enough: the bytes after it
    stay untouched, and results equal those with GEMM's own scratch."""
    cfg, fn = (SMALL, gemm_small) if cfg_name == "small" else (DEFAULT, gemm_default)
    size = cfg.workspace_bytes(threads, n, k)
    assert size <= cfg.workspace_bytes(threads)
    guard = 4096
    ws = np.zeros(size + guard, np.uint8)
    ws[size:] = 0xA5
    a, b = _operands(rng, 1, m, n, k)
    c1 = np.empty((1, m, n), np.float32)
    c2 = np.empty((1, m, n), np.float32)
    fn(*gemm_numpy_args(a, b, c1, threads, ws.ctypes.data))
    assert np.all(ws[size:] == 0xA5)
    fn(*gemm_numpy_args(a, b, c2, threads))
    np.testing.assert_array_equal(c1, c2)


def test_f64_and_accumulate(rng):
    cfg = GemmConfig.for_vector_bits(32 * LANES, "f64", kc=8, mc=12, accumulate=True)
    cfg = GemmConfig(**{**cfg.__dict__, "nc": cfg.nr})
    fn = _compile(cfg)
    a, b = _operands(rng, 2, 19, 23, 29, dtype=np.float64)
    c0 = rng.standard_normal((2, 19, 23))
    c = c0.copy()
    fn(*gemm_numpy_args(a, b, c, 2))
    np.testing.assert_allclose(c, c0 + a @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mc,m", [(12, 40), (None, 500)])
def test_f64_tasks_of_many_rows_and_panels(mc, m, rng):
    """f64 packs A up front even in tasks of many rows and panels (where f32 packs it in the
    first panel's microkernels): a task of more than two row blocks and three panels."""
    cfg = GemmConfig.for_vector_bits(32 * LANES, "f64", **({"mc": mc} if mc else {}))
    a, b = _operands(rng, 1, m, 3 * cfg.nr + 5, 40, dtype=np.float64)
    _check(_compile(cfg), a, b, 1)


def _bias_relu(ctx: EpilogueContext) -> ir.Value:
    b = ctx.builder
    (bias,) = ctx.args
    vty = ctx.acc.type
    bv = masked_load(b, b.bitcast(b.gep(bias, [ctx.col0]), vty.as_pointer()), ctx.mask, vty)
    x = b.fadd(ctx.acc, bv)
    return b.select(b.fcmp_ordered(">", x, ir.Constant(vty, None)), x, ir.Constant(vty, None))


def test_epilogue_bias_relu(rng):
    cfg = GemmConfig(**{**SMALL.__dict__, "epilogue_args": (F32.as_pointer(),)})
    fn = _compile(cfg, _bias_relu, (ctypes.c_void_p,))
    for m, n, k in [(1, 1, 1), (13, 37, 41), (8, 2 * LANES, 16)]:
        a, b = _operands(rng, 2, m, n, k)
        bias = rng.standard_normal(n).astype(np.float32)
        c = np.full((2, m, n), np.nan, np.float32)
        fn(*gemm_numpy_args(a, b, c, 2), bias.ctypes.data)
        ref = np.maximum(a.astype(np.float64) @ b + bias, 0)
        np.testing.assert_allclose(c, ref, rtol=1e-5, atol=1e-5)


def _residual_sigmoid(ctx: EpilogueContext) -> ir.Value:
    """sigmoid(acc + residual[batch, row, col] + row) with the residual's row stride an
    argument: exercises the row index, the batch index and vector math in an epilogue."""
    b = ctx.builder
    res, ld = ctx.args
    vty = ctx.acc.type
    base = b.add(b.mul(b.add(b.mul(ctx.batch, ir.Constant(I64, 64)), ctx.row), ld), ctx.col0)
    rv = masked_load(b, b.bitcast(b.gep(res, [base]), vty.as_pointer()), ctx.mask, vty)
    row = b.sitofp(ctx.row, F32)
    rowv = b.shuffle_vector(b.insert_element(ir.Constant(vty, None), row, ir.Constant(I64, 0)),
                            ir.Constant(vty, None), ir.Constant(ir.VectorType(ir.IntType(32),
                                                                              vty.count), None))
    return emit_math_inline(b, "sigmoid", b.fadd(b.fadd(ctx.acc, rv), rowv))


def test_epilogue_residual_sigmoid(rng):
    cfg = GemmConfig(**{**SMALL.__dict__, "epilogue_args": (F32.as_pointer(), I64)})
    fn = _compile(cfg, _residual_sigmoid, (ctypes.c_void_p, ctypes.c_int64))
    m, n, k = 21, 45, 19
    a, b = _operands(rng, 2, m, n, k)
    res = rng.standard_normal((2, 64, 50)).astype(np.float32)
    c = np.full((2, m, n), np.nan, np.float32)
    fn(*gemm_numpy_args(a, b, c, 3), res.ctypes.data, 50)
    z = a.astype(np.float64) @ b + res[:, :m, :n] + np.arange(m)[None, :, None]
    np.testing.assert_allclose(c, 1 / (1 + np.exp(-z)), rtol=1e-5, atol=1e-6)


def test_microkernel_uses_vector_fma():
    m = ir.Module()
    emit_gemm(m, "g", DEFAULT)
    jit = compile_module(m)
    assert f"llvm.fma.v{LANES}f32" in jit.optimized_ir


def test_gemms_of_one_module_share_packing(rng):
    m = ir.Module(name="two_gemms")
    emit_gemm(m, "plain", SMALL)
    emit_gemm(m, "acc", GemmConfig(**{**SMALL.__dict__, "accumulate": True}))
    assert sum(".pack_" in f.name for f in m.functions) == 2
    jit = compile_module(m)
    a, b = _operands(rng, 1, 7, 9, 5)
    c = np.empty((1, 7, 9), np.float32)
    jit.cfunc("plain", None, *gemm_ctypes_signature(SMALL))(*gemm_numpy_args(a, b, c))
    jit.cfunc("acc", None, *gemm_ctypes_signature(SMALL))(*gemm_numpy_args(a, b, c))
    np.testing.assert_allclose(c, 2 * (a.astype(np.float64) @ b), rtol=1e-5, atol=1e-5)


def test_bad_config_and_args():
    with pytest.raises(GraphError, match="multiple of nr"):
        emit_gemm(ir.Module(), "g", GemmConfig(nc=100))
    with pytest.raises(GraphError, match="dtype"):
        emit_gemm(ir.Module(), "g", GemmConfig(dtype="i32"))
    a = np.ones((1, 2, 3), np.float32)
    with pytest.raises(GraphError, match="disagree"):
        gemm_numpy_args(a, np.ones((1, 4, 2), np.float32), np.ones((1, 2, 2), np.float32))


def test_portable_avx2_build(rng):
    """x86-64-v3 code (8-lane vectors, 6 x 16 tile) from the same generator."""
    cfg = GemmConfig.for_vector_bits(256, kc=16, mc=12, nc=32)
    m = ir.Module(name="gemm_avx2")
    emit_gemm(m, "gemm", cfg)
    fn = compile_module(m, TargetSpec.portable()).cfunc("gemm", None, *gemm_ctypes_signature(cfg))
    a, b = _operands(rng, 2, 23, 37, 41, tb=True)
    _check(fn, a, b, 2)


def test_aot_parallel_gemm_in_fresh_process(tmp_path, rng):
    """The shared library links libgomp itself and runs through ctypes without llvmlite."""
    import subprocess
    import sys
    import textwrap

    m = ir.Module(name="gemm_aot")
    emit_gemm(m, "gemm", SMALL)
    from graphc.backends.llvm.target import emit_shared_library

    path = tmp_path / "gemm.so"
    emit_shared_library(m, path, name="gemm_aot")
    a, b = _operands(rng, 2, 29, 70, 33)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    code = textwrap.dedent(f"""
        import ctypes, sys
        import numpy as np
        from graphc.backends.llvm.aot_loader import load_library
        a, b = np.load({str(tmp_path / "a.npy")!r}), np.load({str(tmp_path / "b.npy")!r})
        c = np.empty((2, 29, 70), np.float32)
        i64, p = ctypes.c_int64, ctypes.c_void_p
        fn = load_library({str(path)!r}).function(
            "gemm", None, *([i64] * 4 + [p, i64, i64, i64] * 2 + [p, i64, i64, ctypes.c_int32, p]))
        es = 4
        fn(2, 29, 70, 33, a.ctypes.data, *[s // es for s in a.strides], b.ctypes.data,
           *[s // es for s in b.strides], c.ctypes.data, 29 * 70, 70, 2, None)
        np.save({str(tmp_path / "c.npy")!r}, c)
        print("llvmlite" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    c = np.load(tmp_path / "c.npy")
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
