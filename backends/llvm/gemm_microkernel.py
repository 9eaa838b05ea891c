"""The GEMM's microkernels (`gemm.py` drives them): one register tile of C from a K block of
packed (or in-place) A and B, the variants they are specialized into, and the epilogue
interface through which fused kernel-IR epilogues reach the tile.

Note: microkernel variants
--------------------------
Full row tiles, nearly all of the work, run microkernels specialized at compile time
(`Variant`) and chosen per call: packed A has the constant strides (1, mr), so the k loop
broadcasts from fixed offsets instead of bumping a pointer per row; a panel with all nr
columns present loads B with plain vector loads, where a masked load would take a vector ALU
slot that the FMAs need (one thread, 1024^3: +10 %), and so does every panel of packed B,
whose columns past N hold zeros (N = 10, 40, 120, 250: 4-8 %); the k loop runs `unroll_k`
steps per iteration. Row edges take strided A (with plain B loads where they can). With these,
kc = 384 and mc = 144 measured best for f32 (512^3 to 2048^3 and 128 x 256 x 784: 1.04-1.24x
numpy against 0.97-1.11x with the generic kernel and kc = 256, mc = 240). Timed again in
randomized order within each round (ratios per round, so the machine's drift cancels), mc = 72
beat 144 by 2-3 % at 1024^3, 2048^3 and 2048 x 512 x 512 (7 % with 8-lane vectors at 1024^3),
and tied at 128 x 256 x 784, 128 x 256 x 256 and a convolution's 32768 x 64 x 576: a smaller A
block leaves more of L2 to the B panel and the C rows.

Note: the epilogue hook
-----------------------
`epilogue(ctx: EpilogueContext) -> ir.Value` emits IR mapping one vector of results (`ctx.acc`,
after the full K sum) to the vector stored, given its row, column indices, lane mask and the
extra arguments the config declares (`GemmConfig.epilogue_args`, appended to the signature):
bias add, activations (`mathlib.emit_math_inline`), residual add ride along for free.

An epilogue that calls a function per vector would have every live accumulator saved and
restored around each call (all vector registers are caller-saved). A `TileEpilogue` instead
runs once per register tile: the microkernel parks the finished tile in a stack array and hands
over its address; the epilogue computes every vector from there and stores C itself (the
shared GEMM's epilogues are separate functions behind a pointer: one call per tile).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from llvmlite import ir

from graphc.ir.errors import GraphError

from .llvm_ir import (
    I1,
    I32,
    I64,
    VOID,
    alloca_at_entry,
    emit_loop,
    if_update,
    intrinsic,
    llvm_type,
    masked_load,
    masked_store,
    prefetch,
    splat,
    vsplat,
)

if TYPE_CHECKING:
    from .gemm import GemmConfig


@dataclass(frozen=True)
class EpilogueContext:
    """What an epilogue sees for one vector of results (inside the microkernel).

    acc: <lanes x T> results after the full K sum (plus old C with `accumulate`).
    row: i64 row index in [0, M). cols: <lanes x i64> column indices. col0: i64 first column.
    mask: <lanes x i1> lanes with column < N (only those are stored; others may hold garbage).
    batch: i64 batch index. args: the `epilogue_args` values, in order.
    """

    builder: ir.IRBuilder
    acc: ir.Value
    row: ir.Value
    cols: ir.Value
    col0: ir.Value
    mask: ir.Value
    batch: ir.Value
    args: tuple[ir.Value, ...]


@dataclass(frozen=True)
class TileContext:
    """What a tile epilogue sees: the finished rows x nr tile parked at `acc` (element (i, j)
    at acc[i·ld + j]), its first row, first column, the valid columns from there (`n_valid`,
    may exceed nr), batch index, the `epilogue_args`, and C's tile (`c`, row stride `sc_m`)."""

    builder: ir.IRBuilder
    acc: ir.Value
    ld: int
    rows: int
    row: ir.Value
    col0: ir.Value
    n_valid: ir.Value
    batch: ir.Value
    args: tuple[ir.Value, ...]
    c: ir.Value
    sc_m: ir.Value


@dataclass(frozen=True)
class TileEpilogue:
    """An epilogue applied per register tile (module note). `emit(ctx)` emits the IR that
    stores the tile's results into C; `active(builder, args)`, when given, is an i1 that
    selects it at run time (else the tile is stored as is)."""

    emit: Callable[[TileContext], None]
    active: Callable[[ir.IRBuilder, tuple[ir.Value, ...]], ir.Value] | None = None


Epilogue = Callable[[EpilogueContext], ir.Value] | TileEpilogue


