"""Tap tiles (`codegen_conv_taps`): convolutions with a tiny output plane and a large kernel,
the weight gradients of "same" and "valid" convolutions, against the reference backend: taps
running across kernel rows (the kernel as wide as the input) or in vectors per kernel row, a
partial last vector, kernels of many vectors in a loop over their rows, every padding side,
channel blocks with a remainder, fused epilogues, f32 and f64, 1 and 2 threads, operands
reversed along their spatial axes (read forwards, output mirrored), and the gradient through
autodiff with the optimizer's update as the tiles' epilogue."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc
from graphc.ir.builder import Builder
from graphc.passes.autodiff import autodiff

from .conftest import check_llvm


def _paths(exe) -> list[str]:
    return [p.get("conv") for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]


TAP_CASES = [
    # name, x shape, w shape, padding (rows lo, hi, columns lo, hi)
    ("one_vector", (3, 5, 4, 4), (4, 5, 4, 4), (1, 1, 1, 1)),
    ("partial_vectors", (2, 3, 5, 5), (7, 3, 5, 5), (1, 1, 1, 1)),
    ("uneven_padding", (2, 3, 5, 5), (3, 3, 5, 5), (0, 2, 1, 0)),
    ("four_vectors", (1, 6, 8, 8), (8, 6, 8, 8), (1, 1, 1, 1)),
    ("tall_kernel", (2, 2, 9, 3), (3, 2, 7, 3), (1, 0, 1, 1)),
    ("valid_rows", (2, 3, 10, 12), (4, 3, 8, 10), (0, 0, 0, 0)),
    ("long_rows", (1, 2, 6, 40), (3, 2, 4, 38), (0, 0, 0, 0)),
    ("rows_padded", (2, 2, 7, 20), (5, 2, 6, 18), (1, 0, 0, 1)),
    # kernels of many vectors: a loop over the kernel rows
    ("big_map", (2, 3, 32, 32), (4, 3, 32, 32), (1, 1, 1, 1)),
    ("big_map_rows", (1, 2, 40, 24), (3, 2, 38, 22), (1, 0, 0, 1)),
]


def _tap_case_outputs(b, rng, dtype: str, operand=lambda b, t: t) -> dict[str, np.ndarray]:
    """An output per TAP_CASES geometry, the conv of `operand` of each input; the inputs."""
    np_dt = np.float32 if dtype == "f32" else np.float64
    ins = {}
    for name, xs, ws, pad in TAP_CASES:
        x, w = b.input(f"{name}.x", xs, dtype), b.input(f"{name}.w", ws, dtype)
        ins[f"{name}.x"] = rng.standard_normal(xs).astype(np_dt)
        ins[f"{name}.w"] = rng.standard_normal(ws).astype(np_dt)
        b.output(name, b.op("conv", operand(b, x), operand(b, w), padding=pad))
    return ins


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_tap_tiles_match_the_reference(dtype, rng):
    np_dt = np.float32 if dtype == "f32" else np.float64
    b = Builder("taps")
    ins = _tap_case_outputs(b, rng, dtype)
    y = b.op("conv", b.input("e.x", (2, 4, 6, 6), dtype), b.input("e.w", (5, 4, 6, 6), dtype),
             padding=(1, 1, 1, 1))
    bias = b.input("e.b", (5,), dtype)
    pre = y + b.reshape(bias, (5, 1, 1))
    b.output("epi_pre", pre)
    b.output("epi_post", (pre * 0.5).relu())
    for k, s in (("e.x", (2, 4, 6, 6)), ("e.w", (5, 4, 6, 6)), ("e.b", (5,))):
        ins[k] = rng.standard_normal(s).astype(np_dt)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "f32" else dict(rtol=1e-11, atol=1e-11)
    exe = check_llvm(b.build(), ins, tol=tol)
    assert _paths(exe).count("taps") == len(TAP_CASES) + 1, _paths(exe)


def _reversed(b, t):
    return b.op("reverse", t, axes=tuple(ax for ax in range(2, t.ndim) if t.shape[ax] > 1))


def test_reversed_operands_take_mirrored_tap_tiles(rng):
    """A correlation of two operands reversed along their spatial axes (as the weight gradient
    builds it) is read forwards, padding swapped, output positions mirrored: every geometry,
    uneven padding included, on the tap tiles; one operand a relu recomputed and staged, one
    with a bias epilogue."""
    b = Builder("mirrored")
    ins = _tap_case_outputs(b, rng, "f32", _reversed)
    x, w = b.input("r.x", (3, 4, 5, 5)), b.input("r.w", (6, 4, 5, 5))
    bias = b.input("r.b", (6,))
    y = b.op("conv", _reversed(b, x.relu()), _reversed(b, w), padding=(2, 0, 1, 1))
    b.output("relu_bias", y + b.reshape(bias, (6, 1, 1)))
    for k, shape in (("r.x", (3, 4, 5, 5)), ("r.w", (6, 4, 5, 5)), ("r.b", (6,))):
        ins[k] = rng.standard_normal(shape).astype(np.float32)
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-4))
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]
    assert [p["conv"] for p in plans] == ["taps"] * (len(TAP_CASES) + 1), plans
    assert sum(p["staged"] == ["x"] for p in plans) == 1, plans  # only the relu is staged


def test_optimizer_update_is_the_weight_gradients_epilogue(rng):
    """A training step's SGD update of a 3x3 "same" convolution's weights rides on the tap
    tiles of the weight gradient, which write the [O, C, 3, 3] layout themselves: no kernel
    of its own reads the gradient back. Values against the reference."""
    b = Builder("dw_update", seed=0)
    w = b.param("w", (6, 4, 3, 3), init="normal")
    x = b.input("x", (8, 4, 5, 5))
    y = b.op("conv", x, w, padding=1).tanh()
    step = graphc.train_step(b.build(outputs={"loss": (y * y).sum()}), "loss",
                             graphc.SGD(lr=0.1, weight_decay=1e-3))
    ins = {"x": rng.standard_normal((8, 4, 5, 5)).astype(np.float32),
           "step": np.array(0, np.int64)}
    exe = check_llvm(step, ins, tol=dict(rtol=1e-4, atol=1e-4))
    updates = [k for k in exe.schedule.kernels if any(o.startswith("update.w") for o in k.origin)]
    assert len(updates) == 1 and type(updates[0]).__name__ == "ConvKernel", updates
    assert exe.info["kernel_plans"][updates[0].name]["conv"] == "taps"


def test_tap_tiles_are_bitwise_the_same_on_two_threads(rng):
    b = Builder("taps_threads")
    x, w = b.input("x", (16, 32, 8, 8)), b.input("w", (12, 32, 8, 8))
    b.output("y", b.op("conv", x, w, padding=(1, 1, 1, 1)).tanh())
    g = b.build()
    ins = {"x": rng.standard_normal((16, 32, 8, 8)).astype(np.float32),
           "w": rng.standard_normal((12, 32, 8, 8)).astype(np.float32)}
    one = check_llvm(g, ins, threads=1, tol=dict(rtol=1e-4, atol=1e-4))
    two = graphc.compile(g, target="llvm", threads=2)
    assert "taps" in _paths(two)
    np.testing.assert_array_equal(one(ins)["y"], two(ins)["y"])


def test_weight_gradient_of_a_same_convolution_takes_tap_tiles(rng):
    """Through autodiff: the weights' gradient of a 3x3 "same" convolution (its input a
    recomputed relu, staged first) is a tap-tile convolution; values against the reference."""
    b = Builder("dw", seed=0)
    w = b.param("w", (6, 4, 3, 3), init="normal")
    x = b.input("x", (8, 4, 5, 5))
    y = b.op("conv", x.relu(), w, padding=1).tanh()
    g = autodiff(b.build(outputs={"loss": (y * y).sum()}), "loss")
    exe = check_llvm(g, {"x": rng.standard_normal((8, 4, 5, 5)).astype(np.float32)},
                     tol=dict(rtol=1e-4, atol=1e-4))
    assert "taps" in _paths(exe)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), c=st.integers(1, 5), o=st.integers(1, 9),
       h=st.integers(2, 7), w=st.integers(2, 24), kh_less=st.integers(0, 2),
       kw_less=st.sampled_from([0, 0, 1, 2, 3]), pads=st.tuples(*[st.integers(0, 2)] * 4),
       mirror=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_tap_tiles_on_random_geometries(n, c, o, h, w, kh_less, kw_less, pads, mirror, seed):
    """Kernels as wide as the input or a little narrower, any height up to it, padding on each
    side, both operands reversed or not: whatever path the compiler takes, the values match
    the reference."""
    kh, kw = max(1, h - kh_less), max(1, w - kw_less)
    ph0, ph1, pw0, pw1 = pads
    if h + ph0 + ph1 < kh or w + pw0 + pw1 < kw:
        return
    rng = np.random.default_rng(seed)
    b = Builder("taps_random")
    x, k = b.input("x", (n, c, h, w)), b.input("k", (o, c, kh, kw))
    if mirror:
        x, k = _reversed(b, x), _reversed(b, k)
    b.output("y", b.op("conv", x, k, padding=pads))
    check_llvm(b.build(), {"x": rng.standard_normal((n, c, h, w)).astype(np.float32),
                           "k": rng.standard_normal((o, c, kh, kw)).astype(np.float32)},
               tol=dict(rtol=1e-4, atol=1e-4))
