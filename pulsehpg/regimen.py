"""Regimens driven by SimPy: phases, doses, clinic visits and protocol rules.

One SimPy environment drives a whole cohort. Patients who are in the same phase
since the same moment form a *group*, run by one SimPy process that gives the
phase's doses and holds its visits; rules fire for subsets of a group (boolean
masks), which can start or stop drugs, change doses, move patients to another
phase (a new group) or end their follow-up. The cohort itself stays one
vectorized object that is advanced to each event time. Decisions live here; the
physiology lives in the core.

Order of events at the same instant (documented, tested):
  1. visits (labs are drawn before any dose at that time: trough levels),
     then the rules that look at them, whose actions take effect at once;
  2. drug stops;
  3. doses and drug starts;
  4. the end of the phase (the next phase then starts at that same time).
Different groups at the same instant are independent (they hold different patients).

A patient has at most one pump per drug: a pump started while another of the same drug
runs replaces it. Changing a pump's dose ('set_dose') changes its next bolus and keeps its
rhythm; changing an infusion's rate takes effect at once.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import simpy

from . import labs as labs_mod
from .cohort import DRUG_NAMES, Cohort
from .labs import LAB_VALUES
from .nonmem import expand_records, infusion_rates
from .scenario import Action, DrugPlan, Phase, Scenario
from .schedule import Schedule

__all__ = ["RegimenRun", "VisitResult", "LAB_VARIABLES"]

LAB_VARIABLES = LAB_VALUES
_VISIT, _STOP, _DOSE, _END = 0, 1, 2, 3


@dataclass
class VisitResult:
    """What a rule sees at a visit: labs of the patients seen (NaN elsewhere)."""

    time: float  # h since the cohort's start
    phase: str
    seen: np.ndarray  # bool mask of patients seen at this visit
    labs: dict[str, np.ndarray]
    days_in_phase: float

    def values(self) -> dict[str, np.ndarray]:
        n = self.seen.size
        v = dict(self.labs)
        v["days_in_phase"] = np.full(n, self.days_in_phase)
        v["weeks_in_phase"] = v["days_in_phase"] / 7.0
        v["months_in_phase"] = v["days_in_phase"] / 30.4375
        v["weeks"] = np.full(n, self.time / 168.0)
        v["months"] = np.full(n, self.time / 730.5)
        return v


@dataclass
class _DrugRun:
    drug: str
    dose: np.ndarray  # per patient
    schedule: Schedule
    mask: np.ndarray
    start: float
    stop: float
    on: np.ndarray | None = None  # pump or infusion running now, per patient


@dataclass
class _Group:
    phase_index: int
    phase: Phase
    t0: float
    mask: np.ndarray
    runs: list = field(default_factory=list)
    hits: dict = field(default_factory=dict)  # rule name -> visits at which it held
    fired: dict = field(default_factory=dict)


class RegimenRun:
    """Run a scenario's regimen on a cohort.

    ``rules`` maps a phase name to Python callables ``f(VisitResult) -> iterable of
    (action, mask)`` evaluated after the phase's own rules at each of its visits
    (an action is a :class:`pulsehpg.scenario.Action` or a dict such as
    ``{'action': 'add_drug', 'drug': 'hcg', 'dose': 1500, 'schedule': 'twice weekly'}``).
    ``processes`` are callables ``f(run) -> generator`` started as SimPy processes;
    they can use ``run.env``, ``run.cohort`` (call ``run.sync()`` before acting) and
    ``run.visit(mask, labs)``.
    """

    def __init__(self, scenario: Scenario, cohort: Cohort, *,
                 rules: dict[str, list[Callable]] | None = None,
                 processes: tuple[Callable, ...] = ()):
        self.scenario, self.cohort = scenario, cohort
        self.env = simpy.Environment()
        n = cohort.n
        self.n = n
        self.active = np.ones(n, dtype=bool)
        self.ended_at = np.full(n, np.nan)
        self.entered = {p.name: np.full(n, np.nan) for p in scenario.phases}
        self.rule_first: dict[str, np.ndarray] = {}
        self.rule_count: dict[str, np.ndarray] = {}
        for p in scenario.phases:
            for r in p.rules:
                self.rule_first[f"{p.name}.{r.name}"] = np.full(n, np.nan)
                self.rule_count[f"{p.name}.{r.name}"] = np.zeros(n, dtype=np.int32)
        self.custom_rules = rules or {}
        names = [p.name for p in scenario.phases]
        for name in self.custom_rules:
            if name not in names:
                raise ValueError(f"rules: unknown phase {name!r}; phases: {', '.join(names)}")
        for name, fs in self.custom_rules.items():
            if callable(fs) or not all(callable(f) for f in fs):
                raise ValueError(f"rules[{name!r}]: expected a list of callables "
                                 f"f(VisitResult) -> [(action, mask), ...], got {fs!r:.80}")
        if callable(processes) or not all(callable(f) for f in processes):
            raise ValueError(f"processes: expected a list of callables f(run) -> generator, "
                             f"got {processes!r:.80}")
        self.processes = processes
        self._infusion = np.zeros((n, len(DRUG_NAMES)))
        self._table_rate = np.zeros((n, len(DRUG_NAMES)))  # of the dose records
        # pump runs per drug that may still run for someone (a new pump replaces them)
        self._pumps: dict[str, list[_DrugRun]] = {}
        self._entry_time = np.full(n, -np.inf)  # phase entries at one instant: loop guard
        self._entries_now = np.zeros(n, dtype=np.int64)
        self._seq = itertools.count()
        # visit log: grows by doubling
        self._cap = 8
        self.visit_count = np.zeros(n, dtype=np.int64)
        self.visit_time = np.full((n, self._cap), np.nan)
        self.visit_phase = np.full((n, self._cap), -1, dtype=np.int32)
        self.visit_labs = {k: np.full((n, self._cap), np.nan) for k in LAB_VARIABLES}
        # outcomes.follow_up, when given, is the horizon (phases may repeat through
        # 'goto' or 'next'); otherwise the phases in order, or the dose table's last event
        self.horizon = (scenario.follow_up if scenario.follow_up is not None
                        else max(scenario.duration, self._records_end()))

    # -- running ---------------------------------------------------------------
    def run(self) -> RegimenRun:
        if self.scenario.phases:
            self.env.process(self._group(0, np.ones(self.n, dtype=bool)))
        if self.scenario.dose_records:
            self.env.process(self._records())
        for f in self.processes:
            self.env.process(f(self))
        # events exactly at the horizon (a last visit) still happen
        self.env.run(until=self.horizon + 1e-6)
        if self.cohort.t < self.horizon:
            self.cohort.advance_to(self.horizon)
        return self

    def sync(self) -> None:
        """Advance the cohort to the environment's clock."""
        if self.env.now > self.cohort.t:
            self.cohort.advance_to(self.env.now)

    def _records_end(self) -> float:
        if not self.scenario.dose_records:
            return 0.0
        events, visits = expand_records(self.scenario.dose_records)
        return max([t for t, *_ in events] + [t for t, _ in visits] + [0.0])

    # -- a phase, for a group of patients ------------------------------------------
    def _group(self, index: int, mask: np.ndarray):
        env, phase = self.env, self.scenario.phases[index]
        self._check_loop(phase, mask)
        g = _Group(index, phase, env.now, mask.copy())
        self.entered[phase.name][g.mask & np.isnan(self.entered[phase.name])] = env.now
        end = g.t0 + phase.duration
        heap: list = []
        for vp in phase.visits:
            for tv in vp.times:
                heapq.heappush(heap, (g.t0 + tv, _VISIT, next(self._seq), "visit", vp.labs))
        for plan in phase.drugs:
            self._start_run(g, heap, plan, g.mask)
        heapq.heappush(heap, (end, _END, next(self._seq), "end", None))
        while heap:
            t, _, _, kind, payload = heapq.heappop(heap)
            if t > env.now:
                yield env.timeout(t - env.now)
            self.sync()
            if not g.mask.any():
                return  # every patient has left this phase (rules)
            members = g.mask & self.active
            if kind == "visit":
                if members.any():
                    self._visit(g, members, payload, heap)
            elif kind == "dose":
                run = payload
                give = run.mask & g.mask & self.active
                if give.any():
                    self.cohort.dose(run.drug, run.dose * give)
                nxt = self._next_dose_time(run, t)
                if nxt is not None:
                    heapq.heappush(heap, (nxt, _DOSE, next(self._seq), "dose", run))
            elif kind == "start":
                self._begin_continuous(payload, payload.mask & g.mask & self.active)
            elif kind == "stop":
                self._end_continuous(payload, payload.mask & g.mask)
                payload.mask[:] = False
            elif kind == "end":
                for run in g.runs:
                    self._end_continuous(run, run.mask & g.mask)
                leaving = g.mask.copy()
                g.mask[:] = False
                self._leave_to_next(index, phase, leaving)
                return

    def _check_loop(self, phase: Phase, mask: np.ndarray):
        """Refuse endless phase changes at one instant ('goto' rules at visits at 0 h)."""
        now = self.env.now
        same = mask & (self._entry_time == now)
        self._entries_now[mask] = np.where(same[mask], self._entries_now[mask] + 1, 1)
        self._entry_time[mask] = now
        looping = mask & (self._entries_now > 10 * len(self.scenario.phases))
        if looping.any():
            raise RuntimeError(
                f"patient(s) {np.flatnonzero(looping)[:5].tolist()} changed phase "
                f"{self._entries_now[looping].max()} times at t = {now:g} h without time "
                f"passing (last: into '{phase.name}'): a loop of 'goto' rules at visits at "
                f"'0 h'; make the conditions exclusive or move the visits")

    def _start_run(self, g: _Group, heap, plan: DrugPlan, mask: np.ndarray, now=None):
        now = self.env.now if now is None else now
        start = now + plan.start
        stop = min(now + plan.stop, g.t0 + g.phase.duration)
        run = _DrugRun(plan.drug, np.full(self.n, plan.dose), plan.schedule, mask.copy(),
                       start, stop, np.zeros(self.n, dtype=bool))
        g.runs.append(run)
        s = plan.schedule
        if s.kind in ("pump", "continuous"):
            heapq.heappush(heap, (start, _DOSE, next(self._seq), "start", run))
            heapq.heappush(heap, (stop, _STOP, next(self._seq), "stop", run))
        else:
            first = self._first_dose_time(run)
            if first is not None:
                heapq.heappush(heap, (first, _DOSE, next(self._seq), "dose", run))

    @staticmethod
    def _first_dose_time(run: _DrugRun):
        s = run.schedule
        if s.kind == "times":
            ts = [run.start + o for o in s.offsets if run.start + o < run.stop]
            return ts[0] if ts else None
        return run.start if run.start < run.stop else None

    @staticmethod
    def _next_dose_time(run: _DrugRun, t: float):
        s = run.schedule
        if s.kind == "once":
            return None
        if s.kind == "times":
            later = [run.start + o for o in s.offsets if run.start + o > t + 1e-9]
        else:
            k = math.floor((t - run.start) / s.period + 1e-9)
            base = run.start + k * s.period
            later = [base + o for o in s.offsets if base + o > t + 1e-9]
            later += [base + s.period + o for o in s.offsets]
        later = [x for x in later if x < run.stop - 1e-9]
        return min(later) if later else None

    def _begin_continuous(self, run: _DrugRun, mask: np.ndarray):
        mask = mask & ~run.on
        if not mask.any():
            return
        run.on |= mask
        if run.schedule.kind == "pump":
            # one pump per drug and patient: a new pump of the same drug replaces the old;
            # runs that no longer run for anyone are dropped (phases may loop many times)
            others = [o for o in self._pumps.get(run.drug, ()) if o is not run and o.on.any()]
            for other in others:
                other.on &= ~mask
            self._pumps[run.drug] = others + [run]
            self.cohort.set_pump(run.drug, run.dose, run.schedule.period, mask=mask)
        else:
            j = DRUG_NAMES.index(run.drug)
            self._infusion[mask, j] += run.dose[mask]
            self.cohort.start_infusion(run.drug, self._infusion[:, j], mask=mask)

    def _end_continuous(self, run: _DrugRun, mask: np.ndarray):
        if run.schedule.kind not in ("pump", "continuous"):
            return
        mask = mask & run.on  # only where it runs: not before its start, not twice
        if not mask.any():
            return
        run.on &= ~mask
        if run.schedule.kind == "pump":
            self.cohort.stop_pump(run.drug, mask=mask)
        else:
            j = DRUG_NAMES.index(run.drug)
            self._infusion[mask, j] = np.maximum(self._infusion[mask, j] - run.dose[mask], 0.0)
            self.cohort.start_infusion(run.drug, self._infusion[:, j], mask=mask)

    def _leave_to_next(self, index: int, phase: Phase, mask: np.ndarray):
        mask = mask & self.active
        if not mask.any():
            return
        names = [p.name for p in self.scenario.phases]
        if phase.next == "end":
            nxt = None
        elif phase.next:
            nxt = names.index(phase.next)
        else:
            nxt = index + 1 if index + 1 < len(names) else None
        if nxt is None:
            self._end_follow_up(mask)
        else:
            self.env.process(self._group(nxt, mask))

    def _end_follow_up(self, mask: np.ndarray):
        self.active[mask] = False
        self.ended_at[mask] = self.env.now

    # -- visits and rules --------------------------------------------------------------
    def visit(self, seen: np.ndarray, tests, phase_index: int = -1) -> dict[str, np.ndarray]:
        """Measure labs now for the patients in ``seen``; log and return them."""
        self.sync()
        obs = self.cohort.observe()
        stamp = int(round(self.env.now * 60))  # noise keyed by (patient, minute of visit)
        measured = labs_mod.measure(obs, self.cohort.params, self.cohort.keys, stamp, tests)
        out = {k: np.full(self.n, np.nan) for k in LAB_VARIABLES}
        for k, v in measured.items():
            out[k][seen] = v[seen]
        self._log_visit(seen, out, phase_index)
        return out

    def _log_visit(self, seen, values, phase_index):
        idx = self.visit_count[seen]
        if idx.size and idx.max() >= self._cap:
            grow = self._cap
            self.visit_time = np.pad(self.visit_time, ((0, 0), (0, grow)), constant_values=np.nan)
            self.visit_phase = np.pad(self.visit_phase, ((0, 0), (0, grow)), constant_values=-1)
            for k in self.visit_labs:
                self.visit_labs[k] = np.pad(self.visit_labs[k], ((0, 0), (0, grow)),
                                            constant_values=np.nan)
            self._cap += grow
        rows = np.flatnonzero(seen)
        self.visit_time[rows, idx] = self.env.now
        self.visit_phase[rows, idx] = phase_index
        for k, v in values.items():
            self.visit_labs[k][rows, idx] = v[rows]
        self.visit_count[seen] += 1

    def _visit(self, g: _Group, seen: np.ndarray, tests, heap):
        labs = self.visit(seen, tests, g.phase_index)
        result = VisitResult(self.env.now, g.phase.name, seen, labs,
                             (self.env.now - g.t0) / 24.0)
        values = result.values()
        for rule in g.phase.rules:
            held = rule.when.evaluate(values) & seen
            hits = g.hits.setdefault(rule.name, np.zeros(self.n, dtype=np.int32))
            hits += held
            fired = g.fired.setdefault(rule.name, np.zeros(self.n, dtype=bool))
            fire = held & (hits >= rule.count) & g.mask & self.active
            if rule.once:
                fire &= ~fired
            if not fire.any():
                continue
            fired |= fire
            key = f"{g.phase.name}.{rule.name}"
            first = self.rule_first[key]
            first[fire & np.isnan(first)] = self.env.now
            self.rule_count[key] += fire
            for action in rule.actions:
                self._apply(g, action, fire, heap)
        for f in self.custom_rules.get(g.phase.name, ()):
            where = f"rules[{g.phase.name!r}]: {getattr(f, '__name__', f)!r}"
            for item in f(result) or ():
                if isinstance(item, dict) or not (isinstance(item, tuple) and len(item) == 2):
                    raise ValueError(f"{where} gave {item!r:.80}; a rule returns (action, "
                                     f"mask) pairs, e.g. [({{'action': 'end'}}, mask)]")
                action, mask = item
                if isinstance(action, dict):
                    action = _action_from_dict(action, [p.name for p in self.scenario.phases])
                mask = np.asarray(mask, dtype=bool)
                if mask.shape != g.mask.shape:
                    raise ValueError(f"{where} gave a mask of shape {mask.shape}; expected one "
                                     f"value per patient, shape {g.mask.shape}")
                m = mask & g.mask & self.active
                if m.any():
                    self._apply(g, action, m, heap)

    def _apply(self, g: _Group, a: Action, fire: np.ndarray, heap):
        if a.kind == "add_drug":
            plan = DrugPlan(a.drug, a.dose, a.schedule)
            self._start_run(g, heap, plan, fire)
        elif a.kind == "stop_drug":
            for run in g.runs:
                if run.drug == a.drug:
                    self._end_continuous(run, run.mask & fire)
                    run.mask &= ~fire
        elif a.kind == "set_dose":
            for run in g.runs:
                if run.drug == a.drug:
                    change = run.mask & fire
                    running = change & run.on  # the others start later at the new dose
                    if run.schedule.kind == "pump" and running.any():
                        # the next bolus is the new dose; the pump keeps its rhythm
                        self.cohort.set_pump_dose(run.drug, a.dose, mask=running)
                    elif run.schedule.kind == "continuous" and running.any():
                        self._end_continuous(run, running)
                        run.dose[change] = a.dose
                        self._begin_continuous(run, running)
                    run.dose[change] = a.dose
        elif a.kind in ("goto", "end"):
            for run in g.runs:
                self._end_continuous(run, run.mask & fire & g.mask)
            g.mask &= ~fire
            if a.kind == "end":
                self._end_follow_up(fire)
            else:
                names = [p.name for p in self.scenario.phases]
                self.env.process(self._group(names.index(a.phase), fire))

    # -- dose records (NONMEM-style tables) -------------------------------------------------
    def _records(self):
        events, visits = expand_records(self.scenario.dose_records)
        timeline = [(t, _VISIT, "visit", p, "", 0.0) for t, p in visits]
        timeline += [(t, _DOSE, k, p, d, v) for t, k, p, d, v in events if k == "dose"]
        # infusions as their total rate per patient and drug (overlaps add up)
        timeline += [(t, _DOSE, "rate", p, d, v) for t, p, d, v in infusion_rates(events)]
        timeline.sort(key=lambda e: (e[0], e[1]))
        for (t, _), items in itertools.groupby(timeline, key=lambda e: (e[0], e[1])):
            items = [i for i in items if i[3] < self.n]
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self.sync()
            if items and items[0][2] == "visit":
                seen = np.zeros(self.n, dtype=bool)
                seen[[i[3] for i in items]] = True
                # the table's own schedule: like its doses, not ended with the phases
                self.visit(seen, labs_mod.LAB_TESTS)
                continue
            for kind, drug in {(i[2], i[4]) for i in items}:
                mine = [i for i in items if i[2] == kind and i[4] == drug]
                if kind == "dose":
                    amount = np.zeros(self.n)
                    for i in mine:
                        amount[i[3]] += i[5]
                    self.cohort.dose(drug, amount)
                    continue
                j = DRUG_NAMES.index(drug)
                mask = np.zeros(self.n, dtype=bool)
                for i in mine:
                    # on top of what the phases infuse, which the table never ends
                    self._infusion[i[3], j] += i[5] - self._table_rate[i[3], j]
                    self._table_rate[i[3], j] = i[5]
                    mask[i[3]] = True
                self._infusion[:, j] = np.maximum(self._infusion[:, j], 0.0)
                self.cohort.start_infusion(drug, self._infusion[:, j], mask=mask)


def _action_from_dict(d: dict, phase_names: list[str]) -> Action:
    from .scenario import _action, _Reader

    return _action(_Reader(""), d, "action", phase_names)
