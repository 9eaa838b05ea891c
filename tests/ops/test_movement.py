"""Movement ops: references vs torch CPU (reshape, permute, expand, strided slicing,
nn.functional.pad, cat) on every dtype, interior padding against a numpy strided-assignment
oracle, VJPs vs float64 finite differences (hypothesis for transpose, slice and pad), canonical
attributes, and the errors bad shapes and attributes raise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.ir.builder import Builder
from graphc.ir.errors import AttributeSchemaError, DTypeError, ShapeError

from ..conftest import roundtrip
from .harness import check_vjp, run_op

NP_DTYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i32": np.int32,
             "i64": np.int64, "bool": np.bool_}
ALL_DTYPES = list(NP_DTYPES)


def _data(rng, shape, dtype="f32"):
    if dtype == "bool":
        x = rng.random(shape) > 0.5
    elif dtype in ("i32", "i64"):
        x = rng.integers(-50, 50, shape)
    else:
        x = rng.standard_normal(shape) * 3
    return np.asarray(x, NP_DTYPES[dtype])


def T(a):
    return torch.from_numpy(np.array(a))  # a contiguous copy; keeps rank 0


def _same(got, want, dtype):
    assert got.dtype == NP_DTYPES[dtype]
    np.testing.assert_array_equal(got, want)


# -- references vs torch ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape,new", [((2, 3, 4), (6, 4)), ((2, 3, 4), (4, -1)), ((7,), (7, 1)),
                                       ((), (1, 1)), ((1, 1), ()), ((3, 1, 5), (5, 3)),
                                       ((0, 3), (3, 0)), ((2, 3), (-1,))])
def test_reshape_matches_torch(shape, new, dtype, rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("reshape", [x], shape=new)
    _same(got, torch.reshape(T(x), new).numpy(), dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape,perm", [((2, 3, 4), (2, 0, 1)), ((2, 3, 4), (-1, 0, -2)),
                                        ((3, 1, 5), (1, 2, 0)), ((5,), (0,)), ((), ()),
                                        ((2, 1, 3, 2), (3, 1, 0, 2))])
def test_transpose_matches_torch(shape, perm, dtype, rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("transpose", [x], perm=perm)
    _same(got, T(x).permute(perm).numpy(), dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape,axes", [((2, 3, 4), (0,)), ((2, 3, 4), (-1, 1)),
                                        ((3, 1, 5), (0, 1, 2)), ((5,), (0,)), ((), ()),
                                        ((2, 3), ())])
def test_reverse_matches_torch_flip(shape, axes, dtype, rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("reverse", [x], axes=axes)
    _same(got, torch.flip(T(x), axes).numpy() if axes else x, dtype)


def test_reverse_errors():
    b = Builder("e")
    x = b.input("x", (2, 3, 4))
    with pytest.raises(ShapeError, match=r"reverse\(f32\[2, 3, 4\]\).*out of range"):
        b.op("reverse", x, axes=(3,))
    with pytest.raises(ShapeError, match=r"reverse\(f32\[2, 3, 4\]\).*repeats"):
        b.op("reverse", x, axes=(1, -2))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape,target", [((3, 1), (3, 5)), ((1,), (2, 7)), ((), (2, 3)),
                                          ((2, 1, 3), (4, 2, 5, 3)), ((5,), (5,)),
                                          ((1, 1), (0, 4))])
def test_broadcast_matches_torch_expand(shape, target, dtype, rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("broadcast", [x], shape=target)
    _same(got, T(x).expand(*target).numpy(), dtype)
    got[...] = got  # a writable array, not numpy's read-only broadcast view


SLICES = [
    ((7,), [slice(1, 6, 2)]),
    ((7,), [slice(-3, 100, 1)]),
    ((7,), [slice(-100, -2, 3)]),
    ((7,), [slice(5, 2, 1)]),        # stop before start: empty
    ((3, 1, 5), [slice(0, 3, 2), slice(0, 1, 1), slice(-4, -1, 2)]),
    ((2, 3, 4), [slice(1, 2, 1), slice(0, 3, 3), slice(3, 4, 5)]),
    ((4, 5), [slice(0, 0, 1), slice(0, 5, 1)]),
]


def _slice_attrs(slices):
    return {"start": tuple(s.start for s in slices), "stop": tuple(s.stop for s in slices),
            "step": tuple(s.step for s in slices)}


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape,slices", SLICES)
def test_slice_matches_torch_indexing(shape, slices, dtype, rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("slice", [x], **_slice_attrs(slices))
    want = T(x)[tuple(slices)].numpy()
    assert got.shape == want.shape
    _same(got, want, dtype)


def test_slice_step_defaults_to_one(rng):
    x = _data(rng, (4, 5))
    (got,) = run_op("slice", [x], start=(1, -2), stop=(3, 5))
    np.testing.assert_array_equal(got, T(x)[1:3, -2:5].numpy())


def _interior_oracle(x, interior, value):
    """x with `interior` copies of `value` between neighbours, by strided assignment."""
    shape = [n + max(n - 1, 0) * i for n, i in zip(x.shape, interior, strict=True)]
    out = np.full(shape, value, x.dtype)
    out[tuple(slice(None, None, i + 1) for i in interior)] = x
    return out


def _torch_pad(x, low, high, value):
    pairs = [p for lo, hi in zip(reversed(low), reversed(high), strict=True) for p in (lo, hi)]
    return F.pad(T(x), pairs, value=value).numpy()


PADS = [
    ((5,), (2,), (1,), (0,), 0.0),
    ((5,), (-2,), (-1,), (0,), 1.5),
    ((3, 4), (1, 0), (2, 3), (0, 0), -1.0),
    ((3, 4), (-1, 2), (1, -3), (0, 0), 0.0),
    ((3, 1, 2), (0, 1, 1), (1, 0, 0), (1, 2, 0), 0.0),
    ((4, 3), (-2, 1), (1, -4), (2, 1), 3.0),
    ((2, 3), (0, 0), (0, 0), (3, 0), 0.0),
    ((1, 1), (1, -1), (0, 0), (4, 4), 2.0),
]


@pytest.mark.parametrize("dtype", ["f32", "f64", "f16", "i32", "i64"])
@pytest.mark.parametrize("shape,low,high,interior,value", PADS)
def test_pad_matches_torch_pad_after_interior_oracle(shape, low, high, interior, value, dtype,
                                                     rng):
    x = _data(rng, shape, dtype)
    (got,) = run_op("pad", [x], low=low, high=high, interior=interior, value=value)
    dilated = _interior_oracle(x, interior, value)
    want = _torch_pad(dilated, low, high, value)
    _same(got, want, dtype)


def test_pad_bool_against_numpy(rng):
    x = _data(rng, (3, 4), "bool")
    (got,) = run_op("pad", [x], low=(1, 0), high=(0, 2), value=1.0)
    _same(got, np.pad(x, ((1, 0), (0, 2)), constant_values=True), "bool")


def test_pad_crops_to_empty(rng):
    x = _data(rng, (3, 4))
    (got,) = run_op("pad", [x], low=(-2, 0), high=(-1, 0))
    assert got.shape == (0, 4) and got.shape == _torch_pad(x, (-2, 0), (-1, 0), 0.0).shape


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shapes,axis", [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 5)], -1),
                                         ([(3, 1, 2)], 1), ([(1, 2, 2), (1, 2, 2)], -2),
                                         ([(2, 0), (2, 3)], 1)])
def test_concat_matches_torch_cat(shapes, axis, dtype, rng):
    xs = [_data(rng, s, dtype) for s in shapes]
    (got,) = run_op("concat", xs, axis=axis)
    _same(got, torch.cat([T(x) for x in xs], dim=axis).numpy(), dtype)


def test_attributes_are_canonical_and_round_trip():
    b = Builder("canon")
    x = b.input("x", (2, 3, 4))
    r = b.op("reshape", x, shape=(4, -1))
    t = x.transpose(-1, 0, 1)
    s = b.slice(x, start=(-1, 0, -100), stop=(100, -1, 3), step=(1, 2, 2))
    p = b.pad(x, low=(1, 0, 0), high=(0, -1, 2))
    c = b.concat(x, x, axis=-1)
    assert r.node.attrs["shape"] == (4, 6)
    assert t.node.attrs["perm"] == (2, 0, 1)
    assert dict(s.node.attrs) == {"start": (1, 0, 0), "stop": (2, 2, 3), "step": (1, 2, 2)}
    assert p.node.attrs["interior"] == (0, 0, 0)
    assert c.node.attrs["axis"] == 2
    assert b.slice(x, start=(1, 0, 0), stop=(2, 2, 3), step=(1, 2, 2)).node is s.node
    roundtrip(b.build(outputs={"r": r, "t": t, "s": s, "p": p, "c": c}))


# -- VJPs ------------------------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@settings(max_examples=15, deadline=None)
@given(shapes, st.data())
def test_reverse_vjp_hypothesis(shape, data):
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True))
    x = np.random.default_rng(len(shape)).standard_normal(shape)
    check_vjp("reverse", [x], {"axes": tuple(axes)})


@settings(max_examples=15, deadline=None)
@given(shapes, st.data())
def test_transpose_vjp_hypothesis(shape, data):
    perm = data.draw(st.permutations(range(len(shape))))
    perm = [p - len(shape) if data.draw(st.booleans()) else p for p in perm]
    x = np.random.default_rng(len(shape)).standard_normal(shape)
    check_vjp("transpose", [x], {"perm": tuple(perm)})


@settings(max_examples=15, deadline=None)
@given(shapes, st.data())
def test_slice_vjp_hypothesis(shape, data):
    start = tuple(data.draw(st.integers(-d - 2, d + 2)) for d in shape)
    stop = tuple(data.draw(st.integers(-d - 2, d + 2)) for d in shape)
    step = tuple(data.draw(st.integers(1, 3)) for _ in shape)
    x = np.random.default_rng(sum(shape)).standard_normal(shape)
    check_vjp("slice", [x], {"start": start, "stop": stop, "step": step})


@settings(max_examples=15, deadline=None)
@given(shapes, st.data())
def test_pad_vjp_hypothesis(shape, data):
    interior = tuple(data.draw(st.integers(0, 2)) for _ in shape)
    low, high = [], []
    for n, it in zip(shape, interior, strict=True):
        size = n + (n - 1) * it
        lo = data.draw(st.integers(-size, 2))
        low.append(lo)
        high.append(data.draw(st.integers(-(size + lo), 2)))  # result size >= 0
    value = data.draw(st.sampled_from([0.0, -2.5]))
    x = np.random.default_rng(len(shape)).standard_normal(shape)
    check_vjp("pad", [x], {"low": tuple(low), "high": tuple(high), "interior": interior,
                           "value": value})


@pytest.mark.parametrize("shape,new", [((2, 3, 4), (6, 4)), ((3, 1, 5), (5, 3)), ((), (1,)),
                                       ((4,), (2, 1, 2))])
def test_reshape_vjp(shape, new, rng):
    check_vjp("reshape", [rng.standard_normal(shape)], {"shape": new})


@pytest.mark.parametrize("shape,target", [((3, 1), (3, 5)), ((1,), (2, 7)), ((), (2, 3)),
                                          ((2, 1, 3), (4, 2, 5, 3)), ((2, 3), (2, 3))])
def test_broadcast_vjp(shape, target, rng):
    check_vjp("broadcast", [rng.standard_normal(shape)], {"shape": target})


@pytest.mark.parametrize("shapes,axis", [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 5)], -1),
                                         ([(3, 1, 2)], 1), ([(2, 0), (2, 3)], 1)])
def test_concat_vjp(shapes, axis, rng):
    check_vjp("concat", [rng.standard_normal(s) for s in shapes], {"axis": axis})


def test_integer_movement_has_no_gradient(rng):
    from .harness import vjp_graph

    a = rng.standard_normal((2, 3))
    g = vjp_graph("slice", [a.astype(np.int64)], {"start": (0, 0), "stop": (1, 3)},
                  [np.ones((1, 3), np.int64)])
    assert "g0" not in dict(g.outputs)


# -- errors ----------------------------------------------------------------------------------------


def _x(shape, dtype="f32"):
    b = Builder("err")
    return b, b.input("x", shape, dtype)


def test_reshape_errors():
    b, x = _x((2, 3))
    with pytest.raises(ShapeError, match=r"reshape\(f32\[2, 3\]\).*6 elements.*\(4, 2\)"):
        b.op("reshape", x, shape=(4, 2))
    with pytest.raises(ShapeError, match=r"reshape\(f32\[2, 3\]\).*at most one -1"):
        b.op("reshape", x, shape=(-1, -1))
    with pytest.raises(ShapeError, match=r"reshape\(f32\[2, 3\]\).*no size for the -1"):
        b.op("reshape", x, shape=(4, -1))
    with pytest.raises(ShapeError, match=r"reshape\(f32\[2, 3\]\).*negative dimension -2"):
        b.op("reshape", x, shape=(-2, -3))


def test_transpose_errors():
    b, x = _x((2, 3, 4))
    with pytest.raises(ShapeError, match=r"transpose\(f32\[2, 3, 4\]\).*not a permutation"):
        b.transpose(x, perm=(0, 0, 1))
    with pytest.raises(ShapeError, match=r"transpose\(f32\[2, 3, 4\]\).*2 entries.*rank 3"):
        b.transpose(x, perm=(1, 0))
    with pytest.raises(ShapeError, match=r"transpose\(f32\[2, 3, 4\]\).*out of range"):
        b.transpose(x, perm=(0, 1, 3))


def test_broadcast_errors():
    b, x = _x((3, 2))
    with pytest.raises(ShapeError, match=r"broadcast\(f32\[3, 2\]\).*\(4, 2\).*axis 0 has size 3"):
        b.broadcast(x, shape=(4, 2))
    with pytest.raises(ShapeError, match=r"broadcast\(f32\[3, 2\]\).*lower rank"):
        b.broadcast(x, shape=(2,))
    with pytest.raises(ShapeError, match=r"broadcast\(f32\[3, 2\]\).*negative"):
        b.broadcast(x, shape=(-1, 3, 2))


def test_slice_errors():
    b, x = _x((4, 5))
    with pytest.raises(ShapeError, match=r"slice\(f32\[4, 5\]\).*step=\(1, 0\) must be >= 1"):
        b.slice(x, start=(0, 0), stop=(4, 5), step=(1, 0))
    with pytest.raises(ShapeError, match=r"slice\(f32\[4, 5\]\).*step=\(-1, 1\) must be >= 1"):
        b.slice(x, start=(0, 0), stop=(4, 5), step=(-1, 1))
    with pytest.raises(ShapeError, match=r"slice\(f32\[4, 5\]\).*start=\(0,\) has 1 entries"):
        b.slice(x, start=(0,), stop=(4, 5))
    with pytest.raises(AttributeSchemaError, match=r"slice\(f32\[4, 5\]\).*missing.*'stop'"):
        b.slice(x, start=(0, 0))


def test_pad_errors():
    b, x = _x((3, 4))
    with pytest.raises(ShapeError, match=r"pad\(f32\[3, 4\]\).*axis 0 negative size -1"):
        b.pad(x, low=(-2, 0), high=(-2, 0))
    with pytest.raises(ShapeError, match=r"pad\(f32\[3, 4\]\).*interior=\(0, -1\) must be >= 0"):
        b.pad(x, low=(0, 0), high=(0, 0), interior=(0, -1))
    with pytest.raises(ShapeError, match=r"pad\(f32\[3, 4\]\).*high=\(1,\) has 1 entries"):
        b.pad(x, low=(0, 0), high=(1,))


def test_concat_errors():
    b, x = _x((2, 3))
    y = b.input("y", (2, 4))
    z = b.input("z", (2, 3, 1))
    i = b.input("i", (2, 3), "i32")
    s = b.input("s", ())
    with pytest.raises(ShapeError, match=r"concat\(f32\[2, 3\], f32\[2, 4\]\).*differ in axis 1"):
        b.concat(x, y, axis=0)
    with pytest.raises(ShapeError, match=r"concat\(f32\[2, 3\], f32\[2, 3, 1\]\).*ranks"):
        b.concat(x, z, axis=0)
    with pytest.raises(DTypeError, match=r"concat\(f32\[2, 3\], i32\[2, 3\]\).*dtypes"):
        b.concat(x, i, axis=0)
    with pytest.raises(ShapeError, match=r"concat\(f32\[2, 3\], f32\[2, 4\]\).*axis 2 is out"):
        b.concat(x, y, axis=2)
    with pytest.raises(ShapeError, match=r"concat\(f32\[\]\).*rank-0"):
        b.concat(s, axis=0)
    with pytest.raises(AttributeSchemaError, match=r"concat\(\).*takes 1..n operands, got 0"):
        b.concat(axis=0)
