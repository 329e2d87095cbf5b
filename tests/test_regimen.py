"""The regimen layer: dose times of schedules, pumps and infusions that follow their
phase, rules that act on the patients they fire for, the documented order of events
at one instant, and reproducibility.

Doses given by Python (every schedule except pumps and infusions) are logged by
wrapping ``Cohort.dose``; pumps and infusions, which run inside the core, are seen
in the plasma gonadorelin of ``gonadorelin_iv`` (4-min half-life) sampled every minute.
"""

import numpy as np
import pytest
import simpy  # noqa: F401  (the regimen's engine: imported so a missing install fails here)

from pulsehpg.regimen import RegimenRun
from pulsehpg.run import build_cohort, run
from pulsehpg.scenario import ScenarioError, parse_scenario

H, DAY, WEEK = 1.0, 24.0, 168.0


class Doses:
    """Every Cohort.dose call of a run: (time, drug, amount per patient)."""

    def __init__(self, cohort):
        self.log = []
        real = cohort.dose

        def dose(drug, amount, mask=None):
            a = np.broadcast_to(np.asarray(amount, dtype=float), (cohort.n,))
            self.log.append((cohort.t, drug, a * (True if mask is None else mask)))
            real(drug, amount, mask)

        cohort.dose = dose

    def times(self, drug, patient=0):
        return [t for t, d, a in self.log if d == drug and a[patient] > 0]

    def amounts(self, drug, patient=0):
        return [a[patient] for t, d, a in self.log if d == drug and a[patient] > 0]


def simulate(text, n=3, *, rules=None, record=None, patients=None, seed=None, processes=()):
    sc = parse_scenario(text)
    cohort = build_cohort(sc, None if patients is not None else n, seed, patients=patients)
    doses = Doses(cohort)
    if record:
        cohort.record(every=record)
    rr = RegimenRun(sc, cohort, rules=rules, processes=processes).run()
    return rr, doses


def rises(cohort, patient=0, name="gonadorelin"):
    """Sample times (h) at which a drug's concentration went up: just after each bolus."""
    t, tr = cohort.trace()
    c = tr[name][patient]
    return t[1:][np.diff(c) > 0]


LEAD = """
[cohort]
n = 3
seed = 5
phenotype = "chh"

[[phase]]
name = "lead"
duration = "1 day"
"""


def one_drug(schedule_lines, duration="2 weeks", drug="hcg", dose=1000, after="1 day"):
    return LEAD + f"""
[[phase]]
name = "treat"
duration = "{duration}"
[[phase.drug]]
name = "{drug}"
dose = {dose}
{schedule_lines}

[[phase]]
name = "after"
duration = "{after}"
"""


# --- schedules -----------------------------------------------------------------------
@pytest.mark.parametrize("schedule, offsets", [
    ("once", [0]),
    ("daily", [24 * k for k in range(14)]),
    ("twice daily", [12 * k for k in range(28)]),
    ("every other day", [48 * k for k in range(7)]),
    ("twice weekly", [0, 72, 168, 240]),
    ("three times weekly", [0, 48, 96, 168, 216, 264]),
    ("weekly", [0, 168]),
    ("every 2 weeks", [0]),
    ("monthly", [0]),
    ("every 100 h", [0, 100, 200, 300]),
])
def test_schedule_dose_times(schedule, offsets):
    rr, doses = simulate(one_drug(f'schedule = "{schedule}"'))
    for i in range(rr.n):
        assert doses.times("hcg", i) == pytest.approx([DAY + o for o in offsets])
        assert doses.amounts("hcg", i) == [1000.0] * len(offsets)


def test_start_stop_and_times():
    rr, doses = simulate(one_drug('schedule = "daily"\nstart = "2 days"\nstop = "5 days"'))
    assert doses.times("hcg") == [DAY + 48, DAY + 72, DAY + 96]
    rr, doses = simulate(one_drug('times = ["36 h", "0 h", "13 days"]'))
    assert doses.times("hcg") == [DAY, DAY + 36, DAY + 13 * DAY]
    rr, doses = simulate(one_drug('times = ["0 h", "1 day"]\nstart = "2 days"'))
    assert doses.times("hcg") == [DAY + 48, DAY + 72]


