"""Per-patient outcomes of a regimen and cohort Kaplan-Meier curves."""

from __future__ import annotations

import numpy as np

__all__ = ["SPERM_THRESHOLDS", "RECOVERY_BASELINE_MIN", "LH_NORMAL", "T_NORMAL", "time_to_event",
           "kaplan_meier", "fraction_by", "patient_outcomes"]

SPERM_THRESHOLDS = (1.0, 5.0, 15.0, 20.0)  # M/mL
# the lowest baseline a man can "recover to": below it (CHH, azoospermia) there is no
# baseline spermatogenesis to return to, and sperm_recovered_* is not defined for him
RECOVERY_BASELINE_MIN = 1.0  # M/mL
LH_NORMAL = 1.5  # IU/L, lower reference limit
T_NORMAL = 264.0  # ng/dL, Travison 2017 lower limit


def time_to_event(times: np.ndarray, hit: np.ndarray, t0: np.ndarray, valid: np.ndarray):
    """First visit at or after t0 where ``hit`` holds, in days after t0.

    Returns (time, event): time of the event, or of the last valid visit (censored).
    Patients with no valid visit after t0 get NaN.
    """
    after = (times >= t0[:, None] - 1e-9) & valid
    ev = hit & after
    has = ev.any(axis=1)
    first = np.where(has, times[np.arange(times.shape[0]), np.argmax(ev, axis=1)], np.nan)
    last = np.where(after, times, -np.inf).max(axis=1)
    t = np.where(has, first, np.where(np.isfinite(last), last, np.nan))
    return (t - t0) / 24.0, has


def kaplan_meier(time: np.ndarray, event: np.ndarray):
    """Product-limit estimate of the fraction *with* the event by time t.

    Returns (t, fraction) at the distinct event times (NaN times are excluded).
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)  # 0/1 flags index, and ~ flips bits, otherwise
    ok = np.isfinite(time)
    t, e = time[ok], event[ok]
    order = np.lexsort((~e, t))  # events before censorings at equal times
    t, e = t[order], e[order]
    at_risk = t.size - np.arange(t.size)
    surv, ts, fs = 1.0, [], []
    for ti in np.unique(t[e]):
        d = np.sum((t == ti) & e)
        n = at_risk[np.searchsorted(t, ti)]
        surv *= 1.0 - d / n
        ts.append(ti)
        fs.append(1.0 - surv)
    return np.array(ts), np.array(fs)


def fraction_by(time: np.ndarray, event: np.ndarray, at: float,
                follow: np.ndarray | None = None) -> float:
    """Kaplan-Meier fraction with the event by time ``at``.

    NaN when no patient has a time (an outcome not defined for any of them, such as
    recovery to a baseline they lack). With ``follow`` (each patient's follow-up, in the
    unit of ``time``), also NaN when ``at`` lies after everyone's follow-up while some are
    without the event: the estimate would only repeat its last value.
    """
    time = np.asarray(time, dtype=float)
    ok = np.isfinite(time)
    if not ok.any():
        return float("nan")
    ts, fs = kaplan_meier(time, event)
    if follow is not None:
        followed = np.asarray(follow, dtype=float)[ok]
        done = fs.size and fs[-1] >= 1.0 - 1e-12  # every patient had it: stays at 1
        if not done and not np.nanmax(followed, initial=-np.inf) >= at - 1e-9:
            return float("nan")
    k = np.searchsorted(ts, at, side="right")
    return float(fs[k - 1]) if k > 0 else 0.0


def patient_outcomes(run, end_obs: dict[str, np.ndarray],
                     baseline_sperm: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Outcome table (1-D per patient) of a finished RegimenRun.

    Times are days from time zero to the first visit at or after it where the event is
    seen (a visit at exactly time zero counts, also one that closes the phase before it),
    else to the last such visit (censored). ``nadir_*`` and ``peak_*`` are over all visits,
    those before time zero included.

    ``sperm_ge_<thr>``: the first semen analysis with at least ``thr`` M/mL.
    ``sperm_recovered_<thr>``: recovery as Liu 2006 defines it, to ``thr`` or to the
    man's own baseline concentration (true value at the cohort's start) when that is
    lower; not defined for a baseline below ``RECOVERY_BASELINE_MIN`` or without one
    (``baseline_sperm`` None): time NaN, which Kaplan-Meier estimates leave out, and event
    False (a yes/no column has no missing value; read the time, not the event).
    """
    sc = run.scenario
    n = run.n
    if sc.time_zero_phase:
        t0 = run.entered[sc.time_zero_phase] + sc.time_zero_offset
    else:
        t0 = np.full(n, sc.time_zero_offset)
    times = run.visit_time
    labs = run.visit_labs
    out: dict[str, np.ndarray] = {"time_zero_h": t0}
    # how long after time zero the run followed the patient (to the end of his regimen,
    # which a rule may bring forward): a fraction "by" a later time would only repeat the
    # last one
    end = np.where(np.isfinite(run.ended_at), np.minimum(run.ended_at, run.horizon),
                   run.horizon)
    out["follow_up_days"] = (end - t0) / 24.0
    semen = np.isfinite(labs["sperm_conc"])
    base = np.full(n, np.nan) if baseline_sperm is None else baseline_sperm
    out["baseline_sperm_conc"] = base
    has_base = base >= RECOVERY_BASELINE_MIN  # False for NaN
    for thr in SPERM_THRESHOLDS:
        t, ev = time_to_event(times, labs["sperm_conc"] >= thr, t0, semen)
        out[f"days_to_sperm_ge_{thr:g}"], out[f"event_sperm_ge_{thr:g}"] = t, ev
        target = np.minimum(thr, np.where(has_base, base, thr))[:, None]
        t, ev = time_to_event(times, labs["sperm_conc"] >= target, t0, semen)
        key = f"sperm_recovered_{thr:g}"
        out[f"days_to_{key}"] = np.where(has_base, t, np.nan)
        out[f"event_{key}"] = ev & has_base
    t, ev = time_to_event(times, labs["sperm_conc"] > 0, t0, semen)
    out["days_to_sperm_present"], out["event_sperm_present"] = t, ev
    for name, lab, thr in (("lh_normal", "lh", LH_NORMAL), ("t_normal", "t_total", T_NORMAL)):
        t, ev = time_to_event(times, labs[lab] >= thr, t0, np.isfinite(labs[lab]))
        out[f"days_to_{name}"], out[f"event_{name}"] = t, ev
    with np.errstate(all="ignore"):
        for k, v in labs.items():
            has = np.isfinite(v).any(axis=1)
            out[f"nadir_{k}"] = np.where(has, np.nanmin(np.where(np.isfinite(v), v, np.inf), 1),
                                         np.nan)
            out[f"peak_{k}"] = np.where(has, np.nanmax(np.where(np.isfinite(v), v, -np.inf), 1),
                                        np.nan)
    for k, v in end_obs.items():
        out[f"end_{k}"] = v
    out["ended_at_h"] = run.ended_at
    for key in run.rule_first:
        out[f"rule_{key}_first_h"] = run.rule_first[key]
        out[f"rule_{key}_count"] = run.rule_count[key].astype(float)
    return out
