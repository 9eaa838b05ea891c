"""LLVM code generation of loop kernels: every elementwise primitive (f32, f64, f16, integers,
bool), NaN semantics, broadcasting, fused movement ops, iota and random numbers, each compiled
fused and unfused and compared with the reference backend. Many cases share one graph, so one
LLVM module is compiled per test. Also: the lowering table covers the op set, and an exp-heavy
kernel's optimized IR is 512-bit vector code without libm calls."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc.ir.ops  # noqa: F401  (registers every family)
from graphc.backends.llvm.lowering import LOWERINGS
from graphc.ir.builder import Builder
from graphc.ir.registry import OPS

from .conftest import check_llvm

FUSE = [True, False]
UNARY_FLOAT = ["neg", "abs", "exp", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "sigmoid",
               "tanh", "relu", "softplus", "sign", "erf", "floor", "ceil", "round", "sin", "cos",
               "atan"]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"]
COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"]


def test_lowering_table_covers_every_primitive():
    prims = {n for n, d in OPS.items() if d.primitive}
    assert prims <= set(LOWERINGS), sorted(prims - set(LOWERINGS))
    for name, d in OPS.items():
        if d.primitive and d.family == "elementwise":
            assert LOWERINGS[name].kind == "scalar" and LOWERINGS[name].emit, name


def _positive_domain(op: str, x):
    return abs(x) + 0.25 if op in ("log", "sqrt", "rsqrt", "log1p") else x


def _float_graph(dtype: str, rows: int = 5, cols: int = 37) -> Builder:
    b = Builder(f"elementwise_{dtype}")
    a = b.input("a", (rows, cols), dtype)
    v = b.input("v", (cols,), dtype)
    c = b.input("c", (rows, 1), dtype)
    for op in UNARY_FLOAT:
        b.output(f"{op}", getattr(_positive_domain(op, a), op)())
    for op in BINARY:
        lhs = abs(a) + 0.5 if op == "pow" else a
        b.output(f"{op}_row", b.op(op, lhs, v))
        b.output(f"{op}_col", b.op(op, c, lhs))
    for op in COMPARE:
        b.output(f"{op}", b.op(op, a, v))
    b.output("select", b.select(a > v, a, c))
    for dt in ("f32", "f64", "i32", "i64", "bool", "f16"):
        if dt != dtype:
            b.output(f"cast_{dt}", (a * 10.0).astype(dt))
    b.output("chain", ((a * v + 1.0).exp().tanh() - c.sigmoid()) * (a.abs() + 1.0).log())
    return b


def _float_inputs(dtype: str, rng, rows: int = 5, cols: int = 37) -> dict[str, np.ndarray]:
    np_dt = {"f32": np.float32, "f64": np.float64, "f16": np.float16}[dtype]
    a = rng.standard_normal((rows, cols)) * 2
    v = rng.standard_normal(cols) * 2
    v[:4] = a[0, :4]  # ties for eq/le/ge and maximum
    return {"a": a.astype(np_dt), "v": v.astype(np_dt),
            "c": rng.standard_normal((rows, 1)).astype(np_dt)}


@pytest.mark.parametrize("fuse, vector_loops", [(True, True), (False, True), (True, False)])
def test_float32_elementwise(fuse, vector_loops, rng):
    """Explicit vector loops (the default) and, for comparison, LLVM's loop vectorizer."""
    b = _float_graph("f32")
    check_llvm(b.build(), _float_inputs("f32", rng), fuse=fuse, vector_loops=vector_loops,
               per_output={"pow_row": dict(rtol=5e-5, atol=1e-6),
                           "pow_col": dict(rtol=5e-5, atol=1e-6)})


@pytest.mark.parametrize("fuse", FUSE)
def test_float64_elementwise(fuse, rng):
    b = _float_graph("f64")
    check_llvm(b.build(), _float_inputs("f64", rng), fuse=fuse,
               tol=dict(rtol=1e-13, atol=1e-14),
               per_output={"pow_row": dict(rtol=1e-12), "pow_col": dict(rtol=1e-12)})


