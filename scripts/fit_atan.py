"""Recompute atan's polynomial coefficients in `backends/math_coefficients.py` (needs mpmath).

After the reduction to |t| <= tan(π/16), atan(t) = t + t·z·Q(z) with z = t²; Q is minimax for
the relative error of atan (the Remez exchange of `fit_erf.py`, weight t·z/atan(t)), its
coefficients rounded to f64 one at a time. f32 is evaluated in f64 and needs degree 3
(relative error 2e-11, far below f32's 6e-8); f64 needs degree 7 (below 0.001 eps).

    python scripts/fit_atan.py
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
from fit_erf import fit_rounded

mp.mp.dps = 50
DEGREE = {"f32": 3, "f64": 7}


def q_exact(t):
    return (mp.atan(t) / t - 1) / (t * t)


def weight(t):
    return t * t * t / mp.atan(t)


def main() -> None:
    top = mp.tan(mp.pi / 16)
    for dtype, degree in DEGREE.items():
        coeffs, err = fit_rounded(q_exact, weight, mp.mpf("1e-8"), top, degree, np.float64,
                                  var=lambda x: x * x)
        values = ", ".join(repr(float(c)) for c in coeffs[::-1])
        print(f"{dtype} Q: error {mp.nstr(err / mp.mpf(2) ** -53, 3)} eps\n  ({values})")


if __name__ == "__main__":
    main()
