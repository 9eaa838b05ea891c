"""Pointwise and memory-bound workloads: the elementwise chain (compute-bound in its sigmoid and
tanh), the affine chain relu(x*w + b) (memory-bound: three loads and one store per element, two
FLOPs and a max), row softmax, batch-norm training forward, and the dispatch probe (a tiny graph
whose run time is the cost of one call)."""

from __future__ import annotations

import numpy as np

from graphc.ir.builder import Builder

from .onnx_models import const, make_model, node
from .workloads import Instance, NumpyImpl, OnnxImpl, TorchImpl, Workload, rand

# -- elementwise chain: relu(x*w + b) * sigmoid(x) + tanh(x) * 0.5 ---------------------------------


def make_elementwise(quick: bool) -> Instance:
    n = 1 << 16 if quick else 1 << 24
    b = Builder("elementwise_chain", seed=0)
    x, w, bias = (b.input(k, (n,)) for k in ("x", "w", "b"))
    y = (x * w + bias).relu() * b.sigmoid(x) + b.tanh(x) * 0.5
    graph = b.build(outputs={"y": y})
    rng = np.random.default_rng(1)
    inputs = {"x": rand(rng, n), "w": rand(rng, n), "b": rand(rng, n)}
    return Instance("elementwise", graph, inputs, {"n": n}, "memory", flops=10.0 * n,
                    numpy=numpy_elementwise, torch=torch_elementwise, onnx=onnx_elementwise,
                    notes="compute-bound in the vector sigmoid and tanh: its share of copy "
                          "bandwidth is information; elementwise_affine is the memory-bound "
                          "chain")


def numpy_elementwise(inst: Instance) -> NumpyImpl:
    x, w, bias = (inst.inputs[k] for k in ("x", "w", "b"))
    t1, t2, y = (np.empty_like(x) for _ in range(3))

    def run():
        np.multiply(x, w, out=t1)
        np.add(t1, bias, out=t1)
        np.maximum(t1, 0.0, out=t1)
        np.negative(x, out=t2)          # sigmoid(x) = 1 / (1 + exp(-x))
        np.exp(t2, out=t2)
        np.add(t2, 1.0, out=t2)
        np.divide(1.0, t2, out=t2)
        np.multiply(t1, t2, out=t1)
        np.tanh(x, out=y)
        np.multiply(y, 0.5, out=y)
        np.add(t1, y, out=y)
        return {"y": y}

    def run_alloc():
        return {"y": np.maximum(x * w + bias, 0.0) * (1.0 / (1.0 + np.exp(-x)))
                + np.tanh(x) * 0.5}

    return NumpyImpl(run, run_alloc)


def torch_elementwise(inst: Instance) -> TorchImpl:
    import torch

    x, w, bias = (torch.from_numpy(inst.inputs[k]) for k in ("x", "w", "b"))
    t1, t2, y = (torch.empty_like(x) for _ in range(3))

    def run():
        return {"y": torch.relu(x * w + bias) * torch.sigmoid(x) + torch.tanh(x) * 0.5}

    def run_prealloc():
        torch.mul(x, w, out=t1)
        t1.add_(bias).relu_()
        torch.sigmoid(x, out=t2)
        t1.mul_(t2)
        torch.tanh(x, out=y)
        y.mul_(0.5).add_(t1)
        return {"y": y}

    return TorchImpl(run, run_prealloc)


def onnx_elementwise(inst: Instance) -> OnnxImpl:
    nodes = [node("Mul", ["x", "w"], ["xw"]), node("Add", ["xw", "b"], ["pre"]),
             node("Relu", ["pre"], ["r"]), node("Sigmoid", ["x"], ["s"]),
             node("Mul", ["r", "s"], ["rs"]), node("Tanh", ["x"], ["t"]),
             node("Mul", ["t", "half"], ["th"]), node("Add", ["rs", "th"], ["y"])]
    model = make_model("elementwise", nodes, inst.inputs, ["y"], {"half": const(0.5)})
    return OnnxImpl(model, dict(inst.inputs), {"y": "y"})


# -- affine chain: relu(x*w + b), memory-bound --------------------------------------------------


def make_elementwise_affine(quick: bool) -> Instance:
    """Three streams in, one out, three arithmetic operations per element: far below any core's
    arithmetic rate, so a fused kernel is bounded by memory bandwidth alone."""
    n = 1 << 16 if quick else 1 << 24
    b = Builder("elementwise_affine", seed=0)
    x, w, bias = (b.input(k, (n,)) for k in ("x", "w", "b"))
    graph = b.build(outputs={"y": (x * w + bias).relu()})
    rng = np.random.default_rng(5)
    inputs = {"x": rand(rng, n), "w": rand(rng, n), "b": rand(rng, n)}
    return Instance("elementwise_affine", graph, inputs, {"n": n}, "memory", flops=3.0 * n,
                    numpy=numpy_affine, torch=torch_affine, onnx=onnx_affine)