@dataclass(frozen=True)
class Variant:
    """What one microkernel function is specialized for (module note: microkernel variants)."""

    rows: int
    packing: bool = False   # also stores the B rows it reads as a packed micro-panel
    packed_a: bool = False  # A is packed: its strides are the constants (1, mr)
    full_b: bool = False    # all nr columns of B exist: plain loads instead of masked ones
    packs_a: bool = False   # also stores the A elements it reads into packed micro-panels

    @property
    def suffix(self) -> str:
        return (f"{self.rows}" + (".pack" if self.packing else "")
                + (".pa" if self.packed_a else "") + (".full" if self.full_b else "")
                + (".packa" if self.packs_a else ""))


class MicroKernels:
    """The microkernel functions of one GEMM, emitted on first use: for full row tiles one per
    combination of `Variant` flags, for the row edges (the powers of two below mr) one with
    strided A and masked or plain B loads."""

    def __init__(self, module: ir.Module, cfg: GemmConfig, epilogue: Epilogue | None,
                 name: str, panel_nr: int | None = None) -> None:
        self.module, self.cfg, self.epilogue, self.name = module, cfg, epilogue, name
        self.panel_nr = panel_nr or cfg.nr  # row stride of the packed B panels
        self.edge_rows = [r for r in (1 << s for s in range(7, -1, -1)) if r < cfg.mr]
        self._fns: dict[Variant, ir.Function] = {}
        # Narrower kernels, 1 .. nv - 1 vectors wide, for a panel of fewer valid columns (a
        # 10-class head, N = 32, the last panel of N = 80): the full-width kernel would spend
        # its FMAs on the zero padding (one thread, 128 x 32 x 256: 33 -> 19 us). Listed as
        # (columns they hold, kernels); only the full-width family has them.
        self.narrow: list[tuple[int, MicroKernels]] = [] if panel_nr else [
            (w * cfg.lanes, MicroKernels(module, replace(cfg, nv=w), epilogue,
                                          f"{name}.narrow{w}", cfg.nr))
            for w in range(1, cfg.nv)]

    def get(self, v: Variant) -> ir.Function:
        if v not in self._fns:
            self._fns[v] = emit_microkernel(self.module, self.cfg, v, self.epilogue,
                                             f"{self.name}.ukernel{v.suffix}",
                                             self.panel_nr if v.packing else None)
        return self._fns[v]

    def pick(self, b: ir.IRBuilder, rows: int, packing: bool,
             packed_a: ir.Value | None = None, full_b: ir.Value | None = None) -> ir.Value:
        """The kernel for a tile of `rows` rows, chosen at run time by the i1 flags given."""
        if packed_a is None or (rows != self.cfg.mr and full_b is None):
            return self.get(Variant(rows, packing))
        if rows != self.cfg.mr:  # row edges: strided A, plain B loads where they can be
            return b.select(full_b, self.get(Variant(rows, packing, False, True)),
                            self.get(Variant(rows, packing)))

        def by_a(full: bool) -> ir.Value:
            return b.select(packed_a, self.get(Variant(rows, packing, True, full)),
                            self.get(Variant(rows, packing, False, full)))

        return by_a(False) if full_b is None else b.select(full_b, by_a(True), by_a(False))

    def pick_narrow(self, b: ir.IRBuilder, rows: int, packing: bool, full_b: ir.Value
                    ) -> ir.Value:
        """A narrow family's kernel: strided A; plain B loads for full row tiles whose
        columns are all present (the others, fewer, keep one masked variant each)."""
        if rows != self.cfg.mr or packing:
            return self.get(Variant(rows, packing))
        return b.select(full_b, self.get(Variant(rows, False, False, True)),
                        self.get(Variant(rows)))


