"""Benchmark workloads: a graphc graph, its inputs, and the same computation written for peers.

A `Workload` is a name, a one-line description and `make(quick) -> Instance`. An `Instance`
holds everything one measurement needs, built once and shared by every contender so that all
of them run on the very same arrays:

- `graph`: what graphc compiles (a forward graph, or a whole training step from
  `graphc.train_step`), with its parameter values;
- `inputs`: one array per graph input;
- peer factories (each optional, each imported lazily so that a missing library only skips
  its contender): `numpy(inst) -> NumpyImpl`, `torch(inst) -> TorchImpl`,
  `onnx(inst) -> OnnxImpl`. A factory builds fresh state (buffers, modules, running
  statistics) on every call, so the first call of a contender starts from the graph's initial
  parameter values and can be checked against the reference;
- `bytes` (the least traffic: every input and parameter read once, every output written once)
  and `flops`, from which the report derives % of copy bandwidth or % of GEMM peak.

Peers return `{graph output name: array}`; only the names a peer returns are compared with the
reference (`graphc.run_reference` of the graph). The definitions live in
`workloads_pointwise.py`, `workloads_linalg.py`, `workloads_models.py` and
`workloads_transformer.py`; `all_workloads()`
lists them in report order.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphc.ir.errors import GraphError
from graphc.ir.graph import Graph

Outputs = Mapping[str, Any]      # graph output name -> numpy array or torch tensor
RunFn = Callable[[], Outputs]

# How much the work is bounded by: memory traffic, arithmetic, or call overhead.
KINDS = ("memory", "compute", "latency")


@dataclass(frozen=True)
class NumpyImpl:
    """numpy op by op. `run` writes into preallocated buffers wherever numpy has `out=`;
    `run_alloc` (optional) is the natural expression with fresh outputs (allocator row)."""

    run: RunFn
    run_alloc: RunFn | None = None
    config: str = "op by op, preallocated outputs (out=)"


@dataclass(frozen=True)
class TorchImpl:
    """PyTorch eager. `run` is the standard API (fresh outputs); `run_prealloc`, where the API
    has `out=`, writes into preallocated tensors and becomes the main row; `compilable` is the
    function given to torch.compile (default `run`)."""

    run: RunFn
    run_prealloc: RunFn | None = None
    compilable: RunFn | None = None
    config: str = ""


@dataclass(frozen=True)
class OnnxImpl:
    """An ONNX model of the workload for ONNX Runtime: `feeds` by ONNX input name, `outputs`
    maps ONNX output names to graph output names, `post` reshapes an ONNX output to the graph's
    layout (e.g. the LSTM's [T, 1, B, H] to [T, B, H])."""

    model: Any                                     # onnx.ModelProto
    feeds: dict[str, np.ndarray]
    outputs: dict[str, str]
    post: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)


@dataclass
class Instance:
    """One workload at one size: the graph, its inputs and the peer factories."""

    name: str
    graph: Graph
    inputs: dict[str, np.ndarray]
    sizes: dict[str, Any]
    kind: str
    flops: float = 0.0
    numpy: Callable[[Instance], NumpyImpl] | None = None
    torch: Callable[[Instance], TorchImpl] | None = None
    onnx: Callable[[Instance], OnnxImpl] | None = None
    rtol: float = 2e-3                    # relative to the largest |reference| of each output
    notes: str = ""
    bytes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GraphError(f"workload {self.name!r}: kind {self.kind!r} not in {KINDS}")
        if not self.bytes:
            self.bytes = io_bytes(self.graph)

    @property
    def params(self) -> dict[str, np.ndarray]:
        return dict(self.graph.param_values)


@dataclass(frozen=True)
class Workload:
    """A named benchmark: `make(quick)` builds its Instance (quick: small smoke-test sizes)."""

    name: str
    description: str
    make: Callable[[bool], Instance]


def io_bytes(graph: Graph) -> int:
    """Least memory traffic of one run: inputs and parameters read once, outputs written once."""
    from graphc.ir.types import DTYPES

    values = [*graph.inputs, *graph.params, *(v for _, v in graph.outputs)]
    return sum(math.prod(v.shape) * np.dtype(DTYPES[v.dtype]).itemsize for v in values)


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    """Standard-normal float32 array (times `scale`)."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def torch_tensor(a: np.ndarray):
    """A torch tensor sharing `a`'s memory, or a copy when `a` is read-only (parameter values)."""
    import torch

    return torch.from_numpy(a if a.flags.writeable else a.copy())


def example_model(stem: str, **build_kwargs) -> Graph:
    """A graph from the repository's `examples/<stem>.py` (editable installs and checkouts)."""
    from graphc.io import load_graph

    root = Path(__file__).resolve().parents[2]
    path = root / "examples" / f"{stem}.py"
    if not path.exists():
        raise GraphError(f"workload needs examples/{stem}.py, which this installation lacks")
    return load_graph(path, **build_kwargs)


def all_workloads() -> list[Workload]:
    """Every workload, in report order."""
    from . import (
        workloads_cnn,
        workloads_linalg,
        workloads_models,
        workloads_pointwise,
        workloads_transformer,
    )

    return [*workloads_pointwise.WORKLOADS, *workloads_linalg.WORKLOADS,
            *workloads_cnn.WORKLOADS, *workloads_models.WORKLOADS,
            *workloads_transformer.WORKLOADS]


def select_workloads(patterns: list[str] | None) -> list[Workload]:
    """Workloads whose name matches any glob pattern (all when none); unknown names raise."""
    from .workloads_user import is_model_name, model_workload

    every = all_workloads()
    if not patterns:
        return every
    models = [model_workload(p) for p in patterns if is_model_name(p)]
    patterns = [p for p in patterns if not is_model_name(p)]
    chosen = [w for w in every if any(fnmatch.fnmatch(w.name, p) for p in patterns)] + models
    if not chosen:
        raise GraphError(f"no workload matches {patterns}; workloads are "
                         f"{[w.name for w in every]}")
    return chosen


def get_workload(name: str) -> Workload:
    """The workload called `name` (for use from Python: `get_workload("softmax").make(True)`);
    `model:<path>` is the user's model in that file."""
    from .workloads_user import is_model_name, model_workload

    if is_model_name(name):
        return model_workload(name)
    for w in all_workloads():
        if w.name == name:
            return w
    raise GraphError(f"no workload {name!r}; workloads are {[w.name for w in all_workloads()]}")
