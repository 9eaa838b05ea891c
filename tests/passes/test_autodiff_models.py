"""Autodiff on whole models against torch.autograd with identical weights (float64): the seed's
2-2-1 network, an MLP with a three-way fan-out, a CNN (conv, training-mode batch norm, max and
average pooling, a residual block, softmax cross-entropy), an LSTM over 16 steps, a tied-weight
linear autoencoder, and a GAN step with one optimizer and one loss per player."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.graph import Graph
from graphc.ir.verify import verify
from graphc.optim import SGD, Adam
from graphc.passes import autodiff
from graphc.train import ParamGroup, Trainer, train_step

RTOL = dict(rtol=1e-9, atol=1e-12)


def torch_params(graph: Graph) -> dict[str, torch.Tensor]:
    """The graph's parameter values as float64 torch leaves that record gradients."""
    return {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True)
            for k, v in graph.param_values.items()}


def check_grads(graph: Graph, loss: str, feed: dict, torch_loss: torch.Tensor,
                tp: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """autodiff(graph) gradients == torch.autograd's for every trainable parameter."""
    g = verify(autodiff(graph, loss))
    out = run_graph(g, feed)
    names = [n for n in graph.param_names if f"grad.{n}" in g.output_names]
    assert names == [n for n in graph.param_names if n not in graph.frozen_params()]
    want = torch.autograd.grad(torch_loss, [tp[n] for n in names])
    np.testing.assert_allclose(out[loss], torch_loss.detach().numpy(), **RTOL)
    for n, w in zip(names, want, strict=True):
        np.testing.assert_allclose(out[f"grad.{n}"], w.numpy(), **RTOL, err_msg=n)
    return out


def test_two_two_one_network_batched():
    rng = np.random.default_rng(0)
    b = Builder("xor", seed=1)
    x = b.input("x", (4, 2), "f64")
    y = b.input("y", (4, 1), "f64")
    w1 = b.param("w1", (2, 2), dtype="f64")
    b1 = b.param("b1", (2,), init=rng.normal(size=2), dtype="f64")
    w2 = b.param("w2", (2, 1), dtype="f64")
    b2 = b.param("b2", (1,), init=rng.normal(size=1), dtype="f64")
    y_hat = b.sigmoid(b.sigmoid(x @ w1 + b1) @ w2 + b2)
    g = b.build(outputs={"loss": ((y - y_hat) * (y - y_hat)).sum()})
    xs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)
    ys = np.array([[0], [1], [1], [0]], np.float64)
    tp = torch_params(g)
    th = torch.sigmoid(torch.tensor(xs) @ tp["w1"] + tp["b1"])
    t_loss = ((torch.tensor(ys) - torch.sigmoid(th @ tp["w2"] + tp["b2"])) ** 2).sum()
    check_grads(g, "loss", {"x": xs, "y": ys}, t_loss, tp)


def test_mlp_with_three_way_fan_out():
    b = Builder("fanout", seed=2)
    x = b.input("x", (6, 4), "f64")
    y = b.input("y", (6, 3), "f64")
    w1 = b.param("w1", (4, 5), dtype="f64")
    w2 = b.param("w2", (5, 3), dtype="f64")
    w3 = b.param("w3", (5, 3), dtype="f64")
    h = b.relu(x @ w1).named("h")
    out = h @ w2 + b.tanh(h) @ w3 + b.sigmoid(h).sum(axes=1, keepdims=True)
    g = b.build(outputs={"loss": b.mse(out, y)})
    rng = np.random.default_rng(3)
    xs, ys = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    tp = torch_params(g)
    th = torch.relu(torch.tensor(xs) @ tp["w1"])
    t_out = th @ tp["w2"] + torch.tanh(th) @ tp["w3"] + torch.sigmoid(th).sum(1, keepdim=True)
    check_grads(g, "loss", {"x": xs, "y": ys}, F.mse_loss(t_out, torch.tensor(ys)), tp)
    sums = [n for n in autodiff(g, "loss").nodes if n.name == "grad.h.sum"]
    assert len(sums) == 2 and all(n.op == "add" for n in sums)  # three parts, two adds


