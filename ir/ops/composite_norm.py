"""Neural-network composites, part 2: normalization and losses. batch_norm, layer_norm,
softmax, log_softmax, cross_entropy, mse, weight_decay.

As in `composite_nn.py` (which registers this module), every op has a numpy reference written
directly from its definition (in float64, via `np.logaddexp.reduce`, `np.var`...) and a
`decompose_*` rule built from primitives and other composites.

Softmax and log_softmax subtract the maximum along the axis before exponentiating. The
decomposition uses a plain `reduce_max`, with no stop-gradient: softmax(x - c) = softmax(x) for
any c, so the gradient that flows through the max cancels exactly (it sums to zero over the axis).
"""

from __future__ import annotations

import numpy as np

from ..errors import AttributeSchemaError, DTypeError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import INT_DTYPES, TensorType
from .composite_nn import channel_shape, count_of, require_float
from .shapes import norm_axis, same_dtype

REDUCTIONS = ("mean", "sum", "none")

# -- batch_norm ------------------------------------------------------------------------------------


def stat_axes(rank: int) -> tuple[int, ...]:
    """Batch-norm statistics are taken over every axis but the channel axis 1."""
    return (0,) + tuple(range(2, rank))


def infer_batch_norm(types, attrs):
    x = types[0]
    dt = same_dtype(types)
    require_float(x, "batch_norm input")
    if x.rank < 2:
        raise ShapeError(f"batch_norm needs x [N, C] or [N, C, *spatial], got {x}")
    c = x.shape[1]
    for what, t in zip(("gamma", "beta", "running_mean", "running_var"), types[1:], strict=True):
        if t.shape != (c,):
            raise ShapeError(f"batch_norm {what} must be [{c}] for x {x}, got {t}")
    if not attrs["training"]:
        return x
    n = count_of(x.shape, stat_axes(x.rank))
    if n < 2:
        # as torch: the unbiased running variance needs at least two values per channel
        raise ShapeError(f"batch_norm in training needs more than one value per channel, x {x}")
    stat = TensorType((c,), dt)
    return x, stat, stat


def ref_batch_norm(inputs, attrs):
    x, gamma, beta, rmean, rvar = (a.astype(np.float64) for a in inputs)
    axes = stat_axes(x.ndim)
    cs = channel_shape(x.ndim, -1)
    if attrs["training"]:
        mu, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mu, var = rmean, rvar
    y = gamma.reshape(cs) * (x - mu.reshape(cs)) / np.sqrt(attrs["eps"] + var.reshape(cs)) \
        + beta.reshape(cs)
    dt = inputs[0].dtype
    if not attrs["training"]:
        return y.astype(dt)
    m = attrs["momentum"]
    new_mean = (1 - m) * rmean + m * mu
    new_var = (1 - m) * rvar + m * x.var(axis=axes, ddof=1)
    return y.astype(dt), new_mean.astype(dt), new_var.astype(dt)


def decompose_batch_norm(b, inputs, attrs):
    x, gamma, beta, rmean, rvar = inputs
    eps, m = attrs["eps"], attrs["momentum"]
    cs = channel_shape(x.ndim, x.shape[1])

    def per_channel(t):  # [C] -> broadcastable against x
        return t if x.ndim == 2 else t.reshape(cs)

    if not attrs["training"]:
        scale = gamma * b.rsqrt(rvar + eps)
        return (x - per_channel(rmean)) * per_channel(scale) + per_channel(beta)
    axes = stat_axes(x.ndim)
    n = count_of(x.shape, axes)
    mu = b.mean(x, axes=axes)
    xc = x - per_channel(mu)
    var = b.mean(xc * xc, axes=axes)  # biased: the one used to normalize
    scale = gamma * b.rsqrt(var + eps)
    y = xc * per_channel(scale) + per_channel(beta)
    new_mean = rmean * (1.0 - m) + mu * m
    new_var = rvar * (1.0 - m) + var * (m * n / (n - 1))  # unbiased, as torch's running_var
    return y, new_mean, new_var


# -- layer_norm ------------------------------------------------------------------------------------


def infer_layer_norm(types, attrs):
    x = types[0]
    require_float(x, "layer_norm input")
    same_dtype(types)
    if x.rank == 0:
        raise ShapeError(f"layer_norm needs at least one axis to normalize, got {x}")
    axis = attrs["axis"]
    inner = x.shape[axis:]
    if count_of(x.shape, tuple(range(axis, x.rank))) == 0:
        raise ShapeError(f"layer_norm over axes {axis}.. of {x} has no elements")
    for what, t in zip(("gamma", "beta"), types[1:], strict=False):
        if t.shape != inner:
            raise ShapeError(f"layer_norm {what} must be the normalized shape "
                             f"[{', '.join(map(str, inner))}] of x {x} (axis {axis}), got {t}")
    return x