def test_float16_computes_in_f32_and_rounds_when_storing(rng):
    b = Builder("half")
    a = b.input("a", (3, 20), "f16")
    v = b.input("v", (20,), "f16")
    b.output("y", (a * v + 1.0).exp() / (a.abs() + 1.0))
    b.output("s", a.sum(axes=(1,)))
    b.output("bf", (a.astype("f32") * 3.0).astype("bf16"))
    ins = {"a": rng.standard_normal((3, 20)).astype(np.float16),
           "v": rng.standard_normal(20).astype(np.float16)}
    # the reference rounds after every f16 op, we once per stored value: a few f16 ulps
    check_llvm(b.build(), ins, tol=dict(rtol=4e-3, atol=4e-3),
               per_output={"bf": dict(rtol=0, atol=0)})


@pytest.mark.parametrize("fuse", FUSE)
@pytest.mark.parametrize("dtype", ["i32", "i64"])
def test_integer_elementwise(fuse, dtype, rng):
    b = Builder("ints")
    a = b.input("a", (4, 9), dtype)
    v = b.input("v", (9,), dtype)
    e = b.input("e", (9,), dtype)
    for op in ("neg", "abs", "relu", "sign"):
        b.output(op, getattr(a, op)())
    for op in ("add", "sub", "mul", "div", "maximum", "minimum"):
        b.output(op, b.op(op, a, v))
    b.output("pow", b.op("pow", a, e))
    for op in COMPARE:
        b.output(op, b.op(op, a, v))
    b.output("to_f32", a.astype("f32"))
    b.output("to_bool", a.astype("bool"))
    b.output("to_other", a.astype("i64" if dtype == "i32" else "i32"))
    np_dt = np.int32 if dtype == "i32" else np.int64
    v_vals = np.array([3, -3, 0, 1, -1, 7, -7, 2, 5])  # zero divisor: numpy gives 0
    ins = {"a": rng.integers(-20, 20, (4, 9)).astype(np_dt), "v": v_vals.astype(np_dt),
           "e": rng.integers(0, 5, 9).astype(np_dt)}
    ins["a"][0, :] = np.iinfo(np_dt).min  # MIN // -1 and abs(MIN) wrap like numpy
    with np.errstate(all="ignore"):
        check_llvm(b.build(), ins, fuse=fuse)


def test_bool_ops(rng):
    b = Builder("bools")
    p = b.input("p", (6,), "bool")
    q = b.input("q", (6,), "bool")
    x = b.input("x", (6,))
    for op in COMPARE:
        b.output(op, b.op(op, p, q))
    b.output("select", b.select(p, x, -x))
    b.output("to_f32", p.astype("f32"))
    b.output("to_i32", q.astype("i32"))
    b.output("nan_is_true", (x / 0.0 * 0.0).astype("bool"))
    ins = {"p": np.array([0, 0, 1, 1, 0, 1], bool), "q": np.array([0, 1, 0, 1, 1, 1], bool),
           "x": rng.standard_normal(6).astype(np.float32)}
    check_llvm(b.build(), ins)


@pytest.mark.parametrize("fuse", FUSE)
def test_nan_and_infinity_semantics(fuse):
    """NaN propagates through arithmetic, maximum/minimum, relu and sign (as np.maximum);
    comparisons with NaN are false except ne; exp/log/tanh/sigmoid/erf handle ±inf like
    numpy (erf like math.erf)."""
    b = Builder("nan")
    x = b.input("x", (8,))
    y = b.input("y", (8,))
    for op in ("relu", "sign", "exp", "log", "tanh", "sigmoid", "softplus", "abs", "neg",
               "sqrt", "log1p", "erf", "sin", "cos", "atan"):
        b.output(op, getattr(x, op)())
    for op in ("maximum", "minimum", "add", "mul", "div", "pow") + tuple(COMPARE):
        b.output(op, b.op(op, x, y))
    nan, inf = np.nan, np.inf
    ins = {"x": np.array([nan, 1.0, nan, -inf, inf, 0.0, -0.0, -2.0], np.float32),
           "y": np.array([1.0, nan, nan, 2.0, -1.0, -0.0, 0.0, inf], np.float32)}
    with np.errstate(all="ignore"):
        check_llvm(b.build(), ins, fuse=fuse, tol=dict(rtol=2e-6, atol=0))


