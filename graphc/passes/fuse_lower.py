"""Lowering one fused group of graph nodes to one kernel: the elemental emitter behind `fuse`.

`Lowering.pull(value, index, mask)` returns the scalar expression of `value` at a tensor `index`
(index expressions over the kernel's loop variables). A value computed outside the group is a
`Load` from its buffer; a member is expanded by its op's index rule: elementwise ops pull their
operands at the broadcast index, movement ops rewrite the index (transpose permutes, reshape
linearizes and splits, slice scales and shifts, pad and concat add bounds and a `select`), iota
and random_uniform read the index itself, a member reduction is its `ReduceRef` when read at its
own row, a member template is `Acc` when read at its own output point. Anything else cannot be one
kernel and raises `Reject` with the reason, which the fusion pass records.

The group's domain comes from its anchor: the shape of the stored values (pointwise), the kept
and reduced extents of the first reduction (every other reduction must match), or the template's
output. Reductions go to the earliest sweep after the reductions they read; stored values of the
reduction's input shape are stored in a sweep, values of its output shape after the sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from graphc.ir.graph import Node, Value
from graphc.ir.kernel import (
    Acc,
    Bound,
    Const,
    ConvKernel,
    Expr,
    InBounds,
    IndexValue,
    Ix,
    Kernel,
    LibraryKernel,
    Load,
    LoopKernel,
    MatmulKernel,
    Op,
    Operand,
    RandomUniform,
    ReduceRef,
    Reduction,
    Store,
    Sweep,
    Var,
    delinearize,
    floordiv,
    ix,
    ix_size,
    linearize,
    make_bound,
    walk,
)
from graphc.ir.registry import get_op

# Relative cost of computing one element, for the recomputation bound (movement is free).
OP_COST = {"div": 2, "reciprocal": 2, "sqrt": 2, "rsqrt": 2, "exp": 4, "log": 4, "log1p": 4,
           "sigmoid": 4, "tanh": 4, "softplus": 4, "erf": 4, "pow": 4, "sin": 16,
           "cos": 16, "atan": 8, "random_uniform": 10}
# Largest index (terms written out, `ix_size`) through which a kernel reads a reshaped value;
# past it the reshape's input is stored and read back (reason "index cap").
MAX_INDEX_SIZE = 64
MOVEMENT_OPS = ("reshape", "transpose", "reverse", "broadcast", "slice", "pad", "concat")
REDUCE_KINDS = {"reduce_sum": "sum", "reduce_max": "max", "argmax": "argmax"}
# Free inside a template operand: per-load index arithmetic, casts and iota. Other elementwise
# ops in an operand run once per loaded tile element (a tiled GEMM loads each element once per
# tile of the other dimension), so only cheap ones are allowed, up to `max_prologue_cost`.
PROLOGUE_OPS = MOVEMENT_OPS + ("cast", "iota")
# A concatenation picks its piece by a tree of selects; loaded tile element by tile element (a
# template's operand staging) that costs a compare and a select per level. A concatenation of
# more pieces is stored once by a kernel of its own, which picks whole vectors (one LSTM training
# step: the joined step gradients feeding W_x's gradient, 64 pieces, 16 % of the step as a
# prologue).
MAX_PROLOGUE_PIECES = 4
# Inside a reduction's sweep every element evaluates the whole select tree (each piece, and
# what is fused into it) before one value is kept. A concatenation of more pieces, or whose
# pieces compute more than MAX_SWEEP_PIECE_COST, is stored by a kernel of its own first, which
# picks whole vectors. Measured (LLVM, one thread, the mean of the squares of a concatenation
# of [32, 256] pieces): 64 loaded pieces 2294 -> 103 us, 64 pieces of tanh 7950 -> 209 us,
# 2 pieces of tanh 11.8 -> 8.4 us; 4 loaded pieces stay fused (5.2 us against 7.7).
MAX_SWEEP_PIECES = 4
MAX_SWEEP_PIECE_COST = 2

# A 1x1 convolution over at least this many input channels lowers as a matmul
# (`Lowering.lower_pointwise_conv`). LLVM, one thread, 8 images, against the convolution's
# register tiles: 192 -> 32 channels at 32x32 1.28 -> 0.92 ms, 384 -> 64 at 16x16 1.18 ->
# 0.77 ms, 64 -> 384 at 16x16 0.91 -> 0.72 ms, 256 -> 256 at 14x14 1.86 -> 1.50 ms; 32 -> 192
# at 32x32 level; 16 -> 96 at 64x64 1.20 -> 1.41 ms (a K of 16 stores the C tile after every
# 16 steps).
MIN_POINTWISE_CHANNELS = 32


class Reject(Exception):
    """A group that cannot be one kernel; `reason` is a short category, `detail` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def node_class(n: Node) -> str:
    """source | constant | pointwise | reduce | template | library."""
    if n.op in ("input", "param"):
        return "source"
    if n.op == "constant":
        return "constant"
    family = get_op(n.op).family
    if family in ("elementwise", "movement") or n.op in ("iota", "random_uniform"):
        return "pointwise"
    if n.op in ("reduce_sum", "reduce_max"):
        return "reduce" if n.attrs["axes"] else "pointwise"  # no axes: the identity
    if n.op in ("argmax", "reduce_window"):
        return "reduce"
    if n.op in ("matmul", "conv"):
        return "template"
    return "library"


