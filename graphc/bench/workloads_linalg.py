"""Compute-bound workloads: sgemm with and without a fused bias + relu epilogue, conv 3x3 + bias
+ relu, max-pool 2x2, conv + relu + max-pool, and the residual block z' = relu(z + V relu(Wz)).

numpy's convolution is im2col (one strided copy into a preallocated column buffer) followed by
one batched sgemm: the standard way to write a fast convolution in numpy."""

from __future__ import annotations

from functools import partial

import numpy as np

from graphc.ir.builder import Builder

from .onnx_models import make_model, node
from .workloads import Instance, NumpyImpl, OnnxImpl, TorchImpl, Workload, rand, torch_tensor

GEMM_SIZES = (512, 1024, 2048)
QUICK_GEMM = {512: 64, 1024: 96, 2048: 128}

# -- sgemm, optionally with bias + relu ------------------------------------------------------------


def make_sgemm(size: int, epilogue: bool, quick: bool) -> Instance:
    n = QUICK_GEMM[size] if quick else size
    name = f"sgemm_bias_relu_{size}" if epilogue else f"sgemm_{size}"
    b = Builder(name, seed=0)
    a, w = b.input("a", (n, n)), b.input("b", (n, n))
    rng = np.random.default_rng(4)
    inputs = {"a": rand(rng, n, n), "b": rand(rng, n, n)}
    if epilogue:
        bias = b.input("bias", (n,))
        inputs["bias"] = rand(rng, n)
        c = (a @ w + bias).relu()
    else:
        c = a @ w
    graph = b.build(outputs={"c": c})
    return Instance(name, graph, inputs, {"m": n, "n": n, "k": n}, "compute",
                    flops=2.0 * n ** 3, numpy=partial(numpy_sgemm, epilogue=epilogue),
                    torch=partial(torch_sgemm, epilogue=epilogue),
                    onnx=partial(onnx_sgemm, epilogue=epilogue))


def numpy_sgemm(inst: Instance, epilogue: bool) -> NumpyImpl:
    a, w = inst.inputs["a"], inst.inputs["b"]
    bias = inst.inputs.get("bias")
    c = np.empty((a.shape[0], w.shape[1]), np.float32)

    def run():
        np.matmul(a, w, out=c)
        if epilogue:                  # numpy's three steps, each a pass over c
            np.add(c, bias, out=c)
            np.maximum(c, 0.0, out=c)
        return {"c": c}

    def run_alloc():
        return {"c": np.maximum(a @ w + bias, 0.0) if epilogue else a @ w}

    return NumpyImpl(run, run_alloc)


def torch_sgemm(inst: Instance, epilogue: bool) -> TorchImpl:
    import torch

    a, w = torch.from_numpy(inst.inputs["a"]), torch.from_numpy(inst.inputs["b"])
    bias = torch.from_numpy(inst.inputs["bias"]) if epilogue else None
    c = torch.empty(a.shape[0], w.shape[1])

    def run():
        return {"c": torch.relu(torch.addmm(bias, a, w)) if epilogue else torch.mm(a, w)}

    def run_prealloc():
        if epilogue:
            torch.addmm(bias, a, w, out=c).relu_()
        else:
            torch.mm(a, w, out=c)
        return {"c": c}

    return TorchImpl(run, run_prealloc)


def onnx_sgemm(inst: Instance, epilogue: bool) -> OnnxImpl:
    if epilogue:
        nodes = [node("Gemm", ["a", "b", "bias"], ["ab"]), node("Relu", ["ab"], ["c"])]
    else:
        nodes = [node("MatMul", ["a", "b"], ["c"])]
    model = make_model(inst.name, nodes, inst.inputs, ["c"])
    return OnnxImpl(model, dict(inst.inputs), {"c": "c"})


# -- conv 3x3 + bias + relu, max-pool 2x2, and the three together ---------------------------------


def conv_sizes(quick: bool) -> tuple[int, int, int, int]:
    """(N, C, H, W) of the convolution workloads; output channels = C."""
    return (2, 8, 8, 8) if quick else (32, 64, 32, 32)


