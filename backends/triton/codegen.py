"""Kernel IR -> one Triton source module: one `@triton.jit` function per scheduled kernel.

    generate(schedule, options) -> GeneratedModule(source, launches)

Every function starts with comments naming the graph nodes it came from and the kernel IR it
implements; its arguments are the pointers of the buffers it reads and writes (shapes are static,
so sizes are literals in the source) followed by its block sizes as constexprs. `LaunchSpec`
records what the runtime and the AOT compiler need: argument order, constexpr values, grid,
warps, stages, and the buffer copies/zeroing a library kernel needs first.

Loop kernels (this file):
- pointwise: the domain flattened, `XBLOCK` elements per program, one mask `xmask`.
- reduction, persistent (the row fits a block): a [XBLOCK, RBLOCK] tile of rows x row elements;
  each sweep reduces along axis 1 and its results feed later sweeps from registers (softmax
  reads its row once).
- reduction, looped (long rows): one loop over the row per sweep, accumulating an
  [XBLOCK, RBLOCK] partial that is reduced after the loop (two passes for a two-sweep kernel
  such as batch-norm statistics, three for softmax).
Templates are in `codegen_templates.py`, library kernels in `codegen_library.py`.
"""

from __future__ import annotations

import hashlib
import keyword
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from graphc.ir.errors import GraphError
from graphc.ir.kernel import (
    ConvKernel,
    Ix,
    Kernel,
    LibraryKernel,
    LoopKernel,
    MatmulKernel,
    Reduction,
    Schedule,
    ix,
    kernel_reads,
    kernel_writes,
    linearize,
)
from graphc.ir.kernel_text import print_kernel
from graphc.ir.types import TensorType

from .emit import PHILOX_SOURCE, Emitter, VarDef, compute_dtype
from .lowering import COMPUTE_DTYPE, TL_DTYPE, const_code, helper_source, round_to
from .options import TritonOptions, cdiv, pointwise_config, reduce_config

CODEGEN_VERSION = 1  # bump when generated code changes meaning (part of the cache key)


@dataclass(frozen=True)
class LaunchSpec:
    """How to launch one generated kernel."""

    kernel: str                                   # the schedule's kernel name
    fn: str                                       # the @triton.jit function
    args: tuple[str, ...]                         # buffer names, in argument order
    constexprs: tuple[tuple[str, int | str], ...]
    grid: tuple[int, int, int]
    num_warps: int = 4
    num_stages: int = 3
    pre: tuple[tuple[str, ...], ...] = ()         # ("copy", dst, src) / ("zero", dst) first
    arg_dtypes: tuple[str, ...] = ()              # the args' element dtypes (AOT signature)

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "fn": self.fn, "args": list(self.args),
                "arg_dtypes": list(self.arg_dtypes), "constexprs": dict(self.constexprs),
                "grid": list(self.grid), "num_warps": self.num_warps,
                "num_stages": self.num_stages, "pre": [list(p) for p in self.pre]}

    @staticmethod
    def from_json(d: Mapping) -> LaunchSpec:
        return LaunchSpec(d["kernel"], d["fn"], tuple(d["args"]),
                          tuple(d["constexprs"].items()), tuple(d["grid"]), d["num_warps"],
                          d["num_stages"], tuple(tuple(p) for p in d["pre"]),
                          tuple(d["arg_dtypes"]))


@dataclass(frozen=True)
class GeneratedModule:
    """The Triton source of a whole schedule and how to launch each kernel."""

    name: str
    source: str
    launches: tuple[LaunchSpec, ...]
    options: TritonOptions = field(default_factory=TritonOptions)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


@dataclass
class KernelSource:
    """One generated function, its launch and the helpers it calls."""

    lines: list[str]
    launch: LaunchSpec
    helpers: set[str]


# -- names ---------------------------------------------------------------------------------------


def identifier(name: str) -> str:
    """A Python identifier for a buffer or kernel name."""
    text = re.sub(r"\W", "_", name)
    if not text or text[0].isdigit() or keyword.iskeyword(text):
        text = "b_" + text
    return text


