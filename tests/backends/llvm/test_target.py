"""Target machines, JIT compilation with symbol checks, and AOT shared libraries loaded through
ctypes in a process that never imports llvmlite."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from graphc.backends.llvm.target import (
    LLVMBackendError,
    TargetSpec,
    compile_module,
    emit_shared_library,
    external_symbols,
    parse_module,
)

AXPY = """
define void @axpy(float* noalias %x, float* noalias %y, float %a, i64 %n) {
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %exit, label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %px = getelementptr float, float* %x, i64 %i
  %py = getelementptr float, float* %y, i64 %i
  %xv = load float, float* %px
  %yv = load float, float* %py
  %ax = fmul float %xv, %a
  %r = fadd float %ax, %yv
  store float %r, float* %py
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}
"""

CALLS_MISSING = """
declare float @graphc_no_such_symbol(float)
define float @f(float %x) {
  %r = call float @graphc_no_such_symbol(float %x)
  ret float %r
}
"""

AXPY_ARGS = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int64)


def _run_axpy(fn, n: int) -> None:
    x = np.arange(n, dtype=np.float32)
    y = np.ones(n, np.float32)
    fn(x.ctypes.data, y.ctypes.data, 2.0, n)
    np.testing.assert_array_equal(y, 2 * np.arange(n, dtype=np.float32) + 1)


def test_jit_compiles_runs_and_vectorizes():
    jit = compile_module(AXPY, name="axpy")
    for n in (0, 1, 17, 1000):
        _run_axpy(jit.cfunc("axpy", None, *AXPY_ARGS), n)
    spec = TargetSpec.host()
    width = 16 if spec.has_avx512 else 8
    assert f"<{width} x float>" in jit.optimized_ir  # the O3 pipeline vectorized the loop
    assert jit.times.total_s > 0 and jit.times.optimize_s > 0


def test_missing_symbol_is_an_error_not_a_crash():
    with pytest.raises(LLVMBackendError, match="graphc_no_such_symbol"):
        compile_module(CALLS_MISSING)


def test_invalid_ir_names_the_module():
    with pytest.raises(LLVMBackendError, match="broken"):
        compile_module("define void @f() { ret i32 0 }", name="broken")


def test_external_symbols_ignores_intrinsics():
    ref = parse_module(CALLS_MISSING + "declare float @llvm.fabs.f32(float)\n", TargetSpec.host())
    assert external_symbols(ref) == ["graphc_no_such_symbol"]


def test_unknown_function_name():
    jit = compile_module(AXPY)
    with pytest.raises(LLVMBackendError, match="nope"):
        jit.address("nope")


def _run_in_fresh_python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("portable", [False, True])
def test_aot_library_runs_without_llvmlite(tmp_path, portable):
    spec = TargetSpec.portable() if portable else TargetSpec.host()
    path = tmp_path / "axpy.so"
    times = emit_shared_library(AXPY, path, spec, name="axpy")
    assert path.exists() and times.total_s > 0
    out = _run_in_fresh_python(f"""
        import ctypes, sys
        import numpy as np
        from graphc.backends.llvm.aot_loader import load_library
        lib = load_library({str(path)!r})
        fn = lib.function("axpy", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float,
                          ctypes.c_int64)
        x = np.arange(100, dtype=np.float32); y = np.ones(100, np.float32)
        fn(x.ctypes.data, y.ctypes.data, 2.0, 100)
        assert np.array_equal(y, 2 * x + 1), y
        print("llvmlite" in sys.modules)
    """)
    assert out.strip() == "False"


def test_aot_missing_symbol_fails_at_link_time(tmp_path):
    with pytest.raises(LLVMBackendError, match="graphc_no_such_symbol"):
        emit_shared_library(CALLS_MISSING, tmp_path / "bad.so")


def test_aot_loader_errors(tmp_path):
    from graphc.backends.llvm.aot_loader import AotLoadError, load_library

    with pytest.raises(AotLoadError, match="does not exist"):
        load_library(tmp_path / "missing.so")
    path = tmp_path / "axpy.so"
    emit_shared_library(AXPY, path)
    with pytest.raises(AotLoadError, match="no function 'nope'"):
        load_library(path).function("nope", None)


def test_import_graphc_does_not_import_llvmlite():
    out = _run_in_fresh_python("""
        import sys
        import graphc, graphc.backends.llvm, graphc.backends.llvm.aot_loader
        print("llvmlite" in sys.modules)
    """)
    assert out.strip() == "False"
