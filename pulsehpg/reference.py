"""An independent reference integration of one patient's deterministic model.

The compiled core (:mod:`pulsehpg._core`, ``csrc/engine.h``) integrates the model
with a fixed step ladder and an exponential Runge-Kutta scheme tuned for speed.
This module integrates the *same equations* in a completely different way, so
that ``tests/test_reference.py`` can hold the core to it:

* the right-hand side is the plain-Python translation of :mod:`pulsehpg.model`
  made by :func:`pulsehpg.codegen.python_functions` (``rate`` and ``derived``),
  in the textbook form ``dy/dt = rate(y) - clearance * y``;
* between events, :func:`scipy.integrate.solve_ivp` (DOP853 by default, tight
  relative tolerance, per-state absolute tolerance, adaptive steps) integrates,
  and its dense output gives the observables at sample times;
* every discontinuity is an exact event: GnRH pulses (deterministic renewal
  process), pump boluses, extra doses, infusion-rate and pump changes. The
  integration always stops at an event and restarts from the updated state.

Nothing here calls into :mod:`pulsehpg._core`.

Event semantics (the same as the core's: ``csrc/engine.h`` and :class:`pulsehpg.Cohort`)
----------------------------------------------------------------------------------------
At one time ``t`` events happen in this order:

1. observables sampled at ``t`` (they see the state before anything else at ``t``);
2. user actions at ``t``, in the order given: extra doses, infusion-rate changes
   and pump changes (in a cohort these are calls between ``advance_to`` calls, so
   they come after the samples of the call that ended at ``t`` and before the
   events that call left pending);
3. the endogenous GnRH pulse, if one is due at ``t``;
4. pump boluses due at ``t``, in drug order (:data:`pulsehpg.DRUG_NAMES`).

A pulse or pump bolus due exactly at ``t_end`` is left pending (it stays in the
final snapshot and fires first in a following :func:`run`); samples at ``t_end``
are taken and user actions at ``t_end`` are applied to the final state.

Deterministic pulses: at a pulse, ``g = pulse_law(y)`` gives the mean mass
``g[1]`` and, in ``g[4]``, the interval of deterministic mode: a regular train
(the mean interval at the reference feedback), so that pulse times carry no
integration error. If ``g[1] > 0`` the pulse is applied (``apply_pulse``: the
mass goes into portal GnRH and the pulse is counted for frequency sensing); the
next pulse is due at ``t + g[4]``, or never if the patient's
``hypothalamus.gnrh_present`` is <= 0. A pump bolus is ``dose`` of the pump's
drug; the pump's next bolus is then due one interval later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import solve_ivp

from . import model
from .codegen import LAYOUT, python_functions
from .params import BY_NAME

__all__ = ["RefResult", "run", "simulate"]

DRUG_NAMES = tuple(d.name for d in model.DRUGS)
NS = len(LAYOUT.states)
NP = len(LAYOUT.params)
NI = len(LAYOUT.inputs)
NO = len(LAYOUT.outputs)
ND = LAYOUT.n_derived
_GNRH_ON = LAYOUT.param_index(BY_NAME["hypothalamus.gnrh_present"].sym)
# pulse_law fills: mean interval, mean mass, interval shape, mass CV, regular interval,
# the mass's log-normal sigma^2 and sigma (the stochastic draws; unused here)
_N_PULSE = len(LAYOUT.pulse)
_MASS, _REGULAR_INTERVAL = 1, 4
if _N_PULSE != 7:
    raise ImportError(f"pulsehpg.reference: pulse_law now fills {_N_PULSE} values, not 7; "
                      "update the reference to the model's pulse generator")
# Natural magnitude of each state (the model's starting guess; 0 for drug compartments).
_STATE_SCALE = np.array([abs(s.init) for s in model.STATES])

_FUNCS: dict | None = None


def _funcs() -> dict:
    """The generated Python model functions (built once, on first use)."""
    global _FUNCS
    if _FUNCS is None:
        _FUNCS = python_functions()
    return _FUNCS


@dataclass
class RefResult:
    """Observables at the sample times and the patient at ``t_end``.

    ``final`` has the keys of :meth:`pulsehpg.Cohort.snapshot`, so it can start
    a following :func:`run`.
    """

    times: np.ndarray  # (n_samples,) hours
    outputs: np.ndarray  # (n_samples, n_outputs); columns in pulsehpg.OBSERVABLES order
    final: dict
    n_pulses: int = 0  # endogenous pulses fired
    n_rhs: int = 0  # right-hand-side evaluations
    events: list = field(default_factory=list)  # (time, kind, drug) of every discrete event


def _drug_index(drug, what: str) -> int:
    try:
        return DRUG_NAMES.index(drug)
    except ValueError:
        raise ValueError(f"{what}: unknown drug {drug!r}; allowed: {', '.join(DRUG_NAMES)}") \
            from None


def _actions(doses, infusions, pumps, t0: float, t_end: float) -> list[tuple]:
    """User actions as (time, seq, kind, drug index, *values), sorted by time, then as given."""
    acts = []
    for kind, items, width in (("dose", doses, 3), ("infusion", infusions, 3),
                               ("pump", pumps, 4)):
        for item in items:
            if len(item) != width:
                raise ValueError(f"{kind}s: expected tuples of {width} items, got {item!r}")
            t = float(item[0])
            if not (math.isfinite(t) and t0 <= t <= t_end):
                raise ValueError(f"{kind}s: time {item[0]!r} is outside [{t0:g}, {t_end:g}] h")
            j = _drug_index(item[1], f"{kind}s")
            vals = [float(v) for v in item[2:]]
            if not all(math.isfinite(v) and v >= 0 for v in vals):
                raise ValueError(f"{kind}s: amounts must be finite and >= 0, got {item!r}")
            acts.append((t, len(acts), kind, j, *vals))
    acts.sort(key=lambda a: (a[0], a[1]))
    return acts


def run(snapshot: dict, t_end: float, samples=(), doses=(), infusions=(), pumps=(), *,
        method: str = "DOP853", rtol: float = 1e-10, atol_rel: float = 1e-12) -> RefResult:
    """Integrate one patient from ``snapshot`` (:meth:`pulsehpg.Cohort.snapshot`) to ``t_end``.

    Parameters
    ----------
    snapshot : dict
        ``t``, ``y``, ``p``, ``u``, ``next_pulse``, ``pump_next``, ``pump_dose``,
        ``pump_interval`` in core units (hours; parameters as the core uses them)
        and ``deterministic``, which must be True (the reference draws no random
        pulses).
    t_end : float
        End time, hours, >= ``snapshot["t"]``.
    samples : sequence of float
        Ascending sample times in (``snapshot["t"]``, ``t_end``].
    doses : sequence of (time_h, drug, amount)
        Boluses, amount in the drug's unit, like :meth:`pulsehpg.Cohort.dose`.
    infusions : sequence of (time_h, drug, rate)
        The drug's infusion rate (unit/h) from that time on; 0 stops it
        (:meth:`~pulsehpg.Cohort.start_infusion`, :meth:`~pulsehpg.Cohort.stop_infusion`).
    pumps : sequence of (time_h, drug, dose, interval_h)
        Like :meth:`pulsehpg.Cohort.set_pump` (first bolus at that time);
        interval 0 stops the pump (:meth:`~pulsehpg.Cohort.stop_pump`).
    method, rtol, atol_rel
        :func:`scipy.integrate.solve_ivp` method and tolerances. State i gets the
        absolute tolerance ``atol_rel * max(|y_i(t0)|, |init_i|, 1e-6)`` (``init``
        is the model's starting guess, a natural magnitude): with the default
        ``atol_rel`` the control is relative for every state.
    """
    if not snapshot.get("deterministic", False):
        raise ValueError("snapshot: the reference integrates deterministic cohorts only "
                         "(Cohort(..., deterministic=True))")
    f = _funcs()
    rate, derived, outputs_fn = f["rate"], f["derived"], f["outputs"]
    pulse_law, apply_pulse, dose_fn = f["pulse_law"], f["apply_pulse"], f["dose"]

    t = float(snapshot["t"])
    t_end = float(t_end)
    if not t_end >= t:
        raise ValueError(f"t_end: {t_end!r} is before the snapshot time {t:g} h")
    y = np.array(snapshot["y"], dtype=float)
    p = [float(v) for v in snapshot["p"]]
    u = [float(v) for v in snapshot["u"]]
    if y.shape != (NS,) or len(p) != NP or len(u) != NI:
        raise ValueError(f"snapshot: expected {NS} states, {NP} parameters and {NI} inputs")
    next_pulse = float(snapshot["next_pulse"])
    pump_next = [float(v) for v in snapshot["pump_next"]]
    pump_dose = [float(v) for v in snapshot["pump_dose"]]
    pump_interval = [float(v) for v in snapshot["pump_interval"]]
    samples = np.asarray(samples, dtype=float).reshape(-1)
    if samples.size and (not samples[0] > t or samples[-1] > t_end
                         or np.any(np.diff(samples) <= 0)):
        raise ValueError(f"samples: expected ascending times in ({t:g}, {t_end:g}]")
    acts = _actions(doses, infusions, pumps, t, t_end)

    d = [0.0] * ND
    derived(p, d)
    k = np.array(d[:NS])  # the linear clearances
    atol = atol_rel * np.maximum(np.maximum(np.abs(y), _STATE_SCALE), 1e-6)
    r = [0.0] * NS
    n_rhs = 0

    def rhs(_t, yv):
        nonlocal n_rhs
        n_rhs += 1
        rate(yv.tolist(), p, d, u, r)  # lists of floats: much faster than numpy scalars
        return np.array(r) - k * yv

    def observe(yv) -> np.ndarray:
        o = [0.0] * NO
        outputs_fn(yv.tolist(), p, d, u, o)
        return np.array(o)

    out = np.full((samples.size, NO), np.nan)
    ks = ka = n_pulses = 0  # next sample, next user action, pulses so far
    events = []
    while True:
        # The next discontinuity. Pulses and pumps due exactly at t_end stay pending.
        te = t_end
        if ka < len(acts):
            te = min(te, acts[ka][0])
        for tp in [next_pulse] + [pump_next[j] for j in range(NI) if pump_interval[j] > 0.0]:
            if tp < te:
                te = max(tp, t)  # one overdue at the start fires at once
        # Integrate [t, te]; observables at the samples in (t, te].
        if te > t:
            n_in = int(np.searchsorted(samples, te, side="right")) - ks
            sol = solve_ivp(rhs, (t, te), y, method=method, rtol=rtol, atol=atol,
                            dense_output=n_in > 0)
            if not sol.success:
                raise FloatingPointError(f"reference: integration failed after t={t:g} h: "
                                         f"{sol.message}")
            y = sol.y[:, -1].copy()
            for _ in range(n_in):
                ts = samples[ks]
                out[ks] = observe(y if ts == te else sol.sol(ts))  # 1. samples
                ks += 1
            t = te
        # 2. user actions at t
        while ka < len(acts) and acts[ka][0] <= t:
            _, _, kind, j, *vals = acts[ka]
            if kind == "dose":
                if vals[0] > 0.0:
                    dose_fn(y, p, j, vals[0])
            elif kind == "infusion":
                u[j] = vals[0]
            else:
                pump_dose[j], pump_interval[j] = vals
                if pump_interval[j] > 0.0:
                    pump_next[j] = t
            events.append((t, kind, DRUG_NAMES[j]))
            ka += 1
        if t >= t_end:
            break
        # 3. the endogenous GnRH pulse
        if next_pulse <= t:
            g = [0.0] * _N_PULSE
            pulse_law(y.tolist(), p, d, g)
            if g[_MASS] > 0.0:
                apply_pulse(y, p, d, g[_MASS])
            next_pulse = t + g[_REGULAR_INTERVAL] if p[_GNRH_ON] > 0.0 else math.inf
            n_pulses += 1
            events.append((t, "pulse", ""))
        # 4. pump boluses, in drug order
        for j in range(NI):
            if pump_interval[j] > 0.0 and pump_next[j] <= t:
                dose_fn(y, p, j, pump_dose[j])
                pump_next[j] += pump_interval[j]
                events.append((t, "pump", DRUG_NAMES[j]))

    final = {
        "t": t, "y": y.copy(), "p": np.array(p), "u": np.array(u), "next_pulse": next_pulse,
        "pump_next": np.array(pump_next), "pump_dose": np.array(pump_dose),
        "pump_interval": np.array(pump_interval), "deterministic": True,
    }
    return RefResult(samples, out, final, n_pulses, n_rhs, events)


def simulate(snapshot: dict, t_end: float, samples, doses=(), infusions=(), pumps=(),
             **kw) -> np.ndarray:
    """Observables (n_samples, n_outputs) of one patient, columns as :data:`pulsehpg.OBSERVABLES`.

    See :func:`run` for the arguments.
    """
    return run(snapshot, t_end, samples, doses, infusions, pumps, **kw).outputs
