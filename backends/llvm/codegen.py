"""Schedule -> one LLVM module: a function per kernel and the entry point that runs them all.

Note: the module we generate
----------------------------
For a schedule with kernels k0..kn the module holds:

* one global constant per constant buffer (the bytes of the array, 64-byte aligned);
* per kernel, `kernel.<name>(ptr noalias %buf..., i64 %lo, i64 %hi[, ptr %status])`: the
  kernel's tasks [lo, hi) (what a task is depends on the kernel kind: rows, blocks of a row,
  output tiles). Its pointer arguments are the distinct *storages* the kernel touches: two
  buffer names planned in place share one pointer, so `noalias` is true of every argument and
  the vectorizer needs no runtime alias checks;
* scratch memory for kernels that ask for it (`KernelCode.scratch_bytes`: staged matmul
  operands, GEMM's packed panels) in the arena right after the planned temps, shared by all
  kernels since they run one after another;
* persistent memory past the scratch (`KernelCode.persistent`): what a kernel derives from a
  parameter and keeps from one call to the next (GEMM's prepacked weights), one region per
  (parameter as passed, layout), so the steps of an unrolled LSTM share one packed copy of a
  weight. A region starts with the epoch it was filled at; the kernel refills it when slot 3
  of the status array (the parameters' epoch, `runtime.NativeProgram`) differs or is 0;
* `graphc_main(args, arena, status, nthreads)` (see `runtime.py` for the C signature): loads
  the caller's pointers, computes each temp's address in the arena (the memory plan's offset;
  without a plan every temp gets its own block), and calls the kernels in order, each either
  directly on all its tasks or through `emit_parallel_for` (GOMP_parallel) when its estimated
  work pays for threads. Outputs that are not written by a kernel (an input or constant
  returned as is, one buffer under two output names) are copied at the end;
* compiled with `profile`, a global `graphc_profile` of one 64-bit counter per kernel plus one
  for the whole call, to which `graphc_main` adds the time stamp counter's ticks
  (`llvm.readcyclecounter`, rdtsc) around each kernel call and around the call itself, and
  `graphc_ticks()`, which returns the counter (the runtime calibrates ticks to seconds with
  it). Without `profile` neither exists: profiling costs nothing unless asked for.

Kernels that are the same code up to buffer names (and constant positions along some axes,
passed as shifted pointers: the steps of an unrolled sequence) share one function. The IR text
carries a comment above each kernel function naming the kernels and graph nodes it serves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from llvmlite import ir

from graphc.ir.errors import GraphError
from graphc.ir.kernel import (
    Buffer,
    ConvKernel,
    Expr,
    Ix,
    Kernel,
    LibraryKernel,
    Load,
    LoopKernel,
    MatmulKernel,
    Op,
    RandomUniform,
    ReduceRef,
    Schedule,
    Store,
    Sweep,
    kernel_reads,
    kernel_writes,
    walk,
)
from graphc.ir.kernel_text import print_kernel
from graphc.ir.types import DTYPES

from .codegen_expr import BufferRef, storage_type, sty_bytes
from .llvm_ir import I8, I32, I64, PTR, VOID, declare
from .parallel import emit_parallel_for
from .runtime import ARENA_ALIGNMENT, ENTRY, PROFILE_SYMBOL, TICKS_SYMBOL, ArgSlot, Layout


@dataclass
class KernelEnv:
    """What a kernel's task range function body receives."""

    builder: ir.IRBuilder
    buffers: dict[str, BufferRef]
    lo: ir.Value
    hi: ir.Value
    status: ir.Value | None
    error_base: int
    nthreads: ir.Value | None = None
    scratch: ir.Value | None = None  # `KernelCode.scratch_bytes` of 64-byte aligned memory
    persistent: ir.Value | None = None  # `KernelCode.persistent` memory kept across calls

    def fail(self, which: int, value: ir.Value, position: ir.Value) -> None:
        """Record error `which` of this kernel (its `errors` entry) with the offending value and
        its flat position; the first error of a call wins."""
        b = self.builder
        assert self.status is not None, "kernel declared no errors"
        st = b.bitcast(self.status, I64.as_pointer())
        res = b.cmpxchg(st, ir.Constant(I64, 0), ir.Constant(I64, self.error_base + which),
                        "monotonic", "monotonic")
        with b.if_then(b.extract_value(res, 1)):
            for k, v in ((1, value), (2, position)):
                v = b.sext(v, I64) if v.type != I64 else v
                b.store_atomic(v, b.gep(st, [ir.Constant(I64, k)]), "monotonic", 8)


