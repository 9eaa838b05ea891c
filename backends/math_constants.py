"""Constants of the sin/cos/atan implementations, computed from an exact integer expansion of
π (Machin's formula) with exact rational arithmetic: the parts of π/2, the bits of 2/π for
Payne and Hanek's reduction, and atan at the reduction's centres. Shared by the LLVM mathlib
and the Triton helpers; imports only the standard library."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

# -- constants from an exact expansion of π ---------------------------------------------------


def _atan_inv(n: int, one: int) -> int:
    """atan(1/n)·one, by its Taylor series in integers (error: a few units of `one`'s ulp)."""
    total = term = one // n
    n2, k, sign = n * n, 1, -1
    while term:
        term //= n2
        total += sign * (term // (2 * k + 1))
        sign, k = -sign, k + 1
    return total


@cache
def pi_fraction(bits: int = 1200) -> Fraction:
    """π to `bits` bits (Machin: π = 16·atan(1/5) − 4·atan(1/239)), as an exact fraction."""
    guard = 32
    one = 1 << (bits + guard)
    pi = 16 * _atan_inv(5, one) - 4 * _atan_inv(239, one)
    return Fraction(pi >> guard, 1 << bits)


def split(value: Fraction, count: int) -> tuple[float, ...]:
    """`value` as `count` doubles, each the nearest double to what the previous ones left."""
    parts = []
    for _ in range(count):
        parts.append(float(value))
        value -= Fraction(parts[-1])
    return tuple(parts)


PIO2 = split(pi_fraction() / 2, 3)       # π/2 = P1 + P2 + P3 (next part below 2^-160)
TWO_OVER_PI = float(2 / pi_fraction())


@cache
def reduction_table(k_lo: int, k_hi: int, piece_bits: int,
                    pieces: int) -> tuple[tuple[float, ...], ...]:
    """For each k in [k_lo, k_hi]: (2^k·2/π) mod 4 as `pieces` doubles of `piece_bits` bits,
    the first holding the bits from 2^1 down, each the next ones (truncated; the last rounded).
    Returned piece by piece: table[j][k − k_lo]."""
    two_over_pi = 2 / pi_fraction()
    out: list[list[float]] = [[] for _ in range(pieces)]
    for k in range(k_lo, k_hi + 1):
        v = (two_over_pi * Fraction(2) ** k) % 4
        for j in range(pieces):
            scale = Fraction(2) ** (piece_bits * (j + 1) - 2)
            part = (v * scale).__floor__() if j < pieces - 1 else round(v * scale)
            out[j].append(float(Fraction(part) / scale))
            v -= Fraction(part) / scale
    return tuple(tuple(p) for p in out)


# atan: |x| is reduced to |t| <= tan(π/16) around the nearest of the centres tan(kπ/8),
# k = 0..3, t = (|x| − c)/(1 + |x|·c), or t = −1/|x| beyond tan(7π/16) (k = 4, atan = π/2 + atan t).
# The centres are the doubles nearest tan(kπ/8); each base is atan of that double exactly (as
# a double-double), so the centres' rounding costs nothing.
ATAN_BREAKS = tuple(math.tan((2 * k + 1) * math.pi / 16) for k in range(4))
ATAN_CENTRES = (0.0, math.sqrt(2.0) - 1.0, 1.0, math.sqrt(2.0) + 1.0)


def atan_small(x: Fraction, bits: int = 160) -> Fraction:
    """atan(x) for 0 <= x <= 1/2 by its series, to about `bits` bits."""
    total, term, k, eps = Fraction(0), x, 0, Fraction(1, 1 << bits)
    while abs(term) > eps:
        total += term / (2 * k + 1)
        term, k = -term * x * x, k + 1
        term = Fraction(round(term * (1 << bits + 8)), 1 << bits + 8)  # keep fractions short
    return total


@cache
def atan_bases() -> tuple[tuple[float, float], ...]:
    """(hi, lo) of atan(centre) for k = 0..3, then π/2 for k = 4."""
    pi = pi_fraction()
    c1, c3 = Fraction(ATAN_CENTRES[1]), Fraction(ATAN_CENTRES[3])
    exact = (Fraction(0), atan_small(c1), pi / 4, pi / 2 - atan_small(1 / c3), pi / 2)
    return tuple(split(v, 2) for v in exact)


@cache
def two_over_pi_words(count: int) -> tuple[int, ...]:
    """2/π's first 64·count bits after the point as signed 64-bit words (LLVM constants)."""
    bits = 64 * count
    whole = (2 * Fraction(2) ** bits / pi_fraction()).__floor__()
    words = [(whole >> (bits - 64 * (j + 1))) & ((1 << 64) - 1) for j in range(count)]
    return tuple(w - (1 << 64) if w >= 1 << 63 else w for w in words)
