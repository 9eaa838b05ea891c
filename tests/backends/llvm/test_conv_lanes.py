"""Channel-lane tiles (`codegen_conv_lanes`): convolutions with few output positions over many
channels (or with short sums where row tiles would leave most lanes idle), against the
reference backend: strides, dilation, groups, uneven padding, channel
counts that leave a partial vector or block, position counts that leave a partial tile,
1-D and 2-D, f32 and f64, fused prologues and epilogues, weights replaced between calls, 1 and
2 threads, and the convolutions of a training step through autodiff."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ir.builder import Builder
from graphc.passes.autodiff import autodiff

from .conftest import check_llvm


def _paths(exe) -> list[str]:
    return [p.get("conv") for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]


LANE_CASES = [
    # name, x shape, w shape, stride, padding (lo, hi per axis), rhs dilation, groups
    ("resnet_stage", (2, 64, 4, 4), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ("downsample", (2, 32, 8, 8), (72, 32, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ("partial_vector", (3, 40, 5, 6), (67, 40, 3, 3), (1, 1), (0, 2, 1, 0), (1, 1), 1),
    ("five_blocks", (1, 32, 2, 7), (80, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ("dilated", (2, 32, 7, 7), (64, 32, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
    ("grouped", (2, 96, 4, 4), (192, 32, 3, 3), (1, 2), (1, 1, 1, 1), (1, 1), 3),
    ("wide_kernel", (2, 16, 6, 6), (64, 16, 5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1),
    ("unpadded", (2, 64, 6, 6), (70, 64, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    # a stride-2 convolution's weight gradient: a short sum (128 products) over a 3x3 plane,
    # three images per tile (the last tile's third image missing); a 1x1 stride-2
    # convolution's: one position per image, the input cropped (negative padding)
    ("weight_gradient", (5, 8, 8, 8), (64, 8, 4, 4), (1, 1), (1, 0, 1, 0), (2, 2), 1),
    ("one_point", (31, 8, 8, 8), (64, 8, 4, 4), (1, 1), (0, -1, 0, -1), (2, 2), 1),
]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_channel_lane_tiles_match_the_reference(dtype, rng):
    np_dt = np.float32 if dtype == "f32" else np.float64
    b = Builder("lanes")
    ins = {}
    for name, xs, ws, stride, pad, dil, groups in LANE_CASES:
        x, w = b.input(f"{name}.x", xs, dtype), b.input(f"{name}.w", ws, dtype)
        ins[f"{name}.x"] = rng.standard_normal(xs).astype(np_dt)
        ins[f"{name}.w"] = rng.standard_normal(ws).astype(np_dt)
        b.output(name, b.op("conv", x, w, stride=stride, padding=pad, rhs_dilation=dil,
                            groups=groups))
    # 1-D, and an epilogue with a bias, a residual and two outputs over a recomputed input
    x1, w1 = b.input("d1.x", (2, 48, 30), dtype), b.input("d1.w", (68, 48, 7), dtype)
    b.output("d1", b.op("conv", x1, w1, stride=3, padding=(3, 1)))
    xe, we = b.input("e.x", (2, 32, 6, 6), dtype), b.input("e.w", (64, 32, 3, 3), dtype)
    bias, res = b.input("e.b", (64,), dtype), b.input("e.r", (2, 64, 6, 6), dtype)
    pre = b.conv2d(xe.relu(), we, bias, padding=1) + res
    b.output("epi_pre", pre)
    b.output("epi_post", (pre * 0.5).tanh())
    for k, s in (("d1.x", (2, 48, 30)), ("d1.w", (68, 48, 7)), ("e.x", (2, 32, 6, 6)),
                 ("e.w", (64, 32, 3, 3)), ("e.b", (64,)), ("e.r", (2, 64, 6, 6))):
        ins[k] = rng.standard_normal(s).astype(np_dt)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "f32" else dict(rtol=1e-11, atol=1e-11)
    exe = check_llvm(b.build(), ins, tol=tol)
    assert _paths(exe).count("channel lanes") == len(LANE_CASES) + 2, _paths(exe)


def test_channel_lane_tiles_are_bitwise_the_same_on_two_threads(rng):
    b = Builder("lanes_threads")
    x, w = b.input("x", (4, 128, 4, 4)), b.input("w", (96, 128, 3, 3))
    b.output("y", b.op("conv", x, w, padding=(1, 1, 1, 1)).relu())
    g = b.build()
    ins = {"x": rng.standard_normal((4, 128, 4, 4)).astype(np.float32),
           "w": rng.standard_normal((96, 128, 3, 3)).astype(np.float32)}
    one = check_llvm(g, ins, threads=1, tol=dict(rtol=1e-4, atol=1e-4))
    two = graphc.compile(g, target="llvm", threads=2)
    assert "channel lanes" in _paths(two) and two.info["kernel_plans"]["k0"]["parallel"]
    np.testing.assert_array_equal(one(ins)["y"], two(ins)["y"])


def test_replaced_weights_are_staged_again(rng):
    """The weights of a parameter are staged by channel once and kept: replacing them must
    restage them before the next call."""
    b = Builder("lanes_params", seed=0)
    w = b.param("w", (64, 32, 3, 3), init="he")
    x = b.input("x", (2, 32, 4, 4))
    g = b.build(outputs={"y": b.op("conv", x, w, padding=1)})
    exe = graphc.compile(g, target="llvm")
    assert _paths(exe) == ["channel lanes"]
    ins = {"x": rng.standard_normal((2, 32, 4, 4)).astype(np.float32)}
    first = exe(ins)["y"]
    new_w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    exe.params["w"] = new_w
    got = exe(ins)["y"]
    ref = graphc.compile(g, target="reference")
    ref.params["w"] = new_w
    np.testing.assert_allclose(got, ref(ins)["y"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, first)


@pytest.mark.parametrize("out_ch, in_ch", [(512, 512), (500, 520)])
def test_large_weights_are_staged_by_streaming_stores(out_ch, in_ch, rng):
    """Weights of 4 MiB and more, staged by channel on every call (passed with the call, as a
    training loop does), are written by non-temporal stores, a partial last vector of
    channels by masked stores: values against the reference on every call, with the weights
    changed in between, on one and two threads."""
    b = Builder("lanes_stream", seed=0)
    w = b.param("w", (out_ch, in_ch, 3, 3), init="he")
    x = b.input("x", (1, in_ch, 4, 4))
    g = b.build(outputs={"y": b.op("conv", x, w, padding=1)})
    ref = graphc.compile(g, target="reference")
    ins = {"x": rng.standard_normal((1, in_ch, 4, 4)).astype(np.float32)}
    for threads in (1, 2):
        exe = graphc.compile(g, target="llvm", threads=threads, cache=False)
        assert _paths(exe) == ["channel lanes"]
        assert "!nontemporal" in exe.info["optimized_ir"]  # (kept by uncached compiles)
        for _ in range(2):
            params = {"w": rng.standard_normal((out_ch, in_ch, 3, 3)).astype(np.float32)}
            want = ref.run(ins, params)["y"]
            np.testing.assert_allclose(exe.run(ins, params)["y"], want, rtol=1e-4, atol=1e-3)


def test_training_step_convolutions_match_the_reference(rng):
    """A small-plane block trained through autodiff: the forward convolutions and the input
    gradient's (a convolution of the output gradient with the flipped weights) take channel
    lanes; loss and every gradient against the reference."""
    b = Builder("lanes_train", seed=0)
    w1 = b.param("w1", (64, 64, 3, 3), init="he")
    w2 = b.param("w2", (64, 64, 3, 3), init="he")
    x = b.input("x", (4, 64, 4, 4))
    h = b.op("conv", x, w1, padding=1).relu()
    y = b.op("conv", h, w2, padding=1).tanh() + x
    g = autodiff(b.build(outputs={"loss": (y * y).mean()}), "loss")
    exe = check_llvm(g, {"x": rng.standard_normal((4, 64, 4, 4)).astype(np.float32)},
                     tol=dict(rtol=1e-4, atol=1e-5))
    assert _paths(exe).count("channel lanes") >= 3, _paths(exe)


def _training_block():
    """Two lane convolutions (one grouped, 72 channels per group: four and a half vectors)
    trained by SGD: every weight is replaced on every call (`new.<param>`)."""
    b = Builder("lanes_sgd", seed=0)
    w1 = b.param("w1", (216, 48, 3, 3), init="he")
    w2 = b.param("w2", (64, 216, 3, 3), init="he")
    x = b.input("x", (3, 144, 4, 4))
    h = b.op("conv", x, w1, padding=1, groups=3).relu()
    y = b.op("conv", h, w2, padding=(0, 2, 1, 1)).tanh()
    return graphc.train_step(b.build(outputs={"loss": (y * y).mean()}), "loss",
                             graphc.SGD(lr=0.5))


@pytest.mark.parametrize("threads", [1, 2])
def test_weights_replaced_every_call_are_staged_per_channel_block(threads, rng, monkeypatch):
    """A training step's weights change on every call: each task that starts a channel block
    stages that block's panel (forward convolutions, and the input gradient's flipped and
    transposed view of the weights) instead of a copy kept across calls. Three steps, each
    fed the weights the last returned, against the reference, and bit for bit the same as
    with the weights staged whole before the tiles."""
    import importlib

    lanes = importlib.import_module("graphc.backends.llvm.codegen_conv_lanes")
    g = _training_block()
    x = rng.standard_normal((3, 144, 4, 4)).astype(np.float32)
    exe = graphc.compile(g, target="llvm", threads=threads, cache=False)
    panels = [p for p in exe.info["kernel_plans"].values() if p.get("weight_panels")]
    assert len(panels) >= 3 and not any(p.get("weights_by_channel") for p in panels)
    monkeypatch.setattr(lanes, "_panel_staging", lambda *a: None)
    whole = graphc.compile(g, target="llvm", threads=threads, cache=False)
    assert not any(p.get("weight_panels") for p in whole.info["kernel_plans"].values())
    ref = graphc.compile(g, target="reference")
    params = {k: np.asarray(v) for k, v in exe.params.items()}
    for step in range(3):
        ins = {"x": x, "step": np.array(step, np.int64)}
        got, want, same = (e.run(ins, params) for e in (exe, ref, whole))
        for name, w in want.items():
            np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
            np.testing.assert_array_equal(got[name], same[name], err_msg=name)
        params = {k: got[f"new.{k}"] for k in params}
