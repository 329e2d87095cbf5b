"""Traces: scenario [output] traces, `pulsehpg run --traces`, sweeps that write traces,
`pulsehpg plot --kind traces` of chosen patients and time windows, and Cohort.record's
choice of observables and patients."""

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import pulsehpg
from pulsehpg import Cohort, store
from pulsehpg.cli import cli
from pulsehpg.run import build_cohort
from pulsehpg.scenario import DEFAULT_TRACE_OBSERVABLES, ScenarioError, parse_scenario

HAVE_PLOT = all(importlib.util.find_spec(m) for m in ("xarray", "pandas", "matplotlib"))
needs_plot = pytest.mark.skipif(
    not HAVE_PLOT, reason="xarray/pandas/matplotlib not installed (pip install 'pulsehpg[results]')")

PUMP = """
name = "pump-traces"
[cohort]
n = 3
phenotype = "chh"
seed = 4
[[phase]]
name = "pump"
duration = "2 days"
[[phase.drug]]
name = "gonadorelin"
dose = "5 ug"
schedule = "every 90 min"
[[phase.visit]]
at = ["1 day"]
labs = ["lh", "t_total"]
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="pulsehpg")


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# -- Cohort.record -------------------------------------------------------------------------
def test_record_subset_equals_the_full_recording():
    full = Cohort(n=4, seed=3)
    part = Cohort(n=4, seed=3)
    full.record("30 min")
    part.record("30 min", observables=["t_total", "lh"], patients=[2, 0])
    for c in (full, part):
        c.advance_to("10 h")
        c.dose("hcg", 1500.0)
        c.advance_to("1 day")
    t_full, tr_full = full.trace()
    t_part, tr_part = part.trace()
    np.testing.assert_array_equal(t_full, t_part)
    assert list(tr_part) == ["t_total", "lh"]
    for name in tr_part:
        np.testing.assert_array_equal(tr_part[name], tr_full[name][[2, 0]])


def _traces(observables, lanes):
    """Hourly traces of 6 patients over 4 days (doses and a pump: drug and drug-free steps)."""
    mode = pulsehpg._core.lanes()
    try:
        pulsehpg._core.lanes(lanes)
        c = Cohort(n=6, seed=8)
        c.record("1 h", observables=observables)
        c.advance_to("1 day")
        c.dose("testosterone_enanthate", 200.0, mask=np.arange(6) < 3)
        c.set_pump("gonadorelin", 5.0, 1.5, mask=np.arange(6) % 2 == 0)
        c.advance_to("4 days")
        return c.trace()[1]
    finally:
        pulsehpg._core.lanes(mode)


@pytest.mark.parametrize("lanes", ["avx2", "off"])
def test_hormone_samples_skip_the_coarse_states_with_the_same_values(lanes):
    """A recording of only observables that read no coarse state (pulsehpg.codegen.
    coarse_observables) skips the samples' coarse step; each such observable alone, and
    every coarse one beside a hormone, must equal the full recording bit for bit."""
    from pulsehpg.codegen import coarse_observables
    coarse = coarse_observables()
    assert coarse and not coarse >= set(pulsehpg.OBSERVABLES)
    full = _traces(None, lanes)
    for name in pulsehpg.OBSERVABLES:
        chosen = [name] if name not in coarse else ["lh", name]
        part = _traces(chosen, lanes)
        for k in chosen:
            np.testing.assert_array_equal(part[k], full[k], err_msg=f"{k} (lanes {lanes})")


def test_samples_without_the_coarse_step_leave_the_coarse_observables_behind():
    """The skipped coarse step is real: without it the coarse observables differ (so the
    equality above is not vacuous), the others do not."""
    from pulsehpg.codegen import coarse_observables
    outs = []
    for sample_coarse in (True, False):
        c = Cohort(n=4, seed=2)
        samples = c.t + np.arange(1, 49) * 0.5
        outs.append(c._run(c.t, c.t + 24.0, samples, sample_coarse=sample_coarse))
    for k, name in enumerate(pulsehpg.OBSERVABLES):
        same = np.array_equal(outs[0][:, :, k], outs[1][:, :, k])
        assert same == (name not in coarse_observables()), name


def test_engine_checks_the_sample_rows_it_writes():
    c = Cohort(n=2, seed=1)
    samples = np.array([0.5])
    with pytest.raises(ValueError, match="out: expected shape"):
        c._engine.advance(1.0, samples, np.zeros((2, 1, 3)), np.arange(4, dtype=np.intc))
    with pytest.raises(ValueError, match="obs: 99"):
        c._engine.advance(1.0, samples, np.zeros((2, 1, 1)), np.array([99], dtype=np.intc))


@pytest.mark.parametrize("kw, message", [
    ({"observables": ["lh", "testosterone"]}, "observables"),
    ({"observables": []}, "observables"),
    ({"patients": [0, 5]}, "patients"),
    ({"patients": [1, 1]}, "patients"),
    ({"patients": [0.5]}, "patients"),
])
def test_record_bad_choice_names_the_argument(kw, message):
    with pytest.raises(ValueError, match=message):
        Cohort(n=3, seed=1, equilibrate=False).record("1 h", **kw)


def test_record_cannot_change_what_it_keeps_midway():
    c = Cohort(n=2, seed=1, equilibrate=False)
    c.record("1 h", observables=["lh"])
    c.advance_to("3 h")
    with pytest.raises(ValueError, match="cannot change"):
        c.record("1 h", observables=["fsh"])
    c.record("2 h", observables=["lh"])  # a new interval for the same choice is fine


# -- scenario [output] ---------------------------------------------------------------------
def test_output_table_is_read():
    sc = parse_scenario(PUMP + '[output]\ntraces = "10 min"\n')
    assert sc.output.traces == pytest.approx(1 / 6)
    assert sc.output.trace_observables == DEFAULT_TRACE_OBSERVABLES
    sc = parse_scenario(PUMP + '[output]\ntraces = "1 h"\ntrace_observables = ["fsh"]\n')
    assert sc.output.trace_observables == ("fsh",)
    assert parse_scenario(PUMP).output.traces is None


@pytest.mark.parametrize("table, path, message", [
    ('traces = "0.5 min"', "output.traces", "shorter than the shortest"),
    ('traces = "2 weeks"', "output.traces", "longer than the longest"),
    ('traces = "often"', "output.traces", "cannot read 'often' as a duration"),
    ('traces = "1 h"\ntrace_observables = ["lh", "tt"]', "output.trace_observables",
     "unknown observable 'tt'"),
    ('traces = "1 h"\ntrace_observables = ["lh", "lh"]', "output.trace_observables", "twice"),
    ('traces = "1 h"\ntrace_observables = []', "output.trace_observables", "non-empty"),
    ('trace_observables = ["lh"]', "output.trace_observables", "without output.traces"),
    ('trace = "1 h"', "output.trace", "did you mean 'traces'"),
])
def test_bad_output_table_names_the_key(table, path, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(PUMP + "[output]\n" + table + "\n")
    assert err.value.path == path
    assert message in err.value.message
    assert err.value.line is not None


# -- pulsehpg run ---------------------------------------------------------------------------
def test_run_writes_traces_that_match_a_bare_cohort(tmp_path):
    """The file's traces are what a Cohort given the same pump records (the regimen layer
    changes nothing), stored float32; time runs from the start of the regimen."""
    path = write(tmp_path, PUMP + '[output]\ntraces = "10 min"\ntrace_observables = '
                                   '["lh", "t_total"]\n')
    out = tmp_path / "r.h5"
    res = invoke("run", path, "-o", out)
    assert res.exit_code == 0, res.output
    data = store.read(out)
    t = data["traces"]["time_h"]
    assert t[0] == pytest.approx(1 / 6) and t[-1] == pytest.approx(48.0)
    assert np.allclose(np.diff(t), 1 / 6)
    assert set(data["traces"]) == {"time_h", "lh", "t_total"}
    assert data["units"]["traces/lh"] == "IU/L"

    sc = parse_scenario(PUMP)
    c = build_cohort(sc)
    c.record("10 min", observables=["lh", "t_total"])
    c.set_pump("gonadorelin", 5.0, 1.5)
    c.advance_to(48.0)
    _, tr = c.trace()
    for k in ("lh", "t_total"):
        np.testing.assert_array_equal(data["traces"][k], tr[k].astype(np.float32))
    # pulses are resolved: LH goes up and down every 90 min
    lh = data["traces"]["lh"][0, t > 24]
    assert (np.diff(np.sign(np.diff(lh))) < 0).sum() >= 14


def test_run_traces_option_overrides_and_checks(tmp_path):
    path = write(tmp_path, PUMP)
    out = tmp_path / "r.h5"
    res = invoke("run", path, "--traces", "1 h", "-o", out)
    assert res.exit_code == 0, res.output
    data = store.read(out)
    assert data["traces"]["time_h"].size == 48
    assert set(data["traces"]) == {"time_h", *DEFAULT_TRACE_OBSERVABLES}
    res = invoke("run", path, "--traces", "fast", "-o", tmp_path / "x.h5")
    assert res.exit_code == 2 and "--traces" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.h5").exists()


def test_without_traces_the_file_has_none(tmp_path):
    out = tmp_path / "r.h5"
    assert invoke("run", write(tmp_path, PUMP), "-o", out).exit_code == 0
    with h5py.File(out) as f:
        assert "traces" not in f


# -- sweeps ---------------------------------------------------------------------------------
def sweep_config(tmp_path, axis: str, values, follow_up: str | None = None):
    scenario = write(tmp_path, PUMP + (f'[outcomes]\nfollow_up = "{follow_up}"\n'
                                       if follow_up else "")
                     + '[output]\ntraces = "2 h"\ntrace_observables = ["lh"]\n', "sc.toml")
    return write(tmp_path, f"""
