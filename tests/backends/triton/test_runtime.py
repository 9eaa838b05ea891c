"""The Triton executable's argument checks (before any launch; no kernel runs here): wrong
dtype, shape, device, layout, missing or unknown names raise InputError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from graphc.backends.triton import build_program  # noqa: E402
from graphc.ir.errors import GraphError, InputError  # noqa: E402
from tests.backends.op_matrix import CASES_BY_NAME, case_schedule  # noqa: E402


@pytest.fixture(scope="module")
def program():
    return build_program(case_schedule(CASES_BY_NAME["matmul.bias_relu"]), {"interpret": True})


def good():
    return {"a": torch.zeros(5, 24), "w": torch.zeros(24, 7), "c": torch.zeros(7)}


def test_good_arguments_pass(program) -> None:
    args = program.check(good(), {})
    assert set(args) == {"a", "w", "c"}


@pytest.mark.parametrize("change, match", [
    ({"a": torch.zeros(5, 24, dtype=torch.float64)}, "'a': expected dtype f32"),
    ({"w": torch.zeros(24, 8)}, r"'w': expected shape \(24, 7\)"),
    ({"a": torch.zeros(24, 5).T}, "'a': tensor is not contiguous"),
    ({"c": torch.zeros(7, device="meta")}, "'c': expected a tensor on cpu"),
    ({"c": [0.0] * 7}, "'c': expected a torch tensor"),
    ({"a": np.zeros((5, 24), np.float64)}, "'a': expected dtype f32"),
    ({"x": torch.zeros(1)}, r"no input\(s\) \['x'\]"),
])
def test_bad_arguments_name_the_culprit(program, change, match) -> None:
    with pytest.raises(InputError, match=match):
        program.check({**good(), **change}, {})


def test_missing_input(program) -> None:
    args = good()
    del args["w"]
    with pytest.raises(InputError, match="missing input 'w'"):
        program.check(args, {})


def test_numpy_inputs_are_copied_over(program) -> None:
    args = program.check({"a": np.ones((5, 24), np.float32), "w": np.zeros((24, 7), np.float32),
                          "c": np.zeros(7, np.float32)}, {})
    assert isinstance(args["a"], torch.Tensor) and float(args["a"].sum()) == 120.0


def test_parameters_checked_and_unknown_ones_rejected() -> None:
    prog = build_program(case_schedule(CASES_BY_NAME["dense_relu"]), {"interpret": True})
    with pytest.raises(InputError, match="parameter 'w'"):
        prog.check({"x": torch.zeros(5, 12)}, {"w": torch.zeros(3)})
    with pytest.raises(InputError, match=r"no parameter\(s\) \['v'\]"):
        prog.check({"x": torch.zeros(5, 12)}, {"v": torch.zeros(3)})


def test_bf16_numpy_inputs_become_bf16_tensors() -> None:
    from graphc.backends.triton.runtime import numpy_to_torch, torch_to_numpy

    a = np.array([1.0, 2.5, -3.0], np.float32)
    t = numpy_to_torch(a, "bf16", "cpu")
    assert t.dtype == torch.bfloat16
    np.testing.assert_array_equal(torch_to_numpy(t), a)


def test_cuda_graph_needs_a_device() -> None:
    with pytest.raises(GraphError, match="cuda_graph needs a CUDA device"):
        prog = build_program(case_schedule(CASES_BY_NAME["softmax"]),
                             {"interpret": True, "cuda_graph": True})
        assert prog.runtime_options is None


@pytest.mark.parametrize("op", ["take", "scatter_add"])
def test_out_of_range_index_raises_before_the_launch(op: str) -> None:
    from graphc.ir.builder import Builder
    from graphc.pipeline import run_pipeline

    b = Builder(f"bad_{op}")
    x, idx = b.input("x", (4, 3)), b.input("idx", (3,), "i64")
    if op == "take":
        b.output("y", b.op("take", x, idx, axis=0))
    else:
        b.output("y", b.op("scatter_add", x, idx, b.input("u", (3, 3)), axis=0))
    prog = build_program(run_pipeline(b.build()).schedule, {"interpret": True})
    args = {"x": torch.zeros(4, 3), "u": torch.zeros(3, 3)} if op != "take" else {
        "x": torch.zeros(4, 3)}
    for bad in (4, -5, 1 << 40):
        want = rf"{op}: index {bad} \(at index position \(1,\)\) is out of range \[-4, 4\)"
        with pytest.raises(GraphError, match=want):
            prog.run_torch({**args, "idx": torch.tensor([0, bad, 1])})


def test_computed_out_of_range_index_raises_before_its_kernel(tmp_path) -> None:
    """An index made inside the graph is checked right before the kernel that reads it; the
    kernels before it ran (under the interpreter, which needs a process of its own)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "computed.py"
    script.write_text(
        "import torch\n"
        "from graphc.backends.triton import build_program\n"
        "from graphc.ir.builder import Builder\n"
        "from graphc.ir.errors import GraphError\n"
        "from graphc.pipeline import run_pipeline\n"
        "b = Builder('computed')\n"
        "x, idx = b.input('x', (4, 3)), b.input('idx', (3,), 'i64')\n"
        "b.output('y', b.op('take', x, idx + 2, axis=0))\n"
        "prog = build_program(run_pipeline(b.build()).schedule, {'interpret': True})\n"
        "x = torch.arange(12.0).reshape(4, 3)\n"
        "print(prog.run_torch({'x': x, 'idx': torch.tensor([0, 1, -6])})['y'][:, 0].tolist())\n"
        "try:\n"
        "    prog.run_torch({'x': x, 'idx': torch.tensor([0, 2, 1])})\n"
        "except GraphError as e:\n"
        "    print(e)\n")
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "[6.0, 9.0, 0.0]"  # rows 2, 3, -4 of x
    assert lines[1].startswith("take: index 4 (at index position (1,)) is out of range [-4, 4)")
