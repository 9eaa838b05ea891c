"""ONNX import of trigonometric and hyperbolic functions, logic and number tests, and small
normalizations and shape helpers (`graphc.onnx_import` registers these handlers), each written with
graphc primitives so autodiff and every backend take them as they are.

The inverse and hyperbolic functions are written for accuracy where the textbook forms
cancel: asin and acos through atan of well-conditioned ratios, sinh through tanh(x/2),
asinh/acosh/atanh through log1p."""

from __future__ import annotations

import math

import numpy as np

from . import onnx_tensor
from .onnx_more import _axes, _x


def both(imp, p, q):
    """p and q, for bool tensors (a select: graphc has no logical ops)."""
    return imp.b.select(p, q, p)


def either(imp, p, q):
    return imp.b.select(p, p, q)


def tan(imp, node, ins, attrs):
    x = _x(imp, ins)
    return x.sin() / x.cos()


def asin(imp, node, ins, attrs):
    """atan(x / √((1 − x)(1 + x))): the product keeps its accuracy near ±1 (±π/2 at ±1, NaN
    beyond)."""
    x = _x(imp, ins)
    return (x / ((1.0 - x) * (x + 1.0)).sqrt()).atan()


def acos(imp, node, ins, attrs):
    """2·atan(√((1 − x)/(1 + x))): accurate near 1, where acos is small (π at −1)."""
    x = _x(imp, ins)
    return ((1.0 - x) / (x + 1.0)).sqrt().atan() * 2.0


def _half_exp_squared(x):
    """(h·h/2, 1/(2·h·h)) with h = e^{|x|/2}: e^{|x|}/2 stays finite up to where sinh and
    cosh themselves overflow, past e^{|x|}'s own overflow."""
    h = (abs(x) * 0.5).exp()
    return h * (h * 0.5), (0.5 / h) / h


def sinh(imp, node, ins, attrs):
    """2t/(1 − t²) with t = tanh(x/2) below |x| = 1 (relative accuracy near 0, where
    (e^x − e^-x)/2 cancels), the exponentials above."""
    x = _x(imp, ins)
    t = (x * 0.5).tanh()
    small = t * 2.0 / (1.0 - t * t)
    up, down = _half_exp_squared(x)
    big = (up - down) * x.sign()
    return imp.b.select(abs(x) < 1.0, small, big)


def cosh(imp, node, ins, attrs):
    up, down = _half_exp_squared(_x(imp, ins))
    return up + down


def asinh(imp, node, ins, attrs):
    """sign(x)·log1p(|x| + x²/(1 + √(1 + x²))); from 2^28 on, where x² would lose the 1 (and
    later overflow), sign(x)·(log|x| + ln 2)."""
    x = _x(imp, ins)
    a = abs(x)
    small = (a + a * a / ((a * a + 1.0).sqrt() + 1.0)).log1p()
    big = a.log() + math.log(2.0)
    return imp.b.select(a < 2.0 ** 28, small, big) * x.sign()


def acosh(imp, node, ins, attrs):
    """log1p((x − 1) + √((x − 1)(x + 1))); from 2^28 on, log x + ln 2 (NaN below 1)."""
    x = _x(imp, ins)
    t = x - 1.0
    small = (t + (t * (x + 1.0)).sqrt()).log1p()
    return imp.b.select(x < 2.0 ** 28, small, x.log() + math.log(2.0))


def atanh(imp, node, ins, attrs):
    """½·log1p(2x/(1 − x)): no cancellation near 0."""
    x = _x(imp, ins)
    return (x * 2.0 / (1.0 - x)).log1p() * 0.5


def _bool(imp, v):
    t = imp.t(v)
    return t if t.dtype == "bool" else t.astype("bool")


def logic(imp, node, ins, attrs):
    """Not/And/Or/Xor on bool tensors, as selects and comparisons."""
    op = node.op_type
    a = _bool(imp, ins[0])
    if op == "Not":
        return a.eq(imp.b.const(False, dtype="bool"))
    c = _bool(imp, ins[1])
    if op == "Xor":
        return a.ne(c)
    return both(imp, a, c) if op == "And" else either(imp, a, c)


