"""ONNX import of further activations, reductions and normalizations (`graphc.onnx_import`
registers these handlers): each written with graphc primitives and composites, so autodiff and
every backend take them as they are. Handlers take the importer, the ONNX node, its inputs
(graphc Tensors, or numpy arrays for constants) and its attributes."""

from __future__ import annotations


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
    """ReduceMin, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSumExp (ReduceMean, ReduceSum
    and ReduceMax are the importer's own): sums and maxima of transformed values; log-sum-exp
    subtracts the maximum first, as softmax does."""
    x = _x(imp, ins)
    axes = _axes(imp, node, ins, attrs, x.ndim)
    keep = bool(attrs.get("keepdims", 1))
    if not axes:
        return x
    op = node.op_type
    if op == "ReduceMin":
        return -((-x).max(axes, keepdims=keep))
    if op == "ReduceL1":
        return imp.b.abs(x).sum(axes, keepdims=keep)
    if op == "ReduceSumSquare":
        return (x * x).sum(axes, keepdims=keep)
    if op == "ReduceL2":
        return imp.b.sqrt((x * x).sum(axes, keepdims=keep))
    m = x.max(axes, keepdims=True)
    out = imp.b.log(imp.b.exp(x - m).sum(axes, keepdims=True)) + m
    return out if keep else out.reshape(*[d for i, d in enumerate(x.shape) if i not in axes])


def arg_extreme(imp, node, ins, attrs):
    """ArgMax and ArgMin (the first extreme, as ONNX's default select_last_index=0)."""
    if attrs.get("select_last_index", 0):
        raise imp.fail(node, "select_last_index=1 is not supported")
    x = _x(imp, ins)
    axis = int(attrs.get("axis", 0))
    axis = axis + x.ndim if axis < 0 else axis
    src = x if node.op_type == "ArgMax" else -x
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


HANDLERS = {
    "PRelu": prelu, "Selu": selu, "Celu": celu, "HardSwish": hard_swish, "Softsign": softsign,
    "Mish": mish, "ThresholdedRelu": thresholded_relu, "Sign": sign,
    **{op: reduce for op in ("ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
                             "ReduceLogSumExp")},
    "ArgMax": arg_extreme, "ArgMin": arg_extreme, "Tile": tile,
    "InstanceNormalization": instance_norm, "GroupNormalization": group_norm,
}

__all__ = ["HANDLERS"]
