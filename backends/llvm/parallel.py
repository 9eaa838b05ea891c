"""Parallel-for over [0, n) from inside generated code, with libgomp's `GOMP_parallel`.

Note: how a parallel-for is emitted
-----------------------------------
`emit_parallel_for` outlines the body into a worker function `void worker(i8* data)`. The
caller's values the body needs (`captures`) travel in a stack struct next to two atomic
counters. `GOMP_parallel(worker, data, T, 0)` runs the worker on T threads (the calling thread
is one of them) and returns when all are done: about a microsecond per region, measured.

Work is split into chunks [c·grain, min((c+1)·grain, n)) claimed dynamically with an atomic
counter: chunk boundaries depend only on n and grain, never on the thread count, so results
are bit-identical for every thread count; the dynamic claim balances uneven chunks (GEMM edge
tiles) and tolerates a busy machine. A second counter hands every worker a distinct slot in
[0, T) for per-thread scratch memory (GEMM's packed panels).

T = min(nthreads, number of chunks); with T <= 1 the worker is called directly (no libgomp
involved). Where libgomp cannot be loaded the loop is always serial, with a one-line warning.
libgomp's idle workers spin for a while before sleeping (OMP_WAIT_POLICY, read once when the
library loads): `load_gomp(wait_policy="passive")` before the first compile sets it.
"""

from __future__ import annotations

import ctypes.util
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import llvmlite.binding as llvm
from llvmlite import ir

from .llvm_ir import I32, I64, PTR, VOID, alloca_at_entry, ceil_div, declare, smin

_GOMP_NAMES = ("libgomp.so.1", "libgomp.so")


@cache
def load_gomp(wait_policy: str | None = None) -> bool:
    """Load libgomp into the process (once) so JIT code can call GOMP_parallel.

    Returns False, with a one-line RuntimeWarning, where libgomp is absent: parallel-fors then
    run serially. `wait_policy` ("active"/"passive") sets OMP_WAIT_POLICY unless the user set
    it; libgomp reads it only when it is first loaded.
    """
    if wait_policy is not None:
        os.environ.setdefault("OMP_WAIT_POLICY", wait_policy)
    candidates = list(_GOMP_NAMES)
    found = ctypes.util.find_library("gomp")
    if found and found not in candidates:
        candidates.append(found)
    for name in candidates:
        try:
            llvm.load_library_permanently(name)
        except RuntimeError:
            continue
        if llvm.address_of_symbol("GOMP_parallel"):
            return True
    warnings.warn("graphc: libgomp (libgomp.so.1) not found; LLVM kernels run on one thread",
                  RuntimeWarning, stacklevel=2)
    return False


@dataclass(frozen=True)
class ParallelBody:
    """What the body callback of `emit_parallel_for` receives, inside the worker function.

    builder: positioned in the worker; emit the code for indices [lo, hi) (i64) there.
    chunk:   i64 index of this chunk (lo = chunk·grain).
    worker:  i64 slot in [0, T) distinct per running worker (index per-thread scratch with it).
    captures: the caller's `captures`, reloaded in the worker (same order and types).
    """

    builder: ir.IRBuilder
    lo: ir.Value
    hi: ir.Value
    chunk: ir.Value
    worker: ir.Value
    captures: tuple[ir.Value, ...]


# data struct: {n, grain, nchunks, next_chunk, next_worker, captures...}
_N, _GRAIN, _NCHUNKS, _NEXT_CHUNK, _NEXT_WORKER = range(5)


def emit_parallel_for(builder: ir.IRBuilder, body: Callable[[ParallelBody], None],
                      n: ir.Value, *, grain: int | ir.Value, nthreads: ir.Value,
                      captures: Sequence[ir.Value] = (), name: str = "pfor",
                      use_gomp: bool | None = None) -> None:
    """Emit, at `builder`'s position, a parallel loop over [0, n) (n: i64) in chunks of `grain`.

    `body(ParallelBody)` emits the code for one chunk [lo, hi) in an outlined worker function,
    where only `captures` (values of the calling function) are visible. `nthreads` (i32) is the
    most threads to use; fewer run when there are fewer chunks. `use_gomp=None` uses libgomp
    when it loads (`load_gomp`), False forces the serial loop. The builder must be at the end
    of its block; it stays after the loop.
    """
    module = builder.module
    gomp = load_gomp() if use_gomp is None else (use_gomp and load_gomp())
    grain_v = grain if isinstance(grain, ir.Value) else ir.Constant(I64, grain)
    one = ir.Constant(I64, 1)
    grain_v = builder.select(builder.icmp_signed("<", grain_v, one), one, grain_v)
    nchunks = ceil_div(builder, n, grain_v)
    struct_ty = ir.LiteralStructType([I64] * 5 + [v.type for v in captures])
    worker_fn = _emit_worker(module, struct_ty, body, len(captures), name)

    data = alloca_at_entry(builder, struct_ty, name=f"{name}.data")
    fields = [n, grain_v, nchunks, ir.Constant(I64, 0), ir.Constant(I64, 0), *captures]
    for k, v in enumerate(fields):
        builder.store(v, builder.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
    data_ptr = builder.bitcast(data, PTR)
    if not gomp:
        builder.call(worker_fn, [data_ptr])
        return
    threads = smin(builder, builder.zext(nthreads, I64), nchunks)
    multi = builder.icmp_signed(">", threads, one)
    with builder.if_else(multi) as (then, otherwise):
        with then:
            gomp_parallel = declare(module, "GOMP_parallel", VOID, [PTR, PTR, I32, I32])
            builder.call(gomp_parallel, [builder.bitcast(worker_fn, PTR), data_ptr,
                                         builder.trunc(threads, I32), ir.Constant(I32, 0)])
        with otherwise:
            builder.call(worker_fn, [data_ptr])


def _emit_worker(module: ir.Module, struct_ty: ir.Type, body: Callable[[ParallelBody], None],
                 ncaptures: int, name: str) -> ir.Function:
    fn_name = module.get_unique_name(f"{name}.worker")
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR]), name=fn_name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    data = b.bitcast(fn.args[0], struct_ty.as_pointer())

    def field(k: int) -> ir.Value:
        return b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, k)])

    n, grain, nchunks = (b.load(field(k)) for k in (_N, _GRAIN, _NCHUNKS))
    captures = tuple(b.load(field(5 + k)) for k in range(ncaptures))
    one = ir.Constant(I64, 1)
    worker = b.atomic_rmw("add", field(_NEXT_WORKER), one, "monotonic")
    claim = b.append_basic_block("claim")
    run = b.append_basic_block("run")
    done = b.append_basic_block("done")
    b.branch(claim)
    b.position_at_end(claim)
    chunk = b.atomic_rmw("add", field(_NEXT_CHUNK), one, "monotonic")
    b.cbranch(b.icmp_signed("<", chunk, nchunks), run, done)
    b.position_at_end(run)
    lo = b.mul(chunk, grain)
    hi = smin(b, b.add(lo, grain), n)
    body(ParallelBody(b, lo, hi, chunk, worker, captures))
    b.branch(claim)
    b.position_at_end(done)
    b.ret_void()
    return fn

