"""Staging a transposed operand by register transposes.

Note: when and why
------------------
An operand staged into scratch is written row-major over its staged variables, the innermost
`v` in vectors. When the source holds `v` far apart (weights [O, C, KH, KW] staged with the
output channel innermost, for the channel-lane convolution tiles or a filter-strided
convolution), each vector is a gather of `lanes` elements from as many rows. Where the staged
variables just before `v` run contiguously in the source (C, KH, KW of those weights: one run
of C·KH·KW elements; KH, KW of a transposed kernel: 9), the staging is a batch of 2-D
transposes: `lanes` rows of the run are loaded as whole vectors, transposed in registers
(log2(lanes) rounds of two-source shuffles, each swapping the off-diagonal blocks of one
size) and stored as whole vectors. One thread, 512 x 512 x 3 x 3 f32 weights staged by
channel: gathers 5.9 ms, gathers with the vector blocks outermost 2.7 ms, transposes 1.4 ms
(9.4 MB read and 9.4 MB written, neither fitting in L2). Every vector stored is a whole line
written once, so a large operand (`codegen_gemm.STREAM_STAGED_BYTES`) is written by
non-temporal stores: no read for ownership of the destination. Staged on every call (a
training step's weights, 512 x 512 x 3 x 3, one thread), staging and convolution 7.5 -> 6.7 ms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llvmlite import ir

from .codegen_expr import BufferRef, element_ptr, streaming_store
from .llvm_ir import I32, I64, for_range, llvm_type, masked_load, masked_store, splat, vsplat

if TYPE_CHECKING:
    from .codegen_gemm import Affine, Staged

MIN_RUN = 4  # a shorter contiguous run leaves most of each loaded vector unused


@dataclass(frozen=True)
class TransposePlan:
    buffer: str
    offset: int                     # source position of the all-zero index
    outer: tuple[tuple[str, int, int, int], ...]  # (var, extent, source stride, staged stride)
    run: int                        # elements of the contiguous run
    sign: int                       # 1, or -1 where the run is read backwards (a flipped kernel)
    v_extent: int                   # also the staged stride of one run element
    v_stride: int                   # source stride of v


def transpose_plan(st: Staged, source: Affine | None, shape: Mapping[str, int]
                   ) -> TransposePlan | None:
    """A plan where the staged value is a plain load at the affine position `source` (None:
    it is not), strided along the innermost staged variable, with a contiguous run of at
    least MIN_RUN elements over the variables before it (module note); else None."""
    if source is None or len(st.vars) < 2:
        return None
    coef = source.coef
    v = st.vars[-1]
    if coef.get(v, 0) in (0, 1) or any(n not in st.vars for n in coef):
        return None
    k = len(st.vars) - 2
    sign = coef.get(st.vars[k], 0)
    if sign not in (1, -1):
        return None
    run = 1
    while k >= 0 and coef.get(st.vars[k], 0) == sign * run:
        run *= shape[st.vars[k]]
        k -= 1
    if run < MIN_RUN:
        return None
    staged_stride, outer = shape[v] * run, []
    for var in reversed(st.vars[:k + 1]):
        outer.append((var, shape[var], coef.get(var, 0), staged_stride))
        staged_stride *= shape[var]
    return TransposePlan(source.buffer, source.offset, tuple(reversed(outer)), run, sign,
                         shape[v], coef[v])


def transpose_rows(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The transpose of a lanes x lanes block held as `lanes` vectors: for each block size s,
    rows i and i + s swap their off-diagonal s x s blocks (one shuffle per row)."""
    n = len(rows)
    rows = list(rows)
    s = n // 2
    while s:
        for i in range(n):
            if i & s:
                continue
            a, c = rows[i], rows[i + s]
            lo = [j if not j & s else n + j - s for j in range(n)]
            hi = [j + s if not j & s else n + j for j in range(n)]
            rows[i] = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(I32, n), lo))
            rows[i + s] = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(I32, n), hi))
        s //= 2
    return rows


