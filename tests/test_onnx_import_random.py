"""ONNX random ops (RandomUniform(Like), RandomNormal(Like), Bernoulli) as graphc's Philox
generators: their distributions on the reference and LLVM backends, the seed input the importer
adds (or the constant seed a node names), shapes and types as ONNX Runtime gives them. The
numbers themselves are not ONNX Runtime's, so the oracle is the distribution."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

F = TensorProto.FLOAT
N = (400, 250)


def _model(nodes, inputs, outputs, types=None):
    g = helper.make_graph(nodes, "rnd", [helper.make_tensor_value_info(k, F, s)
                                         for k, s in inputs.items()],
                          [helper.make_tensor_value_info(k, (types or {}).get(k, F), None)
                           for k in outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


def _random_model():
    return _model([
        helper.make_node("RandomNormalLike", ["x"], ["n"], mean=2.0, scale=0.5),
        helper.make_node("Add", ["x", "n"], ["y"]),
        helper.make_node("RandomUniform", [], ["u"], shape=list(N), low=-1.0, high=3.0),
        helper.make_node("RandomUniformLike", ["x"], ["u01"]),
        helper.make_node("RandomNormal", [], ["fixed"], shape=[4], seed=5.0),
        helper.make_node("RandomNormal", [], ["d"], shape=[3], dtype=TensorProto.DOUBLE),
    ], {"x": list(N)}, ["y", "u", "u01", "fixed", "d"], {"d": TensorProto.DOUBLE})


@pytest.mark.parametrize("target", ["reference", "llvm"])
def test_random_ops_have_their_distributions(target):
    model = _random_model()
    graph = graphc.from_onnx(model)
    assert graph.input_names == ["x", "seed"]
    exe = graphc.compile(graph, target=target)
    x = np.zeros(N, np.float32)
    a, b = exe(x=x, seed=np.array(1, np.int64)), exe(x=x, seed=np.array(2, np.int64))
    n = x.size
    assert abs(a["y"].mean() - 2.0) < 4 * 0.5 / np.sqrt(n) and abs(a["y"].std() - 0.5) < 0.01
    assert a["u"].min() >= -1.0 and a["u"].max() < 3.0
    assert abs(a["u"].mean() - 1.0) < 4 * 4 / np.sqrt(12 * n)
    assert abs(a["u01"].mean() - 0.5) < 4 / np.sqrt(12 * n)
    # the seed input draws new numbers; a node's own seed attribute keeps them
    assert np.mean(a["y"] == b["y"]) < 0.01 and np.mean(a["u"] == b["u"]) < 0.01
    np.testing.assert_array_equal(a["fixed"], b["fixed"])
    # every node draws from a stream of its own
    assert np.mean(np.abs(a["u01"] - (a["u"] + 1.0) / 4.0) < 1e-6) < 0.01
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert [(v.shape, v.dtype) for v in a.values()] == [(w.shape, w.dtype) for w in want]


@pytest.mark.parametrize("target", ["reference", "llvm"])
def test_bernoulli_is_one_with_probability_p(target):
    """As the ONNX specification and its reference evaluator say (ONNX Runtime 1.32 returns 1
    with probability 1 - p)."""
    from onnx.reference import ReferenceEvaluator

    model = _model([helper.make_node("Bernoulli", ["p"], ["b"])], {"p": [4, 50000]}, ["b"])
    p = np.repeat(np.array([[0.0], [0.1], [0.9], [1.0]], np.float32), 50000, axis=1)
    got = graphc.compile(graphc.from_onnx(model), target=target)(p=p,
                                                                   seed=np.array(3, np.int64))
    want = ReferenceEvaluator(model).run(None, {"p": p})[0]
    assert set(np.unique(got["b"])) <= {0.0, 1.0}
    np.testing.assert_allclose(got["b"].mean(axis=1), [0.0, 0.1, 0.9, 1.0], atol=0.006)
    np.testing.assert_allclose(want.mean(axis=1), [0.0, 0.1, 0.9, 1.0], atol=0.006)


def test_imported_noise_is_seeded_by_the_training_step(rng):
    """`train_step` replaces the seed input by its step counter: a new draw every update."""
    from graphc.optim import SGD
    from graphc.train import Trainer, train_step

    model = _model([helper.make_node("RandomNormalLike", ["x"], ["n"], scale=0.1),
                    helper.make_node("Add", ["x", "n"], ["xn"]),
                    helper.make_node("ReduceSumSquare", ["xn"], ["loss"], keepdims=0)],
                   {"x": [8, 3]}, ["loss"])
    step = train_step(graphc.from_onnx(model), "loss", SGD(lr=0.1))
    assert "seed" not in step.input_names and "step" in step.input_names
    x = {"x": rng.standard_normal((8, 3)).astype(np.float32)}
    first, second = (Trainer(step).step(x)["loss"] for _ in range(2))
    trainer = Trainer(step)
    assert first == second and trainer.step(x)["loss"] != trainer.step(x)["loss"]


def test_a_seed_name_taken_by_the_model_is_refused():
    model = _model([helper.make_node("RandomNormalLike", ["seed"], ["y"])], {"seed": [3]},
                   ["y"])
    with pytest.raises(OnnxImportError, match=r"already names a value 'seed'"):
        graphc.from_onnx(model)


@pytest.mark.parametrize("target", ["reference", "llvm"])
def test_multinomial_samples_follow_the_softmax(target):
    """Class frequencies over 20,000 samples per row against softmax(logits): a chi-square
    test per row (p = 0.001), an impossible class never drawn, int64 indices on request."""
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.0, 0.2, 0.1]], np.float32) + 1e-30)
    logits[1, 1] = -np.inf
    g = helper.make_graph([helper.make_node("Multinomial", ["x"], ["s"], sample_size=20000,
                                            dtype=TensorProto.INT64)], "mn",
                          [helper.make_tensor_value_info("x", F, [2, 4])],
                          [helper.make_tensor_value_info("s", TensorProto.INT64, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    got = graphc.compile(graphc.from_onnx(model), target=target)(x=logits,
                                                                   seed=np.array(5, np.int64))
    s = got["s"]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": logits})[0]
    assert s.shape == want.shape == (2, 20000) and s.dtype == want.dtype == np.int64
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    for row in range(2):
        counts = np.bincount(s[row], minlength=4)
        expected = p[row] * s.shape[1]
        seen = expected > 0
        chi2 = float(np.sum((counts[seen] - expected[seen]) ** 2 / expected[seen]))
        assert chi2 < 16.3, (row, counts, expected)  # 3 degrees of freedom at p = 0.001
        assert np.all(counts[~seen] == 0)
