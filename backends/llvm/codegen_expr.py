"""Kernel-IR scalar and index expressions -> LLVM IR values, shared by every kernel generator.

Note: scopes, memoization and hoisting
--------------------------------------
An `ExprEmitter` evaluates expressions at the builder's position for one binding of the loop
variables (`env`: name -> i64 value). Results are memoized per expression node (the kernel IR is
a DAG: a shared subexpression is computed once) and per index expression. Memos are scoped:
`child(...)` starts an inner loop's scope that sees everything its parents computed (those
values dominate the loop) while what the loop computes stays inside it. `hoist` evaluates, in
the current scope, every subexpression that does not depend on the inner loop's variables, so a
row's broadcast operands, a reduction's result rescaled, or a masked load that LICM could not
move, are computed once per row.

Memory: buffers are dense row-major; a load or store linearizes its index (`linearize`) and
indexes a typed pointer. Storage types: f16 is IEEE half, bf16 temps are the high 16 bits of an
f32 (the arena holds 2 bytes), bf16 elsewhere is an f32 already rounded to bf16 (what the caller
sees), bool is one byte. Masked loads touch memory only where the mask holds: the index is
computed unconditionally (pure arithmetic), the load alone sits in a branch the loop vectorizer
if-converts into a masked vector load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from graphc.ir.errors import GraphError
from graphc.ir.kernel import (
    Acc,
    Bound,
    Const,
    Expr,
    FloorDiv,
    InBounds,
    IndexValue,
    Ix,
    Load,
    Mod,
    Op,
    RandomUniform,
    ReduceRef,
    Var,
    ix_range,
    linearize,
    top_coefficient,
)
from graphc.ir.ops.random import PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1
from graphc.ir.types import round_to_dtype

from .llvm_ir import (
    F32,
    I1,
    I8,
    I32,
    I64,
    declare,
    lanes_of,
    masked_load,
    masked_store,
    splat,
    vector,
)
from .lowering import cast_value, compute_type, emit_elementwise, round_f32_to

I16 = ir.IntType(16)
HALF = ir.HalfType()


@dataclass(frozen=True)
class BufferRef:
    """A buffer as a kernel function sees it: graphc dtype, storage form, shape, pointer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    bf16_bits: bool  # bf16 stored as 2 bytes (temps) rather than as a rounded f32
    ptr: ir.Value    # i8* in the current function

    @property
    def storage_type(self) -> ir.Type:
        return storage_type(self.dtype, self.bf16_bits)


def storage_type(dtype: str, bf16_bits: bool = False) -> ir.Type:
    """The in-memory LLVM type of one element."""
    if dtype == "f16":
        return HALF
    if dtype == "bf16":
        return I16 if bf16_bits else F32
    if dtype == "bool":
        return I8
    return compute_type(dtype)


def element_ptr(b: ir.IRBuilder, buf: BufferRef, linear: ir.Value, inbounds: bool = True
                ) -> ir.Value:
    """Pointer to element `linear` (i64) of `buf`. A masked vector access may start outside
    the buffer (its first lanes masked off): `inbounds=False` keeps that pointer defined."""
    typed = b.bitcast(buf.ptr, buf.storage_type.as_pointer())
    return b.gep(typed, [linear], inbounds=inbounds)


def load_element(b: ir.IRBuilder, buf: BufferRef, linear: ir.Value) -> ir.Value:
    """Load element `linear` and convert it to its compute type."""
    return from_storage(b, b.load(element_ptr(b, buf, linear)), buf)


def from_storage(b: ir.IRBuilder, raw: ir.Value, buf: BufferRef) -> ir.Value:
    """A loaded element (or vector of elements) in its compute type."""
    lanes = lanes_of(raw.type)
    if buf.dtype == "f16":
        return b.fpext(raw, vector(F32, lanes))
    if buf.dtype == "bf16" and buf.bf16_bits:
        i32 = vector(I32, lanes)
        return b.bitcast(b.shl(b.zext(raw, i32), splat(i32, 16)), vector(F32, lanes))
    if buf.dtype == "bool":
        return b.icmp_unsigned("!=", raw, splat(raw.type, 0))
    return raw


