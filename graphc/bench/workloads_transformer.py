"""A transformer encoder block's inference (post-norm, as BERT): multi-head self-attention, a
residual and layer norm, a GELU feed-forward, a residual and layer norm. The attention's
batched products, the softmax over keys and the epilogues that carry residuals are what the
other workloads do not exercise together; the tanh form of GELU keeps numpy, torch and ONNX
Runtime on the same formula."""

from __future__ import annotations

import math

import numpy as np

from graphc.ir.builder import Builder

from .onnx_models import make_model, node
from .workloads import Instance, NumpyImpl, OnnxImpl, TorchImpl, Workload
from .workloads_models import torch_params

EPS = 1e-5
GELU_C = math.sqrt(2.0 / math.pi)


def transformer_sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"batch": 2, "tokens": 16, "width": 32, "heads": 2, "ff": 64}
    return {"batch": 8, "tokens": 128, "width": 256, "heads": 4, "ff": 1024}


def transformer_flops(s: dict[str, int]) -> float:
    d, t, f = s["width"], s["tokens"], s["ff"]
    return 2.0 * s["batch"] * t * (3 * d * d + 2 * t * d + d * d + 2 * d * f)


def build_block(s: dict[str, int]):
    bsz, t, d, h, f = s["batch"], s["tokens"], s["width"], s["heads"], s["ff"]
    dh = d // h
    b = Builder("transformer_block", seed=0)
    x = b.input("x", (bsz, t, d))

    def linear(z, name: str, n_in: int, n_out: int):
        w = b.param(f"{name}.w", (n_in, n_out), init="glorot")
        return z @ w + b.param(f"{name}.b", (n_out,), init="zeros")

    def norm(z, name: str):
        return b.op("layer_norm", z, b.param(f"{name}.g", (d,), init="ones"),
                    b.param(f"{name}.b", (d,), init="zeros"), axis=-1, eps=EPS)

    qkv = linear(x, "qkv", d, 3 * d)

    def heads(i: int):
        part = b.op("slice", qkv, start=(0, 0, i * d), stop=(bsz, t, (i + 1) * d))
        return part.reshape(bsz, t, h, dh).transpose(0, 2, 1, 3)  # [B, H, T, dh]

    q, k, v = heads(0), heads(1), heads(2)
    att = b.op("softmax", (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(dh)), axis=-1)
    ctx = (att @ v).transpose(0, 2, 1, 3).reshape(bsz, t, d)
    h1 = norm(x + linear(ctx, "out", d, d), "ln1")
    ff = linear(b.gelu(linear(h1, "ff1", d, f), approximate="tanh"), "ff2", f, d)
    return b.build(outputs={"y": norm(h1 + ff, "ln2")})


def make_transformer(quick: bool) -> Instance:
    s = transformer_sizes(quick)
    graph = build_block(s)
    x = np.random.default_rng(13).standard_normal((s["batch"], s["tokens"], s["width"]))
    return Instance("transformer_block", graph, {"x": x.astype(np.float32)}, dict(s),
                    "compute", flops=transformer_flops(s), numpy=numpy_transformer,
                    torch=torch_transformer, onnx=onnx_transformer)


# -- peers ----------------------------------------------------------------------------------------


def _gelu_tanh(z, tanh):
    return 0.5 * z * (1.0 + tanh(GELU_C * (z + 0.044715 * z * z * z)))


def numpy_transformer(inst: Instance) -> NumpyImpl:
    p, x, s = inst.params, inst.inputs["x"], inst.sizes
    bsz, t, d, h = s["batch"], s["tokens"], s["width"], s["heads"]
    dh = d // h

    def norm(z, name):
        mu = z.mean(-1, keepdims=True)
        c = z - mu
        return c / np.sqrt((c * c).mean(-1, keepdims=True) + EPS) * p[f"{name}.g"] + p[
            f"{name}.b"]

    def run():
        qkv = x @ p["qkv.w"] + p["qkv.b"]
        q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(bsz, t, h, dh).transpose(0, 2, 1, 3)
                   for i in range(3))
        sc = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(dh))
        e = np.exp(sc - sc.max(-1, keepdims=True))
        ctx = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(bsz, t, d)
        h1 = norm(x + ctx @ p["out.w"] + p["out.b"], "ln1")
        ff = _gelu_tanh(h1 @ p["ff1.w"] + p["ff1.b"], np.tanh) @ p["ff2.w"] + p["ff2.b"]
        return {"y": norm(h1 + ff, "ln2")}

    return NumpyImpl(run, config="op by op (fresh arrays)")


