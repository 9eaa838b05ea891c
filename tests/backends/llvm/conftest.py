"""Shared helpers of the LLVM backend tests: a private compile cache per test session, and
`check_llvm`: compile a graph for the llvm target and compare every output with the reference
backend (`run_graph`, numpy references op by op: the oracle)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pytest

import graphc
from graphc.backends.reference import run_graph
from graphc.ir.graph import Graph

F32_TOL = dict(rtol=2e-5, atol=1e-6)
F64_TOL = dict(rtol=1e-12, atol=1e-13)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Compile into a fresh cache directory (never the user's ~/.cache/graphc)."""
    old = os.environ.get("GRAPHC_CACHE_DIR")
    os.environ["GRAPHC_CACHE_DIR"] = str(tmp_path_factory.mktemp("graphc-cache"))
    yield
    if old is None:
        os.environ.pop("GRAPHC_CACHE_DIR", None)
    else:
        os.environ["GRAPHC_CACHE_DIR"] = old


def assert_outputs_match(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray],
                         tol: Mapping[str, float] | None = None,
                         per_output: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Every reference output is produced with its dtype, shape and values (NaN == NaN)."""
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, f"{name}: dtype {g.dtype}, reference {w.dtype}"
        assert g.shape == w.shape, f"{name}: shape {g.shape}, reference {w.shape}"
        t = dict((per_output or {}).get(name, tol or _default_tol(w)))
        if w.dtype.kind in "biu" or not t:
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64),
                                       err_msg=name, equal_nan=True, **t)


def _default_tol(w: np.ndarray) -> dict[str, float]:
    if w.dtype == np.float64:
        return F64_TOL
    if w.dtype == np.float16:
        return dict(rtol=2e-3, atol=1e-3)
    return F32_TOL


def check_llvm(graph: Graph, inputs: Mapping[str, np.ndarray], *, fuse: bool = True,
               tol: Mapping[str, float] | None = None,
               per_output: Mapping[str, Mapping[str, float]] | None = None, **options):
    """Compile `graph` for llvm, run it on `inputs`, compare with the reference; returns the
    Executable."""
    want = run_graph(graph, inputs)
    exe = graphc.compile(graph, target="llvm", fuse=fuse, **options)
    got = exe(inputs)
    assert_outputs_match(got, want, tol, per_output)
    return exe
