"""Linalg ops: matmul and N-d conv references vs torch CPU, attribute normalization, VJPs vs
float64 finite differences and torch autograd, the seed's 1-D conv worked example, and shape
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import AttributeSchemaError, GraphError, ShapeError
from graphc.ir.registry import check_node
from graphc.ir.types import TensorType

from ..conftest import roundtrip
from .harness import check_vjp, run_op, vjp_graph


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# -- matmul --------------------------------------------------------------------------------------

MATMUL_SHAPES = [((3, 4), (4, 5)), ((1, 4), (4, 1)), ((2, 3, 4), (4, 2)), ((3, 4), (2, 4, 5)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((1, 2, 3), (4, 1, 3, 2)), ((1, 1, 1), (1, 1, 1))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
def test_matmul_matches_torch(shapes, rng):
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = rng.standard_normal(shapes[1]).astype(np.float32)
    (got,) = run_op("matmul", [a, b])
    want = torch.matmul(T(a), T(b)).numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_matmul_f16_accumulates_in_f32(rng):
    # a sum of 4096 ones: an f16 accumulator stops growing at 2048 (its spacing there is 2)
    a = np.ones((2, 4096), np.float16)
    b = np.ones((4096, 3), np.float16)
    (got,) = run_op("matmul", [a, b])
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.full((2, 3), 4096, np.float16))
    a = rng.standard_normal((3, 40)).astype(np.float16)
    b = rng.standard_normal((40, 5)).astype(np.float16)
    (got,) = run_op("matmul", [a, b])
    want = torch.matmul(T(a).float(), T(b).float()).half().numpy()
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3)


@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
def test_matmul_vjp(shapes, rng):
    check_vjp("matmul", [rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])])


@pytest.mark.parametrize("a, b, words", [
    ((3,), (3, 2), "rank >= 2"),
    ((3, 4), (5, 2), "(3, 4) @ (5, 2)"),
    ((2, 3, 4), (3, 4, 2), "(2, 3, 4) and (3, 4, 2)"),
])
def test_matmul_shape_errors(a, b, words):
    with pytest.raises(ShapeError) as err:
        check_node("matmul", [TensorType(a), TensorType(b)], {})
    assert words in str(err.value) and "matmul" in str(err.value)


# -- conv: an independent torch oracle -------------------------------------------------------------

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def torch_conv(x, w, stride=1, pairs=None, lhs=1, rhs=1, groups=1):
    """Zero-insert (lhs dilation) and pad/crop with torch ops, then torch's convNd."""
    x, w = torch.as_tensor(x), torch.as_tensor(w)
    n = x.ndim - 2
    lhs = (lhs,) * n if isinstance(lhs, int) else lhs
    if any(d > 1 for d in lhs):
        shape = list(x.shape[:2]) + [(s - 1) * d + 1 for s, d in zip(x.shape[2:], lhs, strict=True)]
        z = x.new_zeros(shape)
        z[(slice(None),) * 2 + tuple(slice(None, None, d) for d in lhs)] = x
        x = z
    if pairs is not None:  # torch lists the last dim first; pad, then crop (negative pads)
        x = F.pad(x, [max(v, 0) for p in reversed(pairs) for v in p])
        x = F.pad(x, [min(v, 0) for p in reversed(pairs) for v in p])
    return TORCH_CONV[n](x, w, stride=stride, dilation=rhs, groups=groups)


def _conv_case(rng, xs, ws, dtype=np.float64):
    return rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)


