"""Loop kernels (pointwise, reductions, persistent multi-sweep reductions) -> LLVM IR.

Note: the loop nest we emit
---------------------------
`normalize_nest` first simplifies the kernel's iteration space without changing its meaning:
loops of extent 1 disappear and two adjacent loops merge into one when every index expression
of the kernel reads them only as `a·B + b` (B the inner extent): an elementwise kernel over
[N, C, H, W] with a per-channel operand becomes [N, C, H·W], a plain elementwise chain one flat
loop. Index expressions are rewritten accordingly (`Nest.rewrite`).

The outer space is then cut into *tasks*: the outer loops but the last one, times blocks of
the last outer loop. Tasks are what `emit_parallel_for` distributes over threads (chunk
boundaries never depend on the thread count, so results do not either). Per task:

    row schedule (default):                 column schedule (reduction along a strided axis):
    for o_last in block:                    for sweep: acc[0:B] = init
        for sweep:                              for q in reduce domain:
            acc = init                              for o_last in block:   # contiguous, vector
            for q in reduce domain: ...                 acc[o_last] ⊕= value(o, q)
        outer stores                        for o_last in block: outer stores

The row schedule's innermost loop is the reduction (or, pointwise, the last outer loop); the
column schedule is chosen when the operands are contiguous along the last outer variable and
not along the reduction (bias gradients: a sum over the batch axis), so the vectorized loop runs
over contiguous memory with an accumulator array instead of a strided scalar reduction.

Reductions: `sum` adds with the `reassoc` flag (the kernel IR leaves the order unspecified, and
it lets LLVM vectorize and interleave the accumulation), `max` is `llvm.maximum` (NaN
propagates, as np.max; vectorizes), `argmax` keeps the first maximum with NaN counting as the
largest value (as np.argmax). Where a row is one contiguous loop on a vector target, float sum
and max sweeps are explicit vector loops (`codegen_rows.vector_reduce_loop`); other loops with
reductions are scalar IR that LLVM's loop vectorizer widens (512-bit vectors on AVX-512 hosts).

Store-only loops (a pointwise kernel's last outer loop, a sweep without reductions) are
explicit vector loops too (`codegen_rows.vector_loop`, `codegen_expr.VectorEmitter`): full
vectors with plain loads and stores (two per iteration), one masked vector for the tail, and for
outputs of 16 MiB and more, *streaming* (non-temporal) stores into 64-byte aligned memory: no
read for ownership, about a third less memory traffic. Inputs that large read unit-stride are
prefetched `PREFETCH_AHEAD` elements ahead (the hardware prefetcher stops at every 4 KiB page):
with both, a compute-heavy chain overlaps its memory traffic (relu·sigmoid + tanh over 16M f32,
one thread: 23.7 -> 17.8 ms; an exp chain 20.8 -> 15.3 ms; a cheap one unchanged).

A store-only loop whose value picks pieces by bounds on its vector variable runs one vector
loop per piece (`split_segments`); one that concatenates many plain loads along an outer
variable reads them through a table of piece pointers (`codegen_concat`).

Persistent reductions keep values that a later sweep recomputes (softmax's exp(x - max)) in a
row-sized stack array, and one of their later sweeps prefetches the next row for the first
sweep, which would otherwise start every row with a cold stream from memory (`codegen_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from llvmlite import ir

from graphc.ir.kernel import (
    FloorDiv,
    InBounds,
    IndexValue,
    Ix,
    Load,
    LoopKernel,
    Mod,
    Op,
    RandomUniform,
    Reduction,
    Store,
    Var,
    floordiv,
    kernel_reads,
    kernel_writes,
    linearize,
    mod,
    walk,
)
from graphc.ir.kernel_segments import breakpoints, restrict, selects_on

from .codegen_concat import GatherPlan, gather_row, gather_table, plan_gather
from .codegen_expr import BufferRef, ExprEmitter, store_element
from .codegen_rows import (
    StashUse,
    ev_inner,
    inner_position,
    next_row_loads,
    plan_stash,
    prefetch_sweep,
    store_cost,
    vector_loop,
    vector_reduce_loop,
    vector_row,
)
from .llvm_ir import (
    I1,
    I64,
    alloca_at_entry,
    decode_row_major,
    emit_loop,
    for_range,
    intrinsic,
    smax,
    smin,
)
from .lowering import cast_value, compute_type
from .mathlib import mark_avx512

# Work (element operations) per parallel chunk, and below which a kernel runs serially.
CHUNK_WORK = 1 << 15
PARALLEL_WORK = 1 << 16
# Below this much work a loop kernel is split over the threads only where its inputs were
# written by a kernel that itself ran on every thread (see `codegen.Generator.build`).
LOCAL_WORK = 1 << 20
# A kernel that CHUNK_WORK points per chunk cut into fewer than FEW_CHUNKS chunks is cut by cost
# instead, into equal chunks of about CHUNK_WORK points costing POINT_COST each. Ops weigh what
# their vector code costs against an add (the inline exp, log and tanh are a dozen or more
# instructions per vector): an LSTM step's gates (8192 points, three sigmoids and two tanh each)
# were one chunk, one thread working while the other waited, about a tenth of a two-thread LSTM
# forward. Larger kernels keep their chunks: a row reduction prefetches the next row of its
# chunk, so its chunks should stay long.
FEW_CHUNKS = 8
POINT_COST = 8
OP_WEIGHT = {"exp": 8, "log": 8, "log1p": 8, "tanh": 8, "sigmoid": 8, "erf": 8, "softplus": 12,
             "pow": 12, "sin": 12, "cos": 12, "atan": 12, "div": 2, "sqrt": 2, "rsqrt": 2,
             "reciprocal": 2}
# The same bound for kernels whose work is counted in flops (convolutions, small matmuls): a
# flop costs far less than a loop kernel's element, and a parallel region's wake-up and join
# cost microseconds. Measured on the demo CNN's training step (convolutions of 0.1-2.4 MFLOP):
# at 2^16 flops two threads took 228 us against 192 us for one, at 2^21 186 against 189.
PARALLEL_FLOPS = 1 << 21
COLUMN_BLOCK = 512
# Outputs at least this large are written with non-temporal stores (they would not stay in
# cache anyway, and skipping the read for ownership saves a third of the traffic).
STREAM_BYTES = 16 << 20
# ... up to this cost of the stored value (sigmoid + tanh is 8; measured faster up to there
# together with the prefetch below).
STREAM_MAX_COST = 8


# At most this many vector loops per split pointwise kernel (`split_segments`), and what a
# vector costs besides its values (its mask, addresses, store and loop step), weighed as in
# OP_WEIGHT.
MAX_SEGMENTS = 8
VECTOR_COST = 4


# -- normalizing the iteration space --------------------------------------------------------------


@dataclass
class Nest:
    """The kernel's loops after dropping unit loops and merging adjacent ones."""

    outer: list[tuple[str, int]]
    inner: list[tuple[str, int]]
    rewrite: dict[Ix, Ix] = field(default_factory=dict)
    var_map: dict[str, str | None] = field(default_factory=dict)

    @property
    def extents(self) -> dict[str, int]:
        return dict(self.outer + self.inner)

    def source(self, name: str) -> str | None:
        """The one kernel variable loop `name` stands for; None where it merged several."""
        sources = [v for v, t in self.var_map.items() if t == name]
        return sources[0] if len(sources) == 1 else None


