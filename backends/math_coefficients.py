"""Polynomial coefficients shared by the LLVM mathlib and the Triton helpers, so both
backends evaluate the same approximation (erf's and atan's). Plain floats, highest degree
first (Horner order); importing this module imports nothing.

erf, for f32 and f64 (`scripts/fit_erf.py` recomputes them: weighted Remez exchange against
mpmath, then rounded to the dtype):

* |x| < ERF_SPLIT: erf(x) = x + x·S(x²). S is minimax for the relative error of erf (weight
  x/erf(x)): 0.012 eps (f32) and 0.05 eps (f64) with the rounded coefficients. Its last
  coefficient is 2/√π − 1 and |S| < 0.16, so S's rounding reaches the result damped.
* ERF_SPLIT <= |x| <= ERF_CLAMP: erf(x) = 1 − exp(P(|x|)), P ≈ log erfc, minimax for the
  error of 1 − exp(P) (weight erfc(x)): 0.017 ulp (f32) and 0.011 ulp (f64) of erf. P is a
  polynomial in |x| itself, not centred: near 1, where erfc is largest, the Horner sums stay
  below 2 (no cancellation), and the larger sums further out are damped by erfc(x). With −x²
  taken into P, f32 needs 7 terms where exp(−x²)·R(x) needs 12 for the same error, and no
  exact split of x² is needed: P's rounding, like that of x², reaches erf damped by
  erfc(x)/erf(x) < 0.19.
* |x| > ERF_CLAMP: erfc(clamp) is below half an ulp of 1 (1.5e-8 < 2^-25 for f32,
  3.9e-17 < 2^-54 for f64), so erf rounds to ±1: clamping |x| there gives exactly that.
"""

from __future__ import annotations

ERF_SPLIT = 1.0
ERF_CLAMP = {"f32": 4.0, "f64": 5.95}
ERF_SMALL = {
    "f32": (7.806904e-05, -0.0007997853, 0.005187162, -0.026853347, 0.11283579, -0.37612626,
            0.12837917),
    "f64": (1.434424343875349e-10, -1.6465057060798555e-09, 1.601328952423022e-08,
            -1.6557136181158428e-07, 1.6481059310776064e-06, -1.4926881483008079e-05,
            0.0001205538619390401, -0.000854832853580763, 0.005223977652692637,
            -0.026866170648031144, 0.11283791670971098, -0.376126389031841, 0.1283791670955126),
}
ERF_BIG = {
    "f32": (0.00018557826, -0.0029396324, 0.02180537, -0.10303741, -0.6382257, -1.12704,
            -0.00035371978),
    "f64": (1.039095013073136e-12, -4.75190947022147e-11, 1.0170887019151513e-09,
            -1.352274633062461e-08, 1.248352767313178e-07, -8.452203535785465e-07,
            4.301907897730158e-06, -1.6421938593741e-05, 4.477118370363306e-05,
            -6.975320406141694e-05, -4.5951162606789796e-05, 0.0006428270763172984,
            -0.001770918107078032, 0.00028222225157837044, 0.019076959698514587,
            -0.10274664482264224, -0.6366287029414385, -1.1283772825699396, -1.843676850702662e-07),
}

# atan after the reduction to |t| <= tan(π/16): atan(t) = t + t·z·Q(z), z = t², Q minimax for
# the relative error of atan (`scripts/fit_atan.py`): 2e-11 (f32, evaluated in f64 by the
# LLVM mathlib, in f32 by the Triton helper) and below 0.001 eps (f64).
ATAN_Q = {
    "f32": (0.10280031317114266, -0.14258584674191774, 0.19999647846482363,
            -0.33333331907506447),
    "f64": (0.05027239367380327, -0.0660528408641454, 0.07689901277083734,
            -0.09090854022867345, 0.1111111037449144, -0.14285714280253659,
            0.19999999999980403, -0.3333333333333331),
}
