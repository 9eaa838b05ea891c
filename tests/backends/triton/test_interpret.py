"""The op matrix on the Triton backend under the Triton interpreter (torch CPU tensors), against
the graph reference: every case fused, reductions again with long-row loops, a few models again
unfused. The interpreter is process-wide, so the matrix runs in a child process
(`interp_runner`, started by conftest.py) and each variant is reported here as its own test."""

from __future__ import annotations

import pytest

from tests.backends.op_matrix import OP_MATRIX
from tests.backends.triton.interp_runner import variants

VARIANTS = [v.name for v in variants([c.name for c in OP_MATRIX], "cpu")]


@pytest.fixture(scope="module")
def results(triton_jobs) -> dict:
    return triton_jobs["interp"][0].results()


@pytest.mark.parametrize("name", VARIANTS)
def test_interpreter_matches_reference(results: dict, name: str) -> None:
    r = results.get(name)
    assert r is not None, f"{name} did not run"
    assert r["ok"], f"{r['error']}\n{r.get('traceback', '')}"


def test_every_primitive_is_in_the_matrix() -> None:
    """The matrix's graphs, taken together, exercise every primitive of the registry."""
    from graphc.ir.registry import primitives
    from graphc.passes import decompose

    seen = set()
    for case in OP_MATRIX:
        seen |= {n.op for n in decompose(case.graph()).live_nodes()}
    missing = set(primitives()) - seen - {"input", "param"}
    assert not missing, f"primitives no case exercises: {sorted(missing)}"
