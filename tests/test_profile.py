"""Per-kernel profiles (`compile(..., profile=True)`, `Executable.profile()`, `graphc profile`):
counters that add up, the same results as unprofiled code, reset, packages and the cache, and
clear errors where there is nothing to profile."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import graphc
from graphc.cli import main
from graphc.ir.builder import Builder


def _graph():
    b = Builder("prof", seed=0)
    x = b.input("x", (64, 96))
    w = b.param("w", (96, 80))
    h = b.softmax((x @ w).tanh(), axis=-1)
    b.output("y", h * 2.0)
    b.output("s", (x * x).sum(axes=(1,)))
    return b.build()


@pytest.mark.parametrize("target", ["llvm", "reference"])
def test_kernel_times_add_up_and_results_are_unchanged(rng, target):
    graph = _graph()
    x = rng.standard_normal((64, 96)).astype(np.float32)
    plain = graphc.compile(graph, target=target)(x=x)
    exe = graphc.compile(graph, target=target, profile=True)
    exe(x=x)
    exe.profile(reset=True)
    runs = 5
    t0 = time.perf_counter()
    for _ in range(runs):
        got = exe(x=x)
    wall = time.perf_counter() - t0
    for k in plain:
        np.testing.assert_array_equal(got[k], plain[k])
    prof = exe.profile()
    assert prof.runs == runs and prof.target == target
    assert [k.name for k in prof.kernels] == [k.name for k in exe.schedule.kernels]
    assert all(k.seconds > 0 for k in prof.kernels)
    # the kernels run inside the calls, the calls inside the wall time measured around them
    assert prof.kernel_seconds <= prof.total_seconds <= wall
    assert {k.kind for k in prof.kernels} == {k.kind for k in exe.schedule.kernels}
    assert any("tanh" in " ".join(k.origin) or k.kind == "matmul" for k in prof.kernels)
    table = prof.table()
    assert all(k.name in table for k in prof.kernels) and "by kind" in table
    assert prof.table(top=1).count("\n") < table.count("\n")
    # reset: the counters start over
    exe.profile(reset=True)
    assert exe.profile().runs == 0 and exe.profile().total_seconds == 0.0


def test_profiling_must_be_asked_for(rng):
    exe = graphc.compile(_graph(), target="llvm")
    with pytest.raises(graphc.GraphError, match="profile=True"):
        exe.profile()


def test_profiled_code_is_cached_apart_and_survives_a_package(rng, tmp_path):
    graph = _graph()
    x = rng.standard_normal((64, 96)).astype(np.float32)
    plain = graphc.compile(graph, target="llvm", cache_dir=str(tmp_path / "c"))
    first = graphc.compile(graph, target="llvm", profile=True, cache_dir=str(tmp_path / "c"))
    again = graphc.compile(graph, target="llvm", profile=True, cache_dir=str(tmp_path / "c"))
    assert plain.info["cache_key"] != first.info["cache_key"]
    assert again.info["cache_hit"] and again.info["cache_key"] == first.info["cache_key"]
    again(x=x)
    assert again.profile().runs == 1 and again.profile().total_seconds > 0
    again.save(tmp_path / "prof.gcpkg")
    loaded = graphc.load(tmp_path / "prof.gcpkg")
    loaded(x=x)
    loaded(x=x)
    prof = loaded.profile()
    assert prof.runs == 2 and all(k.seconds > 0 for k in prof.kernels)


def test_profile_command(tmp_path, capsys):
    from graphc.io import save_graph

    path = tmp_path / "m.gir"
    save_graph(_graph(), path)
    out = tmp_path / "p.json"
    assert main(["profile", str(path), "--runs", "3", "--top", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "llvm: 3 run(s)" in text and "more)" in text
    data = json.loads(out.read_text())
    assert data["runs"] == 3 and len(data["kernels"]) >= 3
    assert main(["profile", str(tmp_path / "missing.gir")]) == 2