@pytest.mark.parametrize("threads", [1, 2])
def test_quotients_have_the_same_bits_in_every_context(threads):
    """x / d is the IEEE quotient wherever a kernel computes it (vectorized, in a masked tail,
    beside another quotient by the same d, with d invariant in the loop); a division by a
    constant is a product with the constant's reciprocal rounded to f32, unless that reciprocal
    is not a normal number (constants below 2^-126 or above 2^126 divide)."""
    nan, inf = np.nan, np.inf
    x = np.array([nan, inf, -inf, 0.0, -0.0, 1.0, -3.5, 1e-38, 3e38, 7.0, 0.1, 2.5, -1e-3,
                  5.0, 6.0, 1.0 / 3.0, 12.0, -9.0, 4e-45], np.float32)
    b = Builder("quotients")
    xi, di = b.input("x", x.shape), b.input("d", x.shape)
    row = b.input("r", (1,))
    constants = (3.0, -7.0, 0.1, 0.0, -0.0, inf, 1e-39, 3e38, 1.5)
    for k, c in enumerate(constants):
        b.output(f"c{k}", xi / c)
    b.output("q", xi / di)
    b.output("q2", xi / di + (xi * 2.0) / di)  # d divides two values: still two divisions
    b.output("qr", xi / row)  # a divisor invariant in the loop
    d = np.array([2.0, 3.0, nan, -0.0, 0.0, 7.0, 3.0, 1e-3, 1e-3, 0.1, 3.0, 9.0, -7.0, 3.0,
                  1.1, 3.0, 0.3, 11.0, 1e-3], np.float32)
    r = np.array([3.0], np.float32)
    exe = graphc.compile(b.build(), target="llvm", threads=threads)
    got = exe({"x": x, "d": d, "r": r})
    with np.errstate(all="ignore"):
        for k, c in enumerate(constants):
            c32 = np.float32(c)
            recip = np.float32(1) / c32
            normal = np.isfinite(recip) and abs(recip) >= np.finfo(np.float32).tiny
            want = x * recip if normal else x / c32
            np.testing.assert_array_equal(got[f"c{k}"], want, err_msg=f"x / {c}")
        np.testing.assert_array_equal(got["q"], x / d)
        np.testing.assert_array_equal(got["q2"], x / d + (x * np.float32(2)) / d)
        np.testing.assert_array_equal(got["qr"], x / r)


@pytest.mark.parametrize("fuse", FUSE)
def test_movement_ops_fuse_as_index_maps(fuse, rng):
    b = Builder("movement")
    x = b.input("x", (4, 6, 5))
    y = b.input("y", (6, 5))
    b.output("transpose", x.transpose(2, 0, 1) * 2.0)
    b.output("reshape", b.reshape(x, (24, 5)).exp())
    b.output("reshape_split", b.reshape(x, (2, 60)) + 1.0)
    b.output("broadcast", b.broadcast_to(y, (3, 6, 5)) - 1.0)
    b.output("slice", b.op("slice", x, start=(1, 0, 1), stop=(4, 6, 5), step=(2, 3, 2)).tanh())
    b.output("pad", b.op("pad", x, low=(1, -1, 0), high=(0, 2, 1), interior=(0, 1, 2),
                         value=-3.0) + 0.5)
    b.output("concat", b.op("concat", x, x * 2.0, axis=1).sigmoid())
    b.output("pad_then_reduce", b.op("pad", y, low=(1, 1), high=(1, 1), value=1.0).sum())
    ins = {"x": rng.standard_normal((4, 6, 5)).astype(np.float32),
           "y": rng.standard_normal((6, 5)).astype(np.float32)}
    check_llvm(b.build(), ins, fuse=fuse)


