"""The shared op matrix (`tests/backends/op_matrix.py`: every primitive, fused combinations,
composites and the example models, training step included) through `graphc.compile(...,
target="llvm")`, fused and unfused, against the graph reference.

All cases of one mode are merged into ONE graph (names prefixed per case), so the whole matrix
is one schedule and one LLVM module: one compile instead of ~200. Each case is still its own
test, comparing its own outputs. Should the merged compile fail, every case compiles alone, so
the failure names the case that causes it.
"""

from __future__ import annotations

import pytest

import graphc
from graphc.ir.graph import Graph, Node

from ..op_matrix import OP_MATRIX, assert_close, case_inputs, reference


def merge_graphs(graphs: dict[str, Graph]) -> Graph:
    """One graph computing every graph of `graphs` side by side; the sources, nodes and outputs
    of graph `key` are renamed `key.<name>`."""
    inputs, params, nodes, outputs, values = [], [], [], [], {}
    for key, g in graphs.items():
        vmap = {}

        def m(v, vmap=vmap):
            return vmap[(id(v.node), v.index)]

        for v in g.inputs + g.params:
            n = v.node
            attrs = {**n.attrs, "name": f"{key}.{n.attrs['name']}"}
            nn = Node(n.op, (), attrs, n.types, attrs["name"])
            vmap[(id(n), v.index)] = nn.out
            (inputs if n.op == "input" else params).append(nn.out)
            if n.op == "param":
                values[attrs["name"]] = g.param_values[n.attrs["name"]]
        for n in g.nodes:
            nn = Node(n.op, [m(v) for v in n.inputs], n.attrs, n.types,
                      f"{key}.{n.name}" if n.name else None)
            for o in n.outputs:
                vmap[(id(n), o.index)] = nn.outputs[o.index]
            nodes.append(nn)
        outputs += [(f"{key}.{name}", m(v)) for name, v in g.outputs]
    return Graph("matrix", inputs, params, nodes, outputs, values)


def _key(i: int) -> str:
    return f"c{i}"


@pytest.fixture(scope="module", params=[True, False], ids=["fused", "unfused"])
def matrix_run(request):
    """(fuse, outputs of the merged compile by case name, or None if it failed)."""
    fuse = request.param
    graphs = {_key(i): c.graph() for i, c in enumerate(OP_MATRIX)}
    feeds = {}
    for i, case in enumerate(OP_MATRIX):
        feeds.update({f"{_key(i)}.{k}": v for k, v in case_inputs(case).items()})
    try:
        exe = graphc.compile(merge_graphs(graphs), target="llvm", fuse=fuse)
        got = exe(feeds)
    except Exception:  # noqa: BLE001 - each case then compiles alone and reports
        return fuse, None
    per_case = {}
    for i, case in enumerate(OP_MATRIX):
        prefix = f"{_key(i)}."
        per_case[case.name] = {k[len(prefix):]: v for k, v in got.items()
                               if k.startswith(prefix)}
    return fuse, per_case


@pytest.mark.parametrize("case", OP_MATRIX, ids=[c.name for c in OP_MATRIX])
def test_op_matrix_case(case, matrix_run):
    fuse, per_case = matrix_run
    inputs = case_inputs(case)
    want = reference(case, inputs)
    if per_case is None:
        got = graphc.compile(case.graph(), target="llvm", fuse=fuse)(inputs)
        assert_close(case, got, want)
        pytest.fail("the merged matrix failed to compile, though this case alone compiles")
    assert_close(case, per_case[case.name], want)


def test_merge_keeps_each_graph_separate():
    a, b = OP_MATRIX[0], OP_MATRIX[1]
    merged = merge_graphs({"x": a.graph(), "y": b.graph()})
    assert len(merged.inputs) == len(a.graph().inputs) + len(b.graph().inputs)
    assert {n for n, _ in merged.outputs} == (
        {f"x.{n}" for n in a.graph().output_names} | {f"y.{n}" for n in b.graph().output_names})
    assert len(merged.nodes) == len(a.graph().nodes) + len(b.graph().nodes)
