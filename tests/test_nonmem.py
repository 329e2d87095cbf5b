"""NONMEM-style dose records (CSV) referenced from a scenario's [dose_records] table:
ADDL/II expansion, infusions at RATE, observations (EVID 0) and their order with doses
at the same instant, one independent patient per ID, and refusals that name the line."""

import numpy as np
import pytest

from pulsehpg.nonmem import DoseRecord, expand_records, read_dose_records
from pulsehpg.regimen import RegimenRun
from pulsehpg.run import build_cohort, run
from pulsehpg.scenario import ScenarioError, load_scenario

HEADER = "ID,TIME,DRUG,AMT,II,ADDL,RATE,EVID\n"


class Doses:
    """Every Cohort.dose call of a run: (time, drug, amount per patient)."""

    def __init__(self, cohort):
        self.log = []
        real = cohort.dose

        def dose(drug, amount, mask=None):
            self.log.append((cohort.t, drug, np.array(amount, dtype=float)))
            real(drug, amount, mask)

        cohort.dose = dose

    def times(self, drug, patient=0):
        return [t for t, d, a in self.log if d == drug and a[patient] > 0]


def scenario(tmp_path, rows, cohort='phenotype = "chh"\nseed = 3', extra="", name="s"):
    (tmp_path / f"{name}.csv").write_text(HEADER + rows)
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[cohort]\n{cohort}\n\n[dose_records]\nfile = "{name}.csv"\n{extra}')
    return path


def simulate(path, *, patients=None, record=None):
    sc = load_scenario(path)
    cohort = build_cohort(sc, patients=patients)
    doses = Doses(cohort)
    if record:
        cohort.record(every=record)
    rr = RegimenRun(sc, cohort).run()
    return rr, doses


