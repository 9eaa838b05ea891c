"""The fuse pass's graph of groups: a DAG that keeps a topological order while groups merge.

Every fusion decision asks whether some third group lies on a path between the two candidates
(merging them would then close a cycle). Searched over the whole graph, each question costs up to
the size of the graph, and an unrolled recurrence asks it for every merge: quadratic, most of the
pass's time for long sequences. With a topological order `ord` at hand, a path from s to t only
visits groups with ord below ord(t), so the search stops at t's position and a question about a
later group is answered at once.

Merging group c into a adds c's edges to a. An edge x -> y with ord(x) > ord(y) is repaired the
way Pearce and Kelly's dynamic topological sort does: the groups reachable from y with order
below ord(x) and the groups reaching x with order above ord(y) swap into the same set of slots,
those reaching x first. The caller guarantees the merge closes no cycle; a repair that finds one
raises instead of ordering a cycle.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import networkx as nx

from graphc.ir.errors import GraphError


class OrderedDag:
    """A networkx DiGraph plus a topological order maintained under `contract`."""

    def __init__(self, nodes: Iterable[Hashable], edges: Iterable[tuple[Hashable, Hashable]]):
        self.graph = nx.DiGraph()
        self.graph.add_nodes_from(nodes)
        self.graph.add_edges_from(edges)
        try:
            order = list(nx.topological_sort(self.graph))
        except nx.NetworkXUnfeasible as e:
            raise GraphError(f"fuse: the groups' dependences form a cycle "
                             f"{nx.find_cycle(self.graph)}") from e
        self.ord = {n: i for i, n in enumerate(order)}

    def successors(self, n: Hashable):
        return self.graph.successors(n)

    def predecessors(self, n: Hashable):
        return self.graph.predecessors(n)

    def reaches(self, src: Hashable, dst: Hashable) -> bool:
        """Whether a path of at least one edge leads from src to dst."""
        limit = self.ord[dst]
        if self.ord[src] >= limit:
            return False
        stack, seen = [src], {src}
        while stack:
            for s in self.graph.successors(stack.pop()):
                if s == dst:
                    return True
                if s not in seen and self.ord[s] < limit:
                    seen.add(s)
                    stack.append(s)
        return False

    def contract(self, a: Hashable, c: Hashable) -> None:
        """Merge c into a: a takes over c's edges (the edges between them disappear)."""
        preds = [p for p in self.graph.predecessors(c) if p != a]
        succs = [s for s in self.graph.successors(c) if s != a]
        self.graph.remove_node(c)
        del self.ord[c]
        for p in preds:
            self.add_edge(p, a)
        for s in succs:
            self.add_edge(a, s)

    def add_edge(self, x: Hashable, y: Hashable) -> None:
        self.graph.add_edge(x, y)
        lo, hi = self.ord[y], self.ord[x]
        if hi < lo:
            return
        forward = self._search(y, self.graph.successors, lambda o: o <= hi)
        if x in forward:
            raise GraphError(f"fuse: an edge {x} -> {y} would close a cycle in the group graph")
        backward = self._search(x, self.graph.predecessors, lambda o: o > lo)
        moved = sorted(backward, key=self.ord.__getitem__) + sorted(forward,
                                                                    key=self.ord.__getitem__)
        slots = sorted(self.ord[n] for n in moved)
        self.ord.update(zip(moved, slots, strict=True))

    def _search(self, start: Hashable, step, keep) -> set:
        found, stack = {start}, [start]
        while stack:
            for n in step(stack.pop()):
                if n not in found and keep(self.ord[n]):
                    found.add(n)
                    stack.append(n)
        return found
