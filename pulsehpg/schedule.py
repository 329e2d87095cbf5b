"""Dosing schedules as clinicians write them ("weekly", "every 90 min", "continuous")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .units import UNITS, parse_duration

__all__ = ["Schedule", "parse_schedule", "PUMP_MAX_INTERVAL"]

PUMP_MAX_INTERVAL = 8.0  # h: shorter intervals run as core pump events (no Python per bolus)
_NAMED = {
    "daily": (24.0, (0.0,)),
    "once daily": (24.0, (0.0,)),
    "twice daily": (24.0, (0.0, 12.0)),
    "every other day": (48.0, (0.0,)),
    "twice weekly": (168.0, (0.0, 72.0)),  # Monday and Thursday
    "three times weekly": (168.0, (0.0, 48.0, 96.0)),  # Monday, Wednesday, Friday
    "weekly": (168.0, (0.0,)),
    "every 2 weeks": (336.0, (0.0,)),
    "monthly": (730.5, (0.0,)),
}
ALLOWED = ("'continuous', 'once', 'daily', 'twice daily', 'every other day', 'twice weekly', "
           "'three times weekly', 'weekly', 'every 2 weeks', 'monthly', "
           "'every <duration>' (e.g. 'every 90 min')")


@dataclass(frozen=True)
class Schedule:
    """When a drug is given, relative to the start of its phase (hours).

    kind 'cycle': doses at ``offsets`` within each ``period``; 'pump': a bolus every
    ``period`` run inside the core; 'continuous': an infusion; 'once': one dose.
    """

    kind: str
    period: float = 0.0
    offsets: tuple[float, ...] = (0.0,)
    text: str = ""

    def times(self, start: float, end: float) -> list[float]:
        """Dose times in [start, end) for kinds 'cycle' and 'once'."""
        if self.kind == "once":
            return [start] if start < end else []
        out, base = [], start
        while base < end:
            out.extend(base + o for o in self.offsets if base + o < end)
            base += self.period
        return out


def parse_schedule(text, what: str = "schedule") -> Schedule:
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected a string such as 'weekly', got {text!r}")
    key = " ".join(text.lower().split())
    if key == "continuous":
        return Schedule("continuous", text=text)
    if key == "once":
        return Schedule("once", text=text)
    if key in _NAMED:
        period, offsets = _NAMED[key]
        return Schedule("cycle", period, offsets, text)
    m = re.fullmatch(r"every (.+)", key)
    if m:
        try:
            period = parse_duration(m.group(1), what)
        except ValueError:
            raise ValueError(f"{what}: cannot read {m.group(1)!r} in {text!r} as a duration; "
                             f"write 'every' and a number and a unit ({UNITS}), e.g. "
                             f"'every 90 min' or 'every 3 days'; other schedules: "
                             f"{ALLOWED}") from None
        if period < 0.25:
            raise ValueError(f"{what}: {text!r} is more often than every 15 min; use "
                             f"'continuous' for an infusion")
        kind = "pump" if period <= PUMP_MAX_INTERVAL else "cycle"
        return Schedule(kind, period, (0.0,), text)
    raise ValueError(f"{what}: cannot read {text!r}; allowed: {ALLOWED}")
