"""Contenders: everything that runs a workload, each in its best standard configuration.

| name                  | what runs                                                          |
|-----------------------|--------------------------------------------------------------------|
| graphc fused          | `graphc.compile(graph, target, fuse=True, threads=n)`, compiled    |
|                       | into an empty cache (cold) and again (cached)                      |
| graphc unfused        | the same with `fuse=False`: one kernel per primitive               |
| graphc reference      | target "reference" (numpy kernel-IR interpreter); omitted when the |
|                       | target is "reference" itself                                       |
| numpy                 | op by op into preallocated outputs (`out=`); where a workload has  |
|                       | no hand-written numpy (training steps of the LSTM and the CNN),    |
|                       | `graphc.run_reference` of the step graph: numpy op by op, fresh    |
|                       | outputs                                                            |
| numpy (alloc)         | the natural numpy expression, fresh outputs (allocator row)        |
| torch eager           | preallocated outputs (`out=`) where the API has them, else the     |
|                       | standard API                                                       |
| torch eager (alloc)   | the standard API with fresh outputs, when the main row used `out=` |
| torch.compile         | `torch.compile(fn, dynamic=False)` of the standard function        |
| onnxruntime           | an ONNX model of the workload, outputs bound to preallocated       |
|                       | buffers through IOBinding                                          |
| onnxruntime (alloc)   | `session.run`, fresh outputs                                       |
| copy (anchor)         | memory-bound workloads only: numpy's copy of the bandwidth         |
|                       | anchor's buffer, sampled among the contenders                      |
|                       | (`copy_anchor_contender`)                                          |

"(alloc)" rows are there so that allocator effects (page faults on freshly allocated outputs,
transparent huge pages) show as their own line instead of hiding in, or being hidden from, the
main one. Every contender returns `{graph output name: array}`; `check_outputs` compares it with
the reference before anything is timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .workloads import Instance, RunFn

ALLOC_SUFFIX = " (alloc)"
COPY_ANCHOR = "copy (anchor)"


@dataclass
class Contender:
    """One way of running one workload, and what was learnt about it."""

    name: str
    family: str                    # graphc | numpy | torch | onnxruntime
    threads: int | None
    config: str
    run: RunFn | None = None
    status: str = "ready"          # ready | ok | wrong | error | skipped
    reason: str = ""
    compile: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    first_call_s: float | None = None
    inner: int = 1
    samples: list[float] = field(default_factory=list)
    capped: bool = False           # stopped early by the per-contender time budget
    shared_samples: list[float] = field(default_factory=list)  # taken on shared cores
    core_checks: list[float] | str | None = None  # per round (`cores.py`), or why none
    cores_shared: bool = False     # too few other samples: the shared ones are in `samples`
    verify: Callable[[Any], dict[str, Any]] | None = None  # its own check, instead of outputs

    @property
    def role(self) -> str:
        if self.family == "anchor":
            return "anchor"
        return "allocator" if self.name.endswith(ALLOC_SUFFIX) else "main"


def failed(name: str, family: str, status: str, reason: str) -> Contender:
    return Contender(name, family, None, "", status=status, reason=reason)


# -- checking -----------------------------------------------------------------------------------


def to_numpy(value: Any) -> np.ndarray:
    """A private numpy copy of a contender's output (numpy array, numpy scalar, torch tensor)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.array(value, copy=True)


def check_outputs(inst: Instance, got: Mapping[str, Any], ref: Mapping[str, np.ndarray]
                  ) -> dict[str, Any]:
    """Compare every output a contender returned with the reference.

    The error of an output is max |got - ref| relative to max |ref|. Updated parameters
    (`new.<param>`) are compared as updates, new - old, so that a wrong gradient cannot hide
    behind a large weight.
    """
    errors: dict[str, float] = {}
    problems: list[str] = []
    for name, value in got.items():
        if name not in ref:
            problems.append(f"{name}: not an output of the graph")
            continue
        a, r = to_numpy(value).astype(np.float64), np.asarray(ref[name], np.float64)
        if a.shape != r.shape:
            problems.append(f"{name}: shape {list(a.shape)} != reference {list(r.shape)}")
            continue
        old = inst.params.get(name[4:]) if name.startswith("new.") else None
        floor = 1e-12
        if old is not None:
            a, r = a - old, r - old
            # an update that is zero in exact arithmetic (a bias before batch norm) is rounding
            # noise in every implementation: measure it against the parameter's own size
            floor = 1e-4 * max(float(np.max(np.abs(old))) if old.size else 0.0, 1.0)
        scale = max(float(np.max(np.abs(r))) if r.size else 0.0, floor)
        err = float(np.max(np.abs(a - r))) / scale if r.size else 0.0
        if not np.isfinite(err):
            err = float("inf")
        errors[name] = err
        if err > inst.rtol:
            problems.append(f"{name}: relative error {err:.2e} > {inst.rtol:.0e}")
    if not got:
        problems.append("returned no outputs")
    worst = max(errors.values(), default=0.0)
    return {"ran": True, "passed": not problems, "compared": sorted(errors),
            "max_rel_err": worst, "rtol": inst.rtol, "errors": errors, "problems": problems}


