"""The compiled core against the independent SciPy reference (pulsehpg.reference).

Every phenotype without drugs, and every drug on a eugonadal patient at realistic
doses and schedules (plus a gonadorelin pump, a continuous gonadorelin infusion
and an hCG infusion), is simulated for 30 days by a deterministic one-patient
Cohort and by :func:`pulsehpg.reference.run` from the same snapshot with the same
dosing. Every observable, sampled every 15 min, must agree to a relative error of
1e-4:

    |core - reference| <= 1e-4 * max(|reference|, floor)

The floor only avoids 0/0 for quantities that are (about) zero, such as sperm in
CHH or a drug that was never given; it is 1e-3 of the observable's normal value
(for drugs, of a typical therapeutic level), listed in NORMAL.

The core runs with ``Numerics.accurate()``; the default, four times cheaper ladder
is held to the bounds its docstring states (pulsehpg.cohort.Numerics documents the
accuracy/steps trade-off measured here). In deterministic mode pulses form a
regular train, so pulse times carry no integration error and the comparison is
pointwise. The tests hold for any parameter values (the calibration changes):
they do not look at the physiology, only at how exactly the core integrates it.
"""

from __future__ import annotations

import numpy as np
import pytest

from pulsehpg import DRUG_NAMES, OBSERVABLES, PHENOTYPES, Cohort, Numerics
from pulsehpg.reference import run

DAYS = 30
T_END = DAYS * 24.0
EVERY = 0.25  # sampling interval, h (15 min)
RTOL = 1e-4

# A normal value of each observable (adult man; for a drug, a typical level on
# its regimen below), rounded down, in the observable's unit. The floor is 1e-3
# of it: it only matters where a quantity is (near) zero.
NORMAL = {
    "lh": 3.0,  # IU/L
    "fsh": 3.0,  # IU/L
    "t_total": 500.0,  # ng/dL
    "t_free": 60.0,  # pg/mL
    "e2": 20.0,  # pg/mL
    "itt": 800.0,  # nmol/L
    "inhibin_b": 100.0,  # pg/mL
    "sperm_conc": 30.0,  # M/mL
    "motility": 50.0,  # %
    "gnrhr_active": 0.8,  # fraction
    "lhr_functional": 0.9,  # fraction
    "leydig_capacity": 0.5,  # fraction
    "sertoli_function": 0.5,  # fraction
    "spermatogonial_activity": 0.25,  # fraction
    "hcg": 20.0,  # IU/L, on 1500 IU twice weekly
    "gonadorelin": 5.0,  # pg/mL, on a 5 ug / 90 min pump
    "clomiphene": 10.0,  # ng/mL, on 25 mg/day
    "tamoxifen": 100.0,  # ng/mL, on 20 mg/day
    "anastrozole": 20.0,  # ng/mL, on 1 mg/day
}
FLOOR = {k: 1e-3 * v for k, v in NORMAL.items()}


def _every(first_day: float, period_h: float, clock_h: float = 0.0):
    """Times (h): day first_day at clock_h, then every period_h, within the run."""
    return [t for t in np.arange(first_day * 24.0 + clock_h, T_END, period_h)]


