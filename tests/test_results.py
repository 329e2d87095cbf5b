"""pulsehpg.open_results (xarray view of a results file) and `pulsehpg plot`."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import pulsehpg
from pulsehpg import store
from pulsehpg.cli import cli

ROOT = Path(__file__).resolve().parents[1]
HAVE_XARRAY = all(importlib.util.find_spec(m) for m in ("xarray", "pandas"))
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_xarray = pytest.mark.skipif(
    not HAVE_XARRAY, reason="xarray/pandas not installed (pip install 'pulsehpg[results]')")
needs_plot = pytest.mark.skipif(
    not (HAVE_XARRAY and HAVE_MPL),
    reason="xarray/pandas/matplotlib not installed (pip install 'pulsehpg[results]')")

SWEEP = {
    "name": "tiny-results",
    "scenario": {
        "name": "tiny-recovery",
        "cohort": {"n": 3, "seed": 5},
        "phase": [
            {"name": "trt", "duration": "2 weeks",
             "drug": [{"name": "testosterone_cypionate", "dose": 200,
                       "schedule": "every 2 weeks"}],
             "visit": [{"at": ["0 h"], "labs": ["lh", "fsh", "t_total", "e2", "semen"]}]},
            {"name": "off", "duration": "6 weeks",
             "visit": [{"every": "3 weeks", "labs": ["lh", "fsh", "t_total", "e2", "semen"]}]},
        ],
        "outcomes": {"time_zero": "off"},
    },
    "sweep": {"method": "grid", "replicates": 1, "patients": 3, "seed": 7,
              "axis": [{"name": "phase.trt.drug.testosterone_cypionate.dose",
                        "values": [100, 400]}]},
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="pulsehpg")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.h5"
    pulsehpg.run(ROOT / "examples" / "hcg-during-trt.toml", n=5).save(path)
    return path


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "sweep.h5"
    pulsehpg.sweep(SWEEP, out=path, workers=1)
    return path


@pytest.fixture(scope="module")
def traces_file(tmp_path_factory):
    """A run-like file with traces (patient x time), written with pulsehpg.store."""
    from pulsehpg import Cohort

    cohort = Cohort(n=3, seed=1)
    cohort.record(every="2 h")
    cohort.advance_to("1 day")
    t, tr = cohort.trace()
    path = tmp_path_factory.mktemp("traces") / "traces.h5"
    store.write_block(
        path, config_text="# traces\n", seed=1, kind="run",
        points={"point": np.array([0])},
        patients={"point": np.zeros(3, dtype=np.int64), "replicate": np.zeros(3, dtype=np.int64),
                  "patient": np.arange(3)},
        traces={"time_h": t, "lh": tr["lh"], "t_total": tr["t_total"]},
        units={"lh": "IU/L", "t_total": "ng/dL"})
    return path


# ---------------------------------------------------------------------------------------------
# open_results
# ---------------------------------------------------------------------------------------------
def check_against_store(ds, path):
    data = store.read(path)
    n_pat = len(data["patients"]["point"])
    assert ds.sizes["patient"] == n_pat
    assert ds.sizes["point"] == len(data["points"]["point"])
    np.testing.assert_array_equal(ds["point"].values, data["points"]["point"])
    np.testing.assert_array_equal(ds["patient_point"].values, data["patients"]["point"])
    np.testing.assert_array_equal(ds["patient_id"].values, data["patients"]["patient"])
    for group in ("points", "patients", "visits", "traces"):
        for name, arr in data[group].items():
            matches = [v for v in ds.variables if ds[v].attrs.get("source") == f"{group}/{name}"]
            assert len(matches) == 1, f"{group}/{name}"
            var = ds[matches[0]]
            np.testing.assert_array_equal(var.values, arr)
            assert var.attrs["units"] == data["units"][f"{group}/{name}"]
            assert var.attrs["long_name"]
    if data["visits"]:
        assert ds.sizes["visit"] == data["visits"]["time_h"].shape[1]
        assert ds["visit_time_h"].dims == ("patient", "visit")
        assert ds["visit_time_h"].attrs["units"] == "h"
        codes = data["codes"]["visits/phase"]
        assert ds.attrs["phase_names"] == [codes[k] for k in sorted(codes)]
        assert ds["visit_phase"].attrs["flag_meanings"].split() == ds.attrs["phase_names"]
    attrs = data["attrs"]
    assert ds.attrs["config"] == data["config"]
    for key in ("seed", "config_sha256", "pulsehpg_version", "kind"):
        assert ds.attrs[key] == attrs[key]


@needs_xarray
def test_open_run(run_file):
    ds = pulsehpg.open_results(run_file)
    check_against_store(ds, run_file)
    assert set(ds.dims) == {"point", "patient", "visit"}
    assert ds.sizes["patient"] == 5
    assert ds["lh"].dims == ("patient", "visit") and ds["lh"].attrs["units"] == "IU/L"
    assert ds["t_total"].attrs["units"] == "ng/dL"
    assert ds["days_to_lh_normal"].attrs["units"] == "day"
    assert ds.attrs["seed"] == 2005 and ds.attrs["kind"] == "run"
    assert ds.attrs["phase_names"] == ["none", "baseline", "trt_hcg"]
    df = ds[["patient_point", "replicate", "patient_id", "nadir_lh", "days_to_t_normal"]] \
        .to_dataframe()
    assert len(df) == 5
    np.testing.assert_array_equal(df["nadir_lh"].to_numpy(), ds["nadir_lh"].values)


@needs_xarray
def test_open_sweep(sweep_file):
    ds = pulsehpg.open_results(sweep_file)
    check_against_store(ds, sweep_file)
    axis = "phase.trt.drug.testosterone_cypionate.dose"
    assert ds.sizes["point"] == 2 and ds.sizes["patient"] == 6
    assert ds[axis].dims == ("point",)
    np.testing.assert_array_equal(ds[axis].values, [100, 400])
    assert np.isfinite(ds["sperm_conc"].values).any()
    df = ds[["patient_point", "days_to_sperm_ge_20", "event_sperm_ge_20"]].to_dataframe()
    assert len(df) == 6 and df.index.name == "patient"


@needs_xarray
def test_open_traces(traces_file):
    ds = pulsehpg.open_results(traces_file)
    check_against_store(ds, traces_file)
    assert ds["trace_lh"].dims == ("patient", "time")
    assert ds["time_h"].dims == ("time",) and ds["time_h"].attrs["units"] == "h"
    assert ds["trace_t_total"].attrs["units"] == "ng/dL"


@needs_xarray
def test_open_missing_file(tmp_path):
    with pytest.raises(store.StoreError, match="no such file"):
        pulsehpg.open_results(tmp_path / "nope.h5")


def test_open_results_without_xarray_names_the_extra(monkeypatch, run_file):
    import sys

    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'pulsehpg\[results\]'"):
        pulsehpg.open_results(run_file)


# ---------------------------------------------------------------------------------------------
# pulsehpg plot
# ---------------------------------------------------------------------------------------------
def png_ok(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


@needs_plot
@pytest.mark.parametrize("which,kind,extra", [
    ("run", "labs", ()),
    ("sweep", "labs", ()),
    ("sweep", "recovery", ()),
    ("sweep", "recovery", ("--threshold", "5")),
    ("sweep", "sweep", ()),
    ("sweep", "sweep", ("--at", "4 weeks", "--threshold", "5")),
    ("sweep", "sweep", ("--y", "nadir_lh", "--x", "phase.trt.drug.testosterone_cypionate.dose")),
    ("traces", "traces", ()),
])
def test_plot_kinds(which, kind, extra, run_file, sweep_file, traces_file, tmp_path):
    path = {"run": run_file, "sweep": sweep_file, "traces": traces_file}[which]
    out = tmp_path / "fig.png"
    result = invoke("plot", path, "--kind", kind, "-o", out, *extra)
    assert result.exit_code == 0, result.output
    png_ok(out)


@needs_plot
@pytest.mark.parametrize("which,args,message", [
    ("run", ("--kind", "bogus"), "--kind"),
    ("run", ("--kind", "traces"), "no traces"),
    ("run", ("--kind", "sweep"), "no swept axes"),
    ("run", ("--kind", "recovery"), "no values"),
    ("sweep", ("--kind", "recovery", "--threshold", "7"), "no days_to_sperm_ge_7"),
    ("sweep", ("--kind", "recovery", "--threshold", "nan"), "allowed: a finite number > 0 M/mL"),
    ("sweep", ("--kind", "sweep", "--x", "steroid.shbg"), "not a swept axis"),
    ("sweep", ("--kind", "sweep", "--y", "nope"), "not a per-patient outcome"),
    # its follow-up is 6 weeks: a fraction by 12 months would repeat the one at 6 weeks
    ("sweep", ("--kind", "sweep", "--at", "12 months"),
     "--at 12 months is after the follow-up of every point (the longest: 1.38 months"),
    ("sweep", ("--kind", "sweep", "--y", "nadir_lh", "--threshold", "3"),
     "--threshold is for the recovery fraction, not for the median of --y 'nadir_lh'"),
    ("sweep", ("--kind", "labs", "--x", "phase.trt.drug.testosterone_cypionate.dose"),
     "--x does not apply to a 'labs' figure (it takes no options)"),
    ("sweep", ("--kind", "recovery", "--patients", "0"),
     "--patients does not apply to a 'recovery' figure (it takes --threshold)"),
    ("run", ("--kind", "traces", "--threshold", "5"), "--threshold does not apply"),
    ("missing", ("--kind", "labs"), "no such file"),
    ("notresults", ("--kind", "labs"), "not an HDF5 file"),
])
def test_plot_bad_input_exits_2(which, args, message, run_file, sweep_file, tmp_path):
    other = tmp_path / "notes.h5"
    other.write_text("not hdf5\n")
    path = {"run": run_file, "sweep": sweep_file, "missing": tmp_path / "none.h5",
            "notresults": other}[which]
    out = tmp_path / "fig.png"
    result = invoke("plot", path, *args, "-o", out)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@needs_plot
def test_plot_unwritable_output_exits_2(run_file, tmp_path):
    result = invoke("plot", run_file, "--kind", "labs", "-o", tmp_path / "no" / "fig.png")
    assert result.exit_code == 2 and "does not exist" in result.output


@needs_plot
def test_plot_one_line_error_as_a_process(run_file, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pulsehpg", "plot", str(run_file), "--kind",
                           "traces", "-o", str(tmp_path / "f.png")], check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no traces" in proc.stderr


# 6 months of TRT (sperm suppressed), then off for 6 weeks or 13 months
SWEEP_FOLLOW_UP = {**SWEEP, "name": "tiny-follow-up",
                   "scenario": {**SWEEP["scenario"], "phase": [
                       {**SWEEP["scenario"]["phase"][0], "duration": "26 weeks"},
                       SWEEP["scenario"]["phase"][1]]},
                   "sweep": {**SWEEP["sweep"], "patients": 4,
                             "axis": [{"name": "phase.off.duration",
                                       "values": ["6 weeks", "13 months"]}]}}


@needs_plot
def test_sweep_figure_has_no_value_past_a_points_follow_up(tmp_path):
    """The 12-month fraction of a point followed for 6 weeks is missing, not the fraction
    at 6 weeks carried forward; the other point's is the Kaplan-Meier fraction."""
    from pulsehpg.outcomes import fraction_by
    from pulsehpg.results import DAYS_PER_MONTH, _plot_sweep, open_results

    path = tmp_path / "fu.h5"
    pulsehpg.sweep(SWEEP_FOLLOW_UP, out=path, workers=1)
    ds = open_results(path)
    axis = "phase.off.duration"
    pp, points = ds["patient_point"].values, ds["point"].values
    t = ds["days_to_sperm_ge_20"].values
    e = ds["event_sperm_ge_20"].values.astype(bool)
    order = np.argsort(ds[axis].values)  # 6 weeks, then 13 months
    short, long = (pp == points[order[0]]), (pp == points[order[1]])
    assert not e[short].all()  # some men of the short point still below 20 M/mL
    assert np.all(ds["follow_up_days"].values[long] == pytest.approx(13 * DAYS_PER_MONTH))
    assert np.all(ds["follow_up_days"].values[short] == pytest.approx(42.0))

    fig = _plot_sweep(ds, "t", 20.0, axis, None, at=12 * DAYS_PER_MONTH)
    (line,) = fig.axes[0].lines
    xs, ys = line.get_data()
    assert list(xs) == sorted(ds[axis].values)
    assert np.isnan(ys[0])
    assert ys[1] == fraction_by(t[long], e[long], 12 * DAYS_PER_MONTH)
    assert "by 12 months (no value where men left without it before then)" in \
        fig.axes[0].get_title()

    # by default: by 12 months or the longest follow-up of any point, here 12 months
    fig = _plot_sweep(ds, "t", 20.0, axis, None)
    ys2 = fig.axes[0].lines[0].get_data()[1]
    assert np.isnan(ys2[0]) and ys2[1] == ys[1]
    assert "by 12 months" in fig.axes[0].get_title()
    # by 6 weeks, every point has its value
    fig = _plot_sweep(ds, "t", 20.0, axis, None, at=42.0)
    ys = fig.axes[0].lines[0].get_data()[1]
    assert list(ys) == [fraction_by(t[m], e[m], 42.0) for m in (short, long)]
    assert "no value" not in fig.axes[0].get_title()


