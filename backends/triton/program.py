"""The Triton target's entry points for `graphc.compile` and `graphc.load`.

    build_program(schedule, options) -> TritonProgram    (compiler.TARGETS["triton"])
    load_program(folder, manifest) -> TritonProgram      (package.LOADERS["triton"], in aot.py)

`options` may be a `TritonOptions`, a mapping, or the compiler's `CompileOptions`: its `arch`
(AOT targets such as ("sm_80", "sm_90")) and `precision` ("ieee" / "tf32") fields, plus any
TritonOptions field in its `extra` dict (cuda_graph, interpret, max_rblock, ...). Options that
concern other stages (fuse, remat, threads, ...) are ignored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from graphc.ir.errors import GraphError
from graphc.ir.kernel import Schedule

from .options import TritonOptions
from .runtime import TritonProgram
from .runtime import build_program as _build

# CompileOptions fields other stages read; the Triton target has nothing to do with them.
OTHER_STAGES = frozenset({"target", "fuse", "remat", "threads", "portable", "cache", "verify",
                          "opt_level", "use_gomp"})
ALIASES = {"arch": "archs"}


def triton_options(options: Any) -> TritonOptions:
    """TritonOptions from whatever `graphc.compile` passes (see the module docstring)."""
    if options is None or isinstance(options, TritonOptions):
        return TritonOptions.of(options)
    if isinstance(options, Mapping):
        items = dict(options)
    else:  # a CompileOptions-like object
        items = {f: getattr(options, f) for f in ("arch", "precision") if hasattr(options, f)}
        items.update(getattr(options, "extra", {}) or {})
    known = {f.name for f in fields(TritonOptions)}
    out: dict[str, Any] = {}
    for key, value in items.items():
        key = ALIASES.get(key, key)
        if key in known:
            out[key] = tuple(value) if key == "archs" and not isinstance(value, str) else value
        elif key not in OTHER_STAGES:
            raise GraphError(f"triton: unknown option {key!r}; Triton options are "
                             f"{sorted(known | set(ALIASES))}")
    return TritonOptions.of(out)


def build_program(schedule: Schedule, options: Any = None) -> TritonProgram:
    """Generate (and with `arch`, compile ahead of time) the Triton kernels of `schedule`."""
    return _build(schedule, triton_options(options))
