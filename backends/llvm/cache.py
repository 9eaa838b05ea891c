"""The on-disk compile cache: schedule + target -> shared library.

Note: keys and concurrency
--------------------------
The key is a sha256 over everything that determines the machine code: the printed schedule
(kernels, buffers, memory plan), the bytes of its constants, the target (CPU name, feature
string, optimization level), the code generator's options, the graphc version and the source
of the backend's own modules (so editing the code generator never returns stale code). The
parameter *values* are not in the key: they are arguments of the compiled code.

An entry is two files under `<dir>/llvm/<key[:2]>/`: `<key>.so` and `<key>.json` (layout and
metadata). Both are written to a temporary name in the same directory and renamed into place
(atomic on POSIX), the library first: a reader that finds the JSON finds a complete library, and
two processes compiling the same graph at once both succeed (the last rename wins; the files are
identical). The directory is `$GRAPHC_CACHE_DIR`, else `~/.cache/graphc`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from graphc.backends.cache_root import atomic_write, cache_dir
from graphc.ir.kernel import Schedule


@cache
def backend_fingerprint() -> str:
    """sha256 of the graphc version and the code generator's sources."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    try:
        h.update(version("graphc").encode())
    except PackageNotFoundError:
        h.update(b"unknown")
    # Every module of this backend: a hand-kept list went stale when modules were added.
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def schedule_key(schedule: Schedule, target: dict[str, Any]) -> str:
    """The cache key of compiling `schedule` for `target` (see the module note)."""
    h = hashlib.sha256()
    h.update(backend_fingerprint().encode())
    h.update(json.dumps(target, sort_keys=True, default=str).encode())
    h.update(str(schedule).encode())
    for name in sorted(schedule.constants):
        arr = np.ascontiguousarray(schedule.constants[name])
        h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class CompileCache:
    """Shared libraries by key, written atomically (see the module note)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = cache_dir(root) / "llvm"

    def paths(self, key: str) -> tuple[Path, Path]:
        d = self.root / key[:2]
        return d / f"{key}.so", d / f"{key}.json"

    def lookup(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """(library path, metadata) of a complete entry, else None."""
        lib, meta = self.paths(key)
        try:
            data = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not lib.is_file() or data.get("key") != key:
            return None
        return lib, data

    def store(self, key: str, build_library, meta: dict[str, Any]) -> Path:
        """Create the entry: `build_library(path)` writes the library at a temporary path."""
        lib, meta_path = self.paths(key)
        lib.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_lib = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".so", dir=lib.parent)
        os.close(fd)
        try:
            build_library(tmp_lib)
            os.replace(tmp_lib, lib)
        except BaseException:
            Path(tmp_lib).unlink(missing_ok=True)
            raise
        atomic_write(meta_path, json.dumps({**meta, "key": key}, indent=1,
                                           sort_keys=True).encode())
        return lib