def kernel_indices(k: LoopKernel, shapes: dict[str, tuple[int, ...]]) -> list[Ix]:
    """Every index expression the kernel evaluates, loads and stores linearized."""
    out: list[Ix] = []
    for e in walk(k.expr_roots()):
        if isinstance(e, Load):
            out.append(linearize(e.index, shapes[e.buffer]))
            out += [m.e for m in e.mask]
        elif isinstance(e, IndexValue):
            out.append(e.index)
        elif isinstance(e, InBounds):
            out += [m.e for m in e.bounds]
        elif isinstance(e, RandomUniform):
            out.append(e.counter)
    for st in k.all_stores():
        out.append(linearize(st.index, shapes[st.buffer]))
    return list(dict.fromkeys(out))


def _drop_vars(e: Ix, dropped: set[str], extents: dict[str, int]) -> Ix:
    """`e` with the variables `dropped` set to 0 (re-simplified)."""
    out = Ix((), e.const)
    for atom, c in e.terms:
        if isinstance(atom, Var):
            if atom.name not in dropped:
                out = out + Ix(((atom, 1),), 0) * c
            continue
        arg = _drop_vars(atom.arg, dropped, extents)
        sub = floordiv(arg, atom.d, extents) if isinstance(atom, FloorDiv) else \
            mod(arg, atom.d, extents)
        out = out + sub * c
    return out


