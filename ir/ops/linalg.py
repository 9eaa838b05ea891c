"""Linear-algebra primitives: `matmul` (batched, numpy broadcasting of batch dims) and `conv`
(N-d cross-correlation with stride, padding, dilation of both operands and groups).

Conv geometry, per spatial dim (the one formula every rule below is derived from):

    I   input size              Id = (I - 1) * lhs_dilation + 1     (zeros inserted between)
    P   = Id + lo + hi          (negative lo/hi crop)
    K   kernel size             Ke = (K - 1) * rhs_dilation + 1
    out = (P - Ke) // stride + 1
    y[o] = sum_k w[k] * xpad[o * stride + k * rhs_dilation]

Both gradients are convs again (the JAX/XLA construction, derived here from the formula above):
  - d/dx: the cotangent, dilated by `stride`, correlated with the spatially flipped kernel (O and
    C swapped per group), stride = x's lhs_dilation (which subsamples the dilated-input gradient
    back onto x's real elements).
  - d/dw: x (channels as batch) correlated with the cotangent as kernel, stride and rhs_dilation
    swapped, high padding chosen so the result has exactly the kernel's size. Groups move into
    the channel axis of x so that one grouped conv produces only the block-diagonal pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import AttributeSchemaError, DTypeError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import FLOAT_DTYPES, TensorType
from .shapes import broadcast_shapes, same_dtype, unbroadcast

# -- shared numeric helpers --------------------------------------------------------------------


def accumulate_dtype(dt: np.dtype) -> np.dtype:
    """The dtype a reference accumulates in: f16 (and bf16, stored as f32) sum in f32."""
    dt = np.dtype(dt)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt.kind in "iu":
        return np.dtype(np.int64)
    return dt


def pad_or_crop(x: np.ndarray, pairs: Sequence[tuple[int, int]], axes: Sequence[int],
                value: float = 0.0) -> np.ndarray:
    """Pad `x` along `axes` by (lo, hi) pairs with `value`; a negative lo/hi crops instead.

    Pads first, then crops: with (2, -2) on one element the crop removes padding and the
    element, which cropping first cannot express.
    """
    crop = [slice(None)] * x.ndim
    widths = [(0, 0)] * x.ndim
    for ax, (lo, hi) in zip(axes, pairs, strict=True):
        widths[ax] = (max(lo, 0), max(hi, 0))
        padded = x.shape[ax] + max(lo, 0) + max(hi, 0)
        crop[ax] = slice(max(-lo, 0), max(padded - max(-hi, 0), max(-lo, 0)))
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, mode="constant", constant_values=value)
    return x[tuple(crop)]


def dilate(x: np.ndarray, dilation: Sequence[int], axes: Sequence[int]) -> np.ndarray:
    """Insert `dilation - 1` zeros between neighbouring elements along each of `axes`."""
    if all(d == 1 for d in dilation):
        return x
    shape = list(x.shape)
    index = [slice(None)] * x.ndim
    for ax, d in zip(axes, dilation, strict=True):
        shape[ax] = (shape[ax] - 1) * d + 1 if shape[ax] else 0
        index[ax] = slice(None, None, d)
    out = np.zeros(shape, x.dtype)
    out[tuple(index)] = x
    return out


# -- matmul ------------------------------------------------------------------------------------


def infer_matmul(types, attrs):
    a, b = types
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul needs rank >= 2 operands, got {a.shape} and {b.shape}")
    dt = same_dtype(types)
    if dt == "bool":
        raise DTypeError("matmul of bool operands; cast them first")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"contracting dims differ: {a.shape} @ {b.shape} "
                         f"({a.shape[-1]} vs {b.shape[-2]})")
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ShapeError:
        raise ShapeError(f"batch dims of {a.shape} and {b.shape} do not broadcast") from None
    return TensorType(batch + (a.shape[-2], b.shape[-1]), dt)


def ref_matmul(inputs, attrs):
    a, b = inputs
    acc = accumulate_dtype(a.dtype)
    return np.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False)).astype(a.dtype)


def _swap_last(b, t):
    perm = list(range(t.ndim))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return b.op("transpose", t, perm=tuple(perm))


def vjp_matmul(b, ins, outs, cts, attrs):
    a, w = ins
    ct = cts[0]
    if ct is None or a.dtype not in FLOAT_DTYPES:
        return None, None
    ga = b.op("matmul", ct, _swap_last(b, w))
    gw = b.op("matmul", _swap_last(b, a), ct)
    return unbroadcast(b, ga, a.shape), unbroadcast(b, gw, w.shape)


# -- conv: attribute normalization ---------------------------------------------------------------


def _per_dim(value, n: int, name: str, default: int) -> tuple[int, ...]:
    """An int or a tuple of n ints (None -> default everywhere), each >= 1."""
    if value is None:
        return (default,) * n
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    if (not isinstance(value, tuple) or len(value) != n
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise AttributeSchemaError(f"{name}={value!r} must be an int or {n} ints "
                                   f"(one per spatial dim)")
    if any(v < 1 for v in value):
        raise AttributeSchemaError(f"{name}={value!r} must be >= 1")
    return value


def conv_out_size(size: int, kernel: int, stride: int, lo: int, hi: int, lhs_dilation: int,
                  rhs_dilation: int) -> int:
    """Output length of a conv along one spatial dim (may be <= 0 for impossible geometry)."""
    dilated = (size - 1) * lhs_dilation + 1 if size > 0 else 0
    eff_kernel = (kernel - 1) * rhs_dilation + 1
    span = dilated + lo + hi - eff_kernel
    return span // stride + 1 if span >= 0 else 0


def _same_padding(size: int, kernel: int, stride: int, lhs_dilation: int, rhs_dilation: int
                  ) -> tuple[int, int]:
    # TF/XLA SAME: out = ceil(dilated_in / stride); for stride 1 this is torch's padding='same'
    # (total = rhs_dilation * (k - 1), the extra element on the high side).
    dilated = (size - 1) * lhs_dilation + 1
    eff_kernel = (kernel - 1) * rhs_dilation + 1
    out = -(-dilated // stride)
    total = max((out - 1) * stride + eff_kernel - dilated, 0)
    return total // 2, total - total // 2


def _padding_pairs(padding, n: int) -> list[tuple[int, int]] | None:
    """User padding forms other than 'valid'/'same' as (lo, hi) pairs; None if malformed."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if padding is None:
        return [(0, 0)] * n
    if is_int(padding):
        return [(padding, padding)] * n
    if not isinstance(padding, tuple):
        return None
    if len(padding) == n and all(is_int(p) for p in padding):
        return [(p, p) for p in padding]
    if len(padding) == n and all(isinstance(p, tuple) and len(p) == 2
                                 and all(is_int(v) for v in p) for p in padding):
        return [tuple(p) for p in padding]
    if len(padding) == 2 * n and all(is_int(p) for p in padding):
        return [(padding[2 * i], padding[2 * i + 1]) for i in range(n)]
    return None


