"""Every kernel of the op matrix and of the example models compiles to cubin for sm_80 and sm_90
with Triton's compiler and no GPU (child processes: see conftest.py)."""

from __future__ import annotations

import pytest

from tests.backends.op_matrix import OP_MATRIX

NAMES = [c.name for c in OP_MATRIX]


@pytest.fixture(scope="module")
def results(triton_jobs) -> dict:
    out: dict = {}
    for job in triton_jobs["aot"]:
        out.update(job.results())
    return out


@pytest.mark.parametrize("name", NAMES)
def test_compiles_for_sm80_and_sm90(results: dict, name: str) -> None:
    r = results.get(name)
    assert r is not None, f"{name} was not compiled"
    assert r["ok"], f"{r['error']}\n{r.get('traceback', '')}"
    assert r["archs"] == ["sm_80", "sm_90"]
    assert r["shared"] <= 99 * 1024  # fits every target's shared memory (sm_80: 164 KiB)


def test_every_example_model_is_covered() -> None:
    from tests.backends.op_matrix import EXAMPLES

    examples = {p.stem for p in EXAMPLES.glob("*.py")}
    covered = {n.split(".", 1)[1].split("_eval")[0].split("_train")[0] for n in NAMES
               if n.startswith("model.")}
    assert examples <= covered, examples - covered


def test_elementwise_and_softmax_loads_are_vectorized(results: dict) -> None:
    r = results["vectorized"]
    assert r["ok"], r.get("error")
