"""Pointwise loop kernels split along the last axis where their values pick pieces by bounds on
it (`ir.kernel_segments`, `codegen_loop.split_segments`): concatenations of computed pieces and
pads along the last axis, piece widths that are and are not multiples of the vector, one and
two threads. Each result is compared with the reference and, bit for bit, with the same kernel
compiled without the split. Concatenations of many plain loads along an outer axis, read
through a table of piece pointers (`codegen_concat`), against the reference likewise."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import graphc
from graphc.ir.builder import Builder
from graphc.ir.kernel import Bound, Const, InBounds, Load, Op, ix
from graphc.ir.kernel_segments import breakpoints, load_pieces, restrict, selects_on

from .conftest import check_llvm

codegen_loop = importlib.import_module("graphc.backends.llvm.codegen_loop")
codegen_concat = importlib.import_module("graphc.backends.llvm.codegen_concat")


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


def _gathered(exe) -> list[int]:
    return [p["gathered_pieces"] for p in exe.info["kernel_plans"].values()
            if p.get("gathered_pieces")]


@pytest.mark.parametrize("shape, axis, count, gathered", [
    ((3, 37), 0, 20, True),          # rows of odd width: a masked tail per row
    ((2, 1, 17), 1, 9, True),        # along an outer axis that is not the first
    ((4, 16), 0, 5, False),          # too few pieces: the select tree stays
])
@pytest.mark.parametrize("threads", [1, 2])
def test_concatenations_of_many_loads_read_a_table_of_pieces(shape, axis, count, gathered,
                                                             threads):
    b = Builder("gather")
    xs = [b.input(f"x{i}", shape) for i in range(count)]
    cat = b.concat(*xs, axis=axis)
    flat = cat.reshape(-1, shape[-1])
    g = b.build(outputs={"y": b.matmul(b.transpose(flat, perm=(1, 0)), flat)})
    rng = np.random.default_rng(count)
    feed = {f"x{i}": rng.standard_normal(shape).astype(np.float32) for i in range(count)}
    exe = check_llvm(g, feed, threads=threads, cache=False, tol=dict(rtol=1e-5, atol=1e-4))
    assert _gathered(exe) == ([count] if gathered else [])


def test_pieces_of_other_shapes_keep_the_select_tree(monkeypatch):
    """Pieces of different lengths along the axis would read their rows at other strides:
    not gathered, and the values still right."""
    b = Builder("uneven")
    xs = [b.input(f"x{i}", (1 + i % 3, 20)) for i in range(12)]
    cat = b.concat(*xs, axis=0)
    g = b.build(outputs={"y": b.matmul(b.transpose(cat, perm=(1, 0)), cat)})
    rng = np.random.default_rng(5)
    feed = {f"x{i}": rng.standard_normal((1 + i % 3, 20)).astype(np.float32) for i in range(12)}
    exe = check_llvm(g, feed, cache=False, tol=dict(rtol=1e-5, atol=1e-4))
    assert not _gathered(exe)


def test_load_pieces_reads_the_select_tree():
    i, j = ix("i"), ix("j")

    def piece(name, lo, hi):
        return Load(name, (i - lo, j), (Bound(i, lo, hi),), "f32")

    def pick(lo, mid, left, right):
        return Op("select", (InBounds((Bound(i, lo, mid),)), left, right), "f32")

    tree = pick(0, 4, pick(0, 2, piece("a", 0, 2), piece("b", 2, 4)), piece("c", 4, 6))
    got = load_pieces(tree, "i", 6, {"i": 6, "j": 5})
    assert got == [(0, Load("a", (i, j), (), "f32")), (2, Load("b", (i - 2, j), (), "f32")),
                   (4, Load("c", (i - 4, j), (), "f32"))]
    assert load_pieces(tree, "j", 5, {"i": 6, "j": 5}) is None  # not picked along j
    odd = pick(0, 2, piece("a", 0, 2), Load("b", (i - 2, j + 1), (Bound(i, 2, 4),), "f32"))
    assert load_pieces(odd, "i", 4, {"i": 4, "j": 5}) is None   # another index