def refused(tmp_path, rows, *fragments, header=HEADER):
    (tmp_path / "bad.csv").write_text(header + rows)
    path = tmp_path / "bad.toml"
    path.write_text('[dose_records]\nfile = "bad.csv"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    e = info.value
    assert e.path == "dose_records.file" and e.line == 2
    assert str(tmp_path / "bad.csv") in str(e)
    for f in fragments:
        assert f in str(e), (f, str(e))
    return e


# --- doses -----------------------------------------------------------------------------
def test_addl_zero_with_interval_is_one_dose(tmp_path):
    rr, doses = simulate(scenario(tmp_path, "1,10,hcg,1500,24,0,0,1\n1,48,.,.,.,.,.,0\n"))
    assert doses.times("hcg") == [10.0]
    assert rr.horizon == 48.0 and rr.cohort.t == 48.0


def test_addl_two_every_24_h_is_three_doses(tmp_path):
    rr, doses = simulate(scenario(tmp_path, "1,10,hcg,1500,24,2,0,1\n"))
    assert doses.times("hcg") == [10.0, 34.0, 58.0]
    assert [a[0] for _, _, a in doses.log] == [1500.0] * 3
    assert rr.horizon == 58.0


def test_events_at_time_zero(tmp_path):
    rr, doses = simulate(scenario(tmp_path, "1,0,,,,,,0\n1,0,hcg,100,0,0,0,1\n1,1,,,,,,0\n"))
    assert doses.times("hcg") == [0.0]
    assert rr.visit_time[0, :2].tolist() == [0.0, 1.0]
    assert np.isfinite(rr.visit_labs["lh"][0, 0]) and np.isfinite(rr.visit_labs["sperm_conc"][0, 0])
    assert np.all(rr.visit_phase[0, :2] == -1)


def test_observation_and_dose_at_the_same_time_follow_the_documented_order(tmp_path):
    # the dose row comes first in the file: the observation is still drawn before it
    rows = "1,0,,,,,,0\n1,24,gonadorelin_iv,10,0,0,0,1\n1,24,,,,,,0\n1,24.5,,,,,,0\n"
    given, doses = simulate(scenario(tmp_path, rows, name="given"))
    none, _ = simulate(scenario(tmp_path, rows.replace(",0,0,0,1\n", ",0,0,0,2\n"),
                                name="none"))  # EVID 2: the same events without the dose
    assert doses.times("gonadorelin_iv") == [24.0]
    assert given.visit_time[0, :3].tolist() == [0.0, 24.0, 24.5]
    for k in ("lh", "fsh", "t_total"):  # trough at 24 h
        assert given.visit_labs[k][0, 1] == none.visit_labs[k][0, 1], k
    assert given.visit_labs["lh"][0, 2] > 2 * none.visit_labs["lh"][0, 2]  # 30 min later


def test_rate_gives_an_infusion_that_stops_after_amt_over_rate(tmp_path):
    rows = "1,1,gonadorelin_iv,30,0,0,10,1\n1,7,,,,,,0\n"
    rr, _ = simulate(scenario(tmp_path, rows), record="5 min")
    t, tr = rr.cohort.trace()
    c = tr["gonadorelin"][0]
    on = c[(t >= 2) & (t <= 4)]
    assert np.all(c[t <= 1] == 0)
    assert on.min() > 0 and np.ptp(on) < 1e-3 * on.max()
    assert np.all(c[t >= 5] < 1e-3 * on.max())  # stopped at 1 + 30/10 = 4 h, then decays


def test_rate_infusion_matches_a_continuous_phase(tmp_path):
    rows = "1,1,gonadorelin_iv,30,0,0,10,1\n1,6,,,,,,0\n"
    rr, _ = simulate(scenario(tmp_path, rows), record="10 min")
    phases = tmp_path / "phases.toml"
    phases.write_text("""[cohort]
phenotype = "chh"
seed = 3
n = 1
[[phase]]
name = "before"
duration = "1 h"
[[phase]]
name = "infusion"
duration = "3 h"
[[phase.drug]]
name = "gonadorelin_iv"
dose = 10
schedule = "continuous"
[[phase]]
name = "after"
duration = "2 h"
[[phase.visit]]
at = ["2 h"]
""")
    ref, _ = simulate(phases, record="10 min")
    t1, a = rr.cohort.trace()
    t2, b = ref.cohort.trace()
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_allclose(a["gonadorelin"], b["gonadorelin"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a["lh"], b["lh"], rtol=1e-9)


def test_repeated_and_overlapping_infusions(tmp_path):
    # two consecutive 2-h infusions (ADDL=1, II=2 h): the stop and the next start coincide
    rows = "1,0,gonadorelin_iv,20,2,1,10,1\n1,6,,,,,,0\n"
    rr, _ = simulate(scenario(tmp_path, rows), record="5 min")
    t, tr = rr.cohort.trace()
    c = tr["gonadorelin"][0]
    on = c[(t >= 1) & (t <= 4)]
    assert np.ptp(on) < 1e-3 * on.max() and np.all(c[t >= 5] < 1e-3 * on.max())
    # two overlapping infusions add up
    rows = "1,0,gonadorelin_iv,40,0,0,10,1\n1,1,gonadorelin_iv,10,0,0,10,1\n1,6,,,,,,0\n"
    rr2, _ = simulate(scenario(tmp_path, rows, name="overlap"), record="5 min")
    c2 = rr2.cohort.trace()[1]["gonadorelin"][0]
    assert c2[np.searchsorted(t, 1.9)] == pytest.approx(2 * on.max(), rel=0.02)


def test_infusion_rates_add_up_hand_over_and_cancel():
    from pulsehpg.nonmem import infusion_rates

    events = [(0.0, "infusion_start", 0, "hcg", 0.1), (10.0, "infusion_stop", 0, "hcg", 0.1),
              (5.0, "infusion_start", 0, "hcg", 0.2), (10.0, "infusion_start", 0, "hcg", 0.7),
              (12.0, "infusion_stop", 0, "hcg", 0.2), (12.0, "infusion_stop", 0, "hcg", 0.7),
              (3.0, "infusion_start", 1, "hcg", 1.0), (3.0, "infusion_stop", 1, "hcg", 1.0),
              (1.0, "dose", 0, "hcg", 99.0)]
    got = infusion_rates(events)
    # 0.1, then 0.1 + 0.2, then the first hands over to 0.7 at 10 h in one change
    want = [(0.0, 0, "hcg", 0.1), (3.0, 1, "hcg", 0.0), (5.0, 0, "hcg", 0.3),
            (10.0, 0, "hcg", 0.9), (12.0, 0, "hcg", 0.0)]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3] for g in got] == pytest.approx([w[3] for w in want], rel=1e-15, abs=0)


# --- one patient per ID --------------------------------------------------------------------
def test_ids_are_patients_in_order_of_first_appearance(tmp_path):
    rows = ("b7,24,hcg,1000,0,0,0,1\n"
            "a1,0,testosterone_enanthate,200,0,0,0,1\n"
            "b7,0,hcg,1000,0,0,0,1\n"  # rows of an ID need not be sorted
            "a1,48,,,,,,0\nb7,48,,,,,,0\n")
    path = scenario(tmp_path, rows)
    assert load_scenario(path).cohort.n == 2  # n defaults to the number of IDs
    rr, doses = simulate(path)
    assert doses.times("hcg", 0) == [0.0, 24.0] and doses.times("hcg", 1) == []
    assert doses.times("testosterone_enanthate", 1) == [0.0]
    assert doses.times("testosterone_enanthate", 0) == []
    for t, d, a in doses.log:  # each dose reaches its own patient only
        assert (a > 0).sum() == 1