def emit_transposed(plan: TransposePlan, dtype: str, b: ir.IRBuilder, base: ir.Value,
                    buffers: Mapping[str, BufferRef], lanes: int, stream: bool = False,
                    panel: ir.Value | None = None) -> None:
    """The staging loops of `plan` into `base` (the staged operand's first element); with
    `stream`, full aligned vectors are written by non-temporal stores. With `panel` (the
    first of `lanes` consecutive values of the innermost variable), only that block is
    staged, as a panel `lanes` wide: what one tile of output channels reads."""
    width = plan.v_extent if panel is None else lanes  # staged stride of one run element
    t = llvm_type(dtype)
    vty = ir.VectorType(t, lanes)
    ity = ir.VectorType(I64, lanes)
    iota = ir.Constant(ity, list(range(lanes)))
    src = buffers[plan.buffer]
    align = 4 if dtype == "f32" else 8

    def nest(j: int, src_at: ir.Value, dst_at: ir.Value) -> None:
        if j < len(plan.outer):
            var, extent, s_stride, d_stride = plan.outer[j]
            d_stride = d_stride // plan.v_extent * width
            with for_range(b, ir.Constant(I64, 0), ir.Constant(I64, extent),
                           name=f"stage.t.{var}") as i:
                nest(j + 1, b.add(src_at, b.mul(i, ir.Constant(I64, s_stride))),
                     b.add(dst_at, b.mul(i, ir.Constant(I64, d_stride))))
            return
        if panel is not None:
            runs(src_at, dst_at, panel)
            return
        blocks = -(-plan.v_extent // lanes)
        with for_range(b, ir.Constant(I64, 0), ir.Constant(I64, blocks), name="stage.t.v") as vb:
            runs(src_at, dst_at, b.mul(vb, ir.Constant(I64, lanes)))

    def runs(src_at: ir.Value, dst_at: ir.Value, v0: ir.Value) -> None:
        v_ok = b.icmp_signed("<", b.add(vsplat(b, v0, lanes), iota), splat(ity, plan.v_extent))
        full = plan.run // lanes
        if full:
            with for_range(b, ir.Constant(I64, 0), ir.Constant(I64, full),
                           name="stage.t.run") as rc:
                block(src_at, dst_at, v0, v_ok, b.mul(rc, ir.Constant(I64, lanes)), lanes)
        if plan.run % lanes:
            block(src_at, dst_at, v0, v_ok, ir.Constant(I64, full * lanes), plan.run % lanes)

    def block(src_at, dst_at, v0, v_ok, r0: ir.Value, rows_n: int) -> None:
        """One lanes x lanes block: `rows_n` run elements from r0, channels v0 ... ."""
        # run elements r0 .. r0 + rows_n - 1; read backwards, the vector ending at r0 is
        # loaded (its top rows_n lanes) and its lanes reversed
        backwards = plan.sign < 0
        r_ok = (b.icmp_signed(">=", iota, splat(ity, lanes - rows_n)) if backwards
                else b.icmp_signed("<", iota, splat(ity, rows_n)))
        first = b.sub(ir.Constant(I64, 1 - lanes), r0) if backwards else r0
        flip = ir.Constant(ir.VectorType(I32, lanes), list(range(lanes - 1, -1, -1)))
        rows = []
        for i in range(lanes):
            o = b.add(v0, ir.Constant(I64, i))
            here = b.icmp_signed("<", o, ir.Constant(I64, plan.v_extent))
            mask = b.and_(r_ok, vsplat(b, here, lanes))
            pos = b.add(b.add(src_at, b.mul(o, ir.Constant(I64, plan.v_stride))), first)
            ptr = element_ptr(b, src, pos, inbounds=False)
            row = masked_load(b, b.bitcast(ptr, vty.as_pointer()), mask, vty, align=align)
            rows.append(b.shuffle_vector(row, ir.Constant(vty, None), flip) if backwards
                        else row)
        full = b.icmp_signed("<=", b.add(v0, ir.Constant(I64, lanes)),
                             ir.Constant(I64, plan.v_extent)) if stream else None
        for j, row in enumerate(transpose_rows(b, rows)[:rows_n]):
            at = b.add(b.mul(b.add(r0, ir.Constant(I64, j)), ir.Constant(I64, width)),
                       dst_at if panel is not None else b.add(dst_at, v0))
            ptr = b.bitcast(b.gep(base, [at]), vty.as_pointer())
            if full is not None:
                streaming_store(b, row, ptr, full, v_ok, align)
            else:
                masked_store(b, row, ptr, v_ok, align=align)

    nest(0, ir.Constant(I64, plan.offset), ir.Constant(I64, 0))

