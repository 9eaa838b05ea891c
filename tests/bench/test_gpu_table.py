"""The GPU section of the README: rendered from the committed GPU run by scripts/gpu_table.py,
with verdicts computed from the run's medians (checked here on a made-up run)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks/gpu-h200/triton-timing.json"


def gpu_table():
    spec = importlib.util.spec_from_file_location("gpu_table", ROOT / "scripts/gpu_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(name: str, graphc: float, graph: float, eager: float, compiled: float | None = None,
        **extra) -> dict:
    ms = {"graphc": graphc, "graphc+cudagraph": graph, "graphc unfused": 4 * graphc,
          "torch eager": eager}
    if compiled is not None:
        ms["torch.compile"] = compiled
    return {"name": name, "ms": ms, **extra}


def test_verdicts_follow_the_medians() -> None:
    doc = {"device": "card", "torch": "t", "triton": "x", "copy GB/s": 1000.0, "workloads": [
        row("elementwise chain", 1.0, 1.0, 2.0,
            **{"GB/s": {"graphc": 700.0, "graphc+cudagraph": 790.0}}),
        row("softmax [8, 8]", 1.0, 0.9, 1.0),           # the better of the two graphc runs
        row("batch_norm train forward", 2.0, 2.5, 1.9),
        row("MLP step", 1.0, 1.2, 1.1, compiled=0.8)]}  # 1.2x of 0.8 is 0.96 < 1.0
    verdicts = {(t, g): (m, ok) for t, g, m, ok in gpu_table().targets(doc)}
    assert verdicts[("elementwise chain", "≥ 80 % of copy bandwidth")][1] is False
    assert verdicts[("softmax [8, 8]", "≥ torch eager")] == ("1.11x", True)
    assert verdicts[("batch_norm train forward", "≥ torch eager")] == ("0.95x", False)
    assert verdicts[("MLP step", "≥ torch eager")] == ("1.10x", True)
    assert verdicts[("MLP step", "within 1.2x of torch.compile")] == ("0.80x", False)
    text = gpu_table().markdown(doc, "run.json")
    assert text.count("SHORT") == 3 and "| softmax [8, 8] | ? / ? | 1.00 ms | 900.0 µs |" in text


def test_readme_section_is_the_committed_run(tmp_path) -> None:
    module = gpu_table()
    doc = json.loads(RUN.read_text())
    section = module.markdown(doc, RUN.name)
    readme = (ROOT / "README.md").read_text()
    assert f"{module.BEGIN}\n{section.rstrip()}\n{module.END}" in readme
    for r in doc["workloads"]:
        assert r["name"] in section
    copy = tmp_path / "README.md"
    copy.write_text(f"intro\n{module.BEGIN}\nold\n{module.END}\ntail\n")
    assert module.main([str(RUN), "--readme", str(copy)]) == 0
    assert copy.read_text() == f"intro\n{module.BEGIN}\n{section.rstrip()}\n{module.END}\ntail\n"
