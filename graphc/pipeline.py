"""The pass pipeline, as one ordered list anyone can read in a minute.

    graph --decompose--> primitives --conv_phases--> no dilated-input convolutions
          --simplify--> smaller graph --fuse--> Schedule
          --plan_memory--> Schedule + MemoryPlan --(backend codegen)--> Program

`autodiff` and the optimizer are not in this list: they are graph-to-graph constructions the
user asks for (`graphc.autodiff`, `graphc.train_step`), whose result enters the pipeline like any
other graph. `run_pipeline` records every stage (pass name, node or kernel count, seconds) in the
context's log, which `graphc show --print-after-all` and the viewer display.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from graphc.ir.graph import Graph
from graphc.ir.kernel import Schedule
from graphc.ir.verify import verify

from .passes.base import Pass, PassContext
from .passes.conv_phases import ConvPhasesPass
from .passes.decompose import DecomposePass
from .passes.simplify import SimplifyPass


def graph_passes() -> list[Pass]:
    """The graph-level passes, in order."""
    return [DecomposePass(), ConvPhasesPass(), SimplifyPass()]


@dataclass
class PipelineResult:
    graph: Graph          # after the graph passes
    schedule: Schedule    # after fusion and memory planning


def run_pipeline(graph: Graph, ctx: PassContext | None = None, *, fuse: bool = True,
                 remat: bool = False, fuse_options: dict[str, Any] | None = None
                 ) -> PipelineResult:
    """Graph → planned Schedule through every pass; verifies after each graph pass if asked."""
    from .passes.fuse import fuse as fuse_graph
    from .passes.memory import plan_memory

    ctx = ctx or PassContext(verify=False)
    graph.check_defined()  # a dangling value would surface as a KeyError deep in a pass
    for p in graph_passes():
        t0 = time.perf_counter()
        before = len(graph.nodes)
        graph = p.run(graph, ctx)
        if ctx.verify:
            verify(graph)
        ctx.log.append({"pass": p.name, "nodes_before": before, "nodes": len(graph.nodes),
                        "seconds": time.perf_counter() - t0})
    if remat:
        from .passes.remat import rematerialize

        graph = rematerialize(graph)
    t0 = time.perf_counter()
    schedule = fuse_graph(graph, fuse=fuse, **(fuse_options or {}))
    ctx.log.append({"pass": "fuse", "nodes": len(graph.nodes), "kernels": len(schedule.kernels),
                    "seconds": time.perf_counter() - t0})
    t0 = time.perf_counter()
    schedule = plan_memory(schedule)
    plan = schedule.memory
    ctx.log.append({"pass": "plan_memory", "kernels": len(schedule.kernels),
                    "arena_bytes": plan.arena_bytes if plan else 0,
                    "seconds": time.perf_counter() - t0})
    return PipelineResult(graph, schedule)
