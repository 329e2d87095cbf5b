"""Parameter sweeps: ``pulsehpg sweep config.toml`` and :func:`sweep`.

A sweep runs one scenario at many *points* (values of registry parameters or regimen
settings), each point with ``replicates`` independent cohorts of ``patients``. Points are
grouped into *blocks*; a block is the unit of work handed to a
:class:`concurrent.futures.Executor` (local processes by default, ``mpi4py.futures`` with
``executor="mpi"``, or any executor you pass) and is written whole, as one HDF5 file
``<out>.blocks/block-<k>.h5``, under a temporary name and renamed when complete (see
:mod:`pulsehpg.store`). Cohort (point p, replicate r) is simulated with the seed
``numpy.random.SeedSequence(seed, spawn_key=(p, r))``, so every patient's result depends only on
(seed, point, replicate, patient): not on the number of workers, the engine, the block size or
how the work was split into shards or interrupted and resumed. The merged file ``<out>`` joins
the blocks (virtual datasets by default, a copy with ``consolidate=True``).

Config format (TOML)::

    name = "restart"                        # optional; default: the config file's stem
    scenario = "serm-then-gonadorelin.toml" # relative to this file; or an inline [scenario] table

    [sweep]
    method = "grid"        # grid | random | latin_hypercube | sobol
    points = 64            # number of points (not for grid: a grid is the product of its axes)
    replicates = 1         # independent cohorts per point
    patients = 50          # patients per point and replicate (default: the scenario's cohort.n)
    seed = 1               # root seed (default: the scenario's cohort.seed)
    block_size = 4         # points per block file (default: blocks of ~1000 patients, but
                           # at least 16 blocks when there are enough points)

    [[sweep.axis]]
    name = "steroid.shbg"                   # a registry parameter (pulsehpg params)
    range = [15, 60]                        # lo, hi (in the parameter's unit)
    scale = "log"                           # linear (default) | log
    num = 4                                 # grid only: points along the range, ends included

    [[sweep.axis]]
    name = "phase.trt.duration"             # or phase.<phase>.drug.<drug>.dose
    values = ["6 months", "12 months"]      #    phase.<phase>.drug.<drug>.interval
                                            #    phase.<phase>.rule.<rule>.drug.<drug>.dose|interval

A registry parameter on an axis replaces the parameter (its default, phenotype, between-patient
variability and any covariate distribution for it) in every patient of the point. Durations and
intervals are written with units (``"12 weeks"``) or as numbers with ``unit = "weeks"``; they
are stored in that unit (default: the unit of the first value). Doses are in the drug's unit
(``pulsehpg drugs``). Non-grid methods draw each axis uniformly on its range (log-uniformly
with ``scale = "log"``), or uniformly among its ``values``; latin_hypercube and sobol come
from :mod:`scipy.stats.qmc` (Sobol scrambled), all seeded with ``seed``. Grid points are the
product of the axes in the order written, the first axis varying slowest.

Every mistake raises :class:`~pulsehpg.scenario.ScenarioError` naming the key path
(``sweep.axis[1].range[0]``), the value and what is allowed.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import datetime
import difflib
import inspect as _inspect
import math
import multiprocessing
import os
import re
import sys
import time
import tomllib
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .cohort import MAX_PATIENTS
from .params import BY_NAME, lookup, settable
from .scenario import (COVARIATES, DRUG_UNITS, Scenario, ScenarioError, _Reader, load_scenario,
                       parse_scenario, read_text)
from .schedule import parse_schedule
from .units import HOURS_PER, MAX_SPAN_H

__all__ = ["sweep", "merge", "load_config", "parse_config", "SweepConfig", "Axis",
           "SweepResult", "SweepError", "SweepUsageError", "SweepInterrupted", "METHODS",
           "blocks_dir", "parse_shard", "dumps_toml"]

METHODS = ("grid", "random", "latin_hypercube", "sobol")
SCALES = ("linear", "log")
MAX_POINTS = 10_000_000
BLOCK_PATIENTS = 1000  # default block size aims at blocks of about this many patients
MIN_BLOCKS = 16  # ... but at least this many blocks when there are enough points
MAX_PHASE_H = MAX_SPAN_H
MIN_INTERVAL_H = 0.25
MAX_DOSE = 1e7
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "pulsehpg-sweep"
_UNIT_NAMES = {1 / 60: "min", 1.0: "h", 24.0: "day", 168.0: "week", 730.5: "month",
               8766.0: "year"}
TIME_UNITS = {k: _UNIT_NAMES[v] for k, v in HOURS_PER.items()}  # spelling -> canonical
_TOP_KEYS = ("name", "description", "scenario", "sweep")
_SWEEP_KEYS = ("method", "points", "replicates", "patients", "seed", "block_size", "axis")
_AXIS_KEYS = ("name", "values", "range", "scale", "num", "unit")
_COLUMN = re.compile(r"[^A-Za-z0-9_.\-]")
REGIMEN_FIELDS = ("phase.<phase>.duration, phase.<phase>.drug.<drug>.dose, "
                  "phase.<phase>.drug.<drug>.interval, "
                  "phase.<phase>.rule.<rule>.drug.<drug>.dose or .interval")


# -- errors ---------------------------------------------------------------------------------
class SweepError(RuntimeError):
    """A sweep that failed while running (a block raised, a worker died)."""


class SweepUsageError(SweepError, ValueError):
    """A sweep that cannot start as asked (changed config on resume, bad shard, no mpi4py,
    finished blocks without --resume, no sweep to merge); the message says what to do."""


class SweepInterrupted(SweepError):
    """The sweep was interrupted (Ctrl-C, or SIGTERM as from ``scancel`` or a Slurm time
    limit); finished blocks are kept for ``resume=True``. ``exit_status`` is 130 for
    Ctrl-C, 143 for SIGTERM."""

    exit_status = 130


class _Terminated(KeyboardInterrupt):
    """Raised in the main thread by the sweep's SIGTERM handler."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _catch_sigterm():
    """Turn SIGTERM into _Terminated while blocks run (main thread only); returns what to
    restore, or None."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        return None


def _restore_sigterm(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


class _BlockFailure(Exception):
    """What a worker reports when its block fails (picklable, unlike some causes)."""

    def __init__(self, kind: str, block: int, message: str, info: dict | None = None):
        super().__init__(kind, block, message, info or {})
        self.kind, self.block, self.message, self.info = kind, block, message, info or {}

    def __str__(self):
        return f"block {self.block}: {self.message}"


# -- TOML output (the resolved config and per-point scenarios) -------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _toml_str(k)


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def _flat(v) -> bool:
    """A dict, or a list of dicts, with only scalars or lists of scalars inside."""
    items = v if isinstance(v, list) else [v]
    return all(isinstance(x, dict) and all(
        not isinstance(y, dict) and not (isinstance(y, list) and any(
            isinstance(z, (dict, list)) for z in y)) for y in x.values()) for x in items)


def _inline(k: str, v) -> bool:
    """Written as key = value (small flat tables and arrays of them stay on one line)."""
    if not isinstance(v, dict) and not _is_table_array(v):
        return True
    return bool(v) and _flat(v) and len(_toml_value(v)) + len(k) <= 90


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _toml_table(d: dict, prefix: str, lines: list) -> None:
    for k, v in d.items():
        if _inline(k, v):
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in d.items():
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        if _inline(k, v):
            continue
        if isinstance(v, dict):
            lines.append("")
            lines.append(f"[{name}]")
            _toml_table(v, name, lines)
        elif _is_table_array(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{name}]]")
                _toml_table(item, name, lines)


def dumps_toml(doc: dict) -> str:
    """A TOML document for a dict as :mod:`tomllib` returns it (``tomllib.loads`` inverts it)."""
    lines: list[str] = []
    _toml_table(doc, "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"


# -- config ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """One swept setting. Values are in ``unit``; ``factor`` converts them to model units
    (hours for durations and intervals, 1 otherwise)."""

    name: str
    kind: str  # param | duration | dose | interval
    unit: str
    factor: float
    label: str  # long_name of the points column
    values: tuple[float, ...] | None = None  # discrete values (grid, or chosen among)
    range: tuple[float, float] | None = None
    scale: str = "linear"
    num: int | None = None
    targets: tuple = ()  # where in the scenario document (see _apply)
    key_path: str = ""  # sweep.axis[i], for messages
    column: str = ""  # variable name in /points

    def grid_values(self) -> np.ndarray:
        if self.values is not None:
            return np.asarray(self.values, dtype=float)
        lo, hi = self.range
        if self.scale == "log":
            return np.exp(np.linspace(math.log(lo), math.log(hi), self.num))
        return np.linspace(lo, hi, self.num)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map uniform numbers in [0, 1) to values of this axis."""
        if self.values is not None:
            vals = np.asarray(self.values, dtype=float)
            idx = np.minimum((u * len(vals)).astype(np.int64), len(vals) - 1)
            return vals[idx]
        lo, hi = self.range
        if self.scale == "log":
            return np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        return lo + u * (hi - lo)

    def extremes(self) -> list[float]:
        if self.values is not None:
            return sorted({min(self.values), max(self.values)})
        return list(self.range)


