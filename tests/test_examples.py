"""The shipped examples run: every scenario in examples/*.toml at n = 10, and the
custom-experiment script (a Python rule on a scenario; a Cohort driven by SimPy)."""

import glob
import os
import tomllib
import subprocess
import sys

import numpy as np
import pytest

from pulsehpg.run import run

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _is_scenario(path):  # examples/ also holds sweep configs ([sweep] over a scenario)
    with open(path, "rb") as f:
        return "sweep" not in tomllib.load(f)


EXAMPLES = [p for p in sorted(glob.glob(os.path.join(ROOT, "examples", "*.toml")))
            if _is_scenario(p)]


# 1-3 years of follow-up: 6-12 s each at n = 10 with the core's 8-min largest step
LONG = {"trt-recovery.toml", "hcg-after-trt.toml", "serm-then-gonadorelin.toml"}


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in LONG else p
    for p in EXAMPLES], ids=os.path.basename)
def test_example_scenario_runs(path):
    res = run(path, n=10)
    sc, o = res.scenario, res.outcomes
    assert res.cohort.n == 10
    assert res.regimen.horizon == pytest.approx(sc.duration)
    assert res.cohort.t == pytest.approx(sc.duration)
    for k, v in o.items():
        assert v.shape == (10,), k
        if k.startswith("event_"):
            days = o["days_to_" + k[len("event_"):]]
            assert np.all(np.isfinite(days[v])) and np.all(days[v] >= 0), k
        if k.startswith("end_"):
            assert np.all(np.isfinite(v)), k
    seen = np.isfinite(res.visits["time_h"])
    assert seen.any(axis=1).all()  # every patient had visits
    assert np.all(np.isfinite(res.visits["lh"][seen]) | np.isnan(res.visits["lh"][seen]))
    text = res.summary()
    assert sc.name in text and all(p.name in text for p in sc.phases)


def test_custom_experiment_script():
    script = os.path.join(ROOT, "examples", "custom_experiment.py")
    out = subprocess.run([sys.executable, script, "5"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "(a) clomiphene-hypogonadism.toml, 5 patients"
    assert any(ln.startswith("    hCG added for ") for ln in lines)
    assert any(ln.startswith("(b) ") and "(processes=)" in ln for ln in lines)
    assert "(c) hCG 1500 IU twice weekly, 5 patients (own SimPy processes)" in lines
    days = [ln for ln in lines if ln.lstrip().startswith("day ")]
    # (b): the process's three draws found in the visit log (a NaN median would print nan)
    assert len(days) == 3 + 5 and "ng/dL" in days[-1]
    assert not any("nan" in ln for ln in days)