def to_storage(b: ir.IRBuilder, value: ir.Value, buf: BufferRef) -> ir.Value:
    """Convert a compute value to `buf`'s storage form (f16/bf16 rounded to nearest even)."""
    lanes = lanes_of(value.type)
    if buf.dtype == "f16":
        return b.fptrunc(value, vector(HALF, lanes))
    if buf.dtype == "bf16":
        rounded = round_f32_to(b, value, "bf16")
        if not buf.bf16_bits:
            return rounded
        i32 = vector(I32, lanes)
        return b.trunc(b.lshr(b.bitcast(rounded, i32), splat(i32, 16)), vector(I16, lanes))
    if buf.dtype == "bool":
        return b.zext(value, vector(I8, lanes))
    return value


def store_element(b: ir.IRBuilder, buf: BufferRef, linear: ir.Value, value: ir.Value) -> None:
    b.store(to_storage(b, value, buf), element_ptr(b, buf, linear))


def const_value(value, dtype: str) -> ir.Constant:
    """A compute-type constant, rounded to `dtype` first (f16/bf16 constants are f16 values)."""
    ty = compute_type(dtype)
    if dtype == "bool":
        return ir.Constant(I1, int(bool(value)))
    if dtype in ("i32", "i64"):
        return ir.Constant(ty, int(value))
    return ir.Constant(ty, float(np.asarray(round_to_dtype(np.asarray(value), dtype),
                                            np.float64)))


# -- variable dependencies ------------------------------------------------------------------------

ACC_DEP = "@acc"


def ix_vars(e: Ix) -> frozenset[str]:
    return frozenset(e.var_names())


def expr_deps(e: Expr, memo: dict[int, frozenset[str]]) -> frozenset[str]:
    """Loop variables (plus `$ref` for reduction results and `@acc`) an expression reads."""
    got = memo.get(id(e))
    if got is not None:
        return got
    if isinstance(e, Load):
        out = frozenset().union(*(ix_vars(x) for x in e.index), *(ix_vars(m.e) for m in e.mask))
    elif isinstance(e, (IndexValue,)):
        out = ix_vars(e.index)
    elif isinstance(e, InBounds):
        out = frozenset().union(*(ix_vars(m.e) for m in e.bounds))
    elif isinstance(e, RandomUniform):
        out = ix_vars(e.counter) | expr_deps(e.seed, memo)
    elif isinstance(e, ReduceRef):
        out = frozenset({"$" + e.name})
    elif isinstance(e, Acc):
        out = frozenset({ACC_DEP})
    else:
        out = frozenset().union(*(expr_deps(c, memo) for c in e.children()))
    memo[id(e)] = out
    return out


# -- the emitter ----------------------------------------------------------------------------------


