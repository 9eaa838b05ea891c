"""The reference target: a Schedule executed by the numpy kernel-IR interpreter."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from graphc.backends.program import Signature
from graphc.ir.errors import GraphError
from graphc.ir.kernel import Schedule

from .kernel_interp import run_schedule


class ReferenceProgram:
    """Runs a schedule kernel by kernel with numpy, honouring its memory plan."""

    target = "reference"

    def __init__(self, schedule: Schedule, profile: bool = False) -> None:
        self.schedule = schedule
        self.signature = Signature.of(schedule)
        self.profiled = profile
        self.runs = 0
        self._seconds = np.zeros(len(schedule.kernels) + 1)

    def run(self, arrays: Mapping[str, np.ndarray], *, frozen_params: bool = False
            ) -> dict[str, np.ndarray]:
        inputs = {n: arrays[n] for n in self.schedule.inputs}
        params = {n: arrays[n] for n in self.schedule.params}
        if not self.profiled:
            return run_schedule(self.schedule, inputs, params, check_writes=False)
        t0 = time.perf_counter()
        out = run_schedule(self.schedule, inputs, params, check_writes=False,
                           seconds=self._seconds)
        self._seconds[-1] += time.perf_counter() - t0
        self.runs += 1
        return out

    def profile_data(self, reset: bool = False) -> dict[str, Any]:
        """Seconds in each kernel and in whole calls since the last reset (with `profile`)."""
        kernels = [{"name": k.name, "kind": k.kind, "origin": list(k.origin)}
                   for k in self.schedule.kernels]
        out = {"kernels": kernels, "seconds": self._seconds[:-1].tolist(),
               "total_seconds": float(self._seconds[-1]), "runs": self.runs}
        if reset:
            self._seconds[:] = 0.0
            self.runs = 0
        return out

    def save(self, folder: Path) -> dict[str, Any]:
        raise GraphError("the reference target has no compiled code to save; compile for "
                         "target 'llvm' or 'triton'")


def build_program(schedule: Schedule, options: Any = None) -> ReferenceProgram:
    profile = options.get("profile", False) if isinstance(options, Mapping) \
        else getattr(options, "profile", False)
    return ReferenceProgram(schedule, bool(profile))
