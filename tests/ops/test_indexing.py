"""Indexing ops: take / scatter_add vs torch (index_select, take_along_dim, index_add_,
embedding), duplicate indices, VJPs vs float64 finite differences, type errors and out-of-range
indices; iota vs numpy/torch arange."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphc.ir.builder import Builder
from graphc.ir.errors import DTypeError, GraphError, ShapeError

from .harness import check_vjp, run_op


def T(a):
    return torch.from_numpy(np.asarray(a))


def torch_take(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """np.take semantics from torch.index_select on the flattened indices (no negatives)."""
    flat = torch.index_select(T(x), axis, T(idx.reshape(-1)).long())
    shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    return flat.reshape(shape).numpy()


def torch_scatter_add(x: np.ndarray, idx: np.ndarray, upd: np.ndarray, axis: int) -> np.ndarray:
    """scatter_add semantics from torch.index_add_ on flattened indices (accumulates)."""
    flat_upd = T(upd).reshape(x.shape[:axis] + (idx.size,) + x.shape[axis + 1:])
    out = T(x).clone()
    out.index_add_(axis, T(idx.reshape(-1)).long(), flat_upd)
    return out.numpy()


CASES = [  # (x shape, idx shape, axis)
    ((5,), (), 0),
    ((5,), (7,), 0),
    ((4, 3), (2, 3), 0),
    ((4, 3), (6,), 1),
    ((4, 3), (), -1),
    ((2, 5, 3), (4,), 1),
    ((2, 5, 3), (2, 2), -2),
    ((2, 3, 4), (3,), 2),
]


def _indices(rng, shape, n, dtype=np.int64):
    return np.asarray(rng.integers(0, n, shape), dtype)


@pytest.mark.parametrize("xs, ids, axis", CASES)
@pytest.mark.parametrize("idt", [np.int32, np.int64])
def test_take_matches_torch(xs, ids, axis, idt, rng):
    x = rng.standard_normal(xs).astype(np.float32)
    idx = _indices(rng, ids, xs[axis], idt)
    (got,) = run_op("take", [x, idx], axis=axis)
    np.testing.assert_array_equal(got, torch_take(x, idx, axis % len(xs)))
    np.testing.assert_array_equal(got, np.take(x, idx, axis=axis))


def test_take_rows_is_embedding(rng):
    table = rng.standard_normal((10, 4)).astype(np.float32)
    ids = np.array([[1, 3, 3], [9, 0, 1]], np.int64)
    (got,) = run_op("take", [table, ids])
    want = torch.nn.functional.embedding(T(ids), T(table)).numpy()
    np.testing.assert_array_equal(got, want)


def test_take_along_dim_agrees_for_matching_index_grid(rng):
    # take along axis 1 with a 1-D index equals take_along_dim with the index broadcast
    x = rng.standard_normal((3, 6)).astype(np.float32)
    idx = np.array([5, 0, 2, 2], np.int64)
    (got,) = run_op("take", [x, idx], axis=1)
    want = torch.take_along_dim(T(x), T(np.broadcast_to(idx, (3, 4)).copy()), dim=1).numpy()
    np.testing.assert_array_equal(got, want)


def test_take_negative_indices_count_from_end(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    idx = np.array([-1, -4, 2], np.int64)
    (got,) = run_op("take", [x, idx], axis=0)
    np.testing.assert_array_equal(got, x[[3, 0, 2]])


@pytest.mark.parametrize("xs, ids, axis", CASES)
def test_scatter_add_matches_torch(xs, ids, axis, rng):
    x = rng.standard_normal(xs).astype(np.float32)
    ax = axis % len(xs)
    idx = _indices(rng, ids, xs[ax])
    upd = rng.standard_normal(xs[:ax] + ids + xs[ax + 1:]).astype(np.float32)
    (got,) = run_op("scatter_add", [x, idx, upd], axis=axis)
    np.testing.assert_allclose(got, torch_scatter_add(x, idx, upd, ax), rtol=1e-6, atol=1e-6)


def test_scatter_add_duplicates_accumulate():
    x = np.zeros((4, 2), np.float64)
    idx = np.array([1, 1, 3, 1], np.int64)
    upd = np.arange(8, dtype=np.float64).reshape(4, 2)
    (got,) = run_op("scatter_add", [x, idx, upd])
    want = np.array([[0, 0], [0 + 2 + 6, 1 + 3 + 7], [0, 0], [4, 5]], np.float64)
    np.testing.assert_array_equal(got, want)


def test_scatter_add_integer_operand():
    x = np.ones(3, np.int64)
    idx = np.array([[0, 2], [2, 2]], np.int32)
    upd = np.array([[10, 1], [1, 1]], np.int64)
    (got,) = run_op("scatter_add", [x, idx, upd])
    np.testing.assert_array_equal(got, [11, 1, 4])


@pytest.mark.parametrize("xs, ids, axis", CASES)
def test_take_vjp(xs, ids, axis, rng):
    x = rng.standard_normal(xs)
    idx = _indices(rng, ids, xs[axis])
    check_vjp("take", [x, idx], {"axis": axis}, wrt=[0])


@pytest.mark.parametrize("xs, ids, axis", CASES)
def test_scatter_add_vjp(xs, ids, axis, rng):
    ax = axis % len(xs)
    x = rng.standard_normal(xs)
    idx = _indices(rng, ids, xs[ax])
    upd = rng.standard_normal(xs[:ax] + ids + xs[ax + 1:])
    check_vjp("scatter_add", [x, idx, upd], {"axis": axis}, wrt=[0, 2])


def test_take_vjp_with_duplicates_sums():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    idx = np.array([2, 0, 2, 2], np.int64)
    check_vjp("take", [x, idx], {"axis": 0}, wrt=[0])


def test_vjp_gives_no_gradient_for_indices():
    b = Builder()
    x = b.input("x", (4, 3), "f64")
    idx = b.input("i", (2,), "i64")
    y = b.take(x, idx, axis=1)
    from graphc.ir.registry import get_op

    gx, gi = get_op("take").vjp(b, (x, idx), (y,), (b.input("ct", (4, 2), "f64"),),
                                dict(y.node.attrs))
    assert gi is None and gx.node.op == "scatter_add"
    upd = b.input("u", (4, 2), "f64")
    z = b.scatter_add(x, idx, upd, axis=1)
    grads = get_op("scatter_add").vjp(b, (x, idx, upd), (z,), (b.input("c2", (4, 3), "f64"),),
                                      dict(z.node.attrs))
    assert grads[1] is None and grads[2].node.op == "take"


def test_axis_is_normalized():
    b = Builder()
    x = b.input("x", (2, 5, 3))
    y = b.take(x, b.input("i", (4,), "i32"), axis=-2)
    assert y.node.attrs["axis"] == 1 and y.shape == (2, 4, 3)


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dt", ["f32", "bool"])
def test_take_rejects_non_integer_indices(dt):
    b = Builder()
    x = b.input("x", (4, 3))
    i = b.input("i", (2,), dt)
    with pytest.raises(DTypeError, match=r"take.*indices must be i32 or i64"):
        b.take(x, i)


def test_scatter_add_rejects_bad_types():
    b = Builder()
    x = b.input("x", (4, 3))
    i = b.input("i", (2,), "i64")
    with pytest.raises(DTypeError, match="scatter_add.*indices"):
        b.scatter_add(x, b.input("f", (2,), "f32"), b.input("u", (2, 3)))
    with pytest.raises(ShapeError, match=r"scatter_add.*\(2, 3\)"):
        b.scatter_add(x, i, b.input("u2", (3, 3)))
    with pytest.raises(DTypeError, match="scatter_add.*dtype"):
        b.scatter_add(x, i, b.input("u3", (2, 3), "f64"))


def test_take_axis_out_of_range():
    b = Builder()
    x = b.input("x", (4, 3))
    i = b.input("i", (2,), "i64")
    with pytest.raises(ShapeError, match="take.*axis 2 is out of range for rank 2"):
        b.take(x, i, axis=2)
    with pytest.raises(ShapeError, match="take.*rank >= 1"):
        b.take(b.input("s", ()), i)


@pytest.mark.parametrize("bad", [4, -5, 100])
def test_take_out_of_range_index_raises(bad):
    x = np.zeros((4, 3), np.float32)
    idx = np.array([0, bad, 1], np.int64)
    with pytest.raises(GraphError, match=rf"take: index {bad} .*axis 0"):
        run_op("take", [x, idx])


def test_scatter_add_out_of_range_index_raises():
    x = np.zeros((4, 3), np.float32)
    idx = np.array([[0], [3]], np.int32)
    upd = np.ones((4, 2, 1), np.float32)
    with pytest.raises(GraphError, match=r"scatter_add: index 3 .*axis 1"):
        run_op("scatter_add", [x, idx, upd], axis=1)


# -- iota ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, axis", [((5,), 0), ((3, 4), 0), ((3, 4), 1), ((2, 3, 4), -1),
                                         ((2, 1, 3), 1)])
@pytest.mark.parametrize("dtype", ["i64", "i32", "f32", "f64"])
def test_iota_matches_arange(shape, axis, dtype):
    (got,) = run_op("iota", [], shape=shape, axis=axis, dtype=dtype)
    ax = axis % len(shape)
    line = torch.arange(shape[ax]).reshape([-1 if i == ax else 1 for i in range(len(shape))])
    want = line.expand(shape).numpy()
    assert got.shape == shape and str(got.dtype) == {"i64": "int64", "i32": "int32",
                                                     "f32": "float32", "f64": "float64"}[dtype]
    np.testing.assert_array_equal(got, want)


def test_iota_default_dtype_and_errors():
    b = Builder()
    t = b.iota(shape=(3,), axis=0)
    assert t.dtype == "i64"
    with pytest.raises(ShapeError, match="iota.*axis 2"):
        b.iota(shape=(3, 2), axis=2)
    with pytest.raises(DTypeError, match="iota.*bool"):
        b.iota(shape=(3,), axis=0, dtype="bool")
