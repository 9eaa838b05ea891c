"""`decompose`: rewrite every composite op into primitives.

Contract: the result contains primitives only, has the same signature (inputs, parameters,
outputs and their types) and computes the same values as the input graph on the reference
backend. Decompositions are applied recursively (an `lstm` becomes T `lstm_cell`s, each of which
becomes matmuls and elementwise ops); nodes made by a decomposition carry name hints scoped by the
composite they came from (`lstm0.t3.c`), so the unrolled structure stays visible in the text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from graphc.ir.builder import Builder, Tensor
from graphc.ir.graph import Graph, Node, Value

from .base import Pass, PassContext


def rebuild(graph: Graph, b: Builder,
            rewrite: Callable[[Builder, Node, list[Tensor]], Tensor | None] | None = None
            ) -> Graph:
    """Re-emit `graph`'s body through builder `b` (which may expand composites); `rewrite`,
    given a node and its re-emitted inputs, may return what replaces the node's one output
    (None: the node as it is)."""
    vmap: dict[tuple[int, int], Value] = {}

    def m(v: Value) -> Value:
        return vmap.get((id(v.node), v.index), v)

    for n in graph.nodes:
        ins = [b.tensor(m(v)) for v in n.inputs]
        result = rewrite(b, n, ins) if rewrite is not None else None
        if result is None:
            result = b.op(n.op, *ins, name=n.name, **dict(n.attrs))
        outs = result if isinstance(result, tuple) else (result,)
        for old, new in zip(n.outputs, outs, strict=True):
            vmap[(id(n), old.index)] = new.value
    return b.build(outputs={k: b.tensor(m(v)) for k, v in graph.outputs})


def decompose(graph: Graph) -> Graph:
    """Return `graph` with every composite op expanded into primitives."""
    return rebuild(graph, Builder.from_graph(graph, expand_composites=True))


@dataclass
class DecomposePass(Pass):
    """Composites -> primitives (see module docstring)."""

    name: ClassVar[str] = "decompose"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return decompose(graph)
