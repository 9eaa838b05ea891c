"""The op matrix: small graphs (one case per primitive, fused combinations, composites and the
example models) with inputs, shared by every backend's differential tests against the graph
reference.

    from tests.backends.op_matrix import OP_MATRIX, case_inputs, case_schedule, reference
    for case in OP_MATRIX:
        inputs = case_inputs(case)
        want = reference(case, inputs)
        got = my_backend(case_schedule(case), {**inputs, **case.graph().param_values})

Shapes are tiny (interpreters run them). A case's `tags` say what it exercises: "model",
"f16"/"bf16"/"f64", "long-row" (a reduction row longer than an interpreter block when a test
lowers `max_rblock`), "random", "atomic" (scatter with duplicate indices), "library".
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.graph import Graph
from graphc.ir.kernel import Schedule
from graphc.ir.types import DTYPES, round_to_dtype

from .random_graphs import (
    random_conv_graph,
    random_graph,
    random_sequence_graph,
    with_gradients,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _concat_rows(x, n: int, axis: int):
    """concat of the n unit slices of x along `axis`, in the order 0, 7, 14, ... (mod n)."""
    pieces = []
    for k in range(n):
        p = (7 * k) % n
        start = [0] * x.ndim
        start[axis] = p
        stop = list(x.shape)
        stop[axis] = p + 1
        pieces.append(x.builder.op("slice", x, start=tuple(start), stop=tuple(stop),
                                         step=(1,) * x.ndim))
    return x.builder.op("concat", *pieces, axis=axis)


@dataclass(frozen=True)
class Case:
    """One differential test: a graph builder, optional input maker and tolerances."""

    name: str
    build: Callable[[], Graph]
    make_inputs: Callable[[np.random.Generator], dict[str, np.ndarray]] | None = None
    rtol: float = 2e-5
    atol: float = 2e-5
    tags: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)

    @functools.cache  # noqa: B019 - cases are module-level singletons
    def graph(self) -> Graph:
        return self.build()


def case_inputs(case: Case) -> dict[str, np.ndarray]:
    """Deterministic inputs: the case's own maker, else from the graph's input types (floats
    standard normal, integers in [0, 4), bools fair coins)."""
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    if case.make_inputs is not None:
        return case.make_inputs(rng)
    out = {}
    for v in case.graph().inputs:
        t = v.type
        name = v.node.attrs["name"]
        if t.dtype == "bool":
            out[name] = rng.random(t.shape) < 0.5
        elif t.dtype in ("i32", "i64"):
            out[name] = rng.integers(0, 4, t.shape).astype(DTYPES[t.dtype])
        else:
            a = rng.standard_normal(t.shape).astype(np.float32)
            out[name] = round_to_dtype(a, t.dtype)
    return out


def reference(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The graph reference (the oracle) on `inputs` and the graph's own parameter values."""
    return run_graph(case.graph(), inputs)


def case_schedule(case: Case, fuse: bool = True, plan: bool = True) -> Schedule:
    """decompose -> fuse -> plan_memory: the schedule every backend compiles."""
    from graphc.passes import decompose
    from graphc.passes.fuse import fuse as fuse_pass
    from graphc.passes.memory import plan_memory

    s = fuse_pass(decompose(case.graph()), fuse=fuse)
    return plan_memory(s) if plan else s


def assert_close(case: Case, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want), f"{case.name}: outputs {sorted(got)} != {sorted(want)}"
    for k, w in want.items():
        g = np.asarray(got[k])
        assert g.shape == w.shape, f"{case.name}.{k}: shape {g.shape} != {w.shape}"
        if w.dtype == np.bool_ or w.dtype.kind in "iu" or "exact" in case.tags:
            np.testing.assert_array_equal(g, w, err_msg=f"{case.name}.{k}")
        else:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64),
                                       rtol=case.rtol, atol=case.atol, err_msg=f"{case.name}.{k}")


# -- builders --------------------------------------------------------------------------------------


def _graph(name: str, fn: Callable[[Builder], dict], seed: int = 0) -> Callable[[], Graph]:
    def build() -> Graph:
        b = Builder(name, seed=seed)
        return b.build(outputs=fn(b))
    return build


def unary(op: str, shape=(3, 5), dtype="f32", **attrs) -> Callable[[], Graph]:
    return _graph(op, lambda b: {"y": b.op(op, b.input("x", shape, dtype), **attrs)})


def binary(op: str, sa=(4, 1, 5), sb=(3, 5), dtype="f32") -> Callable[[], Graph]:
    return _graph(op, lambda b: {"y": b.op(op, b.input("a", sa, dtype), b.input("b", sb, dtype))})


def positive(*names: str, shape=(3, 5), dtype=np.float32, lo=0.1):
    def make(rng):
        return {n: (np.abs(rng.standard_normal(shape)) + lo).astype(dtype) for n in names}
    return make


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"graphc_example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, mod)
    spec.loader.exec_module(mod)
    return mod


# -- the cases -------------------------------------------------------------------------------------

UNARY_CASES = [
    Case(f"unary.{op}", unary(op), positive("x") if op in ("log", "sqrt", "rsqrt") else None)
    for op in ("neg", "abs", "exp", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "sigmoid",
               "tanh", "relu", "softplus", "sign")
]
UNARY_CASES[4] = Case("unary.log1p", unary("log1p"),
                      lambda r: {"x": r.uniform(-0.9, 3.0, (3, 5)).astype(np.float32)})
# Both of erf's branches (|x| below and above 1), the clamp (|x| >= 4: ±1) and zeros.
_ERF_X = np.array([0.0, -0.0, 1e-30, -0.3, 0.999, 1.0, -1.5, 2.5, -3.9, 4.5, -12.0, 0.75],
                  np.float64)
# Rounding: ties to even for round, halves, values near 2^23 and past it, signed zeros.
_ROUND_X = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 8388609.0,
                     -8388607.5, 1e10, -0.0, 3.0, -7.25, 0.7, -0.2], np.float64)
for _op in ("floor", "ceil", "round"):
    UNARY_CASES.append(Case(f"unary.{_op}", unary(_op, shape=(4, 16)), lambda r: {
        "x": np.concatenate([_ROUND_X[None], r.uniform(-6, 6, (3, 16))]).astype(np.float32)},
        atol=0.0, rtol=0.0))
