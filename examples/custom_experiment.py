"""Two ways to run your own experiment with pulsehpg.

(a) Attach a Python rule to a phase of a shipped scenario: in the clomiphene scenario,
    men whose total testosterone is still below 400 ng/dL after 3 weeks of clomiphene
    get hCG 1500 IU twice weekly added.
(b) Add a SimPy process to a scenario's regimen (processes=): a research protocol draws
    extra blood on days 2, 5 and 10, between the scenario's own visits.
(c) Drive a Cohort from your own SimPy environment: a pharmacy process gives hCG twice
    weekly and a clinic process draws blood weekly, both on one clock.

Usage: python examples/custom_experiment.py [N]   (N patients, default 100)
"""

import sys
from pathlib import Path

import numpy as np
import simpy

import pulsehpg
from pulsehpg.run import run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
SCENARIO = Path(__file__).with_name("clomiphene-hypogonadism.toml")


# --- (a) a Python rule on a shipped scenario ------------------------------------------------
class AddHcgForNonResponders:
    """Called at every visit of the 'clomiphene' phase with that visit's labs.

    Returns (action, mask) pairs; an action is a dict as in a scenario rule's 'then'.
    A Python rule is called at every visit, so it remembers whom it treated.
    """

    def __init__(self, threshold=400.0, after_days=21):
        self.threshold, self.after_days = threshold, after_days
        self.treated = None

    def __call__(self, visit):
        if self.treated is None:
            self.treated = np.zeros(visit.seen.size, dtype=bool)
        if visit.days_in_phase < self.after_days:
            return []
        low = visit.seen & (visit.labs["t_total"] < self.threshold) & ~self.treated
        self.treated |= low  # (labs of patients not seen are NaN: comparisons are False)
        return [({"action": "add_drug", "drug": "hcg", "dose": 1500,
                  "schedule": "twice weekly"}, low)]


plain = run(SCENARIO, n=N)
rule = AddHcgForNonResponders()
ruled = run(SCENARIO, n=N, rules={"clomiphene": [rule]})

print(f"(a) {SCENARIO.name}, {N} patients")
print(f"    median total T at 6 weeks, clomiphene only:       "
      f"{np.median(plain.outcomes['end_t_total']):.0f} ng/dL")
print(f"    median total T at 6 weeks, with the hCG rule:     "
      f"{np.median(ruled.outcomes['end_t_total']):.0f} ng/dL")
print(f"    hCG added for {rule.treated.sum()} of {N}; below 400 ng/dL at 6 weeks: "
      f"{np.mean(plain.outcomes['end_t_total'] < 400):.0%} -> "
      f"{np.mean(ruled.outcomes['end_t_total'] < 400):.0%}")


# --- (b) a SimPy process beside a scenario's regimen -------------------------------------------
def research_draws(regimen, days=(2, 5, 10)):
    """Extra blood draws on the regimen's clock; they are logged with the visits."""
    for day in days:
        yield regimen.env.timeout(day * 24.0 - regimen.env.now)
        regimen.visit(regimen.active, ["lh", "t_total"])


drawn = run(SCENARIO, n=N, processes=[research_draws])
visits = drawn.visits
print(f"(b) {SCENARIO.name} with extra draws on days 2, 5 and 10 (processes=)")
for day in (2, 5, 10):
    at = np.isclose(visits["time_h"], day * 24.0)
    print(f"    day {day:2d}: median LH {np.nanmedian(visits['lh'][at]):5.2f} IU/L, "
          f"median T {np.nanmedian(visits['t_total'][at]):4.0f} ng/dL")


# --- (c) a Cohort driven by your own SimPy processes ----------------------------------------
env = simpy.Environment()
cohort = pulsehpg.Cohort(N, phenotype="mild_secondary_hypogonadism", seed=7)
labs = []


def pharmacy(env, cohort, weeks=4):
    """hCG 1500 IU on Mondays and Thursdays."""
    for week in range(weeks):
        for day in (0, 3):
            yield env.timeout(week * 168.0 + day * 24.0 - env.now)
            cohort.advance_to(env.now)
            cohort.dose("hcg", 1500.0)


def clinic(env, cohort, weeks=4):
    """A blood draw every 7 days, before that day's dose (visits first)."""
    for week in range(weeks + 1):
        yield env.timeout(week * 168.0 - env.now)
        cohort.advance_to(env.now)
        obs = cohort.observe()
        labs.append((env.now / 24.0, np.median(obs["t_total"]), np.median(obs["lh"])))


env.process(clinic(env, cohort))  # at equal times the clinic goes first: its timeout
env.process(pharmacy(env, cohort))  # for a day was always scheduled before the pharmacy's
env.run(until=4 * 168.0 + 1.0)

print(f"(c) hCG 1500 IU twice weekly, {N} patients (own SimPy processes)")
for day, t_total, lh in labs:
    print(f"    day {day:4.0f}: median T {t_total:5.0f} ng/dL, median LH {lh:5.2f} IU/L")
