"""LLVM library kernels: take (any axis, negative indices, i32/i64 indices), scatter_add
(duplicates accumulate, in place after a producer), select_scatter (overlapping windows, ties,
padding) and the embedding / max-pool gradients built from them; out-of-range indices raise a
GraphError naming the op and the index instead of touching memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError
from graphc.ir.ops.window import window_out_shape

from .conftest import check_llvm


@pytest.mark.parametrize("fuse", [True, False])
def test_take_and_scatter_add(fuse, rng):
    b = Builder("gather")
    x = b.input("x", (5, 6, 4))
    i64 = b.input("i64", (3, 2), "i64")
    i32 = b.input("i32", (7,), "i32")
    upd = b.input("upd", (5, 7, 4))
    b.output("take0", b.op("take", x, i64, axis=0) * 2.0)
    b.output("take1", b.op("take", x.exp(), i32, axis=1))
    b.output("take2", b.op("take", x, i64, axis=2))
    b.output("scatter1", b.op("scatter_add", x * 3.0, i32, upd, axis=1))
    idx5 = b.input("i5", (5,), "i64")
    upd5 = b.op("slice", upd, start=(0, 0, 0), stop=(5, 6, 4), step=(1, 1, 1))
    b.output("scatter0", b.op("scatter_add", b.zeros((5, 6, 4)), idx5, upd5, axis=0))
    ins = {"x": rng.standard_normal((5, 6, 4)).astype(np.float32),
           "i64": np.array([[0, -1], [3, 2], [-4, 1]], np.int64),
           "i32": np.array([0, 5, -6, 5, 5, 1, -1], np.int32),
           "i5": np.array([0, 4, -5, 4, 2], np.int64),
           "upd": rng.standard_normal((5, 7, 4)).astype(np.float32)}
    check_llvm(b.build(), ins, fuse=fuse)


def test_out_of_range_index_raises_graph_error(rng):
    b = Builder("bad_take")
    x = b.input("x", (4, 3))
    idx = b.input("idx", (3,), "i64")
    b.output("y", b.op("take", x, idx, axis=0))
    b.output("s", b.op("scatter_add", x, idx, b.op("take", x, idx, axis=0), axis=0))
    exe = graphc.compile(b.build(), target="llvm")
    xs = rng.standard_normal((4, 3)).astype(np.float32)
    ok = exe(x=xs, idx=np.array([3, -4, 0]))
    np.testing.assert_array_equal(ok["y"], xs[[3, 0, 0]])
    for bad in (4, -5, 1 << 40):
        want = f"take: index {bad} \\(at index position \\(1,\\)\\) is out of range \\[-4, 4\\)"
        with pytest.raises(GraphError, match=want):
            exe(x=xs, idx=np.array([0, bad, 1]))
    assert exe(x=xs, idx=np.array([1, 2, 3]))["y"].shape == (3, 3)  # usable afterwards


@pytest.mark.parametrize("fuse", [True, False])
def test_select_scatter_and_pool_gradients(fuse, rng):
    b = Builder("select_scatter")
    x = b.input("x", (2, 3, 7, 8))
    src = b.input("src", (2, 3, 3, 4))
    src2 = b.input("src2", (2, 3, 4, 4))
    b.output("overlap", b.op("select_scatter", x, src, window=(1, 1, 3, 3),
                             strides=(1, 1, 2, 2), padding=(0, 0, 0, 0, 0, 0, 0, 1)))
    b.output("padded", b.op("select_scatter", x, src2, window=(1, 1, 2, 2),
                            strides=(1, 1, 2, 2), padding=(0, 0, 0, 0, 1, 0, 0, 0)))
    b.output("all_axes", b.op("select_scatter", x, b.op("slice", src, start=(0, 0, 0, 0),
                                                        stop=(1, 2, 3, 4), step=(1, 1, 1, 1)),
                              window=(2, 2, 3, 2), strides=(1, 1, 2, 2),
                              padding=(0, 0, 0, 0, 0, 0, 0, 0)))
    xs = np.round(rng.standard_normal((2, 3, 7, 8)) * 2).astype(np.float32)  # many ties
    ins = {"x": xs, "src": rng.standard_normal((2, 3, 3, 4)).astype(np.float32),
           "src2": rng.standard_normal((2, 3, 4, 4)).astype(np.float32)}
    check_llvm(b.build(), ins, fuse=fuse)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_pool_gradients_of_two_column_windows_are_vector_bands(dtype, threads, rng):
    """Windows two columns wide tiling the plane (a 2x2 max pool's gradient, 1-D and taller
    windows) take the vector band form: rows shorter than, equal to and longer than a vector,
    with a masked tail; ties pick the first maximum in row-major order, a NaN window gets
    nothing, a window of -inf its first element."""
    np_dt = np.float32 if dtype == "f32" else np.float64
    cases = [((3, 2, 8, 8), (2, 2)), ((2, 3, 6, 10), (2, 2)), ((1, 2, 4, 36), (2, 2)),
             ((2, 2, 9, 4), (3, 2)), ((2, 2, 8, 2), (4, 2)), ((3, 4, 34), (2,))]
    b = Builder("pairs")
    ins = {}
    for i, (shape, win) in enumerate(cases):
        lead = len(shape) - len(win)
        window = (1,) * lead + win
        attrs = {"window": window, "strides": window, "padding": (0, 0) * len(shape)}
        out_shape = window_out_shape(shape, attrs)
        x, src = b.input(f"x{i}", shape, dtype), b.input(f"s{i}", out_shape, dtype)
        b.output(f"y{i}", b.op("select_scatter", x, src, **attrs))
        xs = np.round(rng.standard_normal(shape) * 1.5).astype(np_dt)  # many ties
        flat = xs.reshape(-1)
        flat[rng.integers(0, flat.size, 3)] = np.nan
        xs[(0,) * lead][tuple(slice(0, w) for w in win)] = -np.inf  # the first window
        ins[f"x{i}"], ins[f"s{i}"] = xs, rng.standard_normal(out_shape).astype(np_dt)
    exe = check_llvm(b.build(), ins, threads=threads)
    forms = [p.get("windows") for p in exe.info["kernel_plans"].values()
             if p["kind"] == "library"]
    assert forms == ["pairs"] * len(cases), forms


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_select_scatter_matches_reference(data):
    """Random geometries (exact tilings, padding, overlap, crops; rows shorter and longer than
    a vector; windows unrolled and looped over), ties and NaN, f32/f64/i32, 1 and 2 threads:
    the same elements as the reference."""
    nd = data.draw(st.integers(1, 3))
    lead = data.draw(st.integers(0, 2))
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=lead, max_size=lead))) + \
        tuple(data.draw(st.lists(st.integers(2, 40), min_size=nd, max_size=nd)))
    window = (1,) * lead + tuple(data.draw(st.integers(1, min(6, n))) for n in shape[lead:])
    strides = (1,) * lead + tuple(data.draw(st.integers(1, 3)) for _ in range(nd))
    padding = (0, 0) * lead + tuple(data.draw(st.integers(0, w - 1)) for w in window[lead:]
                                    for _ in range(2))
    attrs = {"window": window, "strides": strides, "padding": padding}
    out_shape = window_out_shape(shape, attrs)
    dtype = data.draw(st.sampled_from(["f32", "f64", "i32"]))
    b = Builder("select_scatter_random")
    x, src = b.input("x", shape, dtype), b.input("src", out_shape, dtype)
    b.output("y", b.op("select_scatter", x, src, **attrs))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    xs = rng.integers(-2, 3, shape).astype(dtype_np(dtype))  # many ties
    if dtype != "i32" and data.draw(st.booleans()):
        xs[rng.random(shape) < 0.1] = np.nan
    ins = {"x": xs, "src": rng.integers(-5, 6, out_shape).astype(dtype_np(dtype))}
    ref = graphc.compile(b.build(), target="reference")(**ins)["y"]
    for threads in (1, 2):
        got = graphc.compile(b.build(), target="llvm", threads=threads)(**ins)["y"]
        np.testing.assert_array_equal(got, ref)


def dtype_np(dtype: str) -> type:
    return {"f32": np.float32, "f64": np.float64, "i32": np.int32}[dtype]


def test_embedding_gradient(rng):
    """take + its VJP (scatter_add of the cotangent) inside one training-style graph."""
    from graphc.passes.autodiff import autodiff

    b = Builder("embed")
    table = b.param("table", (10, 8), init="normal")
    ids = b.input("ids", (4, 5), "i64")
    e = b.op("take", table, ids, axis=0)
    b.output("loss", (e * e).sum())
    g = autodiff(b.build(), "loss")
    ids_v = rng.integers(0, 10, (4, 5)).astype(np.int64)
    ids_v[0, :3] = 7  # duplicates accumulate
    check_llvm(g, {"ids": ids_v})
