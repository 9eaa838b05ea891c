"""LLVM loop kernels with reductions: sums, maxima and argmax over every axis pattern (row and
column schedules), persistent multi-sweep reductions (softmax, batch norm), window reductions
(pooling with stride and padding), NaN handling, f64 and integer reductions; against the
reference backend. The loop-nest normalization is checked on its own."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.codegen_loop import normalize_nest, plan_loop
from graphc.ir.builder import Builder
from graphc.pipeline import run_pipeline

from .conftest import check_llvm

FUSE = [True, False]


@pytest.mark.parametrize("fuse", FUSE)
def test_sums_maxima_argmax_over_axes(fuse, rng):
    b = Builder("reductions")
    x = b.input("x", (6, 7, 33))
    for axes in [(0,), (1,), (2,), (0, 2), (1, 2), (0, 1), None]:
        tag = "all" if axes is None else "".join(map(str, axes))
        b.output(f"sum{tag}", x.sum(axes))
        b.output(f"max{tag}", x.max(axes, keepdims=True))
        b.output(f"mean{tag}", x.mean(axes))
    for axis in (0, 1, 2):
        b.output(f"argmax{axis}", b.op("argmax", x, axis=axis))
    b.output("sum_of_exp", (x * 2.0).exp().sum((2,)))
    xs = rng.standard_normal((6, 7, 33)).astype(np.float32)
    xs[2, 3, 5] = xs[2, 3, 9] = 9.0  # a tie: argmax takes the first
    check_llvm(b.build(), {"x": xs}, fuse=fuse, tol=dict(rtol=1e-5, atol=1e-5))


ROW_LENGTHS = (1, 7, 16, 17, 63, 64, 65, 100, 200)  # around the vector width and the unroll


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_row_sums_and_maxima_are_vector_loops(dtype, rng):
    """Float sums and maxima along a contiguous row run as explicit vector loops (unrolled
    main loop, leftover vectors, masked tail whose idle lanes must not count): every row length
    around the vector width, a NaN (max propagates it), a row of -inf, a sum over exp."""
    b = Builder("rowred")
    ins = {}
    for n in ROW_LENGTHS:
        x = b.input(f"x{n}", (5, n), dtype)
        b.output(f"sum{n}", x.sum((1,)))
        b.output(f"max{n}", x.max((1,)))
        b.output(f"sumexp{n}", (x - x.max((1,), keepdims=True)).exp().sum((1,)))
        xs = rng.standard_normal((5, n)).astype(np.float32 if dtype == "f32" else np.float64)
        xs[1, n // 2] = np.nan
        xs[2] = -np.inf
        xs[3] -= 50.0  # all negative: a max that started from 0 instead of -inf shows
        ins[f"x{n}"] = xs
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-5, atol=1e-6))
    from graphc.backends.llvm.program import generated_ir

    assert "vred" in generated_ir(exe.schedule)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_reductions_over_outer_loops_carry_vector_accumulators(dtype, rng):
    """Per-channel sums and maxima over (batch, rows x columns), a batch norm's statistics:
    the contiguous plane is the vector loop, the batch loop around it carries the vector
    accumulators and one shuffle tree ends the row. Planes of one vector, of a masked tail
    and of several vectors; a NaN, a channel of -inf, all-negative values, a second sweep
    reading the first's result. Each plane's loop fetches the next plane of the batch."""
    b = Builder("nested_red")
    ins = {}
    np_dt = np.float32 if dtype == "f32" else np.float64
    for h, w in ((4, 4), (4, 5), (8, 8), (3, 30)):
        x = b.input(f"x{h}_{w}", (6, 5, h, w), dtype)
        b.output(f"sum{h}_{w}", x.sum((0, 2, 3)))
        b.output(f"max{h}_{w}", x.max((0, 2, 3)))
        centered = x - x.mean((0, 2, 3), keepdims=True)
        b.output(f"var{h}_{w}", (centered * centered).mean((0, 2, 3)))
        xs = rng.standard_normal((6, 5, h, w)).astype(np_dt)
        xs[2, 1, h - 1, w // 2] = np.nan
        xs[:, 2] = -np.inf
        xs[:, 3] -= 50.0
        ins[f"x{h}_{w}"] = xs
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-5, atol=1e-6))
    from graphc.backends.llvm.program import generated_ir

    text = generated_ir(exe.schedule)
    assert "vrow" in text and "llvm.prefetch" in text


@pytest.mark.parametrize("case", ["pool", "short"])
def test_windows_and_short_rows_stay_scalar_loops(case, rng):
    """A 2x2 pooling window and a row shorter than two vectors keep the scalar reduction loop
    (a vector loop there would be one masked vector, with gathers for the window), and the
    loop vectorizer leaves their task loop alone: widened across tasks it gathered every
    window element (max-pool 20 % slower than the SLP-vectorized row it makes now)."""
    b = Builder("scalar_rows")
    if case == "pool":
        x = b.input("x", (4, 16, 32, 32))
        b.output("y", b.max_pool2d(x, kernel=2))
        xs = rng.standard_normal((4, 16, 32, 32))
    else:
        x = b.input("x", (64, 20))
        b.output("y", x.sum((1,)))
        xs = rng.standard_normal((64, 20))
    exe = check_llvm(b.build(), {"x": xs.astype(np.float32)}, tol=dict(rtol=1e-5, atol=1e-5))
    from graphc.backends.llvm.program import generated_ir, optimized_ir

    assert "vred" not in generated_ir(exe.schedule)
    if case == "pool":
        assert "llvm.masked.gather" not in optimized_ir(exe.schedule)


def test_column_reduction_uses_the_column_schedule(rng):
    """sum over the batch axis of [B, H] (a bias gradient): accumulators along H."""
    b = Builder("colsum")
    x = b.input("x", (64, 300))
    b.output("db", (x * x).sum((0,)))
    b.output("colmax", x.max((0,)))
    b.output("colarg", b.op("argmax", x, axis=0))
    g = b.build()
    exe = check_llvm(g, {"x": rng.standard_normal((64, 300)).astype(np.float32)},
                     tol=dict(rtol=1e-5, atol=1e-5))
    assert any(p.get("schedule") == "column" for p in exe.info["kernel_plans"].values())


@pytest.mark.parametrize("fuse", FUSE)
def test_softmax_log_softmax_and_cross_entropy(fuse, rng):
    b = Builder("softmax")
    x = b.input("x", (5, 300))
    labels = b.input("labels", (5,), "i64")
    b.output("softmax", b.softmax(x * 30.0))  # large logits: the max sweep matters
    b.output("log_softmax", b.log_softmax(x))
    b.output("softmax0", b.softmax(x, axis=0))
    b.output("loss", b.cross_entropy(x, labels))
    ins = {"x": rng.standard_normal((5, 300)).astype(np.float32),
           "labels": np.array([0, 299, 7, 3, 150], np.int64)}
    check_llvm(b.build(), ins, fuse=fuse, tol=dict(rtol=2e-5, atol=2e-6))


@pytest.mark.parametrize("fuse", FUSE)
def test_batch_norm_training_statistics(fuse, rng):
    b = Builder("bn")
    x = b.input("x", (8, 6, 5, 5))
    gamma = b.param("gamma", (6,), init="ones")
    beta = b.param("beta", (6,), init="zeros")
    rm = b.param("rm", (6,), init="zeros", frozen=True)
    rv = b.param("rv", (6,), init="ones", frozen=True)
    y = b.batch_norm(x, gamma, beta, rm, rv, training=True)
    b.output("y", y if not isinstance(y, tuple) else y[0])
    g = b.build()
    check_llvm(g, {"x": (rng.standard_normal((8, 6, 5, 5)) * 3 + 1).astype(np.float32)},
               fuse=fuse, tol=dict(rtol=1e-4, atol=1e-5))


@pytest.mark.parametrize("fuse", FUSE)
def test_window_reductions(fuse, rng):
    b = Builder("windows")
    x = b.input("x", (2, 3, 9, 10))
    b.output("maxpool", b.max_pool2d(x, kernel=2))
    b.output("maxpool_pad", b.op("reduce_window", x, kind="max", window=(1, 1, 3, 3),
                                 strides=(1, 1, 2, 2), padding=(0, 0, 0, 0, 1, 1, 1, 1)))
    b.output("sumpool", b.op("reduce_window", x, kind="sum", window=(1, 2, 2, 3),
                             strides=(1, 1, 3, 1), padding=(0, 0, 1, 0, 0, 2, 1, 1)))
    b.output("avgpool", b.avg_pool2d(x, kernel=3, stride=2, padding=1))
    check_llvm(b.build(), {"x": rng.standard_normal((2, 3, 9, 10)).astype(np.float32)},
               fuse=fuse)


@pytest.mark.parametrize("fuse", FUSE)
def test_nan_in_reductions(fuse):
    """reduce_max propagates NaN (np.max); argmax returns the first NaN (np.argmax); sums of
    NaN are NaN; a row of -inf has max -inf and argmax 0."""
    b = Builder("nanred")
    x = b.input("x", (4, 5))
    b.output("max", x.max((1,)))
    b.output("colmax", x.max((0,)))
    b.output("argmax", b.op("argmax", x, axis=1))
    b.output("sum", x.sum((1,)))
    b.output("softmax", b.softmax(x))
    nan, inf = np.nan, np.inf
    xs = np.array([[1, nan, 3, nan, 0], [-inf, -inf, -inf, -inf, -inf], [1, 2, 3, 3, -1],
                   [nan, 5, 6, 7, 8]], np.float32)
    with np.errstate(all="ignore"):
        check_llvm(b.build(), {"x": xs}, fuse=fuse)


def test_nan_in_vectorized_row_max(rng):
    """Rows long enough for the vectorized max loop (several unrolled vectors): a NaN in the
    vector body, in the remainder, or first still makes the row's max (and softmax) NaN."""
    b = Builder("nanrow")
    x = b.input("x", (5, 1000))
    b.output("max", x.max((1,)))
    b.output("softmax", b.softmax(x))
    xs = rng.standard_normal((5, 1000)).astype(np.float32)
    xs[0, 200] = xs[1, 999] = xs[2, 0] = np.nan
    xs[3, 500] = -0.0  # a signed zero among negatives: the max is a zero (either sign)
    xs[3] = -np.abs(xs[3])
    with np.errstate(all="ignore"):
        check_llvm(b.build(), {"x": xs})


