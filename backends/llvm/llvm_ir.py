"""LLVM IR construction pieces shared by the CPU code generators: dtypes, intrinsics, loops.

* `llvm_type("f32")` maps graphc dtypes to llvmlite types; `vector(ty, lanes)` widens them.
* `intrinsic(module, "llvm.fmuladd", ty)` declares an overloaded intrinsic by hand, once per
  module (llvmlite's `declare_intrinsic` produced signatures the verifier rejected).
* `emit_loop` / `for_range` emit counted loops; `emit_loop` threads loop-carried values
  (accumulators) through phis so they stay in registers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from llvmlite import ir

from graphc.ir.errors import DTypeError

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
VOID = ir.VoidType()
PTR = ir.PointerType(I8)  # printed as i8*; LLVM reads every pointer as the opaque `ptr`

_DTYPES = {"f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I1}


def llvm_type(dtype: str) -> ir.Type:
    """The scalar llvmlite type of a graphc dtype ("f32", "f64", "i32", "i64", "bool")."""
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise DTypeError(f"the LLVM backend has no type for dtype {dtype!r} "
                         f"(supported: {', '.join(_DTYPES)})") from None


def vector(ty: ir.Type, lanes: int) -> ir.Type:
    """`ty` itself for lanes == 1, else `<lanes x ty>`."""
    return ty if lanes == 1 else ir.VectorType(ty, lanes)


def scalar_of(ty: ir.Type) -> ir.Type:
    return ty.element if isinstance(ty, ir.VectorType) else ty


def lanes_of(ty: ir.Type) -> int:
    return ty.count if isinstance(ty, ir.VectorType) else 1


def decode_row_major(b: ir.IRBuilder, linear: ir.Value, dims: list[tuple[str, int]]
                     ) -> dict[str, ir.Value]:
    """{name: index} of the row-major position `linear` over `dims` ((name, extent) pairs,
    outermost first; the first extent bounds nothing, so it is not reduced)."""
    env: dict[str, ir.Value] = {}
    for pos in range(len(dims) - 1, -1, -1):
        name, n = dims[pos]
        if pos == 0:
            env[name] = linear
        else:
            env[name] = b.urem(linear, ir.Constant(I64, n))
            linear = b.udiv(linear, ir.Constant(I64, n))
    return env


def vsplat(b: ir.IRBuilder, x: ir.Value, lanes: int) -> ir.Value:
    """<lanes x T> with every lane the run-time value x (insertelement + zero shuffle: a
    broadcast)."""
    vty = ir.VectorType(x.type, lanes)
    v = b.insert_element(ir.Constant(vty, None), x, ir.Constant(I32, 0))
    return b.shuffle_vector(v, ir.Constant(vty, None),
                            ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def lane_tree(b: ir.IRBuilder, v: ir.Value, combine) -> ir.Value:
    """v's lanes combined by halves (`combine(lo, hi)` on the two halves until one lane is
    left): a fixed order, so the same result on any thread count."""
    width = v.type.count
    while width > 1:
        half = width // 2
        lo = b.shuffle_vector(v, ir.Constant(v.type, None),
                              ir.Constant(ir.VectorType(I32, half), list(range(half))))
        hi = b.shuffle_vector(v, ir.Constant(v.type, None),
                              ir.Constant(ir.VectorType(I32, half), list(range(half, width))))
        v, width = combine(lo, hi), half
    return b.extract_element(v, ir.Constant(I32, 0))


def lane_sums(b: ir.IRBuilder, vectors: list[ir.Value]) -> list[ir.Value]:
    """The sum of each vector's lanes, as scalars: vectors are paired and each pair's halves
    of every block added across (two shuffles and one add give a vector holding both
    partial sums), halving the block width each round, until every lane holds one whole sum;
    an odd one out is paired with zeros. About 3 instructions per vector for 16 lanes, where
    `lane_tree` takes 8 each. A fixed order: the same result on any thread count."""
    n = len(vectors)
    if n == 0:
        return []
    vty = vectors[0].type
    lanes = vty.count
    zero = splat(vty, 0.0)
    # each entry: (vector, owners) where owners[j] is the vector index whose partial sum
    # lane j holds; a block of width w holds w partial sums of one vector
    cur = [(v, [i] * lanes) for i, v in enumerate(vectors)]
    width = lanes
    while width > 1:
        half = width // 2
        nxt = []
        for k in range(0, len(cur), 2):
            a, oa = cur[k]
            c, oc = cur[k + 1] if k + 1 < len(cur) else (zero, [-1] * lanes)
            lo, hi, owners = [], [], []
            for blk in range(0, lanes, width):
                lo += [blk + j for j in range(half)] + [lanes + blk + j for j in range(half)]
                hi += [blk + half + j for j in range(half)] + \
                      [lanes + blk + half + j for j in range(half)]
                owners += oa[blk:blk + half] + oc[blk:blk + half]
            p = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(I32, lanes), lo))
            q = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(I32, lanes), hi))
            nxt.append((b.fadd(p, q), owners))
        cur, width = nxt, half
    out: list[ir.Value | None] = [None] * n
    for v, owners in cur:
        for j, i in enumerate(owners):
            if i >= 0 and out[i] is None:
                out[i] = b.extract_element(v, ir.Constant(I32, j))
    return out


def splat(ty: ir.Type, value) -> ir.Constant:
    """A constant of `ty` (scalar or vector) with every lane equal to `value`."""
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [ir.Constant(ty.element, value)] * ty.count)
    return ir.Constant(ty, value)


def type_suffix(ty: ir.Type) -> str:
    """LLVM's overload suffix: f32, f64, i32, v16f32, p0 ..."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{type_suffix(ty.element)}"
    if isinstance(ty, ir.PointerType):
        return "p0"
    if isinstance(ty, ir.FloatType):
        return "f32"
    if isinstance(ty, ir.DoubleType):
        return "f64"
    if isinstance(ty, ir.IntType):
        return f"i{ty.width}"
    raise TypeError(f"no intrinsic suffix for {ty}")


