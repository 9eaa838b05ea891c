"""Packing for the generated GEMM (`gemm.py`): copies of A and B blocks into the micro-panel
layouts its microkernels read (A: kb x mr panels, B: kb x nr panels, zero past N), one
specialized path per common operand layout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llvmlite import ir

from .llvm_ir import (
    I32,
    I64,
    VOID,
    ceil_div,
    emit_loop,
    llvm_type,
    masked_load,
    masked_store,
    smin,
    splat,
    vsplat,
)

if TYPE_CHECKING:
    from .gemm import GemmConfig


def _pack_function(module: ir.Module, cfg: GemmConfig, name: str
                   ) -> tuple[ir.Function, ir.IRBuilder]:
    """`void name(i64 kb, i64 count, T* src, i64 stride0, i64 stride1, T* dst)` (internal,
    never inlined, source and destination not aliased) and a builder at its entry."""
    tp = llvm_type(cfg.dtype).as_pointer()
    fn = ir.Function(module, ir.FunctionType(VOID, [I64, I64, tp, I64, I64, tp]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for arg in (fn.args[2], fn.args[5]):
        arg.add_attribute("noalias")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def emit_pack_a(module: ir.Module, cfg: GemmConfig, name: str) -> ir.Function:
    """`pack(kb, mb, A, sa_m, sa_k, Ap)`: A[i, k] (i < mb, k < kb) into micro-panels
    Ap[i / mr][k][i % mr] so the microkernel reads mr consecutive elements per k. Rows past mb
    in the last panel repeat row mb - 1 (never read back). Specialized copies for row-major
    (sa_k == 1: the loop vectorizer turns the mr row streams into interleaved stores) and
    column-major A (sa_m == 1: mr consecutive elements per k)."""
    fn, b = _pack_function(module, cfg, name)
    kb, mb, asrc, sa_m, sa_k, ap = fn.args
    one = ir.Constant(I64, 1)
    mr = ir.Constant(I64, cfg.mr)

    def copy(b: ir.IRBuilder, s_m: ir.Value, s_k: ir.Value) -> None:
        def panel(b: ir.IRBuilder, p: ir.Value, _c: list) -> list:
            rows = [b.gep(asrc, [b.mul(smin(b, b.add(b.mul(p, mr), ir.Constant(I64, i)),
                                           b.sub(mb, one)), s_m)]) for i in range(cfg.mr)]
            dst = b.gep(ap, [b.mul(b.mul(p, mr), kb)])

            def col(b: ir.IRBuilder, kk: ir.Value, _c: list) -> list:
                out = b.gep(dst, [b.mul(kk, mr)])
                for i, row in enumerate(rows):
                    v = b.load(b.gep(row, [b.mul(kk, s_k)]))
                    b.store(v, b.gep(out, [ir.Constant(I64, i)]))
                return []

            emit_loop(b, ir.Constant(I64, 0), kb, col, name="acol")
            return []

        emit_loop(b, ir.Constant(I64, 0), ceil_div(b, mb, cfg.mr), panel, name="apanel")

    row_major = b.icmp_signed("==", sa_k, one)
    with b.if_else(row_major) as (then, otherwise):
        with then:
            copy(b, sa_m, one)
        with otherwise:
            col_major = b.icmp_signed("==", sa_m, one)
            with b.if_else(col_major) as (then2, general):
                with then2:
                    _emit_pack_a_col_major(b, cfg, kb, mb, asrc, sa_k, ap)
                with general:
                    copy(b, sa_m, sa_k)
    b.ret_void()
    return fn


def _emit_pack_a_col_major(b: ir.IRBuilder, cfg: GemmConfig, kb: ir.Value, mb: ir.Value,
                           asrc: ir.Value, sa_k: ir.Value, ap: ir.Value) -> None:
    """A stored [K, M]: k outermost, so each k reads one contiguous run of mb elements (the
    panel-major order would touch a new page per k, once per panel), and each panel's mr
    elements move as one masked vector load and store."""
    t = llvm_type(cfg.dtype)
    width = 1 << (cfg.mr - 1).bit_length()  # mr rounded up to a power of two
    vty = ir.VectorType(t, width)
    mr = ir.Constant(I64, cfg.mr)
    panel_stride = b.mul(mr, kb)
    npanels = ceil_div(b, mb, cfg.mr)
    iota = ir.Constant(ir.VectorType(I64, width), list(range(width)))

    def krow(b: ir.IRBuilder, kk: ir.Value, _c: list) -> list:
        src = b.gep(asrc, [b.mul(kk, sa_k)])
        dst = b.gep(ap, [b.mul(kk, mr)])

        def panel(b: ir.IRBuilder, p: ir.Value, _c: list) -> list:
            r0 = b.mul(p, mr)
            rows = smin(b, mr, b.sub(mb, r0))  # the last panel may be partial
            mask = b.icmp_signed("<", iota, vsplat(b, rows, width))
            v = masked_load(b, b.bitcast(b.gep(src, [r0]), vty.as_pointer()), mask, vty)
            masked_store(b, v, b.bitcast(b.gep(dst, [b.mul(p, panel_stride)]), vty.as_pointer()),
                         mask)
            return []

        emit_loop(b, ir.Constant(I64, 0), npanels, panel, name="apanel")
        return []

    emit_loop(b, ir.Constant(I64, 0), kb, krow, name="ak")


def emit_pack_b(module: ir.Module, cfg: GemmConfig, name: str) -> ir.Function:
    """`pack(kb, nb, B, sb_k, sb_n, Bp)`: B[k, j] (k < kb, j < nb) into micro-panels
    Bp[j / nr][k][j % nr], zero past nb. Vector rows when sb_n == 1, scalar gathers otherwise
    (B stored [N, K] reads contiguously along k in the inner loop)."""
    t = llvm_type(cfg.dtype)
    fn, b = _pack_function(module, cfg, name)
    kb, nb, bsrc, sb_k, sb_n, bp = fn.args
    npanels = ceil_div(b, nb, cfg.nr)
    nr = ir.Constant(I64, cfg.nr)
    vty = ir.VectorType(t, cfg.lanes)
    align = cfg.lanes * cfg.elem_bytes
    iota = ir.Constant(ir.VectorType(I64, cfg.lanes), list(range(cfg.lanes)))
    unit = b.icmp_signed("==", sb_n, ir.Constant(I64, 1))
    with b.if_else(unit) as (contiguous, strided):
        with contiguous:
            def row(b: ir.IRBuilder, jp: ir.Value, _c: list, kk: ir.Value) -> list:
                col0 = b.mul(jp, nr)
                src = b.gep(bsrc, [b.add(b.mul(kk, sb_k), col0)])
                dst = b.gep(bp, [b.add(b.mul(col0, kb), b.mul(kk, nr))])
                for j in range(cfg.nv):
                    left = b.sub(nb, b.add(col0, ir.Constant(I64, j * cfg.lanes)))
                    mask = b.icmp_signed("<", iota, vsplat(b, left, cfg.lanes))
                    v = masked_load(b, b.bitcast(b.gep(src, [ir.Constant(I64, j * cfg.lanes)]),
                                                 vty.as_pointer()), mask, vty)
                    b.store(v, b.bitcast(b.gep(dst, [ir.Constant(I64, j * cfg.lanes)]),
                                         vty.as_pointer()), align=align)
                return []

            # Row by row (each source row read front to back), every panel's row in turn:
            # walking one panel down all k rows first would start a new page per row, out of
            # reach of the hardware prefetcher.
            def krow(b: ir.IRBuilder, kk: ir.Value, _c: list) -> list:
                emit_loop(b, ir.Constant(I64, 0), npanels, lambda b, jp, c: row(b, jp, c, kk),
                          name="panel")
                return []

            emit_loop(b, ir.Constant(I64, 0), kb, krow, name="krow")
        with strided:
            unit_k = b.icmp_signed("==", sb_k, ir.Constant(I64, 1))
            with b.if_else(unit_k) as (transposed, general):
                with transposed:
                    _emit_pack_b_transposed(b, cfg, kb, nb, bsrc, sb_n, bp)
                with general:
                    _emit_pack_b_strided(b, cfg, kb, nb, bsrc, sb_k, sb_n, bp)
    b.ret_void()
    return fn


def _emit_pack_b_strided(b: ir.IRBuilder, cfg: GemmConfig, kb: ir.Value, nb: ir.Value,
                         bsrc: ir.Value, sb_k: ir.Value, sb_n: ir.Value, bp: ir.Value) -> None:
    """Any strides: one column at a time (reads contiguous along k when sb_k == 1)."""
    t = llvm_type(cfg.dtype)
    nr = ir.Constant(I64, cfg.nr)
    npanels = ceil_div(b, nb, cfg.nr)

    def column(b: ir.IRBuilder, j: ir.Value, _c: list) -> list:
        jp = b.sdiv(j, nr)
        jj = b.srem(j, nr)
        base = b.gep(bp, [b.add(b.mul(b.mul(jp, nr), kb), jj)])
        valid = b.icmp_signed("<", j, nb)
        src = b.gep(bsrc, [b.mul(smin(b, j, b.sub(nb, ir.Constant(I64, 1))), sb_n)])

        def elem(b: ir.IRBuilder, kk: ir.Value, _c: list) -> list:
            v = b.load(b.gep(src, [b.mul(kk, sb_k)]))
            b.store(b.select(valid, v, ir.Constant(t, 0.0)), b.gep(base, [b.mul(kk, nr)]))
            return []

        emit_loop(b, ir.Constant(I64, 0), kb, elem, name="kcol")
        return []

    emit_loop(b, ir.Constant(I64, 0), b.mul(npanels, nr), column, name="col")


def _emit_pack_b_transposed(b: ir.IRBuilder, cfg: GemmConfig, kb: ir.Value, nb: ir.Value,
                            bsrc: ir.Value, sb_n: ir.Value, bp: ir.Value) -> None:
    """B stored [N, K] (sb_k == 1): lanes x lanes blocks loaded along k from `lanes` columns,
    transposed in registers (log2(lanes) rounds of two-source shuffles), stored as rows of the
    micro-panel. The k tail (kb % lanes) is copied element by element."""
    t = llvm_type(cfg.dtype)
    lanes = cfg.lanes
    vty = ir.VectorType(t, lanes)
    align = lanes * cfg.elem_bytes
    nr = ir.Constant(I64, cfg.nr)
    ln = ir.Constant(I64, lanes)
    zero_v = splat(vty, 0.0)
    ngroups = b.mul(ceil_div(b, nb, cfg.nr), ir.Constant(I64, cfg.nv))
    kmain = b.mul(b.sdiv(kb, ln), ln)

    def group(b: ir.IRBuilder, g: ir.Value, _c: list) -> list:
        col0 = b.mul(g, ln)
        dst = b.gep(bp, [b.add(b.mul(b.mul(b.sdiv(g, ir.Constant(I64, cfg.nv)), nr), kb),
                               b.mul(b.srem(g, ir.Constant(I64, cfg.nv)), ln))])
        last_col = b.sub(nb, ir.Constant(I64, 1))
        cols = [b.add(col0, ir.Constant(I64, i)) for i in range(lanes)]
        valid = [b.icmp_signed("<", c, nb) for c in cols]
        srcs = [b.gep(bsrc, [b.mul(smin(b, c, last_col), sb_n)]) for c in cols]

        def block(b: ir.IRBuilder, k0: ir.Value, _c: list) -> list:
            rows = [b.select(ok, b.load(b.bitcast(b.gep(src, [k0]), vty.as_pointer()), align=4),
                             zero_v) for src, ok in zip(srcs, valid, strict=True)]
            for r, v in enumerate(_transpose(b, rows)):
                out = b.gep(dst, [b.mul(b.add(k0, ir.Constant(I64, r)), nr)])
                b.store(v, b.bitcast(out, vty.as_pointer()), align=align)
            return []

        emit_loop(b, ir.Constant(I64, 0), kmain, block, step=lanes, name="kblk")

        def tail(b: ir.IRBuilder, kk: ir.Value, _c: list) -> list:
            for i, (src, ok) in enumerate(zip(srcs, valid, strict=True)):
                v = b.select(ok, b.load(b.gep(src, [kk])), ir.Constant(t, 0.0))
                b.store(v, b.gep(dst, [b.add(b.mul(kk, nr), ir.Constant(I64, i))]))
            return []

        emit_loop(b, kmain, kb, tail, name="ktail")
        return []

    emit_loop(b, ir.Constant(I64, 0), ngroups, group, name="cgroup")


def _transpose(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose a square block held as `lanes` vectors: log2(lanes) rounds of zipping row i
    with row i + lanes/2 (low halves into row 2i, high halves into row 2i + 1)."""
    n = len(rows)
    h = n // 2
    lo_mask = ir.Constant(ir.VectorType(I32, n), [x for i in range(h) for x in (i, n + i)])
    hi_mask = ir.Constant(ir.VectorType(I32, n), [x for i in range(h, n) for x in (i, n + i)])
    for _ in range(n.bit_length() - 1):
        new = []
        for i in range(h):
            new += [b.shuffle_vector(rows[i], rows[i + h], lo_mask),
                    b.shuffle_vector(rows[i], rows[i + h], hi_mask)]
        rows = new
    return rows