# (x shape, w shape, our attrs, oracle kwargs)
CONV_CASES = {
    "1d_plain": ((2, 3, 9), (4, 3, 3), {}, {}),
    "1d_stride_gt_kernel": ((1, 2, 11), (3, 2, 2), {"stride": 3}, {"stride": 3}),
    "1d_asym_pad": ((2, 2, 7), (3, 2, 3), {"padding": ((2, 0),)}, {"pairs": [(2, 0)]}),
    "1d_crop": ((1, 2, 9), (2, 2, 3), {"padding": (-2, 1)}, {"pairs": [(-2, 1)]}),
    "1d_pad_then_crop": ((1, 2, 2), (2, 2, 2), {"padding": (3, -3)}, {"pairs": [(3, -3)]}),
    "1d_rhs_dil": ((1, 3, 10), (2, 3, 3), {"rhs_dilation": 3}, {"rhs": 3}),
    "1d_lhs_dil": ((1, 2, 5), (3, 2, 3), {"lhs_dilation": 2, "padding": 2},
                   {"lhs": 2, "pairs": [(2, 2)]}),
    "1d_groups2": ((2, 4, 8), (6, 2, 3), {"groups": 2, "stride": 2, "padding": 1},
                   {"groups": 2, "stride": 2, "pairs": [(1, 1)]}),
    "1d_depthwise": ((1, 3, 7), (3, 1, 3), {"groups": 3}, {"groups": 3}),
    "2d_plain_odd": ((2, 3, 7, 5), (4, 3, 3, 2), {}, {}),
    "2d_stride_pad": ((1, 2, 9, 8), (3, 2, 3, 3), {"stride": (2, 3), "padding": ((1, 2), (0, 1))},
                      {"stride": (2, 3), "pairs": [(1, 2), (0, 1)]}),
    "2d_stride_gt_kernel": ((1, 1, 9, 9), (2, 1, 2, 2), {"stride": 4}, {"stride": 4}),
    "2d_dilations": ((1, 2, 6, 7), (2, 2, 2, 3), {"rhs_dilation": (2, 1), "lhs_dilation": (1, 2),
                                                  "padding": 1},
                     {"rhs": (2, 1), "lhs": (1, 2), "pairs": [(1, 1), (1, 1)]}),
    "2d_groups2": ((2, 4, 6, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1},
                   {"groups": 2, "pairs": [(1, 1), (1, 1)]}),
    "2d_depthwise": ((1, 4, 7, 6), (8, 1, 3, 2), {"groups": 4, "stride": 2},
                     {"groups": 4, "stride": 2}),
    "3d_mixed": ((1, 2, 4, 5, 3), (4, 1, 2, 3, 2), {"groups": 2, "stride": (1, 2, 1),
                                                    "padding": (1, 0, 1)},
                 {"groups": 2, "stride": (1, 2, 1), "pairs": [(1, 1), (0, 0), (1, 1)]}),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_matches_torch(case, rng):
    xs, ws, attrs, oracle = CONV_CASES[case]
    x, w = _conv_case(rng, xs, ws, np.float32)
    (got,) = run_op("conv", [x, w], **attrs)
    want = torch_conv(T(x), T(w), **oracle).numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("xs, ws, rhs", [((1, 2, 8), (3, 2, 3), 1), ((1, 2, 8), (3, 2, 4), 1),
                                         ((2, 2, 7, 6), (3, 2, 2, 3), (2, 1)),
                                         ((1, 1, 5, 4), (1, 1, 4, 4), 1)])
def test_conv_same_stride1_matches_torch(xs, ws, rhs, rng):
    x, w = _conv_case(rng, xs, ws)
    (got,) = run_op("conv", [x, w], padding="same", rhs_dilation=rhs)
    want = TORCH_CONV[x.ndim - 2](T(x), T(w), padding="same", dilation=rhs).numpy()
    assert got.shape == x.shape[:1] + w.shape[:1] + x.shape[2:]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size, k, s", [(7, 3, 2), (8, 3, 2), (9, 2, 3), (5, 1, 2), (4, 5, 3)])
def test_conv_same_strided_is_tf_same(size, k, s, rng):
    # TF/XLA SAME: out = ceil(in / s), total pad = max((out-1)*s + k - in, 0), extra on the high
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    pairs = [(total // 2, total - total // 2)]
    x, w = _conv_case(rng, (1, 2, size), (2, 2, k))
    (got,) = run_op("conv", [x, w], padding="same", stride=s)
    assert got.shape == (1, 2, out)
    np.testing.assert_allclose(got, torch_conv(T(x), T(w), stride=s, pairs=pairs).numpy(),
                               rtol=1e-10, atol=1e-10)


def test_conv_f16_and_bf16_references(rng):
    x, w = _conv_case(rng, (1, 3, 9), (2, 3, 3), np.float16)
    (got,) = run_op("conv", [x, w], padding=1)
    assert got.dtype == np.float16
    want = torch_conv(T(x).float(), T(w).float(), pairs=[(1, 1)]).half().numpy()
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3,
                               atol=2e-3)
    b = Builder("bf")
    xi = b.input("x", (1, 3, 9), "bf16")
    wi = b.input("w", (2, 3, 3), "bf16")
    g = b.build(outputs={"y": b.conv(xi, wi)})
    y = run_graph(g, {"x": x.astype(np.float32), "w": w.astype(np.float32)})["y"]
    want = torch_conv(T(x).float(), T(w).float()).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-2, atol=2e-2)


# -- conv: normalization -------------------------------------------------------------------------


def _attrs(xs, ws, **attrs):
    full, types = check_node("conv", [TensorType(xs), TensorType(ws)], attrs)
    return full, types[0].shape


@pytest.mark.parametrize("padding, flat", [
    ("valid", (0, 0, 0, 0)), (1, (1, 1, 1, 1)), ((1, 2), (1, 1, 2, 2)),
    (((1, 2), (0, 3)), (1, 2, 0, 3)), ((1, 2, 0, 3), (1, 2, 0, 3)),
    ([[0, 1], [2, 0]], (0, 1, 2, 0)),
    ("same", (1, 1, 1, 2)),
])
def test_conv_normalize_padding_forms(padding, flat):
    full, _ = _attrs((1, 2, 8, 8), (3, 2, 3, 4), padding=padding)
    assert full["padding"] == flat
    assert full["stride"] == (1, 1) and full["lhs_dilation"] == (1, 1)
    assert full["rhs_dilation"] == (1, 1) and full["groups"] == 1
    again, _ = _attrs((1, 2, 8, 8), (3, 2, 3, 4), **full)
    assert again == full  # the stored form normalizes to itself


def test_conv_normalize_scalars_and_text_roundtrip():
    full, shape = _attrs((1, 2, 9, 9), (4, 1, 3, 3), stride=2, rhs_dilation=2, groups=2,
                         padding="same")
    assert full["stride"] == (2, 2) and full["rhs_dilation"] == (2, 2)
    assert shape == (1, 4, 5, 5)
    b = Builder("c")
    x = b.input("x", (1, 2, 9, 9))
    w = b.param("w", (4, 1, 3, 3))
    roundtrip(b.build(outputs={"y": b.conv(x, w, stride=2, padding="same", groups=2)}))


@pytest.mark.parametrize("xs, ws, attrs, err, words", [
    ((1, 2, 8), (3, 2, 3, 3), {}, ShapeError, "(1, 2, 8)"),
    ((2, 8), (3, 2), {}, ShapeError, "(2, 8)"),
    ((1, 4, 8), (3, 3, 3), {}, ShapeError, "input channels 4"),
    ((1, 4, 8), (3, 2, 3), {"groups": 2}, ShapeError, "not divisible by groups=2"),
    ((1, 2, 4), (3, 2, 5), {}, ShapeError, "non-positive output size"),
    ((1, 2, 8), (3, 2, 3), {"padding": (-4, -2)}, ShapeError, "non-positive output size"),
    ((1, 2, 8), (3, 2, 3), {"padding": "full"}, AttributeSchemaError, "padding='full'"),
    ((1, 2, 8, 8), (3, 2, 3, 3), {"stride": (1, 2, 3)}, AttributeSchemaError, "stride"),
    ((1, 2, 8), (3, 2, 3), {"rhs_dilation": 0}, AttributeSchemaError, ">= 1"),
])
def test_conv_errors_name_shapes(xs, ws, attrs, err, words):
    with pytest.raises(err) as e:
        _attrs(xs, ws, **attrs)
    assert words in str(e.value) and "conv(" in str(e.value)


def test_conv_error_names_node():
    b = Builder("bad")
    x = b.input("x", (1, 4, 8))
    w = b.input("w", (3, 3, 3))
    with pytest.raises(GraphError, match=r"node %c1 = conv\(f32\[1, 4, 8\], f32\[3, 3, 3\]\)"):
        b.op("conv", x, w, name="c1")


# -- conv: gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_vjp_finite_differences(case, rng):
    xs, ws, attrs, _ = CONV_CASES[case]
    check_vjp("conv", list(_conv_case(rng, xs, ws)), attrs)


@pytest.mark.parametrize("xs, ws, attrs", [
    ((2, 4, 9), (6, 2, 3), {"groups": 2, "stride": 2, "rhs_dilation": 2, "padding": (2, 1)}),
    ((1, 6, 8, 7), (6, 1, 3, 2), {"groups": 6, "stride": (2, 3), "padding": ((1, 0), (2, 2))}),
    ((2, 4, 7, 6), (4, 2, 2, 3), {"groups": 2, "rhs_dilation": (2, 1), "stride": (1, 2),
                                  "lhs_dilation": (2, 1), "padding": ((0, -1), (1, 1))}),
    ((1, 3, 5, 5), (2, 3, 3, 3), {"stride": 3, "padding": "same"}),
    # unit strides, one group: the weight gradient as a correlation of the reversed maps
    ((2, 3, 6, 5), (4, 3, 3, 2), {"padding": ((1, 0), (2, 1))}),
    ((2, 3, 7), (4, 3, 3), {"padding": (-1, 2)}),
    ((3, 2, 4, 4), (5, 2, 4, 4), {"padding": "valid"}),
    ((2, 2, 5, 6), (3, 2, 1, 1), {}),
    # over DIRECT_GRAD_POINTS products per weight: the transposed form
    ((2, 2, 48, 48), (3, 2, 3, 3), {"padding": ((1, 0), (1, 2))}),
])
def test_conv_vjp_matches_torch_autograd(xs, ws, attrs, rng):
    x, w = _conv_case(rng, xs, ws)
    full, out_shape = _attrs(xs, ws, **attrs)
    ct = rng.standard_normal(out_shape)
    g = vjp_graph("conv", [x, w], attrs, [ct])
    got = run_graph(g, {"x0": x, "x1": w, "ct0": ct})
    xt, wt = T(x).requires_grad_(), T(w).requires_grad_()
    pad = full["padding"]
    y = torch_conv(xt, wt, stride=full["stride"], lhs=full["lhs_dilation"],
                   rhs=full["rhs_dilation"], groups=full["groups"],
                   pairs=[(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)])
    gx, gw = torch.autograd.grad(y, (xt, wt), T(ct))
    np.testing.assert_allclose(got["y0"], y.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["g0"], gx.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["g1"], gw.numpy(), rtol=1e-10, atol=1e-10)


@st.composite
def conv_geometry(draw):
    """Random 1-D/2-D conv geometry (negative padding, both dilations, groups) with a valid
    output."""
    n = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2, 3]))
    dims = []
    for _ in range(n):
        k, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        lhs, rhs = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        size = draw(st.integers(1, 6))
        lo, hi = draw(st.integers(-2, 3)), draw(st.integers(-2, 3))
        dims.append((size, k, s, lhs, rhs, lo, hi))
    return n, groups, dims, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None)
