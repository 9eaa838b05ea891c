"""Recompute the table form of f32 tanh in `backends/math_coefficients.py` (needs mpmath).

|x| (clamped to TANH_TABLE_CLAMP, where tanh rounds to 1) is cut into intervals by its bit
pattern: interval 0 is [0, 2^-4), intervals 1 .. 29 are quarter binades from 2^-4 to the clamp.
On each, tanh(|x|) = P(|x| − m) with m the interval's midpoint rounded to f32 (|x| − m is then
exact) and P of degree TANH_TABLE_DEGREE: least squares on Chebyshev points for the relative
error, reweighted towards minimax (Lawson) in float64, coefficients rounded to f32 (the rounding
of the k-th reaches the result damped by |x − m|^k; only the constant's is undamped). Interval
0 has m = 0 and P(0) = 0, so tanh keeps its relative accuracy near 0. The script prints the
tables and the largest relative error of the rounded polynomials (evaluated exactly, mpmath) in
units of 2^-24.

    python scripts/fit_tanh_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import mpmath as mp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backends.math_coefficients import TANH_TABLE_CLAMP, TANH_TABLE_DEGREE  # noqa: E402

mp.mp.dps = 40
INTERVALS = 30
FIRST = 2.0 ** -4


def bounds(k: int) -> tuple[float, float]:
    if k == 0:
        return 0.0, FIRST
    e, q = divmod(k - 1, 4)
    lo = FIRST * 2.0 ** e * (1 + q / 4)
    hi = FIRST * 2.0 ** e * (1 + (q + 1) / 4)
    return lo, min(hi, TANH_TABLE_CLAMP)


def fit(k: int) -> tuple[float, list[float], float]:
    lo, hi = bounds(k)
    m = 0.0 if k == 0 else float(np.float32((lo + hi) / 2))
    n = 600
    xs = lo + (hi - lo) * (1 - np.cos(np.pi * (np.arange(n) + 0.5) / n)) / 2
    ts, ys = xs - m, np.tanh(xs)
    scale = max(abs(lo - m), abs(hi - m))  # fit in s = t/scale: a well-conditioned basis
    free = list(range(1 if k == 0 else 0, TANH_TABLE_DEGREE + 1))  # interval 0: P(0) = 0
    basis = np.stack([(ts / scale) ** d for d in free], axis=1) / ys[:, None]
    lawson, best = np.full(n, 1.0 / n), (np.inf, None)
    for _ in range(60):  # kept: the best; once the errors reach float64's noise, they wander
        w = np.sqrt(lawson)
        sol = np.linalg.lstsq(basis * w[:, None], w, rcond=None)[0]
        err = np.abs(basis @ sol - 1.0)
        best = min(best, (err.max(), sol), key=lambda b: b[0])
        lawson = lawson * err / np.sum(lawson * err)
    sol = best[1]
    fitted = dict(zip(free, sol / scale ** np.array(free), strict=True))
    poly = [float(np.float32(fitted.get(d, 0.0))) for d in range(TANH_TABLE_DEGREE + 1)]
    grid = [mp.mpf(lo) + (mp.mpf(hi) - lo) * i / 2000 for i in range(1 if k == 0 else 0, 2001)]
    worst = max(abs(sum(c * (x - m) ** d for d, c in enumerate(poly)) / mp.tanh(x) - 1)
                for x in grid)
    return m, poly, float(worst) / 2.0 ** -24


def main() -> None:
    fits = [fit(k) for k in range(INTERVALS)]
    fits += [fits[-1]] * (32 - INTERVALS)  # slots of the two-register table never indexed
    print(f"worst relative error of the rounded polynomials: {max(f[2] for f in fits):.3f} "
          "x 2^-24")
    print("TANH_TABLE_MID = (" + ", ".join(repr(f[0]) for f in fits) + ")")
    print("TANH_TABLE_P = (")
    for d in range(TANH_TABLE_DEGREE, -1, -1):
        print("    (" + ", ".join(repr(float(f[1][d])) for f in fits) + "),")
    print(")")


if __name__ == "__main__":
    main()
