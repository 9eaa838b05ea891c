"""`graphc.compile`: graph → pipeline → backend Program, wrapped in an `Executable`.

An Executable owns the user-facing side of a compiled graph: the signature, the parameter
values (readable and replaceable), argument checks before any compiled code runs, statistics
(kernel counts, memory plan) and saving a package to disk (`graphc.load` reads it back).
"""

from __future__ import annotations

import importlib
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from graphc.backends.program import Program, Signature, check_array, check_arrays
from graphc.ir.errors import GraphError, InputError
from graphc.ir.graph import Graph
from graphc.ir.kernel import Schedule
from graphc.ir.text import parse_graph
from graphc.ir.types import DTYPES, round_to_dtype

from .passes.base import PassContext
from .pipeline import run_pipeline

# target name -> module with build_program(schedule, options) -> Program. Imported on demand, so
# `import graphc` never loads llvmlite, triton or torch.
TARGETS: dict[str, str] = {
    "reference": "graphc.backends.reference.program",
    "llvm": "graphc.backends.llvm.program",
    "triton": "graphc.backends.triton.program",
}


@dataclass
class CompileOptions:
    """Everything `compile` may be told. Backends read the fields they know."""

    target: str = "llvm"
    fuse: bool = True
    remat: bool = False
    threads: int | None = None      # None: GRAPHC_NUM_THREADS, else every core
    portable: bool = False          # llvm: x86-64-v3 baseline instead of the host CPU
    arch: tuple[str, ...] = ()      # triton AOT: e.g. ("sm_80", "sm_90")
    precision: str = "ieee"         # triton fp32 dot: "ieee" or "tf32"
    cache: bool = True
    verify: bool = False
    profile: bool = False           # time each kernel (llvm, reference): Executable.profile()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("fuse", "remat", "portable", "cache", "verify", "profile"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise GraphError(f"compile option {name}={value!r} must be a bool")
            setattr(self, name, bool(value))
        t = self.threads
        if t is not None:
            if not isinstance(t, numbers.Integral) or isinstance(t, (bool, np.bool_)):
                raise GraphError(f"compile option threads={t!r} must be an integer (or None: "
                                 f"$GRAPHC_NUM_THREADS, else every core)")
            self.threads = int(t)


def backend_module(target: str):
    if target not in TARGETS:
        raise GraphError(f"unknown target {target!r}; targets are {sorted(TARGETS)}")
    try:
        return importlib.import_module(TARGETS[target])
    except ImportError as e:
        raise GraphError(f"target {target!r} is not available here: {e}") from e


