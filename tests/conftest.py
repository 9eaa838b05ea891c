"""Shared test fixtures and helpers."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.text import parse_graph, print_graph
from graphc.ir.verify import verify


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
