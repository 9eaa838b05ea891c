"""Counter-based random numbers: `random_uniform(seed){shape, stream}`.

Every backend must produce the same bits, so the algorithm is fixed here exactly.

Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the
Random123 reference) maps a 128-bit counter (c0, c1, c2, c3) and a 64-bit key (k0, k1), all
uint32 words, to four uint32 words. All arithmetic is modulo 2**32. One round is

    (hi0, lo0) = mulhilo32(0xD2511F53, c0)      # the 64-bit product, high and low halves
    (hi1, lo1) = mulhilo32(0xCD9E8D57, c2)
    (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0)

and the whole function is 10 rounds, the key bumped by the Weyl increments *between* rounds
(so round 1 uses the key as given, round r uses k + (r-1) * W):

    for r in 0..9:
        if r > 0: k0 += 0x9E3779B9; k1 += 0xBB67AE85
        round(c, k)
    return (c0, c1, c2, c3)

`random_uniform` uses it as follows, for an output of shape `shape` and element `i` in
row-major (C) order, 0 <= i < prod(shape):

    s       = the seed as a signed 64-bit integer (an i32 seed is sign-extended first)
    key     = (s & 0xFFFFFFFF, (s >> 32) & 0xFFFFFFFF)         # two's complement words
    counter = (i & 0xFFFFFFFF, (i >> 32) & 0xFFFFFFFF, stream, 0)
    w0      = first output word of Philox4x32-10(counter, key)
    out[i]  = float32(w0 >> 8) * 2**-24                         # in [0, 1), exact in f32

Only the first of the four words is used, so element i depends on i alone: a kernel may compute
any element in any order. `stream` (0 <= stream < 2**32) separates independent streams drawn from
one seed (e.g. one dropout mask per layer). mulhilo32 is a 32x32 -> 64-bit multiply (uint64
multiply, or `umulhi` on GPUs).
"""

from __future__ import annotations

import numpy as np

from ..errors import AttributeSchemaError, DTypeError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import INT_DTYPES, TensorType

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
_MASK32 = np.uint64(0xFFFFFFFF)


