"""`rematerialize`: recompute cheap values near their late uses instead of keeping them alive.

Contract: the result computes the same outputs as the input graph (it only adds copies of
existing pointwise nodes and redirects some uses to them) and, fused and planned, never needs
more memory: a change is kept only when it lowers the peak (the memory plan's lower bound).
Run it right before `fuse` (CSE would merge the copies back).

A training graph keeps forward values alive until the backward pass reads them; that is where its
memory peak lies. At the peak kernel, each temp buffer live across it whose value is pointwise
(elementwise or movement) and read by some kernel after the peak is a candidate: its cone of
pointwise nodes back to values that are stored anyway (at most `max_cost` of work) is copied
just before the first late reader, and the late readers use the copy, so the original dies
early. Candidates are tried largest first, one change at a time, and each kept change restarts
the search at the new peak (at most `max_rounds` changes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.kernel import Schedule
from graphc.ir.text import Namer

from .base import Pass, PassContext
from .fuse import fuse
from .fuse_lower import node_class, op_cost
from .memory import plan_memory


@dataclass
class RematReport:
    """Peak bytes (memory-plan lower bound) before and after, and what was recomputed."""

    peak_before: int
    peak_after: int
    recomputed: list[str] = field(default_factory=list)
    tried: int = 0

    def __str__(self) -> str:
        names = ", ".join(f"%{n}" for n in self.recomputed) or "nothing"
        return (f"rematerialization: peak {self.peak_before:,} -> {self.peak_after:,} bytes "
                f"({self.tried} candidates tried; recomputed {names})")


def _names(graph: Graph) -> dict[int, str]:
    namer = Namer()
    for v in graph.inputs + graph.params:
        namer.names[id(v.node)] = v.node.attrs["name"]
        namer.taken.add(v.node.attrs["name"])
    return {id(n): namer.name(n) for n in graph.nodes}


def _peak(s: Schedule) -> tuple[int, int]:
    """(peak bytes, kernel position of the peak) of a planned schedule."""
    plan = s.memory
    assert plan is not None
    best, at = -1, 0
    for t in range(len(s.kernels)):
        live = {b for b, (lo, hi) in plan.lifetimes.items() if lo <= t <= hi}
        # an in-place output shares its input's bytes at the kernel that writes it
        size = sum(s.buffers[b].nbytes for b in live if plan.aliases.get(b) not in live)
        if size > best:
            best, at = size, t
    return plan.lower_bound, at


class _Remat:
    def __init__(self, graph: Graph, max_cost: float, fuse_options: dict[str, Any]) -> None:
        self.graph = graph
        self.max_cost = max_cost
        self.fuse_options = fuse_options

    def measure(self, graph: Graph) -> Schedule:
        return plan_memory(fuse(graph, **self.fuse_options))

    def candidates(self, graph: Graph, s: Schedule, at: int) -> list[tuple[Node, list[Node]]]:
        """(value node, its readers in kernels after the peak) for temps live across `at`."""
        names = _names(graph)
        by_name = {names[id(n)]: n for n in graph.nodes}
        kernel_of: dict[str, int] = {}
        for i, k in enumerate(s.kernels):
            for n in k.origin:
                kernel_of[n] = max(kernel_of.get(n, -1), i)
        plan = s.memory
        assert plan is not None
        users = graph.users()
        out: list[tuple[int, Node, list[Node]]] = []
        for buf, (lo, hi) in plan.lifetimes.items():
            n = by_name.get(buf)
            if n is None or not lo < at < hi or node_class(n) != "pointwise":
                continue
            late = [u for u in dict.fromkeys(users[n]) if kernel_of.get(names[id(u)], -1) > at]
            if late:  # all readers late: the copy just moves the computation past the peak
                out.append((s.buffers[buf].nbytes, n, late))
        out.sort(key=lambda t: -t[0])
        return [(n, late) for _, n, late in out]

    def cone(self, n: Node, stored: set[str], names: dict[int, str]) -> list[Node] | None:
        """Pointwise nodes to copy for `n` (n last), stopping at stored values; None if the
        work exceeds max_cost."""
        order: list[Node] = []
        seen: set[int] = set()
        cost = 0.0

        def visit(m: Node) -> bool:
            nonlocal cost
            if id(m) in seen:
                return True
            seen.add(id(m))
            for v in m.inputs:
                u = v.node
                if node_class(u) == "pointwise" and names.get(id(u)) not in stored:
                    if not visit(u):
                        return False
            cost += op_cost(m)
            order.append(m)
            return cost <= self.max_cost

        return order if visit(n) else None

    def apply(self, graph: Graph, n: Node, late: list[Node], s: Schedule) -> Graph | None:
        names = _names(graph)
        cone = self.cone(n, set(s.buffers), names)
        if cone is None:
            return None
        copies: dict[int, Node] = {}

        def use(v: Value) -> Value:
            c = copies.get(id(v.node))
            return c.outputs[v.index] if c is not None else v

        for m in cone:
            copies[id(m)] = Node(m.op, [use(v) for v in m.inputs], m.attrs, m.types,
                                 f"remat.{names[id(m)]}")
        late_ids = {id(u) for u in late}
        first = min(i for i, x in enumerate(graph.nodes) if id(x) in late_ids)
        body: list[Node] = []
        rebuilt: dict[int, Node] = {}

        def new_input(x: Node, v: Value) -> Value:
            if v.node is n and id(x) in late_ids:
                return copies[id(n)].outputs[v.index]
            r = rebuilt.get(id(v.node))
            return r.outputs[v.index] if r is not None else v

        for i, x in enumerate(graph.nodes):
            if i == first:
                body += [copies[id(m)] for m in cone]
            ins = [new_input(x, v) for v in x.inputs]
            if all(a is b for a, b in zip(ins, x.inputs, strict=True)):
                body.append(x)
            else:
                rebuilt[id(x)] = x.with_inputs(ins)
                body.append(rebuilt[id(x)])
        outs = [(k, rebuilt[id(v.node)].outputs[v.index] if id(v.node) in rebuilt else v)
                for k, v in graph.outputs]
        return Graph(graph.name, graph.inputs, graph.params, body, outs, graph.param_values)


def rematerialize(graph: Graph, max_rounds: int = 8, max_cost: float = 8.0,
                  max_tries: int = 6, fuse_options: dict[str, Any] | None = None) -> Graph:
    """The graph with cheap values recomputed where that lowers the fused peak."""
    return rematerialize_with_report(graph, max_rounds, max_cost, max_tries, fuse_options)[0]


def rematerialize_with_report(graph: Graph, max_rounds: int = 8, max_cost: float = 8.0,
                              max_tries: int = 6, fuse_options: dict[str, Any] | None = None,
                              measure: Callable[[Graph], Schedule] | None = None
                              ) -> tuple[Graph, RematReport]:
    """`rematerialize`, also returning the peak before and after and what was recomputed."""
    r = _Remat(graph, max_cost, dict(fuse_options or {}))
    measure = measure or r.measure
    s = measure(graph)
    peak, at = _peak(s)
    report = RematReport(peak, peak)
    for _ in range(max_rounds):
        improved = False
        for n, late in r.candidates(graph, s, at)[:max_tries]:
            report.tried += 1
            new = r.apply(graph, n, late, s)
            if new is None:
                continue
            s2 = measure(new)
            peak2, at2 = _peak(s2)
            if peak2 < peak:
                report.recomputed.append(_names(graph)[id(n)])
                graph, s, peak, at = new, s2, peak2, at2
                improved = True
                break
        if not improved:
            break
    report.peak_after = peak
    return graph, report


@dataclass
class RematPass(Pass):
    """Graph -> Graph with cheap values recomputed near late uses (see the module docstring);
    the report goes to the context log."""

    name: ClassVar[str] = "remat"
    max_rounds: int = 8
    max_cost: float = 8.0

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        out, report = rematerialize_with_report(graph, self.max_rounds, self.max_cost,
                                                fuse_options=ctx.options.get("fuse", {}))
        ctx.log.append({"pass": self.name, "peak_before": report.peak_before,
                        "peak_after": report.peak_after, "recomputed": report.recomputed})
        return out