class ExprEmitter:
    """Evaluates index and scalar expressions at one point of a kernel's loop nest."""

    # operands whose sigmoid the kernel computes: their tanh takes the form sharing its exp
    sigmoid_operands: frozenset[Expr] = frozenset()

    def __init__(self, builder: ir.IRBuilder, buffers: Mapping[str, BufferRef],
                 extents: Mapping[str, int], env: Mapping[str, ir.Value] | None = None,
                 rewrite: Mapping[Ix, Ix] | None = None,
                 var_map: Mapping[str, str | None] | None = None) -> None:
        self.b = builder
        self.rewrite: Mapping[Ix, Ix] = rewrite or {}
        self.var_map: Mapping[str, str | None] = var_map or {}
        self.buffers = buffers
        self.extents = dict(extents)
        self.env: dict[str, ir.Value] = dict(env or {})
        self.refs: dict[str, ir.Value] = {}
        self.acc: ir.Value | None = None
        self._ix: dict[Ix, ir.Value] = {}
        self._expr: dict[int, ir.Value] = {}
        self._deps: dict[int, frozenset[str]] = {}

    def child(self, env: Mapping[str, ir.Value] | None = None,
              extents: Mapping[str, int] | None = None) -> ExprEmitter:
        """A scope nested in this one (an inner loop body) with more variables bound."""
        c = ExprEmitter.__new__(ExprEmitter)
        c.b = self.b
        c.rewrite = self.rewrite
        c.var_map = self.var_map
        c.buffers = self.buffers
        c.extents = {**self.extents, **(extents or {})}
        c.env = {**self.env, **(env or {})}
        c.refs = dict(self.refs)
        c.acc = self.acc
        c._ix = dict(self._ix)
        c._expr = dict(self._expr)
        c._deps = self._deps
        c.sigmoid_operands = self.sigmoid_operands
        return c

    # -- indices ---------------------------------------------------------------------------------
    def index(self, e: Ix) -> ir.Value:
        """The i64 value of an index expression (floor semantics for `//` and `%`), after the
        nest's rewrite of kernel variables (collapsed or dropped loops)."""
        return self._raw_index(self.rewrite.get(e, e))

    def _raw_index(self, e: Ix) -> ir.Value:
        got = self._ix.get(e)
        if got is not None:
            return got
        b = self.b
        acc: ir.Value | None = None
        for atom, coef in e.terms:
            v = self._atom(atom)
            if coef != 1:
                v = b.mul(v, ir.Constant(I64, coef))
            acc = v if acc is None else b.add(acc, v)
        if acc is None:
            acc = ir.Constant(I64, e.const)
        elif e.const:
            acc = b.add(acc, ir.Constant(I64, e.const))
        self._ix[e] = acc
        return acc

    def _atom(self, a) -> ir.Value:
        b = self.b
        if isinstance(a, Var):
            try:
                return self.env[a.name]
            except KeyError:
                raise GraphError(f"index variable {a.name!r} is not bound here") from None
        x = self._raw_index(a.arg)
        d = ir.Constant(I64, a.d)
        nonneg = ix_range(a.arg, self.extents)[0] >= 0
        if isinstance(a, FloorDiv):
            if nonneg:
                return b.udiv(x, d)
            q, r = b.sdiv(x, d), b.srem(x, d)
            return b.sub(q, b.zext(b.icmp_signed("<", r, ir.Constant(I64, 0)), I64))
        if isinstance(a, Mod):
            if nonneg:
                return b.urem(x, d)
            r = b.srem(x, d)
            return b.add(r, b.select(b.icmp_signed("<", r, ir.Constant(I64, 0)), d,
                                     ir.Constant(I64, 0)))
        raise GraphError(f"unknown index atom {a!r}")

    def bounds(self, bounds: Iterable[Bound]) -> ir.Value:
        """i1: every bound holds."""
        b = self.b
        ok: ir.Value = ir.Constant(I1, 1)
        for bd in bounds:
            e = self.rewrite.get(bd.e, bd.e)
            v = self._raw_index(e)
            lo, hi = ix_range(e, self.extents)
            if lo < bd.lo:
                ok = b.and_(ok, b.icmp_signed(">=", v, ir.Constant(I64, bd.lo)))
            if hi >= bd.hi:
                ok = b.and_(ok, b.icmp_signed("<", v, ir.Constant(I64, bd.hi)))
            if bd.step != 1:
                off = self._raw_index(e - bd.lo)
                r = b.srem(off, ir.Constant(I64, bd.step))
                ok = b.and_(ok, b.icmp_signed("==", r, ir.Constant(I64, 0)))
        return ok

    def linear(self, buffer: str, index: tuple[Ix, ...]) -> ir.Value:
        return self.index(linearize(index, self.buffers[buffer].shape))

    # -- scalar expressions ----------------------------------------------------------------------
    def __call__(self, e: Expr) -> ir.Value:
        got = self._expr.get(id(e))
        if got is None:
            got = self._expr[id(e)] = self._compute(e)
        return got

    def _attrs(self, e: Op) -> dict:
        attrs = dict(e.attrs)
        if e.op == "tanh" and e.args[0] in self.sigmoid_operands:
            attrs["share_exp"] = True
        return attrs

    def deps(self, e: Expr) -> frozenset[str]:
        """Variables `e` reads, named as in the (rewritten) loop nest."""
        d = expr_deps(e, self._deps)
        if not self.var_map:
            return d
        return frozenset(v for v in (self.var_map.get(x, x) for x in d) if v is not None)

    def _compute(self, e: Expr) -> ir.Value:
        b = self.b
        if isinstance(e, Const):
            return const_value(e.value, e.dtype)
        if isinstance(e, Load):
            return self._load(e)
        if isinstance(e, Op):
            args = [self(a) for a in e.args]
            arg_dtype = e.args[-1].dtype if e.op == "select" else e.args[0].dtype
            return emit_elementwise(b, e.op, args, self._attrs(e), arg_dtype, e.dtype)
        if isinstance(e, IndexValue):
            return cast_value(b, self.index(e.index), "i64", e.dtype)
        if isinstance(e, InBounds):
            return self.bounds(e.bounds)
        if isinstance(e, ReduceRef):
            try:
                return self.refs[e.name]
            except KeyError:
                raise GraphError(f"reduction {e.name!r} is read before its sweep") from None
        if isinstance(e, Acc):
            if self.acc is None:
                raise GraphError("Acc() outside a template epilogue")
            return self.acc
        if isinstance(e, RandomUniform):
            seed = cast_value(b, self(e.seed), e.seed.dtype, "i64")
            return emit_philox_uniform(b, seed, self.index(e.counter), e.stream)
        raise GraphError(f"the LLVM backend cannot emit expression {e!r}")

    def _load(self, e: Load) -> ir.Value:
        buf = self.buffers[e.buffer]
        b = self.b
        linear = self.linear(e.buffer, e.index)
        if not e.mask:
            return load_element(b, buf, linear)
        ok = self.bounds(e.mask)
        ptr = element_ptr(b, buf, linear)
        zero = const_value(0, e.dtype)
        before = b.block
        with b.if_then(ok):
            loaded = from_storage(b, b.load(ptr), buf)
            then_end = b.block
        phi = b.phi(zero.type)
        phi.add_incoming(loaded, then_end)
        phi.add_incoming(zero, before)
        return phi

    def hoist(self, roots: Iterable[Expr], inner: Iterable[str]) -> None:
        """Evaluate now every maximal subexpression of `roots` that reads none of the variables
        `inner` (nor the accumulator, nor a reduction not yet computed)."""
        inner = frozenset(inner) | {ACC_DEP}
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            e = stack.pop()
            if id(e) in seen or isinstance(e, Const):
                continue
            seen.add(id(e))
            d = self.deps(e)
            refs_ready = all(x[1:] in self.refs for x in d if x.startswith("$"))
            if not (d & inner) and refs_ready:
                self(e)
            else:
                stack.extend(e.children())


