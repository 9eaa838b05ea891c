"""Recompute erf's polynomial coefficients in `backends/math_coefficients.py` (needs mpmath).

Weighted minimax fits by the Remez exchange algorithm, in 50-digit arithmetic against mpmath:

* S(s), s = x² on |x| < 1: erf(x) = x + x·S(x²), minimax for the relative error of erf
  (weight x/erf(x));
* P(x) on 1 <= x <= clamp: erf(x) = 1 − exp(P(x)), P ≈ log erfc(x), minimax for the error of
  erf itself (weight erfc(x): exp(P) − erfc ≈ erfc·(P − log erfc)).

Coefficients are rounded to the dtype one at a time, lowest degree first, each time refitting
the higher ones around the rounded ones: the rounded polynomials stay within 0.02 (f32) and
0.05 (f64) of an ulp, where rounding them all at once gave 0.05 and 0.1. Prints each tuple
(highest degree first) with the error of the rounded polynomial, in eps for S (relative), in
ulp of erf for P (erf is in [0.84, 1) there).

    python scripts/fit_erf.py
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

mp.mp.dps = 50

SPLIT = 1.0
CONFIG = {  # dtype -> (degree of S, degree of P, clamp, mantissa bits)
    "f32": (6, 6, 4.0, 24),
    "f64": (12, 18, 5.95, 53),
}


def remez(f, weight, lo, hi, degree, var=lambda x: x, fixed=None, grid_size=2000,
          iterations=40):
    """Coefficients c_0..c_degree of p(v) = Σ c_k v^k, v = var(x), minimizing
    max |(p(var(x)) − f(x))·weight(x)| over [lo, hi], those in `fixed` (degree -> value) held;
    returns (coefficients, max error)."""
    fixed = fixed or {}
    free = [k for k in range(degree + 1) if k not in fixed]
    m = len(free)
    lo, hi = mp.mpf(lo), mp.mpf(hi)

    def cheb(i, n):
        return lo + (hi - lo) * (1 - mp.cos(mp.pi * i / n)) / 2

    grid = [cheb(i, grid_size - 1) for i in range(grid_size)]
    f_grid, w_grid, v_grid = [f(x) for x in grid], [weight(x) for x in grid], [var(x) for x in grid]
    ref = [cheb(i, m) for i in range(m + 1)]
    for _ in range(iterations):
        # p(x_i) + (−1)^i E / w(x_i) = f(x_i) on the m + 1 reference points
        a = mp.matrix(m + 1, m + 1)
        b = mp.matrix(m + 1, 1)
        for i, x in enumerate(ref):
            v = var(x)
            for j, k in enumerate(free):
                a[i, j] = v ** k
            a[i, m] = (-1) ** i / weight(x)
            b[i] = f(x) - sum(c * v ** k for k, c in fixed.items())
        sol = mp.lu_solve(a, b)
        level = sol[m]
        coeffs = [fixed[k] if k in fixed else sol[free.index(k)] for k in range(degree + 1)]
        err = [(mp.polyval(coeffs[::-1], v) - fv) * wv
               for v, fv, wv in zip(v_grid, f_grid, w_grid, strict=True)]
        # The new reference: the largest |error| of each run of one sign, cut to m + 1 runs.
        runs: list[int] = []
        for i, e in enumerate(err):
            if runs and mp.sign(err[runs[-1]]) == mp.sign(e):
                if abs(e) > abs(err[runs[-1]]):
                    runs[-1] = i
            else:
                runs.append(i)
        while len(runs) > m + 1:
            size = [abs(err[i]) for i in runs]
            j = min(range(len(runs)), key=size.__getitem__)
            if len(runs) == m + 2 or j in (0, len(runs) - 1):
                runs.pop(0 if size[0] < size[-1] else -1)
            else:  # drop the smallest run and merge its two neighbours (of one sign)
                runs[j - 1:j + 2] = [runs[j - 1] if size[j - 1] >= size[j + 1] else runs[j + 1]]
        worst = max(abs(e) for e in err)
        if len(runs) < m + 1 or worst - abs(level) < abs(level) * mp.mpf("1e-6"):
            break
        ref = [grid[i] for i in runs]
    return coeffs, worst


def fit_rounded(f, weight, lo, hi, degree, ft, var=lambda x: x):
    """`remez`, the coefficients rounded to `ft` lowest degree first, refitting the rest."""
    fixed: dict[int, mp.mpf] = {}
    for k in range(degree + 1):
        coeffs, _ = remez(f, weight, lo, hi, degree, var, fixed)
        fixed[k] = mp.mpf(float(ft(float(coeffs[k]))))
    coeffs = [fixed[k] for k in range(degree + 1)]
    grid = [lo + (hi - lo) * mp.mpf(i) / 20000 for i in range(20001)]
    err = max(abs((mp.polyval(coeffs[::-1], var(x)) - f(x)) * weight(x)) for x in grid)
    return coeffs, err


def erf_over_x_minus_one(x):
    return mp.erf(x) / x - 1 if x else 2 / mp.sqrt(mp.pi) - 1


def x_over_erf(x):
    return x / mp.erf(x) if x else mp.sqrt(mp.pi) / 2


def main() -> None:
    for dtype, (deg_s, deg_p, clamp, bits) in CONFIG.items():
        ft = np.float32 if dtype == "f32" else np.float64
        s, err_s = fit_rounded(erf_over_x_minus_one, x_over_erf, 0, SPLIT, deg_s, ft,
                               var=lambda x: x * x)
        p, err_p = fit_rounded(lambda x: mp.log(mp.erfc(x)), mp.erfc, SPLIT, clamp, deg_p, ft)
        for name, coeffs, err, unit in (("S", s, err_s, 1 - bits), ("P", p, err_p, -bits)):
            values = ", ".join(repr(ft(float(c))).removeprefix("np.float32(")
                               .removeprefix("np.float64(").rstrip(")") for c in coeffs[::-1])
            print(f"{dtype} {name}: error {mp.nstr(err / mp.mpf(2) ** unit, 3)} "
                  f"{'eps' if name == 'S' else 'ulp'}\n  ({values})")


if __name__ == "__main__":
    main()
