"""Fixtures for pass tests: every Schedule a test builds gets its memory plan checked."""

from __future__ import annotations

import pytest

from graphc.ir.kernel import Schedule
from graphc.passes.memory import check_memory_plan, plan_memory


@pytest.fixture(autouse=True)
def schedules_checked(monkeypatch):
    """Record every Schedule constructed during the test; afterwards plan the unplanned ones and
    run `check_memory_plan` on all of them. A test that plants a bad plan on purpose removes it
    from the yielded list."""
    built: list[Schedule] = []
    init = Schedule.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Schedule, "__init__", recording_init)
    yield built
    for s in list(built):
        check_memory_plan(s if s.memory is not None else plan_memory(s))
