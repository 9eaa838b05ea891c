"""Readable text of kernels and schedules (`graphc show --kernels`).

    schedule softmax {
      input  %x: f32[4, 8]
      output %y: f32[4, 8]
      kernel k0 loop(i0 < 4; r0 < 8)  // %m, %sub, %exp, %s, %y
        sweep:
          $m = max %x[i0, r0]
        sweep:
          $s = sum exp(sub(%x[i0, r0], $m))
        sweep:
          %y[i0, r0] = div(exp(sub(%x[i0, r0], $m)), $s)
      return y=%y
    }

`%name[index]` loads a buffer (`| bounds` after the index is the load's mask), `$name` is a
reduction result of an earlier sweep, `acc` a template's accumulator, `#k` a subexpression used
more than once in the same section (printed once as `#k = ...` before its first use). Elementwise
ops print as calls with the graph op names. Printing is deterministic: golden tests compare text.
"""

from __future__ import annotations

from collections import Counter

from .kernel import (
    Acc,
    Bound,
    Const,
    ConvKernel,
    Expr,
    InBounds,
    IndexValue,
    Ix,
    Kernel,
    Load,
    LoopKernel,
    MatmulKernel,
    Op,
    RandomUniform,
    ReduceRef,
    Schedule,
    Store,
    walk,
)
from .text import format_attr


def format_index(index: tuple[Ix, ...], mask: tuple[Bound, ...] = ()) -> str:
    text = ", ".join(str(e) for e in index)
    if mask:
        text += " | " + ", ".join(str(b) for b in mask)
    return f"[{text}]"


def format_const(value, dtype: str) -> str:
    if dtype == "bool":
        return "true" if value else "false"
    return format_attr(float(value) if dtype.startswith(("f", "b")) else int(value))


class _Section:
    """Prints the expressions of one section (a sweep, an operand, the epilogue), naming the
    subexpressions it uses more than once."""

    def __init__(self, roots: list[Expr], lines: list[str], indent: str, counter: list[int]):
        self.lines = lines
        self.indent = indent
        self.counter = counter
        self.names: dict[int, str] = {}
        uses: Counter[int] = Counter()
        for e in walk(roots):
            for c in e.children():
                uses[id(c)] += 1
        for r in roots:
            uses[id(r)] += 1
        self.shared = {i for i, n in uses.items() if n > 1}

    def expr(self, e: Expr) -> str:
        got = self.names.get(id(e))
        if got is not None:
            return got
        text = self._format(e)
        if id(e) in self.shared and isinstance(e, (Op, RandomUniform)):
            name = f"#{self.counter[0]}"
            self.counter[0] += 1
            self.lines.append(f"{self.indent}{name} = {text}")
            self.names[id(e)] = name
            return name
        return text

    def _format(self, e: Expr) -> str:
        if isinstance(e, Const):
            return format_const(e.value, e.dtype)
        if isinstance(e, Load):
            return f"%{e.buffer}{format_index(e.index, e.mask)}"
        if isinstance(e, IndexValue):
            return f"index<{e.dtype}>({e.index})"
        if isinstance(e, InBounds):
            return f"inbounds({', '.join(str(b) for b in e.bounds)})"
        if isinstance(e, ReduceRef):
            return f"${e.name}"
        if isinstance(e, Acc):
            return "acc"
        if isinstance(e, RandomUniform):
            return f"random_uniform({self.expr(e.seed)}, {e.counter}, stream={e.stream})"
        if isinstance(e, Op):
            args = ", ".join(self.expr(a) for a in e.args)
            if e.op == "cast":
                return f"cast<{e.dtype}>({args})"
            attrs = "".join(f" {{{k}={format_attr(v)}}}" for k, v in e.attrs)
            return f"{e.op}({args}){attrs}"
        raise TypeError(f"unknown expression {e!r}")

    def store(self, s: Store) -> None:
        value = self.expr(s.value)
        self.lines.append(f"{self.indent}%{s.buffer}{format_index(s.index)} = {value}")


def _ranges(names, extents) -> str:
    return ", ".join(f"{v} < {n}" for v, n in zip(names, extents, strict=True))


