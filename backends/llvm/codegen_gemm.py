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
  the epilogue reads C's storage (an in-place residual), K must fit one block;
* the product is big enough to amortize packing (`GEMM_MIN_FLOPS`).

Batch axes whose strides are those of one flattened axis (for A, B and C alike) become GEMM's
batch; any leading batch axes that are not are a loop around the call. GEMM parallelizes its
own tasks (batch items, row and column blocks), so the kernel takes `nthreads`.

The epilogue runs in vector mode (`codegen_expr.VectorEmitter`) for each vector of results the
microkernel hands over: the primary store's value is what GEMM stores into C; every other store
(a pre-activation also returned, say) is a masked vector store of its own. The buffers the
epilogue touches are extra arguments of the GEMM function (`GemmConfig.epilogue_args`).
Everything else falls back to `codegen_template.emit_matmul_simple`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llvmlite import ir

from graphc.ir.errors import GraphError
from graphc.ir.kernel import Buffer, Ix, Load, MatmulKernel, Store, Var, linearize, walk

from .codegen import KernelCode, KernelEnv
from .codegen_expr import BufferRef, VectorEmitter
from .gemm import EpilogueContext, GemmConfig, emit_gemm
from .llvm_ir import I64, PTR, for_range, llvm_type

GEMM_MIN_FLOPS = 2 * 32 ** 3


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


def _operand(value, dtype: str, shapes) -> Affine | None:
    if not isinstance(value, Load) or value.mask or value.dtype != dtype:
        return None
    return affine_position(value.buffer, value.index, shapes[value.buffer])


def _collapsible(affines: list[Affine], dims: list[tuple[str, int]]) -> int:
    """The first batch dimension from which on every affine is one flattened axis."""
    s = len(dims) - 1
    while s > 0:
        (v0, _), (v1, n1) = dims[s - 1], dims[s]
        if not all(a.stride(v0) == a.stride(v1) * n1 for a in affines):
            break
        s -= 1
    return max(s, 0)


def plan_gemm(k: MatmulKernel, buffers: Mapping[str, Buffer],
              groups: Mapping[str, int] | None = None) -> GemmPlan | None:
    """A GemmPlan when the kernel qualifies (module note), else None."""
    dtype = k.acc_dtype
    if dtype not in ("f32", "f64"):
        return None
    if 2 * math.prod(k.batch) * k.m * k.n * k.k < GEMM_MIN_FLOPS:
        return None
    shapes = {n: b.type.shape for n, b in buffers.items()}
    a, b = _operand(k.a.value, dtype, shapes), _operand(k.b.value, dtype, shapes)
    if a is None or b is None:
        return None
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
    reads_c = any(groups.get(n, n) == c_group for n in epi_loads)
    if reads_c and k.k > GemmConfig().kc:
        return None
    if any(buffers[n].type.dtype == "f16" for n in epi_loads | {s.buffer for s in k.stores}):
        return None
    dims = [(f"b{j}", n) for j, n in enumerate(k.batch)]
    s = _collapsible([a, b, c], dims)
    outer = tuple(v for v, _ in dims[:s])
    inner = tuple(v for v, _ in dims[s:])
    epi = tuple(dict.fromkeys(sorted(epi_loads) + [st.buffer for j, st in
                                                  enumerate(k.stores) if j != idx]))
    return GemmPlan(dtype, a, b, c, idx, outer, inner, epi)


def gemm_code(k: MatmulKernel, plan: GemmPlan, buffers: Mapping[str, Buffer],
              options: Mapping[str, Any]) -> KernelCode:
    names = tuple(dict.fromkeys([plan.a.buffer, plan.b.buffer, plan.c.buffer,
                                 *plan.epilogue_buffers]))
    bits = int(options.get("vector_bits") or 512)

    def emit(env: KernelEnv) -> None:
        emit_gemm_call(k, plan, env, GemmConfig.for_vector_bits(bits, plan.dtype))

    return KernelCode(names, 1, 1, False, emit, own_threads=True,
                      notes={"matmul": "gemm", "outer_batch": len(plan.outer)})


