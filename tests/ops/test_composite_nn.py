"""Layer composites (mean, dense, conv1d/2d, pooling, global_avg_pool, flatten, residual_block,
one_hot, dropout): each op's numpy reference against torch CPU, the seed's worked examples, and
errors for bad input. Decompositions are checked in test_composite_decompose.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphc.ir.builder import Builder
from graphc.ir.errors import AttributeSchemaError, DTypeError, GraphError, ShapeError

from ..conftest import roundtrip
from .harness import op_graph, run_op


def T(a):
    return torch.from_numpy(np.asarray(a))


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# -- mean ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("axes,keepdims", [(None, False), ((1,), False), ((0, 2), True),
                                           ((-1,), True), ((), False)])
def test_mean_matches_torch(axes, keepdims, rng):
    x = randn(rng, 3, 4, 5)
    (got,) = run_op("mean", [x], axes=axes, keepdims=keepdims)
    dims = list(range(3)) if axes is None else list(axes)
    want = T(x).mean(dim=dims, keepdim=keepdims).numpy() if dims else x
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_mean_rejects_integers():
    with pytest.raises(DTypeError, match="i64"):
        run_op("mean", [np.arange(4)])


# -- dense ---------------------------------------------------------------------------------------

TORCH_ACTS = {"none": lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid,
              "tanh": torch.tanh, "softplus": F.softplus, "gelu": F.gelu}


@pytest.mark.parametrize("activation", sorted(TORCH_ACTS))
@pytest.mark.parametrize("x_shape", [(4, 3), (2, 5, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
def test_dense_matches_torch_linear(activation, x_shape, bias, rng):
    x, w = randn(rng, *x_shape) * 3, randn(rng, 3, 2)
    arrays = [x, w] + ([randn(rng, 2)] if bias else [])
    (got,) = run_op("dense", arrays, activation=activation)
    # our weight is [in, out]: torch's Linear weight is its transpose
    lin = F.linear(T(x), T(w).T, T(arrays[2]) if bias else None)
    np.testing.assert_allclose(got, TORCH_ACTS[activation](lin).numpy(), rtol=1e-5, atol=1e-6)


# -- gelu ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_torch(approximate, dtype, rng):
    x = np.concatenate([randn(rng, 200) * 4, [0.0, -0.0, 1e-30, -1e-8, 8.0, -8.0, 40.0, -40.0]])
    (got,) = run_op("gelu", [x.astype(dtype)], approximate=approximate)
    want = F.gelu(T(x.astype(np.float64)), approximate=approximate).numpy()
    # torch's float64 tanh form cancels in 1 + tanh near -1: off by up to ~1e-16 x there
    tol = dict(rtol=2e-6, atol=1e-15) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want.astype(dtype), **tol)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradient_matches_torch_autograd(approximate, rng):
    from graphc.backends.reference import run_graph
    from graphc.ir.builder import Builder
    from graphc.passes.autodiff import autodiff

    x = rng.standard_normal(64) * 3
    b = Builder("gelu")
    xi = b.input("x", x.shape, "f64")
    graph = b.build(outputs={"loss": (b.gelu(xi, approximate=approximate) * xi).sum()})
    got = run_graph(autodiff(graph, "loss", ["x"]), {"x": x})["grad.x"]
    leaf = T(x.copy()).requires_grad_()
    (F.gelu(leaf, approximate=approximate) * leaf).sum().backward()
    np.testing.assert_allclose(got, leaf.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_dense_errors_name_the_shapes():
    with pytest.raises(ShapeError, match=r"f32\[4, 3\].*3 features.*f32\[2, 5\]"):
        op_graph("dense", [np.zeros((4, 3), np.float32), np.zeros((2, 5), np.float32)])
    with pytest.raises(ShapeError, match="bias"):
        op_graph("dense", [np.zeros((4, 3), np.float32), np.zeros((3, 5), np.float32),
                           np.zeros((4,), np.float32)])
    with pytest.raises(AttributeSchemaError, match="activation"):
        op_graph("dense", [np.zeros((4, 3), np.float32), np.zeros((3, 5), np.float32)],
                 {"activation": "swish"})


# -- conv1d / conv2d -----------------------------------------------------------------------------

CONV1D_CASES = [  # (C, O, L, k, attrs)
    (2, 3, 9, 3, {}),
    (2, 4, 10, 3, {"stride": 2, "padding": 1}),
    (4, 6, 11, 3, {"groups": 2, "dilation": 2, "padding": "same"}),
    (3, 3, 8, 4, {"groups": 3, "padding": "same"}),  # depthwise, even kernel
    (2, 2, 9, 2, {"stride": 3, "padding": "valid", "dilation": 3}),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("c,o,length,k,attrs", CONV1D_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv1d_matches_torch(c, o, length, k, attrs, bias, rng):
    g = attrs.get("groups", 1)
    x, w = randn(rng, 2, c, length), randn(rng, o, c // g, k)
    arrays = [x, w] + ([randn(rng, o)] if bias else [])
    (got,) = run_op("conv1d", arrays, **attrs)
    want = F.conv1d(T(x), T(w), T(arrays[2]) if bias else None, **attrs).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


CONV2D_CASES = [  # (C, O, (H, W), (kh, kw), attrs)
    (3, 4, (6, 7), (3, 3), {}),
    (2, 4, (7, 8), (3, 2), {"stride": (2, 1), "padding": (1, 0)}),
    (4, 4, (8, 7), (3, 3), {"groups": 2, "dilation": (2, 1), "padding": "same"}),
    (4, 8, (9, 9), (2, 3), {"groups": 4, "stride": 2, "dilation": 2, "padding": 2}),
]


@pytest.mark.parametrize("c,o,hw,k,attrs", CONV2D_CASES)
def test_conv2d_matches_torch(c, o, hw, k, attrs, rng):
    g = attrs.get("groups", 1)
    x, w, bias = randn(rng, 2, c, *hw), randn(rng, o, c // g, *k), randn(rng, o)
    (got,) = run_op("conv2d", [x, w, bias], **attrs)
    want = F.conv2d(T(x), T(w), T(bias), **attrs).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv2d_asymmetric_padding_pairs_match_torch_pad(rng):
    x, w = randn(rng, 1, 2, 5, 6), randn(rng, 3, 2, 3, 3)
    (got,) = run_op("conv2d", [x, w], padding=((0, 2), (1, 0)))
    want = F.conv2d(F.pad(T(x), (1, 0, 0, 2)), T(w)).numpy()  # torch pads last axis first
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_stores_the_primitives_explicit_attributes():
    b = Builder("c")
    y = b.conv2d(b.input("x", (1, 2, 6, 6)), b.input("w", (4, 2, 3, 2)), padding="same",
                 stride=1, dilation=2)
    assert dict(y.node.attrs) == {"stride": (1, 1), "padding": (2, 2, 1, 1),
                                  "dilation": (2, 2), "groups": 1}
    roundtrip(b.build(outputs={"y": y}))


def test_seed_worked_example_strided_1d_convolution():
    # kernel (+1, -1, +1), stride 2 over (5, 6, 6, 2, 5, 6, 5) gives (5, 9, 4) ...
    x = np.array([[[5, 6, 6, 2, 5, 6, 5]]], np.float32)
    k = np.array([[[1, -1, 1]]], np.float32)
    (got,) = run_op("conv1d", [x, k], stride=2)
    np.testing.assert_array_equal(got.ravel(), [5, 9, 4])
    # ... the same as the banded matrix of the text times the input
    m = np.array([[1, -1, 1, 0, 0, 0, 0], [0, 0, 1, -1, 1, 0, 0], [0, 0, 0, 0, 1, -1, 1]])
    np.testing.assert_array_equal(got.ravel(), m @ x.ravel())


def test_seed_same_padding_keeps_length_and_two_layers_grow_the_receptive_field():
    x = np.zeros((1, 1, 9), np.float32)
    x[0, 0, 4] = 1.0  # an impulse: the outputs it reaches are its receptive field, mirrored
    k = np.ones((1, 1, 3), np.float32)
    (h,) = run_op("conv1d", [x, k], padding="same")
    (z,) = run_op("conv1d", [h, k], padding="same")
    assert h.shape == z.shape == x.shape
    np.testing.assert_array_equal(np.flatnonzero(h.ravel()), [3, 4, 5])
    np.testing.assert_array_equal(np.flatnonzero(z.ravel()), [2, 3, 4, 5, 6])


def test_conv_errors():
    f = np.float32
    with pytest.raises(ShapeError, match="groups=3"):
        op_graph("conv2d", [np.zeros((1, 4, 5, 5), f), np.zeros((6, 2, 3, 3), f)],
                 {"groups": 3})
    with pytest.raises(ShapeError, match="rank 3"):
        op_graph("conv1d", [np.zeros((1, 4, 5, 5), f), np.zeros((6, 4, 3, 3), f)])
    with pytest.raises(ShapeError, match="empty output"):
        op_graph("conv1d", [np.zeros((1, 4, 2), f), np.zeros((6, 4, 3), f)])
    with pytest.raises(ShapeError, match=r"weight f32\[6, 4, 0\] has an empty kernel window"):
        op_graph("conv1d", [np.zeros((1, 4, 2), f), np.zeros((6, 4, 0), f)])
    with pytest.raises(GraphError, match="padding"):
        op_graph("conv1d", [np.zeros((1, 4, 9), f), np.zeros((6, 4, 3), f)],
                 {"padding": "full"})


# -- pooling -------------------------------------------------------------------------------------

POOL_CASES = [  # (spatial shape, attrs); stride != kernel and padding both appear
    ((9,), {"kernel": 2}),
    ((10,), {"kernel": 3, "stride": 2, "padding": 1}),
    ((11,), {"kernel": 4, "stride": 3, "padding": 2}),
    ((6, 7), {"kernel": 2}),
    ((7, 8), {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 1)}),
    ((9, 9), {"kernel": 3, "stride": 2, "padding": 1}),
]


def _torch_pool_args(attrs):
    return {"kernel_size": attrs["kernel"], "stride": attrs.get("stride"),
            "padding": attrs.get("padding", 0)}


@pytest.mark.parametrize("spatial,attrs", POOL_CASES)
def test_max_pool_matches_torch(spatial, attrs, rng):
    x = randn(rng, 2, 3, *spatial)
    op = f"max_pool{len(spatial)}d"
    (got,) = run_op(op, [x], **attrs)
    want = getattr(F, op)(T(x), **_torch_pool_args(attrs)).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("spatial,attrs", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_torch(spatial, attrs, count_include_pad, rng):
    x = randn(rng, 2, 3, *spatial)
    op = f"avg_pool{len(spatial)}d"
    (got,) = run_op(op, [x], count_include_pad=count_include_pad, **attrs)
    want = getattr(F, op)(T(x), count_include_pad=count_include_pad,
                          **_torch_pool_args(attrs)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_pool_attributes_are_stored_per_axis():
    b = Builder("p")
    y = b.max_pool2d(b.input("x", (1, 1, 8, 8)), kernel=3, padding=1)
    assert (y.node.attrs["kernel"], y.node.attrs["stride"], y.node.attrs["padding"]) == (
        (3, 3), (3, 3), (1, 1))
    roundtrip(b.build(outputs={"y": y}))


def test_pool_errors():
    x = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(AttributeSchemaError, match="padding"):
        op_graph("max_pool2d", [x], {"kernel": 2, "padding": 2})
    with pytest.raises(AttributeSchemaError, match="kernel"):
        op_graph("avg_pool2d", [x], {"kernel": (2, 2, 2)})
    with pytest.raises(ShapeError, match="does not fit"):
        op_graph("max_pool2d", [x], {"kernel": 7})
    with pytest.raises(ShapeError, match="rank 3"):
        op_graph("max_pool1d", [x], {"kernel": 2})


@pytest.mark.parametrize("spatial", [(7,), (4, 5), (2, 3, 4)])
def test_global_avg_pool_matches_adaptive_avg_pool(spatial, rng):
    x = randn(rng, 2, 3, *spatial)
    (got,) = run_op("global_avg_pool", [x])
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
    want = pool[len(spatial)](T(x), 1).flatten(1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# -- flatten, residual_block, one_hot ------------------------------------------------------------


@pytest.mark.parametrize("start_axis", [0, 1, 2, -1])
def test_flatten_matches_torch(start_axis, rng):
    x = randn(rng, 2, 3, 4, 5)
    (got,) = run_op("flatten", [x], start_axis=start_axis)
    np.testing.assert_array_equal(got, torch.flatten(T(x), start_dim=start_axis).numpy())


@pytest.mark.parametrize("activation", ["relu", "tanh", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_residual_block_matches_torch(activation, bias, rng):
    z, w, v = randn(rng, 4, 5), randn(rng, 5, 3), randn(rng, 3, 5)
    bw, bv = randn(rng, 3), randn(rng, 5)
    arrays = [z, w, v] + ([bw, bv] if bias else [])
    (got,) = run_op("residual_block", arrays, activation=activation)
    g = TORCH_ACTS[activation]
    h = g(F.linear(T(z), T(w).T, T(bw) if bias else None))
    want = g(T(z) + F.linear(h, T(v).T, T(bv) if bias else None)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_residual_block_errors():
    f = np.float32
    z, w, v = np.zeros((4, 5), f), np.zeros((5, 3), f), np.zeros((3, 5), f)
    with pytest.raises(ShapeError, match="both biases"):
        op_graph("residual_block", [z, w, v, np.zeros(3, f)])
    with pytest.raises(ShapeError, match=r"V \[H, 5\]"):
        op_graph("residual_block", [z, w, np.zeros((3, 4), f)])


@pytest.mark.parametrize("dtype", ["f32", "i64", "bool"])
def test_one_hot_matches_torch(dtype, rng):
    idx = rng.integers(0, 4, (3, 5))
    (got,) = run_op("one_hot", [idx], depth=4, dtype=dtype)
    want = F.one_hot(T(idx), 4).numpy()
    assert got.dtype == {"f32": np.float32, "i64": np.int64, "bool": np.bool_}[dtype]
    np.testing.assert_array_equal(got, want)


def test_one_hot_axis_and_out_of_range_labels(rng):
    idx = np.array([[0, 3], [5, -1]], np.int32)
    (got,) = run_op("one_hot", [idx], depth=4, axis=1)
    assert got.shape == (2, 4, 2)
    want = np.moveaxis(F.one_hot(T(idx.clip(0, 3)).long(), 4).numpy(), -1, 1)
    want[1] = 0  # labels 5 and -1 are outside [0, 4): no class is hot
    np.testing.assert_array_equal(got, want)


def test_one_hot_rejects_float_indices():
    with pytest.raises(DTypeError, match="i32 or i64"):
        op_graph("one_hot", [np.zeros(3, np.float32)], {"depth": 2})


# -- dropout -------------------------------------------------------------------------------------


def _dropout(x, seed, **attrs):
    return run_op("dropout", [x, np.array(seed, np.int64)], **attrs)[0]


def test_dropout_keeps_about_one_minus_rate_and_scales_exactly(rng):
    x = (np.abs(randn(rng, 200, 100)) + 0.5).astype(np.float32)  # no zeros: zero means dropped
    y = _dropout(x, 7, rate=0.3)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_array_equal(y[kept], x[kept] * np.float32(1 / 0.7))


def test_dropout_mask_is_random_uniform_of_the_seed(rng):
    x = np.ones((8, 16), np.float32)
    (u,) = run_op("random_uniform", [np.array(3, np.int64)], shape=(8, 16), stream=2)
    y = _dropout(x, 3, rate=0.4, stream=2)
    np.testing.assert_array_equal(y != 0, u >= np.float32(0.4))


def test_dropout_is_reproducible_per_seed_and_stream(rng):
    x = randn(rng, 32, 32)
    np.testing.assert_array_equal(_dropout(x, 5, rate=0.5), _dropout(x, 5, rate=0.5))
    assert not np.array_equal(_dropout(x, 5, rate=0.5) != 0, _dropout(x, 6, rate=0.5) != 0)
    assert not np.array_equal(_dropout(x, 5, rate=0.5) != 0,
                              _dropout(x, 5, rate=0.5, stream=1) != 0)


def test_dropout_off_when_not_training_and_edge_rates(rng):
    x = randn(rng, 5, 6)
    np.testing.assert_array_equal(_dropout(x, 1, rate=0.5, training=False), x)
    np.testing.assert_array_equal(_dropout(x, 1, rate=0.0), x)
    np.testing.assert_array_equal(_dropout(x, 1, rate=1.0), np.zeros_like(x))


def test_dropout_errors():
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(AttributeSchemaError, match="rate"):
        op_graph("dropout", [x, np.array(0)], {"rate": 1.5})
    with pytest.raises(DTypeError, match="seed"):
        op_graph("dropout", [x, np.array(0.0, np.float32)])
    with pytest.raises(DTypeError, match="seed"):
        op_graph("dropout", [x, np.array([0, 1])])
