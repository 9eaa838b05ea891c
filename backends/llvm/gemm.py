"""Generated BLIS-style GEMM: C[b] = epilogue(A[b] @ B[b]) for f32/f64, any shapes and strides.

Note: structure of the generated code
-------------------------------------
The work is split into tasks (batch item, block of `mc` rows, block of `nc` columns) and the
tasks run on a parallel-for (`parallel.py`). One task, BLIS loop order:

    for pc in K by kc:                           # equal K blocks of at most kc (at least one:
        pack B[pc:pc+kc, n0:n0+nc] -> Bp         #   K = 0 still stores); kc x nr micro-panels
        for ic in rows by mc:
            pack A[ic:ic+mc, pc:pc+kc] -> Ap     # kc x mr micro-panels (mc x kc stays in L2)
            for jr in columns by nr:             # one kc x nr micro-panel of Bp ...
                for ir in rows by mr:            # ... reused by every mr-row tile
                    microkernel(mr x nr tile of C)

Packing makes every operand layout look alike to the microkernel (and avoids the cache-set
conflicts of power-of-two leading dimensions). Four cases skip or hide a packing pass:

* B with contiguous columns is packed by the microkernel itself: the first row tile of a task
  reads each B micro-panel at its source and stores it into Bp as it goes (the `packing`
  microkernel variant), so B's loads overlap FMAs instead of forming a copy pass of their own
  (one thread, against a separate pass: 128 x 256 x 784 +7 %, 128 x 256 x 256 +4 %, squares
  of 512-1024 unchanged).
* A task of few rows (at most `DIRECT_B_MAX_ROWS`) uses each B panel only a few times, too few
  to repay packing it: there the microkernel reads B rows in place (measured, one thread:
  32 x 128 x 1024 69 -> 59 us, 32 x 256 x 1024 159 -> 146 us; at 64 rows packing wins again),
  as long as all of B the call reads (every batch item's) fits in `DIRECT_B_MAX_BYTES`. A
  larger B comes from memory, and rows read in place a long stride apart wait on it (the
  hardware prefetchers do not follow them), where packing reads whole rows: one thread, 1 MiB
  of B 6-11 % faster in place, 2 MiB 5-9 % faster packed, 16 MiB 37 %; a 1x1 convolution
  as 8 images of 32 x 1024 x 192 +16 %.
* In a task of more than two row blocks (A from memory rather than cache) with at least three
  column panels, the first panel's microkernels read A in place and store it packed as they go
  (`packs_a` variants), like B's first row tile, instead of a copy pass before the panels.
* Row-major A whose task has at most `DIRECT_A_MAX_PANELS` column micro-panels is read in place
  (the microkernel takes A's row and k strides): packing would copy each row for as few
  reads (one thread: 256 x 64 x 512 -9 %, 64 x 128 x 300 -5 %, 128 x 128 x 1024 -3 % against
  packing it). From three panels on, packing pays: the packed kernel's constant strides beat
  the copy (128 x 256 x 784 276 -> 270 us, 128 x 256 x 256 94 -> 91 us, 128 x 192 x 512 and
  512 x 256 x 512 -2-3 %).

Equal K blocks avoid a short last block (K = 784 as 4 x 196, not 3 x 256 + 16), which would
load and store the whole C tile for a few steps. The microkernel keeps an mr x
nr tile of C in `mr * nr/lanes` vector registers (6 x 64 floats = 24 zmm registers on AVX-512:
measured best of 8x32, 6x64, 8x48, 12x32, 4x64, 14x32) and for each k broadcasts mr elements of
A and issues `llvm.fma` on the nr/lanes vectors of the packed B row. Row edges (M % mr) use
microkernels of 4, 2, 1 rows; column edges use the zero padding of Bp and masked stores, and a
panel of at most w·lanes valid columns (w < nv: N = 10, 32, 48, the last panel of N = 80)
takes the microkernels of a family w vectors wide instead (one thread: 128 x 256 x 10 42 ->
17 us; 128 x 32 x 256 33 -> 19 us; 512 x 32 x 512 230 -> 122 us); K edges are a shorter k
loop. The C tile is stored once per K block: the first block overwrites (or, with
`accumulate`, adds to) C, later ones add, and the last applies the epilogue. The microkernels,
their variants and the epilogue interface live in `gemm_microkernel.py`.

Strides are runtime arguments in elements: A as [M, K] (sa_m = K, sa_k = 1) or [K, M]
(sa_m = 1, sa_k = M) or any view; B likewise; a batch stride of 0 broadcasts an operand. C's
column stride is 1. Blocking depends on the thread count, the summation order over K never
does: results are bit-identical for any thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.ir.errors import GraphError

from .gemm_microkernel import Epilogue, MicroKernels, Variant
from .gemm_pack import emit_pack_a, emit_pack_b
from .llvm_ir import (
    I1,
    I32,
    I64,
    PTR,
    VOID,
    ceil_div,
    declare,
    emit_loop,
    llvm_type,
    smax,
    smin,
)
from .parallel import ParallelBody, emit_parallel_for

_ELEM_BYTES = {"f32": 4, "f64": 8}
# Fewer tasks than this many per thread are split until every thread gets as many (`_emit_grid`).
FEW_TASKS = 8
DIRECT_B_MAX_ROWS = 48  # tasks of at most this many rows read B in place (module note) ...
DIRECT_B_MAX_BYTES = 1 << 20  # ... when all of B the call reads fits in this many bytes
# Whether the first column panel may pack A (below), by dtype: the f64 variants' stores of A
# made LLVM spill vector registers inside their k loop (the runtime library's spill test).
FUSED_A = {"f32": True, "f64": False}
DIRECT_A_MAX_PANELS = 2  # row-major A read in place up to this many column micro-panels


# AMD Zen 4 runs 512-bit FMAs at half the rate of Intel's server cores, so each K step of the
# microkernel takes twice as long and longer K blocks pay: a K block of up to 768 and A blocks
# of 48 rows measured 2-5 % faster than the Intel-tuned 384 and 72 (one thread, randomized
# paired rounds: 512^3, 2048^3, 128 x 256 x 784, 128 x 256 x 256), 15 % for a convolution's
# 32768 x 64 x 576 (one K block instead of two, so C is written once).
ZEN_F32_BLOCKS = {"kc": 768, "mc": 48}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class GemmConfig:
    """Compile-time parameters of one generated GEMM.

    mr x (nv·lanes) is the register tile; kc the K block; mc x nc the largest block one task
    computes (its packed B panel is kc x nc). `epilogue_args` are the LLVM types of extra
    arguments appended to the function signature for the epilogue (pointers to bias,
    residual ...). `accumulate` makes the GEMM compute C += A @ B. `prefetch_b` is how many k
    steps ahead the microkernel prefetches rows of B (a prefetch past the panel is harmless).
    """

    dtype: str = "f32"
    lanes: int = 16
    mr: int = 6
    nv: int = 4
    kc: int = 384
    mc: int = 72
    nc: int = 1024
    accumulate: bool = False
    epilogue_args: tuple[ir.Type, ...] = ()
    prefetch_b: int = 8  # k steps ahead the microkernel prefetches B rows (0: none)
    unroll_k: int = 2    # k steps per iteration of the microkernel's loop

    @property
    def nr(self) -> int:
        return self.nv * self.lanes

    @property
    def elem_bytes(self) -> int:
        return _ELEM_BYTES[self.dtype]

    @staticmethod
    def for_vector_bits(vector_bits: int, dtype: str = "f32", cpu: str = "", **kw
                        ) -> GemmConfig:
        """Defaults for a target with `vector_bits`-wide registers (512: AVX-512, 256: AVX2)
        and, where measured to matter, its CPU (LLVM's name for it)."""
        lanes = vector_bits // (8 * _ELEM_BYTES[dtype])
        if vector_bits >= 512:  # 32 zmm: 24 accumulators, 4 B vectors, 1 broadcast
            base = {"mr": 6, "nv": 4}
        else:  # 16 ymm: 12 accumulators, 2 B vectors, 1 broadcast
            base = {"mr": 6, "nv": 2}
        if dtype == "f64":  # twice the bytes per element: the blocks of the f32 default
            base.update(kc=256, mc=240, nc=512)  # would crowd L2
        elif vector_bits >= 512 and cpu.startswith("znver"):
            base.update(ZEN_F32_BLOCKS)
        return GemmConfig(dtype=dtype, lanes=lanes, **{**base, **kw})

    @staticmethod
    def for_target(spec, dtype: str = "f32", **kw) -> GemmConfig:
        """Defaults for a `target.TargetSpec` (its vector width and CPU)."""
        return GemmConfig.for_vector_bits(spec.vector_bits, dtype, spec.cpu, **kw)

    def check(self) -> None:
        if self.dtype not in _ELEM_BYTES:
            raise GraphError(f"GEMM dtype must be f32 or f64, got {self.dtype!r}")
        if min(self.lanes, self.mr, self.nv, self.kc, self.mc, self.nc) < 1:
            raise GraphError(f"GEMM config needs positive sizes: {self}")
        if self.nc % self.nr or self.mc % self.mr:
            raise GraphError(f"GEMM config: nc must be a multiple of nr = {self.nr} and mc of "
                             f"mr = {self.mr}: {self}")

    def k_block(self, k: int) -> int:
        """The K block length a product of depth `k` uses (`_k_blocks` in Python)."""
        npc = max(_cdiv(k, self.kc), 1)
        return min(self.kc, max(_cdiv(_cdiv(k, npc), 8) * 8, 8))

    def panel_columns(self, n: int) -> int:
        """The most columns of B one task packs: nc, or N rounded up to nr when narrower."""
        return min(self.nc, _cdiv(max(n, 1), self.nr) * self.nr)

    def worker_bytes(self, n: int | None = None, k: int | None = None) -> int:
        """Scratch bytes per worker thread: a packed K block of B for one task's columns and
        mc x (K block) of A, each a 64-byte multiple; for the largest product by default.
        `_emit_gemm_body` computes the same at run time from N and K."""
        kb = self.kc if k is None else self.k_block(k)
        cols = self.nc if n is None else self.panel_columns(n)
        es = _ELEM_BYTES[self.dtype]
        return _cdiv(kb * cols * es, 64) * 64 + _cdiv(self.mc * kb * es, 64) * 64

    def workspace_bytes(self, nthreads: int, n: int | None = None, k: int | None = None
                        ) -> int:
        """Size of the `workspace` argument for up to `nthreads` threads (64 for alignment),
        for products of N = n, K = k when given (any size otherwise)."""
        return self.worker_bytes(n, k) * max(nthreads, 1) + 64


#: Names of the fixed arguments of a generated GEMM, in order (the C signature is
#: `void gemm(i64 batch, i64 M, i64 N, i64 K, T* A, i64 sa_batch, i64 sa_m, i64 sa_k,
#:  T* B, i64 sb_batch, i64 sb_k, i64 sb_n, T* C, i64 sc_batch, i64 sc_m, i32 nthreads,
#:  i8* workspace, T* bpre, i32 bpre_fill, <epilogue args>)`, strides in elements, T = float or
#:  double; `bpre`: NULL, or `prepacked_b_elements(K, N)` elements holding (bpre_fill = 0) or to
#:  receive first (bpre_fill != 0) all of B packed, shared by every batch item).
GEMM_ARGS = ("batch", "M", "N", "K", "A", "sa_batch", "sa_m", "sa_k", "B", "sb_batch", "sb_k",
             "sb_n", "C", "sc_batch", "sc_m", "nthreads", "workspace", "bpre", "bpre_fill")


def gemm_function_type(config: GemmConfig) -> ir.FunctionType:
    """The LLVM type of a generated GEMM (`GEMM_ARGS`, then `config.epilogue_args`)."""
    tp = llvm_type(config.dtype).as_pointer()
    fixed = [I64] * 4 + [tp, I64, I64, I64, tp, I64, I64, I64, tp, I64, I64, I32, PTR, tp, I32]
    return ir.FunctionType(VOID, fixed + list(config.epilogue_args))


def prepacked_b_elements(config: GemmConfig, k: int, n: int) -> int:
    """Elements of a fully packed B (K x N): every K block's micro-panels, N padded to nr."""
    return max(k, 1) * -(-max(n, 1) // config.nr) * config.nr


def emit_gemm(module: ir.Module, name: str, config: GemmConfig,
              epilogue: Epilogue | None = None) -> ir.Function:
    """Emit `void name(...)` (signature in `GEMM_ARGS`, then `config.epilogue_args`) computing
    C[b, m, n] = epilogue(sum_k A[b, m, k] · B[b, k, n]) for b < batch, m < M, n < N.

    `nthreads` (i32) caps the threads; `workspace` is NULL (the function mallocs and frees
    its scratch) or a buffer of at least `config.workspace_bytes(nthreads)` bytes.
    """
    config.check()
    fn = ir.Function(module, gemm_function_type(config), name=name)
    for arg, arg_name in zip(fn.args, GEMM_ARGS, strict=False):
        arg.name = arg_name
    for k, arg in enumerate(fn.args[len(GEMM_ARGS):]):
        arg.name = f"epi{k}"
    kernels = MicroKernels(module, config, epilogue, name)
    # Packing depends only on dtype and tile shape: GEMMs of one module share it.
    tag = f"{config.dtype}.mr{config.mr}.nr{config.nr}.l{config.lanes}"
    packs = (module.globals.get(f"graphc.gemm.pack_a.{tag}")
             or emit_pack_a(module, config, f"graphc.gemm.pack_a.{tag}"),
             module.globals.get(f"graphc.gemm.pack_b.{tag}")
             or emit_pack_b(module, config, f"graphc.gemm.pack_b.{tag}"))
    _emit_gemm_body(fn, config, kernels, packs)
    return fn


# ---------------------------------------------------------------------------------------------
# the driver: task grid, workspace, parallel-for


@dataclass(frozen=True)
class _Grid:
    """Runtime task grid: tasks of mt x nt elements of C, bm x bn of them per batch item."""

    mt: ir.Value
    nt: ir.Value
    bm: ir.Value
    bn: ir.Value
    ntasks: ir.Value
    threads: ir.Value


def _round_up(b: ir.IRBuilder, x: ir.Value, m: int) -> ir.Value:
    return b.mul(ceil_div(b, x, m), ir.Constant(I64, m))


def _emit_grid(b: ir.IRBuilder, cfg: GemmConfig, batch: ir.Value, m: ir.Value, n: ir.Value,
               nthreads: ir.Value, prepacked: ir.Value) -> _Grid:
    """Split C into at least T = nthreads tasks where possible: first into column blocks of at
    most nc, nc/2 with more than one thread (no work is repeated: each task packs only its own
    columns of B; at one thread, 1024 columns instead of 512 halve the tiles that pack A as
    they go: 1024^3 and 2048^3 +2 %, 2048 x 512 x 512 and 256 x 1024 x 256 +1 %). Still too
    few tasks: split the operand whose repacking costs less. Finer column blocks (down to nr)
    make every task pack all of A's rows; row blocks make every task pack its columns of B,
    which a prepacked B never does. So rows when N <= M or B is prepacked, else columns first
    (two threads, rows against columns: 512^3 +3 %, 2048 x 512 x 512 +7 %, 256 x 1024 x 256
    -2 %)."""
    one = ir.Constant(I64, 1)
    threads = smax(b, b.sext(nthreads, I64), one)
    # With more than one thread, blocks of at most nc/2 columns: twice the tasks to share
    # out, so that a thread slowed by another process does not hold up the rest.
    widest = b.select(b.icmp_signed(">", threads, one),
                      ir.Constant(I64, max(cfg.nc // 2 // cfg.nr, 1) * cfg.nr),
                      ir.Constant(I64, cfg.nc))
    nt = smin(b, widest, _round_up(b, n, cfg.nr))
    # Equal column blocks: N = 768 at two threads is 384 + 384, not 512 + 256 (one thread
    # doing two thirds of the work).
    nt = _round_up(b, ceil_div(b, n, ceil_div(b, n, nt)), cfg.nr)
    bn = ceil_div(b, n, nt)
    # Not enough column blocks for the threads: narrower ones (multiples of nr).
    want_bn = smin(b, ceil_div(b, threads, batch), ceil_div(b, n, cfg.nr))
    few = b.icmp_signed("<", b.mul(batch, bn), threads)
    rows_first = b.or_(b.icmp_signed("<=", n, m), prepacked)
    few = b.and_(few, b.not_(rows_first))
    nt = b.select(few, _round_up(b, ceil_div(b, n, want_bn), cfg.nr), nt)
    bn = ceil_div(b, n, nt)
    # Still not enough: split rows too. Few tasks that the threads cannot share evenly
    # (3 column blocks on 2 threads) are split into `threads` row blocks each.
    blocks = b.mul(batch, bn)
    want_bm = ceil_div(b, threads, blocks)
    uneven = b.and_(b.icmp_signed("!=", b.srem(blocks, threads), ir.Constant(I64, 0)),
                    b.icmp_signed("<", blocks, b.mul(threads, ir.Constant(I64, FEW_TASKS))))
    want_bm = b.select(uneven, smax(b, want_bm, threads), want_bm)
    want_bm = smax(b, smin(b, want_bm, ceil_div(b, m, cfg.mr)), one)
    mt = _round_up(b, ceil_div(b, m, want_bm), cfg.mr)
    bm = ceil_div(b, m, mt)
    ntasks = b.mul(batch, b.mul(bm, bn))
    return _Grid(mt, nt, bm, bn, ntasks, smin(b, threads, ntasks))


def _emit_gemm_body(fn: ir.Function, cfg: GemmConfig, kernels: MicroKernels,
                    packs: tuple[ir.Function, ir.Function]) -> None:
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    a = dict(zip(GEMM_ARGS, fn.args, strict=False))
    epi_args = tuple(fn.args[len(GEMM_ARGS):])
    zero = ir.Constant(I64, 0)
    empty = b.or_(b.or_(b.icmp_signed("<=", a["batch"], zero), b.icmp_signed("<=", a["M"], zero)),
                  b.icmp_signed("<=", a["N"], zero))
    with b.if_then(empty, likely=False):
        b.ret_void()
    has_bpre = b.icmp_unsigned("!=", b.ptrtoint(a["bpre"], I64), zero)
    grid = _emit_grid(b, cfg, a["batch"], a["M"], a["N"], a["nthreads"], has_bpre)

    # Scratch: the caller's workspace, or malloc'ed here (64 bytes extra for alignment),
    # sized for this product (`GemmConfig.worker_bytes`): a packed B block of the K block's
    # length and the widest task's columns, then A's mc rows of it.
    slot = b.alloca(PTR, name="ws.slot")
    b.store(a["workspace"], slot)
    own = b.icmp_unsigned("==", b.ptrtoint(a["workspace"], I64), zero)
    es = ir.Constant(I64, cfg.elem_bytes)
    kcb, _ = _k_blocks(b, cfg, a["K"])
    cols = smin(b, ir.Constant(I64, cfg.nc), _round_up(b, a["N"], cfg.nr))
    b_bytes = _round_up(b, b.mul(b.mul(kcb, cols), es), 64)
    stride = b.add(b_bytes, _round_up(b, b.mul(b.mul(ir.Constant(I64, cfg.mc), kcb), es), 64))
    with b.if_then(own, likely=False):
        malloc = declare(b.module, "malloc", PTR, [I64])
        b.store(b.call(malloc, [b.add(b.mul(grid.threads, stride), ir.Constant(I64, 64))]), slot)
    raw = b.load(slot)
    aligned = b.and_(b.add(b.ptrtoint(raw, I64), ir.Constant(I64, 63)), ir.Constant(I64, -64))
    ws = b.inttoptr(aligned, PTR)

    fill = b.and_(has_bpre, b.icmp_signed("!=", a["bpre_fill"], ir.Constant(I32, 0)))
    with b.if_then(fill, likely=False):
        _emit_prepack_b(b, cfg, packs[1], a["N"], a["K"], a["B"], a["sb_k"], a["sb_n"],
                        a["bpre"])
    captures = (a["batch"], a["M"], a["N"], a["K"], a["A"], a["sa_batch"], a["sa_m"], a["sa_k"],
                a["B"], a["sb_batch"], a["sb_k"], a["sb_n"], a["C"], a["sc_batch"], a["sc_m"],
                ws, grid.mt, grid.nt, grid.bm, grid.bn, a["bpre"], stride, b_bytes) + epi_args

    def body(p: ParallelBody) -> None:
        _emit_tasks(p, cfg, kernels, packs, len(epi_args))

    emit_parallel_for(b, body, grid.ntasks, grain=1, nthreads=b.trunc(grid.threads, I32),
                      captures=captures, name=f"{fn.name}.tasks")
    with b.if_then(own, likely=False):
        free = declare(b.module, "free", VOID, [PTR])
        b.call(free, [raw])
    b.ret_void()


def _emit_tasks(p: ParallelBody, cfg: GemmConfig, kernels: MicroKernels,
                packs: tuple[ir.Function, ir.Function], n_epi: int) -> None:
    """Tasks [p.lo, p.hi) inside a worker: decode (batch, row block, column block), then the
    BLIS loops over K blocks, row blocks of mc, column micro-panels and row micro-tiles."""
    (batch, m, n, k, a, sa_b, sa_m, sa_k, bmat, sb_b, sb_k, sb_n, c, sc_b, sc_m,
     ws, mt, nt, bm, bn, bpre, stride, b_bytes) = p.captures[:23]
    epi_args = p.captures[23:23 + n_epi]
    prepacked = p.builder.icmp_unsigned("!=", p.builder.ptrtoint(bpre, I64),
                                        ir.Constant(I64, 0))
    npad = _round_up(p.builder, n, cfg.nr)
    mine = p.builder.gep(ws, [p.builder.mul(p.worker, stride)])
    bp = p.builder.bitcast(mine, a.type)
    ap = p.builder.bitcast(p.builder.gep(mine, [b_bytes]), a.type)
    c1 = ir.Constant(I64, 1)

    # All of B that the call reads (one matrix when its batch stride is 0): beyond
    # DIRECT_B_MAX_BYTES it comes from memory rather than cache, and rows read in place at a
    # long stride wait on it, where packing reads it row by row (module note).
    b_items = p.builder.select(p.builder.icmp_signed("==", sb_b, ir.Constant(I64, 0)),
                               ir.Constant(I64, 1), batch)
    b_total = p.builder.mul(p.builder.mul(b_items, p.builder.mul(k, n)),
                            ir.Constant(I64, cfg.elem_bytes))
    b_cached = p.builder.icmp_signed("<=", b_total, ir.Constant(I64, DIRECT_B_MAX_BYTES))

    def task(b: ir.IRBuilder, t: ir.Value, _c: list) -> list:
        per_batch = b.mul(bm, bn)
        bi = b.sdiv(t, per_batch)
        rest = b.srem(t, per_batch)
        m0 = b.mul(b.sdiv(rest, bn), mt)
        n0 = b.mul(b.srem(rest, bn), nt)
        m1 = smin(b, b.add(m0, mt), m)
        nb = smin(b, nt, b.sub(n, n0))
        a_b = b.gep(a, [b.mul(bi, sa_b)])
        b_b = b.gep(bmat, [b.mul(bi, sb_b)])
        c_b = b.gep(c, [b.add(b.mul(bi, sc_b), n0)])
        kcb, npc = _k_blocks(b, cfg, k)

        def k_block(b: ir.IRBuilder, pi: ir.Value, _c: list) -> list:
            pc = b.mul(pi, kcb)
            kb = smin(b, kcb, b.sub(k, pc))
            first = b.icmp_signed("==", pi, ir.Constant(I64, 0))
            last = b.icmp_signed("==", pi, b.sub(npc, c1))
            b_pc = b.gep(b_b, [b.add(b.mul(pc, sb_k), b.mul(n0, sb_n))])
            # A task of few rows reuses each B panel too little to repay packing it: with unit
            # column stride the microkernel reads B in place (masked at the column edge).
            direct = b.and_(b.and_(b.icmp_signed("==", sb_n, c1), b_cached),
                            b.icmp_signed("<=", b.sub(m1, m0), ir.Constant(I64, DIRECT_B_MAX_ROWS)))
            # With unit column stride, the first row tile's microkernel packs each B
            # micro-panel as it reads it (B's loads then overlap FMAs instead of a separate
            # copy pass); other layouts are packed up front.
            # A fully prepacked B (`bpre`) is used as is: K block pc starts at row pc of it,
            # this task's panels at column n0.
            direct = b.and_(direct, b.not_(prepacked))
            # Packing as it reads needs a full row tile to do it: a task of fewer than mr
            # rows whose B is too large to read in place packs B up front.
            fused = b.and_(b.and_(b.icmp_signed("==", sb_n, c1), b.not_(direct)),
                           b.and_(b.not_(prepacked), b.icmp_signed(
                               ">=", b.sub(m1, m0), ir.Constant(I64, cfg.mr))))
            with b.if_then(b.not_(b.or_(b.or_(direct, fused), prepacked))):
                b.call(packs[1], [kb, nb, b_pc, sb_k, sb_n, bp])
            pre = b.gep(bpre, [b.add(b.mul(pc, npad), b.mul(n0, kb))])
            bpanels = b.select(prepacked, pre, bp)
            a_pc = b.gep(a_b, [b.mul(pc, sa_k)])
            tile = _Tile(kb, a_pc, sa_m, sa_k, ap, b.select(direct, b_pc, bpanels),
                         b.select(direct, sb_k, ir.Constant(I64, cfg.nr)),
                         b.select(direct, c1, kb), c_b, sc_m, n0, nb, first, last, bi, epi_args,
                         fused, b_pc, sb_k, b.not_(direct))
            _emit_row_blocks(b, cfg, kernels, packs[0], tile, m0, m1)
            return []

        emit_loop(b, ir.Constant(I64, 0), npc, k_block, name="kblock")
        return []

    emit_loop(p.builder, p.lo, p.hi, task, name="task")


def _k_blocks(b: ir.IRBuilder, cfg: GemmConfig, k: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(block length, block count) of the K blocks: equal blocks of at most kc, a multiple of
    8 steps (K = 784 as 4 x 196 rather than 3 x 256 + 16, whose last block would load and store
    the whole C tile for 16 steps); at least one block, none empty."""
    c1 = ir.Constant(I64, 1)
    npc = smax(b, ceil_div(b, k, cfg.kc), c1)
    kcb = smin(b, ir.Constant(I64, cfg.kc),
               smax(b, _round_up(b, ceil_div(b, k, npc), 8), ir.Constant(I64, 8)))
    return kcb, smax(b, ceil_div(b, k, kcb), c1)


def _emit_prepack_b(b: ir.IRBuilder, cfg: GemmConfig, pack_b: ir.Function, n: ir.Value,
                    k: ir.Value, bsrc: ir.Value, sb_k: ir.Value, sb_n: ir.Value,
                    dst: ir.Value) -> None:
    """All of B into `dst`, K block by K block (block at row pc of the packed layout, each its
    N/nr micro-panels of kb x nr), the layout the tasks index with `bpre`."""
    kcb, npc = _k_blocks(b, cfg, k)
    npad = _round_up(b, n, cfg.nr)

    def block(b: ir.IRBuilder, pi: ir.Value, _c: list) -> list:
        pc = b.mul(pi, kcb)
        kb = smin(b, kcb, b.sub(k, pc))
        b.call(pack_b, [kb, n, b.gep(bsrc, [b.mul(pc, sb_k)]), sb_k, sb_n,
                        b.gep(dst, [b.mul(pc, npad)])])
        return []

    emit_loop(b, ir.Constant(I64, 0), npc, block, name="prepack")


@dataclass(frozen=True)
class _Tile:
    """Per K block values the micro-tile loops pass to the microkernels."""

    kb: ir.Value
    a: ir.Value      # A at (batch, row 0, pc)
    sa_m: ir.Value
    sa_k: ir.Value
    ap: ir.Value     # packed A of the current row block
    bp: ir.Value     # packed B of this task and K block (or B itself, read in place)
    ldb: ir.Value    # distance between rows k and k + 1 of a B micro-panel
    bpanel: ir.Value  # distance between micro-panels, per column
    c: ir.Value      # C at (batch, row 0, n0)
    sc_m: ir.Value
    n0: ir.Value
    nb: ir.Value     # valid columns in this task
    first: ir.Value
    last: ir.Value
    batch: ir.Value
    epi_args: tuple[ir.Value, ...]
    fused_pack: ir.Value  # i1: the first row tile of the task packs B (unit column stride)
    bsrc: ir.Value        # B at (batch, pc, n0)
    sb_k: ir.Value
    padded: ir.Value      # i1: Bp is packed, zero up to the panel width past N


def _emit_row_blocks(b: ir.IRBuilder, cfg: GemmConfig, kernels: MicroKernels,
                     pack_a: ir.Function, t: _Tile, m0: ir.Value, m1: ir.Value) -> None:
    """for ic in [m0, m1) by mc: pack A rows; for jr over micro-panels: for ir by mr: kernel."""
    npanels = ceil_div(b, t.nb, cfg.nr)
    mr = ir.Constant(I64, cfg.mr)

    c1 = ir.Constant(I64, 1)
    # Row-major A used by few column micro-panels is read in place: packing would copy it
    # once for only a few reads (module note).
    direct_a = b.and_(b.icmp_signed("==", t.sa_k, c1),
                      b.icmp_signed("<=", npanels, ir.Constant(I64, DIRECT_A_MAX_PANELS)))
    a_si = b.select(direct_a, t.sa_m, c1)
    a_sk = b.select(direct_a, c1, mr)

    # A task of more than two row blocks (A beyond what stays in L2) packs A in its first
    # column panel: with three panels or more that panel is full width, and its microkernels
    # read A in place and store it packed as they go (`packs_a` variants) instead of a copy
    # pass up front, so A's loads from memory overlap FMAs, as B's do in the first row tile
    # (one thread: 1024^3 and 2048^3 about +1 %, -1 to +3 % across five runs; 512^3 level).
    # With few rows A stays cached and the packed kernel's constant strides win (128 x 256 x
    # 784, 128 x 1024 x 256: -2-3 % fused).
    may_fuse_a = FUSED_A.get(cfg.dtype, False)
    fused_a = ir.Constant(I1, 0)
    if may_fuse_a:
        fused_a = b.and_(b.and_(b.not_(direct_a),
                                b.icmp_signed(">=", npanels, ir.Constant(I64, 3))),
                         b.icmp_signed(">", b.sub(m1, m0), ir.Constant(I64, 2 * cfg.mc)))

    def row_block(b: ir.IRBuilder, ic: ir.Value, _c: list) -> list:
        i1 = smin(b, b.add(ic, ir.Constant(I64, cfg.mc)), m1)
        full_end = b.add(ic, b.mul(b.sdiv(b.sub(i1, ic), mr), mr))
        with b.if_then(b.and_(b.not_(direct_a), b.not_(fused_a))):
            b.call(pack_a, [t.kb, b.sub(i1, ic), b.gep(t.a, [b.mul(ic, t.sa_m)]), t.sa_m,
                            t.sa_k, t.ap])

        def panel(b: ir.IRBuilder, jp: ir.Value, _c: list) -> list:
            col = b.mul(jp, ir.Constant(I64, cfg.nr))
            bpj = b.gep(t.bp, [b.mul(col, t.bpanel)])
            n_valid = b.sub(t.nb, col)
            full = b.icmp_signed(">=", n_valid, ir.Constant(I64, cfg.nr))

            def call(b: ir.IRBuilder, rows: int, row: ir.Value, packing: bool,
                     packs_a: bool) -> None:
                # Packed A: panel (row - ic) / mr holds kb x mr, row offset (row - ic) % mr.
                rel = b.sub(row, ic)
                panel_start = b.mul(b.sdiv(rel, mr), mr)
                a_off = b.add(b.mul(panel_start, t.kb), b.sub(rel, panel_start))
                in_place = b.gep(t.a, [b.mul(row, t.sa_m)])
                c_tile = b.gep(t.c, [b.add(b.mul(row, t.sc_m), col)])
                bsrc = (b.gep(t.bsrc, [col]), t.sb_k) if packing else (bpj, t.ldb)
                tail = [row, b.add(t.n0, col), n_valid, t.first, t.last, t.batch, *t.epi_args]
                # The next micro-panel of B, a slice of it per row tile (see the microkernel).
                step = ir.Constant(I64, 64 // cfg.elem_bytes)
                chunk = b.mul(b.sdiv(t.kb, ir.Constant(I64, cfg.unroll_k)), step)
                nxt = b.gep(bpj, [b.add(b.mul(ir.Constant(I64, cfg.nr), t.bpanel),
                                        b.mul(b.sdiv(rel, mr), chunk))])
                tail.append(nxt)
                if packs_a:  # A at its source, with its own strides; a full-width panel
                    uk = kernels.get(Variant(rows, packing, False, True, True))
                    b.call(uk, [t.kb, in_place, t.sa_m, t.sa_k, *bsrc, c_tile, t.sc_m, *tail]
                           + ([bpj] if packing else []) + [b.gep(t.ap, [a_off])])
                    return
                a_ptr = b.select(direct_a, in_place, b.gep(t.ap, [a_off]))
                # Packed panels hold zeros past N, so every column loads as is (a masked load
                # costs a vector ALU slot beside the load); B read at its source cannot.
                padded = ir.Constant(I1, 0) if packing else t.padded
                uk = kernels.pick(b, rows, packing, b.not_(direct_a), b.or_(full, padded))
                # Widest first, so the narrowest family that holds the panel is chosen.
                for width, family in reversed(kernels.narrow):
                    cols = ir.Constant(I64, width)
                    uk = b.select(b.icmp_signed("<=", n_valid, cols),
                                  family.pick_narrow(b, rows, packing, b.or_(
                                      b.icmp_signed("==", n_valid, cols), padded)), uk)
                # The packing variant reads B at its source and writes the panel as it goes.
                b.call(uk, [t.kb, a_ptr, a_si, a_sk, *bsrc, c_tile, t.sc_m, *tail]
                       + ([bpj] if packing else []))

            def tiles(b: ir.IRBuilder, packs_a: bool) -> None:
                def micro(b: ir.IRBuilder, ir_: ir.Value, _c: list) -> list:
                    call(b, cfg.mr, ir_, False, packs_a)
                    return []

                # A fused-packing task has at least mr rows: its first row block starts with
                # a full row tile, which packs this panel of B.
                packs_here = b.and_(t.fused_pack, b.icmp_signed("==", ic, m0))
                with b.if_then(packs_here):
                    call(b, cfg.mr, ic, True, packs_a)
                start = b.select(packs_here, b.add(ic, mr), ic)
                emit_loop(b, start, full_end, micro, step=cfg.mr, name="mtile")
                # Row edge: rem = i1 - full_end < mr rows as a sum of power-of-two kernels.
                rem = b.sub(i1, full_end)
                for rows in kernels.edge_rows:
                    has = b.icmp_unsigned("!=", b.and_(rem, ir.Constant(I64, rows)),
                                          ir.Constant(I64, 0))
                    with b.if_then(has, likely=False):
                        off = b.and_(rem, ir.Constant(I64, ~(2 * rows - 1)))
                        call(b, rows, b.add(full_end, off), False, packs_a)

            if not may_fuse_a:
                tiles(b, False)
                return []
            with b.if_else(b.and_(fused_a, b.icmp_signed("==", jp, ir.Constant(I64, 0)))) \
                    as (first_panel, other):
                with first_panel:
                    tiles(b, True)
                with other:
                    tiles(b, False)
            return []

        emit_loop(b, ir.Constant(I64, 0), npanels, panel, name="npanel")
        return []

    emit_loop(b, m0, m1, row_block, step=cfg.mc, name="mblock")


# ---------------------------------------------------------------------------------------------
# calling a compiled GEMM from Python (tests, benchmarks)


def gemm_ctypes_signature(config: GemmConfig) -> list:
    """ctypes argument types of the fixed GEMM arguments (append the epilogue's own)."""
    import ctypes

    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    return [i64] * 4 + [ptr, i64, i64, i64] * 2 + [ptr, i64, i64, ctypes.c_int32, ptr, ptr,
                                                  ctypes.c_int32]


def gemm_numpy_args(a, b, c, nthreads: int = 1, workspace: int | None = None,
                    bpre: int | None = None, bpre_fill: bool = False) -> list:
    """Fixed GEMM arguments for numpy arrays a [batch, M, K], b [batch, K, N], c [batch, M, N]
    (any strides for a and b, including 0 = broadcast; c's last axis contiguous); `bpre`: the
    address of a 64-byte aligned prepacked-B buffer (`prepacked_b_elements`), filled first when
    `bpre_fill`."""
    es = c.itemsize
    if a.dtype != c.dtype or b.dtype != c.dtype or (c.size > 1 and c.strides[2] != es):
        raise GraphError(f"gemm_numpy_args: dtypes {a.dtype}, {b.dtype}, {c.dtype} must agree "
                         f"and C's last axis must be contiguous (strides {c.strides})")
    batch, m, k = a.shape
    n = b.shape[2]
    if b.shape[:2] != (batch, k) or c.shape != (batch, m, n):
        raise GraphError(f"gemm_numpy_args: shapes {a.shape} @ {b.shape} -> {c.shape} disagree")
    sa, sb, sc = ([s // es for s in x.strides] for x in (a, b, c))
    return [batch, m, n, k, a.ctypes.data, *sa, b.ctypes.data, *sb, c.ctypes.data, sc[0], sc[1],
            nthreads, workspace, bpre, int(bpre_fill)]
