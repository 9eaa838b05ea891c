"""The fuse pass's ordered group graph against networkx on random DAGs and random legal merges:
after every merge the order is topological and `reaches` agrees with `nx.has_path`."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.ir.errors import GraphError
from graphc.passes.fuse_dag import OrderedDag


def random_dag(rng: random.Random, n: int, p: float) -> nx.DiGraph:
    """Edges only from lower to higher rank, nodes labelled in a shuffled order (so the labels
    say nothing about the order)."""
    labels = list(range(n))
    rng.shuffle(labels)
    g = nx.DiGraph()
    g.add_nodes_from(labels)
    g.add_edges_from((labels[i], labels[j]) for i in range(n) for j in range(i + 1, n)
                     if rng.random() < p)
    return g


def legal(g: nx.DiGraph, a: int, c: int) -> bool:
    """No path between a and c through a third node (the fuse pass's condition)."""
    for src, dst in ((a, c), (c, a)):
        if any(s != dst and nx.has_path(g, s, dst) for s in g.successors(src)):
            return False
    return True


def assert_consistent(dag: OrderedDag, ref: nx.DiGraph, rng: random.Random) -> None:
    assert set(dag.graph.edges) == set(ref.edges)
    assert all(dag.ord[u] < dag.ord[v] for u, v in ref.edges)
    assert len(set(dag.ord.values())) == len(dag.ord) == ref.number_of_nodes()
    nodes = list(ref.nodes)
    for _ in range(40):
        s, t = rng.choice(nodes), rng.choice(nodes)
        if s != t:
            assert dag.reaches(s, t) == nx.has_path(ref, s, t), (s, t)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40),
       p=st.floats(0.02, 0.4))
def test_order_and_reachability_survive_merges(seed: int, n: int, p: float) -> None:
    rng = random.Random(seed)
    ref = random_dag(rng, n, p)
    dag = OrderedDag(ref.nodes, ref.edges)
    assert_consistent(dag, ref, rng)
    for _ in range(3 * n):
        if ref.number_of_nodes() < 2:
            break
        a, c = rng.sample(list(ref.nodes), 2)
        if ref.has_edge(c, a) or (not ref.has_edge(a, c) and rng.random() < 0.5):
            a, c = c, a
        if not legal(ref, a, c):
            continue
        dag.contract(a, c)
        nx.contracted_nodes(ref, a, c, self_loops=False, copy=False)
        assert nx.is_directed_acyclic_graph(ref)
        assert_consistent(dag, ref, rng)


def test_an_illegal_merge_is_refused_not_ordered() -> None:
    dag = OrderedDag([0, 1, 2], [(0, 1), (1, 2)])
    with pytest.raises(GraphError, match="cycle"):
        dag.contract(0, 2)  # 0 -> 1 -> 2: merging 0 and 2 closes a cycle through 1


def test_a_cyclic_start_is_a_graph_error() -> None:
    with pytest.raises(GraphError, match="cycle"):
        OrderedDag([0, 1], [(0, 1), (1, 0)])
