"""Templates: matmul and convolution with their kernel-IR prologue (operands) and epilogue.

Note: how the templates are emitted
-----------------------------------
A template's operands are virtual tensors (`Operand`: an expression over the operand's own
variables, usually a load through an index map: a fused transpose, broadcast or cast), and its
epilogue is a list of stores reading `Acc()` at the output point (bias, activation, residual).

* `matmul`: tasks are (batch, row m, block of n). A task keeps a block of accumulators in a
  stack array, runs k outermost and n innermost (`acc[n] = fma(A[m, k], B[k, n], acc[n])`: the
  inner loop is contiguous in B and in the accumulators, so it vectorizes), then evaluates the
  epilogue for each n of the block. When B is strided along n (an attention head's keys read
  through a fused transpose), the n loop would gather it: each thread first copies B of its
  current batch item into a contiguous stack array, or, for a short k with B contiguous along
  it, k runs innermost as one reassociated dot product per output (`emit_matmul_dot`); see
  `_simple_order`. This is the portable path; `gemm.py`'s register-blocked generator replaces
  it for the f32/f64 shapes it handles.
* `conv`: direct convolution. A task is one (n, o, output row) and holds the row's accumulators;
  for each input channel of o's group and each kernel offset it adds `w * x` along the row. The
  input coordinate of output position p at kernel offset t is q = p·stride + t·rhs_dilation −
  pad_lo in the lhs-dilated, padded input; it is a real element when 0 <= q <= (S−1)·lhs_dilation
  and q ≡ 0 (mod lhs_dilation), at index q / lhs_dilation. Elsewhere the term is 0: the operand
  expression is evaluated only under that condition (a masked load after if-conversion), so a
  border never reads out of bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from llvmlite import ir

from graphc.ir.kernel import (
    Buffer,
    ConvKernel,
    Load,
    MatmulKernel,
    kernel_reads,
    kernel_writes,
)

from .codegen import KernelCode, KernelEnv
from .codegen_expr import ExprEmitter, element_ptr, store_element
from .codegen_loop import CHUNK_WORK, PARALLEL_FLOPS
from .llvm_ir import (
    I32,
    I64,
    alloca_at_entry,
    decode_row_major,
    emit_loop,
    for_range,
    intrinsic,
    masked_load,
    masked_store,
    smin,
    vsplat,
)
from .lowering import cast_value, compute_type

MATMUL_NBLOCK = 512


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _buffers(k) -> tuple[str, ...]:
    return tuple(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))




def _madd(b: ir.IRBuilder, x: ir.Value, y: ir.Value, acc: ir.Value) -> ir.Value:
    if isinstance(acc.type, (ir.FloatType, ir.DoubleType)):
        return b.call(intrinsic(b.module, "llvm.fmuladd", acc.type), [x, y, acc])
    return b.add(b.mul(x, y), acc)


def _zero(ty: ir.Type) -> ir.Constant:
    return ir.Constant(ty, 0.0 if isinstance(ty, (ir.FloatType, ir.DoubleType)) else 0)


def _slot(b: ir.IRBuilder, arr: ir.Value, i: ir.Value) -> ir.Value:
    return b.gep(arr, [ir.Constant(I32, 0), i], inbounds=True)


def template_code(k: MatmulKernel | ConvKernel, buffers: Mapping[str, Buffer],
                  options: dict[str, Any]) -> KernelCode:
    if isinstance(k, MatmulKernel):
        from .codegen_gemm import gemm_code, plan_gemm

        plan = plan_gemm(k, buffers, options.get("storage_groups"))
        if plan is not None and not options.get("simple_matmul"):
            return gemm_code(k, plan, buffers, options)
        return matmul_code(k, buffers)
    from .codegen_conv import conv_code as blocked_conv_code
    from .codegen_conv import plan_conv
    from .codegen_conv_taps import plan_taps, taps_code

    if options.get("simple_conv"):
        return conv_code(k)
    bits = int(options.get("vector_bits") or 512)
    taps = plan_taps(k, buffers, bits)
    if taps is not None:
        return taps_code(k, taps)
    from .codegen_conv_lanes import lanes_code, plan_lanes

    lanes = plan_lanes(k, buffers, bits, options.get("updated", frozenset()))
    if lanes is not None:
        return lanes_code(k, lanes)
    plan = plan_conv(k, buffers, bits)
    return blocked_conv_code(k, plan) if plan is not None else conv_code(k)


# -- matmul ---------------------------------------------------------------------------------------


def matmul_code(k: MatmulKernel, buffers: Mapping[str, Buffer] | None = None) -> KernelCode:
    nb = min(k.n, MATMUL_NBLOCK)
    nblk = -(-k.n // nb) if k.n else 0
    rows = math.prod(k.batch) * k.m
    tasks = rows * nblk
    work = 2 * rows * k.n * max(k.k, 1)
    grain = max(1, -(-CHUNK_WORK // max(1, nb * k.k * 2)))
    order = _simple_order(k, buffers, nblk) if buffers is not None else "axpy"
    lanes = AXPY_VECTOR_BITS // (64 if k.acc_dtype == "f64" else 32)
    vectors = (order != "dot" and k.acc_dtype in ("f32", "f64") and nb <= AXPY_VECTORS * lanes
               and (order == "axpy, B copied" or _b_runs_along_n(k, buffers)))

    def emit(env: KernelEnv) -> None:
        if order == "dot":
            emit_matmul_dot(k, env, nb, nblk)
        else:
            emit_matmul_simple(k, env, nb, nblk, copy_b=order == "axpy, B copied",
                               lanes=lanes if vectors else 0)

    return KernelCode(_buffers(k), tasks, grain, work >= PARALLEL_FLOPS and tasks > grain, emit,
                      notes={"matmul": "simple", "nblock": nb, "order": order,
                             "vector_accumulators": vectors})


def _b_runs_along_n(k: MatmulKernel, buffers: Mapping[str, Buffer] | None) -> bool:
    """B is a plain load of the accumulator's dtype, contiguous along n."""
    from .codegen_gemm import affine_position

    bv = k.b.value
    if buffers is None or not isinstance(bv, Load) or bv.mask or bv.dtype != k.acc_dtype:
        return False
    pos = affine_position(bv.buffer, bv.index, buffers[bv.buffer].type.shape)
    return pos is not None and pos.stride("n") == 1