@pytest.mark.parametrize("dtype", ["f64", "i32", "i64"])
def test_other_dtypes(dtype, rng):
    b = Builder("dt")
    x = b.input("x", (5, 40), dtype)
    b.output("sum", x.sum((1,)))
    b.output("colsum", x.sum((0,)))
    b.output("max", x.max((1,)))
    b.output("argmax", b.op("argmax", x, axis=1))
    np_dt = {"f64": np.float64, "i32": np.int32, "i64": np.int64}[dtype]
    xs = (rng.standard_normal((5, 40)) * 100).astype(np_dt)
    check_llvm(b.build(), {"x": xs}, tol=dict(rtol=1e-12, atol=1e-10))


def test_normalize_nest_merges_contiguous_loops():
    b = Builder("nest")
    x = b.input("x", (4, 3, 8, 8))
    c = b.input("c", (3, 1, 1))
    b.output("y", (x * c).exp())
    b.output("s", x.sum((2, 3)))
    s = run_pipeline(b.build()).schedule
    shapes = {n: buf.type.shape for n, buf in s.buffers.items()}
    loops = [k for k in s.kernels if k.kind == "loop"]
    nests = {tuple(k.reduce_domain): normalize_nest(k, shapes) for k in loops}
    pointwise = nests[()]
    assert [n for _, n in pointwise.outer] == [4, 3, 64]  # H, W merged; C kept (broadcast)
    red = nests[(8, 8)]
    assert [n for _, n in red.outer] == [12] and [n for _, n in red.inner] == [64]
    assert all(plan_loop(k, shapes).tasks >= 1 for k in loops)


