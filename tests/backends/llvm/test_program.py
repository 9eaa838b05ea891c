"""The LLVM runtime behind `graphc.compile(graph, target="llvm")`: example models (forward and
training steps) against the reference, argument checks before any compiled code runs, the
parameter store, the arena, thread counts and the compile cache."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.backends.llvm.runtime import resolve_threads
from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError, InputError
from graphc.optim import SGD, Adam
from graphc.train import Trainer, train_step

from .conftest import assert_outputs_match
from .test_codegen_matrix import merge_graphs

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _example_graphs():
    """(graphs, inputs): every example model's forward graph and training step."""
    graphs, feeds = {}, {}
    for name, opt in (("two_two_one", SGD(0.5)), ("conv1d_seed", None), ("cnn", SGD(0.1)),
                      ("lstm", Adam(1e-2))):
        mod = _example(name)
        g = mod.build()
        inputs = mod.example_inputs()
        graphs[f"{name}.fwd"] = g
        feeds.update({f"{name}.fwd.{k}": v for k, v in inputs.items()})
        if opt is not None:
            graphs[f"{name}.train"] = train_step(g, "loss", opt)
            feeds.update({f"{name}.train.{k}": v for k, v in inputs.items()})
            feeds[f"{name}.train.step"] = np.array(1, np.int64)
    return graphs, feeds


@pytest.mark.parametrize("fuse", [True, False])
def test_example_models_forward_and_training_step(fuse):
    """two_two_one, conv1d_seed, cnn (with its SGD step) and lstm (with an Adam step), merged
    into one graph: every output, gradients and updated parameters included."""
    graphs, feeds = _example_graphs()
    g = merge_graphs(graphs)
    want = run_graph(g, feeds)
    exe = graphc.compile(g, target="llvm", fuse=fuse)
    assert_outputs_match(exe(feeds), want, dict(rtol=2e-4, atol=2e-5))


def test_training_loop_with_the_trainer():
    """Ten SGD steps of the 2-2-1 net through `Trainer` with the compiled step vs the
    reference runner: same losses, same weights."""
    mod = _example("two_two_one")
    step = train_step(mod.build(), "loss", SGD(0.5))
    exe = graphc.compile(step, target="llvm")
    inputs = mod.example_inputs()
    runs = {}
    for tag, runner in (("llvm", exe.as_runner()), ("ref", None)):
        trainer = Trainer(step, run=runner)
        runs[tag] = [float(trainer.step(inputs)["loss"]) for _ in range(10)]
    np.testing.assert_allclose(runs["llvm"], runs["ref"], rtol=1e-5)
    assert runs["llvm"][-1] < runs["llvm"][0]


@pytest.fixture(scope="module")
def dense():
    b = Builder("dense", seed=3)
    x = b.input("x", (4, 3))
    w = b.param("w", (3, 5))
    bias = b.param("bias", (5,), init="normal")
    b.output("y", (x @ w + bias).relu())
    b.output("x_again", x)  # an output that is an input, copied
    return b.build()


@pytest.fixture(scope="module")
def dense_exe(dense):
    return graphc.compile(dense, target="llvm")


def _x(rng):
    return rng.standard_normal((4, 3)).astype(np.float32)


@pytest.mark.parametrize("bad, match", [
    ({"x": np.zeros((3, 4), np.float32)}, "input 'x': expected shape"),
    ({"x": np.zeros((4, 3), np.float64)}, "input 'x': expected dtype f32"),
    ({"x": np.zeros((3, 4), np.float32).T}, "input 'x': array is not C-contiguous"),
    ({}, "missing input 'x'"),
    ({"x": np.zeros((4, 3), np.float32), "z": np.zeros(3)}, "no input.*'z'"),
    ({"x": [[1.0] * 3] * 4}, "input 'x': expected a numpy array"),
])
def test_bad_arguments_raise_input_error_naming_the_input(dense_exe, bad, match):
    with pytest.raises(InputError, match=match):
        dense_exe(bad)


