"""ONNX import of further activations, reductions and normalizations (`graphc.onnx_import`
registers these handlers): each written with graphc primitives and composites, so autodiff and
every backend take them as they are. Handlers take the importer, the ONNX node, its inputs
(graphc Tensors, or numpy arrays for constants) and its attributes."""

from __future__ import annotations

import numpy as np

from .onnx_layers import text


def _x(imp, ins):
    return imp.t(ins[0])


def prelu(imp, node, ins, attrs):
    """max(x, 0) + slope * min(x, 0), the slope broadcast against x (ONNX's unidirectional
    broadcasting: a per-channel slope comes as [C, 1, 1])."""
    x, slope = _x(imp, ins), imp.t(ins[1])
    return imp.b.op("maximum", x, 0.0) + slope * imp.b.op("minimum", x, 0.0)


def selu(imp, node, ins, attrs):
    x = _x(imp, ins)
    alpha = float(attrs.get("alpha", 1.67326319217681884765625))
    gamma = float(attrs.get("gamma", 1.05070102214813232421875))
    neg = (imp.b.exp(imp.b.op("minimum", x, 0.0)) - 1.0) * alpha
    return imp.b.select(imp.b.op("gt", x, 0.0), x, neg) * gamma


def celu(imp, node, ins, attrs):
    """max(0, x) + min(0, alpha (exp(x / alpha) - 1))."""
    x = _x(imp, ins)
    alpha = float(attrs.get("alpha", 1.0))
    neg = (imp.b.exp(imp.b.op("minimum", x, 0.0) * (1.0 / alpha)) - 1.0) * alpha
    return imp.b.op("maximum", x, 0.0) + neg


def hard_swish(imp, node, ins, attrs):
    """x * clip(x / 6 + 1/2, 0, 1) (MobileNetV3's activation)."""
    x = _x(imp, ins)
    gate = imp.b.op("maximum", imp.b.op("minimum", x * (1.0 / 6.0) + 0.5, 1.0), 0.0)
    return x * gate


def softsign(imp, node, ins, attrs):
    x = _x(imp, ins)
    return x / (imp.b.abs(x) + 1.0)


def mish(imp, node, ins, attrs):
    x = _x(imp, ins)
    return x * imp.b.tanh(imp.b.softplus(x))


def thresholded_relu(imp, node, ins, attrs):
    x = _x(imp, ins)
    return imp.b.select(imp.b.op("gt", x, float(attrs.get("alpha", 1.0))), x, x * 0.0)


def sign(imp, node, ins, attrs):
    return imp.b.op("sign", _x(imp, ins))


def _axes(imp, node, ins, attrs, rank: int) -> tuple[int, ...]:
    axes = attrs.get("axes")
    if axes is None and len(ins) > 1 and ins[1] is not None:
        axes = imp.ints(node, ins[1], "axes")
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return ()
        return tuple(range(rank))
    return tuple(sorted(a + rank if a < 0 else a for a in axes))


def reduce(imp, node, ins, attrs):
    """Every Reduce op: means, sums and maxima, and of transformed values (ReduceMin through
    the maximum of -x, L1, L2, SumSquare); log-sum-exp subtracts the maximum first, as softmax
    does."""
    x = _x(imp, ins)
    axes = _axes(imp, node, ins, attrs, x.ndim)
    keep = bool(attrs.get("keepdims", 1))
    if not axes:
        return x
    op = node.op_type
    plain = {"ReduceMean": x.mean, "ReduceSum": x.sum, "ReduceMax": x.max}.get(op)
    if plain is not None:
        return plain(axes, keepdims=keep)
    if op == "ReduceMin":
        return -((-x).max(axes, keepdims=keep))
    if op == "ReduceL1":
        return imp.b.abs(x).sum(axes, keepdims=keep)
    if op == "ReduceSumSquare":
        return (x * x).sum(axes, keepdims=keep)
    if op == "ReduceL2":
        return _norm_of_squares(imp, (x * x).sum(axes, keepdims=keep))
    m = x.max(axes, keepdims=True)
    out = imp.b.log(imp.b.exp(x - m).sum(axes, keepdims=True)) + m
    return out if keep else out.reshape(*[d for i, d in enumerate(x.shape) if i not in axes])


