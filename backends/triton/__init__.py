"""The Triton GPU backend: kernel IR -> readable Triton source -> PTX/cubin; torch launches.

Note: the pieces
----------------
- `codegen.generate(schedule, options)`: one `@triton.jit` function per scheduled kernel, as
  source text (no triton import needed: `graphc show --target triton --code` works anywhere).
  `emit.py` turns kernel-IR expressions into Triton expressions, `lowering.py` is the table of
  every primitive, `codegen_templates.py` holds matmul/conv, `codegen_library.py` take,
  scatter_add and select_scatter.
- `runtime.build_program(schedule, options) -> TritonProgram`: writes the source to a
  content-hashed file, imports it and launches the kernels on torch tensors (CUDA, or CPU under
  the Triton interpreter), with one arena for the temps and an optional CUDA graph.
- `aot.compile_module(generated, archs)`: compiles every kernel for named GPU targets with no GPU
  present (PTX, cubin, launch metadata); `TritonProgram.save(folder)` / `aot.load_program`
  store and reload them, and a loaded package launches cubins through the CUDA driver without
  generating or compiling anything.

Nothing here imports triton or torch at import time; only the runtime and the AOT compiler do,
when they are used.
"""

from .codegen import GeneratedModule, LaunchSpec, generate
from .options import TritonOptions
from .runtime import TritonProgram, build_program


def load_program(folder, manifest=None, *, schedule=None, options=None, param_values=None):
    """A TritonProgram from a package folder written by `TritonProgram.save` (see `aot.py`)."""
    from .aot import load_program as _load

    return _load(folder, manifest, schedule=schedule, options=options,
                 param_values=param_values)


__all__ = ["GeneratedModule", "LaunchSpec", "TritonOptions", "TritonProgram", "build_program",
           "generate", "load_program"]