def pointer_args(buffers: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    taken: set[str] = set()
    for b in buffers:
        base = identifier(b) + "_ptr"
        cand, k = base, 1
        while cand in taken:
            cand = f"{base}{k}"
            k += 1
        taken.add(cand)
        out[b] = cand
    return out


def kernel_buffers(k: Kernel) -> list[str]:
    return list(dict.fromkeys(kernel_reads(k) + kernel_writes(k)))


def program_id(s: Schedule, bufs: list[str], axis: int = 0) -> str:
    """`tl.program_id(axis)`, widened to int64 when a buffer has 2**31 elements or more (all
    index arithmetic derives from it, and int32 would wrap)."""
    wide = any(s.buffers[b].type.size >= 2 ** 31 - 1 for b in bufs)
    return f"tl.program_id({axis}).to(tl.int64)" if wide else f"tl.program_id({axis})"


def function_header(k: Kernel, fn: str, ptrs: Mapping[str, str], constexprs: list[str]
                    ) -> list[str]:
    args = list(ptrs.values()) + [f"{c}: tl.constexpr" for c in constexprs]
    lines = ["@triton.jit", f"def {fn}({', '.join(args)}):"]
    body = [f"# {line}" for line in origin_lines(k)]
    ir = print_kernel(k, indent="  ").splitlines()
    ir[0] = ir[0].split("  // ")[0]  # the origin list is above
    body += [f"# {line.rstrip()}" for line in ir]
    return lines + ["    " + b for b in body]


def origin_lines(k: Kernel, width: int = 92) -> list[str]:
    names = ", ".join(f"%{n}" for n in k.origin) or "(no graph nodes)"
    words = f"kernel {k.name} ({k.kind}) from {names}".split(" ")
    out, cur = [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            out.append(cur)
            cur = "    " + w
        else:
            cur = f"{cur} {w}" if cur else w
    return out + [cur]


def flat_vars(names: tuple[str, ...], shape: tuple[int, ...], base: str, mask: str,
              depth: int) -> dict[str, VarDef]:
    """Loop variables recovered from a flattened row-major index `base` over `shape`."""
    defs: dict[str, VarDef] = {}
    stride = math.prod(shape)
    first = True
    for name, d in zip(names, shape, strict=True):
        stride //= max(d, 1)
        if d <= 1:
            continue
        code = base if stride == 1 else f"{base} // {stride}"
        if not first:
            code = f"{code} % {d}" if stride == 1 else f"({code}) % {d}"
        first = False
        defs[name] = VarDef(code, depth, mask)
    return defs


def domain_linear(names: tuple[str, ...], shape: tuple[int, ...]) -> Ix:
    return linearize(tuple(ix(n) if d > 1 else Ix() for n, d in zip(names, shape, strict=True)),
                     shape)


# -- loop kernels --------------------------------------------------------------------------------


def gen_loop(k: LoopKernel, s: Schedule, opts: TritonOptions) -> KernelSource:
    types = {n: b.type for n, b in s.buffers.items()}
    bufs = kernel_buffers(k)
    ptrs = pointer_args(bufs)
    em = Emitter(types, ptrs, k.extents())
    pid = program_id(s, bufs)
    # a reduction over a rank-0 window has an empty reduce domain, but still its one element
    if not k.reduce_domain and not any(sw.reductions for sw in k.sweeps):
        return _gen_pointwise(k, em, bufs, ptrs, opts, pid)
    return _gen_reduction(k, em, bufs, ptrs, opts, pid)


def _gen_pointwise(k: LoopKernel, em: Emitter, bufs: list[str], ptrs: dict[str, str],
                   opts: TritonOptions, pid: str) -> KernelSource:
    numel = math.prod(k.domain)
    cfg = pointwise_config(numel, opts)
    em.line(f"xindex = {pid} * XBLOCK + tl.arange(0, XBLOCK)")
    em.line(f"xmask = xindex < {numel}")
    em.set_vars(flat_vars(k.outer_vars, k.domain, "xindex", "xmask", 0))
    em.add_alias(domain_linear(k.outer_vars, k.domain), "xindex")
    for st in k.stores:
        em.store(st.buffer, st.index, em.expr(st.value), st.value.dtype, "xindex * 0", "xmask")
    launch = LaunchSpec(k.name, identifier(k.name), tuple(bufs), (("XBLOCK", cfg.xblock),),
                        (cdiv(numel, cfg.xblock), 1, 1), cfg.num_warps, 1)
    lines = function_header(k, launch.fn, ptrs, ["XBLOCK"]) + ["    " + x for x in em.body()]
    return KernelSource(lines, launch, em.helpers)


def _gen_reduction(k: LoopKernel, em: Emitter, bufs: list[str], ptrs: dict[str, str],
                   opts: TritonOptions, pid: str) -> KernelSource:
    rows, cols = math.prod(k.domain), math.prod(k.reduce_domain)
    cfg = reduce_config(rows, cols, opts)
    em.line(f"xindex = {pid} * XBLOCK + tl.arange(0, XBLOCK)[:, None]")
    em.line(f"xmask = xindex < {rows}")
    em.set_vars(flat_vars(k.outer_vars, k.domain, "xindex", "xmask", 0))
    em.add_alias(domain_linear(k.outer_vars, k.domain), "xindex")
    inner_depth = 0 if cfg.persistent else 1
    em.set_vars(flat_vars(k.inner_vars, k.reduce_domain, "rindex", "rmask", inner_depth))
    em.add_alias(domain_linear(k.inner_vars, k.reduce_domain), "rindex")
    if cfg.persistent:
        em.line("rindex = tl.arange(0, RBLOCK)[None, :]")
        em.line(f"rmask = rindex < {cols}")
    for n, sweep in enumerate(k.sweeps):
        em.comment(f"sweep {n}" + ("" if cfg.persistent else f": loop over the row of {cols}"))
        if cfg.persistent:
            for red in sweep.reductions:
                em.refs[red.name] = _reduce_block(em, red, cols)
            for st in sweep.stores:
                em.store(st.buffer, st.index, em.expr(st.value), st.value.dtype,
                         "(xindex + rindex) * 0", "xmask & rmask")
        else:
            _looped_sweep(em, sweep, cols)
    if k.stores:
        em.comment("per-row results")
    for st in k.stores:
        em.store(st.buffer, st.index, em.expr(st.value), st.value.dtype, "xindex * 0", "xmask")
    launch = LaunchSpec(k.name, identifier(k.name), tuple(bufs),
                        (("XBLOCK", cfg.xblock), ("RBLOCK", cfg.rblock)),
                        (cdiv(rows, cfg.xblock), 1, 1), cfg.num_warps, 1)
    lines = (function_header(k, launch.fn, ptrs, ["XBLOCK", "RBLOCK"])
             + ["    " + x for x in em.body()])
    return KernelSource(lines, launch, em.helpers)


def _lowest(dtype: str) -> str:
    if dtype in ("i32", "i64"):
        return const_code(-(2 ** 31) if dtype == "i32" else -(2 ** 63), dtype)
    if dtype == "f64":
        return const_code(float("-inf"), "f64")
    return 'float("-inf")'


def _init(kind: str, dtype: str) -> str:
    return _lowest(dtype) if kind in ("max", "argmax") else "0"


def _finish(em: Emitter, red: Reduction, code: str) -> str:
    name = em.fresh("red")
    if red.kind in ("sum", "max"):
        code = round_to(code, red.dtype, em.use) if red.dtype in COMPUTE_DTYPE else code
    em.line(f"{name} = {code}  # ${red.name}")
    return name


def _reduce_block(em: Emitter, red: Reduction, cols: int) -> str:
    """A reduction of a whole row held in one [XBLOCK, RBLOCK] tile."""
    v = em.expr(red.value)
    dt = compute_dtype(red.value.dtype)
    masked = f"tl.where(xmask & rmask, {v}, {_init(red.kind, dt)})"
    if red.kind == "sum":
        return _finish(em, red, f"tl.sum({masked}, axis=1)[:, None]")
    if red.kind == "max":
        return _finish(em, red, f"tl.max({masked}, axis=1)[:, None]")
    if red.kind == "argmax":
        return _finish(em, red, f"tl.argmax({masked}, axis=1)[:, None].to(tl.int64)")
    raise GraphError(f"triton: unknown reduction kind {red.kind!r}")


def _looped_sweep(em: Emitter, sweep, cols: int) -> None:
    """One pass over long rows: partial results per lane, reduced after the loop."""
    accs = []
    for red in sweep.reductions:
        dt = compute_dtype(red.value.dtype)
        acc = em.fresh("acc")
        em.line(f"{acc} = tl.full([XBLOCK, RBLOCK], {_init(red.kind, dt)}, {TL_DTYPE[dt]})")
        idx = None
        if red.kind == "argmax":
            idx = em.fresh("acc")
            em.line(f"{idx} = tl.zeros([XBLOCK, RBLOCK], tl.int32)")
        accs.append((red, acc, idx, dt))
    em.open_loop()
    em.line("rindex = roffset + tl.arange(0, RBLOCK)[None, :]")
    em.line(f"rmask = rindex < {cols}")
    for red, acc, idx, dt in accs:
        v = em.expr(red.value)
        masked = f"tl.where(xmask & rmask, {v}, {_init(red.kind, dt)})"
        if red.kind == "sum":
            em.line(f"{acc} = {acc} + {masked}")
        elif red.kind == "max":
            em.line(f"{acc} = tl.maximum({acc}, {masked})")
        elif red.kind == "argmax":
            val = em.fresh("t")
            em.line(f"{val} = {masked}")
            em.line(f"{idx} = tl.where({val} > {acc}, rindex, {idx})")
            em.line(f"{acc} = tl.where({val} > {acc}, {val}, {acc})")
        else:
            raise GraphError(f"triton: unknown reduction kind {red.kind!r}")
    for st in sweep.stores:
        em.store(st.buffer, st.index, em.expr(st.value), st.value.dtype,
                 "(xindex + rindex) * 0", "xmask & rmask")
    em.close_loop(f"for roffset in range(0, {cols}, RBLOCK):")
    for red, acc, idx, _ in accs:
        if red.kind == "sum":
            em.refs[red.name] = _finish(em, red, f"tl.sum({acc}, axis=1)[:, None]")
        elif red.kind == "max":
            em.refs[red.name] = _finish(em, red, f"tl.max({acc}, axis=1)[:, None]")
        else:  # the first position of the maximum: lanes hold their own first maxima
            best = em.fresh("t")
            em.line(f"{best} = tl.max({acc}, axis=1)[:, None]")
            em.refs[red.name] = _finish(
                em, red, f"tl.min(tl.where({acc} == {best}, {idx}, {cols}), axis=1)[:, None]"
                         f".to(tl.int64)")


# -- the module ----------------------------------------------------------------------------------


def generate_kernel(k: Kernel, s: Schedule, opts: TritonOptions) -> KernelSource:
    if isinstance(k, LoopKernel):
        return gen_loop(k, s, opts)
    if isinstance(k, (MatmulKernel, ConvKernel)):
        from .codegen_templates import gen_template

        return gen_template(k, s, opts)
    if isinstance(k, LibraryKernel):
        from .codegen_library import gen_library

        return gen_library(k, s, opts)
    raise GraphError(f"triton: unknown kernel kind {type(k).__name__}")


def generate(schedule: Schedule, options: TritonOptions | Mapping | None = None
             ) -> GeneratedModule:
    """The Triton source module of `schedule` and the launch of each kernel."""
    opts = TritonOptions.of(options)
    parts: list[KernelSource] = []
    for k in schedule.kernels:
        try:
            parts.append(generate_kernel(k, schedule, opts))
        except GraphError as e:
            raise GraphError(f"triton: kernel {k.name} ({k.kind}, from "
                             f"{', '.join('%' + o for o in k.origin[:4])}): {e}") from None
    helpers: set[str] = set()
    for p in parts:
        helpers |= p.helpers
        dtypes = tuple(schedule.buffers[b].type.dtype for b in p.launch.args)
        p.launch = replace(p.launch, arg_dtypes=dtypes)
    mode = "interpreter" if opts.interpreter_blocks else "GPU"
    head = [
        f'"""Triton kernels generated by graphc for schedule {schedule.name!r}.',
        "",
        f"{len(parts)} kernels, block sizes for the {mode}, fp32 dot precision "
        f"{opts.precision!r}. Generated: edit the graph, not this file.",
        '"""',
        "",
        "import triton",
        "import triton.language as tl",
        "",
    ]
    text = "\n".join(head)
    text += helper_source(helpers - {"_philox_uniform"})
    if "_philox_uniform" in helpers:
        text += PHILOX_SOURCE
    for p in parts:
        text += "\n\n" + "\n".join(p.lines) + "\n"
    text = f"# graphc triton codegen v{CODEGEN_VERSION}\n" + text
    return GeneratedModule(schedule.name, text, tuple(p.launch for p in parts), opts)


def buffer_types(s: Schedule) -> dict[str, TensorType]:
    return {n: b.type for n, b in s.buffers.items()}
