"""Graph passes. Each pass is a small named dataclass whose docstring states its contract and
whose fields are its options; `run(graph, ctx)` returns a new graph."""

from .autodiff import AutodiffPass, autodiff
from .base import Pass, PassContext
from .decompose import DecomposePass, decompose
from .simplify import SimplifyPass, simplify

__all__ = ["AutodiffPass", "DecomposePass", "Pass", "PassContext", "SimplifyPass", "autodiff",
           "decompose", "simplify"]