def test_ids_are_independent_patients(tmp_path):
    rows_a = "A,0,testosterone_enanthate,200,24,1,0,1\nA,48,,,,,,0\n"
    rows_b = "B,0,hcg,5000,24,1,0,1\nB,48,,,,,,0\n"
    both, _ = simulate(scenario(tmp_path, rows_a + rows_b, name="both"), record="1 h")
    alone_a, _ = simulate(scenario(tmp_path, rows_a, name="a"), patients=[0], record="1 h")
    alone_b, _ = simulate(scenario(tmp_path, rows_b, name="b"), patients=[1], record="1 h")
    _, tr = both.cohort.trace()
    for i, alone in ((0, alone_a), (1, alone_b)):
        _, tr1 = alone.cohort.trace()
        for k in ("lh", "t_total", "hcg", "itt", "sperm_conc"):
            np.testing.assert_array_equal(tr[k][i], tr1[k][0], err_msg=k)
        for k, v in both.visit_labs.items():
            np.testing.assert_array_equal(v[i], alone.visit_labs[k][0], err_msg=k)
    assert np.all(tr["hcg"][0] == 0) and tr["hcg"][1].max() > 0  # no hCG leaks into A
    assert tr["t_total"][0].max() > 2 * tr["t_total"][1].max()


def test_ids_with_different_event_times_are_bit_identical_to_each_alone(tmp_path):
    rows_a = "A,0,testosterone_enanthate,200,0,0,0,1\nA,48,,,,,,0\n"
    rows_b = "B,5,hcg,5000,7,3,0,1\nB,48,,,,,,0\n"
    both, _ = simulate(scenario(tmp_path, rows_a + rows_b, name="both"), record="1 h")
    alone, _ = simulate(scenario(tmp_path, rows_a, name="a"), patients=[0], record="1 h")
    np.testing.assert_array_equal(both.visit_labs["lh"][0], alone.visit_labs["lh"][0])
    _, tr = both.cohort.trace()
    _, tr1 = alone.cohort.trace()
    assert np.all(tr["hcg"][0] == 0)
    for k in ("lh", "t_total", "itt"):
        np.testing.assert_array_equal(tr[k][0], tr1[k][0], err_msg=k)


def test_cohort_n_and_run_n(tmp_path):
    rows = "1,0,hcg,100,0,0,0,1\n2,0,hcg,200,0,0,0,1\n3,0,hcg,300,0,0,0,1\n3,24,,,,,,0\n"
    path = scenario(tmp_path, rows, cohort="n = 5")
    assert load_scenario(path).cohort.n == 5  # given: kept (patients 3 and 4 get nothing)
    res = run(path, n=2)  # a smaller run simulates the first IDs only
    assert res.cohort.n == 2 and res.regimen.horizon == 24.0
    assert np.all(np.isnan(res.visits["time_h"]))  # the observation was ID 3's
    # ... and says so, as `pulsehpg check` does for a cohort.n below the IDs
    assert "only the first 2 of their 3 patient IDs are simulated" in res.summary()
    assert load_scenario(path).records_note(5) is None
    assert "first 1 of their 3" in load_scenario(path).records_note(1)


def test_records_with_phases(tmp_path):
    path = scenario(tmp_path, "1,0,hcg,100,0,0,0,1\n1,72,,,,,,0\n2,0,hcg,100,0,0,0,1\n",
                    extra='\n[[phase]]\nname = "p"\nduration = "1 day"\n'
                          '[[phase.visit]]\nat = ["1 day"]\nlabs = ["lh"]\n')
    rr, doses = simulate(path)
    assert rr.horizon == 72.0
    # the table's observation at 72 h is made although the phases ended at 24 h
    assert rr.visit_time[0, :2].tolist() == [24.0, 72.0]
    assert rr.visit_phase[0, :2].tolist() == [0, -1] and np.all(rr.ended_at == 24.0)
    assert rr.visit_time[1, :2].tolist()[0] == 24.0 and np.isnan(rr.visit_time[1, 1])


