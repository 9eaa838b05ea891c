"""Emitting kernel-IR expressions as Triton source: loop variables, index arithmetic, loads,
scalar expressions and stores, placed at the right loop depth.

Note: depths and sections
-------------------------
A generated kernel is straight-line code at depth 0 with at most one loop level inside (the
reduction loop of a long-row reduction, the K loop of a template). The emitter keeps one line list
per open depth. Every loop variable has a definition and a depth (`VarDef`); an expression lives
at the deepest depth of the variables it uses, so anything that does not depend on the loop
variable is computed once before the loop (hoisting falls out of the bookkeeping). A line emitted
for depth 0 while a loop body is being built goes to depth 0's list, which is flushed before the
`for` header when the loop closes.

Each expression DAG node is emitted once per depth it is visible in (`memo`); closing a loop
forgets its entries. A *section* (one template operand) may redefine variables (`k` is a column
index for A and a row index for B): `set_vars` replaces definitions and forgets what depended on
them.

Masks: every variable names the mask tensor that bounds it (`xmask` for the flattened outer
domain, `rmask` for the reduction block, ...); a load or store is masked by the masks of the
variables in its index, its own bounds and the section's guard (a conv's padding predicate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
    walk,
)
from graphc.ir.types import TensorType

from .lowering import COMPUTE_DTYPE, TL_DTYPE, const_code, emit_op, round_to


@dataclass(frozen=True)
class VarDef:
    """A loop variable: its defining code (over `deps`), depth and bounding mask."""

    code: str
    depth: int
    mask: str | None = None
    deps: tuple[str, ...] = ()
    name: str | None = None  # the identifier in the source (default: the variable's name)


def compute_dtype(dtype: str) -> str:
    return COMPUTE_DTYPE.get(dtype, dtype)


class Emitter:
    """Builds the body of one `@triton.jit` function."""

    def __init__(self, types: Mapping[str, TensorType], ptr: Mapping[str, str],
                 extents: Mapping[str, int]) -> None:
        self.types = types          # buffer name -> type
        self.ptr = ptr              # buffer name -> pointer argument
        self.extents = dict(extents)
        self.blocks: list[list[str]] = [[]]
        self.memo: list[dict[object, str]] = [{}]
        self.defs: dict[str, VarDef] = {}
        self.refs: dict[str, str] = {}
        self.acc: str | None = None
        # (mask, depth[, zero tensor of the mask's shape]): ANDed into every load
        self.guard: tuple | None = None
        self.helpers: set[str] = set()
        self.count = 0
        self._depth_memo: dict[int, int] = {}
        self.aliases: list[tuple[Ix, str]] = []

    # -- lines and scopes ------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.blocks) - 1

    def line(self, text: str, depth: int | None = None) -> None:
        d = self.depth if depth is None else depth
        self.blocks[d].append(text)

    def comment(self, text: str) -> None:
        self.line(f"# {text}")

    def fresh(self, prefix: str = "t") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def open_loop(self) -> None:
        self.blocks.append([])
        self.memo.append({})

    def close_loop(self, header: str) -> None:
        body = self.blocks.pop()
        self.memo.pop()
        self.line(header)
        for text in body or ["pass"]:
            self.line("    " + text)

    def body(self) -> list[str]:
        assert self.depth == 0, "a loop was left open"
        return self.blocks[0]

    def use(self, helper: str) -> None:
        self.helpers.add(helper)

    # -- variables -----------------------------------------------------------------------------
    def set_vars(self, defs: Mapping[str, VarDef], extents: Mapping[str, int] | None = None
                 ) -> None:
        """Define (or redefine) loop variables; forget everything emitted from the old ones."""
        changed = [n for n in defs if n in self.defs and self.defs[n] != defs[n]]
        self.defs.update(defs)
        if extents:
            self.extents.update(extents)
        if changed:
            for memo in self.memo:
                for key in [k for k in memo if isinstance(k, tuple) and k[0] == "var"
                            and k[1] in changed]:
                    del memo[key]
            # expressions cannot tell which variables they came from: drop them all
            for memo in self.memo:
                for key in [k for k in memo if not isinstance(k, tuple)]:
                    del memo[key]
                for key in [k for k in memo if isinstance(k, tuple) and k[0] == "atom"]:
                    del memo[key]
        self._depth_memo.clear()

    def bind(self, name: str, ident: str, depth: int, mask: str | None = None) -> None:
        """Define loop variable `name` as the already emitted tensor `ident`."""
        self.set_vars({name: VarDef(ident, depth, mask, name=ident)})
        self.memo[depth][("var", name)] = ident

    def var(self, name: str) -> str:
        key = ("var", name)
        got = self._lookup(key)
        if got is not None:
            return got
        d = self.defs.get(name)
        if d is None:
            raise GraphError(f"triton codegen: loop variable {name!r} has no definition")
        for dep in d.deps:
            self.var(dep)
        ident = d.name or name
        self.line(f"{ident} = {d.code}", d.depth)
        self.memo[d.depth][key] = ident
        return ident

    def var_depth(self, name: str) -> int:
        return self.defs[name].depth

    def _lookup(self, key) -> str | None:
        for memo in reversed(self.memo):
            if key in memo:
                return memo[key]
        return None

    # -- index expressions ---------------------------------------------------------------------
    def ix_depth(self, e: Ix) -> int:
        return max((self.var_depth(v) for v in e.var_names()), default=0)

    def add_alias(self, pattern: Ix, name: str) -> None:
        """Print `pattern` (a flattened domain index, e.g. `i0*8 + i1`) as the tensor `name` it
        was split from (`xindex`): contiguous addresses stay visibly contiguous to Triton."""
        if len(pattern.terms) > 1 and not pattern.const:
            self.aliases.append((pattern, name))

    def _apply_aliases(self, e: Ix) -> tuple[Ix, list[str]]:
        found: list[str] = []
        for pat, name in self.aliases:
            coefs = dict(e.terms)
            a0, c0 = pat.terms[0]
            if a0 not in coefs or coefs[a0] % c0:
                continue
            f = coefs[a0] // c0
            if all(coefs.get(a) == c * f for a, c in pat.terms):
                e = e - pat * f
                found.append(name if f == 1 else f"{name} * {f}")
        return e, found

    def ix(self, e: Ix) -> str:
        """Source of an integer index expression (Python floor semantics preserved)."""
        e, parts = self._apply_aliases(e)
        for atom, c in e.terms:
            code = self.atom(atom)
            if c == 1:
                parts.append(code)
            elif c == -1:
                parts.append(f"-{code}")
            else:
                parts.append(f"{code} * {c}")
        if e.const or not parts:
            parts.append(str(e.const))
        text = parts[0]
        for p in parts[1:]:
            text += f" - {p[1:]}" if p.startswith("-") else f" + {p}"
        return text

    def atom(self, a) -> str:
        if isinstance(a, Var):
            return self.var(a.name)
        key = ("atom", a)
        got = self._lookup(key)
        if got is not None:
            return got
        arg = self.ix(a.arg)
        lo = ix_range(a.arg, self.extents)[0]
        shift = 0 if lo >= 0 else -(lo // a.d)  # make the dividend non-negative: C == floor
        base = f"({arg})" if not shift else f"({arg} + {shift * a.d})"
        if isinstance(a, FloorDiv):
            code = f"{base} // {a.d}" + (f" - {shift}" if shift else "")
        elif isinstance(a, Mod):
            code = f"{base} % {a.d}"
        else:
            raise GraphError(f"triton codegen: unknown index atom {a!r}")
        name = self.fresh("q")
        d = self.ix_depth(a.arg)
        self.line(f"{name} = {code}", d)
        self.memo[d][key] = name
        return name

    def bound(self, b: Bound) -> str | None:
        """Source of a bound predicate, or None when the variables' extents already imply it."""
        lo, hi = ix_range(b.e, self.extents)
        e = self.ix(b.e)
        conds = []
        if lo < b.lo:
            conds.append(f"({e} >= {b.lo})")
        if hi >= b.hi:
            conds.append(f"({e} < {b.hi})")
        if b.step != 1:
            conds.append(f"(({e} - {b.lo}) % {b.step} == 0)")
        return " & ".join(conds) if conds else None

    def masks_of(self, names: set[str]) -> list[str]:
        out = []
        for n in sorted(names):
            m = self.defs[n].mask
            if m is not None and m not in out:
                out.append(m)
        return out

    # -- expressions ---------------------------------------------------------------------------
    def expr_depth(self, e: Expr) -> int:
        got = self._depth_memo.get(id(e))
        if got is not None:
            return got
        for x in walk([e]):
            if id(x) in self._depth_memo:
                continue
            d = 0
            if isinstance(x, Load):
                d = max([self.ix_depth(i) for i in x.index] + [self.ix_depth(b.e) for b in x.mask]
                        + [self.guard[1] if self.guard else 0, 0])
            elif isinstance(x, IndexValue):
                d = self.ix_depth(x.index)
            elif isinstance(x, InBounds):
                d = max(self.ix_depth(b.e) for b in x.bounds)
            elif isinstance(x, RandomUniform):
                d = max(self._depth_memo[id(x.seed)], self.ix_depth(x.counter))
            elif isinstance(x, Op):
                d = max(self._depth_memo[id(a)] for a in x.args)
            self._depth_memo[id(x)] = d
        return self._depth_memo[id(e)]

    def expr(self, e: Expr) -> str:
        """A name (or literal) holding `e` in its compute dtype (f16/bf16 as f32)."""
        got = self._lookup(id(e))
        if got is not None:
            return got
        if isinstance(e, Const):
            return const_code(e.value, e.dtype)
        if isinstance(e, ReduceRef):
            return self.refs[e.name]
        if isinstance(e, Acc):
            if self.acc is None:
                raise GraphError("triton codegen: acc outside a template epilogue")
            return self.acc
        d = self.expr_depth(e)
        code = self._code(e)
        name = self.fresh("v" if isinstance(e, Load) else "t")
        self.line(f"{name} = {code}", d)
        self.memo[d][id(e)] = name
        return name

    def _code(self, e: Expr) -> str:
        if isinstance(e, Load):
            return self.load_code(e)
        if isinstance(e, IndexValue):
            if e.index.is_const:
                return const_code(e.index.const, e.dtype)
            return cast_index(self.ix(e.index), e.dtype)
        if isinstance(e, InBounds):
            conds = [c for c in (self.bound(b) for b in e.bounds) if c]
            return " & ".join(conds) if conds else "tl.full([], 1, tl.int1)"
        if isinstance(e, Op):
            args = [self.expr(a) for a in e.args]
            consts = [float(a.value) if isinstance(a, Const) and a.dtype != "bool" else None
                      for a in e.args]
            code = emit_op(e.op, args, [a.dtype for a in e.args], e.dtype, dict(e.attrs),
                           self.use, consts)
            if e.op != "cast" and e.dtype in ("f16", "bf16"):
                code = round_to(f"({code})", e.dtype, self.use)
            return code
        if isinstance(e, RandomUniform):
            self.use("_philox_uniform")
            seed = self.expr(e.seed)
            counter = (const_code(e.counter.const, "i64") if e.counter.is_const
                       else self.ix(e.counter))
            return f"_philox_uniform({counter}, {seed}, {e.stream})"
        raise GraphError(f"triton codegen: unknown expression {e!r}")

    # -- memory --------------------------------------------------------------------------------
    def offset(self, buffer: str, index: tuple[Ix, ...]) -> Ix:
        shape = self.types[buffer].shape
        if len(index) != len(shape):
            raise GraphError(f"triton codegen: %{buffer} {shape} indexed with {len(index)} "
                             f"indices")
        return linearize(index, shape)

    def load_code(self, e: Load, native: bool = False) -> str:
        """`tl.load` of `e` (converted to its compute dtype unless `native`)."""
        off = self.offset(e.buffer, e.index)
        ptr = self.ptr[e.buffer]
        conds = [c for c in (self.bound(b) for b in e.mask) if c]
        if off.is_const:
            size = self.types[e.buffer].size
            if not 0 <= off.const < max(size, 1):
                return const_code(0, e.dtype)
            code = f"tl.load({ptr} + {off.const})" if off.const else f"tl.load({ptr})"
            code = self._convert(code, e.dtype, native)
            if conds or self.guard:
                conds += [self.guard[0]] if self.guard else []
                return f"tl.where({' & '.join(conds)}, {code}, 0)"
            return code
        bound_vars = {v for b in e.mask for v in b.e.var_names()}
        names = off.var_names() | bound_vars
        conds = self.masks_of(names) + conds + ([self.guard[0]] if self.guard else [])
        mask = " & ".join(conds)
        target = f"{ptr} + ({self.ix(off)})"
        extra = bound_vars - off.var_names()
        if extra:  # the mask varies along axes the address does not: give the pointer them too
            target += f" + ({self.ix(Ix.of((Var(v), 1) for v in sorted(extra)))}) * 0"
        if self.guard and len(self.guard) > 2:
            target += f" + {self.guard[2]}"
        other = "0.0" if e.dtype in ("f32", "f64", "f16", "bf16") else "0"
        code = (f"tl.load({target}, mask={mask}, other={other})" if mask
                else f"tl.load({target})")
        return self._convert(code, e.dtype, native)

    @staticmethod
    def _convert(code: str, dtype: str, native: bool) -> str:
        if not native and dtype in COMPUTE_DTYPE:
            return f"{code}.to({TL_DTYPE[COMPUTE_DTYPE[dtype]]})"
        return code

    def store(self, buffer: str, index: tuple[Ix, ...], value: str, value_dtype: str,
              full: str, extra_mask: str | None = None, always_full: bool = False) -> None:
        """`tl.store` of `value` at `buffer[index]`; `full` is a zero int tensor of the store's
        shape, added when the index alone would not give the pointer that shape (a constant
        index; in a template tile, any index that skips a tile axis of extent 1)."""
        off = self.offset(buffer, index)
        ptr = self.ptr[buffer]
        names = off.var_names()
        conds = self.masks_of(names)
        if extra_mask:
            conds.append(extra_mask)
        if off.is_const:
            target = f"{ptr} + {full} + {off.const}" if off.const else f"{ptr} + {full}"
        else:
            target = f"{ptr} + ({self.ix(off)})" + (f" + {full}" if always_full else "")
        dt = self.types[buffer].dtype
        if compute_dtype(dt) != dt or dt != compute_dtype(value_dtype):
            value = f"{value}.to({TL_DTYPE[dt]})"
        mask = " & ".join(dict.fromkeys(c for cond in conds for c in cond.split(" & ")))
        self.line(f"tl.store({target}, {value}, mask={mask})" if mask
                  else f"tl.store({target}, {value})")