def test_parameters_can_be_read_and_replaced(dense, dense_exe, rng):
    x = _x(rng)
    w = dense_exe.params["w"]
    np.testing.assert_array_equal(w, dense.param_values["w"])
    before = dense_exe(x=x)["y"]
    new_w = rng.standard_normal((3, 5)).astype(np.float32)
    dense_exe.params["w"] = new_w
    try:
        got = dense_exe(x=x)
        want = run_graph(dense, {"x": x}, {"w": new_w})
        assert_outputs_match(got, want)
        assert not np.allclose(got["y"], before)
        dense_exe.params["w"] = new_w.astype(np.float64)  # same kind: converted to f32
        with pytest.raises(InputError, match="parameter 'w'"):
            dense_exe.params["w"] = np.zeros((5, 3), np.float32)
        override = dense_exe.run({"x": x}, params={"w": w})  # per-call override
        np.testing.assert_allclose(override["y"], before)
    finally:
        dense_exe.params["w"] = w


def test_arena_is_allocated_once_and_outputs_are_fresh(dense_exe, rng):
    prog = dense_exe.program
    arena = prog._arena
    x = _x(rng)
    a = dense_exe(x=x)
    b = dense_exe(x=x * 2)
    assert prog._arena is arena
    assert a["y"] is not b["y"] and not np.shares_memory(a["y"], b["y"])
    np.testing.assert_array_equal(a["x_again"], x)
    assert not np.shares_memory(a["x_again"], x)


@pytest.mark.parametrize("nbytes", [1000, 3 << 20])
def test_arena_buffer_is_zeroed_aligned_and_large_ones_ask_for_huge_pages(nbytes):
    from graphc.backends.llvm.runtime import ARENA_ALIGNMENT, HUGE_ARENA_MIN, arena_buffer

    arena = arena_buffer(nbytes)
    assert arena.nbytes == nbytes and arena.flags.writeable
    assert arena.ctypes.data % ARENA_ALIGNMENT == 0 and not arena.any()
    arena[:] = 7  # writable to its last byte
    if nbytes < HUGE_ARENA_MIN or not Path("/proc/self/smaps").exists():
        return
    start = arena.ctypes.data
    flags = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= start < hi
        elif line.startswith("VmFlags:") and inside:
            flags = line.split()[1:]
            break
    assert flags is not None and "hg" in flags  # MADV_HUGEPAGE was applied


def _scale_exe():
    b = Builder("scale")
    x = b.input("x", (1000,))
    return graphc.compile(b.build(outputs={"y": x * 2.0}), target="llvm")


def test_an_output_the_caller_still_holds_is_never_written_again():
    """Whole arrays and views of them (a view links to the memory's owner, not to the array)
    keep their values through later calls."""
    exe = _scale_exe()
    ones, sevens = np.ones(1000, np.float32), np.full(1000, 7, np.float32)
    whole = exe(x=ones)["y"]
    view = exe(x=ones)["y"][:5]
    exe(x=sevens)
    exe(x=sevens)
    np.testing.assert_array_equal(whole, 2.0)
    np.testing.assert_array_equal(view, 2.0)


def test_outputs_alternate_between_two_arrays_when_the_caller_keeps_the_last_one():
    """`y = exe(x)` in a loop: the array of the call before last is free again and is reused
    (no fresh allocation, whose first touch would fault every page); dropped results are
    reused at once."""
    exe = _scale_exe()
    x = np.arange(1000, dtype=np.float32)
    addresses = []
    y = None
    for i in range(6):
        y = exe(x=x + i)["y"]
        addresses.append(y.ctypes.data)
        np.testing.assert_array_equal(y, (x + i) * 2.0)
    assert len(set(addresses)) == 2 and addresses[0::2] == [addresses[0]] * 3
    del y
    first = exe(x=x)["y"].ctypes.data
    assert exe(x=x)["y"].ctypes.data == first


def _circular(a: int, b: int) -> int:
    d = (a - b) % 4096
    return min(d, 4096 - d)


