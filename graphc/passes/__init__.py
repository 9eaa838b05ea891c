"""Graph passes. Each pass is a small named dataclass whose docstring states its contract and
whose fields are its options; `run(graph, ctx)` returns a new graph."""

from .autodiff import AutodiffPass, autodiff
from .base import Pass, PassContext
from .conv_phases import ConvPhasesPass, split_dilated_convs
from .decompose import DecomposePass, decompose
from .fuse import FuseOptions, FusePass, fuse
from .memory import PlanMemoryPass, check_memory_plan, memory_report, plan_memory
from .remat import RematPass, rematerialize, rematerialize_with_report
from .simplify import SimplifyPass, simplify

__all__ = ["AutodiffPass", "ConvPhasesPass", "DecomposePass", "FuseOptions", "FusePass", "Pass",
           "PassContext", "PlanMemoryPass", "RematPass", "SimplifyPass", "autodiff",
           "check_memory_plan", "decompose", "fuse", "memory_report", "plan_memory",
           "rematerialize", "rematerialize_with_report", "simplify", "split_dilated_convs"]