@dataclass(frozen=True, eq=False)
class SweepConfig:
    """A validated sweep config; ``text`` is the resolved config (scenario inlined, defaults
    filled in) whose SHA-256 identifies the sweep."""

    name: str
    description: str
    method: str
    n_points: int
    replicates: int
    patients: int
    seed: int
    block_size: int
    axes: tuple[Axis, ...]
    scenario_doc: dict
    scenario: Scenario = field(repr=False)
    text: str = field(repr=False)
    source: str | None = None

    @property
    def sha256(self) -> str:
        return store.config_sha256(self.text)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_points // self.block_size)

    @property
    def patients_per_point(self) -> int:
        return self.replicates * self.patients

    @property
    def n_patients(self) -> int:
        return self.n_points * self.patients_per_point

    def block_points(self, k: int) -> range:
        return range(k * self.block_size, min(self.n_points, (k + 1) * self.block_size))

    def design(self) -> np.ndarray:
        """The points: an array (n_points, n_axes) of axis values in the axes' units."""
        return _design(self)

    def scenario_at(self, values) -> Scenario:
        """The scenario of a point (axis values in the axes' units)."""
        return _scenario_at(self.scenario_doc, self.axes, values)


class _Checker(_Reader):
    """Raises ScenarioError with key path and line for the sweep config text.

    The scenario reader's key checks and line lookup, plus the sweep's own types.
    """

    def keys(self, obj, path: str, allowed) -> dict:
        return self.table(obj, path, allowed)

    def integer(self, obj, key, path, *, default=None, low=0, high=2**63 - 1):
        p = f"{path}.{key}"
        if key not in obj:
            if default is None:
                self.fail(p, "is required")
            return default
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(p, f"expected a whole number, got {v!r:.60}")
        if not (low <= v <= high):
            self.fail(p, f"{v!r} is outside the allowed range [{low}, {high}]")
        return v


def _raw_message(e: ScenarioError) -> str:
    where = f"{e.path}" + (f" (line {e.line})" if e.line else "")
    s = str(e)
    return s[len(where) + 2:] if s.startswith(where + ": ") else s


def _scenario_from_doc(doc: dict) -> Scenario:
    return parse_scenario(dumps_toml(doc))


def _load_scenario(c: _Checker, doc: dict, base_dir: Path) -> tuple[dict, Scenario]:
    """The scenario document (a dict as tomllib gives it) and the parsed Scenario."""
    if "scenario" not in doc:
        c.fail("scenario", "is required: scenario = 'file.toml' (relative to this config) or "
                           "an inline [scenario] table")
    ref = doc["scenario"]
    if isinstance(ref, str):
        path = Path(ref)
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            c.fail("scenario", f"scenario file {str(path)!r} not found ({ref!r} is taken "
                               f"relative to {str(base_dir) or '.'!r}: the folder of the "
                               f"sweep config; for a config given as a dict, the current "
                               f"folder)")
        try:
            sc = load_scenario(path)
        except ScenarioError as e:
            raise ScenarioError(f"{path}: {e.path}", _raw_message(e), e.line) from None
        sdoc = tomllib.loads(sc.text)
        sdoc.setdefault("name", sc.name)
        dr = sdoc.get("dose_records")
        if isinstance(dr, dict) and isinstance(dr.get("file"), str) \
                and not Path(dr["file"]).is_absolute():
            dr["file"] = str((path.parent / dr["file"]).resolve())
    elif isinstance(ref, dict):
        sdoc = copy.deepcopy(ref)
        dr = sdoc.get("dose_records")
        if isinstance(dr, dict) and isinstance(dr.get("file"), str) \
                and not Path(dr["file"]).is_absolute():
            dr["file"] = str((base_dir / dr["file"]).resolve())
        try:
            sc = _scenario_from_doc(sdoc)
        except ScenarioError as e:
            p = f"scenario.{e.path}" if e.path else "scenario"
            raise ScenarioError(p, _raw_message(e), c.line_of(p)) from None
        sdoc.setdefault("name", sc.name)
    else:
        c.fail("scenario", f"expected a file name or a [scenario] table, got {ref!r:.60}")
    return sdoc, sc


def _phase_tables(sdoc: dict) -> list[dict]:
    ph = sdoc.get("phase", [])
    return ph if isinstance(ph, list) else []


def _actions(rule: dict) -> list[dict]:
    then = rule.get("then", [])
    return [then] if isinstance(then, dict) else list(then)


def _resolve_name(c: _Checker, name, path: str, sdoc: dict, sc: Scenario):
    """(kind, targets, label, native unit or None) for an axis name."""
    if not isinstance(name, str) or not name:
        c.fail(path, f"expected a parameter name or regimen field, got {name!r:.60}")
    if name in BY_NAME:
        try:
            p = settable(name)
        except ValueError as e:
            c.fail(path, f"{e}; it cannot be swept")
        return "param", (name,), p.meaning, p.unit
    if not name.startswith("phase."):
        try:
            lookup(name)
        except ValueError as e:
            c.fail(path, f"{e}; an axis is a registry parameter or a regimen field: "
                         f"{REGIMEN_FIELDS}")
    phases = _phase_tables(sdoc)
    names = [p.name for p in sc.phases]
    match = [(i, n) for i, n in enumerate(names) if name.startswith(f"phase.{n}.")]
    if not match:
        c.fail(path, f"{name!r}: no phase of that name in the scenario (phases: "
                     f"{', '.join(names) or 'none'}); regimen fields are {REGIMEN_FIELDS}")
    i, pname = max(match, key=lambda m: len(m[1]))
    rest = name[len(f"phase.{pname}."):]
    if rest == "duration":
        return "duration", (("phase", i),), f"duration of phase {pname}", None
    m = re.fullmatch(r"drug\.([^.]+)\.(dose|interval)", rest)
    rule_name = None
    if m:
        drug, what = m.groups()
        entries = [("phase", i, "drug", j) for j, d in enumerate(phases[i].get("drug", []))
                   if isinstance(d, dict) and d.get("name") == drug]
        if not entries:
            have = sorted({d.get("name") for d in phases[i].get("drug", [])
                           if isinstance(d, dict)})
            c.fail(path, f"{name!r}: phase {pname!r} has no [[phase.drug]] {drug!r} (its "
                         f"drugs: {', '.join(have) or 'none'}); a drug added by a rule is "
                         f"phase.{pname}.rule.<rule>.drug.{drug}.{what}")
    else:
        m = re.fullmatch(r"rule\.(.+)\.drug\.([^.]+)\.(dose|interval)", rest)
        if not m:
            c.fail(path, f"{name!r}: unknown field {rest!r} of phase {pname!r}; allowed: "
                         f"{REGIMEN_FIELDS}")
        rule_name, drug, what = m.groups()
        rules = phases[i].get("rule", [])
        rnames = [r.get("name", f"rule{k}") if isinstance(r, dict) else "" for k, r in
                  enumerate(rules)]
        if rule_name not in rnames:
            c.fail(path, f"{name!r}: phase {pname!r} has no rule {rule_name!r} (its rules: "
                         f"{', '.join(rnames) or 'none'})")
        k = rnames.index(rule_name)
        kinds = ("add_drug",) if what == "interval" else ("add_drug", "set_dose")
        entries = [("phase", i, "rule", k, "then", a)
                   for a, act in enumerate(_actions(rules[k]))
                   if isinstance(act, dict) and act.get("drug") == drug
                   and act.get("action") in kinds]
        if not entries:
            c.fail(path, f"{name!r}: rule {rule_name!r} of phase {pname!r} has no "
                         f"{' or '.join(kinds)} action for {drug!r}")
    where = f"rule {rule_name} of phase {pname}" if rule_name else f"phase {pname}"
    # an axis sets every entry of the drug there: fine when they agree (a rule's add_drug
    # and set_dose of one dose), a silent flattening when they differ (loading and
    # maintenance doses)
    key = "dose" if what == "dose" else "schedule"
    given = [_get(sdoc, t).get(key) for t in entries]
    if len({repr(v) for v in given}) > 1:
        c.fail(path, f"{name!r}: {where} has {len(entries)} entries of {drug} with different "
                     f"{key}s ({', '.join(repr(v) for v in given)}), and an axis would set them "
                     f"all to one value: give the entry to sweep a phase of its own")
    if what == "dose":
        unit = DRUG_UNITS[drug]
        if any(str(_get(sdoc, t).get("schedule", "")).strip().lower() == "continuous"
               for t in entries):
            unit += "/h"
        return "dose", tuple(entries), f"{drug} dose in {where}", unit
    for t in entries:
        entry = _get(sdoc, t)
        if "times" in entry:
            c.fail(path, f"{name!r}: {drug} in {where} is given at listed times, not every "
                         "interval; only drugs with a periodic schedule have an interval")
        try:
            s = parse_schedule(entry.get("schedule"), "schedule")
        except ValueError:
            s = None
        if s is None or s.kind not in ("pump", "cycle") or len(s.offsets) != 1:
            c.fail(path, f"{name!r}: the schedule of {drug} in {where} is "
                         f"{entry.get('schedule')!r}; an interval can be swept only for "
                         "'every <duration>' or a one-dose-per-period schedule such as "
                         "'daily' or 'weekly'")
    return "interval", tuple(entries), f"{drug} dosing interval in {where}", None


