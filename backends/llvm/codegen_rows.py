"""Row sweeps of loop kernels: explicit vector loops, vector reductions, stashes, prefetching.

A row-schedule loop kernel runs its sweeps one after the other over each row of the reduce
domain (`codegen_loop`). Where the row is one contiguous loop and the target has vector
registers, the sweeps are explicit vector loops here instead of scalar IR left to LLVM's
vectorizer:

* store-only sweeps (`vector_loop`): full vectors, two per iteration, one masked tail vector;
  streaming stores for large outputs;
* float sum / max sweeps (`vector_reduce_loop`): `VREDUCE_UNROLL` vector accumulators (one
  dependency chain each), a masked tail whose inactive lanes hold the identity, a shuffle tree
  at the end. Summation order is unspecified in the kernel IR (as for LLVM's `reassoc`), and
  it never depends on the thread count: a row is one task. Where outer loops enclose the
  contiguous one (a batch norm's statistics over batch x plane per channel), they carry the
  vector accumulators and the row ends in one shuffle tree: per-channel sums over 32 planes of
  4x4 (the demo CNN's bias and batch-norm gradients) 5.4 -> 0.6 µs, where a plane shorter than
  two vectors had made the whole sweep a scalar loop. Each plane's loop prefetches the next
  plane (`_row_streams`).

Being explicit is what lets a sweep prefetch: while one row is computed, the loads of the
next row's first sweep are prefetched from the costliest later sweep (`prefetch_sweep`), so
that they overlap computation instead of the last sweep's streaming stores, which compete
for the same fill buffers (softmax over 4096 x 4096 f32, one thread: 8.9 ms with the scalar
reductions and the prefetch in the store sweep, 8.3 ms with vector reductions, 6.5 ms with the
prefetch moved into the exp sweep).

Stashes: an expensive value that a later sweep recomputes (softmax's exp(x - max)) is kept in
a row-sized stack array by the sweep that computes it first (`plan_stash`), up to
`STASH_LIMIT` points per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llvmlite import ir

from graphc.ir.kernel import (
    Expr,
    Load,
    LoopKernel,
    Op,
    Reduction,
    linearize,
    top_coefficient,
    walk,
)

from .codegen_expr import ExprEmitter, VectorEmitter, element_ptr
from .llvm_ir import (
    I1,
    I64,
    alloca_at_entry,
    emit_loop,
    for_range,
    intrinsic,
    lane_tree,
    masked_load,
    masked_store,
    prefetch,
    vsplat,
)
from .lowering import compute_type

if TYPE_CHECKING:
    from .codegen_loop import LoopPlan


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


# Large unit-stride inputs of a pointwise vector loop are prefetched this many elements ahead.
PREFETCH_AHEAD = 1024
# ... into L2 (prefetcht1) rather than L1: the L1 streamer takes lines from there, and L1 is not
# crowded with lines 4 KiB ahead of use (relu(x·w + b) over 16M f32, one thread: 19.1 -> 19.7
# GB/s; the sigmoid/tanh chain unchanged).
PREFETCH_LOCALITY = 2


def vector_loop(ev: ExprEmitter, var: str, start: ir.Value, stop: ir.Value, plan: LoopPlan,
                stores, stash: StashUse | None) -> None:
    """`for var in [start, stop)` as an explicit vector loop of plan.lanes lanes evaluating
    store-only code: full vectors with plain loads and stores (streaming stores for large
    outputs), then one masked vector for the rest (no scalar remainder loop)."""
    b = ev.b
    lanes = plan.lanes
    ity = ir.VectorType(I64, lanes)
    iota = ir.Constant(ity, list(range(lanes)))
    true = ir.Constant(ir.VectorType(I1, lanes), [1] * lanes)
    count = b.sub(stop, start)
    main_end = b.add(start, b.mul(b.udiv(count, _i64(lanes)), _i64(lanes)))

    def body(j: ir.Value, mask: ir.Value | None) -> None:
        vev = VectorEmitter.within(ev, {var: j}, var, lanes, true, plan.streaming)
        vev.full = ir.Constant(I1, 1)
        if mask is not None:
            vev.lane_mask = mask
            vev.full = ir.Constant(I1, 0)
        if stash is not None:
            stash.bind_vector(vev)
        for st in stores:
            vev.vstore(st.buffer, st.index, vev(st.value))
        if stash is not None:
            stash.keep_vector(vev)

    def full(j: ir.Value) -> None:
        body(j, None)
        if stash is not None and stash.prefetch is not None:
            _prefetch(stash.prefetch, var, j)

    if stash is None:
        # Two vectors per iteration, then at most one more: independent chains side by side
        # (an exp is a long dependency chain), half the loop overhead. (A sweep reading a
        # stash is a cheap loop that LLVM unrolls itself.)
        ahead = list(dict.fromkeys(e for st in stores for e in walk([st.value])
                                   if isinstance(e, Load) and e.buffer in plan.prefetch))
        pair_end = b.add(start, b.mul(b.udiv(count, _i64(2 * lanes)), _i64(2 * lanes)))
        with for_range(b, start, pair_end, step=2 * lanes, name=f"vec2{var}") as j:
            for jj in (j, b.add(j, _i64(lanes))):
                full(jj)
                if ahead:  # one cache line per input and vector
                    _prefetch((ev, ahead), var, b.add(jj, _i64(PREFETCH_AHEAD)),
                              PREFETCH_LOCALITY)
        with b.if_then(b.icmp_signed("<", pair_end, main_end)):
            full(pair_end)
    else:
        with for_range(b, start, main_end, step=lanes, name=f"vec{var}") as j:
            full(j)
    with b.if_then(b.icmp_signed("<", main_end, stop)):
        w = VectorEmitter.within(ev, {}, var, lanes, true)
        body(main_end, b.icmp_signed("<", b.add(w.widen(main_end), iota), w.widen(stop)))


def next_row_loads(k: LoopKernel, ev: ExprEmitter, outer: str
                   ) -> tuple[ExprEmitter, list[Load]] | None:
    """The first sweep of the next row will stream its loads from memory: what a later sweep
    of this row prefetches (a scope with the next row bound, and the loads)."""
    if len(ev_inner(ev)) != 1:  # the prefetch scope binds the one inner variable only
        return None
    sw = k.sweeps[0]
    roots = [r.value for r in sw.reductions] + [s.value for s in sw.stores]
    loads = [e for e in walk(roots) if isinstance(e, Load) and not e.mask]
    if not loads:
        return None
    nxt = ev.child({outer: ev.b.add(ev.env[outer], _i64(1))})
    return nxt, loads


def _prefetch(target: tuple[ExprEmitter, list[Load]], var: str, j: ir.Value,
              locality: int = 3) -> None:
    scope, loads = target
    b = scope.b
    inner = scope.child({var: j})
    for e in loads:
        prefetch(b, element_ptr(b, scope.buffers[e.buffer], inner.linear(e.buffer, e.index)),
                 locality=locality)


def prefetch_sweep(k: LoopKernel, stash: list[_Stash], ev: ExprEmitter, lanes: int) -> int:
    """The sweep that prefetches the next row for the first one: the costliest of the later
    sweeps (what a stash holds costs nothing where it is read), so that the next row's reads
    overlap computation rather than the last sweep's stores."""
    n = len(k.sweeps)
    if n < 2:
        return -1
    best, best_cost = n - 1, -1
    for i in range(1, n):
        sw = k.sweeps[i]
        if sw.reductions and not vector_row(ev, ev_inner(ev), sw.stores, sw.reductions, lanes):
            continue  # only explicit vector loops can prefetch
        held = {s.expr for s in stash if i in s.consumers}
        roots = [r.value for r in sw.reductions] + [s.value for s in sw.stores]
        cost = sum(_EXPENSIVE.get(x.op, 0) for r in roots for x in _walk_until(r, held)
                   if isinstance(x, Op))
        if cost > best_cost:
            best, best_cost = i, cost
    return best


