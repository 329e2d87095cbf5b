"""Validation against published numbers: the experiments, metrics and comparison behind
``pulsehpg validate``.

Each validation scenario (S1, S4, ... of the calibration set, docs/validation.md) is a
TOML file in ``examples/validation/``: a scenario (cohort and regimen, as for ``pulsehpg
run``) plus a ``[validation]`` table that says what to compare with the literature::

    [validation]
    id = "S9"                          # the scenario's id in the calibration set
    title = "Spontaneous recovery after TRT"
    source = "Liu 2006 Lancet 367:1412"
    record = "1 day"                   # optional: sample every observable this often from
                                       # time 0 (traces, for metrics and figures)

    [[validation.arm]]                 # optional; without arms the scenario is one arm, "main"
    name = "trt-13-weeks"
    scenario = "other.toml"            # optional: another scenario file (relative to this one)
    set = { "phase.trt.duration" = "13 weeks" }  # optional: what a sweep axis can set:
                                       # phase.<phase>.duration, phase.<phase>.drug.<drug>.dose
                                       # or .interval, registry parameters
    step = [{ at = "0 h", set = { "testis.present" = 0 } }]  # optional: parameters changed
                                       # for every patient at a time (castration, a step in
                                       # testis function): an experiment, which a regimen
                                       # cannot express; only `pulsehpg validate` applies it

    [[validation.quantity]]
    id = "by_6_months"                 # short name (tests use it)
    name = "recovered to 20 M/mL by 6 months"
    metric = "km_fraction"             # a function of this module: `pulsehpg validate --metrics`
    args = { event = "sperm_ge_20", at = "6 months" }
    target = "0.67 +/- 0.08"           # the published value, as published
    range = [0.59, 0.75]               # accepted: passes when the point estimate is inside
    source = "Liu 2006"
    unit = ""                          # optional, for display
    note = ""                          # optional, e.g. "tolerance chosen"
    panel = "recovery"                 # optional: draw the accepted range on this panel ...
    at = "6 months"                    # ... at this time (default: the metric's own `at`)

    [[validation.panel]]               # the figure: one panel per table
    name = "recovery"
    series = "km"                      # trace | visits | km
    y = "sperm_ge_20"                  # observable (trace), lab (visits) or event (km)
    arms = ["main"]                    # default: every arm
    relative = "baseline"              # optional: divide by the patient's value at time 0
                                       # (trace) or first visit (visits); "change": minus
                                       # it; "step": fraction
                                       # of the patient's final change; "arm:<name>": divide
                                       # by the same patient in that arm at the same time
    time_unit = "months"               # hours | days | weeks | months
    [[validation.panel.target]]        # optional: a published range that is not a quantity
    at = "2 weeks"                     # optional (default: a band over the whole panel)
    range = [2, 3]
    label = "..."

Everything here is an experiment definition, a summary of simulated data or a comparison:
the physiology is in the model. Arms are simulated with :func:`pulsehpg.run` (the
scenario's regimen, unchanged), with a SimPy process that records traces, takes snapshots
(observables and GnRH pulse counts) and applies the steps.

Each metric turns the simulated arms into one number; it is written as a function of a
*sample* (patient indices per arm), so that the point estimate (every patient) and the
bootstrap (patients drawn with replacement; arms with the same number of patients are drawn
together, so paired arms stay paired) use the same code. The tests of the model
(tests/test_physiology.py, tests/test_validation_regimens.py) read the same quantities.
"""

from __future__ import annotations

import datetime
import itertools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomllib

from . import store
from .analysis import detect_pulses, first_time_below
from .cohort import OBSERVABLES
from .labs import measure
from .outcomes import fraction_by, kaplan_meier
from .regimen import LAB_VARIABLES
from .scenario import Scenario, ScenarioError, _Reader, load_scenario, read_text
from .units import HOURS_PER

__all__ = [
    "METRICS",
    "Quantity",
    "Report",
    "Row",
    "Simulation",
    "ValidationSpec",
    "default_dir",
    "discover",
    "figure",
    "load",
    "simulate",
    "table",
    "validate",
    "write_report",
]

TIME_UNITS = {"minutes": 1 / 60, "hours": 1.0, "days": 24.0, "weeks": 168.0,
              "months": HOURS_PER["months"]}
SERIES = ("trace", "visits", "km")
DEFAULT_BOOTSTRAP = 1000

Sample = dict  # arm name -> patient indices
Stat = Callable[[Sample], float]


# =============================================================================================
# The [validation] table
# =============================================================================================
@dataclass(frozen=True)
class Value:
    """Per-patient values of one arm, named in a metric's arguments.

    kind: 'outcome' (a column of the run's outcomes, e.g. end_itt), 'lab' (a visit lab:
    ``visit`` is 'first', 'last' or an index), 'obs' (a true observable at time(s) ``at``,
    from snapshots), 'trace' (mean of the recorded samples after ``window[0]`` up to
    ``window[1]`` hours, or the sample at ``at``) or 'pulses' (GnRH pulses in ``window``).
    """

    arm: str
    kind: str
    name: str = ""
    visit: object = None
    at: tuple[float, ...] = ()
    window: tuple[float, float] | None = None
    low: float = -math.inf  # for 'where' filters: keep patients with low <= value <= high
    high: float = math.inf


@dataclass(frozen=True)
class Quantity:
    id: str
    name: str
    metric: str
    args: dict
    target: str
    low: float
    high: float
    source: str
    unit: str = ""
    note: str = ""
    panel: str | None = None
    at: tuple[float, ...] = ()  # hours, where the range is drawn on the panel

    def passes(self, value: float) -> bool:
        return bool(np.isfinite(value) and self.low <= value <= self.high)

    @property
    def accepted(self) -> str:
        return _range_text(self.low, self.high)


@dataclass(frozen=True)
class Step:
    at: float  # h
    values: dict


@dataclass(frozen=True)
class Arm:
    name: str
    scenario: Scenario
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Target:
    low: float
    high: float
    label: str
    at: tuple[float, ...] = ()  # h: error bars there; none: a band over the panel
    between: tuple[float, float] | None = None  # h: a box from one time to another


@dataclass(frozen=True)
class Panel:
    name: str
    series: str
    y: str
    arms: tuple[str, ...]
    title: str = ""
    relative: str = ""
    time_unit: str = "days"
    log: bool = False
    ylabel: str = ""
    targets: tuple[Target, ...] = ()
    where: Value | None = None
    patients: int = 0  # trace panels: also draw the first patients' own traces


@dataclass(frozen=True)
class ValidationSpec:
    id: str
    title: str
    source: str
    path: str
    scenario: Scenario
    arms: tuple[Arm, ...]
    quantities: tuple[Quantity, ...]
    panels: tuple[Panel, ...] = ()
    record: float | None = None  # h
    description: str = ""

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def quantity(self, qid: str) -> Quantity:
        for q in self.quantities:
            if q.id == qid:
                return q
        raise KeyError(f"{self.id} has no quantity {qid!r} (quantities: "
                       f"{', '.join(q.id for q in self.quantities)})")

    @property
    def snapshot_times(self) -> tuple[float, ...]:
        """Times (h) at which the arms are snapshotted: 0, and what the metrics name."""
        times = {0.0}
        for q in self.quantities:
            for v in _values_in(q.args):
                if v.kind == "obs":
                    times.update(v.at)
                elif v.kind == "pulses":
                    times.update(v.window)
        return tuple(sorted(times))


def _range_text(low: float, high: float) -> str:
    if low == high:
        return f"= {_fmt(low)}"
    if math.isinf(low) and math.isinf(high):
        return "any"
    if math.isinf(high):
        return f">= {_fmt(low)}"
    if math.isinf(low):
        return f"<= {_fmt(high)}"
    return f"{_fmt(low)} to {_fmt(high)}"


# the share of bootstrap resamples in which a quantity must be defined for its interval
MIN_DEFINED = 0.95


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "n/a" if x is None or np.isnan(x) else ("inf" if x > 0 else "-inf")
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2g}"