def normalize_conv(types, attrs):
    """Explicit per-dim tuples for stride, dilations and flattened (lo, hi) padding pairs."""
    x, w = types
    if x.rank < 3:
        raise ShapeError(f"conv input {x.shape} must be [N, C, *spatial] (rank >= 3)")
    n = x.rank - 2
    if w.rank != x.rank:
        raise ShapeError(f"conv input {x.shape} and kernel {w.shape} differ in rank")
    out = dict(attrs)
    stride = _per_dim(attrs["stride"], n, "stride", 1)
    lhs = _per_dim(attrs["lhs_dilation"], n, "lhs_dilation", 1)
    rhs = _per_dim(attrs["rhs_dilation"], n, "rhs_dilation", 1)
    padding = attrs["padding"]
    if padding in ("valid", "VALID"):
        pairs = [(0, 0)] * n
    elif padding in ("same", "SAME"):
        pairs = [_same_padding(x.shape[2 + i], w.shape[2 + i], stride[i], lhs[i], rhs[i])
                 for i in range(n)]
    else:
        pairs = _padding_pairs(padding, n)
        if pairs is None:
            raise AttributeSchemaError(
                f"padding={padding!r} must be 'valid', 'same', an int, {n} ints, {n} (lo, hi) "
                f"pairs or {2 * n} ints (lo0, hi0, ...)")
    out.update(stride=stride, lhs_dilation=lhs, rhs_dilation=rhs,
               padding=tuple(v for p in pairs for v in p))
    return out