def numpy_affine(inst: Instance) -> NumpyImpl:
    x, w, bias = (inst.inputs[k] for k in ("x", "w", "b"))
    y = np.empty_like(x)

    def run():
        np.multiply(x, w, out=y)
        np.add(y, bias, out=y)
        np.maximum(y, 0.0, out=y)
        return {"y": y}

    def run_alloc():
        return {"y": np.maximum(x * w + bias, 0.0)}

    return NumpyImpl(run, run_alloc)


def torch_affine(inst: Instance) -> TorchImpl:
    import torch

    x, w, bias = (torch.from_numpy(inst.inputs[k]) for k in ("x", "w", "b"))
    y = torch.empty_like(x)

    def run():
        return {"y": torch.relu(x * w + bias)}

    def run_prealloc():
        torch.mul(x, w, out=y)
        y.add_(bias).relu_()
        return {"y": y}

    return TorchImpl(run, run_prealloc)


def onnx_affine(inst: Instance) -> OnnxImpl:
    nodes = [node("Mul", ["x", "w"], ["xw"]), node("Add", ["xw", "b"], ["pre"]),
             node("Relu", ["pre"], ["y"])]
    model = make_model("elementwise_affine", nodes, inst.inputs, ["y"])
    return OnnxImpl(model, dict(inst.inputs), {"y": "y"})


# -- row softmax -----------------------------------------------------------------------------------


def make_softmax(quick: bool) -> Instance:
    rows, cols = (256, 256) if quick else (4096, 4096)
    b = Builder("softmax_rows", seed=0)
    x = b.input("x", (rows, cols))
    graph = b.build(outputs={"y": b.softmax(x, axis=-1)})
    inputs = {"x": rand(np.random.default_rng(2), rows, cols, scale=3.0)}
    return Instance("softmax", graph, inputs, {"rows": rows, "cols": cols}, "memory",
                    flops=5.0 * rows * cols, numpy=numpy_softmax, torch=torch_softmax,
                    onnx=onnx_softmax)


def numpy_softmax(inst: Instance) -> NumpyImpl:
    x = inst.inputs["x"]
    y = np.empty_like(x)
    m = np.empty((x.shape[0], 1), x.dtype)
    s = np.empty_like(m)

    def run():
        np.max(x, axis=1, keepdims=True, out=m)
        np.subtract(x, m, out=y)
        np.exp(y, out=y)
        np.sum(y, axis=1, keepdims=True, out=s)
        np.divide(y, s, out=y)
        return {"y": y}

    def run_alloc():
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return {"y": e / e.sum(axis=1, keepdims=True)}

    return NumpyImpl(run, run_alloc)


def torch_softmax(inst: Instance) -> TorchImpl:
    import torch

    x = torch.from_numpy(inst.inputs["x"])
    y = torch.empty_like(x)
    return TorchImpl(run=lambda: {"y": torch.softmax(x, dim=-1)},
                     run_prealloc=lambda: {"y": torch.softmax(x, dim=-1, out=y)})


def onnx_softmax(inst: Instance) -> OnnxImpl:
    model = make_model("softmax", [node("Softmax", ["x"], ["y"], axis=-1)], inst.inputs, ["y"])
    return OnnxImpl(model, dict(inst.inputs), {"y": "y"})


# -- batch norm, training forward ------------------------------------------------------------------

BN_MOMENTUM, BN_EPS = 0.1, 1e-5


def make_batchnorm(quick: bool) -> Instance:
    n, c, h, w = (8, 8, 8, 8) if quick else (64, 64, 32, 32)
    b = Builder("batchnorm_train", seed=0)
    x = b.input("x", (n, c, h, w))
    rng = np.random.default_rng(3)
    gamma = b.param("gamma", init=(1.0 + 0.1 * rand(rng, c)))
    beta = b.param("beta", init=0.1 * rand(rng, c))
    rmean = b.param("running_mean", (c,), init="zeros", frozen=True)
    rvar = b.param("running_var", (c,), init="ones", frozen=True)
    y, new_mean, new_var = b.batch_norm(x, gamma, beta, rmean, rvar, training=True,
                                        momentum=BN_MOMENTUM, eps=BN_EPS)
    graph = b.build(outputs={"y": y, "new_mean": new_mean, "new_var": new_var})
    inputs = {"x": rand(rng, n, c, h, w, scale=2.0) + 0.5}
    return Instance("batchnorm_train", graph, inputs, {"shape": [n, c, h, w]}, "memory",
                    flops=8.0 * n * c * h * w, numpy=numpy_batchnorm, torch=torch_batchnorm,
                    onnx=onnx_batchnorm,
                    notes="ONNX BatchNormalization updates running_var with the biased "
                          "variance (within tolerance at these sizes)")