def _values_in(args: dict):
    for v in args.values():
        if isinstance(v, Value):
            yield v
        elif isinstance(v, tuple):
            yield from (x for x in v if isinstance(x, Value))


# -- metric registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    name: str
    func: Callable
    args: dict  # argument -> kind: value, where, duration, number, text, arm, texts
    optional: dict
    doc: str


METRICS: dict[str, Metric] = {}


def metric(name: str, optional: dict | None = None, **kinds):
    """Register a metric: ``f(sim, **args) -> stat``, ``stat(sample) -> float``."""
    def register(f):
        METRICS[name] = Metric(name, f, kinds, optional or {},
                               " ".join((f.__doc__ or "").split()))
        return f
    return register


# -- reading --------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str, path: str):
        self.r = _Reader(text)
        self.path = path

    def fail(self, where: str, message: str):
        raise ScenarioError(where, message, self.r.line_of(where))

    def text(self, t: dict, key: str, where: str, default=None) -> str:
        return self.r.string(t, key, where, default=default)

    def _hours(self, v, where: str) -> float:
        from .units import parse_duration

        try:
            return parse_duration(v, where)
        except ValueError as e:
            self.fail(where, str(e).split(": ", 1)[-1])

    def range(self, v, where: str) -> tuple[float, float]:
        ok = isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)
            for x in v)
        if not ok or v[0] > v[1]:
            self.fail(where, f"expected [low, high] with low <= high (inf for an open end, "
                             f"e.g. [0.92, inf]), got {v!r:.60}")
        return float(v[0]), float(v[1])

    def value(self, t, where: str, arms: tuple[str, ...], record: float | None,
              where_filter: bool = False) -> Value:
        allowed = {"arm": "", "outcome": "", "lab": "", "visit": "", "obs": "", "at": "",
                   "trace": "", "days": "", "pulses": ""}
        if where_filter:
            allowed |= {"min": "", "max": ""}
        t = self.r.table(t, where, allowed)
        arm = self.text(t, "arm", where, default=arms[0])
        if arm not in arms:
            self.fail(f"{where}.arm", f"unknown arm {arm!r}; arms: {', '.join(arms)}")
        kinds = [k for k in ("outcome", "lab", "obs", "trace", "pulses") if k in t]
        if len(kinds) != 1:
            self.fail(where, "give exactly one of outcome (e.g. 'end_itt'), lab (with visit), "
                             "obs (with at), trace (with days or at) or pulses ([from, to] "
                             "days)")
        kind = kinds[0]
        low = self.r.number(t, "min", where, default=-math.inf)
        high = self.r.number(t, "max", where, default=math.inf)
        if kind == "pulses":
            return Value(arm, kind, window=self.days(t["pulses"], f"{where}.pulses"),
                         low=low, high=high)
        if kind == "outcome":
            return Value(arm, kind, self.text(t, "outcome", where), low=low, high=high)
        if kind == "lab":
            name = self.text(t, "lab", where, default=None)
            if name not in LAB_VARIABLES:
                self.fail(f"{where}.lab", f"unknown lab {name!r}; labs: "
                                          f"{', '.join(LAB_VARIABLES)}")
            visit = t.get("visit", "last")
            if not (visit in ("first", "last") or (isinstance(visit, int)
                                                   and not isinstance(visit, bool)
                                                   and visit >= 0)):
                self.fail(f"{where}.visit", f"expected 'first', 'last' or a visit number "
                                            f"(0 = first), got {visit!r}")
            return Value(arm, kind, name, visit=visit, low=low, high=high)
        name = self.text(t, kind, where)
        if name not in OBSERVABLES:
            self.fail(f"{where}.{kind}", f"unknown observable {name!r}; observables: "
                                         f"{', '.join(OBSERVABLES)}")
        at = t.get("at")
        times = ()
        if at is not None:
            items = at if isinstance(at, list) else [at]
            if not items:
                self.fail(f"{where}.at", "expected a time or a list of times")
            times = tuple(self._hours(x, f"{where}.at") for x in items)
        if kind == "obs":
            if not times:
                self.fail(f"{where}.at", "is required: the time of the snapshot, e.g. '0 h'")
            return Value(arm, kind, name, at=times, low=low, high=high)
        if record is None:
            self.fail(f"{where}.trace", "needs traces: set validation.record (e.g. '1 day')")
        if ("days" in t) == bool(times):
            self.fail(where, "a trace needs either days = [from, to] (the mean of the samples "
                             "after day 'from' up to day 'to') or at = a sample time")
        window = self.days(t["days"], f"{where}.days") if "days" in t else None
        return Value(arm, kind, name, at=times, window=window, low=low, high=high)

    def days(self, v, where: str) -> tuple[float, float]:
        lo, hi = self.range(v, where)
        if lo < 0 or math.isinf(hi):
            self.fail(where, f"expected [from, to] days with 0 <= from <= to, got {v!r:.60}")
        return lo * 24.0, hi * 24.0


def _check_arg(p: _Parser, kind: str, v, where: str, arms, record):
    if kind in ("value", "where"):
        return p.value(v, where, arms, record, where_filter=kind == "where")
    if kind == "values":
        if not isinstance(v, list) or not v:
            p.fail(where, "expected a list of values")
        return tuple(p.value(x, f"{where}[{i}]", arms, record) for i, x in enumerate(v))
    if kind == "duration":
        return p._hours(v, where)
    if kind == "number":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            p.fail(where, f"expected a number, got {v!r:.60}")
        return float(v)
    if kind == "arm":
        if v not in arms:
            p.fail(where, f"unknown arm {v!r}; arms: {', '.join(arms)}")
        return v
    if kind == "texts":
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            p.fail(where, f"expected a list of names, got {v!r:.60}")
        return tuple(v)
    if kind == "unit":
        if v not in TIME_UNITS:
            p.fail(where, f"unknown time unit {v!r}; allowed: {', '.join(TIME_UNITS)}")
        return v
    if not isinstance(v, str):
        p.fail(where, f"expected a string, got {v!r:.60}")
    if kind.startswith("choice:") and v not in kind[7:].split("|"):
        p.fail(where, f"unknown value {v!r}; allowed: {', '.join(kind[7:].split('|'))}")
    return v


def _metric_args(p: _Parser, raw, where: str, m: Metric, arms, record) -> dict:
    raw = p.r.table(raw if raw is not None else {}, where, {k: "" for k in m.args | m.optional})
    out = {}
    for k, kind in (m.args | m.optional).items():
        if k not in raw:
            if k in m.args:
                p.fail(f"{where}.{k}", f"is required by metric {m.name!r} "
                                       f"(arguments: {', '.join(m.args)})")
            continue
        out[k] = _check_arg(p, kind, raw[k], f"{where}.{k}", arms, record)
    return out


def _arm_scenario(p: _Parser, base_doc: dict, base_dir: Path, settings: dict, where: str):
    """The scenario with sweep-style settings applied (one point of a one-value sweep)."""
    from .sweep import dumps_toml, parse_config

    axes = []
    for k, v in settings.items():
        axes.append({"name": k, "values": [v]})
    doc = {"name": "arm", "scenario": base_doc, "sweep": {"axis": axes}}
    try:
        cfg = parse_config(dumps_toml(doc), None, base_dir)
    except ScenarioError as e:
        key = next(iter(settings))
        if e.path.startswith("sweep.axis["):
            key = list(settings)[int(e.path[len("sweep.axis["):].split("]")[0])]
        message = str(e)
        message = message.split(": ", 1)[-1] if message.startswith(e.path) else message
        p.fail(f"{where}.{key}", message)
    return cfg.scenario_at(cfg.design()[0])