UNARY_CASES.append(Case("unary.erf", unary("erf", shape=(5, 12)), lambda r: {
    "x": np.concatenate([_ERF_X[None], r.uniform(-4.5, 4.5, (4, 12))]).astype(np.float32)}))
# sin/cos: signed zeros, multiples of π/2 and their neighbours, every magnitude up to the
# largest float (the LLVM mathlib's table reduction starts at 2^45), ±inf (NaN) and NaN.
_TRIG_X = np.array([0.0, -0.0, 1e-30, np.pi / 4, np.pi / 2, -np.pi, 3 * np.pi / 2, 1e4 * np.pi,
                    -355.0, 2.0 ** 45 - 1, 2.0 ** 45, -3.0e7, 1e22, 3.4e38, -1e30, np.inf,
                    -np.inf, np.nan], np.float64)


def _trig_inputs(dtype):
    def make(r):
        big = np.exp(r.uniform(0, np.log(3e38 if dtype == np.float32 else 1e300), 18))
        return {"x": np.stack([_TRIG_X, r.uniform(-8, 8, 18), big * r.choice([-1, 1], 18)]
                              ).astype(dtype)}
    return make


UNARY_CASES.append(Case("unary.atan", unary("atan", shape=(3, 18)), _trig_inputs(np.float32),
                        rtol=2e-6, atol=1e-7))
for _op in ("sin", "cos"):
    UNARY_CASES.append(Case(f"unary.{_op}", unary(_op, shape=(3, 18)), _trig_inputs(np.float32),
                            rtol=2e-6, atol=1e-7))

def _pow_operands(b: Builder) -> dict:
    a, bb = b.input("a", (2, 4)), b.input("b", (2, 4))
    return {"y": b.op("pow", a, b.input("e", ())), "z": b.op("pow", b.input("s", ()), bb),
            "w": b.op("pow", a, b.const(np.float32(np.inf))),
            "v": b.op("pow", b.const(np.float32(-2.0)), bb)}


BINARY_CASES = [Case(f"binary.{op}", binary(op)) for op in
                ("add", "sub", "mul", "div", "maximum", "minimum")] + [
    Case("binary.pow", binary("pow", (3, 5), (3, 5)),
         lambda r: {"a": (np.abs(r.standard_normal((3, 5))) + 0.2).astype(np.float32),
                    "b": r.uniform(-2, 3, (3, 5)).astype(np.float32)}, rtol=1e-5),
    Case("binary.pow_specials", binary("pow", (2, 6), (2, 6)), lambda r: {
        "a": np.array([[-np.inf, -np.inf, -np.inf, -2.0, 0.0, np.nan],
                       [np.inf, -0.0, -1.0, -1.0, 1.0, 4.0]], np.float32),
        "b": np.array([[0.5, 3.0, -1.5, 0.5, -1.0, 0.0],
                       [-0.5, -3.0, np.inf, 2.0, np.nan, -0.5]], np.float32)}),
    Case("binary.pow_negative_base", _graph("powneg", lambda b: {
        "y": b.op("pow", b.input("a", (2, 4)), b.const(np.array([2.0, 3.0, -1.0, 0.0],
                                                                np.float32)))})),
    # scalar constant exponents (fractional, odd, even, negative, zero) on signed bases,
    # zeros, infinities and NaN: the backends specialize them at compile time
    Case("binary.pow_scalar_exponents", _graph("powc", lambda b: (lambda a: {
        f"y{i}": b.op("pow", a, e) for i, e in enumerate((0.75, 3.0, -2.0, 0.0, -1.5, 1.0, 2.0,
                                                            4.0))})(
        b.input("a", (2, 8)))), lambda r: {"a": np.concatenate([
            np.array([[0.0, -0.0, np.inf, -np.inf, np.nan, -2.0, 1.5, -0.5]]),
            r.uniform(-3, 3, (1, 8))]).astype(np.float32)}, rtol=1e-5, atol=1e-6),
    # a scalar operand fed at run time, against a block of the other (signed zeros included),
    # and constant operands the backends cannot specialize
    Case("binary.pow_scalar_operand", _graph("pows", _pow_operands), lambda r: {
        "a": np.array([[0.0, -0.0, -2.0, 1.5], [-0.5, 3.0, np.inf, -1.0]], np.float32),
        "e": np.array(3.0, np.float32), "s": np.array(-0.0, np.float32),
        "b": np.array([[3.0, 2.0, -1.0, 0.5], [1.0, 0.0, -3.0, 5.0]], np.float32)},
        rtol=1e-5, atol=1e-6),
]
COMPARE_CASES = [Case(f"compare.{op}", _graph(op, lambda b, op=op: {
    "y": b.op(op, b.input("a", (3, 5)), b.input("b", (5,)))}),
    lambda r: {"a": r.integers(-2, 3, (3, 5)).astype(np.float32),
               "b": r.integers(-2, 3, (5,)).astype(np.float32)})
    for op in ("eq", "ne", "lt", "le", "gt", "ge")]

