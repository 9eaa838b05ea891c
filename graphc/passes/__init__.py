"""Graph passes. Each pass is a small named dataclass whose docstring states its contract and
whose fields are its options; `run(graph, ctx)` returns a new graph."""

from .base import Pass, PassContext
from .decompose import DecomposePass, decompose

__all__ = ["DecomposePass", "Pass", "PassContext", "decompose"]