def _get(doc: dict, target: tuple) -> dict:
    """The table a target points at: ('phase', i), ('phase', i, 'drug', j) or
    ('phase', i, 'rule', k, 'then', a)."""
    phase = doc["phase"][target[1]]
    if len(target) == 2:
        return phase
    if target[2] == "drug":
        return phase["drug"][target[3]]
    rule = phase["rule"][target[3]]
    if isinstance(rule["then"], dict):
        return rule["then"]
    return rule["then"][target[5]]


def _axis_value(c: _Checker, v, path: str, kind: str, unit: str | None, native: str | None):
    """A value of an axis, in the axis unit, and the unit (inferred from a string)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        c.fail(path, f"expected a number or a string with a unit, got {v!r:.60}")
    if kind in ("duration", "interval"):
        if isinstance(v, str):
            m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*", v)
            if not m or m.group(2).lower() not in TIME_UNITS:
                c.fail(path, f"cannot read {v!r} as a duration; write a number and a unit "
                             f"(min, h, day, week, month, year), e.g. '12 weeks'")
            u = TIME_UNITS[m.group(2).lower()]
            hours = float(m.group(1)) * HOURS_PER[u]
            if unit is None:
                unit = u
            return hours / HOURS_PER[unit], unit
        if unit is None:
            c.fail(path, f"{v!r} has no unit: write durations with a unit ('12 weeks') or give "
                         "the axis a unit (unit = 'weeks')")
        return float(v), unit
    if isinstance(v, str):
        parts = v.split()
        if kind == "dose" and len(parts) == 2 and parts[1] == native:
            try:
                return float(parts[0]), unit
            except ValueError:
                pass
        c.fail(path, f"cannot read {v!r}; expected a number in {native}"
                     + (f" or a string such as '25 {native}'" if kind == "dose" else ""))
    return float(v), unit


def _check_bounds(c: _Checker, v: float, path: str, axis_kind: str, name: str, unit: str,
                  factor: float):
    if not math.isfinite(v):
        c.fail(path, f"expected a finite number, got {v!r}")
    if axis_kind == "param":
        p = BY_NAME[name]
        if not (p.lower <= v <= p.upper):
            c.fail(path, f"{v:g} is outside the allowed range of {name} "
                         f"[{p.lower:g}, {p.upper:g}] {p.unit}")
    elif axis_kind == "duration":
        h = v * factor
        if not (0 < h <= MAX_PHASE_H):
            c.fail(path, f"{v:g} {unit}: a phase duration must be longer than zero and at most "
                         f"{MAX_PHASE_H / 8766:g} years")
    elif axis_kind == "interval":
        h = v * factor
        if not (MIN_INTERVAL_H <= h <= MAX_PHASE_H):
            c.fail(path, f"{v:g} {unit}: a dosing interval must be between 15 min and "
                         f"{MAX_PHASE_H / 8766:g} years (use 'continuous' for an infusion)")
    elif not (0 <= v <= MAX_DOSE):
        c.fail(path, f"{v:g} {unit}: a dose must be in [0, {MAX_DOSE:g}] {unit}")


def _axis(c: _Checker, t, i: int, method: str, sdoc: dict, sc: Scenario) -> Axis:
    path = f"sweep.axis[{i}]"
    t = c.keys(t, path, _AXIS_KEYS)
    if "name" not in t:
        c.fail(f"{path}.name", "is required: a registry parameter (pulsehpg params) or a "
                               f"regimen field ({REGIMEN_FIELDS})")
    name = t["name"]
    kind, targets, label, native = _resolve_name(c, name, f"{path}.name", sdoc, sc)
    unit = t.get("unit")
    if unit is not None and not isinstance(unit, str):
        c.fail(f"{path}.unit", f"expected a string, got {unit!r:.60}")
    if kind in ("duration", "interval"):
        if unit is not None:
            if unit.strip().lower() not in TIME_UNITS:
                c.fail(f"{path}.unit", f"unknown time unit {unit!r}; allowed: min, h, day, "
                                       "week, month, year")
            unit = TIME_UNITS[unit.strip().lower()]
    elif unit is not None and unit != native:
        c.fail(f"{path}.unit", f"{name} is in {native}; unit = {unit!r} does not match (write "
                               f"values in {native})")
    else:
        unit = native
    if ("values" in t) == ("range" in t):
        c.fail(path, "give exactly one of values = [...] or range = [lo, hi]")
    values = rng = None
    scale = t.get("scale", "linear")
    if scale not in SCALES:
        c.fail(f"{path}.scale", f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    if "values" in t:
        raw = t["values"]
        if not isinstance(raw, list) or not raw:
            c.fail(f"{path}.values", f"expected a non-empty list, got {raw!r:.60}")
        for k in ("scale", "num"):
            if k in t:
                c.fail(f"{path}.{k}", f"{k} goes with range = [lo, hi], not with values")
        vals = []
        for j, v in enumerate(raw):
            x, unit = _axis_value(c, v, f"{path}.values[{j}]", kind, unit, native)
            vals.append(x)
        if len(set(vals)) != len(vals):
            dup = next(v for v in raw if vals.count(vals[raw.index(v)]) > 1)
            c.fail(f"{path}.values", f"values must be distinct; {dup!r} appears twice")
        values = tuple(vals)
    else:
        raw = t["range"]
        if not isinstance(raw, list) or len(raw) != 2:
            c.fail(f"{path}.range", f"expected [lo, hi], got {raw!r:.60}")
        lo, unit = _axis_value(c, raw[0], f"{path}.range[0]", kind, unit, native)
        hi, unit = _axis_value(c, raw[1], f"{path}.range[1]", kind, unit, native)
        if not lo < hi:
            c.fail(f"{path}.range", f"lo must be less than hi, got {raw!r}")
        if scale == "log" and lo <= 0:
            c.fail(f"{path}.range[0]", f"{raw[0]!r}: a log scale needs lo > 0")
        rng = (lo, hi)
    factor = HOURS_PER[unit] if kind in ("duration", "interval") else 1.0
    for j, v in enumerate(values if values is not None else rng):
        p = f"{path}.values[{j}]" if values is not None else f"{path}.range[{j}]"
        _check_bounds(c, v, p, kind, name, unit, factor)
    num = None
    if method == "grid":
        if rng is not None:
            if "num" not in t:
                c.fail(f"{path}.num", "a grid axis with a range needs num (the number of values "
                                      "from lo to hi, ends included), or give values = [...]")
            num = c.integer(t, "num", path, low=2, high=MAX_POINTS)
    elif "num" in t:
        c.fail(f"{path}.num", f"num is only for method = 'grid'; method {method!r} draws "
                              "values on the range")
    column = _COLUMN.sub("_", name)
    return Axis(name, kind, unit or "1", factor, label, values, rng, scale, num, targets, path,
                column)


def _default_block_size(n_points: int, per_point: int) -> int:
    by_patients = max(1, round(BLOCK_PATIENTS / per_point))
    by_count = max(1, -(-n_points // MIN_BLOCKS))
    return max(1, min(by_patients, by_count))


def parse_config(text: str, path=None, base_dir=None, *, patients: int | None = None,
                 seed: int | None = None) -> SweepConfig:
    """Parse and validate sweep config text (``path`` names it in messages; a scenario file
    is taken relative to ``base_dir``, default: the folder of ``path`` or the current one).
    ``patients`` and ``seed`` override the config's."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+)", str(e))
        raise ScenarioError(str(path or "<sweep config>"), f"not valid TOML: {e}",
                            int(m.group(1)) if m else None) from None
    if base_dir is None:
        base_dir = Path(path).parent if path is not None else Path.cwd()
    return _build(doc, text, Path(base_dir), str(path) if path is not None else None,
                  patients, seed)


