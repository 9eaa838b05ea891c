"""ONNX import of quantize/dequantize pairs (QDQ models) as simulated quantization in floats,
and of a few ops made of constants or pooling: the signal windows, CenterCropPad,
ReverseSequence and LpPool. `graphc.onnx_import` registers these handlers.

QDQ: QuantizeLinear's output is kept as a float tensor holding the integers it would store
(round half to even, saturated to the zero point's type), and DequantizeLinear maps such values,
or an integer initializer (folded at import), back to floats. A model in QDQ format then runs
with the rounding and clipping its quantization implies, in float kernels; a quantized value
cannot be a graph output (graphc has no 8-bit dtypes).
"""

from __future__ import annotations

import math

import numpy as np

from .onnx_index import along_axis_positions
from .onnx_layers import pool

_QRANGE = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max)
           for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32)}


def _per_axis(imp, node, v, x_ndim: int, attrs):
    """A scale or zero point: a scalar, or a 1-D tensor along `axis`, shaped to broadcast."""
    if attrs.get("block_size", 0):
        raise imp.fail(node, "blocked quantization (block_size) is not supported")
    shape = np.shape(v) if isinstance(v, np.ndarray) else v.shape
    if len(shape) == 0 or (len(shape) == 1 and shape[0] == 1):
        return v
    if len(shape) != 1:
        raise imp.fail(node, f"a scale or zero point of shape {tuple(shape)}")
    axis = int(attrs.get("axis", 1))
    axis = axis + x_ndim if axis < 0 else axis
    target = [1] * x_ndim
    target[axis] = shape[0]
    return v.reshape(target)


def quantize(imp, node, ins, attrs):
    x = imp.t(ins[0])
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), np.uint8)
    if not isinstance(zp, np.ndarray):
        raise imp.fail(node, "the zero point must be a constant (it fixes the output type)")
    if zp.dtype not in _QRANGE:
        raise imp.fail(node, f"quantization to {zp.dtype} is not supported")
    lo, hi = _QRANGE[zp.dtype]
    scale = _per_axis(imp, node, imp.t(ins[1]), x.ndim, attrs)
    zpf = _per_axis(imp, node, imp.b.const(zp.astype(np.float32)), x.ndim, attrs)
    q = (x / scale).round() + zpf
    return q.maximum(float(lo)).minimum(float(hi))


def dequantize(imp, node, ins, attrs):
    x = ins[0]
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else None
    if isinstance(x, np.ndarray) and isinstance(ins[1], np.ndarray) and \
            (zp is None or isinstance(zp, np.ndarray)):  # weights: fold at import
        s = _per_axis(imp, node, np.asarray(ins[1], np.float32), x.ndim, attrs)
        z = 0 if zp is None else _per_axis(imp, node, zp.astype(np.float32), x.ndim, attrs)
        return imp.b.const(((x.astype(np.float32) - z) * s).astype(np.float32))
    xt = imp.t(np.asarray(x, np.float32) if isinstance(x, np.ndarray) else x)
    if xt.dtype != "f32":
        xt = xt.astype("f32")
    scale = _per_axis(imp, node, imp.t(ins[1]), xt.ndim, attrs)
    if zp is not None:
        zpt = imp.b.const(np.asarray(zp, np.float32)) if isinstance(zp, np.ndarray) \
            else imp.t(zp).astype("f32")
        xt = xt - _per_axis(imp, node, zpt, xt.ndim, attrs)
    return xt * scale


def window(imp, node, ins, attrs):
    """Hann, Hamming and Blackman windows of a constant length, evaluated at import."""
    n = int(imp.ints(node, ins[0], "size")[0])
    periodic = int(attrs.get("periodic", 1))
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    t = 2.0 * math.pi * k / max(denom, 1)
    if node.op_type == "HannWindow":
        w = 0.5 - 0.5 * np.cos(t)
    elif node.op_type == "HammingWindow":
        w = 25.0 / 46.0 - (21.0 / 46.0) * np.cos(t)
    else:
        w = 0.42 - 0.5 * np.cos(t) + 0.08 * np.cos(2.0 * t)
    return imp.b.const(w.astype(np.float32))


def center_crop_pad(imp, node, ins, attrs):
    """Crop or zero-pad each named axis to the target size around its centre: one `pad` whose
    negative amounts crop."""
    x = imp.t(ins[0])
    target = imp.ints(node, ins[1], "shape")
    axes = [a + x.ndim if a < 0 else a for a in attrs.get("axes", range(x.ndim))]
    if len(axes) != len(target):
        raise imp.fail(node, f"shape {target} for axes {axes}")
    low, high = [0] * x.ndim, [0] * x.ndim
    for a, t in zip(axes, target, strict=True):
        diff = t - x.shape[a]
        if diff >= 0:  # pad: the smaller half first
            low[a], high[a] = diff // 2, diff - diff // 2
        else:  # crop: the larger half of the excess first
            low[a], high[a] = -((-diff) // 2), -((-diff) - (-diff) // 2)
    return imp.b.op("pad", x, low=tuple(low), high=tuple(high), value=0.0)


def reverse_sequence(imp, node, ins, attrs):
    """Each batch item's first len[b] steps in reverse: a take along the time axis at source
    steps computed from the (constant or fed) lengths."""
    x = imp.t(ins[0])
    b_ax, t_ax = int(attrs.get("batch_axis", 1)), int(attrs.get("time_axis", 0))
    if {b_ax, t_ax} != {0, 1}:
        raise imp.fail(node, f"batch_axis {b_ax} and time_axis {t_ax}")
    lens = ins[1]
    per_batch = [1] * x.ndim
    per_batch[b_ax] = x.shape[b_ax]
    if isinstance(lens, np.ndarray):
        ln = imp.b.const(lens.astype(np.int64).reshape(per_batch))
    else:
        ln = imp.t(lens)
        ln = (ln if ln.dtype == "i64" else ln.astype("i64")).reshape(*per_batch)
    t = imp.b.op("iota", shape=x.shape, axis=t_ax, dtype="i64")
    src = imp.b.select(t < ln, ln - 1 - t, t)
    flat = along_axis_positions(imp, node, x.shape, src, t_ax)
    return imp.b.take(x.reshape(-1), flat, axis=0)


def lp_pool(imp, node, ins, attrs):
    """(Σ |x|^p)^(1/p) over each window: an average pool counting pad elements (zeros here),
    times the window size."""
    x = imp.t(ins[0])
    p = float(attrs.get("p", 2))
    powered = x * x if p == 2 else abs(x) ** p
    avg = pool(imp, node, [powered], {**attrs, "count_include_pad": 1}, kind="avg")
    avg = avg[0] if isinstance(avg, list) else avg
    total = avg * float(np.prod(attrs["kernel_shape"]))
    return total.sqrt() if p == 2 else total ** (1.0 / p)


HANDLERS = {
    "QuantizeLinear": quantize, "DequantizeLinear": dequantize,
    "HannWindow": window, "HammingWindow": window, "BlackmanWindow": window,
    "CenterCropPad": center_crop_pad, "ReverseSequence": reverse_sequence, "LpPool": lp_pool,
}

__all__ = ["HANDLERS"]
