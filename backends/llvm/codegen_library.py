"""Library kernels: `take`, `scatter_add` and `select_scatter`, each computed as a whole with the
graph op's exact semantics.

Note: indices are data
----------------------
`take` and `scatter_add` read their indices at run time. A valid index lies in [-n, n) (negative
counts from the end); any other index writes nothing out of bounds: the kernel records an error
(`KernelEnv.fail`, with the offending value) and the call raises a GraphError naming the op, the
index, the axis and the operand shape, as the reference does.

Parallelism never changes results: `take` splits its rows, `scatter_add` splits the operand's
independent parts (the axes before `axis`, and blocks of the axes after it) so duplicate
indices still accumulate in index order within one task, and `select_scatter` splits the
leading axes whose window is 1 (batch and channels of a pooling gradient), where windows
cannot overlap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from llvmlite import ir

from graphc.ir.errors import GraphError
from graphc.ir.kernel import Buffer, LibraryKernel

from .codegen import KernelCode, KernelEnv
from .codegen_expr import load_element, store_element
from .codegen_loop import CHUNK_WORK, PARALLEL_WORK
from .codegen_pool_grad import emit_pair_windows, pair_windows_apply
from .llvm_ir import I1, I64, alloca_at_entry, for_range, intrinsic, smin
from .lowering import cast_value, compute_type

POST_BLOCK = 256


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def library_code(k: LibraryKernel, buffers: Mapping[str, Buffer]) -> KernelCode:
    attrs = dict(k.attrs)
    shapes = {n: buffers[n].type.shape for n in (*k.inputs, k.output)}
    names = tuple(dict.fromkeys((*k.inputs, k.output)))
    if k.op == "take":
        return _take_code(k, attrs, shapes, names)
    if k.op == "scatter_add":
        return _scatter_add_code(k, attrs, shapes, names)
    if k.op == "select_scatter":
        return _select_scatter_code(k, attrs, shapes, names, buffers[k.inputs[0]].type.dtype)
    raise GraphError(f"the LLVM backend has no library kernel for op {k.op!r} ({k.name})")


def _normalized_index(env: KernelEnv, idx_ref, j: ir.Value, n: int, which: int
                      ) -> tuple[ir.Value, ir.Value]:
    """(valid, index in [0, n)) of index element j; records error `which` when invalid."""
    b = env.builder
    raw = cast_value(b, load_element(b, idx_ref, j), idx_ref.dtype, "i64")
    neg = b.icmp_signed("<", raw, _i64(0))
    v = b.select(neg, b.add(raw, _i64(n)), raw)
    ok = b.and_(b.icmp_signed(">=", v, _i64(0)), b.icmp_signed("<", v, _i64(n)))
    with b.if_then(b.not_(ok), likely=False):
        env.fail(which, raw, j)
    return ok, b.select(ok, v, _i64(0))


def _range_message(op: str, n: int, axis: int, shape, index_shape) -> dict[str, Any]:
    return {"message": f"{op}: index {{value}} (at index position {{position}}) is out of range "
                       f"[{-n}, {n}) for axis {axis} of operand shape {tuple(shape)}",
            "index_shape": list(index_shape)}


# -- take -----------------------------------------------------------------------------------------


def _take_code(k: LibraryKernel, attrs: dict[str, Any], shapes, buffers) -> KernelCode:
    x, idx = k.inputs
    axis = attrs["axis"]
    xs = shapes[x]
    pre, n, post = math.prod(xs[:axis]), xs[axis], math.prod(xs[axis + 1:])
    ni = math.prod(shapes[idx])
    tasks = pre * ni

    def emit(env: KernelEnv) -> None:
        b = env.builder
        X, IDX, OUT = env.buffers[x], env.buffers[idx], env.buffers[k.output]
        with for_range(b, env.lo, env.hi, name="row") as t:
            i, j = b.udiv(t, _i64(ni)), b.urem(t, _i64(ni))
            ok, v = _normalized_index(env, IDX, j, n, 0)
            src = b.mul(b.add(b.mul(i, _i64(n)), v), _i64(post))
            dst = b.mul(t, _i64(post))
            zero = cast_value(b, ir.Constant(I64, 0), "i64", X.dtype)
            with for_range(b, _i64(0), _i64(post), name="col") as c:
                val = load_element(b, X, b.add(src, c))
                store_element(b, OUT, b.add(dst, c), b.select(ok, val, zero))

    grain = max(1, -(-CHUNK_WORK // max(post, 1)))
    return KernelCode(buffers, tasks if post else 0, grain,
                      tasks * post >= PARALLEL_WORK and tasks > grain, emit,
                      errors=(_range_message("take", n, axis, xs, shapes[idx]),))


# -- scatter_add ----------------------------------------------------------------------------------


def _scatter_add_code(k: LibraryKernel, attrs: dict[str, Any], shapes, buffers) -> KernelCode:
    x, idx, upd = k.inputs
    axis = attrs["axis"]
    xs = shapes[x]
    pre, n, post = math.prod(xs[:axis]), xs[axis], math.prod(xs[axis + 1:])
    ni = math.prod(shapes[idx])
    pb = min(post, POST_BLOCK) if post else 1
    nblk = -(-post // pb) if post else 0
    tasks = pre * nblk

    def emit(env: KernelEnv) -> None:
        b = env.builder
        X, IDX, U, OUT = (env.buffers[x], env.buffers[idx], env.buffers[upd],
                          env.buffers[k.output])
        in_place = X.ptr is OUT.ptr
        with for_range(b, env.lo, env.hi, name="part") as t:
            i, blk = b.udiv(t, _i64(nblk)), b.urem(t, _i64(nblk))
            c0 = b.mul(blk, _i64(pb))
            c1 = smin(b, b.add(c0, _i64(pb)), _i64(post))
            if not in_place:
                with for_range(b, _i64(0), _i64(n), name="copy") as r:
                    base = b.mul(b.add(b.mul(i, _i64(n)), r), _i64(post))
                    with for_range(b, c0, c1, name="copycol") as c:
                        pos = b.add(base, c)
                        store_element(b, OUT, pos, load_element(b, X, pos))
            with for_range(b, _i64(0), _i64(ni), name="upd") as j:
                ok, v = _normalized_index(env, IDX, j, n, 0)
                with b.if_then(ok):
                    dst = b.mul(b.add(b.mul(i, _i64(n)), v), _i64(post))
                    src = b.mul(b.add(b.mul(i, _i64(ni)), j), _i64(post))
                    with for_range(b, c0, c1, name="col") as c:
                        d = b.add(dst, c)
                        s = load_element(b, OUT, d)
                        u = load_element(b, U, b.add(src, c))
                        total = b.fadd(s, u) if _is_float(s) else b.add(s, u)
                        store_element(b, OUT, d, total)

    work = pre * post * (n + ni)
    grain = max(1, -(-CHUNK_WORK // max(1, pb * (n + ni))))
    return KernelCode(buffers, tasks, grain, work >= PARALLEL_WORK and tasks > grain, emit,
                      errors=(_range_message("scatter_add", n, axis, xs, shapes[idx]),))


def _is_float(v: ir.Value) -> bool:
    return isinstance(v.type, (ir.FloatType, ir.DoubleType))


# -- select_scatter -------------------------------------------------------------------------------


def _select_scatter_code(k: LibraryKernel, attrs: dict[str, Any], shapes, buffers,
                         dtype: str) -> KernelCode:
    x, src = k.inputs
    xs, ss = shapes[x], shapes[src]
    window, strides = attrs["window"], attrs["strides"]
    pads = list(zip(attrs["padding"][0::2], attrs["padding"][1::2], strict=True))
    lead = 0
    while (lead < len(xs) and window[lead] == 1 and strides[lead] == 1
           and pads[lead] == (0, 0)):
        lead += 1
    tasks = math.prod(xs[:lead])
    plane_x, plane_s = math.prod(xs[lead:]), math.prod(ss[lead:])
    wsize = math.prod(window[lead:])

    geometry = _WindowPlane(xs[lead:], ss[lead:], window[lead:], strides[lead:], pads[lead:])
    pairs = pair_windows_apply(xs[lead:], ss[lead:], window[lead:], strides[lead:], pads[lead:],
                               dtype)
    form = "pairs" if pairs else "unrolled" if wsize <= UNROLL_WINDOW else "loop"

    def emit(env: KernelEnv) -> None:
        b = env.builder
        X, S, OUT = env.buffers[x], env.buffers[src], env.buffers[k.output]
        ty = compute_type(X.dtype)
        zero = ir.Constant(ty, 0.0) if _is_float_type(ty) else ir.Constant(ty, 0)
        unrolled = form == "unrolled"
        if unrolled and geometry.short_rows:
            b.function.attributes.add("noimplicitfloat")  # no SLP: see _WindowPlane
        with for_range(b, env.lo, env.hi, name="plane") as t:
            xbase, sbase = b.mul(t, _i64(plane_x)), b.mul(t, _i64(plane_s))
            if pairs:  # windows two columns wide tiling the plane: vector bands
                emit_pair_windows(b, X, S, OUT, xbase, sbase, xs[lead:], ss[lead:],
                                  window[lead:], ty)
            elif unrolled:
                if not geometry.exact_cover:
                    _zero_plane(b, OUT, xbase, plane_x, zero)
                geometry.emit_windows(b, X, S, OUT, xbase, sbase, ty, zero)
            else:
                _zero_plane(b, OUT, xbase, plane_x, zero)
                geometry.emit_window_loop(b, X, S, OUT, xbase, sbase, ty)

    work = tasks * (plane_x + plane_s * wsize * 2)
    grain = max(1, -(-CHUNK_WORK // max(1, plane_x + plane_s * wsize * 2)))
    return KernelCode(buffers, tasks if plane_s or plane_x else 0, grain,
                      work >= PARALLEL_WORK and tasks > grain, emit,
                      notes={"windows": form})


def _zero_plane(b: ir.IRBuilder, OUT, xbase: ir.Value, size: int, zero: ir.Value) -> None:
    with for_range(b, _i64(0), _i64(size), name="zero") as e:
        store_element(b, OUT, b.add(xbase, e), zero)


# Windows of at most this many elements take `_WindowPlane`'s unrolled, branch-free code.
UNROLL_WINDOW = 32
VECTOR_ROW = 16


class _WindowPlane:
    """One plane of a select_scatter (the axes with a window), emitted window by window. Windows
    of up to UNROLL_WINDOW elements have their offsets unrolled into constants and no branch on
    the data (larger ones loop over their offsets, `emit_window_loop`): which element
    is a window's maximum is data, and the loop form's branches on it mispredicted about
    once per window (a 2x2 max-pool gradient of 32 x 8 x 8 x 8: 40 us, now a few). The
    innermost loop runs along the last output axis, so windows that tile the plane exactly
    (stride = window, no padding) store every element once, with no zeroing or read back;
    the others add into a zeroed plane.

    With at least VECTOR_ROW windows along the last axis LLVM vectorizes that loop (strided
    loads as shuffles: 32 x 16 x 32 x 32, 2x2 windows: 660 -> 82 us); shorter loops it unrolls
    whole and the SLP vectorizer turns them into gathers and scatters, slower than scalar code
    (32 x 8 x 8 x 8: 28 against 18 us; even at 8 windows per row), so those kernels get none.
    Float windows two columns wide that tile the plane take the vector bands of
    `codegen_pool_grad` instead.
    """

    def __init__(self, xs, ss, window, strides, pads) -> None:
        self.xs, self.ss, self.window, self.strides, self.pads = xs, ss, window, strides, pads
        self.exact_cover = all(w == st and p == (0, 0) and o * w == n for n, o, w, st, p in
                               zip(xs, ss, window, strides, pads, strict=True))
        self.short_rows = not ss or ss[-1] < VECTOR_ROW
        self.offsets = list(itertools.product(*(range(w) for w in window)))

    def emit_windows(self, b: ir.IRBuilder, X, S, OUT, xbase: ir.Value, sbase: ir.Value,
                     ty: ir.Type, zero: ir.Value) -> None:
        def loops(axis: int, pos: list[ir.Value]) -> None:
            if axis == len(self.ss):
                self._window(b, X, S, OUT, xbase, sbase, pos, ty, zero)
                return
            with for_range(b, _i64(0), _i64(self.ss[axis]), name=f"win{axis}") as o:
                loops(axis + 1, [*pos, o])

        loops(0, [])

    def emit_window_loop(self, b: ir.IRBuilder, X, S, OUT, xbase: ir.Value, sbase: ir.Value,
                         ty: ir.Type) -> None:
        """Windows too large to unroll: a loop over each window's offsets (branching)."""
        wsize = math.prod(self.window)
        with for_range(b, _i64(0), _i64(math.prod(self.ss)), name="win") as w:
            pos = _unravel(b, w, self.ss)

            def element(off: ir.Value) -> tuple[ir.Value, ir.Value]:
                ok, lin = self.element(b, pos, _unravel(b, off, self.window))
                return (ir.Constant(I1, 1) if ok is None else ok), lin

            best = _window_max(b, X, xbase, wsize, element, ty)
            _add_at_first_max(b, X, S, OUT, xbase, b.add(sbase, w), wsize, element, best)

    def element(self, b: ir.IRBuilder, pos: list[ir.Value], off: Sequence[ir.Value | int]
                ) -> tuple[ir.Value | None, ir.Value]:
        """(valid or None when always valid, linear position in the plane, clamped to 0
        outside) of window offset `off` of the window at output position `pos`."""
        ok: ir.Value | None = None
        lin: ir.Value = _i64(0)
        for o, d, n, st, (lo, hi) in zip(pos, off, self.xs, self.strides, self.pads,
                                         strict=True):
            d = _i64(d) if isinstance(d, int) else d
            c = b.sub(b.add(b.mul(o, _i64(st)), d), _i64(lo))
            if lo or hi:
                inside = b.and_(b.icmp_signed(">=", c, _i64(0)), b.icmp_signed("<", c, _i64(n)))
                ok = inside if ok is None else b.and_(ok, inside)
            lin = b.add(b.mul(lin, _i64(n)), c if ok is None else b.select(ok, c, _i64(0)))
        return ok, lin

    def _window(self, b: ir.IRBuilder, X, S, OUT, xbase, sbase, pos, ty, zero) -> None:
        is_float = _is_float_type(ty)
        lowest = ir.Constant(ty, float("-inf")) if is_float else \
            ir.Constant(ty, -(1 << (ty.width - 1)))
        elems = [self.element(b, pos, off) for off in self.offsets]
        vals = []
        best: ir.Value = lowest
        for ok, lin in elems:
            v = load_element(b, X, b.add(xbase, lin))
            if ok is not None:
                v = b.select(ok, v, lowest)
            vals.append(v)
            # A NaN becomes the maximum and stays (nothing is greater than it): then nothing
            # equals it and the window adds nothing, as in the reference. (llvm.maximum's
            # sign-of-zero order does not matter: -0 == +0 picks the first of them anyway.)
            more = b.or_(b.fcmp_ordered(">", v, best), b.fcmp_unordered("!=", v, v)) \
                if is_float else b.icmp_signed(">", v, best)
            best = b.select(more, v, best)
        s = load_element(b, S, b.add(sbase, _linear_of(b, pos, self.ss)))
        done: ir.Value = ir.Constant(I1, 0)
        for (ok, lin), v in zip(elems, vals, strict=True):
            hit = b.fcmp_ordered("==", v, best) if is_float else b.icmp_signed("==", v, best)
            if ok is not None:
                hit = b.and_(hit, ok)
            hit = b.and_(hit, b.not_(done))
            done = b.or_(done, hit)
            at = b.add(xbase, lin)
            if self.exact_cover:
                store_element(b, OUT, at, b.select(hit, s, zero))
                continue
            cur = load_element(b, OUT, at)
            new = b.fadd(cur, s) if is_float else b.add(cur, s)
            store_element(b, OUT, at, b.select(hit, new, cur))