@given(conv_geometry())
def test_conv_vjp_property_vs_torch(geometry):
    n, groups, dims, seed = geometry
    size, k, s, lhs, rhs, lo, hi = zip(*dims, strict=True)
    attrs = {"stride": s, "lhs_dilation": lhs, "rhs_dilation": rhs,
             "padding": tuple(v for p in zip(lo, hi, strict=True) for v in p), "groups": groups}
    xs, ws = (2, 2 * groups) + size, (groups, 2) + k
    try:
        _, out_shape = _attrs(xs, ws, **attrs)
    except ShapeError:
        assume(False)  # no valid output for this geometry
    rng = np.random.default_rng(seed)
    x, w = _conv_case(rng, xs, ws)
    ct = rng.standard_normal(out_shape)
    got = run_graph(vjp_graph("conv", [x, w], attrs, [ct]), {"x0": x, "x1": w, "ct0": ct})
    xt, wt = T(x).requires_grad_(), T(w).requires_grad_()
    y = torch_conv(xt, wt, stride=s, lhs=lhs, rhs=rhs, groups=groups,
                   pairs=list(zip(lo, hi, strict=True)))
    gx, gw = torch.autograd.grad(y, (xt, wt), T(ct))
    np.testing.assert_allclose(got["y0"], y.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["g0"], gx.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["g1"], gw.numpy(), rtol=1e-10, atol=1e-10)


