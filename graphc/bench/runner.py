"""The benchmark methodology: how `graphc bench` measures, in the order it happens.

1. Machine header (`machine.py`): CPU, cores, THP, load, versions, numpy's BLAS and its kernel.
2. For each thread count: every library is pinned to it (threadpoolctl for OpenBLAS and OpenMP,
   `torch.set_num_threads`, ONNX Runtime's intra-op threads, graphc's `threads=`) and the
   number each contender actually uses is recorded next to its result.
3. Physical anchors, measured in the same run, before and after each thread count's workloads
   (samples pooled, so that foreign load during one of them does not set the yardstick):
   streaming copy bandwidth (numpy copy of a 256 MiB buffer, or one as large as the
   last-level cache, into a preallocated one; bytes read + written per second), numpy sgemm
   GFLOP/s (1024^3, preallocated output) and, where the LLVM backend works, the FMA peak
   (`peak.py`: a generated loop of independent FMA chains on every thread). Each result is
   then also given as a % of them: memory-bound workloads as % of copy bandwidth,
   compute-bound ones as % of numpy's sgemm rate and % of the FMA peak, all taken at their
   best sample (what the machine can do; medians are recorded too).
4. Per workload: the instance is built once; the reference (`graphc.run_reference` of the
   graph, the numpy oracle) computes the expected outputs; every contender is set up (graphc
   compiles into an empty compile cache of its own: cold, then again: cached; ONNX Runtime
   sessions are created; torch.compile compiles on its first call) and called
   once, and that first call's outputs are checked against the reference. A wrong result is
   reported as wrong and never timed; a failure to set up or run is reported as an error.
5. Warm-up calls, which also calibrate `inner`: how many calls make one sample of at least
   `min_sample_s`, so that microsecond calls are not timed one by one.
6. Samples, round-robin across contenders so that machine drift hits every contender alike, in
   an order shuffled every round (seeded by the round: reproducible): a fixed cyclic order
   would have every contender always follow the same one and inherit the caches it leaves
   (graphc's fused MLP inference read 3-5 % slower than its unfused schedule that way in two
   runs, 1 % with the order shuffled, and level when timed alone in turn); the garbage
   collector is off while sampling. With
   more than one thread, each sample waits `settle_s` first: OpenMP and ONNX Runtime workers
   spin for a while after a call returns, and would otherwise steal the cores of whichever
   contender runs next. A
   contender stops early once it has used its time budget (`budget_s`) and has `min_samples`.
   Above one thread, each round first checks that the cores run in parallel (`cores.py`: on
   a shared machine two vCPUs may share one core for seconds); the samples of a round on
   shared cores are kept apart and the round is made up by another.
7. Per contender: median, min and max seconds per call; speedups of graphc fused over each peer
   are ratios of medians. Compile times (cold, cached) are reported apart from run times.

Isolation (`BenchConfig.isolate`, `isolate.py`). With more than one thread, every library keeps
a pool of workers that spin for a while after each call (OpenBLAS, torch's OpenMP, ONNX
Runtime, graphc's libgomp); with all of them loaded in one process they steal the cores of
whichever contender runs next, and a pause before each sample is not enough (graphc's
two-thread sgemm read 0.55x numpy with every runtime loaded, 0.95-0.98x with only numpy and
graphc). So by default ("auto") steps 3-6 run, for thread counts above one, in fresh worker
processes: one per runtime (graphc's compiled code; numpy together with graphc's reference
interpreter, which is numpy op by op; torch eager and torch.compile; ONNX Runtime), each of
which loads only its own runtime, rebuilds the seeded workload instance (checked against the
parent's by a digest of every input and parameter), checks its contenders' first calls
against the reference computed by the parent and samples them round-robin among themselves.
The anchors are measured the same way (numpy's in one process, the FMA peak in another). At
one thread no pool has a worker besides the caller, so nothing spins, and the contenders stay
in one process where the round-robin spreads machine drift over all of them and no process
start is paid; "always" isolates every thread count, "never" none. Each contender and anchor
records how it was run (`isolation`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from graphc.ir.errors import GraphError

from .contenders import Contender, build_contenders, check_outputs, copy_anchor_bytes
from .machine import machine_info
from .workloads import Instance, Workload, select_workloads

SCHEMA = "graphc-bench/2"
ISOLATE_MODES = ("auto", "always", "never")


@dataclass
class BenchConfig:
    """What to measure and how hard. `None` fields get defaults from `quick`."""

    target: str = "llvm"
    threads: tuple[int, ...] = (1,)
    quick: bool = False
    workloads: tuple[str, ...] = ()
    repeats: int | None = None        # timed samples per contender
    warmup: int | None = None         # warm-up calls per contender after the checked call
    compile_peers: bool = True        # torch.compile (never in quick mode)
    min_sample_s: float | None = None
    budget_s: float | None = None     # per contender and workload, sampling only
    min_samples: int | None = None
    settle_s: float | None = None     # pause before each sample when threads > 1
    core_check: bool = True           # rounds on shared cores set apart (`cores.py`)
    progress: bool = True
    openblas_kept_reason: str | None = None
    isolate: str = "auto"             # worker processes: auto (threads > 1) | always | never

    def isolates(self, threads: int) -> bool:
        """Whether contenders at `threads` threads run in worker processes (module docstring)."""
        if self.isolate not in ISOLATE_MODES:
            raise GraphError(f"isolate must be one of {ISOLATE_MODES}, got {self.isolate!r}")
        return self.isolate == "always" or (self.isolate == "auto" and threads > 1)

    def resolved(self) -> BenchConfig:
        q = self.quick
        return BenchConfig(
            target=self.target, threads=tuple(self.threads), quick=q,
            workloads=tuple(self.workloads),
            repeats=self.repeats or (3 if q else 15), warmup=self.warmup if self.warmup
            is not None else (1 if q else 3), compile_peers=self.compile_peers and not q,
            min_sample_s=self.min_sample_s or (2e-4 if q else 2e-3),
            budget_s=self.budget_s or (0.25 if q else 8.0),
            min_samples=self.min_samples or (1 if q else 3),
            settle_s=self.settle_s if self.settle_s is not None else 0.005,
            core_check=self.core_check, progress=self.progress,
            openblas_kept_reason=self.openblas_kept_reason, isolate=self.isolate)


# -- threads --------------------------------------------------------------------------------------


@contextmanager
def pinned_threads(n: int, torch: bool = True) -> Iterator[dict[str, Any]]:
    """Pin BLAS, OpenMP and (with `torch`, importing it) torch to `n` threads for the duration;
    yields what was set."""
    if n < 1:
        raise GraphError(f"thread count must be >= 1, got {n}")
    info: dict[str, Any] = {"requested": n}
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=n)
    except ImportError:
        info["threadpoolctl"] = "not installed: BLAS threads not pinned"
    torch_before = None
    try:
        if torch:
            import torch as _torch

            torch_before = _torch.get_num_threads()
            _torch.set_num_threads(n)
            info["torch"] = _torch.get_num_threads()
    except ImportError:
        pass
    try:
        yield info
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        if torch_before is not None:
            import torch as _torch

            _torch.set_num_threads(torch_before)


def single_interop_thread() -> None:
    """torch's inter-op pool to one thread (possible only before torch runs anything)."""
    try:
        import torch

        torch.set_num_interop_threads(1)
    except (ImportError, RuntimeError):
        pass


