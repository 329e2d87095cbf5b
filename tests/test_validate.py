"""`pulsehpg validate`: the validation files, the comparison table, the report and figures,
exit statuses (0 all pass, 1 a quantity fails, 2 user errors). Small cohorts: the numbers
themselves are checked at N = 200 by tests/test_physiology.py and
tests/test_validation_regimens.py, which read the same quantities."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pulsehpg import validation
from pulsehpg.cli import cli
from pulsehpg.scenario import ScenarioError

VALIDATION = Path(__file__).resolve().parents[1] / "examples" / "validation"
S4 = VALIDATION / "S4-baseline-pulsatility.toml"
IDS = ("S1", "S4", "S5", "S7", "S8", "S9", "S10", "S12", "S13", "S16")

pytest.importorskip("matplotlib", reason="figures need the results extra: "
                                         "pip install 'pulsehpg[results]'")


def _invoke(*args):
    return CliRunner().invoke(cli, ["validate", *args])


def _table_rows(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.split()[:1] and ln.split()[0] in IDS]


def test_every_scenario_has_a_validation_file():
    specs = [validation.load(f) for f in validation.discover()]
    assert [s.id for s in specs] == list(IDS)
    for s in specs:
        assert s.quantities and s.panels and s.source, s.id
        for q in s.quantities:
            assert q.target and q.source and q.low <= q.high, (s.id, q.id)


def test_every_file_checks():
    runner = CliRunner()
    for f in sorted(VALIDATION.glob("*.toml")):
        res = runner.invoke(cli, ["check", str(f)])
        assert res.exit_code == 0 and ": ok:" in res.output, (f.name, res.output)


@pytest.mark.parametrize("path", sorted(VALIDATION.glob("*.toml")), ids=lambda p: p.name)
def test_every_file_runs_as_a_scenario(path, tmp_path):
    """`pulsehpg run` works on each file (for S5 and S16 it simulates the regimen without
    the [[validation.arm.step]] parameter changes, which only `pulsehpg validate` applies)."""
    out = tmp_path / "r.h5"
    res = CliRunner().invoke(cli, ["run", str(path), "-n", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and "median labs" in res.output


def test_validate_subset_table_report_and_figures(tmp_path):
    out = tmp_path / "report"
    res = _invoke("--only", "S4,s16", "-n", "12", "--out", str(out), "--bootstrap", "50",
                  "--threads", "2")
    assert res.exit_code in (0, 1), res.output
    rows = _table_rows(res.stdout)
    s4, s16 = validation.load(S4), validation.load(VALIDATION / "S16-spermatogenic-lag.toml")
    assert len(rows) == len(s4.quantities) + len(s16.quantities)
    assert [r.split()[0] for r in rows] == ["S4"] * len(s4.quantities) + \
        ["S16"] * len(s16.quantities)
    fails = [r for r in rows if r.rstrip().endswith("FAIL")]
    assert all(r.rstrip().endswith(("pass", "FAIL")) for r in rows)
    assert res.exit_code == (1 if fails else 0)  # 0 only when every quantity passes
    header = res.stdout.splitlines()[0]
    for col in ("scenario", "quantity", "target (source)", "accepted", "simulated", "95 % CI",
                "result"):
        assert col in header
    assert "Travison 2017" in res.stdout and "Misell 2006" in res.stdout
    assert "quantities pass" in res.stdout
    assert "S4 Baseline pulsatility" in res.stderr  # progress goes to stderr
    report = (out / "report.md").read_text()
    assert "| scenario | quantity |" in report and "## S4: " in report and "## S16: " in report
    assert "![S4](S4.png)" in report and "![S16](S16.png)" in report
    for sid in ("S4", "S16"):
        png = (out / f"{sid}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_without_matplotlib_the_report_has_no_figures(tmp_path):
    """The table and the report need only the core install; figures need the results extra,
    and their absence is said, not a traceback."""
    out = tmp_path / "r"
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # every matplotlib import fails
            "from pulsehpg.cli import main\n"
            f"sys.argv = ['pulsehpg', 'validate', '--only', 'S16', '-n', '8', '--bootstrap', "
            f"'0', '--out', {str(out)!r}]\n"
            "main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "no figures: pulsehpg results need matplotlib" in res.stderr
    assert "pip install 'pulsehpg[results]'" in res.stderr
    report = (out / "report.md").read_text()
    assert "No figures: pulsehpg results need matplotlib" in report and "## S16: " in report
    assert "![S16]" not in report and not list(out.glob("*.png"))
    # the command that made it, with every option that changes the numbers
    assert f"`pulsehpg validate --out {out} -n 8 --only S16 --bootstrap 0`" in report


def test_impossible_target_fails_with_exit_1(tmp_path):
    text = S4.read_text()
    assert "range = [480, 580]" in text
    broken = tmp_path / "S4-impossible.toml"
    broken.write_text(text.replace("range = [480, 580]", "range = [5000, 6000]"))
    res = subprocess.run([sys.executable, "-m", "pulsehpg", "validate", str(broken), "-n", "8",
                          "--out", str(tmp_path / "r"), "--bootstrap", "20"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    row = next(r for r in _table_rows(res.stdout) if "total testosterone, cohort median" in r)
    assert row.rstrip().endswith("FAIL") and "5000 to 6000" in row
    assert "FAIL: S4 t_median" in res.stdout and "Traceback" not in res.stderr
    assert "**FAIL**" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--only", "S4,S99"], "unknown scenario id 'S99'; allowed: S1, S4, S5, S7"),
    (["--only", ","], "allowed: S1, S4"),
    (["-n", "0"], "0 is not in the range 1<=x<=10000000"),
    (["-n", "many"], "'many' is not a valid integer"),
    (["--bootstrap", "-1"], "--bootstrap"),
    (["no-such-folder"], "no-such-folder: no such file or folder"),
])
def test_user_errors_exit_2(args, message):
    res = _invoke(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_unwritable_out_exits_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = _invoke("--only", "S16", "--out", str(blocker / "report"))
    assert res.exit_code == 2
    assert "--out" in res.output and "cannot write to folder" in res.output
    assert "Traceback" not in res.output


def test_bad_validation_table_names_key_and_line(tmp_path):
    bad = tmp_path / "S4-bad.toml"
    bad.write_text(S4.read_text().replace('metric = "best_lag"', 'metric = "best_lagg"'))
    res = _invoke(str(bad), "--out", str(tmp_path / "r"))
    assert res.exit_code == 2
    assert "validation.quantity[4].metric (line" in res.output
    assert "did you mean 'best_lag'" in res.output
    with pytest.raises(ScenarioError, match=r"validation\.arm\[1\]\.set\.phase\.trt\.duratio"):
        text = (VALIDATION / "S9-spontaneous-recovery.toml").read_text()
        f = tmp_path / "S9.toml"
        f.write_text(text.replace('"phase.trt.duration" = "13 weeks"',
                                  '"phase.trt.duratio" = "13 weeks"'))
        validation.load(f)


def test_metrics_listing():
    res = _invoke("--metrics")
    assert res.exit_code == 0
    for name in validation.METRICS:
        assert f"\n{name}(" in res.output


def test_bootstrap_is_paired_and_reproducible():
    spec = validation.load(VALIDATION / "S7-hcg-during-trt.toml")
    sim = validation.simulate(spec, n=6, threads=2, arms=None)
    a, b = sim.samples(3, seed=1), sim.samples(3, seed=1)
    for x, y in zip(a, b):
        assert all(np.array_equal(x[k], y[k]) for k in x)
        assert all(np.array_equal(x["untreated"], x[k]) for k in x)  # paired arms
    rows = sim.evaluate(bootstrap=40, seed=3)
    assert [r.quantity.id for r in rows] == [q.id for q in spec.quantities]
    for r in rows:
        if r.quantity.id != "itt_monotone":
            assert r.low <= r.high
    again = sim.evaluate(bootstrap=40, seed=3)
    assert [(r.value, r.low, r.high) for r in rows] == [(r.value, r.low, r.high) for r in again]


def test_interval_withheld_when_many_resamples_are_undefined():
    """An interval over only the resamples where a quantity is defined (a median reached)
    would be conditional on it: withheld, and the table says how many were undefined."""
    spec = validation.load(VALIDATION / "S7-hcg-during-trt.toml")
    sim = validation.simulate(spec, n=6, threads=2, arms=None)
    q0, q1 = spec.quantities[0].id, spec.quantities[1].id
    sim.stat(q0), sim.stat(q1)
    sim._stats[q0] = lambda s: np.nan if s["untreated"][0] % 2 else 1.0  # about half
    sim._stats[q1] = lambda s: 1.0 + 0.01 * s["untreated"][0]
    rows = {r.quantity.id: r for r in sim.evaluate(bootstrap=40, seed=3)}
    r0 = rows[q0]
    assert np.isnan(r0.low) and 0 < r0.resamples < 38 and r0.bootstrap == 40
    assert f"n/a ({40 - r0.resamples} of 40 undefined)" in r0.cells()
    assert np.isfinite(rows[q1].low) and rows[q1].resamples == 40
