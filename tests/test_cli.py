"""The command line, in-process (click's CliRunner) and as a real process."""

import csv
import io
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from pulsehpg import model
from pulsehpg.cli import SUMMARY_OUTPUTS, cli, params_markdown
from pulsehpg.params import REGISTRY
from pulsehpg.phenotypes import PHENOTYPES

UNITS = {o.name: o.unit for o in model.OUTPUTS}


def run(*args):
    return CliRunner().invoke(cli, list(args), prog_name="pulsehpg")


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    return result.output


def summary_rows(output):
    """observable -> (baseline median, end median) from a simulate summary."""
    rows = {}
    lines = output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("-----"))
    for line in lines[start + 1:]:
        cells = line.split()
        if cells and cells[0] in UNITS:
            rows[cells[0]] = (float(cells[2].lstrip("~")), float(cells[6].lstrip("~")))
    return rows


# ---------------------------------------------------------------------------
# Listing commands
# ---------------------------------------------------------------------------
def test_help_lists_commands():
    out = ok("--help")
    for name in ("params", "drugs", "phenotypes", "simulate"):
        assert name in out


@pytest.mark.parametrize("command", ["params", "drugs", "phenotypes", "simulate"])
def test_command_help(command):
    assert "Usage: pulsehpg " + command in ok(command, "--help")


def test_no_arguments_shows_help():
    assert "Commands:" in ok()


def test_version():
    assert "0.1.0" in ok("--version")


def test_params_table_lists_every_parameter():
    out = ok("params")
    for p in REGISTRY:
        assert p.name in out
    header = out.splitlines()[0].split()
    assert header == ["name", "symbol", "unit", "default", "range", "cv", "meaning", "source"]


def test_params_csv_round_trips_the_registry():
    rows = list(csv.DictReader(io.StringIO(ok("params", "--format", "csv"))))
    assert [r["name"] for r in rows] == [p.name for p in REGISTRY]
    for r, p in zip(rows, REGISTRY):
        assert float(r["default"]) == pytest.approx(p.default, rel=1e-5)
        assert float(r["lower"]) == pytest.approx(p.lower, rel=1e-5)
        assert float(r["upper"]) == pytest.approx(p.upper, rel=1e-5)
        assert float(r["cv"]) == pytest.approx(p.cv, rel=1e-5)
        assert r["unit"] == p.unit and r["source"] == p.source


def test_params_markdown_is_the_committed_document():
    assert ok("params", "--format", "markdown") == params_markdown()


def test_params_grep_filters_case_insensitively():
    out = ok("params", "--grep", "SHBG")
    assert "steroid.shbg" in out
    assert "hypothalamus.interval_min" not in out
    csv_out = ok("params", "--grep", "shbg", "--format", "csv")
    assert len(csv_out.strip().splitlines()) == 1 + sum(
        "shbg" in (p.name + p.sym + p.unit + p.meaning + p.source).lower() for p in REGISTRY)


def test_params_grep_without_match_fails_with_message():
    result = run("params", "--grep", "no-such-text")
    assert result.exit_code == 1
    assert "no parameter matches 'no-such-text'" in result.output
    assert "Traceback" not in result.output


def test_drugs_lists_every_drug_with_unit():
    out = ok("drugs")
    for d in model.DRUGS:
        assert any(line.split()[:2] == [d.name, d.unit] for line in out.splitlines())


def test_phenotypes_lists_every_phenotype():
    out = ok("phenotypes")
    for name in PHENOTYPES:
        assert name in out
    assert "hypothalamus.gnrh_present = 0" in out


# ---------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------
def test_simulate_summary_with_repeated_dose():
    out = ok("simulate", "--phenotype", "eugonadal", "-n", "6", "--seed", "3", "--days", "14",
             "--dose", "testosterone_enanthate:200:1 week")
    assert "eugonadal: 6 patients, seed 3, 14 days" in out
    assert "testosterone_enanthate 200 mg every 1 week from day 0 (2 doses)" in out
    assert "baseline (day 0)" in out and "end (day 14)" in out
    rows = summary_rows(out)
    assert list(rows) == list(SUMMARY_OUTPUTS)
    for name in SUMMARY_OUTPUTS:
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert line.split()[1] == UNITS[name]
    t0, t1 = rows["t_total"]
    assert t1 > t0  # exogenous testosterone raises serum T


