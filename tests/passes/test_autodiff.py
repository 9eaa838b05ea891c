"""The autodiff pass on small graphs: the seed's closed forms (2-2-1 network, softplus' = sigmoid,
backprop through time), fan-out sums as visible nodes, pruning of frozen and non-differentiable
parts, weighted losses, and the GradientErrors."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import GradientError
from graphc.ir.text import print_graph
from graphc.ir.verify import verify
from graphc.passes import AutodiffPass, PassContext, autodiff

from ..conftest import roundtrip

UNITS = ("w03", "w13", "w23", "w04", "w14", "w24", "w05", "w35", "w45")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def two_two_one(weights: dict[str, float]):
    """The seed's 2-2-1 network with sigmoid units, unit by unit, and squared loss."""
    b = Builder("two_two_one")
    x1, x2, y = (b.input(n, (), "f64") for n in ("x1", "x2", "y"))
    w = {k: b.param(k, (), init=np.float64(weights[k]), dtype="f64") for k in UNITS}
    in3 = w["w03"] + w["w13"] * x1 + w["w23"] * x2
    in4 = w["w04"] + w["w14"] * x1 + w["w24"] * x2
    in5 = w["w05"] + w["w35"] * b.sigmoid(in3) + w["w45"] * b.sigmoid(in4)
    y_hat = b.sigmoid(in5)
    return b.build(outputs={"loss": (y - y_hat) * (y - y_hat), "y_hat": y_hat})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_seed_closed_form_for_w13(seed):
    rng = np.random.default_rng(seed)
    weights = dict(zip(UNITS, rng.normal(0, 1.5, len(UNITS)), strict=True))
    x1, x2, y = rng.normal(size=2).tolist() + [float(rng.integers(0, 2))]
    g = roundtrip(autodiff(two_two_one(weights), "loss"))
    out = run_graph(g, {"x1": x1, "x2": x2, "y": y})
    # dL/dw13 = -2 (y - y_hat) g5'(in5) w35 g3'(in3) x1, with g' = g (1 - g) for sigmoid
    in3 = weights["w03"] + weights["w13"] * x1 + weights["w23"] * x2
    in4 = weights["w04"] + weights["w14"] * x1 + weights["w24"] * x2
    in5 = weights["w05"] + weights["w35"] * sigmoid(in3) + weights["w45"] * sigmoid(in4)
    y_hat = sigmoid(in5)
    dsig = lambda z: sigmoid(z) * (1 - sigmoid(z))
    want = -2 * (y - y_hat) * dsig(in5) * weights["w35"] * dsig(in3) * x1
    np.testing.assert_allclose(out["grad.w13"], want, rtol=1e-12)
    # and the output unit's bias: dL/dw05 = -2 (y - y_hat) g5'(in5)
    np.testing.assert_allclose(out["grad.w05"], -2 * (y - y_hat) * dsig(in5), rtol=1e-12)


def test_softplus_derivative_is_sigmoid():
    b = Builder("softplus")
    x = b.input("x", (9,), "f64")
    g = autodiff(b.build(outputs={"loss": b.softplus(x).sum()}), "loss", wrt=["x"])
    xs = np.linspace(-6, 6, 9)
    np.testing.assert_allclose(run_graph(g, {"x": xs})["grad.x"], sigmoid(xs), rtol=1e-12)


def test_fan_out_is_summed_by_visible_add_nodes():
    b = Builder("fan")
    x = b.input("x", (3,), "f64")
    h = b.tanh(x).named("h")
    loss = (b.exp(h) + h * h + b.sigmoid(h)).sum()
    g = verify(autodiff(b.build(outputs={"loss": loss.named("loss")}), "loss", wrt=["x"]))
    sums = [n for n in g.nodes if n.op == "add" and n.name == "grad.h.sum"]
    # h has four uses (exp, sigmoid and both operands of h*h): three adds join four parts
    assert len(sums) == 3
    assert "%grad.h.sum = add(" in print_graph(g)
    xs = np.array([-0.7, 0.1, 1.3])
    th = np.tanh(xs)
    want = (np.exp(th) + 2 * th + sigmoid(th) * (1 - sigmoid(th))) * (1 - th * th)
    np.testing.assert_allclose(run_graph(g, {"x": xs})["grad.x"], want, rtol=1e-12)



