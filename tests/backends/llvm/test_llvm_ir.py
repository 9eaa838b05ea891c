"""IR helpers of the LLVM backend checked on real machine code: `lane_sums` against numpy for
any number of vectors (odd counts, fewer and more than a vector's lanes), 16, 8 and 4 lanes,
f32 and f64, and against `lane_tree`, each accumulator summed by its own halving tree."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from llvmlite import ir

from graphc.backends.llvm.llvm_ir import F32, I64, VOID, lane_sums, lane_tree
from graphc.backends.llvm.target import compile_module


def _sums_function(n: int, lanes: int, dtype: str, joint: bool):
    """sums(float* in, float* out): out[i] = the lanes of vector i summed (n vectors)."""
    t = F32 if dtype == "f32" else ir.DoubleType()
    m = ir.Module(name="lane_sums_test")
    fn = ir.Function(m, ir.FunctionType(VOID, [t.as_pointer(), t.as_pointer()]), name="sums")
    src, dst = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vty = ir.VectorType(t, lanes)
    vectors = [b.load(b.bitcast(b.gep(src, [ir.Constant(I64, i * lanes)]), vty.as_pointer()),
                      align=4) for i in range(n)]
    sums = lane_sums(b, vectors) if joint else [lane_tree(b, v, b.fadd) for v in vectors]
    for i, s in enumerate(sums):
        b.store(s, b.gep(dst, [ir.Constant(I64, i)]))
    b.ret_void()
    return compile_module(m).cfunc("sums", None, ctypes.c_void_p, ctypes.c_void_p)


@pytest.mark.parametrize("lanes", [16, 8, 4])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 18, 25, 33])
def test_lane_sums_sum_every_vector(n, lanes, dtype, rng):
    np_dt = np.float32 if dtype == "f32" else np.float64
    x = rng.standard_normal((n, lanes)).astype(np_dt)
    got = {}
    for joint in (True, False):
        out = np.full(n, np.nan, np_dt)
        _sums_function(n, lanes, dtype, joint)(x.ctypes.data, out.ctypes.data)
        got[joint] = out
    want = x.astype(np.float64).sum(axis=1)
    tol = 1e-5 if dtype == "f32" else 1e-13
    np.testing.assert_allclose(got[True], want, rtol=tol, atol=tol)
    np.testing.assert_allclose(got[True], got[False], rtol=tol, atol=tol)
