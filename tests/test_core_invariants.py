"""Invariants of the compiled core that hold whatever the parameter values.

* states and observables stay finite and non-negative, even at 100 times the
  usual dose of every drug;
* time only moves forward;
* a patient is a function of (seed, patient index) only: the same trajectory,
  bit for bit, alone, inside a cohort and on two threads; other seeds differ;
* bad input raises ValueError naming the argument.
"""

from __future__ import annotations

import numpy as np
import pytest

from pulsehpg import DRUG_NAMES, OBSERVABLES, Cohort, Numerics

# Usual single doses (the drug's unit); the overdose test gives 100 times these.
USUAL_DOSE = {
    "testosterone_enanthate": 200.0,  # mg
    "testosterone_cypionate": 200.0,  # mg
    "testosterone_gel": 50.0,  # mg
    "gonadorelin": 100.0,  # ug
    "gonadorelin_iv": 100.0,  # ug
    "hcg": 1500.0,  # IU
    "fsh": 150.0,  # IU
    "hmg": 75.0,  # IU
    "clomiphene": 25.0,  # mg
    "tamoxifen": 20.0,  # mg
    "anastrozole": 1.0,  # mg
}


def test_usual_doses_cover_drugs():
    assert set(USUAL_DOSE) == set(DRUG_NAMES)


def _check_nonnegative_finite(name: str, values: np.ndarray, scale: np.ndarray):
    """values (..., k) finite and >= -1e-12 * scale (per column k)."""
    assert np.all(np.isfinite(values)), f"{name}: non-finite values"
    low = values.reshape(-1, values.shape[-1]).min(axis=0)
    bad = low < -1e-12 * np.maximum(scale, 1e-300)
    assert not np.any(bad), f"{name}: negative values {low[bad]} (scale {scale[bad]})"


@pytest.mark.parametrize("drug", list(DRUG_NAMES) + ["all"])
def test_overdose_stays_nonnegative_and_finite(drug):
    """100x a usual dose, three times, in varied patients (random pulses, variability)."""
    drugs = DRUG_NAMES if drug == "all" else (drug,)
    c = Cohort(4, "eugonadal", seed=11)
    c.record(every="30 min")
    states = [c.state]
    for day in (0, 3, 6):
        c.advance_to(day * 24.0)
        for d in drugs:
            c.dose(d, 100 * USUAL_DOSE[d])
        for t in (day * 24.0 + 0.5, day * 24.0 + 6.0, (day + 3) * 24.0):
            c.advance_to(t)
            states.append(c.state)
    states = np.array(states)
    _check_nonnegative_finite("states", states, np.abs(states).max(axis=(0, 1)))
    _, tr = c.trace()
    obs = np.stack([tr[o] for o in OBSERVABLES], axis=-1)
    _check_nonnegative_finite("observables", obs, np.abs(obs).max(axis=(0, 1)))


def test_overdose_by_infusion_and_pump_stays_nonnegative_and_finite():
    c = Cohort(3, "chh", seed=12)
    c.record(every="1 h")
    c.set_pump("gonadorelin", 500.0, "90 min")
    c.start_infusion("hcg", 1500.0)
    c.start_infusion("testosterone_gel", 500.0)
    c.advance_to("2 days")
    c.stop_infusion("hcg")
    c.stop_pump("gonadorelin")
    c.advance_to("4 days")
    _check_nonnegative_finite("states", c.state, np.abs(c.state).max(axis=0))
    _, tr = c.trace()
    obs = np.stack([tr[o] for o in OBSERVABLES], axis=-1)
    _check_nonnegative_finite("observables", obs, np.abs(obs).max(axis=(0, 1)))


@pytest.mark.parametrize("phenotype", ["eugonadal", "mild_secondary_hypogonadism"])
def test_fastest_germ_cell_death_in_range_stays_finite(phenotype):
    """The registry's largest germ-cell death rate, sped up by the equilibration's
    acceleration, must not make the coarse (multirate) chain diverge: the coarse step
    keeps within the explicit part's stability for that loss. A sweep once lost a block
    to one such patient (death rate 3.5/day with low tubular androgen)."""
    from pulsehpg.params import BY_NAME

    top = BY_NAME["sperm.death_rate"].upper
    c = Cohort(4, phenotype, seed=3, params={"sperm.death_rate": top,
                                             "sperm.survival_itt_k": 2000.0})
    c.record("1 day")
    c.advance_to("60 days")
    _, tr = c.trace()
    for name in OBSERVABLES:
        assert np.all(np.isfinite(tr[name])) and np.all(tr[name] >= 0), name


def test_time_only_moves_forward():
    c = Cohort(2, seed=1)
    c.advance_to(5.0)
    c.advance_to(5.0)  # staying put is fine
    with pytest.raises(ValueError, match="^t: cannot go back"):
        c.advance_to(4.0)
    with pytest.raises(ValueError, match="^t:"):
        c.advance_to("1 h")
    assert c.t == 5.0


