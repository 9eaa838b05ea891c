"""Parallel-for with libgomp: every index is processed exactly once, results are identical to
the serial loop for every n (0, 1, fewer than threads, not a multiple of grain), any grain."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from llvmlite import ir

from graphc.backends.llvm.llvm_ir import F32, I32, I64, VOID, emit_loop
from graphc.backends.llvm.mathlib import emit_math
from graphc.backends.llvm.parallel import ParallelBody, emit_parallel_for, load_gomp
from graphc.backends.llvm.target import compile_module

ARGS = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32)


def _kernel_module(use_gomp: bool) -> ir.Module:
    """kernel(float* out, i64* count, i64 n, i64 grain, i32 nthreads):
    out[i] = exp(i·1e-3) + worker·0, count[i] += 1, chunk records its worker in count[n + c]."""
    m = ir.Module(name="pfor_test")
    fn = ir.Function(m, ir.FunctionType(VOID, [F32.as_pointer(), I64.as_pointer(), I64, I64,
                                               I32]), name="kernel")
    out, count, n, grain, nthreads = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    exp = emit_math(m, "exp", "f32")

    def body(p: ParallelBody) -> None:
        out_c, count_c, n_c, _grain = p.captures

        def elem(bb: ir.IRBuilder, i: ir.Value, _c: list) -> list:
            x = bb.fmul(bb.sitofp(i, F32), ir.Constant(F32, 1e-3))
            bb.store(bb.call(exp, [x]), bb.gep(out_c, [i]))
            slot = bb.gep(count_c, [i])
            bb.store(bb.add(bb.load(slot), ir.Constant(I64, 1)), slot)
            return []

        emit_loop(p.builder, p.lo, p.hi, elem, name="elem")
        p.builder.store(p.worker, p.builder.gep(count_c, [p.builder.add(n_c, p.chunk)]))

    emit_parallel_for(b, body, n, grain=grain, nthreads=nthreads,
                      captures=(out, count, n, grain), use_gomp=use_gomp)
    b.ret_void()
    return m


@pytest.fixture(scope="module")
def kernels():
    return {g: compile_module(_kernel_module(g)).cfunc("kernel", None, *ARGS)
            for g in (True, False)}


def _run(fn, n: int, grain: int, threads: int):
    nchunks = -(-n // max(grain, 1))  # the kernel treats grain 0 as 1
    out = np.full(n, -1.0, np.float32)
    count = np.zeros(n + nchunks, np.int64)
    fn(out.ctypes.data, count.ctypes.data, n, grain, threads)
    return out, count[:n], count[n:]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 1000, 4099, 100_003])
@pytest.mark.parametrize("grain", [1, 16, 1000])
def test_parallel_matches_serial(kernels, n, grain):
    if n > 10_000 and grain == 1:
        grain = 7
    serial, count_s, _ = _run(kernels[False], n, grain, 1)
    x = np.arange(n, dtype=np.float32) * np.float32(1e-3)
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(serial, want, rtol=3e-7)
    assert np.all(count_s == 1)
    for threads in (1, 2, 3, 8):
        got, count, workers = _run(kernels[True], n, grain, threads)
        np.testing.assert_array_equal(got, serial)
        assert np.all(count == 1)  # each index exactly once
        assert np.all((workers >= 0) & (workers < min(threads, max(len(workers), 1))))


def test_zero_grain_means_one(kernels):
    got, count, _ = _run(kernels[True], 10, 0, 2)
    assert np.all(count == 1)


def test_libgomp_loads_here():
    assert load_gomp()


def test_ir_text_compiles_in_a_process_without_libgomp_loaded(tmp_path):
    """compile_module loads libgomp itself when a module declares GOMP_parallel."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "k.ll").write_text(str(_kernel_module(True)))
    code = textwrap.dedent(f"""
        import ctypes
        import numpy as np
        from graphc.backends.llvm.target import compile_module
        jit = compile_module(open({str(tmp_path / "k.ll")!r}).read())
        fn = jit.cfunc("kernel", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                       ctypes.c_int64, ctypes.c_int32)
        out = np.zeros(100, np.float32); count = np.zeros(100 + 10, np.int64)
        fn(out.ctypes.data, count.ctypes.data, 100, 10, 2)
        assert (count[:100] == 1).all()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _plans(graph, threads: int = 2) -> dict:
    import graphc

    return graphc.compile(graph, target="llvm", threads=threads).stats()["kernel_plans"]


def test_small_loop_kernel_after_serial_work_stays_on_one_thread(rng):
    """A pooling loop kernel (work between the parallel and the locality bound) reading the
    output of a small serial convolution runs on the convolution's thread, with results equal
    to one thread's; fed by a GEMM that ran on both threads, the same kind of kernel is split."""
    import graphc
    from graphc.backends.llvm.codegen_loop import LOCAL_WORK, PARALLEL_WORK

    b = graphc.Builder("se", seed=0)
    x = b.input("x", (4, 48, 16, 16))
    y = b.conv2d(x, b.param("w", (48, 1, 3, 3), init="he"), padding=1, groups=48)
    g = b.build(outputs={"s": (y * b.sigmoid(y)).mean((2, 3))})
    plans = _plans(g)
    pooled = [p for p in plans.values() if p["kind"] == "loop"]
    assert len(pooled) == 1 and PARALLEL_WORK <= pooled[0]["work"] < LOCAL_WORK
    assert pooled[0]["local"] and not pooled[0]["parallel"]
    feed = {"x": rng.standard_normal((4, 48, 16, 16)).astype(np.float32)}
    one = graphc.compile(g, target="llvm", threads=1)(feed)["s"]
    np.testing.assert_array_equal(graphc.compile(g, target="llvm", threads=2)(feed)["s"], one)

    b = graphc.Builder("gemm_then_softmax", seed=0)
    z = b.matmul(b.input("a", (128, 512)), b.param("w", (512, 256), init="he"))
    g = b.build(outputs={"h": b.softmax(z)})
    (rows,) = [p for p in _plans(g).values() if p["kind"] == "loop"]
    assert PARALLEL_WORK <= rows["work"] < LOCAL_WORK
    assert rows["parallel"] and not rows.get("local")
