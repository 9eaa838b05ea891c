"""Generated source on disk: `<cache>/<sha256>.py`, written atomically, imported with importlib.

`@triton.jit` reads a function's source with `inspect`, so generated code must live in a real
file (an `exec` of a string cannot be compiled for a GPU); tracebacks then point at real lines.
Whether Triton interprets is a property of the whole process (`ensure_triton_mode`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from graphc.ir.errors import GraphError


def source_path(source: str, cache_dir: Path) -> Path:
    """Write `source` to `cache_dir/<sha256>.py` unless it is already there; return the path."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{digest}.py"
    if not path.exists() or path.read_text() != source:
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{digest[:12]}", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    return path


def process_interprets() -> bool | None:
    """Whether this process's Triton interprets (None: triton not imported yet)."""
    if "triton.language" not in sys.modules:
        return None
    import triton.language.standard as standard

    return type(standard.cdiv).__name__ == "InterpretedFunction"


def ensure_triton_mode(interpret: bool, fp_fusion: bool = True) -> None:
    """Import triton in the wanted mode, or fail clearly if this process already chose the other.

    The interpreter is process-wide: `@triton.jit` decides at decoration time, and triton's own
    library functions (tl.sum, tl.max, ...) are decorated when triton.language is first imported,
    so TRITON_INTERPRET must be set before that and never change afterwards. Run interpreter work
    in its own process (the test suite does). TRITON_DEFAULT_FP_FUSION is set explicitly unless
    the user set it (Triton 3.9 warns when it is unset; 3.10 flips its default).
    """
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1" if fp_fusion else "0")
    mode = process_interprets()
    if mode is None:
        if interpret:
            os.environ["TRITON_INTERPRET"] = "1"
        elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            raise GraphError("triton: TRITON_INTERPRET is set but a GPU run was asked for")
        import triton.language  # noqa: F401  (decorates triton's library in this mode)

        mode = process_interprets()
    if mode != interpret:
        want, have = ("the interpreter", "compiled") if interpret else ("compiled", "interpreted")
        raise GraphError(f"triton: {want} kernels were asked for, but this process imported "
                         f"triton in {have} mode; set TRITON_INTERPRET=1 (or 0) before triton "
                         f"is first imported, or run in a separate process")


def import_source(source: str, cache_dir: Path, interpret: bool, fp_fusion: bool = True
                  ) -> ModuleType:
    """The generated module, imported from its content-hashed file (once per process and mode)."""
    path = source_path(source, cache_dir)
    name = f"graphc_triton_{path.stem[:24]}_{'interp' if interpret else 'jit'}"
    got = sys.modules.get(name)
    if got is not None:
        return got
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import generated Triton source {path}")
    ensure_triton_mode(interpret, fp_fusion)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