def make_conv(quick: bool, pool: bool, conv: bool = True) -> Instance:
    n, c, h, w = conv_sizes(quick)
    name = {(True, False): "conv_bias_relu", (False, True): "max_pool",
            (True, True): "conv_relu_pool"}[(conv, pool)]
    b = Builder(name, seed=0)
    x = b.input("x", (n, c, h, w))
    y = x
    flops = 0.0
    if conv:
        wt = b.param("w", (c, c, 3, 3), init="he")
        bias = b.param("bias", init=0.1 * rand(np.random.default_rng(6), c))
        y = b.conv2d(x, wt, bias, padding="same").relu()
        flops = 2.0 * n * c * c * 9 * h * w
    if pool:
        y = b.max_pool2d(y, kernel=2)
        flops += n * c * h * w
    graph = b.build(outputs={"y": y})
    inputs = {"x": rand(np.random.default_rng(5), n, c, h, w)}
    return Instance(name, graph, inputs, {"shape": [n, c, h, w], "kernel": 3 if conv else None,
                                          "pool": 2 if pool else None},
                    "compute" if conv else "memory", flops=flops,
                    numpy=partial(numpy_conv, conv=conv, pool=pool),
                    torch=partial(torch_conv, conv=conv, pool=pool),
                    onnx=partial(onnx_conv, conv=conv, pool=pool))