# Intrinsics whose signature is ret(arg x n) over one overloaded type.
_SAME_TYPE_INTRINSICS = {
    "llvm.fmuladd": 3, "llvm.fma": 3, "llvm.sqrt": 1, "llvm.fabs": 1, "llvm.floor": 1,
    "llvm.ceil": 1, "llvm.trunc": 1, "llvm.rint": 1, "llvm.roundeven": 1, "llvm.copysign": 2,
    "llvm.minnum": 2, "llvm.maxnum": 2, "llvm.minimum": 2, "llvm.maximum": 2,
    "llvm.smax": 2, "llvm.smin": 2, "llvm.umin": 2, "llvm.umax": 2, "llvm.exp": 1, "llvm.log": 1,
}


def intrinsic(module: ir.Module, base: str, ty: ir.Type) -> ir.Function:
    """Declare (once) the overloaded intrinsic `base` for type `ty`, e.g. llvm.fmuladd.v16f32."""
    nargs = _SAME_TYPE_INTRINSICS[base]
    return declare(module, f"{base}.{type_suffix(ty)}", ty, [ty] * nargs)


def declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    """Get function `name` from `module`, declaring it with the given signature if absent."""
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, list(args)), name=name)
    return fn


def masked_load(builder: ir.IRBuilder, ptr: ir.Value, mask: ir.Value, vty: ir.VectorType,
                passthru: ir.Value | None = None, align: int = 4) -> ir.Value:
    """`llvm.masked.load`: lanes whose mask bit is 0 read nothing and yield `passthru` (0)."""
    module = builder.module
    fn = declare(module, f"llvm.masked.load.{type_suffix(vty)}.p0", vty,
                 [ptr.type, I32, mask.type, vty])
    passthru = passthru if passthru is not None else splat(vty, 0)
    return builder.call(fn, [ptr, ir.Constant(I32, align), mask, passthru])


def masked_store(builder: ir.IRBuilder, value: ir.Value, ptr: ir.Value, mask: ir.Value,
                 align: int = 4) -> None:
    """`llvm.masked.store`: only lanes whose mask bit is 1 are written."""
    fn = declare(builder.module, f"llvm.masked.store.{type_suffix(value.type)}.p0", VOID,
                 [value.type, ptr.type, I32, mask.type])
    builder.call(fn, [value, ptr, ir.Constant(I32, align), mask])


