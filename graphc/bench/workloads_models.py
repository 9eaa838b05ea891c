"""Model workloads: LSTM forward (vs torch.nn.LSTM and ONNX's LSTM op), the LSTM regressor's
training step, the MLP 784-256-256-10 (inference and training step) and the demo CNN's training
step (`examples/cnn.py`). Training steps are `graphc.train_step(graph, "loss", SGD(lr))`; the
PyTorch peers do forward, `loss.backward()` and `torch.optim.SGD.step()` on the same initial
parameters and return the loss and every updated parameter under the step graph's names."""

from __future__ import annotations

from functools import partial

import numpy as np

from graphc.ir.builder import Builder
from graphc.ir.graph import Graph
from graphc.optim import SGD
from graphc.train import train_step

from .onnx_models import make_model, node
from .workloads import (
    Instance,
    NumpyImpl,
    OnnxImpl,
    TorchImpl,
    Workload,
    example_model,
    rand,
    torch_tensor,
)

LR = 0.01


def step_inputs(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A training step's inputs: the forward inputs plus `step` = 1."""
    return {**inputs, "step": np.array(1, np.int64)}


def torch_params(inst: Instance) -> dict:
    """Fresh torch copies of the parameters; trainable ones (not frozen) require grad."""
    import torch

    frozen = inst.graph.frozen_params()
    return {k: torch.from_numpy(v.copy()).requires_grad_(k not in frozen and v.dtype.kind == "f")
            for k, v in inst.params.items()}


def torch_sgd_step(loss_fn, trainable: dict, outputs_fn) -> TorchImpl:
    """A standard PyTorch training step: zero_grad, forward, backward, torch.optim.SGD.step."""
    import torch

    opt = torch.optim.SGD(list(trainable.values()), lr=LR)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), **outputs_fn()}

    return TorchImpl(run, config="forward, loss.backward(), torch.optim.SGD.step()")


# -- LSTM forward ----------------------------------------------------------------------------------


def lstm_sizes(quick: bool) -> tuple[int, int, int, int]:
    """(T, B, D, H)."""
    return (2, 4, 8, 16) if quick else (64, 32, 128, 256)


def lstm_flops(t: int, b: int, d: int, h: int) -> float:
    return 2.0 * t * b * (d + h) * 4 * h + 12.0 * t * b * h


def make_lstm_forward(quick: bool) -> Instance:
    t, bs, d, h = lstm_sizes(quick)
    b = Builder("lstm_forward", seed=0)
    xs = b.input("xs", (t, bs, d))
    h0, c0 = b.input("h0", (bs, h)), b.input("c0", (bs, h))
    w_x = b.param("W_x", (d, 4 * h), init="glorot")
    w_z = b.param("W_z", (h, 4 * h), init="glorot")
    bias = b.param("b", init=0.1 * rand(np.random.default_rng(8), 4 * h))
    hs, h_t, c_t = b.lstm(xs, h0, c0, w_x, w_z, bias)
    graph = b.build(outputs={"hs": hs, "h": h_t, "c": c_t})
    rng = np.random.default_rng(9)
    inputs = {"xs": rand(rng, t, bs, d), "h0": rand(rng, bs, h, scale=0.5),
              "c0": rand(rng, bs, h, scale=0.5)}
    return Instance("lstm_forward", graph, inputs, {"T": t, "batch": bs, "in": d, "hidden": h},
                    "compute", flops=lstm_flops(t, bs, d, h), numpy=numpy_lstm,
                    torch=torch_lstm, onnx=onnx_lstm)


def sigmoid_(a: np.ndarray) -> None:
    """In-place logistic function."""
    np.negative(a, out=a)
    np.exp(a, out=a)
    np.add(a, 1.0, out=a)
    np.reciprocal(a, out=a)