def test_pump_boluses_start_and_stop_with_the_phase():
    rr, _ = simulate(one_drug('schedule = "every 90 min"', duration="6 h", after="3 h",
                              drug="gonadorelin_iv", dose=10), n=2, record="1 min")
    for i in range(2):
        bolus = rises(rr.cohort, i) - 1 / 60  # first sample after each bolus
        # at 0, 1.5, 3 and 4.5 h of the phase; not at its end (the next phase has no pump)
        assert bolus == pytest.approx([DAY + x for x in (0, 1.5, 3, 4.5)], abs=1e-9)


def test_continuous_infusion_starts_and_stops_with_the_phase():
    rr, _ = simulate(one_drug('schedule = "continuous"', duration="6 h", after="3 h",
                              drug="gonadorelin_iv", dose=6), n=2, record="5 min")
    t, tr = rr.cohort.trace()
    c = tr["gonadorelin"]
    steady = c[:, (t > DAY + 1) & (t <= DAY + 6)]
    assert np.all(c[:, t <= DAY] == 0)
    assert np.all(steady > 0) and np.ptp(steady, axis=1).max() < 1e-3 * steady.max()
    assert np.all(c[:, t >= DAY + 7] < 1e-3 * steady.max())


def test_infusion_continues_across_phases_without_a_gap_or_a_doubling():
    text = LEAD.replace('duration = "1 day"', 'duration = "3 h"') + """
[[phase.drug]]
name = "gonadorelin_iv"
dose = 6
schedule = "continuous"
start = "1 h"
[[phase]]
name = "more"
duration = "3 h"
[[phase.drug]]
name = "gonadorelin_iv"
dose = 6
schedule = "continuous"
"""
    rr, _ = simulate(text, n=1, record="5 min")
    t, tr = rr.cohort.trace()
    c = tr["gonadorelin"][0]
    on = c[(t >= 2) & (t <= 6)]  # phase boundary at 3 h: stop, then start, same instant
    assert np.ptp(on) < 1e-3 * on.max()


def test_rule_added_pump_stops_at_phase_end():
    text = one_drug('schedule = "once"', duration="4 h", after="2 h") + ""
    text = text.replace('[[phase]]\nname = "after"', """[[phase.visit]]
at = ["1 h"]
labs = ["lh"]
[[phase.rule]]
when = "days_in_phase >= 0"
then = [{ action = "add_drug", drug = "gonadorelin_iv", dose = 10, schedule = "every 1 h" }]

[[phase]]
name = "after\"""")
    rr, _ = simulate(text, n=1, record="1 min")
    assert rises(rr.cohort) - 1 / 60 == pytest.approx([DAY + 1, DAY + 2, DAY + 3], abs=1e-9)


def _pump_with_rule(action, lines='schedule = "every 90 min"'):
    text = one_drug(lines, duration="6 h", after="2 h",
                    drug="gonadorelin_iv", dose=10)
    return text.replace('[[phase]]\nname = "after"', f"""[[phase.visit]]
at = ["2 h"]
labs = ["lh"]
[[phase.rule]]
when = "days_in_phase >= 0"
then = [{action}]

[[phase]]
name = "after\"""")


def _bolus_sizes(cohort, times):
    t, tr = cohort.trace()
    c = tr["gonadorelin"][0]
    return [c[np.searchsorted(t, x + 1 / 60)] - c[np.searchsorted(t, x)] for x in times]


def test_set_dose_of_a_running_pump_keeps_its_rhythm():
    rr, _ = simulate(_pump_with_rule(
        '{ action = "set_dose", drug = "gonadorelin_iv", dose = 40 }'), n=1, record="1 min")
    times = [DAY + x for x in (0, 1.5, 3, 4.5)]
    assert rises(rr.cohort) - 1 / 60 == pytest.approx(times, abs=1e-9)  # none at 2 h
    small, _, big, _ = _bolus_sizes(rr.cohort, times)
    assert big == pytest.approx(4 * small, rel=0.05)