scenario = "{scenario.name}"
[sweep]
method = "grid"
patients = 2
seed = 3
block_size = 1
[[sweep.axis]]
name = "{axis}"
values = {values}
""", "sweep.toml")


def test_sweep_writes_traces_and_merges_them(tmp_path):
    cfg = sweep_config(tmp_path, "phase.pump.drug.gonadorelin.dose", "[2.5, 5.0]")
    out = tmp_path / "sweep.h5"
    pulsehpg.sweep(cfg, out=out, workers=1)
    data = store.read(out)
    assert data["traces"]["lh"].shape == (4, 24)
    # each point's traces are the same patients' traces from a run of that point alone
    sc = parse_scenario((tmp_path / "sc.toml").read_text().replace('"5 ug"', '"2.5 ug"'))
    res = pulsehpg.run(sc, n=2, seed=np.random.SeedSequence(3, spawn_key=(0, 0)))
    np.testing.assert_array_equal(data["traces"]["lh"][:2],
                                  res.tables()["traces"]["lh"].astype(np.float32))


def test_sweep_of_follow_up_with_traces_needs_a_fixed_follow_up(tmp_path):
    cfg = sweep_config(tmp_path, "phase.pump.duration", '["1 day", "2 days"]')
    res = invoke("sweep", cfg, "-o", tmp_path / "s.h5")
    assert res.exit_code == 2, res.output
    assert "sweep.axis[0]" in res.output and "outcomes.follow_up" in res.output
    cfg = sweep_config(tmp_path, "phase.pump.duration", '["1 day", "2 days"]', "2 days")
    out = tmp_path / "s.h5"
    res = invoke("sweep", cfg, "-o", out)
    assert res.exit_code == 0, res.output
    assert store.read(out)["traces"]["lh"].shape == (4, 24)


# -- plots ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    d = tmp_path_factory.mktemp("traced")
    p = d / "s.toml"
    p.write_text(PUMP + '[output]\ntraces = "10 min"\n')
    out = d / "r.h5"
    assert invoke("run", p, "-o", out).exit_code == 0
    return out


@needs_plot
@pytest.mark.parametrize("args", [
    (), ("--patients", "0,2"), ("--start", "1 day", "--span", "6 h"), ("--patients", "1",
                                                                       "--span", "90 min")])
def test_plot_traces_of_chosen_patients(traced, tmp_path, args):
    fig = tmp_path / "t.png"
    res = invoke("plot", traced, "--kind", "traces", "-o", fig, *args)
    assert res.exit_code == 0, res.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_plot
def test_plot_draws_the_chosen_patients_and_window(traced):
    from pulsehpg.results import _plot_traces, open_results

    ds = open_results(traced)
    fig = _plot_traces(ds, "t", patients=[2, 0], start=24.0, span=6.0)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["patient 2", "patient 0"]
    x = lines[0].get_xdata()
    assert x.min() == pytest.approx(24.0) and x.max() == pytest.approx(30.0)  # hours: <= 72 h
    np.testing.assert_allclose(lines[0].get_ydata(),
                               ds["trace_lh"].values[2, (ds["time_h"].values >= 24 - 1e-9)
                                                     & (ds["time_h"].values <= 30 + 1e-9)])


@needs_plot
@pytest.mark.parametrize("args, message", [
    (("--patients", "0,9"), "not in the file"),
    (("--patients", "a,b"), "--patients"),
    (("--start", "9 days"), "no trace samples"),
    (("--span", "0 h"), "one trace sample between 0.166667 h and 0.166667 h"),  # no line
    (("--span", "soon"), "span"),
])
def test_plot_traces_bad_choice_exits_2(traced, tmp_path, args, message):
    res = invoke("plot", traced, "--kind", "traces", "-o", tmp_path / "t.png", *args)
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "t.png").exists()


@needs_plot
def test_figures_are_written_atomically(traced, tmp_path, monkeypatch):
    """A failing write leaves neither the figure nor a temporary file."""
    import os

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    res = invoke("plot", traced, "--kind", "traces", "-o", tmp_path / "t.png")
    assert res.exit_code == 2 and "no space left" in res.output, res.output
    assert list(tmp_path.iterdir()) == []