def test_disjoint_slices_send_back_one_concat_not_a_sum_of_pads():
    """Slices of x along axis 0 (with a gap the loss never reads) join into one concat; an
    overlapping slice and a strided one are still added, and the numbers stay exact."""
    b = Builder("pieces")
    x = b.input("x", (9, 2), "f64")

    def rows(lo, hi, step=1):
        return b.slice(x, start=(lo, 0), stop=(hi, 2), step=(step, 1))

    loss = sum(((k + 1.0) * b.tanh(rows(lo, hi))).sum()
               for k, (lo, hi) in enumerate([(0, 2), (2, 3), (5, 9)]))
    g = verify(autodiff(b.build(outputs={"loss": loss.named("loss")}), "loss", wrt=["x"]))
    joins = [n for n in g.nodes if n.op == "concat" and n.name == "grad.x.join"]
    assert len(joins) == 1 and len(joins[0].inputs) == 4  # pieces 0-2, 2-3, a zero gap, 5-9
    assert not [n for n in g.nodes if n.name == "grad.x.sum"]
    xs = np.linspace(-1.5, 2.0, 18).reshape(9, 2)
    want = np.zeros_like(xs)
    for k, (lo, hi) in enumerate([(0, 2), (2, 3), (5, 9)]):
        want[lo:hi] = (k + 1.0) * (1 - np.tanh(xs[lo:hi]) ** 2)
    np.testing.assert_array_equal(run_graph(g, {"x": xs})["grad.x"], want)

    b = Builder("overlap")
    x = b.input("x", (9, 2), "f64")
    loss = (b.tanh(rows(0, 4)).sum() + b.tanh(rows(3, 9)).sum() + b.tanh(rows(0, 9, 2)).sum())
    g = verify(autodiff(b.build(outputs={"loss": loss.named("loss")}), "loss", wrt=["x"]))
    assert not [n for n in g.nodes if n.name == "grad.x.join"]
    d = 1 - np.tanh(xs) ** 2
    want = d * (1.0 * (np.arange(9) < 4) + (np.arange(9) >= 3) + (np.arange(9) % 2 == 0))[:, None]
    np.testing.assert_allclose(run_graph(g, {"x": xs})["grad.x"], want, rtol=1e-14)

def _shared_weight_loss(steps: int, batch: int, m: int, n: int):
    """loss = sum_t sum(tanh(x_t @ W) * r_t): W shared by `steps` matmuls over `batch` rows."""
    b = Builder("shared")
    w = b.param("W", (m, n), dtype="f64")
    xs = [b.input(f"x{t}", (batch, m), "f64") for t in range(steps)]
    rs = [b.input(f"r{t}", (batch, n), "f64") for t in range(steps)]
    loss = sum((b.tanh(b.matmul(x, w)) * r).sum() for x, r in zip(xs, rs, strict=True))
    return b.build(outputs={"loss": loss.named("loss")})


@pytest.mark.parametrize("steps, batch, most, matmuls", [(6, 2, 64, 1), (7, 1, 3, 3),
                                                          (2, 40, 64, 2)])
