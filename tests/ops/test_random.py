"""random_uniform: Philox4x32-10 against the published Random123 known-answer vectors, the
counter/key layout against a plain-Python scalar Philox, uniformity, and seed/stream behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.builder import Builder
from graphc.ir.errors import AttributeSchemaError, DTypeError, ShapeError
from graphc.ir.ops.random import philox4x32

from .harness import run_op

# Random123 kat_vectors, philox4x32 10 rounds: counter words, key words -> output words.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, want", KAT)
def test_philox_known_answers(counter, key, want):
    got = philox4x32(counter, key)
    assert tuple(int(w) for w in got) == want
    assert all(w.dtype == np.uint32 for w in got)


def test_philox_vectorized_over_counters():
    counters = [np.array([c[i] for c, _, _ in KAT], np.uint32) for i in range(4)]
    keys = [np.array([k[i] for _, k, _ in KAT], np.uint32) for i in range(2)]
    got = philox4x32(counters, keys)
    for j, (_, _, want) in enumerate(KAT):
        assert tuple(int(w[j]) for w in got) == want


def scalar_philox(c, k):
    """Philox4x32-10 on Python ints, written from the paper independently of the module."""
    m = 0xFFFFFFFF
    c, k = list(c), list(k)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & m, (k[1] + 0xBB67AE85) & m]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & m, (p0 >> 32) ^ c[3] ^ k[1], p0 & m]
    return c


def uniform(seed, shape, stream=0, dtype=np.int64):
    (out,) = run_op("random_uniform", [np.asarray(seed, dtype)], shape=shape, stream=stream)
    return out


@pytest.mark.parametrize("seed, dtype", [(0, np.int64), (123456789, np.int64),
                                         (0x1234567890ABCDEF, np.int64), (-7, np.int64),
                                         (-7, np.int32), (2024, np.int32)])
@pytest.mark.parametrize("stream", [0, 3])
def test_uniform_bits_follow_the_spec(seed, dtype, stream):
    shape = (3, 5)
    got = uniform(seed, shape, stream, dtype)
    s = seed & (2**64 - 1)  # sign-extended to 64 bits, two's complement
    key = (s & 0xFFFFFFFF, s >> 32)
    want = np.array([(scalar_philox((i, 0, stream, 0), key)[0] >> 8) * 2.0**-24
                     for i in range(15)], np.float32).reshape(shape)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, want)


def test_uniform_statistics():
    x = uniform(42, (64, 128)).ravel().astype(np.float64)
    assert np.all(x >= 0.0) and np.all(x < 1.0)
    n = x.size
    assert abs(x.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(x.var() - 1 / 12) < 0.005
    counts, _ = np.histogram(x, bins=16, range=(0.0, 1.0))
    chi2 = float(np.sum((counts - n / 16) ** 2 / (n / 16)))
    assert chi2 < 50.0  # 15 degrees of freedom: p < 1e-5 beyond ~50
    # low mantissa bits are used too (24-bit resolution, not a coarse grid)
    assert len(np.unique(x)) > 0.99 * n


def test_same_seed_same_bits_different_seed_or_stream_differs():
    a = uniform(7, (4, 8))
    np.testing.assert_array_equal(a.view(np.uint32), uniform(7, (4, 8)).view(np.uint32))
    np.testing.assert_array_equal(a, uniform(7, (4, 8), dtype=np.int32))
    for other in (uniform(8, (4, 8)), uniform(7, (4, 8), stream=1), uniform(2**32 + 7, (4, 8))):
        assert np.mean(a == other) < 0.05
    # element i depends only on i: a different shape with the same size gives the same bits
    np.testing.assert_array_equal(a.ravel(), uniform(7, (32,)))
    np.testing.assert_array_equal(a.ravel()[:5], uniform(7, (5,)))


def test_random_uniform_type_rule_and_errors():
    b = Builder()
    s = b.input("s", (), "i64")
    y = b.random_uniform(s, shape=(2, 3))
    assert str(y.type) == "f32[2, 3]" and y.node.attrs["stream"] == 0
    with pytest.raises(DTypeError, match="random_uniform.*seed must be i32 or i64"):
        b.random_uniform(b.input("f", (), "f32"), shape=(2,))
    with pytest.raises(ShapeError, match="random_uniform.*seed must be a scalar"):
        b.random_uniform(b.input("v", (2,), "i64"), shape=(2,))
    with pytest.raises(AttributeSchemaError, match="random_uniform.*stream"):
        b.random_uniform(s, shape=(2,), stream=-1)


def test_random_uniform_is_not_differentiable():
    from graphc.ir.registry import get_op

    assert not get_op("random_uniform").differentiable
    assert not get_op("iota").differentiable


# -- random_normal ---------------------------------------------------------------------------------


def _normal(seed, shape, **attrs):
    (out,) = run_op("random_normal", [np.array(seed, np.int64)], shape=shape, **attrs)
    return out


def test_normal_statistics_against_the_normal_distribution():
    """Kolmogorov-Smirnov distance to N(0, 1) over 2^17 samples (p = 0.001 at 1.95/sqrt(n)),
    and the first four moments."""
    from math import erf, sqrt

    z = np.sort(_normal(3, (256, 512)).ravel().astype(np.float64))
    n = z.size
    cdf = 0.5 * (1.0 + np.vectorize(erf)(z / sqrt(2.0)))
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / np.sqrt(n), ks
    assert abs(z.mean()) < 4 / np.sqrt(n) and abs(z.var() - 1.0) < 0.02
    assert abs(np.mean(z ** 3)) < 0.05 and abs(np.mean(z ** 4) - 3.0) < 0.1
    assert np.abs(z).max() <= np.sqrt(48 * np.log(2)) + 1e-6  # the documented tail cut


def test_normal_is_box_muller_on_the_uniform_halves():
    """Element i pairs the uniforms at i and size + i of one random_uniform draw."""
    u = uniform(9, (2, 3, 4), stream=5).astype(np.float64)
    want = np.sqrt(-2.0 * np.log(1.0 - u[0])) * np.cos(2.0 * np.pi * u[1])
    got = _normal(9, (3, 4), stream=5, mean=0.5, std=2.0, dtype="f64")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, 0.5 + 2.0 * want, rtol=1e-15)
    np.testing.assert_allclose(_normal(9, (3, 4), stream=5), want, rtol=1e-6)


def test_random_normal_type_rule_and_errors():
    b = Builder()
    s = b.input("s", (), "i64")
    assert str(b.random_normal(s, shape=(2, 3)).type) == "f32[2, 3]"
    assert str(b.random_normal(s, shape=(), dtype="f64").type) == "f64[]"
    with pytest.raises(AttributeSchemaError, match="random_normal std must be >= 0"):
        b.random_normal(s, shape=(2,), std=-1.0)
    with pytest.raises(DTypeError, match="seed must be i32 or i64"):
        b.random_normal(b.input("f", (), "f32"), shape=(2,))
    with pytest.raises(AttributeSchemaError, match="random_normal"):
        b.random_normal(s, shape=(2,), dtype="i64")


def test_random_normal_is_not_differentiable():
    from graphc.ir.registry import get_op

    assert not get_op("random_normal").differentiable


def test_random_normal_decomposes_into_primitives_that_match_its_reference():
    from graphc.backends.reference import run_graph
    from graphc.ir.registry import get_op
    from graphc.passes import decompose

    b = Builder("rn")
    s = b.input("s", (), "i64")
    g = b.build(outputs={"y": b.random_normal(s, shape=(4, 9), stream=7, mean=-1.0, std=0.3),
                         "z": b.random_normal(s, shape=(5,), dtype="f64")})
    flat = decompose(g)
    assert all(get_op(n.op).primitive for n in flat.nodes)
    feed = {"s": np.array(77, np.int64)}
    want, got = run_graph(g, feed), run_graph(flat, feed)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["z"], want["z"], rtol=1e-14)
