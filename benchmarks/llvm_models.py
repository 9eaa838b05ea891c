"""Quick timings of whole graphs compiled by the LLVM backend against numpy and PyTorch eager
(the spec's performance targets; `graphc bench` is the full, checked harness).

    python benchmarks/llvm_models.py                 # every workload, 1 thread
    python benchmarks/llvm_models.py --threads 2 --only softmax,conv

Every number is the median of `--repeats` runs in this process, baseline and graphc
interleaved; outputs are compared before timing. numpy's BLAS and torch get the same thread
count (set before they are imported).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable


def _setup_threads(n: int) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "GRAPHC_NUM_THREADS"):
        os.environ[var] = str(n)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    import numpy as np

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _row(name: str, ours: float, peers: dict[str, float], goal: str, unit: str = "ms") -> None:
    scale = 1e3 if unit == "ms" else 1e6
    cols = [f"{name:14s} graphc {ours * scale:8.2f} {unit}"]
    cols += [f"{k} {v * scale:8.2f} {unit} ({v / ours:5.2f}x)" for k, v in peers.items()]
    print("  ".join(cols) + f"   goal: {goal}")


# -- workloads ----------------------------------------------------------------------------------


def elementwise(rep: int) -> None:
    import numpy as np

    import graphc

    n = 1 << 24
    b = graphc.Builder("elementwise")
    x, w, bias = (b.input(k, (n,)) for k in ("x", "w", "b"))
    b.output("y", (x * w + bias).relu() * x.sigmoid() + x.tanh() * 0.5)
    exe = graphc.compile(b.build(), target="llvm")
    rng = np.random.default_rng(0)
    ins = {k: rng.standard_normal(n).astype(np.float32) for k in ("x", "w", "b")}
    t1, t2, y = (np.empty(n, np.float32) for _ in range(3))

    def numpy_ops():  # op by op into preallocated buffers
        np.multiply(ins["x"], ins["w"], out=t1)
        np.add(t1, ins["b"], out=t1)
        np.maximum(t1, 0.0, out=t1)
        np.negative(ins["x"], out=t2)
        np.exp(t2, out=t2)
        np.add(t2, 1.0, out=t2)
        np.divide(1.0, t2, out=t2)
        np.multiply(t1, t2, out=t1)
        np.tanh(ins["x"], out=y)
        np.multiply(y, 0.5, out=y)
        np.add(t1, y, out=y)
        return y

    np.testing.assert_allclose(exe(ins)["y"], numpy_ops(), rtol=1e-5, atol=1e-6)
    _row("elementwise", median_time(lambda: exe(ins), rep),
         {"numpy": median_time(numpy_ops, rep)}, ">= 6x numpy")


def softmax(rep: int) -> None:
    import numpy as np
    import torch

    import graphc

    n = 4096
    b = graphc.Builder("softmax")
    b.output("y", b.softmax(b.input("x", (n, n))))
    exe = graphc.compile(b.build(), target="llvm")
    x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    tx, ty = torch.from_numpy(x), torch.empty(n, n)
    np.testing.assert_allclose(exe(x=x)["y"], torch.softmax(tx, -1).numpy(), atol=1e-7)
    _row("softmax", median_time(lambda: exe(x=x), rep),
         {"torch": median_time(lambda: torch.softmax(tx, -1, out=ty), rep)}, ">= 2x torch")


def sgemm(rep: int) -> None:
    import numpy as np

    import graphc

    for n in (512, 1024):
        b = graphc.Builder("sgemm")
        b.output("c", b.input("a", (n, n)) @ b.input("b", (n, n)))
        exe = graphc.compile(b.build(), target="llvm")
        rng = np.random.default_rng(0)
        a, bb = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        out = np.empty((n, n), np.float32)
        np.testing.assert_allclose(exe(a=a, b=bb)["c"], a @ bb, rtol=1e-3, atol=1e-3)
        ours = median_time(lambda a=a, bb=bb, exe=exe: exe(a=a, b=bb), rep)
        peer = median_time(lambda a=a, bb=bb, out=out: np.matmul(a, bb, out=out), rep)
        _row(f"sgemm {n}", ours, {"numpy": peer}, f">= 1.0x OpenBLAS ({2 * n**3 / ours / 1e9:.0f}"
             " GFLOP/s)")


def conv(rep: int) -> None:
    import numpy as np
    import torch

    import graphc

    b = graphc.Builder("conv", seed=0)
    x = b.input("x", (32, 64, 32, 32))
    w = b.param("w", (64, 64, 3, 3), init="he")
    bias = b.param("bias", (64,), init="normal")
    b.output("y", b.conv2d(x, w, bias, padding=1).relu())
    g = b.build()
    exe = graphc.compile(g, target="llvm")
    xs = np.random.default_rng(0).standard_normal((32, 64, 32, 32)).astype(np.float32)
    tx = torch.from_numpy(xs)
    tw, tb = (torch.from_numpy(g.param_values[k]) for k in ("w", "bias"))

    def torch_conv():
        return torch.relu(torch.nn.functional.conv2d(tx, tw, tb, padding=1))

    np.testing.assert_allclose(exe(x=xs)["y"], torch_conv().numpy(), rtol=1e-4, atol=1e-4)
    _row("conv3x3", median_time(lambda: exe(x=xs), rep),
         {"torch": median_time(torch_conv, rep)}, ">= 1.0x torch eager")


def _mlp(batch: int = 128, widths=(784, 256, 256, 10)):
    import graphc

    b = graphc.Builder("mlp", seed=0)
    h = b.input("x", (batch, widths[0]))
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = b.param(f"l{i}.w", (n_in, n_out), init="he")
        bias = b.param(f"l{i}.b", (n_out,), init="zeros")
        h = b.dense(h, w, bias, activation="relu" if i < len(widths) - 2 else "none")
    labels = b.input("labels", (batch,), "i64")
    fwd = b.build(outputs={"loss": b.cross_entropy(h, labels)})
    return graphc.train_step(fwd, "loss", graphc.SGD(0.05)), fwd


def mlp_train(rep: int) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    import graphc

    step, fwd = _mlp()
    t0 = time.perf_counter()
    exe = graphc.compile(step, target="llvm", cache=False)
    cold = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    ins = {"x": rng.random((128, 784), dtype=np.float32),
           "labels": rng.integers(0, 10, 128).astype(np.int64), "step": np.array(1, np.int64)}
    params = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in fwd.param_values.items()}
    tx, tl = torch.from_numpy(ins["x"]), torch.from_numpy(ins["labels"])

    def torch_step():
        h = tx
        for i in range(3):
            h = torch.addmm(params[f"l{i}.b"], h, params[f"l{i}.w"])
            h = torch.relu(h) if i < 2 else h
        loss = F.cross_entropy(h, tl)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            return [p - 0.05 * g for p, g in zip(params.values(), grads, strict=True)]

    got = exe(ins)
    want = torch_step()
    for (k, _), w in zip(params.items(), want, strict=True):
        np.testing.assert_allclose(got[f"new.{k}"], w.detach().numpy(), rtol=1e-4, atol=1e-5)
    _row("mlp_train", median_time(lambda: exe(ins), rep),
         {"torch": median_time(torch_step, rep)}, ">= 1.15x torch eager")
    print(f"{'':14s} cold compile of the MLP training graph: {cold * 1e3:.0f} ms (goal < 1 s); "
          f"cached: {_cached_compile(step) * 1e3:.1f} ms")


def _cached_compile(graph) -> float:
    import graphc

    graphc.compile(graph, target="llvm")
    t0 = time.perf_counter()
    graphc.compile(graph, target="llvm")
    return time.perf_counter() - t0


def dispatch(rep: int) -> None:
    import numpy as np

    import graphc

    b = graphc.Builder("tiny")
    b.output("y", b.input("x", (16,)) + 1.0)
    exe = graphc.compile(b.build(), target="llvm")
    x = np.ones(16, np.float32)
    calls = 20000
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            exe(x=x)
        best = min(best, (time.perf_counter() - t0) / calls)
    print(f"{'dispatch':14s} graphc {best * 1e6:8.2f} us per call of a 16-element graph "
          "(argument checks included)   goal: < 20 us")


WORKLOADS = {"elementwise": elementwise, "softmax": softmax, "sgemm": sgemm, "conv": conv,
             "mlp": mlp_train, "dispatch": dispatch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--only", default="", help="comma-separated subset of " + ", ".join(WORKLOADS))
    args = p.parse_args()
    _setup_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or list(WORKLOADS)
    print(f"graphc LLVM backend, {args.threads} thread(s), median of {args.repeats} runs "
          f"(python {sys.version.split()[0]}, torch {torch.__version__})")
    for name in names:
        WORKLOADS[name](args.repeats)


if __name__ == "__main__":
    main()
