"""The graph IR: SSA values, immutable nodes and graphs.

A `Value` is produced by exactly one `Node`. Nodes never change after construction; passes build
new nodes and new graphs. Every node carries a structural hash (`shash`) computed from its op,
attributes and the structural hashes of its inputs, so CSE and fusion legality checks are cheap.

Graph inputs and parameters are nodes of op `input` / `param` that live in the graph header
rather than in its body; their values come from the caller and from the graph's side table
`param_values`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import DanglingValueError, DuplicateNameError, GraphError
from .types import TensorType

SOURCE_OPS = ("input", "param")


def freeze_attr(value: Any) -> Any:
    """Normalize an attribute value to plain immutable data (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze_attr(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return freeze_attr(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise GraphError(f"attribute value {value!r} of type {type(value).__name__} is not plain data")


def same_attr(a: Any, b: Any) -> bool:
    """Attribute equality that tells -0.0 from 0.0 (x / -0.0 is -inf): constants that differ
    only there must not be merged. NaN equals NaN."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(map(same_attr, a, b))
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if a != a or b != b:  # NaN
                return a != a and b != b
            return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


class Value:
    """One SSA value: output `index` of `node`."""

    __slots__ = ("node", "index")

    def __init__(self, node: Node, index: int) -> None:
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "index", index)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Value is immutable (tried to set {key!r})")

    @property
    def type(self) -> TensorType:
        return self.node.types[self.index]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.types[self.index].shape

    @property
    def dtype(self) -> str:
        return self.node.types[self.index].dtype

    @property
    def name(self) -> str | None:
        base = self.node.name
        if base is None or len(self.node.types) == 1:
            return base
        return f"{base}#{self.index}"

    @property
    def shash(self) -> int:
        return hash((self.node.shash, self.index))

    def __repr__(self) -> str:
        return f"Value(%{self.name}: {self.type} from {self.node.op})"


class Node:
    """An immutable operation: op name, input values, attributes and output types."""

    __slots__ = ("op", "inputs", "_attrs", "types", "name", "shash", "outputs")

    def __init__(self, op: str, inputs: Iterable[Value], attrs: Mapping[str, Any] | None,
                 types: Iterable[TensorType], name: str | None = None) -> None:
        inputs = tuple(inputs)
        types = tuple(types)
        frozen = {k: freeze_attr(v) for k, v in sorted((attrs or {}).items())}
        key: tuple = (op, tuple(frozen.items()), tuple(v.shash for v in inputs), types)
        init = object.__setattr__
        init(self, "op", op)
        init(self, "inputs", inputs)
        init(self, "_attrs", MappingProxyType(frozen))
        init(self, "types", types)
        init(self, "name", name)
        init(self, "shash", hash(key))
        init(self, "outputs", tuple(Value(self, i) for i in range(len(types))))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Node is immutable (tried to set {key!r}); build a new node")

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self._attrs

    @property
    def out(self) -> Value:
        """The single output of a one-output node."""
        if len(self.outputs) != 1:
            raise GraphError(f"node %{self.name} ({self.op}) has {len(self.outputs)} outputs")
        return self.outputs[0]

    def structurally_equal(self, other: Node) -> bool:
        """Same op, attributes, types and identical input values (the CSE criterion)."""
        return (self.shash == other.shash and self.op == other.op
                and self._attrs.keys() == other._attrs.keys()
                and all(same_attr(v, other._attrs[k]) for k, v in self._attrs.items())
                and self.types == other.types
                and len(self.inputs) == len(other.inputs)
                and all(a.node is b.node and a.index == b.index
                        for a, b in zip(self.inputs, other.inputs, strict=True)))

    def with_inputs(self, inputs: Iterable[Value]) -> Node:
        return Node(self.op, inputs, self._attrs, self.types, self.name)

    def __repr__(self) -> str:
        return f"Node(%{self.name} = {self.op}, {len(self.inputs)} inputs)"


class Graph:
    """A named computation: inputs, parameters (values in a side table), a body and outputs.

    `nodes` is the body in a topological order (every input of a node is defined by an earlier
    node, an input or a parameter). Graphs are immutable; use `Builder.from_graph` or
    `substitute` to derive new ones.
    """

    def __init__(self, name: str, inputs: Iterable[Value], params: Iterable[Value],
                 nodes: Iterable[Node], outputs: Iterable[tuple[str, Value]],
                 param_values: Mapping[str, np.ndarray] | None = None) -> None:
        self.name = name
        self.inputs = tuple(inputs)
        self.params = tuple(params)
        self.nodes = tuple(nodes)
        self.outputs = tuple(outputs)
        self.param_values = dict(param_values or {})
        names = [v.node.attrs["name"] for v in self.inputs + self.params]
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise DuplicateNameError(
                    f"graph {name!r}: input/parameter name {n!r} is used twice")
            seen.add(n)
        seen.clear()
        for n, _ in self.outputs:
            if n in seen:
                raise DuplicateNameError(f"graph {name!r}: output name {n!r} is used twice")
            seen.add(n)

    # -- lookups -------------------------------------------------------------------------------
    def input(self, name: str) -> Value:
        for v in self.inputs:
            if v.node.attrs["name"] == name:
                return v
        raise GraphError(f"graph {self.name!r} has no input {name!r}")

    def param(self, name: str) -> Value:
        for v in self.params:
            if v.node.attrs["name"] == name:
                return v
        raise GraphError(f"graph {self.name!r} has no parameter {name!r}")

    def output(self, name: str) -> Value:
        for n, v in self.outputs:
            if n == name:
                return v
        raise GraphError(f"graph {self.name!r} has no output {name!r}; "
                         f"outputs are {[n for n, _ in self.outputs]}")

    @property
    def input_names(self) -> list[str]:
        return [v.node.attrs["name"] for v in self.inputs]

    @property
    def param_names(self) -> list[str]:
        return [v.node.attrs["name"] for v in self.params]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.outputs]

    def frozen_params(self) -> set[str]:
        return {v.node.attrs["name"] for v in self.params if v.node.attrs.get("frozen")}

    def all_nodes(self) -> tuple[Node, ...]:
        """Inputs, parameters, then the body: a topological order of every node."""
        return tuple(v.node for v in self.inputs + self.params) + self.nodes

    def users(self) -> dict[Node, list[Node]]:
        """Def-use map: node -> the body nodes that read any of its outputs (with repeats)."""
        uses: dict[Node, list[Node]] = {n: [] for n in self.all_nodes()}
        for n in self.nodes:
            for v in n.inputs:
                uses.setdefault(v.node, []).append(n)
        return uses

    def live_nodes(self) -> tuple[Node, ...]:
        """Body nodes that some output depends on, in body order."""
        live: set[int] = set()
        stack = [v.node for _, v in self.outputs]
        while stack:
            n = stack.pop()
            if id(n) in live:
                continue
            live.add(id(n))
            stack.extend(v.node for v in n.inputs)
        return tuple(n for n in self.nodes if id(n) in live)

    def to_networkx(self):
        """The node graph as a networkx DiGraph (edges from producer to consumer)."""
        import networkx as nx

        g = nx.DiGraph()
        for n in self.all_nodes():
            g.add_node(n)
            for v in n.inputs:
                g.add_edge(v.node, n)
        return g

    # -- derivation ----------------------------------------------------------------------------
    def substitute(self, mapping: Mapping[Value, Value]) -> Graph:
        """A new graph with every use of a key value replaced by its mapped value.

        Downstream nodes are rebuilt (nodes are immutable); untouched nodes are shared.
        """
        vmap: dict[tuple[int, int], Value] = {(id(k.node), k.index): v for k, v in mapping.items()}

        def m(v: Value) -> Value:
            return vmap.get((id(v.node), v.index), v)

        body = []
        for n in self.nodes:
            new_inputs = tuple(m(v) for v in n.inputs)
            if all(a is b for a, b in zip(new_inputs, n.inputs, strict=True)):
                body.append(n)
                continue
            nn = n.with_inputs(new_inputs)
            body.append(nn)
            for old, new in zip(n.outputs, nn.outputs, strict=True):
                vmap[(id(n), old.index)] = new
        outs = [(name, m(v)) for name, v in self.outputs]
        return Graph(self.name, self.inputs, self.params, body, outs, self.param_values)

    def with_outputs(self, outputs: Iterable[tuple[str, Value]]) -> Graph:
        return Graph(self.name, self.inputs, self.params, self.nodes, outputs, self.param_values)

    def with_param_values(self, values: Mapping[str, np.ndarray]) -> Graph:
        merged = dict(self.param_values)
        merged.update(values)
        return Graph(self.name, self.inputs, self.params, self.nodes, self.outputs, merged)

    def check_defined(self) -> None:
        """Raise DanglingValueError if a node reads a value not defined before it."""
        defined = {id(v.node) for v in self.inputs + self.params}
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                if id(v.node) not in defined:
                    who = f"node %{n.name}" if n.name else f"node {i} of the body"
                    raise DanglingValueError(
                        f"{who} ({n.op}) reads %{v.name} ({v.node.op}), which is not "
                        f"defined before it in graph {self.name!r}")
            defined.add(id(n))
        for name, v in self.outputs:
            if id(v.node) not in defined:
                raise DanglingValueError(
                    f"output {name!r} refers to %{v.name} ({v.node.op}), which is not defined "
                    f"in graph {self.name!r}")

    def __str__(self) -> str:
        from .text import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, {len(self.inputs)} inputs, {len(self.params)} params, "
                f"{len(self.nodes)} nodes, outputs={self.output_names})")