def test_a_second_pump_of_the_same_drug_replaces_the_first():
    rr, _ = simulate(_pump_with_rule(
        '{ action = "add_drug", drug = "gonadorelin_iv", dose = 10, schedule = "every 40 min" }',
        'schedule = "every 90 min"\nstop = "4 h"'), n=1, record="1 min")
    # 2 h to 5 h 20: the old pump's 3 h bolus is gone, and its stop at 4 h no longer
    # stops the new pump
    new = [DAY + 2 + k * 2 / 3 for k in range(6)]
    assert rises(rr.cohort) - 1 / 60 == pytest.approx([DAY, DAY + 1.5] + new, abs=1e-6)


def test_set_dose_and_stop_of_infusions_before_and_after_their_start():
    text = """
[cohort]
n = 1
phenotype = "chh"
[[phase]]
name = "a"
duration = "12 h"
[[phase.drug]]
name = "gonadorelin_iv"
dose = 6
schedule = "continuous"
[[phase.drug]]
name = "gonadorelin_iv"
dose = 6
schedule = "continuous"
start = "6 h"
[[phase.visit]]
at = ["3 h", "9 h"]
labs = ["lh"]
[[phase.rule]]
name = "half"
when = "days_in_phase < 0.2"
then = [{ action = "set_dose", drug = "gonadorelin_iv", dose = 3 }]
[[phase.rule]]
name = "stop"
when = "days_in_phase > 0.3"
then = [{ action = "stop_drug", drug = "gonadorelin_iv" }]
"""
    rr, _ = simulate(text, n=1, record="30 min")
    t, tr = rr.cohort.trace()
    c = tr["gonadorelin"][0]
    level = c[np.searchsorted(t, 2.0)]  # 6 ug/h
    # at 3 h both infusions go to 3 ug/h: the running one at once, the other from 6 h
    assert c[np.searchsorted(t, 5.0)] == pytest.approx(level / 2, rel=1e-3)
    assert c[np.searchsorted(t, 8.5)] == pytest.approx(level, rel=1e-3)
    assert c[np.searchsorted(t, 11.0)] < 1e-3 * level  # both stopped at 9 h


# --- rules ---------------------------------------------------------------------------
RULE = """
[cohort]
n = 8
seed = 11

[[phase]]
name = "a"
duration = "5 days"
[[phase.drug]]
name = "hcg"
dose = 1000
schedule = "daily"
[[phase.visit]]
at = ["2 days"]
labs = ["t_total"]
[[phase.rule]]
name = "r"
when = "t_total > THRESHOLD"
then = [ACTION]

[[phase]]
name = "b"
duration = "3 days"
[[phase.visit]]
every = "1 day"
start = "0 h"
labs = ["lh"]
"""


@pytest.fixture(scope="module")
def split():
    """Visit labs at day 2 and a threshold that is exceeded by some patients only."""
    rr, _ = simulate(RULE.replace("THRESHOLD", "1e9").replace("ACTION", '{ action = "end" }'),
                     n=8)
    t_total = rr.visit_labs["t_total"][:, 0]
    thr = float(np.median(t_total))
    fired = t_total > thr
    assert 0 < fired.sum() < 8
    return thr, fired


def rule_run(split, action):
    thr, fired = split
    rr, doses = simulate(RULE.replace("THRESHOLD", repr(thr)).replace("ACTION", action), n=8)
    first = rr.rule_first["a.r"]
    assert np.array_equal(np.isfinite(first), fired)  # fired exactly where the condition held
    assert np.all(first[fired] == 48.0)
    assert np.array_equal(rr.rule_count["a.r"], fired.astype(int))
    return rr, doses, fired


def test_rule_add_drug_for_the_patients_it_fires_for(split):
    rr, doses, fired = rule_run(split, '{ action = "add_drug", drug = "fsh", dose = 150, '
                                       'schedule = "daily" }')
    for i in range(8):
        expect = [48.0, 72.0, 96.0] if fired[i] else []  # from the visit on, at once
        assert doses.times("fsh", i) == expect
        assert doses.times("hcg", i) == [0.0, 24.0, 48.0, 72.0, 96.0]