def numpy_lstm(inst: Instance) -> NumpyImpl:
    xs, h0, c0 = (inst.inputs[k] for k in ("xs", "h0", "c0"))
    w_x, w_z, bias = (inst.params[k] for k in ("W_x", "W_z", "b"))
    t, bs, d = xs.shape
    h = h0.shape[1]
    xw = np.empty((t * bs, 4 * h), np.float32)
    pre = np.empty((bs, 4 * h), np.float32)
    hs = np.empty((t, bs, h), np.float32)
    c, ig = np.empty((bs, h), np.float32), np.empty((bs, h), np.float32)

    def run():
        np.matmul(xs.reshape(t * bs, d), w_x, out=xw)   # every step's input projection at once
        np.add(xw, bias, out=xw)
        c[...] = c0
        h_prev = h0
        for s in range(t):
            np.matmul(h_prev, w_z, out=pre)
            np.add(pre, xw[s * bs:(s + 1) * bs], out=pre)
            sigmoid_(pre[:, :2 * h])                      # gates i, f
            np.tanh(pre[:, 2 * h:3 * h], out=pre[:, 2 * h:3 * h])
            sigmoid_(pre[:, 3 * h:])                      # gate o
            np.multiply(c, pre[:, h:2 * h], out=c)
            np.multiply(pre[:, :h], pre[:, 2 * h:3 * h], out=ig)
            np.add(c, ig, out=c)
            np.tanh(c, out=hs[s])
            np.multiply(hs[s], pre[:, 3 * h:], out=hs[s])
            h_prev = hs[s]
        return {"hs": hs, "h": hs[-1], "c": c}

    return NumpyImpl(run, config="input projection as one sgemm, then per step: sgemm + "
                                 "in-place gates, preallocated outputs")