def emit_microkernel(module: ir.Module, cfg: GemmConfig, variant: Variant,
                      epilogue: Epilogue | None, name: str, packing_nr: int | None = None
                      ) -> ir.Function:
    """`uk(kb, Ap, a_si, a_sk, Bp, ldb, C, sc_m, row, col0, n_valid, first, last, batch,
    epi...)`: the rows x nr tile C[row.., col0..] from kb steps of broadcast(Ap[i·a_si +
    k·a_sk]) x Bp[k·ldb ..] FMAs. Packed A has (a_si, a_sk) = (1, mr); A read in place (row-major)
    has (its row stride, 1). B rows are read with the column mask, so Bp may be B itself (ldb =
    its row stride). The packing variant (`packing_nr`: the packed panel's row stride) takes one
    more argument, Bdst, and also stores every B row it reads there as a packed micro-panel row
    (Bdst[k·packing_nr ..], zeros past N)."""
    packing = packing_nr is not None
    rows = variant.rows
    t = llvm_type(cfg.dtype)
    tp = t.as_pointer()
    vty = ir.VectorType(t, cfg.lanes)
    args = [I64, tp, I64, I64, tp, I64, tp, I64, I64, I64, I64, I1, I1, I64,
            *cfg.epilogue_args, tp] + ([tp] if packing else []) + ([tp] if variant.packs_a else [])
    fn = ir.Function(module, ir.FunctionType(VOID, args), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    if variant.packs_a:
        # The SLP vectorizer would turn the strided A loads, stored side by side into the
        # packed panel, into gathers (where the cost model rates them cheap, as for AMD Zen 4),
        # and the extra vectors spill the accumulators. The explicit vector code is unaffected.
        fn.attributes.add("noimplicitfloat")
    (kb, a, a_si, a_sk, bp, ldb, c, sc_m, row0, col0, n_valid, first, last,
     batch) = fn.args[:14]
    epi_args = tuple(fn.args[14:14 + len(cfg.epilogue_args)])
    extra = list(fn.args[14 + len(cfg.epilogue_args):])
    next_b = extra.pop(0)
    bdst = extra.pop(0) if packing else None
    adst = extra.pop(0) if variant.packs_a else None
    for arg in (a, bp, c) + tuple(x for x in (bdst, adst) if x is not None):
        arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fma = intrinsic(module, "llvm.fma", vty)
    if variant.packed_a:
        a_si, a_sk = ir.Constant(I64, 1), ir.Constant(I64, cfg.mr)

    iota = ir.Constant(ir.VectorType(I64, cfg.lanes), list(range(cfg.lanes)))
    masks = [b.icmp_signed("<", iota, vsplat(b, b.sub(n_valid, ir.Constant(I64, j * cfg.lanes)),
                                              cfg.lanes)) for j in range(cfg.nv)]

    def step(b: ir.IRBuilder, kk: ir.Value, accs: list) -> list:
        brow = b.gep(bp, [b.mul(kk, ldb)])
        arow = b.gep(a, [b.mul(kk, a_sk)])
        # B read in place has no columns past N: masked loads there (a masked load costs
        # a vector ALU slot on top of the load, a FMA's in this loop: 10 % of the GEMM).
        ptrs = [b.bitcast(b.gep(brow, [ir.Constant(I64, j * cfg.lanes)]), vty.as_pointer())
                for j in range(cfg.nv)]
        if variant.full_b:
            bv = [b.load(p, align=cfg.elem_bytes) for p in ptrs]
        else:
            bv = [masked_load(b, p, masks[j], vty) for j, p in enumerate(ptrs)]
        if bdst is not None:
            drow = b.gep(bdst, [b.mul(kk, ir.Constant(I64, packing_nr))])
            for j, v in enumerate(bv):
                b.store(v, b.bitcast(b.gep(drow, [ir.Constant(I64, j * cfg.lanes)]),
                                     vty.as_pointer()), align=cfg.lanes * cfg.elem_bytes)
        # The kc x nr micro-panel of B outgrows L1: fetch rows ahead. Not from a packed panel
        # beside packed A, two contiguous streams the hardware prefetchers follow: there the
        # prefetches only took load slots (1024^3 and 2048^3, one thread: +3-4 % without).
        # The packing kernel reads B at its source, a row per 4 KiB page: it prefetches.
        if cfg.prefetch_b and (variant.packing or not variant.packed_a):
            ahead = b.gep(brow, [b.mul(ir.Constant(I64, cfg.prefetch_b), ldb)])
            for off in range(0, cfg.nr, 64 // cfg.elem_bytes):
                prefetch(b, b.gep(ahead, [ir.Constant(I64, off)]))
        out = []
        for i in range(rows):
            x = b.load(b.gep(arow, [b.mul(ir.Constant(I64, i), a_si)]))
            if adst is not None:  # packed layout: element (i, k) of the panel at k·mr + i
                b.store(x, b.gep(adst, [b.add(b.mul(kk, ir.Constant(I64, cfg.mr)),
                                              ir.Constant(I64, i))]))
            av = vsplat(b, x, cfg.lanes)
            out += [b.call(fma, [av, bv[j], accs[i * cfg.nv + j]]) for j in range(cfg.nv)]
        return out

    # Prefetch the C tile for writing: its rows are far apart in memory and are read-modify-
    # written after the k loop, whose FMAs hide the latency.
    line = 64 // cfg.elem_bytes
    for i in range(rows):
        for off in range(0, cfg.nr, line):
            addr = b.gep(c, [b.add(b.mul(ir.Constant(I64, i), sc_m), ir.Constant(I64, off))])
            prefetch(b, addr, write=True)
    # unroll_k steps per iteration (one pointer bump and branch for all), then the rest.
    u = ir.Constant(I64, cfg.unroll_k)

    # A packed panel of B is read again by every row tile, from L2; the first tile reads it
    # from wherever the last call left it (after another library's work, the last-level
    # cache). Each row tile fetches a slice of the next panel into L2, a line per iteration,
    # so that only the first panel of a call comes cold (MLP inference taking turns with ONNX
    # Runtime, one thread: 453 -> 440 us).
    prefetch_next = variant.packed_a and variant.full_b and not packing

    def steps(b: ir.IRBuilder, ku: ir.Value, accs: list) -> list:
        for j in range(cfg.unroll_k):
            accs = step(b, b.add(b.mul(ku, u), ir.Constant(I64, j)), accs)
        if prefetch_next:
            prefetch(b, b.gep(next_b, [b.mul(ku, ir.Constant(I64, 64 // cfg.elem_bytes))]),
                     locality=2)
        return accs

    accs = emit_loop(b, ir.Constant(I64, 0), b.sdiv(kb, u), steps,
                     carried=[splat(vty, 0.0)] * (rows * cfg.nv), name="ku")
    accs = emit_loop(b, b.mul(b.sdiv(kb, u), u), kb, step, carried=accs, name="k")
    c_ptrs = [[b.bitcast(b.gep(c, [b.add(b.mul(ir.Constant(I64, i), sc_m),
                                         ir.Constant(I64, j * cfg.lanes))]), vty.as_pointer())
               for j in range(cfg.nv)] for i in range(rows)]

    def add_old_c(b: ir.IRBuilder, vals: list) -> list:
        return [b.fadd(v, masked_load(b, c_ptrs[idx // cfg.nv][idx % cfg.nv],
                                      masks[idx % cfg.nv], vty)) for idx, v in enumerate(vals)]

    if cfg.accumulate:
        accs = add_old_c(b, accs)
    else:
        accs = if_update(b, b.not_(first), accs, add_old_c)
    if isinstance(epilogue, TileEpilogue):
        _emit_tile_epilogue(b, cfg, rows, epilogue, accs, last, c_ptrs, masks, row0, col0,
                            n_valid, batch, epi_args, c, sc_m)
        b.ret_void()
        return fn
    if epilogue is not None:
        def apply(b: ir.IRBuilder, vals: list) -> list:
            out = []
            for idx, v in enumerate(vals):
                i, j = divmod(idx, cfg.nv)
                c0 = b.add(col0, ir.Constant(I64, j * cfg.lanes))
                ctx = EpilogueContext(b, v, b.add(row0, ir.Constant(I64, i)),
                                      b.add(vsplat(b, c0, cfg.lanes), iota), c0, masks[j],
                                      batch, epi_args)
                res = epilogue(ctx)
                if res.type != vty:
                    raise GraphError(f"GEMM epilogue returned {res.type}, expected {vty}")
                out.append(res)
            return out

        accs = if_update(b, last, accs, apply)
    store_tile(b, cfg, accs, c_ptrs, masks)
    b.ret_void()
    return fn


def store_tile(b: ir.IRBuilder, cfg: GemmConfig, accs: list, c_ptrs: list, masks: list
                ) -> None:
    """The register tile into C, row by row, vector j of a row under column mask j."""
    for idx, v in enumerate(accs):
        i, j = divmod(idx, cfg.nv)
        masked_store(b, v, c_ptrs[i][j], masks[j])


def _emit_tile_epilogue(b: ir.IRBuilder, cfg: GemmConfig, rows: int, epilogue: TileEpilogue,
                        accs: list, last: ir.Value, c_ptrs: list, masks: list, row0: ir.Value,
                        col0: ir.Value, n_valid: ir.Value, batch: ir.Value,
                        epi_args: tuple[ir.Value, ...], c: ir.Value, sc_m: ir.Value) -> None:
    """Last K block (and the epilogue active): park the tile, let the epilogue store C; else
    store the tile as is."""
    vty = accs[0].type
    apply = last if epilogue.active is None else b.and_(last, epilogue.active(b, epi_args))
    park = alloca_at_entry(b, ir.ArrayType(vty, len(accs)), name="tile")
    with b.if_else(apply) as (then, otherwise):
        with then:
            for idx, v in enumerate(accs):
                b.store(v, b.gep(park, [ir.Constant(I32, 0), ir.Constant(I32, idx)]))
            acc = b.bitcast(park, llvm_type(cfg.dtype).as_pointer())
            epilogue.emit(TileContext(b, acc, cfg.nr, rows, row0, col0, n_valid, batch,
                                      epi_args, c, sc_m))
        with otherwise:
            store_tile(b, cfg, accs, c_ptrs, masks)