def vector_row(ev: ExprEmitter, loops: list[tuple[str, int]], stores, reductions,
               lanes: int, nested: bool = False) -> bool:
    """Whether a reduction sweep runs as an explicit vector loop: float sums and maxima over
    one loop of at least two vectors, every load and store contiguous along it. (A pooling
    window of four elements or a strided row would be a masked tail vector or gathers: the
    scalar loop is faster there.) With `nested`, outer loops may enclose it, each of their
    iterations running it over at least one vector (a batch norm's (batch, rows x columns)
    per channel): the accumulators then live across the outer loops."""
    if not reductions or not all(
            r.kind in ("sum", "max") and isinstance(compute_type(r.value.dtype),
                                                    (ir.FloatType, ir.DoubleType))
            for r in reductions):
        return False
    if len(loops) == 1:
        if loops[0][1] < 2 * lanes:
            return False
    elif not nested or not loops or loops[-1][1] < lanes:
        return False
    var = loops[-1][0]
    roots = [r.value for r in reductions] + [s.value for s in stores]
    indexed = [(e.buffer, e.index) for e in walk(roots) if isinstance(e, Load)]
    indexed += [(s.buffer, s.index) for s in stores]
    for buffer, index in indexed:
        lin = linearize(index, ev.buffers[buffer].shape)
        if top_coefficient(ev.rewrite.get(lin, lin), var) not in (0, 1):
            return False
    return True