def _linear_of(b: ir.IRBuilder, pos: list[ir.Value], shape) -> ir.Value:
    """Row-major linear index of position `pos` in `shape`."""
    lin: ir.Value = _i64(0)
    for p, n in zip(pos, shape, strict=True):
        lin = b.add(b.mul(lin, _i64(n)), p)
    return lin


def _is_float_type(ty: ir.Type) -> bool:
    return isinstance(ty, (ir.FloatType, ir.DoubleType))


def _unravel(b: ir.IRBuilder, linear: ir.Value, shape) -> list[ir.Value]:
    out = []
    for pos in range(len(shape) - 1, -1, -1):
        out.append(b.urem(linear, _i64(shape[pos])) if pos else linear)
        linear = b.udiv(linear, _i64(shape[pos])) if pos else linear
    return out[::-1]


def _window_max(b: ir.IRBuilder, X, xbase, wsize: int, element, ty: ir.Type) -> ir.Value:
    """Max of the valid window elements (NaN propagates); the lowest value when none is."""
    lowest = ir.Constant(ty, float("-inf")) if _is_float_type(ty) else \
        ir.Constant(ty, -(1 << (ty.width - 1)))
    slot = alloca_at_entry(b, ty, name="best")
    b.store(lowest, slot)
    with for_range(b, _i64(0), _i64(wsize), name="max") as off:
        ok, lin = element(off)
        with b.if_then(ok):
            v = load_element(b, X, b.add(xbase, lin))
            fn = intrinsic(b.module, "llvm.maximum" if _is_float_type(ty) else "llvm.smax", ty)
            b.store(b.call(fn, [b.load(slot), v]), slot)
    return b.load(slot)


def _add_at_first_max(b: ir.IRBuilder, X, S, OUT, xbase, spos, wsize: int, element,
                      best: ir.Value) -> None:
    """Add src at the first valid window element equal to `best` (none if NaN)."""
    done = alloca_at_entry(b, I1, name="done")
    b.store(ir.Constant(I1, 0), done)
    with for_range(b, _i64(0), _i64(wsize), name="first") as off:
        ok, lin = element(off)
        with b.if_then(b.and_(ok, b.not_(b.load(done)))):
            pos = b.add(xbase, lin)
            v = load_element(b, X, pos)
            hit = b.fcmp_ordered("==", v, best) if _is_float_type(v.type) else \
                b.icmp_signed("==", v, best)
            with b.if_then(hit):
                s = load_element(b, S, spos)
                cur = load_element(b, OUT, pos)
                store_element(b, OUT, pos, b.fadd(cur, s) if _is_float_type(s.type)
                              else b.add(cur, s))
                b.store(ir.Constant(I1, 1), done)

