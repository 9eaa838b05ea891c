"""`build_program(schedule, options) -> NativeProgram`: the LLVM target's entry for `compile`.

Compilation: cache lookup (a hit loads the cached shared library, no LLVM work at all), else
codegen (`codegen.generate_module`) -> O3 with the vectorizers -> machine code for the host CPU
(or the portable x86-64-v3 baseline) -> a shared library written into the cache and loaded with
ctypes. Without the cache (or without a C compiler to link) the module is JIT-compiled in
process instead. Either way one graph run is one call of `graphc_main` (`runtime.py`).

`program.info` records `compile_seconds` and `cache_hit` (and the key, the CPU, per-kernel
plans); `program.save(folder)` writes the library and returns the manifest entries that
`aot_loader.load_program` checks: calling convention, CPU name and required CPU features.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphc.backends.program import Signature
from graphc.ir.errors import GraphError
from graphc.ir.kernel import Schedule

from .aot_loader import AotLibrary
from .cache import CompileCache, schedule_key
from .codegen import GeneratedModule, generate_module
from .runtime import ENTRY, ENTRY_ARGTYPES, Layout, NativeProgram, resolve_threads
from .runtime_lib import gemm_symbol, runtime_objects
from .target import TargetSpec, compile_module, emit_shared_library

LIBRARY_FILE = "graphc.so"

# LLVM feature names -> /proc/cpuinfo flags, for the features that change generated code.
CPUINFO_FLAGS = {
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "ssse3": "ssse3", "popcnt": "popcnt",
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2",
    "lzcnt": "abm", "movbe": "movbe", "avx512f": "avx512f", "avx512cd": "avx512cd",
    "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512vl": "avx512vl",
    "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2",
    "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16", "avxvnni": "avx_vnni", "gfni": "gfni", "vaes": "vaes",
    "vpclmulqdq": "vpclmulqdq", "avx512vp2intersect": "avx512_vp2intersect",
}
# x86-64-v3 = v2 (SSE4.2, SSSE3, POPCNT) + AVX, AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE.
PORTABLE_FLAGS = ("sse4_1", "sse4_2", "ssse3", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1",
                  "bmi2", "abm", "movbe")


def required_cpu_flags(spec: TargetSpec) -> list[str]:
    """The /proc/cpuinfo flags a CPU needs to run code built for `spec`."""
    if spec.cpu == TargetSpec.portable().cpu and not spec.features:
        return list(PORTABLE_FLAGS)
    on = [f[1:] for f in spec.features.split(",") if f.startswith("+")]
    return sorted({CPUINFO_FLAGS[f] for f in on if f in CPUINFO_FLAGS})


def _option(options: Any, name: str, default: Any = None) -> Any:
    if options is None:
        return default
    if isinstance(options, Mapping):
        return options.get(name, default)
    if hasattr(options, name):
        return getattr(options, name)
    return getattr(options, "extra", {}).get(name, default)


def target_spec(options: Any = None) -> TargetSpec:
    opt = int(_option(options, "opt_level", 3))
    return TargetSpec.portable(opt) if _option(options, "portable", False) \
        else TargetSpec.host(opt)


def build_program(schedule: Schedule, options: Any = None) -> NativeProgram:
    """Compile `schedule` for this machine (see the module docstring). Options (a
    CompileOptions or a dict): threads, portable, cache, cache_dir, use_gomp, opt_level."""
    t0 = time.perf_counter()
    spec = target_spec(options)
    threads = resolve_threads(_option(options, "threads"))
    codegen_opts = {"use_gomp": _option(options, "use_gomp"), "vector_bits": spec.vector_bits,
                    "cpu": spec.cpu,
                    "vector_loops": bool(_option(options, "vector_loops", True)),
                    "max_threads": max(threads, os.cpu_count() or 1),
                    "profile": bool(_option(options, "profile", False))}
    target = {"cpu": spec.cpu, "features": spec.features, "opt": spec.opt_level,
              "codegen": codegen_opts}
    use_cache = bool(_option(options, "cache", True)) and _linker_available()
    sig = Signature.of(schedule)
    info: dict[str, Any] = {"cpu": spec.cpu, "portable": bool(_option(options, "portable")),
                            "threads": threads}
    if use_cache:
        store = CompileCache(_option(options, "cache_dir"))
        key = schedule_key(schedule, target)
        hit = store.lookup(key)
        if hit is None:
            gen = generate_module(schedule, codegen_opts)
            meta = {"layout": gen.layout.to_json(), "cpu": spec.cpu,
                    "cpu_flags": required_cpu_flags(spec), "kernels": gen.kernel_notes}
            objects = _runtime(gen, spec, codegen_opts, options)
            t_llvm = time.perf_counter()
            store.store(key, lambda p: emit_shared_library(gen.text, p, spec, name=schedule.name,
                                                           objects=objects), meta)
            info["llvm_seconds"] = time.perf_counter() - t_llvm
            hit = store.lookup(key)
            cache_hit = False
            if hit is None:
                raise GraphError(f"compile cache entry {key} vanished while being written")
        else:
            cache_hit = True
        lib_path, meta = hit
        layout = Layout.from_json(meta["layout"])
        lib = AotLibrary(lib_path)
        fn = lib.function(layout.entry, None, *ENTRY_ARGTYPES)
        info.update(cache_hit=cache_hit, cache_key=key, library=str(lib_path),
                    kernel_plans=meta.get("kernels", {}))
        saver = _library_saver(Path(lib_path), layout, spec)
        program = NativeProgram(sig, layout, fn, threads, keepalive=lib, saver=saver, info=info)
    else:
        gen = generate_module(schedule, codegen_opts)
        objects = _runtime(gen, spec, codegen_opts, options)
        t_llvm = time.perf_counter()
        jit = compile_module(gen.text, spec, name=schedule.name, objects=objects,
                             provides=frozenset(gemm_symbol(dt) for dt in gen.runtime))
        info["llvm_seconds"] = time.perf_counter() - t_llvm
        fn = jit.cfunc(ENTRY, None, *ENTRY_ARGTYPES)
        info.update(cache_hit=False, kernel_plans=gen.kernel_notes,
                    optimized_ir=jit.optimized_ir)

        def saver(folder: Path) -> dict[str, Any]:
            emit_shared_library(gen.text, folder / LIBRARY_FILE, spec, name=schedule.name,
                                objects=objects)
            return manifest_entries(gen.layout, spec)

        program = NativeProgram(sig, gen.layout, fn, threads, keepalive=jit, saver=saver,
                                info=info)
    info["compile_seconds"] = time.perf_counter() - t0
    return program


def _runtime(gen: GeneratedModule, spec: TargetSpec, codegen_opts: dict[str, Any],
             options: Any) -> list[bytes]:
    """The runtime library objects `gen` declares (built once per machine, `runtime_lib`)."""
    return runtime_objects(gen.runtime, spec, codegen_opts["vector_bits"],
                           _option(options, "cache_dir"))


def _library_saver(lib_path: Path, layout: Layout, spec: TargetSpec):
    def save(folder: Path) -> dict[str, Any]:
        shutil.copyfile(lib_path, folder / LIBRARY_FILE)
        return manifest_entries(layout, spec)
    return save


def manifest_entries(layout: Layout, spec: TargetSpec) -> dict[str, Any]:
    """What `aot_loader.load_program` needs and checks."""
    return {"library": LIBRARY_FILE, "layout": layout.to_json(), "cpu": spec.cpu,
            "cpu_flags": required_cpu_flags(spec), "machine": platform.machine(),
            "portable": spec.cpu == TargetSpec.portable().cpu}


def _linker_available() -> bool:
    return bool(shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc"))


def generated_ir(schedule: Schedule, options: Any = None) -> str:
    """The unoptimized LLVM IR text of `schedule` (for inspection and tests)."""
    spec = target_spec(options)
    return generate_module(schedule, {"use_gomp": _option(options, "use_gomp"),
                                      "vector_bits": spec.vector_bits, "cpu": spec.cpu,
                                      "max_threads": os.cpu_count() or 1}).text


def optimized_ir(schedule: Schedule, options: Any = None) -> str:
    """The LLVM IR of `schedule` after the O3 pipeline (what the vectorizers made of it)."""
    from .target import optimize_module, parse_module

    spec = target_spec(options)
    ref = parse_module(generated_ir(schedule, options), spec, schedule.name)
    optimize_module(ref, spec)
    return str(ref)