def load_config(path, *, patients: int | None = None, seed: int | None = None) -> SweepConfig:
    """Read and validate a sweep config file."""
    p = Path(path)
    return parse_config(read_text(p), p, p.parent, patients=patients, seed=seed)


def _build(doc: dict, text: str, base_dir: Path, source: str | None, patients_override,
           seed_override) -> SweepConfig:
    c = _Checker(text)
    if "phase" in doc and "sweep" not in doc:  # a scenario: say so, not 'unknown key'
        c.fail("phase", "this is a scenario, not a sweep config; run it with `pulsehpg run "
                        "FILE`, or sweep it from a config with scenario = \"FILE\" and a "
                        "[sweep] table with [[sweep.axis]]")
    c.keys(doc, "", _TOP_KEYS)
    name = doc.get("name", Path(source).stem if source else "sweep")
    if not isinstance(name, str) or not name:
        c.fail("name", f"expected a non-empty string, got {name!r:.60}")
    # the default output is NAME.h5 in the current folder
    if name != name.strip() or "/" in name or "\\" in name or name.startswith("."):
        c.fail("name", f"{name!r:.60} cannot name a file here (the default output is "
                       f"NAME.h5): use letters, digits, '-' or '_', without '/', a leading "
                       f"'.' or spaces at the ends")
    desc = doc.get("description", "")
    if not isinstance(desc, str):
        c.fail("description", f"expected a string, got {desc!r:.60}")
    sdoc, sc = _load_scenario(c, doc, base_dir)
    if "sweep" not in doc:
        c.fail("sweep", "is required: a [sweep] table with method and [[sweep.axis]] entries")
    s = c.keys(doc["sweep"], "sweep", _SWEEP_KEYS)
    method = s.get("method", "grid")
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        c.fail("sweep.method", f"unknown method {method!r}{hint}; allowed: {', '.join(METHODS)}")
    raw_axes = s.get("axis", [])
    if isinstance(raw_axes, dict):
        c.fail("sweep.axis", "is written as one table [sweep.axis]; axes are an array of "
                             "tables: write [[sweep.axis]] (double brackets) for each axis")
    if not isinstance(raw_axes, list) or not raw_axes:
        c.fail("sweep.axis", "at least one [[sweep.axis]] is required (name = ..., values = "
                             "[...] or range = [lo, hi])")
    axes = tuple(_axis(c, t, i, method, sdoc, sc) for i, t in enumerate(raw_axes))
    for i, a in enumerate(axes):
        for j in range(i):
            if axes[j].name == a.name or axes[j].column == a.column:
                c.fail(f"sweep.axis[{i}].name", f"{a.name!r} is also sweep.axis[{j}]; each "
                                                "setting can be swept once")
    if method == "grid":
        if "points" in s:
            c.fail("sweep.points", "points is for random, latin_hypercube and sobol; a grid has "
                                   "the product of its axes' values")
        n_points = math.prod(len(a.grid_values()) for a in axes)
        if n_points > MAX_POINTS:
            c.fail("sweep.axis", f"the grid has {n_points} points; at most {MAX_POINTS} "
                                 "are allowed")
    else:
        n_points = c.integer(s, "points", "sweep", low=1, high=MAX_POINTS)
    replicates = c.integer(s, "replicates", "sweep", default=1, low=1, high=1_000_000)
    if patients_override is not None:
        if isinstance(patients_override, bool) or not isinstance(patients_override, int) \
                or not 1 <= patients_override <= MAX_PATIENTS:
            raise ValueError(f"patients: expected a whole number from 1 to {MAX_PATIENTS:,} "
                             f"(per point and replicate), got {patients_override!r}")
        patients = patients_override
    else:
        patients = c.integer(s, "patients", "sweep", default=sc.cohort.n, low=1,
                             high=MAX_PATIENTS)
    if seed_override is not None:
        if isinstance(seed_override, bool) or not isinstance(seed_override, int) \
                or not 0 <= seed_override < 2**63:
            raise ValueError(f"seed: expected a non-negative whole number, got "
                             f"{seed_override!r}")
        seed = seed_override
    else:
        seed = c.integer(s, "seed", "sweep", default=sc.cohort.seed)
    block_size = c.integer(s, "block_size", "sweep",
                           default=_default_block_size(n_points, replicates * patients),
                           low=1, high=MAX_POINTS)
    block_size = min(block_size, n_points)

    # every axis at its extremes, alone, must give a valid scenario
    base = [a.extremes()[0] for a in axes]
    for i, a in enumerate(axes):
        for v in a.extremes():
            vals = list(base)
            vals[i] = v
            try:
                at = _scenario_at(sdoc, axes, vals, only=i)
            except ScenarioError as e:
                c.fail(a.key_path, f"{a.name} = {v:g} {a.unit} gives an invalid scenario: "
                                   f"{e.path}: {_raw_message(e)}")
            if sc.output.traces is not None and abs(at.duration - sc.duration) > 1e-9:
                # blocks of traces merge only on one time axis
                c.fail(a.key_path, f"{a.name} changes how long patients are followed, so the "
                                   "points' traces (scenario output.traces) would not share "
                                   "one time axis; set the scenario's outcomes.follow_up")

    resolved_axes = []
    for a in axes:
        r = {"name": a.name}
        if a.values is not None:
            r["values"] = [float(v) for v in a.values]
        else:
            r["range"] = [float(a.range[0]), float(a.range[1])]
            r["scale"] = a.scale
            if a.num is not None:
                r["num"] = a.num
        r["unit"] = a.unit
        resolved_axes.append(r)
    rs = {"method": method}
    if method != "grid":
        rs["points"] = n_points
    rs.update(replicates=replicates, patients=patients, seed=seed, block_size=block_size,
              axis=resolved_axes)
    resolved = {"name": name}
    if desc:
        resolved["description"] = desc
    resolved["sweep"] = rs
    resolved["scenario"] = sdoc
    rtext = ("# pulsehpg sweep config, resolved: scenario inlined, defaults filled in\n"
             + dumps_toml(resolved))
    return SweepConfig(name, desc, method, n_points, replicates, patients, seed, block_size,
                       axes, sdoc, sc, rtext, source)