def _merge_pair(e: Ix, a: str, b: str, inner: int, extents: dict[str, int]) -> Ix | None:
    """Rewrite `a·inner + b` as the variable `a` (now of extent A·inner), or None when some
    term of `e` reads a and b otherwise."""
    ca = cb = 0
    out = Ix((), e.const)
    for atom, c in e.terms:
        if isinstance(atom, Var):
            if atom.name == a:
                ca = c
            elif atom.name == b:
                cb = c
            else:
                out = out + Ix(((atom, 1),), 0) * c
            continue
        arg = _merge_pair(atom.arg, a, b, inner, extents)
        if arg is None:
            return None
        sub = floordiv(arg, atom.d, extents) if isinstance(atom, FloorDiv) else \
            mod(arg, atom.d, extents)
        out = out + sub * c
    if ca != cb * inner:
        return None
    return out + Ix(((Var(a), 1),), 0) * cb if cb else out


def _rename(e: Ix, names: dict[str, str], extents: dict[str, int]) -> Ix:
    out = Ix((), e.const)
    for atom, c in e.terms:
        if isinstance(atom, Var):
            out = out + Ix(((Var(names[atom.name]), 1),), 0) * c
            continue
        arg = _rename(atom.arg, names, extents)
        atom2 = FloorDiv(arg, atom.d) if isinstance(atom, FloorDiv) else Mod(arg, atom.d)
        out = out + Ix(((atom2, 1),), 0) * c
    return out


def normalize_nest(k: LoopKernel, shapes: dict[str, tuple[int, ...]]) -> Nest:
    """Drop unit loops and merge adjacent loops the index expressions allow (module note)."""
    indices = kernel_indices(k, shapes)
    extents = k.extents()
    var_map: dict[str, str | None] = {v: v for v in extents}
    dropped = {v for v, n in extents.items() if n == 1}
    current = {e: _drop_vars(e, dropped, extents) for e in indices}
    for v in dropped:
        var_map[v] = None
    groups = []
    for names in (k.outer_vars, k.inner_vars):
        groups.append([(v, extents[v]) for v in names if v not in dropped])
    for loops in groups:
        j = len(loops) - 1
        while j > 0:
            (a, na), (b, nb) = loops[j - 1], loops[j]
            merged_ext = {**extents, a: na * nb}
            trial = {}
            for orig, e in current.items():
                m = _merge_pair(e, a, b, nb, merged_ext)
                if m is None:
                    break
                trial[orig] = m
            else:
                current = trial
                extents = merged_ext
                loops[j - 1] = (a, na * nb)
                del loops[j]
                for v, tgt in var_map.items():
                    if tgt == b:
                        var_map[v] = a
            j -= 1
    outer, inner = groups
    names = {v: f"_o{i}" for i, (v, _) in enumerate(outer)}
    names.update({v: f"_q{i}" for i, (v, _) in enumerate(inner)})
    new_ext = {names[v]: n for v, n in outer + inner}
    rewrite = {orig: _rename(e, names, new_ext) for orig, e in current.items()}
    var_map = {v: (names[t] if t is not None else None) for v, t in var_map.items()}
    return Nest([(names[v], n) for v, n in outer], [(names[v], n) for v, n in inner],
                rewrite, var_map)