def ref_layer_norm(inputs, attrs):
    x = inputs[0].astype(np.float64)
    axes = tuple(range(attrs["axis"], x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True)
                                                          + attrs["eps"])
    for k, p in enumerate(inputs[1:]):
        y = y * p if k == 0 else y + p
    return y.astype(inputs[0].dtype)


def decompose_layer_norm(b, inputs, attrs):
    x, *affine = inputs
    axes = tuple(range(attrs["axis"], x.ndim))
    xc = x - b.mean(x, axes=axes, keepdims=True)
    y = xc * b.rsqrt(b.mean(xc * xc, axes=axes, keepdims=True) + attrs["eps"])
    if affine:
        y = y * affine[0]
    return y + affine[1] if len(affine) > 1 else y


# -- softmax / log_softmax -------------------------------------------------------------------------


def normalize_axis(types, attrs):
    return {**attrs, "axis": norm_axis(attrs["axis"], types[0].rank)}


def infer_softmax(types, attrs):
    (x,) = types
    require_float(x, "softmax input")
    if x.rank == 0 or x.shape[attrs["axis"]] == 0:
        raise ShapeError(f"softmax over axis {attrs['axis']} of {x} has no elements")
    return x


def log_softmax_reference(x: np.ndarray, axis: int) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=axis, keepdims=True)


def ref_softmax(inputs, attrs):
    (x,) = inputs
    e = np.exp(x.astype(np.float64) - x.max(axis=attrs["axis"], keepdims=True))
    return (e / e.sum(axis=attrs["axis"], keepdims=True)).astype(x.dtype)


def ref_log_softmax(inputs, attrs):
    (x,) = inputs
    return log_softmax_reference(x.astype(np.float64), attrs["axis"]).astype(x.dtype)


def decompose_softmax(b, inputs, attrs):
    (x,) = inputs
    axes = (attrs["axis"],)
    e = b.exp(x - b.reduce_max(x, axes=axes, keepdims=True))
    # One reciprocal per row and a product per element (a division per element costs a
    # divider's throughput; within an ulp of the quotient).
    return e * b.reciprocal(b.reduce_sum(e, axes=axes, keepdims=True))


def decompose_log_softmax(b, inputs, attrs):
    (x,) = inputs
    axes = (attrs["axis"],)
    z = x - b.reduce_max(x, axes=axes, keepdims=True)
    return z - b.log(b.reduce_sum(b.exp(z), axes=axes, keepdims=True))


# -- losses ----------------------------------------------------------------------------------------


def reduced_loss_type(per: TensorType, reduction: str) -> TensorType:
    if reduction == "mean" and per.size == 0:  # as `mean` itself says
        raise ShapeError(f"the mean loss over no elements ({per}) has no value")
    return per if reduction == "none" else per.with_shape(())