def _mulhilo32(m: int, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """High and low 32-bit halves of the 64-bit product m * a (a uint64 holding uint32 words)."""
    prod = np.uint64(m) * a  # < 2**64: both factors are below 2**32
    return prod >> np.uint64(32), prod & _MASK32


def philox4x32(counter_words, key_words, rounds: int = PHILOX_ROUNDS
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-R on arrays: 4 counter words and 2 key words (broadcastable uint32 values).

    Returns the four output words as uint32 arrays of the broadcast shape.
    """
    c = [np.asarray(w, np.uint64) & _MASK32 for w in counter_words]
    k = [np.asarray(w, np.uint64) & _MASK32 for w in key_words]
    if len(c) != 4 or len(k) != 2:
        raise ValueError(f"philox4x32 needs 4 counter words and 2 key words, "
                         f"got {len(c)} and {len(k)}")
    c = list(np.broadcast_arrays(*c, *k)[:4])
    k0, k1 = k
    for r in range(rounds):
        if r > 0:
            k0 = (k0 + np.uint64(PHILOX_W0)) & _MASK32
            k1 = (k1 + np.uint64(PHILOX_W1)) & _MASK32
        hi0, lo0 = _mulhilo32(PHILOX_M0, c[0])
        hi1, lo1 = _mulhilo32(PHILOX_M1, c[2])
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return tuple(w.astype(np.uint32) for w in c)


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key of a seed: low and high 32-bit words of its 64-bit two's complement."""
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    return s & 0xFFFFFFFF, s >> 32


def uniform_bits(seed: int, size: int, stream: int = 0) -> np.ndarray:
    """The first Philox word for elements 0..size-1 of `random_uniform` (uint32)."""
    i = np.arange(size, dtype=np.uint64)
    counter = (i & _MASK32, i >> np.uint64(32), np.uint64(stream), np.uint64(0))
    return philox4x32(counter, seed_key(seed))[0]


# -- random_uniform --------------------------------------------------------------------------------


def infer_random_uniform(types, attrs):
    (seed,) = types
    if seed.dtype not in INT_DTYPES:
        raise DTypeError(f"random_uniform seed must be i32 or i64, got {seed}")
    if seed.shape != ():
        raise ShapeError(f"random_uniform seed must be a scalar, got {seed}")
    if not 0 <= attrs["stream"] < 2**32:
        raise AttributeSchemaError(f"random_uniform stream {attrs['stream']} must be in [0, 2**32)")
    return TensorType(attrs["shape"], "f32")


def ref_random_uniform(inputs, attrs):
    (seed,) = inputs
    shape = attrs["shape"]
    size = int(np.prod(shape, dtype=np.int64))
    w0 = uniform_bits(int(seed), size, attrs["stream"])
    return ((w0 >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)).reshape(shape)


# -- random_normal: Box-Muller on two halves of one uniform draw ----------------------------------
#
# random_normal(seed){shape, stream, mean, std} draws u = random_uniform(seed){[2, *shape],
# stream} and pairs element i of the first half (u1) with element i of the second (u2):
#
#     z = sqrt(-2 ln(1 - u1)) * cos(2 pi u2),     out = mean + std * z
#
# 1 - u1 is exact in f32 and lies in [2^-24, 1], so the logarithm is finite and |z| is at most
# sqrt(48 ln 2) = 5.77: the tails beyond 5.77 standard deviations (probability 8e-9) are cut.
# It is a composite: backends run its decomposition, so every backend draws the same numbers up
# to the rounding of log, sqrt and cos.


def infer_random_normal(types, attrs):
    if attrs["std"] < 0:
        raise AttributeSchemaError(f"random_normal std must be >= 0, got {attrs['std']}")
    return TensorType(infer_random_uniform(types, attrs).shape, attrs["dtype"])


def ref_random_normal(inputs, attrs):
    shape = tuple(attrs["shape"])
    u = ref_random_uniform(inputs, {"shape": (2, *shape), "stream": attrs["stream"]})
    u1, u2 = u.astype(np.float64)
    z = np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * np.pi * u2)
    return (attrs["mean"] + attrs["std"] * z).astype({"f32": np.float32,
                                                      "f64": np.float64}[attrs["dtype"]])


def decompose_random_normal(b, inputs, attrs):
    (seed,) = inputs
    shape = tuple(attrs["shape"])
    u = b.random_uniform(seed, shape=(2, *shape), stream=attrs["stream"])
    if attrs["dtype"] != "f32":  # the uniforms are exact in f64: the transform runs there
        u = u.astype(attrs["dtype"])
    u1, u2 = (b.slice(u, start=(k,) + (0,) * len(shape), stop=(k + 1, *shape)).reshape(shape)
              for k in (0, 1))
    z = ((1.0 - u1).log() * -2.0).sqrt() * (u2 * (2.0 * np.pi)).cos()
    if attrs["std"] != 1.0:
        z = z * float(attrs["std"])
    return z + float(attrs["mean"]) if attrs["mean"] != 0.0 else z


def register_ops() -> None:
    register(
        OpDef("random_uniform", "random", 1, infer_random_uniform, ref_random_uniform,
              attrs={"shape": Attr("ints"), "stream": Attr("int", 0)}, differentiable=False,
              doc="random_uniform(seed){shape, stream}: f32 uniform in [0, 1) from "
                  "Philox4x32-10, the same bits on every backend."),
        OpDef("random_normal", "random", 1, infer_random_normal, ref_random_normal,
              attrs={"shape": Attr("ints"), "stream": Attr("int", 0),
                     "mean": Attr("float", 0.0), "std": Attr("float", 1.0),
                     "dtype": Attr("str", "f32", choices=("f32", "f64"))},
              differentiable=False, decompose=decompose_random_normal,
              doc="random_normal(seed){shape, stream, mean=0, std=1, dtype=f32}: normal "
                  "samples, Box-Muller on random_uniform(seed){[2, *shape], stream} (tails cut "
                  "at 5.77 std)."),
    )