# -- anchors --------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


ANCHOR_PARTS = ("copy", "sgemm", "peak")


def measure_anchors(threads: int, quick: bool, parts: tuple[str, ...] = ANCHOR_PARTS
                    ) -> dict[str, Any]:
    """Copy bandwidth, numpy sgemm rate and FMA peak (those in `parts`) under the current
    thread pinning. The peak is measured first, before numpy's BLAS pool has run, and is
    absent (with `peak_unavailable` saying why) where the LLVM backend does not work."""
    out: dict[str, Any] = {"threads": threads}
    if "peak" in parts:
        try:
            from .peak import measure_peak

            out["peak"] = measure_peak(threads, quick)
        except Exception as e:  # noqa: BLE001 - no LLVM here: the anchor is absent
            out["peak_unavailable"] = f"{type(e).__name__}: {e}"[:200]
    if "copy" in parts:
        nbytes = copy_anchor_bytes(quick)
        src = np.ones(nbytes // 4, np.float32)
        dst = np.zeros_like(src)
        copy = time_calls(lambda: np.copyto(dst, src), 3 if quick else 15)
        out["copy"] = {"bytes": nbytes, "samples_s": copy,
                       "gbps_median": 2 * nbytes / statistics.median(copy) / 1e9,
                       "gbps_best": 2 * nbytes / min(copy) / 1e9}
    if "sgemm" in parts:
        n = 256 if quick else 1024
        rng = np.random.default_rng(0)
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        gemm = time_calls(lambda: np.matmul(a, b, out=c), 3 if quick else 15)
        out["sgemm"] = {"n": n, "samples_s": gemm,
                        "gflops_median": 2 * n ** 3 / statistics.median(gemm) / 1e9,
                        "gflops_best": 2 * n ** 3 / min(gemm) / 1e9}
    return out


# -- one workload ---------------------------------------------------------------------------------


def first_call(c: Contender, inst: Instance, ref: dict[str, np.ndarray]) -> None:
    """Call once, check against the reference; sets status ok / wrong / error."""
    try:
        t0 = time.perf_counter()
        out = c.run()
        c.first_call_s = time.perf_counter() - t0
        c.check = c.verify(out) if c.verify else check_outputs(inst, out, ref)
    except Exception as e:  # noqa: BLE001 - reported in the results
        c.status, c.reason = "error", f"run: {type(e).__name__}: {e}"
        c.check = {"ran": True, "passed": False, "problems": [c.reason]}
        return
    if c.check["passed"]:
        c.status = "ok"
    else:
        c.status, c.reason = "wrong", "; ".join(c.check["problems"][:3])


def warm_up(c: Contender, warmup: int, min_sample_s: float) -> None:
    """Warm-up calls; sets `inner` so that one sample lasts at least `min_sample_s`. A contender
    whose first call took over half a second (the reference interpreter at full sizes) is warm
    after one more call."""
    best = c.first_call_s or 0.0
    if best > 0.5:
        warmup = min(warmup, 1)
    for i in range(warmup):
        t0 = time.perf_counter()
        c.run()
        t = time.perf_counter() - t0
        best = t if i == 0 else min(best, t)
    c.inner = max(1, min(100_000, math.ceil(min_sample_s / max(best, 1e-9))))


def one_sample(c: Contender) -> float:
    run, inner = c.run, c.inner
    t0 = time.perf_counter()
    for _ in range(inner):
        run()
    return (time.perf_counter() - t0) / inner


def sample_round_robin(cs: list[Contender], cfg: BenchConfig, threads: int,
                       tick: Callable[[str], None]) -> None:
    """Step 6: rounds until every contender has `repeats` samples or used its budget. Above
    one thread, a round that finds the cores shared (`cores.CoreGuard`) keeps its samples
    apart and is made up by another (at most `repeats` extra rounds); a contender left with
    fewer than `min_samples` others takes them back, marked `cores_shared`."""
    spent = {id(c): 0.0 for c in cs}
    settle = cfg.settle_s if threads > 1 else 0.0
    guard = core_guard(threads) if threads > 1 and cfg.core_check and cs else None
    gc.collect()
    gc.disable()
    try:
        for r in range(2 * cfg.repeats):
            active = [c for c in cs if not c.capped and len(c.samples) < cfg.repeats]
            if not active:
                break
            shared = guard is not None and guard.round_shared()
            for c in random.Random(r).sample(active, len(active)):
                if settle:
                    time.sleep(settle)
                t = one_sample(c)
                (c.shared_samples if shared else c.samples).append(t)
                spent[id(c)] += t * c.inner
                if spent[id(c)] >= cfg.budget_s and len(c.samples) >= cfg.min_samples:
                    c.capped = len(c.samples) < cfg.repeats
            tick(f"round {r + 1}/{cfg.repeats}")
    finally:
        gc.enable()
    for c in cs:
        if guard is not None:
            c.core_checks = guard.shares or guard.unavailable
        if len(c.samples) < cfg.min_samples and c.shared_samples:
            c.samples += c.shared_samples
            c.shared_samples = []
            c.cores_shared = True


def core_guard(threads: int):
    """The core check of multi-threaded sampling, imported only here: its FMA loop is JIT
    compiled with llvmlite, which single-threaded runs need not load."""
    from .cores import CoreGuard

    return CoreGuard(threads)


def anchor_share(result: dict[str, Any], seconds: float, anchors: dict[str, Any]
                 ) -> dict[str, Any]:
    """Achieved rate of a workload `result` (kind, bytes, flops), and as a % of the matching
    anchor; compute-bound ones also as a % of the FMA peak where the run measured it."""
    if result["kind"] == "memory":
        gbps = result["bytes"] / seconds / 1e9
        return {"gbps": gbps, "of": "copy bandwidth",
                "pct": 100.0 * gbps / anchors["copy"]["gbps_best"]}
    if result["kind"] == "compute":
        gflops = result["flops"] / seconds / 1e9
        out = {"gflops": gflops, "of": "numpy sgemm",
               "pct": 100.0 * gflops / anchors["sgemm"]["gflops_best"]}
        if anchors.get("peak"):
            out["pct_peak"] = 100.0 * gflops / anchors["peak"]["gflops_best"]
        return out
    return {"us_per_call": seconds * 1e6}


def contender_result(c: Contender, isolation: dict[str, Any]) -> dict[str, Any]:
    """A contender's JSON row (without `rate`, which needs the anchors: `add_rates`)."""
    out: dict[str, Any] = {
        "name": c.name, "family": c.family, "role": c.role, "threads": c.threads,
        "config": c.config, "status": c.status, "reason": c.reason,
        "check": c.check or {"ran": False}, "compile": c.compile, "stats": c.stats,
        "first_call_s": c.first_call_s, "inner": c.inner, "samples_s": c.samples,
        "capped": c.capped, "isolation": isolation}
    if c.core_checks is not None:
        out.update(core_checks=c.core_checks, shared_samples_s=c.shared_samples,
                   cores_shared=c.cores_shared)
    if c.samples:
        med = statistics.median(c.samples)
        out.update(median_s=med, min_s=min(c.samples), max_s=max(c.samples))
    return out


def add_rates(result: dict[str, Any], anchors: dict[str, Any]) -> None:
    """Set `rate` of every timed contender row of `result` from the anchors."""
    for row in result["contenders"]:
        if not row.get("median_s"):
            continue
        if row["role"] == "anchor":  # the copy itself: its own bytes, read and written
            gbps = 2 * row["stats"]["bytes"] / row["median_s"] / 1e9
            row["rate"] = {"gbps": gbps, "of": "copy bandwidth",
                           "pct": 100.0 * gbps / anchors["copy"]["gbps_best"]}
        else:
            row["rate"] = anchor_share(result, row["median_s"], anchors)


# speedup columns: graphc fused's median against each of these contenders' medians
RATIO_PEERS = {"unfused": "graphc unfused", "reference": "graphc reference", "numpy": "numpy",
               "torch": "torch eager", "torch.compile": "torch.compile",
               "onnxruntime": "onnxruntime"}


def speedups(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """{column: peer median / graphc fused median} (> 1: graphc fused is faster)."""
    med = {r["name"]: r.get("median_s") for r in rows}
    fused = med.get("graphc fused")
    return {col: (med[name] / fused if fused and med.get(name) else None)
            for col, name in RATIO_PEERS.items()}


def measure_contenders(cs: list[Contender], inst: Instance, ref: dict[str, np.ndarray],
                       cfg: BenchConfig, threads: int, tick: Callable[[str], None]) -> None:
    """Steps 4-6 for contenders already set up: checked first call, warm-up, samples."""
    for c in cs:
        if c.status == "ready":
            tick(f"check {c.name}")
            first_call(c, inst, ref)
    ok = [c for c in cs if c.status == "ok"]
    for c in ok:
        tick(f"warm up {c.name}")
        warm_up(c, cfg.warmup, cfg.min_sample_s)
    sample_round_robin(ok, cfg, threads, tick)


def bench_workload(w: Workload, threads: int, cfg: BenchConfig, anchors: dict[str, Any] | None,
                   tick: Callable[[str], None], cache_dir: str | None = None
                   ) -> dict[str, Any]:
    """One workload at one thread count: every contender checked, sampled and (given the
    `anchors`; else later, by `add_rates`) rated, in this process or in worker processes
    (`cfg.isolates(threads)`)."""
    from graphc.backends.reference import run_graph

    t0 = time.perf_counter()
    tick("build")
    inst = w.make(cfg.quick)
    t1 = time.perf_counter()
    tick("reference")
    ref = run_graph(inst.graph, inst.inputs)
    t2 = time.perf_counter()
    if cfg.isolates(threads):
        from .isolate import run_isolated

        rows = run_isolated(w.name, inst, ref, threads, cfg, tick, cache_dir)
    else:
        tick("compile / set up")
        cs = build_contenders(inst, cfg.target, threads, cfg.compile_peers, cache_dir,
                              quick=cfg.quick)
        measure_contenders(cs, inst, ref, cfg, threads, tick)
        rows = [contender_result(c, {"mode": "in-process"}) for c in cs]
    graph_stats = {r["name"].split()[-1]: r["stats"] for r in rows
                   if r["family"] == "graphc" and r["stats"]}
    result = {"workload": w.name, "description": w.description, "threads": threads,
              "kind": inst.kind, "sizes": inst.sizes, "bytes": inst.bytes,
              "flops": inst.flops, "notes": inst.notes, "build_s": t1 - t0,
              "reference_s": t2 - t1,
              "isolation": "process" if cfg.isolates(threads) else "in-process",
              "graph": graph_stats, "contenders": rows, "speedups": speedups(rows)}
    if anchors is not None:
        add_rates(result, anchors)
    return result


# -- the whole run --------------------------------------------------------------------------------


def progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    # only on a terminal: a log file would get every redraw
    return tqdm(total=total, desc="graphc bench", unit="workload", file=sys.stderr,
                disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True, leave=False)


def anchors_now(n: int, cfg: BenchConfig) -> dict[str, Any]:
    """The anchors at `n` threads, measured the way contenders at `n` threads are run, with the
    load average at the time (other users of the machine show there)."""
    if cfg.isolates(n):
        from .isolate import isolated_anchors

        anchor = isolated_anchors(n, cfg.quick)
    else:
        anchor = measure_anchors(n, cfg.quick)
        anchor["isolation"] = {"mode": "in-process"}
    if hasattr(os, "getloadavg"):
        anchor["load_average"] = list(os.getloadavg())
    return anchor


# per anchor part: the work of one sample (bytes moved or FLOPs) and the name of its rate
_ANCHOR_WORK = {"copy": (lambda p: 2 * p["bytes"], "gbps"),
                "sgemm": (lambda p: 2 * p["n"] ** 3, "gflops"),
                "peak": (lambda p: p["flops_per_call"], "gflops")}


def merge_anchors(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """One anchor from two measurements (before and after a thread count's workloads): samples
    pooled, best and median recomputed. On a shared machine a burst of foreign load during one
    measurement would otherwise set the yardstick too low for the whole pass."""
    out = {**first, "rounds": 2,
           "load_average": {"before": first.get("load_average"),
                            "after": last.get("load_average")}}
    for part, (work, rate) in _ANCHOR_WORK.items():
        if part not in first or part not in last:
            if part in last:
                out[part] = last[part]
            continue
        merged = dict(first[part], samples_s=first[part]["samples_s"] + last[part]["samples_s"])
        w = work(merged)
        merged[f"{rate}_best"] = w / min(merged["samples_s"]) / 1e9
        merged[f"{rate}_median"] = w / statistics.median(merged["samples_s"]) / 1e9
        if part == "peak":
            merged["per_core_gflops_best"] = merged["gflops_best"] / first["threads"]
            merged["finite"] = first[part]["finite"] and last[part]["finite"]
        out[part] = merged
    if "peak" in out:
        out.pop("peak_unavailable", None)
    iso_a, iso_b = first.get("isolation") or {}, last.get("isolation") or {}
    if "pids" in iso_a:
        out["isolation"] = {"mode": iso_a["mode"], "pids": {
            k: [v, (iso_b.get("pids") or {}).get(k)] for k, v in iso_a["pids"].items()}}
    return out


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Measure everything `config` asks for; returns the JSON document (see report.py)."""
    cfg = config.resolved()
    started = time.perf_counter()
    workloads = select_workloads(list(cfg.workloads) or None)
    single_interop_thread()
    machine = machine_info(cfg.openblas_kept_reason)
    anchors, results = [], []
    bar = progress_bar(len(cfg.threads) * len(workloads), cfg.progress)
    # graphc's compile caches of this run live here: the first compile is cold, and the
    # user's own cache is neither read nor filled
    cache_root = tempfile.mkdtemp(prefix="graphc-bench-cache-")
    try:
        for n in cfg.threads:
            isolated = cfg.isolates(n)
            # worker processes pin their own threads; this one only computes references
            with contextlib.nullcontext() if isolated else pinned_threads(n):
                bar.set_postfix_str(f"anchors, {n} thread(s)")
                first = anchors_now(n, cfg)
                batch = []
                for w in workloads:
                    def tick(stage: str, w=w, n=n) -> None:
                        bar.set_postfix_str(f"{w.name} x{n}: {stage}", refresh=True)
                    batch.append(bench_workload(w, n, cfg, None, tick, cache_root))
                    bar.update(1)
                bar.set_postfix_str(f"anchors again, {n} thread(s)")
                anchor = merge_anchors(first, anchors_now(n, cfg))
                for result in batch:
                    add_rates(result, anchor)
                anchors.append(anchor)
                results += batch
    finally:
        bar.close()
        shutil.rmtree(cache_root, ignore_errors=True)
    doc = {"schema": SCHEMA, "machine": machine, "config": config_dict(cfg),
           "anchors": anchors, "results": results,
           "elapsed_s": time.perf_counter() - started}
    from .targets import evaluate_targets

    doc["targets"] = evaluate_targets(doc)
    return doc


def config_dict(cfg: BenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["threads"] = list(cfg.threads)
    d["workloads"] = list(cfg.workloads)
    return d
