"""The Triton executable: torch tensors in and out, one arena, kernels launched in order.

    program = build_program(schedule, {"cuda_graph": True})
    outs = program.run_torch({"x": x_cuda})          # torch CUDA tensors in, torch tensors out
    outs = program.run({"x": x_np, "w": w_np, ...})  # the Program protocol: numpy in and out

Every argument is checked before anything is launched (device, dtype, shape, contiguity; an
InputError names the culprit; index inputs of take / scatter_add also for range, as the
reference does). Temps are views into one arena allocated once per program at the
memory plan's offsets (in-place aliases share their input's offset); outputs are fresh tensors
on every run. Parameters and constants are uploaded once and stay resident; `run_torch` takes
parameter tensors only to override them.

With `cuda_graph=True` the first run compiles and warms every kernel, then captures the whole
schedule in one CUDA graph over static input/output buffers; later runs copy the inputs in,
replay, and return copies of the outputs (one launch instead of one per kernel).

On a GPU kernels are launched from cubins through the CUDA driver (`cuda_driver.CubinLaunch`):
a package's stored ones (nothing generated or compiled on load), else the current GPU's, compiled
on the first run. `launcher="triton"` and the interpreter go through the imported generated module
(`kernel[grid](...)`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from graphc.backends.program import Signature
from graphc.ir.errors import GraphError, InputError
from graphc.ir.kernel import Schedule

from .codegen import GeneratedModule, LaunchSpec, generate
from .options import TritonOptions

TORCH_DTYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16",
                "i32": "int32", "i64": "int64", "bool": "bool"}


def _torch():
    import torch

    return torch


def torch_dtype(dtype: str):
    return getattr(_torch(), TORCH_DTYPES[dtype])


def resolve_options(options: TritonOptions | Mapping | None) -> TritonOptions:
    """Fill in `interpret` (the interpreter exactly when no CUDA device is present)."""
    opts = TritonOptions.of(options)
    if opts.interpret is None:
        opts = opts.with_(interpret=not _torch().cuda.is_available())
    if opts.interpret and opts.cuda_graph:
        raise GraphError("triton: cuda_graph needs a CUDA device; the interpreter runs on the CPU")
    return opts


def build_program(schedule: Schedule, options: TritonOptions | Mapping | None = None
                  ) -> TritonProgram:
    """Generate the Triton source of `schedule` (and, with `archs`, compile it ahead of time).
    `graphc.compile` goes through `program.build_program`, which also reads CompileOptions."""
    opts = TritonOptions.of(options)
    if opts.interpret is None and not opts.archs:
        opts = resolve_options(opts)
    gen = generate(schedule, opts)
    aot = None
    if opts.archs:
        from .aot import compile_module

        aot = compile_module(gen, opts.archs, opts)
    return TritonProgram(schedule, gen, opts, aot)


def check_tensor(name: str, t: Any, shape: tuple[int, ...], dtype: str, device: str,
                 what: str = "input"):
    """Return `t` if it is a contiguous torch tensor of `shape`/`dtype` on `device`; numpy arrays
    are copied over; anything else raises InputError naming the argument."""
    torch = _torch()
    if isinstance(t, np.ndarray):
        t = numpy_to_torch(t, dtype, device, name, what)
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{what} {name!r}: expected a torch tensor {dtype}{list(shape)}, got "
                         f"{type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise InputError(f"{what} {name!r}: expected shape {tuple(shape)} ({dtype}), got "
                         f"{tuple(t.shape)}")
    if t.dtype != torch_dtype(dtype):
        raise InputError(f"{what} {name!r}: expected dtype {dtype} ({torch_dtype(dtype)}), got "
                         f"{t.dtype}")
    if t.device.type != device:
        raise InputError(f"{what} {name!r}: expected a tensor on {device}, got {t.device}")
    if not t.is_contiguous():
        raise InputError(f"{what} {name!r}: tensor is not contiguous (strides {t.stride()}); "
                         f"pass .contiguous()")
    return t


def numpy_to_torch(a: np.ndarray, dtype: str, device: str, name: str = "?", what: str = "input"):
    torch = _torch()
    want = np.float32 if dtype == "bf16" else np.dtype(TORCH_DTYPES[dtype])
    if a.dtype != want:
        raise InputError(f"{what} {name!r}: expected dtype {dtype} ({np.dtype(want)}), got "
                         f"{a.dtype}")
    t = torch.from_numpy(np.array(a, order="C", copy=True))  # writable, keeps 0-d
    if dtype == "bf16":
        t = t.to(torch.bfloat16)
    return t.to(device)


def torch_to_numpy(t) -> np.ndarray:
    torch = _torch()
    if t.dtype == torch.bfloat16:
        t = t.to(torch.float32)
    return t.detach().cpu().numpy()


class TritonProgram:
    """A schedule compiled to Triton kernels (see the module docstring)."""

    target = "triton"

    def __init__(self, schedule: Schedule, generated: GeneratedModule, options: TritonOptions,
                 aot: Any = None, launchers: list[Callable] | None = None) -> None:
        self.schedule = schedule
        self.signature = Signature.of(schedule)
        self.generated = generated
        self.options = options
        self.aot = aot
        self._launchers = launchers
        self._opts_resolved: TritonOptions | None = None
        self._arena = None
        self._temps: dict[str, Any] | None = None
        self._resident: dict[str, Any] | None = None
        self._graph: tuple | None = None
        self._index_steps: list[tuple] | None = None

    # -- public API ----------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return self.generated.source

    @property
    def device(self) -> str:
        return "cpu" if self.runtime_options.interpret else "cuda"

    @property
    def runtime_options(self) -> TritonOptions:
        if self._opts_resolved is None:
            self._opts_resolved = resolve_options(self.options)
        return self._opts_resolved

    def run(self, arrays: Mapping[str, np.ndarray], *, frozen_params: bool = False
            ) -> dict[str, np.ndarray]:
        """The Program protocol: every input and parameter by name (numpy), outputs as numpy."""
        s = self.schedule
        params = {p: arrays[p] for p in s.params if p in arrays}
        inputs = {n: arrays[n] for n in s.inputs if n in arrays}
        outs = self.run_torch(inputs, params)
        return {k: torch_to_numpy(v) for k, v in outs.items()}

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        return self.run_torch(inputs)

    def run_torch(self, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None,
                  copy_outputs: bool = True) -> dict[str, Any]:
        """Run on torch tensors (numpy arrays are copied to the device first); returns the graph
        outputs as torch tensors on the device. Parameters default to the resident values.

        With `cuda_graph`, inputs are copied into the graph's own buffers unless they are those
        buffers (`graph_inputs()`), and outputs are copies unless `copy_outputs=False` (then
        they are the graph's buffers, overwritten by the next run)."""
        args = self.check(inputs, params or {})
        self._check_index_inputs(args)
        if not self.runtime_options.interpret:  # compiled kernels assume 16-byte alignment
            args = {k: v if v.data_ptr() % 16 == 0 else v.clone() for k, v in args.items()}
        if self.runtime_options.cuda_graph:
            return self._run_graph(args, copy_outputs)
        storage = self._storage(args, self._new_outputs())
        self._launch_all(storage)
        return self._outputs(storage)

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the source, launch table and (if compiled ahead of time) PTX/cubin per arch
        into `folder`; return the manifest entries describing them."""
        from .aot import save_program

        return save_program(self, Path(folder))

    # -- argument checks -----------------------------------------------------------------------
    def check(self, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        s = self.schedule
        extra = set(inputs) - set(s.inputs)
        if extra:
            raise InputError(f"{s.name!r} has no input(s) {sorted(extra)}; inputs are "
                             f"{list(s.inputs)}")
        extra = set(params) - set(s.params)
        if extra:
            raise InputError(f"{s.name!r} has no parameter(s) {sorted(extra)}; parameters are "
                             f"{list(s.params)}")
        dev = self.device
        out: dict[str, Any] = {}
        for name in s.inputs:
            if name not in inputs:
                raise InputError(f"{s.name!r}: missing input {name!r} ({s.buffers[name].type})")
            t = s.buffers[name].type
            out[name] = (check_tensor(name, inputs[name], t.shape, t.dtype, dev)
                         if self.options.check_args else inputs[name])
        for name in s.params:
            if name in params:
                t = s.buffers[name].type
                out[name] = (check_tensor(name, params[name], t.shape, t.dtype, dev, "parameter")
                             if self.options.check_args else params[name])
        return out

    def _check_index_inputs(self, args: Mapping[str, Any]) -> None:
        """Index inputs of take / scatter_add in range, before anything is launched (indices
        computed inside the graph are checked right before the kernel that reads them)."""
        if self._index_steps is None:
            self._index_steps = [step for spec in self.generated.launches for step in spec.pre
                                 if step[0] == "check_index"]
        for step in self._index_steps:
            if step[2] in args:
                check_index_step(step, args[step[2]])

    # -- storage -------------------------------------------------------------------------------
    def _resident_values(self) -> dict[str, Any]:
        """Parameters and constants on the device, uploaded once."""
        if self._resident is None:
            s = self.schedule
            res = {}
            for name in s.params:
                if name in s.param_values:
                    res[name] = numpy_to_torch(np.asarray(s.param_values[name]),
                                               s.buffers[name].type.dtype, self.device, name,
                                               "parameter")
            for name, arr in s.constants.items():
                dt = s.buffers[name].type.dtype
                res[name] = numpy_to_torch(np.asarray(arr, np.float32 if dt == "bf16" else None),
                                           dt, self.device, name, "constant")
            self._resident = res
        return self._resident

    def _temp_views(self) -> dict[str, Any]:
        """Temps: views into one arena at the planned offsets (or one tensor each unplanned)."""
        if self._temps is not None:
            return self._temps
        torch = _torch()
        s = self.schedule
        plan = s.memory
        temps: dict[str, Any] = {}
        if plan is not None:
            self._arena = torch.empty(plan.arena_bytes + plan.alignment, dtype=torch.uint8,
                                      device=self.device)
            base = (-self._arena.data_ptr()) % plan.alignment
            for b in s.temps():  # an in-place alias lives at its input's offset
                off = plan.offsets.get(b.name, plan.offsets.get(plan.aliases.get(b.name, "")))
                if off is None:
                    continue
                raw = self._arena[base + off:base + off + b.nbytes]
                temps[b.name] = raw.view(torch_dtype(b.type.dtype)).view(b.type.shape)
        for b in s.temps():
            if b.name not in temps:
                temps[b.name] = torch.empty(b.type.shape, dtype=torch_dtype(b.type.dtype),
                                            device=self.device)
        self._temps = temps
        return temps

    def _new_outputs(self) -> dict[str, Any]:
        torch = _torch()
        s = self.schedule
        return {b.name: torch.empty(b.type.shape, dtype=torch_dtype(b.type.dtype),
                                    device=self.device)
                for b in s.buffers.values() if b.kind == "output"}

    def _storage(self, args: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        storage = dict(self._resident_values())
        storage.update(args)
        missing = [p for p in self.schedule.params if p not in storage]
        if missing:
            raise InputError(f"{self.schedule.name!r}: no value for parameter(s) {missing}")
        storage.update(self._temp_views())
        storage.update(outputs)
        if self.options.poison_arena:
            if self._arena is not None:
                self._arena.fill_(0xFF)
            for t in self._temps.values():
                if t.is_floating_point():
                    t.fill_(float("nan"))
        return storage

    def _outputs(self, storage: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, buf in self.schedule.outputs:
            t = storage[buf]
            kind = self.schedule.buffers[buf].kind
            out[name] = t if kind == "output" else t.clone()
        return out

    # -- launching -----------------------------------------------------------------------------
    def launchers(self) -> list[Callable]:
        if self._launchers is None:
            self._launchers = self._make_launchers()
        return self._launchers

    def _make_launchers(self) -> list[Callable]:
        opts = self.runtime_options
        if not opts.interpret:
            arch = current_arch()
            if self.aot is not None and self.aot.has_arch(arch):
                return self.aot.launchers(arch)
            if opts.launcher == "cubin":  # this GPU's binaries, kept apart from the package's
                from .aot import compile_module

                return compile_module(self.generated, (arch,), opts).launchers(arch)
        from .source_cache import import_source

        module = import_source(self.generated.source, opts.cache_path(), bool(opts.interpret),
                               opts.fp_fusion)
        return [JitLaunch(getattr(module, spec.fn), spec, opts) for spec in
                self.generated.launches]

    def _launch_all(self, storage: Mapping[str, Any], check_indices: bool = True) -> None:
        for spec, launch in zip(self.generated.launches, self.launchers(), strict=True):
            for step in spec.pre:
                if step[0] == "copy":
                    storage[step[1]].copy_(storage[step[2]])
                elif step[0] == "zero":
                    storage[step[1]].zero_()
                elif (step[0] == "check_index" and check_indices
                      and step[2] not in self.schedule.inputs):  # inputs: see run_torch
                    check_index_step(step, storage[step[2]])
            if 0 in spec.grid:
                continue
            try:
                launch([storage[b] for b in spec.args])
            except GraphError:
                raise
            except Exception as e:
                raise GraphError(f"triton: kernel {spec.kernel} ({spec.fn}) failed to launch: "
                                 f"{type(e).__name__}: {e}") from e

    def graph_inputs(self) -> dict[str, Any]:
        """The CUDA graph's input buffers (captured on first use): fill them and pass them to
        `run_torch` to skip the copy in."""
        if self._graph is None:
            torch = _torch()
            s = self.schedule
            zeros = {n: torch.zeros(s.buffers[n].type.shape,
                                    dtype=torch_dtype(s.buffers[n].type.dtype), device="cuda")
                     for n in s.inputs}
            self._run_graph(zeros, False)
        return {n: self._graph[1][n] for n in self.schedule.inputs}

    def _run_graph(self, args: Mapping[str, Any], copy_outputs: bool = True) -> dict[str, Any]:
        torch = _torch()
        if self._graph is None:
            static_args = {k: v.clone() for k, v in args.items()}
            for p in self.schedule.params:  # parameters live in the graph's static buffers
                if p not in static_args:
                    static_args[p] = self._resident_values()[p].clone()
            outputs = self._new_outputs()
            storage = self._storage(static_args, outputs)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # compile and warm every kernel outside the capture
                self._launch_all(storage)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # a capture may not wait for the device
                self._launch_all(storage, check_indices=False)
            self._graph = (graph, static_args, storage)
        graph, static_args, storage = self._graph
        for k, v in args.items():
            if v.data_ptr() != static_args[k].data_ptr():
                static_args[k].copy_(v)
        graph.replay()
        outs = self._outputs(storage)
        return {k: v.clone() for k, v in outs.items()} if copy_outputs else outs


def check_index_step(step: tuple, index) -> None:
    """Raise the reference's GraphError if the index tensor of a `check_index` step holds a
    value outside [-n, n) (one reduction on the device, then one wait for its answer)."""
    from graphc.ir.ops.indexing import check_index_range

    _, op, _, n, axis, shape = step
    n = int(n)
    if bool(((index < -n) | (index >= n)).any()):
        check_index_range(op, torch_to_numpy(index), n, int(axis),
                          tuple(int(d) for d in shape.split("x")))


class JitLaunch:
    """Launch one generated `@triton.jit` function through Triton's own launcher."""

    def __init__(self, fn: Any, spec: LaunchSpec, opts: TritonOptions) -> None:
        self.fn = fn
        self.spec = spec
        self.kwargs = dict(spec.constexprs)
        if not opts.interpret:
            self.kwargs.update(num_warps=spec.num_warps, num_stages=spec.num_stages,
                               enable_fp_fusion=opts.fp_fusion)

    def __call__(self, args: list[Any]) -> None:
        self.fn[self.spec.grid](*args, **self.kwargs)


def current_arch() -> str:
    """"sm_XY" of the current CUDA device."""
    major, minor = _torch().cuda.get_device_capability()
    return f"sm_{major}{minor}"
