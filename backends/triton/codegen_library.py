"""Library kernels: take (gather), scatter_add and select_scatter, each one `@triton.jit`.

- take: one lane per output element loads its index and gathers (a negative index counts from
  the end, like numpy).
- scatter_add: the runtime first copies the operand into the output (skipped when the memory plan
  made them one buffer), then one lane per update element `tl.atomic_add`s it at its index:
  duplicates accumulate, in an unspecified order.
- Both carry a `check_index` step for the runtime (a kernel cannot raise): an index outside
  [-n, n) raises the reference's GraphError naming the op, the value and its position, as the
  LLVM backend does. Index inputs are checked with the other arguments, before any launch;
  an index computed inside the graph right before the kernel that reads it, except inside a
  CUDA graph, whose capture may not wait for the device: there an out-of-range computed index
  reads 0 (take) or is dropped (scatter_add).
- select_scatter: the runtime zeroes the output, then one row per window position holds the whole
  window ([XBLOCK, WBLOCK] tile), finds its first maximum (padding never wins) and
  `tl.atomic_add`s the source element there (windows may overlap).
"""

from __future__ import annotations

import math

from graphc.ir.errors import GraphError
from graphc.ir.kernel import LibraryKernel, Schedule

from .codegen import (
    KernelSource,
    LaunchSpec,
    function_header,
    identifier,
    pointer_args,
    program_id,
)
from .lowering import COMPUTE_DTYPE, TL_DTYPE
from .options import TritonOptions, cdiv, next_pow2, pointwise_config


def gen_library(k: LibraryKernel, s: Schedule, opts: TritonOptions) -> KernelSource:
    if k.op not in _LIBRARY:
        raise GraphError(f"triton: no library kernel for {k.op!r}")
    return _LIBRARY[k.op](k, s, opts)


def _finish(k: LibraryKernel, ptrs: dict[str, str], body: list[str], constexprs: list[tuple],
            grid: tuple[int, int, int], pre: tuple = (), num_warps: int = 4) -> KernelSource:
    bufs = tuple(ptrs)
    launch = LaunchSpec(k.name, identifier(k.name), bufs, tuple(constexprs), grid, num_warps, 1,
                        pre)
    lines = function_header(k, launch.fn, ptrs, [c for c, _ in constexprs])
    return KernelSource(lines + ["    " + b for b in body], launch, set())


def _split3(base: str, pre: int, mid: int, post: int) -> list[str]:
    """`pre_i, mid_i, post_i` of a flat index over [pre, mid, post]."""
    return [f"pre_i = {base} // {mid * post}",
            f"mid_i = ({base} // {post}) % {mid}" if post > 1 else f"mid_i = {base} % {mid}",
            f"post_i = {base} % {post}" if post > 1 else "post_i = 0"]


def _gather_index(idx_ptr: str, dim: int) -> list[str]:
    return [f"t = tl.load({idx_ptr} + mid_i, mask=xmask, other=0)",
            f"t = tl.where(t < 0, t + {dim}, t)",
            f"ok = xmask & (t >= 0) & (t < {dim})"]


def _take(k: LibraryKernel, s: Schedule, opts: TritonOptions) -> KernelSource:
    x, idx = k.inputs
    axis = dict(k.attrs)["axis"]
    xs = s.buffers[x].type.shape
    pre, dim, post = math.prod(xs[:axis]), xs[axis], math.prod(xs[axis + 1:])
    mid = s.buffers[idx].type.size
    numel = pre * mid * post
    ptrs = pointer_args([x, idx, k.output])
    cfg = pointwise_config(numel, opts)
    body = [f"xindex = {program_id(s, [x, idx, k.output])} * XBLOCK + tl.arange(0, XBLOCK)",
            f"xmask = xindex < {numel}"] + _split3("xindex", pre, mid, post)
    body += _gather_index(ptrs[idx], dim)
    body += [f"v = tl.load({ptrs[x]} + (pre_i * {dim} + t) * {post} + post_i, mask=ok, other=0)",
             f"tl.store({ptrs[k.output]} + xindex, v, mask=xmask)"]
    return _finish(k, ptrs, body, [("XBLOCK", cfg.xblock)], (cdiv(numel, cfg.xblock), 1, 1),
                   (_index_check(k, s),))


def _index_check(k: LibraryKernel, s: Schedule) -> tuple[str, ...]:
    """The runtime's `check_index` step for the index operand of take / scatter_add:
    (kind, op, index buffer, axis length, axis, operand shape as "AxBxC")."""
    x, idx = k.inputs[:2]
    axis = dict(k.attrs)["axis"]
    shape = s.buffers[x].type.shape
    return ("check_index", k.op, idx, str(shape[axis]), str(axis), "x".join(map(str, shape)))


def _aliased(s: Schedule, a: str, b: str) -> bool:
    if a == b:
        return True
    plan = s.memory
    if plan is None:
        return False
    return plan.aliases.get(a) == b or plan.aliases.get(b) == a


