"""The `gpu` tier: the op matrix compiled and launched on a CUDA device against the graph
reference (fused, long-row loops, unfused, CUDA graphs), a package compiled ahead of time for
this GPU loaded and launched from its cubins, tf32 opt-in, torch tensors in and out.
Skipped without CUDA (run by benchmarks/gpu_check.sh on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from graphc.backends.triton import build_program, load_program  # noqa: E402
from graphc.backends.triton.runtime import current_arch, torch_to_numpy  # noqa: E402
from graphc.ir.errors import InputError  # noqa: E402
from tests.backends.op_matrix import (  # noqa: E402
    CASES_BY_NAME,
    OP_MATRIX,
    assert_close,
    case_inputs,
    case_schedule,
    reference,
)
from tests.backends.triton.interp_runner import run_variant, variants  # noqa: E402

VARIANTS = variants([c.name for c in OP_MATRIX], "cuda")


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_matrix_on_gpu(variant, tmp_path) -> None:
    r = run_variant(variant, "cuda", str(tmp_path))
    assert r["ok"], f"{r['error']}\n{r.get('traceback', '')}"


@pytest.mark.parametrize("name", ["model.cnn", "model.lstm", "scatter_add.duplicates",
                                  "random_uniform.i32_negative_seed", "matmul.f16"])
def test_aot_package_runs_from_cubin(name: str, tmp_path, schedules_checked) -> None:
    case = CASES_BY_NAME[name]
    sched = case_schedule(case)
    arch = current_arch()
    prog = build_program(sched, {"archs": (arch,), "cache_dir": str(tmp_path / "c")})
    prog.save(tmp_path / "pkg")
    loaded = load_program(tmp_path / "pkg", options={"cache_dir": str(tmp_path / "c2")},
                          param_values=case.graph().param_values)
    # A package carries its signature and memory plan, not its kernels: nothing to check there
    schedules_checked[:] = [s for s in schedules_checked if s is not loaded.schedule]
    launchers = loaded.launchers()
    assert all(type(x).__name__ == "CubinLaunch" for x in launchers)
    assert not (tmp_path / "c2").exists()  # nothing generated or compiled on load
    inputs = case_inputs(case)
    got = loaded.run_torch(inputs)
    assert all(t.is_cuda for t in got.values())
    assert_close(case, {k: torch_to_numpy(v) for k, v in got.items()}, reference(case, inputs))



def test_stored_cubins_follow_the_current_stream_and_graph_capture(tmp_path) -> None:
    """Cubin launches go to torch's current stream: on a side stream and inside a CUDA graph
    capture (where a launch on another stream would break the capture or race the replay)."""
    sched = case_schedule(CASES_BY_NAME["fused.chain8"])
    prog = build_program(sched, {"archs": (current_arch(),), "cache_dir": str(tmp_path / "c")})
    prog.save(tmp_path / "pkg")
    eager = build_program(sched)
    side = torch.cuda.Stream()
    for cuda_graph in (False, True):
        loaded = load_program(tmp_path / "pkg", options={"cuda_graph": cuda_graph},
                              param_values=CASES_BY_NAME["fused.chain8"].graph().param_values)
        for seed in range(3):
            g = torch.Generator(device="cuda").manual_seed(seed)
            x = torch.randn(6, 7, device="cuda", generator=g)
            z = torch.randn(7, device="cuda", generator=g)
            want = eager.run_torch({"x": x, "z": z})["y"]
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                got = loaded.run_torch({"x": x, "z": z})["y"]
            torch.cuda.current_stream().wait_stream(side)
            assert torch.equal(got, want), (cuda_graph, seed)
        assert all(type(x).__name__ == "CubinLaunch" for x in loaded.launchers())


def test_launcher_option_picks_the_launch_path() -> None:
    """Default: this GPU's cubins through the driver; launcher="triton": Triton's own."""
    sched = case_schedule(CASES_BY_NAME["softmax"])
    x = torch.randn(4, 9, device="cuda")
    got = {}
    for launcher, kind in (("cubin", "CubinLaunch"), ("triton", "JitLaunch")):
        prog = build_program(sched, {"launcher": launcher} if launcher != "cubin" else None)
        got[launcher] = prog.run_torch({"x": x})["y"]
        assert all(type(f).__name__ == kind for f in prog.launchers()), launcher
    assert torch.equal(got["cubin"], got["triton"])
    assert torch.allclose(got["cubin"], torch.softmax(x, -1), atol=1e-6)

def test_tf32_is_opt_in() -> None:
    case = CASES_BY_NAME["matmul.long_k"]
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.standard_normal((3, 200)), dtype=torch.float32, device="cuda")
    w = torch.tensor(rng.standard_normal((200, 4)), dtype=torch.float32, device="cuda")
    exact = (a.double() @ w.double()).float()
    outs = {}
    for precision in ("ieee", "tf32"):
        prog = build_program(case_schedule(case), {"precision": precision})
        outs[precision] = prog.run_torch({"a": a, "w": w})["y"]
    assert torch.allclose(outs["ieee"], exact, rtol=1e-5, atol=1e-4)
    assert torch.allclose(outs["tf32"], exact, rtol=3e-2, atol=3e-1)


def test_cuda_tensors_in_and_out_and_checked() -> None:
    prog = build_program(case_schedule(CASES_BY_NAME["softmax"]))
    x = torch.randn(4, 9, device="cuda")
    y = prog.run_torch({"x": x})["y"]
    assert y.is_cuda and torch.allclose(y, torch.softmax(x, -1), atol=1e-6)
    with pytest.raises(InputError, match="'x': expected a tensor on cuda"):
        prog.run_torch({"x": x.cpu()})
    odd = torch.randn(37, device="cuda")[1:37].view(4, 9)  # misaligned: copied, still right
    assert torch.allclose(prog.run_torch({"x": odd})["y"], torch.softmax(odd, -1), atol=1e-6)


def test_cuda_graph_replays_new_inputs() -> None:
    prog = build_program(case_schedule(CASES_BY_NAME["fused.chain8"]), {"cuda_graph": True})
    eager = build_program(case_schedule(CASES_BY_NAME["fused.chain8"]))
    for seed in range(3):
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(6, 7, device="cuda", generator=g)
        z = torch.randn(7, device="cuda", generator=g)
        want = eager.run_torch({"x": x, "z": z})["y"]
        got = prog.run_torch({"x": x, "z": z})["y"]
        assert torch.equal(got, want)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_out_of_range_index_input_raises(cuda_graph: bool) -> None:
    from graphc.ir.builder import Builder
    from graphc.ir.errors import GraphError
    from graphc.pipeline import run_pipeline

    b = Builder("take")
    x, idx = b.input("x", (4, 3)), b.input("idx", (3,), "i64")
    b.output("y", b.op("take", x, idx, axis=0))
    prog = build_program(run_pipeline(b.build()).schedule, {"cuda_graph": cuda_graph})
    xs = torch.randn(4, 3, device="cuda")
    good = torch.tensor([3, -4, 1], device="cuda")
    assert torch.equal(prog.run_torch({"x": xs, "idx": good})["y"], xs[good])
    with pytest.raises(GraphError, match=r"take: index -5 \(at index position \(2,\)\)"):
        prog.run_torch({"x": xs, "idx": torch.tensor([0, 1, -5], device="cuda")})
    assert torch.equal(prog.run_torch({"x": xs, "idx": good})["y"], xs[good])