def _arms(p: _Parser, v: dict, sc: Scenario, base_dir: Path) -> tuple[Arm, ...]:
    raw = p.r.array(v, "arm", "validation")
    if not raw:
        return (Arm("main", sc),)
    arms = []
    for i, t in enumerate(raw):
        where = f"validation.arm[{i}]"
        t = p.r.table(t, where, {"name": "", "scenario": "", "set": "", "step": ""})
        name = p.text(t, "name", where)
        if name in [a.name for a in arms]:
            p.fail(f"{where}.name", f"arm names must be unique; {name!r} is used twice")
        arm_sc = sc
        if "scenario" in t:
            f = base_dir / p.text(t, "scenario", where)
            try:
                arm_sc = load_scenario(f)
            except ScenarioError as e:
                p.fail(f"{where}.scenario", f"{f}: {e}")
        settings = p.r.table(t.get("set", {}), f"{where}.set", {k: "" for k in t.get("set", {})})
        if settings:
            doc = tomllib.loads(arm_sc.text)
            doc.pop("validation", None)
            doc["name"] = arm_sc.name
            arm_sc = _arm_scenario(p, doc, Path(arm_sc.path).parent if arm_sc.path
                                   else base_dir, settings, f"{where}.set")
        steps = []
        raw_steps = t.get("step", [])
        if not isinstance(raw_steps, list):
            p.fail(f"{where}.step", "expected a list of {at = ..., set = {...}} tables")
        for j, s in enumerate(raw_steps):
            sw = f"{where}.step[{j}]"
            s = p.r.table(s, sw, {"at": "", "set": ""})
            at = p._hours(s.get("at", 0.0), f"{sw}.at")
            if at > arm_sc.duration:
                p.fail(f"{sw}.at", f"{s['at']!r} is after the end of the regimen "
                                   f"({arm_sc.duration / 24:g} days)")
            values = p.r.table(s.get("set", {}), f"{sw}.set", _registry_names())
            if not values:
                p.fail(f"{sw}.set", "expected parameters to change, e.g. "
                                    "{ \"testis.present\" = 0 }")
            for par, x in values.items():
                _check_parameter(p, par, x, f"{sw}.set.{par}")
            steps.append(Step(at, dict(values)))
        arms.append(Arm(name, arm_sc, tuple(steps)))
    return tuple(arms)


def _registry_names() -> dict:
    from .params import BY_NAME

    return {k: "" for k in BY_NAME}