COPY_B_MAX_BYTES = 32 << 10  # a stack copy of B per batch item, up to this size
# Explicit vector accumulators for blocks of n up to AXPY_VECTORS vectors (module note)
AXPY_VECTOR_BITS = 512
AXPY_VECTORS = 4
DOT_MAX_N = 64  # the widest product whose short-k outputs are computed as dot products


def _simple_order(k: MatmulKernel, buffers: Mapping[str, Buffer], nblk: int) -> str:
    """The simple path's loop order for this kernel's operands. B strided along n (an
    attention head's keys through a fused transpose) would be gathered in the n-innermost
    loop; copying it per batch item into a contiguous stack array measured best (q @ k^T of
    2 x 16 and 2 x 32 tokens, 2 heads: 8.1 -> 5.4 us and 29.4 -> 13.8 us; unfused 5.0 and
    11.4), except for short k (a 12-wide head: 14.8 us, 11.7 copied, 9.6 as dot products):
    there, with A and B plain float loads contiguous along k, k runs innermost. Only for
    narrow products, though: at 128 columns the dot products lose to the copy (a dense layer's
    input gradient, 32 x 128 x 10: 20.5 against 6.0 us; 16 x 64 x 12 and 64 x 32 x 10 still
    favour them)."""
    from .codegen_gemm import affine_position

    def position(v):
        return affine_position(v.buffer, v.index, buffers[v.buffer].type.shape)

    bv = k.b.value
    if not isinstance(bv, Load) or bv.mask or k.n < 2:  # one column: no stride to speak of
        return "axpy"
    b = position(bv)
    if b is not None and b.stride("n") == 1:
        return "axpy"
    av = k.a.value
    a = position(av) if isinstance(av, Load) and not av.mask else None
    dot = (a is not None and b is not None and {av.dtype, bv.dtype} <= {"f32", "f64"}
           and a.stride("k") == 1 and b.stride("k") == 1 and k.k > 1)
    esize = 8 if k.acc_dtype == "f64" else 4
    short_dots = dot and k.k < 16 and k.n <= DOT_MAX_N
    if nblk == 1 and k.k * k.n * esize <= COPY_B_MAX_BYTES and not short_dots:
        return "axpy, B copied"
    return "dot" if dot else "axpy"


