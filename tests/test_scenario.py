"""Scenario files: every shipped example loads, and every mistake is a ScenarioError that
names the key path, the offending value and what is allowed, with the line where the
key is written."""

import glob
import math
import os
import tomllib

import pytest

from pulsehpg.scenario import ScenarioError, load_scenario, parse_scenario



def _is_scenario(path):  # examples/ also holds sweep configs ([sweep] over a scenario)
    with open(path, "rb") as f:
        return "sweep" not in tomllib.load(f)


EXAMPLES = [p for p in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..",
                                                  "examples", "*.toml")))
            if _is_scenario(p)]

# Two phases with the same keys, so that a line number pointing into the wrong phase
# (the first occurrence of a key) is caught.
BASE = """\
name = "base"

[cohort]
n = 3
seed = 7
[cohort.covariates]
age = { dist = "uniform", low = 25, high = 50 }

[[phase]]
name = "first"
duration = "2 weeks"
[[phase.drug]]
name = "hcg"
dose = 1500
schedule = "twice weekly"
[[phase.visit]]
every = "1 week"
labs = ["lh", "t_total"]
[[phase.rule]]
name = "low_t"
when = "t_total < 300"
then = [{ action = "set_dose", drug = "hcg", dose = 3000 }]

[[phase]]
name = "second"
duration = "4 weeks"
[[phase.drug]]
name = "clomiphene"
dose = "25 mg"
schedule = "daily"
[[phase.visit]]
at = ["2 weeks", "4 weeks"]
labs = ["lh", "fsh", "semen"]
[[phase.rule]]
name = "recovered"
when = "sperm_conc >= 15"
count = 2
then = [{ action = "end" }]

[outcomes]
time_zero = "second"
offset = "1 week"
"""


def mutate(old, new, text=BASE):
    assert text.count(old) == 1, old
    return text.replace(old, new)


def error_of(text) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    return info.value


def check(text, path, *fragments, line=None):
    """The error names `path`, contains every fragment, and its line holds `line`."""
    e = error_of(text)
    msg = str(e)
    assert e.path == path, msg
    assert msg.startswith(path), msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    if line is not None:
        assert e.line is not None, msg
        assert f"(line {e.line})" in msg
        assert line in text.splitlines()[e.line - 1], (msg, text.splitlines()[e.line - 1])
    return e


# --- the shipped examples ----------------------------------------------------------------
def test_base_is_valid():
    sc = parse_scenario(BASE)
    assert [p.name for p in sc.phases] == ["first", "second"]
    assert sc.phases[1].drugs[0].dose == 25.0
    assert sc.phases[1].visits[0].times == (336.0, 672.0)
    assert sc.phases[0].rules[0].actions[0].dose == 3000
    assert sc.time_zero_phase == "second" and sc.time_zero_offset == 168.0
    assert sc.duration == 6 * 168.0


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_every_example_loads(path):
    sc = load_scenario(path)
    assert sc.name == os.path.basename(path)[:-5]
    assert sc.phases and sc.duration > 0
    with open(path, encoding="utf-8") as f:
        assert sc.path == path and sc.text == f.read()
    assert len(sc.sha256) == 64
    for p in sc.phases:
        assert p.duration > 0
        for v in p.visits:
            assert v.times and 0 <= v.times[0] and v.times[-1] <= p.duration + 1e-9
        for d in p.drugs:
            assert d.dose > 0


def test_example_list_is_complete():
    assert len(EXAMPLES) >= 7


# --- unknown keys and names ----------------------------------------------------------
def test_unknown_top_level_key():
    text = 'colour = "blue"\n' + BASE
    check(text, "colour", "unknown key 'colour'", "allowed: name, description, cohort, phase",
          line='colour = "blue"')


def test_unknown_top_level_key_suggests():
    text = mutate("[[phase]]\nname = \"second\"", "[[phases]]\nname = \"second\"")
    check(text, "phases", "did you mean 'phase'?", line="[[phases]]")


def test_a_sweep_config_is_named_as_such():
    with open(os.path.join(os.path.dirname(__file__), "..", "examples",
                           "sweep-restart.toml"), encoding="utf-8") as f:
        text = f.read()
    check(text, "sweep", "this is a sweep config, not a scenario",
          "`pulsehpg sweep FILE --dry-run`", line="[sweep]")