def torch_lstm(inst: Instance) -> TorchImpl:
    import torch

    xs, h0, c0 = (torch.from_numpy(inst.inputs[k]) for k in ("xs", "h0", "c0"))
    w_x, w_z, bias = (inst.params[k] for k in ("W_x", "W_z", "b"))
    lstm = torch.nn.LSTM(w_x.shape[0], w_z.shape[0])
    with torch.no_grad():   # torch's gate order is ours (i, f, g, o); weights transposed
        lstm.weight_ih_l0.copy_(torch.from_numpy(w_x.T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(w_z.T.copy()))
        lstm.bias_ih_l0.copy_(torch_tensor(bias))
        lstm.bias_hh_l0.zero_()
    lstm.requires_grad_(False)

    def run():
        hs, (h, c) = lstm(xs, (h0[None], c0[None]))
        return {"hs": hs, "h": h[0], "c": c[0]}

    return TorchImpl(run, config="torch.nn.LSTM, no grad")


def onnx_lstm(inst: Instance) -> OnnxImpl:
    w_x, w_z, bias = (inst.params[k] for k in ("W_x", "W_z", "b"))
    h = w_z.shape[0]
    order = [0, 3, 1, 2]       # ONNX gate blocks are (i, o, f, c); ours are (i, f, g, o)

    def blocks(m: np.ndarray) -> np.ndarray:        # [in, 4H] -> [1, 4H, in], ONNX order
        return m.T.reshape(4, h, -1)[order].reshape(1, 4 * h, -1)

    init = {"W": blocks(w_x), "R": blocks(w_z),
            "B": np.concatenate([bias.reshape(4, h)[order].reshape(-1),
                                 np.zeros(4 * h, np.float32)])[None]}
    feeds = {"xs": inst.inputs["xs"], "h0": inst.inputs["h0"][None],
             "c0": inst.inputs["c0"][None]}
    nodes = [node("LSTM", ["xs", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"],
                  hidden_size=h)]
    model = make_model("lstm_forward", nodes, feeds, ["Y", "Y_h", "Y_c"], init)
    return OnnxImpl(model, feeds, {"Y": "hs", "Y_h": "h", "Y_c": "c"},
                    post={"Y": lambda a: a[:, 0], "Y_h": lambda a: a[0],
                          "Y_c": lambda a: a[0]})


# -- LSTM regressor training step (examples/lstm.py) ---------------------------------------------


def make_lstm_train(quick: bool) -> Instance:
    t, bs, d, h = lstm_sizes(quick)
    forward = example_model("lstm", steps=t, batch=bs, features=d, hidden=h, outputs=1)
    graph = train_step(forward, "loss", SGD(lr=LR))
    rng = np.random.default_rng(10)
    inputs = step_inputs({"xs": rand(rng, t, bs, d), "y": rand(rng, bs, 1)})
    return Instance("lstm_train", graph, inputs, {"T": t, "batch": bs, "in": d, "hidden": h},
                    "compute", flops=3.0 * lstm_flops(t, bs, d, h), torch=torch_lstm_train)


def torch_lstm_train(inst: Instance) -> TorchImpl:
    import torch
    import torch.nn.functional as F

    xs, y = torch.from_numpy(inst.inputs["xs"]), torch.from_numpy(inst.inputs["y"])
    p = inst.params
    d, h4 = p["lstm.W_x"].shape
    lstm = torch.nn.LSTM(d, h4 // 4)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(p["lstm.W_x"].T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(p["lstm.W_z"].T.copy()))
        lstm.bias_ih_l0.copy_(torch_tensor(p["lstm.b"]))
        lstm.bias_hh_l0.zero_()
    head_w = torch.from_numpy(p["head.w"].copy()).requires_grad_()
    head_b = torch.from_numpy(p["head.b"].copy()).requires_grad_()
    trainable = {**dict(lstm.named_parameters()), "head.w": head_w, "head.b": head_b}

    def loss_fn():
        _, (h_t, _) = lstm(xs)
        return F.mse_loss(torch.addmm(head_b, h_t[0], head_w), y)

    def outputs():
        return {"new.lstm.W_x": lstm.weight_ih_l0.T, "new.lstm.W_z": lstm.weight_hh_l0.T,
                "new.lstm.b": lstm.bias_ih_l0, "new.head.w": head_w, "new.head.b": head_b}

    return torch_sgd_step(loss_fn, trainable, outputs)


# -- MLP 784-256-256-10 ----------------------------------------------------------------------------


def mlp_sizes(quick: bool) -> tuple[int, tuple[int, ...]]:
    """(batch, layer widths)."""
    return (16, (64, 32, 32, 10)) if quick else (128, (784, 256, 256, 10))


def build_mlp(batch: int, widths: tuple[int, ...], train: bool) -> Graph:
    """x [batch, widths[0]] -> dense+relu ... -> dense -> logits; with `train`, also labels and
    loss = cross-entropy(logits, labels)."""
    b = Builder("mlp", seed=0)
    x = b.input("x", (batch, widths[0]))
    h = x
    last = len(widths) - 2
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = b.param(f"l{i + 1}.w", (n_in, n_out), init="he" if i < last else "glorot")
        bias = b.param(f"l{i + 1}.b", (n_out,), init="zeros")
        h = b.dense(h, w, bias, activation="relu" if i < last else "none")
    logits = h.named("logits")
    if not train:
        return b.build(outputs={"logits": logits})
    labels = b.input("labels", (batch,), "i64")
    return b.build(outputs={"loss": b.cross_entropy(logits, labels), "logits": logits})


def mlp_flops(batch: int, widths: tuple[int, ...]) -> float:
    return sum(2.0 * batch * a * c for a, c in zip(widths[:-1], widths[1:], strict=True))


def mlp_inputs(batch: int, widths: tuple[int, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {"x": rng.random((batch, widths[0]), dtype=np.float32),
            "labels": rng.integers(0, widths[-1], batch).astype(np.int64)}


def make_mlp(quick: bool, train: bool) -> Instance:
    batch, widths = mlp_sizes(quick)
    forward = build_mlp(batch, widths, train)
    sizes = {"batch": batch, "widths": list(widths)}
    if train:
        graph = train_step(forward, "loss", SGD(lr=LR))
        return Instance("mlp_train", graph, step_inputs(mlp_inputs(batch, widths)), sizes,
                        "compute", flops=3.0 * mlp_flops(batch, widths),
                        numpy=numpy_mlp_train, torch=partial(torch_mlp, train=True))
    inputs = {"x": mlp_inputs(batch, widths)["x"]}
    return Instance("mlp_infer", forward, inputs, sizes, "compute",
                    flops=mlp_flops(batch, widths), numpy=numpy_mlp_infer,
                    torch=partial(torch_mlp, train=False), onnx=onnx_mlp)


def mlp_layers(params: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(params) // 2
    return [(params[f"l{i}.w"], params[f"l{i}.b"]) for i in range(1, n + 1)]


def numpy_mlp_infer(inst: Instance) -> NumpyImpl:
    x = inst.inputs["x"]
    layers = mlp_layers(inst.params)
    outs = [np.empty((x.shape[0], w.shape[1]), np.float32) for w, _ in layers]

    def run():
        h = x
        for i, ((w, bias), out) in enumerate(zip(layers, outs, strict=True)):
            np.matmul(h, w, out=out)
            np.add(out, bias, out=out)
            if i < len(layers) - 1:
                np.maximum(out, 0.0, out=out)
            h = out
        return {"logits": h}

    return NumpyImpl(run)


def numpy_mlp_train(inst: Instance) -> NumpyImpl:
    """Forward, softmax cross-entropy, backward and SGD written out with preallocated buffers."""
    x, labels = inst.inputs["x"], inst.inputs["labels"]
    names = sorted({k.split(".")[0] for k in inst.params})
    layers = mlp_layers(inst.params)
    batch = x.shape[0]
    zs = [np.empty((batch, w.shape[1]), np.float32) for w, _ in layers]  # pre-activations
    acts = [np.empty_like(z) for z in zs[:-1]]                           # relu(z)
    ds = [np.empty_like(z) for z in zs]                                  # their gradients
    gws = [np.empty_like(w) for w, _ in layers]
    new = [(np.empty_like(w), np.empty_like(bias)) for w, bias in layers]
    rows = np.arange(batch)
    m = np.empty((batch, 1), np.float32)
    s = np.empty_like(m)

    def run():
        h = x
        for i, ((w, bias), z) in enumerate(zip(layers, zs, strict=True)):
            np.matmul(h, w, out=z)
            np.add(z, bias, out=z)
            if i < len(acts):
                h = np.maximum(z, 0.0, out=acts[i])
        logits, dl = zs[-1], ds[-1]
        np.max(logits, axis=1, keepdims=True, out=m)
        np.subtract(logits, m, out=dl)
        np.exp(dl, out=dl)
        np.sum(dl, axis=1, keepdims=True, out=s)
        loss = np.mean(np.log(s[:, 0]) + m[:, 0] - logits[rows, labels])
        np.divide(dl, s * batch, out=dl)             # d loss / d logits = (p - onehot) / N
        dl[rows, labels] -= 1.0 / batch
        for i in range(len(layers) - 1, -1, -1):
            w, bias = layers[i]
            h_in = x if i == 0 else acts[i - 1]
            np.matmul(h_in.T, ds[i], out=gws[i])
            gb = ds[i].sum(axis=0)
            if i > 0:
                np.matmul(ds[i], w.T, out=ds[i - 1])
                np.multiply(ds[i - 1], zs[i - 1] > 0, out=ds[i - 1])
            np.multiply(gws[i], -LR, out=gws[i])
            np.add(w, gws[i], out=new[i][0])
            np.subtract(bias, LR * gb, out=new[i][1])
        out = {"loss": np.float32(loss)}
        for name, (w, bias) in zip(names, new, strict=True):
            out[f"new.{name}.w"], out[f"new.{name}.b"] = w, bias
        return out

    return NumpyImpl(run, config="forward, backward and SGD by hand, preallocated buffers")


def torch_mlp(inst: Instance, train: bool) -> TorchImpl:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(inst.inputs["x"])
    p = torch_params(inst) if train else {k: torch_tensor(v) for k, v in inst.params.items()}
    n = len(p) // 2

    def forward():
        h = x
        for i in range(1, n + 1):
            h = torch.addmm(p[f"l{i}.b"], h, p[f"l{i}.w"])
            h = torch.relu(h) if i < n else h
        return h

    if not train:
        def run():
            with torch.no_grad():
                return {"logits": forward()}
        return TorchImpl(run, config="addmm + relu, no grad")
    labels = torch.from_numpy(inst.inputs["labels"])
    return torch_sgd_step(lambda: F.cross_entropy(forward(), labels), p,
                          lambda: {f"new.{k}": v for k, v in p.items()})


def onnx_mlp(inst: Instance) -> OnnxImpl:
    n = len(inst.params) // 2
    nodes, last = [], "x"
    for i in range(1, n + 1):
        nodes.append(node("Gemm", [last, f"l{i}.w", f"l{i}.b"], [f"z{i}"]))
        last = f"z{i}"
        if i < n:
            nodes.append(node("Relu", [last], [f"h{i}"]))
            last = f"h{i}"
    model = make_model("mlp_infer", nodes, inst.inputs, [last], inst.params)
    return OnnxImpl(model, dict(inst.inputs), {last: "logits"})


# -- the demo CNN's training step (examples/cnn.py) ------------------------------------------------


def cnn_sizes(quick: bool) -> tuple[int, int]:
    """(batch, channels)."""
    return (8, 4) if quick else (64, 8)


def make_cnn_train(quick: bool) -> Instance:
    batch, channels = cnn_sizes(quick)
    forward = example_model("cnn", batch=batch, channels=channels, training=True)
    graph = train_step(forward, "loss", SGD(lr=LR))
    rng = np.random.default_rng(12)
    inputs = step_inputs({"x": rng.random((batch, 1, 8, 8), dtype=np.float32),
                          "labels": rng.integers(0, 10, batch).astype(np.int64)})
    conv_flops = 2.0 * batch * 9 * (channels * 64 + 2 * channels * channels * 16)
    return Instance("cnn_train", graph, inputs, {"batch": batch, "channels": channels,
                                                 "image": [1, 8, 8]},
                    "compute", flops=3.0 * conv_flops, torch=torch_cnn_train)


def torch_cnn_train(inst: Instance) -> TorchImpl:
    import torch
    import torch.nn.functional as F

    x, labels = torch.from_numpy(inst.inputs["x"]), torch.from_numpy(inst.inputs["labels"])
    p = torch_params(inst)
    stats = ("bn.running_mean", "bn.running_var")
    trainable = {k: v for k, v in p.items() if k not in stats}

    def conv(z, name):
        return F.conv2d(z, p[f"{name}.w"], p[f"{name}.b"], padding=1)

    def loss_fn():
        z = F.batch_norm(conv(x, "conv"), p[stats[0]], p[stats[1]], p["bn.gamma"],
                         p["bn.beta"], training=True, momentum=0.1, eps=1e-5)
        z = F.max_pool2d(torch.relu(z), 2)
        f = conv(torch.relu(conv(z, "res.conv1")), "res.conv2")
        z = torch.relu(z + f)
        logits = torch.addmm(p["dense.b"], z.flatten(1), p["dense.w"])
        return F.cross_entropy(logits, labels)

    return torch_sgd_step(loss_fn, trainable, lambda: {f"new.{k}": v for k, v in p.items()})


WORKLOADS = [
    Workload("lstm_forward", "LSTM forward, T=64 batch 32, 128 -> 256", make_lstm_forward),
    Workload("lstm_train", "LSTM regressor training step (SGD), T=64 batch 32, 128 -> 256",
             make_lstm_train),
    Workload("mlp_infer", "MLP 784-256-256-10 inference, batch 128",
             partial(make_mlp, train=False)),
    Workload("mlp_train", "MLP 784-256-256-10 training step (SGD), batch 128",
             partial(make_mlp, train=True)),
    Workload("cnn_train", "the demo CNN (examples/cnn.py) training step (SGD), batch 64",
             make_cnn_train),
]