_BITWISE = {"BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
            "BitwiseNot": "bitwise_not"}


def bitwise(imp, node, ins, attrs):
    """BitwiseAnd/Or/Xor/Not on int32 and int64 tensors (graphc has no 8- or 16-bit or
    unsigned integers, which ONNX also allows)."""
    args = [imp.t(v) for v in ins]
    for a in args:
        if a.dtype not in ("i32", "i64"):
            raise imp.fail(node, f"{a.dtype} operands (int32 and int64 only)")
    return imp.b.op(_BITWISE[node.op_type], *args)


def is_nan(imp, node, ins, attrs):
    x = _x(imp, ins)
    return x.ne(x)


def is_inf(imp, node, ins, attrs):
    x = _x(imp, ins)
    pos, neg = int(attrs.get("detect_positive", 1)), int(attrs.get("detect_negative", 1))
    if pos and neg:
        return abs(x).eq(math.inf)
    if pos:
        return x.eq(math.inf)
    if neg:
        return x.eq(-math.inf)
    return imp.b.op("lt", x, -math.inf)  # detects nothing: false everywhere


def mod(imp, node, ins, attrs):
    """fmod=1: the sign of the dividend (C's fmod); fmod=0: the sign of the divisor (Python's
    %, numpy's mod). Integers: from floor division. Floats: |a| − q·|b| with q = floor(|a|/|b|)
    in f64, corrected by one |b| where the quotient's rounding left it out of [0, |b|): exact
    for f32 while |a/b| < 2^29 (q·|b| is then exact), for f64 within an ulp of |a|·2^-53."""
    a, c = imp.t(ins[0]), imp.t(ins[1])
    fmod = int(attrs.get("fmod", 0))
    sel = imp.b.select
    if a.dtype in ("i32", "i64"):
        r = a - imp.b.op("div", a, c) * c
        if fmod:  # C's sign: where floor and truncation differ (a nonzero remainder)
            r = sel(both(imp, r.ne(0), (a < 0).ne(c < 0)), r - c, r)
        return r
    dt = a.dtype
    wa, wc = (a.astype("f64"), c.astype("f64")) if dt == "f32" else (a, c)
    aa, ac = abs(wa), abs(wc)
    r = aa - (aa / ac).floor() * ac
    r = sel(r < 0.0, r + ac, sel(r >= ac, r - ac, r))
    r = sel(both(imp, ac.eq(math.inf), aa < math.inf), aa, r)  # fmod(a, ±inf) = a
    r = sel(wa < 0.0, -r, r)
    if not fmod:
        r = sel(both(imp, r.ne(0.0), (r < 0.0).ne(wc < 0.0)), r + wc, r)
    return r.astype(dt) if dt == "f32" else r


def swish(imp, node, ins, attrs):
    x = _x(imp, ins)
    return x * (x * float(attrs.get("alpha", 1.0))).sigmoid()


def swiglu(imp, node, ins, attrs):
    """Swish(A)·B (opset 28): the gated feed-forward of Llama-style models."""
    a, b = imp.t(ins[0]), imp.t(ins[1])
    if a.shape != b.shape:
        raise imp.fail(node, f"gate {a.shape} and value {b.shape} must have one shape")
    return a * (a * float(attrs.get("alpha", 1.0))).sigmoid() * b


def _product(imp, x, total):
    """Products of x's elements as sign · exp(Σ log|x|), 0 where a factor is 0, with `total`
    the summation (a reduction or a scan) applied alike to the logs, the negative factors
    and the zeros. Within a few ulp for moderate counts; the gradient is prod/x except at
    zeros (where it is 0)."""
    a = abs(x)
    zero = a.eq(0.0)
    mag = total(imp.b.select(zero, imp.b.ones_like(a), a).log()).exp()
    neg = total((x < 0.0).astype(x.dtype))
    signed = imp.b.select((neg * 0.5).floor().ne(neg * 0.5), -mag, mag)
    return imp.b.select(total(zero.astype(x.dtype)) > 0.5, signed * 0.0, signed)


def reduce_prod(imp, node, ins, attrs):
    x = _x(imp, ins)
    axes = _axes(imp, node, ins, attrs, x.ndim)
    if not axes:
        return x
    keep = bool(attrs.get("keepdims", 1))
    return _product(imp, x, lambda t: t.sum(axes, keepdims=keep))


