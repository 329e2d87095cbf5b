"""The core's ETDRK4 coefficients against the same formulas in 60-digit decimal arithmetic.

The core computes e^{-kh} with its own branch-free exponential and the phi-functions
from their Taylor series or closed forms, four states at a time (csrc/engine.h,
ph_etd_rows). Its ladder table (``Cohort._etab``, one row set per ladder level) is held
here to the exact values, for every fast state's clearance and step sizes from 15 s to
17 h, so kh runs from about 1e-5 to several hundred.
"""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest

from pulsehpg import Cohort, Numerics

getcontext().prec = 60


def _exact_rows(k: float, h: float) -> list[float]:
    """Cox & Matthews' six coefficients for clearance k and step h, as floats."""
    k, h = Decimal(k), Decimal(h)
    z = -k * h
    e, e2 = z.exp(), (z / 2).exp()
    z3 = z * z * z
    f1 = (-4 - z + e * (4 - 3 * z + z * z)) / z3
    f2 = (2 + z + e * (-2 + z)) / z3
    f3 = (-4 - 3 * z - z * z + e * (4 - z)) / z3
    return [float(e), float(e2), float((1 - e2) / k), float(h * f1), float(2 * h * f2),
            float(h * f3)]


@pytest.mark.parametrize("h0", [1.0 / 240.0, 1.0 / 60.0])
def test_ladder_coefficients_match_exact_values(h0):
    levels = 12
    c = Cohort(3, seed=5, numerics=Numerics(h0=h0, levels=levels))  # varied clearances
    nf = c._etab.shape[-1]
    worst = 0.0
    for i in range(3):
        for lv in range(levels):
            h = h0 * 2.0**lv
            for j in range(nf):
                exact = np.array(_exact_rows(float(c._d[i, j]), h))
                got = c._etab[i, lv, :, j]
                # relative, except for decay factors that underflow toward zero
                rel = np.abs(got - exact) / np.maximum(np.abs(exact), 1e-300)
                rel[(np.abs(exact) < 1e-250) & (np.abs(got) < 1e-250)] = 0.0
                worst = max(worst, float(rel.max()))
    assert worst <= 1e-12, worst