ELEMENTWISE_MORE = [
    Case("select", _graph("select", lambda b: {
        "y": b.op("select", b.input("c", (3, 5), "bool"), b.input("a", (3, 5)),
                  b.input("b", (1, 5)))})),
    Case("cast.f32_to_f16", _graph("f16c", lambda b: {"y": b.input("x", (64,)).astype("f16")}),
         tags=("f16", "exact")),
    Case("cast.f32_to_bf16", _graph("bf16", lambda b: {
        "y": (b.input("x", (64,)) * 3.3).astype("bf16")}), tags=("bf16", "exact")),
    Case("cast.f16_chain", _graph("f16", lambda b: {
        "y": (b.input("x", (4, 8), "f16").exp() * b.input("z", (8,), "f16")).astype("f32")}),
        rtol=2e-3, atol=2e-3, tags=("f16",)),
    Case("cast.bf16_chain", _graph("bf16c", lambda b: {
        "y": b.input("x", (4, 8), "bf16").tanh() + b.input("z", (4, 8), "bf16")}),
        rtol=1e-2, atol=1e-2, tags=("bf16",)),
    Case("cast.bf16_scalars", _graph("bf16s", lambda b: {  # a 0-d bf16 constant and result
        "y": b.op("weight_decay", b.input("x", (4, 8), "bf16"), b.input("z", (3,), "bf16"),
                  lam=0.3) * b.const(1.7, dtype="bf16")}),
        rtol=2e-2, atol=1e-2, tags=("bf16",)),
    Case("cast.f32_to_i32", _graph("toint", lambda b: {
        "y": (b.input("x", (3, 5)) * 4.0).astype("i32")})),
    Case("cast.i64_to_f32", _graph("tof", lambda b: {
        "y": b.input("x", (3, 5), "i64").astype("f32") / 3.0})),
    Case("cast.bool_roundtrip", _graph("boolc", lambda b: {
        "y": b.input("x", (3, 5)).astype("bool").astype("f32"),
        "z": b.input("m", (3, 5), "bool").astype("i32")}),
        lambda r: {"x": r.integers(-1, 2, (3, 5)).astype(np.float32),
                   "m": r.random((3, 5)) < 0.5}),
    Case("int.arith", _graph("ints", lambda b: {
        "y": b.op("div", b.input("a", (3, 5), "i32") * 3 - 7, b.input("b", (3, 5), "i32")),
        "z": b.op("maximum", b.input("c", (3, 5), "i64"), b.input("d", (5,), "i64")).abs()}),
        lambda r: {"a": r.integers(-9, 9, (3, 5)).astype(np.int32),
                   "b": r.choice([-3, -2, 2, 5], (3, 5)).astype(np.int32),
                   "c": r.integers(-9, 9, (3, 5)), "d": r.integers(-9, 9, (5,))}),
    Case("int.bitwise", _graph("bits", lambda b: (lambda a, c, d: {
        "y": b.op("bitwise_xor", b.op("bitwise_and", a, b.input("m", (37,), "i32")),
                  b.op("bitwise_not", a)),
        "z": b.op("bitwise_or", c, d) * 2 + b.op("bitwise_and", c, b.op("bitwise_not", d))})(
        b.input("a", (3, 37), "i32"), b.input("c", (2, 3, 5), "i64"), b.input("d", (3, 1), "i64"))),
        lambda r: {"a": r.integers(-2 ** 31, 2 ** 31 - 1, (3, 37)).astype(np.int32),
                   "m": r.integers(-2 ** 31, 2 ** 31 - 1, (37,)).astype(np.int32),
                   "c": r.integers(-2 ** 40, 2 ** 40, (2, 3, 5)),
                   "d": r.integers(-2 ** 40, 2 ** 40, (3, 1))}),
    Case("f64.chain", _graph("f64", lambda b: (lambda x, z: {
        "y": (x.tanh() * z).sigmoid() + x.softplus() * 0.1 + x.log1p().abs()})(
        b.input("x", (3, 5), "f64"), b.input("z", (3, 5), "f64"))),
        rtol=1e-7, atol=1e-9, tags=("f64",)),
    Case("f64.erf", unary("erf", shape=(5, 12), dtype="f64"), lambda r: {
        "x": np.concatenate([_ERF_X[None], r.uniform(-6.5, 6.5, (4, 12))])},
        rtol=1e-15, atol=0.0, tags=("f64",)),
    *[Case(f"f64.{op}", unary(op, shape=(3, 18), dtype="f64"), _trig_inputs(np.float64),
           rtol=1e-15, atol=1e-300, tags=("f64",)) for op in ("sin", "cos", "atan")],
    # 2^52 + 1 and beyond are integers already; round's f64 path adds 2^52 below that
    Case("f64.round", unary("round", shape=(2, 16), dtype="f64"), lambda r: {
        "x": np.stack([_ROUND_X, np.array([2.0 ** 52 + 1, -(2.0 ** 52) + 0.5, 2.0 ** 51 + 0.5,
                                           -(2.0 ** 51) - 1.5, 1e300, 4.5, -3.5, 1.0 - 2 ** -53,
                                           0.5 + 2 ** -53, 7.5, -6.5, 1e-300, 2.5, 3.5, 0.0,
                                           -1.0])])}, rtol=0.0, atol=0.0, tags=("f64",)),
    Case("fused.chain8", _graph("chain", lambda b: (lambda x, z: {
        "y": ((x * 1.5 + 0.25).exp() - z).relu().sqrt() * x.sigmoid()})(
        b.input("x", (6, 7)), b.input("z", (7,)))), rtol=1e-5),
    # a quotient by a square root of 0 or inf: ±inf and 0, as numpy (no estimate's NaN)
    Case("fused.div_by_sqrt", _graph("divsqrt", lambda b: {
        "y": b.input("x", (2, 16)) / b.input("v", (2, 16)).sqrt()}), lambda r: {
        "x": r.uniform(-2, 2, (2, 16)).astype(np.float32),
        "v": np.where(r.random((2, 16)) < 0.3, 0.0, np.where(r.random((2, 16)) < 0.2, np.inf,
                                                              r.uniform(0, 4, (2, 16))))
        .astype(np.float32)}),
    Case("fused.multi_output", _graph("multi", lambda b: (lambda x: {
        "a": x.exp(), "b": x.exp() * 2.0 + x})(b.input("x", (5, 3))))),
]

REDUCTION_CASES = [
    Case("reduce_sum.axis1", _graph("rs1", lambda b: {"y": b.input("x", (4, 6)).sum((1,))})),
    Case("reduce_sum.axis0_keep", _graph("rs0", lambda b: {
        "y": b.input("x", (4, 6)).sum((0,), keepdims=True)})),
    Case("reduce_sum.axes02", _graph("rs02", lambda b: {
        "y": b.input("x", (3, 4, 5)).sum((0, 2))})),
    Case("reduce_sum.all", _graph("rsall", lambda b: {"y": b.input("x", (3, 4, 5)).sum()})),
    Case("reduce_sum.f16", _graph("rsh", lambda b: {
        "y": b.input("x", (4, 64), "f16").sum((1,))}), rtol=2e-3, atol=5e-2, tags=("f16",)),
    Case("reduce_max.axis1", _graph("rm1", lambda b: {"y": b.input("x", (5, 7)).max((1,))})),
    Case("reduce_max.axes01", _graph("rm01", lambda b: {
        "y": b.input("x", (3, 4, 5)).max((0, 1), keepdims=True)})),
    Case("argmax.axis1", _graph("am1", lambda b: {"y": b.op("argmax", b.input("x", (5, 7)),
                                                            axis=1)}),
         lambda r: {"x": r.integers(0, 3, (5, 7)).astype(np.float32)}),
    Case("argmax.axis0", _graph("am0", lambda b: {"y": b.op("argmax", b.input("x", (5, 7)),
                                                            axis=0)})),
    Case("reduce.long_rows", _graph("long", lambda b: (lambda x: {
        "s": x.sum((1,)), "m": x.max((1,)), "a": b.op("argmax", x, axis=1)})(
        b.input("x", (3, 300)))), rtol=1e-5, atol=1e-4, tags=("long-row",)),
    Case("reduce.int_sum", _graph("isum", lambda b: {
        "y": b.input("x", (4, 9), "i64").sum((1,))})),
]

