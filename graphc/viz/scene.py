"""What the pictures show: one graph as drawable nodes, edges, roles and collapsible groups.

Note: roles and groups
======================

Every node of a stage's graph becomes a `SceneNode` with a *role*:
- `forward` for the model's own computation; `input` and `param` for its sources;
- `backward` for the nodes autodiff made: their name hints start with `grad.`
  (`grad.<node>.<op>`, see `graphc/passes/autodiff.py`);
- `sum` for autodiff's fan-out sums, `add` nodes named `grad.<value>.sum`: the seed's
  `dL/dh = dL/dh_j + dL/dh_k` where a value feeds several nodes;
- `update` for optimizer updates, named `update.<param>.*` by `graphc.train`.
Unnamed nodes (the loss seed, a constant) take the role their users share.

Groups come from the name hints' scopes: decomposition and autodiff name nodes
`lstm0.t3.lstm_cell0.i.sigmoid`, `grad.res.conv2d.add.sum`, `update.dense.w.mul`, so every dotted
prefix (`lstm0`, `lstm0.t3`, ...; `grad.` and `update.` count with the next part) is a group,
nested like the scopes. Tiny groups (fewer than `MIN_GROUP` nodes at the top level, where a box
stands for a layer, or `MIN_NESTED` inside another group) are dissolved into their parent, and a
group that merely wraps one other group gives its place to that group's children, so every level
of nesting says something.

A *view* is the graph with some groups collapsed into one box each (`Scene.view(expanded)`):
edges between collapsed groups merge (with a count), and a parameter or input whose every user
is inside one collapsed box is drawn inside it. When the fused schedule is known, every node
also knows its kernel, and `Scene.kernel_view()` draws one box per kernel instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from graphc.ir.graph import Graph, Node
from graphc.ir.text import Namer, format_attr, print_graph, print_node

MIN_GROUP = 3
MIN_NESTED = 6
GRAD_PREFIX = "grad."
UPDATE_PREFIX = "update."
SUM_SUFFIX = ".sum"
ROLES = ("input", "param", "forward", "backward", "sum", "update")
LABEL_CHARS = 34
SUB_CHARS = 40


@dataclass
class SceneNode:
    """One drawable graph node (or graph output, kind `output`)."""

    id: str
    kind: str  # input | param | node | output
    op: str
    name: str | None
    role: str
    label: str
    sub: str
    types: list[str]
    nbytes: int
    attrs: dict[str, str]
    operands: list[str]  # ids of the producing nodes, one per operand
    uses: list[str]  # printed operand uses (%a, %bn#1)
    ir: str
    group: str | None = None
    kernels: list[str] = field(default_factory=list)  # several when fusion recomputes it

    @property
    def kernel(self) -> str | None:
        """The first kernel computing this node (its box in the kernel view)."""
        return self.kernels[0] if self.kernels else None


@dataclass
class SceneGroup:
    """A collapsible scope: direct member nodes and child groups, `size` nodes in all."""

    id: str
    parent: str | None
    label: str
    nodes: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    size: int = 0
    role: str = "forward"
    ops: str = ""


@dataclass
class Scene:
    """The drawable form of one graph; see the module note."""

    graph: Graph
    nodes: dict[str, SceneNode]
    edges: list[tuple[str, str, str]]  # (producer id, consumer id, value type)
    groups: dict[str, SceneGroup]

    def ancestors(self, gid: str | None) -> list[str]:
        """`gid` and its enclosing groups, outermost first."""
        out = []
        while gid is not None:
            out.append(gid)
            gid = self.groups[gid].parent
        return out[::-1]

    def top_groups(self) -> list[str]:
        return [g for g, grp in self.groups.items() if grp.parent is None]

    def visible(self, expanded: Iterable[str]) -> dict[str, str]:
        """{node id: id of the item that shows it} when the groups in `expanded` are open."""
        open_ = set(expanded)
        vis: dict[str, str] = {}
        for nid, n in self.nodes.items():
            vis[nid] = nid
            for g in self.ancestors(n.group):
                if g not in open_:
                    vis[nid] = g
                    break
        users: dict[str, set[str]] = {}
        for src, dst, _ in self.edges:
            users.setdefault(src, set()).add(vis[dst])
        for nid, n in self.nodes.items():
            # a source used inside one closed box only is drawn inside it
            held = users.get(nid, set())
            if n.kind in ("input", "param") and len(held) == 1:
                (item,) = held
                if item in self.groups:
                    vis[nid] = item
        return vis

    def view(self, expanded: Iterable[str]) -> View:
        """The view with the groups in `expanded` open."""
        return self._merge(self.visible(expanded))

    def kernel_view(self) -> View:
        """One box per kernel (ids `kernel:<name>`); nodes no kernel computes (sources,
        outputs) stay themselves."""
        vis = {nid: f"kernel:{n.kernel}" if n.kernel else nid for nid, n in self.nodes.items()}
        return self._merge(vis)

    def _floating(self, vis: Mapping[str, str]) -> set[str]:
        """Items computed from constants only (no input or parameter upstream)."""
        anchored: set[str] = set()
        for nid, n in self.nodes.items():  # graph order: operands first
            if n.kind in ("input", "param") or any(o in anchored for o in n.operands):
                anchored.add(nid)
        held = {vis[n] for n in anchored}
        return {vis[n] for n in self.nodes if vis[n] not in held}

    def _merge(self, vis: dict[str, str]) -> View:
        # item order: the sources drawn on their own, then the body, then the outputs; a box
        # takes the place of its first body node, never that of a source drawn inside it
        sources = [n for n, sn in self.nodes.items() if sn.kind in ("input", "param")]
        rest = [n for n, sn in self.nodes.items() if sn.kind not in ("input", "param")]
        items = list(dict.fromkeys([vis[n] for n in sources if vis[n] == n]
                                   + [vis[n] for n in rest]
                                   + [vis[n] for n in sources]))
        merged: dict[tuple[str, str], list] = {}
        for src, dst, label in self.edges:
            a, b = vis[src], vis[dst]
            if a == b:
                continue
            entry = merged.setdefault((a, b), [label, 0])
            entry[1] += 1
        edges = [(a, b, lab, c) for (a, b), (lab, c) in merged.items()]
        return View(items, edges, self._floating(vis))


@dataclass
class View:
    """Items (node, group or kernel ids) in graph order, merged edges (src, dst, label, count)
    and the items computed from constants only."""

    items: list[str]
    edges: list[tuple[str, str, str, int]]
    floating: set[str]


# -- roles -----------------------------------------------------------------------------------------


def is_fanout_sum(n: Node) -> bool:
    """An autodiff fan-out sum: `add` named `grad.<value>.sum`."""
    return (n.op == "add" and n.name is not None and n.name.startswith(GRAD_PREFIX)
            and n.name.endswith(SUM_SUFFIX))


def named_role(n: Node) -> str | None:
    if n.op in ("input", "param"):
        return n.op
    if n.name is None:
        return None
    if is_fanout_sum(n):
        return "sum"
    if n.name.startswith(GRAD_PREFIX):
        return "backward"
    if n.name.startswith(UPDATE_PREFIX):
        return "update"
    return "forward"


def node_roles(graph: Graph) -> dict[int, str]:
    """{id(node): role}; unnamed nodes inherit from their users (see the module note)."""
    roles: dict[int, str] = {}
    users = graph.users()
    outputs = {id(v.node): name for name, v in graph.outputs}
    for n in reversed(graph.all_nodes()):
        role = named_role(n)
        if role is None:
            used = {roles[id(u)] for u in users.get(n, [])}
            used = {"backward" if r == "sum" else r for r in used}
            if id(n) in outputs:
                used.add(_output_role(outputs[id(n)]))
            role = used.pop() if len(used) == 1 and used <= {"backward", "update"} else "forward"
        roles[id(n)] = role
    return roles


def _output_role(name: str) -> str:
    if name.startswith(GRAD_PREFIX):
        return "backward"
    if name.startswith(("new.", "state.")):
        return "update"
    return "forward"


# -- groups ----------------------------------------------------------------------------------------


def scope_path(name: str | None) -> list[str]:
    """The scopes of a name hint, outermost first: `grad.res.conv2d.add` -> `grad.res`,
    `grad.res.conv2d`."""
    if not name:
        return []
    parts = name.split(".")
    start = 2 if parts[0] in ("grad", "update") else 1
    return [".".join(parts[:i]) for i in range(start, len(parts))]


def build_groups(nodes: Mapping[str, SceneNode]) -> dict[str, SceneGroup]:
    """Scope groups of the body nodes, pruned (see the module note); sets `SceneNode.group`."""
    groups: dict[str, SceneGroup] = {}
    for nid, n in nodes.items():
        if n.kind != "node":
            continue
        path = scope_path(n.name)
        for i, g in enumerate(path):
            if g not in groups:
                parent = path[i - 1] if i else None
                groups[g] = SceneGroup(g, parent, g)
                if parent is not None:
                    groups[parent].children.append(g)
        n.group = path[-1] if path else None
        if n.group is not None:
            groups[n.group].nodes.append(nid)
    _count(groups)
    changed = True
    while changed:
        changed = False
        for g in sorted(groups, key=lambda k: -k.count(".")):
            least = MIN_GROUP if groups[g].parent is None else MIN_NESTED
            if groups[g].size < least or _wraps_one(groups, g):
                _dissolve(groups, nodes, g)
                changed = True
                break
    _count(groups)
    for grp in groups.values():
        parent = grp.parent
        grp.label = grp.id[len(parent) + 1:] if parent and grp.id.startswith(parent + ".") \
            else grp.id
    return groups


def _wraps_one(groups: dict[str, SceneGroup], g: str) -> bool:
    """`g` is the only child of a parent that has (almost) nothing else."""
    parent = groups[g].parent
    if parent is None:
        return False
    p = groups[parent]
    return p.children == [g] and len(p.nodes) < MIN_GROUP


def _dissolve(groups: dict[str, SceneGroup], nodes: Mapping[str, SceneNode], g: str) -> None:
    grp = groups.pop(g)
    parent = groups.get(grp.parent) if grp.parent else None
    for nid in grp.nodes:
        nodes[nid].group = grp.parent
        if parent is not None:
            parent.nodes.append(nid)
    for c in grp.children:
        groups[c].parent = grp.parent
        if parent is not None:
            parent.children.append(c)
    if parent is not None:
        parent.children.remove(g)


def _count(groups: dict[str, SceneGroup]) -> None:
    def size(g: str) -> int:
        grp = groups[g]
        grp.size = len(grp.nodes) + sum(size(c) for c in grp.children)
        return grp.size

    for g in groups:
        if groups[g].parent is None:
            size(g)


def _describe_groups(scene: Scene) -> None:
    """Role (the most common of its nodes') and an op summary for every group."""
    members: dict[str, list[SceneNode]] = {g: [] for g in scene.groups}
    for n in scene.nodes.values():
        for g in scene.ancestors(n.group):
            members[g].append(n)
    for g, grp in scene.groups.items():
        grp.role = main_role(members[g])
        grp.ops = op_summary(members[g])


# -- building a scene ------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def node_label(n: Node, role: str) -> str:
    """The first line of a node's box: `h3 = sigmoid`, `Σ add`, `const 2.0`, or the op."""
    if n.op in ("input", "param"):
        return n.attrs["name"]
    if role == "sum":
        return "Σ add (fan-out)"
    if n.op == "constant" and "value" in n.attrs and not isinstance(n.attrs["value"], tuple):
        return f"const {format_attr(n.attrs['value'])}"
    if n.name and "." not in n.name and n.name != n.op:
        return f"{n.name} = {n.op}"
    short = n.name.rsplit(".", 1)[-1] if n.name else None
    if short and short != n.op and not short.startswith(n.op):
        return f"{short} = {n.op}"
    return n.op


def build_scene(graph: Graph, kernels: Mapping[str, list[str]] | None = None) -> Scene:
    """The scene of `graph`. `kernels` maps node ids (printed names) to the kernels computing
    them (the fused stage; fusion may recompute a cheap node in several kernels)."""
    namer = Namer()
    print_graph(graph, namer)
    roles = node_roles(graph)
    nodes: dict[str, SceneNode] = {}
    edges: list[tuple[str, str, str]] = []
    for n in graph.all_nodes():
        nid = namer.name(n)
        role = roles[id(n)]
        kind = n.op if n.op in ("input", "param") else "node"
        types = [str(t) for t in n.types]
        if kind == "node":
            attrs = {k: format_attr(v) for k, v in n.attrs.items()}
            ir = print_node(n, namer)
            sub = ", ".join(types)
        else:
            attrs = {"frozen": "true"} if n.attrs.get("frozen") else {}
            ir = f"%{nid}: {types[0]}" + (" frozen" if attrs else "")
            sub = f"{n.op} {types[0]}" + (" frozen" if attrs else "")
        nodes[nid] = SceneNode(
            nid, kind, n.op, n.name if kind == "node" else nid, role,
            _clip(node_label(n, role), LABEL_CHARS), _clip(sub, SUB_CHARS), types,
            sum(t.nbytes for t in n.types), attrs, [namer.name(v.node) for v in n.inputs],
            [namer.use(v) for v in n.inputs], ir)
        if kind == "node" and kernels:
            nodes[nid].kernels = list(kernels.get(nid, ()))
        edges += [(namer.name(v.node), nid, str(v.type)) for v in n.inputs]
    for name, v in graph.outputs:
        oid = f"out:{name}"
        nodes[oid] = SceneNode(oid, "output", "output", name, _output_role(name),
                               _clip(f"→ {name}", LABEL_CHARS), _clip(str(v.type), SUB_CHARS),
                               [str(v.type)], v.type.nbytes, {}, [namer.name(v.node)],
                               [namer.use(v)], f"return {name}={namer.use(v)} : {v.type}")
        edges.append((namer.name(v.node), oid, str(v.type)))
    scene = Scene(graph, nodes, edges, build_groups(nodes))
    _describe_groups(scene)
    return scene


def op_summary(nodes: Iterable[SceneNode], top: int = 3) -> str:
    """`mul×7, add×4, rsqrt`: the most common ops."""
    ops = Counter(n.op for n in nodes).most_common(top)
    return ", ".join(f"{op}×{c}" if c > 1 else op for op, c in ops)


def main_role(nodes: Iterable[SceneNode]) -> str:
    roles = Counter("backward" if n.role == "sum" else n.role for n in nodes)
    return roles.most_common(1)[0][0] if roles else "forward"
