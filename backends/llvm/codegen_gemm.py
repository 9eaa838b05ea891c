"""MatmulKernel -> the generated BLIS-style GEMM (`gemm.py`), epilogue fused through its hook.

Note: when a matmul kernel becomes a GEMM call
----------------------------------------------
`gemm.py` computes C[b] = epilogue(A[b] @ B[b]) for f32/f64 operands given as base pointers and
element strides. A matmul kernel qualifies (`plan_gemm`) when:

* its operands are plain loads of f32/f64 buffers of the accumulator's dtype whose row-major
  positions are affine in the operand variables (a fused transpose or broadcast is a stride,
  0 for a broadcast; a fused reshape that splits an axis with `//` is not);
* one epilogue store (the *primary*) writes the accumulator's dtype at a position with unit
  stride along n: that buffer is C. GEMM stores partial sums of earlier K blocks in C, so when
  the epilogue reads C's storage (the memory planner wrote C in place of a residual that dies
  here) and K spans several blocks, the kernel first copies what the epilogue reads there
  into scratch (`GemmPlan.copies`) and the epilogue reads the copy;
* the product is big enough to amortize packing (`GEMM_MIN_FLOPS`).

Batch axes whose strides are those of one flattened axis (for A, B and C alike) become GEMM's
batch; any leading batch axes that are not are a loop around the call. When B is shared by the
whole batch and A's and C's batch strides are M rows, the batch folds into GEMM's rows
(`fold_rows`): one [batch*M, K] product packs B once (an LSTM's [T, B, D] @ [D, 4H] input
projection, one thread: 4.75 -> 3.42 ms, numpy's 2-D product 3.4 ms). GEMM parallelizes its
own tasks (batch items, row and column blocks), so the kernel takes `nthreads`.

The epilogue runs in vector mode (`codegen_expr.VectorEmitter`) for each vector of results the
microkernel hands over: the primary store's value is what GEMM stores into C; every other store
(a pre-activation also returned, say) is a masked vector store of its own. All matmul kernels
of a module share ONE GEMM function per dtype (`shared_gemm`): each kernel's epilogue is a small
function of its own, passed to GEMM as a function pointer with a struct of the buffers it
touches. An indirect call per result vector costs little next to the tile's K-long FMA chain,
while every GEMM instance saved is over 100 ms of compile time.
Everything else falls back to `codegen_template.emit_matmul_simple`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from llvmlite import ir

from graphc.ir.errors import GraphError
from graphc.ir.kernel import (
    Acc,
    Buffer,
    Ix,
    Load,
    MatmulKernel,
    Operand,
    ReduceRef,
    Store,
    Var,
    kernel_reads,
    kernel_writes,
    linearize,
    walk,
)

from .codegen import KernelCode, KernelEnv, ParamEpoch
from .codegen_expr import BufferRef, ExprEmitter, VectorEmitter
from .codegen_loop import CHUNK_WORK
from .gemm import GemmConfig, emit_gemm, gemm_function_type, prepacked_b_elements
from .gemm_microkernel import TileContext, TileEpilogue
from .llvm_ir import (
    I1,
    I32,
    I64,
    PTR,
    VOID,
    alloca_at_entry,
    ceil_div,
    declare,
    decode_row_major,
    emit_loop,
    for_range,
    llvm_type,
    masked_store,
    smin,
    vsplat,
)
from .lowering import cast_value
from .parallel import ParallelBody, emit_parallel_for
from .staging_transpose import emit_transposed, transpose_plan

GEMM_MIN_FLOPS = 2 * 56 ** 3  # measured: below, the simple loops beat packing


@dataclass(frozen=True)
class Affine:
    """A buffer position `offset + sum(coef[v] * v)`."""

    buffer: str
    offset: int
    coef: Mapping[str, int]

    def stride(self, var: str) -> int:
        return self.coef.get(var, 0)


def affine_position(buffer: str, index: tuple[Ix, ...], shape: tuple[int, ...]
                    ) -> Affine | None:
    lin = linearize(index, shape)
    coef: dict[str, int] = {}
    for atom, c in lin.terms:
        if not isinstance(atom, Var):
            return None
        coef[atom.name] = c
    return Affine(buffer, lin.const, coef)


SCRATCH = "$scratch"
STAGE_PARALLEL_POINTS = 1 << 16  # staged operands of at least this many elements use all threads


@dataclass(frozen=True)
class Staged:
    """An operand computed into scratch memory before the GEMM (a fused prologue: a cast, an
    activation recomputed for this product): `vars` are the axes stored, row-major, at
    `offset` elements into the scratch; the operand's other (batch) axes have stride 0."""

    name: str                 # "a" or "b"
    operand: Operand
    vars: tuple[str, ...]
    offset: int