def test_unknown_key_in_second_phase_points_at_its_line():
    text = mutate('schedule = "daily"\n', 'schedule = "daily"\nstrength = 2\n')
    check(text, "phase[1].drug[0].strength", "unknown key 'strength'",
          "allowed: name, dose, schedule, times, start, stop", line="strength = 2")


def test_unknown_drug_did_you_mean():
    text = mutate('name = "clomiphene"', 'name = "clomifene"')
    check(text, "phase[1].drug[0].name", "'clomifene'", "did you mean 'clomiphene'?",
          "allowed: testosterone_enanthate", line='name = "clomifene"')


def test_unknown_drug_in_rule_action():
    text = mutate('drug = "hcg", dose = 3000', 'drug = "anastrazole", dose = 3000')
    check(text, "phase[0].rule[0].then[0].drug", "'anastrazole'", "did you mean 'anastrozole'?",
          line='drug = "anastrazole"')


def test_unknown_phenotype():
    text = mutate("n = 3\n", 'n = 3\nphenotype = "eugonadl"\n')
    check(text, "cohort.phenotype", "did you mean 'eugonadal'?", "chh", line="phenotype =")


def test_unknown_parameter_did_you_mean():
    text = mutate("[cohort.covariates]", "[cohort.params]\n\"steroid.shgb\" = 30\n"
                  "[cohort.covariates]")
    check(text, "cohort.params.steroid.shgb", "did you mean 'steroid.shbg'?",
          line='"steroid.shgb" = 30')


def test_parameter_out_of_range():
    text = mutate("[cohort.covariates]", "[cohort.params]\n\"steroid.shbg\" = 5000\n"
                  "[cohort.covariates]")
    check(text, "cohort.params.steroid.shbg", "5000", "allowed range [1, 300] nmol/L",
          line='"steroid.shbg" = 5000')


@pytest.mark.parametrize("table, name, why", [
    ("params", "hypothalamus.pulse_mass_hill", "compiled into the core"),
    ("variability", "hypothalamus.pulse_mass_hill", "compiled into the core"),
    ("covariates", "hypothalamus.pulse_mass_hill", "compiled into the core"),
    ("params", "numerics.slow_acceleration", "burn_in_accel"),
])
def test_parameter_a_run_would_ignore(table, name, why):
    """A compiled-in exponent, or the equilibration speed-up the cohort sets itself, would
    be accepted and silently change nothing: refused, saying why."""
    value = "{ low = 2, high = 3 }" if table == "covariates" else "2"
    text = mutate("[cohort.covariates]", f'[cohort.{table}]\n"{name}" = {value}\n'
                  "[cohort.covariates]")
    if table == "covariates":  # into the existing table
        text = mutate("[cohort.covariates]", f'[cohort.covariates]\n"{name}" = {value}')
    check(text, f"cohort.{table}.{name}", why, line=f'"{name}" = {value}')


def test_unknown_covariate_and_bad_distribution():
    check(mutate("age = {", "agee = {"), "cohort.covariates.agee", "did you mean 'age'?",
          line="agee = {")
    check(mutate("low = 25, high = 50", "low = 50, high = 25"), "cohort.covariates.age.high",
          "25", "allowed range [50", line="age = {")
    check(mutate('dist = "uniform"', 'dist = "beta"'), "cohort.covariates.age.dist",
          "'beta'", "allowed: uniform, normal, lognormal", line='dist = "beta"')


# --- numbers, doses and durations --------------------------------------------------------
def test_negative_dose():
    check(mutate('dose = "25 mg"', "dose = -5"), "phase[1].drug[0].dose", "-5",
          "allowed range [0, 1e+07] mg", line="dose = -5")


def test_dose_in_the_wrong_unit():
    check(mutate('dose = "25 mg"', 'dose = "25 ug"'), "phase[1].drug[0].dose", "'25 ug'",
          "write a number in mg", line='dose = "25 ug"')


def test_dose_not_finite():
    check(mutate('dose = "25 mg"', "dose = nan"), "phase[1].drug[0].dose",
          "expected a number, got nan", line="dose = nan")
    check(mutate('dose = "25 mg"', "dose = inf"), "phase[1].drug[0].dose", "inf",
          line="dose = inf")


def test_missing_dose():
    check(mutate('dose = "25 mg"\n', ""), "phase[1].drug[0].dose", "is required",
          line="[[phase.drug]]")


