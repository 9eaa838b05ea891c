"""ONNX import of opset 23's Attention and RotaryEmbedding (`graphc/onnx_attention.py`) against
ONNX Runtime through the reference and LLVM backends, and Attention's gradient against torch's
scaled_dot_product_attention."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.optim import SGD
from graphc.train import train_step

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _f32, _opset  # noqa: E402


def _opset23(model):
    return _opset(model, 23)


ATTENTION = {
    "plain": ({}, (2, 4, 6, 8), (2, 4, 6, 8), None),
    "causal": ({"is_causal": 1}, (2, 4, 6, 8), (2, 4, 6, 8), None),
    "grouped heads": ({"is_causal": 1}, (2, 6, 5, 8), (2, 2, 5, 8), None),
    "causal, more queries than keys": ({"is_causal": 1}, (1, 2, 5, 4), (1, 2, 3, 4), None),
    "causal, fewer queries than keys": ({"is_causal": 1}, (1, 2, 3, 4), (1, 2, 6, 4), None),
    "causal with softcap": ({"is_causal": 1, "softcap": 1.5}, (1, 2, 4, 4), (1, 2, 5, 4), None),
    "cross, scaled, softcap": ({"scale": 0.3, "softcap": 2.5}, (1, 2, 3, 4), (1, 2, 7, 4), None),
    "bool mask": ({}, (2, 2, 5, 4), (2, 2, 5, 4), "bool"),
    "additive mask": ({}, (2, 2, 5, 4), (2, 2, 5, 4), "float"),
    "3-d": ({"q_num_heads": 4, "kv_num_heads": 2}, (2, 5, 32), (2, 5, 16), None),
}


@pytest.mark.parametrize("case", list(ATTENTION))
def test_attention(rng, case):
    attrs, qs, ks, mask = ATTENTION[case]
    feeds = {"q": _f32(rng, *qs), "k": _f32(rng, *ks), "v": _f32(rng, *ks)}
    ins = ["q", "k", "v"]
    if mask:
        sq, skv = (qs[2], ks[2]) if len(qs) == 4 else (qs[1], ks[1])
        m = rng.random((sq, skv)) < 0.7
        m[:, 0] = True  # every query attends to something
        feeds["m"] = m if mask == "bool" else np.where(m, 0.0, -3.0).astype(np.float32)
        ins.append("m")
    model = _opset23(make_model("att", [node("Attention", ins, ["y"], **attrs)], feeds, ["y"]))
    _check(model, feeds, rtol=1e-4, atol=1e-5)


def test_attention_with_a_key_value_cache(rng):
    """Two new tokens against a cache of five: the present key/value outputs are the cache
    with the new ones appended, and the causal mask is offset by the cache length."""
    q, k, v = _f32(rng, 1, 2, 2, 8), _f32(rng, 1, 2, 2, 8), _f32(rng, 1, 2, 2, 8)
    pk, pv = _f32(rng, 1, 2, 5, 8), _f32(rng, 1, 2, 5, 8)
    feeds = {"q": q, "k": k, "v": v, "pk": pk, "pv": pv}
    model = _opset23(make_model("kv", [node("Attention", ["q", "k", "v", "", "pk", "pv"],
                                            ["y", "kk", "vv"], is_causal=1)],
                                feeds, ["y", "kk", "vv"]))
    _check(model, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot_dim", [0, 4])
@pytest.mark.parametrize("layout", ["4-d", "3-d"])
def test_rotary_embedding(rng, interleaved, rot_dim, layout):
    b, h, s, d = 2, 3, 5, 8
    half = (rot_dim or d) // 2
    cos, sin = _f32(rng, 16, half), _f32(rng, 16, half)
    pos = rng.integers(0, 16, (b, s)).astype(np.int64)
    x = _f32(rng, b, h, s, d) if layout == "4-d" else _f32(rng, b, s, h * d)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot_dim}
    if layout == "3-d":
        attrs["num_heads"] = h
    model = _opset23(make_model("rot", [node("RotaryEmbedding", ["x", "cos", "sin", "pos"],
                                             ["y"], **attrs)],
                                {"x": x, "pos": pos}, ["y"], {"cos": cos, "sin": sin}))
    _check(model, {"x": x, "pos": pos}, rtol=1e-5, atol=1e-6)


def test_attention_gradient_matches_torch(rng):
    """Causal grouped-query attention after a projection: one SGD step against torch."""
    torch = pytest.importorskip("torch")
    x, w = _f32(rng, 2, 4, 5, 8), _f32(rng, 8, 8) * 0.5
    kv = _f32(rng, 2, 2, 5, 8)
    model = _opset23(make_model("attg", [
        node("MatMul", ["x", "w"], ["q"]),
        node("Attention", ["q", "kv", "kv"], ["y"], is_causal=1),
        node("ReduceSum", ["y"], ["loss"], keepdims=0)],
        {"x": x, "kv": kv}, ["loss"], {"w": w}))
    step = train_step(graphc.from_onnx(model), "loss", SGD(lr=1.0))
    tw = torch.tensor(w, requires_grad=True)
    tq = torch.tensor(x) @ tw
    tkv = torch.tensor(kv).repeat_interleave(2, dim=1)
    torch.nn.functional.scaled_dot_product_attention(tq, tkv, tkv,
                                                     is_causal=True).sum().backward()
    for target in ("reference", "llvm"):
        out = graphc.compile(step, target=target)(x=x, kv=kv, step=np.int64(0))
        np.testing.assert_allclose(out["new.w"], w - tw.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_bad_attention_shapes_are_named(rng):
    feeds = {"q": _f32(rng, 1, 3, 4, 8), "k": _f32(rng, 1, 2, 4, 8), "v": _f32(rng, 1, 2, 4, 8)}
    model = _opset23(make_model("bad", [node("Attention", ["q", "k", "v"], ["y"])], feeds,
                                ["y"]))
    with pytest.raises(graphc.GraphError, match="Attention.*do not fit together"):
        graphc.from_onnx(model)


def test_causal_cache_with_fewer_queries_than_new_keys_follows_the_onnx_reference(rng):
    """One query, three new keys, a cache of two: ONNX's reference offsets the causal mask by
    the cache length (the query sees keys 0..2), ONNX Runtime by all keys but the queries; the
    reference evaluator of the `onnx` package is the oracle here."""
    from onnx.reference import ReferenceEvaluator

    feeds = {"q": _f32(rng, 1, 2, 1, 4), "k": _f32(rng, 1, 2, 3, 4), "v": _f32(rng, 1, 2, 3, 4),
             "pk": _f32(rng, 1, 2, 2, 4), "pv": _f32(rng, 1, 2, 2, 4)}
    model = _opset23(make_model("kv", [node("Attention", ["q", "k", "v", "", "pk", "pv"],
                                            ["y", "kk", "vv"], is_causal=1, softcap=2.0)],
                                feeds, ["y", "kk", "vv"]))
    want = ReferenceEvaluator(model).run(None, feeds)
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(feeds)
        for name, w in zip(("y", "kk", "vv"), want, strict=True):
            np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("mode,axis,shape,steps,write", [
    ("linear", -2, (2, 3, 8, 4), 3, [0, 5]),
    ("circular", -2, (2, 3, 8, 4), 3, [6, 7]),
    ("linear", 1, (3, 6, 5), 2, None),
    ("circular", 2, (2, 4, 5, 3), 5, [9, 3]),
], ids=["linear", "circular-wraps", "no-write-indices", "circular-whole-cache"])
def test_tensor_scatter_updates_a_kv_cache(rng, mode, axis, shape, steps, write):
    """Opset 24's TensorScatter against ONNX Runtime: write indices fed at run time, per batch
    item, wrapping around the cache in circular mode."""
    from onnx import TensorProto, helper

    upd = list(shape)
    upd[axis] = steps
    names = ["past", "upd"] + (["w"] if write is not None else [])
    ins = [helper.make_tensor_value_info("past", TensorProto.FLOAT, list(shape)),
           helper.make_tensor_value_info("upd", TensorProto.FLOAT, upd)]
    if write is not None:
        ins.append(helper.make_tensor_value_info("w", TensorProto.INT64, [shape[0]]))
    g = helper.make_graph([helper.make_node("TensorScatter", names, ["y"], mode=mode, axis=axis)],
                          "ts", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 24)])
    model.ir_version = 10
    feeds = {"past": _f32(rng, *shape), "upd": _f32(rng, *upd)}
    if write is not None:
        feeds["w"] = np.array(write, np.int64)
    _check(model, feeds, rtol=0, atol=0)


def test_tensor_scatter_refuses_a_mismatched_update(rng):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("TensorScatter", ["past", "upd"], ["y"])], "ts",
                          [helper.make_tensor_value_info("past", TensorProto.FLOAT, [2, 4, 3]),
                           helper.make_tensor_value_info("upd", TensorProto.FLOAT, [2, 5, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 24)])
    with pytest.raises(graphc.GraphError, match=r"\(TensorScatter\): update of shape \[2, 5, 3\] "
                                                r"for a cache of shape \[2, 4, 3\]"):
        graphc.from_onnx(model)