def test_conv_vjp_uses_only_graph_ops(rng):
    x, w = _conv_case(rng, (1, 4, 7), (4, 2, 3))
    g = vjp_graph("conv", [x, w], {"groups": 2, "stride": 2}, [rng.standard_normal((1, 4, 3))])
    assert {n.op for n in g.live_nodes()} <= {"conv", "transpose", "reshape", "reverse",
                                               "constant"}


# -- the seed's worked example (SEED-NOTES section 5) --------------------------------------------


def test_seed_conv1d_worked_example():
    x = np.array([5, 6, 6, 2, 5, 6, 5], np.float32)
    k = np.array([1, -1, 1], np.float32)
    (z,) = run_op("conv", [x.reshape(1, 1, 7), k.reshape(1, 1, 3)], stride=2)
    np.testing.assert_array_equal(z.reshape(3), [5, 9, 4])
    m = np.array([[1, -1, 1, 0, 0, 0, 0],
                  [0, 0, 1, -1, 1, 0, 0],
                  [0, 0, 0, 0, 1, -1, 1]], np.float32)
    (zm,) = run_op("matmul", [m, x.reshape(7, 1)])
    np.testing.assert_array_equal(zm.reshape(3), [5, 9, 4])
    np.testing.assert_array_equal(zm.reshape(3), z.reshape(3))
