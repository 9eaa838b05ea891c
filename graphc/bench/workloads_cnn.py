"""The last stage of a ResNet-18: few positions, many channels.

Two basic blocks on 8 images: 256 channels at 8x8 in, a stride-2 3x3 convolution to 512
channels at 4x4 with a 1x1 stride-2 shortcut, then three 3x3 convolutions at 512 channels,
each followed by its bias (batch norm folded in, as an exporter writes an inference model), a
residual add where the block ends, and relu. About 2.15 GFLOP, in 9.4 MB of weights per 3x3
convolution. `resnet_stage_train` fine-tunes it under a new head (global average pool, a
dense layer to 10 classes, softmax cross-entropy): one SGD step, forward and backward."""

from __future__ import annotations

import numpy as np

from graphc.ir.builder import Builder
from graphc.optim import SGD
from graphc.train import train_step

from .onnx_models import make_model, node
from .workloads import Instance, NumpyImpl, OnnxImpl, TorchImpl, Workload, rand, torch_tensor
from .workloads_models import LR, step_inputs, torch_params, torch_sgd_step

# name: (input channels, output channels, kernel, stride)
CONVS = {"c1": (256, 512, 3, 2), "down": (256, 512, 1, 2), "c2": (512, 512, 3, 1),
         "c3": (512, 512, 3, 1), "c4": (512, 512, 3, 1)}


def stage_sizes(quick: bool) -> tuple[int, int, int]:
    """(images, channel divisor, input side): quick runs the same stage at 1/16 the width."""
    return (2, 16, 8) if quick else (8, 1, 8)


def _shape(name: str, div: int) -> tuple[int, int, int, int]:
    cin, cout, k, _ = CONVS[name]
    return cout // div, cin // div, k, k


CLASSES = 10


