"""`fuse`: a graph of primitives -> a `Schedule` of kernels (the kernel IR, `ir/kernel.py`).

Contract: the schedule computes the graph's outputs (the kernel-IR interpreter agrees with the
graph reference), every live primitive is computed by some kernel (constants are data: splats
become immediates, arrays constant buffers), and every decision is recorded: each kernel lists
its member nodes (`origin`) and every merge that was tried and refused is a `Rejection` with its
reason. `fuse=False` gives one kernel per primitive: the unfused baseline.

Note: how groups form
---------------------
A group is a set of nodes lowered to one kernel by `fuse_lower.Lowering`; a merge is legal when
the lowering succeeds (one domain, reads of a reduction or template result at its own point), the
group graph stays acyclic (`fuse_dag.OrderedDag`: searches bounded by a topological order), the
kernel stays under `max_members`, the work it does twice stays under `max_recompute_cost`, and no
index it reads through grows past `fuse_lower.MAX_INDEX_SIZE` terms (reshapes and transposes in
turn nest divisions).

1. Producers into consumers (reverse topological order). A pointwise node (elementwise,
   movement, iota, random) that is not a graph output joins the group of its consumers. When its
   consumers sit in several groups, it is recomputed in each (no buffer at all) if that is cheap:
   at most `max_consumers` groups and `op_cost * (groups - 1) <= max_recompute_cost`. Otherwise
   it stays a kernel of its own and the consumers load it. An elementwise node reading a
   template through a chain of single-reader elementwise nodes (relu of matmul + bias) waits
   for phase 2 instead, where it becomes part of the template's epilogue; so does a cone of
   elementwise nodes that reads one template's result several times (SiLU's z·σ(z)) when
   taking it into the epilogue saves stores (`epilogue_cones`).
2. Consumers into anchors (topological order): each group tries to absorb the groups reading its
   results: pointwise ops after a reduction (one sweep per dependent reduction: softmax in one
   kernel), dependent reductions over the same rows (two-pass variance), epilogues of matmul and
   conv (bias, activation, residual add, batch-norm affine), and elementwise multi-output groups.
3. Siblings (horizontal): groups that read a common buffer and have the same domain merge if
   neither depends on the other: batch-norm's sum and sum of squares become one sweep.

Templates take index arithmetic (movement) and casts as prologue for free, and cheap elementwise
ops up to `max_prologue_cost` per operand (a relu applied while a GEMM tile is loaded, so the
relu's output need not be stored); costlier ones would run again for every tile that loads
them. Library kernels (`take`, `scatter_add`, `select_scatter`) read and write whole buffers
and fuse with nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import networkx as nx
import numpy as np

from graphc.ir.errors import GraphError, describe_node
from graphc.ir.graph import Graph, Node, Value
from graphc.ir.kernel import Buffer, Kernel, Rejection, Schedule, kernel_reads, kernel_writes
from graphc.ir.ops.indexing import check_index_range
from graphc.ir.registry import get_op
from graphc.ir.text import Namer
from graphc.ir.types import TensorType

from .base import Pass, PassContext
from .fuse_dag import OrderedDag
from .fuse_lower import Lowering, Reject, is_splat, node_class, op_cost
from .simplify import const_array, fold_empty_values


@dataclass(frozen=True)
class Trial:
    """A group that lowers to one kernel: the work it does twice, and its (domain, reduce
    domain) when it is a loop kernel."""

    cost: float
    domain: tuple | None


@dataclass(frozen=True)
class FuseOptions:
    """Knobs of the fusion pass (defaults are what benchmarks use)."""

    fuse: bool = True
    horizontal: bool = True
    max_members: int = 96
    max_consumers: int = 4
    max_recompute_cost: float = 8.0
    max_prologue_cost: float = 1.0


def fuse(graph: Graph, fuse: bool = True, **options: Any) -> Schedule:
    """Partition the primitives of `graph` into kernels (see the module docstring)."""
    opts = FuseOptions(fuse=fuse, **options)
    return _Fusion(_runnable(graph), opts).run()


def _runnable(graph: Graph) -> Graph:
    """`graph` with its empty values folded (`simplify.fold_empty`; also when the graph skipped
    `simplify`), so that no kernel loops over an empty range. Refused, naming the node: one
    still reading an empty value into a non-empty result, which has nothing to compute it from
    (a gather from nothing), and a gather or scatter at constant positions outside its axis,
    which would otherwise fail only when the graph runs."""
    graph = fold_empty_values(graph)
    for n in graph.live_nodes():
        empty = [v for v in n.inputs if v.type.size == 0]
        if empty and n.outputs[0].type.size:
            raise GraphError(f"{describe_node(n)} reads the empty value {empty[0].type} into "
                             f"a non-empty result {n.outputs[0].type}")
        positions = const_array(n.inputs[1]) if n.op in ("take", "scatter_add") else None
        if positions is not None:
            x, axis = n.inputs[0], n.attrs["axis"]
            try:
                check_index_range(n.op, positions, x.shape[axis], axis, x.shape)
            except GraphError as e:
                raise GraphError(f"{describe_node(n)}: constant {e}") from None
    return graph


@dataclass
class FusePass(Pass):
    """Graph of primitives -> Schedule (a change of IR level: `run` returns a Schedule)."""

    name: ClassVar[str] = "fuse"
    fuse: bool = True

    def run(self, graph: Graph, ctx: PassContext) -> Schedule:  # type: ignore[override]
        return fuse(graph, self.fuse, **ctx.options.get("fuse", {}))


class _Fusion:
    def __init__(self, graph: Graph, opts: FuseOptions) -> None:
        self.graph = graph
        self.opts = opts
        self.nodes = list(graph.live_nodes())
        for n in self.nodes:
            if not get_op(n.op).primitive:
                raise GraphError(f"fuse needs primitives: node %{n.name} is the composite "
                                 f"{n.op!r}; run decompose first")
            if len(n.types) != 1:
                raise GraphError(f"fuse: node %{n.name} ({n.op}) has {len(n.types)} outputs")
        self.pos = {id(n): i for i, n in enumerate(self.nodes)}
        namer = Namer()
        for v in graph.inputs + graph.params:
            namer.names[id(v.node)] = v.node.attrs["name"]
            namer.taken.add(v.node.attrs["name"])
        for n in graph.nodes:
            namer.name(n)
        self.namer = namer
        self.users: dict[int, list[Node]] = {id(n): [] for n in self.nodes}
        for n in self.nodes:
            for v in n.inputs:
                self.users.setdefault(id(v.node), []).append(n)
        self.out_ids = {id(v.node) for _, v in graph.outputs}
        self.groups: dict[int, list[Node]] = {}
        self.member_ids: dict[int, set[int]] = {}
        self.domains: dict[tuple[int, int], Any] = {}
        self.trials: dict[tuple, Trial | Reject] = {}
        self.where: dict[int, set[int]] = {}
        self.next_gid = 0
        self.rejections: dict[tuple[str, str, str], Rejection] = {}
        self.dag = OrderedDag((), ())
        self.epilogues = self.find_epilogues()

    # -- names and membership ------------------------------------------------------------------
    def name(self, n: Node) -> str:
        return self.namer.name(n)

    def buffer_of(self, v: Value) -> str:
        return self.namer.name(v.node)

    def new_group(self, members: list[Node]) -> int:
        gid = self.next_gid
        self.next_gid += 1
        self.set_group(gid, members)
        for n in members:
            self.where.setdefault(id(n), set()).add(gid)
        return gid

    def set_group(self, gid: int, members: list[Node]) -> None:
        self.groups[gid] = sorted(members, key=lambda n: self.pos[id(n)])
        self.member_ids[gid] = {id(n) for n in members}

    def stores_of(self, members: list[Node], view: _View) -> list[Value]:
        """Members whose value the caller or a kernel without them reads."""
        out = []
        for n in members:
            if id(n) in self.out_ids or any(
                    id(n) not in view.members(g)
                    for u in self.users[id(n)] for g in view.where(u)):
                out.append(n.out)
        return out

    def lower(self, name: str, members: list[Node], view: _View) -> Kernel:
        """The kernel of `members` storing what `view` says others read."""
        stores = self.stores_of(members, view)
        origin = tuple(self.name(n) for n in members)
        return Lowering(name, members, stores, self.buffer_of, origin,
                        self.opts.max_prologue_cost).lower()

    def trial(self, members: list[Node], view: _View) -> Reject | Trial:
        """Whether `members` lower to one kernel, its recompute cost and loop domain. A
        lowering depends on nothing but the members and the values stored, so each pair is
        tried once: phase 1 retries a group for every producer that joins another group, and
        `domain_of` asks again for accepted groups (an LSTM training step: 27 % of 6000
        lowerings were repeats). Only the verdict is kept, not the kernel: thousands of
        kept kernel trees made every run of the garbage collector walk them, which cost more
        than the repeats saved."""
        stores = self.stores_of(members, view)
        key = (tuple(id(n) for n in members), tuple(id(v) for v in stores))
        done = self.trials.get(key)
        if done is None:
            low = Lowering("k?", members, stores, self.buffer_of, (),
                           self.opts.max_prologue_cost)
            try:
                k = low.lower()
                done = Trial(low.recompute_cost(), (k.domain, k.reduce_domain)
                             if k.kind == "loop" else None)
            except Reject as r:  # kept without its traceback, whose frames hold this pass
                done = Reject(r.reason, r.detail)
            self.trials[key] = done
        return done

    def view(self, where: dict[int, set[int]] | None = None,
             members: dict[int, set[int]] | None = None) -> _View:
        return _View(self, where or {}, members or {})

    # -- the algorithm -------------------------------------------------------------------------
    def run(self) -> Schedule:
        # an empty constant needs no kernel to fill it (`simplify.fold_empty` leaves one for
        # every empty value): its buffer stays a constant with no data
        fill = [n for n in self.nodes if n.op == "constant" and is_splat(n) and n.out.type.size
                and (id(n) in self.out_ids
                     or any(node_class(u) == "library" for u in self.users[id(n)]))]
        for n in self.nodes:
            if n.op != "constant":
                self.new_group([n])
        for n in fill:
            self.new_group([n])
        if self.opts.fuse:
            self.producers_into_consumers()
            self.build_dag()
            self.consumers_into_anchors()
            if self.opts.horizontal:
                self.siblings()
        return self.schedule()

    def try_lower(self, members: list[Node], view: _View) -> Reject | Trial:
        if len(members) > self.opts.max_members:
            return Reject("size cap", f"{len(members)} nodes > max_members="
                                      f"{self.opts.max_members}")
        res = self.trial(members, view)
        if isinstance(res, Reject):
            return res
        if res.cost > self.opts.max_recompute_cost:
            return Reject("recompute cap", f"the kernel would recompute work of cost "
                                           f"{res.cost:g} > max_recompute_cost="
                                           f"{self.opts.max_recompute_cost:g}")
        return res

    def reject(self, producer: Node, consumer: Node, r: Reject) -> None:
        key = (self.name(producer), self.name(consumer), r.reason)
        self.rejections[key] = Rejection(key[0], key[1], r.reason, r.detail)

    def sort(self, members) -> list[Node]:
        return sorted(members, key=lambda n: self.pos[id(n)])

    # phase 1 ----------------------------------------------------------------------------------
    def producers_into_consumers(self) -> None:
        for p in reversed(self.nodes):
            if node_class(p) != "pointwise" or id(p) in self.out_ids or not self.users[id(p)]:
                continue
            if self.epilogue_of(p) is not None:
                continue  # phase 2 makes it the epilogue of its template (see epilogue_of)
            (own,) = self.where[id(p)]
            targets = sorted({g for u in self.users[id(p)] for g in self.where[id(u)]})
            if len(targets) > 1:
                cone = self.cone_cost(p)
                extra = cone * (len(targets) - 1)
                # free index arithmetic (a transposed weight) is recomputed by any number of readers
                many = cone > 0 and len(targets) > self.opts.max_consumers
                if many or extra > self.opts.max_recompute_cost:
                    why = Reject("recompute cap", f"%{self.name(p)} feeds {len(targets)} kernels;"
                                 f" recomputing it and its producers in each costs {extra:g} "
                                 f"(max_consumers={self.opts.max_consumers}, "
                                 f"max_recompute_cost={self.opts.max_recompute_cost:g})")
                    for g in targets:
                        self.reject(p, next(u for u in self.users[id(p)]
                                            if g in self.where[id(u)]), why)
                    continue
            view = self.view({id(p): set(targets)},
                             {g: self.member_ids[g] | {id(p)} for g in targets})
            failed = None
            for g in targets:
                res = self.try_lower(self.sort(self.groups[g] + [p]), view)
                if isinstance(res, Reject):
                    failed = (g, res)
                    break
            if failed is not None:
                g, r = failed
                reader = next(u for u in self.users[id(p)] if g in self.where[id(u)])
                self.reject(p, reader, r)
                continue
            del self.groups[own], self.member_ids[own]
            self.where[id(p)] = set(targets)
            for g in targets:
                self.set_group(g, self.groups[g] + [p])

    def epilogue_of(self, p: Node) -> Node | None:
        """The template whose epilogue elementwise `p` should be: one whose only reader is p.

        Fusing p into its consumers first would leave the template's raw result in memory and,
        for accumulation chains (autodiff's sums of per-step weight gradients), keep every
        contribution alive until one big kernel at the end; as an epilogue, each add rides on
        its own matmul and the running sum flows from one to the next."""
        return self.epilogues.get(id(p))

    def find_epilogues(self) -> dict[int, Node]:
        """`epilogue_of` for every node, in one pass in program order: an elementwise node's
        template is the first of its operands read by nothing else that is a template or has
        one (relu(matmul + bias): the relu rides on the template's epilogue as well, rather
        than on the next matmul's operand, staged there: one more pass over the tile). Each
        node is visited once: asking per node walked a chain of n elementwise ops n times."""
        found: dict[int, Node] = {}
        for n in self.nodes:
            if get_op(n.op).family != "elementwise":
                continue
            for v in n.inputs:
                u = v.node
                if id(u) in self.out_ids or not all(c is n for c in self.users[id(u)]):
                    continue
                t = u if node_class(u) == "template" else found.get(id(u))
                if t is not None:
                    found[id(n)] = t
                    break
        found.update(self.epilogue_cones(found))
        return found

    def epilogue_cones(self, found: dict[int, Node]) -> dict[int, Node]:
        """Elementwise nodes that are functions of one template's result read by several of
        them (SiLU's z·σ(z), the tanh GELU's z·σ(c·(z + a·z³))) on the way to another
        matmul or convolution: each reads only that template's epilogue values and values
        independent of it (a bias, a residual computed earlier), and at least one of its
        operands is read by nothing outside the cone. As a
        prologue of the next matmul, z·σ would make the epilogue store both z and σ and the
        product stage their product again; as epilogue, one value is stored and the product
        reads it as it is (a transformer block's inference, in turns: one thread 20.6 -> 19.8
        ms, two threads 12.6 -> 11.5 ms). Where a node's cone operands are stored anyway (z
        kept for a backward pass, and relu(z) read by the next matmul), a prologue costs no
        store, and the node stays where phase 1 puts it."""
        template = {id(n): n for n in self.nodes if node_class(n) == "template"}
        # cone member -> its template: the templates, their single-reader chains, candidates
        owner = {k: k for k in template} | {k: id(t) for k, t in found.items()}
        # values computed from inputs, params and constants alone (a broadcast bias), in one
        # sweep in topological order: a recursion would run out of stack on long chains
        sourced: dict[int, bool] = {}
        for u in self.nodes:
            sourced[id(u)] = u.op == "constant" or (node_class(u) == "pointwise" and all(
                sourced.get(id(v.node), True) for v in u.inputs))

        def source_only(u: Node) -> bool:
            return sourced.get(id(u), True)  # inputs and params are sources

        cand: dict[int, int] = {}
        cone_inputs: dict[int, list[Node]] = {}
        for n in self.nodes:
            if id(n) in owner or get_op(n.op).family != "elementwise":
                continue
            ins = [v.node for v in n.inputs if id(v.node) in owner or id(v.node) in cand]
            ts = {owner.get(id(u), cand.get(id(u))) for u in ins}
            if len(ts) != 1:
                continue
            (t,) = ts
            if all(source_only(v.node) or self.pos[id(v.node)] < self.pos[t]
                   for v in n.inputs if id(v.node) not in owner and id(v.node) not in cand):
                cand[id(n)] = t
                cone_inputs[id(n)] = ins

        def in_cone(u: Node, t: int) -> bool:
            return owner.get(id(u), cand.get(id(u))) == t

        def internal(u: Node, t: int) -> bool:
            """Whether the epilogue of t need not store u: all its readers are in the cone."""
            return id(u) not in self.out_ids and all(in_cone(r, t) for r in self.users[id(u)])

        def feeds_templates(n: Node, t: int) -> bool:
            """Whether every reader of n outside the cone is a matmul or convolution, whose
            operand n would otherwise be: a loop kernel takes a cone node as it is, without
            a pass of its own, so there the cone keeps to phase 1."""
            return all(in_cone(r, t) or node_class(r) == "template" for r in self.users[id(n)])

        # Keep a node while its cone operands are still in the cone, it feeds templates, and
        # taking it saves a store or adds none: it is internal itself, or one of its cone
        # operands is (left outside, the node would make the epilogue store that operand for
        # it). Removing nodes only moves readers out of cones: this shrinks to a fixed point.
        by_id = {id(n): n for n in self.nodes}
        changed = True
        while changed:
            changed = False
            for k, ins in cone_inputs.items():
                t = cand.get(k)
                if t is None:
                    continue
                n = by_id[k]
                if not all(in_cone(u, t) for u in ins) or not feeds_templates(n, t) or not (
                        internal(n, t) or any(internal(u, t) for u in ins)):
                    del cand[k]
                    changed = True
        return {k: template[t] for k, t in cand.items()}

    def cone_cost(self, p: Node) -> float:
        """Work to recompute `p` from values that are stored anyway: p and its pointwise
        producers, recursively (a chain of cheap ops behind p is recomputed too)."""
        total, seen, stack = 0.0, set(), [p]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            total += op_cost(n)
            if total > self.opts.max_recompute_cost:
                break
            stack += [v.node for v in n.inputs if node_class(v.node) == "pointwise"
                      and id(v.node) not in self.out_ids]
        return total

    # group graph ------------------------------------------------------------------------------
    def producer_groups(self, gid: int) -> set[int]:
        ids = {id(n) for n in self.groups[gid]}
        out: set[int] = set()
        for n in self.groups[gid]:
            for v in n.inputs:
                if id(v.node) not in ids and id(v.node) in self.where:
                    out |= self.where[id(v.node)]
        out.discard(gid)
        return out

    def build_dag(self) -> None:
        self.dag = OrderedDag(self.groups, ((p, g) for g in self.groups
                                            for p in self.producer_groups(g)))

    def cycle_through(self, a: int, c: int) -> int | None:
        """A third group on a path between a and c (merging them would close a cycle)."""
        for src, dst in ((a, c), (c, a)):
            for s in self.dag.successors(src):
                if s != dst and self.dag.reaches(s, dst):
                    return s
        return None

    def first_pos(self, gid: int) -> int:
        """Program position of a group: its first member not shared with other groups."""
        own = [n for n in self.groups[gid] if len(self.where[id(n)]) == 1]
        return self.pos[id((own or self.groups[gid])[0])]

    def try_merge(self, a: int, c: int, pair: tuple[Node, Node]) -> bool:
        via = self.cycle_through(a, c)
        if via is not None:
            self.reject(*pair, Reject("cycle", f"a path through the kernel of "
                                               f"%{self.name(self.groups[via][0])} joins them"))
            return False
        merged = self.member_ids[a] | self.member_ids[c]
        members = self.sort(self.groups[a] + [n for n in self.groups[c]
                                              if id(n) not in self.member_ids[a]])
        moved = {id(n): {a if g == c else g for g in self.where[id(n)]} for n in self.groups[c]}
        res = self.try_lower(members, self.view(moved, {a: merged}))
        if isinstance(res, Reject):
            self.reject(*pair, res)
            return False
        self.where.update(moved)
        self.set_group(a, members)
        del self.groups[c], self.member_ids[c]
        self.dag.contract(a, c)
        return True

    def edge_pair(self, a: int, c: int) -> tuple[Node, Node]:
        """A (producer in a, consumer in c) pair naming the dependence between two groups."""
        ids = {id(n) for n in self.groups[a]}
        for n in self.groups[c]:
            for v in n.inputs:
                if id(v.node) in ids:
                    return v.node, n
        return self.groups[a][0], self.groups[c][0]

    # phase 2 ----------------------------------------------------------------------------------
    def latest_producer(self, c: int) -> int | None:
        """The producer group of c that runs last in program order."""
        prods = list(self.dag.predecessors(c))
        return max(prods, key=self.first_pos) if prods else None

    def consumers_into_anchors(self) -> None:
        """Each group absorbs its consumer groups. In the first rounds a consumer only joins its
        latest producer: joining an earlier one would delay that producer until the consumer's
        other inputs exist, stretching the lifetimes of everything in between."""
        for strict in (True, True, True, False, False, False):
            changed = False
            for a in sorted(self.groups, key=self.first_pos):
                if a not in self.groups:
                    continue
                tried: set[int] = set()
                while True:
                    cands = sorted((c for c in self.dag.successors(a) if c not in tried),
                                   key=self.first_pos)
                    if not cands:
                        break
                    c = cands[0]
                    tried.add(c)
                    if strict and self.latest_producer(c) != a:
                        continue
                    if self.try_merge(a, c, self.edge_pair(a, c)):
                        changed = True
                        tried.clear()
            if not changed and not strict:
                break

    # phase 3 ----------------------------------------------------------------------------------
    def siblings(self) -> None:
        readers: dict[int, list[int]] = {}
        for g in sorted(self.groups, key=self.first_pos):
            ids = {id(n) for n in self.groups[g]}
            seen: set[int] = set()
            for n in self.groups[g]:
                for v in n.inputs:
                    src = id(v.node)
                    if src not in ids and src not in seen and not is_splat(v.node):
                        seen.add(src)
                        readers.setdefault(src, []).append(g)
        for src in sorted(readers, key=lambda s: min(self.first_pos(g) for g in readers[s]
                                                     if g in self.groups)):
            gs = [g for g in readers[src] if g in self.groups]
            while len(gs) > 1:
                a, rest = gs[0], gs[1:]
                for c in rest:
                    if c in self.groups and a in self.groups and self.same_domain(a, c):
                        self.try_merge(a, c, (self.groups[a][0], self.groups[c][0]))
                gs = [g for g in rest if g in self.groups]

    def same_domain(self, a: int, c: int) -> bool:
        """Only loop kernels over the same domain are worth a sibling merge."""
        ka, kc = self.domain_of(a), self.domain_of(c)
        return ka is not None and ka == kc

    def domain_of(self, g: int):
        key = (g, len(self.groups[g]))
        if key not in self.domains:
            res = self.trial(self.groups[g], self.view())
            self.domains[key] = None if isinstance(res, Reject) else res.domain
        return self.domains[key]

    # -- assembling the schedule ---------------------------------------------------------------
    def schedule(self) -> Schedule:
        order = list(nx.lexicographical_topological_sort(self.full_dag(), key=self.first_pos))
        kernels: list[Kernel] = []
        for i, g in enumerate(order):
            try:
                k = self.lower(f"k{i}", self.groups[g], self.view())
            except Reject as r:  # a bug in fusion: a group it accepted cannot be lowered
                raise GraphError(f"fuse: group of %{self.name(self.groups[g][0])} cannot be "
                                 f"lowered: {r}") from None
            kernels.append(k)
        return self.assemble(kernels)

    def full_dag(self) -> nx.DiGraph:
        dag = nx.DiGraph()
        dag.add_nodes_from(self.groups)
        for g in self.groups:
            for p in self.producer_groups(g):
                dag.add_edge(p, g)
        if not nx.is_directed_acyclic_graph(dag):
            raise GraphError("fuse: the kernel graph has a cycle (a bug in fusion legality)")
        return dag

    def assemble(self, kernels: list[Kernel]) -> Schedule:
        g = self.graph
        types: dict[str, TensorType] = {}
        kinds: dict[str, str] = {}
        for v in g.inputs:
            types[v.node.attrs["name"]], kinds[v.node.attrs["name"]] = v.type, "input"
        for v in g.params:
            types[v.node.attrs["name"]], kinds[v.node.attrs["name"]] = v.type, "param"
        constants: dict[str, np.ndarray] = {}
        values = {self.buffer_of(n.out): n.out for n in self.nodes}
        out_bufs: dict[str, str] = {}
        for oname, v in g.outputs:
            out_bufs[oname] = self.buffer_of(v)
            values.setdefault(self.buffer_of(v), v)
        written = [b for k in kernels for b in kernel_writes(k)]
        used = set(written) | {b for k in kernels for b in kernel_reads(k)} | set(
            out_bufs.values())
        for name in sorted(used - set(types), key=lambda b: self.pos.get(id(values[b].node), -1)):
            v = values[name]
            types[name] = v.type
            if v.node.op == "constant" and name not in written:
                kinds[name] = "constant"
                constants[name] = get_op("constant").reference([], dict(v.node.attrs))
            else:
                kinds[name] = "output" if name in out_bufs.values() else "temp"
        buffers = {n: Buffer(n, types[n], kinds[n]) for n in types
                   if n in used or kinds[n] in ("input", "param")}
        member_ops = {self.name(n): n.op for n in self.nodes}
        kernels_of: dict[str, set[int]] = {}  # member name -> indices of kernels holding it
        for i, k in enumerate(kernels):
            for name in k.origin:
                kernels_of.setdefault(name, set()).add(i)
        rejections = tuple(r for r in self.rejections.values()  # unless they met after all
                           if not kernels_of.get(r.producer, set()) & kernels_of.get(r.consumer,
                                                                                    set()))
        every_value = sum(-(-n.out.type.nbytes // 64) * 64 for n in self.nodes
                          if n.op != "constant" and id(n) not in self.out_ids)
        return Schedule(g.name, tuple(kernels), buffers, tuple(g.input_names),
                        tuple(g.param_names), tuple(out_bufs.items()), constants,
                        dict(g.param_values), rejections, None,
                        {"fuse": self.opts.fuse, "member_ops": member_ops,
                         "every_value_bytes": every_value})


class _View:
    """Group membership with some hypothetical changes (a merge being tried)."""

    def __init__(self, f: _Fusion, where: dict[int, set[int]], members: dict[int, set[int]]):
        self.f = f
        self._where = where
        self._members = members

    def where(self, n: Node) -> set[int]:
        got = self._where.get(id(n))
        return got if got is not None else self.f.where.get(id(n), set())

    def members(self, g: int) -> set[int]:
        got = self._members.get(g)
        return got if got is not None else self.f.member_ids.get(g, set())