def test_rule_stop_drug(split):
    rr, doses, fired = rule_run(split, '{ action = "stop_drug", drug = "hcg" }')
    for i in range(8):  # stopped before the dose due at the visit's instant
        assert doses.times("hcg", i) == ([0.0, 24.0] if fired[i] else [0.0, 24.0, 48.0, 72.0,
                                                                         96.0])


def test_rule_set_dose(split):
    rr, doses, fired = rule_run(split, '{ action = "set_dose", drug = "hcg", dose = 3000 }')
    for i in range(8):
        assert doses.amounts("hcg", i) == [1000.0, 1000.0] + [3000.0 if fired[i] else 1000.0] * 3


def test_rule_goto(split):
    rr, doses, fired = rule_run(split, '{ action = "goto", phase = "b" }')
    assert np.all(rr.entered["b"][fired] == 48.0) and np.all(rr.entered["b"][~fired] == 120.0)
    for i in range(8):
        start = 48.0 if fired[i] else 120.0
        in_b = rr.visit_time[i][rr.visit_phase[i] == 1]
        assert list(in_b) == [start + 24 * k for k in range(4)]
        assert doses.times("hcg", i)[-1] == (24.0 if fired[i] else 96.0)
    # follow-up ends with the last phase: 3 days after entering it
    np.testing.assert_array_equal(rr.ended_at, np.where(fired, 48.0 + 72, 120.0 + 72))


def test_rule_end(split):
    rr, doses, fired = rule_run(split, '{ action = "end" }')
    assert np.all(rr.ended_at[fired] == 48.0) and np.all(rr.ended_at[~fired] == 192.0)
    assert np.all(np.isnan(rr.entered["b"][fired]))
    for i in range(8):
        assert np.nanmax(rr.visit_time[i]) == (48.0 if fired[i] else 120.0 + 72.0)
        assert doses.times("hcg", i)[-1] == (24.0 if fired[i] else 96.0)


def test_rule_several_actions_in_order(split):
    rr, doses, fired = rule_run(split, '{ action = "set_dose", drug = "hcg", dose = 2000 }, '
                                       '{ action = "add_drug", drug = "fsh", dose = 75, '
                                       'schedule = "once" }')
    for i in range(8):
        assert doses.times("fsh", i) == ([48.0] if fired[i] else [])
        assert doses.amounts("hcg", i)[2] == (2000.0 if fired[i] else 1000.0)


def test_drugs_belong_to_the_phase(split):
    # a drug added by a rule is part of the phase: 'end' (or 'goto') right after it in
    # the same rule leaves the phase before its first dose, due at that same instant
    rr, doses, fired = rule_run(split, '{ action = "add_drug", drug = "fsh", dose = 75, '
                                       'schedule = "once" }, { action = "end" }')
    assert all(doses.times("fsh", i) == [] for i in range(8))


COUNT = """
[cohort]
n = 2
[[phase]]
name = "a"
duration = "100 h"
[[phase.visit]]
every = "1 day"
labs = ["lh"]
[[phase.rule]]
name = "r"
when = "WHEN"
EXTRA
then = [{ action = "add_drug", drug = "hcg", dose = 100, schedule = "once" }]
"""


@pytest.mark.parametrize("when, extra, first, count", [
    ("days_in_phase >= 0", "", 24.0, 1),
    ("days_in_phase >= 0", "count = 2", 48.0, 1),  # two visits needed
    ("days_in_phase != 2", "count = 2", 72.0, 1),  # visits at which it held: days 1 and 3
    ("days_in_phase >= 0", "count = 2\nonce = false", 48.0, 3),
    ("days_in_phase >= 0", "once = false", 24.0, 4),
    ("weeks_in_phase > 1", "", np.nan, 0),
    ("lh < 0", "", np.nan, 0),
])
def test_rule_count_and_once(when, extra, first, count):
    rr, doses = simulate(COUNT.replace("WHEN", when).replace("EXTRA", extra), n=2)
    np.testing.assert_array_equal(rr.rule_first["a.r"], [first, first])
    np.testing.assert_array_equal(rr.rule_count["a.r"], [count, count])
    assert len(doses.times("hcg", 1)) == count


