"""Neural-network composites, part 1: layers. mean, dense, conv1d/conv2d, max/avg pooling,
global_avg_pool, flatten, residual_block, one_hot, dropout.

Each op declares, side by side, its attribute schema, type rule, a direct numpy reference and a
`decompose_*` rule built from primitives (and other composites, expanded recursively). The
reference is written independently of the decomposition (sliding windows, einsum, np.mean...), so
testing one against the other is a real check of the decomposition.

Layout conventions follow torch: activations NCW / NCHW, conv weights [O, C/groups, *kernel],
dense weights [in, out] (so dense is `x @ w + b`, the transpose of torch's Linear weight).

The normalization and loss composites (batch_norm, softmax, log_softmax, cross_entropy, mse,
weight_decay) live in `composite_norm.py`; `register_ops` here registers both.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import AttributeSchemaError, DTypeError, ShapeError
from ..registry import Attr, OpDef, check_attrs, get_op, register
from ..types import DTYPES, FLOAT_DTYPES, INT_DTYPES, TensorType
from .shapes import norm_axes, norm_axis, same_dtype

ACTIVATIONS = ("none", "relu", "sigmoid", "tanh", "softplus", "gelu")
GELU_TANH_C = math.sqrt(2.0 / math.pi)  # tanh form: tanh(sqrt(2/pi) (x + 0.044715 x^3))

# -- shared checks ---------------------------------------------------------------------------------


def require_float(t: TensorType, what: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{what} must be floating-point, got {t}")


def require_rank(t: TensorType, rank: int, what: str) -> None:
    if t.rank != rank:
        raise ShapeError(f"{what} must have rank {rank}, got {t}")


def count_of(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    return math.prod(shape[a] for a in axes)


def channel_shape(rank: int, channels: int) -> tuple[int, ...]:
    """[C] viewed as [1, C, 1, ...] so it broadcasts against an [N, C, *spatial] tensor."""
    return (1, channels) + (1,) * (rank - 2)


def act_reference(x: np.ndarray, activation: str) -> np.ndarray:
    """The activations of `dense`/`residual_block`, computed directly in numpy."""
    if activation == "relu":
        return np.maximum(x, 0)
    if activation == "sigmoid":
        return 0.5 * (1 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + exp(-x))
    if activation == "tanh":
        return np.tanh(x)
    if activation == "softplus":
        return np.logaddexp(0, x)
    if activation == "gelu":
        return gelu_reference(x, "none")
    return x


def gelu_reference(x: np.ndarray, approximate: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if approximate == "tanh":  # x (1 + tanh u) / 2 = x sigmoid(2u), without the cancellation
        z = 2.0 * GELU_TANH_C * (x + 0.044715 * x ** 3)
        e = np.exp(-np.abs(z))
        return x * np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    from .elementwise import UNARY_FNS

    return 0.5 * x * (1.0 + UNARY_FNS["erf"](x / math.sqrt(2.0)))


def infer_gelu(types, attrs):
    require_float(types[0], "gelu input")
    return types[0]


def ref_gelu(inputs, attrs):
    return gelu_reference(inputs[0], attrs["approximate"]).astype(inputs[0].dtype)


def decompose_gelu(b, inputs, attrs):
    (x,) = inputs
    if attrs["approximate"] == "tanh":
        # (1 + tanh u) / 2 = sigmoid(2u): no cancellation where tanh u is near -1
        return x * b.sigmoid((x + x * x * x * 0.044715) * (2.0 * GELU_TANH_C))
    return x * 0.5 * (b.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


def apply_activation(b, x, activation: str):
    return x if activation == "none" else b.op(activation, x)


# -- mean ------------------------------------------------------------------------------------------


def normalize_mean(types, attrs):
    return {**attrs, "axes": norm_axes(attrs["axes"], types[0].rank)}


def infer_mean(types, attrs):
    (t,) = types
    require_float(t, "mean operand")
    axes, keep = attrs["axes"], attrs["keepdims"]
    if any(t.shape[a] == 0 for a in axes):
        raise ShapeError(f"mean over an empty axis of {t}")
    shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape)) if keep else tuple(
        d for i, d in enumerate(t.shape) if i not in axes)
    return t.with_shape(shape)


def ref_mean(inputs, attrs):
    (x,) = inputs
    return np.mean(x, axis=attrs["axes"], keepdims=attrs["keepdims"], dtype=np.float64
                   ).astype(x.dtype)


def decompose_mean(b, inputs, attrs):
    (x,) = inputs
    s = b.reduce_sum(x, axes=attrs["axes"], keepdims=attrs["keepdims"])
    return s / float(count_of(x.shape, attrs["axes"]))


# -- dense -----------------------------------------------------------------------------------------


def infer_dense(types, attrs):
    x, w = types[:2]
    dt = same_dtype(types)
    require_float(x, "dense input")
    if x.rank < 1 or w.rank != 2:
        raise ShapeError(f"dense needs x [..., in] and w [in, out], got {x} and {w}")
    if x.shape[-1] != w.shape[0]:
        raise ShapeError(f"x {x} has {x.shape[-1]} features but w {w} expects "
                         f"{w.shape[0]}")
    if len(types) == 3 and types[2].shape != (w.shape[1],):
        raise ShapeError(f"dense bias must be [{w.shape[1]}] for w {w}, got {types[2]}")
    return TensorType(x.shape[:-1] + (w.shape[1],), dt)


def ref_dense(inputs, attrs):
    x, w = inputs[:2]
    y = np.tensordot(x, w, axes=([-1], [0]))
    if len(inputs) == 3:
        y = y + inputs[2]
    return act_reference(y, attrs["activation"]).astype(x.dtype)


def decompose_dense(b, inputs, attrs):
    x, w = inputs[:2]
    # matmul wants rank >= 2 on both sides: view a single feature vector as a [1, in] row
    x2 = x.reshape(1, x.shape[0]) if x.ndim == 1 else x
    y = x2 @ w
    if x.ndim == 1:
        y = y.reshape(w.shape[1])
    if len(inputs) == 3:
        y = y + inputs[2]
    return apply_activation(b, y, attrs["activation"])


# -- conv1d / conv2d -------------------------------------------------------------------------------


def make_normalize_conv(rank: int):
    """Canonical conv attributes: the `conv` primitive's own normalization, renamed."""

    def normalize_convnd(types, attrs):
        x, w = types[:2]
        require_rank(x, rank + 2, f"conv{rank}d input")
        require_rank(w, rank + 2, f"conv{rank}d weight")
        conv = get_op("conv")
        prim = check_attrs(conv, {"stride": attrs["stride"], "padding": attrs["padding"],
                                  "rhs_dilation": attrs["dilation"], "groups": attrs["groups"]},
                           f"conv{rank}d")
        if conv.normalize is not None:
            prim = conv.normalize(list(types[:2]), prim)
        return {**attrs, "stride": tuple(prim["stride"]), "padding": tuple(prim["padding"]),
                "dilation": tuple(prim["rhs_dilation"])}

    return normalize_convnd


