"""Normalization and loss composites (batch_norm, layer_norm, softmax, log_softmax,
cross_entropy, mse, weight_decay): each op's numpy reference against torch CPU, and errors for
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphc.ir.errors import AttributeSchemaError, DTypeError, ShapeError

from .harness import op_graph, run_op


def T(a):
    return torch.from_numpy(np.asarray(a))


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# -- layer_norm ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis", [((4, 6), -1), ((2, 3, 5), 1), ((2, 3, 5), -1),
                                        ((7,), 0), ((2, 1, 3, 4), 2)])
@pytest.mark.parametrize("affine", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_matches_torch(shape, axis, affine, dtype, rng):
    x = randn(rng, *shape, dtype=dtype) * 3 + 2
    inner = shape[axis:]
    params = [randn(rng, *inner, dtype=dtype) for _ in range(affine)]
    (got,) = run_op("layer_norm", [x, *params], axis=axis, eps=1e-4)
    want = F.layer_norm(T(x), inner, *(T(p) for p in params), eps=1e-4)
    assert got.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, want.numpy(), **tol)


def test_layer_norm_gradients_match_torch_autograd(rng):
    from graphc.backends.reference import run_graph
    from graphc.ir.builder import Builder
    from graphc.passes.autodiff import autodiff

    x, g, be, w = (randn(rng, *s, dtype=np.float64) for s in ((3, 4, 5), (4, 5), (4, 5),
                                                             (3, 4, 5)))
    b = Builder("ln")
    xi = b.input("x", x.shape, "f64")
    gp, bp = b.param("g", init=g, dtype="f64"), b.param("beta", init=be, dtype="f64")
    y = b.layer_norm(xi, gp, bp, axis=1)
    graph = b.build(outputs={"loss": (y * b.const(w, "f64")).sum()})
    got = run_graph(autodiff(graph, "loss", ["x", "g", "beta"]), {"x": x})
    leaves = [T(a.copy()).requires_grad_() for a in (x, g, be)]
    (F.layer_norm(leaves[0], (4, 5), leaves[1], leaves[2]) * T(w)).sum().backward()
    for name, leaf in zip(("x", "g", "beta"), leaves, strict=True):
        np.testing.assert_allclose(got[f"grad.{name}"], leaf.grad.numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shapes,attrs,pattern", [
    ([(2, 3), (2,)], {}, r"layer_norm gamma must be the normalized shape \[3\] of x "
                         r"f32\[2, 3\] \(axis 1\), got f32\[2\]"),
    ([(2, 3), (3,), (2, 3)], {"axis": -1}, r"layer_norm beta must be the normalized shape"),
    ([(2, 0)], {}, r"has no elements"),
    ([(2, 3)], {"axis": 2}, r"axis 2 is out of range for rank 2"),
])
def test_layer_norm_errors(shapes, attrs, pattern):
    arrays = [np.zeros(s, np.float32) for s in shapes]
    with pytest.raises(ShapeError, match=pattern):
        op_graph("layer_norm", arrays, attrs)


# -- batch_norm ----------------------------------------------------------------------------------


def _bn_inputs(rng, shape):
    c = shape[1]
    x = randn(rng, *shape) * 2 + 1
    gamma, beta = randn(rng, c), randn(rng, c)
    rmean, rvar = randn(rng, c), (rng.random(c) + 0.5).astype(np.float32)
    return x, gamma, beta, rmean, rvar


def _torch_bn(shape, gamma, beta, rmean, rvar, momentum, eps):
    cls = torch.nn.BatchNorm1d if len(shape) <= 3 else torch.nn.BatchNorm2d
    bn = cls(shape[1], eps=eps, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(T(gamma))
        bn.bias.copy_(T(beta))
        bn.running_mean.copy_(T(rmean))
        bn.running_var.copy_(T(rvar))
    return bn


BN_SHAPES = [(6, 3), (4, 3, 5), (2, 3, 4, 5)]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("momentum,eps", [(0.1, 1e-5), (0.3, 1e-2)])
def test_batch_norm_training_matches_torch_module_and_buffers(shape, momentum, eps, rng):
    x, gamma, beta, rmean, rvar = _bn_inputs(rng, shape)
    y, new_mean, new_var = run_op("batch_norm", [x, gamma, beta, rmean, rvar], training=True,
                                  momentum=momentum, eps=eps)
    bn = _torch_bn(shape, gamma, beta, rmean, rvar, momentum, eps).train()
    with torch.no_grad():
        want = bn(T(x)).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_mean, bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_var, bn.running_var.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_inference_uses_running_stats_like_torch_eval(shape, rng):
    x, gamma, beta, rmean, rvar = _bn_inputs(rng, shape)
    (y,) = run_op("batch_norm", [x, gamma, beta, rmean, rvar], training=False)
    bn = _torch_bn(shape, gamma, beta, rmean, rvar, 0.1, 1e-5).eval()
    with torch.no_grad():
        want = bn(T(x)).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_batch_norm_is_the_seed_formula_per_unit(rng):
    # z_hat_i = gamma (z_i - mu) / sqrt(eps + sigma^2) + beta for one unit over a minibatch
    z = randn(rng, 8, 1, dtype=np.float64)
    gamma, beta, eps = 1.7, -0.4, 1e-3
    ones = np.ones(1)
    y, _, _ = run_op("batch_norm", [z, gamma * ones, beta * ones, 0 * ones, ones],
                     training=True, eps=eps)
    mu, var = z.mean(), ((z - z.mean()) ** 2).mean()
    np.testing.assert_allclose(y, gamma * (z - mu) / np.sqrt(eps + var) + beta, rtol=1e-12)


def test_batch_norm_errors():
    f = np.float32
    c3 = np.zeros(3, f)
    with pytest.raises(ShapeError, match=r"running_var must be \[3\]"):
        op_graph("batch_norm", [np.zeros((4, 3), f), c3, c3, c3, np.zeros(4, f)],
                 {"training": True})
    with pytest.raises(ShapeError, match="more than one value per channel"):
        op_graph("batch_norm", [np.zeros((1, 3), f), c3, c3, c3, c3], {"training": True})
    with pytest.raises(AttributeSchemaError, match="training"):
        op_graph("batch_norm", [np.zeros((4, 3), f), c3, c3, c3, c3])


# -- softmax / log_softmax -----------------------------------------------------------------------


@pytest.mark.parametrize("op,fn", [("softmax", F.softmax), ("log_softmax", F.log_softmax)])
@pytest.mark.parametrize("shape,axis", [((4, 7), -1), ((3, 4, 5), 1), ((6,), 0),
                                        ((2, 3, 4), 0)])
def test_softmax_family_matches_torch(op, fn, shape, axis, rng):
    x = randn(rng, *shape) * 4
    (got,) = run_op(op, [x], axis=axis)
    np.testing.assert_allclose(got, fn(T(x), dim=axis).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,fn", [("softmax", F.softmax), ("log_softmax", F.log_softmax)])
def test_softmax_family_is_stable_for_large_logits(op, fn):
    x = np.array([[1000.0, 999.0, -1000.0], [-5e4, -5e4 + 2.0, -5e4 + 1.0],
                  [3e4, 0.0, -3e4]], np.float32)
    (got,) = run_op(op, [x])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, fn(T(x).double(), dim=-1).numpy(), rtol=1e-5, atol=1e-6)


def test_softmax_rows_sum_to_one(rng):
    (p,) = run_op("softmax", [randn(rng, 5, 9) * 10])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


# -- cross_entropy -------------------------------------------------------------------------------

REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("spatial", [(), (3,), (2, 3)])
def test_cross_entropy_with_labels_matches_torch(reduction, label_dtype, spatial, rng):
    logits = randn(rng, 4, 5, *spatial) * 3
    labels = rng.integers(0, 5, (4, *spatial)).astype(label_dtype)
    (got,) = run_op("cross_entropy", [logits, labels], reduction=reduction)
    want = F.cross_entropy(T(logits), T(labels).long(), reduction=reduction).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["one_hot", "probabilities"])
@pytest.mark.parametrize("spatial", [(), (3,)])
def test_cross_entropy_with_float_targets_matches_torch(reduction, kind, spatial, rng):
    logits = randn(rng, 4, 5, *spatial) * 3
    if kind == "one_hot":
        labels = rng.integers(0, 5, (4, *spatial))
        target = np.moveaxis(np.eye(5, dtype=np.float32)[labels], -1, 1)
    else:
        target = F.softmax(T(randn(rng, 4, 5, *spatial)), dim=1).numpy()
    (got,) = run_op("cross_entropy", [logits, target], reduction=reduction)
    want = F.cross_entropy(T(logits), T(target), reduction=reduction).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cross_entropy_is_stable_for_large_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-2e4, 2e4, 0.0]], np.float32)
    labels = np.array([1, 0])
    (got,) = run_op("cross_entropy", [logits, labels], reduction="none")
    want = F.cross_entropy(T(logits).double(), T(labels), reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cross_entropy_one_hot_labels_equal_integer_labels(rng):
    logits = randn(rng, 6, 4)
    labels = rng.integers(0, 4, 6)
    (a,) = run_op("cross_entropy", [logits, labels])
    (b,) = run_op("cross_entropy", [logits, np.eye(4, dtype=np.float32)[labels]])
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_cross_entropy_errors():
    f = np.float32
    with pytest.raises(ShapeError, match=r"labels .* must have shape \(4,\)"):
        op_graph("cross_entropy", [np.zeros((4, 5), f), np.zeros((5,), np.int64)])
    with pytest.raises(ShapeError, match="must match logits"):
        op_graph("cross_entropy", [np.zeros((4, 5), f), np.zeros((4, 4), f)])
    with pytest.raises(DTypeError, match="integer labels"):
        op_graph("cross_entropy", [np.zeros((4, 5), f), np.zeros((4,), np.bool_)])
    with pytest.raises(ShapeError, match=r"\[N, K\]"):
        op_graph("cross_entropy", [np.zeros((5,), f), np.zeros((), np.int64)])
    with pytest.raises(AttributeSchemaError, match="reduction"):
        op_graph("cross_entropy", [np.zeros((4, 5), f), np.zeros((4,), np.int64)],
                 {"reduction": "avg"})
    with pytest.raises(ShapeError, match=r"logits f32\[4, 0\] have no classes"):
        op_graph("cross_entropy", [np.zeros((4, 0), f), np.zeros((4,), np.int64)])
    with pytest.raises(ShapeError, match=r"the mean loss over no elements \(f32\[0\]\)"):
        op_graph("cross_entropy", [np.zeros((0, 3), f), np.zeros((0,), np.int64)])
    # a sum over no elements is 0
    assert run_op("cross_entropy", [np.zeros((0, 3), f), np.zeros((0,), np.int64)],
                  reduction="sum")[0] == 0.0


# -- mse, weight_decay ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(reduction, rng):
    pred, target = randn(rng, 3, 4), randn(rng, 3, 4)
    (got,) = run_op("mse", [pred, target], reduction=reduction)
    want = F.mse_loss(T(pred), T(target), reduction=reduction).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_mse_rejects_shape_mismatch():
    with pytest.raises(ShapeError, match=r"f32\[3, 4\].*f32\[4\]"):
        op_graph("mse", [np.zeros((3, 4), np.float32), np.zeros(4, np.float32)])


def test_weight_decay_is_lambda_times_sum_of_squares(rng):
    ws = [randn(rng, 3, 4), randn(rng, 4), randn(rng, 2, 2, 3)]
    (got,) = run_op("weight_decay", ws, lam=0.01)
    want = 0.01 * sum((T(w) ** 2).sum() for w in ws)
    assert got.shape == ()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_weight_decay_errors():
    with pytest.raises(DTypeError, match="differ"):
        op_graph("weight_decay", [np.zeros(2, np.float32), np.zeros(2)], {"lam": 0.1})
    with pytest.raises(AttributeSchemaError, match="lam"):
        op_graph("weight_decay", [np.zeros(2, np.float32)])
