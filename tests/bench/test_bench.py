"""`graphc bench`: an end-to-end --quick run through the CLI entry point with --json (schema,
every contender's correctness check ran, no timing assertions), the README section script, and
the rules that a wrong result is reported and never timed and that missing peers are skipped.

The quick run uses `--target auto`: the LLVM backend when it compiles and runs a probe graph,
else the reference backend. It passes `--keep-openblas-env`, so OpenBLAS settings of the test
process are never touched.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from graphc.backends.reference import run_graph
from graphc.bench import runner
from graphc.bench.contenders import Contender, check_outputs, onnx_contenders
from graphc.bench.report import markdown_report, terminal_report, validate_document
from graphc.bench.runner import BenchConfig, bench_workload
from graphc.bench.workloads import all_workloads, get_workload
from graphc.cli import main

ROOT = Path(__file__).resolve().parents[2]
INDEPENDENT = ("numpy", "torch", "onnxruntime")   # peers that do not depend on graphc's backends


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    path = tmp_path_factory.mktemp("bench") / "run.json"
    code = main(["bench", "--quick", "--json", str(path), "--no-progress",
                 "--keep-openblas-env"])
    assert code == 0
    return json.loads(path.read_text()), str(path)


def test_quick_run_follows_the_schema(quick_run):
    doc, _ = quick_run
    assert validate_document(doc) == []
    assert doc["config"]["quick"] is True and doc["config"]["compile_peers"] is False
    assert {r["workload"] for r in doc["results"]} == {w.name for w in all_workloads()}
    for a in doc["anchors"]:
        assert a["copy"]["gbps_median"] > 0 and a["sgemm"]["gflops_median"] > 0
        assert a["isolation"] == {"mode": "in-process"}          # one thread: in-process
        if doc["config"]["target"] == "llvm":
            assert a["peak"]["gflops_best"] > 0 and a["peak"]["finite"]
    for r in doc["results"]:
        assert r["isolation"] == "in-process"
        assert all(c["isolation"] == {"mode": "in-process"} for c in r["contenders"])
        if r["kind"] == "compute" and "peak" in doc["anchors"][0]:
            fused = next(c for c in r["contenders"] if c["name"] == "graphc fused")
            assert fused["status"] != "ok" or fused["rate"]["pct_peak"] > 0
    assert doc["machine"]["openblas_env"]["action"] != "removed"
    assert doc["machine"]["numpy_blas"] is None or "architecture" in doc["machine"]["numpy_blas"]
    ids = {t["id"] for t in doc["targets"]}
    assert {"elementwise-numpy", "dispatch", "mlp-compile-cached", "sgemm-2t"} <= ids


def test_quick_run_checked_every_contender(quick_run):
    doc, _ = quick_run
    reference_target = doc["config"]["target"] == "reference"
    for r in doc["results"]:
        names = [c["name"] for c in r["contenders"]]
        assert {"graphc fused", "graphc unfused", "numpy"} <= set(names), r["workload"]
        for c in r["contenders"]:
            where = f"{r['workload']} / {c['name']}"
            if c["status"] in ("ok", "wrong"):
                assert c["check"]["ran"] and c["check"]["compared"], where
            else:   # set-up failures and missing peers say why
                assert c["status"] in ("error", "skipped") and c["reason"], where
            if c["status"] == "ok":
                assert c["samples_s"] and c["median_s"] > 0, where
            else:
                assert not c["samples_s"], where   # never timed
            if c["family"] in INDEPENDENT and c["status"] != "skipped":
                assert c["status"] == "ok", f"{where}: {c['reason']}"
            if reference_target and c["family"] == "graphc":
                assert c["status"] == "ok", f"{where}: {c['reason']}"
        fused = next(c for c in r["contenders"] if c["name"] == "graphc fused")
        if fused["status"] == "ok":
            assert {"cold_s", "cached_s"} <= set(fused["compile"])
            assert fused["stats"]["kernels"] >= 1


def test_torch_and_onnx_contenders_ran_when_installed(quick_run):
    doc, _ = quick_run
    families = {c["family"]: c["status"] for r in doc["results"] for c in r["contenders"]}
    for module, family in (("torch", "torch"), ("onnxruntime", "onnxruntime")):
        installed = importlib.util.find_spec(module) is not None
        if family in families:
            assert (families[family] != "skipped") == installed, family


def test_perf_table_script_renders_the_run(quick_run, tmp_path):
    doc, path = quick_run
    readme = tmp_path / "README.md"
    readme.write_text("# graphc\n\n<!-- perf:begin -->\nstale table\n<!-- perf:end -->\n\nafter\n")
    spec = importlib.util.spec_from_file_location("perf_table", ROOT / "scripts/perf_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([path, "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "stale table" not in text and text.endswith("after\n")
    for heading in ("## Performance", "### Speedups", "### Targets", "### Kernels and memory "
                    "plan", "### Compile times"):
        assert heading in text
    assert doc["machine"]["cpu"] in text and "quick" in text.lower()
    assert "graphc bench" in terminal_report(doc)
    assert markdown_report(doc, source="run.json") in text


def test_terminal_report_lists_only_the_targets_it_measured(quick_run):
    """A run of some workloads (or of the user's own model) does not print every other target
    as "not in this run"; the markdown report (the README's table) still lists them all."""
    from graphc.bench.targets import evaluate_targets

    doc, _ = quick_run
    part = {**doc, "results": [r for r in doc["results"] if r["workload"] == "softmax"]}
    part["targets"] = evaluate_targets(part)
    text = terminal_report(part)
    assert "row softmax 4096^2 vs torch eager" in text and "sgemm 512/1024" not in text
    assert f"({len(part['targets']) - 1} target rows left out" in text
    assert "sgemm 512/1024" in markdown_report(part, source="run.json")
    none = {**doc, "results": []}
    none["targets"] = evaluate_targets(none)
    assert "Targets: none measured" in terminal_report(none)


def test_wrong_result_is_reported_and_not_timed(monkeypatch):
    real = runner.build_contenders

    def with_a_wrong_one(inst, target, threads, compile_peers, cache_dir, quick=False):
        def wrong():
            return {"y": np.zeros_like(inst.inputs["x"])}
        return [*real(inst, target, threads, compile_peers, cache_dir, quick=quick),
                Contender("broken", "numpy", 1, "returns zeros", run=wrong)]

    monkeypatch.setattr(runner, "build_contenders", with_a_wrong_one)
    cfg = BenchConfig(target="reference", quick=True, compile_peers=False).resolved()
    anchors = {"copy": {"gbps_best": 10.0}, "sgemm": {"gflops_best": 10.0}}
    result = bench_workload(get_workload("softmax"), 1, cfg, anchors, lambda stage: None)
    broken = next(c for c in result["contenders"] if c["name"] == "broken")
    assert broken["status"] == "wrong" and broken["check"]["ran"]
    assert not broken["check"]["passed"] and not broken["samples_s"]
    assert "relative error" in broken["reason"]
    assert result["speedups"]["unfused"] is not None


def test_check_compares_parameter_updates_not_parameters():
    inst = get_workload("mlp_train").make(True)
    ref = run_graph(inst.graph, inst.inputs)
    ok = check_outputs(inst, ref, ref)
    assert ok["passed"] and "new.l1.w" in ok["compared"]
    # halve the gradient step of one weight: tiny next to the weight, plain in the update
    old = inst.params["l2.w"]
    bad = dict(ref, **{"new.l2.w": old + 0.5 * (ref["new.l2.w"] - old)})
    report = check_outputs(inst, bad, ref)
    assert not report["passed"] and any("new.l2.w" in p for p in report["problems"])


def test_onnx_contenders_skipped_without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import now raises ImportError
    inst = get_workload("dispatch").make(True)
    (c,) = onnx_contenders(inst, 1)
    assert c.status == "skipped" and "not installed" in c.reason