def conv_out_size(n: int, k: int, stride: int, lo: int, hi: int, dilation: int) -> int:
    return (n + lo + hi - dilation * (k - 1) - 1) // stride + 1


def infer_convnd(types, attrs):
    x, w = types[:2]
    dt = same_dtype(types)
    require_float(x, "conv input")
    g = attrs["groups"]
    n, c, o = x.shape[0], x.shape[1], w.shape[0]
    if g < 1 or c % g or o % g:
        raise ShapeError(f"groups={g} must divide input channels of {x} and output channels "
                         f"of {w}")
    if w.shape[1] * g != c:
        raise ShapeError(f"weight {w} expects {w.shape[1] * g} input channels "
                         f"(groups={g}), input {x} has {c}")
    if len(types) == 3 and types[2].shape != (o,):
        raise ShapeError(f"conv bias must be [{o}] for weight {w}, got {types[2]}")
    pads = attrs["padding"]
    if any(p < 0 for p in pads):
        raise ShapeError(f"conv padding {pads} must be non-negative")
    if any(k < 1 for k in w.shape[2:]):  # as the `conv` primitive says
        raise ShapeError(f"conv weight {w} has an empty kernel window")
    dims = zip(x.shape[2:], w.shape[2:], attrs["stride"], attrs["dilation"], strict=True)
    out = tuple(conv_out_size(d, k, s, pads[2 * i], pads[2 * i + 1], dl)
                for i, (d, k, s, dl) in enumerate(dims))
    if any(d < 1 for d in out):
        raise ShapeError(f"conv of {x} with kernel {w} (padding {pads}, dilation "
                         f"{attrs['dilation']}) has an empty output {out}")
    return TensorType((n, o) + out, dt)