# -- the plan -------------------------------------------------------------------------------------


@dataclass
class LoopPlan:
    """How a loop kernel is cut into tasks (see the module note)."""

    nest: Nest
    column: bool          # column schedule (accumulator arrays along the last outer loop)
    block: int            # extent of the last outer loop handled by one task
    tasks: int
    grain: int            # tasks per parallel chunk
    work: int             # estimated element operations of the whole kernel
    lanes: int = 0        # explicit vector loops of this many lanes for store-only loops
    streaming: frozenset[str] = frozenset()  # outputs written with non-temporal stores
    prefetch: frozenset[str] = frozenset()   # inputs prefetched PREFETCH_AHEAD elements ahead
    # pointwise vector loops split along the last outer loop: (start, end, stores restricted
    # to that range), see `split_segments`
    segments: list[tuple[int, int, list[Store]]] | None = None
    # a concatenation of many plain loads along an outer loop, read through a table of the
    # pieces' pointers (`codegen_concat`)
    gather: GatherPlan | None = None

    @property
    def parallel(self) -> bool:
        return self.tasks > self.grain and self.work >= PARALLEL_WORK


def _contiguous_in(k: LoopKernel, nest: Nest, shapes, var: str) -> int:
    """How many loads of the sweeps are unit-stride along (rewritten) variable `var`."""
    n = 0
    for sw in k.sweeps:
        roots = [r.value for r in sw.reductions] + [s.value for s in sw.stores]
        for e in walk(roots):
            if isinstance(e, Load):
                lin = linearize(e.index, shapes[e.buffer])
                lin = nest.rewrite.get(lin, lin)
                if dict((str(a), c) for a, c in lin.terms).get(var) == 1:
                    n += 1
    return n


def vector_loops_allowed(k: LoopKernel, dtypes: Mapping[str, str]) -> bool:
    """Whether store-only loops of `k` can be explicit vector loops (`VectorEmitter`): no
    random numbers or integer powers (scalar-only lowerings), no f16 storage."""
    if any(dtypes[n] == "f16" for n in kernel_reads(k) + kernel_writes(k)):
        return False
    for e in walk(k.expr_roots()):
        if isinstance(e, RandomUniform) or (isinstance(e, Op) and e.op == "pow"
                                            and e.dtype in ("i32", "i64")):
            return False
    return True


def plan_loop(k: LoopKernel, shapes: dict[str, tuple[int, ...]],
              dtypes: Mapping[str, str] | None = None, lanes: int = 0) -> LoopPlan:
    """How to emit `k`: its normalized nest, schedule, task cut, explicit vector lanes (0:
    leave vectorization to LLVM) and the outputs large enough for streaming stores."""
    plan = _plan_tasks(k, shapes)
    if lanes and dtypes is not None and vector_loops_allowed(k, dtypes):
        plan.lanes = lanes
        plan.streaming = frozenset(
            st.buffer for st in k.all_stores()
            if math.prod(shapes[st.buffer]) * _ITEM.get(dtypes[st.buffer], 4) >= STREAM_BYTES
            and store_cost(k, st) <= STREAM_MAX_COST)
        if nest_var := (plan.nest.outer[-1][0] if plan.nest.outer and not k.sweeps else None):
            plan.prefetch = frozenset(
                e.buffer for e in walk([st.value for st in k.stores])
                if isinstance(e, Load) and not e.mask and _ITEM.get(dtypes[e.buffer], 4)
                * math.prod(shapes[e.buffer]) >= STREAM_BYTES
                and _unit_stride(e, plan.nest, shapes, nest_var))
        if not k.sweeps and not plan.column:
            plan.segments = split_segments(k, plan.nest, lanes)
            if plan.segments is None:
                plan.gather = plan_gather(k, plan.nest, shapes, dict(dtypes))
    return plan


