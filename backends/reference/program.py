"""The reference target: a Schedule executed by the numpy kernel-IR interpreter."""

from __future__ import annotations

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

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.signature = Signature.of(schedule)

    def run(self, arrays: Mapping[str, np.ndarray], *, frozen_params: bool = False
            ) -> dict[str, np.ndarray]:
        inputs = {n: arrays[n] for n in self.schedule.inputs}
        params = {n: arrays[n] for n in self.schedule.params}
        return run_schedule(self.schedule, inputs, params, check_writes=False)

    def save(self, folder: Path) -> dict[str, Any]:
        raise GraphError("the reference target has no compiled code to save; compile for "
                         "target 'llvm' or 'triton'")


def build_program(schedule: Schedule, options: Mapping[str, Any] | None = None
                  ) -> ReferenceProgram:
    return ReferenceProgram(schedule)
