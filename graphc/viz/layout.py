"""Layered (Sugiyama-style) layout of a directed graph, top-down, in pure Python.

Note: how the layout is computed
================================

`layered_layout(sizes, edges, order)` places boxes of given sizes so that every edge points down:

1. **Cycles.** The items come with an `order` (a topological order of the underlying graph IR;
   collapsed groups take the position of their first member). An edge that runs against that
   order can only come from collapsing groups; it is reversed for layering and drawn upwards.
2. **Layers** are networkx's topological generations (longest path from the sources). Then,
   bottom-up, sources (parameters, inputs, constants), nodes with no more operands than users
   and values computed from constants only sink to just above their first consumer, so a
   weight sits next to the matmul that reads it rather than in one wide top row.
3. **Dummies.** An edge spanning k > 1 layers gets k - 1 invisible points, one per layer, so it
   is routed around boxes instead of through them.
4. **Order within layers**: barycenter sweeps, alternately down and up, starting from `order`.
5. **x coordinates**: each layer in turn is pulled towards the mean x of its neighbours, subject
   to the order and minimum spacing. That is an isotonic regression, solved exactly by
   pool-adjacent-violators, so boxes never overlap.
6. **y coordinates**: layer by layer, each layer as tall as its tallest box.

Everything is deterministic: the same graph gives the same picture.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

NODE_GAP = 24.0
LAYER_GAP = 46.0
DUMMY_WIDTH = 8.0
MARGIN = 20.0
ORDER_SWEEPS = 8
PLACE_SWEEPS = 8


@dataclass(frozen=True)
class EdgeRoute:
    """An edge drawn from the bottom of `src` to the top of `dst` through `points`."""

    src: str
    dst: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Layout:
    """Box positions (`boxes[id] = (x, y, w, h)`, x/y the top-left corner) and edge routes."""

    boxes: Mapping[str, tuple[float, float, float, float]]
    edges: tuple[EdgeRoute, ...]
    width: float
    height: float
    layers: int


@dataclass
class _Item:
    key: str
    w: float
    h: float
    layer: int = 0
    x: float = 0.0  # centre
    pos: float = 0.0  # rank inside the layer
    dummy: bool = False


def _dag(items: Sequence[str], edges: Sequence[tuple[str, str]]) -> tuple[nx.DiGraph,
                                                                              set[tuple[str, str]]]:
    """The edges as a DAG over `items`: edges against the item order are reversed."""
    rank = {k: i for i, k in enumerate(items)}
    dag = nx.DiGraph()
    dag.add_nodes_from(items)
    reversed_edges: set[tuple[str, str]] = set()
    for u, v in edges:
        if u == v:
            continue
        if rank[u] > rank[v]:
            reversed_edges.add((u, v))
            u, v = v, u
        dag.add_edge(u, v)
    return dag, reversed_edges


def assign_layers(dag: nx.DiGraph, floating: Collection[str] = ()) -> dict[str, int]:
    """Longest-path layers (networkx generations), then nodes sink next to their users."""
    layer: dict[str, int] = {}
    for i, generation in enumerate(nx.topological_generations(dag)):
        for k in generation:
            layer[k] = i
    # Bottom-up, a node moves down to just above its first user when that shortens the edges:
    # it has more users than operands whose edges would grow (a source read by this node only
    # follows it down, so its edge does not grow), or none of those, or it is `floating`
    # (computed from constants only: a loss seed's broadcast sits next to where it is used).
    float_set = set(floating)
    for k in reversed(list(nx.topological_sort(dag))):
        succ = list(dag.successors(k))
        growing = sum(1 for p in dag.predecessors(k)
                      if dag.in_degree(p) > 0 or dag.out_degree(p) > 1)
        if succ and (k in float_set or growing == 0 or len(succ) > growing):
            layer[k] = max(layer[k], min(layer[s] for s in succ) - 1)
    return layer


@dataclass
class _Proper:
    """The layered graph with dummies: plain adjacency lists (fast to sweep over)."""

    preds: dict[str, list[str]]
    succs: dict[str, list[str]]
    chains: dict[tuple[str, str], list[str]]

    def neighbours(self, k: str) -> list[str]:
        return self.preds[k] + self.succs[k]


def _insert_dummies(dag: nx.DiGraph, items: dict[str, _Item]) -> _Proper:
    """Split edges spanning several layers into chains through dummy items."""
    g = _Proper({k: [] for k in dag.nodes}, {k: [] for k in dag.nodes}, {})
    for u, v in dag.edges:
        lu, lv = items[u].layer, items[v].layer
        chain = [u]
        for layer in range(lu + 1, lv):
            key = f"\x00{u}\x00{v}\x00{layer}"
            items[key] = _Item(key, DUMMY_WIDTH, 0.0, layer, dummy=True)
            g.preds[key], g.succs[key] = [], []
            chain.append(key)
        chain.append(v)
        for a, b in zip(chain, chain[1:], strict=False):
            g.succs[a].append(b)
            g.preds[b].append(a)
        g.chains[(u, v)] = chain
    return g


def _sweeps(base: int, items: dict[str, _Item]) -> int:
    """Fewer sweeps for very large graphs: each costs a pass over every dummy."""
    return base if len(items) < 20000 else max(2, base // 2)


def _segments(members: list[str], index: dict[str, int],
              neighbours: Callable[[str], list[str]],
              weight: Callable[[str], float] = lambda n: 1.0) -> tuple[np.ndarray, ...]:
    """Flat neighbour arrays of one layer: (member position, neighbour index, weight)."""
    seg, nbr, w = [], [], []
    for i, k in enumerate(members):
        for n in neighbours(k):
            seg.append(i)
            nbr.append(index[n])
            w.append(weight(n))
    return (np.array(seg, dtype=np.int64), np.array(nbr, dtype=np.int64),
            np.array(w, dtype=np.float64))


def _weighted_means(x: np.ndarray, members: np.ndarray, seg: np.ndarray, nbr: np.ndarray,
                    w: np.ndarray) -> np.ndarray:
    """Per member, the weighted mean of x over its neighbours (its own x if it has none)."""
    out = x[members].copy()
    if len(seg):
        total = np.bincount(seg, weights=w, minlength=len(members))
        acc = np.bincount(seg, weights=w * x[nbr], minlength=len(members))
        has = total > 0
        out[has] = acc[has] / total[has]
    return out


def _order_layers(g: _Proper, items: dict[str, _Item],
                  initial: Sequence[str]) -> list[list[str]]:
    """Barycenter ordering within layers, alternating downward and upward sweeps."""
    nlayers = max((it.layer for it in items.values()), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(nlayers)]
    rank = {k: i for i, k in enumerate(initial)}

    def start_rank(k: str) -> tuple[int, str]:  # dummies follow the item their edge starts from
        return (rank[k] if k in rank else rank[k.split("\x00")[1]], k)

    for key in sorted(items, key=start_rank):
        layers[items[key].layer].append(key)
    keys = [k for layer in layers for k in layer]
    index = {k: i for i, k in enumerate(keys)}
    pos = np.zeros(len(keys))
    members = [np.array([index[k] for k in layer], dtype=np.int64) for layer in layers]
    for m in members:
        pos[m] = np.arange(len(m))
    # a source (sink) has no neighbour on the sweep's side: it follows its users instead
    down = [_segments(layer, index, lambda k: g.preds[k] or g.succs[k]) for layer in layers]
    up = [_segments(layer, index, lambda k: g.succs[k] or g.preds[k]) for layer in layers]
    for sweep in range(_sweeps(ORDER_SWEEPS, items)):
        going_down = sweep % 2 == 0
        seq = range(1, nlayers) if going_down else range(nlayers - 2, -1, -1)
        for li in seq:
            m = members[li]
            bary = _weighted_means(pos, m, *(down if going_down else up)[li])
            order = np.lexsort((pos[m], bary))
            pos[m[order]] = np.arange(len(m))
    return [[keys[i] for i in m[np.argsort(pos[m], kind="stable")]] for m in members]


def _pav(targets: Sequence[float]) -> list[float]:
    """Isotonic (non-decreasing) least-squares fit of `targets`: pool adjacent violators."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for t in targets:
        blocks.append([t, 1.0, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            w = w1 + w2
            blocks.append([(m1 * w1 + m2 * w2) / w, w, c1 + c2])
    out: list[float] = []
    for mean, _, count in blocks:
        out.extend([mean] * int(count))
    return out


def _offsets(layer: list[str], items: dict[str, _Item]) -> np.ndarray:
    """Centre of each box relative to the first when packed at minimum spacing."""
    offsets = [0.0]
    for a, b in zip(layer, layer[1:], strict=False):
        offsets.append(offsets[-1] + (items[a].w + items[b].w) / 2 + _gap(items[a], items[b]))
    return np.array(offsets)


def _gap(a: _Item, b: _Item) -> float:
    return NODE_GAP / 3 if a.dummy and b.dummy else NODE_GAP


LEAF_PULL = 0.2  # how strongly a source with one user pulls that user towards itself


def _assign_x(g: _Proper, items: dict[str, _Item], layers: list[list[str]]) -> None:
    """Alternating sweeps pull each layer towards the weighted mean x of each box's
    neighbours, keeping the order and spacing (exact, via PAV); a source with a single user
    (a weight, a constant) follows its user rather than pulling it."""
    keys = [k for layer in layers for k in layer]
    index = {k: i for i, k in enumerate(keys)}

    def weight(n: str) -> float:
        leaf = not g.preds[n] and len(g.succs[n]) == 1 and not items[n].dummy
        return LEAF_PULL if leaf else 1.0

    x = np.zeros(len(keys))
    per_layer = []
    for layer in layers:
        m = np.array([index[k] for k in layer], dtype=np.int64)
        offs = _offsets(layer, items)
        x[m] = offs - offs.mean()
        per_layer.append((m, offs, _segments(layer, index, g.neighbours, weight)))
    for sweep in range(_sweeps(PLACE_SWEEPS, items)):
        seq = per_layer if sweep % 2 == 0 else per_layer[::-1]
        for m, offs, segments in seq:
            desired = _weighted_means(x, m, *segments)
            x[m] = np.array(_pav((desired - offs).tolist())) + offs
    for k, i in index.items():
        items[k].x = float(x[i])


def layered_layout(sizes: Mapping[str, tuple[float, float]], edges: Sequence[tuple[str, str]],
                   order: Sequence[str] | None = None, floating: Collection[str] = ()) -> Layout:
    """Lay out boxes `sizes[id] = (w, h)` joined by `edges` top-down (see the module note).

    `order` lists every id (default: the order of `sizes`); it decides which edges point down
    when collapsing made the graph cyclic, and breaks ties in the ordering. `floating` ids are
    placed as late as their users allow (values computed from constants only).
    """
    keys = list(order) if order is not None else list(sizes)
    dag, reversed_edges = _dag(keys, edges)
    layer_of = assign_layers(dag, floating)
    items = {k: _Item(k, float(sizes[k][0]), float(sizes[k][1]), layer_of[k]) for k in keys}
    proper = _insert_dummies(dag, items)
    layers = _order_layers(proper, items, keys)
    _assign_x(proper, items, layers)
    ys, height = _layer_tops(layers, items)
    min_x = min((it.x - it.w / 2 for it in items.values()), default=0.0)
    max_x = max((it.x + it.w / 2 for it in items.values()), default=0.0)
    shift = MARGIN - min_x
    lh = [_layer_height(layer, items) for layer in layers]

    def top(it: _Item) -> float:  # boxes are centred vertically in their layer
        return ys[it.layer] + (lh[it.layer] - it.h) / 2

    boxes = {k: (round(items[k].x - items[k].w / 2 + shift, 1), round(top(items[k]), 1),
                 items[k].w, items[k].h) for k in keys}
    routes = []
    seen: set[tuple[str, str]] = set()
    for u, v in edges:
        if u == v or (u, v) in seen:
            continue
        seen.add((u, v))
        flip = (u, v) in reversed_edges
        chain = proper.chains[(v, u) if flip else (u, v)]
        pts = []
        for i, k in enumerate(chain):
            it = items[k]
            x = round(it.x + shift)
            if it.dummy:
                pts.append((x, round(ys[it.layer] + lh[it.layer] / 2)))
            elif i == 0:
                pts.append((x, round(top(it) + it.h)))
            else:
                pts.append((x, round(top(it))))
        if flip:
            pts.reverse()
        routes.append(EdgeRoute(u, v, _simplify(pts)))
    return Layout(boxes, tuple(routes), round(max_x - min_x + 2 * MARGIN, 1), round(height, 1),
                  len(layers))


def _layer_height(layer: list[str], items: dict[str, _Item]) -> float:
    return max((items[k].h for k in layer), default=0.0)


def _layer_tops(layers: list[list[str]], items: dict[str, _Item]) -> tuple[list[float], float]:
    ys: list[float] = []
    y = MARGIN
    for layer in layers:
        ys.append(y)
        y += _layer_height(layer, items) + LAYER_GAP
    return ys, y - LAYER_GAP + MARGIN


def _simplify(pts: list[tuple[float, float]], tolerance: float = 2.0
              ) -> tuple[tuple[float, float], ...]:
    """Drop route points that lie within `tolerance` of the straight line through their
    neighbours (Douglas-Peucker): long edges through aligned dummies become a few points."""
    if len(pts) <= 2:
        return tuple(pts)
    keep = [False] * len(pts)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        a, b = stack.pop()
        (x0, y0), (x1, y1) = pts[a], pts[b]
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
        far, at = 0.0, -1
        for i in range(a + 1, b):
            d = abs((x1 - x0) * (y0 - pts[i][1]) - (x0 - pts[i][0]) * (y1 - y0)) / length
            if d > far:
                far, at = d, i
        if far > tolerance:
            keep[at] = True
            stack += [(a, at), (at, b)]
    return tuple(p for p, k in zip(pts, keep, strict=True) if k)