def test_unreadable_duration():
    check(mutate('duration = "4 weeks"', 'duration = "4 fortnights"'), "phase[1].duration",
          "'4 fortnights'", "write a number and a unit", "'12 weeks'",
          line='duration = "4 fortnights"')


def test_zero_negative_and_huge_durations():
    check(mutate('duration = "4 weeks"', 'duration = "0 h"'), "phase[1].duration",
          "longer than zero", line='duration = "0 h"')
    check(mutate('duration = "4 weeks"', 'duration = "-3 days"'), "phase[1].duration",
          "cannot read '-3 days'", line='duration = "-3 days"')
    # a bare number would be hours (the Python API's convention), likely not what was meant
    check(mutate('duration = "4 weeks"', "duration = 28"), "phase[1].duration",
          "28 has no unit", "'28 days'", line="duration = 28")
    check(mutate('duration = "4 weeks"', 'duration = "1e30 years"'), "phase[1].duration",
          "'1e30 years'", "longest allowed (100 years)", line="1e30 years")


def test_dose_unit_follows_the_schedule():
    """A rate ('/h') only for a continuous schedule, and a continuous schedule's dose
    string must be a rate: '25 mg/h' daily was read as 25 mg, '25 mg' continuous as 25 mg/h."""
    check(mutate('dose = "25 mg"', 'dose = "25 mg/h"'), "phase[1].drug[0].dose",
          "'25 mg/h'", "only with schedule = 'continuous'", line='dose = "25 mg/h"')
    continuous = mutate('schedule = "daily"', 'schedule = "continuous"')
    check(mutate('dose = "25 mg"', 'dose = "25 mg"', continuous), "phase[1].drug[0].dose",
          "a continuous schedule takes a rate in mg/h", line='dose = "25 mg"')
    ok = parse_scenario(mutate('dose = "25 mg"', 'dose = "0.5 mg/h"', continuous))
    assert ok.phases[1].drugs[0].dose == 0.5


def test_rule_on_a_lab_no_visit_draws():
    text = """
[cohort]
n = 2
[[phase]]
name = "a"
duration = "8 weeks"
[[phase.visit]]
every = "4 weeks"
labs = ["lh", "semen"]
[[phase.rule]]
name = "r"
when = "t_total < 300 and sperm_conc > 1"
then = [{ action = "end" }]
"""
    check(text, "phase[0].rule[0].when", "reads t_total, which no visit of phase 'a' draws",
          "(labs: lh, semen)", "add 't_total'", line="when =")
    assert parse_scenario(text.replace('"lh", "semen"', '"lh", "t_total", "semen"'))


def test_unknown_schedule():
    check(mutate('schedule = "daily"', 'schedule = "hourly"'), "phase[1].drug[0].schedule",
          "'hourly'", "allowed: 'continuous', 'once', 'daily'", "every <duration>",
          line='schedule = "hourly"')


def test_schedule_every_with_an_unknown_unit():
    check(mutate('schedule = "daily"', 'schedule = "every 2 fortnights"'),
          "phase[1].drug[0].schedule", "cannot read '2 fortnights'",
          "(min, h, day, week, month, year)", "'every 90 min'", "'twice weekly'",
          line='schedule = "every 2 fortnights"')
    # abbreviations are accepted alike for every unit
    for every in ("every 2 wks", "every 2 weeks", "every 48 hrs", "every 1 yr"):
        assert parse_scenario(mutate('schedule = "daily"', f'schedule = "{every}"'))


def test_schedule_too_frequent():
    check(mutate('schedule = "daily"', 'schedule = "every 5 min"'),
          "phase[1].drug[0].schedule", "'every 5 min'", "continuous",
          line='schedule = "every 5 min"')


def test_schedule_and_times_together():
    check(mutate('schedule = "daily"', 'schedule = "daily"\ntimes = ["0 h"]'),
          "phase[1].drug[0]", "either 'schedule' or 'times'", line="[[phase.drug]]")


def test_drug_start_stop_and_times_must_fit_the_phase():
    t = mutate('schedule = "daily"', 'schedule = "daily"\nstart = "3 days"\nstop = "2 days"')
    check(t, "phase[1].drug[0].stop", "'2 days' must be after start", line='stop = "2 days"')
    t = mutate('schedule = "daily"', 'schedule = "daily"\nstart = "5 weeks"')
    check(t, "phase[1].drug[0].start", "'5 weeks'", "never be given", line='start = "5 weeks"')
    t = mutate('schedule = "daily"', 'times = ["1 day", "4 weeks"]')
    check(t, "phase[1].drug[0].times", "28 days", "phase ends (28 days)",
          line='times = ["1 day", "4 weeks"]')


