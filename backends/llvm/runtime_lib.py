"""The runtime library: code every compiled graph shares, compiled once per machine.

Note: why the GEMM is precompiled
---------------------------------
Every matmul kernel of a module calls one generated GEMM per dtype (`codegen_gemm.shared_gemm`):
a driver, packing routines and 32-37 register-blocked microkernels, over a megabyte of IR
that takes LLVM 1.5 s to optimize and compile, while the graph's own kernels
usually take a fraction of that. That code does not depend on the graph at all (the epilogue
is a function pointer), only on the dtype, the vector width and the target, so it is compiled
once into an object file and linked into every graph's library (or added to the JIT engine):
a graph module only declares `graphc.gemm.shared.<dtype>`.

Objects are cached in memory for the process and on disk under `<cache root>/runtime/` keyed
by a sha256 of the backend's sources (`cache.backend_fingerprint`), the target (CPU name,
features, optimization level), the dtype, vector width and whether libgomp is used; written to
a temporary name and renamed into place, so concurrent builds are safe. `prebuild()` builds
them ahead of time (the benchmark does, to report a graph's compile time apart from this
one-time cost).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

from llvmlite import ir

from .cache import backend_fingerprint, cache_dir
from .target import TargetSpec, emit_object

RUNTIME_DTYPES = ("f32", "f64")
_memory: dict[str, bytes] = {}
_lock = threading.Lock()


def gemm_symbol(dtype: str) -> str:
    """The name of the runtime's GEMM for `dtype` (see `codegen_gemm.shared_gemm`)."""
    return f"graphc.gemm.shared.{dtype}"


def runtime_key(dtype: str, spec: TargetSpec, vector_bits: int) -> str:
    from .parallel import load_gomp

    h = hashlib.sha256()
    for part in (backend_fingerprint(), dtype, str(vector_bits), spec.cpu, spec.features,
                 str(spec.opt_level), str(bool(load_gomp()))):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def runtime_module(dtype: str, vector_bits: int, cpu: str = "") -> ir.Module:
    """The runtime library's IR for `dtype`: the shared GEMM (blocked for `cpu`)."""
    from .codegen_gemm import define_shared_gemm
    from .gemm import GemmConfig

    module = ir.Module(name=f"graphc_runtime_{dtype}")
    define_shared_gemm(module, GemmConfig.for_vector_bits(vector_bits, dtype, cpu))
    return module


def build_runtime_object(dtype: str, spec: TargetSpec, vector_bits: int) -> bytes:
    """Compile the GEMM of `dtype` for `spec` into position-independent object code."""
    return emit_object(runtime_module(dtype, vector_bits, spec.cpu), spec,
                       name=f"graphc_runtime_{dtype}")


def runtime_object(dtype: str, spec: TargetSpec, vector_bits: int,
                   root: str | os.PathLike | None = None) -> bytes:
    """The runtime object for (dtype, target): from memory, else disk, else built and stored."""
    key = runtime_key(dtype, spec, vector_bits)
    with _lock:
        obj = _memory.get(key)
        if obj is not None:
            return obj
        folder = cache_dir(root) / "runtime"
        path = folder / f"{key}.o"
        try:
            obj = path.read_bytes()
        except OSError:
            obj = None
        if not obj:
            obj = build_runtime_object(dtype, spec, vector_bits)
            _store(folder, path, obj)
        _memory[key] = obj
        return obj


def _store(folder: Path, path: Path, obj: bytes) -> None:
    """Write atomically; a cache that can't be written only costs a rebuild next time."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(obj)
        os.replace(tmp, path)
    except OSError:
        pass


def runtime_objects(dtypes: tuple[str, ...], spec: TargetSpec, vector_bits: int,
                    root: str | os.PathLike | None = None) -> list[bytes]:
    return [runtime_object(dt, spec, vector_bits, root) for dt in dtypes]


def prebuild(spec: TargetSpec | None = None, root: str | os.PathLike | None = None) -> float:
    """Build (or load) every runtime object for `spec` (host); returns the seconds it took."""
    spec = spec or TargetSpec.host()
    t0 = time.perf_counter()
    runtime_objects(RUNTIME_DTYPES, spec, spec.vector_bits, root)
    return time.perf_counter() - t0