def test_products_of_a_shared_weight_join_into_one_matmul(steps, batch, most, matmuls,
                                                          monkeypatch):
    """The cotangent of W is sum_t x_t^T (r_t * tanh'): over short inner axes one matmul of the
    concatenated operands (or one per chunk of at most MAX_JOINED products: 7 as 2 + 2 + 3),
    over long ones (the concatenations would copy more than the accumulation saves) one
    matmul per use, summed; the numbers agree with numpy either way."""
    import importlib

    monkeypatch.setattr(importlib.import_module("graphc.passes.grad_joins"), "MAX_JOINED",
                        most)
    m, n = 5, 7
    g = verify(autodiff(_shared_weight_loss(steps, batch, m, n), "loss"))
    grad_matmuls = [nd for nd in g.nodes
                    if nd.op == "matmul" and (nd.name or "").startswith("grad.")]
    assert len(grad_matmuls) == matmuls
    assert any(nd.name == "grad.W.sum" for nd in g.nodes) is (matmuls > 1)
    rng = np.random.default_rng(3)
    w = rng.normal(size=(m, n)) * 0.5
    feed = {f"x{t}": rng.normal(size=(batch, m)) for t in range(steps)}
    feed |= {f"r{t}": rng.normal(size=(batch, n)) for t in range(steps)}
    want = sum(feed[f"x{t}"].T @ (feed[f"r{t}"] * (1 - np.tanh(feed[f"x{t}"] @ w) ** 2))
               for t in range(steps))
    got = run_graph(g, feed, params={"W": w})["grad.W"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _mlp(frozen: bool):
    b = Builder("mlp", seed=0)
    x = b.input("x", (5, 4))
    w1 = b.param("w1", (4, 6), frozen=frozen)
    w2 = b.param("w2", (6, 3))
    bias = b.param("bias", (3,), init="zeros")
    out = b.relu(x @ w1) @ w2 + bias
    return b.build(outputs={"loss": (out * out).mean()})


def _grad_nodes(g):
    return [n for n in g.nodes if (n.name or "").startswith("grad.")]


def _readers(nodes) -> set[str]:
    return {v.node.attrs["name"] for n in nodes for v in n.inputs
            if v.node.op in ("input", "param")}


def test_frozen_parameter_gets_no_gradient_and_no_nodes():
    frozen = verify(autodiff(_mlp(True), "loss"))
    trainable = verify(autodiff(_mlp(False), "loss"))
    assert "grad.w1" not in frozen.output_names and "grad.w1" in trainable.output_names
    # only w1's gradient needs x: with w1 frozen no backward node reads x or w1
    assert not {"x", "w1"} & _readers(_grad_nodes(frozen))
    assert "x" in _readers(_grad_nodes(trainable))
    assert len(_grad_nodes(frozen)) < len(_grad_nodes(trainable))
    # exactly the graph of asking for the other parameters only
    explicit = autodiff(_mlp(False), "loss", wrt=["w2", "bias"])
    assert len(explicit.nodes) == len(frozen.nodes)
    assert len(frozen.nodes) < len(trainable.nodes)


def test_non_differentiable_paths_give_no_gradient():
    b = Builder("argmax")
    x = b.input("x", (4,), "f64")
    w = b.param("w", (4,), init=np.arange(4.0), dtype="f64")
    idx = b.argmax(x * w, axis=0)  # integer: no gradient flows through it
    mask = (x > 0.0).astype("f64")  # comparison: none either
    loss = (b.cast(idx, dtype="f64") + (mask * x).sum()).named("loss")
    g = verify(autodiff(b.build(outputs={"loss": loss}), "loss", wrt=["w", "x"]))
    out = run_graph(g, {"x": np.array([1.0, -2.0, 3.0, 0.5])})
    np.testing.assert_array_equal(out["grad.w"], np.zeros(4))
    np.testing.assert_array_equal(out["grad.x"], [1.0, 0.0, 1.0, 1.0])
    assert not any(n.op in ("argmax", "gt") and n.name and n.name.startswith("grad.")
                   for n in g.nodes)


def test_parameter_off_the_loss_path_gets_zeros_and_costs_nothing():
    b = Builder("unused")
    x = b.input("x", (3,))
    w = b.param("w", (3,))
    v = b.param("v", (3,))
    g = autodiff(b.build(outputs={"loss": (x * w).sum(), "other": (x * v).sum()}), "loss")
    out = run_graph(g, {"x": np.ones(3, np.float32)})
    np.testing.assert_array_equal(out["grad.v"], np.zeros(3, np.float32))
    assert all(not (n.name or "").startswith("grad.other") for n in g.nodes)


def test_weighted_losses_sum_their_gradients():
    b = Builder("multi", seed=1)
    x = b.input("x", (4, 3), "f64")
    w = b.param("w", (3, 2), dtype="f64")
    h = b.tanh(x @ w)
    g = b.build(outputs={"a": (h * h).sum(), "b": b.exp(h).mean()})
    xs = np.random.default_rng(0).normal(size=(4, 3))
    both = run_graph(autodiff(g, {"a": 1.0, "b": 0.5}), {"x": xs})["grad.w"]
    ga = run_graph(autodiff(g, "a"), {"x": xs})["grad.w"]
    gb = run_graph(autodiff(g, "b"), {"x": xs})["grad.w"]
    np.testing.assert_allclose(both, ga + 0.5 * gb, rtol=1e-12)


def _scalar_rnn(T: int, w: float):
    """z_t = tanh(w z_{t-1} + u x_t), z_0 = 0, loss = z_T, built from elementwise ops."""
    b = Builder("scalar_rnn")
    xs = [b.input(f"x{t}", (), "f64") for t in range(1, T + 1)]
    wp = b.param("w", (), init=np.float64(w), dtype="f64")
    u = b.param("u", (), init=np.float64(1.0), dtype="f64")
    z = b.const(0.0, dtype="f64")
    for x in xs:
        z = b.tanh(wp * z + u * x)
    return b.build(outputs={"loss": z})


def _rnn_grad_norm(T: int, w: float) -> float:
    g = autodiff(_scalar_rnn(T, w), "loss", wrt=["x1"])
    feed = {f"x{t}": (1e-6 if t == 1 else 0.0) for t in range(1, T + 1)}
    return abs(float(run_graph(g, feed)["grad.x1"]))


@pytest.mark.parametrize("w", [0.5, 0.9, -0.8])
def test_scalar_rnn_gradient_vanishes_for_small_weight(w):
    norms = [_rnn_grad_norm(T, w) for T in (2, 4, 8, 16)]
    assert all(a > b for a, b in zip(norms, norms[1:], strict=False))
    # near z = 0, dz_T/dx_1 = prod w tanh'(.) ~ |w|^(T-1)
    np.testing.assert_allclose(norms[-1], abs(w) ** 15, rtol=1e-6)


@pytest.mark.parametrize("w", [1.5, -1.2])
def test_scalar_rnn_gradient_explodes_for_large_weight(w):
    norms = [_rnn_grad_norm(T, w) for T in (2, 4, 8, 16)]
    assert all(a < b for a, b in zip(norms, norms[1:], strict=False))
    np.testing.assert_allclose(norms[-1], abs(w) ** 15, rtol=1e-4)


def test_scalar_rnn_matches_the_bptt_recursion():
    T, w = 6, 0.7
    rng = np.random.default_rng(5)
    xs = rng.normal(size=T)
    g = autodiff(_scalar_rnn(T, w), "loss", wrt=["w"])
    got = float(run_graph(g, {f"x{t + 1}": xs[t] for t in range(T)})["grad.w"])
    # dz_t/dw = g'(in_t) (z_{t-1} + w dz_{t-1}/dw)
    z, dz = 0.0, 0.0
    for x in xs:
        new = np.tanh(w * z + x)
        dz = (1 - new * new) * (z + w * dz)
        z = new
    np.testing.assert_allclose(got, dz, rtol=1e-12)


def test_composites_are_decomposed_first():
    b = Builder("dense", seed=2)
    x = b.input("x", (3, 4), "f64")
    w = b.param("w", (4, 2), dtype="f64")
    loss = b.mse(b.dense(x, w, activation="tanh"), b.const(0.5, dtype="f64", shape=(3, 2)))
    g = verify(autodiff(b.build(outputs={"loss": loss}), "loss"))
    assert {n.op for n in g.nodes}.isdisjoint({"dense", "mse"})


def test_pass_object_logs_node_counts():
    ctx = PassContext()
    g = AutodiffPass(loss="loss").run(_mlp(False), ctx)
    assert "grad.w1" in g.output_names
    assert ctx.log[-1]["pass"] == "autodiff"
    assert ctx.log[-1]["nodes_after"] > ctx.log[-1]["nodes_before"]


def test_errors_name_the_culprit():
    b = Builder("bad")
    x = b.input("x", (3,))
    n = b.input("n", (), "i64")
    w = b.param("w", (3,))
    f = b.param("f", (3,), frozen=True)
    g = b.build(outputs={"vec": x * w * f, "loss": (x * w * f).sum(), "count": n + 1})
    with pytest.raises(GradientError, match="'vec' must be a scalar"):
        autodiff(g, "vec")
    with pytest.raises(GradientError, match="'count' must be floating point"):
        autodiff(g, "count")
    with pytest.raises(GradientError, match="'nope' is not an output"):
        autodiff(g, "nope")
    with pytest.raises(GradientError, match="no such input or parameter"):
        autodiff(g, "loss", wrt=["q"])
    with pytest.raises(GradientError, match="'f' is frozen"):
        autodiff(g, "loss", wrt=["w", "f"])
    with pytest.raises(GradientError, match="only floating-point"):
        autodiff(g, "loss", wrt=["n"])
    with pytest.raises(GradientError, match="wrt=3: give a name or a sequence"):
        autodiff(g, "loss", wrt=3)