def test_values_shared_between_sweeps_are_stashed_once(rng):
    """exp(x - max) over a two-axis row feeds both the sum and the normalized store: computed
    in one sweep, kept in a row-sized stack array for the next (same numbers either way)."""
    import graphc.backends.llvm.codegen_rows as codegen_rows

    b = Builder("stash")
    x = b.input("x", (6, 5, 40))
    e = (x - x.max((1, 2), keepdims=True)).exp()
    b.output("y", e / e.sum((1, 2), keepdims=True))
    g = b.build()
    ins = {"x": rng.standard_normal((6, 5, 40)).astype(np.float32) * 5}
    exe = check_llvm(g, ins)
    limit = codegen_rows.STASH_LIMIT
    codegen_rows.STASH_LIMIT = 0
    try:
        plain = check_llvm(g, ins, cache=False)
        plain_blocks = _exp_call_blocks(plain)
    finally:
        codegen_rows.STASH_LIMIT = limit
    np.testing.assert_allclose(exe(ins)["y"], plain(ins)["y"], rtol=1e-6)
    # computed in the sum's sweep (a vector reduction loop) only, loaded in the store's sweep
    stashed = _exp_call_blocks(exe)
    assert stashed and all(label.startswith("vred") for label in stashed)
    assert any(not label.startswith("vred") for label in plain_blocks)