def op_cost(n: Node) -> int:
    if n.op in MOVEMENT_OPS or n.op in ("iota", "constant") or node_class(n) != "pointwise":
        return 0
    return OP_COST.get(n.op, 1)


def is_splat(n: Node) -> bool:
    """A constant with one scalar value (inlined as an immediate, never a buffer)."""
    return n.op == "constant" and not isinstance(n.attrs["value"], tuple)


# -- reduction spaces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReduceSpace:
    """Outer and inner extents of a reduction, and for axis reductions the input's shape with the
    kept / reduced axes (the map from a kernel point (i, r) to an input index)."""

    outer: tuple[int, ...]
    inner: tuple[int, ...]
    full_shape: tuple[int, ...] | None
    axes: tuple[int, ...]


def reduce_space(n: Node) -> ReduceSpace:
    x = n.inputs[0].shape
    if n.op == "reduce_window":
        return ReduceSpace(n.out.shape, tuple(n.attrs["window"]), None, ())
    axes = (n.attrs["axis"],) if n.op == "argmax" else tuple(n.attrs["axes"])
    return ReduceSpace(tuple(d for k, d in enumerate(x) if k not in axes),
                       tuple(x[k] for k in axes), x, axes)


def full_index(space: ReduceSpace, outer: tuple[Ix, ...], inner: tuple[Ix, ...]
               ) -> tuple[Ix, ...]:
    """The input index of kernel point (i, r) for an axis reduction."""
    assert space.full_shape is not None
    it, rt = iter(outer), iter(inner)
    return tuple(next(rt) if k in space.axes else next(it) for k in range(len(space.full_shape)))


def canonical_index(n: Node, outer: tuple[Ix, ...]) -> tuple[Ix, ...]:
    """The index of reduction `n`'s output element computed at outer point `outer`."""
    if n.op == "reduce_window" or not n.attrs.get("keepdims"):
        return outer
    space = reduce_space(n)
    return full_index(space, outer, tuple(Ix() for _ in space.axes))


def bcast_index(idx: tuple[Ix, ...], out_shape: tuple[int, ...], in_shape: tuple[int, ...]
                ) -> tuple[Ix, ...]:
    """numpy broadcasting as an index map: leading axes dropped, stretched axes read at 0."""
    lead = len(out_shape) - len(in_shape)
    return tuple(Ix() if d == 1 else idx[lead + j] for j, d in enumerate(in_shape))


# -- the emitter -----------------------------------------------------------------------------------