@dataclass(frozen=True)
class ParamEpoch:
    """The parameters' epoch in this call (status slot 3, `runtime.NativeProgram.run`) and the
    slot (the first 8 bytes of a persistent region) holding the epoch its contents were derived
    at: they are stale when the epoch is 0 (the parameters are not known to be unchanged) or
    differs from the slot's."""

    epoch: ir.Value
    slot: ir.Value

    @staticmethod
    def of(b: ir.IRBuilder, status: ir.Value, region: ir.Value) -> ParamEpoch:
        epoch = b.load(b.gep(b.bitcast(status, I64.as_pointer()), [ir.Constant(I64, 3)]))
        return ParamEpoch(epoch, b.bitcast(region, I64.as_pointer()))

    def stale(self, b: ir.IRBuilder) -> ir.Value:
        return b.or_(b.icmp_signed("<=", self.epoch, ir.Constant(I64, 0)),
                     b.icmp_signed("!=", b.load(self.slot), self.epoch))

    def derived(self, b: ir.IRBuilder) -> None:
        """Note that the region now holds what this call's parameters give."""
        b.store(self.epoch, self.slot)


@dataclass
class KernelCode:
    """A kernel ready to emit: its buffers, its task space and the body for tasks [lo, hi)."""

    buffers: tuple[str, ...]
    tasks: int
    grain: int
    parallel: bool
    emit: Callable[[KernelEnv], None]
    errors: tuple[dict[str, Any], ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)
    own_threads: bool = False  # the body parallelizes itself: it takes nthreads
    scratch_bytes: int = 0     # working memory, in the arena past the memory plan
    setup: Callable[[KernelEnv], None] | None = None  # runs once, serially, before the tasks
    # (buffer, tag, bytes): memory that keeps what the kernel derived from parameter `buffer`
    # (a prepacked weight) from one call to the next; one region per (buffer, tag) in the
    # module, shared by the call sites that agree on both (module note). The kernel gets it and
    # the status array, whose slot 3 holds the parameters' epoch (`runtime.NativeProgram`).
    persistent: tuple[str, str, int] | None = None

    @property
    def wants_status(self) -> bool:
        """The kernel takes the status array (to report errors or read the epoch)."""
        return bool(self.errors or self.persistent)


def kernel_code(k: Kernel, buffers: Mapping[str, Buffer], options: dict[str, Any]
                ) -> KernelCode:
    """Dispatch on the kernel kind to its generator (`buffers`: the buffer table)."""
    shapes = {n: b.type.shape for n, b in buffers.items()}
    if isinstance(k, LoopKernel):
        from .codegen_loop import emit_loop_kernel, loop_buffers, plan_loop

        dtypes = {n: b.type.dtype for n, b in buffers.items()}
        lanes = int(options.get("vector_bits") or 0) // 32 if options.get("vector_loops", True) \
            else 0
        plan = plan_loop(k, shapes, dtypes, lanes)
        return KernelCode(tuple(loop_buffers(k)), plan.tasks, plan.grain, plan.parallel,
                          lambda env: emit_loop_kernel(k, plan, env.builder, env.buffers,
                                                       env.lo, env.hi),
                          notes={"schedule": "column" if plan.column else "row",
                                 "block": plan.block, "lanes": plan.lanes,
                                 "streaming": sorted(plan.streaming), "work": plan.work,
                                 "segments": [[lo, hi] for lo, hi, _ in plan.segments or ()],
                                 "gathered_pieces": len(plan.gather.starts) if plan.gather
                                 else 0})
    if isinstance(k, (MatmulKernel, ConvKernel)):
        from .codegen_template import template_code

        return template_code(k, buffers, options)
    if isinstance(k, LibraryKernel):
        from .codegen_library import library_code

        return library_code(k, buffers)
    raise GraphError(f"the LLVM backend cannot compile kernel {k!r}")