def _exp_call_blocks(exe) -> list[str]:
    """The labels of the basic blocks calling exp, one per call, in the generated IR."""
    import re

    from graphc.backends.llvm.program import generated_ir

    labels, label = [], None
    for line in generated_ir(exe.schedule).splitlines():
        if m := re.match(r'^"?([\w.]+)"?:', line):
            label = m.group(1)
        elif "call" in line and "@\"graphc.math.exp." in line:
            labels.append(label)
    return labels


def test_long_row_softmax_streams_and_prefetches(rng):
    """A 16 MiB softmax: the store-only last sweep is an explicit vector loop over the stashed
    exp, writes with streaming stores and prefetches the next row for the max sweep."""
    b = Builder("big_softmax")
    b.output("y", b.softmax(b.input("x", (1024, 4096))))
    exe = check_llvm(b.build(), {"x": rng.standard_normal((1024, 4096)).astype(np.float32)},
                     tol=dict(rtol=1e-5, atol=1e-9))
    (plan,) = exe.info["kernel_plans"].values()
    assert plan["streaming"] and plan["lanes"]
    from graphc.backends.llvm.program import generated_ir

    text = generated_ir(exe.schedule)
    assert "llvm.prefetch" in text and "!nontemporal" in text


def _only_loop_plan(build):
    b = Builder("one")
    build(b)
    s = run_pipeline(b.build()).schedule
    shapes = {n: buf.type.shape for n, buf in s.buffers.items()}
    (k,) = [k for k in s.kernels if k.kind == "loop"]
    return plan_loop(k, shapes)


def test_costly_points_make_smaller_chunks():
    """Chunks are sized by cost, not points: an LSTM step's gates (sigmoids and tanh over
    [32, 256]) split into equal chunks two threads can share, a cheap add of the same size
    stays one chunk."""
    def gates(b):
        pre, c = b.input("pre", (32, 1024)), b.input("c", (32, 256))

        def gate(k):
            return b.slice(pre, start=(0, 256 * k), stop=(32, 256 * (k + 1)), step=(1, 1))

        c_new = c * b.sigmoid(gate(1)) + b.sigmoid(gate(0)) * b.tanh(gate(2))
        b.output("h", b.tanh(c_new) * b.sigmoid(gate(3)))

    costly = _only_loop_plan(gates)
    cheap = _only_loop_plan(lambda b: b.output("y", b.input("c", (32, 256)) + 1.0))
    assert costly.parallel and -(-costly.tasks // costly.grain) >= 2
    assert costly.tasks % costly.grain == 0
    assert -(-cheap.tasks // cheap.grain) == 1