# --- a patient is (seed, index) -------------------------------------------------------
def _course(**kw) -> tuple[np.ndarray, np.ndarray]:
    """Two days with a pump, doses and an infusion; (recorded observables, final states)."""
    c = Cohort(seed=kw.pop("seed", 7), **kw)
    c.record(every="20 min")
    c.advance_to("6 h")
    c.dose("hcg", 1500.0)
    c.set_pump("gonadorelin", 5.0, "90 min")
    c.advance_to("1 day")
    c.start_infusion("clomiphene", 1.0)
    c.dose("testosterone_enanthate", 200.0)
    c.stop_pump("gonadorelin")
    c.advance_to("2 days")
    _, tr = c.trace()
    return np.stack([tr[o] for o in OBSERVABLES], axis=-1), c.state


@pytest.fixture(scope="module")
def cohort_of_50():
    return _course(n=50)


@pytest.mark.parametrize("k", [0, 17, 49])
def test_patient_alone_equals_patient_in_cohort(cohort_of_50, k):
    obs, y = cohort_of_50
    obs_k, y_k = _course(patients=[k])
    np.testing.assert_array_equal(obs_k[0], obs[k])
    np.testing.assert_array_equal(y_k[0], y[k])


def test_threads_do_not_change_trajectories(cohort_of_50):
    obs, y = cohort_of_50
    obs2, y2 = _course(n=50, threads=2)
    np.testing.assert_array_equal(obs2, obs)
    np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("n", [1, 9, 17, 70])
def test_every_patient_is_advanced_on_any_number_of_threads(n):
    """The core splits a cohort into ranges of whole lane widths, one thread each: every
    patient of every range (and of the short last one) comes out as on one thread, and
    the states differ from the start, so no patient is left behind."""
    obs, y = _course(patients=list(range(n)))
    for threads in (2, 3):
        obs_t, y_t = _course(patients=list(range(n)), threads=threads)
        np.testing.assert_array_equal(obs_t, obs)
        np.testing.assert_array_equal(y_t, y)
    start = Cohort(seed=7, patients=list(range(n))).state
    assert np.all(np.any(y != start, axis=1))


def test_patient_subset_in_any_order(cohort_of_50):
    obs, _ = cohort_of_50
    obs_sub, _ = _course(patients=[33, 4])
    np.testing.assert_array_equal(obs_sub[0], obs[33])
    np.testing.assert_array_equal(obs_sub[1], obs[4])


def _mixed(patients, n=9):
    """Patients of one cohort treated differently: some with a drug, one on a pump, the
    rest untreated, so that the core's lanes of patients mix modes (csrc/lanes.h)."""
    ids = list(range(n)) if patients is None else patients
    c = Cohort(seed=5, patients=ids)
    c.record(every="37 min")
    te = np.isin(ids, [1, 4, 6])
    pump = np.isin(ids, [2])
    c.advance_to("5 h")
    if te.any():
        c.dose("testosterone_enanthate", 200.0, mask=te)
    if pump.any():
        c.set_pump("gonadorelin", 5.0, "90 min", mask=pump)
    c.advance_to("1 day")
    if te.any():
        c.start_infusion("hcg", 30.0, mask=te)
    c.advance_to("2 days")
    _, tr = c.trace()
    return np.stack([tr[o] for o in OBSERVABLES], axis=-1), c.state


def test_patients_treated_differently_equal_themselves_alone():
    obs, y = _mixed(None)
    for k in (0, 1, 2, 3, 8):
        obs_k, y_k = _mixed([k])
        np.testing.assert_array_equal(obs_k[0], obs[k])
        np.testing.assert_array_equal(y_k[0], y[k])


@pytest.mark.parametrize("mode", ["baseline", "avx2", "avx512"])
def test_lanes_of_patients_equal_one_at_a_time(mode):
    """The core steps four or eight patients at a time on vector lanes (csrc/lanes.h), a
    lane taking the next patient when its own is done and the last few going on alone: on
    every instruction set every patient comes out as when stepped alone, bit for bit."""
    from pulsehpg import _core

    best = _core.lanes()
    try:
        _core.lanes("off")
        obs, y = _mixed(None, n=19)
        used = _core.lanes(mode)
        if used != mode:  # a CPU without the instruction set gets the default
            assert mode != "baseline" and used == best
        obs_v, y_v = _mixed(None, n=19)
    finally:
        _core.lanes(best)
    np.testing.assert_array_equal(obs_v, obs)
    np.testing.assert_array_equal(y_v, y)


def test_lanes_mode_is_checked():
    from pulsehpg import _core

    with pytest.raises(ValueError, match="^mode: expected one of off, baseline, avx2"):
        _core.lanes("sse9")