# -- sharing functions between identical kernels ---------------------------------------------------


def _rename_expr(e: Expr, names: Mapping[str, str], memo: dict[int, Expr],
                 pinned: Mapping[str, frozenset[int]], reductions: Mapping[str, str]) -> Expr:
    got = memo.get(id(e))
    if got is not None:
        return got
    if isinstance(e, Load):
        out: Expr = replace(e, buffer=names.get(e.buffer, e.buffer),
                            index=_unpin(e.index, pinned.get(e.buffer)))
    elif isinstance(e, Op):
        out = replace(e, args=tuple(_rename_expr(a, names, memo, pinned, reductions)
                                    for a in e.args))
    elif isinstance(e, RandomUniform):
        out = replace(e, seed=_rename_expr(e.seed, names, memo, pinned, reductions))
    elif isinstance(e, ReduceRef):
        out = replace(e, name=reductions.get(e.name, e.name))
    else:
        out = e
    memo[id(e)] = out
    return out


def _unpin(index: tuple[Ix, ...], axes: frozenset[int] | None) -> tuple[Ix, ...]:
    if not axes:
        return index
    return tuple(Ix() if a in axes else e for a, e in enumerate(index))


def rename_buffers(k: Kernel, names: Mapping[str, str],
                   pinned: Mapping[str, frozenset[int]] | None = None) -> Kernel:
    """`k` with buffers renamed (unlisted names kept), without its name and origin; the axes
    `pinned[buffer]` (constant in every access) read index 0 (the caller shifts the pointer).
    A loop kernel's reductions become r0, r1, ... in order: they are named after graph values
    (`$grad.t62.add.reduce_sum`), which would keep every step of a sequence apart."""
    memo: dict[int, Expr] = {}
    pinned = pinned or {}
    reductions = ({r.name: f"r{i}" for i, r in
                   enumerate(r for sw in k.sweeps for r in sw.reductions)}
                  if isinstance(k, LoopKernel) else {})

    def ex(e: Expr) -> Expr:
        return _rename_expr(e, names, memo, pinned, reductions)

    def st(s: Store) -> Store:
        return Store(names.get(s.buffer, s.buffer), _unpin(s.index, pinned.get(s.buffer)),
                     ex(s.value))

    stores = tuple(st(s) for s in k.all_stores()) if not isinstance(k, LoopKernel) else ()
    if isinstance(k, LoopKernel):
        sweeps = tuple(Sweep(tuple(replace(r, name=reductions[r.name], value=ex(r.value))
                                   for r in sw.reductions),
                             tuple(st(s) for s in sw.stores)) for sw in k.sweeps)
        return replace(k, name="k", origin=(), sweeps=sweeps, stores=tuple(st(s) for s in k.stores))
    if isinstance(k, MatmulKernel):
        return replace(k, name="k", origin=(), a=replace(k.a, value=ex(k.a.value)),
                       b=replace(k.b, value=ex(k.b.value)), stores=stores)
    if isinstance(k, ConvKernel):
        return replace(k, name="k", origin=(), x=replace(k.x, value=ex(k.x.value)),
                       w=replace(k.w, value=ex(k.w.value)), stores=stores)
    return replace(k, name="k", origin=(), inputs=tuple(names.get(n, n) for n in k.inputs),
                   output=names.get(k.output, k.output))


def pinned_axes(k: Kernel, name: str) -> dict[int, int]:
    """{axis: c} for the axes of buffer `name` that every access of `k` indexes with the same
    constant c (a time step's slice of a sequence: xs[t, :, :])."""
    if isinstance(k, LibraryKernel):
        return {}
    indices = [e.index for e in walk(k.expr_roots()) if isinstance(e, Load) and e.buffer == name]
    indices += [s.index for s in k.all_stores() if s.buffer == name]
    if not indices:
        return {}
    out = {}
    for a, e in enumerate(indices[0]):
        if e.is_const and all(ix[a] == e for ix in indices[1:]):
            out[a] = e.const
    return out


def kernel_buffer_names(k: Kernel) -> list[str]:
    return list(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))


# -- storage ---------------------------------------------------------------------------------------


