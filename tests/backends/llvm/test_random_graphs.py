"""Random op graphs (`tests/backends/random_graphs.py`) compiled for the LLVM backend, fused,
with one and two threads, against the reference; and the shapes the generator found broken,
kept as plain cases."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.passes.autodiff import autodiff

from ..random_graphs import (
    random_conv_graph,
    random_graph,
    random_sequence_graph,
    with_gradients,
)
from .conftest import assert_outputs_match

TOL = dict(rtol=2e-4, atol=2e-5)  # long chains of f32 math, reductions in another order
GRAD_TOL = dict(rtol=1e-3, atol=1e-4)  # backward chains are longer still


def matches_on_one_and_two_threads(graph, feeds, tol) -> list[dict[str, np.ndarray]]:
    """Compile `graph` for LLVM with one and with two threads and compare each run with the
    reference; the two results, for further checks."""
    want = run_graph(graph, feeds)
    runs = []
    for threads in (1, 2):
        got = graphc.compile(graph, target="llvm", threads=threads)(feeds)
        assert_outputs_match(got, want, tol)
        runs.append(got)
    return runs


def gradients_match(generated: tuple, seed: int) -> None:
    """A generated network (graph, inputs) with its gradients (`with_gradients`)."""
    net, feeds = generated
    matches_on_one_and_two_threads(with_gradients(net, seed), feeds, GRAD_TOL)


@pytest.mark.parametrize("seed", range(100))
def test_random_graph_matches_the_reference(seed):
    matches_on_one_and_two_threads(*random_graph(seed), TOL)


def test_concatenation_along_rows_then_columns(rng):
    """A load masked both on an outer axis (the row concatenation) and on the vectorized one
    (the column concatenation): the two bounds are combined as vectors."""
    b = Builder("cc")
    x = b.input("x", (2, 7))
    rows = b.concat(x, x * 0.5, axis=0)
    g = b.build(outputs={"y": b.concat(rows, rows * 0.5, axis=1)})
    xv = rng.standard_normal((2, 7)).astype(np.float32)
    got = graphc.compile(g, target="llvm")({"x": xv})
    assert_outputs_match(got, run_graph(g, {"x": xv}), TOL)


@pytest.mark.parametrize("seed", range(24))
def test_random_graph_gradients_match_the_reference(seed):
    gradients_match(random_graph(seed), seed)


@pytest.mark.parametrize("seed", range(32))
def test_random_image_network_and_its_gradients_match_the_reference(seed):
    gradients_match(random_conv_graph(seed), seed)


@pytest.mark.parametrize("seed", range(8))
def test_random_layer_sized_image_network_and_its_gradients_match_the_reference(seed):
    """Up to 64 channels, 8 images and 32 x 28 planes: the tiled convolution and GEMM paths,
    split over two threads."""
    gradients_match(random_conv_graph(seed, large=True), seed)


@pytest.mark.parametrize("seed", range(16))
def test_random_sequence_model_and_its_gradients_match_the_reference(seed):
    gradients_match(random_sequence_graph(seed), seed)


def test_a_quotient_recomputed_in_every_sweep_keeps_the_max_gradient(rng):
    """Found by the gradient fuzzing: the gradient of a row max compares the recomputed operand
    with the stored maximum. The kernel recomputes x / (|x| + 0.5) in three sweeps, and LLVM
    turned some of those divisions into products with a reciprocal (`arcp`) and not others:
    the comparison failed, the count of maximal elements was 0 and the gradient NaN."""
    b = Builder("quotient_max")
    x = b.input("x", (16, 16))
    d = x / (x.abs() + 0.5)
    y, z = d.max((1,), keepdims=True), d.tanh()
    graph = autodiff(b.build(outputs={"y": y, "z": z, "loss": y.sum() + z.sum()}), "loss",
                     ["x"])
    feeds = {"x": rng.standard_normal((16, 16)).astype(np.float32)}
    for got in matches_on_one_and_two_threads(graph, feeds, TOL):
        assert np.isfinite(got["grad.x"]).all()