MOVEMENT_CASES = [
    Case("movement.transpose_add", _graph("tr", lambda b: {
        "y": b.input("x", (3, 4, 5)).transpose((2, 0, 1)) + b.input("z", (5, 3, 4))})),
    Case("movement.broadcast_mul", _graph("bc", lambda b: {
        "y": b.broadcast_to(b.input("x", (4, 1)), (2, 4, 3)) * b.input("z", (3,))})),
    Case("movement.depth_to_space_6d", _graph("d2s", lambda b: {
        "y": b.input("x", (2, 12, 3, 4)).reshape((2, 2, 2, 3, 3, 4)).transpose(
            (0, 3, 4, 1, 5, 2)).reshape((2, 3, 6, 8)).tanh()})),
    Case("movement.reshape_transpose", _graph("rt", lambda b: {
        "y": (b.input("x", (4, 6)).reshape((2, 12)).transpose((1, 0)) * 2.0).exp()})),
    Case("movement.reverse", _graph("rev", lambda b: {
        "y": b.op("reverse", b.input("x", (3, 5, 4)), axes=(0, 2)).transpose((2, 0, 1))
        * b.input("z", (1, 3, 5))})),
    Case("movement.slice_step", _graph("sl", lambda b: {
        "y": b.op("slice", b.input("x", (7, 9)), start=(1, 0), stop=(7, 9), step=(2, 3))
        .tanh()})),
    Case("movement.pad_interior_negative", _graph("pad", lambda b: {
        "y": b.op("pad", b.input("x", (3, 4)), low=(1, -1), high=(2, 1), interior=(1, 0),
                  value=-2.5) * 3.0})),
    Case("movement.concat", _graph("cat", lambda b: {
        "y": b.op("concat", b.input("a", (2, 3)), b.input("b", (2, 4)), b.input("c", (2, 1)),
                  axis=1).exp()})),
    # Many pieces: the pieces are picked by a tree of selects (logarithmic depth; one select
    # per piece overflowed the expression walkers at 256). Along the outer axis the choice is
    # the same across a vector (the LLVM backend branches), along the inner one it is not.
    Case("movement.concat_many_outer", _graph("catm", lambda b: {
        "y": _concat_rows(b.input("x", (300, 24)), 300, axis=0).exp()})),
    Case("movement.concat_many_inner", _graph("catn", lambda b: {
        "y": _concat_rows(b.input("x", (3, 40)), 40, axis=1) * 2.0})),
    Case("movement.into_reduction", _graph("mr", lambda b: {
        "y": b.input("x", (4, 6)).transpose((1, 0)).reshape((3, 8)).sum((1,))})),
]

