"""The machine header of a benchmark run: CPU, cores, memory, transparent huge pages, load,
library versions, numpy's BLAS as threadpoolctl reports it (kernel architecture, threads), and
what was done about OpenBLAS environment overrides.

OpenBLAS reads `OPENBLAS_CORETYPE` (force a kernel family, e.g. Haswell on an AVX-512 CPU) and
`OPENBLAS_L2_SIZE` once, when numpy is imported. A benchmark that compares against numpy must
let OpenBLAS pick its kernel for the CPU it runs on, so `graphc bench` started from the command
line re-executes itself without those two variables before numpy is loaded again
(`reexec_without_openblas_overrides`); `--keep-openblas-env` keeps them, and an in-process call
(e.g. `graphc.cli.main([...])` from a test) never re-executes. Either way the header records
the variables and the kernel OpenBLAS reports.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARK = "GRAPHC_BENCH_REMOVED_ENV"   # set on the re-executed process: what was removed


def reexec_without_openblas_overrides(argv: list[str]) -> None:
    """Replace this process by `python -m graphc.cli <argv>` without OpenBLAS overrides.

    Returns (doing nothing) when none is set or this process is already the re-executed one.
    """
    present = {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ}
    if not present or REEXEC_MARK in os.environ:
        return
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    env[REEXEC_MARK] = json.dumps(present)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "graphc.cli", *argv], env)


def openblas_env_report(kept_reason: str | None) -> dict[str, Any]:
    """What happened to the OpenBLAS variables: removed by a re-exec, kept (why), or unset."""
    removed = json.loads(os.environ.get(REEXEC_MARK, "{}"))
    present = {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ}
    if removed:
        action = "removed (graphc bench re-executed itself without them)"
    elif present:
        action = f"kept ({kept_reason or 'not removed'})"
    else:
        action = "not set"
    return {"action": action, "removed": removed, "present": present}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2 ** 20, 1)
    return None


def last_level_cache_bytes() -> int | None:
    """Size of CPU 0's largest cache level (Linux sysfs), or None."""
    best = None
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        text = (_read(str(d / "size")) or "").strip()
        if not text:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        try:
            size = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        best = size if best is None else max(best, size)
    return best


def transparent_hugepages() -> str | None:
    """The active THP mode ("always", "madvise" or "never"), or None where unknown."""
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if not text:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return text.strip()


def module_version(name: str) -> str | None:
    """The version of an installed module, None when it is not installed. Never imports torch
    or onnxruntime just to ask: their metadata is read instead."""
    from importlib import metadata

    dist = {"onnxruntime": "onnxruntime", "torch": "torch", "onnx": "onnx",
            "llvmlite": "llvmlite", "numpy": "numpy", "threadpoolctl": "threadpoolctl",
            "matplotlib": "matplotlib", "graphc": "graphc", "triton": "triton"}.get(name, name)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        mod = sys.modules.get(name)
        return getattr(mod, "__version__", None) if mod else None


# What runs when the bench runs: an edit here makes a run "+dirty". Results and documents (the
# bench's own JSON, rewritten by every run, and the README) do not.
CODE_PATHS = ("graphc", "ir", "backends", "pyproject.toml")


def git_commit(root: Path | None = None) -> str | None:
    """The checkout's short commit, with "+dirty" when tracked code differs from it."""
    root = root or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno", "--",
                                *CODE_PATHS], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries (empty if not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture",
            "threading_layer", "prefix")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info()]


def numpy_blas() -> dict[str, Any] | None:
    """numpy's BLAS (the first BLAS threadpoolctl lists), or None."""
    importlib.import_module("numpy")
    for lib in blas_info():
        if lib["user_api"] == "blas":
            return lib
    return None


def machine_info(kept_reason: str | None = None) -> dict[str, Any]:
    """The header of a run (see the module docstring)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = {name: module_version(name) for name in
                ("graphc", "numpy", "torch", "onnx", "onnxruntime", "llvmlite",
                 "threadpoolctl", "matplotlib")}
    versions["python"] = platform.python_version()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": memory_gib(),
        "last_level_cache_bytes": last_level_cache_bytes(),
        "platform": platform.platform(),
        "transparent_hugepages": transparent_hugepages(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "graphc_commit": git_commit(),
        "numpy_blas": numpy_blas(),
        "openblas_env": openblas_env_report(kept_reason),
    }
