"""Run the op matrix on the Triton backend in one process and write one JSON result per variant.

The Triton interpreter is a property of the whole process (TRITON_INTERPRET must be set before
triton is first imported), so the interpreter tier runs here, in a child process, while the test
process stays free to compile for real GPUs. On a CUDA machine the same runner drives the `gpu`
tier (`--device cuda`).

    python -m tests.backends.triton.interp_runner --out results.json [--device cpu|cuda] [names]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

# Variants beyond the plain fused run of every case: loops over long rows (tiny max_rblock) for
# the reductions, and one kernel per primitive for a few whole models.
LOOPED = ("reduce_sum.axis1", "reduce_max.axes01", "argmax.axis1", "reduce.long_rows",
          "softmax", "softmax.long_rows", "log_softmax", "cross_entropy", "batch_norm.train",
          "reduce_sum.f16", "model.cnn")
# On a GPU kernels launch from cubins through the driver; these also go through Triton's own.
TRITON_LAUNCHER = ("model.cnn_train_step", "model.lstm", "softmax", "matmul.f16",
                   "scatter_add.duplicates", "movement.concat_many_outer")
UNFUSED = ("model.cnn", "model.lstm", "model.cnn_train_step", "model.lstm_train_step",
           "movement.pad_interior_negative", "movement.concat", "lstm.t3")


@dataclass(frozen=True)
class Variant:
    case: str
    fuse: bool = True
    max_rblock: int | None = None
    cuda_graph: bool = False
    launcher: str = "cubin"

    @property
    def name(self) -> str:
        tags = []
        if not self.fuse:
            tags.append("unfused")
        if self.max_rblock:
            tags.append(f"rblock{self.max_rblock}")
        if self.cuda_graph:
            tags.append("cudagraph")
        if self.launcher != "cubin":
            tags.append(f"{self.launcher}-launcher")
        return self.case + (f"[{','.join(tags)}]" if tags else "")


def variants(names: list[str], device: str) -> list[Variant]:
    out = [Variant(n) for n in names]
    out += [Variant(n, max_rblock=16) for n in LOOPED if n in names]
    out += [Variant(n, fuse=False) for n in UNFUSED if n in names]
    if device == "cuda":
        out += [Variant(n, cuda_graph=True) for n in ("model.cnn", "softmax", "model.lstm")
                if n in names]
        out += [Variant(n, launcher="triton") for n in TRITON_LAUNCHER if n in names]
    return out


def run_variant(v: Variant, device: str, cache_dir: str) -> dict:
    from graphc.backends.triton import build_program
    from tests.backends.op_matrix import (
        CASES_BY_NAME,
        assert_close,
        case_inputs,
        case_schedule,
        reference,
    )

    case = CASES_BY_NAME[v.case]
    t0 = time.perf_counter()
    try:
        inputs = case_inputs(case)
        want = reference(case, inputs)
        sched = case_schedule(case, fuse=v.fuse)
        opts = {"interpret": device == "cpu", "cache_dir": cache_dir, "poison_arena": True,
                "max_rblock": v.max_rblock, "cuda_graph": v.cuda_graph, "launcher": v.launcher}
        prog = build_program(sched, opts)
        arrays = {**inputs, **{p: sched.param_values[p] for p in sched.params}}
        got = prog.run(arrays)
        if v.cuda_graph:  # replay once more: the graph path proper
            got = prog.run(arrays)
        assert_close(case, got, want)
        return {"ok": True, "seconds": time.perf_counter() - t0,
                "kernels": len(sched.kernels)}
    except Exception as e:  # noqa: BLE001 - the test process reports it
        return {"ok": False, "seconds": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}"[:4000],
                "traceback": traceback.format_exc()[-6000:]}


def run_package(folder: str, device: str) -> dict:
    """Load a saved package (no schedule: its own signature) and run it against the reference."""
    from graphc.backends.triton import load_program
    from tests.backends.op_matrix import CASES_BY_NAME, assert_close, case_inputs, reference

    t0 = time.perf_counter()
    case = CASES_BY_NAME[os.path.basename(folder)]
    try:
        inputs = case_inputs(case)
        prog = load_program(folder, options={"interpret": device == "cpu"},
                            param_values=case.graph().param_values)
        got = prog.run_torch(inputs)
        assert_close(case, {k: _numpy(v) for k, v in got.items()}, reference(case, inputs))
        via = "cubin" if prog.aot is not None and device == "cuda" else "source"
        return {"ok": True, "seconds": time.perf_counter() - t0, "via": via}
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "seconds": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}"[:4000],
                "traceback": traceback.format_exc()[-6000:]}


def _numpy(t):
    from graphc.backends.triton.runtime import torch_to_numpy

    return torch_to_numpy(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--packages", default=None, help="run the saved packages in this folder")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (process-wide)
    from tests.backends.op_matrix import OP_MATRIX

    names = args.names or [c.name for c in OP_MATRIX]
    cache = args.cache_dir or tempfile.mkdtemp(prefix="graphc-triton-")
    results = {}
    if args.packages:
        jobs = [(f"package:{d}", lambda d=d: run_package(os.path.join(args.packages, d),
                                                         args.device))
                for d in sorted(os.listdir(args.packages))]
    else:
        jobs = [(v.name, lambda v=v: run_variant(v, args.device, cache))
                for v in variants(names, args.device)]
    for name, job in jobs:
        results[name] = r = job()
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['seconds']:6.2f}s {name}"
              + ("" if r["ok"] else f"  {r['error'][:300]}"), flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
