"""Matmul and convolution templates: tiled `tl.dot` loops with the fused epilogue.

Matmul: one program per [BM, BN] output tile (grouped along M for L2 reuse) and batch element;
the K loop loads the operands through their index maps (a fused transpose or broadcast is just a
different address), accumulates with `tl.dot` in fp32 (fp16/bf16 inputs) or at the selected fp32
input precision (`ieee` by default: exact fp32; `tf32` opt-in), then evaluates the epilogue
stores with `acc` bound to the tile.

Convolution is an implicit GEMM per group: rows are output positions (n, p0, p1, ...), columns are
the group's output channels, the reduction runs over (input channel, kernel offsets). An input
element is `x[n, g*Cg + c, (p*stride + k*rhs_dilation - pad_lo) / lhs_dilation]`, present when
that position lies inside the (lhs-dilated) input and on the dilation grid: the predicate is the
section guard, so padding and dilation holes read nothing and contribute zero.
"""

from __future__ import annotations

import math

from graphc.ir.errors import GraphError
from graphc.ir.kernel import ConvKernel, Load, MatmulKernel, Schedule

from .codegen import (
    KernelSource,
    LaunchSpec,
    function_header,
    identifier,
    kernel_buffers,
    pointer_args,
    program_id,
)
from .emit import Emitter
from .lowering import COMPUTE_DTYPE, TL_DTYPE, round_to
from .options import TritonOptions, cdiv, dot_config

GROUP_M = 8


def gen_template(k: MatmulKernel | ConvKernel, s: Schedule, opts: TritonOptions
                 ) -> KernelSource:
    types = {n: b.type for n, b in s.buffers.items()}
    bufs = kernel_buffers(k)
    ptrs = pointer_args(bufs)
    em = Emitter(types, ptrs, k.extents())
    pid = program_id(s, bufs)
    if isinstance(k, MatmulKernel):
        grid, cfg = _matmul(k, em, opts, pid)
    else:
        grid, cfg = _conv(k, em, opts, pid)
    launch = LaunchSpec(k.name, identifier(k.name), tuple(bufs),
                        (("BM", cfg.bm), ("BN", cfg.bn), ("BK", cfg.bk)), grid, cfg.num_warps,
                        cfg.num_stages)
    lines = (function_header(k, launch.fn, ptrs, ["BM", "BN", "BK"])
             + ["    " + x for x in em.body()])
    return KernelSource(lines, launch, em.helpers)


def _acc_dtype(dtype: str) -> str:
    return {"f64": "f64", "i32": "i32", "i64": "i64"}.get(dtype, "f32")


def _tile_ids(em: Emitter, tiles_m: int, tiles_n: int, pid: str) -> None:
    em.line(f"pid = {pid}")
    if tiles_m > GROUP_M and tiles_n > 1:  # walk GROUP_M row tiles together (L2 reuse)
        em.line(f"group = pid // {GROUP_M * tiles_n}")
        em.line(f"group_m = tl.minimum({tiles_m} - group * {GROUP_M}, {GROUP_M})")
        em.line(f"pid_m = group * {GROUP_M} + (pid % {GROUP_M * tiles_n}) % group_m")
        em.line(f"pid_n = (pid % {GROUP_M * tiles_n}) // group_m")
    else:
        em.line(f"pid_m = pid // {tiles_n}")
        em.line(f"pid_n = pid % {tiles_n}")


def _operand(em: Emitter, value, mask: str, shape: str, dtype: str, kvars: set[str],
             kmask: str | None) -> str:
    """An operand tile: zero outside `mask`, broadcast to `shape`, in the dot's input dtype.

    Lanes past the end of the reduction must be zero or they add to the product. A plain load
    indexed by a reduction variable (`kvars`) is already masked there, and so is every load of a
    guarded section (`kmask` None); a load that does not move along the reduction (K = 1, a
    1x1 kernel) is broadcast over the whole BK block and gets `kmask` explicitly. Anything
    computed is zeroed outside `mask` (it could be f(0) != 0). The selects are left out where
    not needed: a load that feeds `tl.dot` directly is what Triton pipelines through shared
    memory."""
    if isinstance(value, Load) and value.dtype in COMPUTE_DTYPE:
        name = em.fresh("v")  # load fp16/bf16 as is: straight into the tensor cores
        em.line(f"{name} = {em.load_code(value, native=True)}", em.expr_depth(value))
        code = name
    else:
        code = em.expr(value)
        if not isinstance(value, Load):  # masked lanes must be zero, not f(0)
            code = f"tl.where({mask}, {code}, 0)"
        if dtype in COMPUTE_DTYPE:
            code = f"{code}.to({TL_DTYPE[dtype]})"
    if isinstance(value, Load) and kmask is not None:
        used = {v for i in value.index for v in i.var_names()}
        if not used & kvars:
            code = f"tl.where({kmask}, {code}, 0)"
    out = em.fresh("op")
    em.line(f"{out} = tl.broadcast_to({code}, {shape})")
    return out


