"""Run a `Schedule` kernel by kernel with numpy: the oracle for code generators and for fusion.

Each kernel is evaluated vectorized over its whole domain: loop variables are broadcastable
`arange` arrays, index expressions become integer arrays, loads are gathers (masked loads read
index 0 where the mask fails and yield 0), elementwise ops call the graph op's own numpy
reference (so their semantics cannot drift) and round to the node's dtype. A template evaluates
its operands as whole virtual tensors, then the graph op's reference (`matmul`, `conv`), then its
epilogue with `Acc` bound to the result. Library kernels call the op's reference on buffers.

With a memory plan, temps are views into one arena at their planned offsets, and the arena starts
filled with 0xFF bytes (NaN for floats), so a plan that overlaps two live buffers, or a kernel that
reads a byte nobody wrote, shows up as wrong numbers. `check_writes` also proves that every kernel
writes each element of each of its output buffers exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from graphc.ir.errors import GraphError, InputError
from graphc.ir.kernel import (
    Acc,
    Bound,
    Const,
    ConvKernel,
    Expr,
    FloorDiv,
    InBounds,
    IndexValue,
    Ix,
    Kernel,
    LibraryKernel,
    Load,
    LoopKernel,
    MatmulKernel,
    Mod,
    Op,
    RandomUniform,
    ReduceRef,
    Schedule,
    Store,
    Var,
)
from graphc.ir.ops.random import philox4x32, seed_key
from graphc.ir.registry import get_op
from graphc.ir.types import DTYPES, round_to_dtype


def run_schedule(schedule: Schedule, inputs: Mapping[str, np.ndarray] | None = None,
                 params: Mapping[str, np.ndarray] | None = None, *, use_plan: bool = True,
                 check_writes: bool = True, seconds: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """Execute every kernel in order; returns the graph outputs by name. `seconds` (one slot
    per kernel) accumulates the time each kernel took."""
    store = _Storage(schedule, inputs or {}, params or {}, use_plan)
    for i, k in enumerate(schedule.kernels):
        t0 = time.perf_counter() if seconds is not None else 0.0
        try:
            run_kernel(k, store, check_writes)
        except GraphError:
            raise
        except Exception as e:  # an interpreter failure names the kernel it happened in
            raise GraphError(f"kernel {k.name} ({k.kind}) failed: {type(e).__name__}: {e}") from e
        if seconds is not None:
            seconds[i] += time.perf_counter() - t0
    return {name: np.array(store.read(buf)) for name, buf in schedule.outputs}


class _Storage:
    """Buffer name -> array; temps live in the arena when the schedule has a memory plan."""

    def __init__(self, s: Schedule, inputs: Mapping[str, np.ndarray],
                 params: Mapping[str, np.ndarray], use_plan: bool) -> None:
        self.s = s
        self.arrays: dict[str, np.ndarray] = {}
        self.bf16_bits: set[str] = set()
        extra = set(inputs) - set(s.inputs)
        if extra:
            raise InputError(f"schedule {s.name!r} has no input(s) {sorted(extra)}; "
                             f"expected {list(s.inputs)}")
        values = dict(s.param_values)
        values.update(params)
        for name in s.inputs + s.params:
            src = inputs if name in s.inputs else values
            b = s.buffers[name]
            if name not in src:
                raise InputError(f"schedule {s.name!r}: missing {b.kind} {name!r} ({b.type})")
            arr = np.asarray(src[name])
            if arr.shape != b.type.shape:
                raise InputError(f"{b.kind} {name!r}: expected shape {b.type.shape} ({b.type}), "
                                 f"got {arr.shape}")
            self.arrays[name] = arr.astype(DTYPES[b.type.dtype], copy=False)
        for name, arr in s.constants.items():
            self.arrays[name] = arr
        plan = s.memory if use_plan else None
        arena = None
        if plan is not None:
            arena = np.full(plan.arena_bytes + plan.alignment, 0xFF, np.uint8)
        for b in s.buffers.values():
            if b.name in self.arrays:
                continue
            if arena is not None and b.kind == "temp":
                self.arrays[b.name] = self.arena_view(arena, plan.offsets[b.name], b)
            else:
                self.arrays[b.name] = np.zeros(b.type.shape, DTYPES[b.type.dtype])

    def arena_view(self, arena: np.ndarray, offset: int, b) -> np.ndarray:
        raw = arena[offset:offset + b.nbytes]
        if b.type.dtype == "bf16":  # the real 2-byte format: the high half of a float32
            self.bf16_bits.add(b.name)
            return raw.view(np.uint16).reshape(b.type.shape)
        return raw.view(DTYPES[b.type.dtype]).reshape(b.type.shape)

    def read(self, name: str) -> np.ndarray:
        arr = self.arrays[name]
        if name in self.bf16_bits:
            return (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return arr

    def write(self, name: str, index: tuple[np.ndarray, ...] | None, values: np.ndarray) -> None:
        b = self.s.buffers[name]
        values = round_to_dtype(np.asarray(values), b.type.dtype)
        arr = self.arrays[name]
        if name in self.bf16_bits:
            values = (np.ascontiguousarray(values, np.float32).view(np.uint32)
                      >> np.uint32(16)).astype(np.uint16)
        if index is None:
            arr[...] = values
        else:
            arr[index] = values


# -- evaluation ----------------------------------------------------------------------------------


class _Eval:
    """Evaluates expressions of one section over a grid of loop variables."""

    def __init__(self, store: _Storage, env: dict[str, np.ndarray], kernel: str) -> None:
        self.store = store
        self.env = env
        self.kernel = kernel
        self.refs: dict[str, np.ndarray] = {}
        self.acc: np.ndarray | None = None
        self.memo: dict[int, np.ndarray] = {}

    def index(self, e: Ix) -> np.ndarray:
        out: np.ndarray = np.asarray(e.const, np.int64)
        for a, c in e.terms:
            if isinstance(a, Var):
                val = self.env[a.name]
            elif isinstance(a, FloorDiv):
                val = np.floor_divide(self.index(a.arg), a.d)
            elif isinstance(a, Mod):
                val = np.mod(self.index(a.arg), a.d)
            else:
                raise TypeError(f"unknown index atom {a!r}")
            out = out + c * val
        return out

    def bounds(self, bounds: tuple[Bound, ...]) -> np.ndarray:
        ok: np.ndarray = np.asarray(True)
        for b in bounds:
            e = self.index(b.e)
            cond = (e >= b.lo) & (e < b.hi)
            if b.step != 1:
                cond &= np.mod(e - b.lo, b.step) == 0
            ok = ok & cond
        return ok

    def __call__(self, e: Expr) -> np.ndarray:
        got = self.memo.get(id(e))
        if got is None:
            got = self.memo[id(e)] = self.compute(e)
        return got

    def compute(self, e: Expr) -> np.ndarray:
        if isinstance(e, Const):
            return round_to_dtype(np.asarray(e.value), e.dtype)
        if isinstance(e, Load):
            return self.load(e)
        if isinstance(e, IndexValue):
            return round_to_dtype(self.index(e.index), e.dtype)
        if isinstance(e, InBounds):
            return self.bounds(e.bounds)
        if isinstance(e, Op):
            args = [self(a) for a in e.args]
            with np.errstate(all="ignore"):
                res = get_op(e.op).reference(args, dict(e.attrs))
            return round_to_dtype(np.asarray(res), e.dtype)
        if isinstance(e, RandomUniform):
            seed = int(np.asarray(self(e.seed)).reshape(()))
            c = self.index(e.counter).astype(np.uint64)
            words = (c & np.uint64(0xFFFFFFFF), c >> np.uint64(32), np.uint64(e.stream),
                     np.uint64(0))
            w0 = philox4x32(words, seed_key(seed))[0]
            return (w0 >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)
        if isinstance(e, ReduceRef):
            return self.refs[e.name]
        if isinstance(e, Acc):
            assert self.acc is not None
            return self.acc
        raise TypeError(f"unknown expression {e!r}")

    def load(self, e: Load) -> np.ndarray:
        arr = self.store.read(e.buffer)
        if not e.index:
            return arr[()] if not e.mask else np.where(self.bounds(e.mask), arr[()], 0)
        idx = np.broadcast_arrays(*(self.index(x) for x in e.index))
        ok = self.bounds(e.mask) if e.mask else None
        if ok is not None:
            idx = [np.where(ok, i, 0) for i in idx]
        for axis, (i, d) in enumerate(zip(idx, arr.shape, strict=True)):
            if i.size and (i.min() < 0 or i.max() >= d):
                raise GraphError(f"kernel {self.kernel}: load of %{e.buffer} axis {axis} reads "
                                 f"index {int(i.min())}..{int(i.max())} outside [0, {d})")
        vals = arr[tuple(idx)]
        return vals if ok is None else np.where(ok, vals, np.zeros((), vals.dtype))


def _grid_env(names: tuple[str, ...], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    env = {}
    for k, (name, n) in enumerate(zip(names, shape, strict=True)):
        env[name] = np.arange(n, dtype=np.int64).reshape(
            (1,) * k + (n,) + (1,) * (len(shape) - k - 1))
    return env


def _do_store(ev: _Eval, st: Store, grid: tuple[int, ...], store: _Storage,
              counts: dict[str, np.ndarray] | None, outer_rank: int | None = None) -> None:
    value = np.broadcast_to(ev(st.value), grid)
    idx = [np.broadcast_to(ev.index(x), grid) for x in st.index]
    if outer_rank is not None:  # an outer store: drop the inner axes (the value ignores them)
        sel = (slice(None),) * outer_rank + (0,) * (len(grid) - outer_rank)
        value, idx = value[sel], [i[sel] for i in idx]
    shape = store.s.buffers[st.buffer].type.shape
    for axis, (i, d) in enumerate(zip(idx, shape, strict=True)):
        if i.size and (i.min() < 0 or i.max() >= d):
            raise GraphError(f"kernel {ev.kernel}: store to %{st.buffer} axis {axis} writes "
                             f"index {int(i.min())}..{int(i.max())} outside [0, {d})")
    store.write(st.buffer, tuple(idx) if idx else None, value)
    if counts is not None:
        c = counts.setdefault(st.buffer, np.zeros(shape, np.int64))
        if idx:
            np.add.at(c, tuple(idx), 1)
        else:
            c += 1


def run_kernel(k: Kernel, store: _Storage, check_writes: bool = True) -> None:
    counts: dict[str, np.ndarray] | None = {} if check_writes else None
    if isinstance(k, LoopKernel):
        _run_loop(k, store, counts)
    elif isinstance(k, (MatmulKernel, ConvKernel)):
        _run_template(k, store, counts)
    elif isinstance(k, LibraryKernel):
        out = get_op(k.op).reference([store.read(b) for b in k.inputs], dict(k.attrs))
        store.write(k.output, None, np.asarray(out))
        if counts is not None:
            counts[k.output] = np.ones(store.s.buffers[k.output].type.shape, np.int64)
    else:
        raise TypeError(f"unknown kernel {k!r}")
    for name, c in (counts or {}).items():
        if c.size and (c.min() != 1 or c.max() != 1):
            bad = np.argwhere(c != 1)[0]
            raise GraphError(f"kernel {k.name} writes %{name}[{', '.join(map(str, bad))}] "
                             f"{int(c[tuple(bad)])} times (must be exactly once)")


def _run_loop(k: LoopKernel, store: _Storage, counts) -> None:
    grid = k.domain + k.reduce_domain
    p, q = len(k.domain), len(k.reduce_domain)
    ev = _Eval(store, _grid_env(k.outer_vars + k.inner_vars, grid), k.name)
    axes = tuple(range(p, p + q))
    for sweep in k.sweeps:
        results = {}
        for red in sweep.reductions:
            val = np.broadcast_to(ev(red.value), grid)
            if red.kind == "sum":
                acc = np.float32 if val.dtype == np.float16 else None
                res = np.sum(val, axis=axes, keepdims=True, dtype=acc)
            elif red.kind == "max":
                res = np.max(val, axis=axes, keepdims=True)
            elif red.kind == "argmax":
                flat = val.reshape(k.domain + (-1,))
                res = np.argmax(flat, axis=-1).reshape(k.domain + (1,) * q)
            else:
                raise GraphError(f"kernel {k.name}: unknown reduction kind {red.kind!r}")
            results[red.name] = round_to_dtype(np.asarray(res), red.dtype)
        for st in sweep.stores:
            _do_store(ev, st, grid, store, counts)
        ev.refs.update(results)
    for st in k.stores:
        _do_store(ev, st, grid, store, counts, outer_rank=p)


def _operand(k: Kernel, opnd, store: _Storage) -> np.ndarray:
    ev = _Eval(store, _grid_env(opnd.vars, opnd.shape), k.name)
    return np.ascontiguousarray(np.broadcast_to(ev(opnd.value), opnd.shape))


def _run_template(k: MatmulKernel | ConvKernel, store: _Storage, counts) -> None:
    if isinstance(k, MatmulKernel):
        acc = get_op("matmul").reference([_operand(k, k.a, store), _operand(k, k.b, store)], {})
        shape = k.out_shape
    else:
        acc = get_op("conv").reference([_operand(k, k.x, store), _operand(k, k.w, store)],
                                       dict(k.attrs))
        shape = k.out_shape
    ev = _Eval(store, _grid_env(k.out_vars, shape), k.name)
    ev.acc = round_to_dtype(np.asarray(acc), k.acc_dtype)
    for st in k.stores:
        _do_store(ev, st, shape, store, counts)
