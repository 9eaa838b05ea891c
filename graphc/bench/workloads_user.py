"""Workloads made from the user's own model files: `graphc bench --model PATH` benchmarks a
`.py` (its `build()`, inputs from `example_inputs()` when it defines one), `.gir` or `.onnx`
model like the built-in workloads: graphc fused and unfused, the reference, numpy op by op
through the reference runner, and for an ONNX file ONNX Runtime on that very file.

A model workload is named `model:<path>`, followed by the bindings of an ONNX model's symbolic
dimensions (`#dim:batch=8`, `#shape:x=8x3x32x32`), so that a worker process (`isolate.py`)
rebuilds it from its name like any other. Inputs without an example are seeded: standard normal
floats, zero integers (valid indices and labels), random booleans."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from graphc.ir.errors import GraphError
from graphc.ir.graph import Graph
from graphc.ir.types import DTYPES

from .workloads import Instance, OnnxImpl, Workload

PREFIX = "model:"
BINDING = {"dim": "#dim:", "shape": "#shape:"}


def is_model_name(name: str) -> bool:
    return name.startswith(PREFIX)


def seeded_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """`gradcheck.sample_inputs` in each input's own dtype."""
    from graphc.gradcheck import sample_inputs

    dtypes = {v.node.attrs["name"]: DTYPES[v.dtype] for v in graph.inputs}
    return {k: np.asarray(v, dtypes[k]) for k, v in sample_inputs(graph, seed).items()}


def _onnx_impl(path: Path, graph: Graph, inputs: dict[str, np.ndarray]) -> OnnxImpl:
    """ONNX Runtime on the file itself: the importer makes one graph input per ONNX input that
    is not an initializer and one output per ONNX output, in order, so names pair up by
    position."""
    import onnx

    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    onnx_inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    feeds = {o: inputs[g] for o, g in zip(onnx_inputs, graph.input_names, strict=True)}
    outputs = {vi.name: g for vi, g in zip(model.graph.output, graph.output_names, strict=True)}
    return OnnxImpl(model, feeds, outputs)


def model_name(path: str, dims: list[str] | None = None,
               shapes: list[str] | None = None) -> str:
    """The workload name of the model at `path` with the command line's --dim and --shape
    (checked here, so that a malformed one fails before any benchmark runs)."""
    from graphc.io import parse_bindings

    parse_bindings(dims, shapes)
    return PREFIX + path + "".join(BINDING["dim"] + d for d in dims or ()) \
        + "".join(BINDING["shape"] + s for s in shapes or ())


def _split_name(name: str) -> tuple[str, list[str], list[str]]:
    """`model_name`'s inverse: (path, --dim specs, --shape specs)."""
    path, *parts = re.split(r"#(dim|shape):", name[len(PREFIX):])
    found: dict[str, list[str]] = {k: [] for k in BINDING}
    for kind, spec in zip(parts[::2], parts[1::2], strict=True):
        found[kind].append(spec)
    return path, found["dim"], found["shape"]


def make_model_instance(name: str) -> Instance:
    from graphc.io import load_bound, load_example_inputs, parse_bindings

    path, dims, shapes = _split_name(name)
    where = Path(path)
    graph = load_bound(where, *parse_bindings(dims, shapes))
    inputs = load_example_inputs(where) or seeded_inputs(graph)
    missing = set(graph.input_names) - set(inputs)
    if missing:
        raise GraphError(f"{path}: example_inputs() gives no value for inputs {sorted(missing)}")
    onnx = None
    if where.suffix == ".onnx":
        def onnx(inst: Instance) -> OnnxImpl:
            return _onnx_impl(where, inst.graph, inst.inputs)
    return Instance(name, graph, {k: inputs[k] for k in graph.input_names},
                    {"model": path}, "latency", onnx=onnx,
                    notes="the user's model; peers: the reference, numpy op by op"
                          + (" and ONNX Runtime on the same file" if onnx else ""))


def model_workload(name: str) -> Workload:
    """The workload `model:<path>[#dim:...][#shape:...]` (the model is loaded when the
    instance is made)."""
    path = _split_name(name)[0]
    if not Path(path).exists():
        raise GraphError(f"model file {path!r} does not exist")
    return Workload(name, f"the model in {path}", lambda quick: make_model_instance(name))