def cumprod(imp, node, ins, attrs):
    """Three CumSums (of the logs, the negative factors and the zeros) with CumProd's axis,
    exclusive and reverse."""
    return _product(imp, _x(imp, ins),
                    lambda t: onnx_tensor.cumsum(imp, node, [t, ins[1]], attrs))


def shrink(imp, node, ins, attrs):
    x = _x(imp, ins)
    lambd, bias = float(attrs.get("lambd", 0.5)), float(attrs.get("bias", 0.0))
    zero = x * 0.0
    return imp.b.select(x < -lambd, x + bias, imp.b.select(x > lambd, x - bias, zero))


def rms_norm(imp, node, ins, attrs):
    """x / √(mean(x²) + ε) · scale over the axes from `axis` on (opset 23)."""
    x = _x(imp, ins)
    axis = int(attrs.get("axis", -1))
    axis = axis + x.ndim if axis < 0 else axis
    eps = float(attrs.get("epsilon", 1e-5))
    axes = tuple(range(axis, x.ndim))
    y = x * ((x * x).mean(axes, keepdims=True) + eps).rsqrt()
    return y * imp.t(ins[1])


def mean_variance_norm(imp, node, ins, attrs):
    """(x − mean) / √(variance + 1e-9) over `axes` (default: batch and spatial axes)."""
    x = _x(imp, ins)
    axes = tuple(a + x.ndim if a < 0 else a for a in attrs.get("axes", (0, 2, 3)))
    centered = x - x.mean(axes, keepdims=True)
    return centered * ((centered * centered).mean(axes, keepdims=True) + 1e-9).rsqrt()


def global_lp_pool(imp, node, ins, attrs):
    x = _x(imp, ins)
    p = float(attrs.get("p", 2))
    if p <= 0:  # the 1/p-th root of a sum of |x|^p
        raise imp.fail(node, f"p={attrs['p']} must be positive")
    s = (abs(x) ** p).sum(tuple(range(2, x.ndim)), keepdims=True)
    return s.sqrt() if p == 2 else s ** (1.0 / p)


def reduce_log_sum(imp, node, ins, attrs):
    x = _x(imp, ins)
    axes = _axes(imp, node, ins, attrs, x.ndim)
    if not axes:
        return x.log()
    return x.sum(axes, keepdims=bool(attrs.get("keepdims", 1))).log()


def lrn(imp, node, ins, attrs):
    """x / (bias + α/size·Σ x²)^β, the sum over `size` neighbouring channels (AlexNet's
    local response normalization): a windowed sum along the channel axis."""
    x = _x(imp, ins)
    size = int(attrs["size"])
    alpha, beta = float(attrs.get("alpha", 1e-4)), float(attrs.get("beta", 0.75))
    bias = float(attrs.get("bias", 1.0))
    rest = x.ndim - 2
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    s = imp.b.reduce_window(x * x, kind="sum", window=(1, size) + (1,) * rest,
                            strides=(1,) * x.ndim, padding=(0, 0, lo, hi) + (0, 0) * rest)
    return x / (s * (alpha / size) + bias) ** beta


def trilu(imp, node, ins, attrs):
    """The upper (default) or lower triangle from diagonal k of the last two axes: a select
    with a constant mask (zeros where ONNX zeroes, NaN and all)."""
    x = _x(imp, ins)
    k = int(imp.ints(node, ins[1], "k")[0]) if len(ins) > 1 and ins[1] is not None else 0
    n, m = x.shape[-2:]
    rows, cols = np.arange(n)[:, None], np.arange(m)[None, :]
    keep = cols - rows >= k if int(attrs.get("upper", 1)) else cols - rows <= k
    return imp.b.select(imp.b.const(keep), x, imp.b.zeros_like(x))


def size(imp, node, ins, attrs):
    return np.asarray(int(np.prod(ins[0].shape)), np.int64)


