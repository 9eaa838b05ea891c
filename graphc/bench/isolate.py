"""Worker processes for `graphc bench`: each runtime's contenders, and the anchors, measured in
a fresh process that loads only that runtime (why: the isolation note in runner.py).

The parent writes a job (JSON) and the reference outputs (.npy files) into a temporary folder
and runs `python -m graphc.bench.isolate JOB RESULT`. The worker pins its threads, rebuilds the
workload instance from its name (instances are seeded) and compares a digest of every input
and parameter with the parent's, so both measure the very same arrays; then it sets up its
group's contenders, checks each first call against the parent's reference, warms up and
samples round-robin among them, and writes their result rows (JSON). A worker that fails or
dies is reported as an error of its group's main contender, with the end of its output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .contenders import RUNTIME_GROUPS, build_contenders, failed
from .runner import (
    BenchConfig,
    contender_result,
    measure_anchors,
    measure_contenders,
    pinned_threads,
    single_interop_thread,
)
from .workloads import Instance, get_workload

WORKER_TIMEOUT_S = 3600.0   # a hung worker ends with an error row instead of a hung run
GROUP_FAMILY = {"graphc": "graphc", "numpy": "numpy", "torch": "torch",
                "onnxruntime": "onnxruntime"}


def instance_digest(inst: Instance) -> str:
    """blake2b over every input and parameter: name, dtype, shape and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for kind, arrays in (("input", inst.inputs), ("param", inst.params)):
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            h.update(f"{kind}:{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# -- the parent's side ----------------------------------------------------------------------------


def run_worker(job: dict[str, Any], folder: str, label: str) -> tuple[dict[str, Any] | None, str]:
    """Run one worker on `job`; (its result document or None, why not)."""
    job_path = Path(folder) / f"{label}.job.json"
    out_path = Path(folder) / f"{label}.result.json"
    job_path.write_text(json.dumps(job))
    cmd = [sys.executable, "-m", "graphc.bench.isolate", str(job_path), str(out_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"worker process timed out after {WORKER_TIMEOUT_S:.0f} s"
    if proc.returncode != 0 or not out_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return None, f"worker process exited with status {proc.returncode}: {' | '.join(tail)}"
    return json.loads(out_path.read_text()), ""


def group_error(group: str, threads: int, reason: str) -> dict[str, Any]:
    """The row that stands for a group whose worker failed (its main contender, as error)."""
    c = failed(RUNTIME_GROUPS[group][0], GROUP_FAMILY[group], "error", reason)
    c.threads = threads
    return contender_result(c, {"mode": "process", "group": group, "pid": None})


def run_isolated(workload: str, inst: Instance, ref: dict[str, np.ndarray], threads: int,
                 cfg, tick: Callable[[str], None], cache_dir: str | None) -> list[dict[str, Any]]:
    """Every contender of `workload` measured in one worker process per runtime group;
    returns their result rows in the usual order (graphc, numpy, torch, ONNX Runtime)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="graphc-bench-job-") as folder:
        names = sorted(ref)
        for i, name in enumerate(names):
            np.save(Path(folder) / f"ref{i}.npy", np.asarray(ref[name]), allow_pickle=False)
        base = {"kind": "workload", "workload": workload, "quick": cfg.quick,
                "threads": threads, "target": cfg.target, "compile_peers": cfg.compile_peers,
                "cache_dir": cache_dir, "digest": instance_digest(inst),
                "reference": {name: str(Path(folder) / f"ref{i}.npy")
                              for i, name in enumerate(names)},
                "sampling": {k: getattr(cfg, k) for k in SAMPLING_FIELDS}}
        for group in RUNTIME_GROUPS:
            tick(f"worker process: {group}")
            doc, why = run_worker({**base, "group": group}, folder, group)
            rows += doc["rows"] if doc is not None else [group_error(group, threads, why)]
    return rows


def isolated_anchors(threads: int, quick: bool) -> dict[str, Any]:
    """The anchors measured in worker processes: numpy's copy and sgemm in one, the FMA peak
    (graphc's generated code and libgomp) in another."""
    anchor: dict[str, Any] = {"threads": threads}
    with tempfile.TemporaryDirectory(prefix="graphc-bench-job-") as folder:
        for label, parts in (("numpy", ["copy", "sgemm"]), ("peak", ["peak"])):
            job = {"kind": "anchors", "threads": threads, "quick": quick, "parts": parts}
            doc, why = run_worker(job, folder, f"anchors-{label}")
            if doc is None:
                from graphc.ir.errors import GraphError

                raise GraphError(f"anchors ({', '.join(parts)}) at {threads} thread(s): {why}")
            anchor.update({k: v for k, v in doc["anchors"].items() if k != "threads"})
            anchor.setdefault("isolation", {"mode": "process", "pids": {}})
            anchor["isolation"]["pids"][label] = doc["pid"]
    return anchor


# -- the worker's side ----------------------------------------------------------------------------

SAMPLING_FIELDS = ("repeats", "warmup", "min_sample_s", "budget_s", "min_samples", "settle_s",
                   "core_check")


def worker_workload(job: dict[str, Any]) -> dict[str, Any]:
    """Set up, check and sample one group's contenders (the worker process's job)."""
    group, threads = job["group"], job["threads"]
    isolation = {"mode": "process", "group": group, "pid": os.getpid()}
    if group == "torch":
        single_interop_thread()
    with pinned_threads(threads, torch=group == "torch"):
        inst = get_workload(job["workload"]).make(job["quick"])
        if instance_digest(inst) != job["digest"]:
            reason = ("workload instance rebuilt in the worker differs from the parent's "
                      "(inputs or parameters not deterministic)")
            return {"rows": [group_error(group, threads, reason)], "pid": os.getpid()}
        ref = {name: np.load(path, allow_pickle=False)
               for name, path in job["reference"].items()}
        cfg = BenchConfig(target=job["target"], threads=(threads,), quick=job["quick"],
                          compile_peers=job["compile_peers"], progress=False,
                          **job["sampling"])
        cs = build_contenders(inst, cfg.target, threads, cfg.compile_peers, job["cache_dir"],
                              group=group, quick=cfg.quick)
        measure_contenders(cs, inst, ref, cfg, threads, lambda stage: None)
        return {"rows": [contender_result(c, isolation) for c in cs], "pid": os.getpid()}


def worker_anchors(job: dict[str, Any]) -> dict[str, Any]:
    with pinned_threads(job["threads"], torch=False):
        anchors = measure_anchors(job["threads"], job["quick"], tuple(job["parts"]))
    return {"anchors": anchors, "pid": os.getpid()}


def main(argv: list[str]) -> int:
    """`python -m graphc.bench.isolate JOB RESULT`: run the job, write the result."""
    job_path, out_path = argv
    job = json.loads(Path(job_path).read_text())
    t0 = time.perf_counter()
    doc = worker_anchors(job) if job["kind"] == "anchors" else worker_workload(job)
    doc["worker_s"] = time.perf_counter() - t0
    from .report import _plain

    Path(out_path).write_text(json.dumps(doc, default=_plain))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
