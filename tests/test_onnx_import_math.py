"""ONNX import of trigonometric/hyperbolic functions, logic, bitwise and number tests, small
normalizations and shape helpers (`graphc/onnx_math.py`), against ONNX Runtime through the
reference and LLVM backends; Sin/Cos gradients against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.optim import SGD
from graphc.train import train_step

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _check_outputs, _f32, _opset  # noqa: E402


def _unary_model(op, x, **attrs):
    return make_model(op.lower(), [node(op, ["x"], ["y"], **attrs)], {"x": x}, ["y"])


UNARY = {
    "Sin": lambda r: np.concatenate([r.uniform(-10, 10, 40), [0.0, -0.0, 1e4, -3e7, 1e22]]),
    "Cos": lambda r: np.concatenate([r.uniform(-10, 10, 40), [0.0, 1e4, -3e7, 1e22, 3e38]]),
    "Tan": lambda r: r.uniform(-1.5, 1.5, 45),
    "Atan": lambda r: np.concatenate([r.uniform(-8, 8, 40), [0.0, -1e-30, 1e30, -3e38, 1.0]]),
    "Asin": lambda r: np.concatenate([r.uniform(-1, 1, 40), [1.0, -1.0, 0.0, 0.9999, 1e-20]]),
    "Acos": lambda r: np.concatenate([r.uniform(-1, 1, 40), [1.0, -1.0, 0.0, 0.9999, -0.999]]),
    # sinh and cosh stay finite past exp's overflow (88.7 in f32) up to 89.4
    "Sinh": lambda r: np.concatenate([r.uniform(-8, 8, 40), [1e-7, -1e-4, 0.999, 89.0, -89.3]]),
    "Cosh": lambda r: np.concatenate([r.uniform(-8, 8, 42), [0.0, 89.0, -89.3]]),
    "Asinh": lambda r: np.concatenate([r.uniform(-8, 8, 40), [1e-7, -1e-4, 1e10, -3e30, 0.0]]),
    "Acosh": lambda r: np.concatenate([r.uniform(1, 9, 40), [1.0, 1.0001, 1e10, 3e30, 2.0]]),
    "Atanh": lambda r: np.concatenate([r.uniform(-0.99, 0.99, 40), [1e-7, -1e-4, 0.0, 0.5, .9]]),
}


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_functions_match_onnxruntime(rng, op):
    x = UNARY[op](rng).astype(np.float32).reshape(5, 9)
    _check(_unary_model(op, x), {"x": x}, rtol=2e-6, atol=1e-7)


def test_logic_and_number_tests(rng):
    x = np.array([[0.0, np.nan, np.inf, -np.inf, 1.0, -2.0]], np.float32)
    a = rng.standard_normal((3, 6)).astype(np.float32)
    model = make_model("logic", [
        node("IsNaN", ["x"], ["n"]), node("IsInf", ["x"], ["i"]),
        node("IsInf", ["x"], ["ip"], detect_negative=0),
        node("IsInf", ["x"], ["in"], detect_positive=0),
        node("Greater", ["a", "x"], ["g"]), node("Less", ["a", "x"], ["l"]),
        node("And", ["g", "n"], ["and"]), node("Or", ["g", "i"], ["or"]),
        node("Xor", ["g", "l"], ["xor"]), node("Not", ["g"], ["not"]),
        *[node("Cast", [v], [v + "_f"], to=onnx.TensorProto.FLOAT)
          for v in ("n", "i", "ip", "in", "and", "or", "xor", "not")],
    ], {"x": x, "a": a}, [v + "_f" for v in ("n", "i", "ip", "in", "and", "or", "xor", "not")])
    _check(model, {"x": x, "a": a}, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_bitwise_ops_match_onnxruntime(rng, dtype):
    """BitwiseAnd/Or/Xor (broadcasting) and BitwiseNot over the whole range of the type,
    exactly."""
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (3, 4, 7), dtype=dtype, endpoint=True)
    c = rng.integers(info.min, info.max, (4, 1), dtype=dtype, endpoint=True)
    a[0, 0, :3], c[:3, 0] = [info.min, info.max, -1], [0, -1, info.min]
    model = _opset(make_model("bits", [
        node("BitwiseAnd", ["a", "c"], ["and"]), node("BitwiseOr", ["a", "c"], ["or"]),
        node("BitwiseXor", ["c", "a"], ["xor"]), node("BitwiseNot", ["a"], ["not"]),
    ], {"a": a, "c": c}, []), 18)
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(v, elem, None)
                              for v in ("and", "or", "xor", "not"))
    _check(model, {"a": a, "c": c}, rtol=0, atol=0)


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_is_exact_with_the_sign_onnx_asks_for(rng, fmod):
    """Quotients up to 4·10^8, within the exact range of 2^29 (where a − trunc(a/b)·b in f32
    is off by whole units), zeros, an infinite dividend or divisor and a zero divisor: exactly
    C's fmod or numpy's mod."""
    a = np.clip(rng.standard_normal((4, 40)), -4, 4) * rng.choice([1, 1e3, 1e6, 1e7], (4, 40))
    b = rng.uniform(0.1, 3, (4, 40)) * rng.choice([-1, 1], (4, 40))
    a[0, :6], b[0, :6] = [0.0, 3.0, np.inf, 5.0, -5.0, 7.0], [1.0, -2.0, 1.0, np.inf, np.inf, 0.0]
    a, b = a.astype(np.float32), b.astype(np.float32)
    model = make_model("mod", [node("Mod", ["a", "b"], ["y"], fmod=fmod)], {"a": a, "b": b},
                       ["y"])
    if fmod == 1:
        _check(model, {"a": a, "b": b}, rtol=0, atol=0)
        return
    # ONNX Runtime implements float Mod only with fmod=1: numpy is the oracle
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(a=a, b=b)["y"]
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(got, np.mod(a, b))


@pytest.mark.parametrize("fmod", [0, 1])
def test_integer_mod(rng, fmod):
    a = rng.integers(-20, 20, (3, 5)).astype(np.int64)
    b = rng.choice([-7, -3, 2, 5], (3, 5)).astype(np.int64)
    model = make_model("imod", [node("Mod", ["a", "b"], ["m"], fmod=fmod),
                                node("Cast", ["m"], ["y"], to=onnx.TensorProto.FLOAT)],
                       {"a": a, "b": b}, ["y"])
    _check(model, {"a": a, "b": b}, rtol=0, atol=0)


def test_normalizations_and_activations(rng):
    x = _f32(rng, 2, 6, 5, 4)
    scale = _f32(rng, 4)
    model = _opset(make_model("norms", [
        node("RMSNormalization", ["x", "scale"], ["rms"], axis=-1, epsilon=1e-3),
        node("MeanVarianceNormalization", ["x"], ["mvn"]),
        node("LRN", ["x"], ["lrn"], size=3, alpha=0.01, beta=0.75, bias=2.0),
        node("LRN", ["x"], ["lrn5"], size=5),
        node("Shrink", ["x"], ["sh"], lambd=0.7, bias=0.2),
        node("Swish", ["x"], ["sw"], alpha=1.5),
        node("Abs", ["x"], ["ax"]), node("ReduceLogSum", ["ax", "axes"], ["rls"]),
    ], {"x": x}, ["rms", "mvn", "lrn", "lrn5", "sh", "sw", "rls"],
        {"scale": scale, "axes": np.array([1, 3], np.int64)}), 24)
    _check(model, {"x": x}, rtol=2e-4, atol=1e-5)


def test_global_lp_pool(rng):
    """ONNX Runtime has no GlobalLpPool kernel: numpy is the oracle."""
    x = _f32(rng, 2, 3, 5, 4)
    model = make_model("lp", [node("GlobalLpPool", ["x"], ["lp"], p=3),
                              node("GlobalLpPool", ["x"], ["lp2"])], {"x": x}, ["lp", "lp2"])
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(x=x)
        for name, p in (("lp", 3), ("lp2", 2)):
            want = (np.abs(x.astype(np.float64)) ** p).sum((2, 3), keepdims=True) ** (1 / p)
            np.testing.assert_allclose(got[name], want, rtol=1e-5)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [-1, 0, 2])
def test_trilu(rng, upper, k):
    x = _f32(rng, 2, 4, 5)
    x[0, 0, 3] = np.nan  # zeroed where the mask drops it, kept where it keeps it
    model = make_model("trilu", [node("Trilu", ["x", "k"], ["y"], upper=upper)], {"x": x}, ["y"],
                       {"k": np.asarray(k, np.int64)})
    _check(model, {"x": x}, rtol=0, atol=0)


def test_shape_helpers(rng):
    x, w = _f32(rng, 3, 4), _f32(rng, 4, 4)
    model = make_model("helpers", [
        node("Size", ["x"], ["n"]), node("CastLike", ["n", "x"], ["nf"]),
        node("EyeLike", ["w"], ["eye"], k=1), node("Mul", ["x", "nf"], ["y"]),
        node("MatMul", ["x", "eye"], ["z"]),
    ], {"x": x, "w": w}, ["y", "z"])
    _check(model, {"x": x, "w": w})


def test_sinusoidal_features_train_like_torch(rng):
    """A SIREN-style layer, sin(W x + b), and a cosine head: the gradients of the imported
    model against torch autograd, through one SGD step."""
    torch = pytest.importorskip("torch")
    x, w, bias = _f32(rng, 8, 5), _f32(rng, 6, 5), _f32(rng, 6)
    model = make_model("siren", [
        node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Sin", ["z"], ["h"]),
        node("Cos", ["h"], ["c"]), node("ReduceSum", ["c"], ["loss"], keepdims=0),
    ], {"x": x}, ["loss"], {"w": w, "b": bias})
    step = train_step(graphc.from_onnx(model), "loss", SGD(lr=1.0))
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(bias, requires_grad=True)
    torch.cos(torch.sin(torch.tensor(x) @ tw.T + tb)).sum().backward()
    for target in ("reference", "llvm"):
        out = graphc.compile(step, target=target)(x=x, step=np.int64(0))
        np.testing.assert_allclose(out["new.w"], w - tw.grad.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["new.b"], bias - tb.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_llama_style_block_exported_by_torch(rng, tmp_path):
    """RMSNorm, rotary position embeddings computed in the graph (Sin/Cos of positions times
    inverse frequencies), a causal mask (Trilu, a cast to bool, Where) and a SwiGLU
    feed-forward, as torch.onnx exports them: forward and gradients against torch."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class RMSNorm(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.w = nn.Parameter(1.0 + 0.1 * torch.randn(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class Block(nn.Module):
        def __init__(self, d: int = 32, heads: int = 4) -> None:
            super().__init__()
            self.h, self.dh = heads, d // heads
            self.n1, self.n2 = RMSNorm(d), RMSNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.gate, self.up = nn.Linear(d, 64, bias=False), nn.Linear(d, 64, bias=False)
            self.down = nn.Linear(64, d, bias=False)
            inv = 1.0 / (10000 ** (torch.arange(0, self.dh, 2).float() / self.dh))
            self.register_buffer("inv_freq", inv)

        def forward(self, x):
            b, t, d = x.shape
            freqs = torch.outer(torch.arange(t, dtype=torch.float32), self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos(), emb.sin()
            h = self.n1(x)
            q, k, v = (m(h).view(b, t, self.h, self.dh).transpose(1, 2)
                       for m in (self.q, self.k, self.v))
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            s = q @ k.transpose(-1, -2) / self.dh ** 0.5
            s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
            x = x + self.o((torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, t, d))
            h = self.n2(x)
            return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))

    torch.manual_seed(0)
    net = Block().eval()
    x = _f32(rng, 2, 7, 32)
    path = tmp_path / "llama.onnx"
    torch.onnx.export(net, (torch.from_numpy(x),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"])
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Sin", "Cos", "Trilu", "Where", "Cast"} <= ops, ops
    graph = graphc.from_onnx(str(path))
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    _check_outputs(graph, {"x": x}, {"y": want})
    loss_model = graphc.Builder.from_graph(graph)
    loss_model.copy_body(graph)
    loss = (loss_model.tensor(graph.output("y")) ** 2.0).sum()
    step = train_step(loss_model.build(outputs={"loss": loss}), "loss", SGD(lr=1.0))
    out = graphc.compile(step, target="llvm")(x=x, step=np.int64(0))
    (net(torch.from_numpy(x)) ** 2).sum().backward()
    for name, p in (("n1.w", net.n1.w), ("n2.w", net.n2.w)):
        np.testing.assert_allclose(out[f"new.{name}"], (p - p.grad).detach().numpy(),
                                   rtol=1e-4, atol=1e-4, err_msg=name)
    # the exporter stores Linear weights transposed, under generated names
    q_t = net.q.weight.detach().numpy().T
    q_name = next(n for n in graph.param_names
                  if np.array_equal(graph.param_values[n], q_t))
    np.testing.assert_allclose(out[f"new.{q_name}"], q_t - net.q.weight.grad.numpy().T,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumprod(rng, exclusive, reverse):
    """Signs, a zero part-way along the axis (everything after it is 0), on both axes."""
    x = (rng.uniform(0.5, 1.5, (3, 6)) * rng.choice([-1, 1], (3, 6))).astype(np.float32)
    x[1, 2] = 0.0
    for axis in (0, 1):
        model = _opset(make_model("cp", [node("CumProd", ["x", "ax"], ["y"], exclusive=exclusive,
                                              reverse=reverse)], {"x": x}, ["y"],
                                  {"ax": np.array(axis, np.int64)}), 26)
        _check(model, {"x": x}, rtol=1e-5, atol=1e-7)


def test_swiglu(rng):
    """ONNX Runtime has no SwiGLU (opset 28) kernel: numpy is the oracle."""
    a, b = _f32(rng, 4, 6), _f32(rng, 4, 6)
    model = _opset(make_model("sg", [node("SwiGLU", ["a", "b"], ["y"], alpha=1.5)],
                              {"a": a, "b": b}, ["y"]), 28)
    graph = graphc.from_onnx(model)
    want = a / (1.0 + np.exp(-1.5 * a.astype(np.float64))) * b
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(a=a, b=b)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 5, 5), (2, 3, 8, 8)])
def test_det_by_pivoted_elimination(rng, shape):
    """Det against ONNX Runtime and float64 numpy; a singular matrix (two proportional rows)
    gives zero to rounding."""
    x = _f32(rng, *shape)
    if len(shape) == 3:
        x[1, 2] = 2.0 * x[1, 0]
    model = make_model("det", [node("Det", ["x"], ["y"])], {"x": x}, ["y"])
    graph = _check(model, {"x": x}, rtol=1e-4, atol=1e-5)
    want = np.linalg.det(x.astype(np.float64))
    got = graphc.compile(graph, target="llvm")(x=x)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()))
    if len(shape) == 3:
        assert abs(got[1]) < 1e-5 * np.abs(x[1]).max() ** 5


def test_det_gradient_against_torch(rng):
    """d det(A) / dA = det(A) A^-T: through the selects of the row swaps and the eliminations,
    against torch.linalg.det's autograd."""
    torch = pytest.importorskip("torch")
    x = _f32(rng, 3, 4, 4)
    model = make_model("det", [node("Det", ["x"], ["d"]),
                               node("ReduceSum", ["d"], ["loss"], keepdims=0)], {"x": x},
                       ["loss"])
    g = graphc.autodiff(graphc.from_onnx(model), "loss", ["x"])
    got = graphc.compile(g, target="llvm")(x=x)["grad.x"]
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    torch.linalg.det(tx).sum().backward()
    np.testing.assert_allclose(got, tx.grad.numpy(), rtol=2e-4, atol=2e-5)