VREDUCE_UNROLL = 4  # vectors per iteration of a vector reduction loop (independent chains)


def vector_reduce_loop(ev: ExprEmitter, loops: list[tuple[str, int]], plan: LoopPlan, stores,
                       reductions, accs: list[list[ir.Value]], stash: StashUse | None
                       ) -> list[list[ir.Value]]:
    """The innermost of `loops`, `for var in [0, n)`, with float sum / max reductions as an
    explicit vector loop: VREDUCE_UNROLL vector accumulators per reduction, one masked vector
    for the tail (its inactive lanes hold the identity), then a shuffle tree to one value.
    Outer loops (`vector_row`'s `nested`) carry the vector accumulators: one shuffle tree at
    the very end."""
    b = ev.b
    *outer, (var, n) = loops
    lanes = plan.lanes
    true = ir.Constant(ir.VectorType(I1, lanes), [1] * lanes)
    iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
    tys = [compute_type(r.value.dtype) for r in reductions]
    idents = [ir.Constant(ir.VectorType(t, lanes),
                          [0.0 if r.kind == "sum" else float("-inf")] * lanes)
              for r, t in zip(reductions, tys, strict=True)]

    def combine(r: Reduction, acc: ir.Value, v: ir.Value) -> ir.Value:
        if r.kind == "sum":
            return b.fadd(acc, v, flags=("reassoc",))
        return b.call(intrinsic(b.module, "llvm.maximum", acc.type), [acc, v],
                      fastmath=("nsz",))

    # The next outer iteration's rows (a batch norm's next plane, 256 KiB away) are fetched
    # while this one is summed: a stream that ends every 4 KiB leaves the hardware prefetcher
    # nothing to run ahead on (statistics over (64, 64, 32, 32) f32, one thread: 1.80 ->
    # 1.56 ms with the whole forward).
    nxt_rows = _row_streams(ev, var, outer[-1][0], reductions, stores) if outer else []

    def vector(scope: ExprEmitter, j: ir.Value, mask: ir.Value | None, part: list[ir.Value],
               nxt: ExprEmitter | None = None) -> list[ir.Value]:
        """One vector at j; `nxt`: the scope of the next outer iteration, whose rows to fetch."""
        if nxt is not None and mask is None:
            # the line of the vector's last element: a plane that starts past a line boundary
            # (numpy's large arrays start 16 bytes into a page) ends one line further, in the
            # next page, where the hardware prefetcher has not been (1.47 -> 1.36 ms there)
            _prefetch((nxt, nxt_rows), var, b.add(j, _i64(lanes - 1)), PREFETCH_LOCALITY)
        vev = VectorEmitter.within(scope, {var: j}, var, lanes, true, plan.streaming)
        vev.full = ir.Constant(I1, 1)
        if mask is not None:
            vev.lane_mask, vev.full = mask, ir.Constant(I1, 0)
        if stash is not None:
            stash.bind_vector(vev)
        for st in stores:
            vev.vstore(st.buffer, st.index, vev(st.value))
        out = []
        for r, acc, ident in zip(reductions, part, idents, strict=True):
            v = vev.widen(vev(r.value))
            if mask is not None:
                v = b.select(mask, v, ident)
            out.append(combine(r, acc, v))
        if stash is not None:
            stash.keep_vector(vev)
            if mask is None and stash.prefetch is not None:
                _prefetch(stash.prefetch, var, j, PREFETCH_LOCALITY)
        return out

    u = VREDUCE_UNROLL if n >= VREDUCE_UNROLL * lanes else 1
    nred = len(reductions)
    step = u * lanes
    main = n // step * step

    def row(scope: ExprEmitter, flat: list[ir.Value], nxt: ExprEmitter | None
            ) -> list[ir.Value]:
        """One pass of the vector loop from the accumulators `flat` (u parts of nred)."""
        def body(bb: ir.IRBuilder, j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            out = []
            for k in range(u):
                out += vector(scope, b.add(j, _i64(k * lanes)), None,
                              carried[k * nred:(k + 1) * nred], nxt)
            return out

        if main:
            flat = emit_loop(b, _i64(0), _i64(main), body, flat, step=step,
                             name=f"vred{var}")
        last = flat[(u - 1) * nred:]
        for j in range(main, n - n % lanes, lanes):  # what is left of full vectors (unrolled)
            last = vector(scope, _i64(j), None, last, nxt)
        if n % lanes:
            j = n - n % lanes
            mask = b.icmp_signed("<", b.add(vsplat(b, _i64(j), lanes), iota),
                                 vsplat(b, _i64(n), lanes))
            last = vector(scope, _i64(j), mask, last)
        return flat[:(u - 1) * nred] + last

    def nest(scope: ExprEmitter, depth: int, flat: list[ir.Value],
             nxt: ExprEmitter | None = None) -> list[ir.Value]:
        if depth == len(outer):
            return row(scope, flat, nxt)
        name, extent = outer[depth]

        def iteration(bb: ir.IRBuilder, i: ir.Value, carried: list[ir.Value]
                      ) -> list[ir.Value]:
            ahead = scope.child({name: b.add(i, _i64(1))}) \
                if depth == len(outer) - 1 and nxt_rows else None
            return nest(scope.child({name: i}), depth + 1, carried, ahead)

        return emit_loop(b, _i64(0), _i64(extent), iteration, flat, name=f"vrow{name}")

    flat = nest(ev, 0, idents * u)
    parts = [flat[k * nred:(k + 1) * nred] for k in range(u)]
    total = parts[0]
    for p in parts[1:]:
        total = [combine(r, a, c) for r, a, c in zip(reductions, total, p, strict=True)]
    out = []
    for r, acc, v in zip(reductions, accs, total, strict=True):
        one = lane_tree(b, v, lambda lo, hi, r=r: combine(r, lo, hi))
        out.append([combine(r, acc[0], one)])
    return out


def _row_streams(ev: ExprEmitter, var: str, outer: str, reductions, stores) -> list[Load]:
    """The loads of a nested vector reduction that read contiguously along `var` and move
    with the enclosing loop `outer`: what is worth fetching for its next iteration."""
    roots = [r.value for r in reductions] + [st.value for st in stores]
    out = []
    for e in dict.fromkeys(walk(roots)):
        if not isinstance(e, Load) or e.mask:
            continue
        lin = linearize(e.index, ev.buffers[e.buffer].shape)
        lin = ev.rewrite.get(lin, lin)
        if top_coefficient(lin, var) == 1 and top_coefficient(lin, outer) not in (0, None):
            out.append(e)
    return out


def ev_inner(ev: ExprEmitter) -> list[tuple[str, int]]:
    return [(n, e) for n, e in ev.extents.items() if n.startswith("_q")]


# -- stashing expensive values between sweeps ------------------------------------------------

STASH_LIMIT = 16384   # reduce-domain points of a row whose values may be stashed
STASH_MIN_COST = 4    # only values at least this expensive (OP_COST units) are worth it
_EXPENSIVE = {"exp": 4, "log": 4, "log1p": 4, "sigmoid": 4, "tanh": 4, "softplus": 4, "erf": 4,
              "pow": 4, "sin": 4, "cos": 4, "atan": 4, "div": 2, "sqrt": 2, "rsqrt": 2,
              "reciprocal": 2}


@dataclass
class _Stash:
    """A row-sized stack array holding one expression's values from sweep `producer` for the
    later sweeps `consumers` (softmax's exp(x - max), computed once instead of twice)."""

    expr: Expr
    producer: int
    consumers: tuple[int, ...]
    array: ir.Value
    ids: frozenset[int]  # every node of the kernel equal to `expr`


@dataclass
class StashUse:
    """The stashes a sweep fills and the ones it reads."""

    fill: list[_Stash]
    read: list[_Stash]
    prefetch: tuple[ExprEmitter, list[Load]] | None = None  # next row's first-sweep loads

    def bind(self, ev: ExprEmitter) -> None:
        """Seed the innermost scope's memo with the stashed values this sweep reads."""
        b = ev.b
        pos = inner_position(ev)
        for s in self.read:
            value = b.load(b.gep(s.array, [ir.Constant(ir.IntType(32), 0), pos]))
            for i in s.ids:
                ev._expr[i] = value

    def bind_vector(self, ev: VectorEmitter) -> None:
        """Vector version of `bind`: the stash's lanes at the vector loop's positions."""
        for s in self.read:
            ptr = self._vector_ptr(ev, s)
            value = masked_load(ev.b, ptr, ev.lane_mask, ptr.type.pointee)
            for i in s.ids:
                ev._expr[i] = value

    def keep_vector(self, ev: VectorEmitter) -> None:
        for s in self.fill:
            masked_store(ev.b, ev.widen(ev(s.expr)), self._vector_ptr(ev, s), ev.lane_mask)

    @staticmethod
    def _vector_ptr(ev: VectorEmitter, s: _Stash) -> ir.Value:
        b = ev.b
        elem = b.gep(s.array, [ir.Constant(ir.IntType(32), 0), inner_position(ev)])
        return b.bitcast(elem, ir.VectorType(elem.type.pointee, ev.lanes).as_pointer())

    def keep(self, ev: ExprEmitter) -> None:
        b = ev.b
        pos = inner_position(ev)
        for s in self.fill:
            b.store(ev(s.expr), b.gep(s.array, [ir.Constant(ir.IntType(32), 0), pos]))


def store_cost(k: LoopKernel, st) -> int:
    """The cost of a stored value, not counting what an earlier sweep computes already (it is
    stashed when the row is short enough)."""
    earlier: set[Expr] = set()
    for sw in k.sweeps:
        if st in sw.stores:
            break
        roots = [r.value for r in sw.reductions] + [s.value for s in sw.stores]
        earlier |= {x for x in walk(roots) if isinstance(x, Op)}
    if math.prod(k.reduce_domain) > STASH_LIMIT:
        earlier = set()
    return sum(_EXPENSIVE.get(x.op, 0) for x in _walk_until(st.value, earlier)
               if isinstance(x, Op))


def _walk_until(root: Expr, stop: set[Expr]):
    """The nodes under `root`, not descending into (nor yielding) those in `stop`."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        e = todo.pop()
        if id(e) in seen or e in stop:
            continue
        seen.add(id(e))
        yield e
        todo.extend(e.children())


def _cost(e: Expr) -> int:
    return sum(_EXPENSIVE.get(x.op, 0) for x in walk([e]) if isinstance(x, Op))


def plan_stash(k: LoopKernel, ev: ExprEmitter) -> list[_Stash]:
    """Expensive inner-loop values a later sweep recomputes: stash them (row schedule only)."""
    inner = ev_inner(ev)
    points = math.prod(n for _, n in inner)
    if len(k.sweeps) < 2 or not inner or points > STASH_LIMIT:
        return []
    inner_names = {n for n, _ in inner}
    sweep_nodes = []
    for sw in k.sweeps:
        roots = [r.value for r in sw.reductions] + [s.value for s in sw.stores]
        sweep_nodes.append({x for x in walk(roots) if isinstance(x, Op)})
    done: set[Expr] = set()
    out: list[_Stash] = []
    for i, nodes in enumerate(sweep_nodes):
        for e in sorted(nodes, key=lambda x: -sum(1 for _ in walk([x]))):  # parents first
            if e in done or not (ev.deps(e) & inner_names) or _cost(e) < STASH_MIN_COST:
                continue
            refs_ok = all(not x.startswith("$") or _sweep_of(k, x[1:]) < i for x in ev.deps(e))
            later = tuple(j for j in range(i + 1, len(k.sweeps)) if e in sweep_nodes[j])
            if not later or not refs_ok:
                continue
            # keep only maximal expressions: a stashed parent makes its children moot
            done |= set(walk([e]))
            arr = alloca_at_entry(ev.b, ir.ArrayType(compute_type(e.dtype), points),
                                  name="stash")
            ids = frozenset(id(x) for ns in sweep_nodes for x in ns if x == e)
            out.append(_Stash(e, i, later, arr, ids))
    return out


def _sweep_of(k: LoopKernel, name: str) -> int:
    for i, sw in enumerate(k.sweeps):
        if any(r.name == name for r in sw.reductions):
            return i
    return len(k.sweeps)


def inner_position(ev: ExprEmitter) -> ir.Value | None:
    """Row-major position in the reduce domain (argmax's result)."""
    b = ev.b
    pos: ir.Value | None = None
    for name, n in ev_inner(ev):
        v = ev.env.get(name)
        if v is None:
            return None
        pos = v if pos is None else b.add(b.mul(pos, _i64(n)), v)
    return pos if pos is not None else _i64(0)
