"""The verifier: re-checks every invariant of a graph and raises a GraphError naming the culprit.

Checks: known ops with valid attributes, operand counts and types that match each op's type
rule; every value defined before use and belonging to this graph (no dangling values, hence no
cycles); unique input/parameter/output names; parameter values present with the right shape.
"""

from __future__ import annotations

import numpy as np

from .errors import DanglingValueError, GraphError, ShapeError
from .graph import Graph
from .registry import check_node
from .types import DTYPES


def verify(graph: Graph) -> Graph:
    """Raise a GraphError if `graph` breaks an IR invariant; return it unchanged otherwise."""
    graph.check_defined()
    sources = {id(v.node) for v in graph.inputs + graph.params}
    for v in graph.inputs + graph.params:
        if v.node.op not in ("input", "param"):
            raise GraphError(f"graph {graph.name!r}: source %{v.name} has op {v.node.op!r}")
    for n in graph.nodes:
        if n.op in ("input", "param") or id(n) in sources:
            raise DanglingValueError(f"node %{n.name}: {n.op} nodes belong in the graph header")
        full, types = check_node(n.op, [v.type for v in n.inputs], n.attrs, n.name)
        if types != n.types:
            raise ShapeError(f"node %{n.name} = {n.op}: declared types "
                             f"{[str(t) for t in n.types]} but the op gives "
                             f"{[str(t) for t in types]}")
        if full != dict(n.attrs):
            raise GraphError(f"node %{n.name} = {n.op}: attributes are not in canonical form "
                             f"({dict(n.attrs)} vs {full})")
    for v in graph.params:
        name = v.node.attrs["name"]
        val = graph.param_values.get(name)
        if val is None:
            continue  # values may be supplied at run time
        if tuple(np.shape(val)) != v.shape:
            raise ShapeError(f"parameter {name!r} is declared {v.type} but its value has shape "
                             f"{np.shape(val)}")
        if np.asarray(val).dtype != DTYPES[v.dtype]:
            raise ShapeError(f"parameter {name!r} is declared {v.type} but its value has dtype "
                             f"{np.asarray(val).dtype}")
    return graph