class ParamStore(MutableMapping):
    """Parameter values of an Executable; assignments are checked against the signature."""

    def __init__(self, sig: Signature, values: Mapping[str, np.ndarray]) -> None:
        self._types = dict(sig.params)
        self._values: dict[str, np.ndarray] = {}
        for name, _ in sig.params:
            if name not in values:
                raise GraphError(f"{sig.name!r}: no initial value for parameter {name!r}")
            self[name] = values[name]

    def __getitem__(self, name: str) -> np.ndarray:
        return self._values[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self._types:
            raise InputError(f"no parameter {name!r}; parameters are {list(self._types)}")
        t = self._types[name]
        arr = np.asarray(value)
        if arr.dtype != DTYPES[t.dtype] and arr.dtype.kind == DTYPES[t.dtype].kind:
            arr = round_to_dtype(arr, t.dtype)  # f64 -> f32 etc.: a convenience, same kind only
        # A private read-only copy: a stored value can then only change by assignment here,
        # which lets compiled code keep what it derives from parameters (prepacked weights)
        # from one call to the next (`frozen_params`).
        arr = check_array(name, np.array(arr, order="C", copy=True), t.shape, t.dtype,
                          "parameter")
        arr.setflags(write=False)
        self._values[name] = arr

    def arrays(self) -> Mapping[str, np.ndarray]:
        """The stored arrays themselves (checked, read-only), for the call path."""
        return self._values

    def __delitem__(self, name: str) -> None:
        raise InputError("parameters cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class Executable:
    """A compiled graph: call it with numpy arrays, get numpy arrays back."""

    def __init__(self, program: Program, params: Mapping[str, np.ndarray],
                 schedule: Schedule | None = None,
                 graph: Graph | Callable[[], Graph] | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.program = program
        self.signature: Signature = program.signature
        self.schedule = schedule
        self._graph = graph
        self.params = ParamStore(self.signature, params)
        self.info = dict(info or {})

    @property
    def graph(self) -> Graph | None:
        """The graph after the graph passes (from the pipeline cache: parsed when first read)."""
        if callable(self._graph):
            self._graph = self._graph()
        return self._graph

    @property
    def target(self) -> str:
        return self.program.target

    @property
    def input_names(self) -> list[str]:
        return [n for n, _ in self.signature.inputs]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.signature.outputs]

    def run(self, inputs: Mapping[str, Any] | None = None,
            params: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run once. `params` (optional) overrides stored parameter values for this call."""
        if params is None:  # the store's arrays were checked when assigned and are read-only
            arrays = check_arrays(self.signature, inputs or {}, self.params.arrays(),
                                  checked_params=True)
        else:
            arrays = check_arrays(self.signature, inputs or {}, {**self.params, **params})
        return self.program.run(arrays, frozen_params=params is None)

    def __call__(self, inputs: Mapping[str, Any] | None = None, /, **named: Any
                 ) -> dict[str, np.ndarray]:
        return self.run({**(inputs or {}), **named})

    def as_runner(self):
        """A `run(graph, inputs, params)` callable for `graphc.train.Trainer`."""
        def run(graph: Graph, inputs: Mapping[str, Any], params: Mapping[str, np.ndarray]):
            return self.run(inputs, {k: v for k, v in params.items() if k in self.params})
        return run

    def stats(self) -> dict[str, Any]:
        """Kernel count and memory-plan numbers (bytes)."""
        out: dict[str, Any] = {"target": self.target, **self.info}
        if self.schedule is not None:
            out["kernels"] = len(self.schedule.kernels)
            plan = self.schedule.memory
            if plan is not None:
                out.update(arena_bytes=plan.arena_bytes, naive_bytes=plan.naive_bytes,
                           lower_bound_bytes=plan.lower_bound)
        return out

    def profile(self, reset: bool = False):
        """Time per kernel over the calls since compiling (or the last `reset`): a
        `graphc.profile.Profile`, printable as a table. Needs `compile(..., profile=True)`
        (targets llvm and reference)."""
        from .profile import Profile

        data = getattr(self.program, "profile_data", None)
        if data is None:
            raise GraphError(f"target {self.target!r} does not profile kernels (llvm and "
                             "reference do)")
        if not self.program.profiled:
            raise GraphError(f"{self.signature.name!r} was compiled without profiling; compile "
                             "with profile=True")
        return Profile.from_data(self.target, data(reset=reset))

    def save(self, path) -> None:
        """Write an AOT package folder (see `graphc.package`)."""
        from .package import save_package

        save_package(self, path)

    def __repr__(self) -> str:
        return (f"Executable({self.signature.name!r}, target={self.target!r}, "
                f"inputs={self.input_names}, outputs={self.output_names})")


def compile(graph: Graph, target: str = "llvm", **options: Any) -> Executable:
    """Compile `graph` for `target` ("llvm", "triton" or "reference"); see CompileOptions."""
    known = set(CompileOptions.__dataclass_fields__) - {"target", "extra"}
    extra = {k: v for k, v in options.items() if k not in known}
    opts = CompileOptions(target=target, extra=extra,
                          **{k: v for k, v in options.items() if k in known})
    backend = backend_module(target)
    graph.check_defined()  # before the cache key prints it
    t0 = time.perf_counter()
    schedule, after, log, hit = _pipeline(graph, opts)
    t1 = time.perf_counter()
    program = backend.build_program(schedule, opts)
    t2 = time.perf_counter()
    info = {"pipeline_seconds": t1 - t0, "codegen_seconds": t2 - t1,
            "fused": opts.fuse, "passes": log}
    if hit is not None:
        info["pipeline_cache_hit"] = hit
    info.update(getattr(program, "info", {}))
    return Executable(program, schedule.param_values, schedule, after, info)


def _pipeline(graph: Graph, opts: CompileOptions
              ) -> tuple[Schedule, Graph | Callable[[], Graph], list, bool | None]:
    """run_pipeline, through the on-disk pipeline cache unless `cache` is off or the passes
    are to be verified: (schedule, graph after the graph passes, pass log, cache hit or None
    when the cache was not asked)."""
    from . import pipeline_cache as pc

    use_cache = opts.cache and pc.enabled() and not opts.verify
    if use_cache:
        store = pc.PipelineCache(opts.extra.get("cache_dir"))
        key = pc.pipeline_key(graph, {"fuse": opts.fuse, "remat": opts.remat})
        cached = store.lookup(key, dict(graph.param_values))
        if cached is not None:  # the log is the run that made the entry, marked as such
            log = [{**e, "cached": True} for e in cached.log]
            return cached.schedule, partial(parse_graph, cached.graph_text), log, True
    ctx = PassContext(verify=opts.verify)
    result = run_pipeline(graph, ctx, fuse=opts.fuse, remat=opts.remat)
    if use_cache:
        try:
            store.store(key, result.schedule, result.graph, ctx.log)
        except OSError:  # a read-only or full cache directory costs the next compile only
            pass
    return result.schedule, result.graph, ctx.log, (False if use_cache else None)
