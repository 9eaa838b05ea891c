"""The LLVM CPU backend (llvmlite): kernel IR -> vectorized, multithreaded machine code.

Modules (infrastructure the kernel-IR code generator builds on):
  target.py       TargetSpec (host / portable x86-64-v3), the O3 + vectorizer pipeline,
                  compile_module (MCJIT, symbol-checked), emit_shared_library (AOT, cc -shared)
  aot_loader.py   load an AOT library with ctypes only (never imports llvmlite)
  llvm_ir.py      dtypes, hand-declared intrinsics, masked vector load/store, counted loops
  mathlib.py      vectorizable exp/expm1/log/log1p/tanh/sigmoid/softplus/erf/pow/rsqrt in IR
  parallel.py     parallel-for over [0, n) with libgomp's GOMP_parallel (serial fallback)
  gemm.py         generated BLIS-style sgemm/dgemm: blocking, packing decisions, tasks,
                  strides, batch, parallel (packing routines in gemm_pack.py)
  gemm_microkernel.py  the register-blocked microkernels, their variants, the epilogue hook

The kernel-IR code generator and runtime built on them:
  lowering.py     the ONE lowering table: every primitive, elementwise ones as scalar emitters
  codegen.py      Schedule -> module: a function per (distinct) kernel, storage, graphc_main
  codegen_expr.py scalar/index expressions, loads and stores, vector mode for epilogues
  codegen_loop.py loop kernels: normalized nests, row/column schedules, sweeps
  codegen_rows.py row sweeps as explicit vector loops and reductions, stashes, prefetching
  codegen_gemm.py matmul kernels on gemm.py (shared per module, epilogue functions, staging)
  codegen_conv.py register-blocked direct convolution; codegen_template.py the fallbacks
  codegen_library.py  take, scatter_add, select_scatter
  program.py      build_program(schedule, options): cache, compile, NativeProgram
  runtime.py      NativeProgram and the C entry point's layout (no llvmlite)
  cache.py        on-disk compile cache (content-hashed, atomic writes)

Importing this package does not import llvmlite: the names below load their module on first
access, so `aot_loader` stays usable where llvmlite is not installed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TargetSpec": "target", "JitModule": "target", "CompileTimes": "target",
    "LLVMBackendError": "target", "compile_module": "target", "emit_shared_library": "target",
    "optimize_module": "target",
    "emit_math": "mathlib", "emit_math_inline": "mathlib", "MATH_FUNCTIONS": "mathlib",
    "emit_parallel_for": "parallel", "ParallelBody": "parallel", "load_gomp": "parallel",
    "emit_gemm": "gemm", "GemmConfig": "gemm", "EpilogueContext": "gemm_microkernel",
    "load_library": "aot_loader", "AotLibrary": "aot_loader", "AotLoadError": "aot_loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