@pytest.mark.parametrize("fuse", FUSE)
def test_iota_and_random_uniform_bits(fuse):
    b = Builder("random")
    seed = b.input("seed", (), "i64")
    b.output("u", b.op("random_uniform", seed, shape=(3, 50), stream=7))
    b.output("u2", b.op("random_uniform", seed, shape=(1000,)) * 2.0 - 1.0)
    b.output("iota", b.op("iota", shape=(4, 5), axis=1, dtype="i32"))
    b.output("iota_f", b.op("iota", shape=(4, 5), axis=0, dtype="f32") * 0.5)
    for s in (0, -5, 2**40 + 3):
        check_llvm(b.build(), {"seed": np.array(s, np.int64)}, fuse=fuse,
                   tol=dict(rtol=0, atol=0))


def test_large_flat_chain_runs_in_parallel(rng):
    """A kernel big enough to be split over threads gives the same numbers for 1 and 2+
    threads (chunks never depend on the thread count)."""
    import graphc

    b = Builder("big")
    x = b.input("x", (300, 1000))
    b.output("y", (x * 1.5 + 1.0).exp().log1p() - x.tanh())
    g = b.build()
    ins = {"x": rng.standard_normal((300, 1000)).astype(np.float32)}
    exe = check_llvm(g, ins, threads=2)
    plans = exe.info["kernel_plans"]
    assert any(p["parallel"] for p in plans.values())
    one = graphc.compile(g, target="llvm", threads=1)(ins)["y"]
    np.testing.assert_array_equal(one, exe(ins)["y"])


def test_large_convolution_runs_in_parallel(rng):
    """A convolution above the flop bound for threads (9.4 MFLOP) is split over them and gives
    bit-identical results for 1 and 2 threads; one below it (0.3 MFLOP) runs serially."""
    import graphc

    for n, parallel in ((8, True), (1, False)):
        b = Builder("conv_par")
        x = b.input("x", (n, 16, 16, 16))
        w = b.param("w", (16, 16, 3, 3), init="normal") if n == 8 else \
            b.param("w", (4, 16, 3, 3), init="normal")
        b.output("y", b.conv2d(x, w, padding=1).relu())
        g = b.build()
        ins = {"x": rng.standard_normal((n, 16, 16, 16)).astype(np.float32)}
        exe = check_llvm(g, ins, threads=2)
        plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]
        assert plans and all(p["parallel"] is parallel for p in plans)
        one = graphc.compile(g, target="llvm", threads=1)(ins)["y"]
        np.testing.assert_array_equal(one, exe(ins)["y"])



@pytest.mark.parametrize("operand", ["bf16 weights", "concat of weights", "strided concat A"])
def test_large_staged_operands_are_staged_by_every_thread(operand, rng):
    """A GEMM operand computed by a prologue (a cast, a concatenation) is staged into scratch
    before the GEMM; from 64K elements on by all threads, with the same result as one thread
    and as the reference."""
    import graphc

    b = Builder("staged", seed=0)
    x = b.input("x", (96, 384))
    if operand == "bf16 weights":
        w = b.op("cast", b.param("w", (384, 300), dtype="bf16", init="normal"), dtype="f32")
        y = x @ w
    elif operand == "concat of weights":
        w = b.concat(b.param("w1", (100, 300), init="normal"),
                     b.param("w2", (284, 300), init="normal"), axis=0)
        y = x @ w
    else:  # A = [x | x * 2] transposed: the prologue reads x with a stride
        a = b.transpose(b.concat(x, x * 2.0, axis=1), perm=(1, 0))
        y = b.transpose(a, perm=(1, 0)) @ b.param("w", (768, 200), init="normal")
    b.output("y", y)
    g = b.build()
    ins = {"x": rng.standard_normal((96, 384)).astype(np.float32)}
    exe = check_llvm(g, ins, threads=2, tol=dict(rtol=1e-4, atol=1e-4))
    plans = [p for p in exe.info["kernel_plans"].values() if p.get("staged")]
    assert plans, "no operand was staged"
    from graphc.backends.llvm.program import generated_ir

    assert re.search(r'define [^\n]*\.stage\.[ab]\.worker', generated_ir(exe.schedule))
    one = graphc.compile(g, target="llvm", threads=1)(ins)["y"]
    np.testing.assert_array_equal(one, exe(ins)["y"])