LINALG_CASES = [
    # The A operand picks its batch pieces by a comparison of the batch index: a mask the
    # Triton interpreter refused while batch indices were 0-d scalars.
    Case("matmul.batch_concat_prologue", _graph("mbc", lambda b: {
        "y": b.matmul(b.concat(b.input("x1", (1, 3, 5)), b.input("x2", (2, 3, 5)).relu(),
                               axis=0), b.input("w", (5, 4))).relu()})),
    Case("matmul.bias_relu", _graph("mm", lambda b: {
        "y": (b.input("a", (5, 24)) @ b.input("w", (24, 7)) + b.input("c", (7,))).relu()})),
    Case("matmul.batch_broadcast", _graph("bmm", lambda b: {
        "y": b.input("a", (2, 3, 4, 5)) @ b.input("w", (5, 6))})),
    Case("matmul.transposed", _graph("mmt", lambda b: {
        "y": b.input("a", (20, 6)).T @ b.input("w", (9, 20)).T}), rtol=1e-5),
    Case("matmul.f16", _graph("mmh", lambda b: {
        "y": b.input("a", (8, 32), "f16") @ b.input("w", (32, 16), "f16")}),
        rtol=1e-2, atol=1e-2, tags=("f16",)),
    Case("matmul.f64", _graph("mmd", lambda b: {
        "y": b.input("a", (6, 17), "f64") @ b.input("w", (17, 5), "f64")}),
        rtol=1e-12, atol=1e-12, tags=("f64",)),
    Case("matmul.long_k", _graph("mmk", lambda b: {
        "y": b.input("a", (3, 200)) @ b.input("w", (200, 4))}), rtol=1e-4, atol=1e-4),
    Case("matmul.outer_k1", _graph("mmk1", lambda b: {
        "y": b.input("a", (4, 1)) @ b.input("w", (1, 6)),
        "z": b.input("c", (1, 5)) @ b.input("v", (5, 1))})),
    Case("conv2d.1x1_one_channel", _graph("c11", lambda b: {
        "y": b.op("conv", b.input("x", (2, 1, 3, 3)), b.input("w", (4, 1, 1, 1)))})),
    Case("conv1d.stride_pad", _graph("c1", lambda b: {
        "y": b.op("conv", b.input("x", (2, 3, 11)), b.input("w", (4, 3, 3)), stride=2,
                  padding=1)}), rtol=1e-5),
    Case("conv2d.dilation_groups", _graph("c2", lambda b: {
        "y": b.op("conv", b.input("x", (2, 4, 7, 6)), b.input("w", (6, 2, 3, 2)), stride=(1, 2),
                  padding=((2, 1), (0, 1)), rhs_dilation=(2, 1), groups=2)}), rtol=1e-5),
    Case("conv2d.lhs_dilation", _graph("c3", lambda b: {
        "y": b.op("conv", b.input("x", (1, 2, 4, 4)), b.input("w", (3, 2, 3, 3)),
                  padding=((2, 2), (1, 1)), lhs_dilation=(2, 2))}), rtol=1e-5),
    Case("conv3d.stride_pad_dilation_groups", _graph("c5", lambda b: {
        "y": b.op("conv", b.input("x", (2, 4, 5, 6, 4)), b.input("w", (6, 2, 3, 2, 2)),
                  stride=(1, 2, 1), padding=((1, 1), (0, 1), (1, 0)), rhs_dilation=(1, 1, 2),
                  groups=2)}), rtol=1e-5),
    Case("conv2d.bias_relu_epilogue", _graph("c4", lambda b: {
        "y": b.conv2d(b.input("x", (2, 3, 6, 6)), b.input("w", (5, 3, 3, 3)),
                      b.input("c", (5,)), padding="same").relu()}), rtol=1e-5),
    # 1x1 convolutions over enough channels lower as matmuls: a plane that is no multiple of
    # the vector width, a residual in the epilogue, a recomputed relu in front, 1-D
    Case("conv2d.pointwise_residual", _graph("c6", lambda b: {
        "y": (b.conv2d(b.input("x", (2, 40, 5, 7)).relu(), b.input("w", (12, 40, 1, 1)),
                       b.input("c", (12,))) + b.input("r", (2, 12, 5, 7))).relu()}),
        rtol=1e-5, atol=1e-5),
    # a one-point input: a matmul against the taps each output position reads
    Case("conv2d.one_point_input", _graph("c8", lambda b: {
        "y": b.op("conv", b.input("x", (3, 5, 1, 1)), b.input("w", (4, 5, 4, 4)),
                  padding=3, stride=(2, 1)).tanh()}), rtol=1e-5, atol=1e-5),
    Case("conv1d.pointwise", _graph("c7", lambda b: {
        "y": b.op("conv", b.input("x", (3, 32, 9)), b.input("w", (8, 32, 1)))}),
        rtol=1e-5, atol=1e-5),
    # output planes smaller than a vector: tiles whose rows fill few lanes, padding masked
    Case("conv2d.small_plane", _graph("c9", lambda b: {
        "y": b.conv2d(b.input("x", (3, 8, 5, 6)).relu(), b.input("w", (4, 8, 3, 3)),
                      b.input("c", (4,)), stride=(2, 2), padding=((1, 0), (0, 1))).relu()}),
        rtol=1e-5, atol=1e-5),
    Case("conv1d.small_plane_dilated", _graph("c10", lambda b: {
        "y": b.op("conv", b.input("x", (2, 16, 11)), b.input("w", (3, 16, 5)),
                  rhs_dilation=2, padding=(1, 0))}), rtol=1e-5, atol=1e-5),
    # few output positions over many channels: output channels in the vector lanes
    Case("conv2d.channel_lanes_residual", _graph("c12", lambda b: {
        "y": (b.conv2d(b.input("x", (2, 32, 5, 6)).relu(), b.input("w", (72, 32, 3, 3)),
                       b.input("c", (72,)), stride=(1, 1), padding=((1, 2), (0, 1)))
              + b.input("r", (2, 72, 6, 5))).relu()}), rtol=1e-5, atol=1e-5),
    Case("conv1d.channel_lanes_strided", _graph("c13", lambda b: {
        "y": b.op("conv", b.input("x", (3, 128, 21)), b.input("w", (144, 64, 5)), stride=2,
                  rhs_dilation=2, padding=(3, 2), groups=2)}), rtol=1e-5, atol=1e-5),
    # activations that read their input twice, whole in the epilogue before the next template
    Case("matmul.gelu_between", _graph("mmg", lambda b: (lambda z: {
        "y": b.gelu(z, approximate="tanh") @ b.input("v", (12, 5))})(
        b.input("a", (6, 20)) @ b.input("w", (20, 12)) + b.input("c", (12,)))),
        rtol=1e-5, atol=1e-5),
    Case("conv2d.silu_depthwise", _graph("csd", lambda b: (lambda h: {
        "y": b.conv2d(h * b.sigmoid(h), b.input("w2", (8, 1, 3, 3)), padding=1, groups=8)})(
        b.conv2d(b.input("x", (2, 4, 5, 7)), b.input("w", (8, 4, 3, 3)), padding=1))),
        rtol=1e-5, atol=1e-5),
]

WINDOW_CASES = [
    Case("reduce_window.max_pool", _graph("mp", lambda b: {
        "y": b.op("reduce_window", b.input("x", (2, 3, 7, 7)), kind="max", window=(1, 1, 3, 3),
                  strides=(1, 1, 2, 2), padding=(0, 0, 0, 0, 1, 1, 1, 1))})),
    Case("reduce_window.sum", _graph("sp", lambda b: {
        "y": b.op("reduce_window", b.input("x", (2, 6, 5)), kind="sum", window=(1, 2, 3),
                  strides=(1, 2, 1), padding=(0, 0, 0, 1, 1, 1))})),
    Case("reduce_window.max_pool3d", _graph("mp3", lambda b: {
        "y": b.op("reduce_window", b.input("x", (2, 3, 5, 4, 6)), kind="max",
                  window=(1, 1, 2, 2, 3), strides=(1, 1, 2, 1, 2),
                  padding=(0, 0, 0, 0, 0, 1, 0, 0, 1, 1))})),
    # a rank-0 window over a scalar: a reduction whose domain is empty yet holds one element
    Case("reduce_window.scalar.grad", lambda: with_gradients(_graph("rw0", lambda b: (
        lambda x: {"y": b.op("reduce_window", x * 2.0, kind="sum", window=(), strides=())
                   + b.op("reduce_window", x, kind="max", window=(), strides=())})(
        b.input("x", ())))(), 5)),
    Case("select_scatter.overlap", _graph("ss", lambda b: {
        "y": b.op("select_scatter", b.input("x", (2, 5, 5)), b.input("s", (2, 3, 3)),
                  window=(1, 3, 3), strides=(1, 2, 2), padding=(0, 0, 1, 1, 1, 1))}),
        lambda r: {"x": r.integers(0, 4, (2, 5, 5)).astype(np.float32),
                   "s": r.standard_normal((2, 3, 3)).astype(np.float32)},
        tags=("library", "atomic")),
    # Axes of size 1 in the output and the window: constant positions, decided at code
    # generation (the Triton interpreter rejected the mask they had made).
    Case("select_scatter.unit_axes", _graph("ss1", lambda b: {
        "y": b.op("select_scatter", b.input("x", (3, 1, 11, 7)), b.input("s", (3, 1, 6, 7)),
                  window=(1, 1, 1, 3), strides=(1, 1, 2, 1), padding=(0, 0, 0, 0, 0, 0, 1, 1))}),
        tags=("library", "atomic")),
    # Every position constant: the load and the atomic add still take a block of pointers
    # (Triton's compiler refuses a scalar pointer under a block mask; the interpreter allows it).
    Case("select_scatter.one_window", _graph("ss2", lambda b: {
        "y": b.op("select_scatter", b.input("x", (1, 1)), b.input("s", (1, 1)),
                  window=(1, 1))}),
        tags=("library", "atomic")),
]