def test_page_offset_apart_is_aligned_and_farthest_from_every_stream():
    from graphc.backends.llvm.runtime import page_offset_apart

    assert page_offset_apart([]) == 0
    rng = np.random.default_rng(5)
    cases = ([0x7F0010], [0x10, 0x3010, 0x9010], [0x0, 0x800], list(rng.integers(0, 1 << 40, 5)))
    for streams in cases:
        best = page_offset_apart([int(a) for a in streams])
        assert best % 64 == 0 and 0 <= best < 4096
        nearest = min(_circular(best, a) for a in streams)
        # no 64-byte aligned offset lies farther from its nearest stream (brute force)
        assert nearest == max(min(_circular(c, a) for a in streams) for c in range(0, 4096, 64))


def test_large_outputs_are_placed_apart_from_the_inputs_within_their_pages(rng):
    """Outputs of 64 KiB and more start as far as can be (in their low 12 address bits) from
    the large inputs and from each other; small ones are only 64-byte aligned."""
    n = 1 << 15
    b = Builder("apart")
    x, w = b.input("x", (n,)), b.input("w", (n,))
    s = b.input("s", (8,))
    g = b.build(outputs={"y": (x * w).relu(), "z": x + w, "t": s * 2.0})
    exe = graphc.compile(g, target="llvm")
    feeds = {"x": rng.standard_normal(n).astype(np.float32),
             "w": rng.standard_normal(n).astype(np.float32),
             "s": rng.standard_normal(8).astype(np.float32)}
    outs = exe(feeds)
    assert_outputs_match(outs, run_graph(g, feeds))
    big = [feeds["x"].ctypes.data, feeds["w"].ctypes.data]
    for name in ("y", "z"):
        assert outs[name].ctypes.data % 64 == 0
    # k streams leave a gap of at least 4096 / k bytes on the page's circle; the output sits
    # in the middle of the widest, rounded to 64 bytes
    assert min(_circular(outs["y"].ctypes.data, a) for a in big) >= 4096 // 4 - 32
    assert min(_circular(outs["z"].ctypes.data, a)
               for a in big + [outs["y"].ctypes.data]) >= 4096 // 6 - 32
    assert outs["t"].ctypes.data % 64 == 0


def test_thread_count_option_and_environment(dense, monkeypatch):
    assert graphc.compile(dense, target="llvm", threads=1).program.threads == 1
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "3")
    assert graphc.compile(dense, target="llvm").program.threads == 3
    assert resolve_threads(2) == 2
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "many")
    with pytest.raises(GraphError, match="GRAPHC_NUM_THREADS"):
        graphc.compile(dense, target="llvm")
    monkeypatch.delenv("GRAPHC_NUM_THREADS")
    assert resolve_threads() >= 1


def test_jit_without_cache_matches(dense, rng):
    exe = graphc.compile(dense, target="llvm", cache=False)
    assert exe.info["cache_hit"] is False and "compile_seconds" in exe.info
    x = _x(rng)
    assert_outputs_match(exe(x=x), run_graph(dense, {"x": x}))


def test_second_compile_is_a_cache_hit(rng, tmp_path):
    b = Builder("cached")
    x = b.input("x", (8, 40))
    b.output("y", (x.exp() + 1.0).log().sum((1,)))
    g = b.build()
    first = graphc.compile(g, target="llvm", cache_dir=tmp_path)
    second = graphc.compile(g, target="llvm", cache_dir=tmp_path)
    assert first.info["cache_hit"] is False and second.info["cache_hit"] is True
    assert first.info["cache_key"] == second.info["cache_key"]
    xs = rng.standard_normal((8, 40)).astype(np.float32)
    np.testing.assert_array_equal(first(x=xs)["y"], second(x=xs)["y"])
    other = graphc.compile(g, target="llvm", cache_dir=tmp_path, portable=True)
    assert other.info["cache_key"] != first.info["cache_key"]


