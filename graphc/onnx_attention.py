"""ONNX import of the attention ops of opset 23: Attention (scaled dot-product attention with
grouped key/value heads, a boolean or additive mask, causal masking, softcap, a key/value cache)
and RotaryEmbedding (rotate-half or interleaved, partial rotary dimension, caches indexed by
position ids). `graphc.onnx_import` registers these handlers; both are written with graphc's
matmul, softmax and elementwise ops, so fusion, autodiff and every backend take them as they
are."""

from __future__ import annotations

import math

import numpy as np


def _heads(imp, node, x, heads: int | None, what: str):
    """A 3-D [B, S, H·D] input as [B, H, S, D] (H from the attribute), a 4-D one as it is."""
    if x.ndim == 4:
        return x, False
    if x.ndim != 3 or not heads or x.shape[2] % heads:
        raise imp.fail(node, f"{what} of shape {x.shape}: 4-D [B, H, S, D], or 3-D with "
                             f"{what.lower()}'s head count dividing its last axis")
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3), True


def _repeat_heads(x, groups: int):
    """[B, Hkv, S, D] -> [B, Hkv·groups, S, D], each key/value head serving `groups` query
    heads in turn (grouped-query attention)."""
    if groups == 1:
        return x
    b, h, s, d = x.shape
    wide = x.builder.broadcast_to(x.reshape(b, h, 1, s, d), (b, h, groups, s, d))
    return wide.reshape(b, h * groups, s, d)