INDEXING_CASES = [
    Case("take.axis0", _graph("tk0", lambda b: {
        "y": b.op("take", b.input("x", (6, 4)), b.input("i", (2, 3), "i64"), axis=0)}),
        lambda r: {"x": r.standard_normal((6, 4)).astype(np.float32),
                   "i": r.integers(-6, 6, (2, 3))}, tags=("library", "exact")),
    Case("take.axis1_i32", _graph("tk1", lambda b: {
        "y": b.op("take", b.input("x", (3, 5, 2)), b.input("i", (4,), "i32"), axis=1)}),
        lambda r: {"x": r.standard_normal((3, 5, 2)).astype(np.float32),
                   "i": r.integers(0, 5, (4,)).astype(np.int32)}, tags=("library", "exact")),
    Case("scatter_add.duplicates", _graph("sc", lambda b: {
        "y": b.op("scatter_add", b.input("x", (5, 3)), b.input("i", (6,), "i64"),
                  b.input("u", (6, 3)), axis=0)}),
        lambda r: {"x": r.standard_normal((5, 3)).astype(np.float32),
                   "i": np.array([0, 2, 2, 4, 0, 2]),
                   "u": r.standard_normal((6, 3)).astype(np.float32)},
        tags=("library", "atomic")),
    Case("iota.f32_plus", _graph("iota", lambda b: {
        "y": b.op("iota", shape=(3, 4), axis=1, dtype="f32") + b.input("x", (3, 4)),
        "j": b.op("iota", shape=(3, 4), axis=0, dtype="i64") * 2})),
]

RANDOM_CASES = [
    Case("random_uniform.i64_seed", _graph("ru", lambda b: {
        "y": b.op("random_uniform", b.input("seed", (), "i64"), shape=(4, 33), stream=3)}),
        lambda r: {"seed": np.array(0x1234_5678_9ABC_DEF0 - 2**63, np.int64)},
        tags=("random", "exact")),
    Case("random_uniform.i32_negative_seed", _graph("ru32", lambda b: {
        "y": b.op("random_uniform", b.input("seed", (), "i32"), shape=(50,)) * 2.0}),
        lambda r: {"seed": np.array(-7, np.int32)}, tags=("random", "exact")),
    Case("random_normal", _graph("rn", lambda b: {
        "y": b.random_normal(b.input("seed", (), "i64"), shape=(6, 40), stream=2) * 0.5,
        "z": b.random_normal(b.input("s32", (), "i32"), shape=(33,), mean=1.0, std=3.0,
                             dtype="f64")}),
        lambda r: {"seed": np.array(1234567, np.int64), "s32": np.array(-3, np.int32)},
        rtol=1e-5, atol=1e-5, tags=("random",)),
    Case("dropout", _graph("drop", lambda b: {
        "y": b.dropout(b.input("x", (8, 16)), b.input("seed", (), "i64"), rate=0.25, stream=1)}),
        lambda r: {"x": r.standard_normal((8, 16)).astype(np.float32),
                   "seed": np.array(42, np.int64)}, tags=("random",)),
]


def _bn(training: bool):
    def fn(b: Builder):
        x = b.input("x", (4, 3, 5, 5))
        ps = [b.param("g", (3,), init="normal"), b.param("beta", (3,), init="normal"),
              b.param("rm", (3,), init="normal"), b.param("rv", (3,), init="ones")]
        out = b.batch_norm(x, *ps, training=training)
        if training:
            return {"y": out[0], "mean": out[1], "var": out[2]}
        return {"y": out}
    return fn


def _lstm(b: Builder):
    xs = b.input("xs", (3, 2, 4))
    h0, c0 = b.input("h0", (2, 5)), b.input("c0", (2, 5))
    w_x, w_z = b.param("wx", (4, 20)), b.param("wz", (5, 20))
    bias = b.param("b", (20,), init="normal")
    hs, h, c = b.lstm(xs, h0, c0, w_x, w_z, bias)
    return {"hs": hs, "h": h, "c": c}


def _gru(linear_before_reset: bool):
    def fn(b: Builder):
        xs, h0 = b.input("xs", (3, 2, 4)), b.input("h0", (2, 5))
        ws = [b.param("wx", (4, 15)), b.param("wz", (5, 15)),
              b.param("bx", (15,), init="normal"), b.param("bz", (15,), init="normal")]
        hs, h = b.gru(xs, h0, *ws, linear_before_reset=linear_before_reset)
        return {"hs": hs, "h": h}
    return fn


def _labels(r):
    return {"x": r.standard_normal((6, 10)).astype(np.float32),
            "t": r.integers(0, 10, (6,))}


