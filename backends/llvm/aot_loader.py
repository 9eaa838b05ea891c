"""Load a shared library built by `target.emit_shared_library` with ctypes only.

This module must import nothing but the standard library (ctypes, json), numpy and graphc's
light modules, so that a compiled package runs where llvmlite is not installed. Functions
called through ctypes release the GIL. `load_program` builds a runnable Program from a package
folder after checking that this CPU has every feature the code was compiled for.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from graphc.ir.errors import GraphError


class AotLoadError(GraphError):
    """A compiled library is missing, cannot be loaded, or lacks a function."""


class AotLibrary:
    """A loaded shared library; `function(name, restype, *argtypes)` gives a ctypes callable."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise AotLoadError(f"compiled library {self.path!r} does not exist")
        try:
            # RTLD_LOCAL: two packages may export the same kernel names.
            self._lib = ctypes.CDLL(self.path, mode=ctypes.RTLD_LOCAL)
        except OSError as e:
            raise AotLoadError(f"cannot load compiled library {self.path!r}: {e}") from None

    def function(self, name: str, restype, *argtypes):
        """The exported function `name` with the given C signature."""
        try:
            fn = getattr(self._lib, name)
        except AttributeError:
            raise AotLoadError(f"compiled library {self.path!r} has no function {name!r}") from None
        fn.restype = restype
        fn.argtypes = list(argtypes)
        return fn


    def global_address(self, name: str) -> int:
        """The address of the exported global variable `name`."""
        try:
            return ctypes.addressof(ctypes.c_char.in_dll(self._lib, name))
        except ValueError:
            raise AotLoadError(f"compiled library {self.path!r} has no global {name!r}") from None


def load_library(path: str | os.PathLike) -> AotLibrary:
    """Load a library produced by `emit_shared_library` (no llvmlite needed)."""
    return AotLibrary(path)


def array_ptr(a: np.ndarray) -> ctypes.c_void_p:
    """The data pointer of a numpy array as a ctypes `void*` argument."""
    return ctypes.c_void_p(a.ctypes.data)


# -- packages ------------------------------------------------------------------------------------


def host_cpu_flags() -> set[str]:
    """The CPU flags of this machine as /proc/cpuinfo lists them (empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def check_cpu(folder, target_info: dict) -> None:
    """Refuse a package built for another machine: wrong architecture or CPU features missing."""
    import platform

    want = target_info.get("machine")
    if want and want != platform.machine():
        raise AotLoadError(f"package {str(folder)!r} was compiled for {want}; this machine is "
                           f"{platform.machine()}")
    required = set(target_info.get("cpu_flags", ()))
    have = host_cpu_flags()
    missing = sorted(required - have) if have else []
    if missing:
        raise AotLoadError(
            f"package {str(folder)!r} was compiled for CPU {target_info.get('cpu')!r} and needs "
            f"CPU features this machine lacks: {', '.join(missing)} (recompile it here, or "
            f"compile with portable=True for the x86-64-v3 baseline)")


def load_program(folder, manifest: dict):
    """A runnable Program from an LLVM package folder (`graphc/package.py` calls this); imports
    neither llvmlite nor the compiler."""
    import shutil
    from pathlib import Path

    from graphc.backends.program import Signature

    from .runtime import ENTRY_ARGTYPES, Layout, NativeProgram, resolve_threads

    folder = Path(folder)
    info = manifest.get("target_info") or {}
    if "layout" not in info or "library" not in info:
        raise AotLoadError(f"package {str(folder)!r} has no LLVM target information")
    check_cpu(folder, info)
    try:
        layout = Layout.from_json(info["layout"])
    except (KeyError, TypeError, ValueError) as e:
        raise AotLoadError(f"package {str(folder)!r}: malformed layout ({e})") from None
    lib = AotLibrary(folder / info["library"])
    fn = lib.function(layout.entry, None, *ENTRY_ARGTYPES)
    sig = Signature.from_json(manifest["signature"])

    def save(dest: Path) -> dict:
        shutil.copyfile(folder / info["library"], Path(dest) / info["library"])
        return dict(info)

    return NativeProgram(sig, layout, fn, resolve_threads(None), keepalive=lib, saver=save,
                         info={"package": str(folder), "cpu": info.get("cpu")})
