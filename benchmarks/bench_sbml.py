"""pulsehpg's compiled core against libRoadRunner on the identical exported model.

One script, one run, both engines on the same machine and one core each:

1. Parameter sets: 1,000 eugonadal patients with the registry's between-patient
   variability (a stochastic Cohort's parameters), simulated in deterministic
   mode (regular GnRH pulse train, no random numbers), untreated, observables
   (all 19, or those of ``--observables``) every hour.
2. Accuracy over the benchmark horizon, patient 0: the maximum relative error
   over the observables output and hourly samples (floors of tests/test_reference.py)
   of the core (default ``Numerics`` and ``Numerics.accurate()``) and of
   roadrunner on ``pulsehpg.sbml.to_sbml`` of the same patient (CVODE Adams and
   BDF, a ladder of relative tolerances; absolute tolerance per state 0.01 x
   rtol x the state's natural magnitude) against the SciPy reference
   (``pulsehpg.reference``, DOP853, rtol 1e-10). For each core preset the
   fastest roadrunner setting whose error is no larger is chosen: matched
   accuracy.
3. Timing, one core: the core with ``threads=1`` for 1 patient (the fastest
   of several repeats: a 60-day run of one patient takes milliseconds, and a
   shared machine preempts it) and 1,000 patients (one cohort); roadrunner
   (single-threaded per instance) for 1 patient (the fastest of several
   repeats, the same rule) and, standing in for 1,000
   patients, a smaller number of different parameter sets run one after the
   other on one instance (``setValue`` of every parameter and of the
   equilibrated initial state, from the core's cohort, then ``simulate``); its
   time is reported per patient-year. Equilibration and model loading are not
   timed, for either engine (roadrunner's load and JIT time is printed).
   ``os.getloadavg()`` is printed with every timing: the machine may be shared.

    python benchmarks/bench_sbml.py                 # 60 days per patient (a few minutes)
    python benchmarks/bench_sbml.py --quick         # 20 days, 100 patients, a smaller ladder
    python benchmarks/bench_sbml.py --observables lh,fsh,t_total,e2   # hormones only, both engines

Measures whatever core is installed (``pip install -e .``); needs the sbml extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pulsehpg as ph
from pulsehpg import _core, model
from pulsehpg.cohort import OBSERVABLES, Cohort, Numerics
from pulsehpg.params import REGISTRY
from pulsehpg.reference import run as reference_run
from pulsehpg.sbml import to_sbml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_reference import FLOOR  # the floors the accuracy tests use

YEAR_H = 24 * 365.0
VARYING = [p for p in REGISTRY if p.cv > 0]  # parameters that differ between patients
OBS = list(OBSERVABLES)  # what both engines output (--observables)


def load() -> str:
    return "load " + "/".join(f"{x:.2f}" for x in os.getloadavg())


def parameter_sets(n: int, seed: int = 1) -> dict:
    """Per-patient values (registry units) of the parameters that vary between patients."""
    c = Cohort(n, "eugonadal", seed, equilibrate=False)
    names = [p.name for p in REGISTRY]
    return {p.name: c.params[:, names.index(p.name)].copy() for p in VARYING}


def rel_error(values: np.ndarray, reference: np.ndarray) -> float:
    floor = np.array([FLOOR[o] for o in OBS])
    return float((np.abs(values - reference) / np.maximum(np.abs(reference), floor)).max())


# -- the core --------------------------------------------------------------------------
def core_cohort(params: dict, numerics: Numerics) -> Cohort:
    n = len(next(iter(params.values())))
    return Cohort(n, "eugonadal", deterministic=True, params=params, numerics=numerics,
                  threads=1)


def core_run(c: Cohort, t_end: float) -> tuple[float, np.ndarray]:
    """Seconds for advance_to(t_end) with hourly recording; observables (patients, times, obs)."""
    c.record(every=1.0, observables=OBS)
    t0 = time.perf_counter()
    c.advance_to(t_end)
    dt = time.perf_counter() - t0
    _, tr = c.trace()
    out = np.empty((c.n, tr[OBS[0]].shape[1], len(OBS)))
    for j, o in enumerate(OBS):
        out[:, :, j] = tr[o]
    return dt, out


# -- roadrunner --------------------------------------------------------------------------
class RR:
    """One roadrunner instance on the exported model; any patient of a core cohort."""

    def __init__(self, params0: dict):
        import roadrunner

        self.version = roadrunner.__version__
        text = to_sbml("eugonadal", params0)
        t0 = time.perf_counter()
        self.rr = roadrunner.RoadRunner(text)
        self.load_s = time.perf_counter() - t0
        self.syms = [p.sym for p in REGISTRY if not p.structural]
        self.sym_index = [k for k, p in enumerate(REGISTRY) if not p.structural]
        self.scale = [abs(s.init) for s in model.STATES]
        self.snap = None

    def configure(self, stiff: bool, rtol: float):
        self.stiff, self.rtol = stiff, rtol

    def set_patient(self, snap: dict):
        """The patient of a core snapshot: parameters (core units), state, next pulse."""
        rr = self.rr
        rr.reset()
        for sym, k in zip(self.syms, self.sym_index):
            rr.setValue(sym, float(snap["p"][k]))
        for s, v in zip(model.STATES, snap["y"]):
            rr.setValue(s.name, float(v) if abs(v) >= sys.float_info.min else 0.0)
        rr.setValue("next_pulse", float(snap["next_pulse"]))
        integ = rr.integrator
        integ.stiff = self.stiff
        integ.relative_tolerance = self.rtol
        integ.maximum_num_steps = 1_000_000
        for s, v, sc in zip(model.STATES, snap["y"], self.scale):
            integ.setIndividualTolerance(s.name, 0.01 * self.rtol * max(abs(v), sc, 1.0))

    def simulate(self, t_end: float) -> np.ndarray:
        res = self.rr.simulate(0.0, t_end, round(t_end) + 1,
                               selections=["time", *OBS])
        return np.asarray(res)[1:, 1:]  # hourly samples 1..t_end, as the core records

    def run(self, snap: dict, t_end: float) -> tuple[float, np.ndarray]:
        self.set_patient(snap)
        t0 = time.perf_counter()
        out = self.simulate(t_end)
        return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=60.0, help="days simulated per patient")
    ap.add_argument("--patients", type=int, default=1000, help="the core's large cohort")
    ap.add_argument("--rr-patients", type=int, default=10,
                    help="parameter sets roadrunner runs for the large-cohort row")
    ap.add_argument("--repeats", type=int, default=7,
                    help="repeats of the 1-patient runs (the fastest is reported)")
    ap.add_argument("--observables", default=",".join(OBSERVABLES),
                    help="comma-separated observables both engines output (default all)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    chosen_obs = [o for o in args.observables.split(",") if o]
    unknown = [o for o in chosen_obs if o not in OBSERVABLES]
    if unknown or not chosen_obs:
        ap.error(f"--observables: unknown or none {unknown or chosen_obs}; allowed: "
                 f"{', '.join(OBSERVABLES)}")
    OBS[:] = chosen_obs
    if args.quick:
        args.days, args.patients, args.rr_patients, args.repeats = 20.0, 100, 3, 3
    t_end = args.days * 24.0
    years1 = args.days / 365.0  # patient-years per patient

    import libsbml

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, pulsehpg {ph.__version__}, numpy {np.__version__}, "
          f"libsbml {libsbml.getLibSBMLDottedVersion()}")
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "csrc"],
                               capture_output=True, text=True, check=True).stdout.strip()
        print(f"checkout {head}" + (", csrc/ with uncommitted changes" if dirty else ""))
    except (OSError, subprocess.CalledProcessError):
        pass
    core_so = Path(_core.__file__)
    built = time.strftime("%Y-%m-%d %H:%M", time.gmtime(core_so.stat().st_mtime))
    print(f"core: {core_so.name}, built {built} UTC")
    what = (f"all {len(OBS)} observables" if len(OBS) == len(OBSERVABLES)
            else ", ".join(OBS))
    print(f"eugonadal, deterministic, untreated, {args.days:g} days per patient, {what} "
          f"hourly, one core; {load()}")

    params = parameter_sets(args.patients)
    params0 = {k: v[:1] for k, v in params.items()}
    presets = {"default": Numerics(), "accurate": Numerics.accurate()}

    # -- accuracy: patient 0 against the SciPy reference ------------------------------
    print("\n== accuracy over the horizon, patient 0, max relative error vs the SciPy "
          "reference (DOP853, rtol 1e-10)")
    samples = np.arange(1, round(t_end) + 1, dtype=float)
    core_err, snaps0 = {}, {}
    for name, nm in presets.items():
        c = core_cohort(params0, nm)
        snaps0[name] = c.snapshot(0)
        ref = reference_run(snaps0[name], t_end, samples).outputs[
            :, [OBSERVABLES.index(o) for o in OBS]]
        _, out = core_run(c, t_end)
        core_err[name] = (rel_error(out[0], ref), ref)
        print(f"  pulsehpg core, Numerics {name + ('()' if name == 'accurate' else ''):<12}"
              f" {core_err[name][0]:.1e}", flush=True)
    rr = RR(params0)
    print(f"  (roadrunner {rr.version}: model load and JIT {rr.load_s:.2f} s, not timed below)")
    # half-decade steps, so that the matched setting is not much more accurate than needed
    ladder = [1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 1e-8]
    if args.quick:
        ladder = [1e-4, 1e-5, 1e-6, 1e-7]
    # roadrunner starts from the accurate preset's equilibrium (that is what to_sbml
    # exports); the reference from that same snapshot
    ref_rr = core_err["accurate"][1]
    trials = []
    for stiff in (False, True):
        for rtol in ladder:
            rr.configure(stiff, rtol)
            try:
                dt, out = rr.run(snaps0["accurate"], t_end)
            except RuntimeError as e:
                print(f"  roadrunner {'BDF' if stiff else 'Adams':<5} rtol {rtol:.0e}: failed "
                      f"({str(e).splitlines()[0][:60]})")
                continue
            err = rel_error(out, ref_rr)
            trials.append((dt, err, stiff, rtol))
            print(f"  roadrunner {'BDF' if stiff else 'Adams':<5} rtol {rtol:.0e}       "
                  f" {err:.1e}   ({dt:.2f} s, {load()})", flush=True)
    chosen = {}
    for name in presets:
        ok = [t for t in trials if t[1] <= core_err[name][0]]
        if ok:
            dt, err, stiff, rtol = min(ok)
            chosen[name] = (stiff, rtol, err)
            print(f"  matched to the core's {name}: roadrunner {'BDF' if stiff else 'Adams'} "
                  f"rtol {rtol:.0e} (error {err:.1e} <= {core_err[name][0]:.1e})")
        else:
            print(f"  matched to the core's {name}: no roadrunner setting is as accurate")

    # -- timing -----------------------------------------------------------------------
    print("\n== timing, one core")
    rows = []  # (preset, engine, setting, patients, simulated, ms per patient-year)
    for name, nm in presets.items():
        if name not in chosen:
            continue
        stiff, rtol, _ = chosen[name]
        setting_core = f"Numerics{'.accurate()' if name == 'accurate' else '()'}, threads=1"
        # core, 1 patient: fastest of repeats (a new cohort each time, not timed)
        times = []
        for _ in range(args.repeats):
            dt, _ = core_run(core_cohort(params0, nm), t_end)
            times.append(dt)
        ms = min(times) / years1 * 1e3
        rows.append((name, "pulsehpg core", setting_core, "1", "1", ms))
        print(f"  core {name}, 1 patient, {args.days:g} days, {args.repeats} repeats: fastest "
              f"{min(times) * 1e3:.1f} ms, median {statistics.median(times) * 1e3:.1f} ms; "
              f"{ms:.1f} ms/patient-year, {load()}", flush=True)
        # core, the large cohort; the patients roadrunner runs too, and their starts
        c = core_cohort(params, nm)
        k = np.linspace(0, args.patients - 1, args.rr_patients).round().astype(int)
        starts = [c.snapshot(int(i)) for i in k]
        dt, out = core_run(c, t_end)
        core_k = out[k]
        del out, c
        ms = dt / (args.patients * years1) * 1e3
        rows.append((name, "pulsehpg core", setting_core, f"{args.patients:,}",
                     f"{args.patients:,}", ms))
        print(f"  core {name}, {args.patients} patients: {dt:.2f} s, {ms:.1f} ms/patient-year, "
              f"{load()}", flush=True)
        # roadrunner, 1 patient: fastest of repeats
        rr.configure(stiff, rtol)
        setting_rr = f"CVODE {'BDF' if stiff else 'Adams'}, rtol {rtol:.0e}"
        times = [rr.run(snaps0["accurate"], t_end)[0] for _ in range(args.repeats)]
        ms = min(times) / years1 * 1e3
        rows.append((name, "libRoadRunner", setting_rr, "1", "1", ms))
        print(f"  roadrunner {name}, 1 patient, {args.days:g} days, {args.repeats} repeats: "
              f"fastest {min(times) * 1e3:.0f} ms, median {statistics.median(times) * 1e3:.0f} ms;"
              f" {ms:.0f} ms/patient-year, {load()}", flush=True)
        # roadrunner, different parameter sets one after the other, against the core's
        # trajectories of the same patients (a check that setValue gave the right patient)
        total, worst = 0.0, 0.0
        for j, snap in enumerate(starts):
            dt, out_rr = rr.run(snap, t_end)
            total += dt
            worst = max(worst, rel_error(out_rr, core_k[j]))
        ms = total / (len(k) * years1) * 1e3
        rows.append((name, "libRoadRunner", setting_rr, f"{args.patients:,}",
                     f"{len(k)} (per patient-year)", ms))
        print(f"  roadrunner {name}, {len(k)} parameter sets of the {args.patients}: "
              f"{total:.2f} s, {ms:.0f} ms/patient-year; largest difference from the core's "
              f"trajectories of the same patients {worst:.1e}; {load()}", flush=True)

    # -- table ------------------------------------------------------------------------
    print(f"\n{'accuracy':<9} {'engine':<14} {'setting':<34} {'patients':>8} "
          f"{'simulated':>22} {'ms/pt-year':>11} {'ratio':>7}")
    core_ms = {(r[0], r[3]): r[5] for r in rows if r[1] == "pulsehpg core"}
    for preset, engine, setting, n, simulated, ms in rows:
        ratio = ms / core_ms[(preset, n)]
        print(f"{preset:<9} {engine:<14} {setting:<34} {n:>8} {simulated:>22} {ms:>11.1f} "
              f"{ratio:>6.0f}x")
    print("ratio: ms per patient-year over the core's at the same accuracy and patient count; "
          f"{load()}")


if __name__ == "__main__":
    main()