# --- reading the table -----------------------------------------------------------------------
def test_columns_are_case_insensitive_and_cmt_names_the_drug(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id, time ,cmt,amt,evid\n1,0,hcg,10,1\n1,5,.,.,0\n")
    recs = read_dose_records(p)
    assert recs == (DoseRecord(0, 0.0, 1, "hcg", 10.0), DoseRecord(0, 5.0, 0))


def test_expand_records():
    recs = (DoseRecord(0, 1.0, 1, "hcg", 10.0, 0.0, 12.0, 2),
            DoseRecord(1, 0.0, 1, "gonadorelin_iv", 30.0, 10.0, 24.0, 1),
            DoseRecord(1, 5.0, 0), DoseRecord(1, 6.0, 2))
    events, visits = expand_records(recs)
    assert visits == [(5.0, 1)]
    assert events == [(1.0, "dose", 0, "hcg", 10.0), (13.0, "dose", 0, "hcg", 10.0),
                      (25.0, "dose", 0, "hcg", 10.0),
                      (0.0, "infusion_start", 1, "gonadorelin_iv", 10.0),
                      (3.0, "infusion_stop", 1, "gonadorelin_iv", 10.0),
                      (24.0, "infusion_start", 1, "gonadorelin_iv", 10.0),
                      (27.0, "infusion_stop", 1, "gonadorelin_iv", 10.0)]


@pytest.mark.parametrize("evid", [3, 4])
def test_reset_events_are_refused(tmp_path, evid):
    refused(tmp_path, f"1,0,hcg,10,0,0,0,1\n1,5,,,,,,{evid}\n", "line 3",
            f"EVID {evid} (reset) is not supported", "one ID per patient")


@pytest.mark.parametrize("rows, fragments", [
    ("1,-1,hcg,10,0,0,0,1\n", ["line 2", "TIME must be >= 0, got -1"]),
    ("1,abc,hcg,10,0,0,0,1\n", ["line 2", "TIME must be a number, got 'abc'"]),
    ("1,inf,hcg,10,0,0,0,1\n", ["line 2", "TIME must be finite"]),
    ("1,0,hcg,0,0,0,0,1\n", ["line 2", "AMT must be > 0", "AMT=0"]),
    ("1,0,hcg,ten,0,0,0,1\n", ["line 2", "AMT must be a number, got 'ten'"]),
    ("1,0,hcg,10,0,0,-2,1\n", ["line 2", "RATE=-2"]),
    ("1,0,hcg,10,0,1.5,0,1\n", ["line 2", "ADDL a whole number", "ADDL=1.5"]),
    ("1,0,hcg,10,0,2,0,1\n", ["line 2", "ADDL=2 needs II > 0"]),
    ("1,0,hcg,10,1,1000000,0,1\n", ["line 2", "more than 100000"]),
    ("1,0,hgc,10,0,0,0,1\n", ["line 2", "unknown drug 'hgc'", "allowed: testosterone_enanthate"]),
    ("1,0,,10,0,0,0,1\n", ["line 2", "unknown drug ''"]),
    ("1,0,hcg,10,0,0,0,5\n", ["line 2", "EVID must be 0, 1 or 2, got 5"]),
    ("1,0,hcg,10,0,0,0,1.5\n", ["line 2", "EVID must be 0, 1 or 2, got 1.5"]),
    (",0,hcg,10,0,0,0,1\n", ["line 2", "ID is empty"]),
    ("1,0,hcg,10,0,0,0,1\n1,0\n", ["line 3", "fewer fields than the 8 fields of the header"]),
    ("1,0,hcg,10,0,0,0,1,9\n", ["line 2", "more fields than the 8 fields"]),
    ("1,0,hcg,10,0,0,0,1\n\n\n1,x,,,,,,0\n", ["line 5", "TIME must be a number"]),
    ("", ["no records"]),
])
def test_bad_values_are_refused_naming_the_line(tmp_path, rows, fragments):
    refused(tmp_path, rows, *fragments)


def test_bad_columns_are_refused(tmp_path):
    refused(tmp_path, "1,0,hcg,10,1\n", "missing column(s) TIME", header="ID,T,DRUG,AMT,EVID\n")
    refused(tmp_path, "1,0,hcg,10\n", "missing column(s) EVID", header="ID,TIME,DRUG,AMT\n")
    refused(tmp_path, "", "empty file", header="")


def test_unreadable_or_missing_file(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"ID,TIME,EVID\n\xff\xfe,0,0\n")
    (tmp_path / "s.toml").write_text('[dose_records]\nfile = "bin.csv"\n')
    with pytest.raises(ScenarioError, match="not a UTF-8 text file"):
        load_scenario(tmp_path / "s.toml")
    (tmp_path / "s.toml").write_text('[dose_records]\nfile = "nope.csv"\n')
    with pytest.raises(ScenarioError, match="dose_records.file .line 2.: .*nope.csv"):
        load_scenario(tmp_path / "s.toml")
    (tmp_path / "s.toml").write_text("[dose_records]\nfile = 3\n")
    with pytest.raises(ScenarioError, match="dose_records.file .line 2.: expected a string"):
        load_scenario(tmp_path / "s.toml")