# -- random numbers -------------------------------------------------------------------------------


def emit_philox_uniform(b: ir.IRBuilder, seed: ir.Value, counter: ir.Value, stream: int
                        ) -> ir.Value:
    """f32 in [0, 1): Philox4x32-10 of (counter lo, counter hi, stream, 0) under the key
    (seed lo, seed hi); (first word >> 8) * 2^-24. Bit-identical to `ir/ops/random.py`."""
    def c32(v: int) -> ir.Constant:
        return ir.Constant(I32, v & 0xFFFFFFFF)

    k0 = b.trunc(seed, I32)
    k1 = b.trunc(b.lshr(seed, ir.Constant(I64, 32)), I32)
    c = [b.trunc(counter, I32), b.trunc(b.lshr(counter, ir.Constant(I64, 32)), I32),
         c32(stream), c32(0)]
    for r in range(PHILOX_ROUNDS):
        if r > 0:
            k0 = b.add(k0, c32(PHILOX_W0))
            k1 = b.add(k1, c32(PHILOX_W1))
        p0 = b.mul(ir.Constant(I64, PHILOX_M0), b.zext(c[0], I64))
        p1 = b.mul(ir.Constant(I64, PHILOX_M1), b.zext(c[2], I64))
        hi0, lo0 = b.trunc(b.lshr(p0, ir.Constant(I64, 32)), I32), b.trunc(p0, I32)
        hi1, lo1 = b.trunc(b.lshr(p1, ir.Constant(I64, 32)), I32), b.trunc(p1, I32)
        c = [b.xor(b.xor(hi1, c[1]), k0), lo1, b.xor(b.xor(hi0, c[3]), k1), lo0]
    top = b.lshr(c[0], ir.Constant(I32, 8))
    return b.fmul(b.sitofp(top, F32), ir.Constant(F32, 2.0 ** -24))



