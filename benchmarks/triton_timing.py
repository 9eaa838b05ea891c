"""GPU timings of the Triton backend against PyTorch eager and torch.compile (own harness, used by
benchmarks/gpu_check.sh; `graphc bench` is the general tool).

    python3 benchmarks/triton_timing.py --out results.json [--quick]

Every contender's output is checked against graphc's before it is timed. Times are medians of
CUDA-event timed calls after warm-up, inputs resident on the device; graphc runs through
`run_torch` (parameters resident), with and without a CUDA graph. The anchors: device-to-device
copy bandwidth (torch `copy_`) and the targets of the Triton backend:

- fused elementwise chain: effective bandwidth >= 80% of copy bandwidth
- softmax and batch-norm (training forward): graphc time <= torch eager time
- MLP training step: graphc time <= torch eager time and <= 1.2x torch.compile's
Every workload also reports graphc unfused (one kernel per primitive) and the fused/unfused ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # tests.backends.op_matrix; an installed graphc comes first


def timed(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of `fn` (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def compiled(fn: Callable) -> Callable | None:
    try:
        return torch.compile(fn)
    except Exception:  # noqa: BLE001 - a missing toolchain: no torch.compile peer
        return None


def graphc_programs(graph, **opts):
    """graphc's programs of `graph` through the whole pass pipeline: fused launch by launch,
    fused as one CUDA graph, and unfused (one kernel per primitive) launch by launch."""
    from graphc.backends.triton import build_program
    from graphc.pipeline import run_pipeline

    sched = run_pipeline(graph).schedule
    eager = build_program(sched, opts)
    cg = build_program(sched, {**opts, "cuda_graph": True})
    unfused = build_program(run_pipeline(graph, fuse=False).schedule, opts)
    return sched, eager, cg, unfused


def bench_case(name: str, graph, inputs: dict, peers: dict[str, Callable], check: str,
               nbytes: int | None = None, reps: int = 20, rtol: float = 1e-4) -> dict:
    """Time graphc (launches, CUDA graph) and each peer on the same device inputs."""
    sched, eager, cg, unfused = graphc_programs(graph)
    t0 = time.perf_counter()
    ours = eager.run_torch(inputs)
    first_ms = (time.perf_counter() - t0) * 1e3
    row = {"name": name, "first_run_ms (compile)": round(first_ms, 1),
           "kernels fused": len(sched.kernels), "kernels unfused": len(unfused.schedule.kernels)}
    static = cg.graph_inputs()  # the graph reads its own buffers: fill them once, no copies
    for k, v in inputs.items():
        static[k].copy_(v)
    try:
        torch.testing.assert_close(unfused.run_torch(inputs)[check].float(),
                                   ours[check].float(), rtol=rtol, atol=rtol)
    except Exception as e:  # noqa: BLE001 - report, keep going
        row["unfused_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    times = {"graphc": timed(lambda: eager.run_torch(inputs), reps),
             "graphc+cudagraph": timed(lambda: cg.run_torch(static, copy_outputs=False), reps),
             "graphc unfused": timed(lambda: unfused.run_torch(inputs), reps)}
    for peer, fn in peers.items():
        if fn is None:
            continue
        try:
            got = fn()
            torch.testing.assert_close(got.float(), ours[check].float(), rtol=rtol, atol=rtol)
            times[peer] = timed(fn, reps)
        except Exception as e:  # noqa: BLE001 - report, keep going
            row[f"{peer}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    row["ms"] = {k: round(v, 4) for k, v in times.items()}
    if nbytes:
        row["GB/s"] = {k: round(nbytes / v / 1e6, 1) for k, v in times.items()}
    best = min(times["graphc"], times["graphc+cudagraph"])
    row["fused/unfused speedup"] = round(times["graphc unfused"] / best, 3)
    for peer in ("torch eager", "torch.compile"):
        if peer in times:
            row[f"speedup vs {peer.split()[-1]}"] = round(times[peer] / best, 3)
    return row


# -- workloads -------------------------------------------------------------------------------------


def copy_bandwidth(n: int) -> float:
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), 30)
    return 2 * n * 4 / ms / 1e6  # GB/s, bytes read + written


def elementwise(n: int, with_compile: bool) -> dict:
    from graphc.ir.builder import Builder

    b = Builder("chain")
    x, z = b.input("x", (n,)), b.input("z", (n,))
    y = ((x * 1.5 + 0.25).exp() - z).relu() * x.sigmoid()
    g = b.build(outputs={"y": y})
    xs, zs = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")

    def eager():
        return torch.relu(torch.exp(xs * 1.5 + 0.25) - zs) * torch.sigmoid(xs)
    return bench_case("elementwise chain (6 ops, f32)", g, {"x": xs, "z": zs},
                      {"torch eager": eager,
                       "torch.compile": compiled(eager) if with_compile else None}, "y",
                      nbytes=3 * n * 4)


def softmax(rows: int, cols: int, with_compile: bool) -> dict:
    from graphc.ir.builder import Builder

    b = Builder("softmax")
    g = b.build(outputs={"y": b.softmax(b.input("x", (rows, cols)))})
    x = torch.randn(rows, cols, device="cuda")

    def eager():
        return torch.softmax(x, -1)
    return bench_case(f"softmax [{rows}, {cols}]", g, {"x": x},
                      {"torch eager": eager,
                       "torch.compile": compiled(eager) if with_compile else None}, "y",
                      nbytes=2 * rows * cols * 4, rtol=1e-5)


def batch_norm(shape: tuple[int, int, int, int], with_compile: bool) -> dict:
    from graphc.ir.builder import Builder

    c = shape[1]
    b = Builder("bn")
    x = b.input("x", shape)
    params = [b.param("g", (c,), init="ones"), b.param("beta", (c,), init="zeros"),
              b.param("rm", (c,), init="zeros"), b.param("rv", (c,), init="ones")]
    y, _, _ = b.batch_norm(x, *params, training=True)
    g = b.build(outputs={"y": y})
    xs = torch.randn(*shape, device="cuda")
    w, bias = torch.ones(c, device="cuda"), torch.zeros(c, device="cuda")
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")

    def eager():
        return torch.nn.functional.batch_norm(xs, rm, rv, w, bias, training=True)
    return bench_case(f"batch_norm train forward {list(shape)}", g, {"x": xs},
                      {"torch eager": eager,
                       "torch.compile": compiled(eager) if with_compile else None}, "y",
                      nbytes=2 * xs.numel() * 4, rtol=1e-3)


def mlp_train(batch: int, with_compile: bool) -> dict:
    """One SGD training step of the MLP 784-256-256-10 (softmax cross-entropy): graphc's
    train-step graph against PyTorch's forward, backward and torch.optim.SGD on the same
    initial parameters (each peer has its own copy; the check compares the first step's loss)."""
    from graphc.bench.workloads_models import LR, build_mlp, torch_sgd_step
    from graphc.optim import SGD
    from graphc.train import train_step

    widths = (784, 256, 256, 10)
    graph = train_step(build_mlp(batch, widths, train=True), "loss", SGD(lr=LR))
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(batch, widths[0], device="cuda", generator=g)
    labels = torch.randint(0, widths[-1], (batch,), device="cuda", generator=g)
    inputs = {"x": x, "labels": labels, "step": torch.tensor(1, device="cuda")}
    init = {k: torch.tensor(v, device="cuda") for k, v in graph.param_values.items()}

    def peer(compile_forward: bool):
        ps = {k: v.clone().requires_grad_(True) for k, v in init.items()}
        layers = [(ps[f"l{i}.w"], ps[f"l{i}.b"]) for i in range(1, len(widths))]

        def loss_fn():
            h = x
            for i, (w, bias) in enumerate(layers):
                h = h @ w + bias
                if i < len(layers) - 1:
                    h = torch.relu(h)
            return torch.nn.functional.cross_entropy(h, labels)

        fwd = compiled(loss_fn) if compile_forward else loss_fn
        if fwd is None:
            return None
        sgd = torch_sgd_step(fwd, ps, dict)
        return lambda: sgd.run()["loss"]

    return bench_case(f"MLP 784-256-256-10 training step, batch {batch}", graph, inputs,
                      {"torch eager": peer(False),
                       "torch.compile": peer(True) if with_compile else None}, "loss",
                      rtol=1e-4)


def matmul(n: int, dtype: str, precision: str = "ieee") -> dict:
    from graphc.ir.builder import Builder

    b = Builder("mm")
    g = b.build(outputs={"y": b.input("a", (n, n), dtype) @ b.input("w", (n, n), dtype)})
    td = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, w = torch.randn(n, n, device="cuda", dtype=td), torch.randn(n, n, device="cuda", dtype=td)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    from graphc.backends.triton import build_program
    from graphc.passes import decompose
    from graphc.passes.fuse import fuse
    from graphc.passes.memory import plan_memory

    prog = build_program(plan_memory(fuse(decompose(g))), {"precision": precision})
    ours = prog.run_torch({"a": a, "w": w})["y"]
    ref = a @ w
    err = float((ours.float() - ref.float()).abs().max() / ref.float().abs().max())
    t_ours = timed(lambda: prog.run_torch({"a": a, "w": w}), 10)
    t_torch = timed(lambda: a @ w, 10)
    flops = 2 * n ** 3
    return {"name": f"matmul {n}^3 {dtype} ({precision})", "ms": {"graphc": round(t_ours, 3),
            "torch": round(t_torch, 3)}, "TFLOP/s": {"graphc": round(flops / t_ours / 1e9, 1),
            "torch": round(flops / t_torch / 1e9, 1)}, "max rel err vs torch": err}


def op_matrix(reps: int) -> list[dict]:
    """Every op-matrix case and example model: graphc launch-by-launch vs CUDA graph."""
    from graphc.backends.triton import build_program
    from graphc.backends.triton.runtime import numpy_to_torch
    from tests.backends.op_matrix import OP_MATRIX, case_inputs, case_schedule

    rows = []
    for case in OP_MATRIX:
        try:
            sched = case_schedule(case)
            inputs = case_inputs(case)
            dev = {k: numpy_to_torch(v, sched.buffers[k].type.dtype, "cuda")
                   for k, v in inputs.items()}
            eager = build_program(sched)
            cg = build_program(sched, {"cuda_graph": True})
            static = cg.graph_inputs()
            for k, v in dev.items():
                static[k].copy_(v)
            rows.append({"name": case.name, "kernels": len(sched.kernels),
                         "ms": round(timed(lambda e=eager, d=dev: e.run_torch(d), reps), 4),
                         "ms cudagraph": round(timed(
                             lambda c=cg, d=static: c.run_torch(d, copy_outputs=False), reps),
                             4)})
        except Exception as e:  # noqa: BLE001
            rows.append({"name": case.name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile-peers", action="store_true", help="skip torch.compile")
    args = ap.parse_args(argv)
    q = args.quick
    tc = not args.no_compile_peers
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "cuda": torch.version.cuda,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    import triton

    report["triton"] = triton.__version__
    n = (1 << 24) if q else (1 << 26)
    report["copy GB/s"] = round(copy_bandwidth(n), 1)
    rows = []
    for job in (lambda: elementwise(n, tc), lambda: softmax(8192, 1024, tc),
                lambda: softmax(4096, 8192, False), lambda: batch_norm((32, 64, 56, 56), tc),
                lambda: batch_norm((64, 256, 14, 14), False),
                lambda: mlp_train(128, tc), lambda: mlp_train(4096, tc),
                lambda: matmul(4096, "f32"), lambda: matmul(4096, "f32", "tf32"),
                lambda: matmul(4096, "bf16")):
        try:
            rows.append(job())
        except Exception as e:  # noqa: BLE001
            rows.append({"error": f"{type(e).__name__}: {str(e)[:500]}"})
        print(json.dumps(rows[-1]), flush=True)
    report["workloads"] = rows
    chain = rows[0]
    if "GB/s" in chain:
        best = max(chain["GB/s"]["graphc"], chain["GB/s"]["graphc+cudagraph"])
        report["target: elementwise >= 80% of copy"] = {
            "ratio": round(best / report["copy GB/s"], 3),
            "met": best >= 0.8 * report["copy GB/s"]}
    for r in rows[1:7]:
        if "speedup vs eager" in r:
            report[f"target: {r['name']} >= torch eager"] = {
                "speedup": r["speedup vs eager"], "met": r["speedup vs eager"] >= 1.0}
    for r in rows[5:7]:
        if "speedup vs compile" in r:
            report[f"target: {r['name']} within 1.2x of torch.compile"] = {
                "speedup": r["speedup vs compile"], "met": r["speedup vs compile"] >= 1 / 1.2}
    report["op matrix (graphc only: launches vs CUDA graph)"] = op_matrix(5 if q else 10)
    Path(args.out).write_text(json.dumps(report, indent=1))
    for k, v in report.items():
        if k.startswith("target"):
            print(k, v)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
