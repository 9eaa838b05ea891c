"""ONNX random ops as graphc's counter-based generators: RandomUniform(Like), RandomNormal(Like),
Bernoulli and Multinomial.

Note: where the seed comes from
-------------------------------
graphc draws from `random_uniform(seed){shape, stream}` (Philox), so a random op needs a seed
tensor. A node with a `seed` attribute gets it as a constant: the same numbers on every call.
Nodes without one share an i64 `seed` input that the importer adds to the graph (the name
`train_step` feeds with its step counter), each node on a stream of its own, so the caller
decides when the noise changes. The numbers are not ONNX Runtime's (its generator is another
algorithm and moves on from run to run); only their distribution is the same.
"""

from __future__ import annotations

import numpy as np

SEED_INPUT = "seed"


def _seed(imp, node, attrs):
    """(seed tensor, stream) for one random node."""
    imp.random_streams = getattr(imp, "random_streams", 0) + 1
    if "seed" in attrs:
        return imp.b.const(np.int64(int(attrs["seed"]))), imp.random_streams
    seed = getattr(imp, "seed_input", None)
    if seed is None:
        if SEED_INPUT in imp.taken:
            raise imp.fail(node, f"the model already names a value {SEED_INPUT!r}; graphc "
                                 "needs that name for the seed input of its random ops")
        imp.taken.add(SEED_INPUT)
        seed = imp.seed_input = imp.b.input(SEED_INPUT, (), "i64")
    return seed, imp.random_streams


def _dtype(imp, node, attrs, like=None, integers: bool = False) -> str:
    """The output element type: the `dtype` attribute, else the input's (the *Like ops and
    Bernoulli), else float. Only Bernoulli's 0/1 may be integers or booleans."""
    from onnx import TensorProto

    if "dtype" not in attrs and like is not None:
        return like.dtype if like.dtype in ("f32", "f64") else "f32"
    code = int(attrs.get("dtype", TensorProto.FLOAT))
    kinds = {TensorProto.FLOAT: "f32", TensorProto.DOUBLE: "f64"}
    if integers:
        kinds.update({TensorProto.INT32: "i32", TensorProto.INT64: "i64",
                      TensorProto.BOOL: "bool"})
    if code not in kinds:
        raise imp.fail(node, f"random values of element type {code} are not supported")
    return kinds[code]


def _shape(imp, node, ins, attrs):
    if node.op_type.endswith("Like") or node.op_type == "Bernoulli":
        x = imp.t(ins[0])
        return tuple(x.shape), x
    return tuple(int(d) for d in attrs["shape"]), None


def random_uniform(imp, node, ins, attrs):
    shape, like = _shape(imp, node, ins, attrs)
    seed, stream = _seed(imp, node, attrs)
    u = imp.b.random_uniform(seed, shape=shape, stream=stream)
    dtype = _dtype(imp, node, attrs, like)
    u = u if dtype == "f32" else u.astype(dtype)
    low, high = float(attrs.get("low", 0.0)), float(attrs.get("high", 1.0))
    return u * (high - low) + low if (low, high) != (0.0, 1.0) else u


def random_normal(imp, node, ins, attrs):
    shape, like = _shape(imp, node, ins, attrs)
    seed, stream = _seed(imp, node, attrs)
    return imp.b.random_normal(seed, shape=shape, stream=stream,
                               mean=float(attrs.get("mean", 0.0)),
                               std=float(attrs.get("scale", 1.0)),
                               dtype=_dtype(imp, node, attrs, like))


def bernoulli(imp, node, ins, attrs):
    """1 where a uniform draw falls below the input's probability, else 0."""
    shape, p = _shape(imp, node, ins, attrs)
    seed, stream = _seed(imp, node, attrs)
    u = imp.b.random_uniform(seed, shape=shape, stream=stream)
    hit = u < (p if p.dtype == "f32" else p.astype("f32"))
    return hit.astype(_dtype(imp, node, attrs, p, integers=True))


def multinomial(imp, node, ins, attrs):
    """`sample_size` class indices per row of unnormalized log-probabilities, by inverse CDF:
    the number of classes whose cumulative probability a uniform draw reaches (the last class
    when rounding leaves the total just below the draw)."""
    from onnx import TensorProto

    logits = imp.t(ins[0])
    if logits.ndim != 2:
        raise imp.fail(node, f"input of shape {list(logits.shape)}: [batch, classes] expected")
    batch, classes = logits.shape
    samples = int(attrs.get("sample_size", 1))
    seed, stream = _seed(imp, node, attrs)
    p = imp.b.softmax(logits if logits.dtype == "f32" else logits.astype("f32"), axis=1)
    upper = np.triu(np.ones((classes, classes), np.float32))  # cdf[j] = sum of p[i], i <= j
    cdf = (p @ imp.b.const(upper)).reshape(batch, 1, classes)
    u = imp.b.random_uniform(seed, shape=(batch, samples, 1), stream=stream)
    index = (u >= cdf).astype("i32").sum(axes=2)
    index = index.minimum(imp.b.const(classes - 1, dtype="i32"))
    kinds = {TensorProto.INT32: "i32", TensorProto.INT64: "i64"}
    dtype = kinds.get(int(attrs.get("dtype", TensorProto.INT32)))
    if dtype is None:
        raise imp.fail(node, f"samples of element type {attrs['dtype']} (int32 or int64 only)")
    return index if dtype == "i32" else index.astype(dtype)


HANDLERS = {"RandomUniform": random_uniform, "RandomUniformLike": random_uniform,
            "RandomNormal": random_normal, "RandomNormalLike": random_normal,
            "Bernoulli": bernoulli, "Multinomial": multinomial}

__all__ = ["HANDLERS", "SEED_INPUT"]
