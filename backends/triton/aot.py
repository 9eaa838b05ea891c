"""Ahead-of-time compilation for named GPU targets, and the package folder format.

    aot = compile_module(generated, ["sm_80", "sm_90"], options)   # no GPU needed
    entries = program.save(folder)                                  # source + per-arch cubins
    program = load_program(folder)                                  # cubins, no codegen

`triton.compile` with an `ASTSource` (signature: pointer types from the buffers' dtypes, block
sizes as constexprs, every pointer 16-byte aligned) and `GPUTarget("cuda", cc, 32)` gives PTX,
cubin and metadata. Per kernel we keep the cubin, the PTX, and what a launch needs: the entry
name, warps, dynamic shared memory, the number of PTX parameters (Triton appends scratch
pointers after ours) and scratch sizes. The grid is static (shapes are) and lives in the launch
table with the argument order.

Package layout (inside the caller's package folder):

    triton/kernels.py            the generated source (readable; the JIT fallback)
    triton/launches.json         format, launch table, runtime signature (buffers, memory plan)
    triton/constants.npz         array constants of the schedule (no pickles)
    triton/<arch>/<fn>.cubin     per arch and kernel, with <fn>.ptx and <fn>.json (metadata)
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from graphc.ir.errors import GraphError
from graphc.ir.kernel import Buffer, MemoryPlan, Schedule
from graphc.ir.types import TensorType

from .codegen import GeneratedModule, LaunchSpec
from .lowering import PTR_TYPE
from .options import TritonOptions, normalize_arch

PACKAGE_FORMAT = 1


@dataclass(frozen=True)
class KernelBinary:
    """One kernel compiled for one arch."""

    fn: str
    arch: str
    entry: str               # the PTX .entry name
    num_warps: int
    shared: int              # dynamic shared memory bytes
    num_params: int          # PTX parameters: ours, then Triton's scratch pointers
    global_scratch_size: int
    global_scratch_align: int
    triton_version: str
    compile_seconds: float
    cubin: bytes = field(repr=False, default=b"")
    ptx: str = field(repr=False, default="")

    def meta(self) -> dict:
        d = asdict(self)
        del d["cubin"], d["ptx"]
        return d


@dataclass
class AotModule:
    """Compiled kernels per arch for one generated module."""

    generated: GeneratedModule
    binaries: dict[str, dict[str, KernelBinary]]  # arch -> fn -> binary

    def has_arch(self, arch: str) -> bool:
        return arch in self.binaries

    def launchers(self, arch: str) -> list:
        from .cuda_driver import CubinLaunch

        table = self.binaries[arch]
        return [CubinLaunch(table[spec.fn], spec) for spec in self.generated.launches]


def ptx_param_count(ptx: str, entry: str) -> int:
    m = re.search(r"\.entry\s+" + re.escape(entry) + r"\s*\((.*?)\)", ptx, re.S)
    if m is None:
        raise GraphError(f"triton AOT: no .entry {entry} in the PTX")
    return m.group(1).count(".param")


def compile_kernel(fn: Any, spec: LaunchSpec, arch: str, opts: TritonOptions) -> KernelBinary:
    """Compile one generated function for `arch` with Triton's compiler (no GPU involved)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    pointers = names[:len(spec.args)]
    signature = {n: PTR_TYPE[dt] for n, dt in zip(pointers, spec.arg_dtypes, strict=True)}
    consts = dict(spec.constexprs)
    signature.update({c: "constexpr" for c in consts})
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(pointers))}
    cc = int(normalize_arch(arch)[3:])
    t0 = time.perf_counter()
    try:
        ck = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", cc, 32),
                            options={"num_warps": spec.num_warps, "num_stages": spec.num_stages,
                                     "enable_fp_fusion": opts.fp_fusion})
    except Exception as e:
        raise GraphError(f"triton AOT: kernel {spec.kernel} ({spec.fn}) failed to compile for "
                         f"{arch}: {type(e).__name__}: {str(e)[:2000]}") from e
    md = ck.metadata
    ptx = ck.asm["ptx"]
    return KernelBinary(spec.fn, arch, md.name, md.num_warps, md.shared,
                        ptx_param_count(ptx, md.name), getattr(md, "global_scratch_size", 0),
                        getattr(md, "global_scratch_align", 1), triton.__version__,
                        time.perf_counter() - t0, ck.asm["cubin"], ptx)


