"""Regimen scenarios against published numbers (docs/validation.md: S7, S9, S10, S12, S13).

Each runs a shipped example scenario (examples/*.toml) at N = 200, as a user would.
"""

from dataclasses import replace

import numpy as np
import pytest

from pulsehpg import load_scenario, run
from pulsehpg.outcomes import fraction_by, kaplan_meier

MONTH = 30.4375


def _with_hcg_dose(scenario, dose):
    phase = scenario.phases[1]
    drugs = tuple(replace(d, dose=float(dose)) if d.drug == "hcg" else d
                  for d in phase.drugs if d.drug != "hcg" or dose)
    return replace(scenario, phases=(scenario.phases[0], replace(phase, drugs=drugs)))


def _baseline_ratio(result, key):
    base = result.visits[key][:, 0]  # the baseline visit at t = 0
    return np.median(result.outcomes[f"end_{key}"] / base) if key != "itt" else None


# --- S7: low-dose hCG during TRT (Coviello 2005) -------------------------------------------
@pytest.fixture(scope="module")
def coviello():
    sc = load_scenario("examples/hcg-during-trt.toml")
    untreated = run(replace(sc, phases=sc.phases[:1]), n=200, threads=2)
    itt0 = untreated.outcomes["end_itt"]
    arms = {}
    for dose in (0, 125, 250, 500):
        r = run(_with_hcg_dose(sc, dose), n=200, threads=2)
        arms[dose] = (r, np.median(r.outcomes["end_itt"] / itt0))
    return untreated, arms


def test_s7_trt_alone_suppresses_gonadotropins_and_itt(coviello):
    untreated, arms = coviello
    r, itt_ratio = arms[0]
    assert 0.03 <= itt_ratio <= 0.12  # ITT -94 %
    lh = np.median(r.outcomes["end_lh"] / untreated.outcomes["end_lh"])
    fsh = np.median(r.outcomes["end_fsh"] / untreated.outcomes["end_fsh"])
    assert lh < 0.10 and fsh < 0.10  # LH about 5 %, FSH about 3 % of baseline


def test_s7_hcg_restores_itt_monotonically(coviello):
    _, arms = coviello
    ratios = [arms[d][1] for d in (0, 125, 250, 500)]
    assert 0.60 <= ratios[1] <= 0.90  # 125 IU: 0.75 +/- 0.15
    # no published tolerance for these two arms: +/- 0.25 (docs/validation.md)
    assert 0.68 <= ratios[2] <= 1.18  # 250 IU: -7 %
    assert 1.01 <= ratios[3] <= 1.51  # 500 IU: +26 %
    assert all(a < b for a, b in zip(ratios, ratios[1:]))


# --- S9: spontaneous recovery after 12 months of TE 200 mg weekly (Liu 2006) ---------------
@pytest.fixture(scope="module")
def liu():
    return run("examples/trt-recovery.toml", n=200, threads=2)


def test_s9_recovery_curve(liu):
    # Liu 2006's recovery: to 20 M/mL, or to the man's baseline if that is lower
    t, e = liu.outcomes["days_to_sperm_recovered_20"], liu.outcomes["event_sperm_recovered_20"]
    assert 0.59 <= fraction_by(t, e, 6 * MONTH) <= 0.75
    assert 0.85 <= fraction_by(t, e, 12 * MONTH) <= 0.95
    assert fraction_by(t, e, 16 * MONTH) >= 0.92
    assert fraction_by(t, e, 24 * MONTH) >= 0.98


def _km_median(t, e):
    ts, fs = kaplan_meier(t, e)
    return ts[np.searchsorted(fs, 0.5)]


def test_s9_median_and_order_of_thresholds(liu):
    o = liu.outcomes
    medians = [_km_median(o[f"days_to_sperm_recovered_{k}"], o[f"event_sperm_recovered_{k}"])
               for k in (1, 5, 20)]
    assert 2.8 * MONTH <= medians[-1] <= 4.0 * MONTH  # 3.4 +/- 0.6 months
    assert medians[0] <= medians[1] <= medians[2]