def _check_parameter(p: _Parser, name: str, v, where: str):
    from .params import BY_NAME, settable

    par = BY_NAME[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        p.fail(where, f"expected a number in {par.unit}, got {v!r:.60}")
    try:
        settable(name)
    except ValueError as e:
        p.fail(where, str(e))
    if not (par.lower <= v <= par.upper):
        p.fail(where, f"{v!r} is outside the allowed range [{par.lower:g}, {par.upper:g}] "
                      f"{par.unit}")


def _quantities(p: _Parser, v: dict, arms: tuple[str, ...], record, panels) -> tuple:
    raw = p.r.array(v, "quantity", "validation")
    if not raw:
        p.fail("validation.quantity", "at least one [[validation.quantity]] is required")
    out = []
    for i, t in enumerate(raw):
        where = f"validation.quantity[{i}]"
        t = p.r.table(t, where, {"id": "", "name": "", "metric": "", "args": "", "target": "",
                                 "range": "", "source": "", "unit": "", "note": "",
                                 "panel": "", "at": ""})
        qid = p.text(t, "id", where)
        if qid in [q.id for q in out]:
            p.fail(f"{where}.id", f"quantity ids must be unique; {qid!r} is used twice")
        mname = p.r.string(t, "metric", where, choices=sorted(METRICS))
        m = METRICS[mname]
        args = _metric_args(p, t.get("args"), f"{where}.args", m, arms, record)
        if "range" not in t:
            p.fail(f"{where}.range", "is required: the accepted [low, high] (inf for an "
                                     "open end)")
        low, high = p.range(t["range"], f"{where}.range")
        panel = p.text(t, "panel", where, default="") or None
        if panel is not None and panel not in panels:
            p.fail(f"{where}.panel", f"unknown panel {panel!r}; panels: "
                                     f"{', '.join(panels) or 'none'}")
        at = t.get("at")
        if at is None:  # draw it where the metric looks
            cand = args.get("at")
            if cand is None and isinstance(args.get("num"), Value):
                cand = args["num"].at
            at = cand if isinstance(cand, tuple) else (() if cand is None else (cand,))
        else:
            at = tuple(p._hours(x, f"{where}.at") for x in (at if isinstance(at, list)
                                                            else [at]))
        out.append(Quantity(qid, p.text(t, "name", where), mname, args,
                            p.text(t, "target", where), low, high, p.text(t, "source", where),
                            p.text(t, "unit", where, default=""),
                            p.text(t, "note", where, default=""), panel, at))
    ids = [q.id for q in out]
    for i, q in enumerate(out):
        for ref in q.args.get("quantities", ()):
            if ref not in ids or ref == q.id:
                p.fail(f"validation.quantity[{i}].args.quantities",
                       f"unknown quantity {ref!r}; quantities: {', '.join(ids)}")
    return tuple(out)


def _panels(p: _Parser, v: dict, arms: tuple[str, ...], record) -> tuple[Panel, ...]:
    out = []
    for i, t in enumerate(p.r.array(v, "panel", "validation")):
        where = f"validation.panel[{i}]"
        t = p.r.table(t, where, {"name": "", "title": "", "series": "", "y": "", "arms": "",
                                 "relative": "", "time_unit": "", "log": "", "ylabel": "",
                                 "target": "", "where": "", "patients": ""})
        name = p.text(t, "name", where)
        series = p.r.string(t, "series", where, choices=list(SERIES))
        y = p.text(t, "y", where)
        if series == "trace":
            if record is None:
                p.fail(f"{where}.series", "a trace panel needs validation.record")
            if y not in OBSERVABLES:
                p.fail(f"{where}.y", f"unknown observable {y!r}; observables: "
                                     f"{', '.join(OBSERVABLES)}")
        elif series == "visits" and y not in LAB_VARIABLES:
            p.fail(f"{where}.y", f"unknown lab {y!r}; labs: {', '.join(LAB_VARIABLES)}")
        panel_arms = t.get("arms", list(arms))
        for a in panel_arms if isinstance(panel_arms, list) else [panel_arms]:
            if a not in arms:
                p.fail(f"{where}.arms", f"unknown arm {a!r}; arms: {', '.join(arms)}")
        rel = p.text(t, "relative", where, default="")
        if rel and rel not in ("baseline", "change", "step") and not (
                rel.startswith("arm:") and rel[4:] in arms):
            p.fail(f"{where}.relative", f"expected 'baseline', 'change', 'step' or "
                                        f"'arm:<name>' (arms: {', '.join(arms)}), got {rel!r}")
        if rel == "step" and series != "trace":
            p.fail(f"{where}.relative", "'step' is for trace panels")
        unit = p.r.string(t, "time_unit", where, default="days", choices=list(TIME_UNITS))
        log = t.get("log", False)
        if not isinstance(log, bool):
            p.fail(f"{where}.log", f"expected true or false, got {log!r}")
        targets = []
        for j, x in enumerate(p.r.array(t, "target", where)):
            tw = f"{where}.target[{j}]"
            x = p.r.table(x, tw, {"at": "", "between": "", "range": "", "label": ""})
            lo, hi = p.range(x.get("range"), f"{tw}.range")
            at = x.get("at", [])
            at = tuple(p._hours(a, f"{tw}.at") for a in (at if isinstance(at, list) else [at]))
            between = None
            if "between" in x:
                b = x["between"]
                if not isinstance(b, list) or len(b) != 2:
                    p.fail(f"{tw}.between", f"expected [from, to] times, got {b!r:.60}")
                between = (p._hours(b[0], f"{tw}.between"), p._hours(b[1], f"{tw}.between"))
            targets.append(Target(lo, hi, p.text(x, "label", tw), at, between))
        filt = p.value(t["where"], f"{where}.where", arms, record, where_filter=True) \
            if "where" in t else None
        out.append(Panel(name, series, y, tuple(panel_arms) if isinstance(panel_arms, list)
                         else (panel_arms,), p.text(t, "title", where, default=""), rel, unit,
                         log, p.text(t, "ylabel", where, default=""), tuple(targets), filt,
                         p.r.number(t, "patients", where, default=0, low=0, high=10,
                                    integer=True) if series == "trace" else 0))
    return tuple(out)


def load(path) -> ValidationSpec:
    """Read a validation file (a scenario with a [validation] table); ScenarioError if wrong."""
    path = Path(path)
    text = read_text(path)
    sc = load_scenario(path)
    doc = tomllib.loads(text)
    p = _Parser(text, str(path))
    if "validation" not in doc:
        p.fail("validation", "is required: a [validation] table (id, title, source, "
                             "[[validation.quantity]]); see pulsehpg/validation.py")
    v = p.r.table(doc["validation"], "validation",
                  {"id": "", "title": "", "source": "", "record": "", "arm": "",
                   "quantity": "", "panel": "", "description": ""})
    record = None
    if "record" in v:
        record = p._hours(v["record"], "validation.record")
        if record <= 0:
            p.fail("validation.record", "must be longer than zero")
    arms = _arms(p, v, sc, path.parent)
    names = tuple(a.name for a in arms)
    panels = _panels(p, v, names, record)
    quantities = _quantities(p, v, names, record, [x.name for x in panels])
    spec = ValidationSpec(p.text(v, "id", "validation"), p.text(v, "title", "validation"),
                          p.text(v, "source", "validation"), str(path), sc, arms, quantities,
                          panels, record, p.text(v, "description", "validation", default=""))
    for t in spec.snapshot_times:
        for a in arms:
            if t > a.scenario.duration + 1e-9:
                p.fail("validation.quantity", f"a metric looks at {t / 24:g} days, after the "
                                              f"end of arm {a.name!r} "
                                              f"({a.scenario.duration / 24:g} days)")
    return spec


def default_dir() -> Path:
    """The shipped validation scenarios: the copy installed with the package
    (pulsehpg/validation_scenarios in a wheel), else examples/validation of the source
    tree an editable install runs from."""
    here = Path(__file__).resolve().parent
    installed = here / "validation_scenarios"
    if any(installed.glob("*.toml")):
        return installed
    return here.parent / "examples" / "validation"


def discover(paths=()) -> list[Path]:
    """Validation files: the given files and the files with a [validation] table in the given
    folders (default: :func:`default_dir`), ordered by scenario id (S1, S4, S5, ..., S16)."""
    paths = [Path(p) for p in paths] or [default_dir()]
    found = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.glob("*.toml")):
                try:
                    has = "validation" in tomllib.loads(f.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                    has = True  # let load() say what is wrong with it
                if has:
                    found.append(f)
            found.sort(key=lambda f: scenario_order(f.stem.split("-")[0]))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return found


def scenario_order(sid: str):
    digits = "".join(c for c in sid if c.isdigit())
    return (int(digits) if digits else math.inf, sid)


# =============================================================================================
# Simulation
# =============================================================================================
@dataclass
class ArmResult:
    """One simulated arm: the run, its traces (hours; observable -> patients x times) and
    its snapshots (time in h -> observables and 'n_pulses' per patient)."""

    name: str
    result: object  # pulsehpg.RunResult
    t: np.ndarray
    trace: dict
    snapshots: dict

    @property
    def n(self) -> int:
        return self.result.cohort.n

    def snapshot(self, at: float) -> dict:
        for t, s in self.snapshots.items():
            if abs(t - at) < 1e-6:
                return s
        raise KeyError(f"arm {self.name!r} has no snapshot at {at:g} h")


def _probe(record: float | None, times: tuple[float, ...], steps: tuple[Step, ...],
           snapshots: dict):
    """A SimPy process for pulsehpg.run: record traces, take snapshots, apply steps."""
    events = sorted(set(times) | {s.at for s in steps})

    def process(run):
        cohort = run.cohort
        if record is not None:
            cohort.record(every=record)
        for t in events:
            if t > run.env.now:
                yield run.env.timeout(t - run.env.now)
            run.sync()
            if t in times:
                snap = cohort.observe()
                snap["n_pulses"] = cohort.n_pulses.astype(float)
                snapshots[t] = snap
            for s in steps:
                if s.at == t:
                    cohort.set_params(s.values)
        yield run.env.timeout(0)

    return process


class Simulation:
    """The arms of one validation scenario, simulated, and its quantities computed on them."""

    def __init__(self, spec: ValidationSpec, arms: dict[str, ArmResult], seconds: float,
                 n: dict[str, int], seed):
        self.spec, self.arms, self.seconds, self.n, self.seed = spec, arms, seconds, n, seed
        self._stats: dict[str, Stat] = {}
        self._cache: dict = {}

    # -- selection ------------------------------------------------------------------------------
    def all(self) -> Sample:
        return {name: np.arange(a.n) for name, a in self.arms.items()}

    def values(self, v: Value) -> np.ndarray:
        """Per-patient values (patients,), or (patients, times) for several ``at``."""
        arm = self.arms[v.arm]
        if v.kind == "outcome":
            if v.name not in arm.result.outcomes:
                raise KeyError(f"arm {v.arm!r} has no outcome {v.name!r}; outcomes: "
                               f"{', '.join(arm.result.outcomes)}")
            return np.asarray(arm.result.outcomes[v.name], dtype=float)
        if v.kind == "lab":
            labs = arm.result.visits[v.name]
            count = arm.result.regimen.visit_count
            if v.visit == "first":
                k = np.zeros(arm.n, dtype=int)
            elif v.visit == "last":
                k = np.maximum(count - 1, 0)
            else:
                k = np.full(arm.n, v.visit)
            ok = k < count
            out = np.full(arm.n, np.nan)
            out[ok] = labs[np.arange(arm.n)[ok], k[ok]]
            return out
        if v.kind == "pulses":
            a, b = v.window
            return arm.snapshot(b)["n_pulses"] - arm.snapshot(a)["n_pulses"]
        if v.kind == "obs":
            cols = [arm.snapshot(t)[v.name] for t in v.at]
            return cols[0] if len(cols) == 1 else np.stack(cols, axis=1)
        rows = arm.trace[v.name]
        if v.window is not None:
            a, b = v.window
            sel = (arm.t > a + 1e-9) & (arm.t <= b + 1e-9)
            if not sel.any():
                raise KeyError(f"arm {v.arm!r} has no trace samples in days "
                               f"({a / 24:g}, {b / 24:g}]")
            return rows[:, sel].mean(axis=1)
        cols = [rows[:, self._sample_index(arm, t)] for t in v.at]
        return cols[0] if len(cols) == 1 else np.stack(cols, axis=1)

    @staticmethod
    def _sample_index(arm: ArmResult, t: float) -> int:
        k = int(np.argmin(np.abs(arm.t - t))) if arm.t.size else -1
        if k < 0 or abs(arm.t[k] - t) > 1e-6:
            raise KeyError(f"arm {arm.name!r} has no trace sample at {t:g} h")
        return k

    def mask(self, v: Value | None, arm: str) -> np.ndarray:
        """Patients of ``arm`` that pass a 'where' filter (all without one)."""
        if v is None:
            return np.ones(self.arms[arm].n, dtype=bool)
        if v.arm != arm and self.arms[v.arm].n != self.arms[arm].n:
            raise ValueError(f"where: arm {v.arm!r} does not pair with arm {arm!r}")
        x = self.values(v)
        return (x >= v.low) & (x <= v.high)

    def cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- quantities -----------------------------------------------------------------------------
    def stat(self, qid: str) -> Stat:
        if qid not in self._stats:
            q = self.spec.quantity(qid)
            self._stats[qid] = METRICS[q.metric].func(self, **q.args)
        return self._stats[qid]

    def point(self, qid: str) -> float:
        """A quantity computed on every patient (the point estimate)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(self.stat(qid)(self.all()))

    def samples(self, count: int, seed: int = 0) -> list[Sample]:
        """Bootstrap samples: patients drawn with replacement, the same draw for every arm
        with the same number of patients (paired arms stay paired)."""
        rng = np.random.default_rng(seed)
        sizes = sorted({a.n for a in self.arms.values()})
        out = []
        for _ in range(count):
            draw = {k: rng.integers(0, k, k) if k > 1 else np.zeros(1, dtype=int)
                    for k in sizes}
            out.append({name: draw[a.n] for name, a in self.arms.items()})
        return out

    def evaluate(self, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> list[Row]:
        """Every quantity: point estimate, 95 % bootstrap interval, pass/fail."""
        rows = []
        samples = self.samples(bootstrap, seed) if bootstrap else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for q in self.spec.quantities:
                stat = self.stat(q.id)
                value = float(stat(self.all()))
                boot = np.array([stat(s) for s in samples], dtype=float)
                boot = boot[np.isfinite(boot)]
                # an interval over the resamples where the quantity is defined would be
                # conditional on it (e.g. a median reached): withheld when many are not
                lo, hi = (np.percentile(boot, [2.5, 97.5])
                          if boot.size and boot.size >= MIN_DEFINED * len(samples)
                          else (np.nan, np.nan))
                rows.append(Row(self.spec.id, q, value, float(lo), float(hi), q.passes(value),
                                int(boot.size), len(samples)))
        return rows


def _arm_n(arm: Arm, n: int | None) -> int:
    if n is None or arm.scenario.cohort.deterministic:
        return arm.scenario.cohort.n  # identical patients: one is enough
    return n


def simulate(spec: ValidationSpec | str | Path, n: int | None = None, seed=None, *,
             threads: int = 1, arms=None) -> Simulation:
    """Simulate the arms of a validation scenario (``n`` patients per arm, default the
    scenario's; deterministic arms keep theirs) with :func:`pulsehpg.run`."""
    from .run import run

    if not isinstance(spec, ValidationSpec):
        spec = load(spec)
    start = time.perf_counter()
    out, sizes = {}, {}
    times = spec.snapshot_times
    for arm in spec.arms:
        if arms is not None and arm.name not in arms:
            continue
        snaps: dict = {}
        k = _arm_n(arm, n)
        probe = _probe(spec.record, times, arm.steps, snaps)
        res = run(arm.scenario, n=k, seed=seed, threads=threads, processes=(probe,))
        t, tr = res.cohort.trace()
        out[arm.name] = ArmResult(arm.name, res, t, tr, snaps)
        sizes[arm.name] = k
    used = spec.scenario.cohort.seed if seed is None else seed
    return Simulation(spec, out, time.perf_counter() - start, sizes, used)


# =============================================================================================
# Metrics
# =============================================================================================
@metric("median", value="value")
def _median(sim, value):
    """Median over patients of a value."""
    x = sim.values(value)
    return lambda s: np.nanmedian(x[s[value.arm]])


@metric("mean", value="value")
def _mean(sim, value):
    """Mean over patients of a value (NaN ignored)."""
    x = sim.values(value)
    return lambda s: np.nanmean(x[s[value.arm]])


@metric("percentile", value="value", q="number")
def _percentile(sim, value, q):
    """The q-th percentile over patients of a value."""
    x = sim.values(value)
    return lambda s: np.nanpercentile(x[s[value.arm]], q)


@metric("fraction", value="value", optional={"below": "number", "at_least": "number"})
def _fraction(sim, value, below=None, at_least=None):
    """Fraction of patients whose value is below ``below`` (or at least ``at_least``)."""
    x = sim.values(value)
    if (below is None) == (at_least is None):
        raise ValueError("fraction: give exactly one of below and at_least")
    hit = x < below if below is not None else x >= at_least

    def stat(s):
        idx = s[value.arm]
        ok = np.isfinite(x[idx])
        return np.mean(hit[idx][ok]) if ok.any() else np.nan
    return stat


def _paired(sim, num: Value, den: Value):
    if sim.arms[num.arm].n != sim.arms[den.arm].n:
        raise ValueError(f"arms {num.arm!r} and {den.arm!r} have different patients: a "
                         f"per-patient comparison needs the same cohort")


@metric("median_ratio", num="value", den="value")
def _median_ratio(sim, num, den):
    """Median over patients of num / den (the same patients; several times in num.at:
    the largest of the medians)."""
    _paired(sim, num, den)
    a, b = sim.values(num), sim.values(den)
    r = a / (b[:, None] if a.ndim == 2 and b.ndim == 1 else b)
    if r.ndim == 1:
        return lambda s: np.nanmedian(r[s[num.arm]])
    return lambda s: np.max(np.nanmedian(r[s[num.arm]], axis=0))


@metric("ratio_of_medians", num="value", den="value")
def _ratio_of_medians(sim, num, den):
    """Median of num over its arm's patients / median of den over its arm's patients."""
    a, b = sim.values(num), sim.values(den)
    return lambda s: np.nanmedian(a[s[num.arm]]) / np.nanmedian(b[s[den.arm]])


@metric("mean_difference", num="value", den="value")
def _mean_difference(sim, num, den):
    """Mean over patients of num - den (the same patients; NaN ignored)."""
    _paired(sim, num, den)
    d = sim.values(num) - sim.values(den)
    return lambda s: np.nanmean(d[s[num.arm]])


@metric("curve_ratio", num="value", den="value")
def _curve_ratio(sim, num, den):
    """Ratio of the mean over a window (trace, days) of the cohort-median curves: the
    median over patients at each sample time, then the mean over the window's samples."""
    def curve(v):
        if v.kind != "trace" or v.window is None:
            raise ValueError("curve_ratio: num and den are traces with days = [from, to]")
        arm = sim.arms[v.arm]
        sel = (arm.t > v.window[0] + 1e-9) & (arm.t <= v.window[1] + 1e-9)
        return arm.trace[v.name][:, sel]
    a, b = curve(num), curve(den)
    return lambda s: (np.median(a[s[num.arm]], axis=0).mean()
                      / np.median(b[s[den.arm]], axis=0).mean())


@metric("rise_fraction", lab="text", visit="number", optional={"arm": "arm"})
def _rise_fraction(sim, lab, visit, arm=None):
    """Share of the rise of the cohort median of a lab from the first to the last visit
    reached at visit number ``visit`` (0 = first): (m_visit - m_first) / (m_last - m_first)."""
    arm = arm or sim.spec.arms[0].name
    first, at, last = (sim.values(Value(arm, "lab", lab, visit=k))
                       for k in ("first", int(visit), "last"))

    def stat(s):
        idx = s[arm]
        m0 = np.nanmedian(first[idx])
        return (np.nanmedian(at[idx]) - m0) / (np.nanmedian(last[idx]) - m0)
    return stat


# -- times to events (outcomes of the run, Kaplan-Meier) ---------------------------------------
def _event(sim, arm: str, event: str):
    o = sim.arms[arm].result.outcomes
    if f"days_to_{event}" not in o:
        have = sorted(k[len("days_to_"):] for k in o if k.startswith("days_to_"))
        raise KeyError(f"arm {arm!r} has no event {event!r}; events: {', '.join(have)}")
    return np.asarray(o[f"days_to_{event}"], dtype=float), np.asarray(o[f"event_{event}"],
                                                                      dtype=bool)


def _check_followed(sim, arm: str, at: float) -> None:
    """A fraction "by" a time after the arm's follow-up ended would only repeat the last."""
    follow = np.asarray(sim.arms[arm].result.outcomes["follow_up_days"], dtype=float)
    longest = float(np.nanmax(follow)) if np.isfinite(follow).any() else 0.0
    if at / 24.0 > longest + 1e-9:
        raise ValueError(f"arm {arm!r} follows its patients for {longest / 30.4375:.2f} months "
                         f"after time zero, less than the {at / 730.5:.2f} months asked; "
                         f"lengthen its last phase")


def _subset(sim, arm: str, where: Value | None):
    keep = sim.mask(where, arm)
    return lambda s: s[arm][keep[s[arm]]]


def km_median(t: np.ndarray, e: np.ndarray) -> float:
    """Kaplan-Meier median time to the event (NaN if half the cohort never has it)."""
    ts, fs = kaplan_meier(t, e)
    # the first time the fraction reaches one half (as lifelines reports it), with room
    # for rounding: 1 - prod(1 - d/n) that is 1/2 exactly can come out as 0.4999999999999999
    k = np.searchsorted(fs, 0.5 - 1e-12)
    return float(ts[k]) if k < ts.size else np.nan


@metric("km_fraction", event="text", at="duration", optional={"arm": "arm", "where": "where"})
def _km_fraction(sim, event, at, arm=None, where=None):
    """Kaplan-Meier fraction with the event (e.g. sperm_ge_20) by ``at`` after time zero."""
    arm = arm or sim.spec.arms[0].name
    t, e = _event(sim, arm, event)
    _check_followed(sim, arm, at)
    sub = _subset(sim, arm, where)

    def stat(s):
        idx = sub(s)
        return fraction_by(t[idx], e[idx], at / 24.0)
    return stat


@metric("km_median", event="text", optional={"arm": "arm", "where": "where", "unit": "unit"})
def _km_median(sim, event, arm=None, where=None, unit="days"):
    """Kaplan-Meier median time from time zero to the event."""
    arm = arm or sim.spec.arms[0].name
    t, e = _event(sim, arm, event)
    sub = _subset(sim, arm, where)
    scale = 24.0 / TIME_UNITS[unit]

    def stat(s):
        idx = sub(s)
        return km_median(t[idx], e[idx]) * scale
    return stat


@metric("km_median_ratio", event="text", num="arm", den="arm", optional={"where": "where"})
def _km_median_ratio(sim, event, num, den, where=None):
    """Kaplan-Meier median time to the event in arm num / in arm den."""
    (tn, en), (td, ed) = _event(sim, num, event), _event(sim, den, event)
    subn, subd = _subset(sim, num, where and _rearm(where, num)), \
        _subset(sim, den, where and _rearm(where, den))

    def stat(s):
        a, b = subn(s), subd(s)
        return km_median(tn[a], en[a]) / km_median(td[b], ed[b])
    return stat


def _rearm(v: Value, arm: str) -> Value:
    from dataclasses import replace

    return replace(v, arm=arm)


@metric("km_fraction_difference", event="text", at="duration", num="arm", den="arm")
def _km_fraction_difference(sim, event, at, num, den):
    """Kaplan-Meier fraction with the event by ``at``: arm num minus arm den."""
    (tn, en), (td, ed) = _event(sim, num, event), _event(sim, den, event)
    _check_followed(sim, num, at)
    _check_followed(sim, den, at)

    def stat(s):
        a, b = s[num], s[den]
        return fraction_by(tn[a], en[a], at / 24.0) - fraction_by(td[b], ed[b], at / 24.0)
    return stat


@metric("mean_event_time", event="text", optional={"arm": "arm", "where": "where",
                                                   "unit": "unit"})
def _mean_event_time(sim, event, arm=None, where=None, unit="days"):
    """Mean time from time zero to the event, over the patients who had it."""
    arm = arm or sim.spec.arms[0].name
    t, e = _event(sim, arm, event)
    sub = _subset(sim, arm, where)
    scale = 24.0 / TIME_UNITS[unit]

    def stat(s):
        idx = sub(s)
        idx = idx[e[idx]]
        return np.mean(t[idx]) * scale if idx.size else np.nan
    return stat


@metric("km_medians_ordered", events="texts", optional={"arm": "arm"})
def _km_medians_ordered(sim, events, arm=None):
    """1 if the Kaplan-Meier medians to the events, in the order given, never decrease."""
    arm = arm or sim.spec.arms[0].name
    te = [_event(sim, arm, ev) for ev in events]

    def stat(s):
        m = [km_median(t[s[arm]], e[s[arm]]) for t, e in te]
        return float(all(a <= b for a, b in itertools.pairwise(m)))
    return stat


@metric("increasing", quantities="texts")
def _increasing(sim, quantities):
    """1 if the quantities named (ids of this scenario), in the order given, increase."""
    stats = [sim.stat(q) for q in quantities]

    def stat(s):
        v = [f(s) for f in stats]
        return float(all(a < b for a, b in itertools.pairwise(v)))
    return stat


# -- traces -----------------------------------------------------------------------------------
def _trace(sim, arm: str, obs: str):
    a = sim.arms[arm]
    if not a.t.size:
        raise ValueError(f"arm {arm!r} has no traces: set validation.record")
    return a.t, a.trace[obs]


@metric("lh_pulses", stat="choice:interval_mean|interval_sd|increment_median|per_8h_20min",
        optional={"arm": "arm", "assay_cv": "number", "noise_seed": "number"})
def _lh_pulses(sim, stat, arm=None, assay_cv=0.06, noise_seed=4):
    """LH pulses found by the Santen & Bardin rule (pulsehpg.analysis.detect_pulses) in the
    trace (the sampling of validation.record) with log-normal assay noise: mean or SD of the
    interpulse intervals (min, pooled), median increment over the preceding hour's nadir
    (IU/L), or pulses per 8 h when only every other sample is kept (16 h)."""
    arm = arm or sim.spec.arms[0].name

    def detect():
        t, lh = _trace(sim, arm, "lh")
        rng = np.random.default_rng(int(noise_seed))
        lh = lh * np.exp(assay_cv * rng.standard_normal(lh.shape))
        per_hour = round(1.0 / (t[1] - t[0])) if t.size > 1 else 1
        intervals, increments, per8h = [], [], []
        for row in lh:
            peaks = detect_pulses(row)
            intervals.append(np.diff(t[peaks]) * 60)
            increments.append(np.array([row[p] - row[max(0, p - per_hour):p + 1].min()
                                        for p in peaks]))
            coarse = row[::2][:8 * per_hour]  # 16 h at half the sampling rate
            per8h.append(len(detect_pulses(coarse)) / 2)
        return intervals, increments, np.array(per8h)

    intervals, increments, per8h = sim.cached(("lh_pulses", arm, assay_cv, noise_seed), detect)

    def pooled(parts, idx):
        return np.concatenate([parts[i] for i in idx])

    if stat == "interval_mean":
        return lambda s: np.mean(pooled(intervals, s[arm]))
    if stat == "interval_sd":
        return lambda s: np.std(pooled(intervals, s[arm]))
    if stat == "increment_median":
        return lambda s: np.median(pooled(increments, s[arm]))
    return lambda s: np.mean(per8h[s[arm]])


@metric("best_lag", optional={"arm": "arm", "x": "text", "y": "text", "max_lag": "duration"})
def _best_lag(sim, arm=None, x="lh", y="t_total", max_lag=1.5):
    """Lag (min) at which y follows x best: the lag, in steps of the sampling interval up
    to max_lag, with the highest cross-correlation averaged over patients."""
    arm = arm or sim.spec.arms[0].name
    t, a = _trace(sim, arm, x)
    _, b = _trace(sim, arm, y)
    dt = t[1] - t[0]
    lags = round(max_lag / dt) + 1
    m = a.shape[1] - lags - 2
    corr = np.array([[np.corrcoef(a[i, :m], b[i, lag:lag + m])[0, 1] for lag in range(lags)]
                     for i in range(a.shape[0])])
    return lambda s: float(np.argmax(corr[s[arm]].mean(axis=0))) * dt * 60


@metric("time_below", obs="text", threshold="number",
        optional={"arm": "arm", "unit": "unit"})
def _time_below(sim, obs, threshold, arm=None, unit="days"):
    """Median over patients of the first trace sample time below the threshold
    (patients who never fall below it are left out)."""
    arm = arm or sim.spec.arms[0].name
    t, x = _trace(sim, arm, obs)
    first = first_time_below(t, x, threshold) / TIME_UNITS[unit]
    return lambda s: np.nanmedian(first[s[arm]])


@metric("azoospermia", stat="choice:fraction_at|mean_first_day",
        optional={"arm": "arm", "at": "duration"})
def _azoospermia(sim, stat, arm=None, at=None):
    """Semen analyses (pulsehpg.labs.measure: counting noise, no sperm seen) on every trace
    sample: the fraction azoospermic at ``at``, or the mean day of the first azoospermic
    analysis (patients who never are left out)."""
    arm = arm or sim.spec.arms[0].name
    a = sim.arms[arm]

    def analyses():
        t, sperm = _trace(sim, arm, "sperm_conc")
        azoo = np.zeros(sperm.shape, dtype=bool)
        cohort = a.result.cohort
        for k in range(t.size):
            obs = {name: v[:, k] for name, v in a.trace.items()}
            azoo[:, k] = measure(obs, cohort.params, cohort.keys, visit=k,
                                 tests=("semen",))["sperm_conc"] == 0
        return t, azoo

    t, azoo = sim.cached(("azoospermia", arm), analyses)
    if stat == "fraction_at":
        if at is None:
            raise ValueError("azoospermia: stat 'fraction_at' needs at")
        k = Simulation._sample_index(a, at)
        return lambda s: np.mean(azoo[s[arm], k])
    first = np.where(azoo.any(axis=1), t[np.argmax(azoo, axis=1)] / 24.0, np.nan)
    return lambda s: np.nanmean(first[s[arm]])


def _step_fractions(sim, arm: str, obs: str) -> tuple[np.ndarray, np.ndarray]:
    t, x = _trace(sim, arm, obs)
    before = sim.arms[arm].snapshot(0.0)[obs]
    return t, (x - before[:, None]) / (x[:, -1] - before)[:, None]


@metric("step_fraction", obs="text", at="duration", optional={"arm": "arm"})
def _step_fraction(sim, obs, at, arm=None):
    """Median over patients of the share of the final change (from time 0 to the last
    sample) reached at ``at``."""
    arm = arm or sim.spec.arms[0].name
    _t, frac = _step_fractions(sim, arm, obs)
    k = Simulation._sample_index(sim.arms[arm], at)
    return lambda s: np.median(frac[s[arm], k])


@metric("step_time", obs="text", fraction="number", optional={"arm": "arm", "unit": "unit"})
def _step_time(sim, obs, fraction, arm=None, unit="days"):
    """Median over patients of the first sample time at which the share of the final change
    reaches ``fraction``."""
    arm = arm or sim.spec.arms[0].name
    t, frac = _step_fractions(sim, arm, obs)
    reached = frac >= fraction
    first = np.where(reached.any(axis=1), t[np.argmax(reached, axis=1)], np.nan)
    first = first / TIME_UNITS[unit]
    return lambda s: np.nanmedian(first[s[arm]])


# =============================================================================================
# Comparison, tables, figures and the report
# =============================================================================================
@dataclass
class Row:
    scenario: str
    quantity: Quantity
    value: float
    low: float  # 95 % bootstrap interval
    high: float
    passed: bool
    resamples: int = 0  # bootstrap resamples where the quantity is defined
    bootstrap: int = 0  # of this many

    def cells(self, markdown: bool = False) -> list[str]:
        q = self.quantity
        unit = f" {q.unit}" if q.unit else ""
        undefined = self.bootstrap - self.resamples
        ci = (f"{_fmt(self.low)} to {_fmt(self.high)}" if np.isfinite(self.low)
              else f"n/a ({undefined} of {self.bootstrap} undefined)" if undefined > 0
              else "n/a")
        target = f"{q.target}{unit} ({q.source})"
        accepted = q.accepted + (f" ({q.note})" if q.note else "")
        verdict = "pass" if self.passed else "FAIL"
        if markdown:
            verdict = "pass" if self.passed else "**FAIL**"
        return [self.scenario, q.name, target, accepted, f"{_fmt(self.value)}{unit}", ci,
                verdict]


HEADERS = ("scenario", "quantity", "target (source)", "accepted", "simulated",
           "95 % CI", "result")


@dataclass
class Report:
    rows: list[Row]
    sims: list[Simulation]
    figures: dict = field(default_factory=dict)  # scenario id -> path
    seconds: float = 0.0
    no_figures: str | None = None  # why no figures were drawn (matplotlib missing)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]


def table(rows: list[Row], fmt: str = "table") -> str:
    from .cli import render

    return render(HEADERS, [r.cells(markdown=fmt == "markdown") for r in rows], fmt,
                  right=(4, 5))


def validate(files, *, n: int | None = None, seed=None, threads: int = 1,
             bootstrap: int = DEFAULT_BOOTSTRAP, out=None, progress=None,
             command: str | None = None) -> Report:
    """Simulate and compare every validation file; with ``out``, write the report and figures
    there. ``progress(text)`` is called as scenarios start and finish."""
    specs = [f if isinstance(f, ValidationSpec) else load(f) for f in files]
    start = time.perf_counter()
    report = Report([], [])
    if out is not None:
        report.no_figures = _cannot_draw()
    for spec in specs:
        if progress:
            k = ", ".join(f"{a.name} ({_arm_n(a, n)})" for a in spec.arms)
            progress(f"{spec.id} {spec.title}: arms {k} ...")
        sim = simulate(spec, n, seed, threads=threads)
        rows = sim.evaluate(bootstrap, seed=0 if seed is None else seed)
        report.rows.extend(rows)
        report.sims.append(sim)
        if out is not None and report.no_figures is None:
            report.figures[spec.id] = figure(sim, Path(out) / f"{spec.id}.png")
        if progress:
            fails = sum(not r.passed for r in rows)
            progress(f"{spec.id}: {len(rows) - fails} of {len(rows)} pass "
                     f"({sim.seconds:.0f} s simulated)")
    report.seconds = time.perf_counter() - start
    if out is not None:
        write_report(report, Path(out) / "report.md", n=n, seed=seed, bootstrap=bootstrap,
                     command=command)
    return report


def write_report(report: Report, path: Path, *, n=None, seed=None,
                 bootstrap: int = DEFAULT_BOOTSTRAP, command: str | None = None) -> Path:
    from . import __version__

    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    npass = sum(r.passed for r in report.rows)
    lines = ["# pulsehpg validation report", "",
             (f"Generated {now} by `{command or 'pulsehpg validate'}` with pulsehpg "
             f"{__version__}: "
             f"{'the cohort size of each file' if n is None else f'{n} patients'} per arm, "
             f"seed {'of each file' if seed is None else seed}, "
             f"{bootstrap} bootstrap resamples of patients for the 95 % intervals (none where "
             f"a quantity is undefined in more than {1 - MIN_DEFINED:.0%} of them); "
             f"{report.seconds:.0f} s."), "",
             (f"**{npass} of {len(report.rows)} quantities pass.** A quantity passes when the "
             "point estimate (all patients) is inside the accepted range."), ""]
    if report.no_figures:
        lines += [f"No figures: {report.no_figures}.", ""]
    if report.failures:
        lines.append("Failing: " + "; ".join(f"{r.scenario} {r.quantity.name}"
                                             for r in report.failures) + ".")
        lines.append("")
    lines.append(table(report.rows, "markdown"))
    for sim in report.sims:
        spec = sim.spec
        lines += [f"## {spec.id}: {spec.title}", "",
                  f"Source: {spec.source}. File: `{_display_path(spec.path)}`; arms: "
                  + ", ".join(f"{name} ({k} patients)" for name, k in sim.n.items())
                  + f"; seed {sim.seed}; simulated in {sim.seconds:.0f} s.", ""]
        if spec.description:
            lines += [" ".join(spec.description.split()), ""]
        fig = report.figures.get(spec.id)
        if fig is not None:
            lines += [f"![{spec.id}]({Path(fig).name})", ""]
    return store.write_text(path, "\n".join(lines))


def _display_path(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# -- figures ----------------------------------------------------------------------------------------
def _quantile_curves(values: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(values, [10, 50, 90], axis=0)


def _panel_series(sim: Simulation, panel: Panel, arm: str):
    """(x in hours, q10, q50, q90) of one arm on a panel, or None when nothing to draw."""
    from .results import _binned_quantiles

    a = sim.arms[arm]
    keep = sim.mask(panel.where and _rearm(panel.where, arm), arm)
    if panel.series == "km":
        t, e = _event(sim, arm, panel.y)
        t, e = t[keep], e[keep]
        if not np.isfinite(t).any():
            return None
        grid = np.linspace(0.0, np.nanmax(t), 200)

        def curve(idx):
            ts, fs = kaplan_meier(t[idx], e[idx])
            k = np.searchsorted(ts, grid, side="right")
            return np.where(k > 0, fs[np.maximum(k - 1, 0)], 0.0)
        rng = np.random.default_rng(1)
        boot = np.array([curve(rng.integers(0, t.size, t.size)) for _ in range(200)])
        lo, hi = np.percentile(boot, [10, 90], axis=0)
        return grid * 24.0, lo, curve(np.arange(t.size)), hi
    if panel.series == "visits":
        labs = a.result.visits[panel.y].astype(float)
        t = a.result.visits["time_h"].astype(float)
        if panel.relative == "baseline":
            labs = labs / labs[:, :1]
        elif panel.relative == "change":
            labs = labs - labs[:, :1]
        elif panel.relative.startswith("arm:"):
            labs = labs / sim.arms[panel.relative[4:]].result.visits[panel.y]
        tw, q = _binned_quantiles(t[keep].ravel() / 168.0, labs[keep].ravel())
        return (tw * 168.0, *q) if tw.size else None
    t, x = a.t, a.trace[panel.y]
    if panel.relative == "baseline":
        x = x / a.snapshot(0.0)[panel.y][:, None]
    elif panel.relative == "change":
        x = x - a.snapshot(0.0)[panel.y][:, None]
    elif panel.relative == "step":
        _, x = _step_fractions(sim, arm, panel.y)
    elif panel.relative.startswith("arm:"):  # the same sample times while both run
        other = sim.arms[panel.relative[4:]].trace[panel.y]
        k = min(x.shape[1], other.shape[1])
        t, x = t[:k], x[:, :k] / other[:, :k]
    return (t, *_quantile_curves(x[keep]))


def _cannot_draw() -> str | None:
    """None when figures can be drawn, else why not: the table and the report need only the
    core install, the figures the results extra."""
    from .results import _require

    try:
        _require("matplotlib.figure")
        _require("matplotlib.backends.backend_agg")
    except ImportError as e:
        return str(e)
    return None


def figure(sim: Simulation, out: Path) -> Path | None:
    """One PNG per scenario: per panel, each arm's cohort median and 10-90 % band over time
    (Kaplan-Meier panels: the estimate and a 10-90 % bootstrap band), with the accepted
    ranges of the quantities drawn on it (error bars at their time, with the simulated value
    as a diamond; bands when they have no time) and the panel's own published targets."""
    from .results import _require

    figure_mod = _require("matplotlib.figure")
    _require("matplotlib.backends.backend_agg")
    spec = sim.spec
    panels = spec.panels
    if not panels:
        return None
    cols = min(len(panels), 3 if len(panels) > 4 else 2)
    nrows = -(-len(panels) // cols)
    fig = figure_mod.Figure(figsize=(5.0 * cols, 5.0 * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, cols, squeeze=False).ravel())
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    rows = {r.quantity.id: r for r in sim.evaluate(bootstrap=0)}
    for ax, panel in zip(axes, panels):
        scale = TIME_UNITS[panel.time_unit]
        if panel.log:
            ax.set_yscale("log")
        for k, arm in enumerate(panel.arms):
            s = _panel_series(sim, panel, arm)
            if s is None:
                continue
            x, lo, med, hi = s
            km = panel.series == "km"
            label = arm if len(panel.arms) > 1 or len(spec.arms) > 1 else "simulated"
            what = "Kaplan-Meier, 10-90 % bootstrap" if km else "median, 10-90 %"
            if km:
                ax.step(x / scale, med, where="post", color=f"C{k}", lw=1.2,
                        label=f"{label}: {what}")
            else:
                ax.plot(x / scale, med, color=f"C{k}", lw=1.2, label=f"{label}: {what}")
            ax.fill_between(x / scale, lo, hi, color=f"C{k}", alpha=0.18, lw=0,
                            step="post" if km else None)
        first = sim.arms[panel.arms[0]]
        for i in range(min(panel.patients, first.n)):
            ax.plot(first.t / scale, first.trace[panel.y][i], color="0.35", lw=0.6,
                    label=f"{panel.arms[0]}: patient {i}")
        _draw_targets(ax, panel, [q for q in spec.quantities if q.panel == panel.name], rows,
                      scale)
        ax.set_xlabel(f"time ({panel.time_unit})" + (" since time zero"
                                                      if panel.series == "km" else ""))
        unit = "" if panel.relative or panel.series == "km" else _unit_of(panel.y)
        ax.set_ylabel(panel.ylabel or (panel.y + (f" ({unit})" if unit else "")))
        ax.set_title(panel.title or panel.name, fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(0.0, -0.16),
                  borderaxespad=0, frameon=False)
    fig.suptitle(f"{spec.id}: {spec.title}\n({spec.source})", fontsize="medium")
    return store.write_figure(fig, out, dpi=100)


def _unit_of(name: str) -> str:
    from .cohort import UNITS

    return UNITS.get(name, "")


def _short(text: str, width: int = 62) -> str:
    """A legend label on at most two lines."""
    import textwrap

    lines = textwrap.wrap(text, width)
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), width, placeholder="...")]
    return "\n".join(lines)


def _draw_targets(ax, panel: Panel, quantities, rows, scale: float):
    ymin, ymax = ax.get_ylim()
    items = [(q.low, q.high, q.at, None, _short(f"{q.name}: {q.target}"
                                                f"{' ' + q.unit if q.unit else ''} ({q.source})"),
              rows[q.id].value) for q in quantities]
    items += [(t.low, t.high, t.at, t.between, _short(t.label), None) for t in panel.targets]
    log = ax.get_yscale() == "log"
    for k, (lo, hi, at, between, label, value) in enumerate(items):
        color = "black" if k == 0 else f"C{(k + 5) % 10}"
        lo_d = lo if np.isfinite(lo) and not (log and lo <= 0) else min(ymin, hi)
        hi_d = hi if np.isfinite(hi) else max(ymax, lo * 1.2)
        label = f"target: {label}"
        if between is not None:
            x0, x1 = between[0] / scale, between[1] / scale
            if hi_d - lo_d < 1e-9 * max(1.0, abs(hi_d)):
                ax.hlines(lo_d, x0, x1, color=color, lw=2.5, label=label)
            else:
                ax.fill_between([x0, x1], lo_d, hi_d, color=color, alpha=0.15, lw=0,
                                label=label)
            continue
        if not at:
            ax.axhspan(lo_d, hi_d, color=color, alpha=0.10, lw=0, label=label)
            continue
        xs = np.array(at) / scale
        mid = np.full(xs.shape, (lo_d + hi_d) / 2)
        ax.errorbar(xs, mid, yerr=[mid - lo_d, hi_d - mid], fmt="none", ecolor=color,
                    elinewidth=2.2, capsize=4, label=label)
        if value is not None and np.isfinite(value) and len(xs) == 1:
            ax.plot(xs, [value], marker="D", ms=4, color=color, ls="none")