def kernel_key(fn: Any, spec: LaunchSpec, arch: str, opts: TritonOptions) -> str:
    """Kernels whose code is the same up to names compile to the same binary (an unrolled
    LSTM repeats its step kernels): comments dropped, the function and its arguments renamed."""
    lines = [ln for ln in fn.src.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    text = "\n".join(lines).replace(f"def {spec.fn}(", "def kernel(", 1)
    for i, name in enumerate(fn.arg_names):
        text = re.sub(rf"\b{re.escape(name)}\b", f"arg{i}", text)
    key = (text, spec.arg_dtypes, spec.constexprs, spec.num_warps, spec.num_stages, arch,
           opts.fp_fusion)
    return hashlib.sha256(repr(key).encode()).hexdigest()


def compile_module(gen: GeneratedModule, archs: tuple[str, ...] | list[str],
                   options: TritonOptions | Mapping | None = None,
                   memo: dict[str, KernelBinary] | None = None) -> AotModule:
    """Every kernel of `gen` compiled for every arch (e.g. "sm_80", "sm_90"). Identical kernels
    compile once (`memo` may carry binaries across modules)."""
    from .source_cache import import_source

    opts = TritonOptions.of(options)
    module = import_source(gen.source, opts.cache_path(), interpret=False,
                           fp_fusion=opts.fp_fusion)
    memo = {} if memo is None else memo
    binaries: dict[str, dict[str, KernelBinary]] = {}
    for arch in (normalize_arch(a) for a in archs):
        table = {}
        for spec in gen.launches:
            fn = getattr(module, spec.fn)
            key = kernel_key(fn, spec, arch, opts)
            if key not in memo:
                memo[key] = compile_kernel(fn, spec, arch, opts)
            table[spec.fn] = replace(memo[key], fn=spec.fn)
        binaries[arch] = table
    return AotModule(gen, binaries)


# -- the package folder ----------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _signature(s: Schedule) -> dict:
    plan = s.memory
    return {
        "name": s.name,
        "buffers": [[b.name, list(b.type.shape), b.type.dtype, b.kind]
                    for b in s.buffers.values()],
        "inputs": list(s.inputs), "params": list(s.params),
        "outputs": [list(o) for o in s.outputs],
        "memory": None if plan is None else {
            "arena_bytes": plan.arena_bytes, "offsets": dict(plan.offsets),
            "aliases": dict(plan.aliases), "alignment": plan.alignment,
            "naive_bytes": plan.naive_bytes, "lower_bound": plan.lower_bound},
    }


def save_program(program: Any, folder: Path) -> dict[str, Any]:
    """Write a TritonProgram into `folder/triton/`; return its manifest entries (files with
    their sha256, archs, triton version)."""
    gen: GeneratedModule = program.generated
    tri = Path(folder) / "triton"
    tri.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def write(rel: str, data: bytes) -> None:
        path = tri / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[f"triton/{rel}"] = _sha256(data)

    opts = program.options
    write("kernels.py", gen.source.encode())
    table = {"format": PACKAGE_FORMAT, "name": gen.name, "source_sha256": gen.digest,
             "options": {"precision": opts.precision, "fp_fusion": opts.fp_fusion,
                         "max_rblock": opts.max_rblock, "block": opts.block},
             "launches": [sp.to_json() for sp in gen.launches],
             "signature": _signature(program.schedule)}
    write("launches.json", json.dumps(table, indent=1).encode())
    consts = {k: np.asarray(v) for k, v in program.schedule.constants.items()}
    if consts:
        import io

        buf = io.BytesIO()
        np.savez(buf, **consts)
        write("constants.npz", buf.getvalue())
    archs = {}
    if program.aot is not None:
        for arch, table_ in program.aot.binaries.items():
            for fn, kb in table_.items():
                write(f"{arch}/{fn}.cubin", kb.cubin)
                write(f"{arch}/{fn}.ptx", kb.ptx.encode())
                write(f"{arch}/{fn}.json", json.dumps(kb.meta(), indent=1).encode())
            versions = {kb.triton_version for kb in table_.values()}
            archs[arch] = {"kernels": len(table_), "triton_version": sorted(versions)}
    return {"target": "triton", "format": PACKAGE_FORMAT, "archs": archs,
            "precision": opts.precision, "files": files}


def _schedule_from(sig: Mapping, constants: Mapping[str, np.ndarray],
                   param_values: Mapping[str, np.ndarray]) -> Schedule:
    """The runtime's view of a schedule (buffers, signature, memory plan), with no kernels."""
    buffers = {n: Buffer(n, TensorType(tuple(shape), dt), kind)
               for n, shape, dt, kind in sig["buffers"]}
    mem = sig["memory"]
    plan = None if mem is None else MemoryPlan(
        mem["arena_bytes"], dict(mem["offsets"]), {}, dict(mem["aliases"]), mem["naive_bytes"],
        mem["lower_bound"], mem["alignment"])
    return Schedule(sig["name"], (), buffers, tuple(sig["inputs"]), tuple(sig["params"]),
                    tuple(tuple(o) for o in sig["outputs"]), dict(constants), dict(param_values),
                    (), plan)


def load_program(folder: Path | str, manifest: Mapping | None = None, *,
                 schedule: Schedule | None = None,
                 options: TritonOptions | Mapping | None = None,
                 param_values: Mapping[str, np.ndarray] | None = None):
    """A TritonProgram from `folder/triton/`: cubins for the current GPU when the package has
    its arch (nothing is generated or compiled), else the stored source (JIT-compiled on a GPU,
    interpreted on a CPU). `graphc.load` passes the package `manifest` (its hashes are checked
    there); `schedule` is optional: the launch table carries the runtime signature;
    `param_values` supplies resident parameters (`graphc.load` passes them on every run)."""
    from .runtime import TritonProgram

    tri = Path(folder) / "triton"
    if not (tri / "launches.json").exists():
        raise GraphError(f"{folder}: no Triton package (missing triton/launches.json)")
    table = json.loads((tri / "launches.json").read_text())
    if table.get("format") != PACKAGE_FORMAT:
        raise GraphError(f"{folder}: Triton package format {table.get('format')} is not "
                         f"{PACKAGE_FORMAT}")
    source = (tri / "kernels.py").read_text()
    if _sha256(source.encode()) != table["source_sha256"]:
        raise GraphError(f"{tri / 'kernels.py'}: content does not match its recorded sha256")
    base = TritonOptions.of(options)
    saved = table["options"]
    opts = base.with_(precision=saved["precision"], fp_fusion=saved["fp_fusion"],
                      max_rblock=saved["max_rblock"], block=saved["block"])
    launches = tuple(LaunchSpec.from_json(d) for d in table["launches"])
    gen = GeneratedModule(table["name"], source, launches, opts)
    if schedule is None:
        consts = {}
        if (tri / "constants.npz").exists():
            with np.load(tri / "constants.npz", allow_pickle=False) as z:
                consts = {k: z[k] for k in z.files}
        schedule = _schedule_from(table["signature"], consts, param_values or {})
    binaries = {}
    for arch_dir in sorted(p for p in tri.iterdir() if p.is_dir() and p.name.startswith("sm_")):
        binaries[arch_dir.name] = {sp.fn: _read_binary(arch_dir, sp.fn) for sp in launches}
    return TritonProgram(schedule, gen, opts, AotModule(gen, binaries) if binaries else None)


def _read_binary(arch_dir: Path, fn: str) -> KernelBinary:
    meta = json.loads((arch_dir / f"{fn}.json").read_text())
    return KernelBinary(**meta, cubin=(arch_dir / f"{fn}.cubin").read_bytes(),
                        ptx=(arch_dir / f"{fn}.ptx").read_text())