def attention(imp, node, ins, attrs):
    q, k, v = (imp.t(ins[i]) for i in range(3))
    mask = ins[3] if len(ins) > 3 else None
    past_k = ins[4] if len(ins) > 4 else None
    past_v = ins[5] if len(ins) > 5 else None
    if len(ins) > 6 and ins[6] is not None:
        raise imp.fail(node, "nonpad_kv_seqlen is not supported")
    q, three_d = _heads(imp, node, q, attrs.get("q_num_heads"), "Q")
    k, _ = _heads(imp, node, k, attrs.get("kv_num_heads"), "K")
    v, _ = _heads(imp, node, v, attrs.get("kv_num_heads"), "V")
    past = 0
    if past_k is not None:
        past = imp.t(past_k).shape[2]
        k = imp.b.concat(imp.t(past_k), k, axis=2)
    if past_v is not None:
        v = imp.b.concat(imp.t(past_v), v, axis=2)
    present = [k, v]
    bq, hq, sq, d = q.shape
    _, hkv, skv, _ = k.shape
    if hq % hkv or v.shape[:3] != k.shape[:3] or k.shape[3] != d:
        raise imp.fail(node, f"Q {q.shape}, K {k.shape} and V {v.shape} do not fit together "
                             "(query heads a multiple of key/value heads, one head size)")
    kr, vr = _repeat_heads(k, hq // hkv), _repeat_heads(v, hq // hkv)
    scale = float(attrs.get("scale", 1.0 / math.sqrt(d)))
    s = (q @ kr.transpose(0, 1, 3, 2)) * scale
    softcap = float(attrs.get("softcap", 0.0))
    if softcap > 0:  # before the masks, so that masked scores stay -inf
        s = (s * (1.0 / softcap)).tanh() * softcap
    neg = imp.b.const(-math.inf, dtype=s.dtype)
    if mask is not None:  # boolean: True attends; otherwise added to the scores
        is_bool = isinstance(mask, np.ndarray) and mask.dtype == np.bool_
        t = imp.b.const(mask) if is_bool else imp.t(mask)
        s = imp.b.select(t, s, neg) if t.dtype == "bool" else s + t
    if int(attrs.get("is_causal", 0)):
        # query i sees keys up to its own position, counted after the cache (bottom-right
        # aligned with a cache, top-left without one, as ONNX's reference does)
        keep = np.arange(skv)[None, :] <= np.arange(sq)[:, None] + past
        s = imp.b.select(imp.b.const(keep), s, neg)
    if int(attrs.get("qk_matmul_output_mode", 0)):
        raise imp.fail(node, "qk_matmul_output_mode other than 0 is not supported")
    y = imp.b.softmax(s, axis=-1) @ vr
    if three_d:
        y = y.transpose(0, 2, 1, 3).reshape(bq, sq, hq * v.shape[3])
    outs = [y] + present
    return outs[:len(node.output)] + [None] * max(0, len(node.output) - 3)


def rotary_embedding(imp, node, ins, attrs):
    x = imp.t(ins[0])
    cos, sin = imp.t(ins[1]), imp.t(ins[2])
    pos = ins[3] if len(ins) > 3 else None
    three_d = x.ndim == 3
    if three_d:
        heads = int(attrs.get("num_heads", 0))
        x, _ = _heads(imp, node, x, heads, "X")
    elif x.ndim != 4:
        raise imp.fail(node, f"X of shape {x.shape}: 4-D [B, H, S, D] or 3-D [B, S, H·D]")
    b, h, s, d = x.shape
    rot = int(attrs.get("rotary_embedding_dim", 0)) or d
    if rot % 2 or rot > d:
        raise imp.fail(node, f"rotary_embedding_dim {rot} for heads of size {d}")
    if pos is not None:  # caches of [max position, rot/2], rows picked per token
        idx = pos if isinstance(pos, np.ndarray) else imp.t(pos)
        idx = imp.b.const(np.asarray(idx, np.int64)) if isinstance(idx, np.ndarray) else idx
        cos, sin = (imp.b.take(c, idx, axis=0) for c in (cos, sin))
    if cos.shape != (b, s, rot // 2):
        raise imp.fail(node, f"cos/sin caches give {cos.shape}, expected {(b, s, rot // 2)}")
    cos, sin = (c.reshape(b, 1, s, rot // 2) for c in (cos, sin))

    def part(start: int, stop: int, step: int = 1):
        return imp.b.op("slice", x, start=(0, 0, 0, start), stop=(b, h, s, stop),
                        step=(1, 1, 1, step))

    if int(attrs.get("interleaved", 0)):
        x0, x1 = part(0, rot, 2), part(1, rot, 2)
        r0, r1 = x0 * cos - x1 * sin, x1 * cos + x0 * sin
        # back to pairs: [.., rot/2, 2] flattened
        pairs = imp.b.concat(r0.reshape(b, h, s, rot // 2, 1), r1.reshape(b, h, s, rot // 2, 1),
                             axis=4)
        rotated = pairs.reshape(b, h, s, rot)
    else:
        x1, x2 = part(0, rot // 2), part(rot // 2, rot)
        rotated = imp.b.concat(x1 * cos - x2 * sin, x2 * cos + x1 * sin, axis=3)
    y = rotated if rot == d else imp.b.concat(rotated, part(rot, d), axis=3)
    if three_d:
        y = y.transpose(0, 2, 1, 3).reshape(b, s, h * d)
    return y


def tensor_scatter(imp, node, ins, attrs):
    """A KV-cache update (opset 24): `update`'s steps written into `past_cache` along `axis`
    from each batch item's write index (fed at run time; 0 without one), modulo the cache
    length in circular mode. Each cache position picks its update step, if any, by a `take`
    at positions computed from the write indices, and a `select` keeps the rest."""
    from .onnx_index import along_axis_positions
    from .onnx_math import both

    past, upd = imp.t(ins[0]), imp.t(ins[1])
    rank = past.ndim
    axis = int(attrs.get("axis", -2))
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank:
        raise imp.fail(node, f"axis {attrs.get('axis', -2)} of a rank-{rank} cache: the "
                             "sequence axis cannot be the batch axis")
    s_max, s_new = past.shape[axis], upd.shape[axis]
    others = [d for a, d in enumerate(past.shape) if a != axis]
    if upd.ndim != rank or s_new > s_max or \
            [d for a, d in enumerate(upd.shape) if a != axis] != others:
        raise imp.fail(node, f"update of shape {list(upd.shape)} for a cache of shape "
                             f"{list(past.shape)} along axis {axis}")
    mode = attrs.get("mode", b"linear")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("linear", "circular"):
        raise imp.fail(node, f"mode {mode!r}")
    i64 = lambda v: imp.b.const(v, dtype="i64")  # noqa: E731
    w = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros(past.shape[0], np.int64)
    w = imp.b.const(np.asarray(w, np.int64)) if isinstance(w, np.ndarray) else imp.t(w)
    w = (w if w.dtype == "i64" else w.astype("i64")).reshape(past.shape[0], *[1] * (rank - 1))
    k = imp.b.op("iota", shape=past.shape, axis=axis, dtype="i64") - w
    if mode == "circular":  # graphc's integer division floors: k mod s_max lands in [0, s_max)
        k = k - imp.b.op("div", k, i64(s_max)) * s_max
    inside = both(imp, k >= i64(0), k < i64(s_new))
    src = k.maximum(i64(0)).minimum(i64(s_new - 1))
    flat = along_axis_positions(imp, node, upd.shape, src, axis)
    return imp.b.select(inside, imp.b.take(upd.reshape(-1), flat, axis=0), past)


HANDLERS = {"Attention": attention, "RotaryEmbedding": rotary_embedding,
            "TensorScatter": tensor_scatter}

__all__ = ["HANDLERS"]
