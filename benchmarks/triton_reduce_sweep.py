"""Sweep of the Triton backend's row-reduction launch configurations on a GPU (rows per program,
block width, warps, persistent or looped), for row softmax at a few shapes, against torch eager.
Its results chose `options.reduce_config`; run it again on a new card before changing that rule.

    python3 benchmarks/triton_reduce_sweep.py --out sweep.json

Each configuration is forced into code generation, checked against torch.softmax, captured as a
CUDA graph (no launch overhead) and timed with CUDA events; medians of 50 replays. First, a probe
of host overhead per call: graphc's `run_torch` of a one-kernel graph through each launch path,
each launcher alone, and torch's own `x + 1`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from triton_timing import timed  # noqa: E402

SHAPES = ((8192, 1024), (16384, 512), (32768, 128), (4096, 4096), (4096, 8192))


def configs(cols: int):
    from graphc.backends.triton.options import ReduceConfig, next_pow2

    rb = next_pow2(cols)
    if rb <= 8192:
        for xb in (1, 2, 4, 8, 16, 32):
            for warps in (1, 2, 4, 8, 16):
                if 1024 <= xb * rb <= 16384 and xb * rb >= 32 * warps * 4:
                    yield ReduceConfig(True, xb, rb, warps)
    if cols > 2048:
        for rblock, warps in ((1024, 4), (2048, 8), (4096, 8), (4096, 16), (8192, 16)):
            if rblock < cols:
                yield ReduceConfig(False, 1, rblock, warps)


def run_config(shape, cfg, x) -> float:
    import graphc.backends.triton.codegen as codegen
    from graphc.backends.triton import build_program
    from graphc.ir.builder import Builder
    from graphc.pipeline import run_pipeline

    b = Builder("softmax")
    g = b.build(outputs={"y": b.softmax(b.input("x", shape))})
    saved = codegen.reduce_config
    codegen.reduce_config = lambda rows, cols, opts: cfg
    try:
        prog = build_program(run_pipeline(g).schedule, {"cuda_graph": True})
    finally:
        codegen.reduce_config = saved
    static = prog.graph_inputs()
    static["x"].copy_(x)
    y = prog.run_torch(static, copy_outputs=False)["y"]
    torch.testing.assert_close(y, torch.softmax(x, -1), rtol=1e-5, atol=1e-6)
    return timed(lambda: prog.run_torch(static, copy_outputs=False), 50)


def launch_overhead() -> dict:
    """Host microseconds per call of a one-kernel graph (x + 1 on 4096 floats): graphc's run_torch
    with each launch path (this GPU's cubins through the driver, the default; Triton's JIT
    launcher; a package's stored cubins), each launcher alone, and torch's own `x + 1`."""
    import time

    from graphc.backends.triton import build_program
    from graphc.backends.triton.runtime import current_arch
    from graphc.ir.builder import Builder
    from graphc.pipeline import run_pipeline

    b = Builder("add1")
    g = b.build(outputs={"y": b.input("x", (4096,)) + 1.0})
    sched = run_pipeline(g).schedule
    x = torch.randn(4096, device="cuda")
    progs = {"cubin": build_program(sched), "triton": build_program(sched, {"launcher": "triton"}),
             "stored": build_program(sched, {"archs": (current_arch(),)})}
    args = {}
    for k, prog in progs.items():
        torch.testing.assert_close(prog.run_torch({"x": x})["y"], x + 1.0)
        storage = prog._storage({"x": x}, prog._new_outputs())
        args[k] = [storage[a] for a in prog.generated.launches[0].args]

    def per_call(fn, n=2000) -> float:
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return round((time.perf_counter() - t0) / n * 1e6, 2)

    out = {"torch x + 1 (us per call)": per_call(lambda: x + 1.0)}
    for k, label in (("cubin", "cubins (default)"), ("triton", "launcher=triton"),
                     ("stored", "package's stored cubins")):
        out[f"graphc run_torch, {label}"] = per_call(lambda p=progs[k]: p.run_torch({"x": x}))
    out["cubin launch alone"] = per_call(lambda: progs["cubin"].launchers()[0](args["cubin"]))
    out["Triton JIT launch alone"] = per_call(
        lambda: progs["triton"].launchers()[0](args["triton"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from graphc.backends.triton.options import TritonOptions, reduce_config

    overhead = launch_overhead()
    print("launch overhead:", overhead, flush=True)
    rows_out = []
    for shape in SHAPES:
        x = torch.randn(*shape, device="cuda")
        nbytes = 2 * x.numel() * 4
        eager = timed(lambda x=x: torch.softmax(x, -1), 50)
        current = reduce_config(*shape, TritonOptions(interpret=False))
        row = {"shape": list(shape), "torch eager ms": round(eager, 4), "current": str(current),
               "configs": []}
        for cfg in configs(shape[1]):
            try:
                ms = run_config(shape, cfg, x)
                row["configs"].append({"cfg": str(cfg), "ms": round(ms, 4),
                                       "GB/s": round(nbytes / ms / 1e6, 1),
                                       "vs eager": round(eager / ms, 3)})
            except Exception as e:  # noqa: BLE001 - report, keep going
                row["configs"].append({"cfg": str(cfg), "error": f"{type(e).__name__}: {e}"[:300]})
        rows_out.append(row)
        best = min((c for c in row["configs"] if "ms" in c), key=lambda c: c["ms"], default=None)
        cur = next((c for c in row["configs"] if c["cfg"] == row["current"]), None)
        print(f"{shape}: eager {eager:.4f} ms | current {cur} | best {best}", flush=True)
    Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(),
                                          "launch overhead": overhead, "rows": rows_out},
                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