def _norm_of_squares(imp, s):
    """sqrt(s), whose gradient at s = 0 is 0 rather than 0 · inf = NaN: the norm of a zero
    vector (F.normalize of a padding embedding) has the subgradient 0, as torch gives it. The
    square root only ever sees positive values; the zeros are chosen around it."""
    zero = imp.b.const(0.0, dtype=s.dtype)
    positive = imp.b.op("gt", s, zero)
    safe = imp.b.op("select", positive, s, imp.b.const(1.0, dtype=s.dtype))
    return imp.b.op("select", positive, imp.b.sqrt(safe), zero)


def arg_extreme(imp, node, ins, attrs):
    """ArgMax and ArgMin: the first extreme, or with select_last_index=1 the last one, which is
    the first along the reversed axis counted back from its end."""
    x = _x(imp, ins)
    axis = int(attrs.get("axis", 0))
    axis = axis + x.ndim if axis < 0 else axis
    src = x if node.op_type == "ArgMax" else -x
    if attrs.get("select_last_index", 0):
        first = imp.b.op("argmax", imp.b.op("reverse", src, axes=(axis,)), axis=axis)
        idx = imp.b.const(x.shape[axis] - 1, dtype="i64") - first
    else:
        idx = imp.b.op("argmax", src, axis=axis)
    if attrs.get("keepdims", 1):
        idx = idx.reshape(*x.shape[:axis], 1, *x.shape[axis + 1:])
    return idx


def tile(imp, node, ins, attrs):
    """Tile as broadcast along a new axis before each repeated one, then a reshape."""
    x = _x(imp, ins)
    reps = imp.ints(node, ins[1], "repeats")
    if len(reps) != x.ndim or min(reps, default=1) < 0:
        raise imp.fail(node, f"repeats {reps} for a rank-{x.ndim} input")
    grown, shape = [], []
    for d, r in zip(x.shape, reps, strict=True):
        grown += [1, d]
        shape += [r, d]
    y = imp.b.broadcast_to(x.reshape(*grown), tuple(shape))
    return y.reshape(*[d * r for d, r in zip(x.shape, reps, strict=True)])


def _normalize(imp, x, groups: int, eps: float):
    """x [N, C, *spatial] normalized over each of `groups` channel groups and the spatial
    axes (biased variance), as [N, C, *spatial]."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    return imp.b.layer_norm(g, axis=2, eps=eps).reshape(*x.shape)


def instance_norm(imp, node, ins, attrs):
    x, scale, bias = (imp.t(v) for v in ins[:3])
    if x.ndim < 3:
        raise imp.fail(node, f"InstanceNormalization needs [N, C, *spatial], got {x.shape}")
    c = x.shape[1]
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    y = _normalize(imp, x, c, float(attrs.get("epsilon", 1e-5)))
    return y * scale.reshape(*per_channel) + bias.reshape(*per_channel)


def group_norm(imp, node, ins, attrs):
    """GroupNormalization (opset 21: scale and bias per channel)."""
    x, scale, bias = (imp.t(v) for v in ins[:3])
    groups = int(attrs["num_groups"])
    if x.ndim < 3 or groups < 1 or x.shape[1] % groups:
        raise imp.fail(node, f"{groups} groups for an input of shape {x.shape}")
    c = x.shape[1]
    if scale.shape != (c,):
        raise imp.fail(node, f"scale of shape {scale.shape}: graphc imports opset 21's "
                             f"per-channel scale and bias ([{c}])")
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    y = _normalize(imp, x, groups, float(attrs.get("epsilon", 1e-5)))
    return y * scale.reshape(*per_channel) + bias.reshape(*per_channel)


def _source_coord(o: int, n_in: int, n_out: int, scale: float, ctm: str) -> float:
    """Where output o samples the input, in float32 as ONNX Runtime computes it (3 / 0.6f is
    exactly 5 there, 4.9999998 in float64: a different nearest pixel)."""
    f, o32, half = np.float32, np.float32(o), np.float32(0.5)
    if ctm == "half_pixel":
        c = (o32 + half) / f(scale) - half
    elif ctm == "pytorch_half_pixel":
        c = (o32 + half) / f(scale) - half if n_out > 1 else f(0.0)
    elif ctm == "align_corners":
        c = o32 * f(n_in - 1) / f(n_out - 1) if n_out > 1 else f(0.0)
    elif ctm == "tf_half_pixel_for_nn":
        c = (o32 + half) / f(scale)
    else:  # asymmetric
        c = o32 / f(scale)
    return float(c)


def _nearest(x: float, mode: str) -> int:
    if mode == "floor":
        return int(np.floor(x))
    if mode == "ceil":
        return int(np.ceil(x))
    half = x - np.floor(x) == 0.5
    if mode == "round_prefer_ceil":
        return int(np.floor(x + 0.5))
    return int(np.ceil(x - 0.5)) if half else int(np.round(x))  # round_prefer_floor


def keys_cubic(d, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at distances |d| (0 from 2 on) for the coefficient a
    (ONNX's cubic_coeff_a, -0.75 by default as in OpenCV; -0.5 is the classic Catmull-Rom)."""
    d = np.abs(np.asarray(d, np.float64))
    near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def cubic_weights(t: float, a: float) -> np.ndarray:
    """Weights of the pixels at -1, 0, 1, 2 from floor(c), for the fraction t = c - floor(c)."""
    return keys_cubic([t + 1, t, 1 - t, 2 - t], a)


