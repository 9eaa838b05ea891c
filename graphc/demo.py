"""`graphc demo`: train the seed's CNN on real digits with a compiled training step.

The dataset is scikit-learn's 8×8 handwritten digits (1,797 images shipped inside the package:
nothing is downloaded). The demo builds `graphc.models.digits_cnn`, turns it into one training
step graph (forward, backward through autodiff, Adam updates, batch-norm statistics), compiles
it fused and unfused, trains with the fused one, evaluates the inference graph on held-out
digits, and writes the inference model's AOT package and the IR after every stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphc.ir.errors import GraphError

from .compiler import Executable
from .compiler import compile as compile_graph
from .models import digits_cnn
from .optim import Adam
from .train import Trainer, train_step


@dataclass
class DemoConfig:
    target: str = "llvm"
    epochs: int = 12
    batch: int = 32
    channels: int = 8
    lr: float = 3e-3
    seed: int = 0
    out: Path = Path("demo_out")
    threads: int | None = None
    quiet: bool = False


def load_digits_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images scaled to [0, 1] as [N, 1, 8, 8] float32, labels int64; 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise GraphError("the demo needs scikit-learn for its dataset: "
                         "pip install 'graphc[demo]'") from None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = len(x) // 5
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def time_steps(exes: Sequence[Executable], trainer_params: dict[str, np.ndarray],
               feed: dict[str, Any], rounds: int = 15, calls: int = 20) -> list[float]:
    """Median seconds of one training step of each executable (parameters are not updated),
    timed in alternating rounds so that a noisy neighbour or a clock change hits all alike."""
    args = []
    for exe in exes:
        params = {k: v for k, v in trainer_params.items() if k in exe.params}
        exe.run(feed, params)
        args.append(params)
    samples: list[list[float]] = [[] for _ in exes]
    for r in range(rounds):
        order = range(len(exes)) if r % 2 == 0 else reversed(range(len(exes)))
        for i in order:
            t0 = time.perf_counter()
            for _ in range(calls):
                exes[i].run(feed, args[i])
            samples[i].append((time.perf_counter() - t0) / calls)
    return [float(np.median(s)) for s in samples]


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the numbers it printed (accuracy, timings, kernels, bytes)."""
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    console = Console(quiet=cfg.quiet)
    xtr, ytr, xte, yte = load_digits_split(cfg.seed)
    console.print(f"[bold]graphc demo[/]: the seed's CNN on {len(xtr)} training and {len(xte)} "
                  f"test digits (8×8), target [bold]{cfg.target}[/]")

    model = digits_cnn(batch=cfg.batch, channels=cfg.channels, training=True, seed=cfg.seed)
    step_graph = train_step(model, "loss", Adam(lr=cfg.lr))
    t0 = time.perf_counter()
    fused = compile_graph(step_graph, target=cfg.target, fuse=True, threads=cfg.threads)
    t_fused = time.perf_counter() - t0
    unfused = compile_graph(step_graph, target=cfg.target, fuse=False, threads=cfg.threads)
    console.print(f"training step: {len(model.nodes)} layer ops as built → "
                  f"{len(fused.graph.nodes)} primitives after decompose, autodiff and simplify → "
                  f"{fused.stats()['kernels']} kernels; compiled in {t_fused:.2f} s")

    trainer = Trainer(step_graph, run=fused.as_runner())
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = len(xtr) // cfg.batch
    losses: list[float] = []
    t_train = time.perf_counter()
    with tqdm(total=cfg.epochs * steps_per_epoch, desc="training", unit="step",
              disable=cfg.quiet, leave=False) as bar:
        for epoch in range(cfg.epochs):
            perm = rng.permutation(len(xtr))
            for i in range(steps_per_epoch):
                idx = perm[i * cfg.batch:(i + 1) * cfg.batch]
                out = trainer.step({"x": xtr[idx], "labels": ytr[idx]})
                losses.append(float(out["loss"]))
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-steps_per_epoch:]):.3f}")
    t_train = time.perf_counter() - t_train

    # Inference on the held-out digits with the trained weights and running statistics.
    infer = trainer.trained(digits_cnn(batch=len(xte), channels=cfg.channels, training=False,
                                       seed=cfg.seed))
    infer_exe = compile_graph(infer, target=cfg.target, threads=cfg.threads)
    logits = infer_exe.run({"x": xte, "labels": yte})["logits"]
    accuracy = float((logits.argmax(axis=1) == yte).mean())

    feed = {"x": xtr[:cfg.batch], "labels": ytr[:cfg.batch], "step": np.asarray(1, np.int64)}
    t_step_fused, t_step_unfused = time_steps([fused, unfused], trainer.params, feed)
    fs, us = fused.stats(), unfused.stats()

    cfg.out.mkdir(parents=True, exist_ok=True)
    package = cfg.out / "digits_cnn.gcpkg"
    saved = False
    if cfg.target != "reference":
        infer_exe.save(package)
        saved = True
    from .inspect_dump import dump_stages

    dump_dir = cfg.out / "ir"
    dump_stages(step_graph, fused, dump_dir)

    table = Table(title="training step: fused vs unfused", show_edge=False)
    for col in ("", "fused", "unfused", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("kernels", str(fs["kernels"]), str(us["kernels"]),
                  f"{us['kernels'] / fs['kernels']:.1f}× fewer")
    table.add_row("time per step", f"{t_step_fused * 1e3:.2f} ms",
                  f"{t_step_unfused * 1e3:.2f} ms", f"{t_step_unfused / t_step_fused:.2f}× faster")
    if "arena_bytes" in fs:
        table.add_row("arena (planned)", _kib(fs["arena_bytes"]), _kib(us["arena_bytes"]), "")
        table.add_row("naive (no reuse)", _kib(fs["naive_bytes"]), _kib(us["naive_bytes"]),
                      f"{fs['naive_bytes'] / max(fs['arena_bytes'], 1):.1f}× saved (fused)")
        table.add_row("lower bound", _kib(fs["lower_bound_bytes"]),
                      _kib(us["lower_bound_bytes"]), "")
    console.print(table)
    console.print(f"trained {cfg.epochs} epochs ({len(losses)} steps) in {t_train:.1f} s; "
                  f"final loss {np.mean(losses[-steps_per_epoch:]):.4f}")
    console.print(f"[bold]test accuracy: {accuracy * 100:.2f}%[/] on {len(xte)} held-out digits")
    if saved:
        console.print(f"AOT package: {package}   (graphc.load('{package}') runs it without "
                      f"recompiling)")
    console.print(f"IR after every stage: {dump_dir}/")
    return {"accuracy": accuracy, "steps": len(losses), "train_seconds": t_train,
            "step_fused_s": t_step_fused, "step_unfused_s": t_step_unfused,
            "kernels_fused": fs["kernels"], "kernels_unfused": us["kernels"],
            "arena_bytes": fs.get("arena_bytes"), "naive_bytes": fs.get("naive_bytes"),
            "lower_bound_bytes": fs.get("lower_bound_bytes"),
            "package": str(package) if saved else None, "ir_dir": str(dump_dir)}


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"