def _weekly(days_of_week, clock_h: float):
    """Times (h) on the given days of each week (0 = the first day) at clock_h."""
    return sorted(t for w in range(DAYS // 7 + 1) for dw in days_of_week
                  if (t := 168.0 * w + 24.0 * dw + clock_h) < T_END)


# Regimens. doses: (time_h, drug, amount); infusions: (time_h, drug, rate per h);
# pumps: (time_h, drug, dose, interval_h), interval 0 stops the pump. Some times sit
# on the 15-min sample grid (sample first, then dose), some between samples.
BOLUS = {
    "testosterone_enanthate": [(t, "testosterone_enanthate", 200.0)
                               for t in _every(1, 14 * 24.0, 9 + 10 / 60)],
    "testosterone_cypionate": [(t, "testosterone_cypionate", 200.0)
                               for t in _every(1, 14 * 24.0, 9 + 10 / 60)],
    "testosterone_gel": [(t, "testosterone_gel", 50.0) for t in _every(0, 24.0, 7.5)],
    "gonadorelin": [(t, "gonadorelin", 100.0) for t in (2 * 24 + 9.0, 12 * 24 + 9.0,
                                                       22 * 24 + 9.0)],
    "gonadorelin_iv": [(t, "gonadorelin_iv", 100.0) for t in (2 * 24 + 9.0, 12 * 24 + 9.0,
                                                             22 * 24 + 9.0 + 1 / 7)],
    "hcg": [(t, "hcg", 1500.0) for t in _every(1, 84.0, 20.0)],
    "fsh": [(t, "fsh", 150.0) for t in _weekly((0, 2, 4), 20.0)],
    "hmg": [(t, "hmg", 75.0) for t in _weekly((0, 2, 4), 20.0)],
    "clomiphene": [(t, "clomiphene", 25.0) for t in _every(0, 24.0, 8.0)],
    "tamoxifen": [(t, "tamoxifen", 20.0) for t in _every(0, 24.0, 8.0)],
    "anastrozole": [(t, "anastrozole", 1.0) for t in _every(0, 24.0, 8.0)],
}

CASES = {ph: {"phenotype": ph} for ph in PHENOTYPES}
CASES |= {f"bolus-{drug}": {"doses": BOLUS[drug]} for drug in BOLUS}
CASES |= {
    # pulsatile gonadorelin, 5 ug every 90 min from day 1, stopped on day 20
    "pump-gonadorelin": {"pumps": [(24.0, "gonadorelin", 5.0, 1.5),
                                   (20 * 24.0 + 3.3, "gonadorelin", 0.0, 0.0)]},
    # the same as treatment of CHH
    "pump-gonadorelin-chh": {"phenotype": "chh",
                             "pumps": [(24.0 + 1 / 3, "gonadorelin", 5.0, 1.5)]},
    # continuous gonadorelin (desensitizes the gonadotroph) on days 3-12
    "infusion-gonadorelin": {"infusions": [(3 * 24.0, "gonadorelin", 5.0),
                                           (12 * 24.0 + 0.1, "gonadorelin", 0.0)]},
    # hCG by infusion: started, raised, stopped
    "infusion-hcg": {"infusions": [(2 * 24.0, "hcg", 10.0), (9 * 24.0 + 5.0, "hcg", 25.0),
                                   (20 * 24.0, "hcg", 0.0)]},
    # CHH on hCG and FSH together
    "chh-hcg-fsh": {"phenotype": "chh", "doses": BOLUS["hcg"] + BOLUS["fsh"]},
}


def simulate_core(phenotype="eugonadal", doses=(), infusions=(), pumps=(), numerics=None):
    """Run a case on a deterministic one-patient Cohort: (start snapshot, times, values)."""
    c = Cohort(1, phenotype, seed=0, deterministic=True, numerics=numerics)
    snap = c.snapshot(0)
    c.record(every=EVERY)
    actions = sorted([(t, 0, i, "dose", a) for i, (t, *a) in enumerate(doses)]
                     + [(t, 1, i, "infusion", a) for i, (t, *a) in enumerate(infusions)]
                     + [(t, 2, i, "pump", a) for i, (t, *a) in enumerate(pumps)])
    for t, _, _, kind, a in actions:
        c.advance_to(t)
        if kind == "dose":
            c.dose(a[0], a[1])
        elif kind == "infusion":
            c.start_infusion(a[0], a[1])
        elif a[2] > 0:
            c.set_pump(a[0], a[1], a[2])
        else:
            c.stop_pump(a[0])
    c.advance_to(T_END)
    times, tr = c.trace()
    return snap, times, np.stack([tr[o][0] for o in OBSERVABLES], axis=1)


def compare(case: dict, numerics=Numerics.accurate()):
    """Max relative error per observable of the core against the reference, and the runs."""
    snap, times, core = simulate_core(numerics=numerics, **case)
    np.testing.assert_allclose(times, np.arange(1, round(T_END / EVERY) + 1) * EVERY,
                               rtol=0, atol=1e-9)
    ref = run(snap, T_END, times, doses=case.get("doses", ()),
              infusions=case.get("infusions", ()), pumps=case.get("pumps", ())).outputs
    floor = np.array([FLOOR[o] for o in OBSERVABLES])
    rel = np.abs(core - ref) / np.maximum(np.abs(ref), floor)
    return {o: float(rel[:, k].max()) for k, o in enumerate(OBSERVABLES)}, times, core, ref


def test_regimens_cover_drugs_and_floors_cover_observables():
    assert set(BOLUS) == set(DRUG_NAMES)
    assert set(FLOOR) == set(OBSERVABLES)


@pytest.mark.parametrize("name", ["eugonadal", "bolus-testosterone_enanthate", "pump-gonadorelin-chh"])
def test_default_numerics_error_is_as_documented(name):
    """The default (4x cheaper) ladder: about 1e-4 for a healthy man, 1e-2 at worst.

    Samples are read off the patient's own step ladder (they do not shorten its
    steps), so the error seen here is the ladder's own."""
    errors, *_ = compare(CASES[name], numerics=Numerics())
    bound = 2e-4 if name == "eugonadal" else 1e-2
    assert max(errors.values()) <= bound, errors


@pytest.mark.parametrize("name", list(CASES))
def test_core_matches_reference(name):
    errors, _times, core, ref = compare(CASES[name])
    assert np.all(np.isfinite(core)) and np.all(np.isfinite(ref))
    bad = {o: e for o, e in errors.items() if not e <= RTOL}
    assert not bad, f"{name}: relative error above {RTOL:g}: " + ", ".join(
        f"{o} {e:.2e}" for o, e in bad.items())


# --- the reference itself ----------------------------------------------------------------
def _snapshot(phenotype="eugonadal"):
    return Cohort(1, phenotype, seed=0, deterministic=True).snapshot(0)


def test_reference_is_converged():
    """Its own error is far below the 1e-4 it holds the core to (2 days, with boluses)."""
    snap = _snapshot()
    times = np.arange(1, 2 * 96 + 1) * EVERY
    doses = [(20.0, "gonadorelin", 100.0), (30.1, "hcg", 1500.0)]
    a = run(snap, 48.0, times, doses=doses).outputs
    b = run(snap, 48.0, times, doses=doses, rtol=1e-12).outputs
    floor = np.array([FLOOR[o] for o in OBSERVABLES])
    assert np.max(np.abs(a - b) / np.maximum(np.abs(b), floor)) <= 1e-7


def test_reference_event_order_and_pending_events():
    snap = _snapshot()
    t_pulse = snap["next_pulse"]
    # a pump whose first bolus coincides with the endogenous pulse: the pulse goes first;
    # both are due exactly at t_end, so both stay pending
    pumps = [(t_pulse, "gonadorelin", 5.0, 1.5)]
    first = run(snap, t_pulse, [t_pulse], pumps=pumps)
    assert first.n_pulses == 0 and first.final["next_pulse"] == t_pulse
    assert first.final["pump_next"][DRUG_NAMES.index("gonadorelin")] == t_pulse
    second = run(first.final, t_pulse + 6.0, [t_pulse + 6.0])
    kinds = [(t, k) for t, k, _ in second.events[:2]]
    assert kinds == [(t_pulse, "pulse"), (t_pulse, "pump")]
    # stopping at the event and going on gives the trajectory of one run (up to the
    # tolerances: the absolute tolerances are scaled by the state at the start)
    whole = run(snap, t_pulse + 6.0, [t_pulse, t_pulse + 6.0], pumps=pumps)
    np.testing.assert_array_equal(whole.outputs[0], first.outputs[0])
    np.testing.assert_allclose(whole.outputs[1], second.outputs[0], rtol=1e-9)


def test_reference_samples_before_doses_at_the_same_time():
    snap = _snapshot()
    k = OBSERVABLES.index("hcg")
    out = run(snap, 24.5, [24.0, 24.25, 24.5], doses=[(24.0, "hcg", 1500.0)],
              infusions=[(24.25, "hcg", 100.0)]).outputs
    assert out[0, k] == 0.0 and out[1, k] > 0.0
    no_infusion = run(snap, 24.5, [24.25, 24.5], doses=[(24.0, "hcg", 1500.0)]).outputs
    # the infusion changes nothing before it starts (up to the solver's tolerance: the
    # integration stops at 24.25 h in one run and interpolates there in the other)
    assert out[1, k] == pytest.approx(no_infusion[0, k], rel=1e-9)
    assert out[2, k] > no_infusion[1, k] * (1 + 1e-6)


def test_reference_rejects_what_it_cannot_do():
    stochastic = Cohort(1, seed=0).snapshot(0)
    with pytest.raises(ValueError, match="deterministic"):
        run(stochastic, 1.0)
    snap = _snapshot()
    with pytest.raises(ValueError, match="unknown drug 'aspirin'"):
        run(snap, 1.0, doses=[(0.5, "aspirin", 1.0)])
    with pytest.raises(ValueError, match="samples"):
        run(snap, 1.0, [0.5, 0.25])
    with pytest.raises(ValueError, match="t_end"):
        run(snap, snap["t"] - 1.0)
