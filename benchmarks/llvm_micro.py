"""Micro-benchmarks of the LLVM backend's building blocks (numbers go in RESULTS-llvm-micro.md).

    python benchmarks/llvm_micro.py --accuracy     # mathlib max errors, markdown table
    python benchmarks/llvm_micro.py --math         # mathlib throughput vs numpy
    python benchmarks/llvm_micro.py --gemm         # GEMM GFLOP/s vs numpy's BLAS, 1 and 2 threads
    python benchmarks/llvm_micro.py --shapes       # GEMM on batch-1 and transformer-like shapes
    python benchmarks/llvm_micro.py --parallel     # parallel-for overhead and scaling
    python benchmarks/llvm_micro.py --compile      # compile times (JIT and AOT)
    python benchmarks/llvm_micro.py --tune         # GEMM tile/block sweep
    python benchmarks/llvm_micro.py --all

Timings are best-of-N (the machine is shared); each comparison runs baseline and ours
interleaved in the same process. Speed is never asserted in tests: it lives here.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
from llvmlite import ir

from graphc.backends.llvm.gemm import GemmConfig, emit_gemm, gemm_ctypes_signature, gemm_numpy_args
from graphc.backends.llvm.llvm_ir import F32, I32, I64, VOID, emit_loop
from graphc.backends.llvm.mathlib import MATH_FUNCTIONS
from graphc.backends.llvm.mathlib_accuracy import compile_apply, measure
from graphc.backends.llvm.parallel import ParallelBody, emit_parallel_for
from graphc.backends.llvm.target import TargetSpec, compile_module, emit_shared_library


def best_time(fn: Callable[[], object], min_time: float = 0.2, rounds: int = 5) -> float:
    """Best per-call seconds over `rounds` rounds of at least `min_time` each."""
    fn()
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if time.perf_counter() - t0 >= min_time / 4 or reps > 1 << 20:
            break
        reps *= 2
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def machine_line() -> str:
    spec = TargetSpec.host()
    return (f"host: {platform.processor() or platform.machine()}, LLVM cpu `{spec.cpu}`, "
            f"{spec.vector_bits}-bit vectors, {os.cpu_count()} CPUs")


# ---------------------------------------------------------------------------------------------


def bench_accuracy(size: int) -> None:
    print(f"## mathlib accuracy ({size} points per function and dtype)\n")
    print("max ulp error = |got − exact| / ulp(exact); rel = max relative error in units of "
          "the dtype's epsilon; f32 vs numpy float64, f64 vs numpy long double (erf: "
          "math.erf, and a long-double series).\n")
    print("| function | f32 max ulp | f32 max rel (eps) | f64 max ulp | f64 max rel (eps) |")
    print("|---|---|---|---|---|")
    jits = {dt: compile_apply(dtype=dt) for dt in ("f32", "f64")}
    for name in MATH_FUNCTIONS:
        r = {dt: measure(name, dt, size if dt == "f32" else size // 4, jits[dt])
             for dt in ("f32", "f64")}
        for acc in r.values():
            if acc.mismatches:
                print(f"<!-- {name} {acc.dtype}: {acc.mismatches} non-finite mismatches -->")
        print(f"| {name} | {r['f32'].max_ulp:.2f} | {r['f32'].max_rel_eps:.2f} | "
              f"{r['f64'].max_ulp:.2f} | {r['f64'].max_rel_eps:.2f} |")
    print("\nf64 pow carries log|x| and y·log|x| as hi + lo, so the error does not grow with "
          "|y·ln x|. f32 pow evaluates in f64 internally, so only its final rounding to f32 "
          "shows.\n")


def bench_math() -> None:
    print("## mathlib throughput (64K elements in cache, Gelem/s; numpy with out=)\n")
    print("| function | ours f32 | numpy f32 | ours f64 | numpy f64 |")
    print("|---|---|---|---|---|")
    n = 1 << 16
    ref = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
           "tanh": np.tanh, "rsqrt": None, "pow": np.power}
    rows = {}
    for dt, ft in (("f32", np.float32), ("f64", np.float64)):
        jit = compile_apply(dtype=dt)
        x = (np.random.default_rng(0).random(n) * 4 + 0.1).astype(ft)
        y = np.random.default_rng(1).random(n).astype(ft)
        out = np.empty_like(x)
        for name in MATH_FUNCTIONS:
            nin = 2 if name == "pow" else 1
            f = jit.cfunc(f"apply_{name}", None, *([ctypes.c_void_p] * (nin + 1)),
                          ctypes.c_int64)
            args = [x.ctypes.data, y.ctypes.data][:nin] + [out.ctypes.data, n]
            ours = n / best_time(lambda f=f, args=args: f(*args)) / 1e9
            np_fn = ref.get(name)
            if np_fn is None:
                theirs = "—"
            else:
                ins = (x, y) if name == "pow" else (x,)
                t = best_time(lambda np_fn=np_fn, ins=ins, out=out: np_fn(*ins, out=out))
                theirs = f"{n / t / 1e9:.2f}"
            rows.setdefault(name, []).extend([f"{ours:.2f}", theirs])
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()


# ---------------------------------------------------------------------------------------------


def compile_gemm(config: GemmConfig):
    m = ir.Module(name="bench_gemm")
    emit_gemm(m, "gemm", config)
    jit = compile_module(m, name="bench_gemm")
    return jit.cfunc("gemm", None, *gemm_ctypes_signature(config)), jit


def gemm_gflops(fn, n: int, threads: int, ta: bool = False, tb: bool = False) -> float:
    rng = np.random.default_rng(0)
    a = rng.random((1, n, n), np.float32)
    b = rng.random((1, n, n), np.float32)
    a = a.transpose(0, 2, 1) if ta else a
    b = b.transpose(0, 2, 1) if tb else b
    c = np.empty((1, n, n), np.float32)
    ws = np.zeros(GemmConfig().workspace_bytes(threads) * 4, np.uint8)
    args = gemm_numpy_args(a, b, c, threads, ws.ctypes.data)
    return 2 * n**3 / best_time(lambda: fn(*args), min_time=0.3) / 1e9


def numpy_gflops(n: int, threads: int) -> float:
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.random((n, n), np.float32)
    b = rng.random((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    with threadpool_limits(threads):
        return 2 * n**3 / best_time(lambda: np.matmul(a, b, out=c), min_time=0.3) / 1e9


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    infos = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
             f"{i.get('num_threads')} threads)" for i in threadpool_info()
             if i.get("user_api") == "blas"]
    core = os.environ.get("OPENBLAS_CORETYPE", "unset")
    return f"numpy BLAS: {', '.join(infos) or 'none found'}; OPENBLAS_CORETYPE={core}"


def bench_gemm(sizes: tuple[int, ...], rounds: int = 3) -> None:
    spec = TargetSpec.host()
    cfg = GemmConfig.for_vector_bits(spec.vector_bits)
    fn, jit = compile_gemm(cfg)
    print(f"## GEMM (f32, C = A @ B, square n, GFLOP/s, best of {rounds} interleaved rounds)"
          f"\n\n{blas_info()}; ours: "
          f"mr={cfg.mr} nr={cfg.nr} kc={cfg.kc} mc={cfg.mc} nc={cfg.nc}, "
          f"compiled in {jit.times.total_s * 1e3:.0f} ms\n")
    print("| n | numpy 1T | ours 1T | ours/numpy 1T | numpy 2T | ours 2T | ours/numpy 2T "
          "| ours 1T Aᵀ | ours 1T Bᵀ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        # Best over `rounds` interleaved rounds: a shared machine's load spikes hit both sides.
        best: dict[str, float] = {}
        for _ in range(rounds):
            for t in (1, 2):
                for key, fn_ in ((f"np{t}", lambda t=t, n=n: numpy_gflops(n, t)),
                                 (f"us{t}", lambda t=t, n=n: gemm_gflops(fn, n, t))):
                    best[key] = max(best.get(key, 0.0), fn_())
            best["at"] = max(best.get("at", 0.0), gemm_gflops(fn, n, 1, ta=True))
            best["bt"] = max(best.get("bt", 0.0), gemm_gflops(fn, n, 1, tb=True))
        cells = []
        for t in (1, 2):
            cells += [f"{best[f'np{t}']:.0f}", f"{best[f'us{t}']:.0f}",
                      f"{best[f'us{t}'] / best[f'np{t}']:.2f}"]
        cells += [f"{best['at']:.0f}", f"{best['bt']:.0f}"]
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)
    print()


GEMM_SHAPES = [(1, 1, 1024, 1024), (1, 16, 1024, 1024), (1, 128, 768, 768), (1, 512, 3072, 768),
               (8, 128, 128, 64), (1, 1024, 64, 1024), (1, 4096, 4096, 64)]


def bench_shapes(rounds: int) -> None:
    print("## GEMM on model-like shapes (f32, one thread, GFLOP/s, best of interleaved rounds)\n")
    print("| batch x M x N x K | numpy | ours | ours/numpy |")
    print("|---|---|---|---|")
    from threadpoolctl import threadpool_limits

    cfg = GemmConfig.for_vector_bits(TargetSpec.host().vector_bits)
    fn, _ = compile_gemm(cfg)
    rng = np.random.default_rng(0)
    ws = np.zeros(cfg.workspace_bytes(1), np.uint8)
    for bt, m, n, k in GEMM_SHAPES:
        a = rng.random((bt, m, k), np.float32)
        b = rng.random((bt, k, n), np.float32)
        c = np.empty((bt, m, n), np.float32)
        args = gemm_numpy_args(a, b, c, 1, ws.ctypes.data)
        ours = theirs = float("inf")
        for _ in range(rounds):
            ours = min(ours, best_time(lambda args=args: fn(*args)))
            with threadpool_limits(1):
                theirs = min(theirs, best_time(lambda a=a, b=b, c=c: np.matmul(a, b, out=c)))
        flops = 2 * bt * m * n * k
        print(f"| {bt} x {m} x {n} x {k} | {flops / theirs / 1e9:.0f} | {flops / ours / 1e9:.0f} "
              f"| {theirs / ours:.2f} |", flush=True)
    print()


def bench_tune(n: int) -> None:
    print(f"## GEMM tile sweep at n = {n}, one thread (GFLOP/s; numpy alongside)\n")
    print("| mr x nr | kc | mc | nc | ours | numpy |")
    print("|---|---|---|---|---|---|")
    lanes = TargetSpec.host().vector_bits // 32
    for mr, nv, kc, mc, nc in [(8, 2, 256, 128, 512), (6, 4, 256, 240, 512),
                               (6, 4, 256, 120, 1024), (6, 4, 384, 240, 512),
                               (8, 3, 256, 256, 480), (12, 2, 256, 240, 512),
                               (4, 4, 256, 256, 512), (14, 2, 256, 252, 512)]:
        cfg = GemmConfig(lanes=lanes, mr=mr, nv=nv, kc=kc, mc=mc, nc=nc)
        fn, _ = compile_gemm(cfg)
        print(f"| {mr} x {cfg.nr} | {kc} | {mc} | {nc} | {gemm_gflops(fn, n, 1):.0f} | "
              f"{numpy_gflops(n, 1):.0f} |", flush=True)


# ---------------------------------------------------------------------------------------------


def _parallel_module() -> ir.Module:
    """regions(i64 reps, i64 n, i32 threads): reps empty parallel regions over n chunks;
    scale(float* x, i64 n, i32 threads): x[i] = x[i] * 1.0001 + 1, chunks of 4096."""
    m = ir.Module(name="bench_parallel")
    fn = ir.Function(m, ir.FunctionType(VOID, [I64, I64, I32]), name="regions")
    reps, n, threads = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def rep(b: ir.IRBuilder, _r, _c) -> list:
        emit_parallel_for(b, lambda p: None, n, grain=1, nthreads=threads, name="empty")
        return []

    emit_loop(b, ir.Constant(I64, 0), reps, rep, name="rep")
    b.ret_void()

    fn = ir.Function(m, ir.FunctionType(VOID, [F32.as_pointer(), I64, I32]), name="scale")
    x, n, threads = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def body(p: ParallelBody) -> None:
        (xc,) = p.captures

        def elem(b: ir.IRBuilder, i, _c) -> list:
            ptr = b.gep(xc, [i])
            v = b.fadd(b.fmul(b.load(ptr), ir.Constant(F32, 1.0001)), ir.Constant(F32, 1.0))
            b.store(v, ptr)
            return []

        emit_loop(p.builder, p.lo, p.hi, elem, name="elem")

    emit_parallel_for(b, body, n, grain=4096, nthreads=threads, captures=(x,))
    b.ret_void()
    return m


def bench_parallel() -> None:
    jit = compile_module(_parallel_module(), name="bench_parallel")
    regions = jit.cfunc("regions", None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32)
    scale = jit.cfunc("scale", None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)
    print("## parallel-for (libgomp GOMP_parallel)\n")
    print("| measure | 1 thread | 2 threads |")
    print("|---|---|---|")
    reps = 2000
    cells = [f"{best_time(lambda t=t: regions(reps, 2, t), rounds=15) / reps * 1e6:.2f} µs"
             for t in (1, 2)]
    print("| empty region (2 chunks), per region | " + " | ".join(cells) + " |")
    for n in (1 << 16, 1 << 20, 1 << 24):
        x = np.ones(n, np.float32)
        cells = []
        for t in (1, 2):
            sec = best_time(lambda t=t, x=x, n=n: scale(x.ctypes.data, n, t), rounds=15)
            cells.append(f"{n * 8 / sec / 1e9:.1f} GB/s")
        print(f"| x = x·a + 1, {n} f32 (read + write) | " + " | ".join(cells) + " |")
    print()


def bench_compile() -> None:
    print("## compile times (ms, wall clock; parse + O3 pipeline + machine code)\n")
    print("| module | parse | optimize | codegen | total |")
    print("|---|---|---|---|---|")
    spec = TargetSpec.host()

    def row(label: str, times) -> None:
        print(f"| {label} | {times.parse_s * 1e3:.0f} | {times.optimize_s * 1e3:.0f} | "
              f"{times.codegen_s * 1e3:.0f} | {times.total_s * 1e3:.0f} |")

    for dt in ("f32", "f64"):
        row(f"mathlib: 9 loops × 1 function ({dt})", compile_apply(dtype=dt).times)
    cfg = GemmConfig.for_vector_bits(spec.vector_bits)
    row("GEMM (microkernels 6,4,2,1 rows, packing, tasks)", compile_gemm(cfg)[1].times)
    row("parallel-for test module", compile_module(_parallel_module()).times)
    m = ir.Module(name="aot")
    emit_gemm(m, "gemm", cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        times = emit_shared_library(m, os.path.join(tmp, "gemm.so"), spec, name="aot")
        row("GEMM → .so (AOT, host)", times)
        print(f"\n(AOT wall time including `cc -shared`: "
              f"{(time.perf_counter() - t0) * 1e3:.0f} ms)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for flag in ("accuracy", "math", "gemm", "shapes", "parallel", "compile", "tune", "all"):
        p.add_argument(f"--{flag}", action="store_true")
    p.add_argument("--sizes", default="512,1024,2048", help="GEMM sizes")
    p.add_argument("--points", type=int, default=2_000_000, help="accuracy points per function")
    p.add_argument("--rounds", type=int, default=3, help="GEMM: interleaved rounds, best kept")
    args = p.parse_args()
    print(f"<!-- {machine_line()} -->\n")
    every = args.all
    if args.accuracy or every:
        bench_accuracy(args.points)
    if args.math or every:
        bench_math()
    if args.gemm or every:
        bench_gemm(tuple(int(s) for s in args.sizes.split(",")), args.rounds)
    if args.shapes or every:
        bench_shapes(args.rounds)
    if args.parallel or every:
        bench_parallel()
    if args.compile or every:
        bench_compile()
    if args.tune:
        bench_tune(int(args.sizes.split(",")[0]))


if __name__ == "__main__":
    main()