def _two_days(stops, record, others_dosed):
    """Patient 0 of 3 over two days: final state and observables at 6-hourly stops."""
    c = Cohort(3, seed=11)
    if record:
        c.record(every="7 min")
    others = np.array([False, True, True])
    seen = []
    for t in sorted(set(stops) | {6.0 * k for k in range(1, 9)}):
        c.advance_to(t)
        if others_dosed:
            c.dose("hcg", 1000.0, mask=others)
            c.start_infusion("gonadorelin_iv", 0.5 * (t % 2), mask=others)
        if t % 6.0 == 0:
            seen.append(c.observe_array()[0])
    return c.state[0], np.array(seen)


def test_a_patient_does_not_depend_on_when_the_cohort_stops():
    """Stops at other times, recorded samples and other patients' doses and infusions
    leave a patient's trajectory bit for bit unchanged: only its own events split its
    integration steps."""
    y, seen = _two_days([], record=False, others_dosed=False)
    odd_stops = list(np.random.default_rng(0).uniform(0.0, 48.0, 37))
    for stops, record, others_dosed in ((odd_stops, False, False), ([], True, False),
                                        (odd_stops, True, True)):
        y2, seen2 = _two_days(stops, record, others_dosed)
        np.testing.assert_array_equal(y2, y)
        np.testing.assert_array_equal(seen2, seen)


def test_advance_to_in_pieces_gives_the_same_bits(monkeypatch):
    """advance_to works in pieces (so that Ctrl-C is answered between them): pieces of
    a few hours, ending between samples and on them, give the trajectories and hourly
    traces of one call, bit for bit."""
    def course():
        c = Cohort(9, seed=4)
        c.record(every="1 h")
        c.advance_to(30.0)
        c.dose("testosterone_enanthate", 200.0)
        c.advance_to(24.0 * 9)
        _, tr = c.trace()
        return c.state, tr

    y, tr = course()
    monkeypatch.setattr(Cohort, "_PIECE_PATIENT_HOURS", 9 * 24.0 * 0.37)  # pieces of 0.37 day
    y2, tr2 = course()
    monkeypatch.setattr(Cohort, "_PIECE_PATIENT_HOURS", 9 * 24.0 * 1e9)  # one piece a call
    y3, tr3 = course()
    for other, tr_other in ((y2, tr2), (y3, tr3)):
        np.testing.assert_array_equal(other, y)
        assert set(tr_other) == set(tr)
        for k in tr:
            np.testing.assert_array_equal(tr_other[k], tr[k], err_msg=k)


def test_different_seeds_differ(cohort_of_50):
    obs, _ = cohort_of_50
    other, _ = _course(n=50, seed=8)
    k = OBSERVABLES.index("lh")
    # every patient differs, and so does the cohort's spread
    assert np.all(np.any(other[..., k] != obs[..., k], axis=1))
    assert not np.allclose(np.sort(other[:, -1, k]), np.sort(obs[:, -1, k]))


def test_deterministic_patients_do_not_depend_on_the_seed():
    a, _ = _course(n=2, deterministic=True, seed=1)
    b, _ = _course(n=2, deterministic=True, seed=2)
    np.testing.assert_array_equal(a, b)


# --- bad input -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return Cohort(3, seed=0, equilibrate=False)


@pytest.mark.parametrize("call", [
    lambda c: c.dose("aspirin", 1.0),
    lambda c: c.start_infusion("aspirin", 1.0),
    lambda c: c.set_pump("aspirin", 1.0, 1.5),
    lambda c: c.stop_pump("aspirin"),
    lambda c: c.stop_infusion("aspirin"),
])
def test_unknown_drug(small, call):
    with pytest.raises(ValueError, match=r"^drug: unknown drug 'aspirin'"):
        call(small)


def test_unknown_parameter(small):
    with pytest.raises(ValueError, match="unknown parameter 'pituitary.no_such'"):
        Cohort(2, seed=0, params={"pituitary.no_such": 1.0}, equilibrate=False)
    with pytest.raises(ValueError, match="unknown parameter 'no_such'"):
        small.set_params({"no_such": 1.0})
    with pytest.raises(ValueError, match="unknown parameter 'no_such'"):
        small.param("no_such")
    with pytest.raises(ValueError, match=r"variability|unknown parameter"):
        Cohort(2, seed=0, variability={"no_such": 0.1}, equilibrate=False)