def cast_like(imp, node, ins, attrs):
    """A cast to the second input's element type (a computed tensor's, or a constant's)."""
    like = ins[1]
    target = like.dtype if not isinstance(like, np.ndarray) else {
        np.float32: "f32", np.float64: "f64", np.int32: "i32", np.int64: "i64",
        np.bool_: "bool"}.get(like.dtype.type)
    if target is None:
        raise imp.fail(node, f"a cast like a {like.dtype} constant")
    x = imp.t(ins[0])
    return x if x.dtype == target else x.astype(target)


def eye_like(imp, node, ins, attrs):
    shape = ins[0].shape
    if len(shape) != 2:
        raise imp.fail(node, f"EyeLike of a rank-{len(shape)} input {tuple(shape)}")
    eye = np.eye(*shape, k=int(attrs.get("k", 0)), dtype=np.float32)
    return imp.b.const(eye)


def det(imp, node, ins, attrs):
    """The determinant of each [n, n] matrix of x [..., n, n]: LU elimination with partial
    pivoting unrolled over the n columns. Each step picks the row of largest magnitude in the
    column (argmax), swaps it up by selects on row indices (exact: no arithmetic touches the
    moved values), and subtracts multiples of it from the rows below; the determinant is the
    product of the pivots, negated per swap. A zero pivot (a singular matrix) gives 0."""
    x = imp.t(ins[0])
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise imp.fail(node, f"input of shape {list(x.shape)}: [..., n, n] expected")
    n = x.shape[-1]
    batch = x.shape[:-2]
    sel = imp.b.select
    rows = imp.b.op("iota", shape=(*batch, n, 1), axis=len(batch), dtype="i64")
    a, result = x, None
    for k in range(n):
        col = imp.b.op("slice", a, start=(0,) * len(batch) + (k, k),
                       stop=(*batch, n, k + 1)).reshape(*batch, n - k)
        p = imp.b.op("argmax", abs(col), axis=len(batch), keepdims=False) + k  # [...]
        p = p.reshape(*batch, 1, 1)
        row_k = imp.b.op("slice", a, start=(0,) * len(batch) + (k, 0),
                         stop=(*batch, k + 1, n))
        row_p = (sel(rows.eq(p), a, imp.b.const(0.0, dtype=a.dtype))).sum(
            axes=len(batch), keepdims=True)  # exact: one nonzero term per column
        a = sel(rows.eq(k), row_p, sel(rows.eq(p), row_k, a))
        pivot = imp.b.op("slice", a, start=(0,) * len(batch) + (k, k),
                         stop=(*batch, k + 1, k + 1))
        signed = sel(p.ne(k), -pivot, pivot)  # [..., 1, 1]
        result = signed if result is None else result * signed
        if k + 1 < n:
            safe = sel(pivot.eq(0.0), imp.b.const(1.0, dtype=a.dtype), pivot)
            below = (rows > k).astype(a.dtype)
            m = imp.b.op("slice", a, start=(0,) * len(batch) + (0, k),
                         stop=(*batch, n, k + 1)) / safe * below
            a = a - m * row_p  # row k is row_p since the swap
    return result.reshape(*batch)


HANDLERS = {
    "Det": det,
    "Sin": lambda imp, node, ins, attrs: _x(imp, ins).sin(),
    "Cos": lambda imp, node, ins, attrs: _x(imp, ins).cos(),
    "Atan": lambda imp, node, ins, attrs: _x(imp, ins).atan(),
    "Asin": asin, "Acos": acos, "Tan": tan, "Sinh": sinh, "Cosh": cosh, "Asinh": asinh,
    "Acosh": acosh, "Atanh": atanh,
    "Not": logic, "And": logic, "Or": logic, "Xor": logic, "IsNaN": is_nan, "IsInf": is_inf,
    **{op: bitwise for op in _BITWISE},
    "Mod": mod, "Swish": swish, "SwiGLU": swiglu, "CumProd": cumprod,
    "ReduceProd": reduce_prod, "Shrink": shrink,
    "RMSNormalization": rms_norm,
    "MeanVarianceNormalization": mean_variance_norm, "GlobalLpPool": global_lp_pool,
    "ReduceLogSum": reduce_log_sum, "LRN": lrn, "Trilu": trilu, "Size": size,
    "CastLike": cast_like, "EyeLike": eye_like,
}

__all__ = ["HANDLERS"]
