"""Run a scenario: build its cohort, drive the regimen, collect outcomes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from .cohort import UNITS, Cohort, patient_keys
from .outcomes import SPERM_THRESHOLDS, fraction_by, kaplan_meier, patient_outcomes
from .params import REGISTRY
from .regimen import LAB_VARIABLES, RegimenRun
from .scenario import Distribution, Scenario, load_scenario

__all__ = ["run", "RunResult", "build_cohort"]

_INDEX = {p.name: i for i, p in enumerate(REGISTRY)}
_COVARIATE_STREAM = 2


def _draw(dist: Distribution, z: np.ndarray, u: np.ndarray) -> np.ndarray:
    if dist.kind == "fixed":
        v = np.full(z.shape, dist.a)
    elif dist.kind == "uniform":
        v = dist.a + (dist.b - dist.a) * u
    elif dist.kind == "normal":
        v = dist.a + dist.b * z
    else:
        v = dist.a * np.exp(np.sqrt(np.log1p(dist.b**2)) * z)
    return np.clip(v, dist.low, dist.high)


def build_cohort(scenario: Scenario, n: int | None = None, seed=None, *, patients=None,
                 threads: int = 1) -> Cohort:
    """The scenario's cohort: phenotype, parameter overrides, covariate distributions."""
    spec = scenario.cohort
    if patients is None:
        patients = np.arange(spec.n if n is None else n)
    seed = spec.seed if seed is None else seed
    overrides = dict(spec.params)
    if spec.covariates:
        keys = patient_keys(seed, patients)
        z = _core.normals(keys, len(REGISTRY), _COVARIATE_STREAM)
        u = _core.uniforms(keys, len(REGISTRY), _COVARIATE_STREAM + 1)
        for name, dist in spec.covariates.items():
            k = _INDEX[name]
            overrides[name] = _draw(dist, z[:, k], u[:, k])
    return Cohort(patients=patients, phenotype=spec.phenotype, seed=seed, params=overrides,
                  variability=spec.variability or True, deterministic=spec.deterministic,
                  threads=threads)


def _outcome_unit(name: str) -> str:
    if name.startswith("days_to_") or name == "follow_up_days":
        return "day"
    if name.endswith("_h"):
        return "h"
    if name.startswith(("event_", "rule_")):
        return "1"
    for prefix in ("nadir_", "peak_", "end_", "baseline_"):
        if name.startswith(prefix):
            return UNITS.get(name[len(prefix):], "1")
    return "1"


