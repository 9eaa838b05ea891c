"""`conv_phases`: convolutions over dilated inputs become one convolution per output phase,
convolutions over a one-point input a matmul."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError
from graphc.passes import autodiff
from graphc.passes.conv_phases import split_dilated_convs
from graphc.pipeline import run_pipeline


def _conv_graph(x_shape, w_shape, **attrs):
    b = Builder("c")
    y = b.op("conv", b.input("x", x_shape), b.input("w", w_shape), **attrs)
    return b.build(outputs={"y": y})


@st.composite
def dilated_convs(draw):
    rank = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 1, 2]))
    per = st.lists(st.integers(1, 3), min_size=rank, max_size=rank)
    size = draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank))
    kernel = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    lhs = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank).filter(
        lambda v: max(v) > 1))
    pads = draw(st.lists(st.tuples(st.integers(-1, 3), st.integers(-1, 3)), min_size=rank,
                         max_size=rank))
    return (rank, groups, tuple(size), tuple(kernel), tuple(draw(per)), tuple(pads),
            tuple(lhs), tuple(draw(per)[:rank]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dilated_convs(), st.integers(0, 2**16))
def test_phases_compute_the_dilated_convolution(spec, seed):
    """Any strides, kernel dilations, paddings (crops too) and groups, 1-D and 2-D: the phase
    form equals the convolution over the dilated input (graph reference, float64 sums of the
    same nonzero terms), and holds no dilated-input convolution."""
    rank, groups, size, kernel, stride, pads, lhs, rhs = spec
    c_in, c_out = 2 * groups, 3 * groups
    try:
        g = _conv_graph((2, c_in) + size, (c_out, c_in // groups) + kernel, stride=stride,
                        padding=pads, lhs_dilation=lhs, rhs_dilation=rhs, groups=groups)
    except GraphError:  # no output fits (the crop or the kernel is larger than the input)
        return
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((2, c_in) + size).astype(np.float32),
             "w": rng.standard_normal((c_out, c_in // groups) + kernel).astype(np.float32)}
    split = split_dilated_convs(g)
    assert not any(n.op == "conv" and max(n.attrs["lhs_dilation"]) > 1 for n in split.nodes)
    np.testing.assert_allclose(run_graph(split, feeds)["y"], run_graph(g, feeds)["y"],
                               rtol=1e-5, atol=1e-5)


def test_transposed_convolution_with_kernel_equal_to_stride_is_four_matmuls():
    """A 2x2 stride-2 up-convolution over 64 channels (as ONNX ConvTranspose imports it): four
    1x1 phases, each a matmul kernel after fusion; no convolution kernel is left."""
    g = _conv_graph((2, 64, 8, 8), (32, 64, 2, 2), stride=(1, 1), padding=((1, 1), (1, 1)),
                    lhs_dilation=(2, 2))
    schedule = run_pipeline(g).schedule
    kinds = [k.kind for k in schedule.kernels]
    assert kinds.count("matmul") == 4 and "conv" not in kinds, kinds


@pytest.mark.parametrize("kernel, pad", [(2, 1), (3, 1), (4, 2)])
def test_interleaving_the_phases_reads_each_at_half_the_index(kernel, pad):
    """The fused kernel that interleaves the phases (and adds the bias) reads phase (r0, r1)
    at [n, c, i // 2, j // 2]: the concatenations' one-wide slots read at 0, the reshapes'
    divisions fold. Before, each element carried divisions by the phases' plane sizes (the
    fused interleave ran 5x slower than unfused)."""
    from graphc.ir.kernel import FloorDiv, Load, LoopKernel, walk

    b = Builder("ct")
    x, w = b.input("x", (2, 8, 16, 16)), b.input("w", (3, 8, kernel, kernel))
    y = b.op("conv", x, w, stride=(1, 1), padding=((kernel - 1 - pad,) * 2,) * 2,
             lhs_dilation=(2, 2)) + b.input("bias", (3,)).reshape(1, 3, 1, 1)
    schedule = run_pipeline(b.build(outputs={"y": y})).schedule
    loops = [k for k in schedule.kernels if isinstance(k, LoopKernel)]
    assert loops, [k.kind for k in schedule.kernels]
    divisors = {a.d for k in loops for e in walk(k.expr_roots()) if isinstance(e, Load)
                for i in e.index for a, _ in i.terms if isinstance(a, FloorDiv)}
    assert divisors <= {2}, divisors


def test_strided_convolution_gradient_has_no_dilated_input():
    """The input gradient of a stride-2 convolution is a convolution over the output gradient
    dilated by 2; after the pipeline's graph passes it is in phase form."""
    b = Builder("g", seed=0)
    x = b.param("x", (2, 3, 9, 9), init="normal")
    w = b.param("w", (4, 3, 3, 3), init="normal")
    y = b.op("conv", x, w, stride=(2, 2), padding=((1, 1), (1, 1)))
    g = autodiff(b.build(outputs={"loss": (y * y).sum()}), "loss")
    assert any(n.op == "conv" and max(n.attrs["lhs_dilation"]) > 1 for n in g.nodes)
    after = run_pipeline(g).graph
    assert not any(n.op == "conv" and max(n.attrs["lhs_dilation"]) > 1 for n in after.nodes)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((3, 5, 1, 1), (4, 5, 4, 4), dict(padding=((3, 3), (3, 3)))),      # DCGAN's first layer
    ((2, 3, 1, 1), (6, 3, 3, 5), dict(padding=((2, 1), (4, 4)), stride=(2, 1),
                                      rhs_dilation=(1, 2))),
    ((2, 3, 1), (4, 3, 5), dict(padding=((8, 6),), stride=(2,), rhs_dilation=(3,))),
    ((2, 3, 1, 1), (4, 3, 3, 3), dict(padding=((1, 1), (1, 1)), lhs_dilation=(2, 2))),
])
def test_one_point_input_is_a_matmul(x_shape, w_shape, attrs, rng):
    """A convolution of a 1x1 input (a generator's first transposed convolution from the
    latent vector) is x[N, C] @ the taps each output position reads (zero where none): any
    padding, stride and kernel dilation, 1-D and 2-D; no convolution is left."""
    g = _conv_graph(x_shape, w_shape, **attrs)
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32),
             "w": rng.standard_normal(w_shape).astype(np.float32)}
    split = split_dilated_convs(g)
    ops = {n.op for n in split.nodes}
    assert "conv" not in ops and "matmul" in ops
    np.testing.assert_allclose(run_graph(split, feeds)["y"], run_graph(g, feeds)["y"],
                               rtol=1e-5, atol=1e-5)