def test_unmeasured_labs_make_comparisons_false():
    # a lab not measured at a visit is NaN: no comparison with it holds, '!=' included
    from pulsehpg.rules import parse_condition

    values = {"lh": np.array([np.nan, np.nan]), "fsh": np.array([3.0, np.nan])}
    for when in ("lh != 4", "lh < 1e9", "lh == lh", "lh >= 0 or fsh < 0"):
        assert not parse_condition(when).evaluate(values).any(), when
    assert parse_condition("not lh < 4").evaluate(values).all()  # 'not' of false is true
    # a scenario whose rule reads a lab none of the phase's visits draws is refused
    text = COUNT.replace('labs = ["lh"]', 'labs = ["fsh"]')
    with pytest.raises(ScenarioError, match="reads lh, which no visit of phase 'a' draws"):
        simulate(text.replace("WHEN", "lh < 4").replace("EXTRA", ""), n=2)


def test_next_skips_and_ends():
    text = LEAD + """next = "c"
[[phase]]
name = "b"
duration = "1 day"
[[phase]]
name = "c"
duration = "1 day"
next = "end"
[[phase]]
name = "d"
duration = "1 day"
"""
    rr, _ = simulate(text, n=2)
    assert np.all(np.isnan(rr.entered["b"])) and np.all(rr.entered["c"] == DAY)
    assert np.all(np.isnan(rr.entered["d"])) and np.all(rr.ended_at == 2 * DAY)


# --- Python rules and processes -------------------------------------------------------
def test_python_rule_masks_and_sees_visit(split):
    thr, fired = split
    seen = []

    def rule(v):
        seen.append((v.time, v.phase, v.seen.copy(), v.days_in_phase))
        assert np.all(np.isfinite(v.labs["t_total"][v.seen]))
        assert np.all(np.isnan(v.labs["lh"]))  # not measured at this visit
        return [({"action": "add_drug", "drug": "fsh", "dose": 75, "schedule": "once"},
                 v.labs["t_total"] > thr)]

    rr, doses = simulate(RULE.replace("THRESHOLD", "1e9").replace("ACTION", '{action="end"}'),
                         n=8, rules={"a": [rule]})
    assert len(seen) == 1 and seen[0][:2] == (48.0, "a") and seen[0][3] == 2.0
    assert seen[0][2].all()
    for i in range(8):
        assert doses.times("fsh", i) == ([48.0] if fired[i] else [])


def test_python_rule_errors():
    text = RULE.replace("THRESHOLD", "1e9").replace("ACTION", '{ action = "end" }')
    with pytest.raises(ValueError, match="rules: unknown phase 'z'; phases: a, b"):
        simulate(text, rules={"z": [lambda v: []]})
    bad = [lambda v: [({"action": "goto", "phase": "zz"}, v.seen)]]
    with pytest.raises(ScenarioError, match="action.phase: unknown value 'zz'; allowed: a, b"):
        simulate(text, rules={"a": bad})
    end = {"action": "end"}
    with pytest.raises(ValueError, match=r"mask of shape \(2,\); expected .* shape \(3,\)"):
        simulate(text, rules={"a": [lambda v: [(end, [True, False])]]})
    with pytest.raises(ValueError, match=r"gave \{'action': 'end'\}; a rule returns \(action, mask\)"):
        simulate(text, rules={"a": [lambda v: [end]]})
    with pytest.raises(ValueError, match=r"^rules\['a'\]: expected a list of callables"):
        simulate(text, rules={"a": lambda v: []})
    with pytest.raises(ValueError, match=r"^processes: expected a list of callables"):
        simulate(text, processes=[1])


def test_process_gives_doses_and_holds_visits():
    def process(r):
        yield r.env.timeout(10.0)
        r.sync()
        r.cohort.dose("hcg", 500.0)
        yield r.env.timeout(6.0)
        r.visit(np.array([True, False]), ("lh", "t_total"))

    rr, doses = simulate(LEAD, n=2, processes=[process])
    assert doses.log[0][0] == 10.0 and list(doses.log[0][2]) == [500.0, 500.0]
    assert rr.visit_time[0, 0] == 16.0 and rr.visit_phase[0, 0] == -1
    assert np.isnan(rr.visit_time[1, 0]) and rr.visit_count.tolist() == [1, 0]