def _antialias_weights(c: float, scale: float, mode: str, a: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(source indices, weights) of an antialiased linear or cubic sample at c: the filter
    stretched by 1/scale when downsampling (scale < 1), its taps normalized to sum to 1, over
    the nearest integers to c (ties to the smaller), as ONNX's reference takes them."""
    s = min(scale, 1.0)
    frac = c - np.floor(c)
    ratio = 1.0 if frac == 0 else frac  # in (0, 1]: the pixel left of c is taps' origin
    reach = 1 if mode == "linear" else 2  # the filter's half-width before stretching
    start = int(np.floor(-reach / s) + 1)
    d = (np.arange(start, 2 - start) - ratio) * s
    w = np.clip(1 - np.abs(d), 0, 1) if mode == "linear" else keys_cubic(d, a)
    w = w / w.sum()
    n = len(w)
    taps = sorted(sorted(range(-n, n + 1), key=lambda k: (abs(frac - k), k))[:n])
    return int(np.floor(c)) + np.asarray(taps), w


def resize_matrix(n_in: int, n_out: int, scale: float, mode: str, ctm: str,
                  nearest_mode: str, cubic_a: float = -0.75,
                  exclude_outside: bool = False, antialias: bool = False) -> np.ndarray:
    """[n_out, n_in] weights of one axis: output o = sum_i M[o, i] x[i] (ONNX's Resize for
    nearest, linear and cubic modes). Linear clamps the source coordinate to the input; cubic
    takes four pixels around it, those outside the input replaced by the edge pixel, or with
    exclude_outside dropped and the remaining weights scaled to sum to 1. With `antialias`,
    a downsampling linear or cubic filter widens by 1/scale (`_antialias_weights`)."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        c = _source_coord(o, n_in, n_out, scale, ctm)
        if antialias and mode != "nearest":
            idx, w = _antialias_weights(c, scale, mode, cubic_a)
            if exclude_outside:
                w = np.where((idx >= 0) & (idx < n_in), w, 0.0)
                w = w / w.sum()
            np.add.at(m[o], np.clip(idx, 0, n_in - 1), w)
            continue
        if mode == "nearest":
            m[o, min(max(_nearest(c, nearest_mode), 0), n_in - 1)] = 1.0
            continue
        if mode == "cubic":
            i0 = int(np.floor(c))
            w = cubic_weights(c - i0, cubic_a)
            idx = np.arange(i0 - 1, i0 + 3)
            if exclude_outside:
                w = np.where((idx >= 0) & (idx < n_in), w, 0.0)
                w = w / w.sum()
            for i, wi in zip(np.clip(idx, 0, n_in - 1), w, strict=True):
                m[o, i] += wi
            continue
        c = min(max(c, 0.0), n_in - 1.0)
        i0 = int(np.floor(c))
        i1, w = min(i0 + 1, n_in - 1), c - i0
        m[o, i0] += 1.0 - w
        m[o, i1] += w
    return m


def _along(imp, x, axis: int, m: np.ndarray):
    """Apply the [out, in] matrix m along `axis` of x: a repeat where m is one (each input
    element copied k times in a row: broadcast and reshape, exact and cheap), else a matmul
    with the axis moved next to last."""
    n_out, n_in = m.shape
    k = n_out // n_in
    if n_out == k * n_in and np.array_equal(m, np.repeat(np.eye(n_in), k, axis=0)):
        grown = x.shape[:axis + 1] + (1,) + x.shape[axis + 1:]
        wide = x.shape[:axis + 1] + (k,) + x.shape[axis + 1:]
        y = imp.b.broadcast_to(x.reshape(*grown), wide)
        return y.reshape(*x.shape[:axis], n_out, *x.shape[axis + 1:])
    mat = imp.b.const(m.astype(np.float64 if x.dtype == "f64" else np.float32), x.dtype)
    last = x.ndim - 1
    if axis == last:
        return imp.b.matmul(x, mat.transpose(1, 0))
    perm = list(range(x.ndim))
    perm[axis], perm[last - 1] = perm[last - 1], perm[axis]
    moved = x if axis == last - 1 else x.transpose(*perm)
    y = imp.b.matmul(mat, moved)
    return y if axis == last - 1 else y.transpose(*perm)


def resize(imp, node, ins, attrs):
    """Resize (and the older Upsample), nearest, linear and cubic modes, by scales or sizes:
    one [out, in] matrix per resized axis, computed here (`resize_matrix`)."""
    x = _x(imp, ins)
    mode = text(attrs, "mode", "nearest")
    ctm = text(attrs, "coordinate_transformation_mode",
               "asymmetric" if node.op_type == "Upsample" else "half_pixel")
    nearest_mode = text(attrs, "nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear", "cubic"):
        raise imp.fail(node, f"mode {mode!r} (nearest, linear or cubic)")
    cubic = {"cubic_a": float(attrs.get("cubic_coeff_a", -0.75)),
             "exclude_outside": bool(attrs.get("exclude_outside", 0))}
    if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                   "tf_half_pixel_for_nn"):
        raise imp.fail(node, f"coordinate_transformation_mode {ctm!r}")
    cubic["antialias"] = bool(attrs.get("antialias", 0))
    policy = text(attrs, "keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise imp.fail(node, f"keep_aspect_ratio_policy {policy!r}")
    if node.op_type == "Upsample":
        scales_in = ins[1] if len(ins) > 1 else np.asarray(attrs.get("scales"), np.float32)
        sizes_in = None
    else:
        scales_in = ins[2] if len(ins) > 2 else (ins[1] if len(ins) == 2 else None)
        sizes_in = ins[3] if len(ins) > 3 else None
    axes = [a + x.ndim if a < 0 else a for a in attrs.get("axes", range(x.ndim))]
    given = [v for v in (scales_in, sizes_in) if v is not None]
    if any(imp.numbers(v) is None for v in given):
        raise imp.fail(node, "scales and sizes must be constants")
    scales_in, sizes_in = (imp.numbers(v) if v is not None else None
                           for v in (scales_in, sizes_in))
    if sizes_in is not None and sizes_in.size:
        sizes = [int(s) for s in sizes_in.reshape(-1)]
        scales = [s / x.shape[a] for a, s in zip(axes, sizes, strict=True)]
        if policy != "stretch":  # one scale for every axis, the sizes rounded half up
            one = (min if policy == "not_larger" else max)(scales)
            scales = [one] * len(axes)
            sizes = [int(one * x.shape[a] + 0.5) for a in axes]
    elif scales_in is not None and scales_in.size:
        scales = [float(s) for s in scales_in.reshape(-1)]
        sizes = [int(np.floor(x.shape[a] * s)) for a, s in zip(axes, scales, strict=True)]
    else:
        raise imp.fail(node, "needs scales or sizes")
    if len(sizes) != len(axes) or min(sizes) < 1:
        raise imp.fail(node, f"sizes {sizes} for axes {axes} of an input of shape {x.shape}")
    for a, n_out, scale in zip(axes, sizes, scales, strict=True):
        m = resize_matrix(x.shape[a], n_out, scale, mode, ctm, nearest_mode, **cubic)
        if n_out != x.shape[a] or not np.array_equal(m, np.eye(n_out)):
            x = _along(imp, x, a, m)
    return x


HANDLERS = {
    "Resize": resize, "Upsample": resize,
    "PRelu": prelu, "Selu": selu, "Celu": celu, "HardSwish": hard_swish, "Softsign": softsign,
    "Mish": mish, "ThresholdedRelu": thresholded_relu, "Sign": sign,
    **{op: reduce for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1",
                             "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp")},
    "ArgMax": arg_extreme, "ArgMin": arg_extreme, "Tile": tile,
    "InstanceNormalization": instance_norm, "GroupNormalization": group_norm,
}

__all__ = ["HANDLERS"]
