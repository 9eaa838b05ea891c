"""Load a shared library built by `target.emit_shared_library` with ctypes only.

This module must import nothing but the standard library's ctypes and numpy, so that a compiled
package runs where llvmlite is not installed. Functions called through ctypes release the GIL.
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


def load_library(path: str | os.PathLike) -> AotLibrary:
    """Load a library produced by `emit_shared_library` (no llvmlite needed)."""
    return AotLibrary(path)


def array_ptr(a: np.ndarray) -> ctypes.c_void_p:
    """The data pointer of a numpy array as a ctypes `void*` argument."""
    return ctypes.c_void_p(a.ctypes.data)