# -- design and point scenarios --------------------------------------------------------------
def _qmc_engine(kind: str, d: int, seed: int):
    from scipy.stats import qmc

    cls = qmc.LatinHypercube if kind == "latin_hypercube" else qmc.Sobol
    kw = {"scramble": True} if kind == "sobol" else {}
    rng = np.random.default_rng(seed)
    if "rng" in _inspect.signature(cls).parameters:
        return cls(d, rng=rng, **kw)
    return cls(d, seed=rng, **kw)  # pragma: no cover - scipy < 1.15


def _design(cfg: SweepConfig) -> np.ndarray:
    d = len(cfg.axes)
    if cfg.method == "grid":
        grids = np.meshgrid(*[a.grid_values() for a in cfg.axes], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1)
    if cfg.method == "random":
        u = np.random.default_rng(cfg.seed).random((cfg.n_points, d))
    else:
        engine = _qmc_engine(cfg.method, d, cfg.seed)
        with warnings.catch_warnings():  # Sobol: "balance properties ... power of 2"
            warnings.simplefilter("ignore", UserWarning)
            u = engine.random(cfg.n_points)
    return np.stack([a.from_unit(u[:, j]) for j, a in enumerate(cfg.axes)], axis=1)


def _apply(sdoc: dict, axes, values, only: int | None = None) -> dict:
    doc = copy.deepcopy(sdoc)
    for i, (a, v) in enumerate(zip(axes, values)):
        if only is not None and i != only:
            continue
        v = float(v)
        if a.kind == "param":
            cohort = doc.setdefault("cohort", {})
            cohort.setdefault("params", {})[a.name] = v
            covs = cohort.get("covariates")
            if isinstance(covs, dict):
                for k in [k for k in covs if COVARIATES.get(k, k) == a.name]:
                    del covs[k]
            continue
        for t in a.targets:
            entry = _get(doc, t)
            if a.kind == "duration":
                entry["duration"] = f"{v * a.factor!r} h"
            elif a.kind == "dose":
                entry["dose"] = v
            else:
                entry["schedule"] = f"every {v * a.factor!r} h"
    return doc


def _scenario_at(sdoc: dict, axes, values, only: int | None = None) -> Scenario:
    return _scenario_from_doc(_apply(sdoc, axes, values, only))


# -- running blocks --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    block: int
    path: str
    points: np.ndarray
    values: np.ndarray
    axes: tuple
    scenario_doc: dict
    replicates: int
    patients: int
    seed: int
    config_text: str
    config_hash: str
    attrs: dict
    code_hash: str


@dataclass(frozen=True)
class _Done:
    block: int
    n_patients: int
    seconds: float


def _pad(parts: list[np.ndarray]) -> np.ndarray:
    width = max(p.shape[1] for p in parts)
    out = []
    for p in parts:
        if p.shape[1] < width:
            fill = np.nan if p.dtype.kind == "f" else (False if p.dtype.kind == "b" else -1)
            pad = np.full((p.shape[0], width - p.shape[1]), fill, dtype=p.dtype)
            p = np.concatenate([p, pad], axis=1)
        out.append(p)
    return np.concatenate(out, axis=0)


def _simulate_block(task: _Task) -> _Done:
    from .run import run

    t0 = time.perf_counter()
    here = store.code_sha256()
    if here != task.code_hash:  # e.g. an MPI rank on a node with another installation
        raise _BlockFailure(
            "usage", task.block,
            f"the worker on {os.uname().nodename} (pid {os.getpid()}) runs "
            f"{store.code_identity(None, here)}, but the sweep was started by "
            f"{store.code_identity(None, task.code_hash)}; run every worker from the same "
            "installation of pulsehpg")
    pat_parts: list[dict] = []
    vis_parts: list[dict] = []
    tr_parts: list[dict] = []
    units: dict = {}
    codes: dict = {}
    for p, vals in zip(task.points.tolist(), task.values):
        sc = _scenario_at(task.scenario_doc, task.axes, vals)
        for r in range(task.replicates):
            seed = np.random.SeedSequence(task.seed, spawn_key=(p, r))
            res = run(sc, n=task.patients, seed=seed, threads=1)
            t = res.tables(p, r)
            if pat_parts and list(t["patients"]) != list(pat_parts[0]):
                raise RuntimeError(f"point {p}: outcome variables differ from the block's "
                                   "first point")
            pat_parts.append(t["patients"])
            vis_parts.append(t["visits"])
            if t["traces"] is not None:
                tr_parts.append(t["traces"])
            units.update(t["units"])
            codes.update(t["codes"])
            del res
    patients = {k: np.concatenate([x[k] for x in pat_parts]) for k in pat_parts[0]}
    visits = {k: _pad([x[k] for x in vis_parts]) for k in vis_parts[0]}
    traces = None
    if tr_parts:  # load_config made sure every point has the same time axis
        traces = {"time_h": tr_parts[0]["time_h"]}
        traces |= {k: np.concatenate([x[k] for x in tr_parts]) for k in tr_parts[0]
                   if k != "time_h"}
    del pat_parts, vis_parts, tr_parts
    points = {"point": task.points.astype(np.int64)}
    long_names = {}
    for j, a in enumerate(task.axes):
        points[a.column] = np.asarray(task.values[:, j], dtype=float)
        units[f"points/{a.column}"] = a.unit
        long_names[f"points/{a.column}"] = f"{a.name}: {a.label}"
    store.write_block(task.path, config_text=task.config_text, config_hash=task.config_hash,
                      seed=task.seed, kind="block", points=points, patients=patients,
                      visits=visits, traces=traces, units=units, long_names=long_names,
                      codes=codes, attrs=dict(task.attrs, block=task.block), in_memory=True,
                      code_hash=task.code_hash)
    return _Done(task.block, int(patients["point"].shape[0]), time.perf_counter() - t0)


def _run_block(task: _Task) -> _Done:
    """The unit of work sent to an executor: simulate one block and write its file."""
    try:
        return _simulate_block(task)
    except _BlockFailure:
        raise
    except ScenarioError as e:
        raise _BlockFailure("scenario", task.block, str(e),
                            {"path": e.path, "line": e.line, "raw": _raw_message(e)}) from None
    except store.StoreError as e:
        raise _BlockFailure("store", task.block, str(e),
                            {"errno": e.errno, "filename": e.filename}) from None
    except MemoryError:
        advice = ("fewer workers or fewer patients per point (sweep.patients): a block holds "
                  "one point already" if len(task.points) == 1
                  else "a smaller block_size or fewer workers")
        raise _BlockFailure("error", task.block, f"out of memory; use {advice}") from None
    except Exception as e:
        raise _BlockFailure("error", task.block, f"{type(e).__name__}: {e}",
                            {"traceback": traceback.format_exc()}) from None


def _init_worker() -> None:  # pragma: no cover - runs in worker processes
    """Worker processes die with the sweep (e.g. kill -9) instead of finishing their block,
    and leave Ctrl-C to the sweep, which stops them (no traceback from every worker)."""
    import signal

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass


class _InlineExecutor(cf.Executor):
    """Runs each task when it is submitted, in this process (workers=1)."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:
            fut.set_exception(e)
        return fut


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _mpi_pool_class():
    """mpi4py's pool executor, or a SweepUsageError saying how to get it."""
    try:
        from mpi4py.futures import MPIPoolExecutor
    except ImportError as e:
        raise SweepUsageError(
            f"executor 'mpi' needs mpi4py ({e}); install it with pip install 'pulsehpg[mpi]' "
            "(mpi4py and an MPI library from PyPI) and start the sweep under mpiexec or srun, "
            "e.g. mpiexec -n 5 python -m mpi4py.futures -m pulsehpg sweep CONFIG "
            "--executor mpi") from None
    return MPIPoolExecutor


