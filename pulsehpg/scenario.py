"""Scenario files: a cohort and a regimen of phases, read from TOML and validated.

Every mistake raises :class:`ScenarioError` naming the key path (``phase[2].drug[0].dose``),
the line where it can be found, the value, and what is allowed. See
``examples/*.toml`` and the README for the format.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .cohort import DRUG_NAMES, MAX_PATIENTS, OBSERVABLES
from .labs import LAB_TESTS, LAB_VALUES, SEMEN_VALUES, values_of
from .nonmem import patient_count, read_dose_records
from .params import BY_NAME, settable
from .phenotypes import PHENOTYPES
from .rules import Condition, parse_condition
from .schedule import Schedule, parse_schedule
from .units import MAX_SPAN_H, parse_duration

__all__ = ["ScenarioError", "Scenario", "Phase", "DrugPlan", "VisitPlan", "Rule", "Action",
           "CohortSpec", "Distribution", "load_scenario", "parse_scenario", "DRUG_UNITS"]

from . import model as _model

DRUG_UNITS = {d.name: d.unit for d in _model.DRUGS}
ACTIONS = ("add_drug", "stop_drug", "set_dose", "goto", "end")
MAX_PHASE = MAX_SPAN_H  # h: the longest phase
MIN_PHASE = 1 / 60  # h: the shortest (the clock must move on from phase to phase)
MAX_VISITS = 10_000  # per [[phase.visit]] table
COVARIATES = {"age": "patient.age", "testis_function": "patient.testis_function",
              "metabolic_index": "patient.metabolic_index", "shbg": "steroid.shbg"}


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message says where and why."""

    def __init__(self, path: str, message: str, line: int | None = None):
        self.path, self.message, self.line = path, message, line
        # args are the constructor's: copies (SimPy re-raises a copy) and pickles work
        super().__init__(path, message, line)

    def __str__(self) -> str:
        where = f"{self.path}" + (f" (line {self.line})" if self.line else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Distribution:
    """A covariate or parameter across patients: fixed, uniform, normal or log-normal."""

    kind: str  # fixed | uniform | normal | lognormal
    a: float  # value | low | mean | median
    b: float = 0.0  # - | high | sd | cv
    low: float = -math.inf
    high: float = math.inf


@dataclass(frozen=True)
class CohortSpec:
    n: int = 100
    phenotype: str = "eugonadal"
    seed: int = 0
    params: dict = field(default_factory=dict)  # name -> value
    variability: dict = field(default_factory=dict)  # name -> CV
    covariates: dict = field(default_factory=dict)  # registry name -> Distribution
    deterministic: bool = False


@dataclass(frozen=True)
class DrugPlan:
    drug: str
    dose: float  # per administration, or per hour when continuous
    schedule: Schedule
    start: float = 0.0  # h after phase start
    stop: float = math.inf  # h after phase start


@dataclass(frozen=True)
class VisitPlan:
    times: tuple[float, ...]  # h after phase start
    labs: tuple[str, ...]


@dataclass(frozen=True)
class Action:
    kind: str
    drug: str = ""
    dose: float = 0.0
    schedule: Schedule | None = None
    phase: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    actions: tuple[Action, ...]
    count: int = 1  # visits at which the condition held, before the rule fires
    once: bool = True


# what [output] traces keep unless trace_observables says otherwise
DEFAULT_TRACE_OBSERVABLES = ("lh", "fsh", "t_total", "e2", "itt", "sperm_conc")
MIN_TRACE_EVERY = 1.0 / 60.0  # h: finer than a minute resolves nothing the core does not


@dataclass(frozen=True)
class OutputSpec:
    """[output]: what a run writes besides outcomes and visit labs."""

    traces: float | None = None  # h between trace samples; None: no traces
    trace_observables: tuple[str, ...] = DEFAULT_TRACE_OBSERVABLES


@dataclass(frozen=True)
class Phase:
    name: str
    duration: float  # h
    drugs: tuple[DrugPlan, ...] = ()
    visits: tuple[VisitPlan, ...] = ()
    rules: tuple[Rule, ...] = ()
    next: str | None = None  # None: the next phase in the file (or the end)


@dataclass(frozen=True)
class Scenario:
    name: str
    cohort: CohortSpec
    phases: tuple[Phase, ...]
    time_zero_phase: str | None = None
    time_zero_offset: float = 0.0
    description: str = ""
    text: str = ""
    path: str | None = None
    dose_records: tuple = ()  # from a NONMEM-style table (pulsehpg.nonmem)
    follow_up: float | None = None  # h; None: the sum of the phase durations
    output: OutputSpec = OutputSpec()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def duration(self) -> float:
        """How long patients are followed: outcomes.follow_up, or else the sum of the
        phase durations (every patient goes through the phases in order)."""
        if self.follow_up is not None:
            return self.follow_up
        return sum(p.duration for p in self.phases)

    def records_note(self, n: int) -> str | None:
        """What a cohort of n leaves out of the dose records, or None if nothing."""
        ids = patient_count(self.dose_records)
        if ids <= n:
            return None
        return (f"dose records: only the first {n} of their {ids} patient IDs are simulated "
                f"(cohort.n or -n); leave cohort.n out for one patient per ID")

    def with_traces(self, every) -> Scenario:
        """The same scenario writing traces every ``every`` (hours or '10 min'), of the
        observables its [output] table names (default DEFAULT_TRACE_OBSERVABLES)."""
        t = {"traces": every, "trace_observables": list(self.output.trace_observables)}
        try:
            return replace(self, output=_output(_Reader(""), t))
        except ScenarioError as e:
            raise ScenarioError("--traces" if e.path == "output.traces" else e.path,
                                e.message) from None

    def with_cohort(self, **changes) -> Scenario:
        return replace(self, cohort=replace(self.cohort, **changes))


# ---------------------------------------------------------------------------
_BARE = r"""[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'"""
_DOTTED = rf"(?:{_BARE})(?:\s*\.\s*(?:{_BARE}))*"
_HEADER = re.compile(rf"\s*(\[\[?)\s*({_DOTTED})\s*\]")
_KEYVAL = re.compile(rf"\s*({_DOTTED})\s*=")


def _key_parts(dotted: str) -> list[str]:
    return [k.strip("\"'") for k in re.findall(_BARE, dotted)]


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


def _line_index(text: str) -> dict[str, int]:
    """Line where each key path (``phase[1].drug[0].dose``) is written.

    A light scan of the TOML text: table headers, arrays of tables, dotted keys,
    inline tables and arrays (also over several lines); multi-line strings are skipped.
    """
    index: dict[str, int] = {}
    arrays: dict[str, int] = {}  # concrete path of an array of tables -> tables so far
    table, base, quote = "", "", None
    stack: list[list] = []  # open '[' / '{' of a value: [bracket, path, index or key]

    def resolve(keys):
        path = ""
        for k in keys:
            path = _join(path, k)
            if path in arrays:
                path += f"[{arrays[path] - 1}]"
        return path

    for ln, line in enumerate(text.splitlines(), 1):
        i = 0
        if quote is None and not stack:
            m = _HEADER.match(line)
            if m:
                keys = _key_parts(m.group(2))
                if m.group(1) == "[[":
                    p = _join(resolve(keys[:-1]), keys[-1])
                    arrays[p] = arrays.get(p, 0) + 1
                    index.setdefault(p, ln)
                    table = f"{p}[{arrays[p] - 1}]"
                else:
                    table = resolve(keys)
                index.setdefault(table, ln)
                continue
            m = _KEYVAL.match(line)
            if not m:
                continue
            base = _join(table, ".".join(_key_parts(m.group(1))))
            index.setdefault(base, ln)
            i = m.end()
        while i < len(line):
            c = line[i]
            if quote is not None:
                j = line.find(quote, i)
                if j < 0:
                    break
                i, quote = j + 3, None
            elif line.startswith(('"""', "'''"), i):
                quote, i = line[i:i + 3], i + 3
            elif c in "\"'":
                i += 1
                while i < len(line) and line[i] != c:
                    i += 2 if c == '"' and line[i] == "\\" else 1
                i += 1
            elif c == "#":
                break
            elif c in "[{":
                top = stack[-1] if stack else None
                path = base if top is None else (f"{top[1]}[{top[2]}]" if top[0] == "["
                                                 else _join(top[1], top[2]))
                stack.append([c, path, 0 if c == "[" else ""])
                i += 1
            elif c in "]}":
                if stack:
                    stack.pop()
                i += 1
            elif c == "," and stack and stack[-1][0] == "[":
                stack[-1][2] += 1
                i += 1
            else:
                i += 1
            if stack and stack[-1][0] == "{" and line[i - 1:i] in ("{", ","):
                m = _KEYVAL.match(line, i)
                if m:  # a key of an inline table
                    stack[-1][2] = ".".join(_key_parts(m.group(1)))
                    index.setdefault(_join(stack[-1][1], stack[-1][2]), ln)
                    i = m.end()
    return index


def _settable(r, path: str, name: str):
    """The registry entry of a parameter the scenario may set, or r.fail saying why not."""
    try:
        return settable(name)
    except ValueError as e:
        r.fail(path, str(e))


def _unit_required(r, path: str, value) -> None:
    """A duration in a file needs its unit: a bare 28 would be read as 28 hours where
    28 days was likely meant (the Python API takes plain numbers as hours). 0 is 0 in
    any unit."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0:
        r.fail(path, f"{value!r} has no unit; write it with one, e.g. '{value:g} days', "
                     f"'{value:g} weeks' or '{value:g} h'")


class _Reader:
    """Typed access to a TOML table that records the key path for errors."""

    def __init__(self, text: str):
        try:
            self.index = _line_index(text)
        except Exception:  # line numbers are a courtesy: never fail because of them
            self.index = {}

    def line_of(self, path: str) -> int | None:
        """Line of the key path, else of the nearest enclosing table written in the text."""
        while path:
            if path in self.index:
                return self.index[path]
            shorter = re.sub(r"(?:^|\.)[^.\[\]]*$|\[\d+\]$", "", path)
            if shorter == path:
                break
            path = shorter
        return None

    def fail(self, path, message):
        raise ScenarioError(path, message, self.line_of(path))

    def table(self, obj, path, allowed: dict[str, str]):
        if not isinstance(obj, dict):
            self.fail(path, f"expected a table, got {obj!r:.60}")
        for k in obj:
            if k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(f"{path}.{k}" if path else k,
                          f"unknown key {k!r}{hint}; allowed: {', '.join(allowed)}")
        return obj

    def number(self, obj, key, path, *, default=None, low=-math.inf, high=math.inf,
               integer=False, unit=""):
        p = f"{path}.{key}" if path else key
        if key not in obj:
            if default is None:
                self.fail(p, "is required")
            return default
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(p, f"expected a number, got {v!r:.60}")
        if integer and not float(v).is_integer():
            self.fail(p, f"expected a whole number, got {v!r}")
        if not (low <= v <= high):
            self.fail(p, f"{v!r} is outside the allowed range [{low:g}, {high:g}] {unit}".rstrip())
        return int(v) if integer else float(v)

    def string(self, obj, key, path, *, default=None, choices=None):
        p = f"{path}.{key}" if path else key
        if key not in obj:
            if default is None:
                self.fail(p, "is required")
            return default
        v = obj[key]
        if not isinstance(v, str):
            self.fail(p, f"expected a string, got {v!r:.60}")
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(v, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            shown = ", ".join(c for c in choices if c)  # '' (not given) is not shown
            self.fail(p, f"unknown value {v!r}{hint}; allowed: {shown}")
        return v

    def duration(self, obj, key, path, *, default=None, positive=False, minimum=0.0,
                 maximum=None):
        p = f"{path}.{key}" if path else key
        if key not in obj:
            if default is None:
                self.fail(p, "is required (a duration such as '12 weeks')")
            return default
        _unit_required(self, p, obj[key])
        try:
            h = parse_duration(obj[key], p)
        except ValueError as e:
            self.fail(p, str(e).split(": ", 1)[-1])
        if positive and h <= 0:
            self.fail(p, f"must be longer than zero, got {obj[key]!r}")
        if h < minimum:
            self.fail(p, f"{obj[key]!r} is shorter than the shortest allowed "
                         f"({minimum * 60:g} min)")
        if maximum is not None and h > maximum:
            self.fail(p, f"{obj[key]!r} is longer than the longest allowed "
                         f"({maximum / 8766:g} years)")
        return h

    def array(self, obj, key, path):
        v = obj.get(key, [])
        if not isinstance(v, list):
            self.fail(f"{path}.{key}" if path else key,
                      f"expected an array ([[{key}]] tables), got {v!r:.60}")
        return v


def _distribution(r: _Reader, v, path: str, lo: float, hi: float) -> Distribution:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not (lo <= v <= hi):
            r.fail(path, f"{v!r} is outside the allowed range [{lo:g}, {hi:g}]")
        return Distribution("fixed", float(v))
    t = r.table(v, path, {"dist": "", "value": "", "low": "", "high": "", "mean": "",
                          "sd": "", "median": "", "cv": ""})
    kind = r.string(t, "dist", path, choices=("uniform", "normal", "lognormal"))
    if kind == "uniform":
        a = r.number(t, "low", path, low=lo, high=hi)
        b = r.number(t, "high", path, low=a, high=hi)
        return Distribution("uniform", a, b, lo, hi)
    if kind == "normal":
        m = r.number(t, "mean", path, low=lo, high=hi)
        sd = r.number(t, "sd", path, low=0)
        return Distribution("normal", m, sd, r.number(t, "low", path, default=lo),
                            r.number(t, "high", path, default=hi))
    med = r.number(t, "median", path, low=max(lo, 1e-300), high=hi)
    cv = r.number(t, "cv", path, low=0, high=5)
    return Distribution("lognormal", med, cv, lo, hi)


def _cohort(r: _Reader, t) -> CohortSpec:
    t = r.table(t, "cohort", {"n": "", "phenotype": "", "seed": "", "params": "",
                              "variability": "", "covariates": "", "deterministic": ""})
    n = r.number(t, "n", "cohort", default=100, low=1, high=MAX_PATIENTS, integer=True)
    phen = r.string(t, "phenotype", "cohort", default="eugonadal", choices=list(PHENOTYPES))
    seed = r.number(t, "seed", "cohort", default=0, low=0, high=2**63 - 1, integer=True)
    det = t.get("deterministic", False)
    if not isinstance(det, bool):
        r.fail("cohort.deterministic", f"expected true or false, got {det!r}")
    params = {}
    for name, v in r.table(t.get("params", {}), "cohort.params", BY_NAME).items():
        path = f"cohort.params.{name}"
        p = _settable(r, path, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            r.fail(path, f"expected a number in {p.unit}, got {v!r:.60}")
        if not (p.lower <= v <= p.upper):
            r.fail(path, f"{v!r} is outside the allowed range [{p.lower:g}, {p.upper:g}] {p.unit}")
        params[name] = float(v)
    variability = {}
    for name, v in r.table(t.get("variability", {}), "cohort.variability", BY_NAME).items():
        _settable(r, f"cohort.variability.{name}", name)
        variability[name] = r.number({name: v}, name, "cohort.variability", low=0, high=5)
    covs = {}
    allowed = dict(COVARIATES) | {k: k for k in BY_NAME}
    for name, v in r.table(t.get("covariates", {}), "cohort.covariates", allowed).items():
        reg = _settable(r, f"cohort.covariates.{name}", COVARIATES.get(name, name))
        covs[reg.name] = _distribution(r, v, f"cohort.covariates.{name}", reg.lower, reg.upper)
    return CohortSpec(n, phen, seed, params, variability, covs, det)


def _dose(r: _Reader, t, path, drug, continuous: bool | None) -> float:
    """A dose in the drug's unit: per administration, or per hour for a continuous
    schedule (then a string needs '/h'; continuous None: either, as set_dose finds it)."""
    v = t.get("dose")
    unit = DRUG_UNITS[drug]
    if isinstance(v, str):  # "200 mg"
        parts = v.split()
        allowed = {None: (unit, unit + "/h"), True: (unit + "/h",), False: (unit,)}[continuous]
        if len(parts) != 2 or parts[1] not in allowed:
            if continuous:
                r.fail(f"{path}.dose", f"cannot read {v!r}; a continuous schedule takes a rate "
                                       f"in {unit}/h, e.g. dose = '0.5 {unit}/h' (or 0.5)")
            r.fail(f"{path}.dose", f"cannot read {v!r}; write a number in {unit}, e.g. "
                                   f"dose = 200 or dose = '200 {unit}'"
                                   + (" (a rate in /h only with schedule = 'continuous')"
                                      if continuous is False and v.strip().endswith("/h")
                                      else ""))
        try:
            v = float(parts[0])
        except ValueError:
            r.fail(f"{path}.dose", f"cannot read {v!r} as a dose in {unit}")
        t = dict(t, dose=v)
    return r.number(t, "dose", path, low=0, high=1e7, unit=unit)


def _drug_plan(r: _Reader, t, path, duration: float | None = None) -> DrugPlan:
    t = r.table(t, path, {"name": "", "dose": "", "schedule": "", "times": "", "start": "",
                          "stop": ""})
    drug = r.string(t, "name", path, choices=list(DRUG_NAMES))
    continuous = isinstance(t.get("schedule"), str) and \
        t["schedule"].strip().lower() == "continuous"
    dose = _dose(r, t, path, drug, continuous)
    if "times" in t and "schedule" in t:
        r.fail(path, "give either 'schedule' or 'times', not both")
    start = r.duration(t, "start", path, default=0.0)
    stop = r.duration(t, "stop", path, default=math.inf)
    if duration is not None and start >= duration:  # doses are given in [start, stop)
        r.fail(f"{path}.start", f"{t['start']!r} is not before the phase ends "
                                f"({duration / 24:g} days): the drug would never be given")
    if stop <= start:
        r.fail(f"{path}.stop", f"{t['stop']!r} must be after start ({start:g} h)")
    if "times" in t:
        times = t["times"]
        if not isinstance(times, list) or not times:
            r.fail(f"{path}.times", f"expected a list of durations, got {times!r:.60}")
        hs = sorted(r.duration({"t": x}, "t", f"{path}.times") for x in times)
        if duration is not None and start + hs[-1] >= duration:
            r.fail(f"{path}.times", f"a dose at {(start + hs[-1]) / 24:g} days is not before "
                                    f"the phase ends ({duration / 24:g} days); give it at "
                                    f"'0 h' of the next phase")
        return DrugPlan(drug, dose, Schedule("times", 0.0, tuple(hs), "times"), start, stop)
    try:
        sched = parse_schedule(r.string(t, "schedule", path), f"{path}.schedule")
    except ValueError as e:
        r.fail(f"{path}.schedule", str(e).split(": ", 1)[-1])
    return DrugPlan(drug, dose, sched, start, stop)


def _visits(r: _Reader, t, path, duration) -> VisitPlan:
    t = r.table(t, path, {"every": "", "at": "", "start": "", "labs": ""})
    labs = t.get("labs", list(LAB_TESTS))
    if not isinstance(labs, list) or not labs:
        r.fail(f"{path}.labs", f"expected a list of lab tests, got {labs!r:.60}")
    for lab in labs:
        if lab not in LAB_TESTS:
            r.fail(f"{path}.labs", f"unknown lab test {lab!r}; allowed: {', '.join(LAB_TESTS)}")
    if ("every" in t) == ("at" in t):
        r.fail(path, "give exactly one of 'every' (e.g. '4 weeks') or 'at' (a list of times)")
    if "every" in t:
        every = r.duration(t, "every", path, positive=True)
        start = r.duration(t, "start", path, default=every)
        count = (duration + 1e-9 - start) / every + 1 if start <= duration else 0.0
        if count > MAX_VISITS:
            many = f"{math.floor(count)}" if count < 1e12 else f"{count:.3g}"
            r.fail(f"{path}.every", f"{t['every']!r} gives {many} visits in this phase; "
                                    f"at most {MAX_VISITS} are allowed")
        times = [start + k * every for k in range(math.floor(count))]
        if not times:
            key = "start" if "start" in t else "every"
            r.fail(f"{path}.{key}", f"{t[key]!r}: the first visit would be after the phase "
                                    f"ends ({duration / 24:g} days)")
    else:
        at = t["at"]
        if not isinstance(at, list) or not at:
            r.fail(f"{path}.at", f"expected a list of durations or \"end\", got {at!r:.60}")
        if len(at) > MAX_VISITS:
            r.fail(f"{path}.at", f"{len(at)} visits; at most {MAX_VISITS} are allowed")
        # "end": the phase's last instant, whatever its duration (a sweep or arm may set it)
        times = []
        for x in at:
            _unit_required(r, f"{path}.at", x)
            try:
                times.append(duration if x == "end" else parse_duration(x, "at"))
            except ValueError as e:
                r.fail(f"{path}.at", f"{e.args[0].split(': ', 1)[-1]}; or \"end\" (the end of "
                                     f"the phase)")
        times.sort()
        if times[-1] > duration + 1e-9:
            r.fail(f"{path}.at", f"a visit at {times[-1] / 24:g} days is after the phase "
                                 f"ends ({duration / 24:g} days)")
    return VisitPlan(tuple(times), tuple(labs))


_ACTION_KEYS = {
    "add_drug": ("action", "drug", "dose", "schedule"),
    "stop_drug": ("action", "drug"),
    "set_dose": ("action", "drug", "dose"),
    "goto": ("action", "phase"),
    "end": ("action",),
}


def _action(r: _Reader, t, path, phase_names) -> Action:
    t = r.table(t, path, {"action": "", "drug": "", "dose": "", "schedule": "", "phase": ""})
    kind = r.string(t, "action", path, choices=ACTIONS)
    # a key another action takes would otherwise be dropped without a word
    for key in t:
        if key not in _ACTION_KEYS[kind]:
            takes = ", ".join(k for k in _ACTION_KEYS[kind] if k != "action") or "nothing else"
            r.fail(f"{path}.{key}", f"action {kind!r} does not take {key!r}; it takes {takes}")
    if kind == "add_drug":
        drug = r.string(t, "drug", path, choices=list(DRUG_NAMES))
        plan = _drug_plan(r, {"name": drug} | {k: t[k] for k in ("dose", "schedule") if k in t},
                          path)
        return Action(kind, plan.drug, plan.dose, plan.schedule)
    if kind in ("stop_drug", "set_dose"):
        drug = r.string(t, "drug", path, choices=list(DRUG_NAMES))
        dose = _dose(r, t, path, drug, None) if kind == "set_dose" else 0.0
        return Action(kind, drug, dose)
    if kind == "goto":
        return Action(kind, phase=r.string(t, "phase", path, choices=phase_names))
    return Action("end")


def _rule(r: _Reader, t, path, phase_names, k) -> Rule:
    t = r.table(t, path, {"name": "", "when": "", "count": "", "once": "", "then": ""})
    try:
        cond = parse_condition(t.get("when"), f"{path}.when")
    except ValueError as e:
        r.fail(f"{path}.when", str(e).split(": ", 1)[-1])
    then = t.get("then")
    if isinstance(then, dict):
        then = [then]
    if not isinstance(then, list) or not then:
        r.fail(f"{path}.then", "expected one or more actions, e.g. "
                               "then = [{action = 'end'}]")
    actions = tuple(_action(r, a, f"{path}.then[{i}]", phase_names) for i, a in enumerate(then))
    count = r.number(t, "count", path, default=1, low=1, high=1000, integer=True)
    once = t.get("once", True)
    if not isinstance(once, bool):
        r.fail(f"{path}.once", f"expected true or false, got {once!r}")
    name = r.string(t, "name", path, default=f"rule{k}")
    return Rule(name, cond, actions, count, once)


def parse_scenario(text: str, path: str | None = None, base_dir: Path | None = None) -> Scenario:
    """Parse and validate scenario TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+)", str(e))
        raise ScenarioError(path or "<scenario>", f"not valid TOML: {e}",
                            int(m.group(1)) if m else None) from None
    r = _Reader(text)
    if "sweep" in doc and "phase" not in doc:  # a sweep config: say so, not 'unknown key'
        r.fail("sweep", "this is a sweep config, not a scenario; check it with "
                        "`pulsehpg sweep FILE --dry-run` and run it with `pulsehpg sweep FILE`")
    # [validation]: literature targets, read by pulsehpg.validation (`pulsehpg validate`);
    # a run ignores it
    r.table(doc, "", {"name": "", "description": "", "cohort": "", "phase": "",
                      "outcomes": "", "dose_records": "", "validation": "", "output": ""})
    cohort = _cohort(r, doc.get("cohort", {}))
    raw_phases = r.array(doc, "phase", "")
    records = ()
    if "dose_records" in doc:
        dr = r.table(doc["dose_records"], "dose_records", {"file": ""})
        f = Path(r.string(dr, "file", "dose_records"))
        if not f.is_absolute() and base_dir is not None:
            f = base_dir / f
        try:
            records = read_dose_records(f)
        except (OSError, ValueError) as e:
            r.fail("dose_records.file", str(e))
        if "n" not in doc.get("cohort", {}):  # one patient per ID
            cohort = replace(cohort, n=patient_count(records))
    if not raw_phases and not records:
        r.fail("phase", "a scenario needs at least one [[phase]] (or a [dose_records] table)")
    names = []
    for i, ph in enumerate(raw_phases):
        if isinstance(ph, dict) and isinstance(ph.get("name"), str):
            names.append(ph["name"])
        else:
            r.fail(f"phase[{i}].name", "is required (a string)")
    for j, n in enumerate(names):
        if n in names[:j]:
            r.fail(f"phase[{j}].name", f"phase names must be unique; {n!r} is also "
                                       f"phase[{names.index(n)}]")
    phases = []
    for i, ph in enumerate(raw_phases):
        where = f"phase[{i}]"
        r.table(ph, where, {"name": "", "duration": "", "drug": "", "visit": "", "rule": "",
                            "next": ""})
        dur = r.duration(ph, "duration", where, positive=True, minimum=MIN_PHASE,
                         maximum=MAX_PHASE)
        drugs = tuple(_drug_plan(r, d, f"{where}.drug[{j}]", dur)
                      for j, d in enumerate(r.array(ph, "drug", where)))
        visits = tuple(_visits(r, v, f"{where}.visit[{j}]", dur)
                       for j, v in enumerate(r.array(ph, "visit", where)))
        rules = tuple(_rule(r, x, f"{where}.rule[{j}]", names, j)
                      for j, x in enumerate(r.array(ph, "rule", where)))
        if visits:  # a lab no visit of the phase draws is NaN whenever the rule is read
            have = sorted({lab for v in visits for lab in v.labs})
            drawn = values_of(have)
            for j, rule in enumerate(rules):
                undrawn = sorted(rule.when.names & set(LAB_VALUES) - drawn)
                if undrawn:
                    tests = sorted({"semen" if u in SEMEN_VALUES else u for u in undrawn})
                    r.fail(f"{where}.rule[{j}].when",
                           f"reads {', '.join(undrawn)}, which no visit of phase {names[i]!r} "
                           f"draws (labs: {', '.join(have)}): it would be missing (NaN) at "
                           f"every visit, where a comparison is false; add "
                           f"{', '.join(map(repr, tests))} to a visit's labs")
        for j, rule in enumerate(rules):  # a rule's visit counts are kept by name
            if rule.name in [x.name for x in rules[:j]]:
                r.fail(f"{where}.rule[{j}].name", f"rule names must be unique in a phase; "
                                                  f"{rule.name!r} is used twice")
        nxt = r.string(ph, "next", where, default="", choices=names + ["end", ""]) or None
        phases.append(Phase(names[i], dur, drugs, visits, rules, nxt))
    out = r.table(doc.get("outcomes", {}), "outcomes",
                  {"time_zero": "", "offset": "", "follow_up": ""})
    tz = r.string(out, "time_zero", "outcomes", default="", choices=names + [""]) or None
    offset = r.duration(out, "offset", "outcomes", default=0.0)
    follow_up = (r.duration(out, "follow_up", "outcomes", positive=True, maximum=MAX_PHASE)
                 if "follow_up" in out else None)
    if follow_up is None:
        _require_follow_up_for_loops(r, raw_phases, phases)
    name = r.string(doc, "name", "", default=Path(path).stem if path else "scenario")
    desc = r.string(doc, "description", "", default="")
    output = _output(r, doc.get("output", {}))
    return Scenario(name, cohort, tuple(phases), tz, offset, desc, text, path, records,
                    follow_up, output)