def test_goto_loop_without_time_passing_is_refused():
    text = """
[[phase]]
name = "a"
duration = "1 day"
[[phase.visit]]
at = ["0 h"]
labs = ["lh"]
[[phase.rule]]
when = "lh >= 0"
then = [{ action = "goto", phase = "a" }]
[outcomes]
follow_up = "3 days"
"""
    with pytest.raises(RuntimeError, match="without time passing"):
        simulate(text, n=2)


REPEAT = """
[[phase]]
name = "a"
duration = "1 day"
NEXT
[[phase.visit]]
at = ["12 h"]
labs = ["lh"]
"""


def test_a_repeating_phase_is_followed_for_the_follow_up():
    rr, _ = simulate(REPEAT.replace("NEXT", 'next = "a"') + '[outcomes]\nfollow_up = "3 days"\n',
                     n=2)
    assert rr.horizon == 72.0
    assert rr.visit_count.tolist() == [3, 3]
    np.testing.assert_array_equal(rr.visit_time[0, :3], [12.0, 36.0, 60.0])
    once, _ = simulate(REPEAT.replace("NEXT", ""), n=2)
    assert once.horizon == 24.0 and once.visit_count.tolist() == [1, 1]


def test_going_back_needs_a_follow_up():
    with pytest.raises(ScenarioError) as e:
        parse_scenario(REPEAT.replace("NEXT", 'next = "a"'))
    assert e.value.path == "phase[0].next" and "outcomes.follow_up" in str(e.value)


# --- the order of events at one instant ----------------------------------------------------
ORDER = LEAD + """
[[phase]]
name = "treat"
duration = "2 days"
[[phase.drug]]
name = "DRUG"
dose = DOSE
times = ["1 day"]
[[phase.visit]]
at = ["0 h", "1 day", "25 h", "2 days"]
labs = ["lh", "fsh", "t_total", "e2"]
"""


@pytest.mark.parametrize("drug, dose, lab", [
    ("gonadorelin_iv", 10, "lh"),
    ("hcg", 5000, "t_total"),
    ("testosterone_enanthate", 200, "t_total"),
])
def test_visit_labs_are_drawn_before_a_dose_at_the_same_time(drug, dose, lab):
    given, _ = simulate(ORDER.replace("DRUG", drug).replace("DOSE", str(dose)), n=3)
    none, _ = simulate(ORDER.replace("DRUG", drug).replace("DOSE", "0"), n=3)
    t = given.visit_time[0]
    at_dose = np.flatnonzero(t == 2 * DAY)[0]
    later = np.flatnonzero(t == 2 * DAY + 1)[0]
    # trough: the dose given at the visit's instant is not in its labs ...
    for k in ("lh", "fsh", "t_total", "e2"):
        np.testing.assert_array_equal(given.visit_labs[k][:, at_dose],
                                      none.visit_labs[k][:, at_dose])
    # ... and shows an hour later
    assert np.all(given.visit_labs[lab][:, later] > 1.2 * none.visit_labs[lab][:, later])


def test_visit_sees_plasma_before_the_dose():
    plasma = []

    def rule(v):
        plasma.append((v.time, rr.cohort.observe()["gonadorelin"].max()))
        return []

    text = ORDER.replace("DRUG", "gonadorelin_iv").replace("DOSE", "10")
    sc = parse_scenario(text)
    cohort = build_cohort(sc, 2)
    doses = Doses(cohort)
    rr = RegimenRun(sc, cohort, rules={"treat": [rule]})
    rr.run()
    assert [t for t, _ in plasma] == [DAY, 2 * DAY, 2 * DAY + 1, 3 * DAY]
    assert plasma[1][1] == 0.0  # the bolus at 2 days came after the visit
    assert plasma[2][1] > 0.0
    assert doses.times("gonadorelin_iv") == [2 * DAY]