# --- visits ------------------------------------------------------------------------
def test_unknown_lab_test():
    check(mutate('labs = ["lh", "fsh", "semen"]', 'labs = ["lh", "prolactin"]'),
          "phase[1].visit[0].labs", "'prolactin'", "allowed: lh, fsh, t_total",
          line='labs = ["lh", "prolactin"]')


def test_visit_after_phase_end():
    check(mutate('at = ["2 weeks", "4 weeks"]', 'at = ["2 weeks", "5 weeks"]'),
          "phase[1].visit[0].at", "35 days", "after the phase ends (28 days)",
          line='at = ["2 weeks", "5 weeks"]')


def test_visits_every_and_at():
    check(mutate('at = ["2 weeks", "4 weeks"]', 'at = ["2 weeks"]\nevery = "1 week"'),
          "phase[1].visit[0]", "exactly one of 'every'", line="[[phase.visit]]")
    check(mutate('every = "1 week"', 'every = "1 min"'), "phase[0].visit[0].every",
          "20160 visits", "at most 10000", line='every = "1 min"')
    check(mutate('every = "1 week"', 'every = "1 week"\nstart = "3 weeks"'),
          "phase[0].visit[0].start", "after the phase ends", line='start = "3 weeks"')


def test_visit_at_the_end_follows_the_duration():
    text = mutate('at = ["2 weeks", "4 weeks"]', 'at = ["end", "2 weeks"]')
    assert parse_scenario(text).phases[1].visits[0].times == (336.0, 672.0)
    text = mutate('duration = "4 weeks"', 'duration = "3 weeks"', text)
    assert parse_scenario(text).phases[1].visits[0].times == (336.0, 504.0)
    check(mutate('at = ["2 weeks", "4 weeks"]', 'at = ["ending"]'), "phase[1].visit[0].at",
          "'ending'", line='at = ["ending"]')


def test_visits_every_times():
    sc = parse_scenario(mutate('every = "1 week"', 'every = "5 days"\nstart = "0 h"'))
    assert sc.phases[0].visits[0].times == (0.0, 120.0, 240.0)


# --- rules -------------------------------------------------------------------------
def test_condition_unknown_name():
    check(mutate('when = "t_total < 300"', 'when = "testosterone < 300"'),
          "phase[0].rule[0].when", "unknown name 'testosterone'", "allowed: lh, fsh, t_total",
          line='when = "testosterone < 300"')


def test_condition_not_a_comparison():
    check(mutate('when = "t_total < 300"', 'when = "t_total + 300"'),
          "phase[0].rule[0].when", "'t_total + 300' is not a comparison", "e.g. 'lh < 4'",
          line='when = "t_total + 300"')
    check(mutate('when = "t_total < 300"', 'when = "t_total"'), "phase[0].rule[0].when",
          "not a comparison", line='when = "t_total"')


def test_condition_syntax_and_operands():
    check(mutate('when = "t_total < 300"', 'when = "t_total <"'), "phase[0].rule[0].when",
          "cannot parse 't_total <'", line='when = "t_total <"')
    check(mutate('when = "t_total < 300"', """when = "t_total < 'low'\""""),
          "phase[0].rule[0].when", "compare names with numbers only", line="when =")
    check(mutate('when = "t_total < 300"', 'when = "t_total in [1]"'),
          "phase[0].rule[0].when", "only <, <=, >, >=, ==, != are allowed", line="when =")
    check(mutate('when = "t_total < 300"', 'when = "__import__(\'os\') < 1"'),
          "phase[0].rule[0].when", "compare names with numbers only", line="when =")
    long = " and ".join(["lh < 4"] * 400)
    check(mutate('when = "t_total < 300"', f'when = "{long}"'), "phase[0].rule[0].when",
          "too long", line="when =")
    deep = "not " * 5000 + "lh < 4"
    check(mutate('when = "t_total < 300"', f'when = "{deep}"'), "phase[0].rule[0].when",
          "too long", line="when =")


def test_goto_to_a_missing_phase():
    text = mutate('then = [{ action = "end" }]', 'then = [{ action = "goto", phase = "thrid" }]')
    check(text, "phase[1].rule[0].then[0].phase", "'thrid'", "allowed: first, second",
          line='phase = "thrid"')


