"""Window ops: reduce_window vs torch pooling and a brute-force loop, select_scatter vs torch's
max-pool backward (ties resolved to the first maximum), VJPs vs float64 finite differences and
torch autograd, attribute normalization and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import AttributeSchemaError, DTypeError, ShapeError
from graphc.ir.registry import check_node
from graphc.ir.types import TensorType

from ..conftest import roundtrip
from .harness import check_vjp, run_op, vjp_graph


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def pool_attrs(k, s, p):
    """Our attributes for a torch-style 2-D pool over [N, C, H, W] (symmetric padding p)."""
    return {"window": (1, 1) + k, "strides": (1, 1) + s, "padding": (0, 0, 0, 0, p, p, p, p)}


def brute_window(x, kind, window, strides, padding):
    """Loop over every output position and window offset (independent of stride tricks)."""
    pairs = [(padding[2 * i], padding[2 * i + 1]) for i in range(x.ndim)]
    out_shape = [(d + lo + hi - w) // s + 1
                 for d, w, s, (lo, hi) in zip(x.shape, window, strides, pairs, strict=True)]
    out = np.zeros(out_shape)
    for o in itertools.product(*(range(m) for m in out_shape)):
        vals = []
        for off in itertools.product(*(range(w) for w in window)):
            pos = [oi * s + k - lo for oi, s, k, (lo, _) in zip(o, strides, off, pairs,
                                                                 strict=True)]
            inside = all(0 <= p < d for p, d in zip(pos, x.shape, strict=True))
            vals.append(x[tuple(pos)] if inside else (-np.inf if kind == "max" else 0.0))
        out[o] = max(vals) if kind == "max" else sum(vals)
    return out


# (kernel, stride, padding) for 2-D pools over [N, C, H, W]
POOLS = [((2, 2), (2, 2), 0), ((3, 3), (2, 2), 1), ((3, 2), (1, 2), 1), ((2, 3), (3, 1), 0),
         ((3, 3), (1, 1), 1)]


@pytest.mark.parametrize("k, s, p", POOLS)
def test_reduce_window_max_matches_max_pool2d(k, s, p, rng):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    (got,) = run_op("reduce_window", [x], kind="max", **pool_attrs(k, s, p))
    want = F.max_pool2d(T(x), k, s, padding=p).numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k, s, p", POOLS)
def test_reduce_window_sum_matches_avg_pool2d(k, s, p, rng):
    x = rng.standard_normal((2, 3, 7, 8))
    (got,) = run_op("reduce_window", [x], kind="sum", **pool_attrs(k, s, p))
    want = F.avg_pool2d(T(x), k, s, padding=p, count_include_pad=True).numpy() * (k[0] * k[1])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_reduce_window_1d_pools_match_torch(rng):
    x = rng.standard_normal((2, 3, 11)).astype(np.float32)
    attrs = {"window": (1, 1, 3), "strides": (1, 1, 2), "padding": (0, 0, 0, 0, 1, 1)}
    (mx,) = run_op("reduce_window", [x], kind="max", **attrs)
    np.testing.assert_array_equal(mx, F.max_pool1d(T(x), 3, 2, padding=1).numpy())
    (sm,) = run_op("reduce_window", [x], kind="sum", **attrs)
    want = F.avg_pool1d(T(x), 3, 2, padding=1, count_include_pad=True).numpy() * 3
    np.testing.assert_allclose(sm, want, rtol=1e-5, atol=1e-5)


# windows over every axis, asymmetric and negative padding: vs the brute-force loop
GENERAL = [((5, 6), (2, 3), (1, 2), (1, 0, 2, 1)), ((9,), (3,), (2,), (-1, 2)),
           ((3, 4, 5), (2, 1, 3), (1, 2, 2), (0, 1, 0, 0, 2, 2)), ((4, 4), (4, 4), (1, 1), None),
           ((6, 5), (1, 2), (3, 3), (0, 0, -1, 0))]


@pytest.mark.parametrize("kind", ["max", "sum"])
@pytest.mark.parametrize("shape, window, strides, padding", GENERAL)
def test_reduce_window_general_matches_loop(kind, shape, window, strides, padding, rng):
    x = rng.standard_normal(shape)
    attrs = {"window": window, "strides": strides}
    if padding is not None:
        attrs["padding"] = padding
    (got,) = run_op("reduce_window", [x], kind=kind, **attrs)
    want = brute_window(x, kind, window, strides, padding or (0,) * (2 * len(shape)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_reduce_window_int_max_pads_with_lowest(rng):
    x = -rng.integers(1, 100, (4, 5)).astype(np.int32)  # all negative: padding must not win
    (got,) = run_op("reduce_window", [x], kind="max", window=(2, 2), strides=(2, 2),
                    padding=(1, 1, 1, 0))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, brute_window(x, "max", (2, 2), (2, 2), (1, 1, 1, 0)))


def test_reduce_window_f16_sum_accumulates_in_f32():
    x = np.ones((1, 4096), np.float16)
    (got,) = run_op("reduce_window", [x], kind="sum", window=(1, 4096))
    assert got.dtype == np.float16 and got.item() == 4096


# -- normalization and errors ---------------------------------------------------------------------


def test_window_attrs_normalize_and_roundtrip():
    full, types = check_node("reduce_window", [TensorType((2, 7))],
                             {"kind": "max", "window": [1, 3], "padding": ((0, 0), (1, 2))})
    assert full["strides"] == (1, 1) and full["padding"] == (0, 0, 1, 2)
    assert types[0].shape == (2, 8)
    again, _ = check_node("reduce_window", [TensorType((2, 7))], full)
    assert again == full
    full, _ = check_node("select_scatter", [TensorType((2, 7)), TensorType((2, 5))],
                         {"window": (1, 3)})
    assert full == {"window": (1, 3), "strides": (1, 1), "padding": (0, 0, 0, 0)}
    b = Builder("w")
    x = b.input("x", (1, 2, 6, 6))
    y = b.reduce_window(x, kind="max", window=(1, 1, 2, 2), strides=(1, 1, 2, 2))
    s = b.reduce_window(x, kind="sum", window=(1, 1, 3, 3), padding=(0, 0, 0, 0, 1, 1, 1, 1))
    z = b.select_scatter(x, y, window=(1, 1, 2, 2), strides=(1, 1, 2, 2))
    roundtrip(b.build(outputs={"y": y, "s": s, "z": z}))


@pytest.mark.parametrize("op, shapes, attrs, err, words", [
    ("reduce_window", [(4, 5)], {"kind": "max", "window": (2,)}, AttributeSchemaError,
     "window=(2,) must be 2 ints"),
    ("reduce_window", [(4, 5)], {"kind": "max", "window": (2, 2), "strides": (1, 0)},
     AttributeSchemaError, ">= 1"),
    ("reduce_window", [(4, 5)], {"kind": "max", "window": (2, 2), "padding": (1, 1)},
     AttributeSchemaError, "padding"),
    ("reduce_window", [(4, 5)], {"kind": "mean", "window": (2, 2)}, AttributeSchemaError,
     "kind"),
    ("reduce_window", [(4, 5)], {"kind": "sum", "window": (2, 6)}, ShapeError, "(4, 5)"),
    ("reduce_window", [(4, 5)], {"kind": "sum", "window": (2, 2), "padding": (0, 0, -2, -2)},
     ShapeError, "(4, 5)"),
    ("select_scatter", [(4, 6), (2, 2)], {"window": (2, 2), "strides": (2, 2)}, ShapeError,
     "src (2, 2) must have the window output shape (2, 3)"),
])
def test_window_errors_name_shapes(op, shapes, attrs, err, words):
    with pytest.raises(err) as e:
        check_node(op, [TensorType(s) for s in shapes], attrs)
    assert words in str(e.value) and f"{op}(" in str(e.value)


def test_select_scatter_dtype_mismatch():
    with pytest.raises(DTypeError, match="select_scatter"):
        check_node("select_scatter", [TensorType((4,)), TensorType((2,), "f64")],
                   {"window": (2,), "strides": (2,)})


# -- select_scatter vs torch's max-pool backward -------------------------------------------------


def torch_pool_grad(x, ct, k, s, p):
    xt = T(x).requires_grad_()
    F.max_pool2d(xt, k, s, padding=p).backward(T(ct))
    return xt.grad.numpy()


@pytest.mark.parametrize("k, s, p", POOLS)
@pytest.mark.parametrize("values", ["distinct", "ties", "constant"])
def test_select_scatter_matches_max_pool2d_backward(k, s, p, values, rng):
    x = rng.standard_normal((2, 2, 7, 8))
    if values == "ties":
        x = np.round(x)  # many equal maxima inside a window
    elif values == "constant":
        x = np.full_like(x, 0.5)  # every window all-equal: the first position must win
    attrs = pool_attrs(k, s, p)
    (mx,) = run_op("reduce_window", [x], kind="max", **attrs)
    ct = rng.standard_normal(mx.shape)
    (got,) = run_op("select_scatter", [x, ct], **attrs)
    np.testing.assert_allclose(got, torch_pool_grad(x, ct, k, s, p), rtol=1e-12, atol=1e-12)


def test_select_scatter_never_selects_padding():
    # windows that start in the padding and hold only -inf real elements
    x = np.full((1, 1, 3, 3), -np.inf)
    x[0, 0, 2, 2] = 1.0
    attrs = pool_attrs((2, 2), (1, 1), 1)
    (mx,) = run_op("reduce_window", [x], kind="max", **attrs)
    ct = np.arange(mx.size, dtype=np.float64).reshape(mx.shape) + 1
    (got,) = run_op("select_scatter", [x, ct], **attrs)
    np.testing.assert_array_equal(got, torch_pool_grad(x, ct, (2, 2), (1, 1), 1))
    assert got.sum() == ct.sum()  # every window found a real element
    g = vjp_graph("select_scatter", [x, ct], attrs, [np.ones_like(x)])
    res = run_graph(g, {"x0": x, "x1": ct, "ct0": np.ones_like(x)})
    np.testing.assert_array_equal(res["g1"], np.ones_like(ct))


# -- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["max", "sum"])
@pytest.mark.parametrize("shape, window, strides, padding", GENERAL)
def test_reduce_window_vjp_finite_differences(kind, shape, window, strides, padding, rng):
    attrs = {"kind": kind, "window": window, "strides": strides}
    if padding is not None:
        attrs["padding"] = padding
    check_vjp("reduce_window", [rng.standard_normal(shape)], attrs)


@pytest.mark.parametrize("k, s, p", POOLS)
def test_reduce_window_vjp_matches_torch_with_ties(k, s, p, rng):
    x = np.round(rng.standard_normal((1, 2, 7, 8)))
    attrs = {"kind": "max", **pool_attrs(k, s, p)}
    (mx,) = run_op("reduce_window", [x], **attrs)
    ct = rng.standard_normal(mx.shape)
    g = vjp_graph("reduce_window", [x], attrs, [ct])
    got = run_graph(g, {"x0": x, "ct0": ct})["g0"]
    np.testing.assert_allclose(got, torch_pool_grad(x, ct, k, s, p), rtol=1e-12, atol=1e-12)
    xt = T(x).requires_grad_()
    F.avg_pool2d(xt, k, s, padding=p, count_include_pad=True).backward(T(ct))
    attrs["kind"] = "sum"
    g = vjp_graph("reduce_window", [x], attrs, [ct])
    got = run_graph(g, {"x0": x, "ct0": ct})["g0"]
    np.testing.assert_allclose(got, xt.grad.numpy() * (k[0] * k[1]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, window, strides, padding", GENERAL[:3] + [
    ((2, 7, 8), (1, 3, 3), (1, 2, 2), (0, 0, 1, 1, 1, 1))])
@pytest.mark.parametrize("ties", [False, True])
def test_select_scatter_vjp(shape, window, strides, padding, ties, rng):
    x = rng.standard_normal(shape)
    if ties:
        x = np.round(x)
    attrs = {"window": window, "strides": strides, "padding": padding}
    (mx,) = run_op("reduce_window", [x], kind="max", **attrs)
    src = rng.standard_normal(mx.shape)
    check_vjp("select_scatter", [x, src], attrs, wrt=[1])
    # and against the definition: each window reads the cotangent at its first maximum
    ct = rng.standard_normal(shape)
    g = vjp_graph("select_scatter", [x, src], attrs, [ct])
    res = run_graph(g, {"x0": x, "x1": src, "ct0": ct})
    assert "g0" not in res  # no gradient w.r.t. x
    pairs = [(padding[2 * i], padding[2 * i + 1]) for i in range(x.ndim)]
    want = np.zeros(mx.shape)
    for o in itertools.product(*(range(m) for m in mx.shape)):
        for off in itertools.product(*(range(w) for w in window)):
            pos = tuple(oi * s + k - lo for oi, s, k, (lo, _) in zip(o, strides, off, pairs,
                                                                     strict=True))
            if all(0 <= q < d for q, d in zip(pos, shape, strict=True)) and x[pos] == mx[o]:
                want[o] = ct[pos]
                break
    np.testing.assert_array_equal(res["g1"], want)


def test_window_vjps_use_only_graph_ops(rng):
    x = rng.standard_normal((4, 6))
    attrs = {"window": (2, 3), "strides": (2, 1), "padding": (1, 0, 0, 1)}
    g = vjp_graph("select_scatter", [x, np.ones((2, 5))], attrs, [x])
    grad_nodes = [n for n in g.live_nodes() if n is not g.outputs[0][1].node]
    ops = {n.op for n in grad_nodes}
    assert ops <= {"reduce_window", "pad", "slice", "eq", "select", "mul",
                   "sub", "add", "maximum", "constant"}


def brute_first_max(x, window, strides, padding):
    """Per window output position: the x index of its first (row-major) maximum, or None."""
    pairs = [(padding[2 * i], padding[2 * i + 1]) for i in range(x.ndim)]
    out_shape = [(d + lo + hi - w) // s + 1
                 for d, w, s, (lo, hi) in zip(x.shape, window, strides, pairs, strict=True)]
    found = {}
    for o in itertools.product(*(range(m) for m in out_shape)):
        best, where = None, None
        for off in itertools.product(*(range(w) for w in window)):
            pos = tuple(oi * s + k - lo for oi, s, k, (lo, _) in zip(o, strides, off, pairs,
                                                                     strict=True))
            if all(0 <= q < d for q, d in zip(pos, x.shape, strict=True)) and (
                    best is None or x[pos] > best):
                best, where = x[pos], pos
        found[o] = where
    return out_shape, found


@st.composite
def window_geometry(draw):
    n = draw(st.integers(1, 2))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(n))
    window = tuple(draw(st.integers(1, 3)) for _ in range(n))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    padding = tuple(draw(st.integers(-2, 2)) for _ in range(2 * n))
    return shape, window, strides, padding, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=30, deadline=None)
@given(window_geometry())
def test_window_ops_property_vs_loops(geometry):
    shape, window, strides, padding, seed = geometry
    attrs = {"window": window, "strides": strides, "padding": padding}
    try:
        check_node("reduce_window", [TensorType(shape)], {"kind": "sum", **attrs})
    except ShapeError:
        assume(False)
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(shape))  # ties on purpose
    (sm,) = run_op("reduce_window", [x], kind="sum", **attrs)
    np.testing.assert_allclose(sm, brute_window(x, "sum", window, strides, padding), atol=1e-12)
    check_vjp("reduce_window", [rng.standard_normal(shape)], {"kind": "sum", **attrs})
    (mx,) = run_op("reduce_window", [x], kind="max", **attrs)
    np.testing.assert_array_equal(mx, brute_window(x, "max", window, strides, padding))
    out_shape, first = brute_first_max(x, window, strides, padding)
    src = rng.standard_normal(out_shape)
    ct = rng.standard_normal(shape)
    want_scatter, want_gather = np.zeros(shape), np.zeros(out_shape)
    for o, pos in first.items():
        if pos is not None:
            want_scatter[pos] += src[o]
            want_gather[o] = ct[pos]
    (got,) = run_op("select_scatter", [x, src], **attrs)
    np.testing.assert_allclose(got, want_scatter, atol=1e-12)
    res = run_graph(vjp_graph("select_scatter", [x, src], attrs, [ct]),
                    {"x0": x, "x1": src, "ct0": ct})
    np.testing.assert_array_equal(res["g1"], want_gather)
