"""Summaries clinicians compute from sampled hormone series."""

from __future__ import annotations

import numpy as np

__all__ = ["detect_pulses", "first_time_below", "first_time_at_or_above"]


def detect_pulses(values: np.ndarray, min_rise: float = 0.2, min_abs: float = 0.0) -> np.ndarray:
    """Indices of pulse peaks in one evenly sampled series (Santen & Bardin 1973 rule).

    A pulse is a rise from a running nadir to a peak by more than ``min_rise`` of the
    nadir (and by more than ``min_abs``), followed by a fall from that peak by the
    same criterion before the next pulse is counted. A NaN sample (a missed draw) changes
    nothing (indices stay those of ``values``). The rule counts assay noise as pulses too:
    about 6 a day on a flat series sampled every 10 min with a 6 % CV.
    """
    v = np.asarray(values, dtype=float)
    finite = np.flatnonzero(np.isfinite(v))
    if finite.size == 0:
        return np.array([], dtype=int)
    peaks = []
    nadir = v[finite[0]]
    peak_i, rising = -1, False
    for i in range(int(finite[0]) + 1, v.size):
        x = v[i]
        if x != x:  # NaN: a missed draw
            continue
        if not rising:
            if x < nadir:
                nadir = x
            elif x - nadir > max(min_rise * nadir, min_abs):
                rising, peak_i = True, i
        else:
            if x >= v[peak_i]:
                peak_i = i
            elif v[peak_i] - x > max(min_rise * x, min_abs):
                peaks.append(peak_i)
                rising, nadir = False, x
    return np.array(peaks, dtype=int)


def first_time_below(t: np.ndarray, values: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, the first time the series is below threshold (NaN if never)."""
    below = np.asarray(values) < threshold
    idx = np.argmax(below, axis=1)
    return np.where(below.any(axis=1), np.asarray(t)[idx], np.nan)


def first_time_at_or_above(t: np.ndarray, values: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, the first time the series is at or above threshold (NaN if never)."""
    above = np.asarray(values) >= threshold
    idx = np.argmax(above, axis=1)
    return np.where(above.any(axis=1), np.asarray(t)[idx], np.nan)