# -- graphc ---------------------------------------------------------------------------------------


def graphc_compile():
    import graphc

    fn = getattr(graphc, "compile", None)
    if fn is None:   # older trees export it only from graphc.compiler
        from graphc.compiler import compile as fn
    return fn


def timed_compile(inst: Instance, target: str, fuse: bool, threads: int, cache_dir: str | None):
    t0 = time.perf_counter()
    options = {"cache_dir": cache_dir} if cache_dir else {}
    exe = graphc_compile()(inst.graph, target=target, fuse=fuse, threads=threads, **options)
    return exe, time.perf_counter() - t0


def prebuild_runtime(target: str) -> float | None:
    """Make the LLVM runtime library (the GEMM every graph links, compiled once per machine
    and cached) available before a cold compile is timed: seconds it took here (about half a
    second the first time on a machine, milliseconds from the disk cache, 0 once in memory),
    None for other targets. A graph's cold compile then measures the graph's own code."""
    if target != "llvm":
        return None
    try:
        from graphc.backends.llvm.runtime_lib import prebuild
    except ImportError:  # older trees: no runtime library, the GEMM is in every graph
        return None
    return prebuild()


def graphc_stats(exe) -> dict[str, Any]:
    st = exe.stats()
    keys = ("kernels", "arena_bytes", "naive_bytes", "lower_bound_bytes", "pipeline_seconds",
            "codegen_seconds", "threads", "cache_hit")
    return {k: st[k] for k in keys if k in st}