def _pairs(flat: Sequence[int]) -> list[tuple[int, int]]:
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]


# -- conv: type rule and reference -------------------------------------------------------------


def infer_conv(types, attrs):
    x, w = types
    dt = same_dtype(types)
    if dt == "bool":
        raise DTypeError("conv of bool operands; cast them first")
    groups = attrs["groups"]
    where = f"input {x.shape}, kernel {w.shape}"
    if groups < 1:
        raise ShapeError(f"groups={groups} must be >= 1 ({where})")
    n_batch, chans = x.shape[:2]
    out_ch, in_per_group = w.shape[:2]
    if chans != groups * in_per_group:
        raise ShapeError(f"input channels {chans} != groups ({groups}) * kernel input channels "
                         f"({in_per_group}) ({where})")
    if out_ch % groups:
        raise ShapeError(f"kernel output channels {out_ch} not divisible by groups={groups} "
                         f"({where})")
    if any(k < 1 for k in w.shape[2:]):
        raise ShapeError(f"empty kernel window ({where})")
    spatial = []
    for i, (lo, hi) in enumerate(_pairs(attrs["padding"])):
        size = conv_out_size(x.shape[2 + i], w.shape[2 + i], attrs["stride"][i], lo, hi,
                             attrs["lhs_dilation"][i], attrs["rhs_dilation"][i])
        if size <= 0:
            raise ShapeError(f"non-positive output size along spatial dim {i} ({where}, "
                             f"padding ({lo}, {hi}), stride {attrs['stride'][i]}, dilations "
                             f"{attrs['lhs_dilation'][i]}/{attrs['rhs_dilation'][i]})")
        spatial.append(size)
    return TensorType((n_batch, out_ch) + tuple(spatial), dt)


def ref_conv(inputs, attrs):
    """Dilate, pad/crop, im2col with stride tricks, then one matmul per group."""
    x, w = inputs
    acc = accumulate_dtype(x.dtype)
    groups = attrs["groups"]
    n = x.ndim - 2
    axes = tuple(range(2, x.ndim))
    kernel = w.shape[2:]
    rhs = attrs["rhs_dilation"]
    xp = pad_or_crop(dilate(x.astype(acc), attrs["lhs_dilation"], axes),
                     _pairs(attrs["padding"]), axes)
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, rhs, strict=True))
    win = sliding_window_view(xp, eff, axis=axes)  # [N, C, *positions, *eff]
    win = win[(slice(None),) * 2 + tuple(slice(None, None, s) for s in attrs["stride"])
              + tuple(slice(None, None, d) for d in rhs)]
    batch, chans = x.shape[:2]
    out_sp = win.shape[2:2 + n]
    cg, og = chans // groups, w.shape[0] // groups
    win = win.reshape((batch, groups, cg) + out_sp + kernel)
    # -> [G, N, *out, Cg, *k] so each group is one [rows, Cg*prod(k)] @ [Cg*prod(k), Og]
    perm = (1, 0) + tuple(range(3, 3 + n)) + (2,) + tuple(range(3 + n, 3 + 2 * n))
    rows = int(batch * np.prod(out_sp, dtype=np.int64))
    cols = win.transpose(perm).reshape(groups, rows, cg * int(np.prod(kernel, dtype=np.int64)))
    wk = w.astype(acc).reshape(groups, og, -1)
    res = np.matmul(cols, wk.transpose(0, 2, 1))  # [G, rows, Og]
    res = res.reshape((groups, batch) + out_sp + (og,))
    res = res.transpose((1, 0, 2 + n) + tuple(range(2, 2 + n)))
    return res.reshape((batch, groups * og) + out_sp).astype(x.dtype)