def kernel_header(k: Kernel) -> str:
    if isinstance(k, LoopKernel):
        dom = _ranges(k.outer_vars, k.domain)
        if k.reduce_domain:
            dom += "; " + _ranges(k.inner_vars, k.reduce_domain)
        return f"kernel {k.name} loop({dom})"
    if isinstance(k, MatmulKernel):
        return (f"kernel {k.name} matmul({_ranges(k.out_vars, k.out_shape)}; k < {k.k})"
                f" acc {k.acc_dtype}")
    if isinstance(k, ConvKernel):
        attrs = ", ".join(f"{a}={format_attr(v)}" for a, v in k.attrs)
        return (f"kernel {k.name} conv({_ranges(k.out_vars, k.out_shape)}) {{{attrs}}}"
                f" acc {k.acc_dtype}")
    attrs = ", ".join(f"{a}={format_attr(v)}" for a, v in k.attrs)
    ins = ", ".join(f"%{b}" for b in k.inputs)
    return f"kernel {k.name} {k.op}({ins}){' {' + attrs + '}' if attrs else ''} -> %{k.output}"


def print_kernel(k: Kernel, indent: str = "  ", comment: bool = True) -> str:
    """The text of one kernel (header line, then its body indented)."""
    head = kernel_header(k)
    if comment and k.origin:
        head += "  // " + ", ".join(f"%{n}" for n in k.origin)
    lines = [indent + head]
    body = indent + "  "
    counter = [0]
    if isinstance(k, LoopKernel):
        for sw in k.sweeps:
            lines.append(f"{body}sweep:")
            sec = _Section([r.value for r in sw.reductions] + [s.value for s in sw.stores],
                           lines, body + "  ", counter)
            for r in sw.reductions:
                lines.append(f"{body}  ${r.name} = {r.kind} {sec.expr(r.value)}")
            for s in sw.stores:
                sec.store(s)
        sec = _Section([s.value for s in k.stores], lines, body, counter)
        for s in k.stores:
            sec.store(s)
    elif isinstance(k, (MatmulKernel, ConvKernel)):
        operands = (("a", k.a), ("b", k.b)) if isinstance(k, MatmulKernel) else \
            (("x", k.x), ("w", k.w))
        for name, opnd in operands:
            sec = _Section([opnd.value], lines, body, counter)
            value = sec.expr(opnd.value)
            lines.append(f"{body}{name}[{', '.join(opnd.vars)}] = {value}")
        sec = _Section([s.value for s in k.stores], lines, body, counter)
        for s in k.stores:
            sec.store(s)
    return "\n".join(lines)


def print_schedule(s: Schedule, explain: bool = False) -> str:
    """The whole schedule; `explain` adds each kernel's member ops and the refused merges."""
    lines = [f"schedule {s.name} {{"]
    offsets = s.memory.offsets if s.memory is not None else {}
    aliases = s.memory.aliases if s.memory is not None else {}
    for b in s.buffers.values():
        where = ""
        if b.name in offsets:
            where = f"  @{offsets[b.name]}"
            if b.name in aliases:
                where += f" (in place of %{aliases[b.name]})"
        lines.append(f"  {b.kind:<8} %{b.name}: {b.type}{where}")
    for k in s.kernels:
        lines.append(print_kernel(k))
        if explain:
            lines += [f"    // {line}" for line in explain_kernel(s, k)]
    outs = ", ".join(f"{o}=%{b}" for o, b in s.outputs)
    lines.append(f"  return {outs}" if outs else "  return")
    lines.append("}")
    return "\n".join(lines) + "\n"


def explain_kernel(s: Schedule, k: Kernel) -> list[str]:
    """Why kernel `k` looks as it does: its members and every refused merge touching them."""
    ops = dict(s.options.get("member_ops", {}))
    members = ", ".join(f"%{n} = {ops.get(n, '?')}" for n in k.origin)
    out = [f"members: {members}"]
    mine = set(k.origin)
    for r in s.rejections:
        if r.producer in mine or r.consumer in mine:
            out.append(f"not fused: {r}")
    return out
