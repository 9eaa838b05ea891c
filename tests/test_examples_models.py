"""The example models `examples/cnn.py` and `examples/lstm.py`: each loads through
`graphc.io.load_graph`, verifies, round-trips as text, runs on the reference backend (as built
and decomposed into primitives) and matches the same model written independently with torch
modules holding copies of `graph.param_values`; autodiff's gradients match torch autograd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphc.backends.reference import run_graph
from graphc.io import load_graph
from graphc.ir.graph import Graph
from graphc.ir.verify import verify
from graphc.passes import decompose
from graphc.passes.autodiff import autodiff

from .conftest import roundtrip

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CNN = EXAMPLES / "cnn.py"
LSTM = EXAMPLES / "lstm.py"
TOL = dict(rtol=2e-4, atol=2e-5)  # float32 graph vs float64 torch


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, np.float64))


def _randomized(graph: Graph, seed: int) -> Graph:
    """`graph` with every parameter redrawn (variances positive), so no bias stays 0, no scale 1."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, v in graph.param_values.items():
        new = rng.standard_normal(v.shape) * 0.5
        if name.endswith(("running_var", "gamma")):
            new = np.abs(new) + 0.5
        values[name] = new.astype(v.dtype)
    return graph.with_param_values(values)


def _check_outputs(got: dict, want: dict, tol: dict = TOL) -> None:
    assert set(want) <= set(got)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w.detach().numpy(), err_msg=k, **tol)


# -- CNN ------------------------------------------------------------------------------------------


