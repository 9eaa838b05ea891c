"""The max-pool gradient (`select_scatter`) of windows two columns wide that tile the plane
exactly (stride = window, no padding: the usual 2x2 max pool), in explicit vector IR.

Note: one band of rows at a time
--------------------------------
A band is the wh input rows under one row of windows. Each row of the band is loaded in
vectors of `lanes` columns; lanes 2j and 2j + 1 hold one window's columns. The window maximum
is the elementwise maximum of the band's rows (NaN propagates), then of each lane and its
partner (a lane swap). Row by row, a lane is the window's first maximum when it equals the
maximum, no earlier row of its window had one, and for an odd lane, its even partner in the
same row is not one (row-major order within the window, as the reference). Selected lanes take
the cotangent of their window (the cotangent row loaded once, each value spread to two lanes),
the others 0, and every element is stored exactly once: no zeroing, no read back. A NaN
maximum equals nothing, so its window stores zeros, as in the reference. Masked loads and
stores cover rows that are not a whole number of vectors.

Pair logic runs on the lane masks as integers (a bit shift swaps partners): as vector mask
shuffles it took three instructions a swap. The maximum is a compare and select per row, and
a NaN anywhere in a window marks the window taken up front.

One thread, against the unrolled scalar windows of `codegen_library._WindowPlane`: the demo
CNN's 32 x 8 x 8 x 8 gradient 13.4 -> 4.2 µs inside its training step (25 -> 11.5 µs as a graph
of its own, call included); 32 x 16 x 32 x 32, memory-bound, level (99 against 102 µs).
"""

from __future__ import annotations

from llvmlite import ir

from .codegen_expr import BufferRef, element_ptr
from .llvm_ir import I1, I32, I64, for_range, masked_load, masked_store

MAX_BAND = 4  # window heights handled (rows per band)


def pair_windows_apply(xs, ss, window, strides, pads, dtype: str) -> bool:
    """Whether the plane (the axes with a window: one or two) of a `dtype` select_scatter
    takes the vector form."""
    if dtype not in ("f32", "f64") or len(xs) not in (1, 2):
        return False
    if window[-1] != 2 or (len(xs) == 2 and window[0] > MAX_BAND):
        return False
    return all(w == st and p == (0, 0) and o * w == n
               for n, o, w, st, p in zip(xs, ss, window, strides, pads, strict=True))


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def emit_pair_windows(b: ir.IRBuilder, X: BufferRef, S: BufferRef, OUT: BufferRef,
                      xbase: ir.Value, sbase: ir.Value, xs, ss, window, ty: ir.Type) -> None:
    """One plane at xbase (input and output) and sbase (cotangent), band by band."""
    lanes = 16 if isinstance(ty, ir.FloatType) else 8
    vty = ir.VectorType(ty, lanes)
    mty = ir.VectorType(I1, lanes)
    width, out_w = xs[-1], ss[-1]
    band = window[0] if len(xs) == 2 else 1
    bands = ss[0] if len(xs) == 2 else 1
    swap = ir.Constant(ir.VectorType(I32, lanes), [j ^ 1 for j in range(lanes)])
    spread = ir.Constant(ir.VectorType(I32, lanes), [j // 2 for j in range(lanes)])
    # lane masks as integers: pair logic in scalar bit operations, not vector mask shuffles
    ity = ir.IntType(lanes)
    even = ir.Constant(ity, int("01" * (lanes // 2), 2))
    one = ir.Constant(ity, 1)
    zero = ir.Constant(vty, [0.0] * lanes)
    align = 4 if isinstance(ty, ir.FloatType) else 8

    def ptr(ref: BufferRef, pos: ir.Value) -> ir.Value:
        return b.bitcast(element_ptr(b, ref, pos, inbounds=False), vty.as_pointer())

    def bits(m: ir.Value) -> ir.Value:
        return b.bitcast(m, ity)

    def both(m: ir.Value) -> ir.Value:
        """m with each lane pair's bits or-ed into both."""
        return b.or_(m, b.or_(b.shl(b.and_(m, even), one), b.and_(b.lshr(m, one), even)))

    def chunk(row0: ir.Value, srow: ir.Value, c0: ir.Value, valid: int) -> None:
        """Columns c0 .. c0 + valid - 1 of the band starting at row0 (valid: a multiple of
        2, at most lanes)."""
        mask = ir.Constant(mty, [int(j < valid) for j in range(lanes)])
        half = ir.Constant(mty, [int(j < valid // 2) for j in range(lanes)])
        rows = [masked_load(b, ptr(X, b.add(row0, b.add(c0, _i64(r * width)))), mask, vty,
                            align=align) for r in range(band)]

        def larger(u: ir.Value, v: ir.Value) -> ir.Value:  # NaN handled apart
            return b.select(b.fcmp_ordered(">", v, u), v, u)

        best = rows[0]
        for v in rows[1:]:
            best = larger(best, v)
        best = larger(best, b.shuffle_vector(best, best, swap))
        # a window holding a NaN counts as taken: its maximum is NaN, which equals nothing
        nan = bits(b.fcmp_unordered("uno", rows[0], rows[0]))
        for v in rows[1:]:
            nan = b.or_(nan, bits(b.fcmp_unordered("uno", v, v)))
        taken = both(nan)
        g = masked_load(b, ptr(S, b.add(srow, b.udiv(c0, _i64(2)))), half, vty, align=align)
        g = b.shuffle_vector(g, g, spread)
        for r, v in enumerate(rows):
            hit = b.and_(bits(b.fcmp_ordered("==", v, best)), b.not_(taken))
            first = b.and_(hit, b.not_(b.shl(b.and_(hit, even), one)))
            taken = b.or_(taken, both(hit))
            masked_store(b, b.select(b.bitcast(first, mty), g, zero),
                         ptr(OUT, b.add(row0, b.add(c0, _i64(r * width)))), mask, align=align)

    full, tail = divmod(width, lanes)
    with for_range(b, _i64(0), _i64(bands), name="band") as oy:
        row0 = b.add(xbase, b.mul(oy, _i64(band * width)))
        srow = b.add(sbase, b.mul(oy, _i64(out_w)))
        if full:
            with for_range(b, _i64(0), _i64(full * lanes), step=lanes, name="cols") as c0:
                chunk(row0, srow, c0, lanes)
        if tail:
            chunk(row0, srow, _i64(full * lanes), tail)