# -- conv: VJP -------------------------------------------------------------------------------------


def _flip_spatial(b, w):
    """Reverse every spatial axis of [N, C, *spatial] (a kernel, a feature map): an index map
    wherever it is read (a `take` of descending indices was a kernel of its own, 2.4 ms a call
    for 512 x 512 x 3 x 3 weights in a training loop)."""
    axes = tuple(ax for ax in range(2, w.ndim) if w.shape[ax] > 1)
    return b.op("reverse", w, axes=axes) if axes else w


def _swap01(b, t):
    return b.op("transpose", t, perm=(1, 0) + tuple(range(2, t.ndim)))


def conv_grad_input(b, x, w, ct, attrs):
    """d<ct, conv(x, w)>/dx as a conv of the stride-dilated cotangent with the flipped kernel."""
    groups = attrs["groups"]
    n = x.ndim - 2
    out_ch, cg = w.shape[:2]
    og = out_ch // groups
    kernel = w.shape[2:]
    wf = _flip_spatial(b, w)
    if groups == 1:
        wt = _swap01(b, wf)  # [C, O, *k]
    else:  # [G*Og, Cg, *k] -> [G, Og, Cg, *k] -> [G, Cg, Og, *k] -> [G*Cg, Og, *k]
        wt = b.op("reshape", wf, shape=(groups, og, cg) + kernel)
        wt = b.op("transpose", wt, perm=(0, 2, 1) + tuple(range(3, 3 + n)))
        wt = b.op("reshape", wt, shape=(groups * cg, og) + kernel)
    padding = []
    for i, (lo, _hi) in enumerate(_pairs(attrs["padding"])):
        dilated_in = (x.shape[2 + i] - 1) * attrs["lhs_dilation"][i] + 1
        eff = (kernel[i] - 1) * attrs["rhs_dilation"][i] + 1
        dilated_out = (ct.shape[2 + i] - 1) * attrs["stride"][i] + 1
        low = eff - 1 - lo
        padding += [low, dilated_in + eff - 1 - dilated_out - low]
    # stride = x's lhs_dilation keeps only the gradient at x's real (non-inserted) elements
    return b.op("conv", ct, wt, stride=attrs["lhs_dilation"], padding=tuple(padding),
                lhs_dilation=attrs["stride"], rhs_dilation=attrs["rhs_dilation"], groups=groups)


def conv_grad_weight(b, x, w, ct, attrs):
    """d<ct, conv(x, w)>/dw as a conv of x (channels as batch) with the cotangent as kernel."""
    groups = attrs["groups"]
    n = x.ndim - 2
    unit = all(d == 1 for key in ("stride", "lhs_dilation", "rhs_dilation") for d in attrs[key])
    if groups == 1 and unit and ct.shape[0] * math.prod(ct.shape[2:]) <= DIRECT_GRAD_POINTS:
        return _conv_grad_weight_direct(b, x, w, ct, attrs)
    batch, chans = x.shape[:2]
    cg = chans // groups
    if groups == 1:
        xt = _swap01(b, x)  # [C, N, *in]
    else:  # [N, G*Cg, *in] -> [Cg, G*N, *in]: group g's batch becomes input channels g*N + n
        xt = b.op("reshape", x, shape=(batch, groups, cg) + x.shape[2:])
        xt = b.op("transpose", xt, perm=(2, 1, 0) + tuple(range(3, 3 + n)))
        xt = b.op("reshape", xt, shape=(cg, groups * batch) + x.shape[2:])
    ctt = _swap01(b, ct)  # [O, N, *out]
    padding = []
    for i, (lo, _hi) in enumerate(_pairs(attrs["padding"])):
        dilated_in = (x.shape[2 + i] - 1) * attrs["lhs_dilation"][i] + 1
        eff = (w.shape[2 + i] - 1) * attrs["rhs_dilation"][i] + 1
        # high padding so the padded input spans exactly what the forward windows touched
        padding += [lo, (ct.shape[2 + i] - 1) * attrs["stride"][i] + eff - dilated_in - lo]
    gw = b.op("conv", xt, ctt, stride=attrs["rhs_dilation"], padding=tuple(padding),
              lhs_dilation=attrs["lhs_dilation"], rhs_dilation=attrs["stride"], groups=groups)
    return _swap01(b, gw)  # [Cg, O, *k] -> [O, Cg, *k]