class TorchCNN(torch.nn.Module):
    """examples/cnn.py in torch: conv-bn-relu-maxpool, conv residual block, flatten, linear."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, channels, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
        self.res1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.res2 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.dense = torch.nn.Linear(channels * 4 * 4, 10)

    def load(self, p: dict[str, np.ndarray]) -> TorchCNN:
        pairs = {"conv.weight": "conv.w", "conv.bias": "conv.b", "bn.weight": "bn.gamma",
                 "bn.bias": "bn.beta", "bn.running_mean": "bn.running_mean",
                 "bn.running_var": "bn.running_var", "res1.weight": "res.conv1.w",
                 "res1.bias": "res.conv1.b", "res2.weight": "res.conv2.w",
                 "res2.bias": "res.conv2.b", "dense.bias": "dense.b"}
        state = {k: _t(p[v]) for k, v in pairs.items()}
        state["dense.weight"] = _t(p["dense.w"]).T.contiguous()  # ours is [in, out]
        state["bn.num_batches_tracked"] = torch.tensor(0)
        self.double().load_state_dict(state)
        return self

    def forward(self, x, labels):
        z = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        z = F.relu(z + self.res2(F.relu(self.res1(z))))
        logits = self.dense(z.flatten(1))
        return F.cross_entropy(logits, labels), logits

    def grads(self) -> dict[str, torch.Tensor]:
        named = dict(self.named_parameters())
        out = {"grad.conv.w": named["conv.weight"], "grad.conv.b": named["conv.bias"],
               "grad.bn.gamma": named["bn.weight"], "grad.bn.beta": named["bn.bias"],
               "grad.res.conv1.w": named["res1.weight"], "grad.res.conv1.b": named["res1.bias"],
               "grad.res.conv2.w": named["res2.weight"], "grad.res.conv2.b": named["res2.bias"],
               "grad.dense.b": named["dense.bias"]}
        grads = {k: p.grad for k, p in out.items()}
        grads["grad.dense.w"] = named["dense.weight"].grad.T
        return grads


def _cnn_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 1, 8, 8)).astype(np.float32),
            "labels": rng.integers(0, 10, batch).astype(np.int64)}


def _torch_cnn(graph: Graph, feed: dict, channels: int, training: bool):
    model = TorchCNN(channels).load(graph.param_values).train(training)
    loss, logits = model(_t(feed["x"]), torch.from_numpy(feed["labels"]))
    want = {"loss": loss, "logits": logits}
    if training:
        want["update.bn.running_mean"] = model.bn.running_mean
        want["update.bn.running_var"] = model.bn.running_var
    return model, want


def test_cnn_defaults_and_signature():
    g = roundtrip(load_graph(CNN))
    assert [(v.node.attrs["name"], v.shape, v.dtype) for v in g.inputs] == [
        ("x", (16, 1, 8, 8), "f32"), ("labels", (16,), "i64")]
    assert g.output_names == ["loss", "logits", "update.bn.running_mean",
                              "update.bn.running_var"]
    assert g.frozen_params() == {"bn.running_mean", "bn.running_var"}
    ops = [n.op for n in g.nodes]
    assert ops.count("conv2d") == 3 and {"batch_norm", "max_pool2d", "flatten", "dense",
                                         "cross_entropy"} <= set(ops)


@pytest.mark.parametrize("batch,channels,training", [(16, 8, True), (5, 4, True),
                                                     (6, 8, False)])
def test_cnn_matches_torch(batch, channels, training):
    g = verify(load_graph(CNN, batch=batch, channels=channels, training=training))
    g = _randomized(g, seed=batch)
    feed = _cnn_inputs(batch, seed=channels)
    _, want = _torch_cnn(g, feed, channels, training)
    assert set(g.output_names) == set(want)
    _check_outputs(run_graph(g, feed), want)
    _check_outputs(run_graph(verify(decompose(g)), feed), want)


def test_cnn_gradients_match_torch_autograd():
    g = _randomized(verify(load_graph(CNN, batch=6, channels=4)), seed=3)
    feed = _cnn_inputs(6, seed=4)
    model, want = _torch_cnn(g, feed, 4, training=True)
    want["loss"].backward()
    got = run_graph(verify(autodiff(g, "loss")), feed)
    grads = model.grads()
    assert set(grads) == {k for k in got if k.startswith("grad.")}
    _check_outputs(got, grads)


# -- LSTM -----------------------------------------------------------------------------------------


class TorchLSTMRegressor(torch.nn.Module):
    """examples/lstm.py in torch: nn.LSTM (time-major, zero initial state), linear head."""

    def __init__(self, features: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(features, hidden)
        self.head = torch.nn.Linear(hidden, outputs)

    def load(self, p: dict[str, np.ndarray]) -> TorchLSTMRegressor:
        # our W_x [D, 4H], W_z [H, 4H] are torch's weight_ih/weight_hh transposed, the gate
        # blocks in the same (i, f, g, o) order; our single bias is bias_ih + bias_hh
        state = {"lstm.weight_ih_l0": _t(p["lstm.W_x"]).T.contiguous(),
                 "lstm.weight_hh_l0": _t(p["lstm.W_z"]).T.contiguous(),
                 "lstm.bias_ih_l0": _t(p["lstm.b"]),
                 "lstm.bias_hh_l0": torch.zeros(p["lstm.b"].shape, dtype=torch.float64),
                 "head.weight": _t(p["head.w"]).T.contiguous(), "head.bias": _t(p["head.b"])}
        self.double().load_state_dict(state)
        return self

    def forward(self, xs, y):
        _, (h_last, _) = self.lstm(xs)
        pred = self.head(h_last[0])
        return F.mse_loss(pred, y), pred

    def grads(self) -> dict[str, torch.Tensor]:
        return {"grad.lstm.W_x": self.lstm.weight_ih_l0.grad.T,
                "grad.lstm.W_z": self.lstm.weight_hh_l0.grad.T,
                "grad.lstm.b": self.lstm.bias_ih_l0.grad,
                "grad.head.w": self.head.weight.grad.T, "grad.head.b": self.head.bias.grad}


def _lstm_inputs(steps, batch, features, outputs, seed) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"xs": rng.standard_normal((steps, batch, features)).astype(np.float32),
            "y": rng.standard_normal((batch, outputs)).astype(np.float32)}


def test_lstm_defaults_and_signature():
    g = roundtrip(load_graph(LSTM))
    assert [(v.node.attrs["name"], v.shape) for v in g.inputs] == [
        ("xs", (16, 4, 8)), ("y", (4, 1))]
    assert g.output_names == ["loss", "pred"]
    assert {v.node.attrs["name"]: v.shape for v in g.params} == {
        "lstm.W_x": (8, 64), "lstm.W_z": (16, 64), "lstm.b": (64,), "head.w": (16, 1),
        "head.b": (1,)}
    # the forget-gate block (second of i, f, g, o) of the bias starts at one
    np.testing.assert_array_equal(g.param_values["lstm.b"].reshape(4, 16).sum(axis=1),
                                  [0, 16, 0, 0])
    d = verify(decompose(g))
    assert sum(n.op == "matmul" for n in d.nodes) == 2 * 16 + 1  # 16 cells and the head


@pytest.mark.parametrize("sizes", [dict(), dict(steps=1, batch=1, features=3, hidden=5),
                                   dict(steps=5, batch=3, features=6, hidden=4, outputs=2)])
def test_lstm_matches_torch(sizes):
    full = dict(steps=16, batch=4, features=8, hidden=16, outputs=1) | sizes
    g = verify(load_graph(LSTM, **sizes))
    feed = _lstm_inputs(full["steps"], full["batch"], full["features"], full["outputs"], 7)
    for graph in (g, _randomized(g, seed=2)):
        model = TorchLSTMRegressor(full["features"], full["hidden"], full["outputs"])
        loss, pred = model.load(graph.param_values)(_t(feed["xs"]), _t(feed["y"]))
        want = {"loss": loss, "pred": pred}
        _check_outputs(run_graph(graph, feed), want)
        _check_outputs(run_graph(verify(decompose(graph)), feed), want)


def test_lstm_gradients_match_torch_autograd():
    g = _randomized(verify(load_graph(LSTM, steps=6, batch=3, features=4, hidden=5)), seed=5)
    feed = _lstm_inputs(6, 3, 4, 1, seed=6)
    model = TorchLSTMRegressor(4, 5, 1).load(g.param_values)
    loss, _ = model(_t(feed["xs"]), _t(feed["y"]))
    loss.backward()
    got = run_graph(verify(autodiff(g, "loss")), feed)
    grads = model.grads()
    assert set(grads) == {k for k in got if k.startswith("grad.")}
    _check_outputs(got, grads)