SWEEP2 = {**SWEEP, "name": "tiny-surface",
          "sweep": {**SWEEP["sweep"], "patients": 2,
                    "axis": [{"name": "phase.trt.drug.testosterone_cypionate.dose",
                              "values": [100, 400]},
                             {"name": "phase.off.duration",
                              "values": ["12 months", "13 months"]}]}}


@pytest.fixture(scope="module")
def sweep2_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep2") / "sweep2.h5"
    pulsehpg.sweep(SWEEP2, out=path, workers=1)
    return path


@needs_plot
@pytest.mark.parametrize("extra", [(), ("--y", "nadir_lh")])
def test_plot_sweep_surface(sweep2_file, tmp_path, extra):
    out = tmp_path / "surface.png"
    result = invoke("plot", sweep2_file, "--kind", "sweep", "--x",
                    "phase.trt.drug.testosterone_cypionate.dose", "--by", "phase.off.duration",
                    "-o", out, *extra)
    assert result.exit_code == 0, result.output
    png_ok(out)


@needs_plot
def test_surface_cells_are_the_medians_of_their_points(sweep2_file):
    """Each cell is the median outcome of the patients of the point with those two values."""
    from pulsehpg.results import _plot_sweep, open_results

    ds = open_results(sweep2_file)
    x, by = "phase.trt.drug.testosterone_cypionate.dose", "phase.off.duration"
    fig = _plot_sweep(ds, "t", 20.0, x, "nadir_lh", by)
    z = fig.axes[0].images[0].get_array()
    assert z.shape == (2, 2)
    for j, bv in enumerate(sorted(set(ds[by].values))):
        for i, xv in enumerate(sorted(set(ds[x].values))):
            p = ds["point"].values[(ds[x].values == xv) & (ds[by].values == bv)]
            rows = np.isin(ds["patient_point"].values, p)
            assert z[j, i] == pytest.approx(np.median(ds["nadir_lh"].values[rows]))


@needs_plot
@pytest.mark.parametrize("args, message", [
    (("--by", "steroid.shbg"), "--by 'steroid.shbg' is not a swept axis"),
    (("--x", "phase.off.duration", "--by", "phase.off.duration"), "also --x"),
])
def test_plot_surface_bad_axis_exits_2(sweep2_file, tmp_path, args, message):
    result = invoke("plot", sweep2_file, "--kind", "sweep", *args, "-o", tmp_path / "f.png")
    assert result.exit_code == 2 and message in result.output, result.output
