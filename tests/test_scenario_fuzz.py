"""Property-based tests of scenario validation: malformed and extreme documents either
raise ScenarioError (never another exception) or give a Scenario that runs.

Documents are generated as Python structures (mostly the right shape, with wrong
types, extreme numbers, random strings and unknown keys mixed in) and rendered to
TOML text by a small emitter below. Scenarios that validate are run with two
patients after their phases are cut to a few days.
"""

import glob
import json
import math
import os
import string
import tomllib
from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pulsehpg.cohort import DRUG_NAMES
from pulsehpg.labs import LAB_TESTS
from pulsehpg.phenotypes import PHENOTYPES
from pulsehpg.rules import CONDITION_NAMES
from pulsehpg.run import run
from pulsehpg.scenario import Scenario, ScenarioError, parse_scenario

# PULSEHPG_FUZZ_EXAMPLES=2000 for a longer search (random instead of the fixed derandomized set)
_DEEP = int(os.environ.get("PULSEHPG_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_DEEP or 60, deadline=None, derandomize=not _DEEP,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _is_scenario(path):  # examples/ also holds sweep configs ([sweep] over a scenario)
    with open(path, "rb") as f:
        return "sweep" not in tomllib.load(f)


EXAMPLES = [p for p in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..",
                                                  "examples", "*.toml")))
            if _is_scenario(p)]


# --- a tiny TOML emitter -------------------------------------------------------------
def _key(k: str) -> str:
    if k and all(c in string.ascii_letters + string.digits + "_-" for c in k):
        return k
    return _str(k)