def emit_gemm_call(k: MatmulKernel, plan: GemmPlan, env: KernelEnv, base: GemmConfig) -> None:
    b = env.builder
    t = llvm_type(plan.dtype)
    epi_refs = [env.buffers[n] for n in plan.epilogue_buffers]
    cfg = GemmConfig(**{**base.__dict__,
                        "epilogue_args": (PTR,) * len(epi_refs) + (I64,) * len(plan.outer)})
    extents = k.extents()
    fn = emit_gemm(b.module, b.module.get_unique_name(f"{b.function.name}.gemm"), cfg,
                   _epilogue(k, plan, extents, epi_refs))
    i64 = lambda v: ir.Constant(I64, v)  # noqa: E731
    inner_batch = math.prod(extents[v] for v in plan.inner)
    last = plan.inner[-1] if plan.inner else None

    def base_ptr(aff: Affine, outer_env: dict[str, ir.Value]) -> ir.Value:
        off: ir.Value = i64(aff.offset)
        for v, val in outer_env.items():
            off = b.add(off, b.mul(val, i64(aff.stride(v))))
        typed = b.bitcast(env.buffers[aff.buffer].ptr, t.as_pointer())
        return b.gep(typed, [off])

    def call(outer_env: dict[str, ir.Value]) -> None:
        bs = [i64(aff.stride(last) if last else 0) for aff in (plan.a, plan.b, plan.c)]
        args = [i64(inner_batch), i64(k.m), i64(k.n), i64(k.k),
                base_ptr(plan.a, outer_env), bs[0], i64(plan.a.stride("m")),
                i64(plan.a.stride("k")),
                base_ptr(plan.b, outer_env), bs[1], i64(plan.b.stride("k")),
                i64(plan.b.stride("n")),
                base_ptr(plan.c, outer_env), bs[2], i64(plan.c.stride("m")),
                env.nthreads, ir.Constant(PTR, None)]
        args += [r.ptr for r in epi_refs] + [outer_env[v] for v in plan.outer]
        b.call(fn, args)

    def loops(j: int, outer_env: dict[str, ir.Value]) -> None:
        if j == len(plan.outer):
            call(outer_env)
            return
        v = plan.outer[j]
        with for_range(b, i64(0), i64(extents[v]), name=f"batch{v}") as i:
            loops(j + 1, {**outer_env, v: i})

    loops(0, {})


def _epilogue(k: MatmulKernel, plan: GemmPlan, extents: dict[str, int],
              epi_refs: list[BufferRef]):
    """The GEMM epilogue hook: inside the microkernel only its own arguments exist, so every
    buffer the epilogue touches (constants included) arrives as an epilogue argument."""
    primary: Store = k.stores[plan.primary]
    others = [st for j, st in enumerate(k.stores) if j != plan.primary]
    inner_dims = [(v, extents[v]) for v in plan.inner]

    def epilogue(ctx: EpilogueContext) -> ir.Value:
        b = ctx.builder
        nref = len(epi_refs)
        refs = {r.name: BufferRef(r.name, r.dtype, r.shape, r.bf16_bits, ctx.args[i])
                for i, r in enumerate(epi_refs)}
        env = {v: ctx.args[nref + j] for j, v in enumerate(plan.outer)}
        batch = ctx.batch
        for pos in range(len(inner_dims) - 1, -1, -1):
            v, n = inner_dims[pos]
            if pos == 0:
                env[v] = batch
            else:
                env[v] = b.urem(batch, ir.Constant(I64, n))
                batch = b.udiv(batch, ir.Constant(I64, n))
        env["m"], env["n"] = ctx.row, ctx.col0
        lanes = ctx.acc.type.count
        ev = VectorEmitter(b, refs, extents, env, "n", lanes, ctx.mask)
        ev.acc = ctx.acc
        for st in others:
            ev.vstore(st.buffer, st.index, ev(st.value))
        out = ev.widen(ev(primary.value))
        if out.type != ctx.acc.type:
            raise GraphError(f"GEMM epilogue of {k.name} produced {out.type}")
        return out

    return epilogue