# The weight gradient takes the direct form where each weight sums at most this many products
# (images x output positions): there the pass it saves over the weights is worth a few per cent
# of the step. Over larger maps the gradient's convolution dominates, and in the direct form it
# measured up to 4 % slower (5x5 kernels over 32x32 maps; a 3-channel input, whose channel
# blocks no longer divide evenly, 9 %).
DIRECT_GRAD_POINTS = 4096


def _conv_grad_weight_direct(b, x, w, ct, attrs):
    """The weight gradient of a convolution with unit strides and dilations, one group, as a
    conv that yields the [O, C, *k] layout itself: dw[o, c, t] = sum over n and q of
    x[n, c, q] ct[n, o, q - t + lo], which, both operands reversed along their spatial axes,
    is a correlation of the cotangent (images as channels, O as batch) with the input (C as
    output channels). A consumer of dw (an optimizer's update) then reads it where the conv
    writes it and can be the conv's epilogue; the transposed form [C, O, *k] left the update
    to a kernel of its own reading the gradient across its layout (about 2 ms a step for
    512 x 512 x 3 x 3 weights, one thread)."""
    padding = []
    for i, (lo, _hi) in enumerate(_pairs(attrs["padding"])):
        k = w.shape[2 + i]
        padding += [lo + x.shape[2 + i] - ct.shape[2 + i], k - 1 - lo]
    ind = _flip_spatial(b, _swap01(b, ct))  # [O, N, *out] reversed
    ker = _flip_spatial(b, _swap01(b, x))   # [C, N, *in] reversed
    return b.op("conv", ind, ker, stride=(1,) * (x.ndim - 2), padding=tuple(padding),
                lhs_dilation=(1,) * (x.ndim - 2), rhs_dilation=(1,) * (x.ndim - 2), groups=1)


def vjp_conv(b, ins, outs, cts, attrs):
    x, w = ins
    ct = cts[0]
    if ct is None or x.dtype not in FLOAT_DTYPES:
        return None, None
    if x.type.size == 0 or w.type.size == 0:  # the output is padding alone: zeros
        return b.zeros_like(x), b.zeros_like(w)
    return conv_grad_input(b, x, w, ct, attrs), conv_grad_weight(b, x, w, ct, attrs)


def register_ops() -> None:
    register(
        OpDef("matmul", "linalg", 2, infer_matmul, ref_matmul, vjp=vjp_matmul,
              doc="[..., M, K] @ [..., K, N] with numpy-broadcast batch dims."),
        OpDef("conv", "linalg", 2, infer_conv, ref_conv, vjp=vjp_conv, normalize=normalize_conv,
              attrs={"stride": Attr("any", None), "padding": Attr("any", None),
                     "lhs_dilation": Attr("any", None), "rhs_dilation": Attr("any", None),
                     "groups": Attr("int", 1)},
              doc="N-d cross-correlation: x [N, C, *spatial], w [O, C/groups, *kernel] -> "
                  "[N, O, *out]. Stored attributes are explicit per-dim tuples; padding is "
                  "flattened (lo, hi) pairs (negative crops). User forms: stride/dilations an "
                  "int, padding 'valid' | 'same' | int | per-dim ints | pairs."),
    )