def test_visit_at_phase_end_belongs_to_the_ending_phase():
    text = LEAD + """[[phase.visit]]
at = ["1 day"]
labs = ["lh"]
[[phase]]
name = "next"
duration = "1 day"
[[phase.visit]]
at = ["0 h"]
labs = ["lh"]
"""
    rr, _ = simulate(text, n=2)
    assert rr.visit_time[0, :2].tolist() == [DAY, DAY]
    assert rr.visit_phase[0, :2].tolist() == [0, 1]  # first the ending phase, then the next


def test_events_at_time_zero():
    text = LEAD.replace('duration = "1 day"', """duration = "1 day"
[[phase.drug]]
name = "gonadorelin_iv"
dose = 10
schedule = "once"
[[phase.visit]]
at = ["0 h", "10 min"]
labs = ["lh"]""")
    plasma = []

    def rule(v):
        plasma.append(rr.cohort.observe()["gonadorelin"].max())
        return []

    sc = parse_scenario(text)
    cohort = build_cohort(sc, 2)
    doses = Doses(cohort)
    rr = RegimenRun(sc, cohort, rules={"lead": [rule]})
    rr.run()
    assert doses.times("gonadorelin_iv") == [0.0]
    assert rr.visit_time[0, :2].tolist() == [0.0, 1 / 6]
    assert plasma[0] == 0.0 and plasma[1] > 0.0


def test_outcomes_time_zero_and_ended_at():
    res = run(parse_scenario(RULE.replace("THRESHOLD", "1e9").replace(
        "ACTION", '{ action = "end" }') + '[outcomes]\ntime_zero = "b"\noffset = "1 day"\n'),
        n=3)
    o = res.outcomes
    assert np.all(o["time_zero_h"] == 120.0 + 24.0)
    assert np.all(o["days_to_lh_normal"][o["event_lh_normal"]] >= 0)
    assert np.all(o["ended_at_h"] == 192.0)
    assert "rule_a.r_first_h" in o and "rule_a.r_count" in o
    assert res.visits["time_h"].shape[0] == 3
    assert "b" in res.summary()


def test_summary_shows_no_recovery_fraction_past_the_follow_up():
    """Kaplan-Meier 'by 6/12/24 months' after everyone's follow-up ended would repeat the
    last value (0.00 after two months of follow-up read as 'none recovered by 24 months')."""
    text = """
[cohort]
n = 4
[[phase]]
name = "trt"
duration = "2 weeks"
[[phase]]
name = "recovery"
duration = "7 months"
[[phase.visit]]
every = "4 weeks"
labs = ["semen"]
[outcomes]
time_zero = "recovery"
"""
    lines = [x for x in run(parse_scenario(text)).summary().splitlines() if "by 6/12/24" in x]
    assert len(lines) == 3
    for line in lines:
        six, twelve, twentyfour = line.split(":")[1].split(" / ")
        assert float(six) >= 0.0
        # past the follow-up only a curve every man completed (it stays at 1) has a value
        assert twelve.strip() in ("-", "1.00") and twentyfour.strip() in ("-", "1.00")


def test_follow_up_ends_where_a_rule_ends_the_regimen():
    """A man whose regimen a rule ends early is followed to then, not to the run's end: no
    fraction 'by 6 months' from a week of data."""
    text = """
[cohort]
n = 6
[[phase]]
name = "trt"
duration = "2 weeks"
[[phase]]
name = "recovery"
duration = "8 months"
[[phase.visit]]
every = "1 week"
labs = ["lh", "semen"]
[[phase.rule]]
name = "stop"
when = "lh >= 0"
then = [{ action = "end" }]
[outcomes]
time_zero = "recovery"
"""
    res = run(parse_scenario(text))
    o = res.outcomes
    assert np.allclose(o["follow_up_days"], 7.0)  # the first weekly visit ends it
    assert np.allclose(o["ended_at_h"] - o["time_zero_h"], 7 * 24.0)
    lines = [x for x in res.summary().splitlines() if "by 6/12/24" in x]
    # no man was seen past day 7: a fraction by 6 months only where all had the event
    assert lines and all(x.split(":")[1].split(" / ")[0].strip() in ("-", "1.00") for x in lines)
    assert "follow-up after it 0.2 months" in res.summary()


