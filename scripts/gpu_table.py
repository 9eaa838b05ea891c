#!/usr/bin/env python3
"""Turn a GPU timing run (`benchmarks/triton_timing.py --out run.json`, which
`benchmarks/gpu_check.sh` writes) into the README's Triton performance tables (markdown).

    python scripts/gpu_table.py run.json                     # print the section
    python scripts/gpu_table.py run.json --readme README.md  # replace it in the README

In the README the section lives between `<!-- gpu:begin -->` and `<!-- gpu:end -->`. Every
ratio is computed here from the run's medians: "graphc" is the better of launch-by-launch and
one CUDA graph; effective bandwidth counts each input read and each output written once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_table import publish  # noqa: E402

BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"
TIMED = ("graphc", "graphc+cudagraph", "graphc unfused", "torch eager", "torch.compile")


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms * 1e3:.1f} µs" if ms < 1 else f"{ms:.2f} ms"


def best(row: dict) -> float:
    return min(row["ms"]["graphc"], row["ms"]["graphc+cudagraph"])


def ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{a / b:.2f}x"


def targets(doc: dict) -> list[tuple[str, str, str, bool]]:
    """(target, goal, measured, met) from the workloads' medians."""
    rows = {r["name"]: r for r in doc["workloads"] if "ms" in r}
    out = []
    for name, r in rows.items():
        if name.startswith("elementwise") and "GB/s" in r:
            bw = max(r["GB/s"]["graphc"], r["GB/s"]["graphc+cudagraph"])
            share = bw / doc["copy GB/s"]
            out.append((name, "≥ 80 % of copy bandwidth",
                        f"{bw:.0f} GB/s = {share:.0%} of {doc['copy GB/s']:.0f}", share >= 0.8))
        elif name.startswith(("softmax", "batch_norm", "MLP")) and "torch eager" in r["ms"]:
            s = r["ms"]["torch eager"] / best(r)
            out.append((name, "≥ torch eager", f"{s:.2f}x", s >= 1.0))
            if name.startswith("MLP") and "torch.compile" in r["ms"]:
                c = r["ms"]["torch.compile"] / best(r)
                out.append((name, "within 1.2x of torch.compile", f"{c:.2f}x", c >= 1 / 1.2))
    return out


def markdown(doc: dict, source: str) -> str:
    lines = [f"Measured {doc.get('date', '(date not recorded)')} on one **{doc['device']}** "
             f"(torch {doc['torch']}, CUDA {doc.get('cuda', '?')}, triton {doc['triton']}) by "
             f"`benchmarks/gpu_check.sh`; `{source}`, rendered by `scripts/gpu_table.py`. "
             f"Medians of CUDA-event timed calls, inputs resident on the device. Anchor: "
             f"device-to-device copy {doc['copy GB/s']:.0f} GB/s (bytes read + written).", "",
             "| workload | kernels fused / unfused | graphc launches | graphc CUDA graph | "
             "graphc unfused | torch eager | torch.compile | fused / unfused | vs eager | "
             "vs torch.compile |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["workloads"]:
        if "ms" not in r or "graphc+cudagraph" not in r["ms"]:
            continue
        ms = r["ms"]
        b = best(r)
        lines.append(
            f"| {r['name']} | {r.get('kernels fused', '?')} / {r.get('kernels unfused', '?')} | "
            + " | ".join(fmt_ms(ms.get(k)) for k in TIMED)
            + f" | {ratio(ms.get('graphc unfused'), b)} | {ratio(ms.get('torch eager'), b)} | "
            f"{ratio(ms.get('torch.compile'), b)} |")
    lines += ["", "| target | goal | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {t} | {g} | {m} | {'met' if ok else 'SHORT'} |" for t, g, m, ok in targets(doc)]
    mm = [r for r in doc["workloads"] if "TFLOP/s" in r]
    if mm:
        lines += ["", "| matmul | graphc | torch (cuBLAS) | graphc / torch |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['TFLOP/s']['graphc']:.0f} TFLOP/s | "
                  f"{r['TFLOP/s']['torch']:.0f} TFLOP/s | "
                  f"{r['TFLOP/s']['graphc'] / r['TFLOP/s']['torch']:.2f} |" for r in mm]
    cases = [c for c in doc.get("op matrix (graphc only: launches vs CUDA graph)", [])
             if "ms" in c]
    if cases:
        gain = statistics.median(c["ms"] / c["ms cudagraph"] for c in cases)
        lines += ["", f"Op matrix ({len(cases)} cases, small shapes, launch-bound): one CUDA "
                      f"graph is {gain:.1f}x faster than launch by launch (median over cases)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="JSON written by benchmarks/triton_timing.py --out")
    p.add_argument("--readme", help="update this file's GPU section in place")
    args = p.parse_args(argv)
    doc = json.loads(Path(args.run).read_text())
    publish(markdown(doc, source=Path(args.run).name), args.readme, "GPU", BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