# -- vector mode (template epilogues) ------------------------------------------------------------


class VectorEmitter(ExprEmitter):
    """Evaluates expressions for `lanes` consecutive values of one variable (`vvar`) at once:
    the GEMM epilogue hook hands over a vector of results for columns col0 .. col0 + lanes - 1.

    `env[vvar]` holds col0 (a scalar), so an index whose only dependence on vvar is a top-level
    term c·vvar is a scalar base plus c·lane: c = 1 loads and stores whole vectors (masked by
    `lane_mask` and the load's bounds), c = 0 (no dependence) stays scalar and is splatted where
    a vector operand meets it, anything else gathers or scatters. Values are scalars or vectors;
    the lowering table's emitters accept both.
    """

    def __init__(self, builder: ir.IRBuilder, buffers: Mapping[str, BufferRef],
                 extents: Mapping[str, int], env: Mapping[str, ir.Value], vvar: str, lanes: int,
                 lane_mask: ir.Value, streaming: frozenset[str] = frozenset()) -> None:
        super().__init__(builder, buffers, extents, env)
        self.vvar, self.lanes, self.lane_mask = vvar, lanes, lane_mask
        self.iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
        self.streaming = streaming
        self.full: ir.Value | None = None  # i1: every lane is active (set by the loop)

    @staticmethod
    def within(scope: ExprEmitter, env: Mapping[str, ir.Value], vvar: str, lanes: int,
               lane_mask: ir.Value, streaming: frozenset[str] = frozenset()) -> VectorEmitter:
        """A vector scope nested in `scope`: it sees the values `scope` computed (row
        invariants, reduction results) and the nest's rewrite of variables."""
        v = VectorEmitter(scope.b, scope.buffers, scope.extents, {**scope.env, **env}, vvar,
                          lanes, lane_mask, streaming)
        v.rewrite, v.var_map = scope.rewrite, scope.var_map
        v.refs = dict(scope.refs)
        v._ix, v._expr, v._deps = dict(scope._ix), dict(scope._expr), scope._deps
        v.sigmoid_operands = scope.sigmoid_operands
        return v

    def widen(self, v: ir.Value) -> ir.Value:
        """`v` as a vector of `lanes` (a scalar is broadcast)."""
        if isinstance(v.type, ir.VectorType):
            return v
        if isinstance(v, ir.Constant) and isinstance(v.constant, (int, float)):
            # a constant vector, which lowerings can recognize (a division by a constant)
            return splat(ir.VectorType(v.type, self.lanes), v.constant)
        b = self.b
        vty = ir.VectorType(v.type, self.lanes)
        one = b.insert_element(ir.Constant(vty, None), v, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(vty, None),
                                ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))

    def _top_coef(self, e: Ix) -> int | None:
        return top_coefficient(e, self.vvar)

    def vindex(self, e: Ix) -> ir.Value:
        """The index for every lane (<lanes x i64>), or a scalar when it is the same."""
        b = self.b
        e = self.rewrite.get(e, e)
        c = self._top_coef(e)
        if c == 0:
            return self._raw_index(e)
        if c is not None:
            base = self.widen(self._raw_index(e))
            return b.add(base, b.mul(self.iota, splat(self.iota.type, c)))
        out: ir.Value = splat(self.iota.type, e.const)
        for atom, k in e.terms:
            if isinstance(atom, Var):
                v = self._lanes_of_var(atom.name)
            elif self.vvar in atom.arg.var_names():
                x = self.vindex(atom.arg)
                d = splat(self.iota.type, atom.d)
                q, r = b.sdiv(x, d), b.srem(x, d)
                neg = b.icmp_signed("<", r, splat(self.iota.type, 0))
                if isinstance(atom, FloorDiv):
                    v = b.sub(q, b.zext(neg, self.iota.type))
                else:
                    v = b.add(r, b.select(neg, d, splat(self.iota.type, 0)))
            else:
                v = self.widen(self._atom(atom))
            out = b.add(out, b.mul(v, splat(self.iota.type, k)))
        return out

    def _lanes_of_var(self, name: str) -> ir.Value:
        base = self.widen(self.env[name])
        return self.b.add(base, self.iota) if name == self.vvar else base

    def vbounds(self, bounds: Iterable[Bound]) -> ir.Value:
        b = self.b
        ok: ir.Value = ir.Constant(I1, 1)
        for bd in bounds:
            v = self.vindex(bd.e)
            ty = v.type
            cond = b.and_(b.icmp_signed(">=", v, splat(ty, bd.lo)),
                          b.icmp_signed("<", v, splat(ty, bd.hi)))
            if bd.step != 1:
                off = b.sub(v, splat(ty, bd.lo))
                cond = b.and_(cond, b.icmp_signed("==", b.srem(off, splat(ty, bd.step)),
                                                  splat(ty, 0)))
            if isinstance(cond.type, ir.VectorType) or isinstance(ok.type, ir.VectorType):
                # a bound on the vector variable and one on an outer variable, in either order
                ok = b.and_(self.widen(ok), self.widen(cond))
            else:
                ok = b.and_(ok, cond)
        return ok

    def _compute(self, e: Expr) -> ir.Value:
        b = self.b
        if isinstance(e, Load):
            return self._vload(e)
        if isinstance(e, Op) and e.op == "select" and isinstance(e.args[0], InBounds) \
                and not any(isinstance(a, Const) for a in e.args[1:]):
            cond = self(e.args[0])
            if not isinstance(cond.type, ir.VectorType):
                return self._branch(cond, e.args[1], e.args[2])
        if isinstance(e, Op):
            args = [self(a) for a in e.args]
            if any(isinstance(a.type, ir.VectorType) for a in args):
                args = [self.widen(a) for a in args]
            arg_dtype = e.args[-1].dtype if e.op == "select" else e.args[0].dtype
            return emit_elementwise(b, e.op, args, self._attrs(e), arg_dtype, e.dtype)
        if isinstance(e, IndexValue):
            return cast_value(b, self.vindex(e.index), "i64", e.dtype)
        if isinstance(e, InBounds):
            return self.vbounds(e.bounds)
        if isinstance(e, RandomUniform):
            raise GraphError(f"{type(e).__name__} has no vector lowering")
        return super()._compute(e)

    def _branch(self, cond: ir.Value, then: Expr, otherwise: Expr) -> ir.Value:
        """select(cond, then, otherwise) for a condition the same in every lane (the pieces of
        a concatenation along an outer axis): only the chosen side is evaluated, where a
        vector select would load every piece under its mask. What one side computes stays
        in that side's block, so neither sees the other's values afterwards."""
        b = self.b
        saved = dict(self._expr), dict(self._ix)
        ends = []
        with b.if_else(cond) as (yes, no):
            for block, side in ((yes, then), (no, otherwise)):
                with block:
                    ends.append((self.widen(self(side)), b.block))
                    self._expr, self._ix = dict(saved[0]), dict(saved[1])
        phi = b.phi(ends[0][0].type)
        for value, block in ends:
            phi.add_incoming(value, block)
        return phi

    def _vload(self, e: Load) -> ir.Value:
        buf = self.buffers[e.buffer]
        lin = linearize(e.index, buf.shape)
        lin_r = self.rewrite.get(lin, lin)
        if self.vvar not in lin_r.var_names() and not any(
                self.vvar in self.rewrite.get(m.e, m.e).var_names() for m in e.mask):
            return self._load(e)
        b = self.b
        mask = self.lane_mask
        if e.mask:
            mask = b.and_(mask, self.widen(self.vbounds(e.mask)))
        sty = buf.storage_type
        vty = ir.VectorType(sty, self.lanes)
        if self._top_coef(lin_r) == 1:
            ptr = b.bitcast(element_ptr(b, buf, self._raw_index(lin_r), inbounds=not e.mask),
                            vty.as_pointer())
            raw = masked_load(b, ptr, mask, vty, align=sty_bytes(sty))
        else:
            ptrs = self._vptrs(buf, self.vindex(lin))
            fn = declare(b.module, f"llvm.masked.gather.{_vsuffix(vty)}.v{self.lanes}p0", vty,
                         [ptrs.type, I32, mask.type, vty])
            raw = b.call(fn, [ptrs, ir.Constant(I32, sty_bytes(sty)), mask, splat(vty, 0)])
        return from_storage(b, raw, buf)

    def _vptrs(self, buf: BufferRef, index: ir.Value) -> ir.Value:
        b = self.b
        base = b.ptrtoint(buf.ptr, I64)
        offs = b.mul(self.widen(index), splat(self.iota.type, sty_bytes(buf.storage_type)))
        addrs = b.add(self.widen(base), offs)
        return b.inttoptr(addrs, ir.VectorType(ir.PointerType(I8), self.lanes))

    def vstore(self, buffer: str, index: tuple[Ix, ...], value: ir.Value) -> None:
        """Store every active lane of `value` at `buffer[index]`."""
        b = self.b
        buf = self.buffers[buffer]
        value = to_storage(b, self.widen(value), buf)
        lin = linearize(index, buf.shape)
        lin_r = self.rewrite.get(lin, lin)
        if self._top_coef(lin_r) == 1:
            ptr = b.bitcast(element_ptr(b, buf, self._raw_index(lin_r)),
                            value.type.as_pointer())
            if buffer in self.streaming and self.full is not None:
                self._streaming_store(value, ptr, sty_bytes(buf.storage_type))
                return
            masked_store(b, value, ptr, self.lane_mask, align=sty_bytes(buf.storage_type))
            return
        ptrs = self._vptrs(buf, self.vindex(lin))
        fn = declare(b.module, f"llvm.masked.scatter.{_vsuffix(value.type)}.v{self.lanes}p0",
                     ir.VoidType(), [value.type, ptrs.type, I32, self.lane_mask.type])
        b.call(fn, [value, ptrs, ir.Constant(I32, sty_bytes(buf.storage_type)), self.lane_mask])


    def _streaming_store(self, value: ir.Value, ptr: ir.Value, item: int) -> None:
        streaming_store(self.b, value, ptr, self.full, self.lane_mask, item)


def streaming_store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, full: ir.Value,
                    lane_mask: ir.Value, item: int) -> None:
    """A non-temporal store (no read for ownership, no cache pollution) where the vector is
    `full` and 64-byte aligned, else the masked store: data far larger than the caches is
    written at close to copy bandwidth."""
    aligned = b.icmp_unsigned("==", b.and_(b.ptrtoint(ptr, I64), ir.Constant(I64, 63)),
                              ir.Constant(I64, 0))
    with b.if_else(b.and_(full, aligned)) as (fast, slow):
        with fast:
            st = b.store(value, ptr, align=64)
            st.set_metadata("nontemporal", b.module.add_metadata([ir.Constant(I32, 1)]))
        with slow:
            masked_store(b, value, ptr, lane_mask, align=item)


def sty_bytes(ty: ir.Type) -> int:
    """Size in bytes of a scalar storage type."""
    if isinstance(ty, ir.IntType):
        return max(ty.width // 8, 1)
    return {ir.HalfType: 2, ir.FloatType: 4, ir.DoubleType: 8}[type(ty)]


def _vsuffix(vty: ir.VectorType) -> str:
    from .llvm_ir import type_suffix

    return type_suffix(vty)