@dataclass
class RunResult:
    scenario: Scenario
    cohort: Cohort
    regimen: RegimenRun
    outcomes: dict[str, np.ndarray]
    seed: int = 0

    @property
    def visits(self) -> dict[str, np.ndarray]:
        r = self.regimen
        # the visit log grows by doubling: keep the columns some patient used (at least
        # one, so that every run has the same variables)
        k = max(1, int(r.visit_count.max(initial=0)))
        out = {"time_h": r.visit_time[:, :k], "phase": r.visit_phase[:, :k].astype(np.int32)}
        out.update({name: v[:, :k] for name, v in r.visit_labs.items()})
        return out

    def tables(self, point: int = 0, replicate: int = 0) -> dict:
        """Arrays for :func:`pulsehpg.store.write_block` (patients, visits, units, codes)."""
        n = self.cohort.n
        patients = {"point": np.full(n, point, dtype=np.int64),
                    "replicate": np.full(n, replicate, dtype=np.int64),
                    "patient": self.cohort.patients.astype(np.int64)}
        patients.update(self.outcomes)
        units = {f"patients/{k}": _outcome_unit(k) for k in self.outcomes}
        units.update({f"visits/{k}": UNITS.get(k, "1") for k in LAB_VARIABLES})
        codes = {"visits/phase": {i: p.name for i, p in enumerate(self.scenario.phases)}
                 | {-1: "none"}}
        traces = None
        if self.scenario.output.traces is not None:
            t, tr = self.cohort.trace()
            traces = {"time_h": t} | tr
            units.update({f"traces/{k}": UNITS[k] for k in tr})
        return {"patients": patients, "visits": self.visits, "traces": traces, "units": units,
                "codes": codes}

    def save(self, path, *, kind: str = "run"):
        """Write the results to an HDF5 file (pulsehpg.store layout) and return its path.

        ``kind`` is the file's kind attribute: 'run' (default) for one scenario, 'block'
        for one block of a sweep. An existing file is replaced only if it is pulsehpg
        results."""
        from . import store

        t = self.tables()
        return store.write_block(
            path, config_text=self.scenario.text, seed=int(self.seed), kind=kind,
            points={"point": np.array([0], dtype=np.int64)}, patients=t["patients"],
            visits=t["visits"], traces=t["traces"], units=t["units"], codes=t["codes"],
            attrs={"scenario": self.scenario.name, "phenotype": self.scenario.cohort.phenotype,
                   "n_patients": int(self.cohort.n)})

    def recovery(self, threshold: float = 20.0):
        """Kaplan-Meier (days, fraction) of time to sperm >= threshold M/mL."""
        key = f"sperm_ge_{threshold:g}"
        return kaplan_meier(self.outcomes[f"days_to_{key}"], self.outcomes[f"event_{key}"])

    def summary(self) -> str:
        """The printed summary of ``pulsehpg run``: median labs at each phase's last visit,
        the fraction azoospermic, and Kaplan-Meier recovery of sperm concentration."""
        sc, r = self.scenario, self.regimen
        lines = [f"{sc.name}: {self.cohort.n} patients ({sc.cohort.phenotype}), "
                 f"follow-up {r.horizon / 730.5:.1f} months"]
        if (note := sc.records_note(self.cohort.n)) is not None:
            lines.append(f"  note: {note}")
        head = f"  {'phase':<22}{'seen':>6}{'LH':>7}{'FSH':>7}{'T ng/dL':>9}{'E2':>7}" \
               f"{'sperm':>8}{'azoo':>7}"
        lines.append("  median labs at each patient's last visit of the phase")
        lines.append(head)
        for i, p in enumerate(sc.phases):
            last = _last_visit_values(r, i)
            if last is None:
                lines.append(f"  {p.name:<22}  (no visits in this phase)")
                continue
            seen, vals = last
            semen = vals["sperm_conc"][np.isfinite(vals["sperm_conc"])]
            azoo = f"{np.mean(semen == 0):.2f}" if semen.size else "-"
            med = {k: (f"{np.nanmedian(v):.3g}" if np.isfinite(v).any() else "-")
                   for k, v in vals.items()}
            lines.append(f"  {p.name:<22}{seen:>6}{med['lh']:>7}{med['fsh']:>7}"
                         f"{med['t_total']:>9}{med['e2']:>7}{med['sperm_conc']:>8}{azoo:>7}")
        if not np.isfinite(r.visit_labs["sperm_conc"]).any():
            return "\n".join(lines)
        tz = f"entry into '{sc.time_zero_phase}'" if sc.time_zero_phase else "start"
        if sc.time_zero_offset:
            tz += f" + {sc.time_zero_offset / 24:g} days"
        # a fraction by a time after everyone's follow-up ended would only repeat the last
        follow = self.outcomes["follow_up_days"]
        longest = float(np.nanmax(follow)) if np.isfinite(follow).any() else 0.0
        months = (6, 12, 24)
        lines.append(f"  recovery of sperm concentration (Kaplan-Meier, time zero: {tz}; "
                     f"follow-up after it {longest / 30.4375:.1f} months"
                     + ("; -: past its end)" if months[-1] * 30.4375 > longest else ")"))
        for thr in SPERM_THRESHOLDS[1:]:
            key = f"sperm_ge_{thr:g}"
            t, e = self.outcomes[f"days_to_{key}"], self.outcomes[f"event_{key}"]
            fr = [fraction_by(t, e, m * 30.4375, follow) for m in months]
            by = ["-" if np.isnan(x) else f"{x:.2f}" for x in fr]
            lines.append(f"    >= {thr:>4g} M/mL by 6/12/24 months: " + " / ".join(by))
        return "\n".join(lines)


def _last_visit_values(r: RegimenRun, phase_index: int):
    in_phase = r.visit_phase == phase_index
    has = in_phase.any(axis=1)
    if not has.any():
        return None
    last = in_phase.shape[1] - 1 - np.argmax(in_phase[:, ::-1], axis=1)
    rows = np.flatnonzero(has)
    return int(has.sum()), {k: r.visit_labs[k][rows, last[rows]] for k in LAB_VARIABLES}


def run(scenario, n: int | None = None, seed=None, *, threads: int = 1, rules=None,
        processes=(), patients=None) -> RunResult:
    """Simulate a scenario and return its :class:`RunResult`.

    Parameters
    ----------
    scenario : Scenario or str or Path
        A parsed scenario or the path of a scenario TOML file.
    n : int, optional
        Number of patients (patients 0 .. n-1); default: the file's ``cohort.n``.
    seed : int, optional
        The cohort's seed; default: the file's ``cohort.seed``. A patient's trajectory
        depends only on (seed, patient index).
    threads : int, default 1
        Threads the core uses for the cohort (the results are the same for any number).
    rules : dict, optional
        Python rules by phase name: ``{"phase": [f, ...]}``, each ``f(VisitResult)``
        returning ``[(action, mask), ...]`` (an action is a dict such as a scenario
        rule's ``then`` entry, a mask one bool per patient); evaluated after the
        phase's own rules at each of its visits.
    processes : sequence of callables, optional
        ``f(regimen_run) -> generator``, started as SimPy processes beside the regimen;
        they can use ``.env``, ``.cohort`` (after ``.sync()``) and ``.visit(mask, labs)``.
    patients : array of int, optional
        Run these patient indices instead of ``range(n)`` (e.g. one shard of a cohort).

    See ``examples/custom_experiment.py`` for ``rules`` and ``processes``.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    cohort = build_cohort(scenario, n, seed, patients=patients, threads=threads)
    out = scenario.output
    if out.traces is not None:
        cohort.record(out.traces, observables=out.trace_observables)
    baseline = cohort.observe()["sperm_conc"]
    regimen = RegimenRun(scenario, cohort, rules=rules, processes=processes).run()
    outcomes = patient_outcomes(regimen, cohort.observe(), baseline)
    return RunResult(scenario, cohort, regimen, outcomes,
                     scenario.cohort.seed if seed is None else seed)