def naive_offsets(schedule: Schedule) -> tuple[dict[str, int], int]:
    """Every temp its own aligned block (the layout without a memory plan)."""
    offsets, top = {}, 0
    for b in schedule.temps():
        offsets[b.name] = top
        top += -(-b.nbytes // ARENA_ALIGNMENT) * ARENA_ALIGNMENT
    return offsets, top


@dataclass
class Storage:
    """Where every buffer lives: an argument slot, an arena offset or a global constant."""

    layout: Layout
    keys: dict[str, tuple[str, Any]]   # buffer -> ("arg", slot) | ("arena", off) | ("const", b)
    copies: list[tuple[int, tuple[str, Any], int]]  # (output slot, source key, nbytes)


def plan_storage(schedule: Schedule) -> Storage:
    bufs = schedule.buffers
    args: list[ArgSlot] = []
    keys: dict[str, tuple[str, Any]] = {}
    for role, names in (("input", schedule.inputs), ("param", schedule.params)):
        for n in names:
            keys[n] = ("arg", len(args))
            args.append(ArgSlot(n, role, bufs[n].type.shape, bufs[n].type.dtype))
    if schedule.memory is not None:
        offsets, arena = dict(schedule.memory.offsets), schedule.memory.arena_bytes
    else:
        offsets, arena = naive_offsets(schedule)
    for b in schedule.temps():
        if b.name not in offsets:
            raise GraphError(f"memory plan of {schedule.name!r} has no offset for %{b.name}")
        keys[b.name] = ("arena", offsets[b.name])
    for n in schedule.constants:
        keys[n] = ("const", n)
    copies = []
    for out_name, buf in schedule.outputs:
        t = bufs[buf].type
        slot = len(args)
        args.append(ArgSlot(out_name, "output", t.shape, t.dtype))
        if bufs[buf].kind == "output" and buf not in keys:
            keys[buf] = ("arg", slot)
        else:
            if buf not in keys:
                raise GraphError(f"output {out_name!r} reads buffer %{buf} that nothing holds")
            copies.append((slot, keys[buf], t.nbytes))
    return Storage(Layout(tuple(args), arena), keys, copies)


def _is_bf16_bits(schedule: Schedule, name: str) -> bool:
    b = schedule.buffers[name]
    return b.type.dtype == "bf16" and b.kind == "temp"


# -- the module ------------------------------------------------------------------------------------


@dataclass
class GeneratedModule:
    """The LLVM module of a schedule, its IR text (with origin comments) and its layout."""

    module: ir.Module
    layout: Layout
    text: str
    kernel_notes: dict[str, dict[str, Any]]
    runtime: tuple[str, ...] = ()  # dtypes whose runtime GEMM (`runtime_lib`) it declares


def _symbol(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)


class ModuleBuilder:
    """Builds the module of one schedule (see the module note)."""

    def __init__(self, schedule: Schedule, options: dict[str, Any] | None = None) -> None:
        self.s = schedule
        self.options = dict(options or {})
        self.module = ir.Module(name=_symbol(schedule.name))
        if self.options.get("runtime_gemm", True):
            # GEMMs are declared, the precompiled runtime library defines them (`runtime_lib`)
            self.module.graphc_runtime = set()
        self.storage = plan_storage(schedule)
        # parameters the graph replaces on every call (a training step's `new.<param>`): what
        # a kernel derives from them is derived again every call, and nothing is kept
        outputs = {name for name, _ in schedule.outputs}
        self.updated = frozenset(p for p in schedule.params if f"new.{p}" in outputs)
        self.globals: dict[str, ir.GlobalVariable] = {}
        self.errors: list[dict[str, Any]] = []
        self.comments: dict[str, str] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        self.scratch_bytes = 0
        self.setups: dict[str, ir.Function] = {}
        self.persistent: dict[tuple[Any, str], int] = {}
        self.persistent_bytes = 0
        self.persistent_base: ir.GlobalVariable | None = None

    def build(self) -> GeneratedModule:
        for name, arr in self.s.constants.items():
            self._constant(name, arr)
        main = ir.Function(self.module, ir.FunctionType(VOID, [PTR.as_pointer(), PTR, PTR, I32]),
                           name=ENTRY)
        args_p, arena, status, nthreads = main.args
        for a, n in zip(main.args, ("args", "arena", "status", "nthreads"), strict=True):
            a.name = n
        b = ir.IRBuilder(main.append_basic_block("entry"))
        self._main_ptrs: dict[tuple[str, Any], ir.Value] = {}
        self._main = (b, args_p, arena, status, nthreads)
        ticks = self._profile_counters(len(self.s.kernels))
        start = ticks(None, None)
        kernels_meta = []
        self.functions: dict[str, tuple[ir.Function, KernelCode]] = {}
        self.launchers: dict[str, ir.Function] = {}
        spread: set[str] = set()  # buffers written by kernels that ran on every thread
        derived = self.s.param_derived()
        if derived:  # one epoch slot for every parameter-derived kernel of the schedule
            params = ParamEpoch.of(b, status, self._persistent_ptr(
                ("param_derived",), ("", "param_derived", 64)))
            stale = params.stale(b)
        last_derived = max((i for i, k in enumerate(self.s.kernels) if k.name in derived),
                           default=-1)
        for i, k in enumerate(self.s.kernels):
            fn, code, keys, groups_of = self._kernel_function(k)
            code = self._locality(k, code, spread)
            self.notes[k.name] = {"kind": k.kind, "tasks": code.tasks, "grain": code.grain,
                                  "parallel": code.parallel, "function": fn.name,
                                  "param_derived": k.name in derived, **code.notes}
            kernels_meta.append({"name": k.name, "kind": k.kind, "origin": list(k.origin),
                                 "parallel": code.parallel, "function": fn.name})
            if code.tasks > 0:
                before = ticks(None, None)
                if k.name in derived:  # kept from the last call while the parameters are
                    known = dict(self._main_ptrs)  # pointers made inside the branch stay there
                    with b.if_then(stale):
                        self._call_kernel(fn, keys, code, groups_of)
                    self._main_ptrs = known
                else:
                    self._call_kernel(fn, keys, code, groups_of)
                ticks(len(kernels_meta) - 1, before)
            if i == last_derived:  # every parameter-derived result is computed: note the epoch
                with b.if_then(stale):
                    params.derived(b)
        for slot, key, nbytes in self.storage.copies:
            if nbytes:
                self._memcpy(b, self._main_ptr(("arg", slot)), self._main_ptr(key), nbytes)
        ticks(len(self.s.kernels), start)
        b.ret_void()
        scratch_end = self._scratch_offset() + -(-self.scratch_bytes // ARENA_ALIGNMENT) \
            * ARENA_ALIGNMENT
        if self.persistent_base is not None:
            self.persistent_base.initializer = ir.Constant(I64, scratch_end)
        arena_bytes = scratch_end + self.persistent_bytes
        layout = Layout(self.storage.layout.args, arena_bytes, tuple(self.errors),
                        tuple(kernels_meta), profiled=bool(self.options.get("profile")))
        runtime = tuple(sorted(getattr(self.module, "graphc_runtime", ())))
        return GeneratedModule(self.module, layout, self._text(), self.notes, runtime)

    # -- pieces --------------------------------------------------------------------------------
    def _profile_counters(self, n: int) -> Callable[[int | None, ir.Value | None],
                                                    ir.Value | None]:
        """`ticks(slot, since)`: with `profile`, read the time stamp counter and, given a slot,
        add the ticks since `since` to that counter (module note); without, do nothing."""
        if not self.options.get("profile"):
            return lambda slot, since: None
        counters = ir.GlobalVariable(self.module, ir.ArrayType(I64, n + 1), name=PROFILE_SYMBOL)
        counters.initializer = ir.Constant(ir.ArrayType(I64, n + 1), None)
        read = declare(self.module, "llvm.readcyclecounter", I64, [])
        clock = ir.Function(self.module, ir.FunctionType(I64, []), name=TICKS_SYMBOL)
        cb = ir.IRBuilder(clock.append_basic_block("entry"))
        cb.ret(cb.call(read, []))
        b = self._main[0]

        def ticks(slot: int | None, since: ir.Value | None) -> ir.Value | None:
            now = b.call(read, [])
            if slot is not None:
                ptr = b.gep(counters, [ir.Constant(I64, 0), ir.Constant(I64, slot)])
                b.store(b.add(b.load(ptr), b.sub(now, since)), ptr)
            return now

        return ticks

    @staticmethod
    def _locality(k: Kernel, code: KernelCode, spread: set[str]) -> KernelCode:
        """A small loop kernel whose inputs all come from kernels that ran on one thread (or
        from the caller) stays on that thread: split, it would carry half of the data over to
        the other core's cache and the next serial kernel would fetch it back (a MobileNet
        block at batch 4, two threads: 330 -> 285 us, one thread 280). Where a producer ran
        on every thread (an LSTM step's GEMM before its gates), the data is spread already and
        the split stays. Records in `spread` what ran on every thread."""
        from .codegen_loop import LOCAL_WORK

        if (code.parallel and k.kind == "loop" and code.notes.get("work", 0) < LOCAL_WORK
                and not spread.intersection(kernel_reads(k))):
            code = replace(code, parallel=False, notes={**code.notes, "local": True})
        if code.parallel or code.own_threads:
            spread.update(kernel_writes(k))
        return code

    def _constant(self, name: str, arr: np.ndarray) -> None:
        dtype = self.s.buffers[name].type.dtype
        data = np.ascontiguousarray(arr, DTYPES[dtype]).tobytes()
        ty = ir.ArrayType(I8, max(len(data), 1))
        g = ir.GlobalVariable(self.module, ty, name=f"const.{_symbol(name)}")
        g.initializer = ir.Constant(ty, bytearray(data or b"\0"))
        g.global_constant = True
        g.linkage = "private"
        g.align = 64
        self.globals[name] = g

    def _scratch_offset(self) -> int:
        """Scratch memory starts after the planned temps, 64-byte aligned."""
        return -(-self.storage.layout.arena_bytes // ARENA_ALIGNMENT) * ARENA_ALIGNMENT

    def _main_ptr(self, key: tuple[str, Any]) -> ir.Value:
        """The pointer of a storage in graphc_main (computed once, in the entry block)."""
        got = self._main_ptrs.get(key)
        if got is not None:
            return got
        b, args_p, arena, _, _ = self._main
        kind, where = key
        if kind == "arg":
            v = b.load(b.gep(args_p, [ir.Constant(I64, where)]), name=f"arg{where}")
        elif kind == "arena":
            v = b.gep(arena, [ir.Constant(I64, where)], name=f"arena{where}")
        else:
            v = b.bitcast(self.globals[where], PTR)
        self._main_ptrs[key] = v
        return v

    def _kernel_function(self, k: Kernel) -> tuple[ir.Function, KernelCode,
                                                    list[tuple[tuple[str, Any], int]],
                                                    dict[str, int]]:
        """The function computing `k`, shared with every structurally identical kernel (same
        code up to buffer names: LSTM steps, repeated layers); returns it, its code, the
        storages to pass, in argument order, and each canonical buffer's argument index."""
        bufs = self.s.buffers
        names = kernel_buffer_names(k)
        movable = [n for n in names if self.storage.keys[n][0] != "const"]
        canon = {n: f"b{i}" for i, n in enumerate(movable)}
        groups: dict[tuple[str, Any], int] = {}
        arg_of = [groups.setdefault(self.storage.keys[n], len(groups)) for n in movable]
        # A buffer alone in its storage, read or written at a constant position along some
        # axes, is passed shifted to that position: kernels that differ only in those
        # constants (one per time step of an unrolled sequence) then share their function.
        types = {n: bufs[n].type for n in names}
        pinned: dict[str, frozenset[int]] = {}
        shift = [0] * len(groups)
        for n, g in zip(movable, arg_of, strict=True):
            axes = pinned_axes(k, n) if arg_of.count(g) == 1 else {}
            if axes:
                t = types[n]
                strides = [math.prod(t.shape[a + 1:]) for a in range(len(t.shape))]
                item = sty_bytes(storage_type(t.dtype, _is_bf16_bits(self.s, n)))
                shift[g] = sum(c * strides[a] for a, c in axes.items()) * item
                # Pinned axes read index 0 from the shifted pointer. Their extent becomes 1
                # (so that kernels over buffers of other lengths along them share code) only
                # in the leading run of pinned or unit axes: shrinking an axis that follows a
                # longer unpinned one would change that one's stride (x[:, p] of an [R, C] x).
                lead = next((a for a, d in enumerate(t.shape) if a not in axes and d != 1),
                            len(t.shape))
                types[n] = t.with_shape(tuple(1 if a in axes and a < lead else d
                                              for a, d in enumerate(t.shape)))
                pinned[n] = frozenset(axes)
        ck = rename_buffers(k, canon, pinned)
        cbuffers = {canon.get(n, n): Buffer(canon.get(n, n), types[n], bufs[n].kind)
                    for n in names}
        key = "\n".join([print_kernel(ck, comment=False),
                         repr([(str(types[n]), _is_bf16_bits(self.s, n), bufs[n].kind,
                                n in self.updated) for n in names]),
                         repr(arg_of)])
        keys = [(key_, shift[g]) for key_, g in groups.items()]
        groups_of = {canon[n]: arg_of[movable.index(n)] for n in movable}
        got = self.functions.get(key)
        if got is not None:
            fn, code = got
            self.comments[fn.name] += f", {k.name}: " + ", ".join(f"%{o}" for o in k.origin)
            return fn, code, keys, groups_of
        code = kernel_code(ck, cbuffers, {**self.options, "storage_groups": groups_of,
                                          "updated": frozenset(canon.get(n, n) for n in names
                                                               if n in self.updated)})
        wants_status = code.wants_status
        arg_types = ([PTR] * len(keys) + [I64, I64] + ([PTR] if wants_status else [])
                     + ([I32] if code.own_threads else []) + ([PTR] if code.scratch_bytes else [])
                     + ([PTR] if code.persistent else []))
        fname = f"kernel.{_symbol(k.name)}"
        error_base = len(self.errors) + 1

        def define(name: str, body: Callable[[KernelEnv], None]) -> ir.Function:
            fn = ir.Function(self.module, ir.FunctionType(VOID, arg_types), name=name)
            fn.linkage = "internal"
            # Out of line: one huge graphc_main would make the optimizer superlinearly slow.
            fn.attributes.add("noinline")
            for a in fn.args[:len(keys)]:
                a.add_attribute("noalias")
            fb = ir.IRBuilder(fn.append_basic_block("entry"))
            refs = {}
            for n in names:
                cn = canon.get(n, n)
                ptr = fn.args[arg_of[movable.index(n)]] if n in canon else \
                    fb.bitcast(self.globals[n], PTR)
                t = types[n]
                refs[cn] = BufferRef(cn, t.dtype, t.shape, _is_bf16_bits(self.s, n), ptr)
            lo, hi = fn.args[len(keys)], fn.args[len(keys) + 1]
            status = fn.args[len(keys) + 2] if wants_status else None
            extra = list(fn.args[len(keys) + 2 + wants_status:])
            nthreads = extra.pop(0) if code.own_threads else None
            scratch = extra.pop(0) if code.scratch_bytes else None
            if scratch is not None:
                scratch.add_attribute("noalias")
            persistent = extra.pop(0) if code.persistent else None
            body(KernelEnv(fb, refs, lo, hi, status, error_base, nthreads, scratch, persistent))
            fb.ret_void()
            return fn

        fn = define(fname, code.emit)
        if code.setup is not None:
            self.setups[fn.name] = define(f"{fname}.setup", code.setup)
        self.scratch_bytes = max(self.scratch_bytes, code.scratch_bytes)
        self.errors.extend(code.errors)
        self.comments[fn.name] = (f"; {k.kind} kernel, {code.tasks} tasks"
                                  f"{' in parallel' if code.parallel else ''}; "
                                  f"{k.name}: " + ", ".join(f"%{o}" for o in k.origin))
        self.functions[key] = (fn, code)
        return fn, code, keys, groups_of

    def _call_kernel(self, fn: ir.Function, keys: list[tuple[tuple[str, Any], int]],
                     code: KernelCode, groups_of: dict[str, int]) -> None:
        b, _, _, status, nthreads = self._main
        ptrs = [self._main_ptr(key) if not delta else b.gep(self._main_ptr(key),
                                                             [ir.Constant(I64, delta)])
                for key, delta in keys] + ([status] if code.wants_status else [])
        ptrs += [nthreads] if code.own_threads else []
        if code.scratch_bytes:
            ptrs.append(b.gep(self._main[2], [ir.Constant(I64, self._scratch_offset())]))
        if code.persistent:
            ptrs.append(self._persistent_ptr(keys[groups_of[code.persistent[0]]],
                                             code.persistent))
        npt = len(keys)
        setup = self.setups.get(fn.name)
        if setup is not None:  # once, before the (possibly parallel) tasks
            b.call(setup, ptrs[:npt] + [ir.Constant(I64, 0), ir.Constant(I64, code.tasks)]
                   + ptrs[npt:])
        if not code.parallel:
            tail = ptrs[npt:]
            b.call(fn, ptrs[:npt] + [ir.Constant(I64, 0), ir.Constant(I64, code.tasks)] + tail)
        else:
            self._parallel_call(fn, ptrs, npt, code)
        if code.errors:  # bad data: stop before later kernels read what this one skipped
            failed = b.load(b.bitcast(status, I64.as_pointer()))
            with b.if_then(b.icmp_signed("!=", failed, ir.Constant(I64, 0)), likely=False):
                b.ret_void()

    def _persistent_ptr(self, storage: tuple[tuple[str, Any], int],
                        want: tuple[str, str, int]) -> ir.Value:
        """The persistent region of (the buffer's storage as this call site passes it, tag):
        allocated on first use, past the scratch memory (whose size is known only at the end:
        the offset is a constant global set then)."""
        _, tag, nbytes = want
        region = (storage, tag)
        if region not in self.persistent:
            self.persistent[region] = self.persistent_bytes
            self.persistent_bytes += -(-nbytes // ARENA_ALIGNMENT) * ARENA_ALIGNMENT
        if self.persistent_base is None:
            self.persistent_base = ir.GlobalVariable(self.module, I64, "graphc.persistent_base")
            self.persistent_base.global_constant = True
            self.persistent_base.linkage = "internal"
        b, _, arena = self._main[:3]
        off = b.add(b.load(self.persistent_base), ir.Constant(I64, self.persistent[region]))
        return b.gep(arena, [off])

    def _parallel_call(self, fn: ir.Function, ptrs: list[ir.Value], npt: int,
                       code: KernelCode) -> None:
        """Call `fn`'s tasks on the thread pool through one launcher per kernel function,
        shared by every call site like the function itself: the parallel-for's setup inlined
        at each of an unrolled LSTM's hundreds of call sites made graphc_main four times
        longer and its optimization 1.5 s slower."""
        b, _, _, _, nthreads = self._main
        launcher = self.launchers.get(fn.name)
        if launcher is None:
            ty = ir.FunctionType(VOID, [p.type for p in ptrs] + [nthreads.type])
            launcher = ir.Function(self.module, ty, name=f"{fn.name}.parallel")
            launcher.linkage = "internal"
            launcher.attributes.add("noinline")
            lb = ir.IRBuilder(launcher.append_basic_block("entry"))

            def body(p) -> None:
                caps = list(p.captures)
                p.builder.call(fn, caps[:npt] + [p.lo, p.hi] + caps[npt:])

            emit_parallel_for(lb, body, ir.Constant(I64, code.tasks), grain=code.grain,
                              nthreads=launcher.args[-1], captures=list(launcher.args[:-1]),
                              name=f"pfor.{fn.name}", use_gomp=self.options.get("use_gomp"))
            lb.ret_void()
            self.launchers[fn.name] = launcher
        b.call(launcher, ptrs + [nthreads])

    @staticmethod
    def _memcpy(b: ir.IRBuilder, dst: ir.Value, src: ir.Value, nbytes: int) -> None:
        fn = declare(b.module, "llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, ir.IntType(1)])
        b.call(fn, [dst, src, ir.Constant(I64, nbytes), ir.Constant(ir.IntType(1), 0)])

    def _text(self) -> str:
        text = str(self.module)
        for fname, comment in self.comments.items():
            text = text.replace(f'define internal void @"{fname}"',
                                f'{comment}\ndefine internal void @"{fname}"', 1)
        return text


def generate_module(schedule: Schedule, options: dict[str, Any] | None = None
                    ) -> GeneratedModule:
    """The LLVM module of `schedule` (see the module note)."""
    return ModuleBuilder(schedule, options).build()