def test_staged_operand_keeps_the_layout_its_sources_are_read_in(rng):
    """q @ k^T with k computed by a prologue from [n, k]-ordered sources: the staging loop
    runs along k (contiguous reads), and GEMM reads the staged [n, k] through its strides."""
    import graphc
    from graphc.backends.llvm.codegen_gemm import _stage
    from graphc.ir.kernel import MatmulKernel

    b = Builder("qk", seed=0)
    q, k1, k2 = (b.input(n, (4, 128, 64)) for n in ("q", "k1", "k2"))
    b.output("s", q @ b.transpose(k1 + k2 * 0.5, perm=(0, 2, 1)))
    g = b.build()
    ins = {n: rng.standard_normal((4, 128, 64)).astype(np.float32) for n in ("q", "k1", "k2")}
    exe = check_llvm(g, ins)
    (mk,) = [k for k in exe.schedule.kernels if isinstance(k, MatmulKernel)]
    affine, staged, _ = _stage("b", mk.b, 0)
    assert staged.vars[-1] == mk.b.vars[-2]  # k innermost: the sources' contiguous axis
    assert affine.stride(mk.b.vars[-2]) == 1 and affine.stride(mk.b.vars[-1]) == 64
    assert exe.info["kernel_plans"][mk.name]["staged"] == ["b"]
    np.testing.assert_allclose(exe(ins)["s"], graphc.compile(g, target="reference")(ins)["s"],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("threads", [1, 2])
def test_activation_reading_its_input_twice_rides_on_the_conv_epilogue(act, threads, rng):
    """conv -> SiLU or GELU -> depthwise conv (an EfficientNet-style block): the activation's
    whole cone is the first convolution's epilogue, which stores it once, and the depthwise
    convolution reads it as a plain operand; results against the reference."""
    from graphc.ir.kernel import ConvKernel, Load

    b = Builder("mb", seed=0)
    x = b.input("x", (2, 8, 9, 11))
    h = b.conv2d(x, b.param("w0", (16, 8, 1, 1), init="he"), b.param("b0", (16,),
                                                                         init="normal"))
    a = h * b.sigmoid(h) if act == "silu" else b.gelu(h, approximate="tanh")
    y = b.conv2d(a, b.param("w", (16, 1, 3, 3), init="he"), padding=1, groups=16)
    g = b.build(outputs={"y": y})
    ins = {"x": rng.standard_normal((2, 8, 9, 11)).astype(np.float32)}
    exe = check_llvm(g, ins, threads=threads, tol=dict(rtol=1e-4, atol=1e-5))
    first, second = exe.schedule.kernels
    assert len(first.stores) == 1 and isinstance(second, ConvKernel)
    assert isinstance(second.x.value, Load) and second.x.value.buffer == first.stores[0].buffer


@pytest.mark.parametrize("width", [16, 19])
def test_convolution_prologue_is_staged_in_vectors(width, rng):
    """A depthwise convolution whose input is computed by a fused prologue (h * s, h stored
    anyway) stages it row by row in explicit vectors, the row's end masked: same results as
    the reference and as one thread."""
    import graphc
    from graphc.backends.llvm.program import generated_ir

    b = Builder("dw", seed=0)
    x = b.input("x", (3, 8, 6, width))
    h = b.conv2d(x, b.param("w0", (8, 1, 3, 3), init="he"), padding=1, groups=8)
    act = h * b.input("s", (3, 8, 6, width))
    y = b.conv2d(act, b.param("w", (8, 1, 3, 3), init="he"), padding=1, groups=8)
    g = b.build(outputs={"y": y, "h": h})
    ins = {n: rng.standard_normal((3, 8, 6, width)).astype(np.float32) for n in ("x", "s")}
    exe = check_llvm(g, ins, threads=2, tol=dict(rtol=1e-4, atol=1e-5))
    staged = [k for k, p in exe.info["kernel_plans"].items() if p.get("staged")]
    assert staged, "the prologue was not staged"
    text = generated_ir(exe.schedule)
    head = r'define [^\n]*kernel\.' + re.escape(staged[0]) + r'\.setup"?\('
    setup = re.search(head + r".*?\n}\n", text, re.S)
    assert setup and "llvm.masked.store.v16f32" in setup.group(0)
    one = graphc.compile(g, target="llvm", threads=1)(ins)["y"]
    np.testing.assert_array_equal(one, exe(ins)["y"])


def test_parallel_kernels_share_one_launcher_per_function():
    """Structurally identical kernels share a function, and their parallel launch is one
    launcher function too: an unrolled recurrence's call sites stay one call each in
    graphc_main instead of an inlined parallel-for setup per step."""
    from graphc.backends.llvm.program import generated_ir
    from graphc.pipeline import run_pipeline

    b = Builder("steps", seed=0)  # an LSTM step's gates are cut into chunks for two threads
    xs, h0, c0 = b.input("xs", (5, 32, 64)), b.input("h0", (32, 256)), b.input("c0", (32, 256))
    hs, _, _ = b.lstm(xs, h0, c0, b.param("wx", (64, 1024)), b.param("wz", (256, 1024)))
    b.output("hs", hs)
    s = run_pipeline(b.build()).schedule
    ir_text = generated_ir(s, {"threads": 2})
    launchers = re.findall(r'define internal void @"?(kernel\.[\w.]+\.parallel)', ir_text)
    main = ir_text[ir_text.index('@"graphc_main"'):]
    main = main[:main.index("\n}")]
    calls = re.findall(r'call void @"?(kernel\.[\w.]+\.parallel)', main)
    assert launchers and len(set(calls)) == len(launchers) < len(calls)
    assert "GOMP_parallel" not in main and "pfor" not in main

def _avx512_optimized_ir(graph) -> str:
    """The optimized LLVM IR of `graph`'s program; skips without AVX-512 on the host."""
    from llvmlite import binding as llvm

    from graphc.backends.llvm.program import optimized_ir
    from graphc.backends.llvm.target import init_llvm
    from graphc.pipeline import run_pipeline

    init_llvm()
    if "+avx512f" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the host CPU has no AVX-512")
    return optimized_ir(run_pipeline(graph).schedule)


def _calls(text: str) -> list[str]:
    return [line for line in text.splitlines() if "call" in line and "@" in line]


def test_transcendental_kernel_is_512_bit_vector_code_without_libm():
    b = Builder("expchain")
    x = b.input("x", (64, 4096))
    b.output("y", (x * 0.5).exp() + (x.exp() * x).sigmoid() - (-x).exp().tanh() + x.erf())
    text = _avx512_optimized_ir(b.build())
    start = re.search(r"define .*@\"?kernel\.", text)
    assert start, "no kernel function in the optimized IR"
    kernel = text[start.start():]
    kernel = kernel[:kernel.index("\n}\n")]
    assert "<16 x float>" in kernel
    libm = [c for c in _calls(text) if any(f"@{f}" in c for f in ("exp", "expf", "tanhf", "logf",
                                                            "erf", "erff", "llvm.exp",
                                                            "llvm.tanh"))]
    assert not libm, libm[:3]


def test_tanh_form_follows_a_sigmoid_of_the_same_operand(rng):
    """16-lane f32 tanh takes the table form (vpermi2ps / vpermt2ps) unless the kernel also
    takes the sigmoid of the same operand, where the exp form reuses sigmoid's exp; both agree
    with the reference."""
    def graph(with_sigmoid: bool):
        b = Builder("tanh_form")
        x, w = b.input("x", (64, 1024)), b.input("w", (64, 1024))
        y = b.tanh(x) * w + b.sigmoid(w)
        b.output("y", y + b.sigmoid(x) if with_sigmoid else y)
        return b.build()

    for with_sigmoid in (False, True):
        g = graph(with_sigmoid)
        assert bool(re.search(r"vpermi2var|vpermt2var", _avx512_optimized_ir(g))) \
            != with_sigmoid
        inputs = {k: rng.standard_normal((64, 1024)).astype(np.float32) * 4 for k in "xw"}
        check_llvm(g, inputs)


def test_rounding_is_512_bit_vector_code_without_libm():
    b = Builder("rounding")
    x = b.input("x", (64, 4096))
    b.output("y", x.floor() + x.ceil() * x.round())
    text = _avx512_optimized_ir(b.build())
    for fn in ("floor", "ceil", "roundeven"):
        assert f"@llvm.{fn}.v16f32" in text, fn
    libm = re.compile(r"@(floorf?|ceilf?|roundf?|rintf?|roundevenf?)\b")
    assert not [c for c in _calls(text) if libm.search(c)]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_sin_cos_are_vector_code_without_libm(dtype):
    """sin/cos vectorize (f32 computes in f64 lanes) and nothing calls libm or LLVM's sin/cos;
    f32's huge-argument reduction cuts 2/π's bits out of constants, so it loads no table."""
    b = Builder("trig")
    x = b.input("x", (64, 4096), dtype)
    b.output("y", x.sin() * x.cos())
    text = _avx512_optimized_ir(b.build())
    assert re.search(r"<(8|16) x double>", text)
    assert ("two_over_pi" in text) == (dtype == "f64")
    libm = re.compile(r"@(llvm\.)?(sinf?|cosf?|sincosf?)(\.[a-z0-9]+)?\b")
    assert not [c for c in _calls(text) if libm.search(c)]


def test_kernels_differing_in_constant_offsets_share_a_function(rng):
    """An unrolled recurrence, unfused: step t's slice kernel reads xs[t] (a constant index),
    the same code on a shifted pointer, so all steps share one function per op."""
    b = Builder("recurrence")
    xs = b.input("xs", (6, 3, 40))
    h = b.zeros((3, 40))
    for t in range(6):
        step = b.reshape(b.op("slice", xs, start=(t, 0, 0), stop=(t + 1, 3, 40),
                              step=(1, 1, 1)), (3, 40))
        h = (h * 0.5 + step).tanh()
    b.output("h", h)
    exe = check_llvm(b.build(), {"xs": rng.standard_normal((6, 3, 40)).astype(np.float32)},
                     fuse=False)
    plans = exe.info["kernel_plans"]
    functions = {p["function"] for p in plans.values()}
    assert len(plans) >= 18 and len(functions) <= 6, (len(plans), functions)


def test_steps_with_reductions_share_a_function(rng):
    """Each step's fused kernel holds a row reduction whose name comes from that step's graph
    value: the name is not part of the code, so the steps still share one function."""
    b = Builder("steps")
    x, w = b.input("x", (8, 8, 32)), b.input("w", (32, 32))
    h = b.zeros((8, 32))
    for t in range(8):
        xt = b.reshape(b.op("slice", x, start=(t, 0, 0), stop=(t + 1, 8, 32),
                            step=(1, 1, 1)), (8, 32))
        z = (h @ w + xt).tanh()  # the product keeps the steps' kernels apart
        h = z - b.reduce_sum(z, axes=(1,), keepdims=True) * (1.0 / 32)
    b.output("h", h)
    exe = check_llvm(b.build(), {"x": rng.standard_normal((8, 8, 32)).astype(np.float32),
                                 "w": rng.standard_normal((32, 32)).astype(np.float32) / 6})
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "loop"]
    # the first step (h = 0) and the last (it writes the output) have code of their own
    assert len(plans) == 8 and len({p["function"] for p in plans}) <= 3, plans