def _mpi_world() -> tuple[int, bool]:
    """(MPI processes, whether this one runs under ``python -m mpi4py.futures``)."""
    try:
        from mpi4py import MPI
        from mpi4py.futures import _core
    except ImportError:  # pragma: no cover - mpi4py without its futures core
        return 1, False
    return MPI.COMM_WORLD.Get_size(), getattr(_core, "SharedPool", None) is not None


def _check_mpi_launch() -> None:
    """Refuse a sweep that mpiexec started on every rank: without ``-m mpi4py.futures``
    each rank runs the whole sweep into the same files (the work repeated, the writes
    racing), instead of rank 0 handing blocks to the others."""
    size, shared = _mpi_world()
    if size > 1 and not shared:
        raise SweepUsageError(
            f"executor 'mpi': this is one of {size} MPI processes that each started the "
            f"sweep, so every one would run all of it; start it through mpi4py.futures, "
            f"which gives rank 0 the sweep and the other ranks its blocks: mpiexec -n {size} "
            f"python -m mpi4py.futures -m pulsehpg sweep CONFIG --executor mpi ...")


def _mpi_workers() -> int | None:
    """The ranks that serve rank 0 under ``python -m mpi4py.futures`` (None otherwise)."""
    size, shared = _mpi_world()
    return size - 1 if size > 1 and shared else None


def _make_executor(executor, workers: int | None):
    """(executor, owned, max tasks in flight)."""
    if isinstance(executor, cf.Executor):
        return executor, False, 2 * (workers or default_workers())
    if executor in (None, "process"):
        n = workers or default_workers()
        if n == 1:
            return _InlineExecutor(), True, 1
        ex = cf.ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_init_worker)
        return ex, True, 2 * n
    if executor == "mpi":
        MPIPoolExecutor = _mpi_pool_class()
        ex = MPIPoolExecutor(max_workers=workers) if workers else MPIPoolExecutor()
        n = workers or _mpi_workers() or getattr(ex, "_max_workers", None) or default_workers()
        return ex, True, 2 * max(1, int(n))
    raise SweepUsageError(f"executor: expected 'process', 'mpi' or a concurrent.futures.Executor,"
                          f" got {executor!r}")


def _how_workers_died(ex) -> str:
    """How the worker processes of a broken ProcessPoolExecutor ended, if one was killed by
    a signal other than the pool's own SIGTERM (e.g. the out-of-memory killer's SIGKILL)."""
    import signal

    procs = list((getattr(ex, "_processes", None) or {}).values())
    for _ in range(20):  # exit statuses appear once the processes are reaped
        codes = [(p.pid, p.exitcode) for p in procs]
        dead = [(pid, c) for pid, c in codes if c is not None and c < 0
                and c != -signal.SIGTERM]
        if dead or all(c is not None for _, c in codes):
            break
        time.sleep(0.05)
    parts = []
    for pid, c in dead:
        try:
            name = signal.Signals(-c).name
        except ValueError:
            name = f"signal {-c}"
        hint = (" (on Linux usually the out-of-memory killer, see dmesg: use a smaller "
                "block_size or fewer --workers)" if -c == signal.SIGKILL else "")
        parts.append(f"worker {pid} was killed by {name}{hint}")
    return "; ".join(parts)


def _stop_workers(ex) -> None:
    """Terminate the worker processes of a ProcessPoolExecutor (their blocks are lost, and
    their temporary files are removed by --resume)."""
    for p in list((getattr(ex, "_processes", None) or {}).values()):
        try:
            p.terminate()
        except Exception:  # already gone
            pass


def _record_failure(f: _BlockFailure, bdir: Path, cfg: SweepConfig, design) -> None:
    """Write ``block-<k>.h5.error.json`` (the error, the block's points and the worker's
    traceback) beside the blocks; the error message then names it."""
    pts = cfg.block_points(f.block)
    points = [{"point": p, **{a.name: f"{design[p, j]:g} {a.unit}"
                              for j, a in enumerate(cfg.axes)}} for p in pts]
    path = bdir / (block_name(f.block, cfg.n_blocks) + ".error.json")
    try:
        store.write_json(path, {"block": f.block, "error": f.message, "points": points,
                                "code_sha256": store.code_sha256(),
                                "traceback": f.info.get("traceback", "")})
    except store.StoreError:
        return
    where = "; ".join(f"point {q['point']}: " + ", ".join(f"{k} = {v}" for k, v in q.items()
                                                          if k != "point")
                      for q in points[:2]) + ("; ..." if len(points) > 2 else "")
    f.message += f" ({where}; traceback in {path})"


def _failure_to_exception(f: _BlockFailure) -> Exception:
    if f.kind == "usage":
        return SweepUsageError(f"block {f.block}: {f.message}")
    if f.kind == "scenario":
        return ScenarioError(f.info.get("path", ""), f"block {f.block}: {f.info.get('raw')}",
                             f.info.get("line"))
    if f.kind == "store":
        return store.StoreError(f"block {f.block}: {f.message}", path=f.info.get("filename"),
                                errno=f.info.get("errno"))
    err = SweepError(f"block {f.block} failed: {f.message}")
    err.detail = f.info.get("traceback", "")
    return err


# -- progress ----------------------------------------------------------------------------------
def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress line on a stream: redrawn in place at most twice a second on a terminal,
    otherwise a new line at most every ``log_every`` seconds (and at the end)."""

    def __init__(self, total_patients: int, total_blocks: int, *, stream=None,
                 enabled: bool = True, log_every: float = 30.0, clock=time.monotonic,
                 label: str = "sweep"):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        try:
            self.tty = bool(self.stream.isatty())
        except Exception:
            self.tty = False
        self.gap = 0.5 if self.tty else log_every
        self.total, self.total_blocks = total_patients, total_blocks
        self.patients = self.blocks = self.failed = 0
        self.clock = clock
        self.start = clock()
        self.last = -math.inf
        self.label = label
        self.width = 0

    def line(self) -> str:
        el = self.clock() - self.start
        pct = 100.0 * self.patients / self.total if self.total else 100.0
        rate = self.patients / el if el > 0 and self.patients else 0.0
        eta = _clock((self.total - self.patients) / rate) if rate > 0 else "?"
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (f"{self.label}: {self.patients}/{self.total} patients ({pct:.0f} %), blocks "
                f"{self.blocks}/{self.total_blocks}{failed}, {rate:.3g} patients/s, elapsed "
                f"{_clock(el)}, ETA {eta}")

    def add(self, patients: int, failed: bool = False) -> None:
        self.patients += patients
        self.blocks += 1
        self.failed += failed
        self.show(force=self.tty or self.blocks == self.total_blocks)

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self.last < self.gap:
            return
        if not self.tty and self.last == -math.inf and self.patients == 0 and not force:
            self.last = now  # non-TTY: the first line comes after log_every seconds
            return
        self.last = now
        text = self.line()
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:  # a log file: say when, for reading it later
            self.stream.write(f"{text} [{time.strftime('%Y-%m-%d %H:%M:%S')}]\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


# -- sweep -------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep did. ``out`` is the merged file (not written by a shard: ``merged`` is
    None then)."""

    out: Path | None
    blocks_dir: Path
    config: SweepConfig = field(repr=False)
    shard: tuple[int, int] | None
    blocks: list[int]  # the blocks of this run (all, or the shard's)
    blocks_run: int
    blocks_skipped: int
    patients_run: int
    seconds: float
    removed_temps: list[Path] = field(default_factory=list)
    merged: store.MergeResult | None = None

    @property
    def patients_per_second(self) -> float:
        return self.patients_run / self.seconds if self.seconds > 0 else float("nan")


def blocks_dir(out) -> Path:
    """The folder of a sweep's block files: ``<out>.blocks``."""
    out = Path(out)
    return out.with_name(out.name + ".blocks")


def block_name(k: int, n_blocks: int) -> str:
    return f"block-{k:0{max(5, len(str(n_blocks - 1)))}d}.h5"


