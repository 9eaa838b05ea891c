"""ONNX import of the spatial-transformer ops: AffineGrid (a sampling grid from affine
matrices) and GridSample (sampling an image at computed positions, bilinear or nearest, with
zeros, border or reflection padding). `graphc.onnx_import` registers these handlers.

GridSample gathers with positions computed from its grid input, so it is a `take` of pixel
rows: the image as [N·H·W, C], one take per corner of the bilinear cell, each corner weighted
by its distance to the sampling point (0 where the corner lies outside a zero-padded image).
The gradient reaches the image through `take` (a scatter-add) and the grid through the weights.
"""

from __future__ import annotations

import numpy as np

from .onnx_layers import text
from .onnx_math import both


def affine_grid(imp, node, ins, attrs):
    """grid[n, h, w] = theta[n] @ (x_w, y_h, 1), the coordinates normalized to [-1, 1]."""
    theta = imp.t(ins[0])
    size = imp.ints(node, ins[1], "size")
    if len(size) != 4 or theta.shape != (size[0], 2, 3):
        raise imp.fail(node, f"theta {theta.shape} and size {size}: only 2-D grids ([N, 2, 3] "
                             "and [N, C, H, W]) are supported")
    n, _, h, w = size
    align = int(attrs.get("align_corners", 0))

    def axis(k: int) -> np.ndarray:
        if k == 1:
            return np.zeros(1)
        lin = np.linspace(-1.0, 1.0, k)
        return lin if align else lin * (k - 1) / k

    ys, xs = np.meshgrid(axis(h), axis(w), indexing="ij")
    base = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(h * w, 3).astype(np.float32)
    grid = imp.b.const(base) @ theta.transpose(0, 2, 1)  # [N, H·W, 2]
    return grid.reshape(n, h, w, 2)


def _unnormalize(imp, coord, size: int, align: bool):
    """Grid coordinates in [-1, 1] to pixel positions."""
    if align:
        return (coord + 1.0) * ((size - 1) / 2.0)
    return ((coord + 1.0) * size - 1.0) * 0.5


def _reflect(imp, p, size: int, align: bool):
    """Reflection padding: fold p back into the image (about the corner pixel centres with
    align_corners, about the edges without)."""
    lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    span = hi - lo
    if span <= 0:
        return p * 0.0
    d = abs(p - lo)
    flips = (d * (1.0 / span)).floor()
    extra = d - flips * span
    even = (flips * 0.5).floor() * 2.0
    odd = flips.ne(even)  # an odd number of reflections runs backwards from the far edge
    out = imp.b.select(odd, hi - extra, extra + lo)
    return out.maximum(0.0).minimum(size - 1.0) if not align else out


def grid_sample(imp, node, ins, attrs):
    x, grid = imp.t(ins[0]), imp.t(ins[1])
    if x.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != x.shape[0]:
        raise imp.fail(node, f"X {x.shape} and grid {grid.shape}: only 2-D sampling ([N, C, H, "
                             "W] with [N, Ho, Wo, 2]) is supported")
    mode = text(attrs, "mode", "linear" if node.op_type == "GridSample" else "bilinear")
    mode = {"bilinear": "linear"}.get(mode, mode)
    pad = text(attrs, "padding_mode", "zeros")
    align = bool(int(attrs.get("align_corners", 0)))
    if mode not in ("linear", "nearest"):
        raise imp.fail(node, f"mode {mode!r} is not supported (linear, nearest)")
    if pad not in ("zeros", "border", "reflection"):
        raise imp.fail(node, f"padding_mode {pad!r}")
    n, c, h, w = x.shape
    _, ho, wo, _ = grid.shape
    rows = x.transpose(0, 2, 3, 1).reshape(n * h * w, c)  # pixel rows
    gx = imp.b.op("slice", grid, start=(0, 0, 0, 0), stop=(n, ho, wo, 1),
                  step=(1, 1, 1, 1)).reshape(n, ho, wo)
    gy = imp.b.op("slice", grid, start=(0, 0, 0, 1), stop=(n, ho, wo, 2),
                  step=(1, 1, 1, 1)).reshape(n, ho, wo)
    px, py = _unnormalize(imp, gx, w, align), _unnormalize(imp, gy, h, align)
    if pad == "border":
        px, py = px.maximum(0.0).minimum(w - 1.0), py.maximum(0.0).minimum(h - 1.0)
    elif pad == "reflection":
        px, py = _reflect(imp, px, w, align), _reflect(imp, py, h, align)
    batch = imp.b.const((np.arange(n, dtype=np.int64) * (h * w)).reshape(n, 1, 1))

    def corner(cx, cy):
        """The pixel rows at integer positions (cx, cy) (floats), and whether they lie in the
        image; outside, a clamped row is read and weighted 0."""
        inside = both(imp, both(imp, cx >= 0.0, cx <= w - 1.0),
                      both(imp, cy >= 0.0, cy <= h - 1.0))
        ix = cx.maximum(0.0).minimum(w - 1.0).astype("i64")
        iy = cy.maximum(0.0).minimum(h - 1.0).astype("i64")
        got = imp.b.take(rows, batch + iy * w + ix, axis=0)  # [N, Ho, Wo, C]
        return got, inside.astype(x.dtype)

    if mode == "nearest":
        got, inside = corner(px.round(), py.round())
        out = got * inside.reshape(n, ho, wo, 1)
    else:
        x0, y0 = px.floor(), py.floor()
        fx, fy = px - x0, py - y0
        out = None
        for dx, wx in ((0.0, 1.0 - fx), (1.0, fx)):
            for dy, wy in ((0.0, 1.0 - fy), (1.0, fy)):
                got, inside = corner(x0 + dx, y0 + dy)
                term = got * (wx * wy * inside).reshape(n, ho, wo, 1)
                out = term if out is None else out + term
    return out.transpose(0, 3, 1, 2)


HANDLERS = {"AffineGrid": affine_grid, "GridSample": grid_sample}

__all__ = ["HANDLERS"]