class Lowering:
    """Builds the kernel of one group: `members` (topological order) storing `stores`."""

    def __init__(self, name: str, members: list[Node], stores: list[Value],
                 buffer_of: Callable[[Value], str], origin: tuple[str, ...],
                 max_prologue_cost: float = 1.0) -> None:
        self.name = name
        self.max_prologue_cost = max_prologue_cost
        self.prologue_cost = 0.0
        self.nm = lambda n: buffer_of(n.outputs[0])
        self.members = members
        self.member_ids = {id(n) for n in members}
        self.stores = stores
        self.buffer_of = buffer_of
        self.origin = origin
        self.extents: dict[str, int] = {}
        self.memo: dict[tuple, Expr] = {}
        self.pulls: dict[int, int] = {}
        self.mode = "loop"
        self.sweeping = False  # pulling the values a reduction's sweeps read
        self.reduce_names: dict[int, str] = {}
        self.outer: tuple[Ix, ...] = ()
        self.template: Node | None = None
        self.template_out: tuple[Ix, ...] = ()
        self.window_cost = 0.0
        self.spans: dict[int, frozenset[str]] = {}  # member -> loop variables it varies with
        self.narrow: dict[str, range] = {}  # variable ranges the current pull's mask implies

    # -- entry point ---------------------------------------------------------------------------
    def lower(self) -> Kernel:
        classes = [node_class(n) for n in self.members]
        if not self.stores:
            raise Reject("empty", "the group stores nothing")
        if "library" in classes:
            if len(self.members) != 1:
                lib = self.members[classes.index("library")]
                raise Reject("library boundary",
                             f"{lib.op} reads whole buffers; nothing fuses into it")
            return self.lower_library(self.members[0])
        templates = [n for n, c in zip(self.members, classes, strict=True) if c == "template"]
        if templates:
            if len(templates) > 1:
                raise Reject("template boundary", "two templates cannot share a kernel")
            if "reduce" in classes:
                raise Reject("template boundary", f"a reduction cannot join a {templates[0].op} "
                                                  "template kernel")
            return self.lower_template(templates[0])
        reductions = [n for n, c in zip(self.members, classes, strict=True) if c == "reduce"]
        return self.lower_loop(reductions)

    def recompute_cost(self) -> float:
        """Work done twice inside this kernel: members pulled at several indices, producers of
        an overlapping window reduction (each input element read by several windows), and
        members broadcast along outer loops while varying along the innermost one (sin and
        cos of positions under every batch item and head of a rotary embedding), computed at
        every point of the loop nest where their own points would do; a member constant along
        the innermost loop is hoisted out of it (LLVM's LICM) and costs nothing extra."""
        extra = sum(op_cost(n) * (self.pulls.get(id(n), 1) - 1) for n in self.members)
        return extra + self.window_cost + self.broadcast_cost()

    def broadcast_cost(self) -> float:
        if self.mode != "loop" or not self.extents:
            return 0.0
        loops = [v for v in self.extents if v[0] in "ir"]
        if not loops:
            return 0.0
        innermost = max(loops, key=lambda v: (v[0] == "r", int(v[1:] or 0)))
        points = math.prod(self.extents[v] for v in loops)
        if not points:  # an empty domain computes nothing
            return 0.0
        cost = 0.0
        for n in self.members:
            span = self.spans.get(id(n))
            if span is None or innermost not in span or op_cost(n) == 0:
                continue
            own = math.prod(self.extents[v] for v in span if v in self.extents)
            cost += op_cost(n) * max(0.0, 1.0 - own / points)
        return cost

    # -- variables -----------------------------------------------------------------------------
    def var(self, name: str, extent: int) -> Ix:
        self.extents[name] = extent
        return ix(name) if extent > 1 else Ix()

    def vars(self, prefix: str, shape: tuple[int, ...]) -> tuple[Ix, ...]:
        return tuple(self.var(f"{prefix}{k}", d) for k, d in enumerate(shape))

    @property
    def ranges(self) -> Mapping[str, int | range]:
        """The variables' extents, narrowed where the current pull's mask bounds a variable:
        index arithmetic simplified with them holds wherever the masked value is used (a
        rotate-half's second piece, 32 <= d < 64, reads d - 32 without divisions)."""
        return {**self.extents, **self.narrow} if self.narrow else self.extents

    def _narrowed(self, mask: tuple[Bound, ...]) -> dict[str, range]:
        out: dict[str, range] = {}
        for b in mask:
            if b.step != 1 or len(b.e.terms) != 1:
                continue
            (atom, coef), = b.e.terms
            if not isinstance(atom, Var) or coef != 1 or atom.name not in self.extents:
                continue
            lo, hi = b.lo - b.e.const, b.hi - b.e.const
            cur = out.get(atom.name, range(self.extents[atom.name]))
            out[atom.name] = range(max(cur.start, lo), max(min(cur.stop, hi), max(cur.start, lo)))
        return out

    # -- pulling values ------------------------------------------------------------------------
    def pull(self, v: Value, idx: tuple[Ix, ...], mask: tuple[Bound, ...] = ()) -> Expr:
        key = (id(v.node), v.index, idx, mask, self.mode)
        got = self.memo.get(key)
        if got is not None:
            return got
        n = v.node
        if n.op == "constant":
            e = self.pull_constant(v, idx, mask)
        elif id(n) not in self.member_ids:
            e = Load(self.buffer_of(v), idx, mask, v.dtype)
        else:
            self.pulls[id(n)] = self.pulls.get(id(n), 0) + 1
            used = frozenset(v for e in idx for v in e.var_names())
            self.spans[id(n)] = self.spans.get(id(n), frozenset()) | used
            saved = self.narrow
            self.narrow = self._narrowed(mask) if mask else {}
            try:
                e = self.pull_member(n, idx, mask)
            finally:
                self.narrow = saved
        self.memo[key] = e
        return e

    def pull_constant(self, v: Value, idx: tuple[Ix, ...], mask: tuple[Bound, ...]) -> Expr:
        if is_splat(v.node):
            return Const(v.node.attrs["value"], v.dtype)
        return Load(self.buffer_of(v), idx, mask, v.dtype)

    def pull_member(self, n: Node, idx: tuple[Ix, ...], mask: tuple[Bound, ...]) -> Expr:
        op = n.op
        out = n.out
        if node_class(n) == "reduce":
            return self.pull_reduction(n, idx)
        if node_class(n) == "template":
            if self.mode == "epilogue" and n is self.template and idx == self.template_out:
                return Acc(out.dtype)
            raise Reject("index mismatch", f"%{self.nm(n)} ({op}) is read at [{_fmt(idx)}], "
                                           f"not at its own output point")
        if self.mode == "operand" and op == "concat" and len(n.inputs) > MAX_PROLOGUE_PIECES:
            raise Reject("template boundary",
                         f"%{self.nm(n)} concatenates {len(n.inputs)} pieces (> "
                         f"{MAX_PROLOGUE_PIECES}): a template prologue would pick a piece for "
                         f"every loaded element")
        if self.mode == "operand" and op not in PROLOGUE_OPS:
            self.prologue_cost += op_cost(n)
            if op_cost(n) > 1 or self.prologue_cost > self.max_prologue_cost:
                raise Reject("template boundary",
                             f"elementwise %{self.nm(n)} ({op}) is too costly for a template "
                             f"prologue (cost {self.prologue_cost:g} > max_prologue_cost="
                             f"{self.max_prologue_cost:g}): it runs for every loaded tile")
        if get_op(op).family == "elementwise":
            args = tuple(self.pull(v, bcast_index(idx, out.shape, v.shape), mask)
                         for v in n.inputs)
            attrs = (("dtype", n.attrs["dtype"]),) if op == "cast" else ()
            return Op(op, args, out.dtype, attrs)
        if op in ("reduce_sum", "reduce_max"):  # no axes: the identity
            return self.pull(n.inputs[0], idx, mask)
        if op == "iota":
            return IndexValue(idx[n.attrs["axis"]] if idx else Ix(), out.dtype)
        if op == "random_uniform":
            seed = self.pull(n.inputs[0], (), ())
            return RandomUniform(seed, linearize(idx, out.shape), n.attrs["stream"])
        return self.pull_movement(n, idx, mask)

    def pull_movement(self, n: Node, idx: tuple[Ix, ...], mask: tuple[Bound, ...]) -> Expr:
        op, a = n.op, n.attrs
        x = n.inputs[0]
        if op == "broadcast":
            return self.pull(x, bcast_index(idx, n.out.shape, x.shape), mask)
        if op == "transpose":
            xi = [Ix()] * len(idx)
            for j, p in enumerate(a["perm"]):
                xi[p] = idx[j]
            return self.pull(x, tuple(xi), mask)
        if op == "reshape":
            if x.shape == n.out.shape:
                return self.pull(x, idx, mask)
            flat = linearize(idx, n.out.shape)
            xi = delinearize(flat, x.shape, self.ranges)
            # Reshapes and transposes in turn nest divisions of divisions: the index doubles in
            # size with each, and everything that prints, compares or emits it with it.
            memo: dict[int, int] = {}
            size = sum(ix_size(e, memo) for e in xi)
            if size > MAX_INDEX_SIZE:
                raise Reject("index cap", f"%{self.nm(n)} (reshape) would be read through an "
                                          f"index of {size} terms > {MAX_INDEX_SIZE}")
            return self.pull(x, xi, mask)
        if op == "slice":
            xi = tuple(e * st + s for e, s, st in zip(idx, a["start"], a["step"], strict=True))
            return self.pull(x, xi, mask)
        if op == "reverse":
            xi = tuple(e * -1 + (d - 1) if i in a["axes"] else e
                       for i, (e, d) in enumerate(zip(idx, x.shape, strict=True)))
            return self.pull(x, xi, mask)
        if op == "pad":
            return self.pull_pad(n, idx, mask)
        if op == "concat":
            return self.pull_concat(n, idx, mask)
        raise Reject("unsupported", f"no index rule for {op}")

    def pull_pad(self, n: Node, idx: tuple[Ix, ...], mask: tuple[Bound, ...]) -> Expr:
        x = n.inputs[0]
        xi, bounds = [], []
        for e, d, lo, step in zip(idx, x.shape, n.attrs["low"],
                                  (s + 1 for s in n.attrs["interior"]), strict=True):
            shifted = e - lo
            xi.append(floordiv(shifted, step, self.ranges))
            b = make_bound(shifted, 0, (d - 1) * step + 1, step, self.ranges) if d else False
            if b is False:
                return Const(n.attrs["value"], n.out.dtype)
            if b is not True:
                bounds.append(b)
        if not bounds:
            return self.pull(x, tuple(xi), mask)
        inner = self.pull(x, tuple(xi), mask + tuple(bounds))
        fill = Const(n.attrs["value"], n.out.dtype)
        return Op("select", (InBounds(tuple(bounds)), inner, fill), n.out.dtype)

    def pull_concat(self, n: Node, idx: tuple[Ix, ...], mask: tuple[Bound, ...]) -> Expr:
        """Each element from the piece that holds it: the pieces this kernel can reach, chosen
        by a balanced tree of selects on the concatenation index. A chain of one select per
        piece would nest as deep as there are pieces (an LSTM's T steps): the expression
        walkers recurse into it (T = 256 overflowed Python's stack) and each element would
        test every piece; the tree is log2 of that deep."""
        axis = n.attrs["axis"]
        if self.sweeping and len(n.inputs) > MAX_SWEEP_PIECES:
            raise Reject("size cap", f"%{self.nm(n)} concatenates {len(n.inputs)} pieces (> "
                                     f"{MAX_SWEEP_PIECES}): a reduction's sweep would evaluate "
                                     "every piece for every element")
        before = dict(self.pulls) if self.sweeping else None  # only a sweep counts the cost
        pieces: list[tuple[int, int, Expr]] = []  # (first, end) along axis, the piece's value
        offset = 0
        for v in n.inputs:
            size = v.shape[axis]
            b = make_bound(idx[axis], offset, offset + size, 1, self.ranges)
            if b is not False:
                # a piece one wide is read at 0 along the axis wherever it is chosen: the index
                # no longer carries the selecting expression (an interleave's i % 2), so the
                # divisions of reshapes around it fold (a transposed convolution's phases). A
                # plain loop variable stays: the loop is split at the piece's bounds instead,
                # and its accesses stay contiguous.
                plain = len(idx[axis].terms) == 1 and isinstance(idx[axis].terms[0][0], Var)
                at = ix(0) if size == 1 and not plain else idx[axis] - offset
                sub = idx[:axis] + (at,) + idx[axis + 1:]
                extra = () if b is True else (b,)
                pieces.append((offset, offset + size, self.pull(v, sub, mask + extra)))
            offset += size
        cost = 0 if before is None else sum(
            op_cost(m) * (self.pulls.get(id(m), 0) - before.get(id(m), 0)) for m in self.members)
        if len(pieces) > 1 and cost > MAX_SWEEP_PIECE_COST:
            raise Reject("recompute cap", f"the pieces of %{self.nm(n)} cost {cost:g} per "
                                          f"element (> {MAX_SWEEP_PIECE_COST}), and a "
                                          "reduction's sweep would compute them all for every "
                                          "element")

        def tree(lo: int, hi: int) -> Expr:
            if hi - lo == 1:
                return pieces[lo][2]
            mid = (lo + hi) // 2
            left, right = tree(lo, mid), tree(mid, hi)
            # Within pieces[lo:hi], idx < the first index of pieces[mid] picks the left half.
            b = make_bound(idx[axis], pieces[lo][0], pieces[mid][0], 1, self.ranges)
            if b is True:
                return left
            if b is False:
                return right
            return Op("select", (InBounds((b,)), left, right), n.out.dtype)

        return tree(0, len(pieces))

    def pull_reduction(self, n: Node, idx: tuple[Ix, ...]) -> Expr:
        name = self.reduce_names.get(id(n))
        if name is None or self.mode != "loop":
            raise Reject("reduction boundary", f"%{self.nm(n)} is not computed in this kernel")
        if idx != canonical_index(n, self.outer):
            own = _fmt(canonical_index(n, self.outer))
            raise Reject("index mismatch", f"reduction %{self.nm(n)} is read at [{_fmt(idx)}], "
                                           f"not at its own row [{own}]")
        return ReduceRef(name, n.out.dtype)

    # -- loop kernels --------------------------------------------------------------------------
    def lower_loop(self, reductions: list[Node]) -> LoopKernel:
        if not reductions:
            shape = self.stores[0].shape
            for v in self.stores[1:]:
                if v.shape != shape:
                    first = self.stores[0]
                    raise Reject("shape mismatch", f"%{self.nm(v.node)} {v.type} and "
                                 f"%{self.nm(first.node)} {first.type} cannot share one "
                                 "elementwise domain")
            self.outer = self.vars("i", shape)
            stores = tuple(Store(self.buffer_of(v), self.outer, self.pull(v, self.outer))
                           for v in self.stores)
            return LoopKernel(self.name, shape, (), (), stores, self.origin)
        space = reduce_space(reductions[0])
        for r in reductions[1:]:
            other = reduce_space(r)
            if (other.outer, other.inner) != (space.outer, space.inner):
                raise Reject("reduction mismatch",
                             f"%{self.nm(r)} reduces {list(other.outer)} x {list(other.inner)}, "
                             f"%{self.nm(reductions[0])} {list(space.outer)} x {list(space.inner)}")
        self.outer = self.vars("i", space.outer)
        inner = self.vars("r", space.inner)
        sweep_of: dict[str, int] = {}
        reds: list[tuple[int, Reduction]] = []
        self.sweeping = True
        for r in reductions:
            value = self.reduction_input(r, inner)
            level = self.level(value, sweep_of)
            name = _unique(self.nm(r), sweep_of)
            reds.append((level, Reduction(name, _reduce_kind(r), value, r.out.dtype)))
            sweep_of[name] = level
            self.reduce_names[id(r)] = name
        inner_stores: list[tuple[int, Store]] = []
        outer_stores: list[Store] = []
        for v in self.stores:
            placed = self.place(v, space, inner)
            if placed[0] == "outer":
                outer_stores.append(placed[1])
            else:
                inner_stores.append((self.level(placed[1].value, sweep_of), placed[1]))
        count = max([lv + 1 for lv, _ in reds] + [lv + 1 for lv, _ in inner_stores])
        sweeps = tuple(Sweep(tuple(r for lv, r in reds if lv == s),
                             tuple(st for lv, st in inner_stores if lv == s))
                       for s in range(count))
        return LoopKernel(self.name, space.outer, space.inner, sweeps, tuple(outer_stores),
                          self.origin)

    def reduction_input(self, r: Node, inner: tuple[Ix, ...]) -> Expr:
        x = r.inputs[0]
        if r.op != "reduce_window":
            return self.pull(x, full_index(reduce_space(r), self.outer, inner))
        a = r.attrs
        xi, bounds = [], []
        overlap = 1.0
        for k, (o, q, d) in enumerate(zip(self.outer, inner, x.shape, strict=True)):
            e = o * a["strides"][k] + q - a["padding"][2 * k]
            xi.append(e)
            overlap *= a["window"][k] / a["strides"][k]
            b = make_bound(e, 0, d, 1, self.extents)
            if b is not True and b is not False:
                bounds.append(b)
        fill = Const(-math.inf if a["kind"] == "max" else 0.0, x.dtype)
        before = dict(self.pulls)
        value = self.pull(x, tuple(xi), tuple(bounds))
        if overlap > 1:
            cost = sum(op_cost(n) * (self.pulls.get(id(n), 0) - before.get(id(n), 0))
                       for n in self.members)
            self.window_cost += cost * (overlap - 1)
        if bounds:
            value = Op("select", (InBounds(tuple(bounds)), value, fill), x.dtype)
        return value

    def place(self, v: Value, space: ReduceSpace, inner: tuple[Ix, ...]
              ) -> tuple[str, Store]:
        """Store `v` after the sweeps (one value per row) or inside a sweep (per element)."""
        buf = self.buffer_of(v)
        if node_class(v.node) == "reduce" and id(v.node) in self.reduce_names:
            idx = canonical_index(v.node, self.outer)
            return "outer", Store(buf, idx, self.pull(v, idx))
        outer_forms = [self.outer]
        if space.full_shape is not None:
            outer_forms.append(full_index(space, self.outer, tuple(Ix() for _ in inner)))
            keep = tuple(1 if k in space.axes else d for k, d in enumerate(space.full_shape))
            shapes = [space.outer, keep]
        else:
            shapes = [space.outer]
        for shape, idx in zip(shapes, outer_forms, strict=True):
            if v.shape == shape:
                return "outer", Store(buf, idx, self.pull(v, idx))
        if space.full_shape is not None and v.shape == space.full_shape:
            idx = full_index(space, self.outer, inner)
            return "inner", Store(buf, idx, self.pull(v, idx))
        raise Reject("shape mismatch", f"%{self.nm(v.node)} {v.type} is neither the reduction's "
                     f"input nor its output shape {list(space.outer)}")

    @staticmethod
    def level(e: Expr, sweep_of: dict[str, int]) -> int:
        refs = [sweep_of[x.name] + 1 for x in walk([e]) if isinstance(x, ReduceRef)]
        return max(refs, default=0)

    # -- templates -----------------------------------------------------------------------------
    def lower_template(self, t: Node) -> Kernel:
        self.template = t
        if t.op == "matmul":
            a, b = t.inputs
            batch = t.out.shape[:-2]
            bv = self.vars("b", batch)
            m, n, k = (self.var("m", t.out.shape[-2]), self.var("n", t.out.shape[-1]),
                       self.var("k", a.shape[-1]))
            self.mode = "operand"
            ab = bcast_index(bv, batch, a.shape[:-2])
            bb = bcast_index(bv, batch, b.shape[:-2])
            names = tuple(f"b{j}" for j in range(len(batch)))
            opa = Operand(names + ("m", "k"), batch + (t.out.shape[-2], a.shape[-1]),
                          self.pull(a, ab + (m, k)))
            self.prologue_cost = 0.0
            opb = Operand(names + ("k", "n"), batch + (a.shape[-1], t.out.shape[-1]),
                          self.pull(b, bb + (k, n)))
            self.template_out = bv + (m, n)
            stores = self.epilogue(t.out.shape)
            return MatmulKernel(self.name, batch, t.out.shape[-2], t.out.shape[-1],
                                a.shape[-1], opa, opb, t.out.dtype, stores, self.origin)
        if is_pointwise_conv(t):
            return self.lower_pointwise_conv(t)
        x, w = t.inputs
        self.mode = "operand"
        opx = Operand(tuple(f"x{j}" for j in range(len(x.shape))), x.shape,
                      self.pull(x, self.vars("x", x.shape)))
        self.prologue_cost = 0.0
        opw = Operand(tuple(f"w{j}" for j in range(len(w.shape))), w.shape,
                      self.pull(w, self.vars("w", w.shape)))
        names = ("n", "o") + tuple(f"p{j}" for j in range(len(t.out.shape) - 2))
        self.template_out = tuple(self.var(v, d) for v, d in zip(names, t.out.shape,
                                                                  strict=True))
        stores = self.epilogue(t.out.shape)
        attrs = tuple((k, t.attrs[k]) for k in ("stride", "padding", "lhs_dilation",
                                                "rhs_dilation", "groups"))
        return ConvKernel(self.name, opx, opw, t.out.shape, attrs, t.out.dtype, stores,
                          self.origin)

    def lower_pointwise_conv(self, t: Node) -> MatmulKernel:
        """A 1x1 convolution as the matmul it is: image by image, w[O, C] @ x[C, H·W]. The
        output plane is the matmul's columns; its index splits into the spatial positions the
        epilogue reads, and joins back to the plain column wherever an operand is contiguous
        (`Ix.of` recombines X // d and X % d)."""
        x, w = t.inputs
        (batch, chans), plane = x.shape[:2], t.out.shape[2:]
        b0, m = self.var("b0", batch), self.var("m", t.out.shape[1])
        n, k = self.var("n", math.prod(plane)), self.var("k", chans)
        spatial = delinearize(n, plane, self.ranges)
        self.mode = "operand"
        opa = Operand(("b0", "m", "k"), (batch, t.out.shape[1], chans),
                      self.pull(w, (m, k) + (Ix(),) * len(plane)))
        self.prologue_cost = 0.0
        opb = Operand(("b0", "k", "n"), (batch, chans, math.prod(plane)),
                      self.pull(x, (b0, k) + spatial))
        self.template_out = (b0, m) + spatial
        stores = self.epilogue(t.out.shape)
        return MatmulKernel(self.name, (batch,), t.out.shape[1], math.prod(plane), chans,
                            opa, opb, t.out.dtype, stores, self.origin)

    def epilogue(self, shape: tuple[int, ...]) -> tuple[Store, ...]:
        self.mode = "epilogue"
        out = []
        for v in self.stores:
            if v.shape != shape:
                raise Reject("shape mismatch", f"%{self.nm(v.node)} {v.type} is not the "
                             f"{self.template.op} output shape {list(shape)}")
            out.append(Store(self.buffer_of(v), self.template_out,
                             self.pull(v, self.template_out)))
        return tuple(out)

    # -- library kernels -----------------------------------------------------------------------
    def lower_library(self, n: Node) -> LibraryKernel:
        ins = tuple(self.buffer_of(v) for v in n.inputs)
        attrs = tuple(sorted(n.attrs.items()))
        return LibraryKernel(self.name, n.op, ins, self.buffer_of(n.out), attrs, self.origin)


def is_pointwise_conv(t: Node) -> bool:
    """A convolution whose every output point is a dot product over channels at its own
    position (1x1 kernel, unit strides, no padding or input dilation, one group) over enough
    channels that a matmul beats a convolution's tiles (`MIN_POINTWISE_CHANNELS`)."""
    a = t.attrs
    return (t.op == "conv" and t.inputs[0].shape[1] >= MIN_POINTWISE_CHANNELS
            and all(d == 1 for d in t.inputs[1].shape[2:])
            and all(s == 1 for s in a["stride"]) and not any(a["padding"])
            and all(d == 1 for d in a["lhs_dilation"]) and a["groups"] == 1)


def _reduce_kind(n: Node) -> str:
    if n.op == "reduce_window":
        return n.attrs["kind"]
    return REDUCE_KINDS[n.op]


def _unique(name: str, taken: dict[str, int]) -> str:
    cand, k = name, 1
    while cand in taken:
        cand = f"{name}_{k}"
        k += 1
    return cand


def _fmt(idx: tuple[Ix, ...]) -> str:
    return ", ".join(str(e) for e in idx)