def conv_reference(x: np.ndarray, w: np.ndarray, stride, pads, dilation, groups: int
                   ) -> np.ndarray:
    """Direct N-d grouped cross-correlation: one einsum per kernel offset."""
    r = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[2 * i], pads[2 * i + 1]) for i in range(r)])
    n, c = x.shape[:2]
    o, k = w.shape[0], w.shape[2:]
    out_sp = [(xp.shape[2 + i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(r)]
    xg = xp.reshape(n, groups, c // groups, *xp.shape[2:])
    wg = w.reshape(groups, o // groups, c // groups, *k)
    out = np.zeros((n, groups, o // groups, *out_sp), np.float64)
    for offs in np.ndindex(*k):
        window = tuple(slice(f * d, f * d + s * (m - 1) + 1, s)
                       for f, d, s, m in zip(offs, dilation, stride, out_sp, strict=True))
        patch = xg[(slice(None),) * 3 + window]
        out += np.einsum("ngc...,goc->ngo...", patch, wg[(slice(None),) * 3 + offs])
    return out.reshape(n, o, *out_sp)


def ref_convnd(inputs, attrs):
    x, w = inputs[:2]
    y = conv_reference(x, w, attrs["stride"], attrs["padding"], attrs["dilation"],
                       attrs["groups"])
    if len(inputs) == 3:
        y = y + inputs[2].reshape(channel_shape(y.ndim, -1))
    return y.astype(x.dtype)


def decompose_convnd(b, inputs, attrs):
    x, w = inputs[:2]
    y = b.conv(x, w, stride=attrs["stride"], padding=attrs["padding"],
               rhs_dilation=attrs["dilation"], groups=attrs["groups"])
    if len(inputs) == 3:
        y = y + inputs[2].reshape(channel_shape(y.ndim, y.shape[1]))
    return y


# -- pooling ---------------------------------------------------------------------------------------


def _spatial_ints(value, rank: int, what: str, op: str) -> tuple[int, ...]:
    vals = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    if not (isinstance(vals, tuple) and len(vals) == rank
            and all(isinstance(v, int) and not isinstance(v, bool) for v in vals)):
        raise AttributeSchemaError(f"{op} {what}={value!r} must be an int or {rank} ints")
    return vals


def make_normalize_pool(rank: int, op: str):
    """kernel/stride/padding as one int per spatial axis; stride defaults to the kernel."""

    def normalize_pool(types, attrs):
        require_rank(types[0], rank + 2, f"{op} input")
        kernel = _spatial_ints(attrs["kernel"], rank, "kernel", op)
        stride = kernel if attrs["stride"] is None else _spatial_ints(
            attrs["stride"], rank, "stride", op)
        padding = _spatial_ints(attrs["padding"], rank, "padding", op)
        if min(kernel) < 1 or min(stride) < 1:
            raise AttributeSchemaError(f"{op} kernel {kernel} and stride {stride} must be >= 1")
        if any(p < 0 or 2 * p > k for p, k in zip(padding, kernel, strict=True)):
            # as torch: a window made only of padding would have no value
            raise AttributeSchemaError(f"{op} padding {padding} must be in [0, kernel/2] for "
                                       f"kernel {kernel}")
        return {**attrs, "kernel": kernel, "stride": stride, "padding": padding}

    return normalize_pool


def infer_pool(types, attrs):
    (x,) = types
    require_float(x, "pooling input")
    out = tuple((d + 2 * p - k) // s + 1 for d, k, s, p in
                zip(x.shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"], strict=True))
    if any(d < 1 for d in out):
        raise ShapeError(f"pooling window {attrs['kernel']} (padding {attrs['padding']}) does "
                         f"not fit input {x}")
    return x.with_shape(x.shape[:2] + out)


def pool_windows(x: np.ndarray, attrs, fill: float) -> np.ndarray:
    """[N, C, *out, *kernel]: every pooling window of the padded input, stride applied."""
    pads = [(0, 0), (0, 0)] + [(p, p) for p in attrs["padding"]]
    xp = np.pad(x, pads, constant_values=fill)
    spatial = tuple(range(2, x.ndim))
    win = sliding_window_view(xp, attrs["kernel"], axis=spatial)
    return win[(slice(None),) * 2 + tuple(slice(None, None, s) for s in attrs["stride"])]


def ref_max_pool(inputs, attrs):
    (x,) = inputs
    win = pool_windows(x, attrs, -np.inf)
    return win.max(axis=tuple(range(x.ndim, win.ndim)))


def ref_avg_pool(inputs, attrs):
    (x,) = inputs
    axes = tuple(range(x.ndim, 2 * x.ndim - 2))
    total = pool_windows(x.astype(np.float64), attrs, 0.0).sum(axis=axes)
    if attrs["count_include_pad"]:
        count = float(math.prod(attrs["kernel"]))
    else:
        count = pool_windows(np.ones(x.shape), attrs, 0.0).sum(axis=axes)
    return (total / count).astype(x.dtype)


def reduce_window_attrs(attrs) -> dict:
    """Pooling attributes as `reduce_window` over all axes of [N, C, *spatial]."""
    pads = (0, 0, 0, 0) + tuple(q for p in attrs["padding"] for q in (p, p))
    return {"window": (1, 1) + attrs["kernel"], "strides": (1, 1) + attrs["stride"],
            "padding": pads}


def decompose_max_pool(b, inputs, attrs):
    return b.reduce_window(inputs[0], kind="max", **reduce_window_attrs(attrs))


def decompose_avg_pool(b, inputs, attrs):
    (x,) = inputs
    rw = reduce_window_attrs(attrs)
    total = b.reduce_window(x, kind="sum", **rw)
    if attrs["count_include_pad"]:
        return total / float(math.prod(attrs["kernel"]))
    # how many real (unpadded) elements each window covers: the same window sum over ones
    count = b.reduce_window(b.ones_like(x), kind="sum", **rw)
    return total / count


def infer_global_avg_pool(types, attrs):
    (x,) = types
    require_float(x, "global_avg_pool input")
    if x.rank < 3 or 0 in x.shape[2:]:
        raise ShapeError(f"global_avg_pool needs [N, C, *spatial] with spatial dims, got {x}")
    return x.with_shape(x.shape[:2])


def ref_global_avg_pool(inputs, attrs):
    (x,) = inputs
    flat = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
    return (flat.sum(axis=2) / flat.shape[2]).astype(x.dtype)


def decompose_global_avg_pool(b, inputs, attrs):
    (x,) = inputs
    return b.mean(x, axes=tuple(range(2, x.ndim)))


# -- flatten ---------------------------------------------------------------------------------------


def normalize_flatten(types, attrs):
    (t,) = types
    return {**attrs, "start_axis": norm_axis(attrs["start_axis"], t.rank)}


def infer_flatten(types, attrs):
    (t,) = types
    s = attrs["start_axis"]
    return t.with_shape(t.shape[:s] + (math.prod(t.shape[s:]),))


def ref_flatten(inputs, attrs):
    (x,) = inputs
    s = attrs["start_axis"]
    return x.reshape(x.shape[:s] + (int(np.prod(x.shape[s:])),))


def decompose_flatten(b, inputs, attrs):
    (x,) = inputs
    s = attrs["start_axis"]
    return x.reshape(x.shape[:s] + (math.prod(x.shape[s:]),))


# -- residual_block --------------------------------------------------------------------------------


def infer_residual_block(types, attrs):
    if len(types) == 4:
        raise ShapeError("residual_block takes both biases (z, W, V, bW, bV) or none")
    z, w, v = types[:3]
    dt = same_dtype(types)
    require_float(z, "residual_block input")
    require_rank(z, 2, "residual_block input z [N, D]")
    d = z.shape[1]
    if w.rank != 2 or v.rank != 2 or w.shape[0] != d or v.shape != (w.shape[1], d):
        raise ShapeError(f"residual_block needs W [{d}, H] and V [H, {d}] for z {z}, got "
                         f"W {w} and V {v}")
    if len(types) == 5 and (types[3].shape != (w.shape[1],) or types[4].shape != (d,)):
        raise ShapeError(f"residual_block biases must be [{w.shape[1]}] and [{d}], got "
                         f"{types[3]} and {types[4]}")
    return TensorType(z.shape, dt)


def ref_residual_block(inputs, attrs):
    z, w, v = inputs[:3]
    bw, bv = inputs[3:] if len(inputs) == 5 else (0.0, 0.0)
    g = attrs["activation"]
    h = act_reference(np.einsum("nd,dh->nh", z, w) + bw, g)
    return act_reference(z + np.einsum("nh,hd->nd", h, v) + bv, g).astype(z.dtype)


def decompose_residual_block(b, inputs, attrs):
    z, w, v = inputs[:3]
    biases = inputs[3:]
    g = attrs["activation"]
    h = b.dense(z, w, *biases[:1], activation=g)
    f = b.dense(h, v, *biases[1:])
    return apply_activation(b, z + f, g)


# -- one_hot ---------------------------------------------------------------------------------------


def one_hot_axis(idx: TensorType, attrs) -> int:
    return norm_axis(attrs["axis"], idx.rank + 1)


def normalize_one_hot(types, attrs):
    return {**attrs, "axis": one_hot_axis(types[0], attrs)}


def infer_one_hot(types, attrs):
    (idx,) = types
    if idx.dtype not in INT_DTYPES:
        raise DTypeError(f"one_hot indices must be i32 or i64, got {idx}")
    if attrs["depth"] < 1:
        raise AttributeSchemaError(f"one_hot depth={attrs['depth']} must be >= 1")
    a = attrs["axis"]
    return TensorType(idx.shape[:a] + (attrs["depth"],) + idx.shape[a:], attrs["dtype"])


def ref_one_hot(inputs, attrs):
    (idx,) = inputs
    depth, a = attrs["depth"], attrs["axis"]
    eye = np.eye(depth + 1, depth)  # row `depth` is all zeros: where out-of-range labels go
    cols = np.where((idx >= 0) & (idx < depth), idx, depth)
    return np.moveaxis(eye[cols], -1, a).astype(DTYPES[attrs["dtype"]])


def decompose_one_hot(b, inputs, attrs):
    (idx,) = inputs
    a = attrs["axis"]
    out_shape = idx.shape[:a] + (attrs["depth"],) + idx.shape[a:]
    positions = b.iota(shape=out_shape, axis=a, dtype=idx.dtype)
    labels = idx.reshape(idx.shape[:a] + (1,) + idx.shape[a:])
    return positions.eq(labels).astype(attrs["dtype"])


# -- dropout ---------------------------------------------------------------------------------------


def infer_dropout(types, attrs):
    x, seed = types
    require_float(x, "dropout input")
    if seed.dtype not in INT_DTYPES or seed.shape != ():
        raise DTypeError(f"dropout seed must be a scalar i32/i64 tensor, got {seed}")
    if not 0.0 <= attrs["rate"] <= 1.0:
        raise AttributeSchemaError(f"dropout rate={attrs['rate']} must be in [0, 1]")
    if not 0 <= attrs["stream"] < 2**32:
        raise AttributeSchemaError(f"dropout stream={attrs['stream']} must be in [0, 2**32)")
    return x


def dropout_scale(rate: float) -> float:
    # rate 1 drops everything; the mask is all false then, so the scale is never used
    return 1.0 / (1.0 - rate) if rate < 1.0 else 0.0


def ref_dropout(inputs, attrs):
    x, seed = inputs
    if not attrs["training"]:
        return x
    u = get_op("random_uniform").reference([seed], {"shape": x.shape, "stream": attrs["stream"]})
    keep = u >= np.float32(attrs["rate"])
    return np.where(keep, x * x.dtype.type(dropout_scale(attrs["rate"])), 0).astype(x.dtype)


def decompose_dropout(b, inputs, attrs):
    x, seed = inputs
    if not attrs["training"]:
        return x
    u = b.random_uniform(seed, shape=x.shape, stream=attrs["stream"])
    keep = u >= attrs["rate"]
    return b.select(keep, x * dropout_scale(attrs["rate"]), b.const(0, dtype=x.dtype))


# -- registration ----------------------------------------------------------------------------------

_CONV_ATTRS = {"stride": Attr("any", 1), "padding": Attr("any", 0), "dilation": Attr("any", 1),
               "groups": Attr("int", 1)}
_POOL_ATTRS = {"kernel": Attr("any"), "stride": Attr("any", None), "padding": Attr("any", 0)}
_AVG_ATTRS = {**_POOL_ATTRS, "count_include_pad": Attr("bool", True)}
_ACT_ATTR = {"activation": Attr("str", "none", ACTIVATIONS)}


def _conv_def(rank: int) -> OpDef:
    return OpDef(
        f"conv{rank}d", "composite_nn", (2, 3), infer_convnd, ref_convnd,
        attrs=_CONV_ATTRS, decompose=decompose_convnd, normalize=make_normalize_conv(rank),
        doc=f"conv{rank}d(x, w[, b]){{stride, padding, dilation, groups}}: torch-style "
            f"cross-correlation, x [N, C, *{rank} spatial], w [O, C/groups, *kernel], b [O]. "
            "stride/dilation: int or one per axis; padding: 'valid', 'same', an int or pairs, "
            "stored as flattened (lo, hi) pairs like the `conv` primitive.")


def _pool_defs(rank: int) -> list[OpDef]:
    norm_max = make_normalize_pool(rank, f"max_pool{rank}d")
    norm_avg = make_normalize_pool(rank, f"avg_pool{rank}d")
    return [
        OpDef(f"max_pool{rank}d", "composite_nn", 1, infer_pool, ref_max_pool,
              attrs=_POOL_ATTRS, decompose=decompose_max_pool, normalize=norm_max,
              doc=f"max_pool{rank}d(x){{kernel, stride=kernel, padding=0}}: x [N, C, *spatial]; "
                  "ints per spatial axis (an int is repeated); padding is symmetric, -inf."),
        OpDef(f"avg_pool{rank}d", "composite_nn", 1, infer_pool, ref_avg_pool,
              attrs=_AVG_ATTRS, decompose=decompose_avg_pool, normalize=norm_avg,
              doc=f"avg_pool{rank}d(x){{kernel, stride=kernel, padding=0, count_include_pad"
                  "=true}}: window mean; without count_include_pad the divisor counts only "
                  "unpadded elements (torch semantics)."),
    ]


def register_ops() -> None:
    from . import composite_norm  # imports this module's shared checks, so imported late

    register(
        OpDef("mean", "composite_nn", 1, infer_mean, ref_mean,
              attrs={"axes": Attr("axes", None), "keepdims": Attr("bool", False)},
              decompose=decompose_mean, normalize=normalize_mean,
              doc="mean(x){axes=all, keepdims=false}: reduce_sum / element count."),
        OpDef("dense", "composite_nn", (2, 3), infer_dense, ref_dense, attrs=_ACT_ATTR,
              decompose=decompose_dense,
              doc="dense(x, w[, b]){activation}: act(x @ w + b), x [..., in], w [in, out], "
                  "b [out]; activation in none, relu, sigmoid, tanh, softplus, gelu."),
        OpDef("gelu", "composite_nn", 1, infer_gelu, ref_gelu,
              attrs={"approximate": Attr("str", "none", ("none", "tanh"))},
              decompose=decompose_gelu,
              doc="gelu(x){approximate=none}: x Phi(x) = x/2 (1 + erf(x/sqrt 2)); 'tanh': "
                  "x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as torch."),
        _conv_def(1), _conv_def(2), *_pool_defs(1), *_pool_defs(2),
        OpDef("global_avg_pool", "composite_nn", 1, infer_global_avg_pool, ref_global_avg_pool,
              decompose=decompose_global_avg_pool,
              doc="global_avg_pool(x): [N, C, *spatial] -> [N, C], the mean over spatial axes."),
        OpDef("flatten", "composite_nn", 1, infer_flatten, ref_flatten,
              attrs={"start_axis": Attr("int", 1)}, decompose=decompose_flatten,
              normalize=normalize_flatten,
              doc="flatten(x){start_axis=1}: merge axes start_axis.. into one."),
        OpDef("residual_block", "composite_nn", (3, 5), infer_residual_block,
              ref_residual_block, attrs={"activation": Attr("str", "relu", ACTIVATIONS)},
              decompose=decompose_residual_block,
              doc="residual_block(z, W, V[, bW, bV]){activation=relu}: g(z + g(z @ W + bW) @ V "
                  "+ bV), the seed's g(z + V g(W z)) with z [N, D], W [D, H], V [H, D]."),
        OpDef("one_hot", "composite_nn", 1, infer_one_hot, ref_one_hot,
              attrs={"depth": Attr("int"), "dtype": Attr("dtype", "f32"), "axis": Attr("int", -1)},
              decompose=decompose_one_hot, normalize=normalize_one_hot, differentiable=False,
              doc="one_hot(idx){depth, dtype=f32, axis=-1}: 1 where the new axis (inserted at "
                  "`axis`) equals idx; indices outside [0, depth) give all zeros."),
        OpDef("dropout", "composite_nn", 2, infer_dropout, ref_dropout,
              attrs={"rate": Attr("float", 0.5), "training": Attr("bool", True),
                     "stream": Attr("int", 0)},
              decompose=decompose_dropout,
              doc="dropout(x, seed){rate=0.5, training=true, stream=0}: inverted dropout: keep "
                  "where random_uniform(seed){x.shape, stream} >= rate, scaled by 1/(1-rate); "
                  "identity when not training. seed is a scalar integer tensor."),
    )
    composite_norm.register_ops()