def test_constant_column_reads_keep_the_row_stride(rng):
    """Unfused, x[:, p] is a kernel reading a constant column: it shares one function for
    every p on a shifted pointer, and the rows keep x's stride (the axis after them is not
    shrunk to one element, which once made every row after the first read the wrong one)."""
    b = Builder("columns")
    x = b.input("x", (3, 40))
    cols = [b.op("slice", x, start=(0, p), stop=(3, p + 1), step=(1, 1)) * float(p + 1)
            for p in (5, 17, 39)]
    b.output("y", b.op("concat", *cols, axis=1))
    exe = check_llvm(b.build(), {"x": rng.standard_normal((3, 40)).astype(np.float32)},
                     fuse=False)
    plans = exe.info["kernel_plans"].values()
    assert len({p["function"] for p in plans if p["kind"] == "loop"}) < len(plans)


def test_lstm_over_256_steps_compiles_and_matches(rng):
    """The T outputs of an unrolled LSTM are concatenated by a select tree of depth log2 T;
    one select per step nested 256 deep and overflowed the compiler's expression walkers."""
    t = 256
    b = Builder("long_lstm", seed=0)
    xs, h0, c0 = b.input("xs", (t, 2, 3)), b.input("h0", (2, 4)), b.input("c0", (2, 4))
    hs, h_t, c_t = b.lstm(xs, h0, c0, b.param("W_x", (3, 16), init="glorot"),
                          b.param("W_z", (4, 16), init="glorot"),
                          b.param("b", (16,), init="normal"))
    ins = {"xs": rng.standard_normal((t, 2, 3)).astype(np.float32),
           "h0": rng.standard_normal((2, 4)).astype(np.float32),
           "c0": rng.standard_normal((2, 4)).astype(np.float32)}
    check_llvm(b.build(outputs={"hs": hs, "h": h_t, "c": c_t}), ins)