def parse_shard(spec, env=None) -> tuple[int, int] | None:
    """``'K/N'`` (or ``(K, N)``) -> (K, N); ``'/N'`` takes K from SLURM_ARRAY_TASK_ID."""
    if spec is None:
        return None
    env = os.environ if env is None else env
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        k, n = spec
    else:
        m = re.fullmatch(r"\s*(\d*)\s*/\s*(\d+)\s*", str(spec))
        if not m:
            raise SweepUsageError(f"shard: expected K/N (run blocks k with k % N == K), or /N to "
                                  f"take K from SLURM_ARRAY_TASK_ID, got {spec!r}")
        n = int(m.group(2))
        if m.group(1):
            k = int(m.group(1))
        else:
            task = env.get("SLURM_ARRAY_TASK_ID")
            if task is None:
                raise SweepUsageError(
                    f"shard {spec!r}: K is not given and SLURM_ARRAY_TASK_ID is not set (this is "
                    "not a Slurm array task); write --shard K/N")
            if not task.strip().isdigit():
                raise SweepUsageError(
                    f"shard {spec!r}: K is not given and SLURM_ARRAY_TASK_ID is {task!r}, not "
                    f"a whole number; write --shard K/N")
            k = int(task)
    if isinstance(k, bool) or isinstance(n, bool) or not isinstance(k, (int, np.integer)) \
            or not isinstance(n, (int, np.integer)) or n < 1:
        raise SweepUsageError(f"shard: N must be a positive whole number, got {spec!r}")
    if not 0 <= k < n:
        raise SweepUsageError(f"shard {k}/{n}: K must be in 0..{n - 1} (with Slurm: submit "
                              f"--array=0-{n - 1} and pass N = {n})")
    return int(k), int(n)


def _manifest(cfg: SweepConfig, out: Path) -> dict:
    from . import __version__

    return {"format": MANIFEST_FORMAT, "format_version": 1, "config_sha256": cfg.sha256,
            "seed": str(cfg.seed), "n_points": cfg.n_points, "n_blocks": cfg.n_blocks,
            "block_size": cfg.block_size, "patients_per_point": cfg.patients_per_point,
            "blocks": [block_name(0, cfg.n_blocks), block_name(cfg.n_blocks - 1, cfg.n_blocks)],
            "merged_file": out.name, "pulsehpg_version": __version__,
            "code_sha256": store.code_sha256(), "config": cfg.text}


def _as_config(config, patients, seed) -> SweepConfig:
    if isinstance(config, SweepConfig):
        if patients is not None or seed is not None:
            return parse_config(config.text, config.source, Path.cwd(), patients=patients,
                                seed=seed)
        return config
    if isinstance(config, dict):
        try:
            return parse_config(dumps_toml(config), None, Path.cwd(), patients=patients,
                                seed=seed)
        except ScenarioError as e:  # its lines are of a TOML text the caller never saw
            raise ScenarioError(e.path, e.message) from None
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, patients=patients, seed=seed)
    raise TypeError(f"config: expected a path, a dict or a SweepConfig, got "
                    f"{type(config).__name__}")


def _expected(cfg: SweepConfig, bdir: Path) -> list[store.ExpectedBlock]:
    out = []
    for k in range(cfg.n_blocks):
        n = len(cfg.block_points(k))
        out.append(store.ExpectedBlock(bdir / block_name(k, cfg.n_blocks), n,
                                       n * cfg.patients_per_point))
    return out