def _cnn(batch: int = 4):
    b = Builder("cnn", seed=4)
    x = b.input("x", (batch, 2, 8, 8), "f64")
    labels = b.input("labels", (batch,), "i64")

    def conv(name, z, c_in, c_out):
        w = b.param(f"{name}.w", (c_out, c_in, 3, 3), init="he", dtype="f64")
        bias = b.param(f"{name}.b", (c_out,), init="normal", dtype="f64")
        return b.conv2d(z, w, bias, padding="same")

    z = conv("conv", x, 2, 4)
    gamma = b.param("bn.gamma", (4,), init=np.linspace(0.5, 1.5, 4), dtype="f64")
    beta = b.param("bn.beta", (4,), init=np.linspace(-0.2, 0.2, 4), dtype="f64")
    mean = b.param("bn.mean", (4,), init="zeros", dtype="f64", frozen=True)
    var = b.param("bn.var", (4,), init="ones", dtype="f64", frozen=True)
    z, new_mean, new_var = b.batch_norm(z, gamma, beta, mean, var, training=True)
    z = b.max_pool2d(z.relu(), kernel=2)                                   # [N, 4, 4, 4]
    z = (z + conv("res2", conv("res1", z, 4, 4).relu(), 4, 4)).relu()      # residual block
    z = b.avg_pool2d(z, kernel=2)                                          # [N, 4, 2, 2]
    w = b.param("dense.w", (16, 3), dtype="f64")
    logits = b.dense(b.flatten(z), w, b.param("dense.b", (3,), init="zeros", dtype="f64"))
    return b.build(outputs={"loss": b.cross_entropy(logits, labels),
                            "update.bn.mean": new_mean, "update.bn.var": new_var})


def _torch_cnn(tp, xs, labels, running):
    def conv(name, z):
        return F.conv2d(z, tp[f"{name}.w"], tp[f"{name}.b"], padding=1)

    z = F.batch_norm(conv("conv", torch.tensor(xs)), running[0], running[1], tp["bn.gamma"],
                     tp["bn.beta"], training=True, momentum=0.1, eps=1e-5)
    z = F.max_pool2d(torch.relu(z), 2)
    z = torch.relu(z + conv("res2", torch.relu(conv("res1", z))))
    z = F.avg_pool2d(z, 2)
    logits = z.flatten(1) @ tp["dense.w"] + tp["dense.b"]
    return F.cross_entropy(logits, torch.tensor(labels))


def test_cnn_with_batch_norm_pooling_residual_and_cross_entropy():
    g = _cnn()
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(4, 2, 8, 8))
    labels = np.array([0, 2, 1, 2], np.int64)
    tp = torch_params(g)
    running = [torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)]
    t_loss = _torch_cnn(tp, xs, labels, running)
    out = check_grads(g, "loss", {"x": xs, "labels": labels}, t_loss, tp)
    assert "grad.bn.mean" not in out  # frozen running statistics
    np.testing.assert_allclose(out["update.bn.mean"], running[0].numpy(), **RTOL)
    np.testing.assert_allclose(out["update.bn.var"], running[1].numpy(), **RTOL)


