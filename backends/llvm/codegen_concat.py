"""Concatenations of many plain loads along an outer axis, as one loop reading through a table
of piece pointers.

Note: why
---------
A concatenation picks its pieces by a tree of selects; along an outer axis the choice is the
same across a vector, and `VectorEmitter` branches to the chosen piece's load. With T pieces
that is a tree of T leaves in every copy of the vector body, which LLVM then unswitches out of
the loop: 256 pieces of [8, 128] took 2.4 s to compile (Python building 3,000 blocks, their
text, LLVM), 64 pieces 0.45 s, and an LSTM training step over 256 steps has a dozen such
kernels (its steps' inputs, hidden states and gate gradients, concatenated for the weight
gradients). Where every piece is the same load of its own buffer, shifted along the axis
(`ir.kernel_segments.load_pieces`), the kernel instead fills a table of the pieces' pointers on
entry, finds each row's piece by a binary search over the pieces' starts (a constant array),
and runs one vector loop over that piece, shifted back by its start: the same code for any
number of pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llvmlite import ir

from graphc.ir.kernel import Load, LoopKernel, Store, linearize, top_coefficient
from graphc.ir.kernel_segments import load_pieces

from .codegen_expr import BufferRef, ExprEmitter
from .llvm_ir import I32, I64, PTR, alloca_at_entry, smin

GATHER_PIECES = 8  # fewer pieces keep the select tree (a few branches per vector)


@dataclass(frozen=True)
class GatherPlan:
    var: str                     # the nest variable the pieces are picked by
    starts: tuple[int, ...]      # each piece's first value of it
    buffers: tuple[str, ...]     # each piece's buffer
    load: Load                   # the first piece's load (at var − its start)
    store: Store                 # the kernel's one store
    step: int                    # elements between consecutive values of var in the load


def plan_gather(k: LoopKernel, nest: Any, shapes: dict[str, tuple[int, ...]],
                dtypes: dict[str, str]) -> GatherPlan | None:
    """A GatherPlan where `k` stores one concatenation of at least GATHER_PIECES plain loads
    of equally shaped buffers along an outer variable other than the vector loop's."""
    if k.sweeps or len(k.stores) != 1 or len(nest.outer) < 2:
        return None
    st = k.stores[0]
    vector_var = nest.outer[-1][0]
    for var, extent in zip(k.outer_vars, k.domain, strict=True):
        target = nest.var_map.get(var)
        if target is None or target == vector_var or nest.source(target) != var:
            continue
        pieces = load_pieces(st.value, var, extent, k.extents())
        if pieces is None or len(pieces) < GATHER_PIECES:
            continue
        buffers = tuple(load.buffer for _, load in pieces)
        first = pieces[0][1]
        if len({shapes[b] for b in buffers}) != 1 or first.dtype == "bf16" \
                or any(dtypes[b] != first.dtype for b in buffers):
            return None
        lin = linearize(first.index, shapes[buffers[0]])
        lin = nest.rewrite.get(lin, lin)
        step = top_coefficient(lin, target)
        if not step:
            return None
        return GatherPlan(target, tuple(lo for lo, _ in pieces), buffers, first, st, step)
    return None


def gather_table(plan: GatherPlan, b: ir.IRBuilder, buffers) -> tuple[ir.Value, ir.Value]:
    """The table of the pieces' pointers (filled here, once per call of the task function)
    and the constant array of their starts."""
    n = len(plan.buffers)
    table = alloca_at_entry(b, ir.ArrayType(PTR, n), name="pieces")
    for i, name in enumerate(plan.buffers):
        b.store(b.bitcast(buffers[name].ptr, PTR),
                b.gep(table, [ir.Constant(I32, 0), ir.Constant(I32, i)]))
    module = b.module
    arr = ir.ArrayType(I64, n)
    starts = ir.GlobalVariable(module, arr, module.get_unique_name("concat.starts"))
    starts.global_constant = True
    starts.linkage = "internal"
    starts.initializer = ir.Constant(arr, list(plan.starts))
    return table, starts


def gather_row(plan: GatherPlan, ev: ExprEmitter, table: ir.Value, starts: ir.Value
               ) -> tuple[ExprEmitter, list[Store]]:
    """A scope for one row (the piece variable bound in `ev`) whose store reads the row's
    piece: the piece found by a binary search over the starts, its pointer shifted back by
    its start, standing in for the first piece's buffer under a name of its own."""
    b = ev.b
    n = len(plan.starts)
    at = ev.env[plan.var]
    piece = ir.Constant(I64, 0)
    step = 1 << ((n - 1).bit_length() - 1) if n > 1 else 0
    while step:
        cand = smin(b, b.add(piece, ir.Constant(I64, step)), ir.Constant(I64, n - 1))
        start = b.load(b.gep(starts, [ir.Constant(I32, 0), cand]))
        piece = b.select(b.icmp_signed("<=", start, at), cand, piece)
        step //= 2
    start = b.load(b.gep(starts, [ir.Constant(I32, 0), piece]))
    first = ev.buffers[plan.buffers[0]]
    base = b.bitcast(b.load(b.gep(table, [ir.Constant(I32, 0), piece])),
                     first.storage_type.as_pointer())
    shifted = b.gep(base, [b.mul(b.neg(start), ir.Constant(I64, plan.step))], inbounds=False)
    ref = BufferRef("$piece", first.dtype, first.shape, first.bf16_bits, b.bitcast(shifted, PTR))
    row = ev.child()
    row.buffers = {**ev.buffers, "$piece": ref}
    load = Load("$piece", plan.load.index, (), plan.load.dtype)
    return row, [Store(plan.store.buffer, plan.store.index, load)]