def _output(r: _Reader, t) -> OutputSpec:
    r.table(t, "output", {"traces": "", "trace_observables": ""})
    if "traces" not in t:
        if "trace_observables" in t:
            r.fail("output.trace_observables", "has no effect without output.traces "
                                               "(e.g. traces = \"10 min\")")
        return OutputSpec()
    every = r.duration(t, "traces", "output", positive=True, minimum=MIN_TRACE_EVERY,
                       maximum=7 * 24.0)
    obs = t.get("trace_observables", list(DEFAULT_TRACE_OBSERVABLES))
    if not isinstance(obs, list) or not obs or not all(isinstance(o, str) for o in obs):
        r.fail("output.trace_observables", f"expected a non-empty array of names, got "
                                           f"{obs!r:.60}; allowed: {', '.join(OBSERVABLES)}")
    for k, o in enumerate(obs):
        if o not in OBSERVABLES or o in obs[:k]:
            close = difflib.get_close_matches(o, OBSERVABLES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            what = "is listed twice" if o in obs[:k] else f"unknown observable {o!r}{hint}"
            r.fail("output.trace_observables", f"{what}; allowed: {', '.join(OBSERVABLES)}")
    return OutputSpec(every, tuple(obs))


def _require_follow_up_for_loops(r: _Reader, raw_phases, phases) -> None:
    """A 'goto' or 'next' back to this or an earlier phase lets patients go round, so
    the sum of the phase durations no longer bounds their follow-up: ask for one."""
    names = [p.name for p in phases]
    for i, ph in enumerate(phases):
        back = []
        if ph.next and ph.next != "end" and names.index(ph.next) <= i:
            back.append((f"phase[{i}].next", ph.next))
        for j, rule in enumerate(ph.rules):
            for k, a in enumerate(rule.actions):
                if a.kind == "goto" and names.index(a.phase) <= i:
                    back.append((f"phase[{i}].rule[{j}].then[{k}].phase", a.phase))
        for where, target in back:
            r.fail(where, f"{target!r} is not after phase {ph.name!r}, so patients can go "
                          f"round and the phase durations no longer say how long they are "
                          f"followed; set outcomes.follow_up (e.g. follow_up = \"36 months\")")


def read_text(path) -> str:
    """A config file's text, or a ScenarioError saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(str(path), f"cannot read the file ({e})") from None


def load_scenario(path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    return parse_scenario(read_text(p), str(p), p.parent)