def test_chain_of_thousands_of_elementwise_ops_compiles_and_matches(rng):
    b = Builder("chain")
    x = b.input("x", (70,))
    y = x
    for k in range(1500):
        y = (y * 0.999 + 0.001) if k % 2 else (y * 1.001).tanh()
    b.output("y", y)
    check_llvm(b.build(), {"x": rng.standard_normal(70).astype(np.float32)})


def test_hundreds_of_reshapes_and_transposes_in_turn_compile_and_match(rng):
    """Each reshape after a transpose nests the index in divisions once more (its size
    doubles): fusion stops at an index cap and stores, instead of compiling for ever."""
    b = Builder("shuffle")
    x = b.input("x", (4, 6))
    y = x
    for k in range(400):
        y = y.transpose((1, 0)) if k % 2 == 0 else y.reshape((4, 6))
    b.output("y", y * 2.0)
    check_llvm(b.build(), {"x": rng.standard_normal((4, 6)).astype(np.float32)})


@pytest.mark.parametrize("cols", [2048, 2049])
def test_large_outputs_use_streaming_stores(cols, rng):
    """Outputs of 16 MiB and more are written with non-temporal stores where a full vector is
    64-byte aligned (every row with 2048 columns; some rows with 2049) and masked stores
    elsewhere: the same numbers either way."""
    b = Builder("stream")
    x = b.input("x", (2048, cols))
    v = b.input("v", (cols,))
    b.output("y", x * v + 1.0)
    ins = {"x": rng.standard_normal((2048, cols)).astype(np.float32),
           "v": rng.standard_normal(cols).astype(np.float32)}
    exe = check_llvm(b.build(), ins)
    (plan,) = exe.info["kernel_plans"].values()
    assert plan["streaming"] and plan["lanes"], plan