def test_parameter_a_run_would_ignore(small):
    """An exponent compiled into the core, or the speed-up the cohort itself sets while it
    equilibrates, would be stored and reported by param() while the core ignores it."""
    hill = "hypothalamus.pulse_mass_hill"
    with pytest.raises(ValueError, match=rf"^params\['{hill}'\]: .*compiled into the core"):
        Cohort(2, seed=0, params={hill: 2.0}, equilibrate=False)
    with pytest.raises(ValueError, match=rf"^variability\['{hill}'\]: .*compiled"):
        Cohort(2, seed=0, variability={hill: 0.1}, equilibrate=False)
    with pytest.raises(ValueError, match=rf"^values\['{hill}'\]: .*compiled"):
        small.set_params({hill: 2.0})
    with pytest.raises(ValueError, match=r"^params\['numerics.slow_acceleration'\]: .*"
                                         r"Numerics\(burn_in_accel"):
        Cohort(2, seed=0, params={"numerics.slow_acceleration": 5.0}, equilibrate=False)


def test_unknown_phenotype():
    with pytest.raises(ValueError, match=r"^phenotype: unknown value 'martian'"):
        Cohort(2, "martian", seed=0, equilibrate=False)


@pytest.mark.parametrize("amount", [-1.0, np.nan, np.inf, [1.0, -1.0, 1.0],
                                    [1.0, np.nan, 1.0]])
def test_bad_dose_amount(small, amount):
    with pytest.raises(ValueError, match=r"^amount:"):
        small.dose("hcg", amount)


@pytest.mark.parametrize("call, arg", [
    (lambda c: c.start_infusion("hcg", -5.0), "rate"),
    (lambda c: c.start_infusion("hcg", np.nan), "rate"),
    (lambda c: c.set_pump("gonadorelin", -5.0, 1.5), "dose"),
    (lambda c: c.set_pump("gonadorelin", 5.0, "1 s"), "interval"),
    (lambda c: c.set_params({"steroid.shbg": -3.0}), "values"),
    (lambda c: c.record(every="soon"), "every"),
    (lambda c: c.record(every=1e-9), "every: must be at least 1 s"),  # 1e14 samples a year
    (lambda c: c.advance_to(np.nan), "t"),
])
def test_bad_values_name_the_argument(small, call, arg):
    with pytest.raises(ValueError, match=rf"^{arg}"):
        call(small)


@pytest.mark.parametrize("call, arg", [
    (lambda c: c.dose("hcg", [1.0, 2.0]), "amount"),
    (lambda c: c.dose("hcg", np.ones((3, 1))), "amount"),
    (lambda c: c.start_infusion("hcg", [1.0, 2.0, 3.0, 4.0]), "rate"),
    (lambda c: c.set_pump("gonadorelin", [5.0, 5.0], 1.5), "dose"),
    (lambda c: c.set_params({"steroid.shbg": [30.0, 40.0]}), "values"),
])
def test_wrong_array_shape(small, call, arg):
    with pytest.raises(ValueError, match=rf"^{arg}.*length 3"):
        call(small)


@pytest.mark.parametrize("mask", [np.ones(2, dtype=bool), np.ones(4, dtype=bool),
                                  np.ones((3, 1), dtype=bool), np.ones(3)])
@pytest.mark.parametrize("call", [
    lambda c, m: c.dose("hcg", 1.0, mask=m),
    lambda c, m: c.start_infusion("hcg", 1.0, mask=m),
    lambda c, m: c.set_pump("gonadorelin", 5.0, 1.5, mask=m),
    lambda c, m: c.set_params({"steroid.shbg": 30.0}, mask=m),
])
def test_mask_of_wrong_length_or_type(small, call, mask):
    with pytest.raises(ValueError, match=r"^mask: expected a boolean array of shape \(3,\)"):
        call(small, mask)


def test_bad_cohort_arguments():
    with pytest.raises(ValueError, match="^n:"):
        Cohort(0)
    # refused before anything is allocated (1e11 patients would need 600 TB)
    with pytest.raises(ValueError, match="^n: 100000000000 patients; one cohort holds at most"):
        Cohort(10**11)
    with pytest.raises(ValueError, match="^patients:"):
        Cohort(patients=[1, -2], equilibrate=False)
    with pytest.raises(ValueError, match="^threads:"):
        Cohort(2, threads=0, equilibrate=False)
    with pytest.raises(ValueError, match="^seed:"):
        Cohort(2, seed=-1, equilibrate=False)
    with pytest.raises(ValueError, match=r"^params\['steroid.shbg'\]"):
        Cohort(2, params={"steroid.shbg": [30.0]}, equilibrate=False)


@pytest.mark.parametrize("kw, msg", [
    ({"burn_in_reserve_accel": "x"}, "numerics.burn_in_reserve_accel: expected a number, got 'x'"),
    ({"h0": None}, "numerics.h0: expected a number, got None"),
    ({"levels": 2.5}, "numerics.levels must be 1..12, got 2.5"),
    ({"burn_in_accel": 0.5}, r"numerics.burn_in_accel must be in \[1, 100\], got 0.5"),
])
def test_numerics_refuses_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Numerics(**kw)
