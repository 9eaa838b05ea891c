"""The core check of multi-threaded sampling: are all the cores a contender was given running?

On a shared machine the cores a benchmark was given are not always its own: for stretches of
seconds, a virtual machine's vCPUs may share one physical core, or another tenant may take one.
A two-thread contender then runs at one-thread speed for every sample of the stretch (graphc's
two-thread transformer block read 16.9 ms in a full run, all 15 samples within 2 %, and 9.3 ms
when the workload was benchmarked alone right after; in another run ONNX Runtime's and torch's
workers were slowed the same way). Nothing in the samples themselves tells such a stretch from
a slow contender.

So before each round of samples, `CoreGuard` runs the FMA-peak loop (`peak.py`, about 1.7 ms
of pure arithmetic per thread) on one thread and then on all of them, and takes the ratio of
the two rates per thread: about 0.85 on free cores (the rest is the parallel region's start),
about 0.5 when two vCPUs share one core's FMA units, and 0.26 with another process busy on one
of two cores (measured here, a spinning process pinned to the second core). A round below
`SHARED_SHARE` is checked again after a short pause, within a wait budget per sampling loop;
if the cores are still shared, that round's samples are kept apart (`shared_samples`) and the
round is made up by another, at most `repeats` extra rounds. The check runs on libgomp's
threads, whatever runtime the worker measures; they spin briefly after it and then sleep,
within the pause (`settle_s`) the sampler leaves before every sample.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

SHARED_SHARE = 0.7      # per-thread rate on all threads below this share of one thread's
WAIT_S = 0.25           # pause before checking a shared round again ...
WAIT_BUDGET_S = 8.0     # ... and the most one sampling loop waits in all
_FLOPS_PER_THREAD = 2e8  # about 1.7 ms at this machine's 117 GFLOP/s per core


class CoreGuard:
    """Checks the cores before each round of samples (module note). `shares` records every
    round's last check; `unavailable` says why there is no check (no LLVM backend here)."""

    def __init__(self, threads: int, wait_budget_s: float = WAIT_BUDGET_S) -> None:
        self.threads = threads
        self.budget = wait_budget_s
        self.shares: list[float] = []
        self.unavailable = ""
        self.kernel: Any = None
        try:
            from .peak import CHUNKS_PER_THREAD, build_peak_kernel

            self.kernel = build_peak_kernel()
        except Exception as e:  # an optional check: the samples are taken either way
            self.unavailable = f"{type(e).__name__}: {e}"
            return
        per_iter = self.kernel.flops(1, 1) / CHUNKS_PER_THREAD
        self.iters = max(1, int(_FLOPS_PER_THREAD / CHUNKS_PER_THREAD / per_iter))
        self.out = np.zeros(threads * CHUNKS_PER_THREAD, np.float32)

    def _seconds(self, threads: int) -> float:
        t0 = time.perf_counter()
        self.kernel.call(self.iters, threads, self.out)
        return time.perf_counter() - t0

    def share(self) -> float:
        """Per-thread rate on all threads as a share of one thread's rate (best of two)."""
        solo = min(self._seconds(1) for _ in range(2))
        both = min(self._seconds(self.threads) for _ in range(2))
        return solo / both  # each thread did the solo run's work

    def round_shared(self) -> bool:
        """Whether the cores are still shared after waiting (within the budget)."""
        if self.kernel is None:
            return False
        share = self.share()
        while share < SHARED_SHARE and self.budget >= WAIT_S:
            time.sleep(WAIT_S)
            self.budget -= WAIT_S
            share = self.share()
        self.shares.append(round(share, 3))
        return share < SHARED_SHARE
