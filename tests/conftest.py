"""Shared test fixtures and helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from graphc.ir.kernel import Schedule
from graphc.ir.text import parse_graph, print_graph
from graphc.ir.verify import verify
from graphc.passes.memory import check_memory_plan, plan_memory

# Tests patch passes at run time (limits, rewrites), which the pipeline cache's key cannot see:
# compiles run every pass here unless a test turns the cache on (tests/test_pipeline_cache.py).
os.environ["GRAPHC_PIPELINE_CACHE"] = "0"


def roundtrip(graph):
    """Verify `graph` and check its text form parses back to the same text."""
    verify(graph)
    text = print_graph(graph)
    again = print_graph(parse_graph(text))
    assert again == text
    return graph


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def schedules_checked(monkeypatch):
    """Every Schedule any test builds gets its memory plan checked afterwards (unplanned ones are
    planned first). A test that plants a bad plan on purpose removes it from the yielded list."""
    built: list[Schedule] = []
    init = Schedule.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Schedule, "__init__", recording_init)
    yield built
    for s in list(built):
        check_memory_plan(s if s.memory is not None else plan_memory(s))
