"""Channel-lane tiles: convolutions whose output plane is small next to their channel count, in
explicit vector IR, with the kernel-IR epilogue fused.

Note: where they apply and why
------------------------------
The row and plane tiles of `codegen_conv` put output positions in the vector lanes and
broadcast one weight per output channel. A ResNet's last stages have few positions and many
channels (512 channels at 4x4 or 7x7): a plane is one or a few vectors, so every broadcast
weight feeds a single FMA and the tile runs at about half the FMA rate (one thread, 8 images:
512 -> 512 channels 3x3 at 4x4 64 GFLOP/s, at 7x7 50; the stride-2 256 -> 512 at 8x8 46).

Here the lanes run over output channels instead, as in a GEMM over the implicit im2col
matrix: a tile is up to 28 output positions (part of one image's plane, balanced: 49 as 25 +
24; or, for planes of at most 14 positions, the whole planes of several images: a 3x3 plane
x 3 images, a 1x1 plane x 28) x one vector of output channels, one accumulator per position.
For every input channel c and kernel tap (kh, kw) it loads the weight vector
w[c, kh, kw, o0 : o0 + lanes] (the weights are staged with the output channel innermost,
kept across calls for parameters) and broadcasts one input element per position:

    acc[p] = fma(broadcast(x[n_p, c, oh_p·sh + kh·dh, ow_p·sw + kw·dw]), w, acc[p])

so every weight vector feeds as many FMAs as the tile has positions, whatever the plane's
shape. The weights one tile reads, a vector per step (295 KB for 512 channels 3x3), stay in
L2 for the tiles after it: tasks run channel block by channel block. Wider tiles (2, 3 or 4
vectors of channels x 12, 8 or 6 positions) read a wider panel for the same FMAs and
measured slower or level at every shape tried (512 channels at 4x4, 8 images, one thread:
103 GFLOP/s against 96, 93 and 78). Each position of a plane has a base address of its own,
opaque to LLVM: positions a known distance apart read each other's taps, and LLVM merged
those loads and spilled them. Padding costs no mask: the input is first copied into scratch
with a zero border (a small pass: the input is small where these tiles apply; negative
padding crops), where every tap of every position is a plain load. The epilogue stores each
accumulator as the lanes channels of one position (a scatter along the channel axis, once
per tile).

Weights that the graph replaces on every call (a training step's parameters, `new.<param>`
among its outputs) are not kept: each task that starts a channel block stages that block's
panel, [C, *kernel, lanes], into scratch of its own by register transposes, and the block's
tiles read it from L2. Chunks of tasks are whole blocks, so every panel is staged once, by
the thread that computes it. ResNet-18's last stage trained with 8 images: two threads
41.9 -> 38.0 ms (the whole staging ran serially before the tiles, 9.4 MB read and written
per 512 x 512 x 3 x 3 weight); one thread level (72.6 against 72.8).

One thread, 8 images, against the plane tiles: 512 -> 512 channels 3x3 at 4x4 64 -> 107
GFLOP/s, at 7x7 72 -> 107, the stride-2 256 -> 512 from 8x8 44 -> 102, 256 channels at 8x8
98 -> 105, 64 channels at 8x8 (32 images) level, hence the bounds of `prefer_lanes`. In a
ResNet stage's training step: the weight gradient of the stride-2 convolution (a 3x3 plane,
where row tiles filled 3 of 16 lanes) 13.5 -> 4.5 ms, that of the 1x1 stride-2 shortcut (a
1x1 plane) 5.7 -> 0.44 ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from llvmlite import ir

from graphc.ir.kernel import Buffer, ConvKernel, kernel_reads, kernel_writes

from .codegen import KernelCode, KernelEnv
from .codegen_conv import (
    ConvPlan,
    conv_operands,
    operand_ref,
    plane_rows,
    stage_weights_by_channel,
    staging_setup,
)
from .codegen_expr import BufferRef, VectorEmitter, element_ptr
from .codegen_gemm import SCRATCH, Affine, staged_layout
from .codegen_loop import CHUNK_WORK, PARALLEL_FLOPS
from .llvm_ir import (
    I1,
    I64,
    decode_row_major,
    emit_loop,
    for_range,
    intrinsic,
    llvm_type,
    masked_load,
    masked_store,
    splat,
    vsplat,
)
from .staging_transpose import TransposePlan, emit_transposed, transpose_plan

MAX_POSITIONS = 28  # accumulators, with the weight vector and a broadcast in 32 registers
MAX_PLANE = 64
MIN_POSITIONS = 8
MAX_FILL = 0.5
MIN_VECTORS = 4
MIN_STEPS = 256


@dataclass(frozen=True)
class LanePlan:
    conv: ConvPlan      # operands, staging and the weights by channel
    pc: int             # output positions per tile and image
    m: int              # images per tile (whole planes of several images: small planes)
    o_blocks: int       # channel blocks per group
    p_blocks: int       # position blocks per image
    n_blocks: int       # image blocks
    pad_offset: int     # scratch elements before the zero-bordered input copy
    padded: tuple[int, ...]  # the copy's spatial shape
    slack: int          # zeroed elements past the copy, read by a last tile's missing images
    # weights the graph replaces every call, staged a channel block at a time by the task
    # that starts the block (`_panel_staging`), and where those panels start in the scratch
    panels: TransposePlan | None = None
    panel_offset: int = 0

    @property
    def mr(self) -> int:
        return self.m * self.pc

    @property
    def ob(self) -> int:
        """Output channels per tile: one vector (module note)."""
        return self.conv.lanes


def plan_lanes(k: ConvKernel, buffers: Mapping[str, Buffer], vector_bits: int,
               updated: frozenset[str] = frozenset()) -> LanePlan | None:
    """A LanePlan where channel-lane tiles apply and beat the row and plane tiles (module
    note), else None."""
    a = dict(k.attrs)
    dtype = k.acc_dtype
    rank = len(k.out_shape) - 2
    if dtype not in ("f32", "f64") or rank not in (1, 2) or vector_bits < 512:
        return None
    if any(d != 1 for d in a["lhs_dilation"]):
        return None
    lanes = vector_bits // (32 if dtype == "f32" else 64)
    opg = k.out_shape[1] // a["groups"]
    plane = math.prod(k.out_shape[2:])
    operands = conv_operands(k, buffers)
    if operands is None:
        return None
    x, w, staged, scratch = operands
    shapes = {n: b.type.shape for n, b in buffers.items()}
    (pc, p_blocks), (m, n_blocks) = tile_positions(k.out_shape[0], plane)
    if not prefer_lanes(plane, pc * m, opg, math.prod(k.w.shape[1:]), lanes,
                        blocked_fill(k, x, lanes, shapes)):
        return None
    blocks = -(-opg // lanes)
    panels = _panel_staging(k, w, updated, lanes)
    if panels is not None:
        steps = math.prod(k.w.shape[1:])
        panel_offset = scratch
        scratch += a["groups"] * blocks * steps * lanes
        # where a tile reads its panel: [C, *kernel, lanes] from the panel's start
        block = replace(k.w, shape=(lanes,) + k.w.shape[1:])
        w = staged_layout("w", block, k.w.vars[1:] + k.w.vars[:1], SCRATCH, 0)[0]
        persistent, by_channel = None, None
    else:
        panel_offset = 0
        w, persistent, by_channel, scratch = stage_weights_by_channel(
            k, w, buffers, staged, scratch, dtype, force=True)
    pads = a["padding"]
    padded = tuple(k.x.shape[2 + i] + pads[2 * i] + pads[2 * i + 1] for i in range(rank))
    image = k.x.shape[1] * math.prod(padded)
    slack = (m * n_blocks - k.out_shape[0]) * image
    pad_offset = scratch
    scratch += -(-(k.x.shape[0] * image + slack) // 16) * 16
    conv = ConvPlan(dtype, lanes, x, w, rank, 1, lanes, blocks, 1, a, tuple(staged),
                    scratch, 0, persistent, by_channel)
    return LanePlan(conv, pc, m, blocks, p_blocks, n_blocks, pad_offset, padded, slack,
                    panels, panel_offset)


def _panel_staging(k: ConvKernel, w: Affine, updated: frozenset[str], lanes: int
                   ) -> TransposePlan | None:
    """How to stage one channel block's weights, [C, *kernel, lanes], where the weights are a
    parameter the graph replaces on every call (a training step's) and their staging by
    channel is a batch of register transposes; else None.

    Kept across calls, a parameter's weights staged by channel cost nothing the next call;
    replaced every call, they were staged before the tiles, on one thread, 9.4 MB read and
    9.4 MB written past the caches for 512 x 512 x 3 x 3 weights, which the tiles then read
    back. A task that starts a channel block instead stages that block's panel (295 KB
    there) into its own scratch, where the block's tiles read it from L2: the staging runs
    on every thread, beside the FMAs of other blocks."""
    if w.buffer == SCRATCH or w.buffer not in updated:
        return None
    order = k.w.vars[1:] + k.w.vars[:1]
    st = staged_layout("w", k.w, order, SCRATCH, 0)[1]
    return transpose_plan(st, w, dict(zip(k.w.vars, k.w.shape, strict=True)))


def _split(n: int, most: int) -> tuple[int, int]:
    """n as parts of at most `most`, balanced: (part, parts); 64 as 22 + 22 + 20, not
    28 + 28 + 8."""
    parts = -(-n // most)
    return -(-n // parts), parts


def tile_positions(images: int, plane: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """A tile's positions: ((per image, blocks per plane), (images, image blocks)). A plane
    of at most half of MAX_POSITIONS is taken whole for several images, so a 3x3 plane still
    fills 27 accumulators and a 1x1 plane (a weight gradient's) 28."""
    pc, p_blocks = _split(plane, MAX_POSITIONS)
    if p_blocks > 1 or 2 * pc > MAX_POSITIONS:
        return (pc, p_blocks), (1, images)
    return (pc, 1), _split(images, MAX_POSITIONS // pc)


def blocked_fill(k: ConvKernel, x, lanes: int, shapes) -> float:
    """The share of vector lanes a row or plane tile of `codegen_conv` fills: a plane tile's
    vector spans whole output rows, a row tile's one row (3 of 16 lanes for a weight gradient's
    3x3 plane)."""
    rows = plane_rows(k, x, lanes, shapes)
    return min(1.0, (rows or 1) * k.out_shape[-1] / lanes)


def prefer_lanes(plane: int, positions: int, opg: int, steps: int, lanes: int, fill: float
                 ) -> bool:
    """Channel lanes for planes of at most MAX_PLANE positions, tiles of at least MIN_POSITIONS
    and at least MIN_VECTORS vectors of output channels per group, where the sum per output
    is long (MIN_STEPS products: input channels of the group x kernel taps) or the row and
    plane tiles would fill at most MAX_FILL of their lanes (a weight gradient's 3x3 plane,
    256 -> 512 channels at 8x8 with stride 2, one thread: 13.5 -> 4.5 ms). Outside, the row
    and plane tiles measured level or faster (one thread): 64 channels at 8x8 level, 128 at
    16x16 106 against 101 GFLOP/s, 64 at 32x32 109 against 84, a 3-channel 7x7 stem (147
    products) 64-88 against 46, 16 -> 64 channels at 8x8 106 against 116 us, 3 -> 64 at 16x16
    75 against 161 us. A tile of fewer than MIN_POSITIONS positions has too few accumulators
    to keep the FMAs busy."""
    return (plane <= MAX_PLANE and positions >= MIN_POSITIONS and opg >= MIN_VECTORS * lanes
            and (steps >= MIN_STEPS or fill <= MAX_FILL))


def lanes_code(k: ConvKernel, plan: LanePlan) -> KernelCode:
    out = k.out_shape
    groups = plan.conv.attrs["groups"]
    tasks = plan.n_blocks * groups * plan.o_blocks * plan.p_blocks
    steps = math.prod(k.w.shape[1:])
    tile_work = 2 * plan.mr * plan.ob * steps
    work = 2 * math.prod(out) * steps
    grain = max(1, -(-CHUNK_WORK // max(tile_work, 1)))
    if plan.panels is not None:  # a chunk is whole channel blocks: one task stages each panel
        per_block = plan.n_blocks * plan.p_blocks
        grain = -(-grain // per_block) * per_block
    names = tuple(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))
    esize = 4 if plan.conv.dtype == "f32" else 8
    conv_setup = staging_setup(k, plan.conv)

    def setup(env: KernelEnv) -> None:
        if conv_setup is not None:
            conv_setup(env)
        _emit_padded_copy(k, plan, env)

    return KernelCode(names, tasks if math.prod(out) else 0, grain,
                      work >= PARALLEL_FLOPS and tasks > grain,
                      lambda env: emit_lane_tiles(k, plan, env),
                      notes={"conv": "channel lanes", "tile": [plan.mr, plan.ob],
                             "weights_by_channel": plan.conv.persistent is not None,
                             "weight_panels": plan.panels is not None,
                             "staged": [st.name for st in plan.conv.staged]},
                      scratch_bytes=plan.conv.scratch_elements * esize,
                      setup=setup, persistent=plan.conv.persistent)


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _emit_padded_copy(k: ConvKernel, plan: LanePlan, env: KernelEnv) -> None:
    """scratch[pad_offset + (n, c, *padded)] = x at the position less the low padding, 0 in the
    border: one vector loop per padded input row."""
    b = env.builder
    cp = plan.conv
    rank, lanes = cp.rank, cp.lanes
    xs, xv = k.x.shape, k.x.vars
    pads = cp.attrs["padding"]
    t = llvm_type(cp.dtype)
    vty = ir.VectorType(t, lanes)
    ity = ir.VectorType(I64, lanes)
    iota = ir.Constant(ity, list(range(lanes)))
    src = operand_ref(cp.x, env, cp.dtype)
    dst = b.gep(b.bitcast(env.scratch, t.as_pointer()), [_i64(plan.pad_offset)])
    wp, w_in, pw = plan.padded[-1], xs[-1], pads[2 * (rank - 1)]
    outer = [xs[0], xs[1]] + list(plan.padded[:-1])
    with for_range(b, _i64(0), _i64(math.prod(outer)), name="padrow") as row:
        at = decode_row_major(b, row, list(enumerate(outer)))
        idx = [at[i] for i in range(len(outer))]
        pos = b.add(_i64(cp.x.offset), b.add(b.mul(idx[0], _i64(cp.x.stride(xv[0]))),
                                             b.mul(idx[1], _i64(cp.x.stride(xv[1])))))
        row_ok: ir.Value = ir.Constant(I1, 1)
        if rank == 2:
            ih = b.sub(idx[2], _i64(pads[0]))
            row_ok = b.and_(b.icmp_signed(">=", ih, _i64(0)), b.icmp_signed("<", ih, _i64(xs[2])))
            pos = b.add(pos, b.mul(ih, _i64(cp.x.stride(xv[2]))))
        row_lanes = vsplat(b, row_ok, lanes)
        for c0 in range(0, wp, lanes):
            cols = b.add(splat(ity, c0 - pw), iota)
            inside = b.and_(b.icmp_signed(">=", cols, splat(ity, 0)),
                            b.icmp_signed("<", cols, splat(ity, w_in)))
            inside = b.and_(inside, row_lanes)
            ptr = element_ptr(b, src, b.add(pos, _i64(c0 - pw)), inbounds=False)
            v = masked_load(b, b.bitcast(ptr, vty.as_pointer()), inside, vty,
                            align=4 if cp.dtype == "f32" else 8)
            out = b.gep(dst, [b.add(b.mul(row, _i64(wp)), _i64(c0))])
            store_ok = b.icmp_signed("<", iota, splat(ity, wp - c0))
            masked_store(b, v, b.bitcast(out, vty.as_pointer()), store_ok,
                         align=4 if cp.dtype == "f32" else 8)
    end = b.gep(dst, [_i64(math.prod(outer) * wp)])
    with for_range(b, _i64(0), _i64(plan.slack), name="slack") as i:
        b.store(ir.Constant(t, 0.0), b.gep(end, [i]))


def emit_lane_tiles(k: ConvKernel, plan: LanePlan, env: KernelEnv) -> None:
    b = env.builder
    out = k.out_shape
    groups = plan.conv.attrs["groups"]
    opg = out[1] // groups
    # Consecutive tasks share a channel block: its weights (C·KH·KW x lanes) are read by
    # every tile, the input image only by the tiles of its positions.
    dims = [("g", groups), ("ob", plan.o_blocks), ("n", plan.n_blocks), ("pb", plan.p_blocks)]
    rem = opg - (plan.o_blocks - 1) * plan.ob
    with for_range(b, env.lo, env.hi, name="tile") as t:
        idx = decode_row_major(b, t, dims)
        o_lo = b.mul(idx["g"], _i64(opg))
        o0 = b.add(o_lo, b.mul(idx["ob"], _i64(plan.ob)))
        o_end = b.add(o0, _i64(plan.ob))
        if rem != plan.ob:
            last = b.icmp_unsigned("==", idx["ob"], _i64(plan.o_blocks - 1))
            o_end = b.select(last, b.add(o0, _i64(rem)), o_end)
        c0 = b.mul(idx["g"], _i64(k.w.shape[1]))
        p0 = b.mul(idx["pb"], _i64(plan.pc))
        tile = _LaneTile(k, plan, env, b.mul(idx["n"], _i64(plan.m)), o0, o_end, c0, p0)
        if plan.panels is not None:
            tile.panel = _stage_panel(k, plan, env, t, idx, o0)
        tile.emit()


def _stage_panel(k: ConvKernel, plan: LanePlan, env: KernelEnv, t: ir.Value,
                 idx: Mapping[str, ir.Value], o0: ir.Value) -> BufferRef:
    """The panel of the tile's channel block, staged first by the task that starts the block
    (or starts this call's range of tasks): `plan.panels`."""
    b = env.builder
    steps = math.prod(k.w.shape[1:])
    lanes = plan.conv.lanes
    slot = b.add(b.mul(idx["g"], _i64(plan.o_blocks)), idx["ob"])
    typed = b.bitcast(env.scratch, llvm_type(plan.conv.dtype).as_pointer())
    base = b.gep(typed, [b.add(_i64(plan.panel_offset), b.mul(slot, _i64(steps * lanes)))])
    starts = b.and_(b.icmp_unsigned("==", idx["n"], _i64(0)),
                    b.icmp_unsigned("==", idx["pb"], _i64(0)))
    with b.if_then(b.or_(starts, b.icmp_unsigned("==", t, env.lo))):
        emit_transposed(plan.panels, plan.conv.dtype, b, base, env.buffers, lanes,
                        panel=o0)
    return BufferRef(SCRATCH, plan.conv.dtype, (), False, base)


class _LaneTile:
    """One tile: positions p0 .. p0 + pc of the planes of images n .. n + m, channels
    o0 .. o_end."""

    def __init__(self, k: ConvKernel, plan: LanePlan, env: KernelEnv, n, o0, o_end, c0, p0):
        self.k, self.plan, self.env = k, plan, env
        self.n, self.o0, self.o_end, self.c0, self.p0 = n, o0, o_end, c0, p0
        self.panel: BufferRef | None = None  # the channel block's weights, when staged per block
        cp = plan.conv
        self.t = llvm_type(cp.dtype)
        self.vty = ir.VectorType(self.t, cp.lanes)
        self.iota = ir.Constant(ir.VectorType(I64, cp.lanes), list(range(cp.lanes)))

    def _positions(self) -> list[tuple[ir.Value, list[ir.Value]]]:
        """(valid, output coordinates) of each of the tile's positions in one plane; those
        past the plane repeat its last position (computed, not stored)."""
        b, out = self.env.builder, self.k.out_shape
        plane = math.prod(out[2:])
        res = []
        for p in range(self.plan.pc):
            flat = b.add(self.p0, _i64(p))
            valid = b.icmp_unsigned("<", flat, _i64(plane))
            flat = b.select(valid, flat, _i64(plane - 1))
            coords = [flat] if len(out) == 3 else [b.udiv(flat, _i64(out[3])),
                                                   b.urem(flat, _i64(out[3]))]
            res.append((valid, coords))
        return res

    def emit(self) -> None:
        b, plan, k = self.env.builder, self.plan, self.k
        cp = plan.conv
        a = cp.attrs
        rank = cp.rank
        padded = plan.padded
        xs = k.x.shape
        plane_in = math.prod(padded)
        strides = a["stride"]
        dil = a["rhs_dilation"]
        positions = self._positions()
        row_len = padded[-1]
        # the padded copy's flat index of each position's first tap in channel c0
        x_img = b.add(_i64(plan.pad_offset),
                      b.mul(b.add(b.mul(self.n, _i64(xs[1])), self.c0), _i64(plane_in)))
        # One base address per position of the plane, opaque to LLVM: positions a known
        # distance apart read each other's taps, and LLVM, merging those loads, kept them live
        # across taps and spilled them (7x7 plane, 28 positions: 29.7 ms against 17; a 3x3
        # plane of 3 images 5.7 ms against 4.9). The tile's images lie a constant image apart
        # (their taps never meet).
        opaque = ir.InlineAsm(ir.FunctionType(I64, [I64]), "", "=r,0")
        bases = []
        for _, coords in positions:
            off = b.mul(coords[-1], _i64(strides[-1]))
            if rank == 2:
                off = b.add(off, b.mul(b.mul(coords[0], _i64(strides[0])), _i64(row_len)))
            bases.append(b.call(opaque, [b.add(x_img, off)]))
        image = xs[1] * plane_in
        addresses = [(base, i * image) for i in range(plan.m) for base in bases]
        scratch = b.bitcast(self.env.scratch, self.t.as_pointer())
        w_ref = operand_ref(cp.w, self.env, cp.dtype) if self.panel is None else self.panel
        w_o0 = self.o0 if self.panel is None else _i64(0)  # a panel starts at the block
        wv = k.w.vars
        w_o = cp.w.stride(wv[0])
        assert w_o == 1, "weights are staged with the output channel innermost"
        o_mask = b.icmp_signed("<", b.add(vsplat(b, self.o0, cp.lanes), self.iota),
                               vsplat(b, self.o_end, cp.lanes))
        fma = intrinsic(b.module, "llvm.fma", self.vty)
        zero = splat(self.vty, 0.0)
        kw_n = k.w.shape[-1]
        align = 4 if cp.dtype == "f32" else 8

        def taps(wrow: ir.Value, xrow: ir.Value, accs: list) -> list:
            accs = list(accs)
            for kw in range(kw_n):
                wk = b.add(b.add(wrow, _i64(kw * cp.w.stride(wv[-1]))), w_o0)
                ptr = element_ptr(b, w_ref, wk, inbounds=False)
                wvec = masked_load(b, b.bitcast(ptr, self.vty.as_pointer()), o_mask, self.vty,
                                   align=align)
                xk = b.add(xrow, _i64(kw * dil[-1]))
                for p, (base, off) in enumerate(addresses):
                    xval = b.load(b.gep(scratch, [b.add(base, b.add(xk, _i64(off)))]))
                    accs[p] = b.call(fma, [vsplat(b, xval, cp.lanes), wvec, accs[p]])
            return accs

        def channel(bb: ir.IRBuilder, c: ir.Value, accs: list) -> list:
            wc = b.add(_i64(cp.w.offset), b.mul(c, _i64(cp.w.stride(wv[1]))))
            xc = b.mul(c, _i64(plane_in))
            if rank == 1:
                return taps(wc, xc, accs)

            def krow(bb: ir.IRBuilder, kh: ir.Value, accs: list) -> list:
                wr = b.add(wc, b.mul(kh, _i64(cp.w.stride(wv[2]))))
                xr = b.add(xc, b.mul(kh, _i64(dil[0] * row_len)))
                return taps(wr, xr, accs)

            return emit_loop(b, _i64(0), _i64(k.w.shape[2]), krow, accs, name="kh")

        accs = emit_loop(b, _i64(0), _i64(k.w.shape[1]), channel,
                         [zero] * plan.mr, name="cin")
        self._epilogue(positions, o_mask, accs)

    def _epilogue(self, positions, o_mask, accs: list) -> None:
        """Each accumulator as the channels o0 ... o_end of its position: the epilogue in
        vector mode over the channel variable."""
        b, plan, k = self.env.builder, self.plan, self.k
        lanes = plan.conv.lanes
        spatial = k.out_vars[2:]
        out_n = self.k.out_shape[0]
        for p, (i, (valid, coords)) in enumerate((i, pos) for i in range(plan.m)
                                                 for pos in positions):
            n = b.add(self.n, _i64(i))
            if plan.m * plan.n_blocks != out_n:
                valid = b.and_(valid, b.icmp_unsigned("<", n, _i64(out_n)))
            env = {"n": n, "o": self.o0, **dict(zip(spatial, coords, strict=True))}
            ev = VectorEmitter(b, self.env.buffers, k.extents(), env, "o", lanes,
                               b.and_(o_mask, vsplat(b, valid, lanes)))
            ev.acc = accs[p]
            for st in k.stores:
                ev.vstore(st.buffer, st.index, ev(st.value))