def _str(s: str) -> str:
    # JSON's escapes are TOML's (no surrogate pairs: ensure_ascii=False); DEL needs one too
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(doc: dict, prefix: str = "") -> str:
    """Keys first, then [tables] and [[arrays of tables]], recursively."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    for k, v in doc.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict):
            lines += ["", f"[{name}]", to_toml(v, name)]
        elif _is_table_array(v):
            for x in v:
                lines += ["", f"[[{name}]]", to_toml(x, name)]
    return "\n".join(lines)


def test_emitter_round_trips():
    doc = {"a": 1, "b": [1.5, "x\n\"y\\", "\x7f\x00\U0001f600\u00e9"],
           "t": {"x y": True, "inner": {"z": -1}},
           "phase": [{"name": "p", "drug": [{"name": "hcg"}, {"name": "fsh"}]}, {"name": "q"}],
           "e": [], "n": float("inf")}
    assert tomllib.loads(to_toml(doc)) == doc


# --- strategies ------------------------------------------------------------------------
def mostly(good, bad, one_in=12):
    """Usually a draw from `good`, about one time in `one_in` from `bad`."""
    # (the bad branch is the largest k: Hypothesis favours k = 0 in its simplest examples)
    return st.integers(0, one_in - 1).flatmap(lambda k: bad if k == one_in - 1 else good)


junk_text = st.text(max_size=30)
junk = st.one_of(
    st.just([]),
    st.booleans(),
    st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    junk_text,
    st.lists(st.one_of(st.integers(-5, 5), junk_text), max_size=3),
    st.dictionaries(st.sampled_from(["a", "name", "dose", "x y"]), st.integers(), max_size=2),
)
extreme_numbers = st.one_of(
    st.sampled_from([0, 0.0, -0.0, -1, 1e7, 1e7 + 1, 1e-300, 1e300, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**9, 10**9),
)
numbers = mostly(st.one_of(st.sampled_from([1, 2.5, 10, 150, 1500]), st.floats(0, 5000)),
                 extreme_numbers, 4)
good_durations = st.sampled_from(["1 h", "90 min", "6 h", "1 day", "2 days", "3 days",
                                  "1 week", "12 h", "24.0 h", "36 h", 0])
duration_strings = st.one_of(
    st.sampled_from(["0 h", "-5 h", "0", "1e300 h", "1e-300 h", "5e-324 h", "1e400 h",
                     "100 years", "101 years", "2 fortnights", "", " 3 days ", "3days",
                     ".5 h", "5. h", "1 MONTH", "nan h", "inf h"]),
    st.builds(lambda x, u: f"{x:g} {u}", st.floats(0, 1e6, allow_subnormal=True),
              st.sampled_from(["min", "h", "days", "weeks", "months", "years", "mo"])),
)
durations = mostly(good_durations, st.one_of(duration_strings, st.sampled_from(
    [0, -1, 1e300, 1e-300]), junk), 6)
schedules = mostly(
    st.sampled_from(["continuous", "once", "daily", "once daily", "twice daily",
                     "every other day", "twice weekly", "three times weekly", "weekly",
                     "every 2 weeks", "monthly", "every 90 min", "every 15 min",
                     "every 8 h", "every 9 h", "Every  90  Min"]),
    st.one_of(st.sampled_from(["every 14 min", "every 0 h", "every -1 h", "every 1e300 h",
                               "every", "hourly"]),
              duration_strings.map(lambda d: f"every {d}"), junk), 6)
_names = mostly(st.sampled_from(CONDITION_NAMES),
                st.sampled_from(["prolactin", "__import__", "os", "x"]), 10)
_ops = mostly(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
              st.sampled_from(["=", "in", "is", "+", "<>", "and"]), 10)
_atoms = st.builds(lambda a, o, b: f"{a} {o} {b}", _names, _ops,
                   mostly(st.floats(-1e9, 1e9).map(repr),
                          st.one_of(_names, st.sampled_from(
                              ["-4", "'x'", "True", "nan", "1e999", "[1]", "()", "-True",
                               "1j"])), 4))
conditions = mostly(
    st.one_of(
        st.sampled_from(["lh < 4", "sperm_conc >= 15", "t_total < 300 and weeks_in_phase >= 1",
                         "not e2 > 50", "lh != 4", "0 < fsh < 100", "days_in_phase >= 0",
                         "lh < fsh", "motility < 40 or inhibin_b > 10", "(lh < 4)"]),
        st.lists(_atoms, min_size=1, max_size=4).map(" and ".join),
        st.lists(_atoms, min_size=1, max_size=4).map(" or ".join),
        st.integers(0, 300).map(lambda k: "not " * k + "lh < 4")),
    st.one_of(st.sampled_from(["lh <", "", " ", "lh", "lh + 4", "not lh"]), junk), 8)
drug_names = mostly(st.sampled_from(DRUG_NAMES),
                    st.one_of(st.sampled_from(["hgc", "Testosterone", ""]), junk), 15)
doses = mostly(numbers, st.one_of(st.sampled_from(["200 mg", "10 ug", "1500 IU", "5 mg/h",
                                                   "200mg", "x mg", "200 mg extra"]), junk), 6)
lab_lists = mostly(st.lists(st.sampled_from(LAB_TESTS), min_size=1, max_size=4),
                   st.one_of(st.lists(st.sampled_from(LAB_TESTS + ("prolactin", "")),
                                      max_size=3), junk), 10)


@st.composite
def drug_tables(draw):
    t = {"name": draw(drug_names), "dose": draw(doses)}
    if draw(st.integers(0, 4)):
        t["schedule"] = draw(schedules)
    else:
        t["times"] = draw(mostly(st.lists(durations, min_size=1, max_size=4), junk, 8))
    for k in ("start", "stop"):
        if draw(st.integers(0, 5)) == 0:
            t[k] = draw(durations)
    return t


@st.composite
def visit_tables(draw):
    t = {}
    if draw(st.booleans()):
        t["every"] = draw(durations)
        if draw(st.integers(0, 3)) == 0:
            t["start"] = draw(durations)
    else:
        t["at"] = draw(mostly(st.lists(durations, min_size=1, max_size=4), junk, 8))
    if draw(st.booleans()):
        t["labs"] = draw(lab_lists)
    return t


@st.composite
def actions(draw, phase_names):
    kind = draw(mostly(st.sampled_from(["add_drug", "stop_drug", "set_dose", "goto", "end"]),
                       junk, 15))
    a = {"action": kind}
    if kind in ("add_drug", "stop_drug", "set_dose") or draw(st.integers(0, 9)) == 0:
        a["drug"] = draw(drug_names)
    if kind in ("add_drug", "set_dose") or draw(st.integers(0, 9)) == 0:
        a["dose"] = draw(doses)
    if kind == "add_drug" or draw(st.integers(0, 9)) == 0:
        a["schedule"] = draw(schedules)
    if kind == "goto" or draw(st.integers(0, 9)) == 0:
        a["phase"] = draw(mostly(st.sampled_from(phase_names), junk_text, 10))
    return a


@st.composite
def rule_tables(draw, phase_names):
    t = {"when": draw(conditions),
         "then": draw(mostly(st.lists(actions(phase_names), min_size=1, max_size=2),
                             st.one_of(actions(phase_names), junk), 10))}
    if draw(st.booleans()):
        t["name"] = draw(mostly(st.sampled_from(["r", "r2", "rule0", "rule1"]), junk, 10))
    if draw(st.integers(0, 2)) == 0:
        t["count"] = draw(mostly(st.integers(1, 3), st.one_of(extreme_numbers, junk), 6))
    if draw(st.integers(0, 3)) == 0:
        t["once"] = draw(mostly(st.booleans(), junk, 10))
    return t


@st.composite
def cohort_tables(draw):
    t = {}
    if draw(st.booleans()):
        t["n"] = draw(mostly(st.integers(1, 10**7), st.one_of(extreme_numbers, junk), 6))
    if draw(st.booleans()):
        t["phenotype"] = draw(mostly(st.sampled_from(list(PHENOTYPES)), junk_text, 10))
    if draw(st.booleans()):
        t["seed"] = draw(mostly(st.integers(0, 2**63 - 1), st.one_of(st.just(-1), junk), 10))
    if draw(st.integers(0, 3)) == 0:
        t["deterministic"] = draw(mostly(st.booleans(), junk, 10))
    if draw(st.integers(0, 3)) == 0:
        age = draw(st.one_of(
            st.floats(0, 120),
            st.fixed_dictionaries({"dist": st.just("uniform"), "low": st.floats(15, 60),
                                   "high": st.floats(15, 90)}),
            st.fixed_dictionaries({"dist": st.just("normal"), "mean": numbers, "sd": numbers}),
            st.fixed_dictionaries({"dist": st.just("lognormal"), "median": numbers,
                                   "cv": numbers}),
            junk))
        t["covariates"] = {draw(mostly(st.sampled_from(["age", "shbg", "testis_function"]),
                                       st.just("agee"), 10)): age}
    if draw(st.integers(0, 3)) == 0:
        # moderate values only: registry bounds themselves can make the core diverge
        t["params"] = {draw(mostly(st.sampled_from(["steroid.shbg", "leydig.t_secretion"]),
                                   st.just("steroid.shbg_x"), 10)):
                       draw(mostly(st.floats(30, 40), junk, 10))}
    if draw(st.integers(0, 4)) == 0:
        t["variability"] = {"steroid.shbg": draw(mostly(st.floats(0, 1),
                                                        st.one_of(extreme_numbers, junk), 5))}
    return t


@st.composite
def documents(draw):
    k = draw(st.integers(1, 3))
    names = draw(st.lists(mostly(st.sampled_from(["a", "b", "c"]),
                                 st.sampled_from(["end", "x y", "", "a"]), 8),
                          min_size=k, max_size=k, unique=True))
    doc = {}
    if draw(st.booleans()):
        doc["name"] = draw(mostly(junk_text, junk, 10))
    if draw(st.booleans()):
        doc["cohort"] = draw(cohort_tables())
    phases = []
    for name in names:
        ph = {"name": draw(mostly(st.just(name), junk, 30)),
              "duration": draw(mostly(good_durations, durations, 3))}
        if draw(st.booleans()):
            ph["drug"] = draw(st.lists(drug_tables(), min_size=1, max_size=2))
        if draw(st.booleans()):
            ph["visit"] = draw(st.lists(visit_tables(), min_size=1, max_size=2))
        if draw(st.integers(0, 2)) == 0:
            ph["rule"] = draw(st.lists(rule_tables(names), min_size=1, max_size=2))
        if draw(st.integers(0, 4)) == 0:
            ph["next"] = draw(mostly(st.sampled_from(names + ["end"]),
                                     st.one_of(st.just("zz"), junk), 10))
        phases.append(ph)
    doc["phase"] = phases
    if draw(st.integers(0, 3)) == 0:
        doc["outcomes"] = {"time_zero": draw(mostly(st.sampled_from(names), junk, 10)),
                           "offset": draw(durations)}
    # sometimes: an unknown key or a value of the wrong type somewhere
    if draw(st.integers(0, 9)) == 0:
        target = draw(st.sampled_from([doc] + phases + [p.get("drug", [{}])[0] for p in phases]))
        target[draw(st.sampled_from(["colour", "dose", "name", "every", "then", "duration"]))] = \
            draw(junk)
    return doc


@st.composite
def extreme_valid_documents(draw):
    """Well-formed documents with allowed but extreme values: they must validate and run."""
    k = draw(st.integers(1, 3))
    names = ["a", "b", "c"][:k]
    phases = []
    for name in names:
        dur_h = draw(st.sampled_from([1 / 60, 0.25, 1.0, 24.0, 72.0]))
        ph = {"name": name, "duration": f"{dur_h!r} h"}
        drugs = []
        for _ in range(draw(st.integers(0, 3))):
            drugs.append({
                "name": draw(st.sampled_from(DRUG_NAMES)),
                "dose": draw(st.sampled_from([0, 5e-324, 1e-300, 1e-6, 1, 1e4, 1e7])),
                "schedule": draw(st.sampled_from(
                    ["continuous", "once", "every 15 min", "every 8 h", "every 8.001 h",
                     "daily", "twice daily", "monthly", "every 1e300 h"])),
                **({"start": "0 h"} if draw(st.booleans()) else {}),
                **({"stop": f"{dur_h * draw(st.sampled_from([0.5, 1, 1e300])):.17g} h"}
                   if draw(st.booleans()) else {}),
            })
        if drugs:
            ph["drug"] = drugs
        ph["visit"] = [{"at": [0, f"{dur_h!r} h"],
                        "labs": draw(st.lists(st.sampled_from(LAB_TESTS), min_size=1,
                                              unique=True))}]
        if draw(st.booleans()):
            ph["visit"][0]["labs"] = list(LAB_TESTS)  # the rules read any lab
            ph["rule"] = [{
                "name": f"r{j}",
                "when": draw(st.sampled_from(["lh >= 0", "lh < 0", "days_in_phase >= 0",
                                              "not sperm_conc > 1e300", "lh != lh",
                                              "motility >= 0 or t_total >= 0"])),
                "count": draw(st.integers(1, 2)), "once": draw(st.booleans()),
                "then": [draw(st.one_of(
                    st.just({"action": "end"}),
                    st.builds(lambda p: {"action": "goto", "phase": p}, st.sampled_from(names)),
                    st.builds(lambda d, x, sch: {"action": "add_drug", "drug": d, "dose": x,
                                                 "schedule": sch},
                              st.sampled_from(DRUG_NAMES), st.sampled_from([0, 1, 1e7]),
                              st.sampled_from(["once", "every 15 min", "continuous",
                                               "daily"])),
                    st.builds(lambda d, x: {"action": "set_dose", "drug": d, "dose": x},
                              st.sampled_from(DRUG_NAMES), st.sampled_from([0, 1e7])),
                    st.builds(lambda d: {"action": "stop_drug", "drug": d},
                              st.sampled_from(DRUG_NAMES))))],
            } for j in range(draw(st.integers(1, 2)))]
        if draw(st.integers(0, 3)) == 0:
            ph["next"] = draw(st.sampled_from(names + ["end"]))
        phases.append(ph)
    doc = {"cohort": {"n": draw(st.sampled_from([1, 10**7])),
                      "seed": draw(st.sampled_from([0, 2**63 - 1])),
                      "phenotype": draw(st.sampled_from(list(PHENOTYPES))),
                      "deterministic": draw(st.booleans())},
           "phase": phases}
    if draw(st.booleans()):
        doc["outcomes"] = {"time_zero": draw(st.sampled_from(names)),
                           "offset": draw(st.sampled_from(["0 h", "1e300 h"]))}
    goes_back = any(
        names.index(ph.get("next", "end") if ph.get("next", "end") != "end" else names[-1])
        < i or any(a.get("action") == "goto" and names.index(a["phase"]) <= i
                   for r in ph.get("rule", ()) for a in r["then"])
        or ph.get("next") == ph["name"]
        for i, ph in enumerate(phases))
    if goes_back or draw(st.integers(0, 3)) == 0:  # going back needs a follow-up
        doc.setdefault("outcomes", {})["follow_up"] = draw(
            st.sampled_from(["1 min", "2 days", "3000 days"]))
    return doc


# --- running what validates ----------------------------------------------------------------
CAP_H = 72.0  # every phase cut to 3 days for the run


def shorten(sc: Scenario, cap: float = CAP_H, visits: int = 12) -> Scenario:
    phases = []
    for p in sc.phases:
        d = min(p.duration, cap)
        vs = tuple(replace(v, times=tuple(t for t in v.times if t <= d)[:visits])
                   for v in p.visits)
        phases.append(replace(p, duration=d, visits=vs))
    follow_up = None if sc.follow_up is None else min(sc.follow_up, 3 * cap)
    return replace(sc, phases=tuple(phases), follow_up=follow_up)


def parse_or_error(text: str):
    try:
        sc = parse_scenario(text)
    except ScenarioError as e:
        msg = str(e)
        assert msg.startswith(e.path) and e.path
        lines = text.splitlines()
        assert e.line is None or 1 <= e.line <= max(len(lines), 1), (e.line, len(lines))
        return None
    assert isinstance(sc, Scenario) and sc.phases
    return sc


def check_runs(sc: Scenario):
    try:
        res = run(shorten(sc), n=2)
    except RuntimeError as e:  # goto rules that send patients round in no time: refused
        assert "without time passing" in str(e)
        event("goto loop refused")
        return
    out = res.outcomes
    for key, v in out.items():
        assert v.shape == (2,), key
        if key.startswith("event_"):
            days = out["days_to_" + key[len("event_"):]]
            assert np.all(np.isfinite(days[v])) and np.all(days[v] >= 0), key
        if key.startswith("end_"):
            assert np.all(np.isfinite(v)), key
        if key.endswith("_count"):
            assert np.all(v >= 0), key
    seen = np.isfinite(res.visits["time_h"])
    assert np.all(res.visits["time_h"][seen] <= res.regimen.horizon + 1e-6)
    for k in ("lh", "fsh", "t_total", "e2"):
        v = res.visits[k]
        assert np.all(v[np.isfinite(v)] >= 0), k
    res.summary()


@SETTINGS
@given(documents())
def test_generated_documents_raise_scenario_error_or_run(doc):
    sc = parse_or_error(to_toml(doc))
    event("valid" if sc is not None else "ScenarioError")
    if sc is not None:
        check_runs(sc)


@SETTINGS
@given(st.text(max_size=200))
def test_random_text_raises_scenario_error_only(text):
    parse_or_error(text)


@SETTINGS
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_examples_raise_scenario_error_only(path, data):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        how = data.draw(st.sampled_from(["drop", "junk value", "insert", "swap"]))
        if how == "drop":
            del lines[i]
        elif how == "junk value" and "=" in lines[i]:
            lines[i] = lines[i].split("=")[0] + "= " + _value(data.draw(junk))
        elif how == "insert":
            lines.insert(i, data.draw(st.sampled_from(
                ["[[phase]]", "[[phase.rule]]", "[cohort]", "foo = 1", 'next = "end"',
                 "[[phase.drug]]", 'duration = "1 h"', "count = 3"])))
        else:
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    sc = parse_or_error("\n".join(lines))
    if sc is not None and data.draw(st.integers(0, 4)) == 0:
        check_runs(sc)


@settings(SETTINGS, max_examples=_DEEP or 30)
@given(extreme_valid_documents())
def test_extreme_but_valid_documents_run(doc):
    text = to_toml(doc)
    sc = parse_scenario(text)
    check_runs(sc)
