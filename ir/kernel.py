"""The kernel IR: the schedule every code generator consumes.

Note: the kernel IR in one page
===============================

A `Schedule` is an ordered list of kernels plus a buffer table. A **kernel is exactly one launch**
and one fused group of graph nodes: values inside a group are never written to memory, only the
values other kernels (or the caller) need are stored. Every kernel names the graph nodes it came
from (`origin`), so generated code can say where it came from.

Buffers
-------
Every tensor a kernel reads or writes is a named `Buffer` (a TensorType and a kind): `input`
(the caller's), `param` (the graph's parameters), `constant` (array literals, values in
`Schedule.constants`), `output` (returned to the caller) and `temp` (lives between kernels; the
memory planner places temps in one arena). Buffers are dense row-major (C order) arrays. Names are
the graph's value names (unique, may contain dots: backends sanitize them for identifiers).

Index expressions (`Ix`)
------------------------
Integer expressions over the kernel's loop variables: a constant plus a sum of `coef * atom`
where an atom is a loop variable, `e // d` or `e % d` (d a positive constant; **floor** division
and modulo as in Python, which differs from C for negative operands). Broadcast (index 0),
transpose (permuted variables), slice (`start + step * i`), reshape (linearize, then `//` and
`%`) and pad (`(i - low) // (interior + 1)` under a predicate) are all index arithmetic, so a
fused movement op copies nothing. `Bound(e, lo, hi, step)` is the predicate
`lo <= e < hi and (e - lo) % step == 0`; a load with a mask (a tuple of bounds, all must hold)
touches memory only where the mask holds and yields 0 elsewhere (pads and window borders then
`select` their fill value). Expressions are kept simplified against the variables' extents, so
equal indices compare equal.

Scalar expressions (`Expr`)
---------------------------
A DAG (shared subexpressions are the same object) of:
`Const(value, dtype)`; `Load(buffer, index, mask)`; `Op(op, args, attrs)` where `op` is an
elementwise primitive of the graph IR with exactly its semantics (`add`, `exp`, `select`,
`cast{dtype}`, comparisons...; operands already have equal dtypes); `IndexValue(e)` (the integer
value of an index expression converted to a dtype: iota); `InBounds(bounds)` (bool);
`RandomUniform(seed, counter, stream)` (the graph op `random_uniform` at one element: Philox4x32-10
of the 64-bit linear `counter`, see `ir/ops/random.py`); `ReduceRef(name)` (the result of a
reduction of an earlier sweep, loop kernels) and `Acc()` (the accumulator of a template at the
current output point). Every node has a dtype; results are rounded to it (a backend may compute
f16/bf16 in f32 and round when storing).

Kernel kinds
------------
`LoopKernel(domain, reduce_domain, sweeps, stores)`: the loop nest below, over outer variables
`i0, i1, ...` (extents `domain`) and inner variables `r0, r1, ...` (extents `reduce_domain`):

    parallel for i in domain:                 # e.g. one program (row) each
        for sweep in sweeps:                  # in order
            acc_j = init(kind_j) for each reduction of the sweep
            for r in reduce_domain:           # row-major; sum order is unspecified
                perform the sweep's stores    # Store(buffer, index(i, r), value(i, r))
                acc_j = combine(acc_j, value_j(i, r))
            the reductions' results become ReduceRef(name) for later sweeps and stores
        perform the outer stores              # index(i), value(i)

A pointwise kernel has an empty reduce_domain and no sweeps: only outer stores. A reduction
kind is `sum` (f16 accumulates in f32), `max` or `argmax` (the row-major position of the first
maximum; reduce_domain then has one axis). Several reductions in one sweep are horizontal fusion
(batch-norm mean and mean of squares); several sweeps are a persistent reduction (softmax: max,
then sum of exp, then the normalized store). Subexpressions that depend on `i` only may be
hoisted out of the inner loop. Every element of every output buffer is written exactly once by
exactly one kernel, and a kernel never reads what it writes except in place (`MemoryPlan.aliases`,
output -> input sharing its bytes): the kernel reads that input only at the very index the output
is written at, in the output's section (sweep or outer stores) or earlier ones, and within that
section only inside the value of the aliasing store itself, so loading before storing at each
point is enough.

Templates: `MatmulKernel` computes `acc[b.., m, n] = sum_k A[b.., m, k] * B[b.., k, n]` and
`ConvKernel` computes the graph op `conv` (cross-correlation, N-d, stride, padding, dilations,
groups; exactly its attributes) of `X` and `W`. Their operands are `Operand`s: virtual tensors
whose element at the operand's own index variables is an expression (usually a plain load; fused
transposes and broadcasts appear as index maps, a fused cast as `cast`, and cheap elementwise
ops such as a relu as a prologue applied when an element is loaded). The `stores` are the
epilogue: expressions over the output variables that read `Acc()` (bias, activation, residual
add, batch-norm affine), evaluated once per output element after the accumulation; a store of
plain `Acc()` writes the raw product.

`LibraryKernel(op, inputs, output, attrs)`: a primitive computed as a whole, with exactly the
graph op's semantics (`take`, `scatter_add`, `select_scatter`); its operands are buffers.

A `MemoryPlan` (from `plan_memory`) gives each temp an offset in one arena; in-place aliases
share an offset with an input that dies at the kernel writing them. Inputs, parameters,
constants and outputs live outside the arena; a graph output that is an input, a parameter or an
array constant maps to that buffer (`Schedule.outputs`) and no kernel copies it.

Why this shape: one loop nest with sweeps covers elementwise chains, reductions with their
producers and consumers (softmax, log-softmax and batch-norm statistics are one kernel each) and
pooling (`reduce_window` is a reduction whose inner domain is the window) with a single
interpreter and a single code generator per backend; templates keep GEMM and convolution on
their tuned paths while still absorbing the surrounding elementwise work; library kernels give
every remaining primitive a home with no fusion-specific code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GraphError
from .types import TensorType

# -- index expressions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    """A loop variable (`i0`, `r1`, `m`, ...)."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class FloorDiv:
    """`arg // d` (floor division, d > 0)."""

    arg: Ix
    d: int

    def __str__(self) -> str:
        return f"{_paren(self.arg)} // {self.d}"