def test_kaplan_meier_conventions():
    """0/1 flags as well as booleans; the median where the fraction reaches 1/2 exactly
    (1 - prod(1 - d/n) rounds below it); no fraction past everyone's follow-up."""
    from pulsehpg.outcomes import fraction_by, kaplan_meier
    from pulsehpg.validation import km_median

    t = np.array([1.0, 2, 3, 4])
    ts, fs = kaplan_meier(t, np.array([0, 1, 0, 1]))
    assert ts.tolist() == [2.0, 4.0] and np.allclose(fs, [1 / 3, 1.0])
    for n in (24, 28, 30, 38):  # no censoring: the fraction is k/n, 1/2 at the n/2-th time
        assert km_median(np.arange(1.0, n + 1), np.ones(n, bool)) == n / 2
    e = np.array([True, True, False, False])
    assert fraction_by(t, e, 4.0) == pytest.approx(0.5)
    follow = np.array([4.0, 4.5, 3.0, 4.0])
    assert fraction_by(t, e, 4.5, follow) == pytest.approx(0.5)  # one man followed to 4.5
    assert np.isnan(fraction_by(t, e, 5.0, follow))  # two without it, none followed to 5
    assert fraction_by(t, e, 5.0) == pytest.approx(0.5)  # no follow-up given: the last value
    assert fraction_by(t, np.ones(4, bool), 9.0, follow) == 1.0  # all had it: stays 1


# --- reproducibility ---------------------------------------------------------------------
REPRO = """
[cohort]
n = 6
seed = 21
[cohort.covariates]
age = { dist = "uniform", low = 20, high = 60 }

[[phase]]
name = "trt"
duration = "2 weeks"
[[phase.drug]]
name = "testosterone_enanthate"
dose = 200
schedule = "weekly"
[[phase.visit]]
every = "1 week"
labs = ["lh", "fsh", "t_total", "e2", "semen"]

[[phase]]
name = "hcg"
duration = "2 weeks"
[[phase.drug]]
name = "hcg"
dose = 1500
schedule = "twice weekly"
[[phase.visit]]
every = "1 week"
labs = ["lh", "fsh", "t_total", "e2", "semen"]
[[phase.rule]]
name = "all"
when = "days_in_phase >= 0"
then = [{ action = "add_drug", drug = "clomiphene", dose = 25, schedule = "daily" }]
"""


def assert_same_patient(a, i, b, j):
    for k, v in a.outcomes.items():
        np.testing.assert_array_equal(v[i], b.outcomes[k][j], err_msg=k)
    for k, v in a.visits.items():  # visit columns beyond a run's last visit are unused
        x, y = v[i], b.visits[k][j]
        w = max(x.size, y.size)
        fill = -1 if k == "phase" else np.nan
        np.testing.assert_array_equal(np.pad(x, (0, w - x.size), constant_values=fill),
                                      np.pad(y, (0, w - y.size), constant_values=fill),
                                      err_msg=k)


def test_same_seed_is_bit_identical():
    sc = parse_scenario(REPRO)
    a, b = run(sc), run(sc, threads=2)
    for i in range(6):
        assert_same_patient(a, i, b, i)
    c = run(sc, seed=22)
    assert not np.array_equal(a.outcomes["end_t_total"], c.outcomes["end_t_total"])


def test_a_patient_does_not_depend_on_the_cohort_size():
    sc = parse_scenario(REPRO)
    full = run(sc, n=6)
    for patients in ([4], [4, 1], [0, 5, 4]):
        part = run(sc, patients=patients)
        for j, i in enumerate(patients):
            assert_same_patient(full, i, part, j)


# event times that only the patients a rule fired for have
OFF_GRID = '{ action = "add_drug", drug = "fsh", dose = 150, schedule = "every 9 h" }'


def test_a_patient_does_not_depend_on_other_patients_rules(split):
    thr, fired = split
    sc = parse_scenario(RULE.replace("THRESHOLD", repr(thr)).replace("ACTION", OFF_GRID))
    full = run(sc, n=8)
    i = int(np.flatnonzero(~fired)[0])  # never fires; others get doses every 9 h
    assert_same_patient(full, i, run(sc, patients=[i]), 0)