def test_large_pointwise_chain_streams_and_prefetches(rng):
    """A 16 MiB sigmoid + tanh chain: streaming stores despite the cost of the value, and its
    large input prefetched ahead (the small broadcast operand is not)."""
    from graphc.backends.llvm.program import generated_ir

    b = Builder("stream_chain")
    x = b.input("x", (1024, 4096))
    v = b.input("v", (4096,))
    b.output("y", b.sigmoid(x * v) + b.tanh(x) * 0.5)
    ins = {"x": rng.standard_normal((1024, 4096)).astype(np.float32) * 4,
           "v": rng.standard_normal(4096).astype(np.float32)}
    exe = check_llvm(b.build(), ins)
    (plan,) = exe.info["kernel_plans"].values()
    assert plan["streaming"] and plan["lanes"], plan
    text = generated_ir(exe.schedule)
    assert "!nontemporal" in text
    assert text.count("call void @\"llvm.prefetch") == 2  # x, each vector of the pair loop


@pytest.mark.parametrize("n", [16, 31, 32, 48, 49, 80, 1000])
def test_vector_loop_pairs_and_tail(n):
    """The explicit vector loop runs pairs of vectors, at most one single vector, then one
    masked vector: every split of n into those computes every element once."""
    b = Builder("pairs")
    x = b.input("x", (3, n))
    b.output("y", b.sigmoid(x) * 2.0 + b.tanh(x))
    xs = np.random.default_rng(n).standard_normal((3, n)).astype(np.float32) * 4
    check_llvm(b.build(), {"x": xs})
