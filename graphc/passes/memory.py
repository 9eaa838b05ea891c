"""`plan_memory`: place every temp buffer of a Schedule in one arena; `check_memory_plan` proves
the placement safe.

Contract: `plan_memory(schedule)` returns the schedule with a `MemoryPlan`: an offset per temp
(inputs, parameters, constants and outputs live outside the arena), aligned to `alignment`
bytes, such that no two temps live at the same kernel overlap, except an in-place pair: a kernel
may write a temp over an input temp that dies at that kernel when the kernel reads that input
only at the very index it writes (elementwise, or the last sweep of a persistent reduction), with
the same shape and element size. `scatter_add` may also update its operand in place.

Lifetimes are closed intervals of kernel positions [writer, last reader]. Offsets come from a
greedy-by-size best-fit heap simulation (largest buffer first; each goes to the smallest gap
between buffers whose lifetimes overlap its own, or on top), also tried first-fit and with other
orders (by lifetime length, by size x length, by start), each best-fit order refined by iterated
greedy (the block that ends at the arena's top moves earlier, `rounds` times), keeping the
smallest arena and stopping as soon as it meets the lower bound.

The report's three numbers: `naive_bytes` (every temp its own aligned block), `arena_bytes` (the
plan) and `lower_bound` (the most bytes live at any one kernel; no placement can do better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.errors import GraphError
from graphc.ir.kernel import (
    LibraryKernel,
    Load,
    LoopKernel,
    MemoryPlan,
    Schedule,
    Store,
    kernel_reads,
    kernel_writes,
    walk,
)
from graphc.ir.types import itemsize

from .base import Pass, PassContext


def aligned(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def temp_lifetimes(s: Schedule) -> dict[str, tuple[int, int]]:
    """[writer, last reader] kernel positions of every temp buffer."""
    temps = {b.name for b in s.temps()}
    life: dict[str, list[int]] = {}
    for i, k in enumerate(s.kernels):
        for b in kernel_writes(k):
            if b in temps:
                if b in life:
                    raise GraphError(f"temp %{b} is written by two kernels")
                life[b] = [i, i]
        for b in kernel_reads(k):
            if b in temps:
                if b not in life:
                    raise GraphError(f"kernel {k.name} reads temp %{b} before any kernel "
                                     "writes it")
                life[b][1] = max(life[b][1], i)
    missing = temps - set(life)
    if missing:
        raise GraphError(f"temp buffer(s) {sorted(missing)} are never written")
    # What parameter-derived kernels write lives over the whole schedule: a backend may keep
    # it from one call to the next (`Schedule.param_derived`), so nothing may share its bytes.
    kept = _param_derived_temps(s)
    last = len(s.kernels) - 1
    return {b: ((0, last) if b in kept else (lo, hi)) for b, (lo, hi) in life.items()}


def _param_derived_temps(s: Schedule) -> set[str]:
    derived = s.param_derived()
    return {b for k in s.kernels if k.name in derived for b in kernel_writes(k)}


# -- in place ------------------------------------------------------------------------------------


def _sections(k: LoopKernel) -> list[tuple[int, list]]:
    """(section number, expression roots) of a loop kernel; the outer stores come last."""
    out = [(j, [r.value for r in sw.reductions] + [st.value for st in sw.stores])
           for j, sw in enumerate(k.sweeps)]
    return out + [(len(k.sweeps), [st.value for st in k.stores])]


def inplace_ok(k, out: str, src: str) -> bool:
    """Can kernel `k` write buffer `out` over `src` (which dies at k)?"""
    if isinstance(k, LibraryKernel):
        return k.op == "scatter_add" and k.inputs[0] == src and src not in k.inputs[1:]
    stores = [st for st in k.all_stores() if st.buffer == out]
    if len(stores) != 1:
        return False
    store: Store = stores[0]
    if isinstance(k, LoopKernel):
        where = next(j for j, roots in _store_sections(k) if store in roots)
        sections = _sections(k)
    else:
        where, sections = 0, [(0, list(k.expr_roots()))]
    for j, roots in sections:
        for e in walk(roots):
            if isinstance(e, Load) and e.buffer == src:
                if e.index != store.index or e.mask or j > where:
                    return False
        if j == where:  # in its own section only this store may read src: others may run after
            others = [r for r in roots if r is not store.value]
            if any(isinstance(e, Load) and e.buffer == src for e in walk(others)):
                return False
    return True


def _store_sections(k: LoopKernel) -> list[tuple[int, tuple[Store, ...]]]:
    return [(j, sw.stores) for j, sw in enumerate(k.sweeps)] + [(len(k.sweeps), k.stores)]


def find_aliases(s: Schedule, life: dict[str, tuple[int, int]]) -> dict[str, str]:
    """out temp -> input temp it overwrites in place (at most one each way)."""
    aliases: dict[str, str] = {}
    taken: set[str] = set()
    kept = _param_derived_temps(s)
    for i, k in enumerate(s.kernels):
        dying = [b for b in kernel_reads(k) if b in life and life[b][1] == i and life[b][0] < i
                 and b not in kept]
        for out in kernel_writes(k):
            if out not in life or out in kept:
                continue
            ot = s.buffers[out].type
            for src in dying:
                st = s.buffers[src].type
                if src in taken or st.shape != ot.shape or itemsize(st.dtype) != itemsize(
                        ot.dtype):
                    continue
                if inplace_ok(k, out, src):
                    aliases[out] = src
                    taken.add(src)
                    break
    return aliases


# -- placement -----------------------------------------------------------------------------------


@dataclass
class _Block:
    """One arena block: a temp and the temps that overwrite it in place, one after another."""

    names: list[str]
    size: int
    first: int
    last: int
    offset: int = -1


def _blocks(s: Schedule, life, aliases, alignment: int) -> list[_Block]:
    root = {}
    for b in life:
        r = b
        while r in aliases:
            r = aliases[r]
        root[b] = r
    blocks: dict[str, _Block] = {}
    for b in sorted(life, key=lambda n: life[n][0]):
        r = root[b]
        size = aligned(s.buffers[b].nbytes, alignment)
        blk = blocks.get(r)
        if blk is None:
            blocks[r] = _Block([b], size, *life[b])
        else:
            blk.names.append(b)
            blk.size = max(blk.size, size)
            blk.first, blk.last = min(blk.first, life[b][0]), max(blk.last, life[b][1])
    return list(blocks.values())


class _Lifetimes:
    """The blocks' lifetimes and sizes as arrays, so that finding the placed blocks a new one
    overlaps is one vectorized comparison instead of a Python scan (a training step over a
    long sequence has thousands of blocks, and the search places them all about a hundred
    times)."""

    def __init__(self, blocks: list[_Block]) -> None:
        self.index = {id(b): i for i, b in enumerate(blocks)}
        self.first = np.array([b.first for b in blocks], np.int64)
        self.last = np.array([b.last for b in blocks], np.int64)
        self.size = np.array([b.size for b in blocks], np.int64)


def _place(order: list[_Block], life: _Lifetimes, best_fit: bool) -> int:
    """Place blocks in `order`, each in the smallest (best fit) or lowest (first fit) gap
    between the already placed blocks whose lifetimes overlap its own; returns the arena size."""
    ids = np.array([life.index[id(b)] for b in order], np.int64)
    first, last, size = life.first[ids], life.last[ids], life.size[ids]
    offset = np.zeros(len(order), np.int64)
    for i in range(len(order)):
        busy = np.flatnonzero((first[:i] <= last[i]) & (first[i] <= last[:i]))
        if busy.size:
            by_offset = busy[np.argsort(offset[busy], kind="stable")]  # ties: placement order
            starts = offset[by_offset]
            ends = starts + size[by_offset]
            before = np.maximum.accumulate(np.concatenate(([0], ends)))  # end below each block
            gaps = starts - before[:-1]
            fits = np.flatnonzero(gaps >= size[i])
            if fits.size:
                offset[i] = before[fits[np.argmin(gaps[fits])] if best_fit else fits[0]]
            else:
                offset[i] = before[-1]
    for blk, off in zip(order, offset.tolist(), strict=True):
        blk.offset = off
    return int((offset + size).max()) if len(order) else 0


ORDERS = {
    "size": lambda b: (-b.size, b.first),
    "length": lambda b: (-(b.last - b.first), -b.size, b.first),
    "area": lambda b: (-b.size * (b.last - b.first + 1), b.first),
    "start": lambda b: (b.first, -b.size),
}


def _search(blocks: list[_Block], lower: int, rounds: int, patience: int = 4
            ) -> tuple[int, dict[str, int]]:
    """Smallest arena over the greedy orders, each refined by iterated greedy: a block whose
    end defines the arena's top moves earlier in the order and everything is placed again
    (stops at the lower bound, which no placement can beat). An order's refinement also stops
    after `patience` placements without a smaller arena: on an LSTM training step planned
    without in-place reuse, 2-3 % above the bound, most of the placements of the full search
    repeated the same top (1 s of compile), and stopping finds an arena within half a percent
    in a quarter of the time."""
    best: tuple[int, dict[str, int]] = (-1, {})
    life = _Lifetimes(blocks)
    for key in ORDERS.values():
        for best_fit in (True, False):
            order = sorted(blocks, key=key)
            own, stale = -1, 0
            for r in range(rounds if best_fit else 1):
                top = _place(order, life, best_fit)
                if best[0] < 0 or top < best[0]:
                    best = (top, {n: b.offset for b in blocks for n in b.names})
                if best[0] <= lower:
                    return best
                own, stale = (top, 0) if own < 0 or top < own else (own, stale + 1)
                if stale >= patience:
                    break
                culprits = [b for b in order if b.offset + b.size == top]
                i = order.index(culprits[r % len(culprits)])
                order.insert(i // 2, order.pop(i))
    return best if best[0] >= 0 else (0, {})


def plan_memory(schedule: Schedule, alignment: int = 64, inplace: bool = True,
                rounds: int = 24) -> Schedule:
    """The schedule with a MemoryPlan (see the module docstring)."""
    life = temp_lifetimes(schedule)
    aliases = find_aliases(schedule, life) if inplace else {}
    blocks = _blocks(schedule, life, aliases, alignment)
    lower = max((sum(b.size for b in blocks if b.first <= t <= b.last)
                 for t in range(len(schedule.kernels))), default=0)
    arena, offsets = _search(blocks, lower, rounds)
    naive = sum(aligned(schedule.buffers[b].nbytes, alignment) for b in life)
    plan = MemoryPlan(arena, offsets, life, aliases, naive, lower, alignment)
    return schedule.with_memory(plan)


def check_memory_plan(schedule: Schedule) -> None:
    """Raise GraphError unless the plan is complete, aligned, inside the arena, and no two temps
    live at the same kernel share a byte (in-place pairs excepted, at their one shared kernel,
    when the kernel really reads its input only where it writes)."""
    plan = schedule.memory
    if plan is None:
        raise GraphError(f"schedule {schedule.name!r} has no memory plan")
    life = temp_lifetimes(schedule)
    for name in plan.offsets:
        if name not in life:
            raise GraphError(f"memory plan places %{name}, which is not a temp buffer")
    for name in life:
        if name not in plan.offsets:
            raise GraphError(f"memory plan has no offset for temp %{name}")
        off = plan.offsets[name]
        size = schedule.buffers[name].nbytes
        if off < 0 or off % plan.alignment:
            raise GraphError(f"%{name} at offset {off} is not {plan.alignment}-byte aligned")
        if off + size > plan.arena_bytes:
            raise GraphError(f"%{name} [{off}, {off + size}) overflows the arena of "
                             f"{plan.arena_bytes} bytes")
    for out, src in plan.aliases.items():
        k = life[out][0]
        if life[src][1] != k or plan.offsets[out] != plan.offsets[src] or not inplace_ok(
                schedule.kernels[k], out, src):
            raise GraphError(f"in-place alias %{out} over %{src} is not legal at kernel "
                             f"{schedule.kernels[k].name}")
    _check_overlaps(schedule, life)


def _check_overlaps(schedule: Schedule, life: dict[str, tuple[int, int]]) -> None:
    plan = schedule.memory
    assert plan is not None
    for t, k in enumerate(schedule.kernels):
        live = sorted((b for b, (lo, hi) in life.items() if lo <= t <= hi),
                      key=lambda b: plan.offsets[b])
        reach, owner = -1, None
        for b in live:
            off = plan.offsets[b]
            if off < reach and owner is not None:
                shared = (plan.aliases.get(b) == owner and life[b][0] == t) or (
                    plan.aliases.get(owner) == b and life[owner][0] == t)
                if not shared:
                    raise GraphError(
                        f"memory plan overlap at kernel {k.name}: %{owner} "
                        f"[{plan.offsets[owner]}, {reach}) and %{b} "
                        f"[{off}, {off + schedule.buffers[b].nbytes}) are both live")
            end = off + schedule.buffers[b].nbytes
            if end > reach:
                reach, owner = end, b


def memory_report(schedule: Schedule) -> str:
    """Three numbers and the placement of every temp (for `graphc show --memory`)."""
    plan = schedule.memory
    if plan is None:
        schedule = plan_memory(schedule)
        plan = schedule.memory
        assert plan is not None
    lines = [f"memory plan of {schedule.name}: {len(plan.offsets)} temps, "
             f"{len(schedule.kernels)} kernels, alignment {plan.alignment}",
             f"  naive (every temp its own block): {plan.naive_bytes:>12,} bytes",
             f"  planned arena:                    {plan.arena_bytes:>12,} bytes",
             f"  lower bound (max live bytes):     {plan.lower_bound:>12,} bytes"]
    every = schedule.options.get("every_value_bytes")
    if every is not None:
        ratio = f" ({every / plan.arena_bytes:.2f} x the arena)" if plan.arena_bytes else ""
        lines.append(f"  every graph value its own block:  {every:>12,} bytes{ratio}")
    if plan.lower_bound:
        lines.append(f"  arena / lower bound = {plan.arena_bytes / plan.lower_bound:.3f}, "
                     f"naive / arena = {plan.naive_bytes / max(plan.arena_bytes, 1):.2f}")
    lines.append("  offset        bytes  live      buffer")
    for name in sorted(plan.offsets, key=lambda n: (plan.offsets[n], plan.lifetimes[n])):
        lo, hi = plan.lifetimes[name]
        alias = f"  (in place of %{plan.aliases[name]})" if name in plan.aliases else ""
        lines.append(f"  {plan.offsets[name]:>8} {schedule.buffers[name].nbytes:>10}  "
                     f"k{lo}..k{hi:<5} %{name}{alias}")
    return "\n".join(lines) + "\n"


@dataclass
class PlanMemoryPass(Pass):
    """Schedule -> Schedule with a MemoryPlan (see the module docstring)."""

    name: ClassVar[str] = "plan_memory"
    alignment: int = 64
    inplace: bool = True

    def run(self, schedule: Schedule, ctx: PassContext) -> Schedule:  # type: ignore[override]
        return plan_memory(schedule, self.alignment, self.inplace)
