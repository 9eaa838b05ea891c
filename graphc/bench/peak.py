"""The peak-FLOP anchor: the FMA rate this machine's cores reach in generated code.

A loop of independent FMA chains is generated with the LLVM backend's helpers and JIT-compiled
for the host: per iteration, `acc[k] = fma(acc[k], a, b)` on each of `accumulators` vector
registers (24 of 512-bit vectors with AVX-512, 12 of 256-bit ones otherwise, so that the
accumulators and the two operands fit in the register file and enough FMAs are in flight to
cover the FMA latency on every FMA port). Nothing else is in the loop but the counter, so the
rate is the core's FMA throughput: the most any compute-bound f32 kernel can reach.

The work is split into `8 * threads` equal chunks by `emit_parallel_for` (the same libgomp
parallel-for graphc's kernels use): dynamic claiming keeps a late-waking worker from doubling
the wall time. `a` and `b` are function arguments (a constant 1.0 multiplier would be folded
into an add) and the accumulators' sum is stored, so nothing can be optimised away.

This module imports llvmlite; `graphc.bench` imports it only when the anchor is measured.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNKS_PER_THREAD = 8


@dataclass
class PeakKernel:
    """A compiled FMA loop: `call(iters_per_chunk, threads)` runs `threads * 8` chunks."""

    fn: Any
    jit: Any
    lanes: int
    accumulators: int
    vector_bits: int

    def flops(self, iters: int, threads: int) -> float:
        """FLOPs of one call (an FMA is two)."""
        return 2.0 * self.lanes * self.accumulators * iters * threads * CHUNKS_PER_THREAD

    def call(self, iters: int, threads: int, out: np.ndarray) -> None:
        self.fn(ctypes.c_float(0.999999), ctypes.c_float(1e-7), iters,
                threads * CHUNKS_PER_THREAD, threads, out.ctypes.data)


def build_peak_kernel() -> PeakKernel:
    """Generate and JIT-compile the FMA loop for the host CPU (raises where LLVM cannot)."""
    from llvmlite import ir

    from graphc.backends.llvm import llvm_ir as L
    from graphc.backends.llvm.parallel import emit_parallel_for
    from graphc.backends.llvm.target import TargetSpec, compile_module

    spec = TargetSpec.host()
    bits = spec.vector_bits
    lanes, accs = bits // 32, (24 if bits >= 512 else 12)
    vty = L.vector(L.F32, lanes)
    module = ir.Module(name="graphc_peak")
    fty = ir.FunctionType(L.VOID, [L.F32, L.F32, L.I64, L.I64, L.I32, L.PTR])
    fn = ir.Function(module, fty, name="fma_peak")
    a, b, iters, chunks, nthreads, out = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    fma = L.intrinsic(module, "llvm.fma", vty)

    def chunk(body) -> None:
        bb = body.builder
        va, vb, n_iter, dst = body.captures
        pa = bb.insert_element(ir.Constant(vty, ir.Undefined), va, ir.Constant(L.I32, 0))
        pb = bb.insert_element(ir.Constant(vty, ir.Undefined), vb, ir.Constant(L.I32, 0))
        zeros = ir.Constant(ir.VectorType(L.I32, lanes), [0] * lanes)
        sa = bb.shuffle_vector(pa, ir.Constant(vty, ir.Undefined), zeros)
        sb = bb.shuffle_vector(pb, ir.Constant(vty, ir.Undefined), zeros)
        start = [L.splat(vty, 1.0 + k / 64) for k in range(accs)]

        def step(b2: ir.IRBuilder, _i: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            return [b2.call(fma, [v, sa, sb]) for v in acc]

        final = L.emit_loop(bb, ir.Constant(L.I64, 0), n_iter, step, start, name="fma")
        total = final[0]
        for v in final[1:]:
            total = bb.fadd(total, v)
        lane0 = bb.extract_element(total, ir.Constant(L.I32, 0))
        slot = bb.gep(bb.bitcast(dst, L.F32.as_pointer()), [body.chunk])
        bb.store(lane0, slot)

    emit_parallel_for(builder, chunk, chunks, grain=1, nthreads=nthreads,
                      captures=(a, b, iters, out), name="peak")
    builder.ret_void()
    jit = compile_module(module, spec, name="graphc_peak")
    cfn = jit.cfunc("fma_peak", None, ctypes.c_float, ctypes.c_float, ctypes.c_int64,
                    ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p)
    return PeakKernel(cfn, jit, lanes, accs, bits)


def measure_peak(threads: int, quick: bool, repeats: int | None = None) -> dict[str, Any]:
    """GFLOP/s of the FMA loop on `threads` threads: best and median of timed calls, and the
    best per core. Each call does about 2 GFLOP per thread (about 10 ms; quick: 0.05)."""
    kernel = build_peak_kernel()
    out = np.zeros(threads * CHUNKS_PER_THREAD, np.float32)
    per_iter = kernel.flops(1, 1) / CHUNKS_PER_THREAD
    iters = max(1, int((5e7 if quick else 2e9) / CHUNKS_PER_THREAD / per_iter))
    kernel.call(iters, threads, out)                     # warm up: wake the workers
    samples = []
    for _ in range(repeats or (3 if quick else 15)):
        t0 = time.perf_counter()
        kernel.call(iters, threads, out)
        samples.append(time.perf_counter() - t0)
    flops = kernel.flops(iters, threads)
    best = flops / min(samples) / 1e9
    return {"threads": threads, "vector_bits": kernel.vector_bits, "lanes": kernel.lanes,
            "accumulators": kernel.accumulators, "flops_per_call": flops,
            "samples_s": samples, "gflops_best": best,
            "gflops_median": flops / statistics.median(samples) / 1e9,
            "per_core_gflops_best": best / threads,
            "finite": bool(np.all(np.isfinite(out)))}