@dataclass(frozen=True)
class GemmPlan:
    dtype: str
    a: Affine
    b: Affine
    c: Affine
    primary: int                      # index of the primary store
    outer: tuple[str, ...]            # batch variables looped around the call
    inner: tuple[str, ...]            # batch variables flattened into GEMM's batch
    epilogue_buffers: tuple[str, ...]
    staged: tuple[Staged, ...] = ()
    scratch_elements: int = 0
    fold_rows: bool = False           # GEMM's batch folded into its rows (`_foldable`)
    copies: tuple[tuple[str, int], ...] = ()  # (epilogue buffer, bytes) copied before the GEMM

    def copy_offsets(self, esize: int) -> tuple[dict[str, int], int]:
        """Byte offsets into the scratch of each copy (after the staged operands, 64-byte
        aligned), and where GEMM's packing workspace starts."""
        at = -(-self.scratch_elements * esize // 64) * 64
        out = {}
        for name, nbytes in self.copies:
            out[name] = at
            at += -(-nbytes // 64) * 64
        return out, at


def _operand(value, dtype: str, shapes) -> Affine | None:
    if not isinstance(value, Load) or value.mask or value.dtype != dtype:
        return None
    return affine_position(value.buffer, value.index, shapes[value.buffer])


def _unit_stride_var(load: Load) -> str | None:
    """The variable along which `load` reads consecutive elements (coefficient 1 in its last
    index), if any."""
    if not load.index:
        return None
    for atom, coef in load.index[-1].terms:
        if isinstance(atom, Var) and coef == 1:
            return atom.name
    return None


def _stage(name: str, opnd: Operand, offset: int) -> tuple[Affine, Staged, int]:
    """Scratch layout of an operand that is not a plain load: its matrix axes and the batch
    axes it depends on, row-major, the two matrix axes in the order its loads read them
    contiguously (GEMM takes either layout through strides; a staging loop whose innermost
    variable strides through its sources gathers: q @ k^T's rotated keys, [n, k] in memory
    staged as [k, n], took half of a 32 x 128 x 128 x 64 product)."""
    deps = set()
    unit: dict[str, int] = {}
    for e in walk([opnd.value]):
        if isinstance(e, Load):
            for x in e.index:
                deps |= x.var_names()
            for m in e.mask:
                deps |= m.e.var_names()
            u = _unit_stride_var(e)
            if u is not None:
                unit[u] = unit.get(u, 0) + 1
    nb = len(opnd.vars) - 2
    kept = [i for i, v in enumerate(opnd.vars) if i >= nb or v in deps]
    row, col = opnd.vars[nb], opnd.vars[nb + 1]
    if unit.get(row, 0) > unit.get(col, 0):
        kept[-2:] = kept[-1], kept[-2]
    return staged_layout(name, opnd, tuple(opnd.vars[i] for i in kept), SCRATCH, offset)


def staged_layout(name: str, opnd: Operand, order: tuple[str, ...], buffer: str, offset: int
                  ) -> tuple[Affine, Staged, int]:
    """`opnd` staged row-major over `order` (some of its variables, in any order) at `offset`
    elements into `buffer`: where a kernel reads it, how it is written, how many elements."""
    extent = dict(zip(opnd.vars, opnd.shape, strict=True))
    coef, size = {}, 1
    for var in reversed(order):
        coef[var], size = size, size * extent[var]
    return Affine(buffer, offset, coef), Staged(name, opnd, order, offset), size


def _collapsible(affines: list[Affine], dims: list[tuple[str, int]]) -> int:
    """The first batch dimension from which on every affine is one flattened axis."""
    s = len(dims) - 1
    while s > 0:
        (v0, _), (v1, n1) = dims[s - 1], dims[s]
        if not all(a.stride(v0) == a.stride(v1) * n1 for a in affines):
            break
        s -= 1
    return max(s, 0)


def _foldable(a: Affine, b: Affine, c: Affine, inner: tuple[str, ...], m: int) -> bool:
    """Whether GEMM's (flattened) batch can become more rows: B is shared by every batch item
    and A's and C's batch strides are M rows. One [batch*M, K] @ [K, N] product then packs B
    once instead of once per batch item (a [T, B, D] @ [D, N] input projection, say)."""
    if not inner:
        return False
    last = inner[-1]
    return (b.stride(last) == 0 and a.stride(last) == m * a.stride("m")
            and c.stride(last) == m * c.stride("m"))


def plan_gemm(k: MatmulKernel, buffers: Mapping[str, Buffer],
              groups: Mapping[str, int] | None = None) -> GemmPlan | None:
    """A GemmPlan when the kernel qualifies (module note), else None."""
    dtype = k.acc_dtype
    if dtype not in ("f32", "f64"):
        return None
    if 2 * math.prod(k.batch) * k.m * k.n * k.k < GEMM_MIN_FLOPS:
        return None
    shapes = {n: b.type.shape for n, b in buffers.items()}
    affs, staged, scratch = {}, [], 0
    for name, opnd in (("a", k.a), ("b", k.b)):
        aff = _operand(opnd.value, dtype, shapes)
        if aff is None:
            if any(isinstance(e, (Acc, ReduceRef)) for e in walk([opnd.value])):
                return None
            aff, st, size = _stage(name, opnd, scratch)
            staged.append(st)
            scratch += -(-size // 16) * 16  # 64-byte aligned in f32
        affs[name] = aff
    a, b = affs["a"], affs["b"]
    epi_loads = {e.buffer for s in k.stores for e in walk([s.value]) if isinstance(e, Load)}
    primary = None
    for i, st in enumerate(k.stores):
        buf = buffers[st.buffer]
        c = affine_position(st.buffer, st.index, shapes[st.buffer])
        if (c is not None and buf.type.dtype == dtype and c.stride("n") == 1
                and st.value.dtype == dtype):
            primary = (i, c)
            break
    if primary is None:
        return None
    idx, c = primary
    groups = groups or {}
    c_group = groups.get(c.buffer, c.buffer)
    shared_with_c = sorted(n for n in epi_loads if groups.get(n, n) == c_group)
    copies = ()
    # with more than one K block of this dtype's GEMM (f64's are shorter than f32's), C holds
    # partial sums before the epilogue runs: what it reads from C's storage is copied first
    # (judged by the shortest K block of any CPU's config: a longer one only copies needlessly)
    if shared_with_c and GemmConfig.for_vector_bits(512, dtype).k_block(k.k) < k.k:
        copies = tuple((n, buffers[n].nbytes) for n in shared_with_c)
    if any(buffers[n].type.dtype == "f16" for n in epi_loads | {s.buffer for s in k.stores}):
        return None
    dims = [(f"b{j}", n) for j, n in enumerate(k.batch)]
    s = _collapsible([a, b, c], dims)
    outer = tuple(v for v, _ in dims[:s])
    inner = tuple(v for v, _ in dims[s:])
    epi = tuple(dict.fromkeys(sorted(epi_loads) + [st.buffer for j, st in
                                                  enumerate(k.stores) if j != idx]))
    fold = _foldable(a, b, c, inner, k.m)
    return GemmPlan(dtype, a, b, c, idx, outer, inner, epi, tuple(staged), scratch, fold,
                    copies)


def gemm_code(k: MatmulKernel, plan: GemmPlan, buffers: Mapping[str, Buffer],
              options: Mapping[str, Any]) -> KernelCode:
    names = tuple(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))
    bits = int(options.get("vector_bits") or 512)
    cfg = GemmConfig.for_vector_bits(bits, plan.dtype, str(options.get("cpu") or ""))

    def emit(env: KernelEnv) -> None:
        emit_gemm_call(k, plan, env, cfg, _workspace_threads(options))

    esize = 4 if plan.dtype == "f32" else 8
    _, staged = plan.copy_offsets(esize)
    workspace = cfg.workspace_bytes(_workspace_threads(options), k.n, k.k)
    persistent = _prepack_region(k, plan, buffers, cfg) if options.get("prepack", True) else None
    return KernelCode(names, 1, 1, False, emit, own_threads=True,
                      scratch_bytes=staged + workspace, persistent=persistent,
                      notes={"matmul": "gemm", "outer_batch": len(plan.outer),
                             "fold_rows": plan.fold_rows,
                             "staged": [st.name for st in plan.staged],
                             "copied": [name for name, _ in plan.copies],
                             "prepacked_b": persistent is not None})


def _prepack_region(k: MatmulKernel, plan: GemmPlan, buffers: Mapping[str, Buffer],
                    cfg: GemmConfig) -> tuple[str, str, int] | None:
    """The persistent region that keeps B packed across calls, when B is a parameter read
    as is (not staged) and shared by every batch item: (buffer, layout tag, bytes), the first
    64 bytes holding the epoch it was packed at."""
    b = plan.b
    if b.buffer == SCRATCH or buffers[b.buffer].kind != "param":
        return None
    if any(b.stride(v) for v in plan.outer + plan.inner):
        return None
    esize = 4 if plan.dtype == "f32" else 8
    tag = (f"gemm.{plan.dtype}.k{k.k}.n{k.n}.at{b.offset}.{b.stride('k')}x{b.stride('n')}"
           f".nr{cfg.nr}.kc{cfg.kc}")
    return b.buffer, tag, 64 + prepacked_b_elements(cfg, k.k, k.n) * esize


def _workspace_threads(options: Mapping[str, Any]) -> int:
    """Threads whose GEMM scratch (packed panels) the arena holds: GEMM uses at most these."""
    return max(1, int(options.get("max_threads") or 1))


def shared_gemm(module: ir.Module, base: GemmConfig) -> ir.Function:
    """The module's one GEMM for `base.dtype`, epilogue behind a function pointer.

    Its two epilogue arguments are (epilogue function, data): the microkernel calls
    `epilogue(acc, row, col0, mask, batch, data)` for each result vector, or stores acc as is
    when the function is null. One GEMM per module instead of one per matmul kernel: each
    instance is a driver, packing and 32-37 microkernels, 1.5 s of LLVM time.
    A module with a `graphc_runtime` set (`codegen.ModuleBuilder`) only declares it and notes
    the dtype: the precompiled runtime library (`runtime_lib`) defines it."""
    name = f"graphc.gemm.shared.{base.dtype}"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    runtime = getattr(module, "graphc_runtime", None)
    if runtime is None:
        return define_shared_gemm(module, base)
    runtime.add(base.dtype)
    return ir.Function(module, gemm_function_type(_shared_config(base)), name=name)


def _shared_config(base: GemmConfig) -> GemmConfig:
    return GemmConfig(**{**base.__dict__, "epilogue_args": (PTR, PTR)})


def define_shared_gemm(module: ir.Module, base: GemmConfig) -> ir.Function:
    """Emit the shared GEMM's definition into `module` (see `shared_gemm`)."""
    name = f"graphc.gemm.shared.{base.dtype}"
    cfg = _shared_config(base)

    def call_epilogue(ctx: TileContext) -> None:
        b = ctx.builder
        target, data = ctx.args
        fty = _epilogue_type(llvm_type(cfg.dtype))
        b.call(b.bitcast(target, fty.as_pointer()),
               [ctx.acc, ir.Constant(I64, ctx.ld), ir.Constant(I64, ctx.rows), ctx.row,
                ctx.col0, ctx.n_valid, ctx.batch, data, ctx.c, ctx.sc_m])

    def active(b: ir.IRBuilder, args: tuple[ir.Value, ...]) -> ir.Value:
        return b.icmp_unsigned("!=", b.ptrtoint(args[0], I64), ir.Constant(I64, 0))

    return emit_gemm(module, name, cfg, TileEpilogue(call_epilogue, active))


def _epilogue_type(t: ir.Type) -> ir.FunctionType:
    """`void epilogue(T* acc, i64 ld, i64 rows, i64 row0, i64 col0, i64 n_valid, i64 batch,
    i8* data, T* c, i64 sc_m)`: one register tile (`gemm.TileContext`)."""
    tp = t.as_pointer()
    return ir.FunctionType(ir.VoidType(), [tp, I64, I64, I64, I64, I64, I64, PTR, tp, I64])


def emit_gemm_call(k: MatmulKernel, plan: GemmPlan, env: KernelEnv, base: GemmConfig,
                   ws_threads: int) -> None:
    b = env.builder
    # GEMM's packing scratch lives in the arena after the staged operands (no malloc per
    # call); the thread count is capped at the workers it has room for.
    esize = 4 if plan.dtype == "f32" else 8
    copy_at, workspace_at = plan.copy_offsets(esize)
    workspace = b.gep(env.scratch, [ir.Constant(I64, workspace_at)])
    few = b.icmp_signed("<", env.nthreads, ir.Constant(ir.IntType(32), ws_threads))
    nthreads = b.select(few, env.nthreads, ir.Constant(ir.IntType(32), ws_threads))
    t = llvm_type(plan.dtype)
    epi_refs = [env.buffers[n] for n in plan.epilogue_buffers]
    extents = k.extents()
    gemm = shared_gemm(b.module, base)
    vty = ir.VectorType(t, base.lanes)
    # the epilogue's data: its buffers' pointers, then the outer batch indices
    data_ty = ir.LiteralStructType([PTR] * len(epi_refs) + [I64] * len(plan.outer))
    epi_fn = None
    if _needs_epilogue(k, plan):
        epi_fn = _epilogue_function(k, plan, extents, epi_refs, b.module, vty, data_ty,
                                    f"{b.function.name}.epilogue", (base.mr, base.nv))
    data = alloca_at_entry(b, data_ty, name="epi.data")
    sizes = dict(plan.copies)
    for i, r in enumerate(epi_refs):
        ptr = r.ptr
        if r.name in copy_at:  # C's partial sums will overwrite it: the epilogue reads a copy
            ptr = b.gep(env.scratch, [ir.Constant(I64, copy_at[r.name])])
            b.call(declare(b.module, "llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1]),
                   [ptr, r.ptr, ir.Constant(I64, sizes[r.name]), ir.Constant(I1, 0)])
        b.store(ptr, _field(b, data, i))
    i64 = lambda v: ir.Constant(I64, v)  # noqa: E731
    inner_batch = math.prod(extents[v] for v in plan.inner)
    last = plan.inner[-1] if plan.inner else None

    def base_ptr(aff: Affine, outer_env: dict[str, ir.Value]) -> ir.Value:
        off: ir.Value = i64(aff.offset)
        for v, val in outer_env.items():
            off = b.add(off, b.mul(val, i64(aff.stride(v))))
        ptr = env.scratch if aff.buffer == SCRATCH else env.buffers[aff.buffer].ptr
        return b.gep(b.bitcast(ptr, t.as_pointer()), [off])

    for st in plan.staged:
        _emit_staging(st, plan.dtype, env, extents, base.lanes)

    bpre, params = ir.Constant(t.as_pointer(), None), None
    if env.persistent is not None:  # B prepacked once per parameter epoch (`_prepack_region`)
        params = ParamEpoch.of(b, env.status, env.persistent)
        bpre = b.bitcast(b.gep(env.persistent, [i64(64)]), t.as_pointer())

    def call(outer_env: dict[str, ir.Value]) -> None:
        for j, v in enumerate(plan.outer):
            b.store(outer_env[v], _field(b, data, len(epi_refs) + j))
        fill = ir.Constant(I32, 0)
        if params is not None:
            fill = b.zext(params.stale(b), I32)
        bs = [i64(aff.stride(last) if last else 0) for aff in (plan.a, plan.b, plan.c)]
        batch, rows = (1, inner_batch * k.m) if plan.fold_rows else (inner_batch, k.m)
        args = [i64(batch), i64(rows), i64(k.n), i64(k.k),
                base_ptr(plan.a, outer_env), bs[0], i64(plan.a.stride("m")),
                i64(plan.a.stride("k")),
                base_ptr(plan.b, outer_env), bs[1], i64(plan.b.stride("k")),
                i64(plan.b.stride("n")),
                base_ptr(plan.c, outer_env), bs[2], i64(plan.c.stride("m")),
                nthreads, workspace, bpre, fill,
                b.bitcast(epi_fn, PTR) if epi_fn is not None else ir.Constant(PTR, None),
                b.bitcast(data, PTR)]
        b.call(gemm, args)
        if params is not None:
            params.derived(b)

    def loops(j: int, outer_env: dict[str, ir.Value]) -> None:
        if j == len(plan.outer):
            call(outer_env)
            return
        v = plan.outer[j]
        with for_range(b, i64(0), i64(extents[v]), name=f"batch{v}") as i:
            loops(j + 1, {**outer_env, v: i})

    loops(0, {})


# A transposed operand at least this large is staged by non-temporal stores: no read for
# ownership of lines it writes whole, and it would not stay in L2 for the tiles anyway. One
# thread, weights staged by channel for every call (a training step): 512 x 512 x 3 x 3
# (9.4 MB) with its convolution 7.5 -> 6.7 ms; 256 x 256 x 3 x 3 (2.4 MB) level, 128 x 128 x
# 3 x 3 2 % slower streamed.
STREAM_STAGED_BYTES = 4 << 20


def _emit_staging(st: Staged, dtype: str, env: KernelEnv, extents: dict[str, int],
                  lanes: int = 0) -> None:
    """scratch[offset + row-major(vars)] = operand value, converted to the GEMM's dtype, the
    innermost variable `lanes` at a time in explicit vectors (contiguous in the scratch; left
    to the loop vectorizer, a depthwise convolution's [4, 48, 16, 16] prologue came out as
    gathers and scatters along an outer variable: 37 of a MobileNet block's 280 us). A large
    operand is staged by all threads, in chunks of its outermost variable: serial, a cast of
    1024 x 1024 bf16 weights added a quarter to a two-thread [256, 1024] x [1024, 1024]
    product."""
    shape = dict(zip(st.operand.vars, st.operand.shape, strict=True))
    value = st.operand.value
    plain = (lanes > 1 and isinstance(value, Load) and not value.mask and value.dtype == dtype
             and value.buffer in env.buffers)
    transposed = transpose_plan(st, affine_position(
        value.buffer, value.index, env.buffers[value.buffer].shape) if plain else None, shape)
    points = math.prod(shape[v] for v in st.vars)
    if transposed is not None:
        # whole vectors and register transposes, serial: memory-bound (512 x 512 x 3 x 3 f32
        # weights on two threads measured level split over both)
        t = llvm_type(dtype)
        base = env.builder.gep(env.builder.bitcast(env.scratch, t.as_pointer()),
                               [ir.Constant(I64, st.offset)])
        stream = points * (4 if dtype == "f32" else 8) >= STREAM_STAGED_BYTES
        emit_transposed(transposed, dtype, env.builder, base, env.buffers, lanes, stream)
        if stream:  # the tiles, on any thread, read what the streaming stores wrote
            env.builder.fence("seq_cst")
        return
    if env.nthreads is None or not st.vars or points < STAGE_PARALLEL_POINTS:
        _stage_rows(st, dtype, env.builder, env.scratch, env.buffers, extents, shape, None,
                    lanes)
        return
    inner = max(1, points // shape[st.vars[0]])
    refs = [env.buffers[n] for n in sorted({e.buffer for e in walk([st.operand.value])
                                            if isinstance(e, Load)})]

    def body(p: ParallelBody) -> None:
        caps = list(p.captures)
        bufs = {**env.buffers, **{r.name: replace(r, ptr=c) for r, c in zip(refs, caps[1:],
                                                                            strict=True)}}
        _stage_rows(st, dtype, p.builder, caps[0], bufs, extents, shape, (p.lo, p.hi), lanes)

    emit_parallel_for(env.builder, body, ir.Constant(I64, shape[st.vars[0]]),
                      grain=max(1, -(-CHUNK_WORK // inner)), nthreads=env.nthreads,
                      captures=[env.scratch] + [r.ptr for r in refs],
                      name=f"{env.builder.function.name}.stage.{st.name}")


def _stage_rows(st: Staged, dtype: str, b: ir.IRBuilder, scratch: ir.Value,
                buffers: Mapping[str, BufferRef], extents: dict[str, int],
                shape: dict[str, int], rows: tuple[ir.Value, ir.Value] | None,
                lanes: int = 0) -> None:
    """The staging loop nest, over all of the outermost variable or over `rows` of it; the
    innermost variable in vectors of `lanes` (masked at its end) when `lanes` > 1.

    Where the source is strided along that variable (a transposition: weights staged with
    the output channel innermost), the loop over its vectors goes outside the nest: a vector's
    lanes then read `lanes` rows of the source one element further at every step, where
    otherwise every step read a new line of each row (512 x 512 x 3 x 3 weights by channel,
    one thread: 5.8 -> 1.5 ms)."""
    t = llvm_type(dtype)
    base = b.gep(b.bitcast(scratch, t.as_pointer()), [ir.Constant(I64, st.offset)])
    vector = lanes > 1 and len(st.vars) > (0 if rows is None else 1) and shape[st.vars[-1]] > 1
    if vector and _strided_source(st, buffers, lanes):
        v = st.vars[-1]
        with for_range(b, ir.Constant(I64, 0), ir.Constant(I64, -(-shape[v] // lanes)),
                       name=f"stage.{v}.blocks") as blk:
            _stage_nest(st, dtype, b, base, buffers, extents, shape, rows, lanes, blk)
        return
    _stage_nest(st, dtype, b, base, buffers, extents, shape, rows, lanes if vector else 0,
                None)


def _strided_source(st: Staged, buffers: Mapping[str, BufferRef], lanes: int) -> bool:
    """Whether some load of the staged value reads the innermost staged variable more than
    `lanes` elements apart: a vector's lanes then lie on as many cache lines, rows of the
    source that the nest's other loops leave before coming back. (A flipped kernel read a
    filter apart, 9 elements, stays within a few lines that the other loops sweep next: the
    blocks outside made the staging slower there.)"""
    v = st.vars[-1]
    for e in walk([st.operand.value]):
        if isinstance(e, Load) and e.buffer in buffers:
            lin = linearize(e.index, buffers[e.buffer].shape)
            coef = {a.name: c for a, c in lin.terms if isinstance(a, Var)}
            if abs(coef.get(v, 0)) > lanes:
                return True
    return False


def _stage_nest(st: Staged, dtype: str, b: ir.IRBuilder, base: ir.Value,
                buffers: Mapping[str, BufferRef], extents: dict[str, int],
                shape: dict[str, int], rows: tuple[ir.Value, ir.Value] | None, lanes: int,
                block: ir.Value | None) -> None:
    """The loops of `_stage_rows`: the innermost variable in vectors of `lanes` (when > 1),
    only its vector `block` when one is given."""
    vector = lanes > 1
    t = llvm_type(dtype)

    def vector_row(scope: ExprEmitter, pos: ir.Value) -> None:
        v = st.vars[-1]
        n = shape[v]
        iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
        vty = ir.VectorType(t, lanes)
        lo, hi = ((block, b.add(block, ir.Constant(I64, 1))) if block is not None
                  else (ir.Constant(I64, 0), ir.Constant(I64, -(-n // lanes))))
        with for_range(b, lo, hi, name=f"stage.{v}") as blk:
            col0 = b.mul(blk, ir.Constant(I64, lanes))
            mask = b.icmp_signed("<", b.add(vsplat(b, col0, lanes), iota),
                                 vsplat(b, ir.Constant(I64, n), lanes))
            ev = VectorEmitter.within(scope, {v: col0}, v, lanes, mask)
            value = cast_value(b, ev.widen(ev(st.operand.value)), st.operand.value.dtype,
                               dtype)
            at = b.add(b.mul(pos, ir.Constant(I64, n)), col0)
            masked_store(b, value, b.bitcast(b.gep(base, [at]), vty.as_pointer()), mask)

    def nest(j: int, scope: ExprEmitter, pos: ir.Value) -> None:
        if vector and j == len(st.vars) - 1:
            vector_row(scope, pos)
            return
        if j == len(st.vars):
            value = cast_value(b, scope(st.operand.value), st.operand.value.dtype, dtype)
            b.store(value, b.gep(base, [pos]))
            return
        v = st.vars[j]
        n = ir.Constant(I64, shape[v])
        lo, hi = rows if j == 0 and rows is not None else (ir.Constant(I64, 0), n)
        with for_range(b, lo, hi, name=f"stage.{v}") as i:
            nest(j + 1, scope.child({v: i}), b.add(b.mul(pos, n), i))

    nest(0, ExprEmitter(b, buffers, extents), ir.Constant(I64, 0))


def _field(b: ir.IRBuilder, struct_ptr: ir.Value, i: int) -> ir.Value:
    return b.gep(struct_ptr, [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), i)])


def _needs_epilogue(k: MatmulKernel, plan: GemmPlan) -> bool:
    """False when the kernel just stores the accumulator (GEMM then stores it itself)."""
    return len(k.stores) > 1 or not isinstance(k.stores[plan.primary].value, Acc)


def _epilogue_function(k: MatmulKernel, plan: GemmPlan, extents: dict[str, int],
                       epi_refs: list[BufferRef], module: ir.Module, vty: ir.Type,
                       data_ty: ir.Type, name: str, full: tuple[int, int]) -> ir.Function:
    """The kernel-IR epilogue for one register tile (`_epilogue_type`), in vector mode: for each
    row and each vector of valid columns, the parked result is `acc`, every other store is done
    as written and the primary's value is stored into C's tile.

    A full tile (`full`: mr rows of nv vectors, every column valid), nearly every call, takes
    a copy of the loops with constant bounds and no column masks: straight-line loads and
    stores, where the general loops build a mask per vector and load and store under it (one
    thread, with bias + relu: 128 x 256 x 784 297 -> 291 us, 128 x 256 x 256 100 -> 98 us)."""
    t = vty.element
    lanes = vty.count
    fn = ir.Function(module, _epilogue_type(t), name=module.get_unique_name(name))
    fn.linkage = "internal"
    acc_tile, ld, rows, row0, col0, n_valid, batch0, data_raw, c_tile, sc_m = fn.args
    for arg in (acc_tile, c_tile):
        arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    data = b.bitcast(data_raw, data_ty.as_pointer())
    nref = len(epi_refs)
    refs = {r.name: BufferRef(r.name, r.dtype, r.shape, r.bf16_bits, b.load(_field(b, data, i)))
            for i, r in enumerate(epi_refs)}
    outer_env = {v: b.load(_field(b, data, nref + j)) for j, v in enumerate(plan.outer)}
    inner_dims = [(v, extents[v]) for v in plan.inner]
    iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
    nvec = smin(b, ceil_div(b, n_valid, lanes), b.sdiv(ld, ir.Constant(I64, lanes)))
    primary: Store = k.stores[plan.primary]

    every_lane = ir.Constant(ir.VectorType(ir.IntType(1), lanes), [1] * lanes)

    def tile_row(b: ir.IRBuilder, i: ir.Value, masked: bool, nvec: ir.Value) -> None:
        row, batch = b.add(row0, i), batch0
        if plan.fold_rows:  # GEMM's row r is (batch r // M, row r % M)
            m_rows = ir.Constant(I64, k.m)
            batch, row = b.udiv(row, m_rows), b.urem(row, m_rows)
        env = {**outer_env, **decode_row_major(b, batch, inner_dims)}

        def vector(b: ir.IRBuilder, j: ir.Value, _c: list) -> list:
            off = b.mul(j, ir.Constant(I64, lanes))
            col = b.add(col0, off)
            mask = (b.icmp_signed("<", iota, vsplat(b, b.sub(n_valid, off), lanes)) if masked
                    else every_lane)
            acc_ptr = b.gep(acc_tile, [b.add(b.mul(i, ld), off)])
            ev = VectorEmitter(b, refs, extents, {**env, "m": row, "n": col}, "n", lanes, mask)
            ev.acc = b.load(b.bitcast(acc_ptr, vty.as_pointer()))
            for jj, st in enumerate(k.stores):
                if jj != plan.primary:
                    ev.vstore(st.buffer, st.index, ev(st.value))
            out = ev.widen(ev(primary.value))
            if out.type != vty:
                raise GraphError(f"GEMM epilogue of {k.name} produced {out.type}")
            c_ptr = b.gep(c_tile, [b.add(b.mul(i, sc_m), off)])
            masked_store(b, out, b.bitcast(c_ptr, vty.as_pointer()), mask)
            return []

        emit_loop(b, ir.Constant(I64, 0), nvec, vector, name="epi.vec")

    def tile(rows: ir.Value, masked: bool, nvec: ir.Value) -> None:
        def one_row(b: ir.IRBuilder, i: ir.Value, _c: list) -> list:
            tile_row(b, i, masked, nvec)
            return []

        emit_loop(b, ir.Constant(I64, 0), rows, one_row, name="epi.row")

    mr, nv = full
    is_full = b.and_(b.icmp_signed("==", rows, ir.Constant(I64, mr)),
                     b.and_(b.icmp_signed("==", ld, ir.Constant(I64, nv * lanes)),
                            b.icmp_signed(">=", n_valid, ir.Constant(I64, nv * lanes))))
    with b.if_else(is_full) as (then, otherwise):
        with then:
            tile(ir.Constant(I64, mr), False, ir.Constant(I64, nv))
        with otherwise:
            tile(rows, True, nvec)
    b.ret_void()
    return fn