def test_simulate_is_reproducible_for_a_seed():
    args = ("simulate", "-n", "4", "--seed", "11", "--days", "2")
    assert ok(*args) == ok(*args)


def test_simulate_pump_restores_lh_in_chh():
    out = ok("simulate", "--phenotype", "chh", "-n", "3", "--days", "2",
             "--pump", "gonadorelin:10:90 min", "--show", "lh", "--show", "gonadorelin")
    assert "gonadorelin pump: 10 ug every 90 min from day 0" in out
    rows = summary_rows(out)
    assert list(rows) == ["lh", "gonadorelin"]
    assert rows["lh"][1] > rows["lh"][0]
    assert rows["gonadorelin"][1] > 0


def test_simulate_single_dose_and_parameter_override():
    out = ok("simulate", "-n", "2", "--days", "1", "--dose", "hcg:1500", "--set",
             "steroid.shbg=50", "--deterministic", "--show", "hcg")
    assert "hcg 1500 IU once at day 0" in out
    assert "steroid.shbg = 50 nmol/L" in out
    assert "deterministic" in out
    assert summary_rows(out)["hcg"][1] > 0


BAD_INPUTS = [
    (["simulate", "--phenotype", "nope"], "'nope' is not one of 'eugonadal'"),
    (["simulate", "--dose", "aspirin:100"], "unknown drug 'aspirin'; allowed: testosterone_"),
    (["simulate", "--dose", "testosterone_enanthat:200"], "did you mean 'testosterone_enanthate'"),
    (["simulate", "--dose", "testosterone_enanthate:-200:1 week"],
     "amount must be a positive number of mg"),
    (["simulate", "--dose", "testosterone_enanthate:lots"], "amount 'lots' is not a number"),
    (["simulate", "--dose", "testosterone_enanthate:200:1 fortnight"],
     "cannot read '1 fortnight' as a duration"),
    (["simulate", "--dose", "testosterone_enanthate"], "expected DRUG:AMOUNT[:EVERY]"),
    (["simulate", "--dose", "hcg:100:5 min"], "EVERY must be at least 15 min"),
    (["simulate", "--pump", "gonadorelin:10"], "expected DRUG:DOSE:INTERVAL"),
    (["simulate", "--pump", "gonadorelin:10:soon"], "cannot read 'soon' as a duration"),
    (["simulate", "-n", "2", "--pump", "gonadorelin:10:12 h"],
     "pump intervals must be between 15 min and 8 h"),
    (["simulate", "--set", "steroid.shbgg=40"], "unknown parameter 'steroid.shbgg'; did you mean"),
    (["simulate", "--set", "steroid.shbg=4000"], "outside the allowed range [1, 300] nmol/L"),
    (["simulate", "--set", "steroid.shbg"], "expected NAME=VALUE"),
    (["simulate", "--set", "steroid.shbg=high"], "'high' is not a number"),
    (["simulate", "--set", "hypothalamus.pulse_mass_hill=2"], "compiled into the core"),
    (["simulate", "--show", "testosterone"], "'testosterone' is not one of 'lh'"),
    (["simulate", "-n", "0"], "0 is not in the range 1<=x<=10000000"),
    (["simulate", "-n", "many"], "'many' is not a valid integer"),
    (["simulate", "--days", "-3"], "'-3' is not allowed; allowed: a number in (0, 36525] days"),
    (["simulate", "--days", "nan"], "'nan' is not allowed; allowed: a number in (0, 36525]"),
    (["simulate", "--days", "inf"], "'inf' is not allowed; allowed: a number in (0, 36525]"),
    (["simulate", "--days", "1e9"], "'1e9' is not allowed; allowed: a number in (0, 36525]"),
    (["simulate", "--days", "soon"], "'soon' is not a number; allowed: a number in (0, 36525]"),
    (["export-sbml", "-o", "m.xml", "--days", "inf"], "allowed: a number in (0, 36525] days"),
    (["simulate", "--seed", "-1"], "not in the range x>=0"),
    (["simulate", "--bogus"], "No such option"),
    (["params", "--format", "xml"], "'xml' is not one of 'table', 'markdown', 'csv'"),
    (["simulat"], "unknown command 'simulat'; did you mean 'simulate'?"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_message(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("pulsehpg")
    assert "error: " in lines[0]
    assert message in lines[0]


# ---------------------------------------------------------------------------
# A real process: `python -m pulsehpg` and the console script
# ---------------------------------------------------------------------------
def run_process(args, tmp_path, command=None):
    command = command or [sys.executable, "-m", "pulsehpg"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run(command + list(args), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)


def test_module_lists_parameters(tmp_path):
    proc = run_process(["params", "--grep", "shbg"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "steroid.shbg" in proc.stdout
    assert proc.stderr == ""


def test_module_simulates(tmp_path):
    proc = run_process(["simulate", "-n", "3", "--days", "7",
                        "--dose", "testosterone_enanthate:200:1 week"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "end (day 7)" in proc.stdout
    assert set(summary_rows(proc.stdout)) == set(SUMMARY_OUTPUTS)


@pytest.mark.parametrize(("args", "message"), [
    (["simulate", "--dose", "testosterone_enanthate:-200:1 week"], "positive number of mg"),
    (["simulate", "--dose", "testosterone_enanthate:200:every week"], "cannot read"),
    (["simulate", "--phenotype", "klinefelter"], "'klinefelter' is not one of"),
    (["simulate", "--set", "no.such=1"], "unknown parameter 'no.such'"),
    (["simulate", "--frobnicate"], "No such option"),
])
def test_module_bad_input(tmp_path, args, message):
    proc = run_process(args, tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr


def test_console_script(tmp_path):
    script = Path(sysconfig.get_path("scripts")) / ("pulsehpg.exe" if os.name == "nt" else "pulsehpg")
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    proc = run_process(["--version"], tmp_path, command=[str(script)])
    assert proc.returncode == 0, proc.stderr
    assert "pulsehpg, version" in proc.stdout
    bad = run_process(["simulate", "--days", "soon"], tmp_path, command=[str(script)])
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


# --- an output that would destroy a file --------------------------------------------------
TINY_RUN = """
[cohort]
n = 2
[[phase]]
name = "a"
duration = "2 days"
"""


def test_results_never_replace_an_input_or_another_kind_of_file(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_RUN)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for target in (scenario, notes):
        r = run("run", str(scenario), "-o", str(target))
        assert r.exit_code == 2, r.output
        assert "exists and is not a pulsehpg results file" in r.output
    assert scenario.read_text() == TINY_RUN and notes.read_text() == "my notes\n"
    out = tmp_path / "r.h5"
    ok("run", str(scenario), "-o", str(out))
    ok("run", str(scenario), "-o", str(out))  # its own results: replaced
    r = run("plot", str(out), "--kind", "labs", "-o", str(out))
    assert r.exit_code == 2 and "it is the input file" in r.output, r.output
    params = tmp_path / "p.toml"
    params.write_text('"steroid.shbg" = 40\n')
    r = run("export-sbml", "-o", str(params), "--params", str(params))
    assert r.exit_code == 2 and "it is the input file" in r.output, r.output
    assert params.read_text() == '"steroid.shbg" = 40\n'


def test_patient_counts_beyond_one_cohort_are_refused(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_RUN)
    for args in (("simulate", "-n", "100000000000", "--days", "1"),
                 ("run", str(scenario), "-n", "100000000000")):
        r = run(*args)
        assert r.exit_code == 2 and "1<=x<=10000000" in r.output, r.output


def test_out_of_memory_is_one_line_exit_2(tmp_path):
    """A cohort larger than memory (here: memory capped for a child process) ends with one
    line naming what to change, not numpy's traceback."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from pulsehpg.cli import main; sys.argv = ['pulsehpg', 'simulate', '-n', "
            "'5000000', '--days', '1']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "out of memory" in proc.stderr
    assert "run fewer patients (-n)" in proc.stderr


@pytest.mark.parametrize("command", [("simulate", "-n", "2", "--days", "1"),
                                     ("export-sbml", "-o", "unused.xml")])
def test_two_pumps_of_one_drug_are_refused(command):
    # the second replaced the first without a word
    r = run(*command, "--phenotype", "chh", "--pump", "gonadorelin:10:90 min",
            "--pump", "gonadorelin:5:60 min")
    assert r.exit_code == 2 and "two pumps of gonadorelin" in r.output, r.output


def test_failed_validate_leaves_no_empty_report_folder(tmp_path):
    out = tmp_path / "report"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from pulsehpg.cli import main; sys.argv = ['pulsehpg', 'validate', '--only', "
            f"'S16', '-n', '3000000', '-o', {str(out)!r}]; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "out of memory" in proc.stderr, proc.stderr
    assert not out.exists()