def test_unknown_action():
    check(mutate('action = "end"', 'action = "stop"'), "phase[1].rule[0].then[0].action",
          "'stop'", "allowed: add_drug, stop_drug, set_dose, goto, end",
          line='action = "stop"')


def test_action_refuses_keys_of_other_actions():
    # before, a key that another action takes was dropped without a word
    check(mutate('{ action = "end" }', '{ action = "end", drug = "hcg" }'),
          "phase[1].rule[0].then[0].drug", "action 'end' does not take 'drug'",
          "it takes nothing else", line='action = "end"')
    check(mutate('{ action = "end" }',
                 '{ action = "set_dose", drug = "hcg", dose = "500 IU", schedule = "daily" }'),
          "phase[1].rule[0].then[0].schedule", "action 'set_dose' does not take 'schedule'",
          "it takes drug, dose", line="set_dose")
    check(mutate('{ action = "end" }', '{ action = "stop_drug", drug = "hcg", dose = 5 }'),
          "phase[1].rule[0].then[0].dose", "'stop_drug' does not take 'dose'")


def test_add_drug_action_needs_drug_and_schedule():
    check(mutate('{ action = "end" }', '{ action = "add_drug", dose = 5, schedule = "daily" }'),
          "phase[1].rule[0].then[0].drug", "is required", line="add_drug")
    check(mutate('{ action = "end" }', '{ action = "add_drug", drug = "hcg", dose = 5 }'),
          "phase[1].rule[0].then[0].schedule", "is required", line="add_drug")


def test_rule_count_and_then():
    check(mutate("count = 2", "count = 0"), "phase[1].rule[0].count", "0",
          "allowed range [1, 1000]", line="count = 0")
    check(mutate("count = 2", "count = 1.5"), "phase[1].rule[0].count",
          "expected a whole number, got 1.5", line="count = 1.5")
    check(mutate('then = [{ action = "end" }]', "then = []"), "phase[1].rule[0].then",
          "one or more actions", line="then = []")


def test_duplicate_rule_names():
    text = mutate('name = "recovered"', 'name = "low_t"')  # other phase: allowed
    parse_scenario(text)
    text = BASE + '[[phase.rule]]\nname = "recovered"\nwhen = "lh < 1"\nthen = { action = "end" }\n'
    text = text.replace("[outcomes]\ntime_zero = \"second\"\noffset = \"1 week\"\n", "")
    check(text, "phase[1].rule[1].name", "'recovered' is used twice",
          line='name = "recovered"')


# --- phases --------------------------------------------------------------------------
def test_duplicate_phase_names():
    e = check(mutate('name = "second"', 'name = "first"'), "phase[1].name",
              "phase names must be unique", "'first'", line='name = "first"')
    assert e.line == BASE.splitlines().index('name = "second"') + 1


def test_next_and_time_zero_name_phases():
    check(mutate('duration = "4 weeks"', 'duration = "4 weeks"\nnext = "third"'),
          "phase[1].next", "'third'", "allowed: first, second, end", line='next = "third"')
    check(mutate('time_zero = "second"', 'time_zero = "seconds"'), "outcomes.time_zero",
          "did you mean 'second'?", "allowed: first, second", line='time_zero = "seconds"')


def test_no_phase():
    check('name = "x"\n[cohort]\nn = 2\n', "phase", "at least one [[phase]]")


def test_phase_without_name():
    check(mutate('name = "second"\n', ""), "phase[1].name", "is required")


