"""Throughput of the compiled core, side by side with the SciPy reference.

Simulated patient-years per second for stochastic cohorts of 1, 100 and 10,000
patients (full model, observables sampled daily; one patient: the fastest of three
runs, as a shared machine preempts a short run), on 1 and 2 threads, and the
reference (solve_ivp, DOP853, rtol 1e-10: the accuracy the core is held to)
on one deterministic patient over 10 days, scaled to a year.

    python benchmarks/bench_core.py            # full table (about 5 minutes)
    python benchmarks/bench_core.py --quick    # small cohorts only
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import pulsehpg as ph
from pulsehpg import _core
from pulsehpg.reference import run as reference_run

YEAR = 24 * 365.0


def core_rate(n: int, threads: int, years: float, repeats: int = 1) -> tuple[float, float, float]:
    """The fastest of `repeats` runs (a shared machine preempts short runs)."""
    best = float("inf")
    for _ in range(repeats):
        c = ph.Cohort(n, seed=1, threads=threads)
        c.record(every="1 day")
        t0 = time.perf_counter()
        c.advance_to(years * YEAR)
        best = min(best, time.perf_counter() - t0)
    return n * years / best, best / (n * years) * 1e3, float(c.n_steps.mean() / years)


def reference_rate(days: float = 10.0) -> tuple[float, float]:
    c = ph.Cohort(1, deterministic=True)
    snap = c.snapshot(0)
    samples = np.arange(1, days + 1) * 24.0
    t0 = time.perf_counter()
    reference_run(snap, days * 24.0, samples)
    dt = time.perf_counter() - t0
    per_year = dt * 365.0 / days
    return 1.0 / per_year, per_year * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [(1, 4.0), (100, 1.0)] if args.quick else [(1, 10.0), (100, 2.0), (10_000, 0.25)]
    lanes = _core.lanes()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, pulsehpg {ph.__version__}, lanes: {lanes}")
    print(f"{'engine':<34}{'patients':>9}{'threads':>8}{'pt-years/s':>12}"
          f"{'ms/pt-year':>12}{'steps/yr':>10}")
    for n, years in sizes:
        for threads in (1, 2):
            if n == 1 and threads == 2:
                continue
            # one patient: the fastest of 3 runs of a third of the time
            rate, ms, steps = (core_rate(n, threads, years / 3, repeats=3) if n == 1
                               else core_rate(n, threads, years))
            print(f"{'core (ETDRK4, stochastic)':<34}{n:>9}{threads:>8}{rate:>12.1f}{ms:>12.2f}"
                  f"{steps:>10.0f}", flush=True)
            if threads == 1 and n > 1 and lanes != "off":  # the same without lanes
                _core.lanes("off")
                rate, ms, steps = core_rate(n, threads, years)
                _core.lanes(lanes)
                print(f"{'core, one patient at a time':<34}{n:>9}{threads:>8}{rate:>12.1f}"
                      f"{ms:>12.2f}{steps:>10.0f}", flush=True)
    rate, ms = reference_rate(3.0 if args.quick else 10.0)
    print(f"{'reference (solve_ivp DOP853 1e-10)':<34}{1:>9}{1:>8}{rate:>12.4f}{ms:>12.0f}"
          f"{'':>10}")


if __name__ == "__main__":
    main()