def test_s9_longer_treatment_slows_recovery():
    sc = load_scenario("examples/trt-recovery.toml")
    short = replace(sc, phases=(replace(sc.phases[0], duration=sc.phases[0].duration / 4),
                                sc.phases[1]))
    t_long = run(sc, n=100, threads=2).outcomes
    t_short = run(short, n=100, threads=2).outcomes
    key = "sperm_recovered_20"
    assert fraction_by(t_short[f"days_to_{key}"], t_short[f"event_{key}"], 6 * MONTH) > \
        fraction_by(t_long[f"days_to_{key}"], t_long[f"event_{key}"], 6 * MONTH)


# --- S10: hCG after TRT against stopping alone (Wenker 2015; Kohn 2017) --------------------
def test_s10_hcg_brings_first_sperm_sooner_than_stopping_alone():
    from pulsehpg import validation

    sim = validation.simulate("examples/validation/S10-hcg-recovery.toml", threads=2)
    assert sim.point("faster_than_spontaneous") <= 0.75  # >= 25 % shorter
    assert sim.point("sperm_by_12_months") >= 0.90
    # Wenker 2015: men below 1 M/mL on TRT, return of spermatogenesis in 4.6 +/- 1.5 months
    assert 3.1 <= sim.point("months_to_return") <= 6.1


# --- S12: clomiphene in mild secondary hypogonadism (Shabsigh 2005; Helo 2017) -------------
def test_s12_clomiphene_raises_lh_and_estradiol():
    r = run("examples/clomiphene-hypogonadism.toml", n=200, threads=2)
    base = {k: r.visits[k][:, 0] for k in ("lh", "t_total", "e2")}
    assert 180 <= np.median(base["t_total"]) <= 280  # baseline about 200-250 ng/dL
    last = {k: r.visits[k][np.arange(r.cohort.n), r.regimen.visit_count - 1] for k in base}
    lh = np.median(last["lh"] / base["lh"])
    e2 = np.median(last["e2"] / base["e2"])
    t = np.median(last["t_total"] / base["t_total"])
    assert 1.3 <= lh <= 2.0
    assert 1.5 <= e2 <= 2.5
    assert 2.0 <= t <= 2.7
    assert 450 <= np.median(last["t_total"]) <= 650


# --- S13: SERMs in idiopathic oligozoospermia (Chua 2013) ----------------------------------
def test_s13_serm_improves_sperm_and_raises_fsh_and_t():
    r = run("examples/serm-oligozoospermia.toml", n=200, threads=2)
    first = {k: r.visits[k][:, 0] for k in ("sperm_conc", "motility", "fsh", "t_total")}
    last = {k: r.visits[k][np.arange(r.cohort.n), r.regimen.visit_count - 1] for k in first}
    d_sperm = np.nanmean(last["sperm_conc"] - first["sperm_conc"])
    d_fsh = np.nanmean(last["fsh"] - first["fsh"])
    assert 2.0 <= d_sperm <= 8.4  # +5.2 M/mL
    assert np.nanmean(last["t_total"] - first["t_total"]) > 0  # T up
    assert 2.0 <= d_fsh <= 6.3  # +4.2 IU/L


def test_sperm_thresholds_are_absolute_and_recovery_needs_a_baseline():
    """Men without baseline spermatogenesis (CHH) reach 20 M/mL only when a semen analysis
    shows 20 M/mL; 'recovered to baseline' is not defined for them."""
    r = run("examples/gonadorelin-chh.toml", n=20, threads=2)
    o, labs, times = r.outcomes, r.regimen.visit_labs["sperm_conc"], r.regimen.visit_time
    assert np.all(o["baseline_sperm_conc"] < 1.0)
    t, e = o["days_to_sperm_ge_20"], o["event_sperm_ge_20"]
    for i in range(r.cohort.n):
        seen = np.flatnonzero(labs[i] >= 20.0)
        assert e[i] == (seen.size > 0)
        if seen.size:
            first = (times[i, seen[0]] - o["time_zero_h"][i]) / 24.0
            assert t[i] == pytest.approx(first)
    assert np.all(np.isnan(o["days_to_sperm_recovered_20"]))
    assert not o["event_sperm_recovered_20"].any()
    # undefined for everyone: no fraction, not a fraction of 0
    assert np.isnan(fraction_by(o["days_to_sperm_recovered_20"],
                                o["event_sperm_recovered_20"], 6 * MONTH))
    follow = o["follow_up_days"]
    assert fraction_by(t, e, 180.0, follow) > 0
    assert np.isnan(fraction_by(t, e, 12 * MONTH, follow))  # past everyone's follow-up