def _scatter_add(k: LibraryKernel, s: Schedule, opts: TritonOptions) -> KernelSource:
    x, idx, upd = k.inputs
    axis = dict(k.attrs)["axis"]
    xs = s.buffers[x].type.shape
    pre, dim, post = math.prod(xs[:axis]), xs[axis], math.prod(xs[axis + 1:])
    mid = s.buffers[idx].type.size
    numel = pre * mid * post
    ptrs = pointer_args([idx, upd, k.output])
    cfg = pointwise_config(numel, opts)
    body = ["# the operand was copied into the output before this launch",
            f"xindex = {program_id(s, [x, idx, upd, k.output])} * XBLOCK + tl.arange(0, XBLOCK)",
            f"xmask = xindex < {numel}"] + _split3("xindex", pre, mid, post)
    body += _gather_index(ptrs[idx], dim)
    body += [f"u = tl.load({ptrs[upd]} + xindex, mask=xmask)",
             f"tl.atomic_add({ptrs[k.output]} + (pre_i * {dim} + t) * {post} + post_i, u, "
             f"mask=ok)"]
    pre_steps = () if _aliased(s, x, k.output) else (("copy", k.output, x),)
    return _finish(k, ptrs, body, [("XBLOCK", cfg.xblock)], (cdiv(numel, cfg.xblock), 1, 1),
                   (_index_check(k, s), *pre_steps))


def _select_scatter(k: LibraryKernel, s: Schedule, opts: TritonOptions) -> KernelSource:
    x, src = k.inputs
    a = dict(k.attrs)
    xs = s.buffers[x].type.shape
    dtype = s.buffers[x].type.dtype
    src_shape = s.buffers[src].type.shape
    window, strides, pad = a["window"], a["strides"], a["padding"]
    rows, wsize = math.prod(src_shape), math.prod(window)
    wblock = next_pow2(wsize)
    if opts.interpreter_blocks:
        xblock = min(next_pow2(rows), max(1, (1 << 16) // wblock))
    else:
        xblock = min(next_pow2(rows), max(1, 1024 // wblock))
    ptrs = pointer_args([x, src, k.output])
    body = ["# the output was zeroed before this launch",
            f"xindex = {program_id(s, [x, src, k.output])} * XBLOCK"
            " + tl.arange(0, XBLOCK)[:, None]",
            f"xmask = xindex < {rows}",
            "widx = tl.arange(0, WBLOCK)[None, :]",
            f"wmask = widx < {wsize}"]
    inb = ["xmask", "wmask"]
    pos = []
    stride_o, stride_w = rows, wsize
    for j, (d, w, st) in enumerate(zip(xs, window, strides, strict=True)):
        stride_o //= max(src_shape[j], 1)
        stride_w //= w
        body.append(f"o{j} = {_digit('xindex', stride_o, src_shape[j])}")
        body.append(f"w{j} = {_digit('widx', stride_w, w)}")
        body.append(f"pos{j} = {_affine(f'o{j}', st, f'w{j}', pad[2 * j])}")
        if src_shape[j] == 1 and w == 1:
            # pos is the constant -pad: a Python bool in a mask chain breaks the interpreter
            # (an int32 mask), so the bound is decided here
            if not 0 <= -pad[2 * j] < d:
                inb.append("(xindex < 0)")
        else:
            inb.append(f"(pos{j} >= 0) & (pos{j} < {d})")
        pos.append(f"pos{j}")
    lin = _linear(pos, xs)
    # with every axis of unit size and window, the positions are constants; Triton's compiler
    # refuses a scalar pointer under a block mask, so they are spread over the tile
    constant = all(n == 1 and w == 1 for n, w in zip(src_shape, window, strict=True))
    if constant:
        lin = f"{lin} + tl.zeros([XBLOCK, WBLOCK], tl.int32)"
    ctype = TL_DTYPE[COMPUTE_DTYPE.get(dtype, dtype)]
    low = 'float("-inf")' if dtype.startswith(("f", "b")) else f"tl.full([], -2**31, {ctype})"
    body += [f"valid = {' & '.join(inb)}",
             f"v = tl.load({ptrs[x]} + ({lin}), mask=valid, other=0).to({ctype})",
             f"v = tl.where(valid, v, {low})",
             "best = tl.max(v, axis=1)[:, None]",
             "# the first (row-major) maximal position of each window",
             f"first = tl.min(tl.where(valid & (v == best), widx, {wsize}), axis=1)[:, None]",
             f"found = xmask & (first < {wsize})"]
    firsts = []
    stride_w = wsize
    for j, (w, st) in enumerate(zip(window, strides, strict=True)):
        stride_w //= w
        body.append(f"f{j} = {_affine(f'o{j}', st, _digit('first', stride_w, w), pad[2 * j])}")
        firsts.append(f"f{j}")
    body += [f"u = tl.load({ptrs[src]} + xindex, mask=xmask)",
             f"tl.atomic_add({ptrs[k.output]} + ({_linear(firsts, xs)})"
             f"{' + tl.zeros([XBLOCK, 1], tl.int32)' if constant else ''}, u, mask=found)"]
    return _finish(k, ptrs, body, [("XBLOCK", xblock), ("WBLOCK", wblock)],
                   (cdiv(rows, xblock), 1, 1), (("zero", k.output),))


def _digit(base: str, stride: int, size: int) -> str:
    """`(base // stride) % size`, without the no-op parts."""
    if size == 1:
        return "0"
    q = base if stride == 1 else f"({base} // {stride})"
    return f"{q} % {size}"


def _affine(o: str, stride: int, w: str, low: int) -> str:
    """`o * stride + w - low`, without the no-op parts."""
    text = o if stride == 1 else f"{o} * {stride}"
    text = f"{text} + {w}" if w != "0" else text
    return f"{text} - {low}" if low > 0 else f"{text} + {-low}" if low < 0 else text


def _linear(idx: list[str], shape: tuple[int, ...]) -> str:
    text = ""
    for i, d in zip(idx, shape, strict=True):
        text = i if not text else f"({text}) * {d} + {i}"
    return text or "0"


_LIBRARY = {"take": _take, "scatter_add": _scatter_add, "select_scatter": _select_scatter}