def cast_index(code: str, dtype: str) -> str:
    """An index value as `dtype` (iota)."""
    if dtype == "bool":
        return f"(({code}) != 0)"
    return f"({code}).to({TL_DTYPE[compute_dtype(dtype)]})" if dtype not in ("f16", "bf16") \
        else f"({code}).to(tl.float32)"


PHILOX_SOURCE = '''
@triton.jit
def _philox_uniform(counter, seed, stream: tl.constexpr):
    # random_uniform at element `counter`: Philox4x32-10 of (counter lo, counter hi, stream, 0)
    # keyed by the seed's two's complement words; (first word >> 8) * 2**-24 (ir/ops/random.py)
    c = counter.to(tl.int64)
    s = seed.to(tl.int64)
    c0 = (c & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((c >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c2 = (c0 * 0 + stream).to(tl.uint32)
    c3 = c0 * 0
    k0 = (s & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((s >> 32) & 0xFFFFFFFF).to(tl.uint32)
    for _ in tl.static_range(10):
        a0 = c0
        a2 = c2
        c0 = tl.umulhi(a2, 0xCD9E8D57) ^ c1 ^ k0
        c2 = tl.umulhi(a0, 0xD2511F53) ^ c3 ^ k1
        c1 = a2 * 0xCD9E8D57
        c3 = a0 * 0xD2511F53
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return (c0 >> 8).to(tl.float32) * 5.9604644775390625e-08
'''