def graphc_contender(inst: Instance, name: str, target: str, fuse: bool, threads: int,
                     cache_dir: str | None, measure_cache: bool) -> Contender:
    """Compile into `cache_dir`, an empty compile cache: the cold compile time. With
    `measure_cache`, compile again: a cache hit, the cached compile time (for targets without
    a cache, the whole compile again)."""
    try:
        runtime_s = prebuild_runtime(target)
        exe, cold = timed_compile(inst, target, fuse, threads, cache_dir)
        times = {"cold_s": cold}
        if runtime_s is not None:
            times["runtime_s"] = runtime_s
        if measure_cache:
            exe, times["cached_s"] = timed_compile(inst, target, fuse, threads, cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
        return failed(name, "graphc", "error", f"compile: {type(e).__name__}: {e}")
    inputs = {k: inst.inputs[k] for k in exe.input_names}
    stats = graphc_stats(exe)
    config = f"target {target}, fuse={fuse}"
    if any(name.startswith("new.") for name in exe.output_names):
        config += ", each step's new parameters fed to the next (as graphc.train.Trainer)"
        run = training_loop(exe, inputs)
    else:
        def run():
            return exe.run(inputs)
    return Contender(name, "graphc", stats.get("threads", threads), config,
                     run=run, compile=times, stats=stats)


def training_loop(exe, inputs: dict[str, Any]):
    """A training step run as a training loop runs it: every call gets the parameters the
    previous call returned (`new.<param>`), as `graphc.train.Trainer` passes them, so whatever
    the executable derives from parameters (prepacked weights) is derived again each step, as
    the peers' steps update their weights each call. The first call starts from the workload's
    parameters, whose results the correctness check compares."""
    params = {k: np.asarray(v) for k, v in exe.params.items()}

    def run() -> dict[str, Any]:
        out = exe.run(inputs, params)
        for name, value in out.items():
            if name.startswith("new.") and name[4:] in params:
                params[name[4:]] = value
        return out

    return run


def graphc_contenders(inst: Instance, target: str, threads: int, cache_dir: str | None
                      ) -> list[Contender]:
    """graphc fused and unfused on `target`."""
    def where(kind: str) -> str | None:   # a fresh cache per contender: the first compile is cold
        return f"{cache_dir}/{inst.name}-t{threads}-{kind}" if cache_dir else None

    return [graphc_contender(inst, "graphc fused", target, True, threads, where("fused"), True),
            graphc_contender(inst, "graphc unfused", target, False, threads, where("unfused"),
                             False)]


def reference_contenders(inst: Instance, target: str, threads: int) -> list[Contender]:
    """graphc's reference target (numpy kernel-IR interpreter) unless `target` is it."""
    if target == "reference":
        return []
    return [graphc_contender(inst, "graphc reference", "reference", True, threads, None, False)]


# -- numpy ----------------------------------------------------------------------------------------


def numpy_threads() -> int | None:
    from .machine import numpy_blas

    lib = numpy_blas()
    return lib["num_threads"] if lib else None


def numpy_contenders(inst: Instance) -> list[Contender]:
    threads = numpy_threads()
    if inst.numpy is None:
        from graphc.backends.reference import run_graph

        return [Contender("numpy", "numpy", threads,
                          "graphc.run_reference of the graph: numpy op by op, fresh outputs",
                          run=lambda: run_graph(inst.graph, inst.inputs))]
    try:
        impl = inst.numpy(inst)
    except Exception as e:  # noqa: BLE001
        return [failed("numpy", "numpy", "error", f"setup: {type(e).__name__}: {e}")]
    out = [Contender("numpy", "numpy", threads, impl.config, run=impl.run)]
    if impl.run_alloc is not None:
        out.append(Contender("numpy" + ALLOC_SUFFIX, "numpy", threads,
                             "natural numpy expression, fresh outputs", run=impl.run_alloc))
    return out


# -- torch ----------------------------------------------------------------------------------------


def torch_contenders(inst: Instance, compile_peers: bool) -> list[Contender]:
    if inst.torch is None:
        return []
    try:
        import torch
    except ImportError:
        return [failed("torch eager", "torch", "skipped", "torch is not installed")]
    threads = torch.get_num_threads()
    try:
        impl = inst.torch(inst)
    except Exception as e:  # noqa: BLE001
        return [failed("torch eager", "torch", "error", f"setup: {type(e).__name__}: {e}")]
    version = f"torch {torch.__version__}"
    if impl.run_prealloc is not None:
        out = [Contender("torch eager", "torch", threads,
                         f"{version} eager, preallocated outputs (out=)",
                         run=impl.run_prealloc),
               Contender("torch eager" + ALLOC_SUFFIX, "torch", threads,
                         f"{version} eager, fresh outputs", run=impl.run)]
    else:
        out = [Contender("torch eager", "torch", threads,
                         f"{version} eager{', ' + impl.config if impl.config else ''}",
                         run=impl.run)]
    if compile_peers:
        out.append(torch_compile_contender(inst, threads, version))
    return out


def torch_compile_contender(inst: Instance, threads: int, version: str) -> Contender:
    """torch.compile of a fresh copy of the standard function. Compilation happens on the first
    call (the checked one), whose time is reported as the cold compile time."""
    import torch

    try:
        impl = inst.torch(inst)
        # Workloads of several sizes share one function; dynamo caches per code object and
        # would fall back to eager after its recompile limit, so each workload starts afresh.
        torch._dynamo.reset()
        compiled = torch.compile(impl.compilable or impl.run, dynamic=False)
    except Exception as e:  # noqa: BLE001
        return failed("torch.compile", "torch", "error", f"setup: {type(e).__name__}: {e}")
    return Contender("torch.compile", "torch", threads,
                     f"{version} torch.compile(dynamic=False), default mode", run=compiled)


# -- ONNX Runtime ---------------------------------------------------------------------------------


def onnx_contenders(inst: Instance, threads: int) -> list[Contender]:
    if inst.onnx is None:
        return []
    try:
        import onnx  # noqa: F401 - the models are written with it
        import onnxruntime as ort
    except ImportError:
        return [failed("onnxruntime", "onnxruntime", "skipped",
                       "onnx/onnxruntime not installed (pip install graphc[bench])")]
    try:
        impl = inst.onnx(inst)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        sess = ort.InferenceSession(impl.model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        session_s = time.perf_counter() - t0
        main = onnx_bound_run(sess, impl)
    except Exception as e:  # noqa: BLE001
        return [failed("onnxruntime", "onnxruntime", "error",
                       f"setup: {type(e).__name__}: {e}")]
    names = list(impl.outputs)

    def run_alloc():
        values = sess.run(names, impl.feeds)
        return {impl.outputs[n]: impl.post.get(n, lambda a: a)(v)
                for n, v in zip(names, values, strict=True)}

    version = f"onnxruntime {ort.__version__}"
    return [Contender("onnxruntime", "onnxruntime", threads,
                      f"{version}, IOBinding into preallocated outputs", run=main,
                      compile={"session_s": session_s}),
            Contender("onnxruntime" + ALLOC_SUFFIX, "onnxruntime", threads,
                      f"{version}, session.run (fresh outputs)", run=run_alloc)]


def onnx_bound_run(sess, impl) -> RunFn:
    """A run function with inputs bound once and outputs bound to preallocated arrays."""
    names = list(impl.outputs)
    probe = sess.run(names, impl.feeds)          # learn output shapes and dtypes
    buffers = {n: np.empty_like(v) for n, v in zip(names, probe, strict=True)}
    binding = sess.io_binding()
    for name, value in impl.feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for name, buf in buffers.items():
        binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)

    def run():
        sess.run_with_iobinding(binding)
        return {impl.outputs[n]: impl.post.get(n, lambda a: a)(buffers[n]) for n in names}

    return run


# -- the copy anchor, side by side ----------------------------------------------------------------


def copy_anchor_bytes(quick: bool) -> int:
    """Bytes copied by the bandwidth anchor: larger than the last-level cache, so that it
    measures memory, not cache (and, here, large enough for the C library's copy to take its
    streaming-store path: numpy copies 128 MiB at 14 GB/s and 256 MiB at 23 GB/s on one core
    of this machine)."""
    from .machine import last_level_cache_bytes

    return (32 << 20) if quick else max(256 << 20, last_level_cache_bytes() or 0)


def copy_anchor_contender(inst: Instance, quick: bool) -> list[Contender]:
    """A memory-bound workload's share of copy bandwidth compares two rates, and this machine's
    memory bandwidth drifts by tens of percent within minutes, so the copy is also timed as a
    contender: sampled in the same shuffled rounds as graphc, its median against graphc's is a
    side-by-side ratio like every speedup. Checked by comparing the copy with its source."""
    if inst.kind != "memory":
        return []
    nbytes = copy_anchor_bytes(quick)
    src = np.arange(nbytes // 4, dtype=np.float32)
    dst = np.zeros_like(src)

    def run():
        np.copyto(dst, src)
        return {}

    def verify(_: Any) -> dict[str, Any]:
        same = bool(np.array_equal(dst, src))
        return {"ran": True, "passed": same, "compared": ["copy"], "max_rel_err": 0.0,
                "rtol": 0.0, "errors": {}, "problems": [] if same else ["copy differs"]}

    return [Contender(COPY_ANCHOR, "anchor", 1, f"np.copyto of {nbytes >> 20} MiB",
                      run=run, stats={"bytes": nbytes}, verify=verify)]


# Contenders that share a runtime, and so may share a worker process (runner.py, isolation):
# graphc's compiled code (with the copy anchor, which must run beside it); numpy and graphc's
# reference interpreter (numpy op by op); torch eager and torch.compile; ONNX Runtime. The
# first name of each is its main contender.
RUNTIME_GROUPS = {"graphc": ("graphc fused", "graphc unfused", COPY_ANCHOR),
                  "numpy": ("numpy", "numpy (alloc)", "graphc reference"),
                  "torch": ("torch eager", "torch eager (alloc)", "torch.compile"),
                  "onnxruntime": ("onnxruntime", "onnxruntime (alloc)")}


def build_contenders(inst: Instance, target: str, threads: int, compile_peers: bool,
                     cache_dir: str | None = None, group: str | None = None,
                     quick: bool = False) -> list[Contender]:
    """Every contender of one workload (or of one runtime `group` of RUNTIME_GROUPS), set up
    (compiled, sessions created), not yet run. `cache_dir`: a folder for graphc's compile
    caches (one fresh cache per contender). Only the chosen group's libraries are imported."""
    if group is not None and group not in RUNTIME_GROUPS:
        from graphc.ir.errors import GraphError

        raise GraphError(f"no contender group {group!r}; groups are {list(RUNTIME_GROUPS)}")
    out: list[Contender] = []
    if group in (None, "graphc"):
        out += graphc_contenders(inst, target, threads, cache_dir)
        out += copy_anchor_contender(inst, quick)
    if group in (None, "numpy"):
        out += reference_contenders(inst, target, threads) + numpy_contenders(inst)
    if group in (None, "torch"):
        out += torch_contenders(inst, compile_peers)
    if group in (None, "onnxruntime"):
        out += onnx_contenders(inst, threads)
    return out
