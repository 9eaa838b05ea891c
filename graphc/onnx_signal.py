"""ONNX import of DFT and STFT (`graphc.onnx_import` registers these handlers): a discrete
Fourier transform of static length is a product with constant cosine and sine matrices, so it
lowers to matmuls (and differentiates like them). Complex values are a trailing axis of 2 (real,
imaginary), as ONNX has them; a real input has a trailing axis of 1.
"""

from __future__ import annotations

import numpy as np

from .onnx_tensor import _opset


def _signal_axis(imp, node, ins, attrs, rank: int) -> int:
    """The signal axis: an input from opset 20 on (default -2), an attribute before (1)."""
    if len(ins) > 2 and ins[2] is not None:
        axis = int(imp.ints(node, ins[2], "axis")[0])
    else:
        axis = int(attrs.get("axis", -2 if _opset(imp) >= 20 else 1))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank - 1:
        raise imp.fail(node, f"axis {axis} of a rank-{rank} input (the last axis holds the "
                             "real and imaginary parts)")
    return axis


def _matrices(n_in: int, n: int, k: int, inverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2π·f·t/n for the k output frequencies f and n_in input samples t."""
    f = np.arange(k, dtype=np.float64)[:, None]
    t = np.arange(n_in, dtype=np.float64)[None, :]
    theta = 2.0 * np.pi * ((f * t) % n) / n  # reduced first: exact angles for long signals
    scale = 1.0 / n if inverse else 1.0
    return (np.cos(theta) * scale).astype(np.float32), (np.sin(theta) * scale).astype(np.float32)


def _dft_last(imp, re, im, n_in: int, n: int, k: int, inverse: bool):
    """(real, imaginary) of the DFT along the last axis of `re` (and `im`, None for a real
    signal), n_in samples taken, length n, k frequencies."""
    cos, sin = _matrices(n_in, n, k, inverse)
    c, s = imp.b.const(cos.T.copy()), imp.b.const(sin.T.copy())  # [n_in, k]
    sign = 1.0 if inverse else -1.0  # e^{∓iθ}: the forward transform rotates backwards
    yr = re @ c
    yi = (re @ s) * sign
    if im is not None:
        yr = yr - (im @ s) * sign
        yi = yi + im @ c
    return yr, yi


def dft(imp, node, ins, attrs):
    x = imp.t(ins[0])
    rank = x.ndim
    if x.shape[-1] not in (1, 2):
        raise imp.fail(node, f"input of shape {x.shape}: the last axis must be 1 (real) or 2 "
                             "(complex)")
    axis = _signal_axis(imp, node, ins, attrs, rank)
    inverse, onesided = bool(attrs.get("inverse", 0)), bool(attrs.get("onesided", 0))
    if onesided and inverse:
        raise imp.fail(node, "an inverse one-sided DFT is not supported")
    n_sig = x.shape[axis]
    n = int(imp.ints(node, ins[1], "dft_length")[0]) if len(ins) > 1 and ins[1] is not None \
        else n_sig
    if n < 1:
        raise imp.fail(node, f"dft_length {n}")
    k = n // 2 + 1 if onesided else n
    perm = [a for a in range(rank - 1) if a != axis] + [axis]
    parts = [imp.b.op("slice", x, start=(0,) * (rank - 1) + (j,), stop=x.shape[:-1] + (j + 1,),
                      step=(1,) * rank).reshape(*x.shape[:-1]).transpose(*perm)
             for j in range(x.shape[-1])]
    n_in = min(n, n_sig)  # samples beyond dft_length are dropped, missing ones are zeros
    if n_in < n_sig:
        parts = [imp.b.op("slice", p, start=(0,) * p.ndim, stop=p.shape[:-1] + (n_in,),
                          step=(1,) * p.ndim) for p in parts]
    re, im = parts[0], (parts[1] if len(parts) > 1 else None)
    yr, yi = _dft_last(imp, re, im, n_in, n, k, inverse)
    back = [perm.index(a) for a in range(rank - 1)]
    yr, yi = yr.transpose(*back), yi.transpose(*back)
    return imp.b.concat(yr.reshape(*yr.shape, 1), yi.reshape(*yi.shape, 1), axis=rank - 1)


def stft(imp, node, ins, attrs):
    """Frames of `frame_length` every `frame_step` samples, windowed, each transformed:
    [batch, frames, frequencies, 2]."""
    x = imp.t(ins[0])
    if x.ndim != 3 or x.shape[-1] not in (1, 2):
        raise imp.fail(node, f"signal of shape {x.shape}: expected [batch, samples, 1 or 2]")
    step = int(imp.ints(node, ins[1], "frame_step")[0])
    window = ins[2] if len(ins) > 2 else None
    if len(ins) > 3 and ins[3] is not None:
        length = int(imp.ints(node, ins[3], "frame_length")[0])
    elif window is not None:
        length = int((window.shape if not isinstance(window, np.ndarray) else window.shape)[0])
    else:
        raise imp.fail(node, "needs a window or a frame_length")
    b, samples, parts = x.shape
    frames = (samples - length) // step + 1
    if frames < 1 or step < 1:
        raise imp.fail(node, f"{samples} samples, frame_length {length}, frame_step {step}")
    onesided = bool(attrs.get("onesided", 1))
    k = length // 2 + 1 if onesided else length
    pos = (np.arange(frames)[:, None] * step + np.arange(length)[None, :]).astype(np.int64)
    cols = []
    for j in range(parts):
        sig = imp.b.op("slice", x, start=(0, 0, j), stop=(b, samples, j + 1),
                       step=(1, 1, 1)).reshape(b, samples)
        framed = imp.b.take(sig, imp.b.const(pos), axis=1)  # [b, frames, length]
        if window is not None:
            framed = framed * imp.t(window)
        cols.append(framed)
    yr, yi = _dft_last(imp, cols[0], cols[1] if parts == 2 else None, length, length, k, False)
    return imp.b.concat(yr.reshape(b, frames, k, 1), yi.reshape(b, frames, k, 1), axis=3)


HANDLERS = {"DFT": dft, "STFT": stft}

__all__ = ["HANDLERS"]
