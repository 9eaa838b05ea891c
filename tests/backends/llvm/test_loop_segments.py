"""Pointwise loop kernels split along the last axis where their values pick pieces by bounds on
it (`ir.kernel_segments`, `codegen_loop.split_segments`): concatenations of computed pieces and
pads along the last axis, piece widths that are and are not multiples of the vector, one and
two threads. Each result is compared with the reference and, bit for bit, with the same kernel
compiled without the split."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import graphc
from graphc.ir.builder import Builder
from graphc.ir.kernel import Bound, Const, InBounds, Load, Op, ix
from graphc.ir.kernel_segments import breakpoints, restrict, selects_on

from .conftest import check_llvm

codegen_loop = importlib.import_module("graphc.backends.llvm.codegen_loop")


def _gates(rows: int, widths: tuple[int, ...], pad: tuple[int, int] = (0, 0)):
    """concat(sigmoid(a), tanh(b) * c, exp(-a), ...) along the last axis, one piece per width
    (pieces cycle through four functions of slices of a, b and c), optionally padded."""
    b = Builder("gates")
    total = sum(widths)
    a, bb, c = (b.input(n, (rows, total)) for n in "abc")
    pieces, lo = [], 0
    for i, w in enumerate(widths):
        def cols(t, lo=lo, w=w):
            return b.slice(t, start=(0, lo), stop=(rows, lo + w), step=(1, 1))
        pieces.append([b.sigmoid(cols(a)), b.tanh(cols(bb)) * cols(c), b.exp(-cols(a)),
                       cols(c) * cols(a)][i % 4])
        lo += w
    y = b.concat(*pieces, axis=1)
    if pad != (0, 0):
        y = b.pad(y, low=(0, pad[0]), high=(0, pad[1]))
    g = b.build(outputs={"y": y})
    rng = np.random.default_rng(len(widths) + total)
    return g, {n: rng.normal(size=(rows, total)).astype(np.float32) for n in "abc"}


def _segments(exe) -> list[list[list[int]]]:
    return [p["segments"] for p in exe.info["kernel_plans"].values() if p.get("segments")]


@pytest.mark.parametrize("rows, widths, pad", [
    (32, (256, 256, 256, 256), (0, 0)),      # an LSTM step's four gate gradients
    (7, (5, 19, 33), (0, 0)),                 # pieces that end inside a vector
    (9, (16, 3, 40, 1, 24), (0, 0)),
    (4, (30, 34), (3, 5)),                   # a pad: its borders are segments of their own
])
@pytest.mark.parametrize("threads", [1, 2])
def test_split_kernels_match_the_reference_and_the_unsplit_kernel(rows, widths, pad, threads,
                                                                   monkeypatch):
    g, feed = _gates(rows, widths, pad)
    exe = check_llvm(g, feed, threads=threads, cache=False)
    segs = _segments(exe)
    assert len(segs) == 1
    ends = [hi for _, hi in segs[0]]
    edges = np.cumsum((pad[0],) + widths).tolist()
    assert set(edges) - {0} <= set(ends) and ends[-1] == sum(widths) + sum(pad)
    monkeypatch.setattr(codegen_loop, "MAX_SEGMENTS", 0)
    plain = graphc.compile(g, target="llvm", threads=threads, cache=False)
    assert not _segments(plain)
    np.testing.assert_array_equal(exe(feed)["y"], plain(feed)["y"])


def test_short_rows_stay_one_loop():
    """A pad's one-element borders around 8 columns: three loops would run three partial
    vectors per row where one loop runs one."""
    b = Builder("short")
    x = b.input("x", (64, 8))
    g = b.build(outputs={"y": b.pad(b.sigmoid(x), low=(0, 1), high=(0, 1))})
    exe = check_llvm(g, {"x": np.linspace(-3, 3, 512, dtype=np.float32).reshape(64, 8)},
                     cache=False)
    assert not _segments(exe)


def test_too_many_pieces_stay_one_loop():
    g, feed = _gates(3, (4,) * (codegen_loop.MAX_SEGMENTS + 1))
    exe = check_llvm(g, feed, cache=False)
    assert not _segments(exe)


def test_restrict_decides_bounds_masks_and_selects():
    i = ix("i")
    lo_half = InBounds((Bound(i, 0, 8),))
    x = Load("x", (i,), (), "f32")
    padded = Load("p", (i - 2,), (Bound(i, 2, 12),), "f32")
    value = Op("select", (lo_half, Op("exp", (x,), "f32"), padded), "f32")
    roots = [value]
    assert selects_on(roots, "i") and not selects_on(roots, "j")
    assert breakpoints(roots, "i", 16) == [2, 8, 12, 16]
    ext = {"i": 16}
    (left,) = restrict(roots, "i", 0, 8, ext)
    assert left == Op("exp", (x,), "f32")
    (mid,) = restrict(roots, "i", 8, 12, ext)
    assert mid == Load("p", (i - 2,), (), "f32")  # the mask holds throughout: dropped
    (right,) = restrict(roots, "i", 12, 16, ext)
    assert right == Const(0, "f32")                 # outside the mask: the load's 0
    (whole,) = restrict(roots, "i", 0, 16, ext)
    assert whole is value                           # nothing decided: the same object