def torch_transformer(inst: Instance) -> TorchImpl:
    import torch
    import torch.nn.functional as F

    p, s = torch_params(inst), inst.sizes
    x = torch.from_numpy(inst.inputs["x"])
    bsz, t, d, h = s["batch"], s["tokens"], s["width"], s["heads"]

    def forward():
        qkv = torch.addmm(p["qkv.b"], x.reshape(-1, d), p["qkv.w"]).reshape(bsz, t, 3, h,
                                                                            d // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(-1, d)
        h1 = F.layer_norm(x.reshape(-1, d) + torch.addmm(p["out.b"], ctx, p["out.w"]), (d,),
                          p["ln1.g"], p["ln1.b"], EPS)
        ff = torch.addmm(p["ff2.b"], F.gelu(torch.addmm(p["ff1.b"], h1, p["ff1.w"]),
                                            approximate="tanh"), p["ff2.w"])
        return F.layer_norm(h1 + ff, (d,), p["ln2.g"], p["ln2.b"], EPS).reshape(bsz, t, d)

    def run():
        with torch.no_grad():
            return {"y": forward()}

    return TorchImpl(run, config="addmm, softmax, layer_norm, gelu(tanh); no grad")


def onnx_transformer(inst: Instance) -> OnnxImpl:
    s = inst.sizes
    bsz, t, d, h = s["batch"], s["tokens"], s["width"], s["heads"]
    i64 = lambda *v: np.asarray(v, np.int64)  # noqa: E731
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
    consts = {"heads_shape": i64(bsz, t, h, d // h), "flat_shape": i64(bsz, t, d),
              "scale": f32(1.0 / math.sqrt(d // h)), "c_gelu": f32(GELU_C),
              "c_cube": f32(0.044715), "one": f32(1.0), "half": f32(0.5)}

    def linear(z: str, name: str) -> list:
        return [node("MatMul", [z, f"{name}.w"], [f"{name}.mm"]),
                node("Add", [f"{name}.mm", f"{name}.b"], [f"{name}.y"])]

    def norm(z: str, name: str) -> list:
        return [node("LayerNormalization", [z, f"{name}.g", f"{name}.b"], [f"{name}.y"],
                     axis=-1, epsilon=EPS)]

    nodes = [*linear("x", "qkv"), node("Split", ["qkv.y"], ["q0", "k0", "v0"], axis=2)]
    for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [node("Reshape", [f"{n}0", "heads_shape"], [f"{n}1"]),
                  node("Transpose", [f"{n}1"], [n], perm=perm)]
    nodes += [node("MatMul", ["q", "k"], ["sc0"]), node("Mul", ["sc0", "scale"], ["sc"]),
              node("Softmax", ["sc"], ["att"], axis=-1), node("MatMul", ["att", "v"], ["c0"]),
              node("Transpose", ["c0"], ["c1"], perm=[0, 2, 1, 3]),
              node("Reshape", ["c1", "flat_shape"], ["ctx"]), *linear("ctx", "out"),
              node("Add", ["x", "out.y"], ["r1"]), *norm("r1", "ln1"), *linear("ln1.y", "ff1"),
              node("Mul", ["ff1.y", "ff1.y"], ["g0"]), node("Mul", ["g0", "ff1.y"], ["g1"]),
              node("Mul", ["g1", "c_cube"], ["g2"]), node("Add", ["ff1.y", "g2"], ["g3"]),
              node("Mul", ["g3", "c_gelu"], ["g4"]), node("Tanh", ["g4"], ["g5"]),
              node("Add", ["g5", "one"], ["g6"]), node("Mul", ["ff1.y", "g6"], ["g7"]),
              node("Mul", ["g7", "half"], ["gelu"]), *linear("gelu", "ff2"),
              node("Add", ["ln1.y", "ff2.y"], ["r2"]), *norm("r2", "ln2")]
    model = make_model("transformer_block", nodes, inst.inputs, ["ln2.y"],
                       {**inst.params, **consts})
    return OnnxImpl(model, dict(inst.inputs), {"ln2.y": "y"})


WORKLOADS = [
    Workload("transformer_block", "transformer encoder block inference (BERT-style, post-norm"
             "), batch 8 x 128 tokens, width 256, 4 heads, feed-forward 1024",
             make_transformer),
]
