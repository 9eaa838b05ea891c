"""ONNX ops whose result has a shape only their input values decide (NonZero, Unique,
Compress) or that build a constant (MelWeightMatrix): evaluated at import when those values
are constants, refused with the reason otherwise. `graphc.onnx_import` registers the handlers
(`CONST_HANDLERS` when every input is a constant, `HANDLERS` when a graph tensor remains)."""

from __future__ import annotations

import numpy as np


def _value_shaped(imp, node, ins, attrs):
    raise imp.fail(node, "its output shape depends on input values; graphc compiles static "
                         "shapes, so the input must be a constant")


def nonzero_const(imp, node, ins, attrs):
    x = np.asarray(ins[0])
    return np.asarray(np.nonzero(x.reshape(1) if x.ndim == 0 else x), np.int64)


def unique_const(imp, node, ins, attrs):
    """(unique values, index of each one's first occurrence, inverse indices, counts): sorted
    ascending, or in order of first occurrence with sorted=0; along `axis` when given."""
    x = np.asarray(ins[0])
    axis = attrs.get("axis")
    if axis is None:
        x, axis_used = x.reshape(-1), None
    else:
        axis_used = int(axis) + x.ndim if int(axis) < 0 else int(axis)
    values, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                               return_counts=True, axis=axis_used)
    inverse = inverse.reshape(-1)
    if not int(attrs.get("sorted", 1)):
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        values = np.take(values, order, axis=0 if axis_used is None else axis_used)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return [values, *(np.asarray(v, np.int64) for v in (first, inverse, counts))]


def compress(imp, node, ins, attrs):
    """The slices along `axis` (of the flattened input without one) where a constant condition
    holds: one `take` at constant positions."""
    cond = imp.numbers(ins[1])
    if cond is None:
        raise imp.fail(node, "the condition must be a constant: the output's length is the "
                             "number of its true values")
    x = imp.t(ins[0]) if not isinstance(ins[0], np.ndarray) or ins[0].dtype.kind == "f" \
        else imp.b.const(ins[0])
    axis = attrs.get("axis")
    if axis is None:
        x, axis = x.reshape(-1), 0
    axis = int(axis) + x.ndim if int(axis) < 0 else int(axis)
    keep = np.nonzero(np.asarray(cond, bool).reshape(-1)[:x.shape[axis]])[0]
    return imp.b.take(x, imp.b.const(keep.astype(np.int64), "i64"), axis=axis)


def compress_const(imp, node, ins, attrs):
    axis = attrs.get("axis")
    return np.compress(np.asarray(ins[1], bool).reshape(-1), ins[0],
                       axis=None if axis is None else int(axis))


def mel_weight_matrix(imp, node, ins, attrs):
    """Triangular mel filters over the bins of a one-sided spectrum, [dft_length / 2 + 1,
    num_mel_bins]: band edges equally spaced on the mel scale, 2595 log10(1 + f / 700), and
    mapped to bins as floor((dft_length + 1) f / sample_rate)."""
    from onnx import helper

    mels, dft, rate = (int(np.asarray(v).reshape(-1)[0]) for v in ins[:3])
    lo_hz, hi_hz = (float(np.asarray(v).reshape(-1)[0]) for v in ins[3:5])
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    step = (to_mel(hi_hz) - to_mel(lo_hz)) / (mels + 2)
    edges_mel = to_mel(lo_hz) + step * np.arange(mels + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    edges = np.floor((dft + 1) * edges_hz / rate).astype(np.int64)
    bins = np.arange(dft // 2 + 1)[:, None]
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rise = (bins - left) / np.maximum(centre - left, 1)
    fall = (right - bins) / np.maximum(right - centre, 1)
    out = np.where((bins >= left) & (bins < centre), rise, 0.0)
    out = np.where((bins > centre) & (bins < right), fall, out)
    out = np.where(bins == centre, 1.0, out)  # each filter's peak, however narrow
    dtype = helper.tensor_dtype_to_np_dtype(attrs.get("output_datatype", 1))
    return out.astype(dtype)


def mel_weight_matrix_of_tensors(imp, node, ins, attrs):
    """MelWeightMatrix whose float edges came as initializers or Constant nodes."""
    values = [imp.numbers(v) for v in ins]
    if any(v is None for v in values):
        raise imp.fail(node, "its inputs must be constants (they fix the output's shape)")
    return imp.b.const(mel_weight_matrix(imp, node, values, attrs).astype(np.float32))


CONST_HANDLERS = {"NonZero": nonzero_const, "Unique": unique_const, "Compress": compress_const,
                  "MelWeightMatrix": mel_weight_matrix}
HANDLERS = {"NonZero": _value_shaped, "Unique": _value_shaped, "Compress": compress,
            "MelWeightMatrix": mel_weight_matrix_of_tensors}

__all__ = ["CONST_HANDLERS", "HANDLERS"]