def numpy_conv(inst: Instance, conv: bool, pool: bool) -> NumpyImpl:
    x = inst.inputs["x"]
    n, c, h, w = x.shape
    if conv:
        wt, bias = inst.params["w"], inst.params["bias"]
        o = wt.shape[0]
        wm = wt.reshape(o, c * 9)
        xp = np.zeros((n, c, h + 2, w + 2), np.float32)
        cols = np.empty((n, c * 9, h * w), np.float32)
        cols6 = cols.reshape(n, c, 3, 3, h, w)
        windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
        windows = windows.transpose(0, 1, 4, 5, 2, 3)          # [N, C, 3, 3, H, W]
        conv_out = np.empty((n, o, h * w), np.float32)
        bias3 = bias.reshape(1, o, 1)
    pooled = np.empty((n, c, h // 2, w // 2), np.float32) if pool else None

    def conv_relu(src: np.ndarray) -> np.ndarray:
        xp[:, :, 1:-1, 1:-1] = src
        np.copyto(cols6, windows)                                # im2col
        np.matmul(wm, cols, out=conv_out)
        np.add(conv_out, bias3, out=conv_out)
        np.maximum(conv_out, 0.0, out=conv_out)
        return conv_out.reshape(n, o, h, w)

    def run():
        y = conv_relu(x) if conv else x
        if pool:
            np.max(y.reshape(n, c, h // 2, 2, w // 2, 2), axis=(3, 5), out=pooled)
            y = pooled
        return {"y": y}

    def run_alloc():
        y = x
        if conv:
            xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            win = np.lib.stride_tricks.sliding_window_view(xpad, (3, 3), axis=(2, 3))
            col = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * 9, h * w)
            y = np.maximum((wm @ col + bias3).reshape(n, o, h, w), 0.0)
        if pool:
            y = y.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
        return {"y": y}

    config = ("im2col into a preallocated buffer + one batched sgemm, preallocated outputs"
              if conv else "max over a reshaped view, preallocated output")
    return NumpyImpl(run, run_alloc, config)


def torch_conv(inst: Instance, conv: bool, pool: bool) -> TorchImpl:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(inst.inputs["x"])
    wt = torch_tensor(inst.params["w"]) if conv else None
    bias = torch_tensor(inst.params["bias"]) if conv else None

    def run():
        y = torch.relu(F.conv2d(x, wt, bias, padding=1)) if conv else x
        return {"y": F.max_pool2d(y, 2) if pool else y}

    def run_inplace():
        y = F.conv2d(x, wt, bias, padding=1).relu_()
        return {"y": F.max_pool2d(y, 2) if pool else y}

    if conv:
        return TorchImpl(run_inplace, compilable=run, config="F.conv2d + relu_ (in place)")
    return TorchImpl(run, config="F.max_pool2d")


def onnx_conv(inst: Instance, conv: bool, pool: bool) -> OnnxImpl:
    nodes, init, last = [], {}, "x"
    if conv:
        init = {"w": inst.params["w"], "bias": inst.params["bias"]}
        nodes += [node("Conv", ["x", "w", "bias"], ["conv"], kernel_shape=[3, 3],
                       pads=[1, 1, 1, 1]),
                  node("Relu", ["conv"], ["relu"])]
        last = "relu"
    if pool:
        nodes.append(node("MaxPool", [last], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
        last = "pooled"
    model = make_model(inst.name, nodes, inst.inputs, [last], init)
    return OnnxImpl(model, dict(inst.inputs), {last: "y"})


# -- residual block: z' = relu(z + V relu(W z + bW) + bV) -----------------------------------------


def make_residual(quick: bool) -> Instance:
    n, d, hid = (16, 32, 64) if quick else (256, 512, 1024)
    b = Builder("residual_block", seed=0)
    z = b.input("z", (n, d))
    rng = np.random.default_rng(7)
    w = b.param("W", (d, hid), init="he")
    v = b.param("V", (hid, d), init="glorot")
    bw = b.param("bW", init=0.1 * rand(rng, hid))
    bv = b.param("bV", init=0.1 * rand(rng, d))
    graph = b.build(outputs={"y": b.residual_block(z, w, v, bw, bv)})
    return Instance("residual_block", graph, {"z": rand(rng, n, d)},
                    {"n": n, "d": d, "hidden": hid}, "compute", flops=4.0 * n * d * hid,
                    numpy=numpy_residual, torch=torch_residual, onnx=onnx_residual)


def numpy_residual(inst: Instance) -> NumpyImpl:
    z = inst.inputs["z"]
    w, v, bw, bv = (inst.params[k] for k in ("W", "V", "bW", "bV"))
    h = np.empty((z.shape[0], w.shape[1]), np.float32)
    y = np.empty_like(z)

    def run():
        np.matmul(z, w, out=h)
        np.add(h, bw, out=h)
        np.maximum(h, 0.0, out=h)
        np.matmul(h, v, out=y)
        np.add(y, bv, out=y)
        np.add(y, z, out=y)
        np.maximum(y, 0.0, out=y)
        return {"y": y}

    def run_alloc():
        return {"y": np.maximum(z + np.maximum(z @ w + bw, 0.0) @ v + bv, 0.0)}

    return NumpyImpl(run, run_alloc)


def torch_residual(inst: Instance) -> TorchImpl:
    import torch

    z = torch.from_numpy(inst.inputs["z"])
    w, v, bw, bv = (torch_tensor(inst.params[k]) for k in ("W", "V", "bW", "bV"))
    h = torch.empty(z.shape[0], w.shape[1])
    y = torch.empty_like(z)

    def run():
        return {"y": torch.relu(z + torch.addmm(bv, torch.relu(torch.addmm(bw, z, w)), v))}

    def run_prealloc():
        torch.addmm(bw, z, w, out=h).relu_()
        torch.addmm(bv, h, v, out=y).add_(z).relu_()
        return {"y": y}

    return TorchImpl(run, run_prealloc)


def onnx_residual(inst: Instance) -> OnnxImpl:
    nodes = [node("Gemm", ["z", "W", "bW"], ["pre"]), node("Relu", ["pre"], ["h"]),
             node("Gemm", ["h", "V", "bV"], ["f"]), node("Add", ["z", "f"], ["s"]),
             node("Relu", ["s"], ["y"])]
    init = {k: inst.params[k] for k in ("W", "V", "bW", "bV")}
    model = make_model("residual_block", nodes, inst.inputs, ["y"], init)
    return OnnxImpl(model, dict(inst.inputs), {"y": "y"})


WORKLOADS = [
    *(Workload(f"sgemm_{s}", f"C = A @ B, {s}x{s} f32", partial(make_sgemm, s, False))
      for s in GEMM_SIZES),
    *(Workload(f"sgemm_bias_relu_{s}", f"C = relu(A @ B + bias), {s}x{s} f32",
               partial(make_sgemm, s, True)) for s in GEMM_SIZES),
    Workload("conv_bias_relu", "conv 3x3 pad 1 + bias + relu, N=32 C=64->64 32x32",
             partial(make_conv, pool=False)),
    Workload("max_pool", "max-pool 2x2 stride 2 of (32, 64, 32, 32)",
             partial(make_conv, pool=True, conv=False)),
    Workload("conv_relu_pool", "conv 3x3 + bias + relu + max-pool 2x2, N=32 C=64 32x32",
             partial(make_conv, pool=True)),
    Workload("residual_block", "relu(z + V relu(W z + bW) + bV), z (256, 512), hidden 1024",
             make_residual),
]