def split_segments(k: LoopKernel, nest: Nest, lanes: int
                   ) -> list[tuple[int, int, list[Store]]] | None:
    """Where the stored values pick pieces by bounds on the last outer loop (a concatenation
    along the last axis: an LSTM step's four gate gradients), one vector loop per segment
    between the bounds' ends, each storing the values restricted to its segment
    (`ir.kernel_segments`): a vector's select evaluates both of its operands, so without the
    split every element computes every piece. Only where the segments' vectors, weighed by
    what each computes, cost less than the whole loop's."""
    if not nest.outer:
        return None
    last_name, last = nest.outer[-1]
    var = nest.source(last_name)
    roots = [st.value for st in k.stores]
    if var is None or not selects_on(roots, var):
        return None
    ends = breakpoints(roots, var, last)
    if len(ends) > MAX_SEGMENTS:
        return None
    segments, lo = [], 0
    for hi in ends:
        values = restrict(roots, var, lo, hi, k.extents())
        segments.append((lo, hi, [Store(st.buffer, st.index, v)
                                   for st, v in zip(k.stores, values, strict=True)]))
        lo = hi
    # Each segment ends in a partial vector: with short rows (a pad's one-element borders
    # around 8 columns) the extra vectors cost more than the pieces they no longer compute.
    split = sum(-(-(hi - lo) // lanes) * (_cost([st.value for st in stores]) + VECTOR_COST)
                for lo, hi, stores in segments)
    return segments if split < -(-last // lanes) * (_cost(roots) + VECTOR_COST) else None


def _cost(roots) -> int:
    """Vector instructions, roughly, to evaluate `roots` once (math functions weigh more)."""
    return sum(OP_WEIGHT.get(e.op, 1) if isinstance(e, Op) else 1 for e in walk(roots))


def _unit_stride(e: Load, nest: Nest, shapes, var: str) -> bool:
    lin = linearize(e.index, shapes[e.buffer])
    lin = nest.rewrite.get(lin, lin)
    return dict((str(a), c) for a, c in lin.terms).get(var) == 1


_ITEM = {"f64": 8, "i64": 8, "f32": 4, "i32": 4, "f16": 2, "bf16": 2, "bool": 1}


def _plan_tasks(k: LoopKernel, shapes: dict[str, tuple[int, ...]]) -> LoopPlan:
    nest = normalize_nest(k, shapes)
    q_points = math.prod(n for _, n in nest.inner)
    row_work = max(1, q_points * max(1, len(k.sweeps)))
    exprs = list(walk(k.expr_roots()))
    nops = len(exprs)
    cost = _cost(exprs)
    column = False
    if nest.inner and nest.outer and nest.outer[-1][1] > 1:
        o_last, q_last = nest.outer[-1][0], nest.inner[-1][0]
        column = (_contiguous_in(k, nest, shapes, o_last) > 0
                  and _contiguous_in(k, nest, shapes, q_last) == 0)
    if not nest.outer:
        return LoopPlan(nest, False, 1, 1, 1, row_work * nops)
    last = nest.outer[-1][1]
    rows = math.prod(n for _, n in nest.outer[:-1])
    if column:
        block = min(last, COLUMN_BLOCK)
    else:
        block = min(last, max(16, -(-CHUNK_WORK // row_work)))
        if block < last:  # equal blocks, a multiple of a vector's length where possible
            nblk = -(-last // block)
            block = -(-last // nblk)
            block = min(last, -(-block // 16) * 16)
    tasks = rows * -(-last // block)
    grain = max(1, -(-CHUNK_WORK // (block * row_work)))
    if -(-tasks // grain) < FEW_CHUNKS:  # a costly kernel of few points: equal chunks by cost
        chunks = -(-rows * last * row_work * max(cost, 1) // (CHUNK_WORK * POINT_COST))
        grain = min(grain, max(1, -(-tasks // max(chunks, 1))))
    return LoopPlan(nest, column, block, tasks, grain, rows * last * row_work * nops)


# -- emission -------------------------------------------------------------------------------------


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def emit_loop_kernel(k: LoopKernel, plan: LoopPlan, b: ir.IRBuilder,
                     buffers: dict[str, BufferRef], lo: ir.Value, hi: ir.Value) -> None:
    """Emit tasks [lo, hi) of `k` at the builder's position (a function of the pointers)."""
    nest = plan.nest
    if plan.lanes * 32 >= 512:  # explicit 512-bit vectors: the target has AVX-512
        mark_avx512(b.module)
    ev = ExprEmitter(b, buffers, nest.extents, rewrite=nest.rewrite, var_map=nest.var_map)
    ev.sigmoid_operands = frozenset(e.args[0] for e in walk(k.expr_roots())
                                    if isinstance(e, Op) and e.op == "sigmoid")
    if not nest.outer:
        _emit_point(k, ev, [])
        return
    last_name, last = nest.outer[-1]
    nblk = -(-last // plan.block)
    if plan.gather is not None:
        table, starts = gather_table(plan.gather, b, buffers)
    # A kernel with reduction sweeps keeps the loop vectorizer off its task loop: it widened
    # it across tasks (output rows of a 2x2 max-pool) with a gather per window element, where
    # the SLP vectorizer makes row vectors and shuffles of the unrolled row instead (pooling
    # 16-20 % faster; softmax, batch norm and row sums unchanged). The column loop keeps it:
    # across rows of 4-20 elements its gathers beat the scalar sums by 10-25 %.
    with for_range(b, lo, hi, name="task", vectorize=not k.sweeps) as t:
        env = decode_row_major(b, b.udiv(t, _i64(nblk)) if nblk > 1 else t, nest.outer[:-1])
        blk = b.urem(t, _i64(nblk)) if nblk > 1 else _i64(0)
        j0 = b.mul(blk, _i64(plan.block))
        j1 = smin(b, b.add(j0, _i64(plan.block)), _i64(last))
        task_ev = ev.child(env)
        if plan.column:
            _emit_column_block(k, task_ev, last_name, j0, j1, plan.block)
        elif plan.gather is not None:
            row_ev, stores = gather_row(plan.gather, task_ev, table, starts)
            vector_loop(row_ev, last_name, j0, j1, plan, stores, None)
        elif plan.lanes and not k.sweeps:
            for lo_s, hi_s, stores in plan.segments or [(0, last, k.stores)]:
                seg_lo = smax(b, j0, _i64(lo_s)) if lo_s else j0
                seg_hi = smax(b, seg_lo, smin(b, j1, _i64(hi_s))) if hi_s < last else j1
                vector_loop(task_ev, last_name, seg_lo, seg_hi, plan, stores, None)
        else:
            with for_range(b, j0, j1, name="col") as j:
                _emit_point(k, task_ev.child({last_name: j}), [last_name], plan)
    if plan.streaming:
        b.fence("seq_cst")  # order the non-temporal stores before anyone reads them


def _emit_point(k: LoopKernel, ev: ExprEmitter, bound_outer: list[str],
                plan: LoopPlan | None = None) -> None:
    """One outer point: every sweep over the reduce domain, then the outer stores."""
    b = ev.b
    inner_names = [n for n, _ in ev_inner(ev)]
    stash = plan_stash(k, ev)
    pf_sweep = prefetch_sweep(k, stash, ev, plan.lanes) if plan is not None and plan.lanes else -1
    for i, sw in enumerate(k.sweeps):
        roots = [r.value for r in sw.reductions] + [s.value for s in sw.stores]
        ev.hoist(roots, inner_names)
        accs = [_init(r) for r in sw.reductions]
        here = StashUse([s for s in stash if s.producer == i],
                        [s for s in stash if i in s.consumers])
        if i == pf_sweep and bound_outer and plan is not None:
            here.prefetch = next_row_loads(k, ev, bound_outer[-1])
        results = _emit_reduce_loops(ev, ev_inner(ev), sw.stores, sw.reductions, accs, here,
                                     plan)
        for red, res in zip(sw.reductions, results, strict=True):
            ev.refs[red.name] = _finish(b, red, res)
    for st in k.stores:
        store_element(b, ev.buffers[st.buffer], ev.linear(st.buffer, st.index), ev(st.value))


def _emit_reduce_loops(ev: ExprEmitter, loops: list[tuple[str, int]], stores, reductions,
                       accs: list[list[ir.Value]], stash: StashUse | None = None,
                       plan: LoopPlan | None = None) -> list[list[ir.Value]]:
    """Nested loops over the reduce domain carrying the accumulators; returns them after."""
    b = ev.b
    if len(loops) == 1 and not reductions and plan is not None and plan.lanes:
        vector_loop(ev, loops[0][0], _i64(0), _i64(loops[0][1]), plan, stores, stash)
        return []
    if plan is not None and plan.lanes and vector_row(ev, loops, stores, reductions,
                                                      plan.lanes, nested=True):
        return vector_reduce_loop(ev, loops, plan, stores, reductions, accs, stash)
    if not loops:
        if stash is not None:
            stash.bind(ev)
        for st in stores:
            store_element(b, ev.buffers[st.buffer], ev.linear(st.buffer, st.index), ev(st.value))
        out = [_combine(ev, red, acc, ev(red.value), inner_position(ev))
               for red, acc in zip(reductions, accs, strict=True)]
        if stash is not None:
            stash.keep(ev)
        return out
    name, n = loops[0]
    flat = [v for acc in accs for v in acc]
    sizes = [len(acc) for acc in accs]

    def body(bb: ir.IRBuilder, q: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
        inner_ev = ev.child({name: q})
        if len(loops) > 1:  # values invariant in the loops inside: once per iteration here
            inner_ev.hoist([r.value for r in reductions] + [s.value for s in stores],
                           [x for x, _ in loops[1:]])
        regrouped, pos = [], 0
        for s in sizes:
            regrouped.append(carried[pos:pos + s])
            pos += s
        out = _emit_reduce_loops(inner_ev, loops[1:], stores, reductions, regrouped, stash,
                                 plan)
        return [v for acc in out for v in acc]

    final = emit_loop(b, _i64(0), _i64(n), body, flat, name=f"red{name}")
    out, pos = [], 0
    for s in sizes:
        out.append(final[pos:pos + s])
        pos += s
    return out


def _init(red: Reduction) -> list[ir.Value]:
    ty = compute_type(red.value.dtype)
    is_float = isinstance(ty, (ir.FloatType, ir.DoubleType))
    if red.kind == "sum":
        return [ir.Constant(ty, 0.0 if is_float else 0)]
    low = float("-inf") if is_float else (0 if ty == I1 else -(1 << (ty.width - 1)))
    if red.kind == "max":
        return [ir.Constant(ty, low)]
    return [ir.Constant(ty, low), _i64(-1)]  # argmax: best value, its position


def _combine(ev: ExprEmitter, red: Reduction, acc: list[ir.Value], v: ir.Value,
             position: ir.Value | None) -> list[ir.Value]:
    b = ev.b
    ty = v.type
    is_float = isinstance(ty, (ir.FloatType, ir.DoubleType))
    if red.kind == "sum":
        return [b.fadd(acc[0], v, flags=("reassoc",)) if is_float else b.add(acc[0], v)]
    if red.kind == "max":
        if is_float:
            # nsz: NaN still propagates, but -0 and +0 need not be ordered (on x86 three
            # instructions instead of six, and a shorter chain through the accumulator).
            return [b.call(intrinsic(b.module, "llvm.maximum", ty), [acc[0], v],
                           fastmath=("nsz",))]
        if ty == I1:
            return [b.or_(acc[0], v)]
        return [b.call(intrinsic(b.module, "llvm.smax", ty), [acc[0], v])]
    best, where = acc
    if is_float:  # first maximum; NaN beats everything and the first NaN wins
        better = b.or_(b.fcmp_ordered(">", v, best),
                       b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", best, best)))
    elif ty == I1:
        better = b.and_(v, b.not_(best))
    else:
        better = b.icmp_signed(">", v, best)
    better = b.or_(better, b.icmp_signed("<", where, _i64(0)))  # the first element
    return [b.select(better, v, best), b.select(better, position, where)]


def _finish(b: ir.IRBuilder, red: Reduction, acc: list[ir.Value]) -> ir.Value:
    if red.kind == "argmax":
        where = b.select(b.icmp_signed("<", acc[1], _i64(0)), _i64(0), acc[1])
        return cast_value(b, where, "i64", red.dtype)
    return cast_value(b, acc[0], red.value.dtype, red.dtype) \
        if red.value.dtype != red.dtype else acc[0]


# -- the column schedule --------------------------------------------------------------------------


def _emit_column_block(k: LoopKernel, ev: ExprEmitter, last_name: str, j0: ir.Value,
                       j1: ir.Value, block: int) -> None:
    """Tasks of the column schedule: accumulator arrays over the block of the last outer loop,
    the reduce loops outside, the contiguous loop over the block innermost."""
    b = ev.b
    slots: dict[str, list[ir.Value]] = {}
    for sw in k.sweeps:
        for red in sw.reductions:
            init = _init(red)
            arrays = [alloca_at_entry(b, ir.ArrayType(v.type, block), name=f"acc.{red.name}")
                      for v in init]
            slots[red.name] = arrays
            with for_range(b, j0, j1, name="init") as j:
                for arr, v in zip(arrays, init, strict=True):
                    b.store(v, _slot(b, arr, b.sub(j, j0)))
        _column_sweep(ev, ev_inner(ev), sw, slots, last_name, j0, j1, k.sweeps)
    with for_range(b, j0, j1, name="out") as j:
        jev = ev.child({last_name: j})
        _load_refs(jev, k.sweeps, slots, j, j0, len(k.sweeps))
        for st in k.stores:
            store_element(b, jev.buffers[st.buffer], jev.linear(st.buffer, st.index),
                          jev(st.value))


def _slot(b: ir.IRBuilder, arr: ir.Value, i: ir.Value) -> ir.Value:
    return b.gep(arr, [ir.Constant(ir.IntType(32), 0), i], inbounds=True)


def _load_refs(ev: ExprEmitter, sweeps, slots, j: ir.Value, j0: ir.Value, upto: int) -> None:
    """Bind the results of the reductions of sweeps[:upto] at block position j."""
    b = ev.b
    for sw in sweeps[:upto]:
        for red in sw.reductions:
            acc = [b.load(_slot(b, arr, b.sub(j, j0))) for arr in slots[red.name]]
            ev.refs[red.name] = _finish(b, red, acc)


def _column_sweep(ev: ExprEmitter, loops, sw, slots, last_name, j0, j1, sweeps) -> None:
    b = ev.b
    if loops:
        name, n = loops[0]
        with for_range(b, _i64(0), _i64(n), name=f"red{name}") as q:
            _column_sweep(ev.child({name: q}), loops[1:], sw, slots, last_name, j0, j1, sweeps)
        return
    upto = sweeps.index(sw)
    with for_range(b, j0, j1, name="lane") as j:
        jev = ev.child({last_name: j})
        _load_refs(jev, sweeps, slots, j, j0, upto)
        for st in sw.stores:
            store_element(b, jev.buffers[st.buffer], jev.linear(st.buffer, st.index),
                          jev(st.value))
        for red in sw.reductions:
            ptrs = [_slot(b, arr, b.sub(j, j0)) for arr in slots[red.name]]
            acc = [b.load(p) for p in ptrs]
            new = _combine(jev, red, acc, jev(red.value), inner_position(jev))
            for p, v in zip(ptrs, new, strict=True):
                b.store(v, p)


def loop_buffers(k: LoopKernel) -> Iterable[str]:
    """Buffers the kernel touches (reads, then writes)."""
    return list(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))

