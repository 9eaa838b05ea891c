"""Reduction ops: reference vs torch CPU (every dtype, negative axes, keepdims, all/no axes, empty
axes), VJP vs float64 finite differences (hypothesis over shapes and axes), reduce_max tie
splitting vs torch.amax autograd, canonical axes, and the errors bad axes raise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import AttributeSchemaError, DTypeError, ShapeError

from ..conftest import roundtrip
from .harness import check_vjp, run_op, vjp_graph

NP_DTYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i32": np.int32,
             "i64": np.int64, "bool": np.bool_}
SHAPES_AXES = [
    ((7,), (0,)), ((7,), (-1,)), ((3, 1, 5), (1,)), ((3, 1, 5), (0, 2)), ((3, 1, 5), (-1, -3)),
    ((2, 3, 4), (1, -1)), ((2, 3, 4), None), ((2, 3, 4), ()), ((), None), ((), ()), ((), (0,)),
    ((1, 1), (0,)), ((5, 3), (0, 1)),
]


def _data(rng, shape, dtype):
    if dtype == "bool":
        x = rng.random(shape) > 0.5
    elif dtype in ("i32", "i64"):
        x = rng.integers(-50, 50, shape)
    else:
        x = rng.standard_normal(shape) * 3
    return np.asarray(x, NP_DTYPES[dtype])


def _torch_dims(axes, ndim):
    # torch reads dim=() as "every axis", so spell every axis out.
    return tuple(range(ndim)) if axes is None else axes


@pytest.mark.parametrize("dtype", ["f32", "f64", "f16", "i32", "i64"])
@pytest.mark.parametrize("shape,axes", SHAPES_AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduce_sum_matches_torch(shape, axes, keepdims, dtype, rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("reduce_sum", [x], axes=axes, keepdims=keepdims)
    if axes == ():
        want = x  # a sum over no axes is the identity (torch would sum everything)
    else:
        want = torch.sum(torch.from_numpy(x), dim=_torch_dims(axes, x.ndim),
                         keepdim=keepdims).numpy().astype(x.dtype)
    assert got.dtype == x.dtype and got.shape == want.shape
    tol = {"f16": 2e-3, "f32": 1e-5}.get(dtype, 1e-12)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["f32", "f64", "f16", "i32", "i64", "bool"])
@pytest.mark.parametrize("shape,axes", SHAPES_AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduce_max_matches_torch(shape, axes, keepdims, dtype, rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("reduce_max", [x], axes=axes, keepdims=keepdims)
    if axes == ():
        want = x
    else:
        want = torch.amax(torch.from_numpy(x), dim=_torch_dims(axes, x.ndim),
                          keepdim=keepdims).numpy()
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["f32", "f64", "f16", "i32", "i64"])
@pytest.mark.parametrize("shape,axis", [((7,), 0), ((3, 1, 5), -1), ((3, 1, 5), 1),
                                        ((2, 3, 4), 0), ((4, 6), -2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax_matches_torch(shape, axis, keepdims, dtype, rng):
    x = rng.integers(0, 3, shape).astype(NP_DTYPES[dtype])  # many ties: first index wins
    (got,) = run_op("argmax", [x], axis=axis, keepdims=keepdims)
    want = torch.argmax(torch.from_numpy(x), dim=axis, keepdim=keepdims).numpy()
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_argmax_of_bool_matches_torch_on_uint8(rng):
    x = rng.random((4, 5)) > 0.6
    (got,) = run_op("argmax", [x], axis=1)
    want = torch.argmax(torch.from_numpy(x.astype(np.uint8)), dim=1).numpy()
    np.testing.assert_array_equal(got, want)


def test_empty_tensors():
    x = np.zeros((0, 3), np.float32)
    (s,) = run_op("reduce_sum", [x], axes=(0,))
    np.testing.assert_array_equal(s, torch.sum(torch.from_numpy(x), dim=0).numpy())
    (m,) = run_op("reduce_max", [x], axes=(1,), keepdims=True)
    assert m.shape == torch.amax(torch.from_numpy(x), dim=1, keepdim=True).shape
    (a,) = run_op("argmax", [x], axis=1)
    assert a.shape == (0,)


def test_f16_sum_accumulates_wide():
    x = np.full((4096,), 1.0, np.float16)  # 4096 ones: f16 accumulation would stall at 2048
    (got,) = run_op("reduce_sum", [x])
    assert got.dtype == np.float16 and got == 4096
    assert torch.sum(torch.from_numpy(x)).item() == 4096


def test_axes_are_canonical_and_cse_merges_them():
    b = Builder("canon")
    x = b.input("x", (2, 3, 4))
    s1 = x.sum()
    s2 = x.sum((2, -3, 1))
    m = x.max((-1,), keepdims=True)
    a = b.argmax(x, axis=-2)
    assert s1.node is s2.node and s1.node.attrs["axes"] == (0, 1, 2)
    assert m.node.attrs["axes"] == (2,) and a.node.attrs["axis"] == 1
    roundtrip(b.build(outputs={"s": s1, "m": m, "a": a}))


# -- VJPs ------------------------------------------------------------------------------------------


@st.composite
def shape_and_axes(draw, max_rank=3):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=max_rank)))
    rank = len(shape)
    if draw(st.booleans()):
        return shape, None
    chosen = draw(st.sets(st.integers(0, rank - 1), max_size=rank)) if rank else set()
    # spell some axes negatively, in random order
    axes = [a - rank if draw(st.booleans()) else a for a in chosen]
    return shape, tuple(draw(st.permutations(axes)))


@settings(max_examples=15, deadline=None)
@given(shape_and_axes(), st.booleans(), st.integers(0, 2**16))
def test_reduce_sum_vjp_hypothesis(sa, keepdims, seed):
    shape, axes = sa
    x = np.random.default_rng(seed).standard_normal(shape)
    check_vjp("reduce_sum", [x], {"axes": axes, "keepdims": keepdims}, seed=seed)


@settings(max_examples=15, deadline=None)
@given(shape_and_axes(), st.booleans(), st.integers(0, 2**16))
def test_reduce_max_vjp_hypothesis(sa, keepdims, seed):
    shape, axes = sa
    # distinct values, far enough apart that finite differences do not swap the maximum
    n = int(np.prod(shape))
    x = np.random.default_rng(seed).permutation(n).reshape(shape) * 0.1
    check_vjp("reduce_max", [x], {"axes": axes, "keepdims": keepdims}, seed=seed)


@pytest.mark.parametrize("axes,keepdims", [((1,), False), ((0, 2), True), (None, False),
                                           ((), False), ((-1,), True)])
def test_reduce_max_tie_splitting_matches_torch_amax(axes, keepdims, rng):
    x = rng.integers(0, 3, (3, 4, 2)).astype(np.float64)  # plenty of tied maxima
    ct = rng.standard_normal(run_op("reduce_max", [x], axes=axes, keepdims=keepdims)[0].shape)
    xt = torch.tensor(x, requires_grad=True)
    if axes == ():
        yt = xt * 1.0  # amax over no axes is the identity
    else:
        yt = torch.amax(xt, dim=_torch_dims(axes, x.ndim), keepdim=keepdims)
    yt.backward(torch.from_numpy(ct))
    g = vjp_graph("reduce_max", [x], {"axes": axes, "keepdims": keepdims}, [ct])
    got = run_graph(g, {"x0": x, "ct0": ct})["g0"]
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_reduce_max_tie_splitting_in_f32_against_torch():
    x = np.array([[1.0, 3.0, 3.0, 3.0], [2.0, 2.0, 0.0, -1.0]], np.float32)
    xt = torch.tensor(x, requires_grad=True)
    torch.amax(xt, dim=1).sum().backward()
    ct = np.ones(2, np.float32)
    got = run_graph(vjp_graph("reduce_max", [x], {"axes": (1,)}, [ct]), {"x0": x, "ct0": ct})
    np.testing.assert_allclose(got["g0"], xt.grad.numpy(), rtol=1e-6)


def test_integer_reductions_have_no_gradient():
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    g = vjp_graph("reduce_sum", [x], {"axes": (0,)}, [np.ones(3, np.int64)])
    assert "g0" not in dict(g.outputs)


def test_argmax_is_not_differentiable():
    from graphc.ir.registry import get_op

    op = get_op("argmax")
    assert not op.differentiable and op.vjp is None


# -- errors ----------------------------------------------------------------------------------------


def _x(shape, dtype="f32"):
    b = Builder("err")
    return b, b.input("x", shape, dtype)


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max"])
def test_axis_out_of_range(op):
    b, x = _x((2, 3))
    with pytest.raises(ShapeError, match=rf"{op}\(f32\[2, 3\]\).*axis 2 is out of range"):
        b.op(op, x, axes=(0, 2))
    with pytest.raises(ShapeError, match=rf"{op}\(f32\[2, 3\]\).*axis -3 is out of range"):
        b.op(op, x, axes=(-3,))
    b, x = _x(())  # a scalar has its axis 0 (as in torch), no other
    with pytest.raises(ShapeError, match=rf"{op}\(f32\[\]\).*axis 1 is out of range"):
        b.op(op, x, axes=(1,))


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max"])
def test_repeated_axis(op):
    b, x = _x((2, 3))
    with pytest.raises(ShapeError, match=rf"{op}\(f32\[2, 3\]\).*repeated axis in \(1, -1\)"):
        b.op(op, x, axes=(1, -1))


def test_reduce_sum_of_bool_is_a_dtype_error():
    b, x = _x((2, 3), "bool")
    with pytest.raises(DTypeError, match=r"reduce_sum\(bool\[2, 3\]\).*cast"):
        b.reduce_sum(x)


def test_max_over_empty_axis():
    b, x = _x((0, 3))
    with pytest.raises(ShapeError, match=r"reduce_max\(f32\[0, 3\]\).*empty axis 0"):
        b.reduce_max(x, axes=(0,))
    with pytest.raises(ShapeError, match=r"argmax\(f32\[0, 3\]\).*empty axis 0"):
        b.argmax(x, axis=0)


def test_argmax_errors():
    b, x = _x((2, 3))
    with pytest.raises(ShapeError, match=r"argmax\(f32\[2, 3\]\).*axis 2 is out of range"):
        b.argmax(x, axis=2)
    with pytest.raises(AttributeSchemaError, match=r"argmax\(f32\[2, 3\]\).*missing.*'axis'"):
        b.argmax(x)
    s = b.input("s", ())
    with pytest.raises(ShapeError, match=r"argmax\(f32\[\]\).*rank >= 1"):
        b.argmax(s, axis=0)


def test_bad_attribute_kind():
    b, x = _x((2, 3))
    with pytest.raises(AttributeSchemaError, match=r"reduce_sum\(f32\[2, 3\]\).*keepdims"):
        b.reduce_sum(x, axes=(0,), keepdims=1)