def prefetch(builder: ir.IRBuilder, ptr: ir.Value, write: bool = False,
             locality: int = 3) -> None:
    """`llvm.prefetch` of the data cache line holding `ptr`; an address outside any mapping is
    harmless (the hint is dropped), so callers need not bound-check what they prefetch."""
    fn = declare(builder.module, "llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])
    builder.call(fn, [builder.bitcast(ptr, PTR), ir.Constant(I32, int(write)),
                      ir.Constant(I32, locality), ir.Constant(I32, 1)])


def vector_ptr(builder: ir.IRBuilder, base: ir.Value, index: ir.Value, vty: ir.Type) -> ir.Value:
    """Pointer to the vector of `vty` starting at element `index` of `base` (element pointer)."""
    return builder.bitcast(builder.gep(base, [index]), vty.as_pointer())


def emit_loop(builder: ir.IRBuilder, start: ir.Value, stop: ir.Value,
              body: Callable[[ir.IRBuilder, ir.Value, list[ir.Value]], Sequence[ir.Value]],
              carried: Sequence[ir.Value] = (), step: int | ir.Value = 1,
              name: str = "loop") -> list[ir.Value]:
    """Emit `for (i = start; i < stop; i += step)` with loop-carried values.

    `body(builder, i, values)` emits one iteration and returns the next values (same types as
    `carried`). The loop is guarded (no iteration when start >= stop). Returns the values after
    the loop; the builder is left positioned after the loop.
    """
    ity = start.type
    step_v = step if isinstance(step, ir.Value) else ir.Constant(ity, step)
    pre = builder.block
    header = builder.append_basic_block(f"{name}.body")
    exit_ = builder.append_basic_block(f"{name}.exit")
    builder.cbranch(builder.icmp_signed("<", start, stop), header, exit_)
    builder.position_at_end(header)
    i = builder.phi(ity, name=f"{name}.i")
    i.add_incoming(start, pre)
    phis = []
    for k, v in enumerate(carried):
        p = builder.phi(v.type, name=f"{name}.c{k}")
        p.add_incoming(v, pre)
        phis.append(p)
    nxt = list(body(builder, i, list(phis)))
    if len(nxt) != len(phis):
        raise ValueError(f"{name}: body returned {len(nxt)} values for {len(phis)} carried")
    latch = builder.block
    i_next = builder.add(i, step_v, name=f"{name}.next")
    i.add_incoming(i_next, latch)
    for p, v in zip(phis, nxt, strict=True):
        p.add_incoming(v, latch)
    builder.cbranch(builder.icmp_signed("<", i_next, stop), header, exit_)
    builder.position_at_end(exit_)
    outs = []
    for k, (p, v) in enumerate(zip(phis, nxt, strict=True)):
        out = builder.phi(p.type, name=f"{name}.out{k}")
        out.add_incoming(carried[k], pre)
        out.add_incoming(v, latch)
        outs.append(out)
    return outs


def no_vectorize_metadata(module: ir.Module) -> ir.MDValue:
    """Loop metadata that keeps LLVM's loop vectorizer off a loop (the SLP vectorizer still
    widens its body): `!N = !{!N, !{"llvm.loop.vectorize.enable", i1 false}}`."""
    flag = module.add_metadata([ir.MetaDataString(module, "llvm.loop.vectorize.enable"),
                                ir.Constant(ir.IntType(1), 0)])
    # Created with a placeholder that makes it unique (llvmlite shares equal nodes), then
    # pointed at itself: a loop's ID must be its own.
    node = module.add_metadata([flag, ir.MetaDataString(module, f"loop{len(module.metadata)}")])
    node.operands = (node, flag)
    return node


@contextmanager
def for_range(builder: ir.IRBuilder, start: ir.Value, stop: ir.Value,
              step: int | ir.Value = 1, name: str = "loop",
              vectorize: bool = True) -> Iterator[ir.Value]:
    """`with for_range(b, lo, hi) as i:` emits the with-block as the body of a counted loop
    (`vectorize=False`: one the loop vectorizer leaves alone)."""
    ity = start.type
    step_v = step if isinstance(step, ir.Value) else ir.Constant(ity, step)
    pre = builder.block
    header = builder.append_basic_block(f"{name}.body")
    exit_ = builder.append_basic_block(f"{name}.exit")
    builder.cbranch(builder.icmp_signed("<", start, stop), header, exit_)
    builder.position_at_end(header)
    i = builder.phi(ity, name=f"{name}.i")
    i.add_incoming(start, pre)
    yield i
    i_next = builder.add(i, step_v, name=f"{name}.next")
    i.add_incoming(i_next, builder.block)
    latch = builder.cbranch(builder.icmp_signed("<", i_next, stop), header, exit_)
    if not vectorize:
        latch.set_metadata("llvm.loop", no_vectorize_metadata(builder.module))
    builder.position_at_end(exit_)


def alloca_at_entry(builder: ir.IRBuilder, ty: ir.Type, name: str = "") -> ir.Value:
    """Stack slot in the function's entry block (an alloca inside a loop would grow the stack
    on every iteration)."""
    here = builder.block
    entry = builder.function.entry_basic_block
    builder.position_at_start(entry)
    slot = builder.alloca(ty, name=name)
    builder.position_at_end(here)
    return slot


def ceil_div(builder: ir.IRBuilder, a: ir.Value, b: ir.Value | int) -> ir.Value:
    """(a + b - 1) / b for non-negative integers."""
    b = b if isinstance(b, ir.Value) else ir.Constant(a.type, b)
    return builder.sdiv(builder.sub(builder.add(a, b), ir.Constant(a.type, 1)), b)


def smin(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    return builder.select(builder.icmp_signed("<", a, b), a, b)


def smax(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def if_update(b: ir.IRBuilder, cond: ir.Value, vals: Sequence[ir.Value],
               update: Callable[[ir.IRBuilder, list], list]) -> list:
    """vals if not cond else update(vals), as a branch and phis (no work when cond is false)."""
    before = b.block
    then = b.append_basic_block("then")
    join = b.append_basic_block("join")
    b.cbranch(cond, then, join)
    b.position_at_end(then)
    new = update(b, list(vals))
    then_end = b.block
    b.branch(join)
    b.position_at_end(join)
    out = []
    for old, nv in zip(vals, new, strict=True):
        phi = b.phi(old.type)
        phi.add_incoming(old, before)
        phi.add_incoming(nv, then_end)
        out.append(phi)
    return out
