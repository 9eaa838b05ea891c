"""The on-disk pipeline cache: a graph compiled before skips the passes, its result is the
pipeline's own, and anything that could change the schedule misses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc
import graphc.pipeline_cache as pc
from graphc.backends.reference import run_graph
from graphc.io import load_example_inputs, load_graph
from graphc.ir.builder import Builder
from graphc.ir.text import print_graph
from graphc.pipeline import run_pipeline

CNN = "examples/cnn.py"


@pytest.fixture(autouse=True)
def cache_on(monkeypatch):
    monkeypatch.setenv(pc.SWITCH_ENV, "1")


def _entries(root) -> list:
    return sorted((root / "pipeline").rglob("*.pkl"))


def test_second_compile_skips_the_passes_and_matches_them(tmp_path, monkeypatch):
    g = load_graph(CNN)
    inputs = load_example_inputs(CNN)
    first = graphc.compile(g, target="reference", cache_dir=tmp_path)
    assert first.info["pipeline_cache_hit"] is False
    assert len(_entries(tmp_path)) == 1

    def no_passes(*a, **k):
        raise AssertionError("the passes ran on a cache hit")

    monkeypatch.setattr("graphc.compiler.run_pipeline", no_passes)
    second = graphc.compile(g, target="reference", cache_dir=tmp_path)
    assert second.info["pipeline_cache_hit"] is True
    assert all(e["cached"] for e in second.info["passes"])
    fresh = run_pipeline(g)
    assert str(second.schedule) == str(fresh.schedule)
    assert print_graph(second.graph) == print_graph(fresh.graph)
    want = run_graph(g, inputs)
    for name, got in second(inputs).items():
        np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-6)


def test_hit_runs_with_the_new_graphs_parameter_values(tmp_path):
    g = load_graph(CNN)
    inputs = load_example_inputs(CNN)
    graphc.compile(g, target="reference", cache_dir=tmp_path)
    rng = np.random.default_rng(5)
    new_values = {k: (np.asarray(v) * (1 + 0.2 * rng.standard_normal(np.shape(v))))
                  .astype(np.asarray(v).dtype) for k, v in g.param_values.items()}
    g2 = g.with_param_values(new_values)
    exe = graphc.compile(g2, target="reference", cache_dir=tmp_path)
    assert exe.info["pipeline_cache_hit"] is True
    for k, v in new_values.items():
        np.testing.assert_array_equal(exe.params[k], v)
    want, before = run_graph(g2, inputs), run_graph(g, inputs)
    for name, got in exe(inputs).items():
        np.testing.assert_allclose(got, want[name], rtol=1e-4, atol=1e-5)
        assert not np.allclose(got, before[name], rtol=1e-2)


def _affine(scale: float):
    b = Builder("affine", seed=0)
    x = b.input("x", (4, 8))
    return b.build(outputs={"y": (x * scale).relu()})


def test_graph_options_and_sources_are_in_the_key(tmp_path, monkeypatch):
    graphc.compile(_affine(2.0), target="reference", cache_dir=tmp_path)
    # another constant, the other fusion setting: misses
    assert graphc.compile(_affine(3.0), target="reference",
                          cache_dir=tmp_path).info["pipeline_cache_hit"] is False
    assert graphc.compile(_affine(2.0), target="reference", cache_dir=tmp_path,
                          fuse=False).info["pipeline_cache_hit"] is False
    assert len(_entries(tmp_path)) == 3
    # edited pass sources: another key
    key = pc.pipeline_key(_affine(2.0), {"fuse": True, "remat": False})
    monkeypatch.setattr(pc, "source_fingerprint", lambda: "edited")
    assert pc.pipeline_key(_affine(2.0), {"fuse": True, "remat": False}) != key


def test_unreadable_entry_is_a_miss_and_is_rewritten(tmp_path):
    g = _affine(2.0)
    graphc.compile(g, target="reference", cache_dir=tmp_path)
    (entry,) = _entries(tmp_path)
    entry.write_bytes(entry.read_bytes()[:40])
    exe = graphc.compile(g, target="reference", cache_dir=tmp_path)
    assert exe.info["pipeline_cache_hit"] is False
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    np.testing.assert_array_equal(exe(x=x)["y"], np.maximum(x * 2.0, 0))
    assert graphc.compile(g, target="reference",
                          cache_dir=tmp_path).info["pipeline_cache_hit"] is True


def test_switched_off_by_option_environment_or_verification(tmp_path, monkeypatch):
    g = _affine(2.0)
    assert "pipeline_cache_hit" not in graphc.compile(g, target="reference", cache=False,
                                                      cache_dir=tmp_path).info
    assert "pipeline_cache_hit" not in graphc.compile(g, target="reference", verify=True,
                                                      cache_dir=tmp_path).info
    monkeypatch.setenv(pc.SWITCH_ENV, "0")
    assert "pipeline_cache_hit" not in graphc.compile(g, target="reference",
                                                      cache_dir=tmp_path).info
    assert _entries(tmp_path) == []


def test_llvm_hit_runs_the_cached_code(tmp_path):
    g = load_graph(CNN)
    inputs = load_example_inputs(CNN)
    graphc.compile(g, target="llvm", cache_dir=tmp_path)
    exe = graphc.compile(g, target="llvm", cache_dir=tmp_path)
    assert exe.info["pipeline_cache_hit"] is True and exe.info["cache_hit"] is True
    want = run_graph(g, inputs)
    for name, got in exe(inputs).items():
        np.testing.assert_allclose(got, want[name], rtol=1e-4, atol=1e-5)


_RACE = textwrap.dedent("""
    import sys, numpy as np, graphc
    b = graphc.Builder("race")
    x = b.input("x", (16, 16))
    b.output("y", (x @ x).tanh().sum((0,)))
    exe = graphc.compile(b.build(), target="reference", cache_dir=sys.argv[1])
    xs = np.eye(16, dtype=np.float32)
    assert np.allclose(exe(x=xs)["y"], np.tanh(np.eye(16)).sum(0), atol=1e-6)
    print(exe.info["pipeline_cache_hit"])
""")


def test_two_processes_filling_the_same_entry_at_once(tmp_path):
    env = {**os.environ, pc.SWITCH_ENV: "1"}
    run = [sys.executable, "-c", _RACE, str(tmp_path)]
    procs = [subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(_entries(tmp_path)) == 1 and not list(tmp_path.rglob(".*"))  # no temp files
    again = subprocess.run(run, capture_output=True, text=True, timeout=120, env=env)
    assert again.stdout.strip() == "True", again.stderr