@dataclass(frozen=True)
class Mod:
    """`arg % d` (floor modulo, result in [0, d))."""

    arg: Ix
    d: int

    def __str__(self) -> str:
        return f"{_paren(self.arg)} % {self.d}"


Atom = Var | FloorDiv | Mod


@dataclass(frozen=True)
class Ix:
    """An index expression: `const + sum(coef * atom)`, terms sorted, no zero coefficients."""

    terms: tuple[tuple[Atom, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(terms: Iterable[tuple[Atom, int]], const: int = 0) -> Ix:
        acc: dict[Atom, int] = {}
        for a, c in terms:
            acc[a] = acc.get(a, 0) + c
        const = _recombine(acc, int(const))
        items = sorted(((a, c) for a, c in acc.items() if c), key=lambda t: str(t[0]))
        return Ix(tuple(items), const)

    @property
    def is_const(self) -> bool:
        return not self.terms

    def __add__(self, other: Ix | int) -> Ix:
        if isinstance(other, int):
            return Ix(self.terms, self.const + other)
        return Ix.of(self.terms + other.terms, self.const + other.const)

    def __mul__(self, c: int) -> Ix:
        return Ix.of(((a, k * c) for a, k in self.terms), self.const * c)

    def __sub__(self, other: Ix | int) -> Ix:
        return self + (-other if isinstance(other, int) else other * -1)

    def var_names(self) -> set[str]:
        out: set[str] = set()
        for a, _ in self.terms:
            out |= a.arg.var_names() if isinstance(a, (FloorDiv, Mod)) else {a.name}
        return out

    def __str__(self) -> str:
        parts: list[tuple[str, str]] = []
        for a, c in self.terms:
            s = str(a)
            if isinstance(a, (FloorDiv, Mod)) and (len(self.terms) > 1 or self.const or c != 1):
                s = f"({s})"
            if abs(c) != 1:
                s = f"{s}*{abs(c)}"
            parts.append(("-" if c < 0 else "+", s))
        if self.const or not parts:
            parts.append(("-" if self.const < 0 else "+", str(abs(self.const))))
        text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, p in parts[1:]:
            text += f" {sign} {p}"
        return text


def _recombine(acc: dict[Atom, int], const: int) -> int:
    """Fold c·d·(X // d) + c·(X % d) into c·X in `acc` (in place; returns the new constant):
    an index split by one reshape and joined again by another (a 1x1 convolution's output
    plane read as a matmul's columns) becomes the plain, affine index it was."""
    while True:
        pair = next(((a, c, q) for a, c in acc.items() if isinstance(a, Mod) and c
                     for q in _quotients(a) if acc.get(q, 0) == c * a.d), None)
        if pair is None:
            return const
        m, c, q = pair
        del acc[m], acc[q]
        for a, k in m.arg.terms:
            acc[a] = acc.get(a, 0) + k * c
        const += m.arg.const * c


def _quotients(m: Mod) -> tuple[FloorDiv, ...]:
    """The spellings of X // d for `m` = X % d: with X = Y // e, `floordiv` writes the
    quotient as Y // (e·d) (a plane split into rows and columns: (n // 16) % 16 pairs with
    n // 256)."""
    out = (FloorDiv(m.arg, m.d),)
    if len(m.arg.terms) == 1 and m.arg.const == 0:
        inner, c = m.arg.terms[0]
        if isinstance(inner, FloorDiv) and c == 1:
            out += (FloorDiv(inner.arg, inner.d * m.d),)
    return out


def _paren(e: Ix) -> str:
    plain = e.is_const or (len(e.terms) == 1 and not e.const and e.terms[0][1] == 1
                           and isinstance(e.terms[0][0], Var))
    return str(e) if plain else f"({e})"


def ix(value: int | str | Ix) -> Ix:
    """An index expression from a constant, a variable name or an Ix."""
    if isinstance(value, Ix):
        return value
    if isinstance(value, str):
        return Ix(((Var(value), 1),), 0)
    return Ix((), int(value))


Extents = Mapping[str, int]


def top_coefficient(e: Ix, var: str) -> int | None:
    """c when `var` enters `e` only as a top-level term c·var (0: not at all), else None
    (inside a division or remainder): 1 means contiguous accesses along `var`."""
    c = 0
    for atom, k in e.terms:
        if isinstance(atom, Var):
            c += k if atom.name == var else 0
        elif var in atom.arg.var_names():
            return None
    return c


def ix_size(e: Ix, memo: dict[int, int] | None = None) -> int:
    """Terms of `e` written out as a tree (what printing or emitting it costs). Subexpressions
    may be shared, so the tree can be exponentially larger than the objects: counted once per
    object."""
    memo = {} if memo is None else memo
    got = memo.get(id(e))
    if got is None:
        got = 1 + sum(1 if isinstance(a, Var) else 1 + ix_size(a.arg, memo) for a, _ in e.terms)
        memo[id(e)] = got
    return got


def ix_range(e: Ix, extents: Extents) -> tuple[int, int]:
    """Inclusive bounds of `e` given each variable's extent (variable v ranges over [0, n)), or
    its range where one is given instead."""
    lo = hi = e.const
    for a, c in e.terms:
        alo, ahi = _atom_range(a, extents)
        lo, hi = (lo + c * alo, hi + c * ahi) if c > 0 else (lo + c * ahi, hi + c * alo)
    return lo, hi


def _atom_range(a: Atom, extents: Extents) -> tuple[int, int]:
    if isinstance(a, Var):
        n = extents.get(a.name)
        if n is None:
            raise GraphError(f"index variable {a.name!r} has no extent")
        if isinstance(n, range):  # a narrower range known where the value is used (a mask)
            return n.start, max(n.stop - 1, n.start)
        return 0, max(n - 1, 0)
    lo, hi = ix_range(a.arg, extents)
    if isinstance(a, FloorDiv):
        return lo // a.d, hi // a.d
    return (lo, hi) if 0 <= lo and hi < a.d else (0, a.d - 1)


def floordiv(e: Ix, d: int, extents: Extents) -> Ix:
    """`e // d`, simplified: multiples of d move out, a remainder known to lie in one block of
    d folds to a constant, nested divisions merge."""
    if d <= 0:
        raise GraphError(f"index division by {d}")
    if d == 1:
        return e
    q_terms = [(a, c // d) for a, c in e.terms if c % d == 0]
    rest = Ix.of([(a, c) for a, c in e.terms if c % d != 0], e.const % d)
    quot = Ix.of(q_terms, e.const // d)
    lo, hi = ix_range(rest, extents)
    if lo // d == hi // d:
        return quot + lo // d
    if rest.const == 0 and len(rest.terms) == 1:
        a, c = rest.terms[0]
        if c > 1 and d % c == 0:
            return quot + floordiv(Ix(((a, 1),), 0), d // c, extents)
        if c == 1 and isinstance(a, FloorDiv):
            return quot + floordiv(a.arg, a.d * d, extents)
    split = _split_small(rest, d, extents)
    if split is not None:  # (g X + y) // (g d') = X // d' for 0 <= y < g
        g, big, _ = split
        return quot + floordiv(big, d // g, extents)
    return quot + Ix(((FloorDiv(rest, d), 1),), 0)


def _split_small(e: Ix, d: int, extents: Extents) -> tuple[int, Ix, Ix] | None:
    """`e` as g * big + small with g > 1 dividing d and small always in [0, g), if the terms of
    the largest coefficients allow it (a flat index i + 1024 r read through a reshape whose
    blocks are 32768 long: g = 1024, small = i)."""
    terms = sorted(e.terms, key=lambda t: -abs(t[1]))
    g = d
    for k in range(1, len(terms)):
        g = math.gcd(g, terms[k - 1][1])
        if g <= 1:
            break
        small = Ix.of(terms[k:], e.const)
        lo, hi = ix_range(small, extents)
        if 0 <= lo and hi < g:
            return g, Ix.of([(a, c // g) for a, c in terms[:k]], 0), small
    return None


def mod(e: Ix, d: int, extents: Extents) -> Ix:
    """`e % d`, simplified: multiples of d drop out, a remainder already in [0, d) stays."""
    if d <= 0:
        raise GraphError(f"index modulo by {d}")
    if d == 1:
        return Ix()
    rest = Ix.of([(a, c) for a, c in e.terms if c % d != 0], e.const % d)
    lo, hi = ix_range(rest, extents)
    if lo // d == hi // d:
        return rest - d * (lo // d)
    if len(rest.terms) == 1:
        a, c = rest.terms[0]
        if rest.const == 0 and c > 1 and d % c == 0:
            return mod(Ix(((a, 1),), 0), d // c, extents) * c
        if rest.const == 0 and c == 1 and isinstance(a, Mod) and a.d % d == 0:
            return mod(a.arg, d, extents)
    split = _split_small(rest, d, extents)
    if split is not None:  # (g X + y) % (g d') = g (X % d') + y for 0 <= y < g
        g, big, small = split
        return mod(big, d // g, extents) * g + small
    return Ix(((Mod(rest, d), 1),), 0)


def linearize(index: tuple[Ix, ...], shape: tuple[int, ...]) -> Ix:
    """Row-major linear position of `index` in a tensor of `shape`."""
    out = Ix()
    for e, n in zip(index, shape, strict=True):
        out = out * n + e
    return out


def delinearize(linear: Ix, shape: tuple[int, ...], extents: Extents) -> tuple[Ix, ...]:
    """The index in `shape` of row-major position `linear` (the inverse of `linearize`)."""
    out: list[Ix] = []
    stride = math.prod(shape)
    for k, n in enumerate(shape):
        stride //= max(n, 1)
        q = floordiv(linear, stride, extents) if stride > 1 else linear
        out.append(q if k == 0 else mod(q, n, extents))
    return tuple(out)


@dataclass(frozen=True)
class Bound:
    """The predicate `lo <= e < hi and (e - lo) % step == 0`."""

    e: Ix
    lo: int
    hi: int
    step: int = 1

    def __str__(self) -> str:
        if self.step == 1:
            return f"{self.lo} <= {self.e} < {self.hi}"
        return f"{self.e} in [{self.lo}:{self.hi}:{self.step}]"


def make_bound(e: Ix, lo: int, hi: int, step: int, extents: Extents) -> Bound | bool:
    """A Bound, or True/False when the extents decide it."""
    elo, ehi = ix_range(e, extents)
    if ehi < lo or elo >= hi:
        return False
    if step == 1 and lo <= elo and ehi < hi:
        return True
    if e.is_const:
        return (e.const - lo) % step == 0
    return Bound(e, lo, hi, step)


# -- scalar expressions ----------------------------------------------------------------------------


class Expr:
    """Base of scalar expressions. Frozen dataclasses; the hash is computed once."""

    dtype: str

    def children(self) -> tuple[Expr, ...]:
        return ()


def _expr(cls):
    """Make `cls` a frozen dataclass whose (recursive) hash is cached on first use."""
    cls = dataclass(frozen=True)(cls)
    field_hash = cls.__hash__

    def __hash__(self) -> int:
        h = self.__dict__.get("_h")
        if h is None:
            h = field_hash(self)
            object.__setattr__(self, "_h", h)
        return h

    cls.__hash__ = __hash__
    return cls


@_expr
class Const(Expr):
    value: float | int | bool
    dtype: str


@_expr
class Load(Expr):
    """`buffer[index]`; where `mask` does not hold, no memory is touched and the value is 0."""

    buffer: str
    index: tuple[Ix, ...]
    mask: tuple[Bound, ...]
    dtype: str


@_expr
class IndexValue(Expr):
    """The integer value of an index expression, converted to `dtype`."""

    index: Ix
    dtype: str


@_expr
class InBounds(Expr):
    """True where every bound holds (dtype bool)."""

    bounds: tuple[Bound, ...]
    dtype: str = "bool"


@_expr
class Op(Expr):
    """An elementwise primitive of the graph IR applied to scalar operands."""

    op: str
    args: tuple[Expr, ...]
    dtype: str
    attrs: tuple[tuple[str, Any], ...] = ()

    def children(self) -> tuple[Expr, ...]:
        return self.args


@_expr
class RandomUniform(Expr):
    """Element `counter` of the graph op random_uniform(seed){stream} (f32 in [0, 1))."""

    seed: Expr
    counter: Ix
    stream: int
    dtype: str = "f32"

    def children(self) -> tuple[Expr, ...]:
        return (self.seed,)


@_expr
class ReduceRef(Expr):
    """The result of the reduction `name` of an earlier sweep, at the current outer point."""

    name: str
    dtype: str


@_expr
class Acc(Expr):
    """A template's accumulator at the current output point."""

    dtype: str


def walk(roots: Iterable[Expr]) -> Iterator[Expr]:
    """Every distinct node of the expression DAG under `roots`, children before parents."""
    seen: set[int] = set()
    stack: list[tuple[Expr, bool]] = [(r, False) for r in reversed(list(roots))]
    while stack:
        e, done = stack.pop()
        if done:
            yield e
            continue
        if id(e) in seen:
            continue
        seen.add(id(e))
        stack.append((e, True))
        stack.extend((c, False) for c in reversed(e.children()))


# -- kernels -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """`buffer[index] = value`."""

    buffer: str
    index: tuple[Ix, ...]
    value: Expr


@dataclass(frozen=True)
class Reduction:
    """`name = kind over the reduce domain of value` (kind: sum, max or argmax)."""

    name: str
    kind: str
    value: Expr
    dtype: str


@dataclass(frozen=True)
class Sweep:
    """One pass over the reduce domain: stores at each inner point, reductions accumulated."""

    reductions: tuple[Reduction, ...] = ()
    stores: tuple[Store, ...] = ()


@dataclass(frozen=True)
class Operand:
    """A template operand: a virtual tensor of `shape` whose element at `vars` is `value`."""

    vars: tuple[str, ...]
    shape: tuple[int, ...]
    value: Expr


@dataclass(frozen=True)
class LoopKernel:
    """Pointwise and reduction kernels (see the module note for the loop nest)."""

    name: str
    domain: tuple[int, ...]
    reduce_domain: tuple[int, ...]
    sweeps: tuple[Sweep, ...]
    stores: tuple[Store, ...]
    origin: tuple[str, ...] = ()
    kind: str = field(default="loop", init=False)

    @property
    def outer_vars(self) -> tuple[str, ...]:
        return tuple(f"i{k}" for k in range(len(self.domain)))

    @property
    def inner_vars(self) -> tuple[str, ...]:
        return tuple(f"r{k}" for k in range(len(self.reduce_domain)))

    def extents(self) -> dict[str, int]:
        return dict(zip(self.outer_vars + self.inner_vars, self.domain + self.reduce_domain,
                        strict=True))

    def all_stores(self) -> tuple[Store, ...]:
        return tuple(s for sw in self.sweeps for s in sw.stores) + self.stores

    def expr_roots(self) -> list[Expr]:
        out: list[Expr] = []
        for sw in self.sweeps:
            out += [r.value for r in sw.reductions] + [s.value for s in sw.stores]
        return out + [s.value for s in self.stores]


@dataclass(frozen=True)
class MatmulKernel:
    """`acc[b.., m, n] = sum_k a[b.., m, k] * b[b.., k, n]`, then the epilogue stores."""

    name: str
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    acc_dtype: str
    stores: tuple[Store, ...]
    origin: tuple[str, ...] = ()
    kind: str = field(default="matmul", init=False)

    @property
    def out_vars(self) -> tuple[str, ...]:
        return tuple(f"b{j}" for j in range(len(self.batch))) + ("m", "n")

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.batch + (self.m, self.n)

    def extents(self) -> dict[str, int]:
        ext = dict(zip(self.out_vars, self.out_shape, strict=True))
        ext["k"] = self.k
        return ext

    def expr_roots(self) -> list[Expr]:
        return [self.a.value, self.b.value] + [s.value for s in self.stores]

    def all_stores(self) -> tuple[Store, ...]:
        return self.stores


@dataclass(frozen=True)
class ConvKernel:
    """`acc = conv(x, w){stride, padding, lhs_dilation, rhs_dilation, groups}`, then the epilogue
    stores over the output variables `n, o, p0, p1, ...`."""

    name: str
    x: Operand
    w: Operand
    out_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]
    acc_dtype: str
    stores: tuple[Store, ...]
    origin: tuple[str, ...] = ()
    kind: str = field(default="conv", init=False)

    @property
    def out_vars(self) -> tuple[str, ...]:
        return ("n", "o") + tuple(f"p{j}" for j in range(len(self.out_shape) - 2))

    def extents(self) -> dict[str, int]:
        ext = dict(zip(self.out_vars, self.out_shape, strict=True))
        for opnd in (self.x, self.w):
            ext.update(zip(opnd.vars, opnd.shape, strict=True))
        return ext

    def expr_roots(self) -> list[Expr]:
        return [self.x.value, self.w.value] + [s.value for s in self.stores]

    def all_stores(self) -> tuple[Store, ...]:
        return self.stores


@dataclass(frozen=True)
class LibraryKernel:
    """A primitive computed as a whole, with the graph op's exact semantics."""

    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: tuple[tuple[str, Any], ...]
    origin: tuple[str, ...] = ()
    kind: str = field(default="library", init=False)

    def expr_roots(self) -> list[Expr]:
        return []

    def all_stores(self) -> tuple[Store, ...]:
        return ()


Kernel = LoopKernel | MatmulKernel | ConvKernel | LibraryKernel


def kernel_reads(k: Kernel) -> list[str]:
    """Buffers a kernel reads, in first-use order."""
    if isinstance(k, LibraryKernel):
        return list(dict.fromkeys(k.inputs))
    names = [e.buffer for e in walk(k.expr_roots()) if isinstance(e, Load)]
    return list(dict.fromkeys(names))


def kernel_writes(k: Kernel) -> list[str]:
    """Buffers a kernel writes."""
    if isinstance(k, LibraryKernel):
        return [k.output]
    return list(dict.fromkeys(s.buffer for s in k.all_stores()))


# -- schedules -------------------------------------------------------------------------------------

BUFFER_KINDS = ("input", "param", "constant", "output", "temp")


@dataclass(frozen=True)
class Buffer:
    name: str
    type: TensorType
    kind: str

    @property
    def nbytes(self) -> int:
        return self.type.nbytes


@dataclass(frozen=True)
class Rejection:
    """A merge the fusion pass considered and refused, with the reason."""

    producer: str
    consumer: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"%{self.producer} -> %{self.consumer}: {self.reason}{tail}"


@dataclass(frozen=True)
class MemoryPlan:
    """Arena offsets of the temps, their lifetimes over kernel positions and the report."""

    arena_bytes: int
    offsets: Mapping[str, int]
    lifetimes: Mapping[str, tuple[int, int]]
    aliases: Mapping[str, str]
    naive_bytes: int
    lower_bound: int
    alignment: int = 64


@dataclass(frozen=True)
class Schedule:
    """Ordered kernels, the buffer table, the graph signature and (after planning) memory.

    `inputs`/`params` list buffer names in signature order; `outputs` maps each graph output name
    to its buffer. `param_values` and `constants` hold the arrays the caller does not pass.
    """

    name: str
    kernels: tuple[Kernel, ...]
    buffers: Mapping[str, Buffer]
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]
    constants: Mapping[str, np.ndarray]
    param_values: Mapping[str, np.ndarray]
    rejections: tuple[Rejection, ...] = ()
    memory: MemoryPlan | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        raise GraphError(f"schedule {self.name!r} has no kernel {name!r}")

    def temps(self) -> list[Buffer]:
        return [b for b in self.buffers.values() if b.kind == "temp"]

    def param_derived(self) -> frozenset[str]:
        """Kernels that read only parameters, constants and what such kernels wrote, and write
        only temps (a weight picked or transposed for a matmul): their results stay the same
        until a parameter changes. The memory planner keeps what they write alive over the
        whole schedule, so a backend may skip them on a call whose parameters are those of
        the call before."""
        derived: set[str] = set()
        names: set[str] = set()
        for k in self.kernels:
            if all(self.buffers[b].kind in ("param", "constant") or b in derived
                   for b in kernel_reads(k)) \
                    and all(self.buffers[b].kind == "temp" for b in kernel_writes(k)):
                derived.update(kernel_writes(k))
                names.add(k.name)
        return frozenset(names)

    def with_memory(self, plan: MemoryPlan | None) -> Schedule:
        return Schedule(self.name, self.kernels, self.buffers, self.inputs, self.params,
                        self.outputs, self.constants, self.param_values, self.rejections, plan,
                        self.options)

    def __str__(self) -> str:
        from .kernel_text import print_schedule

        return print_schedule(self)