_CONCURRENT = textwrap.dedent("""
    import sys, numpy as np, graphc
    b = graphc.Builder("race")
    x = b.input("x", (16, 16))
    b.output("y", (x @ x).tanh().sum((0,)))
    exe = graphc.compile(b.build(), target="llvm", cache_dir=sys.argv[1])
    xs = np.eye(16, dtype=np.float32)
    assert np.allclose(exe(x=xs)["y"], np.tanh(np.eye(16)).sum(0), atol=1e-6)
    print(exe.info["cache_hit"])
""")


def test_two_processes_compiling_the_same_graph_at_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    libs = list(tmp_path.rglob("*.so"))
    assert len(libs) == 1 and not list(tmp_path.rglob(".*"))  # one entry, no temp files left
    again = subprocess.run([sys.executable, "-c", _CONCURRENT, str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert again.stdout.strip() == "True"


def test_default_cache_directory_is_overridable(monkeypatch, tmp_path):
    from graphc.backends.llvm.cache import cache_dir

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("GRAPHC_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "graphc"
    assert os.fspath(cache_dir(tmp_path / "x")).endswith("x")


@pytest.mark.parametrize("fuse", [True, False])
def test_empty_scalar_and_passthrough_outputs(fuse):
    """Zero-size tensors, 0-d scalars, a parameter returned as is, one value under two names."""
    b = Builder("edge")
    x = b.input("x", (0, 5))
    s = b.input("s", ())
    y = b.input("y", (4, 0))
    p = b.param("p", (3,), init="normal")
    b.output("empty", x * 2.0)
    b.output("empty_sum", x.sum((0,)))
    b.output("sum_of_nothing", y.sum((1,)))
    b.output("mm_empty", y @ b.zeros((0, 3)))
    b.output("scalar", (s * s).exp())
    b.output("param_out", p)
    b.output("dup1", s + 1.0)
    b.output("dup2", s + 1.0)
    g = b.build()
    ins = {"x": np.zeros((0, 5), np.float32), "s": np.array(0.5, np.float32),
           "y": np.zeros((4, 0), np.float32)}
    assert_outputs_match(graphc.compile(g, target="llvm", fuse=fuse)(ins), run_graph(g, ins))


@pytest.mark.parametrize("threads", [1, 2])
def test_parameter_derived_kernels_run_again_only_when_parameters_change(threads, rng,
                                                                        tmp_path):
    """A weight picked and scaled from a parameter is computed by kernels that read only
    the parameter: compiled code keeps their result from one call to the next and runs them
    again after an assignment, or for a call that passes its own parameters; the package
    loaded in this process behaves the same."""
    b = Builder("picked", seed=0)
    x = b.input("x", (8, 6))
    w = b.param("w", (9, 5), init="normal")
    picked = b.take(w * 2.0, b.const(np.asarray([8, 0, 3, 3, 1, 7], np.int64), dtype="i64"),
                    axis=0)
    g = b.build(outputs={"y": (x @ picked).relu()})
    compiled = graphc.compile(g, target="llvm", threads=threads, cache=False)
    plans = compiled.info["kernel_plans"]
    assert sum(p["param_derived"] for p in plans.values()) >= 1
    assert not all(p["param_derived"] for p in plans.values())
    xs = rng.standard_normal((8, 6)).astype(np.float32)

    def want(params):
        return run_graph(g, {"x": xs}, params)["y"]

    compiled.save(tmp_path / "picked.gcpkg")
    for exe in (compiled, graphc.load(tmp_path / "picked.gcpkg")):
        for step in range(3):
            for _ in range(2):
                np.testing.assert_allclose(exe(x=xs)["y"], want(dict(exe.params)), rtol=1e-5)
            once = {"w": rng.standard_normal((9, 5)).astype(np.float32)}
            np.testing.assert_allclose(exe.run({"x": xs}, params=once)["y"], want(once),
                                       rtol=1e-5)
            np.testing.assert_allclose(exe(x=xs)["y"], want(dict(exe.params)), rtol=1e-5)
            exe.params["w"] = rng.standard_normal((9, 5)).astype(np.float32) * (step + 2)