def reduce_loss_reference(per: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return np.asarray(per.mean())
    if reduction == "sum":
        return np.asarray(per.sum())
    return per


def reduce_loss(b, per, reduction: str):
    if reduction == "mean":
        return b.mean(per)
    if reduction == "sum":
        return b.reduce_sum(per)
    return per


def infer_cross_entropy(types, attrs):
    logits, target = types
    require_float(logits, "cross_entropy logits")
    if logits.rank < 2:
        raise ShapeError(f"cross_entropy logits must be [N, K] or [N, K, ...], got {logits}")
    if logits.shape[1] == 0:  # as its softmax says
        raise ShapeError(f"cross_entropy logits {logits} have no classes")
    per = logits.with_shape(logits.shape[:1] + logits.shape[2:])
    if target.dtype in INT_DTYPES:
        if target.shape != per.shape:
            raise ShapeError(f"cross_entropy labels for logits {logits} must have shape "
                             f"{per.shape}, got {target}")
    elif target.dtype == logits.dtype:
        if target.shape != logits.shape:
            raise ShapeError(f"cross_entropy probability targets must match logits {logits}, "
                             f"got {target}")
    else:
        raise DTypeError(f"cross_entropy target must be integer labels or {logits.dtype} "
                         f"probabilities, got {target}")
    return reduced_loss_type(per, attrs["reduction"])


def ref_cross_entropy(inputs, attrs):
    logits, target = inputs
    logp = log_softmax_reference(logits.astype(np.float64), 1)
    if target.dtype.kind in "iu":
        k = logits.shape[1]
        valid = (target >= 0) & (target < k)
        picked = np.take_along_axis(logp, np.expand_dims(np.where(valid, target, 0), 1), 1)
        per = np.where(valid, -picked.squeeze(1), 0.0)
    else:
        per = -(target * logp).sum(axis=1)
    return reduce_loss_reference(per, attrs["reduction"]).astype(logits.dtype)


def decompose_cross_entropy(b, inputs, attrs):
    logits, target = inputs
    logp = b.log_softmax(logits, axis=1)
    if target.dtype in INT_DTYPES:
        target = b.one_hot(target, depth=logits.shape[1], axis=1, dtype=logits.dtype)
    per = -b.reduce_sum(target * logp, axes=(1,))
    return reduce_loss(b, per, attrs["reduction"])


def infer_mse(types, attrs):
    pred, target = types
    require_float(pred, "mse prediction")
    same_dtype(types)
    if pred.shape != target.shape:
        raise ShapeError(f"mse prediction {pred} and target {target} differ in shape")
    return reduced_loss_type(pred, attrs["reduction"])


def ref_mse(inputs, attrs):
    pred, target = inputs
    per = np.square(pred.astype(np.float64) - target)
    return reduce_loss_reference(per, attrs["reduction"]).astype(pred.dtype)


def decompose_mse(b, inputs, attrs):
    pred, target = inputs
    d = pred - target
    return reduce_loss(b, d * d, attrs["reduction"])


def infer_weight_decay(types, attrs):
    dt = same_dtype(types)
    require_float(types[0], "weight_decay operand")
    if not np.isfinite(attrs["lam"]):
        raise AttributeSchemaError(f"weight_decay lam={attrs['lam']} must be finite")
    return TensorType((), dt)


def ref_weight_decay(inputs, attrs):
    total = sum(float(np.sum(np.square(w.astype(np.float64)))) for w in inputs)
    return np.asarray(attrs["lam"] * total, inputs[0].dtype)


def decompose_weight_decay(b, inputs, attrs):
    total = b.reduce_sum(inputs[0] * inputs[0])
    for w in inputs[1:]:
        total = total + b.reduce_sum(w * w)
    return total * attrs["lam"]


# -- registration ----------------------------------------------------------------------------------

_REDUCTION_ATTR = {"reduction": Attr("str", "mean", REDUCTIONS)}


def register_ops() -> None:
    register(
        OpDef("batch_norm", "composite_nn", 5, infer_batch_norm, ref_batch_norm,
              attrs={"training": Attr("bool"), "momentum": Attr("float", 0.1),
                     "eps": Attr("float", 1e-5)},
              decompose=decompose_batch_norm,
              doc="batch_norm(x, gamma, beta, running_mean, running_var){training, momentum=0.1,"
                  " eps=1e-5}: gamma (x - mu) / sqrt(eps + var) + beta per channel (axis 1). "
                  "training: batch statistics (biased variance), outputs (y, new_running_mean, "
                  "new_running_var) with new = (1 - momentum) old + momentum batch and the "
                  "unbiased batch variance, as torch; otherwise one output from running stats."),
        OpDef("layer_norm", "composite_nn", (1, 3), infer_layer_norm, ref_layer_norm,
              attrs={"axis": Attr("int", -1), "eps": Attr("float", 1e-5)},
              decompose=decompose_layer_norm, normalize=normalize_axis,
              doc="layer_norm(x[, gamma[, beta]]){axis=-1, eps=1e-5}: (x - mu) / sqrt(var + eps) "
                  "* gamma + beta, mu and the biased var over the axes from `axis` to the last; "
                  "gamma and beta have that normalized shape (torch's layer_norm, ONNX's "
                  "LayerNormalization)."),
        OpDef("softmax", "composite_nn", 1, infer_softmax, ref_softmax,
              attrs={"axis": Attr("int", -1)}, decompose=decompose_softmax,
              normalize=normalize_axis,
              doc="softmax(x){axis=-1}: exp(x - max) / sum exp(x - max) along axis."),
        OpDef("log_softmax", "composite_nn", 1, infer_softmax, ref_log_softmax,
              attrs={"axis": Attr("int", -1)}, decompose=decompose_log_softmax,
              normalize=normalize_axis,
              doc="log_softmax(x){axis=-1}: (x - max) - log sum exp(x - max) along axis."),
        OpDef("cross_entropy", "composite_nn", 2, infer_cross_entropy, ref_cross_entropy,
              attrs=_REDUCTION_ATTR, decompose=decompose_cross_entropy,
              doc="cross_entropy(logits, target){reduction=mean}: logits [N, K, ...]; target "
                  "integer labels [N, ...] (labels outside [0, K) contribute 0) or class "
                  "probabilities shaped like logits. -sum_k t_k log_softmax(logits)_k over axis "
                  "1, then mean/sum/none over the rest, as torch.nn.functional.cross_entropy."),
        OpDef("mse", "composite_nn", 2, infer_mse, ref_mse, attrs=_REDUCTION_ATTR,
              decompose=decompose_mse,
              doc="mse(pred, target){reduction=mean}: (pred - target)^2, then mean/sum/none."),
        OpDef("weight_decay", "composite_nn", (1, None), infer_weight_decay, ref_weight_decay,
              attrs={"lam": Attr("float")}, decompose=decompose_weight_decay,
              doc="weight_decay(*ws){lam}: lam * sum over all ws of sum w^2 (a scalar)."),
    )