COMPOSITE_CASES = [
    Case("softmax", _graph("sm", lambda b: {"y": b.softmax(b.input("x", (4, 9)))})),
    Case("softmax.axis0", _graph("sm0", lambda b: {"y": b.softmax(b.input("x", (6, 3)), axis=0)})),
    Case("softmax.long_rows", _graph("sml", lambda b: {"y": b.softmax(b.input("x", (2, 500)))}),
         tags=("long-row",)),
    Case("log_softmax", _graph("lsm", lambda b: {"y": b.log_softmax(b.input("x", (4, 9)) * 10.0)})),
    # a causal mask (-inf above the diagonal) and scores 90-100 below the row's maximum, whose
    # exps are denormals (flushed to zero in 512-bit rows: within atol), in rows of 48
    Case("softmax.causal", _graph("smc", lambda b: (lambda s: {
        "y": b.softmax(s), "z": b.log_softmax(s)})(b.input("x", (2, 48, 48)))), lambda r: {
        "x": np.where(np.triu(np.ones((48, 48), bool), 1), -np.inf,
                      r.standard_normal((2, 48, 48)) - 95.0 * (r.random((2, 48, 48)) < 0.3)
                      ).astype(np.float32)}),
    Case("cross_entropy", _graph("ce", lambda b: {
        "y": b.cross_entropy(b.input("x", (6, 10)), b.input("t", (6,), "i64"))}), _labels),
    Case("batch_norm.train", _graph("bnt", _bn(True)), rtol=1e-4, atol=1e-4),
    Case("batch_norm.eval", _graph("bne", _bn(False))),
    Case("dense_relu", _graph("dense", lambda b: {
        "y": b.dense(b.input("x", (5, 12)), b.param("w", (12, 8)),
                     b.param("c", (8,), init="normal"), activation="relu")})),
    Case("gelu", _graph("gelu", lambda b: {"y": b.gelu(b.input("x", (5, 40)) * 3.0)})),
    Case("gelu.tanh", _graph("gelu_t", lambda b: {
        "y": b.gelu(b.input("x", (5, 40)) * 3.0, approximate="tanh")})),
    Case("layer_norm", _graph("ln", lambda b: {
        "y": b.layer_norm(b.input("x", (6, 4, 10)), b.param("g", (4, 10), init="normal"),
                          b.param("beta", (4, 10), init="normal"), axis=1)}), rtol=1e-4,
         atol=1e-5),
    Case("lstm.t3", _graph("lstm", _lstm), rtol=1e-5, atol=1e-5),
    Case("gru.t3", _graph("gru", _gru(True)), rtol=1e-5, atol=1e-5),
    Case("gru.t3.reset_first", _graph("gru_onnx", _gru(False)), rtol=1e-5, atol=1e-5),
    Case("mse", _graph("mse", lambda b: {"y": b.mse(b.input("p", (4, 3)), b.input("t", (4, 3)))})),
    Case("avg_pool2d", _graph("ap", lambda b: {
        "y": b.avg_pool2d(b.input("x", (2, 3, 6, 6)), kernel=2)})),
]


def _model(module: str, build_kw: dict, input_kw: dict):
    def build() -> Graph:
        return _example(module).build(**build_kw)

    def make(rng):
        return _example(module).example_inputs(**input_kw)
    return build, make


def _train_step(module: str, b_kw: dict):
    """The example's loss gradients (autodiff adds outputs grad.<param>)."""
    def build() -> Graph:
        from graphc.passes import autodiff

        return autodiff(_example(module).build(**b_kw), "loss")
    return build


def _optimizer_step() -> Graph:
    """A whole training step with optimizer updates: Adam on one layer (its bias correction
    raises constants to the power of the `step` input), SGD with Nesterov momentum and
    decoupled decay on the other."""
    from graphc.optim import SGD, Adam
    from graphc.train import train_step

    b = Builder("opt", seed=0)
    x, labels = b.input("x", (4, 5)), b.input("labels", (4,), "i64")
    h = b.op("dense", x, b.param("w1", (5, 6)), b.param("b1", (6,), init="zeros"),
             activation="tanh")
    logits = b.op("dense", h, b.param("w2", (6, 3)), b.param("b2", (3,), init="zeros"))
    g = b.build(outputs={"loss": b.op("cross_entropy", logits, labels)})
    return train_step(g, "loss", {("w1", "b1"): Adam(lr=1e-2, eps=1e-4),
                                  ("w2", "b2"): SGD(lr=0.1, momentum=0.9, nesterov=True,
                                                    weight_decay=1e-3, decoupled=True)})


def _optimizer_step_inputs(r: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": r.standard_normal((4, 5)).astype(np.float32),
            "labels": r.integers(0, 3, 4).astype(np.int64), "step": np.array(3, np.int64)}


def _slice_join_grad() -> Graph:
    """Gradients of disjoint slices of one parameter, a gap left unread: autodiff joins them
    into one concat with zero pieces instead of a sum of pads."""
    from graphc.passes import autodiff

    b = Builder("slices", seed=0)
    w = b.param("w", (9, 4), init="normal")
    x = b.input("x", (9, 4))
    parts = [(0, 2), (2, 3), (5, 9)]
    loss = sum(((k + 1.0) * b.tanh(b.slice(w * x, start=(lo, 0), stop=(hi, 4), step=(1, 1))))
               .sum() for k, (lo, hi) in enumerate(parts))
    return autodiff(b.build(outputs={"loss": loss}), "loss")


def _erf_grad() -> Graph:
    """erf forward and its VJP, 2/√π·exp(−x²), through autodiff (grad.w)."""
    from graphc.passes import autodiff

    b = Builder("erf_grad", seed=0)
    w = b.param("w", (4, 6), init="normal")
    x = b.input("x", (4, 6))
    y = (w * x * 2.0).erf()
    return autodiff(b.build(outputs={"loss": (y * x).sum(), "y": y}), "loss")


def _trig_grad() -> Graph:
    """sin, cos and atan with their VJPs (cos, −sin, 1/(1 + x²)) through autodiff."""
    from graphc.passes import autodiff

    b = Builder("trig_grad", seed=0)
    w = b.param("w", (4, 6), init="normal")
    x = b.input("x", (4, 6))
    y = (w * x * 3.0).sin() * (w + x).cos() + (w * 2.0 - x).atan()
    return autodiff(b.build(outputs={"loss": (y * x).sum(), "y": y}), "loss")


def _pointwise_conv_grad() -> Graph:
    """A 1x1 convolution lowered as a matmul, and its gradients: the input's is a 1x1
    convolution over the output's 32 channels (a matmul too), the weight's a convolution."""
    from graphc.passes import autodiff

    b = Builder("pw_grad", seed=0)
    w = b.param("w", (32, 48, 1, 1), init="normal")
    c = b.param("c", (32,), init="normal")
    x = b.param("x", (2, 48, 6, 5), init="normal")
    y = b.conv2d(x, w, c).tanh()
    return autodiff(b.build(outputs={"loss": (y * y).sum(), "y": y}), "loss")


def _strided_conv_grad() -> Graph:
    """A stride-2 convolution and its gradients: the input's is a convolution over the
    output gradient dilated by 2, which runs in phase form (`conv_phases`)."""
    from graphc.passes import autodiff

    b = Builder("strided_grad", seed=0)
    w = b.param("w", (5, 3, 3, 3), init="normal")
    x = b.param("x", (2, 3, 9, 8), init="normal")
    y = b.op("conv", x, w, stride=(2, 2), padding=((1, 1), (1, 0))).tanh()
    return autodiff(b.build(outputs={"loss": (y * y).sum(), "y": y}), "loss")


