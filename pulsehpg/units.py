"""Durations with units ("90 min", "12 weeks") to the core's hours."""

from __future__ import annotations

import math
import re

__all__ = ["HOURS_PER", "MAX_SPAN_H", "UNITS", "parse_duration"]

HOURS_PER = {
    "min": 1 / 60, "mins": 1 / 60, "minute": 1 / 60, "minutes": 1 / 60,
    "h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0,
    "d": 24.0, "day": 24.0, "days": 24.0,
    "w": 168.0, "wk": 168.0, "wks": 168.0, "week": 168.0, "weeks": 168.0,
    "month": 730.5, "months": 730.5,  # 30.44 days
    "y": 8766.0, "yr": 8766.0, "yrs": 8766.0, "year": 8766.0, "years": 8766.0,
}
# the units an error message lists (each stands for its abbreviations and plurals above)
UNITS = "min, h, day, week, month, year"
# the longest simulated span a config or command accepts (a phase, a follow-up, a run):
# 100 years; longer is a typo, and would not end
MAX_SPAN_H = 100 * HOURS_PER["year"]
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*$")


def parse_duration(value, what: str = "duration") -> float:
    """Return hours from a number (already hours) or a string such as "90 min".

    Raises ValueError naming ``what``, the value and the allowed forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as '90 min' or '12 weeks', got {value!r}")
    if isinstance(value, (int, float)):
        hours = float(value)
    elif isinstance(value, str):
        m = _PATTERN.match(value)
        if not m or m.group(2).lower() not in HOURS_PER:
            raise ValueError(
                f"{what}: cannot read {value!r} as a duration; write a number and a unit "
                f"({UNITS}), e.g. '90 min' or '12 weeks'")
        hours = float(m.group(1)) * HOURS_PER[m.group(2).lower()]
    else:
        raise ValueError(f"{what}: expected a duration such as '90 min', got {value!r}")
    if not math.isfinite(hours) or hours < 0:
        raise ValueError(f"{what}: must be a finite, non-negative duration, got {value!r}")
    return hours
