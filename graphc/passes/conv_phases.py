"""`conv_phases`: a convolution over a dilated input becomes one convolution per output phase.

A `conv` with lhs_dilation L > 1 (a transposed convolution, or the input gradient of a strided
one) reads an input with L - 1 zeros inserted between elements: most of its multiplications
are by those zeros, and no register-blocked convolution applies to it. Along one spatial axis
(stride S, rhs_dilation D, kernel K, padding lo), output o reads dilated position
o·S + k·D - lo, a real input element only where that is a multiple of L. Outputs o = r + P·q
with P = L / gcd(S, L) share one residue class r, for which the taps that land on real elements
are k0, k0 + t, ... (t = L / gcd(D, L)) and read input (r·S + k0·D - lo) / L + q·S' + j·D'
(S' = S / gcd(S, L), D' = D / gcd(D, L)). So phase r is an ordinary convolution of the
undilated input with the sub-kernel w[..., k0::t] at stride S', dilation D' and padding
-(r·S + k0·D - lo) / L, giving ceil((O - r) / P) outputs; a phase that no tap reaches is zeros.
With several spatial axes the phases are the product of each axis's. The phase outputs
interleave back by concatenation and reshape (each padded to the longest phase, the result
sliced to O): pure data movement, so the values are the same sums without the zero terms.

A transposed convolution whose kernel equals its stride (a U-Net's 2x2 up-convolution) has
1x1 phases, which lower as matmuls (`fuse_lower.lower_pointwise_conv`).

A convolution of a one-point input (every spatial size 1: a generator's first transposed
convolution from its latent vector) wastes work the same way, every output position reading
a single tap or none: it becomes x[N, C] @ W[C, O·P], W's column for output channel o and
position p being the tap p reads (a `take` of the kernel's taps and a zero slot). The DCGAN
generator's first layer (100 -> 256 channels to 4x4, batch 16, one thread): 5.85 -> 0.58 ms.

Contract: same signature, same values as the input graph up to the order of the nonzero terms
of each sum (and a zero no longer multiplied by an infinite weight).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.builder import Builder, Tensor
from graphc.ir.graph import Graph, Node

from .base import Pass, PassContext
from .decompose import rebuild


@dataclass(frozen=True)
class _Phase:
    """One output phase along one spatial axis: its residue r, output count, and the
    stride-S' convolution that computes it (None: no tap reaches it, the phase is zeros)."""

    r: int
    count: int
    k0: int | None
    taps: int
    pad_lo: int
    pad_hi: int


@dataclass(frozen=True)
class _Axis:
    period: int       # P: outputs per phase period
    stride: int       # S'
    dilation: int     # D'
    tap_step: int     # t
    phases: tuple[_Phase, ...]