def _conv_weight_grad() -> Graph:
    """A padded 3x3 convolution's gradients: the weights' is a convolution with a 3 x 3
    output plane, each point a sum over batch x rows x columns products."""
    from graphc.passes import autodiff

    b = Builder("weight_grad", seed=0)
    w = b.param("w", (5, 3, 3, 3), init="normal")
    x = b.param("x", (4, 3, 6, 7), init="normal")
    y = b.op("conv", x, w, padding=1).tanh()
    return autodiff(b.build(outputs={"loss": (y * y).sum(), "y": y}), "loss")


_cnn = _model("cnn", {"batch": 2, "channels": 4}, {"batch": 2})
_cnn_eval = _model("cnn", {"batch": 2, "channels": 4, "training": False}, {"batch": 2})
_lstm_model = _model("lstm", {"steps": 3, "batch": 2, "features": 4, "hidden": 6},
                     {"steps": 3, "batch": 2, "features": 4})
_221 = _model("two_two_one", {"batch": 4}, {"batch": 4})
_seed = _model("conv1d_seed", {}, {})

def _empty_values(b: Builder) -> dict:
    """Zero-element values: empty inputs, and ops whose result is empty (a slice past the end,
    an elementwise op, a gather with no indices) or computed from nothing (a sum over an empty
    axis, a product with no terms, padding around nothing, a concatenation with an empty
    piece)."""
    x, w = b.input("x", (3, 0)), b.input("w", (3, 4))
    k, idx = b.input("k", (0, 5)), b.input("i", (0,), "i64")
    nothing = b.op("slice", w, start=(0, 4), stop=(3, 4), step=(1, 1))  # [3, 0]
    return {"e": (x * nothing).tanh(), "s": x.sum(1) + w.sum(1), "m": x @ k,
            "c": b.op("concat", x, w.exp(), nothing, axis=1),
            "p": b.op("pad", x, low=(0, 1), high=(1, 1), value=2.0) * w.sum(),
            "x": x, "t": b.op("take", w, idx, axis=1),
            "sse": b.op("mse", x, nothing, reduction="sum") + w.mean()}


def _empty_windows(b: Builder) -> dict:
    """Pooling a batch of no images or images of no channels, and a convolution of planes of
    no columns whose padding alone makes its output."""
    none, thin = b.input("none", (0, 2, 4, 4)), b.input("thin", (1, 2, 5, 0))
    w = b.param("w", (3, 2, 1, 1))
    return {"mp": b.op("max_pool2d", none, kernel=2),
            "ap": b.op("avg_pool2d", none, kernel=2, padding=1),
            "cv": b.op("conv2d", thin, w, padding=1) + w.sum(),
            "s": b.op("max_pool2d", b.input("nochan", (2, 0, 4, 4)), kernel=2).sum()
            + none.sum()}


MODEL_CASES = [
    Case("model.cnn", _cnn[0], _cnn[1], rtol=1e-4, atol=1e-4, tags=("model",)),
    Case("model.cnn_eval", _cnn_eval[0], _cnn_eval[1], rtol=1e-4, atol=1e-4, tags=("model",)),
    Case("model.cnn_train_step", _train_step("cnn", {"batch": 2, "channels": 4}), _cnn[1],
         rtol=1e-3, atol=1e-4, tags=("model", "library", "atomic")),
    Case("model.lstm_train_step", _train_step("lstm", {"steps": 3, "batch": 2, "features": 4,
                                                       "hidden": 6}),
         _lstm_model[1], rtol=1e-4, atol=1e-5, tags=("model",)),
    Case("model.optimizer_step", _optimizer_step, _optimizer_step_inputs, rtol=1e-4, atol=1e-5,
         tags=("model",)),
    Case("model.lstm", _lstm_model[0], _lstm_model[1], rtol=1e-4, atol=1e-5, tags=("model",)),
    Case("grad.slice_join", _slice_join_grad),
    Case("grad.erf", _erf_grad),
    Case("grad.sin_cos", _trig_grad),
    Case("grad.pointwise_conv", _pointwise_conv_grad, rtol=1e-4, atol=1e-4),
    Case("grad.strided_conv", _strided_conv_grad, rtol=1e-4, atol=1e-4),
    Case("grad.conv_weight", _conv_weight_grad, rtol=1e-4, atol=1e-4),
    Case("empty.values", _graph("empty", _empty_values)),
    Case("empty.values.grad", lambda: with_gradients(_graph("empty", _empty_values)(), 3)),
    Case("empty.windows.grad", lambda: with_gradients(_graph("emptyw", _empty_windows)(), 4)),
    Case("model.two_two_one", _221[0], _221[1], rtol=1e-5, atol=1e-6, tags=("model",)),
    Case("model.conv1d_seed", _seed[0], _seed[1], rtol=1e-5, atol=1e-6, tags=("model",)),
]

def _random_case(seed: int) -> Case:
    """A random op chain (`random_graphs.py`): combinations no hand-written case lists."""
    return Case(f"fuzz.graph{seed}", lambda: random_graph(seed)[0],
                lambda rng: random_graph(seed)[1], rtol=2e-4, atol=2e-5, tags=("fuzz",))


_GENERATORS = {"graph": random_graph, "image": random_conv_graph,
               "sequence": random_sequence_graph}


def _random_gradient_case(seed: int, kind: str) -> Case:
    """A random op chain, image network or sequence model and its gradients."""
    make = _GENERATORS[kind]
    return Case(f"fuzz.{kind}{seed}.grad", lambda: with_gradients(make(seed)[0], seed),
                lambda rng: make(seed)[1], rtol=1e-3, atol=1e-4, tags=("fuzz",))


FUZZ_CASES = ([_random_case(seed) for seed in range(1000, 1012)]
              + [_random_gradient_case(seed, "graph") for seed in range(1000, 1003)]
              + [_random_gradient_case(seed, "image") for seed in range(1000, 1006)]
              + [_random_gradient_case(seed, "sequence") for seed in range(1000, 1003)])

OP_MATRIX: list[Case] = (UNARY_CASES + BINARY_CASES + COMPARE_CASES + ELEMENTWISE_MORE
                         + REDUCTION_CASES + MOVEMENT_CASES + LINALG_CASES + WINDOW_CASES
                         + INDEXING_CASES + RANDOM_CASES + COMPOSITE_CASES + MODEL_CASES
                         + FUZZ_CASES)
CASES_BY_NAME = {c.name: c for c in OP_MATRIX}
assert len(CASES_BY_NAME) == len(OP_MATRIX), "duplicate case names"