def _dot(em: Emitter, a: str, b: str, dtype: str, opts: TritonOptions) -> None:
    if dtype in ("i32", "i64"):
        em.line(f"acc += tl.sum({a}[:, :, None] * {b}[None, :, :], axis=1)")
    elif dtype == "f32":
        em.line(f'acc = tl.dot({a}, {b}, acc, input_precision="{opts.precision}")')
    elif dtype == "f64":  # Triton 3.6 needs the fp64 accumulator type said explicitly
        em.line(f"acc = tl.dot({a}, {b}, acc, out_dtype=tl.float64)")
    else:  # f16/bf16: fp32 accumulation
        em.line(f"acc = tl.dot({a}, {b}, acc)")


def _epilogue(em: Emitter, k: MatmulKernel | ConvKernel, rows: str, cols: str) -> None:
    em.comment("epilogue")
    if k.acc_dtype in COMPUTE_DTYPE:
        em.line(f"acc = {round_to('acc', k.acc_dtype, em.use)}")
    em.acc = "acc"
    for st in k.stores:
        em.store(st.buffer, st.index, em.expr(st.value), st.value.dtype, f"({rows} + {cols}) * 0",
                 f"{rows}mask & {cols}mask", always_full=True)


# -- matmul ----------------------------------------------------------------------------------------


def _matmul(k: MatmulKernel, em: Emitter, opts: TritonOptions, pid: str):
    dtype = k.a.value.dtype
    if k.b.value.dtype != dtype:
        raise GraphError(f"matmul operand dtypes differ: {dtype} and {k.b.value.dtype}")
    cfg = dot_config(k.m, k.n, k.k, dtype, opts)
    tiles_m, tiles_n = cdiv(k.m, cfg.bm), cdiv(k.n, cfg.bn)
    batch = math.prod(k.batch)
    if batch > 65535:
        raise GraphError(f"matmul batch of {batch} exceeds the grid's 65535")
    _tile_ids(em, tiles_m, tiles_n, pid)
    em.line("m = pid_m * BM + tl.arange(0, BM)[:, None]")
    em.line(f"mmask = m < {k.m}")
    em.line("n = pid_n * BN + tl.arange(0, BN)[None, :]")
    em.line(f"nmask = n < {k.n}")
    em.bind("m", "m", 0, "mmask")
    em.bind("n", "n", 0, "nmask")
    if batch > 1:
        # Batch indices are [1, 1] blocks, not scalars: a mask that ANDs a tile's block mask
        # with a comparison of a 0-d scalar comes out as int32 under Triton's interpreter,
        # which then refuses it as a load mask (a concatenation along a batch axis does that).
        em.line("bidx = tl.program_id(1) + tl.zeros([1, 1], tl.int32)")
        stride = batch
        for j, d in enumerate(k.batch):
            stride //= d
            if d > 1:
                em.line(f"b{j} = (bidx // {stride}) % {d}")
                em.bind(f"b{j}", f"b{j}", 0)
    em.line(f"acc = tl.zeros([BM, BN], {TL_DTYPE[_acc_dtype(dtype)]})")
    em.open_loop()
    em.line("kk = k0 + tl.arange(0, BK)")
    em.line("ka = kk[None, :]")
    em.line(f"kamask = ka < {k.k}")
    em.line("kb = kk[:, None]")
    em.line(f"kbmask = kb < {k.k}")
    em.bind("k", "ka", 1, "kamask")
    a = _operand(em, k.a.value, "mmask & kamask", "[BM, BK]", dtype, {"k"}, "kamask")
    em.bind("k", "kb", 1, "kbmask")
    b = _operand(em, k.b.value, "kbmask & nmask", "[BK, BN]", dtype, {"k"}, "kbmask")
    _dot(em, a, b, dtype, opts)
    em.close_loop(f"for k0 in range(0, {k.k}, BK):")
    _epilogue(em, k, "m", "n")
    return (tiles_m * tiles_n, batch, 1), cfg


# -- convolution -----------------------------------------------------------------------------------


