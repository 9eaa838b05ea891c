"""ONNX import of element-wise indexing, TopK and the classification losses
(`graphc/onnx_index.py`) against ONNX Runtime through the reference and LLVM backends, with
constant and fed indices; TopK's and SoftmaxCrossEntropyLoss's gradients against torch."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.optim import SGD
from graphc.train import train_step

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _f32  # noqa: E402

FLOAT = onnx.TensorProto.FLOAT


def _both(name, nodes, x, idx_name, idx, outputs, extra=None):
    """The model with the indices as an initializer and as a fed input."""
    extra = extra or {}
    const = make_model(name, nodes, x, outputs, {idx_name: idx, **extra})
    fed = make_model(name, nodes, {**x, idx_name: idx}, outputs, extra)
    return [(const, x), (fed, {**x, idx_name: idx})]


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(rng, axis):
    x = _f32(rng, 3, 4, 5)
    n = x.shape[axis]
    shape = {0: (2, 4, 5), 1: (3, 2, 5), -1: (3, 4, 3)}[axis]
    idx = rng.integers(-n, n, shape).astype(np.int64)
    for model, feeds in _both("ge", [node("GatherElements", ["x", "i"], ["y"], axis=axis)],
                              {"x": x}, "i", idx, ["y"]):
        _check(model, feeds)


@pytest.mark.parametrize("batch_dims, idx_shape", [(0, (4, 2)), (0, (2, 3, 1)), (0, (5, 3)),
                                                    (1, (3, 2, 1)), (1, (3, 4, 2))])
def test_gather_nd(rng, batch_dims, idx_shape):
    x = _f32(rng, 3, 4, 5)
    m = idx_shape[-1]
    dims = x.shape[batch_dims:batch_dims + m]
    idx = np.stack([rng.integers(-d, d, idx_shape[:-1]) for d in dims], -1).astype(np.int64)
    if batch_dims:
        idx = idx[:x.shape[0]]
    for model, feeds in _both("gnd", [node("GatherND", ["x", "i"], ["y"],
                                           batch_dims=batch_dims)], {"x": x}, "i", idx, ["y"]):
        _check(model, feeds)


@pytest.mark.parametrize("reduction", ["none", "add"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(rng, reduction, axis):
    x = _f32(rng, 4, 5, 6)
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 3
    if reduction == "none":  # distinct positions along the axis (repeats are undefined)
        idx = np.moveaxis(np.argsort(rng.random([*np.delete(shape, axis), n]), -1)[..., :3],
                          -1, axis if axis >= 0 else x.ndim - 1)
    else:  # repeats add up
        idx = rng.integers(0, n, shape)
    idx = np.where(rng.random(idx.shape) < 0.3, idx - n, idx).astype(np.int64)
    upd = _f32(rng, *shape)
    for model, feeds in _both("se", [node("ScatterElements", ["x", "i", "u"], ["y"], axis=axis,
                                          reduction=reduction)],
                              {"x": x, "u": upd}, "i", idx, ["y"]):
        _check(model, feeds)


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_nd(rng, reduction):
    x = _f32(rng, 4, 3, 5)
    idx = np.array([[[1, 2]], [[3, 0]], [[-4, 1]]], np.int64)  # rows of x[i, j]
    upd = _f32(rng, 3, 1, 5)
    nodes = [node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction)]
    for model, feeds in _both("snd", nodes, {"x": x, "u": upd}, "i", idx, ["y"]):
        _check(model, feeds)
    rows = np.array([[2], [0]], np.int64)  # whole slices x[i]
    model = make_model("snd1", [node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction)],
                       {"x": x, "u": _f32(rng, 2, 3, 5)}, ["y"], {"i": rows})
    _check(model, {"x": x, "u": _f32(rng, 2, 3, 5)})


@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_top_k(rng, largest, axis):
    # small integers: ties, broken toward the lower index as ONNX asks
    x = rng.integers(-4, 5, (5, 7, 6)).astype(np.float32)
    model = make_model("topk", [node("TopK", ["x", "k"], ["v", "i"], axis=axis,
                                     largest=largest),
                                node("Cast", ["i"], ["fi"], to=FLOAT)],
                       {"x": x}, ["v", "fi"], {"k": np.array([3], np.int64)})
    _check(model, {"x": x}, rtol=0, atol=0)


def test_top_k_gradient_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, w = _f32(rng, 4, 9), _f32(rng, 9, 9)
    model = make_model("topkg", [node("MatMul", ["x", "w"], ["h"]),
                                 node("TopK", ["h", "k"], ["v", "i"]),
                                 node("ReduceSum", ["v"], ["loss"], keepdims=0)],
                       {"x": x}, ["loss"], {"w": w, "k": np.array([4], np.int64)})
    step = train_step(graphc.from_onnx(model), "loss", SGD(lr=1.0))
    out = graphc.compile(step, target="llvm")(x=x, step=np.int64(0))
    tw = torch.tensor(w, requires_grad=True)
    torch.topk(torch.tensor(x) @ tw, 4, dim=-1).values.sum().backward()
    np.testing.assert_allclose(out["new.w"], w - tw.grad.numpy(), rtol=1e-5, atol=1e-5)


LOSS_CASES = [("mean", None, False), ("sum", None, False), ("none", None, False),
              ("mean", 1, True), ("sum", 0, True), ("none", 2, False)]


@pytest.mark.parametrize("reduction, ignore, weighted", LOSS_CASES)
@pytest.mark.parametrize("spatial", [False, True])
def test_classification_losses(rng, reduction, ignore, weighted, spatial):
    shape = (6, 4, 3) if spatial else (6, 4)
    scores = _f32(rng, *shape)
    labels = rng.integers(0, 4, (shape[0],) + shape[2:]).astype(np.int64)
    attrs = {"reduction": reduction, **({} if ignore is None else {"ignore_index": ignore})}
    ins = ["s", "t"] + (["wt"] if weighted else [])
    init = {"wt": np.abs(_f32(rng, 4)) + 0.1} if weighted else {}
    nodes = [node("SoftmaxCrossEntropyLoss", ins, ["l", "lp"], **attrs),
             node("LogSoftmax", ["s"], ["ls"], axis=1),
             node("NegativeLogLikelihoodLoss", ["ls"] + ins[1:], ["n"], **attrs)]
    model = make_model("losses", nodes, {"s": scores, "t": labels}, ["l", "lp", "n"], init)
    _check(model, {"s": scores, "t": labels})
    const = make_model("losses", nodes, {"s": scores}, ["l", "lp", "n"], {**init, "t": labels})
    _check(const, {"s": scores})


def test_cross_entropy_gradient_matches_torch(rng):
    """Weighted, with an ignored class, through a linear layer: one SGD step."""
    torch = pytest.importorskip("torch")
    x, w = _f32(rng, 8, 5), _f32(rng, 5, 4)
    labels = rng.integers(0, 4, 8).astype(np.int64)
    cw = np.abs(_f32(rng, 4)) + 0.1
    model = make_model("ce", [node("MatMul", ["x", "w"], ["s"]),
                              node("SoftmaxCrossEntropyLoss", ["s", "t", "cw"], ["loss"],
                                   ignore_index=2)],
                       {"x": x, "t": labels}, ["loss"], {"w": w, "cw": cw})
    graph = graphc.from_onnx(model, frozen=["cw"])
    step = train_step(graph, "loss", SGD(lr=1.0))
    tw = torch.tensor(w, requires_grad=True)
    torch.nn.functional.cross_entropy(torch.tensor(x) @ tw, torch.tensor(labels),
                                      weight=torch.tensor(cw), ignore_index=2).backward()
    for target in ("reference", "llvm"):
        out = graphc.compile(step, target=target)(x=x, t=labels, step=np.int64(0))
        np.testing.assert_allclose(out["new.w"], w - tw.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op, ins, attrs, match", [
    ("GatherElements", {"i": np.array([[0, 5]], np.int64)}, {"axis": 1}, "outside"),
    ("GatherND", {"i": np.array([[0, 1, 2]], np.int64)}, {}, "indices of shape"),
    ("TopK", {"i": np.array([9], np.int64)}, {}, "K = 9"),
])
def test_bad_indexing_is_named(rng, op, ins, attrs, match):
    x = _f32(rng, 3, 4)
    model = make_model("bad", [node(op, ["x", "i"], ["y"] if op != "TopK" else ["y", "j"],
                                    **attrs)], {"x": x}, ["y"], ins)
    with pytest.raises(graphc.GraphError, match=f"{op}.*{match}"):
        graphc.from_onnx(model)