def numpy_batchnorm(inst: Instance) -> NumpyImpl:
    x = inst.inputs["x"]
    p = inst.params
    gamma, beta, rmean, rvar = (p[k] for k in ("gamma", "beta", "running_mean", "running_var"))
    c = x.shape[1]
    axes = (0, 2, 3)
    count = x.size // c
    cs = (1, c, 1, 1)
    mu, var, scale = (np.empty(cs, x.dtype) for _ in range(3))
    xc, y = np.empty_like(x), np.empty_like(x)
    new_mean, new_var = np.empty(c, x.dtype), np.empty(c, x.dtype)

    def run():
        np.mean(x, axis=axes, keepdims=True, out=mu)
        np.subtract(x, mu, out=xc)
        np.multiply(xc, xc, out=y)
        np.mean(y, axis=axes, keepdims=True, out=var)
        np.add(var, BN_EPS, out=scale)
        np.sqrt(scale, out=scale)
        np.divide(gamma.reshape(cs), scale, out=scale)
        np.multiply(xc, scale, out=y)
        np.add(y, beta.reshape(cs), out=y)
        np.multiply(rmean, 1.0 - BN_MOMENTUM, out=new_mean)
        np.add(new_mean, BN_MOMENTUM * mu.reshape(c), out=new_mean)
        np.multiply(rvar, 1.0 - BN_MOMENTUM, out=new_var)
        np.add(new_var, (BN_MOMENTUM * count / (count - 1)) * var.reshape(c), out=new_var)
        return {"y": y, "new_mean": new_mean, "new_var": new_var}

    def run_alloc():
        m = x.mean(axis=axes, keepdims=True)
        v = x.var(axis=axes, keepdims=True)
        out = (x - m) * (gamma.reshape(cs) / np.sqrt(v + BN_EPS)) + beta.reshape(cs)
        return {"y": out,
                "new_mean": (1 - BN_MOMENTUM) * rmean + BN_MOMENTUM * m.reshape(c),
                "new_var": (1 - BN_MOMENTUM) * rvar
                + BN_MOMENTUM * count / (count - 1) * v.reshape(c)}

    return NumpyImpl(run, run_alloc)


def torch_batchnorm(inst: Instance) -> TorchImpl:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(inst.inputs["x"])
    p = {k: torch.from_numpy(v.copy()) for k, v in inst.params.items()}

    def run():
        # updates the running statistics in place, as nn.BatchNorm2d in training mode
        y = F.batch_norm(x, p["running_mean"], p["running_var"], p["gamma"], p["beta"],
                         training=True, momentum=BN_MOMENTUM, eps=BN_EPS)
        return {"y": y, "new_mean": p["running_mean"], "new_var": p["running_var"]}

    return TorchImpl(run, config="F.batch_norm(training=True), running stats in place")


def onnx_batchnorm(inst: Instance) -> OnnxImpl:
    p = inst.params
    nodes = [node("BatchNormalization", ["x", "gamma", "beta", "running_mean", "running_var"],
                  ["y", "new_mean", "new_var"], training_mode=1, epsilon=BN_EPS,
                  momentum=1.0 - BN_MOMENTUM)]   # ONNX's momentum weighs the old value
    model = make_model("batchnorm_train", nodes, inst.inputs, ["y", "new_mean", "new_var"],
                       {k: p[k] for k in ("gamma", "beta", "running_mean", "running_var")})
    return OnnxImpl(model, dict(inst.inputs), {"y": "y", "new_mean": "new_mean",
                                               "new_var": "new_var"})


# -- dispatch: the cost of one call of a tiny graph ------------------------------------------------


def make_dispatch(quick: bool) -> Instance:
    b = Builder("dispatch_probe", seed=0)
    x = b.input("x", (16,))
    graph = b.build(outputs={"y": x + 1.0})
    inputs = {"x": np.arange(16, dtype=np.float32)}
    return Instance("dispatch", graph, inputs, {"n": 16}, "latency", flops=16.0,
                    numpy=numpy_dispatch, torch=torch_dispatch, onnx=onnx_dispatch,
                    notes="time per call of a 16-element graph: the fixed cost of one call")


def numpy_dispatch(inst: Instance) -> NumpyImpl:
    x = inst.inputs["x"]
    y = np.empty_like(x)
    return NumpyImpl(lambda: {"y": np.add(x, 1.0, out=y)}, lambda: {"y": x + 1.0})


def torch_dispatch(inst: Instance) -> TorchImpl:
    import torch

    x = torch.from_numpy(inst.inputs["x"])
    y = torch.empty_like(x)
    return TorchImpl(lambda: {"y": x + 1.0}, lambda: {"y": torch.add(x, 1.0, out=y)})


def onnx_dispatch(inst: Instance) -> OnnxImpl:
    model = make_model("dispatch", [node("Add", ["x", "one"], ["y"])], inst.inputs, ["y"],
                       {"one": const(1.0)})
    return OnnxImpl(model, dict(inst.inputs), {"y": "y"})


WORKLOADS = [
    Workload("elementwise", "relu(x*w + b)*sigmoid(x) + tanh(x)*0.5 over 16M f32 "
             "(compute-bound: sigmoid, tanh)", make_elementwise),
    Workload("elementwise_affine", "relu(x*w + b) over 16M f32 (memory-bound)",
             make_elementwise_affine),
    Workload("softmax", "row softmax of a 4096x4096 f32 matrix", make_softmax),
    Workload("batchnorm_train", "batch norm training forward, x (64, 64, 32, 32)",
             make_batchnorm),
    Workload("dispatch", "call overhead: y = x + 1 on 16 elements", make_dispatch),
]
