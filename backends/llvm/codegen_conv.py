"""Register-blocked direct convolution (1-D and 2-D, stride 1 along the row, any padding,
dilation and groups) with the kernel-IR epilogue fused, in explicit vector IR.

Note: the tile
--------------
The output [N, O, (OH,) OW] is cut into tiles of OB output channels x one output row x WB
columns (WB = nv vectors of `lanes` columns, nv <= 4). A tile keeps OB·nv accumulators in
vector registers (OB·nv <= 24 of the 32 zmm registers) and for every input channel c of its
group, kernel row kh and kernel column kw:

    xv[j]  = x[n, c, ih, ow0 + j·lanes + kw·dw - pad_w + lane]    (masked where the column is
                                                                  outside [0, W): padding)
    acc[r][j] = fma(broadcast(w[o0 + r, c, kh, kw]), xv[j], acc[r][j])

so every x vector feeds OB FMAs and every weight nv FMAs: FMA-bound, like a GEMM microkernel,
without materializing im2col. A kernel row whose input row ih lies in the padding is skipped
as a whole. Tiles are the tasks of the parallel-for, ordered (n, group, channel block, row,
column block) so consecutive tasks reuse one channel block's weights from cache. A last
channel block with fewer than OB channels uses a copy of the tile code for that count.
A thread claims a run of consecutive tiles, up to a channel block's whole plane (`conv_code`).

The epilogue (bias, activation, residual, several outputs) runs per accumulator vector in
vector mode (`VectorEmitter` over the last output variable), stores masked at the row's end.

Note: plane tiles
-----------------
Output rows of at most half a vector (a ResNet's 8x8 stage) would leave most lanes of a row
tile idle. There a vector spans R whole output rows, lane j holding row j // OW, column
j % OW, and the tile covers nv·R rows. At stride 1 with rows as long as the input's
(same padding), the R input rows a vector reads lie back to back in x: one load per kernel
tap, masked per lane at the borders (column j % OW + kw·dw - pad_w, row oh + j // OW + ...).
At row stride 2, R = 2 and each of the two input rows is loaded on its own; the vector takes
the even lanes of both. The epilogue sees the lanes as columns col0 .. col0 + lanes - 1 of
row oh, running on into the next rows, so it applies only when every position it reads
or writes depends on the plane through its flat index p0·OW + p1 (a bias, a residual; not a
per-column value). One thread, 8 images: 128 channels 3x3 at 8x8 84 -> 133 GFLOP/s; the
stride-2 64 -> 128 channel convolution from 16x16 0.98 -> 0.54 ms.

Applies to f32/f64 convolutions with stride 1 or 2 and no lhs dilation along the row and
kernel width <= 8. With stride 2 an output vector takes the even lanes of two input vectors
(the stem of a MobileNet-style net, 3 -> 16 channels at stride 2: 18 % of its time through
the generic template, now a tile like any other; the net 0.28 -> 0.24 ms, one thread).
Operands that are plain loads with affine positions (x contiguous along its last
axis) are read in place; any other operand (a fused prologue: a recomputed activation, a
cast) is first staged into scratch memory by a setup function that runs once, before the
parallel tiles. A tiny output plane under a kernel as wide as the input (a "same"
convolution's weight gradient) takes the tap tiles of `codegen_conv_taps` instead; everything
else uses `codegen_template.emit_conv_direct`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from llvmlite import ir

from graphc.ir.kernel import (
    Acc,
    Buffer,
    ConvKernel,
    IndexValue,
    Load,
    Operand,
    RandomUniform,
    ReduceRef,
    Var,
    kernel_reads,
    kernel_writes,
    linearize,
    walk,
)

from .codegen import KernelCode, KernelEnv, ParamEpoch
from .codegen_expr import BufferRef, ExprEmitter, VectorEmitter, element_ptr
from .codegen_gemm import (
    SCRATCH,
    Affine,
    Staged,
    _emit_staging,
    affine_position,
    staged_layout,
)
from .codegen_loop import CHUNK_WORK, PARALLEL_FLOPS
from .llvm_ir import (
    I32,
    I64,
    decode_row_major,
    emit_loop,
    for_range,
    if_update,
    intrinsic,
    llvm_type,
    masked_load,
    prefetch,
    splat,
)

PERSISTENT = "$persistent"  # the kernel's persistent region, past its 64-byte epoch slot
MAX_ACCUMULATORS = 28
MAX_VECTORS = 4
MAX_KERNEL_WIDTH = 8
MIN_CHUNKS = 64  # parallel claims a convolution keeps at least (load balance across threads)
# Strides along the row the tiles handle: 2 loads two vectors of the input row and keeps their
# even lanes (a downsampling convolution, a network's stem)
ROW_STRIDES = (1, 2)


@dataclass(frozen=True)
class ConvPlan:
    dtype: str
    lanes: int
    x: Affine
    w: Affine
    rank: int          # spatial rank (1 or 2)
    nv: int            # vectors per tile row
    ob: int            # output channels per tile
    o_blocks: int      # channel blocks per group
    w_blocks: int      # column blocks per row
    attrs: Mapping[str, Any]
    staged: tuple[Staged, ...] = ()  # operands computed into scratch before the tiles
    scratch_elements: int = 0
    plane_rows: int = 0  # > 0: plane tiles, each vector this many whole output rows (note)
    # (parameter, layout tag, bytes): the weights staged by channel once per parameter epoch
    persistent: tuple[str, str, int] | None = None
    by_channel: Staged | None = None  # how they are staged (into the persistent region)

    @property
    def block_width(self) -> int:
        return self.nv * self.lanes


def plan_conv(k: ConvKernel, buffers: Mapping[str, Buffer], vector_bits: int
              ) -> ConvPlan | None:
    """A ConvPlan when the kernel fits the register-blocked path (module note), else None."""
    a = dict(k.attrs)
    dtype = k.acc_dtype
    rank = len(k.out_shape) - 2
    if dtype not in ("f32", "f64") or rank not in (1, 2):
        return None
    if a["stride"][-1] not in ROW_STRIDES or a["lhs_dilation"][-1] != 1 \
            or k.w.shape[-1] > MAX_KERNEL_WIDTH:
        return None
    if rank == 2 and a["lhs_dilation"][0] != 1:
        return None
    shapes = {n: b.type.shape for n, b in buffers.items()}
    operands = conv_operands(k, buffers)
    if operands is None:
        return None
    x, w, staged, scratch = operands
    lanes = vector_bits // (32 if dtype == "f32" else 64)
    opg = k.out_shape[1] // a["groups"]
    steps = math.prod(k.w.shape[1:])
    registers = 32 if vector_bits >= 512 else 16
    rows = plane_rows(k, x, lanes, shapes)
    if rows:  # the plane as one long row of rows·OW-lane vectors
        nv, ob = tile_shape(-(-k.out_shape[2] // rows) * lanes, opg, lanes, steps, registers)
        w_blocks = 1
    else:
        nv, ob = tile_shape(k.out_shape[-1], opg, lanes, steps, registers)
        w_blocks = -(-k.out_shape[-1] // (nv * lanes))
    w, persistent, by_channel, scratch = stage_weights_by_channel(k, w, buffers, staged,
                                                                  scratch, dtype)
    return ConvPlan(dtype, lanes, x, w, rank, nv, ob, -(-opg // ob), w_blocks, a,
                    tuple(staged), scratch, rows, persistent, by_channel)


def stage_weights_by_channel(k: ConvKernel, w: Affine, buffers: Mapping[str, Buffer],
                             staged: list[Staged], scratch: int, dtype: str, force: bool = False
                             ) -> tuple[Affine, tuple[str, str, int] | None, Staged | None, int]:
    """Where the tiles read the weights: staged as [C, *kernel, O] (the output channel
    innermost: a step's weights are adjacent) where `_weights_by_channel` says it pays or
    `force` asks, a parameter's copy kept from one call to the next in the kernel's persistent
    region. Returns (weights, persistent region, its staging, scratch elements)."""
    kept = w.buffer != SCRATCH and buffers[w.buffer].kind == "param"
    if not force and (w.buffer == SCRATCH or not _weights_by_channel(k, w, kept)):
        return w, None, None, scratch
    if force and w.stride(k.w.vars[0]) == 1:
        return w, None, None, scratch
    order = k.w.vars[1:] + k.w.vars[:1]
    if kept:
        esize = 4 if dtype == "f32" else 8
        tag = (f"conv.{dtype}.by_channel.{k.w.shape}.at{w.offset}."
               + ".".join(str(w.stride(v)) for v in k.w.vars))
        place, by_channel, size = staged_layout("w", k.w, order, PERSISTENT, 0)
        return place, (w.buffer, tag, 64 + size * esize), by_channel, scratch
    place, st, size = staged_layout("w", k.w, order, SCRATCH, scratch)
    staged.append(st)
    return place, None, None, scratch + -(-size // 16) * 16


def conv_operands(k: ConvKernel, buffers: Mapping[str, Buffer],
                  forward: tuple[str, ...] = ("x",),
                  operands: tuple[Operand, Operand] | None = None
                  ) -> tuple[Affine, Affine, list[Staged], int] | None:
    """(x, w, staged, scratch elements): where the tiles read each operand (`operands`, else
    the kernel's). Plain loads with affine positions are read in place; any other operand (a
    fused prologue: a recomputed relu, a pad) is staged into scratch first, and so is an
    operand named in `forward` that is read backwards along its last axis (a reversed map).
    None where the tiles do not apply (x not contiguous along its row, an f16 output, a
    prologue that reads a reduction)."""
    dtype = k.acc_dtype
    shapes = {n: b.type.shape for n, b in buffers.items()}
    ops, staged, scratch = [], [], 0
    for name, opnd in zip(("x", "w"), operands or (k.x, k.w), strict=True):
        v = opnd.value
        aff = None
        if isinstance(v, Load) and not v.mask and v.dtype == dtype:
            aff = affine_position(v.buffer, v.index, shapes[v.buffer])
            if aff is not None and name in forward and aff.stride(opnd.vars[-1]) < 0:
                aff = None
        if aff is None:
            if any(isinstance(e, (Acc, ReduceRef, RandomUniform)) for e in walk([v])):
                return None
            aff, st, size = staged_layout(name, opnd, opnd.vars, SCRATCH, scratch)
            staged.append(st)
            scratch += -(-size // 16) * 16
        ops.append(aff)
    x, w = ops
    if x.stride(k.x.vars[-1]) != 1:
        return None
    if any(buffers[s.buffer].type.dtype == "f16" for s in k.stores):
        return None
    return x, w, staged, scratch


def _weights_by_channel(k: ConvKernel, w: Affine, kept: bool) -> bool:
    """Whether to stage the weights as [C, *kernel, O] before the tiles (`kept`: a parameter
    read in place, whose staged copy lasts while the parameters do). A step broadcasts one
    weight per output channel of the tile; laid out [O, C, *kernel] those lie a whole filter
    apart, one cache line each, reused only across the filter's taps, all of them when the
    filter is contiguous. Where it is not (a transposed convolution's phase reads every other
    tap of the flipped kernel) each line serves a quarter of the steps: staged, the DCGAN
    generator's 4x4 stride-2 layers took 5.5 ms for the net instead of 6.8 (one thread).
    Contiguous filters, one thread, 8 images: staged once and kept, 64 channels at 16x16
    0.98 -> 0.87 ms, 128 at 14x14 3.2 -> 3.0 ms, the rest level; staged on every call (the
    parameters change every training step) from +7 % to -14 % (32 channels at 12x12), so a
    kept copy is made only over enough output points to repay a pass per call too."""
    points = k.out_shape[0] * math.prod(k.out_shape[2:])
    kernel = k.w.shape[2:]
    compact = all(n == 1 or w.stride(k.w.vars[2 + i]) == math.prod(kernel[i + 1:])
                  for i, n in enumerate(kernel))
    return (points >= 128 and not compact) or (kept and points >= 2048)


def plane_rows(k: ConvKernel, x: Affine, lanes: int,
                shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Output rows per vector for plane tiles (module note), 0 where row tiles apply: 2-D
    output rows of at most half a vector, and an epilogue that reads the output plane only
    through its flat position (the vector's lanes run across rows). At stride 1 the output
    rows are as long as the input rows, which x holds back to back; at row stride 2 a
    vector holds two output rows, each the even lanes of one input row's load."""
    a = dict(k.attrs)
    if len(k.out_shape) != 4:
        return 0
    ow = k.out_shape[3]
    if 2 * ow > lanes:
        return 0
    if tuple(a["stride"]) == (1, 1):
        if ow != k.x.shape[3] or x.stride(k.x.vars[2]) != ow:
            return 0
        rows = lanes // ow
    elif a["stride"][1] == 2:
        rows = 2
    else:
        return 0
    p0, p1 = k.out_vars[2:]
    for e in walk([s.value for s in k.stores]):
        if isinstance(e, IndexValue) and {p0, p1} & e.index.var_names():
            return 0
        if isinstance(e, Load) and (e.mask or not _flat_in_plane(e.index, shapes[e.buffer],
                                                                 p0, p1, ow)):
            return 0
    if not all(_flat_in_plane(s.index, shapes[s.buffer], p0, p1, ow) for s in k.stores):
        return 0
    return rows


def _flat_in_plane(index, shape, p0: str, p1: str, ow: int) -> bool:
    """Whether a position reads the plane only as p0·ow + p1 (times a constant) and without
    divisions: then p1 may run past the row into the next ones."""
    flat = linearize(tuple(index), tuple(shape))
    coef = {a.name: c for a, c in flat.terms if isinstance(a, Var)}
    if any(not isinstance(a, Var) and {p0, p1} & a.arg.var_names() for a, _ in flat.terms):
        return False
    return coef.get(p0, 0) == ow * coef.get(p1, 0)


def tile_shape(ow: int, opg: int, lanes: int, steps: int, registers: int) -> tuple[int, int]:
    """(vectors per row, output channels) of the tile that computes the output plane in the
    fewest estimated cycles. The accumulators, the row's input vectors and the broadcast weight
    must fit the vector registers: 7 channels of 4 vectors (28 accumulators + 5) spilled,
    halving the speed of a 16-channel 3x3 convolution at 64x64 (85 -> 166 GFLOP/s, one thread,
    as 6 + 6 + 4 channels). Channel blocks are balanced (16 as 6, 6, 4, not 7, 7, 2). A step
    (one input channel and kernel tap) costs the larger of its FMAs and its loads, two per
    cycle each; a tile also pays a fixed cost (its setup and epilogue)."""
    best: tuple[float, int, int] | None = None
    for nv in range(1, min(MAX_VECTORS, -(-ow // lanes)) + 1):
        ob_max = min(opg, MAX_ACCUMULATORS // nv, (registers - 1 - nv) // nv)
        if ob_max < 1:
            continue
        blocks = -(-opg // ob_max)
        ob = -(-opg // blocks)
        sizes = [ob] * (blocks - 1) + [opg - ob * (blocks - 1)]
        columns = -(-ow // (nv * lanes))
        cost = columns * sum(steps * max(r * nv, r + nv) / 2 + 40 + 2 * r * nv for r in sizes)
        if best is None or cost < best[0]:
            best = (cost, nv, ob)
    if best is None:
        return 1, 1
    return best[1], best[2]


def conv_code(k: ConvKernel, plan: ConvPlan) -> KernelCode:
    out = k.out_shape
    oh = _row_steps(k, plan)
    groups = plan.attrs["groups"]
    tasks = out[0] * groups * plan.o_blocks * oh * plan.w_blocks
    tile_work = 2 * plan.ob * plan.block_width * math.prod(k.w.shape[1:])
    work = 2 * math.prod(out) * math.prod(k.w.shape[1:])
    # A thread claims consecutive rows of one channel block (up to a whole plane, while the
    # kernel keeps at least MIN_CHUNKS claims to share out): neighbouring rows read mostly the
    # same input rows, which one-tile claims dealt out to alternate threads (two threads,
    # conv 3x3 N=32 C=64 32x32 + bias + relu: 7.4 -> 6.9 ms).
    plane = oh * plan.w_blocks
    grain = max(1, -(-CHUNK_WORK // max(tile_work, 1)), min(plane, tasks // MIN_CHUNKS))
    names = tuple(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))

    setup = staging_setup(k, plan)
    esize = 4 if plan.dtype == "f32" else 8
    return KernelCode(names, tasks if math.prod(out) else 0, grain,
                      work >= PARALLEL_FLOPS and tasks > grain,
                      lambda env: emit_conv_tiles(k, plan, env),
                      notes={"conv": "blocked", "tile": [plan.ob, plan.block_width],
                             "plane_rows": plan.plane_rows,
                             "weights_by_channel": plan.persistent is not None,
                             "staged": [st.name for st in plan.staged]},
                      scratch_bytes=plan.scratch_elements * esize,
                      setup=setup,
                      persistent=plan.persistent)


def staging_setup(k: ConvKernel, plan: ConvPlan):
    """The function that stages the plan's operands before the tiles (None when none is):
    prologues into scratch on every call, the weights by channel when the parameters changed
    since they were last staged."""
    if not (plan.staged or plan.by_channel):
        return None

    def setup(env: KernelEnv) -> None:
        for st in plan.staged:
            _emit_staging(st, plan.dtype, env, k.extents(), plan.lanes)
        if plan.by_channel is not None:
            b = env.builder
            params = ParamEpoch.of(b, env.status, env.persistent)
            with b.if_then(params.stale(b)):
                _emit_staging(plan.by_channel, plan.dtype,
                              replace(env, scratch=b.gep(env.persistent, [_i64(64)])),
                              k.extents(), plan.lanes)
                params.derived(b)

    return setup


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _row_steps(k: ConvKernel, plan: ConvPlan) -> int:
    """Tiles along the output rows: one per row, or per nv·rows rows for plane tiles."""
    if plan.plane_rows:
        return -(-k.out_shape[2] // (plan.nv * plan.plane_rows))
    return k.out_shape[2] if plan.rank == 2 else 1


def emit_conv_tiles(k: ConvKernel, plan: ConvPlan, env: KernelEnv) -> None:
    b = env.builder
    out = k.out_shape
    groups = plan.attrs["groups"]
    opg = out[1] // groups
    oh_n = _row_steps(k, plan)
    dims = [("n", out[0]), ("g", groups), ("ob", plan.o_blocks), ("oh", oh_n),
            ("wb", plan.w_blocks)]
    rem = opg - (plan.o_blocks - 1) * plan.ob
    with for_range(b, env.lo, env.hi, name="tile") as t:
        idx = decode_row_major(b, t, dims)
        o0 = b.add(b.mul(idx["g"], _i64(opg)), b.mul(idx["ob"], _i64(plan.ob)))
        c0 = b.mul(idx["g"], _i64(k.w.shape[1]))
        ow0 = b.mul(idx["wb"], _i64(plan.block_width))
        oh0 = (b.mul(idx["oh"], _i64(plan.nv * plan.plane_rows)) if plan.plane_rows
               else idx["oh"])
        tile = _Tile(k, plan, env, idx["n"], o0, c0, oh0, ow0)
        if rem == plan.ob:
            tile.emit(plan.ob)
        else:
            full = b.icmp_unsigned("<", idx["ob"], _i64(plan.o_blocks - 1))
            with b.if_else(full) as (then, otherwise):
                with then:
                    tile.emit(plan.ob)
                with otherwise:
                    tile.emit(rem)


def operand_ref(aff: Affine, env: KernelEnv, dtype: str) -> BufferRef:
    """The buffer a tile reads an operand from: its own, the scratch it was staged into, or
    the persistent copy of the weights."""
    if aff.buffer == PERSISTENT:
        return BufferRef(PERSISTENT, dtype, (), False,
                         env.builder.gep(env.persistent, [_i64(64)]))
    if aff.buffer != SCRATCH:
        return env.buffers[aff.buffer]
    return BufferRef(SCRATCH, dtype, (), False, env.scratch)


class _Tile:
    """Emits one tile of `rows` output channels at (n, o0, oh, ow0)."""

    def __init__(self, k: ConvKernel, plan: ConvPlan, env: KernelEnv, n, o0, c0, oh, ow0):
        self.k, self.plan, self.env = k, plan, env
        self.n, self.o0, self.c0, self.oh, self.ow0 = n, o0, c0, oh, ow0
        self.t = llvm_type(plan.dtype)
        self.vty = ir.VectorType(self.t, plan.lanes)
        self.iota = ir.Constant(ir.VectorType(I64, plan.lanes), list(range(plan.lanes)))

    def _splat_i64(self, v: ir.Value) -> ir.Value:
        b = self.env.builder
        vty = self.iota.type
        one = b.insert_element(ir.Constant(vty, None), v, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(vty, None),
                                ir.Constant(ir.VectorType(I32, self.plan.lanes),
                                            [0] * self.plan.lanes))

    def emit(self, rows: int) -> None:
        b, plan, k = self.env.builder, self.plan, self.k
        a = plan.attrs
        xs = k.x.shape
        width, kw_n = xs[-1], k.w.shape[-1]
        dw, pw = a["rhs_dilation"][-1], a["padding"][2 * (plan.rank - 1)]
        # column masks, one per (kernel column, vector): inside the input row
        # (with a row stride of 2: one per input vector of the pair each output vector reads)
        sw = a["stride"][-1]
        masks = []
        if plan.plane_rows and sw == 1:  # lane -> column lane % OW, the same in every vector
            cols0 = ir.Constant(self.iota.type, [j % width for j in range(plan.lanes)])
        else:
            cols0 = b.add(self._splat_i64(b.mul(self.ow0, _i64(sw))), self.iota)
        self.step = k.out_shape[-1] * plan.plane_rows or plan.lanes  # outputs per vector
        sh = a["stride"][0]
        # where load j starts, past the tile's first input row and column
        self.load_at = ([j * plan.lanes for j in range(plan.nv * sw)] if not plan.plane_rows
                        else [j * self.step for j in range(plan.nv)] if sw == 1
                        else [(j // 2 * plan.plane_rows + j % 2) * sh
                              * plan.x.stride(k.x.vars[2]) for j in range(2 * plan.nv)])
        for kw in range(kw_n):
            per_kw = []
            for j in range(plan.nv * sw):
                shift = kw * dw - pw if plan.plane_rows else j * plan.lanes + kw * dw - pw
                cols = b.add(cols0, splat(self.iota.type, shift))
                per_kw.append(b.and_(b.icmp_signed(">=", cols, splat(self.iota.type, 0)),
                                     b.icmp_signed("<", cols, splat(self.iota.type, width))))
            masks.append(per_kw)
        x_ref, w_ref = (operand_ref(aff, self.env, plan.dtype) for aff in (plan.x, plan.w))
        xv, wv = k.x.vars, k.w.vars
        x_base = b.add(_i64(plan.x.offset), b.mul(self.n, _i64(plan.x.stride(xv[0]))))
        w_base = b.add(_i64(plan.w.offset), b.mul(self.o0, _i64(plan.w.stride(wv[0]))))
        zero = splat(self.vty, 0.0)
        fma = intrinsic(b.module, "llvm.fma", self.vty)

        def channel(bb: ir.IRBuilder, c: ir.Value, accs: list) -> list:
            cg = b.add(self.c0, c)
            xc = b.add(x_base, b.mul(cg, _i64(plan.x.stride(xv[1]))))
            wc = b.add(w_base, b.mul(c, _i64(plan.w.stride(wv[1]))))
            if plan.rank == 1:
                return self._taps(xc, wc, accs, rows, masks, x_ref, w_ref, fma)
            dh, ph, sh = a["rhs_dilation"][0], a["padding"][0], a["stride"][0]

            def krow(bb: ir.IRBuilder, kh: ir.Value, accs: list) -> list:
                ih = b.sub(b.add(b.mul(self.oh, _i64(sh)), b.mul(kh, _i64(dh))), _i64(ph))
                xr = b.add(xc, b.mul(ih, _i64(plan.x.stride(xv[2]))))
                wr = b.add(wc, b.mul(kh, _i64(plan.w.stride(wv[2]))))
                if plan.plane_rows:  # rows differ across lanes: the row test is a mask
                    return self._taps(xr, wr, accs, rows, self._row_masks(ih, masks), x_ref,
                                      w_ref, fma)
                ok = b.and_(b.icmp_signed(">=", ih, _i64(0)),
                            b.icmp_signed("<", ih, _i64(xs[2])))
                return if_update(b, ok, accs, lambda _b, _v: self._taps(
                    xr, wr, accs, rows, masks, x_ref, w_ref, fma))

            return emit_loop(b, _i64(0), _i64(k.w.shape[2]), krow, accs, name="kh")

        self._prefetch_outputs(rows)
        accs = emit_loop(b, _i64(0), _i64(k.w.shape[1]), channel, [zero] * (rows * plan.nv),
                         name="cin")
        self._epilogue(rows, accs)

    def _row_masks(self, ih: ir.Value, masks: list) -> list:
        """`masks` (per kernel column and vector) narrowed, for plane tiles, to the lanes
        whose output row exists and reads input row ih + lane // OW inside the input."""
        b, plan = self.env.builder, self.plan
        width, height, out_h = self.k.x.shape[3], self.k.x.shape[2], self.k.out_shape[2]
        out = [list(m) for m in masks]
        if plan.attrs["stride"][1] == 2:  # one input row per load: a scalar test each
            sh = plan.attrs["stride"][0]
            for j in range(2 * plan.nv):
                off = j // 2 * plan.plane_rows + j % 2
                r_in = b.add(ih, _i64(off * sh))
                ok = b.and_(b.icmp_signed("<", b.add(self.oh, _i64(off)), _i64(out_h)),
                            b.and_(b.icmp_signed(">=", r_in, _i64(0)),
                                   b.icmp_signed("<", r_in, _i64(height))))
                lanes_ok = b.icmp_signed("!=", self._splat_i64(b.zext(ok, I64)),
                                         splat(self.iota.type, 0))
                for per_kw in out:
                    per_kw[j] = b.and_(per_kw[j], lanes_ok)
            return out
        rows_in = ir.Constant(self.iota.type, [j // width if j < width * plan.plane_rows
                                               else out_h for j in range(plan.lanes)])
        for j in range(plan.nv):
            shift = j * plan.plane_rows
            r_out = b.add(rows_in, self._splat_i64(b.add(self.oh, _i64(shift))))
            r_in = b.add(rows_in, self._splat_i64(b.add(ih, _i64(shift))))
            ok = b.and_(b.icmp_signed("<", r_out, splat(self.iota.type, out_h)),
                        b.and_(b.icmp_signed(">=", r_in, splat(self.iota.type, 0)),
                               b.icmp_signed("<", r_in, splat(self.iota.type, height))))
            for per_kw in out:
                per_kw[j] = b.and_(per_kw[j], ok)
        return out

    def _prefetch_outputs(self, rows: int) -> None:
        """Prefetch the tile's output lines for writing before its channel loop: they lie a
        plane apart (a row per output channel), and the epilogue's stores would otherwise
        wait at the end of the tile for each line's ownership (one thread, N=32 C=64 32x32:
        +2 %; nothing changes while the output fits in cache)."""
        b, plan, k = self.env.builder, self.plan, self.k
        line = 64 // (4 if plan.dtype == "f32" else 8)
        span = plan.nv * self.step if plan.plane_rows else plan.block_width
        for r in range(rows):
            for off in range(0, span, line):
                ev = ExprEmitter(b, self.env.buffers, k.extents(),
                                 self._out_env(r, b.add(self.ow0, _i64(off))))
                for st in k.stores:
                    prefetch(b, element_ptr(b, self.env.buffers[st.buffer],
                                            ev.linear(st.buffer, st.index), inbounds=False),
                             write=True)

    def _out_env(self, r: int, col: ir.Value) -> dict[str, ir.Value]:
        """The output variables at the tile's channel `r` and column `col`."""
        env = {"n": self.n, "o": self.env.builder.add(self.o0, _i64(r)), self.k.out_vars[-1]: col}
        if self.plan.rank == 2:
            env["p0"] = self.oh
        return env

    def _taps(self, xrow, wrow, accs, rows, masks, x_ref, w_ref, fma) -> list:
        """The kernel columns of one (channel, kernel row): nv vector loads and rows
        broadcasts per column, rows x nv FMAs."""
        b, plan, k = self.env.builder, self.plan, self.k
        a = plan.attrs
        dw, pw = a["rhs_dilation"][-1], a["padding"][2 * (plan.rank - 1)]
        wv = k.w.vars
        sw = a["stride"][-1]
        accs = list(accs)
        row_start = b.add(xrow, b.sub(b.mul(self.ow0, _i64(sw)), _i64(pw)))
        even = list(range(0, 2 * plan.lanes, 2))
        if plan.plane_rows and sw == 2:  # a row's outputs from each of the pair's loads
            ow = k.out_shape[-1]
            even = ([2 * c for c in range(ow)] + [plan.lanes + 2 * c for c in range(ow)]
                    + [0] * (plan.lanes - 2 * ow))
        even = ir.Constant(ir.VectorType(I32, plan.lanes), even)
        for kw in range(k.w.shape[-1]):
            loaded = []
            for j in range(plan.nv * sw):
                pos = b.add(row_start, _i64(self.load_at[j] + kw * dw))
                ptr = b.bitcast(element_ptr(b, x_ref, pos, inbounds=False),
                                self.vty.as_pointer())
                loaded.append(masked_load(b, ptr, masks[kw][j], self.vty,
                                          align=4 if plan.dtype == "f32" else 8))
            xvals = loaded if sw == 1 else [
                b.shuffle_vector(loaded[2 * j], loaded[2 * j + 1], even) for j in range(plan.nv)]
            wk = b.add(wrow, _i64(kw * plan.w.stride(wv[-1])))
            for r in range(rows):
                wptr = element_ptr(b, w_ref, b.add(wk, _i64(r * plan.w.stride(wv[0]))))
                wb = self._broadcast(b.load(wptr))
                for j in range(plan.nv):
                    idx = r * plan.nv + j
                    accs[idx] = b.call(fma, [wb, xvals[j], accs[idx]])
        return accs

    def _broadcast(self, v: ir.Value) -> ir.Value:
        b = self.env.builder
        one = b.insert_element(ir.Constant(self.vty, None), v, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(self.vty, None),
                                ir.Constant(ir.VectorType(I32, self.plan.lanes),
                                            [0] * self.plan.lanes))

    def _epilogue(self, rows: int, accs: list) -> None:
        b, plan, k = self.env.builder, self.plan, self.k
        ow_n = k.out_shape[-1]
        last = k.out_vars[-1]
        for r in range(rows):
            for j in range(plan.nv):
                col0 = b.add(self.ow0, _i64(j * self.step))
                if plan.plane_rows:  # col0 runs on through the plane's rows (`plane_rows`)
                    flat = b.add(self._splat_i64(b.add(b.mul(self.oh, _i64(ow_n)), col0)),
                                 self.iota)
                    lane_ok = b.and_(
                        b.icmp_signed("<", self.iota, splat(self.iota.type, self.step)),
                        b.icmp_signed("<", flat, splat(self.iota.type, ow_n * k.out_shape[2])))
                else:
                    lane_ok = b.icmp_signed("<", b.add(self._splat_i64(col0), self.iota),
                                            splat(self.iota.type, ow_n))
                ev = VectorEmitter(b, self.env.buffers, k.extents(), self._out_env(r, col0),
                                   last, plan.lanes, lane_ok)
                ev.acc = accs[r * plan.nv + j]
                for st in k.stores:
                    ev.vstore(st.buffer, st.index, ev(st.value))