def _conv(k: ConvKernel, em: Emitter, opts: TritonOptions, pid: str):
    a = dict(k.attrs)
    xs, ws = k.x.shape, k.w.shape
    nsp = len(xs) - 2
    groups = a["groups"]
    out_sp = k.out_shape[2:]
    kern = ws[2:]
    cg, og = ws[1], ws[0] // groups
    rows = k.out_shape[0] * math.prod(out_sp)
    red = cg * math.prod(kern)
    dtype = k.x.value.dtype
    cfg = dot_config(rows, og, red, dtype, opts)
    tiles_m, tiles_n = cdiv(rows, cfg.bm), cdiv(og, cfg.bn)
    _tile_ids(em, tiles_m, tiles_n, pid)
    em.line("g = tl.program_id(1)")
    em.line("rows = pid_m * BM + tl.arange(0, BM)[:, None]")
    em.line(f"rowsmask = rows < {rows}")
    em.line("cols = pid_n * BN + tl.arange(0, BN)[None, :]")
    em.line(f"colsmask = cols < {og}")
    # output variables: n, o, p0, p1, ... (rows split into n and positions)
    stride = math.prod(out_sp)
    em.line(f"out_n = rows // {stride}" if stride > 1 else "out_n = rows")
    for j, d in enumerate(out_sp):
        stride //= d
        em.line(f"out_p{j} = (rows // {stride}) % {d}" if stride > 1 else f"out_p{j} = rows % {d}")
        em.bind(f"p{j}", f"out_p{j}", 0, "rowsmask")
    em.line(f"out_o = g * {og} + cols")
    em.bind("n", "out_n", 0, "rowsmask")
    em.bind("o", "out_o", 0, "colsmask")
    em.line(f"acc = tl.zeros([BM, BN], {TL_DTYPE[_acc_dtype(dtype)]})")
    em.open_loop()
    em.line("kk = k0 + tl.arange(0, BK)")
    # the input operand: kk as columns [1, BK]
    em.line("kx = kk[None, :]")
    em.line(f"kxmask = kx < {red}")
    c_x, offs_x = _split_reduction(em, "kx", cg, kern)
    valid = ["rowsmask", "kxmask"]
    em.bind(k.x.vars[0], "out_n", 0, "rowsmask")
    em.line(f"x_c = g * {cg} + {c_x}")
    em.bind(k.x.vars[1], "x_c", 1, "kxmask")
    for j in range(nsp):
        lo = a["padding"][2 * j]
        sd, rd, ld = a["stride"][j], a["rhs_dilation"][j], a["lhs_dilation"][j]
        em.line(f"q{j} = out_p{j} * {sd} + {offs_x[j]} * {rd} - {lo}".replace("- -", "+ "))
        span = (xs[2 + j] - 1) * ld + 1
        valid.append(f"(q{j} >= 0) & (q{j} < {span})")
        if ld > 1:
            valid.append(f"(q{j} % {ld} == 0)")
            em.line(f"x_s{j} = q{j} // {ld}")
        else:
            em.line(f"x_s{j} = q{j}")
        em.bind(k.x.vars[2 + j], f"x_s{j}", 1)
    em.line(f"xvalid = {' & '.join(valid)}")
    em.line("xzero = (rows + kx) * 0")
    em.guard = ("xvalid", 1, "xzero")
    xa = _operand(em, k.x.value, "xvalid", "[BM, BK]", dtype, set(), None)
    em.guard = None
    # the weight operand: kk as rows [BK, 1]
    em.line("kw = kk[:, None]")
    em.line(f"kwmask = kw < {red}")
    c_w, offs_w = _split_reduction(em, "kw", cg, kern)
    em.bind(k.w.vars[0], "out_o", 0, "colsmask")
    em.bind(k.w.vars[1], c_w, 1, "kwmask")
    for j in range(nsp):
        em.bind(k.w.vars[2 + j], offs_w[j], 1, "kwmask")
    wb = _operand(em, k.w.value, "kwmask & colsmask", "[BK, BN]", dtype, set(k.w.vars[1:]),
                  "kwmask")
    _dot(em, xa, wb, dtype, opts)
    em.close_loop(f"for k0 in range(0, {red}, BK):")
    em.bind("n", "out_n", 0, "rowsmask")
    em.bind("o", "out_o", 0, "colsmask")
    for j in range(nsp):
        em.bind(f"p{j}", f"out_p{j}", 0, "rowsmask")
    _epilogue(em, k, "rows", "cols")
    return (tiles_m * tiles_n, groups, 1), cfg


def _split_reduction(em: Emitter, base: str, cg: int, kern: tuple[int, ...]
                     ) -> tuple[str, list[str]]:
    """The reduction index `base` as (input channel, kernel offsets), row-major."""
    size = math.prod(kern)
    c = f"{base}_c"
    em.line(f"{c} = {base} // {size}" if size > 1 else f"{c} = {base}")
    offs = []
    stride = size
    for j, d in enumerate(kern):
        stride //= d
        name = f"{base}_k{j}"
        em.line(f"{name} = ({base} // {stride}) % {d}" if stride > 1 else f"{name} = {base} % {d}")
        offs.append(name)
    return c, offs
