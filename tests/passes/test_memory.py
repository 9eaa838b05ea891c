"""plan_memory, check_memory_plan and rematerialize: closed-form arenas of small schedules, the
checker against planted faults, in-place legality, the interpreter running in the planned arena,
and the targets on the MLP, CNN and LSTM training steps (arena at most 1.10 x the lower bound,
at least 2 x below naive)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from graphc.backends.reference import run_graph
from graphc.backends.reference.kernel_interp import run_schedule
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError
from graphc.ir.kernel import kernel_writes
from graphc.ir.text import parse_graph
from graphc.optim import SGD, Adam
from graphc.passes.fuse import fuse
from graphc.passes.memory import (
    check_memory_plan,
    memory_report,
    plan_memory,
    temp_lifetimes,
)
from graphc.passes.remat import rematerialize, rematerialize_with_report
from graphc.train import train_step

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def chain(n: int, shape=(16, 16)):
    """x -> n unary ops -> y; unfused every intermediate is a temp of 1024 bytes."""
    b = Builder("chain")
    h = b.input("x", shape)
    for i in range(n):
        h = (b.tanh if i % 2 else b.sigmoid)(h)
    return b.build(outputs={"y": h})


def test_chain_arena_closed_form():
    s = fuse(chain(6), fuse=False)  # 6 kernels, temps t0..t4 live [i, i + 1]
    planned = plan_memory(s)
    plan = planned.memory
    assert plan.naive_bytes == 5 * 1024
    assert plan.arena_bytes == plan.lower_bound == 1024  # each kernel overwrites its input
    assert len(plan.aliases) == 4
    check_memory_plan(planned)
    no_alias = plan_memory(s, inplace=False).memory
    assert no_alias.arena_bytes == no_alias.lower_bound == 2048 and not no_alias.aliases
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_schedule(planned, {"x": x})["y"],
                               run_graph(chain(6), {"x": x})["y"], rtol=1e-6)


def _weight_picking_graph():
    """y = relu(x @ take(w, idx)): the picked weight depends on the parameter alone."""
    b = Builder("picked", seed=0)
    x = b.input("x", (8, 6))
    w = b.param("w", (9, 5), init="normal")
    picked = b.take(w * 2.0, b.const(np.asarray([8, 0, 3, 3, 1, 7], np.int64), dtype="i64"),
                    axis=0)
    return b.build(outputs={"y": (x @ picked).relu()})


def test_parameter_derived_results_live_over_the_whole_schedule():
    """Kernels that read only parameters (and what such kernels wrote) are parameter-derived;
    the temps they write live from the first kernel to the last, so a backend can keep them
    across calls, and nothing is placed over them or written in place of them."""
    s = fuse(_weight_picking_graph(), fuse=False)
    derived = s.param_derived()
    assert len(derived) == 2 and len(s.kernels) == 4, [k.name for k in s.kernels]
    planned = plan_memory(s)
    check_memory_plan(planned)
    last = len(s.kernels) - 1
    kept = [b for k in s.kernels if k.name in derived for b in kernel_writes(k)]
    assert kept and all(planned.memory.lifetimes[b] == (0, last) for b in kept)
    assert not set(planned.memory.aliases) & set(kept)
    assert not set(planned.memory.aliases.values()) & set(kept)


def test_in_place_only_where_the_kernel_reads_its_input_at_the_written_index():
    def graph(middle: str):
        return parse_graph(f"""graph t(%x: f32[8, 8]) {{
  %e = exp(%x) : f32[8, 8]
  %t = {middle} : f32[8, 8]
  %z = neg(%t) : f32[8, 8]
  return z=%z
}}""")

    same = plan_memory(fuse(graph("tanh(%e)"), fuse=False))
    assert same.memory.aliases == {"t": "e"}  # %t[i0, i1] = tanh(%e[i0, i1]) overwrites %e
    moved = plan_memory(fuse(graph("transpose(%e) {perm=(1, 0)}"), fuse=False))
    assert moved.memory.aliases == {}  # %t[i0, i1] = %e[i1, i0]: another program's element
    assert moved.memory.arena_bytes == 2 * 256


def _bad(s, **changes):
    return s.with_memory(dataclasses.replace(s.memory, **changes))


def test_checker_catches_planted_faults(schedules_checked):
    s = plan_memory(fuse(chain(4), fuse=False))
    check_memory_plan(s)
    life = temp_lifetimes(s)
    a, b = sorted(life, key=lambda n: life[n])[:2]  # a lives [0, 1], b [1, 2]: both live at k1
    bad = {
        "overlap": _bad(s, offsets={**s.memory.offsets, a: 0, b: 512}, aliases={},
                        arena_bytes=4096),
        "unaligned": _bad(s, offsets={**s.memory.offsets, a: 8}),
        "overflow": _bad(s, arena_bytes=512),
        "missing": _bad(s, offsets={k: v for k, v in s.memory.offsets.items() if k != b}),
        "alias": _bad(s, offsets={**s.memory.offsets, a: 0, b: 0}, aliases={a: b}),
    }
    messages = {
        "overlap": f"overlap at kernel k1: %{a} \\[0, 1024\\) and %{b} \\[512, 1536\\)",
        "unaligned": f"%{a} at offset 8 is not 64-byte aligned",
        "overflow": "overflows the arena of 512 bytes",
        "missing": f"no offset for temp %{b}",
        "alias": f"in-place alias %{a} over %{b} is not legal",
    }
    for name, sched in bad.items():
        with pytest.raises(GraphError, match=messages[name]):
            check_memory_plan(sched)
        schedules_checked.remove(sched)


def test_an_overlap_the_checker_rejects_corrupts_results(schedules_checked):
    """%t written over %e while %e is still to be read: the interpreter runs in the planned
    arena, so the numbers come out wrong, and the checker names the clash."""
    g = parse_graph("""graph t(%x: f32[8, 8]) {
  %e = exp(%x) : f32[8, 8]
  %t = tanh(%e) : f32[8, 8]
  %y = add(%t, %e) : f32[8, 8]
  %z = neg(%y) : f32[8, 8]
  return z=%z
}""")
    s = plan_memory(fuse(g, fuse=False))
    bad = _bad(s, offsets={"e": 0, "t": 0, "y": 256}, aliases={}, arena_bytes=512)
    schedules_checked.remove(bad)
    with pytest.raises(GraphError, match="overlap at kernel k1: %e \\[0, 256\\) and %t"):
        check_memory_plan(bad)
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    want = run_graph(g, {"x": x})["z"]
    np.testing.assert_allclose(run_schedule(s, {"x": x})["z"], want, rtol=1e-6)
    assert not np.allclose(run_schedule(bad, {"x": x})["z"], want, rtol=1e-3)


def test_report_names_the_three_numbers():
    s = plan_memory(fuse(chain(6), fuse=False))
    text = memory_report(s)
    assert "naive (every temp its own block):        5,120 bytes" in text
    assert "planned arena:                           1,024 bytes" in text
    assert "lower bound (max live bytes):            1,024 bytes" in text
    assert "(in place of %" in text


# -- training steps --------------------------------------------------------------------------------


def mlp_step():
    b = Builder("mlp", seed=0)
    x = b.input("x", (32, 64))
    labels = b.input("labels", (32,), "i64")
    h = b.dense(x, b.param("w0", (64, 128)), b.param("b0", (128,), init="zeros"),
                activation="relu")
    h = b.dense(h, b.param("w1", (128, 128)), b.param("b1", (128,), init="zeros"),
                activation="relu")
    logits = b.dense(h, b.param("w2", (128, 10)), b.param("b2", (10,), init="zeros"))
    g = b.build(outputs={"loss": b.cross_entropy(logits, labels)})
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((32, 64)).astype(np.float32),
              "labels": rng.integers(0, 10, 32), "step": np.array(1)}
    return train_step(g, "loss", SGD(0.1)), inputs


def example_step(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        mod = __import__(name)
    finally:
        sys.path.pop(0)
    opt = Adam(0.01) if name == "lstm" else SGD(0.1)
    graph = mod.build(batch=8) if name == "cnn" else mod.build()
    inputs = mod.example_inputs(batch=8) if name == "cnn" else mod.example_inputs()
    return train_step(graph, "loss", opt), {**inputs, "step": np.array(1)}


STEPS = {"mlp": mlp_step, "cnn": lambda: example_step("cnn"),
         "lstm": lambda: example_step("lstm")}


@pytest.mark.parametrize("model", sorted(STEPS))
def test_training_step_memory_targets(model):
    graph, inputs = STEPS[model]()
    want = run_graph(graph, inputs)
    unfused = plan_memory(fuse(graph, fuse=False))
    remat, report = rematerialize_with_report(graph) if model != "lstm" else (graph, None)
    fused = plan_memory(fuse(remat))
    for s in (unfused, fused):
        check_memory_plan(s)
        p = s.memory
        assert p.arena_bytes <= 1.10 * p.lower_bound
        assert s.options["every_value_bytes"] >= 2 * p.arena_bytes  # vs every value its own
    assert unfused.memory.naive_bytes >= 2 * unfused.memory.arena_bytes
    assert len(fused.kernels) < len(unfused.kernels) / 3
    got = run_schedule(fused, inputs)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=2e-4, atol=1e-5, err_msg=k)
    if report is not None:
        assert report.peak_after <= report.peak_before


def test_remat_recomputes_batch_norm_output_and_lowers_the_cnn_peak():
    graph, inputs = example_step("cnn")
    new, report = rematerialize_with_report(graph)
    assert report.peak_after < 0.85 * report.peak_before
    assert report.recomputed and "rematerialization: peak" in str(report)
    assert any(n.name and n.name.startswith("remat.") for n in new.nodes)
    before = plan_memory(fuse(graph)).memory
    after = plan_memory(fuse(new)).memory
    assert after.lower_bound == report.peak_after < before.lower_bound == report.peak_before
    want = run_graph(graph, inputs)
    got = run_schedule(plan_memory(fuse(new)), inputs)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=2e-4, atol=1e-5, err_msg=k)


def test_remat_on_a_hand_written_forward_backward_graph():
    """s1 = sigmoid(x) and s2 = tanh(x) feed the loss, then a memory-hungry middle phase runs,
    then a hand-written backward reads s1 and s2 again. x is an input (outside the arena), so
    recomputing s1 and s2 late keeps them out of the middle phase: the peak halves (unfused:
    every value is a buffer)."""
    b = Builder("fb")
    x, w = b.input("x", (64, 64)), b.input("w", (64, 64))
    s1, s2 = b.sigmoid(x), b.tanh(x)
    loss = (s1 * s2).sum()
    u = b.exp(w)
    v = b.sigmoid(u * 0.5)
    q = v * u + b.tanh(v)
    g = b.build(outputs={"loss": loss, "g": (q * s1 * s2).sum(1)})
    new, report = rematerialize_with_report(g, fuse_options={"fuse": False})
    assert len(rematerialize(g, fuse_options={"fuse": False}).nodes) == len(new.nodes)
    assert (report.peak_before, report.peak_after) == (4 * 16384, 2 * 16384)
    assert len(report.recomputed) == 2
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((64, 64)).astype(np.float32),
              "w": rng.standard_normal((64, 64)).astype(np.float32) * 0.3}
    want = run_graph(g, inputs)
    got = run_schedule(plan_memory(fuse(new, fuse=False)), inputs)
    for k, val in want.items():
        np.testing.assert_allclose(got[k], val, rtol=1e-5, atol=1e-5, err_msg=k)


def test_cli_show_memory(tmp_path, capsys):
    from graphc.cli import main
    from graphc.ir.text import print_graph

    path = tmp_path / "chain.gir"
    path.write_text(print_graph(chain(6)))
    assert main(["show", str(path), "--memory", "--no-fuse"]) == 0
    out = capsys.readouterr().out
    assert "planned arena:                           1,024 bytes" in out
    assert "every graph value its own block:" in out


def _place_by_scan(order, best_fit: bool) -> list[int]:
    """The placement rule written as the plain scan it is: each block in turn goes to the
    smallest (best fit) or lowest (first fit) gap between the placed blocks it overlaps."""
    placed, out = [], []
    for blk in order:
        busy = sorted((p for p in placed if p[0] <= blk.last and blk.first <= p[1]),
                      key=lambda p: p[2])
        best, best_gap, end = -1, None, 0
        for _first, _last, off, size in busy:
            gap = off - end
            if gap >= blk.size and (best_gap is None or gap < best_gap):
                best, best_gap = end, gap
                if not best_fit:
                    break
            end = max(end, off + size)
        off = best if best >= 0 else end
        placed.append((blk.first, blk.last, off, blk.size))
        out.append(off)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_placement_matches_the_scan(seed):
    from graphc.passes.memory import _Block, _Lifetimes, _place

    rng = np.random.default_rng(seed)
    blocks = []
    for i in range(300):
        first = int(rng.integers(0, 200))
        blocks.append(_Block([f"b{i}"], 64 * int(rng.integers(1, 40)), first,
                             first + int(rng.integers(0, 60))))
    life = _Lifetimes(blocks)
    for best_fit in (True, False):
        order = [blocks[i] for i in rng.permutation(len(blocks))]
        top = _place(order, life, best_fit)
        assert [b.offset for b in order] == _place_by_scan(order, best_fit)
        assert top == max(b.offset + b.size for b in order)


def test_refinement_stops_an_order_that_stalls_at_the_same_arena(monkeypatch):
    """Without in-place reuse, the benchmarks' LSTM training step with its weight gradients
    accumulated step by step misses the lower bound by 2-3 %: the full refinement (every order
    to its round limit) and the one that gives up on a stalled order find arenas within 1 % of
    each other (0.45 % apart here), the latter in far fewer placements."""
    import importlib

    from graphc.bench.workloads_models import make_lstm_train
    from graphc.passes import memory
    from graphc.pipeline import run_pipeline

    autodiff = importlib.import_module("graphc.passes.autodiff")
    monkeypatch.setattr(autodiff, "join_matmul_products", lambda b, parts, label: parts)

    s = run_pipeline(make_lstm_train(False).graph).schedule
    life = temp_lifetimes(s)
    blocks = memory._blocks(s, life, {}, 64)
    lower = max(sum(b.size for b in blocks if b.first <= t <= b.last)
                for t in range(len(s.kernels)))
    calls = []
    real = memory._place
    monkeypatch.setattr(memory, "_place", lambda *a: calls.append(1) or real(*a))
    full, _ = memory._search(blocks, lower, 24, patience=24)
    n_full = len(calls)
    calls.clear()
    stopped, _ = memory._search(blocks, lower, 24)
    assert full > lower  # the bound is not met, so both searches run their course
    assert full <= stopped <= 1.01 * full and len(calls) < n_full / 2
