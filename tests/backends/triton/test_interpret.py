"""The op matrix on the Triton backend under the Triton interpreter (torch CPU tensors), against
the graph reference: every case fused, reductions again with long-row loops, a few models again
unfused. The interpreter is process-wide, so the matrix runs in one child process
(`interp_runner`) and each variant is reported here as its own test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("torch")

from tests.backends.op_matrix import OP_MATRIX  # noqa: E402
from tests.backends.triton.interp_runner import variants  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
VARIANTS = [v.name for v in variants([c.name for c in OP_MATRIX], "cpu")]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("triton_interp")
    out = tmp / "results.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.backends.triton.interp_runner", "--out", str(out),
         "--cache-dir", str(tmp / "cache")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if not out.exists():
        pytest.fail(f"the interpreter runner crashed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", VARIANTS)
def test_interpreter_matches_reference(results: dict, name: str) -> None:
    r = results.get(name)
    assert r is not None, f"{name} did not run"
    assert r["ok"], f"{r['error']}\n{r.get('traceback', '')}"


def test_every_primitive_is_in_the_matrix() -> None:
    """The matrix's schedules, taken together, exercise every primitive of the registry."""
    from graphc.ir.registry import primitives
    from graphc.passes import decompose

    seen = set()
    for case in OP_MATRIX:
        seen |= {n.op for n in decompose(case.graph()).live_nodes()}
    missing = set(primitives()) - seen - {"input", "param"}
    assert not missing, f"primitives no case exercises: {sorted(missing)}"