def _axis(size: int, kernel: int, stride: int, lo: int, lhs: int, rhs: int, out: int) -> _Axis:
    period = lhs // math.gcd(stride, lhs)
    step = lhs // math.gcd(rhs, lhs)
    s2, d2 = stride // math.gcd(stride, lhs), rhs // math.gcd(rhs, lhs)
    phases = []
    for r in range(min(period, out)):
        count = -(-(out - r) // period)
        k0 = next((k for k in range(min(step, kernel)) if (r * stride + k * rhs - lo) % lhs == 0),
                  None)
        if k0 is None:
            phases.append(_Phase(r, count, None, 0, 0, 0))
            continue
        taps = -(-(kernel - k0) // step)
        first = (r * stride + k0 * rhs - lo) // lhs
        # padding so that exactly `count` outputs fit: the span the last output reads
        pad_hi = (count - 1) * s2 + (taps - 1) * d2 + 1 - size + first
        phases.append(_Phase(r, count, k0, taps, -first, pad_hi))
    return _Axis(period, s2, d2, step, tuple(phases))


def split_conv(b: Builder, n: Node, x: Tensor, w: Tensor) -> Tensor:
    """The phase form of conv node `n` (module note), emitted through `b`."""
    a = n.attrs
    rank = len(x.shape) - 2
    out = n.out.shape
    axes = [_axis(x.shape[2 + i], w.shape[2 + i], a["stride"][i], a["padding"][2 * i],
                  a["lhs_dilation"][i], a["rhs_dilation"][i], out[2 + i]) for i in range(rank)]
    longest = [ax.phases[0].count for ax in axes]
    pieces: dict[tuple[int, ...], Tensor] = {}
    for combo in itertools.product(*(ax.phases for ax in axes)):
        shape = out[:2] + tuple(p.count for p in combo)
        if any(p.k0 is None for p in combo):
            y = b.const(0.0, dtype=n.out.dtype, shape=shape)
        else:
            sub = b.op("slice", w, start=(0, 0) + tuple(p.k0 for p in combo),
                       stop=w.shape[:2] + w.shape[2:],
                       step=(1, 1) + tuple(ax.tap_step for ax in axes))
            y = b.op("conv", x, sub, stride=tuple(ax.stride for ax in axes),
                     padding=tuple((p.pad_lo, p.pad_hi) for p in combo),
                     lhs_dilation=(1,) * rank, rhs_dilation=tuple(ax.dilation for ax in axes),
                     groups=a["groups"],
                     name=f"{n.name}.phase{''.join(map(str, (p.r for p in combo)))}"
                     if n.name else None)
        short = [q - p.count for q, p in zip(longest, combo, strict=True)]
        if any(short):
            y = b.op("pad", y, low=(0,) * len(shape), high=(0, 0, *short))
        pieces[tuple(p.r for p in combo)] = y
    return _interleave(b, pieces, axes, out, longest)


def _interleave(b: Builder, pieces: dict[tuple[int, ...], Tensor], axes: list[_Axis],
                out: tuple[int, ...], longest: list[int]) -> Tensor:
    """out[n, c, r0 + P0·q0, r1 + P1·q1, ...] = pieces[(r0, r1, ...)][n, c, q0, q1, ...]."""
    rank = len(axes)
    # [N, C, Q0, 1, Q1, 1, ...]: each phase's slot along the interleaved axes
    spread = out[:2] + tuple(d for q in longest for d in (q, 1))

    def join(prefix: tuple[int, ...]) -> Tensor:
        i = len(prefix)
        if i == rank:
            return pieces[prefix].reshape(*spread)
        present = [p.r for p in axes[i].phases]
        parts = [join(prefix + (r,)) for r in present]
        return parts[0] if len(parts) == 1 else b.op("concat", *parts, axis=3 + 2 * i)

    joined = join(())
    full = out[:2] + tuple(q * len(ax.phases) for q, ax in zip(longest, axes, strict=True))
    y = joined.reshape(*full)
    if full != out:
        y = b.op("slice", y, start=(0,) * len(out), stop=out)
    return y


def _dilated_input(n: Node) -> bool:
    return n.op == "conv" and any(d > 1 for d in n.attrs["lhs_dilation"])


def _point_input(n: Node) -> bool:
    """A convolution of a one-point input (every spatial size 1) by a larger kernel."""
    if n.op != "conv":
        return False
    x, w = n.inputs
    return (all(d == 1 for d in x.shape[2:]) and math.prod(w.shape[2:]) > 1
            and n.attrs["groups"] == 1)


def point_conv(b: Builder, n: Node, x: Tensor, w: Tensor) -> Tensor:
    """Conv node `n` over a one-point input as a matmul (module note): output position p
    reads the input's only point through tap (pad_lo - p·S) / D where that is a whole tap,
    and nothing (a zero slot past the kernel's taps) elsewhere."""
    a = n.attrs
    batch, chans = x.shape[:2]
    outs, kernel = n.out.shape[1], w.shape[2:]
    taps = []
    for i, size in enumerate(n.out.shape[2:]):
        lo, s, d = a["padding"][2 * i], a["stride"][i], a["rhs_dilation"][i]
        taps.append([(lo - p * s) // d if (lo - p * s) % d == 0
                     and 0 <= (lo - p * s) // d < kernel[i] else None for p in range(size)])
    flat = math.prod(kernel)
    idx = [flat if None in pos else int(np.ravel_multi_index(pos, kernel))
           for pos in itertools.product(*taps)]
    # [C, O, taps + a zero slot]: picked into [C, O, P], contiguous as the matmul's B
    wt = b.op("pad", w.reshape(outs, chans, flat).transpose(1, 0, 2), low=(0, 0, 0),
              high=(0, 0, 1))
    picked = b.op("take", wt, b.const(np.asarray(idx, np.int64), dtype="i64"), axis=2)
    y = x.reshape(batch, chans) @ picked.reshape(chans, outs * len(idx))
    return y.reshape(*n.out.shape)


def split_dilated_convs(graph: Graph) -> Graph:
    """Return `graph` with every convolution over a dilated input in phase form, and every
    convolution over a one-point input a matmul."""
    if not any(_point_input(n) or _dilated_input(n) for n in graph.nodes):
        return graph

    def rewrite(b: Builder, n: Node, ins: list[Tensor]) -> Tensor | None:
        if _point_input(n):
            return point_conv(b, n, *ins)
        return split_conv(b, n, *ins) if _dilated_input(n) else None

    return rebuild(graph, Builder.from_graph(graph), rewrite)


@dataclass
class ConvPhasesPass(Pass):
    """Convolutions over dilated inputs -> one convolution per output phase; over one-point
    inputs -> a matmul (module note)."""

    name: ClassVar[str] = "conv_phases"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return split_dilated_convs(graph)
