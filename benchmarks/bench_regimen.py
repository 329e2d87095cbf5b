"""Cost of the SimPy regimen layer on top of the core.

A 1,000-patient cohort over 18 months with weekly testosterone dosing and monthly
visits (all labs and a semen analysis), run (a) through a scenario and
pulsehpg.run, and (b) by calling the core directly with the same doses and no
visits. Same seed, same patients.

    python benchmarks/bench_regimen.py [--patients 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import pulsehpg as ph
from pulsehpg.scenario import parse_scenario

SCENARIO = """
name = "bench-regimen"
[cohort]
n = {n}
seed = 7
[[phase]]
name = "trt"
duration = "78 weeks"
[[phase.drug]]
name = "testosterone_enanthate"
dose = 200
schedule = "weekly"
[[phase.visit]]
every = "4 weeks"
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    n, weeks = args.patients, 78

    t0 = time.perf_counter()
    cohort = ph.Cohort(n, seed=7, threads=args.threads)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(weeks):
        cohort.dose("testosterone_enanthate", 200.0)
        cohort.advance_to((k + 1) * 168.0)
    t_core = time.perf_counter() - t0

    sc = parse_scenario(SCENARIO.format(n=n))
    t0 = time.perf_counter()
    ph.run(sc, threads=args.threads)
    t_run = time.perf_counter() - t0 - t_build  # run() builds its cohort too

    print(f"{n} patients, {weeks} weeks, weekly doses, visits every 4 weeks, "
          f"{args.threads} thread(s)")
    print(f"  core alone (doses only)        {t_core:8.2f} s")
    print(f"  scenario through the regimen   {t_run:8.2f} s  (cohort build {t_build:.2f} s "
          f"subtracted)")
    print(f"  regimen overhead               {100 * (t_run / t_core - 1):8.1f} %")


if __name__ == "__main__":
    main()