def sweep(config, out=None, *, workers: int | None = None, executor="process", shard=None,
          resume: bool = False, consolidate: bool = False, patients: int | None = None,
          seed: int | None = None, progress: bool = False, stream=None,
          keep_going: bool = False) -> SweepResult:
    """Run a sweep and (unless sharded) merge its blocks into ``out``.

    config: a sweep config file, its TOML as a dict, or a :class:`SweepConfig`.
    out: the merged results file (default ``<name>.h5``); blocks go to ``<out>.blocks/``.
    workers: processes (default: one per CPU core available); 1 runs in this process.
    executor: 'process' (local processes), 'mpi' (mpi4py.futures.MPIPoolExecutor, under
        mpiexec/srun) or any concurrent.futures.Executor (not shut down here).
    shard: (K, N) or 'K/N': run only blocks k with k % N == K ('/N': K from
        SLURM_ARRAY_TASK_ID) and do not merge (``merge(out)`` when all shards are done).
    resume: skip blocks whose files are complete and delete stale temporary files; refuses
        a config that changed since the first run. Without it, finished blocks of this sweep
        in ``<out>.blocks`` are an error (nothing is overwritten).
    consolidate: the merged file copies the blocks' rows instead of virtual views onto them.
    patients, seed: override the config's.
    progress: a progress line on ``stream`` (default stderr).
    keep_going: a block that fails (an error in its simulation) does not stop the others;
        when all have run, SweepError names the failed blocks (nothing is merged; the
        finished blocks are kept for resume=True or merge(allow_missing=True)).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers: expected a whole number >= 1 (or None: one per CPU core), "
                         f"got {workers!r}")
    cfg = _as_config(config, patients, seed)
    shard = parse_shard(shard)
    out = Path(out) if out is not None else Path(f"{cfg.name}.h5")
    bdir = blocks_dir(out)
    if executor == "mpi":
        # before anything is written: no folder left behind without mpi4py, or by each rank
        _mpi_pool_class()
        _check_mpi_launch()
    store.check_writable(out)
    store.make_dir(bdir)
    store.check_writable(bdir / MANIFEST, results=False)
    # a second run of the same sweep or shard into the same folder would redo its blocks
    # beside this one: the whole sweep locks sweep.lock exclusively, a shard shares it and
    # locks its own file, so shards run side by side but not beside the whole sweep
    if shard is None:
        who, locks = "this sweep", [("sweep.lock", True)]
    else:
        who = f"this sweep or its shard {shard[0]}/{shard[1]}"
        locks = [("sweep.lock", False), (f"shard-{shard[0]}-of-{shard[1]}.lock", True)]
    with store.folder_lock(bdir, locks, who):
        return _run_sweep(cfg, shard, out, bdir, workers, executor, resume, consolidate,
                          progress, stream, keep_going)


def _run_sweep(cfg: SweepConfig, shard, out: Path, bdir: Path, workers, executor, resume,
               consolidate, progress, stream, keep_going) -> SweepResult:
    mpath = bdir / MANIFEST
    manifest = _manifest(cfg, out)
    if mpath.exists():
        old = store.read_json(mpath)
        if not isinstance(old, dict) or old.get("format") != MANIFEST_FORMAT:
            raise SweepUsageError(f"{mpath} is not a pulsehpg sweep manifest; choose another "
                                  "--out")
        if old.get("config_sha256") != cfg.sha256:
            raise SweepUsageError(
                f"{bdir} holds a sweep with a different config (config_sha256 "
                f"{str(old.get('config_sha256'))[:12]}..., now {cfg.sha256[:12]}...): the config, "
                "its scenario or an override such as --patients changed since the first run, so "
                "its blocks cannot be resumed or merged with new ones. Restore the config, or "
                "choose another --out (or delete the folder to start over)")
        if old.get("code_sha256") != manifest["code_sha256"]:
            then = store.code_identity(old.get("pulsehpg_version"), old.get("code_sha256") or "")
            raise SweepUsageError(
                f"{bdir} holds a sweep started by {then}, this is {store.code_identity()}: "
                "pulsehpg or its compiled core changed since the first run, and blocks of "
                "different code are not mixed. Finish it with the installation that started it, "
                "or choose another --out (or delete the folder to start over)")
    ours = [k for k in range(cfg.n_blocks) if shard is None or k % shard[1] == shard[0]]
    ours_set = set(ours)
    names = {block_name(k, cfg.n_blocks): k for k in range(cfg.n_blocks)}
    removed = []
    if resume:
        removed = store.remove_temps(bdir, lambda final: names.get(final) in ours_set
                                     or (final == MANIFEST and shard is None))
        if shard is None:  # a merge killed half-way leaves OUT.tmp-<pid> beside OUT
            removed += store.remove_temps(out.parent, lambda final: final == out.name)
    finished = [k for k in ours if store.is_complete(bdir / block_name(k, cfg.n_blocks))]
    if finished and not resume:
        raise SweepUsageError(
            f"{bdir} already holds {len(finished)} finished block(s) of this sweep; pass "
            "--resume (resume=True) to finish it, or choose another --out (or delete the "
            "folder to start over)")
    if not mpath.exists():
        try:
            store.write_json(mpath, manifest)
        except store.StoreError:  # another shard may have written it at the same moment
            if not (mpath.exists() and store.read_json(mpath).get("config_sha256")
                    == cfg.sha256):
                raise
    done = set(finished)
    todo = [k for k in ours if k not in done]

    design = cfg.design() if todo else None
    attrs = {"sweep": cfg.name, "scenario": cfg.scenario.name, "method": cfg.method,
             "n_points": cfg.n_points, "n_blocks": cfg.n_blocks, "replicates": cfg.replicates,
             "patients_per_replicate": cfg.patients,
             "axes": [a.name for a in cfg.axes]}
    if shard is not None:  # lets merge name the shards of missing blocks
        attrs["shard"] = f"{shard[0]}/{shard[1]}"

    def task(k: int) -> _Task:
        pts = cfg.block_points(k)
        return _Task(k, str(bdir / block_name(k, cfg.n_blocks)),
                     np.arange(pts.start, pts.stop, dtype=np.int64), design[pts.start:pts.stop],
                     cfg.axes, cfg.scenario_doc, cfg.replicates, cfg.patients, cfg.seed,
                     cfg.text, cfg.sha256, attrs, manifest["code_sha256"])

    total = sum(len(cfg.block_points(k)) for k in todo) * cfg.patients_per_point
    bar = Progress(total, len(todo), stream=stream, enabled=progress and bool(todo))
    t0 = time.perf_counter()
    patients_run = 0
    if todo:
        ex, owned, inflight = _make_executor(executor, workers)
        if progress:
            nw = workers or (default_workers() if executor in (None, "process")
                             else _mpi_workers() if executor == "mpi" else None)
            (stream or sys.stderr).write(
                f"sweep {cfg.name}: {len(todo)} block(s), {total} patients"
                + (f" ({len(finished)} block(s) already done)" if finished else "")
                + (f", shard {shard[0]}/{shard[1]}" if shard else "")
                + (f", {nw} worker(s)" if nw else "") + "\n")
        pending: dict[cf.Future, int] = {}
        failed: list[_BlockFailure] = []
        it = iter(todo)
        clean = False
        previous = _catch_sigterm()
        try:
            while True:
                while len(pending) < inflight:
                    k = next(it, None)
                    if k is None:
                        break
                    pending[ex.submit(_run_block, task(k))] = k
                if not pending:
                    break
                ready, _ = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                for f in ready:
                    pending.pop(f)
                    try:
                        res = f.result()
                    except _BlockFailure as e:
                        if e.kind == "error":  # keep the worker's traceback for the user
                            _record_failure(e, bdir, cfg, design)
                        if not (keep_going and e.kind in ("error", "scenario")):
                            raise _failure_to_exception(e) from None
                        failed.append(e)
                        bar.add(0, failed=True)
                        continue
                    except cf.BrokenExecutor as e:
                        raise SweepError(
                            f"a worker process died ({_how_workers_died(ex) or e}); finished "
                            f"blocks are kept in {bdir}/: rerun with --resume. (Calling "
                            "pulsehpg.sweep from a script? Worker processes import it again: "
                            "put the call under if __name__ == '__main__':)") from None
                    patients_run += res.n_patients
                    bar.add(res.n_patients)
                    store.remove_file(bdir / (block_name(res.block, cfg.n_blocks)
                                              + ".error.json"))
                bar.show()
            clean = True
        except KeyboardInterrupt as e:
            if owned:
                _stop_workers(ex)
            term = isinstance(e, _Terminated)
            err = SweepInterrupted(
                f"{'terminated (SIGTERM)' if term else 'interrupted'} after {patients_run} of "
                f"{total} patients; finished blocks are kept in {bdir}/: rerun with --resume to "
                "finish")
            if term:
                err.exit_status = 143
            raise err from None
        finally:
            _restore_sigterm(previous)
            bar.close()
            if owned:
                ex.shutdown(wait=clean, cancel_futures=True)
    seconds = time.perf_counter() - t0
    if todo and failed:
        first = _failure_to_exception(failed[0])
        raise SweepError(
            f"{len(failed)} of {len(todo)} block(s) failed (blocks "
            f"{', '.join(str(f.block) for f in failed[:20])}{' ...' if len(failed) > 20 else ''}"
            f"), the other {len(todo) - len(failed)} ran ({patients_run} patients) and are kept "
            f"in {bdir}/; first: {first}. Fix the cause and rerun with --resume, or merge "
            f"what there is with `pulsehpg merge {out} --allow-missing`")
    merged = None
    if shard is None:
        previous = _catch_sigterm()
        try:
            merged = store.merge([e.path for e in _expected(cfg, bdir)], out,
                                 consolidate=consolidate, expected=_expected(cfg, bdir))
        except KeyboardInterrupt as e:
            err = SweepInterrupted(
                f"{'terminated (SIGTERM)' if isinstance(e, _Terminated) else 'interrupted'} "
                f"while merging; every block is done in {bdir}/: run `pulsehpg merge {out}"
                + (" --consolidate" if consolidate else "") + "`")
            if isinstance(e, _Terminated):
                err.exit_status = 143
            raise err from None
        finally:
            _restore_sigterm(previous)
    return SweepResult(out, bdir, cfg, shard, ours, len(todo),
                       len(finished), patients_run, seconds, removed, merged)


def merge(out, *, consolidate: bool = False, allow_missing: bool = False) -> store.MergeResult:
    """Merge the blocks in ``<out>.blocks/`` into ``out`` (after a sharded sweep).

    Missing blocks raise :class:`pulsehpg.store.MissingBlocksError` naming them, unless
    allow_missing=True (virtual merge: their rows read as fill values until they appear).
    """
    out = Path(out)
    if out.is_dir() and (out / MANIFEST).is_file():  # given the blocks folder
        bdir = out
        m = store.read_json(bdir / MANIFEST)
        out = bdir.with_name(m.get("merged_file") or bdir.name.removesuffix(".blocks"))
    else:
        bdir = blocks_dir(out)
    mpath = bdir / MANIFEST
    if not mpath.is_file():
        raise SweepUsageError(f"no sweep to merge: {mpath} not found (run `pulsehpg sweep "
                              f"CONFIG --out {out}` first; its blocks go to {bdir}/)")
    m = store.read_json(mpath)
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise SweepUsageError(f"{mpath} is not a pulsehpg sweep manifest")
    n_points, n_blocks = int(m["n_points"]), int(m["n_blocks"])
    bs, per = int(m["block_size"]), int(m["patients_per_point"])
    expected = []
    for k in range(n_blocks):
        n = min(n_points, (k + 1) * bs) - k * bs
        expected.append(store.ExpectedBlock(bdir / block_name(k, n_blocks), n, n * per))
    present = [e.path for e in expected if store.is_complete(e.path)]
    try:
        return store.merge(present, out, consolidate=consolidate, expected=expected,
                           allow_missing=allow_missing)
    except store.MissingBlocksError as e:
        e.out = out  # the merged file (also when given the blocks folder)
        e.blocks = [k for k, b in enumerate(expected) if os.fspath(b.path) in set(e.missing)]
        e.shards = None  # (N, missing K) when the blocks that exist were written by shards of N
        counts = set()
        for path in present[:50]:
            m = re.fullmatch(r"(\d+)/(\d+)", str(store.read_attrs(path).get("shard", "")))
            counts.add(int(m.group(2)) if m else None)
        if len(counts) == 1 and None not in counts:
            n = counts.pop()
            e.shards = (n, sorted({k % n for k in e.blocks}))
        raise