def _stage(b: Builder, x, div: int, rng: np.random.Generator):
    w = {k: b.param(f"{k}.w", _shape(k, div), init="he") for k in CONVS}
    bias = {k: b.param(f"{k}.b", init=0.1 * rand(rng, CONVS[k][1] // div)) for k in CONVS}

    def conv(name, v):
        k, s = CONVS[name][2:]
        return b.conv2d(v, w[name], bias[name], stride=s, padding=k // 2)

    h = conv("c1", x).relu()
    y1 = (conv("c2", h) + conv("down", x)).relu()
    return (conv("c4", conv("c3", y1).relu()) + y1).relu()


def _stage_flops(n: int, div: int, side: int) -> float:
    out = (side // 2) ** 2
    return sum(2.0 * n * out * (co // div) * (ci // div) * k * k
               for ci, co, k, _ in CONVS.values())


def make_resnet_stage(quick: bool) -> Instance:
    n, div, side = stage_sizes(quick)
    b = Builder("resnet_stage", seed=0)
    rng = np.random.default_rng(8)
    x = b.input("x", (n, 256 // div, side, side))
    graph = b.build(outputs={"y": _stage(b, x, div, rng)})
    return Instance("resnet_stage", graph, {"x": rand(rng, n, 256 // div, side, side)},
                    {"images": n, "channels": 512 // div, "plane": [side // 2] * 2},
                    "compute", flops=_stage_flops(n, div, side), numpy=numpy_stage,
                    torch=torch_stage, onnx=onnx_stage)


def make_resnet_stage_train(quick: bool) -> Instance:
    n, div, side = stage_sizes(quick)
    b = Builder("resnet_stage_train", seed=0)
    rng = np.random.default_rng(9)
    x = b.input("x", (n, 256 // div, side, side))
    labels = b.input("labels", (n,), "i64")
    y = _stage(b, x, div, rng)
    w = b.param("head.w", (512 // div, CLASSES), init="glorot")
    bias = b.param("head.b", (CLASSES,), init="zeros")
    logits = b.dense(y.mean((2, 3)), w, bias)
    forward = b.build(outputs={"loss": b.cross_entropy(logits, labels)})
    graph = train_step(forward, "loss", SGD(lr=LR))
    inputs = step_inputs({"x": rand(rng, n, 256 // div, side, side),
                          "labels": rng.integers(0, CLASSES, n).astype(np.int64)})
    # forward, the input gradients and the weight gradients: three times the forward's
    return Instance("resnet_stage_train", graph, inputs,
                    {"images": n, "channels": 512 // div, "plane": [side // 2] * 2},
                    "compute", flops=3.0 * _stage_flops(n, div, side),
                    torch=torch_stage_train)


def torch_stage_train(inst: Instance) -> TorchImpl:
    import torch.nn.functional as F

    x = torch_tensor(inst.inputs["x"])
    labels = torch_tensor(inst.inputs["labels"])
    p = torch_params(inst)

    def loss_fn():
        y = _torch_stage(x, p, lambda t: t.relu())
        logits = y.mean((2, 3)) @ p["head.w"] + p["head.b"]
        return F.cross_entropy(logits, labels)

    return torch_sgd_step(loss_fn, p, lambda: {f"new.{k}": v for k, v in p.items()})


def numpy_stage(inst: Instance) -> NumpyImpl:
    """Each convolution as im2col (a strided window view copied into a preallocated buffer)
    and one batched sgemm."""
    p = inst.params
    x = inst.inputs["x"]
    n = x.shape[0]

    def conv(name: str, v: np.ndarray) -> np.ndarray:
        k, s = CONVS[name][2:]
        w = p[f"{name}.w"]
        pad = k // 2
        vp = np.pad(v, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else v
        win = np.lib.stride_tricks.sliding_window_view(vp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        oh, ow = win.shape[2:4]
        cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, -1, oh * ow)
        out = w.reshape(w.shape[0], -1) @ cols + p[f"{name}.b"].reshape(1, -1, 1)
        return out.reshape(n, w.shape[0], oh, ow)

    def run():
        h = np.maximum(conv("c1", x), 0.0)
        y1 = np.maximum(conv("c2", h) + conv("down", x), 0.0)
        return {"y": np.maximum(conv("c4", np.maximum(conv("c3", y1), 0.0)) + y1, 0.0)}

    return NumpyImpl(run, config="im2col by strided views + batched sgemm per convolution")


def torch_stage(inst: Instance) -> TorchImpl:
    import torch

    x = torch.from_numpy(inst.inputs["x"])
    p = {k: torch_tensor(v) for k, v in inst.params.items()}

    def run():
        return {"y": _torch_stage(x, p, lambda t: t.relu_())}

    return TorchImpl(run, config="F.conv2d, in-place relu")


def _torch_stage(x, p: dict, relu):
    """The stage in PyTorch, `relu` applied after each block's convolutions (in place for
    inference, out of place where autograd records it)."""
    import torch.nn.functional as F

    def conv(name, v):
        k, s = CONVS[name][2:]
        return F.conv2d(v, p[f"{name}.w"], p[f"{name}.b"], stride=s, padding=k // 2)

    h = relu(conv("c1", x))
    y1 = relu(conv("c2", h) + conv("down", x))
    return relu(conv("c4", relu(conv("c3", y1))) + y1)


def onnx_stage(inst: Instance) -> OnnxImpl:
    nodes = []

    def conv(name: str, src: str) -> str:
        k, s = CONVS[name][2:]
        nodes.append(node("Conv", [src, f"{name}.w", f"{name}.b"], [name], kernel_shape=[k, k],
                          strides=[s, s], pads=[k // 2] * 4))
        return name

    nodes.append(node("Relu", [conv("c1", "x")], ["h"]))
    nodes.append(node("Add", [conv("c2", "h"), conv("down", "x")], ["s1"]))
    nodes.append(node("Relu", ["s1"], ["y1"]))
    nodes.append(node("Relu", [conv("c3", "y1")], ["h3"]))
    nodes.append(node("Add", [conv("c4", "h3"), "y1"], ["s2"]))
    nodes.append(node("Relu", ["s2"], ["y"]))
    model = make_model("resnet_stage", nodes, inst.inputs, ["y"], inst.params)
    return OnnxImpl(model, dict(inst.inputs), {"y": "y"})


WORKLOADS = [
    Workload("resnet_stage", "ResNet-18's last stage (2 basic blocks, 256@8x8 -> 512@4x4), "
             "8 images, inference", make_resnet_stage),
    Workload("resnet_stage_train", "the same stage fine-tuned under a new 10-class head, "
             "one SGD step, 8 images", make_resnet_stage_train),
]
