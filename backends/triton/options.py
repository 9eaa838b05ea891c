"""Options of the Triton backend and the launch configuration (block sizes, warps) per kernel.

Shapes are static, so every block size, grid and warp count is decided at code-generation time
and baked into the generated source (block sizes as constexpr arguments). The interpreter runs
one program instance at a time at about a millisecond each, so for it blocks are as large as
possible (usually one program per kernel); on a GPU they are sized for occupancy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from graphc.ir.errors import GraphError

PRECISIONS = ("ieee", "tf32")
LAUNCHERS = ("cubin", "triton")


@dataclass(frozen=True)
class TritonOptions:
    """Knobs of the Triton backend.

    precision: input precision of fp32 `tl.dot` ("ieee": exact fp32, the default; "tf32": tensor
      cores, ~3e-4 relative error on a 256-deep product). fp16/bf16 products always accumulate in
      fp32.
    interpret: run with the Triton interpreter on torch CPU tensors (None: when no CUDA device).
    cuda_graph: capture the whole schedule in one CUDA graph on the first run, replay afterwards.
    archs: GPU targets ("sm_80", "sm_90", ...) compiled ahead of time by `build_program` (no GPU
      needed); `Program.save` then stores PTX, cubin and launch metadata for each.
    cache_dir: where generated source files live (None: $XDG_CACHE_HOME or ~/.cache, graphc/triton).
    max_rblock: the longest reduction row kept in registers as one block; longer rows loop.
    block: the pointwise block size (None: 1024 on a GPU, the whole domain in the interpreter).
    fp_fusion: let Triton fuse multiply-add into FMA (TRITON_DEFAULT_FP_FUSION / enable_fp_fusion).
    poison_arena: fill the arena with 0xFF bytes (NaN) before every run, to expose reads of
      unwritten temps (tests).
    check_args: check every argument (device, dtype, shape, layout) before launching.
    launcher: how kernels are launched on a GPU. "cubin" (default): every kernel compiled for
      the current GPU on the first run (Triton's compiler and disk cache) and launched through
      the CUDA driver from a prebuilt parameter block, about 10 us per launch on an H200;
      "triton": Triton's JIT launcher (about 20 us: it rebuilds its specialization key on every
      call). The interpreter always goes through Triton.
    """

    precision: str = "ieee"
    interpret: bool | None = None
    cuda_graph: bool = False
    archs: tuple[str, ...] = ()
    cache_dir: str | None = None
    max_rblock: int | None = None
    block: int | None = None
    fp_fusion: bool = True
    poison_arena: bool = False
    check_args: bool = True
    launcher: str = "cubin"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise GraphError(f"triton: precision {self.precision!r} must be one of {PRECISIONS}")
        if self.launcher not in LAUNCHERS:
            raise GraphError(f"triton: launcher {self.launcher!r} must be one of {LAUNCHERS}")
        for v, what in ((self.max_rblock, "max_rblock"), (self.block, "block")):
            if v is not None and (v < 1 or v & (v - 1)):
                raise GraphError(f"triton: {what}={v} must be a power of two")
        object.__setattr__(self, "archs", tuple(normalize_arch(a) for a in self.archs))

    @staticmethod
    def of(options: TritonOptions | Mapping[str, Any] | None) -> TritonOptions:
        """Options from a TritonOptions, a mapping of its field names, or None."""
        if options is None:
            return TritonOptions()
        if isinstance(options, TritonOptions):
            return options
        known = {f.name for f in fields(TritonOptions)}
        unknown = set(options) - known
        if unknown:
            raise GraphError(f"triton: unknown option(s) {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        kw = dict(options)
        if "archs" in kw and isinstance(kw["archs"], str):
            kw["archs"] = tuple(a for a in kw["archs"].split(",") if a)
        return TritonOptions(**kw)

    @property
    def interpreter_blocks(self) -> bool:
        """Size blocks for the interpreter (huge, one program) rather than for a GPU: only when
        interpreting and not compiling for a GPU target as well."""
        return bool(self.interpret) and not self.archs

    def with_(self, **changes: Any) -> TritonOptions:
        return replace(self, **changes)

    def cache_path(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "graphc" / "triton"


def normalize_arch(arch: str | int) -> str:
    """"sm_90", "sm90", "90" or 90 -> "sm_90"."""
    text = str(arch).lower().replace("sm_", "").replace("sm", "")
    if not text.isdigit() or int(text) < 70:
        raise GraphError(f"triton: unknown GPU arch {arch!r}; expected e.g. sm_80, sm_90")
    return f"sm_{int(text)}"


def next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# -- launch configurations -------------------------------------------------------------------------


@dataclass(frozen=True)
class PointwiseConfig:
    xblock: int
    num_warps: int


@dataclass(frozen=True)
class ReduceConfig:
    persistent: bool   # the whole row in one block (else: loop over the row in RBLOCK chunks)
    xblock: int        # rows per program
    rblock: int
    num_warps: int


@dataclass(frozen=True)
class DotConfig:
    bm: int
    bn: int
    bk: int
    num_warps: int
    num_stages: int


def pointwise_config(numel: int, opts: TritonOptions) -> PointwiseConfig:
    if opts.block is not None:
        return PointwiseConfig(opts.block, 4)
    if opts.interpreter_blocks:
        return PointwiseConfig(min(next_pow2(numel), 1 << 16), 4)
    return PointwiseConfig(max(128, min(1024, next_pow2(numel))), 4)


def reduce_config(rows: int, cols: int, opts: TritonOptions) -> ReduceConfig:
    if opts.interpreter_blocks:
        limit = opts.max_rblock or (1 << 14)
        if cols <= limit:
            rb = next_pow2(cols)
            return ReduceConfig(True, min(next_pow2(rows), max(1, (1 << 16) // rb)), rb, 4)
        return ReduceConfig(False, 1, limit, 4)
    # Measured on an H200 (benchmarks/triton_reduce_sweep.py, row softmax): whole rows of up to
    # 8192 elements in one block beat looping over them (4096 x 8192: 109 -> 76 us); rows of at
    # most 256 elements want 4096-element tiles (32768 x 128: 27 -> 19 us); longer rows 2048.
    limit = opts.max_rblock or 8192
    if cols <= limit:
        rb = next_pow2(cols)
        xb = min(next_pow2(rows), max(1, (4096 if rb <= 256 else 2048) // rb), 64)
        return ReduceConfig(True, xb, rb, 4 if xb * rb <= 4096 else 8)
    if rows < 512:  # few long rows, one program each: keep more bytes in flight per SM
        return ReduceConfig(False, 1, min(limit * 2, 8192), 16)
    return ReduceConfig(False, 1, min(limit, 2048), 8)


def dot_config(m: int, n: int, k: int, dtype: str, opts: TritonOptions) -> DotConfig:
    """Tile sizes of a matmul/conv template (`tl.dot` needs every tile dimension >= 16)."""
    def fit(d: int, cap: int) -> int:
        return max(16, min(next_pow2(d), cap))

    if opts.interpreter_blocks:
        return DotConfig(fit(m, 64), fit(n, 64), fit(k, 128), 4, 1)
    if dtype == "f64":
        return DotConfig(fit(m, 32), fit(n, 32), fit(k, 16), 4, 2)
    bk = fit(k, 64 if dtype in ("f16", "bf16") else 32)
    if m * n >= 512 * 512:
        return DotConfig(fit(m, 128), fit(n, 128), bk, 8, 3)
    return DotConfig(fit(m, 64), fit(n, 64), bk, 4, 3)
