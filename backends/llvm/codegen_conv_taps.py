"""Tap tiles: 2-D convolutions with a tiny output plane and a large kernel, in explicit vector
IR, with the kernel-IR epilogue fused.

Note: where they apply
----------------------
The weight gradient of a stride-1 convolution with "same" padding is a convolution too: the
forward input, channels first ([C, N, H, W]), convolved with the output gradient as the kernel
([O, N, H, W]), giving a KH x KW plane per (input, output) channel pair. Its output plane is a
filter's taps (3x3: 9 points) and its kernel a whole feature map, the reverse of the shapes the
row and plane tiles of `codegen_conv` are built for: a row tile fills 3 of 16 lanes there.

Here the lanes run over the kernel's taps instead. When the kernel is as wide as the input
(KW == W: a "same" convolution's maps) and both are stored row after row, output position
(oh, ow) reads the input at flat index s + t for tap t = kh·KW + kw, s = (oh − ph)·W + (ow − pw):
one masked load per vector of taps, masked per lane where the tap falls in the padding (a
constant mask per position and vector). Otherwise (a "valid" convolution's gradient: the
kernel narrower than the input) each kernel row is cut into vectors of its own, its taps
contiguous in the input row, lanes past the row's end masked. A kernel of many vectors (a
large feature map: more than MAX_UNROLLED tap vectors x positions) takes its rows in a loop,
each row's vectors unrolled, the row's existence a run-time lane mask; unrolled whole, a
224 x 224 map would be tens of thousands of instructions. A tile holds OB output channels
x every output position as accumulators and, for each input channel c and vector of taps,

    wv[r]   = w[o0 + r, c, taps]                      (OB loads, lanes past the taps zero)
    xv      = x[n, c, s(p) + taps]   (masked)         (one load per position p)
    acc[r][p] = fma(wv[r], xv, acc[r][p])

so every input vector feeds OB FMAs and every weight vector all positions. After the channel
loop the accumulators' lanes are summed together (`llvm_ir.lane_sums`: pairs of accumulators
share a vector, each pair's blocks halved per round; a tree per accumulator cost as much as
its FMAs where the sum runs over few vectors: ResNet-18's last-stage weight gradients, 8
images of 4x4, 8.5 -> 7.7 ms), in the same order on every thread count, and the scalar
epilogue stores each sum. One thread, the demo CNN's three weight
gradients (32 images, 8 channels; 3x3 planes from 4x4 and 8x8 maps): 26 + 25 + 14 µs as row
tiles (module `codegen_conv`), 7.3 + 6.3 + 2.8 µs as tap tiles; the training step 139 -> 90 µs.

Over small maps the weight gradient comes as a correlation of both maps reversed along their
spatial axes (`ir.ops.linalg`: it then yields the weights' own [O, C, *k] layout, and an
optimizer's update is its epilogue). The tiles read such operands forwards and mirror the
output positions (`unreversed`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from llvmlite import ir

from graphc.ir.kernel import (
    Buffer,
    Const,
    ConvKernel,
    Expr,
    FloorDiv,
    Ix,
    Load,
    Mod,
    Op,
    Operand,
    Var,
    kernel_reads,
    kernel_writes,
    walk,
)

from .codegen import KernelCode, KernelEnv
from .codegen_conv import MAX_KERNEL_WIDTH, conv_operands, operand_ref
from .codegen_expr import BufferRef, ExprEmitter, element_ptr, store_element
from .codegen_gemm import Affine, Staged, _emit_staging, affine_position
from .codegen_loop import CHUNK_WORK, PARALLEL_FLOPS
from .llvm_ir import (
    I1,
    I64,
    emit_loop,
    for_range,
    intrinsic,
    lane_sums,
    llvm_type,
    masked_load,
    vsplat,
)

MAX_POSITIONS = 25     # output planes of at most this many points (a 5x5 filter)
MAX_ACCUMULATORS = 25  # OB x positions, with the OB weight vectors and one input vector beside
# tap vectors x positions unrolled in a channel's step; beyond, a loop over the kernel rows
MAX_UNROLLED = 512
# A parallel chunk is every tile of one image (their input map is the same, their outputs
# adjacent) where that leaves at least this many chunks. Chunks of a few tiles had two
# threads interleave within an image, each fetching its map and writing lines the other
# wrote: ResNet-18's last stage fine-tuned on two threads 44.4 -> 41.9 ms a step.
MIN_IMAGE_CHUNKS = 8


@dataclass(frozen=True)
class TapPlan:
    dtype: str
    lanes: int
    x: Affine
    w: Affine
    ob: int                 # output channels per tile
    o_blocks: int
    vectors: int            # vectors of taps per kernel plane
    flat: bool              # the kernel as wide as the input: taps run on across its rows
    looped: bool            # kernel rows in a loop (each row's vectors unrolled), not all
    staged: tuple[Staged, ...] = ()
    scratch_elements: int = 0
    # Both operands read backwards along their spatial axes (`unreversed`): the tiles
    # read them forwards, with the padding of each axis swapped, and store position (oh, ow) at
    # (OH - 1 - oh, OW - 1 - ow).
    mirror: bool = False

    def padding(self, k: ConvKernel) -> tuple[int, int]:
        """The low padding of the two spatial axes as the tiles read the input."""
        pads = dict(k.attrs)["padding"]
        return (pads[1], pads[3]) if self.mirror else (pads[0], pads[2])


def plan_taps(k: ConvKernel, buffers: Mapping[str, Buffer], vector_bits: int
              ) -> TapPlan | None:
    """A TapPlan where the tap tiles apply and fill at least twice the lanes a row tile would
    (module note), or where no row tile applies (kernels wider than the row tiles take),
    else None."""
    a = dict(k.attrs)
    dtype = k.acc_dtype
    if dtype not in ("f32", "f64") or len(k.out_shape) != 4 or a["groups"] != 1:
        return None
    if any(tuple(a[key]) != (1, 1) for key in ("stride", "rhs_dilation", "lhs_dilation")):
        return None
    _, o, oh, ow = k.out_shape
    kh, kw = k.w.shape[2:]
    lanes = vector_bits // (32 if dtype == "f32" else 64)
    positions = oh * ow
    # against the row tiles (when they apply: else the scalar direct loops, always slower)
    rivals = kw <= MAX_KERNEL_WIDTH
    if positions > MAX_POSITIONS or (rivals and kh * kw < 2 * ow * -(-kh * kw // lanes)):
        return None
    shapes = {n: b.type.shape for n, b in buffers.items()}
    forwards = (unreversed(k.x, shapes), unreversed(k.w, shapes))
    mirror = None not in forwards
    operands = conv_operands(k, buffers, ("x", "w"), forwards if mirror else None)
    if operands is None:
        return None
    x, w, staged, scratch = operands
    xv, wv = k.x.vars, k.w.vars
    if w.stride(wv[3]) != 1:
        return None
    flat = kw == k.x.shape[3] == x.stride(xv[2]) and w.stride(wv[2]) == kw
    vectors = -(-kh * kw // lanes) if flat else kh * -(-kw // lanes)
    looped = vectors * positions > MAX_UNROLLED
    if looped:  # a large feature map as the kernel: a loop over its rows
        flat, vectors = False, kh * -(-kw // lanes)
    if rivals and kh * kw < 2 * ow * vectors:  # kernel rows much shorter than a vector
        return None
    blocks = -(-o // max(1, MAX_ACCUMULATORS // positions))
    return TapPlan(dtype, lanes, x, w, -(-o // blocks), blocks, vectors, flat, looped,
                   tuple(staged), scratch, mirror)


def unreversed(opnd: Operand, shapes: Mapping[str, tuple[int, ...]]) -> Operand | None:
    """The operand read forwards, where it is read backwards along every spatial axis longer
    than 1 (the weight gradient of `ir.ops.linalg` reverses both of its operands' maps): an
    elementwise function of plain loads, each at an affine position with negative strides
    there, each spatial variable v replaced by n - 1 - v. Else None.

    Why: a correlation of two reversed sequences is the reversed correlation of the sequences
    with the padding swapped (the sum over t of x[L-1-(p+t-lo)] w[T-1-t] is the forward
    correlation at P-1-p under padding (hi, lo)), so the tiles read both operands forwards
    and mirror the output positions. Staged forwards instead, the reversed operands cost more
    than the tiles for small maps (the demo CNN's weight gradients, 13 -> 26 us)."""
    extent = {v: n for v, n in zip(opnd.vars[2:], opnd.shape[2:], strict=True) if n > 1}
    nodes = list(walk([opnd.value]))
    if not extent or not all(isinstance(e, (Load, Const, Op)) for e in nodes):
        return None
    for e in nodes:
        if isinstance(e, Load):
            aff = None if e.mask else affine_position(e.buffer, e.index, shapes[e.buffer])
            if aff is None or any(aff.stride(v) >= 0 for v in extent):
                return None
            # the spatial variables are substituted where they stand alone in the index
            if any(isinstance(a, (FloorDiv, Mod)) and a.arg.var_names() & extent.keys()
                   for i in e.index for a, _ in i.terms):
                return None

    def flip(e: Ix) -> Ix:
        terms, const = [], e.const
        for atom, c in e.terms:
            if isinstance(atom, Var) and atom.name in extent:
                const += c * (extent[atom.name] - 1)
                c = -c
            terms.append((atom, c))
        return Ix.of(terms, const)

    def rebuild(e: Expr) -> Expr:
        if isinstance(e, Load):
            return replace(e, index=tuple(flip(i) for i in e.index))
        if isinstance(e, Op):
            return replace(e, args=tuple(rebuild(a) for a in e.args))
        return e

    return Operand(opnd.vars, opnd.shape, rebuild(opnd.value))


def tap_vectors(k: ConvKernel, plan: TapPlan) -> list[tuple[int, int, list]]:
    """(input offset, filter offset, the (kernel row, column) of each lane or None) of every
    vector of taps: consecutive taps across kernel rows where the kernel is as wide as the
    input, else each kernel row in vectors of its own."""
    kh_n, kw_n = k.w.shape[2:]
    x_row, w_row = plan.x.stride(k.x.vars[2]), plan.w.stride(k.w.vars[2])
    lanes = plan.lanes
    out = []
    if plan.flat:
        for j in range(plan.vectors):
            taps = [divmod(t, kw_n) if t < kh_n * kw_n else None
                    for t in range(j * lanes, (j + 1) * lanes)]
            out.append((j * lanes, j * lanes, taps))
        return out
    for kh in range(1 if plan.looped else kh_n):  # looped: row 0's, offset per row
        for kw0 in range(0, kw_n, lanes):
            taps = [(kh, kw) if kw < kw_n else None for kw in range(kw0, kw0 + lanes)]
            out.append((kh * x_row + kw0, kh * w_row + kw0, taps))
    return out


def taps_code(k: ConvKernel, plan: TapPlan) -> KernelCode:
    n = k.out_shape[0]
    tasks = n * plan.o_blocks
    steps = k.w.shape[1] * plan.vectors
    tile_work = 2 * plan.ob * k.out_shape[2] * k.out_shape[3] * steps * plan.lanes
    work = tile_work * tasks
    grain = max(1, -(-CHUNK_WORK // max(tile_work, 1)))
    if n >= MIN_IMAGE_CHUNKS:
        grain = max(grain, plan.o_blocks)
    names = tuple(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))

    def setup(env: KernelEnv) -> None:
        for st in plan.staged:
            _emit_staging(st, plan.dtype, env, k.extents(), plan.lanes)

    esize = 4 if plan.dtype == "f32" else 8
    return KernelCode(names, tasks if math.prod(k.out_shape) else 0, grain,
                      work >= PARALLEL_FLOPS and tasks > grain,
                      lambda env: _emit_tiles(k, plan, env),
                      notes={"conv": "taps", "tile": [plan.ob, k.out_shape[2] * k.out_shape[3]],
                             "kernel_rows_looped": plan.looped,
                             "staged": [st.name for st in plan.staged]},
                      scratch_bytes=plan.scratch_elements * esize,
                      setup=setup if plan.staged else None)


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _emit_tiles(k: ConvKernel, plan: TapPlan, env: KernelEnv) -> None:
    b = env.builder
    o = k.out_shape[1]
    rem = o - (plan.o_blocks - 1) * plan.ob
    with for_range(b, env.lo, env.hi, name="tile") as t:
        n = b.udiv(t, _i64(plan.o_blocks))
        blk = b.urem(t, _i64(plan.o_blocks))
        o0 = b.mul(blk, _i64(plan.ob))
        tile = _Tile(k, plan, env, n, o0)
        if rem == plan.ob:
            tile.emit(plan.ob)
        else:  # the last channel block is narrower: a copy of the tile for its count
            with b.if_else(b.icmp_unsigned("<", blk, _i64(plan.o_blocks - 1))) as (full, last):
                with full:
                    tile.emit(plan.ob)
                with last:
                    tile.emit(rem)


class _Tile:
    """Emits the tile of `rows` output channels from o0, every output position, of image n."""

    def __init__(self, k: ConvKernel, plan: TapPlan, env: KernelEnv, n, o0):
        self.k, self.plan, self.env, self.n, self.o0 = k, plan, env, n, o0
        self.vty = ir.VectorType(llvm_type(plan.dtype), plan.lanes)
        self.mty = ir.VectorType(I1, plan.lanes)
        self.vectors = tap_vectors(k, plan)

    def _mask(self, bits: list[bool]) -> ir.Constant:
        return ir.Constant(self.mty, [int(v) for v in bits])

    def _load(self, ref: BufferRef, pos: ir.Value, mask: list[bool],
              also: ir.Value | None = None) -> ir.Value:
        """A vector at pos, the lanes outside `mask` (and all lanes unless `also`, an i1
        known at run time) zero."""
        b = self.env.builder
        ptr = b.bitcast(element_ptr(b, ref, pos, inbounds=False), self.vty.as_pointer())
        align = 4 if self.plan.dtype == "f32" else 8
        if also is None and all(mask):
            return b.load(ptr, align=align)
        lanes = self._mask(mask)
        if also is not None:
            lanes = b.and_(lanes, vsplat(b, also, self.plan.lanes))
        return masked_load(b, ptr, lanes, self.vty, align=align)

    def _positions(self) -> list[tuple[int, int, int, list[list[bool]]]]:
        """(oh, ow, input shift, lane masks per tap vector) of every output position."""
        k, plan = self.k, self.plan
        ph, pw = plan.padding(k)
        height, width = k.x.shape[2:]
        x_row = plan.x.stride(k.x.vars[2])
        out = []
        for oh in range(k.out_shape[2]):
            for ow in range(k.out_shape[3]):
                masks = [[tap is not None and (plan.looped or 0 <= oh - ph + tap[0] < height)
                          and 0 <= ow - pw + tap[1] < width for tap in taps]
                         for _, _, taps in self.vectors]
                out.append((oh, ow, (oh - ph) * x_row + (ow - pw), masks))
        return out

    def emit(self, rows: int) -> None:
        b, plan, k = self.env.builder, self.plan, self.k
        xv, wv = k.x.vars, k.w.vars
        x_ref, w_ref = (operand_ref(aff, self.env, plan.dtype) for aff in (plan.x, plan.w))
        x_base = b.add(_i64(plan.x.offset), b.mul(self.n, _i64(plan.x.stride(xv[0]))))
        w_base = b.add(_i64(plan.w.offset), b.mul(self.o0, _i64(plan.w.stride(wv[0]))))
        positions = self._positions()
        fma = intrinsic(b.module, "llvm.fma", self.vty)
        zero = ir.Constant(self.vty, [0.0] * plan.lanes)

        ph, height = plan.padding(k)[0], k.x.shape[2]

        def taps(xc: ir.Value, wc: ir.Value, accs: list, kh: ir.Value | None) -> list:
            """Every tap vector (kh None) or those of kernel row kh (looped plans)."""
            accs = list(accs)
            for j, (x_off, w_off, lane_taps) in enumerate(self.vectors):
                in_kernel = [tap is not None for tap in lane_taps]
                weights = [self._load(w_ref, b.add(wc, _i64(r * plan.w.stride(wv[0]) + w_off)),
                                      in_kernel)
                           for r in range(rows)]
                for p, (oh, _, shift, masks) in enumerate(positions):
                    if not any(masks[j]):
                        continue
                    at = b.add(xc, _i64(shift + x_off))
                    if kh is None:
                        xvec = self._load(x_ref, at, masks[j])
                    else:  # the input row oh - ph + kh must exist: a run-time lane mask
                        ih = b.add(kh, _i64(oh - ph))
                        ok = b.and_(b.icmp_signed(">=", ih, _i64(0)),
                                    b.icmp_signed("<", ih, _i64(height)))
                        xvec = self._load(x_ref, at, masks[j], ok)
                    for r in range(rows):
                        i = r * len(positions) + p
                        accs[i] = b.call(fma, [weights[r], xvec, accs[i]])
            return accs

        def channel(bb: ir.IRBuilder, c: ir.Value, accs: list) -> list:
            xc = b.add(x_base, b.mul(c, _i64(plan.x.stride(xv[1]))))
            wc = b.add(w_base, b.mul(c, _i64(plan.w.stride(wv[1]))))
            if not plan.looped:
                return taps(xc, wc, accs, None)

            def krow(bb: ir.IRBuilder, kh: ir.Value, accs: list) -> list:
                return taps(b.add(xc, b.mul(kh, _i64(plan.x.stride(xv[2])))),
                            b.add(wc, b.mul(kh, _i64(plan.w.stride(wv[2])))), accs, kh)

            return emit_loop(b, _i64(0), _i64(k.w.shape[2]), krow, list(accs), name="kh")

        accs = emit_loop(b, _i64(0), _i64(k.w.shape[1]), channel,
                         [zero] * (rows * len(positions)), name="cin")
        out_h, out_w = k.out_shape[2:]
        sums = lane_sums(b, accs)
        for r in range(rows):
            for p, (oh, ow, _, _) in enumerate(positions):
                if plan.mirror:
                    oh, ow = out_h - 1 - oh, out_w - 1 - ow
                env = {"n": self.n, "o": b.add(self.o0, _i64(r)), "p0": _i64(oh),
                       k.out_vars[-1]: _i64(ow)}
                ev = ExprEmitter(b, self.env.buffers, k.extents(), env)
                ev.acc = sums[r * len(positions) + p]
                for st in k.stores:
                    store_element(b, ev.buffers[st.buffer], ev.linear(st.buffer, st.index),
                                  ev(st.value))