def test_lstm_over_16_steps():
    T, B, D, H = 16, 2, 3, 4
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(D, H).double()
    b = Builder("lstm")
    xs = b.input("xs", (T, B, D), "f64")
    h0 = b.param("h0", (B, H), init=np.full((B, H), 0.1), dtype="f64")
    c0 = b.param("c0", (B, H), init=np.full((B, H), -0.2), dtype="f64")
    w_x = b.param("w_x", init=lstm.weight_ih_l0.detach().numpy().T, dtype="f64")
    w_z = b.param("w_z", init=lstm.weight_hh_l0.detach().numpy().T, dtype="f64")
    bias = b.param("b", init=(lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy(), dtype="f64")
    r = b.input("r", (T, B, H), "f64")
    hs, _, c_t = b.lstm(xs, h0, c0, w_x, w_z, bias)
    g = b.build(outputs={"loss": (hs * r).sum() + c_t.sum()})
    rng = np.random.default_rng(6)
    feed = {"xs": rng.normal(size=(T, B, D)), "r": rng.normal(size=(T, B, H))}
    tp = torch_params(g)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(tp["w_x"].T)
        lstm.weight_hh_l0.copy_(tp["w_z"].T)
        lstm.bias_ih_l0.copy_(tp["b"])
        lstm.bias_hh_l0.zero_()
    t_hs, (_, t_c) = lstm(torch.tensor(feed["xs"]), (tp["h0"][None], tp["c0"][None]))
    t_loss = (t_hs * torch.tensor(feed["r"])).sum() + t_c.sum()
    g_ih, g_hh, g_b, g_h0, g_c0 = torch.autograd.grad(
        t_loss, [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, tp["h0"], tp["c0"]])
    out = run_graph(autodiff(g, "loss"), feed)
    np.testing.assert_allclose(out["loss"], t_loss.item(), **RTOL)
    np.testing.assert_allclose(out["grad.w_x"], g_ih.numpy().T, **RTOL)
    np.testing.assert_allclose(out["grad.w_z"], g_hh.numpy().T, **RTOL)
    np.testing.assert_allclose(out["grad.b"], g_b.numpy(), **RTOL)
    np.testing.assert_allclose(out["grad.h0"], g_h0.numpy(), **RTOL)
    np.testing.assert_allclose(out["grad.c0"], g_c0.numpy(), **RTOL)


def test_tied_weight_linear_autoencoder():
    b = Builder("autoencoder", seed=7)
    x = b.input("x", (5, 6), "f64")
    w = b.param("W", (3, 6), dtype="f64")
    x_hat = (x @ w.T) @ w  # z = W x, x_hat = W^T z, row by row
    g = b.build(outputs={"loss": b.mse(x_hat, x)})
    xs = np.random.default_rng(8).normal(size=(5, 6))
    tp = torch_params(g)
    t_x = torch.tensor(xs)
    check_grads(g, "loss", {"x": xs}, F.mse_loss((t_x @ tp["W"].T) @ tp["W"], t_x), tp)
    # W has fan-out 2: both uses contribute, joined by one visible add
    assert [n.op for n in autodiff(g, "loss").nodes if n.name == "grad.W.sum"] == ["add"]


# -- a GAN step: two players, two losses, two optimizers, one graph --------------------------------

Z, X, HID = 2, 3, 5


def _gan(batch: int = 4) -> Graph:
    b = Builder("gan", seed=9)
    z = b.input("z", (batch, Z), "f64")
    x_real = b.input("x_real", (batch, X), "f64")
    g_w1 = b.param("g.w1", (Z, HID), dtype="f64")
    g_b1 = b.param("g.b1", (HID,), init="normal", dtype="f64")
    g_w2 = b.param("g.w2", (HID, X), dtype="f64")
    d_w1 = b.param("d.w1", (X, HID), dtype="f64")
    d_b1 = b.param("d.b1", (HID,), init="normal", dtype="f64")
    d_w2 = b.param("d.w2", (HID, 1), dtype="f64")

    def discriminator(x):
        return b.sigmoid(b.relu(x @ d_w1 + d_b1) @ d_w2)

    x_fake = b.tanh(z @ g_w1 + g_b1) @ g_w2
    d_real, d_fake = discriminator(x_real), discriminator(x_fake)
    d_loss = -(b.log(d_real).mean() + b.log(1.0 - d_fake).mean())
    g_loss = -b.log(d_fake).mean()
    return b.build(outputs={"d_loss": d_loss, "g_loss": g_loss})


def _torch_gan_losses(tp, z, x_real):
    def disc(x):
        return torch.sigmoid(torch.relu(x @ tp["d.w1"] + tp["d.b1"]) @ tp["d.w2"])

    x_fake = torch.tanh(torch.tensor(z) @ tp["g.w1"] + tp["g.b1"]) @ tp["g.w2"]
    d_real, d_fake = disc(torch.tensor(x_real)), disc(x_fake)
    d_loss = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    return d_loss, -torch.log(d_fake).mean()


def test_gan_step_updates_each_player_from_its_own_loss():
    g = _gan()
    d_names, g_names = ("d.w1", "d.b1", "d.w2"), ("g.w1", "g.b1", "g.w2")
    step = train_step(g, None, [ParamGroup(d_names, SGD(lr=0.1, momentum=0.5), "d_loss"),
                                ParamGroup(g_names, Adam(lr=0.01), "g_loss")])
    verify(step)
    trainer = Trainer(step)
    tp = torch_params(g)
    d_opt = torch.optim.SGD([tp[n] for n in d_names], lr=0.1, momentum=0.5)
    g_opt = torch.optim.Adam([tp[n] for n in g_names], lr=0.01)
    rng = np.random.default_rng(10)
    for _ in range(3):
        feed = {"z": rng.normal(size=(4, Z)), "x_real": rng.normal(1.0, 0.3, size=(4, X))}
        losses = trainer.step(feed)
        d_loss, g_loss = _torch_gan_losses(tp, feed["z"], feed["x_real"])
        np.testing.assert_allclose(losses["d_loss"], d_loss.item(), **RTOL)
        np.testing.assert_allclose(losses["g_loss"], g_loss.item(), **RTOL)
        d_grads = torch.autograd.grad(d_loss, [tp[n] for n in d_names], retain_graph=True)
        g_grads = torch.autograd.grad(g_loss, [tp[n] for n in g_names])
        for n, gr in zip(d_names + g_names, d_grads + g_grads, strict=True):
            tp[n].grad = gr
        d_opt.step()
        g_opt.step()
        for n in d_names + g_names:
            np.testing.assert_allclose(trainer.params[n], tp[n].detach().numpy(), rtol=1e-8,
                                       atol=1e-12, err_msg=n)
