"""Training-step graphs: every optimizer's update equals torch.optim's over 5 steps, training
converges (XOR on the 2-2-1 network, a one-hot categorical task), multitask losses, batch-norm
running statistics, the dropout seed, frozen parameters, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import GradientError
from graphc.ir.graph import Graph
from graphc.ir.verify import verify
from graphc.optim import SGD, Adam, AdamW, OptimizerError
from graphc.train import ParamGroup, Trainer, train_step

from ..conftest import roundtrip


def _regressor(dtype: str = "f64") -> Graph:
    b = Builder("regressor", seed=11)
    x = b.input("x", (8, 3), dtype)
    y = b.input("y", (8, 2), dtype)
    w1 = b.param("w1", (3, 4), dtype=dtype)
    b1 = b.param("b1", (4,), init="normal", dtype=dtype)
    w2 = b.param("w2", (4, 2), dtype=dtype)
    return b.build(outputs={"loss": b.mse(b.tanh(x @ w1 + b1) @ w2, y)})


def _torch_regressor_loss(tp, x, y):
    return F.mse_loss(torch.tanh(torch.tensor(x) @ tp["w1"] + tp["b1"]) @ tp["w2"],
                      torch.tensor(y))


def _batches(n: int, dtype=np.float64, seed: int = 12):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(8, 3)).astype(dtype), "y": rng.normal(size=(8, 2)).astype(dtype)}
            for _ in range(n)]


TORCH_OPTS = {
    "sgd": (SGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "momentum": (SGD(lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    "nesterov": (SGD(lr=0.05, momentum=0.8, nesterov=True),
                 lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True)),
    "sgd_decay": (SGD(lr=0.1, weight_decay=0.05),
                  lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05)),
    "dampening": (SGD(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
                  lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3,
                                             weight_decay=0.01)),
    "adam": (Adam(lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam_l2": (Adam(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                                            weight_decay=0.1)),
    "adamw": (AdamW(lr=0.01, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize("name", sorted(TORCH_OPTS))
def test_update_equals_torch_optim_over_five_steps(name):
    ours, make_torch = TORCH_OPTS[name]
    g = _regressor()
    step = roundtrip(train_step(g, "loss", ours))
    trainer = Trainer(step)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in g.param_values.items()}
    opt = make_torch(list(tp.values()))
    for batch in _batches(5):
        losses = trainer.step(batch)
        opt.zero_grad()
        t_loss = _torch_regressor_loss(tp, batch["x"], batch["y"])
        t_loss.backward()
        opt.step()
        np.testing.assert_allclose(losses["loss"], t_loss.item(), rtol=1e-10)
        for k in tp:
            np.testing.assert_allclose(trainer.params[k], tp[k].detach().numpy(), rtol=1e-10,
                                       atol=1e-13, err_msg=f"{name}: {k}")


def test_adam_in_float32_matches_torch():
    g = _regressor("f32")
    trainer = Trainer(train_step(g, "loss", Adam(lr=0.01)))
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in g.param_values.items()}
    opt = torch.optim.Adam(list(tp.values()), lr=0.01)
    for batch in _batches(5, np.float32):
        trainer.step(batch)
        opt.zero_grad()
        _torch_regressor_loss(tp, batch["x"], batch["y"]).backward()
        opt.step()
    for k in tp:
        assert trainer.params[k].dtype == np.float32
        np.testing.assert_allclose(trainer.params[k], tp[k].detach().numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_decoupled_sgd_weight_decay_shrinks_weights_directly():
    g = _regressor()
    lr, wd = 0.1, 0.2
    trainer = Trainer(train_step(g, "loss", SGD(lr=lr, weight_decay=wd, decoupled=True)))
    coupled = Trainer(train_step(g, "loss", SGD(lr=lr, weight_decay=wd)))
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in g.param_values.items()}
    for batch in _batches(3):
        trainer.step(batch)
        coupled.step(batch)
        grads = torch.autograd.grad(_torch_regressor_loss(tp, batch["x"], batch["y"]),
                                    list(tp.values()))
        with torch.no_grad():
            for p, gr in zip(tp.values(), grads, strict=True):
                p.copy_(p * (1 - lr * wd) - lr * gr)  # W <- W (1 - lr wd) - lr dL/dW
    for k in tp:
        np.testing.assert_allclose(trainer.params[k], tp[k].detach().numpy(), rtol=1e-10)
    # for plain SGD both forms agree to rounding: lr (dL/dW + wd W) either way
    for k in tp:
        np.testing.assert_allclose(trainer.params[k], coupled.params[k], rtol=1e-10)


def test_step_graph_signature():
    g = _regressor()
    step = verify(train_step(g, "loss", Adam()))
    assert step.input_names == ["x", "y", "step"]
    assert step.input("step").type.dtype == "i64"
    assert step.output_names[0] == "loss"
    for p in ("w1", "b1", "w2"):
        assert f"new.{p}" in step.output_names
        for s in ("m", "v"):
            assert f"state.{p}.{s}" in step.output_names
            np.testing.assert_array_equal(step.param_values[f"state.{p}.{s}"], 0.0)
            assert step.param(f"state.{p}.{s}").node.attrs["frozen"]
    assert not any(n.op in ("mse", "dense") for n in step.nodes)  # primitives only


def _xor_net(seed: int) -> Graph:
    b = Builder("xor", seed=seed)
    x = b.input("x", (4, 2))
    y = b.input("y", (4, 1))
    h = b.sigmoid(x @ b.param("w1", (2, 2)) + b.param("b1", (2,), init="zeros"))
    y_hat = b.sigmoid(h @ b.param("w2", (2, 1)) + b.param("b2", (1,), init="zeros"))
    return b.build(outputs={"loss": ((y - y_hat) * (y - y_hat)).sum(), "y_hat": y_hat})


@pytest.mark.parametrize("seed", [0, 3])
def test_two_two_one_network_learns_xor(seed):
    xs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    ys = np.array([[0], [1], [1], [0]], np.float32)
    g = _xor_net(seed)
    trainer = Trainer(train_step(g, "loss", SGD(lr=2.0, momentum=0.9)))
    trainer.fit([{"x": xs, "y": ys}] * 400)
    pred = run_graph(trainer.trained(g), {"x": xs, "y": ys})["y_hat"]
    np.testing.assert_array_equal(pred > 0.5, ys > 0.5)
    assert np.all(np.abs(pred - ys) < 0.2)


def _categorical_data():
    """A categorical attribute (5 values, one-hot) and a sign bit decide one of 3 classes."""
    colors = np.repeat(np.arange(5), 8)
    sizes = np.tile(np.array([-1.5, -1.0, -0.5, -0.2, 0.2, 0.5, 1.0, 1.5]), 5)
    labels = np.where(sizes > 0, colors % 3, (colors + 1) % 3)
    return colors.astype(np.int64), sizes[:, None].astype(np.float32), labels.astype(np.int64)


def test_mlp_learns_a_one_hot_categorical_task():
    colors, sizes, labels = _categorical_data()
    n = len(labels)
    b = Builder("categorical", seed=13)
    color = b.input("color", (n,), "i64")
    size = b.input("size", (n, 1))
    target = b.input("labels", (n,), "i64")
    features = b.concat(b.one_hot(color, depth=5), size, axis=1)
    h = b.dense(features, b.param("w1", (6, 16)), b.param("b1", (16,), init="zeros"),
                activation="relu")
    logits = b.dense(h, b.param("w2", (16, 3)), b.param("b2", (3,), init="zeros"))
    g = b.build(outputs={"loss": b.cross_entropy(logits, target), "logits": logits})
    trainer = Trainer(train_step(g, "loss", Adam(lr=0.05)))
    feed = {"color": colors, "size": sizes, "labels": labels}
    losses = trainer.fit([feed] * 150)
    assert losses[-1]["loss"] < 0.1 * losses[0]["loss"]
    logits = run_graph(trainer.trained(g), feed)["logits"]
    np.testing.assert_array_equal(logits.argmax(axis=1), labels)


def test_multitask_heads_with_weighted_losses():
    b = Builder("multitask", seed=14)
    x = b.input("x", (6, 3), "f64")
    ya = b.input("ya", (6, 2), "f64")
    yb = b.input("yb", (6, 1), "f64")
    h = b.tanh(x @ b.param("trunk", (3, 4), dtype="f64"))
    loss_a = b.mse(h @ b.param("head_a", (4, 2), dtype="f64"), ya)
    loss_b = b.mse(h @ b.param("head_b", (4, 1), dtype="f64"), yb)
    g = b.build(outputs={"loss_a": loss_a, "loss_b": loss_b})
    step = verify(train_step(g, {"loss_a": 1.0, "loss_b": 0.5}, SGD(lr=0.1)))
    assert step.output_names[:2] == ["loss_a", "loss_b"]
    rng = np.random.default_rng(15)
    feed = {"x": rng.normal(size=(6, 3)), "ya": rng.normal(size=(6, 2)),
            "yb": rng.normal(size=(6, 1))}
    trainer = Trainer(step)
    trainer.step(feed)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in g.param_values.items()}
    th = torch.tanh(torch.tensor(feed["x"]) @ tp["trunk"])
    total = (F.mse_loss(th @ tp["head_a"], torch.tensor(feed["ya"]))
             + 0.5 * F.mse_loss(th @ tp["head_b"], torch.tensor(feed["yb"])))
    total.backward()
    for k, p in tp.items():
        np.testing.assert_allclose(trainer.params[k], (p - 0.1 * p.grad).detach().numpy(),
                                   rtol=1e-10, err_msg=k)


def test_mapping_of_parameter_groups_to_optimizers():
    g = _regressor()
    step = train_step(g, "loss", {("w1", "b1"): Adam(lr=0.01), "w2": SGD(lr=0.1)})
    assert "state.w1.m" in step.output_names and "state.w2.m" not in step.output_names
    trainer = Trainer(step)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in g.param_values.items()}
    adam = torch.optim.Adam([tp["w1"], tp["b1"]], lr=0.01)
    sgd = torch.optim.SGD([tp["w2"]], lr=0.1)
    for batch in _batches(3):
        trainer.step(batch)
        adam.zero_grad()
        sgd.zero_grad()
        _torch_regressor_loss(tp, batch["x"], batch["y"]).backward()
        adam.step()
        sgd.step()
    for k in tp:
        np.testing.assert_allclose(trainer.params[k], tp[k].detach().numpy(), rtol=1e-10)


def test_batch_norm_running_statistics_are_fed_back():
    b = Builder("bn", seed=16)
    x = b.input("x", (6, 3), "f64")
    y = b.input("y", (6, 1), "f64")
    gamma = b.param("bn.gamma", (3,), init="ones", dtype="f64")
    beta = b.param("bn.beta", (3,), init="zeros", dtype="f64")
    mean = b.param("bn.mean", (3,), init="zeros", dtype="f64", frozen=True)
    var = b.param("bn.var", (3,), init="ones", dtype="f64", frozen=True)
    z, new_mean, new_var = b.batch_norm(x, gamma, beta, mean, var, training=True, momentum=0.2)
    w = b.param("w", (3, 1), dtype="f64")
    g = b.build(outputs={"loss": b.mse(z @ w, y), "update.bn.mean": new_mean,
                         "update.bn.var": new_var})
    step = verify(train_step(g, "loss", SGD(lr=0.1)))
    assert {"new.bn.mean", "new.bn.var", "new.bn.gamma"} <= set(step.output_names)
    trainer = Trainer(step)
    bn = torch.nn.BatchNorm1d(3, momentum=0.2).double()
    tw = torch.tensor(g.param_values["w"], requires_grad=True)
    opt = torch.optim.SGD([bn.weight, bn.bias, tw], lr=0.1)
    rng = np.random.default_rng(17)
    for _ in range(3):
        feed = {"x": rng.normal(2.0, 3.0, size=(6, 3)), "y": rng.normal(size=(6, 1))}
        trainer.step(feed)
        opt.zero_grad()
        F.mse_loss(bn(torch.tensor(feed["x"])) @ tw, torch.tensor(feed["y"])).backward()
        opt.step()
    np.testing.assert_allclose(trainer.params["bn.mean"], bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(trainer.params["bn.var"], bn.running_var.numpy(), rtol=1e-10)
    np.testing.assert_allclose(trainer.params["bn.gamma"], bn.weight.detach().numpy(),
                               rtol=1e-10)


def test_step_number_is_the_dropout_seed():
    b = Builder("drop", seed=18)
    x = b.input("x", (4, 8))
    seed = b.input("seed", (), "i64")
    h = b.dropout(b.relu(x @ b.param("w", (8, 8))), seed, rate=0.5)
    g = b.build(outputs={"loss": (h * h).mean()})
    step = verify(train_step(g, "loss", SGD(lr=0.0)))
    assert "seed" not in step.input_names and "step" in step.input_names
    xs = np.random.default_rng(19).normal(size=(4, 8)).astype(np.float32)
    trainer = Trainer(step)
    first, second = trainer.step({"x": xs}), trainer.step({"x": xs})
    want = [run_graph(g, {"x": xs, "seed": np.int64(s)})["loss"] for s in (1, 2)]
    np.testing.assert_allclose([first["loss"], second["loss"]], want, rtol=1e-6)
    assert want[0] != want[1]


def test_frozen_parameters_are_not_updated():
    b = Builder("transfer", seed=20)
    x = b.input("x", (4, 3))
    base = b.param("base", (3, 5), frozen=True)
    head = b.param("head", (5, 2))
    g = b.build(outputs={"loss": (b.relu(x @ base) @ head).sum()})
    step = verify(train_step(g, "loss", Adam()))
    assert "new.base" not in step.output_names and "state.base.m" not in step.param_names
    assert "new.head" in step.output_names
    with pytest.raises(GradientError, match="'base' is frozen"):
        train_step(g, "loss", {("base", "head"): SGD()})


def test_errors_name_the_culprit():
    g = _regressor()
    with pytest.raises(GradientError, match="'w1' is in optimizer groups 0 and 1"):
        train_step(g, "loss", {("w1", "b1"): SGD(), ("w1",): Adam()})
    with pytest.raises(GradientError, match="no such input or parameter"):
        train_step(g, "loss", {("w9",): SGD()})
    with pytest.raises(GradientError, match="has no loss"):
        train_step(g, None, SGD())
    with pytest.raises(GradientError, match="optimizer 'adam': give an Optimizer"):
        train_step(g, "loss", "adam")
    with pytest.raises(GradientError, match="'nope' is not an output"):
        train_step(g, None, [ParamGroup(("w1",), SGD(), "nope")])
    with pytest.raises(GradientError, match="no 'step' input"):
        Trainer(g)
    with pytest.raises(OptimizerError, match="nesterov"):
        SGD(nesterov=True)
    with pytest.raises(OptimizerError, match="betas"):
        Adam(betas=(0.9, 1.0))
    bad = g.with_outputs(list(g.outputs) + [("update.w7", g.output("loss"))])
    with pytest.raises(GradientError, match="'w7'"):
        train_step(bad, "loss", SGD())
