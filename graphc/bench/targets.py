"""The performance targets of the LLVM backend, and how a run measures up to them.

Each target names the workload(s) it applies to, the thread count, and what is compared:
a speedup of graphc fused over a peer (peer median / graphc median >= bound), a share of the
measured copy bandwidth, a compile time, or the time of one call of a tiny graph. The share of
copy bandwidth is graphc's median rate over the median rate of the copy anchor sampled among
the workload's contenders (`copy (anchor)`), a side-by-side ratio like the speedups; runs
without that row fall back to the best of the anchor samples taken before and after the
workloads, minutes away, on a machine whose bandwidth drifts by tens of percent. A target whose
workload, thread count or peer is missing from a run is listed as not measured; in a --quick run
every target is listed but marked as measured at smoke-test sizes, which say nothing about it.

Every speedup and bandwidth value comes with a 90 % bootstrap interval (`interval`): the
samples of graphc and of the peer are resampled with replacement and the statistic recomputed
from the medians, 2000 times. Where the interval contains the bound, the verdict (taken at the
medians) is within this run's noise, and the row's note says so: a second run may well flip it.

A speedup target may declare the FLOPs its workload needs (`flops`, a function of the result's
sizes). With the run's peak-FLOP anchor at the target's thread count, the fastest graphc could
possibly be is flops / peak, so the largest attainable speedup is peer_time / (flops / peak).
Where that is below the bound, the target is unattainable even at peak, and its row says so
with the numbers: the GFLOP/s the bound would need against the measured peak. Where graphc or
the peer itself ran faster than flops / peak, the peak anchor was measured low (foreign load
on a shared machine) and no verdict is given.

A speedup target may also name a memory floor (`floor`): a workload of the same run that moves
the same bytes with (almost) no arithmetic, such as the elementwise chain's affine twin, which
reads the same three arrays and writes one. No implementation of the target's workload can run
faster than the fastest contender of its floor at the same thread count, so peer_time / that
time is the largest attainable speedup even if the arithmetic were free. Where it is below the
bound, the row says so with both times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .contenders import COPY_ANCHOR

INTERVAL_LEVEL = 0.9
BOOTSTRAP_DRAWS = 2000


@dataclass(frozen=True)
class Target:
    id: str
    text: str
    workloads: tuple[str, ...]
    metric: str            # speedup | bandwidth_pct | compile_cold_s | compile_cached_s | call_s
    bound: float
    peer: str | None = None
    threads: int = 1
    flops: Callable[[dict[str, Any]], float] | None = None   # of the workload, from its sizes
    floor: str | None = None   # a workload moving the same bytes without the arithmetic

    @property
    def at_least(self) -> bool:
        return self.metric in ("speedup", "bandwidth_pct")

    def bound_text(self) -> str:
        if self.metric == "speedup":
            return f">= {self.bound:g}x {self.peer}"
        if self.metric == "bandwidth_pct":
            return f">= {self.bound:g}% of copy bandwidth"
        if self.metric == "call_s":
            return f"< {self.bound * 1e6:g} us"
        return f"< {self.bound * 1e3:g} ms" if self.bound < 1 else f"< {self.bound:g} s"


def gemm_flops(sizes: dict[str, Any]) -> float:
    """2mnk: the multiply-adds of an m x k by k x n product (an epilogue's few adds aside)."""
    return 2.0 * sizes["m"] * sizes["n"] * sizes["k"]


GEMM = ("sgemm_512", "sgemm_1024")
EPILOGUE = ("sgemm_bias_relu_512", "sgemm_bias_relu_1024", "sgemm_bias_relu_2048")

TARGETS: tuple[Target, ...] = (
    Target("elementwise-numpy", "fused elementwise chain vs numpy op by op (preallocated)",
           ("elementwise",), "speedup", 6.0, "numpy", floor="elementwise_affine"),
    Target("elementwise-compile", "fused elementwise chain vs torch.compile",
           ("elementwise",), "speedup", 2.0, "torch.compile"),
    Target("elementwise-bandwidth", "memory-bound chain relu(x*w + b), share of copy bandwidth",
           ("elementwise_affine",), "bandwidth_pct", 80.0),
    Target("softmax-torch", "row softmax 4096^2 vs torch eager", ("softmax",), "speedup", 2.0,
           "torch eager"),
    Target("batchnorm-compile", "batch-norm training forward vs torch.compile",
           ("batchnorm_train",), "speedup", 1.0, "torch.compile"),
    Target("sgemm-1t", "sgemm 512/1024, one thread, vs numpy", GEMM, "speedup", 1.0, "numpy",
           flops=gemm_flops),
    Target("sgemm-2t", "sgemm 512/1024, two threads, vs numpy", GEMM, "speedup", 0.95, "numpy",
           threads=2, flops=gemm_flops),
    Target("epilogue-numpy", "matmul + bias + relu fused vs numpy's three steps", EPILOGUE,
           "speedup", 1.2, "numpy", flops=gemm_flops),
    Target("conv-torch", "conv 3x3 + bias + relu vs PyTorch eager", ("conv_bias_relu",),
           "speedup", 1.0, "torch eager"),
    Target("conv-pool-ort", "conv + relu + max-pool vs ONNX Runtime", ("conv_relu_pool",),
           "speedup", 1.0, "onnxruntime"),
    Target("mlp-train-torch", "MLP training step vs PyTorch eager", ("mlp_train",), "speedup",
           1.15, "torch eager"),
    Target("mlp-train-compile", "MLP training step vs torch.compile", ("mlp_train",),
           "speedup", 1.0, "torch.compile"),
    Target("mlp-infer-ort", "MLP inference vs ONNX Runtime", ("mlp_infer",), "speedup", 1.0,
           "onnxruntime"),
    Target("lstm-torch", "LSTM forward vs torch.nn.LSTM", ("lstm_forward",), "speedup", 1.0,
           "torch eager"),
    Target("cnn-train-torch", "demo CNN training step vs PyTorch eager", ("cnn_train",),
           "speedup", 1.3, "torch eager"),
    Target("mlp-compile-cold", "MLP training graph, cold compile", ("mlp_train",),
           "compile_cold_s", 1.0),
    Target("mlp-compile-cached", "MLP training graph, cached compile", ("mlp_train",),
           "compile_cached_s", 0.1),
    Target("dispatch", "one call of a tiny graph (dispatch overhead)", ("dispatch",), "call_s",
           20e-6),
)


def _row(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    for r in result["contenders"]:
        if r["name"] == name:
            return r
    return None


def measure(t: Target, result: dict[str, Any]) -> tuple[float | None, str]:
    """The measured value of `t` in one workload result, or (None, why not)."""
    fused = _row(result, "graphc fused")
    if fused is None or fused["status"] != "ok":
        return None, f"graphc fused: {fused['status'] if fused else 'absent'}"
    if t.metric == "speedup":
        peer = _row(result, t.peer or "")
        if peer is None or not peer.get("median_s"):
            return None, f"{t.peer}: {peer['status'] if peer else 'not run'}"
        return peer["median_s"] / fused["median_s"], ""
    if t.metric == "bandwidth_pct":
        anchor = side_by_side_copy_gbps(result)
        if anchor is None:   # runs without the copy among the contenders: the pooled anchor
            return fused["rate"].get("pct"), ""
        return 100.0 * fused["rate"]["gbps"] / anchor, ""
    if t.metric == "call_s":
        return fused["median_s"], ""
    key = "cold_s" if t.metric == "compile_cold_s" else "cached_s"
    value = fused["compile"].get(key)
    return value, "" if value is not None else f"no {key} recorded"


def side_by_side_copy_gbps(result: dict[str, Any]) -> float | None:
    """Median rate of the copy anchor sampled among the workload's contenders, if it was."""
    row = _row(result, COPY_ANCHOR)
    if row is None or not row.get("median_s"):
        return None
    return 2 * row["stats"]["bytes"] / row["median_s"] / 1e9


def _bootstrap_medians(samples: list[float], rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(samples, np.float64)
    return np.median(rng.choice(x, (BOOTSTRAP_DRAWS, len(x))), axis=1)


def interval(t: Target, result: dict[str, Any]) -> tuple[float, float] | None:
    """The 90 % bootstrap interval of `t`'s measured value (module note), None for metrics
    without samples to resample (compile times) or rows without them. Seeded: a report
    regenerated from the same JSON shows the same interval."""
    fused = _row(result, "graphc fused")
    if t.metric not in ("speedup", "bandwidth_pct") or not fused or not fused.get("samples_s"):
        return None
    rng = np.random.default_rng(0)
    fused_m = _bootstrap_medians(fused["samples_s"], rng)
    if t.metric == "speedup":
        peer = _row(result, t.peer or "")
        if peer is None or not peer.get("samples_s"):
            return None
        values = _bootstrap_medians(peer["samples_s"], rng) / fused_m
    else:  # a share of the copy's rate: both medians resampled (the pooled anchor is fixed)
        pct, _ = measure(t, result)
        if pct is None:
            return None
        values = pct * fused["median_s"] / fused_m
        copy = _row(result, COPY_ANCHOR)
        if side_by_side_copy_gbps(result) is not None and copy.get("samples_s"):
            values = values * _bootstrap_medians(copy["samples_s"], rng) / copy["median_s"]
    lo, hi = np.quantile(values, [(1 - INTERVAL_LEVEL) / 2, (1 + INTERVAL_LEVEL) / 2])
    return float(lo), float(hi)


def peak_gflops(doc: dict[str, Any], threads: int) -> float | None:
    """The best peak-FLOP anchor rate at `threads` threads, None where the run has none."""
    for a in doc.get("anchors", []):
        if a.get("threads") == threads and a.get("peak"):
            return a["peak"]["gflops_best"]
    return None


def attainable(t: Target, result: dict[str, Any], peak: float | None
               ) -> dict[str, Any] | None:
    """For a speedup target that declares its FLOPs: the best speedup reachable at the
    measured peak, peer_time / (flops / peak), and the GFLOP/s the bound needs. None where
    the target declares no FLOPs or the run lacks the peak or the peer's time."""
    if t.metric != "speedup" or t.flops is None or not peak:
        return None
    peer = _row(result, t.peer or "")
    if peer is None or not peer.get("median_s"):
        return None
    flops, peer_s = t.flops(result["sizes"]), peer["median_s"]
    best = peer_s / (flops / (peak * 1e9))
    needed = flops * t.bound / peer_s / 1e9
    fused = _row(result, "graphc fused") or {}
    fastest = min(x for x in (peer_s, fused.get("median_s")) if x)
    anchor_low = flops / fastest / 1e9 > peak
    return {"flops": flops, "peer_s": peer_s, "peak_gflops": peak, "needed_gflops": needed,
            "max_speedup": best, "attainable": None if anchor_low else best >= t.bound,
            "fastest_gflops": flops / fastest / 1e9}


def peak_note(t: Target, a: dict[str, Any], met: bool | None = None) -> str:
    """The targets table's note on what is attainable at peak: a missed bound says how much
    of the peak it needs ("" when the bound is met)."""
    from .report import fmt_time

    if a["attainable"] is None:
        return (f"no verdict at peak: {a['fastest_gflops']:.0f} GFLOP/s measured here is above "
                f"the peak anchor {a['peak_gflops']:.0f} GFLOP/s (anchor measured low)")
    if a["attainable"]:
        if met is not False:
            return ""
        return (f"needs {a['needed_gflops']:.0f} GFLOP/s, "
                f"{100 * a['needed_gflops'] / a['peak_gflops']:.0f} % of the measured peak "
                f"{a['peak_gflops']:.0f} GFLOP/s")
    return (f"unattainable even at peak: {t.bound:g}x {t.peer} ({fmt_time(a['peer_s'])}) "
            f"needs {a['needed_gflops']:.0f} GFLOP/s, above the measured peak "
            f"{a['peak_gflops']:.0f} GFLOP/s (at most {a['max_speedup']:.2f}x)")


def memory_floor(t: Target, doc: dict[str, Any], result: dict[str, Any]
                 ) -> dict[str, Any] | None:
    """For a speedup target that names a memory floor: the fastest time of any checked
    contender on the floor workload at the same thread count, and the largest speedup over the
    peer that time allows. None where the target names no floor or the run lacks it."""
    if t.metric != "speedup" or t.floor is None:
        return None
    peer = _row(result, t.peer or "")
    twin = next((r for r in doc["results"]
                 if r["workload"] == t.floor and r["threads"] == result["threads"]), None)
    if peer is None or not peer.get("median_s") or twin is None:
        return None
    times = [(r["median_s"], r["name"]) for r in twin["contenders"]
             if r.get("status") == "ok" and r.get("median_s") and r.get("role") != "anchor"]
    if not times:
        return None
    floor_s, by = min(times)
    best = peer["median_s"] / floor_s
    return {"workload": t.floor, "floor_s": floor_s, "by": by, "peer_s": peer["median_s"],
            "needed_s": peer["median_s"] / t.bound, "max_speedup": best,
            "attainable": best >= t.bound}


def floor_note(t: Target, f: dict[str, Any]) -> str:
    """The targets table's note on the memory floor ("" when the bound is above it)."""
    from .report import fmt_time

    if f["attainable"]:
        return ""
    return (f"unattainable even with free arithmetic: {t.bound:g}x {t.peer} "
            f"({fmt_time(f['peer_s'])}) needs {fmt_time(f['needed_s'])}, less than the same "
            f"memory traffic alone takes ({f['workload']}, {f['by']}: "
            f"{fmt_time(f['floor_s'])}; at most {f['max_speedup']:.2f}x)")


def evaluate_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (target, workload): measured value, bound, met (None: not measured), and
    for targets that declare their FLOPs, what is attainable at the measured peak."""
    quick = doc["config"].get("quick", False)
    rows = []
    for t in TARGETS:
        for wl in t.workloads:
            result = next((r for r in doc["results"]
                           if r["workload"] == wl and r["threads"] == t.threads), None)
            bound, spread, floor = None, None, None
            if result is None:
                value, note = None, f"not in this run ({wl}, {t.threads} thread(s))"
            else:
                value, note = measure(t, result)
                bound = attainable(t, result, peak_gflops(doc, t.threads))
                floor = memory_floor(t, doc, result)
                spread = interval(t, result) if value is not None else None
            met = None if value is None else (value >= t.bound if t.at_least
                                              else value < t.bound)
            if quick and value is not None:
                note = "quick sizes: not evidence either way"
            else:
                noisy = spread is not None and spread[0] <= t.bound <= spread[1]
                note = "; ".join(n for n in (
                    note, "within this run's noise: the 90 % interval contains the bound"
                    if noisy else "", peak_note(t, bound, met) if bound is not None else "",
                    floor_note(t, floor) if floor is not None else "") if n)
            rows.append({"id": t.id, "text": t.text, "workload": wl, "threads": t.threads,
                         "metric": t.metric, "bound": t.bound, "target": t.bound_text(),
                         "measured": value, "interval": spread, "met": met, "note": note,
                         "at_peak": bound, "memory_floor": floor})
    return rows