# --- wrong types ----------------------------------------------------------------------
@pytest.mark.parametrize("old, new, path, fragment", [
    ("n = 3", 'n = "three"', "cohort.n", "expected a number, got 'three'"),
    ("n = 3", "n = 2.5", "cohort.n", "expected a whole number"),
    ("n = 3", "n = 0", "cohort.n", "allowed range [1,"),
    ("seed = 7", "seed = -1", "cohort.seed", "allowed range [0,"),
    ("seed = 7", "seed = true", "cohort.seed", "expected a number, got True"),
    ("seed = 7", "deterministic = 1", "cohort.deterministic", "expected true or false"),
    ('duration = "2 weeks"', "duration = true", "phase[0].duration", "got True"),
    ('duration = "2 weeks"', "duration = [1]", "phase[0].duration", "got [1]"),
    ('duration = "2 weeks"', "duration = 2021-01-01", "phase[0].duration", "2021"),
    ('labs = ["lh", "t_total"]', 'labs = "lh"', "phase[0].visit[0].labs",
     "expected a list of lab tests"),
    ('labs = ["lh", "t_total"]', "labs = []", "phase[0].visit[0].labs",
     "expected a list of lab tests"),
    ("dose = 1500", "dose = [1500]", "phase[0].drug[0].dose", "expected a number"),
    ("dose = 1500", "dose = false", "phase[0].drug[0].dose", "expected a number"),
    ('schedule = "twice weekly"', "schedule = 2", "phase[0].drug[0].schedule",
     "expected a string, got 2"),
    ('when = "t_total < 300"', "when = 300", "phase[0].rule[0].when",
     "expected a condition such as 'lh < 4', got 300"),
    ('name = "low_t"', "name = 5", "phase[0].rule[0].name", "expected a string"),
    ('then = [{ action = "set_dose", drug = "hcg", dose = 3000 }]', 'then = "end"',
     "phase[0].rule[0].then", "one or more actions"),
    ('then = [{ action = "set_dose", drug = "hcg", dose = 3000 }]', 'then = ["end"]',
     "phase[0].rule[0].then[0]", "expected a table"),
    ("count = 2", 'once = "yes"', "phase[1].rule[0].once", "expected true or false"),
    ('time_zero = "second"', "time_zero = 1", "outcomes.time_zero", "expected a string"),
    ('offset = "1 week"', 'offset = "1 wek"', "outcomes.offset", "cannot read '1 wek'"),
    ('name = "base"', "name = 1", "name", "expected a string, got 1"),
])
def test_wrong_types(old, new, path, fragment):
    check(mutate(old, new), path, fragment, line=new.split("=")[0].strip() + " =")


def test_wrong_table_types():
    check("phase = \"x\"\n", "phase", "expected an array ([[phase]] tables)", line='phase = "x"')
    check("cohort = 3\n[[phase]]\nname = \"a\"\nduration = 1\n", "cohort",
          "expected a table, got 3", line="cohort = 3")
    check(mutate("[[phase.visit]]\nevery", "[phase.visit]\nevery"), "phase[0].visit",
          "expected an array", line="[phase.visit]")
    check("phase = [1]\n", "phase[0].name", "is required (a string)", line="phase = [1]")


# --- files and TOML -------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(path) in str(info.value) and "no such file" in str(info.value)


def test_unreadable_file(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(tmp_path)  # a directory


def test_invalid_toml():
    text = mutate("[[phase.drug]]\nname = \"clomiphene\"", "[[phase.drug]\nname = \"clomiphene\"")
    e = error_of(text)
    assert "not valid TOML" in str(e)
    assert e.line == text.splitlines().index("[[phase.drug]") + 1
    e = error_of('name = "a"\nname = "b"\n')
    assert "not valid TOML" in str(e) and e.line == 2


def test_invalid_toml_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[[phase]\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(str(path)) and info.value.line == 1


def test_error_is_a_value_error_with_path_and_line():
    e = error_of(mutate("dose = 1500", "dose = -1"))
    assert isinstance(e, ValueError)
    assert e.path == "phase[0].drug[0].dose"
    assert e.line == BASE.splitlines().index("dose = 1500") + 1


def test_line_numbers_across_tables_and_inline_arrays():
    text = """\
description = '''
[[phase]]
name = "not a table"
'''
[[phase]]
name = "a"
duration = "1 week"
[[phase.rule]]
when = "lh < 4"
then = [
  { action = "end" },
  { action = "goto", phase = "b" },
]
"""
    check(text, "phase[0].rule[0].then[1].phase", "'b'", "allowed: a", line='phase = "b" }')


def test_infinite_and_not_a_number_durations():
    for v in ("inf", "nan", '"1e400 h"'):
        check(mutate('duration = "2 weeks"', f"duration = {v}"), "phase[0].duration",
              "duration", line=f"duration = {v}")


def test_scenario_helpers():
    sc = parse_scenario(BASE)
    assert sc.phase("second").duration == 4 * 168
    with pytest.raises(KeyError):
        sc.phase("third")
    assert sc.with_cohort(n=9).cohort.n == 9 and sc.cohort.n == 3
    assert math.isinf(sc.phases[0].drugs[0].stop)
