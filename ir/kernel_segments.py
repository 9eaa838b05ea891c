"""Index-set splitting of a loop variable: where a kernel's values pick pieces by bounds on one
variable (a concatenation's select tree, a pad's border), the variable's range splits at the
bounds' ends, and within each segment every such bound is decided, so each segment evaluates
only its own piece.

`breakpoints(roots, var, extent)` gives the segment ends; `restrict(roots, var, lo, hi,
extents)` rebuilds the expressions for `var` in [lo, hi): decided bounds drop out of masks and
`InBounds`, a mask that never holds makes its load the constant 0, a `select` on a decided
condition is its chosen operand. Undecided parts keep their very objects, so index expressions
stay the ones a backend's rewrites are keyed by, and shared subexpressions stay shared.

`load_pieces(value, var, extent, extents)` reads a concatenation of plain loads along `var`
off its select tree (a descent per piece, not a restriction of the whole tree per segment):
each piece's start and its load, the mask dropped, where every piece is the same load
shifted along `var` (an unrolled loop's T steps), else None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .kernel import (
    Bound,
    Const,
    Expr,
    InBounds,
    Load,
    Op,
    Var,
    make_bound,
    top_coefficient,
    walk,
)


def _bounds(e: Expr) -> tuple[Bound, ...]:
    if isinstance(e, Load):
        return e.mask
    if isinstance(e, InBounds):
        return e.bounds
    return ()


def _span_on(bd: Bound, var: str) -> tuple[int, int] | None:
    """The range of `var` where `bd` holds, when its index is `var` plus a constant."""
    if bd.step != 1 or len(bd.e.terms) != 1:
        return None
    atom, coeff = bd.e.terms[0]
    if not isinstance(atom, Var) or atom.name != var or coeff != 1:
        return None
    return bd.lo - bd.e.const, bd.hi - bd.e.const


def selects_on(roots: Sequence[Expr], var: str) -> bool:
    """Whether some `select` chooses by a bound on `var` alone: what splitting saves."""
    return any(isinstance(e, Op) and e.op == "select" and isinstance(e.args[0], InBounds)
               and any(_span_on(bd, var) for bd in e.args[0].bounds) for e in walk(roots))


def breakpoints(roots: Sequence[Expr], var: str, extent: int) -> list[int]:
    """Sorted segment ends in (0, extent]: where some bound on `var` alone starts or stops
    holding."""
    points = {extent}
    for e in walk(roots):
        for bd in _bounds(e):
            span = _span_on(bd, var)
            if span is not None:
                points.update(p for p in span if 0 < p < extent)
    return sorted(points)


def restrict(roots: Sequence[Expr], var: str, lo: int, hi: int,
             extents: Mapping[str, int | range]) -> list[Expr]:
    """`roots` for `var` in [lo, hi) (see the module docstring)."""
    ext = {**extents, var: range(lo, hi)}
    memo: dict[int, Expr] = {}

    def decide(bounds: tuple[Bound, ...]) -> tuple[Bound, ...] | None:
        """The bounds still undecided, or None when one never holds."""
        kept = []
        for bd in bounds:
            holds = make_bound(bd.e, bd.lo, bd.hi, bd.step, ext)
            if holds is False:
                return None
            if holds is not True:
                kept.append(bd)
        return tuple(kept)

    def go(e: Expr) -> Expr:
        done = memo.get(id(e))
        if done is not None:
            return done
        out = e
        if isinstance(e, Load) and e.mask:
            kept = decide(e.mask)
            if kept is None:
                out = Const(False if e.dtype == "bool" else 0, e.dtype)
            elif len(kept) < len(e.mask):
                out = Load(e.buffer, e.index, kept, e.dtype)
        elif isinstance(e, InBounds):
            kept = decide(e.bounds)
            if kept is None or not kept:
                out = Const(kept is not None, "bool")
            elif len(kept) < len(e.bounds):
                out = InBounds(kept)
        elif isinstance(e, Op):
            args = tuple(go(a) for a in e.args)
            if e.op == "select" and isinstance(args[0], Const):
                out = args[1] if args[0].value else args[2]
            elif any(a is not b for a, b in zip(args, e.args, strict=True)):
                out = Op(e.op, args, e.dtype, e.attrs)
        memo[id(e)] = out
        return out

    # children before parents, so the recursion in `go` stays shallow on deep DAGs
    for e in walk(roots):
        go(e)
    return [go(r) for r in roots]


def load_pieces(value: Expr, var: str, extent: int, extents: Mapping[str, int]
                ) -> list[tuple[int, Load]] | None:
    """[(start, load)] of the pieces `value` picks along `var` in [0, extent), each load
    without its mask, reading its piece at `var` − start (module docstring); None unless
    every piece is such a load, the same index up to that shift."""
    out: list[tuple[int, int, Load]] = []

    def descend(e: Expr, lo: int, hi: int) -> bool:
        if lo >= hi:
            return True
        if isinstance(e, Op) and e.op == "select" and isinstance(e.args[0], InBounds) \
                and len(e.args[0].bounds) == 1:
            span = _span_on(e.args[0].bounds[0], var)
            if span is None:
                return False
            a, b = max(span[0], lo), min(span[1], hi)
            if a >= b:
                return descend(e.args[2], lo, hi)
            return (descend(e.args[1], a, b) and descend(e.args[2], lo, a)
                    and descend(e.args[2], b, hi))
        if not isinstance(e, Load):
            return False
        ext = {**extents, var: range(lo, hi)}
        if any(make_bound(bd.e, bd.lo, bd.hi, bd.step, ext) is not True for bd in e.mask):
            return False
        out.append((lo, hi, Load(e.buffer, e.index, (), e.dtype)))
        return True

    if not descend(value, 0, extent) or not out:
        return None
    out.sort(key=lambda p: p[0])
    first = out[0][2]
    coefs = [top_coefficient(i, var) for i in first.index]
    if any(c is None for c in coefs) or not any(coefs):
        return None
    for (lo, hi, load), nxt in zip(out, out[1:] + [(extent, extent, None)], strict=True):
        shift = lo - out[0][0]
        want = tuple(i - c * shift for i, c in zip(first.index, coefs, strict=True))
        if hi != nxt[0] or load.index != want or load.dtype != first.dtype:
            return None
    return [(lo, load) for lo, _hi, load in out]

