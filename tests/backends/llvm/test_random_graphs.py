"""Random op graphs (`tests/backends/random_graphs.py`) compiled for the LLVM backend, fused,
with one and two threads, against the reference; and the shapes the generator found broken,
kept as plain cases."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder

from ..random_graphs import random_graph
from .conftest import assert_outputs_match

TOL = dict(rtol=2e-4, atol=2e-5)  # long chains of f32 math, reductions in another order


@pytest.mark.parametrize("seed", range(100))
def test_random_graph_matches_the_reference(seed):
    graph, feeds = random_graph(seed)
    want = run_graph(graph, feeds)
    for threads in (1, 2):
        got = graphc.compile(graph, target="llvm", threads=threads)(feeds)
        assert_outputs_match(got, want, TOL)


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
