"""ONNX import of quantize/dequantize pairs (QDQ models) as simulated quantization in floats,
of the integer ops of dynamically quantized and QOperator models, and of a few ops made of
constants or pooling: the signal windows, CenterCropPad, ReverseSequence and LpPool.
`graphc.onnx_import` registers these handlers.

QDQ: QuantizeLinear's output is kept as a float tensor holding the integers it would store
(round half to even, saturated to the zero point's type), and DequantizeLinear maps such values,
or an integer initializer (folded at import), back to floats. A model in QDQ format then runs
with the rounding and clipping its quantization implies, in float kernels; a quantized value
cannot be a graph output (graphc has no 8-bit dtypes).

Integer products (MatMulInteger, ConvInteger, and the accumulators of QLinearMatMul and
QLinearConv) are computed on (x - zero point) in float64, where every sum of 8-bit products
is exact (below 2^53), and cast to int32. DynamicQuantizeLinear and the requantization of the
QLinear ops follow ONNX Runtime's order of float operations: the scale (max - min) / 255 (1
where max = min), the zero point rounded half to even after clamping; the multiplier
a_scale * b_scale / y_scale in float32 applied to the accumulator converted to float32, then
rounded half to even, offset and saturated.
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
    if p <= 0:  # the 1/p-th root of a sum of |x|^p
        raise imp.fail(node, f"p={attrs['p']} must be positive")
    powered = x * x if p == 2 else abs(x) ** p
    avg = pool(imp, node, [powered], {**attrs, "count_include_pad": 1}, kind="avg")
    avg = avg[0] if isinstance(avg, list) else avg
    total = avg * float(np.prod(attrs["kernel_shape"]))
    return total.sqrt() if p == 2 else total ** (1.0 / p)


def _centered(imp, node, v, zp, axis_shape: list[int] | None = None):
    """v - zp in float64: v an integer initializer, or a float tensor holding the integers a
    quantization stored; zp a constant or computed zero point, per tensor or (reshaped to
    `axis_shape`) per row or channel."""
    if isinstance(v, np.ndarray) and (zp is None or isinstance(zp, np.ndarray)):
        z = 0.0 if zp is None else np.asarray(zp, np.float64)
        if axis_shape is not None and np.size(z) > 1:
            z = z.reshape(axis_shape)
        return imp.b.const(v.astype(np.float64) - z, "f64")
    t = imp.b.const(np.asarray(v, np.float64), "f64") if isinstance(v, np.ndarray) \
        else imp.t(v).astype("f64")
    if zp is None:
        return t
    z = imp.b.const(np.asarray(zp, np.float64), "f64") if isinstance(zp, np.ndarray) \
        else imp.t(zp).astype("f64")
    if axis_shape is not None and int(np.prod(z.shape)) > 1:
        z = z.reshape(*axis_shape)
    return t - z


def _opt(ins, k):
    return ins[k] if len(ins) > k and ins[k] is not None else None


def _int_matmul(imp, node, a, b, a_zp, b_zp):
    """The exact integer product (a - a_zp) @ (b - b_zp) in float64; a's zero point may be per
    row of a, b's per column of b."""
    a_rows = np.shape(a)[-2] if isinstance(a, np.ndarray) else imp.t(a).shape[-2]
    return imp.b.op("matmul", _centered(imp, node, a, a_zp, [a_rows, 1]),
                    _centered(imp, node, b, b_zp))


def _int_conv(imp, node, x, w, x_zp, w_zp, attrs):
    from .onnx_layers import conv

    w_shape = np.shape(w) if isinstance(w, np.ndarray) else imp.t(w).shape
    per_channel = [w_shape[0]] + [1] * (len(w_shape) - 1)
    return conv(imp, node, [_centered(imp, node, x, x_zp), _centered(imp, node, w, w_zp,
                                                                      per_channel)], attrs)


def matmul_integer(imp, node, ins, attrs):
    return _int_matmul(imp, node, ins[0], ins[1], _opt(ins, 2), _opt(ins, 3)).astype("i32")


def conv_integer(imp, node, ins, attrs):
    return _int_conv(imp, node, ins[0], ins[1], _opt(ins, 2), _opt(ins, 3), attrs).astype("i32")


def dynamic_quantize(imp, node, ins, attrs):
    """(y, scale, zero point) of uint8 quantization over x's whole range, zero included."""
    x = imp.t(ins[0])
    lo = (-(-x).max()).minimum(0.0)
    hi = x.max().maximum(0.0)
    scale = imp.b.select(hi.eq(lo), imp.b.const(1.0), (hi - lo) / 255.0)
    zp = (-(lo / scale)).maximum(0.0).minimum(255.0).round()
    y = ((x / scale).round() + zp).maximum(0.0).minimum(255.0)
    return [y, scale, zp]


def _requantize(imp, node, acc, a_scale, b_scale, y_scale, y_zp, channel_shape):
    """An int32 accumulator (as float64) back to y's quantized integers, in ONNX Runtime's
    order: float32(acc) * (a_scale * b_scale / y_scale), rounded, offset, saturated."""
    if y_zp is not None and not isinstance(y_zp, np.ndarray):
        raise imp.fail(node, "the output zero point must be a constant (it fixes the type)")
    zp = np.zeros((), np.uint8) if y_zp is None else y_zp
    if zp.dtype not in _QRANGE:
        raise imp.fail(node, f"quantization to {zp.dtype} is not supported")
    lo, hi = _QRANGE[zp.dtype]
    b_scale = imp.t(b_scale)
    if int(np.prod(b_scale.shape)) > 1:
        b_scale = b_scale.reshape(*channel_shape)
    mult = imp.t(a_scale) * b_scale / imp.t(y_scale)
    q = (acc.astype("f32") * mult).round() + imp.b.const(zp.astype(np.float32))
    return q.maximum(float(lo)).minimum(float(hi))


def qlinear_matmul(imp, node, ins, attrs):
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (list(ins) + [None] * 8)[:8]
    acc = _int_matmul(imp, node, a, b, a_zp, b_zp)
    return _requantize(imp, node, acc, a_s, b_s, y_s, y_zp, [acc.shape[-1]])


def qlinear_conv(imp, node, ins, attrs):
    x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp, bias = (list(ins) + [None] * 9)[:9]
    acc = _int_conv(imp, node, x, w, x_zp, w_zp, attrs)
    channels = [acc.shape[1]] + [1] * (acc.ndim - 2)
    if bias is not None:  # int32, added to the accumulator before requantization
        acc = acc + _centered(imp, node, bias, None).reshape(*channels)
    return _requantize(imp, node, acc, x_s, w_s, y_s, y_zp, channels)


HANDLERS = {
    "QuantizeLinear": quantize, "DequantizeLinear": dequantize,
    "MatMulInteger": matmul_integer, "ConvInteger": conv_integer,
    "DynamicQuantizeLinear": dynamic_quantize, "QLinearMatMul": qlinear_matmul,
    "QLinearConv": qlinear_conv,
    "HannWindow": window, "HammingWindow": window, "BlackmanWindow": window,
    "CenterCropPad": center_crop_pad, "ReverseSequence": reverse_sequence, "LpPool": lp_pool,
}

__all__ = ["HANDLERS"]