@contextmanager
def _tasks(k: MatmulKernel, env: KernelEnv, nb: int, nblk: int) -> Iterator[tuple]:
    """The simple matmul's task loop over (batch item, row m, block of n): per task yields the
    row index, its expression scope, the block [n0, n1) and the block's accumulators, and
    applies the epilogue to them after the body."""
    b = env.builder
    ty = compute_type(k.acc_dtype)
    ev = ExprEmitter(b, env.buffers, k.extents())
    # whole vectors of room: `_axpy_vectors` stores its accumulators with masked vector stores
    acc = alloca_at_entry(b, ir.ArrayType(ty, -(-nb // 16) * 16), name="acc")
    dims = [(f"b{j}", n) for j, n in enumerate(k.batch)] + [("m", k.m)]
    with for_range(b, env.lo, env.hi, name="task") as t:
        row = b.udiv(t, _i64(nblk))
        tev = ev.child(decode_row_major(b, row, dims))
        n0 = b.mul(b.urem(t, _i64(nblk)), _i64(nb))
        n1 = smin(b, b.add(n0, _i64(nb)), _i64(k.n))
        yield row, tev, n0, n1, acc
        _epilogue_row(k.stores, tev, acc, "n", n0, n1)


def emit_matmul_dot(k: MatmulKernel, env: KernelEnv, nb: int, nblk: int) -> None:
    """The simple matmul with k innermost: each output is a dot product of a row of A and a
    column of B, both contiguous in k, summed with reassociation (the kernel IR leaves the
    order unspecified) so that LLVM vectorizes it."""
    b = env.builder
    zero, flags = _zero(compute_type(k.acc_dtype)), ("reassoc", "contract")
    with _tasks(k, env, nb, nblk) as (_, tev, n0, n1, acc):
        with for_range(b, n0, n1, name="n") as n:
            nev = tev.child({"n": n})
            p = _slot(b, acc, b.sub(n, n0))
            b.store(zero, p)
            with for_range(b, _i64(0), _i64(k.k), name="k") as kk:
                kev = nev.child({"k": kk})
                a = cast_value(b, kev(k.a.value), k.a.value.dtype, k.acc_dtype)
                bv = cast_value(b, kev(k.b.value), k.b.value.dtype, k.acc_dtype)
                b.store(b.fadd(b.load(p), b.fmul(a, bv, flags=flags), flags=flags), p)


def emit_matmul_simple(k: MatmulKernel, env: KernelEnv, nb: int, nblk: int,
                       copy_b: bool = False, lanes: int = 0) -> None:
    """`copy_b` (one n block): B of the current batch item is first written into a stack
    array [K, N], contiguous along n, once per batch item a thread reaches (its tasks are
    consecutive rows), and the n loop reads that copy instead of B's strided layout. `lanes`:
    the block's accumulators are explicit vectors of that many lanes (`_axpy_vectors`)."""
    b = env.builder
    acc_dtype = k.acc_dtype
    ty = compute_type(acc_dtype)
    if copy_b:
        panel = alloca_at_entry(b, ir.ArrayType(ty, k.k * k.n), name="bcopy")
        held = alloca_at_entry(b, I64, name="bcopy.batch")
        b.store(_i64(-1), held)
    with _tasks(k, env, nb, nblk) as (row, tev, n0, n1, acc):
        if copy_b:
            item = b.udiv(row, _i64(k.m))
            with b.if_then(b.icmp_signed("!=", b.load(held), item)):
                with for_range(b, _i64(0), _i64(k.k), name="ck") as kk:
                    with for_range(b, _i64(0), _i64(k.n), name="cn") as n:
                        v = cast_value(b, tev.child({"k": kk, "n": n})(k.b.value),
                                       k.b.value.dtype, acc_dtype)
                        b.store(v, _slot(b, panel, b.add(b.mul(kk, _i64(k.n)), n)))
                b.store(item, held)
        if lanes:
            def b_at(kev: ExprEmitter, kk: ir.Value, n: ir.Value) -> ir.Value:
                if copy_b:
                    return _slot(b, panel, b.add(b.mul(kk, _i64(k.n)), n))
                nev = kev.child({"n": n})
                return element_ptr(b, nev.buffers[k.b.value.buffer],
                                   nev.linear(k.b.value.buffer, k.b.value.index), inbounds=False)

            _axpy_vectors(k, tev, n0, n1, acc, lanes, b_at)
            return
        with for_range(b, n0, n1, name="zero") as n:
            b.store(_zero(ty), _slot(b, acc, b.sub(n, n0)))
        with for_range(b, _i64(0), _i64(k.k), name="k") as kk:
            kev = tev.child({"k": kk})
            a = cast_value(b, kev(k.a.value), k.a.value.dtype, acc_dtype)
            with for_range(b, n0, n1, name="n") as n:
                if copy_b:
                    bv = b.load(_slot(b, panel, b.add(b.mul(kk, _i64(k.n)), n)))
                else:
                    bv = cast_value(b, kev.child({"n": n})(k.b.value), k.b.value.dtype,
                                    acc_dtype)
                p = _slot(b, acc, b.sub(n, n0))
                b.store(_madd(b, a, bv, b.load(p)), p)


AXPY_CHAINS = 4  # independent accumulators along k: one FMA's latency each, not k of them


def _axpy_vectors(k: MatmulKernel, tev: ExprEmitter, n0: ir.Value, n1: ir.Value,
                  acc: ir.Value, lanes: int, b_at) -> None:
    """One row's block [n0, n1) of outputs as vector accumulators: for every k, A's element
    broadcast times B's row (masked past n1), into AXPY_CHAINS interleaved sets of
    accumulators summed at the end, then stored to `acc` for the epilogue. With one set per
    row, each k step waited on the previous FMA: a dense layer's 32 x 128 x 10 took 3.8 us."""
    b = tev.b
    ty = compute_type(k.acc_dtype)
    vty = ir.VectorType(ty, lanes)
    nv = -(-min(k.n, AXPY_VECTORS * lanes) // lanes)
    iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
    width = b.sub(n1, n0)
    masks = [b.icmp_signed("<", b.add(iota, vsplat(b, _i64(j * lanes), lanes)),
                           vsplat(b, width, lanes)) for j in range(nv)]
    fma = intrinsic(b.module, "llvm.fma", vty)
    chains = max(1, min(AXPY_CHAINS, k.k))
    align = 4 if k.acc_dtype == "f32" else 8

    def step(kk: ir.Value, accs: list) -> list:
        kev = tev.child({"k": kk})
        a = vsplat(b, cast_value(b, kev(k.a.value), k.a.value.dtype, k.acc_dtype), lanes)
        out = []
        for j, (v, mask) in enumerate(zip(accs, masks, strict=True)):
            ptr = b.bitcast(b_at(kev, kk, b.add(n0, _i64(j * lanes))), vty.as_pointer())
            out.append(b.call(fma, [a, masked_load(b, ptr, mask, vty, align=align), v]))
        return out

    def body(bb: ir.IRBuilder, kk: ir.Value, carried: list) -> list:
        out = []
        for c in range(chains):
            out += step(b.add(kk, _i64(c)), carried[c * nv:(c + 1) * nv])
        return out

    zero = ir.Constant(vty, [0.0] * lanes)
    main = k.k // chains * chains
    flat = emit_loop(b, _i64(0), _i64(main), body, [zero] * (chains * nv), step=chains,
                     name="kv")
    parts = [flat[c * nv:(c + 1) * nv] for c in range(chains)]
    for kk in range(main, k.k):  # what is left of k, into the first set
        parts[0] = step(_i64(kk), parts[0])
    total = parts[0]
    for p in parts[1:]:
        total = [b.fadd(x, y) for x, y in zip(total, p, strict=True)]
    for j, (v, mask) in enumerate(zip(total, masks, strict=True)):
        ptr = b.bitcast(_slot(b, acc, _i64(j * lanes)), vty.as_pointer())
        masked_store(b, v, ptr, mask, align=align)


def _epilogue_row(stores, ev: ExprEmitter, acc: ir.Value, var: str, j0: ir.Value,
                  j1: ir.Value) -> None:
    """Evaluate the epilogue stores for var in [j0, j1), Acc() = acc[var - j0]."""
    b = ev.b
    with for_range(b, j0, j1, name="epi") as j:
        jev = ev.child({var: j})
        jev.acc = b.load(_slot(b, acc, b.sub(j, j0)))
        for st in stores:
            store_element(b, jev.buffers[st.buffer], jev.linear(st.buffer, st.index),
                          jev(st.value))


# -- conv -----------------------------------------------------------------------------------------


def conv_attrs(k: ConvKernel) -> dict[str, Any]:
    return dict(k.attrs)


def conv_code(k: ConvKernel) -> KernelCode:
    out = k.out_shape
    r = len(out) - 2
    p_last = out[-1] if r else 1
    rows = math.prod(out[:-1]) if r else math.prod(out)
    w_shape = k.w.shape
    work = 2 * math.prod(out) * math.prod(w_shape[1:])
    grain = max(1, -(-CHUNK_WORK // max(1, p_last * math.prod(w_shape[1:]) * 2)))

    def emit(env: KernelEnv) -> None:
        emit_conv_direct(k, env)

    return KernelCode(_buffers(k), rows if math.prod(out) else 0, grain,
                      work >= PARALLEL_FLOPS and rows > grain, emit, notes={"conv": "direct"})


def emit_conv_direct(k: ConvKernel, env: KernelEnv) -> None:
    b = env.builder
    a = conv_attrs(k)
    out = k.out_shape
    r = len(out) - 2
    x_shape, w_shape = k.x.shape, k.w.shape
    cg = w_shape[1]
    o_per_group = out[1] // a["groups"]
    stride, rd, ld = a["stride"], a["rhs_dilation"], a["lhs_dilation"]
    pad_lo = a["padding"][0::2]
    ty = compute_type(k.acc_dtype)
    ev = ExprEmitter(b, env.buffers, k.extents())
    p_last = out[-1] if r else 1
    acc = alloca_at_entry(b, ir.ArrayType(ty, p_last), name="acc")
    row_dims = [("n", out[0]), ("o", out[1])] + [(f"p{j}", out[2 + j]) for j in range(r - 1)]
    xv, wv = k.x.vars, k.w.vars

    def coord(j: int, p: ir.Value, t: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(valid, input index) of output position p at kernel offset t on spatial axis j."""
        q = b.sub(b.add(b.mul(p, _i64(stride[j])), b.mul(t, _i64(rd[j]))), _i64(pad_lo[j]))
        ok = b.and_(b.icmp_signed(">=", q, _i64(0)),
                    b.icmp_signed("<=", q, _i64((x_shape[2 + j] - 1) * ld[j])))
        if ld[j] == 1:
            return ok, q
        ok = b.and_(ok, b.icmp_signed("==", b.srem(q, _i64(ld[j])), _i64(0)))
        return ok, b.sdiv(q, _i64(ld[j]))

    with for_range(b, env.lo, env.hi, name="task") as t:
        tev = ev.child(decode_row_major(b, t, row_dims))
        o = tev.env["o"]
        c0 = b.mul(b.udiv(o, _i64(o_per_group)), _i64(cg))
        with for_range(b, _i64(0), _i64(p_last), name="zero") as p:
            b.store(_zero(ty), _slot(b, acc, p))
        with for_range(b, _i64(0), _i64(cg), name="c") as c:
            cenv = {wv[0]: o, wv[1]: c, xv[0]: tev.env["n"], xv[1]: b.add(c0, c)}
            _conv_taps(k, tev.child(cenv), r, 0, coord, acc, p_last, ty)
        if r:
            _epilogue_row(k.stores, tev, acc, f"p{r - 1}", _i64(0), _i64(p_last))
        else:
            tev.acc = b.load(_slot(b, acc, _i64(0)))
            for st in k.stores:
                store_element(b, tev.buffers[st.buffer], tev.linear(st.buffer, st.index),
                              tev(st.value))


def _conv_taps(k: ConvKernel, ev: ExprEmitter, r: int, j: int, coord, acc, p_last: int,
               ty: ir.Type) -> None:
    """Loops over the kernel offsets of spatial axes j.., then the row update."""
    b = ev.b
    xv, wv = k.x.vars, k.w.vars
    if r == 0:
        x = cast_value(b, ev(k.x.value), k.x.value.dtype, k.acc_dtype)
        w = cast_value(b, ev(k.w.value), k.w.value.dtype, k.acc_dtype)
        p = _slot(b, acc, _i64(0))
        b.store(_madd(b, w, x, b.load(p)), p)
        return
    if j < r:
        with for_range(b, _i64(0), _i64(k.w.shape[2 + j]), name=f"t{j}") as t:
            tev = ev.child({wv[2 + j]: t})
            if j < r - 1:  # an outer spatial axis: the whole row is valid or not
                ok, idx = coord(j, ev.env[f"p{j}"], t)
                with b.if_then(ok):
                    _conv_taps(k, tev.child({xv[2 + j]: idx}), r, j + 1, coord, acc, p_last, ty)
            else:
                _conv_row(k, tev, r, t, coord, acc, p_last, ty)


def _conv_row(k: ConvKernel, ev: ExprEmitter, r: int, t: ir.Value, coord, acc, p_last: int,
              ty: ir.Type) -> None:
    b = ev.b
    xv = k.x.vars
    w = cast_value(b, ev(k.w.value), k.w.value.dtype, k.acc_dtype)
    with for_range(b, _i64(0), _i64(p_last), name="p") as p:
        ok, idx = coord(r - 1, p, t)
        before = b.block
        with b.if_then(ok):
            x = cast_value(b, ev.child({xv[-1]: idx})(k.x.value), k.x.value.dtype, k.acc_dtype)
            then_end = b.block
        xval = b.phi(ty)
        xval.add_incoming(x, then_end)
        xval.add_incoming(_zero(ty), before)
        slot = _slot(b, acc, p)
        b.store(_madd(b, w, xval, b.load(slot)), slot)

