"""The example model files: each loads through `graphc.io.load_graph`, verifies, round-trips as
text, runs on the reference backend and matches an independent closed form from the seed notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphc.backends.reference import run_graph
from graphc.cli import main
from graphc.io import load_graph
from graphc.ir.registry import OPS
from graphc.ir.verify import verify

from .conftest import roundtrip

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TWO_TWO_ONE = EXAMPLES / "two_two_one.py"
CONV1D_SEED = EXAMPLES / "conv1d_seed.py"


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def two_two_one_closed_form(w: dict, x1, x2, y):
    """ŷ and L = Σ (y - ŷ)² of the seed's 2-2-1 sigmoid net, in float64."""
    w = {k: np.float64(v) for k, v in w.items()}
    x1, x2, y = (np.asarray(a, np.float64) for a in (x1, x2, y))
    in3 = w["w03"] + w["w13"] * x1 + w["w23"] * x2
    in4 = w["w04"] + w["w14"] * x1 + w["w24"] * x2
    in5 = w["w05"] + w["w35"] * _sigmoid(in3) + w["w45"] * _sigmoid(in4)
    yhat = _sigmoid(in5)
    return yhat, np.sum((y - yhat) ** 2), (in3, in4, in5)


def _inputs(rng, batch):
    return {"x1": rng.uniform(-2, 2, batch), "x2": rng.uniform(-2, 2, batch),
            "y": rng.integers(0, 2, batch).astype(np.float64)}


# -- 2-2-1 network -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_two_one_matches_closed_form(seed):
    g = roundtrip(load_graph(TWO_TWO_ONE, batch=5, seed=seed))
    feed = {k: v.astype(np.float32) for k, v in _inputs(np.random.default_rng(seed), 5).items()}
    got = run_graph(g, feed)
    yhat, loss, _ = two_two_one_closed_form(g.param_values, **feed)
    np.testing.assert_allclose(got["yhat"], yhat, rtol=1e-6)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)


def test_two_two_one_reads_like_the_chapter_graph():
    g = verify(load_graph(TWO_TWO_ONE))
    names = {n.name for n in g.nodes}
    assert {"in3", "in4", "h3", "h4", "in5", "yhat", "loss"} <= names
    assert sorted(v.node.attrs["name"] for v in g.params) == sorted(
        ["w03", "w13", "w23", "w04", "w14", "w24", "w05", "w35", "w45"])
    assert all(v.shape == () for v in g.params)
    assert [n.op for n in g.nodes if n.name in ("h3", "h4", "yhat")] == ["sigmoid"] * 3


def test_two_two_one_given_weights_are_used():
    w = {"w03": 0.5, "w13": -1.0, "w23": 2.0, "w04": 0.0, "w14": 1.5, "w24": -0.5,
         "w05": 0.1, "w35": 1.0, "w45": -2.0}
    g = load_graph(TWO_TWO_ONE, batch=1, weights=w, dtype="f64")
    feed = {"x1": np.array([0.3]), "x2": np.array([-0.7]), "y": np.array([1.0])}
    yhat, loss, _ = two_two_one_closed_form(w, **feed)
    got = run_graph(g, feed)
    np.testing.assert_allclose(got["yhat"], yhat, rtol=1e-12)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_two_two_one_gradient_is_the_chapter_formula(seed):
    """∂L/∂w13 = -2(y - ŷ) · g5'(in5) · w35 · g3'(in3) · x1 (seed notes §2), and its x2 twin."""
    from graphc.passes.autodiff import autodiff

    g = load_graph(TWO_TWO_ONE, batch=1, seed=seed, dtype="f64")
    feed = _inputs(np.random.default_rng(100 + seed), 1)
    got = run_graph(autodiff(g, "loss", wrt=["w13", "w23", "w45"]), feed)
    w = {k: float(v) for k, v in g.param_values.items()}
    yhat, _, (in3, in4, in5) = two_two_one_closed_form(w, **feed)
    d = lambda t: _sigmoid(t) * (1 - _sigmoid(t))  # g' of the sigmoid
    common = -2 * (feed["y"] - yhat) * d(in5)
    np.testing.assert_allclose(got["grad.w13"], np.sum(common * w["w35"] * d(in3) * feed["x1"]),
                               rtol=1e-10)
    np.testing.assert_allclose(got["grad.w23"], np.sum(common * w["w35"] * d(in3) * feed["x2"]),
                               rtol=1e-10)
    np.testing.assert_allclose(got["grad.w45"], np.sum(common * _sigmoid(in4)), rtol=1e-10)


def test_two_two_one_cli(tmp_path, capsys):
    assert main(["show", str(TWO_TWO_ONE)]) == 0
    assert "%yhat = sigmoid(%in5)" in capsys.readouterr().out
    feed = {k: v.astype(np.float32) for k, v in _inputs(np.random.default_rng(0), 4).items()}
    np.savez(tmp_path / "in.npz", **feed)
    assert main(["run", str(TWO_TWO_ONE), "--inputs", str(tmp_path / "in.npz"),
                 "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        _, loss, _ = two_two_one_closed_form(load_graph(TWO_TWO_ONE).param_values, **feed)
        np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)


# -- the seed's 1-D convolution -------------------------------------------------------------------

needs_linalg = pytest.mark.skipif(not {"conv", "matmul"} <= set(OPS),
                                  reason="conv/matmul primitives are not registered")


@needs_linalg
def test_conv1d_seed_gives_5_9_4():
    g = roundtrip(load_graph(CONV1D_SEED))
    x = np.array([5, 6, 6, 2, 5, 6, 5], np.float32).reshape(1, 1, 7)
    got = run_graph(g, {"x": x})
    np.testing.assert_array_equal(got["z"].ravel(), [5, 9, 4])
    np.testing.assert_array_equal(got["z_matrix"].ravel(), [5, 9, 4])


@needs_linalg
def test_conv1d_seed_frozen_kernel_and_band_matrix():
    g = load_graph(CONV1D_SEED)
    assert all(v.node.attrs["frozen"] for v in g.params)
    np.testing.assert_array_equal(g.param_values["k"].ravel(), [1, -1, 1])
    rows = [[1, -1, 1, 0, 0, 0, 0], [0, 0, 1, -1, 1, 0, 0], [0, 0, 0, 0, 1, -1, 1]]
    np.testing.assert_array_equal(g.param_values["m"], rows)


@needs_linalg
@pytest.mark.parametrize("n", [7, 8, 11])
def test_conv1d_seed_both_forms_agree_on_other_inputs(n):
    x = np.random.default_rng(n).standard_normal(n)
    got = run_graph(load_graph(CONV1D_SEED, n=n, dtype="f64"), {"x": x.reshape(1, 1, n)})
    # z_i = Σ_j k_j x_{2i+j}: the chapter's strided application of the kernel, no padding
    want = np.array([x[2 * i] - x[2 * i + 1] + x[2 * i + 2] for i in range((n - 3) // 2 + 1)])
    np.testing.assert_allclose(got["z"].ravel(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["z_matrix"].ravel(), want, rtol=1e-12, atol=1e-12)


@needs_linalg
def test_conv1d_seed_cli(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=np.array([5, 6, 6, 2, 5, 6, 5], np.float32).reshape(1, 1, 7))
    assert main(["run", str(CONV1D_SEED), "--inputs", str(tmp_path / "in.npz")]) == 0
    assert "z: float32[1, 1, 3] = [[[5. 9. 4.]]]" in capsys.readouterr().out
