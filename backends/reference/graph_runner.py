"""Run a graph node by node with each op's numpy reference."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphc.ir.errors import GraphError, InputError
from graphc.ir.graph import Graph, Value
from graphc.ir.registry import get_op
from graphc.ir.types import DTYPES, round_to_dtype


def check_inputs(graph: Graph, inputs: Mapping[str, np.ndarray], what: str = "input"
                 ) -> dict[str, np.ndarray]:
    """Match `inputs` to the graph signature; InputError names any missing, extra or mistyped."""
    out: dict[str, np.ndarray] = {}
    expected = {v.node.attrs["name"]: v for v in graph.inputs}
    extra = set(inputs) - set(expected)
    if extra:
        raise InputError(f"graph {graph.name!r} has no {what}(s) {sorted(extra)}; "
                         f"expected {sorted(expected)}")
    for name, v in expected.items():
        if name not in inputs:
            raise InputError(f"graph {graph.name!r}: missing {what} {name!r} ({v.type})")
        arr = np.asarray(inputs[name])
        if arr.shape != v.shape:
            raise InputError(f"{what} {name!r}: expected shape {v.shape} ({v.type}), "
                             f"got {arr.shape}")
        want = DTYPES[v.dtype]
        if arr.dtype != want:
            if arr.dtype.kind == want.kind or (arr.dtype.kind in "iu" and want.kind in "iu"):
                arr = arr.astype(want)  # same kind, other width: a lossless-enough convenience
            else:
                raise InputError(f"{what} {name!r}: expected dtype {v.dtype} ({v.type}), "
                                 f"got {arr.dtype}")
        out[name] = arr
    return out


def run_graph(graph: Graph, inputs: Mapping[str, np.ndarray] | None = None,
              params: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Evaluate every output of `graph`; `params` overrides the graph's parameter values."""
    graph.check_defined()
    args = check_inputs(graph, inputs or {})
    env: dict[tuple[int, int], np.ndarray] = {}

    def key(v: Value) -> tuple[int, int]:
        return (id(v.node), v.index)

    for v in graph.inputs:
        env[key(v)] = args[v.node.attrs["name"]]
    values = dict(graph.param_values)
    values.update(params or {})
    for v in graph.params:
        name = v.node.attrs["name"]
        if name not in values:
            raise InputError(f"graph {graph.name!r}: no value for parameter {name!r} ({v.type})")
        arr = np.asarray(values[name])
        if arr.shape != v.shape:
            raise InputError(f"parameter {name!r}: expected shape {v.shape}, got {arr.shape}")
        env[key(v)] = arr.astype(DTYPES[v.dtype], copy=False)
    for n in graph.live_nodes():
        opdef = get_op(n.op)
        try:
            result = opdef.reference([env[key(v)] for v in n.inputs], dict(n.attrs))
        except GraphError:
            raise
        except Exception as e:  # a numpy failure here is a bug in a reference: say where
            raise GraphError(f"reference of node %{n.name} = {n.op} failed: {e}") from e
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(n.outputs):
            raise GraphError(f"reference of node %{n.name} = {n.op} returned {len(results)} "
                             f"arrays for {len(n.outputs)} outputs")
        for out, arr in zip(n.outputs, results, strict=True):
            arr = np.asarray(arr)
            if arr.shape != out.shape:
                raise GraphError(f"reference of node %{n.name} = {n.op} returned shape "
                                 f"{arr.shape}, type rule says {out.type}")
            env[key(out)] = round_to_dtype(arr, out.dtype)
    return {name: env[key(v)] for name, v in graph.outputs}
