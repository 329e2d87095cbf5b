"""pulsehpg.sweep: config validation, designs, determinism across engines and shards,
kill -9 and resume, merge, unwritable output."""

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import pulsehpg
from pulsehpg import store
from pulsehpg.cli import cli
from pulsehpg.params import BY_NAME
from pulsehpg.run import run
from pulsehpg.scenario import ScenarioError
from pulsehpg.sweep import (METHODS, Progress, SweepUsageError, blocks_dir, dumps_toml,
                            load_config, parse_config, parse_shard)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

SCENARIO = """\
name = "tiny-restart"
[cohort]
n = 3
seed = 5
[cohort.covariates]
age = { dist = "uniform", low = 25, high = 45 }

[[phase]]
name = "trt"
duration = "4 weeks"
[[phase.drug]]
name = "testosterone_cypionate"
dose = 200
schedule = "every 2 weeks"

[[phase]]
name = "serm"
duration = "8 weeks"
[[phase.drug]]
name = "clomiphene"
dose = "25 mg"
schedule = "daily"
[[phase.visit]]
every = "4 weeks"
labs = ["lh", "t_total", "semen"]
[[phase.rule]]
name = "add_gonadorelin"
when = "lh < 4"
then = [{ action = "add_drug", drug = "gonadorelin", dose = 10, schedule = "every 90 min" }]
"""


def sweep_text(*, method="grid", points=None, replicates=2, patients=2, seed=11, block_size=2,
               axes=None, scenario='scenario = "tiny.toml"'):
    axes = axes or [
        {"name": "phase.serm.drug.clomiphene.dose", "values": ["12.5 mg", "25 mg", "50 mg"]},
        {"name": "phase.trt.duration", "values": ["2 weeks", "4 weeks"]},
    ]
    sweep = {"method": method, "replicates": replicates, "patients": patients, "seed": seed,
             "block_size": block_size}
    if points is not None:
        sweep["points"] = points
    text = f'name = "tiny"\n{scenario}\n\n[sweep]\n' + dumps_toml(sweep)
    for a in axes:
        text += "\n[[sweep.axis]]\n" + dumps_toml(a)
    return text


def write_config(tmp_path, text=None, name="sweep.toml", **kw):
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    p = tmp_path / name
    p.write_text(text if text is not None else sweep_text(**kw))
    return p


def cli_run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="pulsehpg")


def subprocess_cli(*args, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "pulsehpg", *map(str, args)], check=False,
                          capture_output=True, text=True, env=env, **kw)


def assert_same_results(a, b, *, points=True):
    ra, rb = store.read(a), store.read(b)
    groups = ("points", "patients", "visits") if points else ("patients", "visits")
    for g in groups:
        assert list(ra[g]) == list(rb[g]), g
        for k in ra[g]:
            x, y = ra[g][k], rb[g][k]
            assert x.dtype == y.dtype and x.shape == y.shape, (g, k)
            if x.dtype.kind == "f":
                assert np.array_equal(x, y, equal_nan=True), (g, k)
            else:
                assert np.array_equal(x, y), (g, k)
    assert ra["attrs"]["config_sha256"] == rb["attrs"]["config_sha256"] or not points


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------
def test_example_config_is_valid_and_small():
    cfg = load_config(EXAMPLES / "sweep-restart.toml")
    assert cfg.method == "grid" and cfg.n_points == 18 and cfg.n_blocks == 18
    assert cfg.n_patients <= 1000
    assert [a.unit for a in cfg.axes] == ["mg", "min", "month"]
    fast = load_config(EXAMPLES / "sweep-restart.toml", patients=5)
    assert fast.n_patients == 18 * 2 * 5 and fast.sha256 != cfg.sha256
    sc = cfg.scenario_at(cfg.design()[-1])
    assert sc.phase("trt").duration == 12 * 730.5
    assert sc.phase("serm").drugs[0].dose == 50.0
    add = sc.phase("serm").rules[0].actions[0]
    assert add.drug == "gonadorelin" and add.schedule.kind == "pump" and add.schedule.period == 2.0


def test_resolved_config_is_a_config_with_the_same_hash(tmp_path):
    cfg = load_config(write_config(tmp_path))
    again = parse_config(cfg.text, tmp_path / "elsewhere.toml")
    assert again.text == cfg.text and again.sha256 == cfg.sha256
    # comments and formatting do not change the identity of a sweep
    cfg2 = load_config(write_config(tmp_path, "# a comment\n" + sweep_text(), name="b.toml"))
    assert cfg2.sha256 == cfg.sha256


def test_toml_writer_round_trips_every_example():
    for f in sorted(EXAMPLES.glob("*.toml")):
        doc = tomllib.loads(f.read_text())
        assert tomllib.loads(dumps_toml(doc)) == doc, f.name
    odd = {"a b": "x\"y\\z\n\t\x01\x7f é", "n": [1, 2.5, float("inf"), -0.0, True],
           "t": {"u": [{"v": 1}, {"w": {"x": "y"}}], "long": list(range(40))}}
    assert tomllib.loads(dumps_toml(odd)) == odd


def test_inline_scenario_table(tmp_path):
    inline = "[scenario]\n" + textwrap.indent(SCENARIO, "").replace("[cohort", "[scenario.cohort") \
        .replace("[[phase", "[[scenario.phase")
    text = sweep_text(scenario="")
    text = text.replace('name = "tiny"\n', 'name = "tiny"\n', 1) + "\n" + inline
    cfg = parse_config(text, tmp_path / "inline.toml")
    ref = load_config(write_config(tmp_path))
    assert cfg.sha256 == ref.sha256


BAD = [
    ({"method": "gird"}, "sweep.method", "did you mean 'grid'"),
    ({"axes": [{"name": "numerics.slow_acceleration", "values": [1, 5]}]},
     "sweep.axis[0].name", "burn_in_accel"),
    ({"axes": [{"name": "steroid.shbx", "values": [20, 30]}]}, "sweep.axis[0].name",
     "steroid.shbg"),
    ({"axes": [{"name": "steroid.shbg", "values": [20, 900]}]}, "sweep.axis[0].values[1]",
     "outside the allowed range of steroid.shbg"),
    ({"axes": [{"name": "steroid.shbg", "range": [0, 50], "scale": "log"}],
      "method": "random", "points": 4}, "sweep.axis[0].range[0]", "log scale needs lo > 0"),
    ({"axes": [{"name": "steroid.shbg", "range": [20, 50]}]}, "sweep.axis[0].num",
     "needs num"),
    ({"axes": [{"name": "steroid.shbg", "range": [20, 50], "num": 3}], "method": "sobol",
      "points": 8}, "sweep.axis[0].num", "only for method = 'grid'"),
    ({"method": "random"}, "sweep.points", "is required"),
    ({"points": 5}, "sweep.points", "points is for random"),
    ({"axes": [{"name": "phase.washout.duration", "values": ["2 weeks"]}]},
     "sweep.axis[0].name", "phases: trt, serm"),
    ({"axes": [{"name": "phase.serm.drug.hcg.dose", "values": [1000]}]}, "sweep.axis[0].name",
     "its drugs: clomiphene"),
    ({"axes": [{"name": "phase.trt.duration", "values": [2, 4]}]}, "sweep.axis[0].values[0]",
     "has no unit"),
    ({"axes": [{"name": "phase.trt.duration", "values": ["2 fortnights"]}]},
     "sweep.axis[0].values[0]", "cannot read '2 fortnights'"),
    ({"axes": [{"name": "phase.serm.drug.clomiphene.dose", "values": ["25 IU"]}]},
     "sweep.axis[0].values[0]", "expected a number in mg"),
    ({"axes": [{"name": "phase.serm.drug.clomiphene.interval", "values": ["5 min"]}]},
     "sweep.axis[0].values[0]", "between 15 min"),
    ({"axes": [{"name": "phase.serm.rule.add_gonadorelin.drug.gonadorelin.interval",
                "values": ["1 h"], "unit": "parsecs"}]}, "sweep.axis[0].unit",
     "unknown time unit"),
    ({"axes": [{"name": "steroid.shbg", "values": [20], "unit": "mg"}]}, "sweep.axis[0].unit",
     "nmol/L"),
    ({"axes": [{"name": "steroid.shbg", "values": [20, 20]}]}, "sweep.axis[0].values",
     "distinct"),
    ({"axes": [{"name": "steroid.shbg", "values": [20]}, {"name": "steroid.shbg",
                                                          "values": [30]}]},
     "sweep.axis[1].name", "also sweep.axis[0]"),
    ({"axes": [{"name": "phase.serm.rule.nope.drug.gonadorelin.dose", "values": [5]}]},
     "sweep.axis[0].name", "its rules: add_gonadorelin"),
    ({"replicates": 0}, "sweep.replicates", "outside the allowed range"),
]


@pytest.mark.parametrize("changes,path,text", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_config_errors_name_the_key_path(tmp_path, changes, path, text):
    p = write_config(tmp_path, **changes)
    with pytest.raises(ScenarioError) as info:
        load_config(p)
    msg = str(info.value)
    assert msg.startswith(path), msg
    assert text in msg, msg
    if info.value.line is not None:  # the line is where the key path is written
        assert 1 <= info.value.line <= len(p.read_text().splitlines())


def test_structural_parameter_and_interval_of_a_times_schedule(tmp_path):
    structural = next(p.name for p in BY_NAME.values() if p.structural)
    p = write_config(tmp_path, axes=[{"name": structural, "values": [1.0]}])
    with pytest.raises(ScenarioError, match="structural"):
        load_config(p)
    p = write_config(tmp_path, axes=[{"name": "phase.trt.drug.testosterone_cypionate.interval",
                                      "values": ["1 week", "3 weeks"]}])
    assert load_config(p).axes[0].unit == "week"


def test_config_mistakes_that_are_another_kind_of_file_or_name(tmp_path):
    scenario = (ROOT / "examples" / "trt-recovery.toml").read_text()
    with pytest.raises(ScenarioError, match="this is a scenario, not a sweep config"):
        parse_config(scenario, tmp_path / "trt-recovery.toml")
    one_table = ('name = "t"\nscenario = "tiny.toml"\n[sweep]\n[sweep.axis]\n'
                 'name = "steroid.shbg"\nvalues = [20, 30]\n')
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    with pytest.raises(ScenarioError, match=r"write \[\[sweep.axis\]\] \(double brackets\)"):
        parse_config(one_table, tmp_path / "s.toml")
    for name in ("../escape", "  ", ".hidden"):
        text = sweep_text().replace('name = "tiny"', f'name = "{name}"', 1)
        assert f'name = "{name}"' in text
        with pytest.raises(ScenarioError, match="cannot name a file here"):
            parse_config(text, tmp_path / "s.toml")


def test_dict_config_errors_have_no_line_and_say_where_paths_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"scenario": "nope.toml", "sweep": {"axis": [{"name": "steroid.shbg",
                                                           "values": [20]}]}}
    with pytest.raises(ScenarioError) as info:
        pulsehpg.sweep(config, out=tmp_path / "x.h5")
    assert info.value.line is None and "(line" not in str(info.value)
    assert f"relative to {str(tmp_path)!r}" in str(info.value)
    assert "for a config given as a dict, the current folder" in str(info.value)
    assert not (tmp_path / "x.h5.blocks").exists()


def test_shard_from_a_slurm_task_id_that_is_not_a_number():
    with pytest.raises(SweepUsageError, match="SLURM_ARRAY_TASK_ID is 'x', not a whole number"):
        parse_shard("/2", {"SLURM_ARRAY_TASK_ID": "x"})


def test_axis_on_a_drug_given_twice_with_different_doses(tmp_path):
    """Two entries of one drug in a phase (a loading and a maintenance dose) are not
    flattened to the axis value; two that agree are both set."""
    second = ('[[phase.drug]]\nname = "clomiphene"\ndose = "{dose}"\n'
              'schedule = "every 3 days"\n[[phase.visit]]')
    for dose, ok in (("50 mg", False), ("25 mg", True)):
        text = SCENARIO.replace("[[phase.visit]]", second.format(dose=dose), 1)
        (tmp_path / "tiny.toml").write_text(text)
        p = tmp_path / "s.toml"
        p.write_text(sweep_text(axes=[{"name": "phase.serm.drug.clomiphene.dose",
                                       "values": ["10 mg", "20 mg"]}]))
        if ok:
            cfg = load_config(p)
            assert len(cfg.axes[0].targets) == 2
            continue
        with pytest.raises(ScenarioError) as info:
            load_config(p)
        msg = str(info.value)
        assert msg.startswith("sweep.axis[0].name"), msg
        assert "2 entries of clomiphene with different doses ('25 mg', '50 mg')" in msg
        assert "a phase of its own" in msg
    p.write_text(sweep_text(axes=[{"name": "phase.serm.drug.clomiphene.interval",
                                   "values": ["1 day", "2 days"]}]))
    with pytest.raises(ScenarioError, match="different schedules \\('daily', 'every 3 days'\\)"):
        load_config(p)


def test_axis_value_that_breaks_the_scenario_names_the_axis(tmp_path):
    text = SCENARIO.replace('schedule = "daily"', 'schedule = "daily"\nstart = "3 weeks"')
    (tmp_path / "tiny.toml").write_text(text)
    p = tmp_path / "s.toml"
    p.write_text(sweep_text(axes=[{"name": "phase.serm.duration",
                                   "values": ["2 weeks", "8 weeks"]}]))
    with pytest.raises(ScenarioError) as info:
        load_config(p)
    assert str(info.value).startswith("sweep.axis[0]")
    assert "phase.serm.duration = 2 week" in str(info.value)


def test_scenario_errors_name_the_scenario_file(tmp_path):
    (tmp_path / "tiny.toml").write_text(SCENARIO.replace('dose = 200', 'dose = -5'))
    p = tmp_path / "s.toml"
    p.write_text(sweep_text())
    with pytest.raises(ScenarioError) as info:
        load_config(p)
    assert "tiny.toml: phase[0].drug[0].dose" in str(info.value)
    p.write_text(sweep_text(scenario='scenario = "missing.toml"'))
    with pytest.raises(ScenarioError, match="missing.toml.*not found"):
        load_config(p)


def test_cli_config_error_exits_2(tmp_path):
    p = write_config(tmp_path, axes=[{"name": "steroid.shbg", "values": [20, 900]}])
    r = cli_run("sweep", p, "-o", tmp_path / "x.h5")
    assert r.exit_code == 2, r.output
    assert "sweep.axis[0].values[1]" in r.output and "900" in r.output
    assert not (tmp_path / "x.h5.blocks").exists()


def test_registry_parameter_axis_replaces_the_covariate(tmp_path):
    p = write_config(tmp_path, axes=[{"name": "patient.age", "values": [30, 60]}])
    cfg = load_config(p)
    sc = cfg.scenario_at([60.0])
    assert sc.cohort.params["patient.age"] == 60.0
    assert "patient.age" not in sc.cohort.covariates


# ---------------------------------------------------------------------------
# Designs
# ---------------------------------------------------------------------------
AXES = [{"name": "steroid.shbg", "range": [10, 80], "scale": "log"},
        {"name": "phase.serm.drug.clomiphene.dose", "range": [12.5, 50]},
        {"name": "phase.trt.duration", "values": ["2 weeks", "3 weeks", "4 weeks"]}]


@pytest.mark.parametrize("method", METHODS)
def test_methods_give_the_points_within_bounds(tmp_path, method):
    axes = [dict(a) for a in AXES]
    if method == "grid":
        axes[0]["num"], axes[1]["num"] = 4, 2
        kw = {}
    else:
        kw = {"points": 32}
    cfg = load_config(write_config(tmp_path, method=method, axes=axes, **kw))
    d = cfg.design()
    n = 4 * 2 * 3 if method == "grid" else 32
    assert d.shape == (n, 3) and cfg.n_points == n
    assert np.all((d[:, 0] >= 10) & (d[:, 0] <= 80))
    assert np.all((d[:, 1] >= 12.5) & (d[:, 1] <= 50))
    assert set(d[:, 2]) <= {2.0, 3.0, 4.0}
    assert np.array_equal(d, cfg.design())  # seeded
    if method == "grid":
        assert np.allclose(sorted(set(d[:, 0])), np.geomspace(10, 80, 4))
        assert list(d[:3, 2]) == [2.0, 3.0, 4.0]  # the last axis varies fastest
        assert len({tuple(r) for r in d}) == n
    else:
        other = load_config(write_config(tmp_path, method=method, axes=axes, seed=12, **kw))
        assert not np.array_equal(d, other.design())
        assert set(d[:, 2]) == {2.0, 3.0, 4.0}
    if method == "latin_hypercube":  # one point in each of the n strata of every axis
        u = (np.log(d[:, 0]) - np.log(10)) / (np.log(80) - np.log(10))
        assert sorted(np.floor(u * n).astype(int)) == list(range(n))
        u = (d[:, 1] - 12.5) / 37.5
        assert sorted(np.floor(u * n).astype(int)) == list(range(n))


def test_default_block_size():
    from pulsehpg.sweep import _default_block_size

    assert _default_block_size(10_000, 50) == 20  # ~1000 patients per block
    assert _default_block_size(18, 50) == 2  # enough blocks to keep workers busy
    assert _default_block_size(3, 5000) == 1


# ---------------------------------------------------------------------------
# Running: seeds, engines, shards
# ---------------------------------------------------------------------------
def test_a_point_is_the_run_of_its_scenario_with_the_keyed_seed(tmp_path):
    p = write_config(tmp_path, replicates=2, patients=3, block_size=4)
    res = pulsehpg.sweep(p, out=tmp_path / "o.h5", workers=1)
    assert res.blocks_run == 2 and res.patients_run == 6 * 2 * 3
    data = store.read(tmp_path / "o.h5")
    cfg = res.config
    design = cfg.design()
    pts = data["patients"]
    for point, rep in ((0, 0), (4, 1)):
        want = run(cfg.scenario_at(design[point]), n=3,
                   seed=np.random.SeedSequence(cfg.seed, spawn_key=(point, rep))).tables(point, rep)
        rows = (pts["point"] == point) & (pts["replicate"] == rep)
        assert list(pts["patient"][rows]) == [0, 1, 2]
        for k, v in want["patients"].items():
            assert np.array_equal(pts[k][rows], v, equal_nan=True), k
    assert np.array_equal(data["points"]["phase.trt.duration"], design[:, 1])
    assert data["units"]["points/phase.trt.duration"] == "week"
    assert data["attrs"]["kind"] == "sweep" and data["attrs"]["seed"] == 11


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep, one process."""
    tmp = tmp_path_factory.mktemp("ref")
    p = write_config(tmp)
    res = pulsehpg.sweep(p, out=tmp / "ref.h5", workers=1)
    assert res.merged is not None and res.merged.n_patients == 24
    return tmp / "ref.h5"


def test_workers_and_block_size_do_not_change_results(tmp_path, reference):
    p = write_config(tmp_path)
    out = tmp_path / "w2.h5"
    buf = io.StringIO()
    res = pulsehpg.sweep(p, out=out, workers=2, progress=True, stream=buf)
    assert res.blocks_run == 3 and "24/24 patients" in buf.getvalue()
    assert_same_results(out, reference)
    p2 = write_config(tmp_path, name="b5.toml", block_size=5)
    pulsehpg.sweep(p2, out=tmp_path / "b5.h5", workers=2, consolidate=True)
    assert_same_results(tmp_path / "b5.h5", reference, points=False)
    assert store.read(tmp_path / "b5.h5")["attrs"]["consolidated"] == 1


def test_shards_then_merge_equal_one_run(tmp_path, reference):
    p = write_config(tmp_path)
    out = tmp_path / "sh.h5"
    r0 = pulsehpg.sweep(p, out=out, workers=1, shard="0/2")
    assert r0.blocks == [0, 2] and r0.merged is None and not out.exists()
    r = cli_run("merge", out)  # block 1 is missing
    assert r.exit_code == 1, r.output
    assert "1 of 3 blocks are missing" in r.output and "block-00001.h5" in r.output
    assert f"`pulsehpg sweep CONFIG --out {out} --resume --shard K/2` for K = 1" in r.output
    assert "sbatch --array=1 " in r.output and "Traceback" not in r.output
    r = cli_run("merge", out, "--allow-missing")
    assert r.exit_code == 0, r.output
    part = store.read(out)
    assert part["attrs"]["missing_blocks"] == ["sh.h5.blocks/block-00001.h5"]
    assert np.isnan(part["patients"]["end_lh"][8:16]).all()
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1")
    assert parse_shard("/2", env) == (1, 2)
    r1 = pulsehpg.sweep(p, out=out, workers=1, shard=parse_shard("/2", env))
    assert r1.blocks == [1]
    r = cli_run("merge", out)
    assert r.exit_code == 0 and "merged 3 of 3 blocks" in r.output, r.output
    assert_same_results(out, reference)


def test_shard_spec_errors():
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "x/2", "1/0", "2"):
        with pytest.raises(SweepUsageError):
            parse_shard(bad)
    with pytest.raises(SweepUsageError, match="SLURM_ARRAY_TASK_ID"):
        parse_shard("/4", {})
    r = cli_run("sweep", EXAMPLES / "sweep-restart.toml", "--shard", "5/4", "--dry-run")
    assert r.exit_code == 2 and "0..3" in r.output


def test_merge_without_a_sweep(tmp_path):
    r = cli_run("merge", tmp_path / "none.h5")
    assert r.exit_code == 2 and "manifest.json not found" in r.output


# ---------------------------------------------------------------------------
# Crash safety, resume, refusals
# ---------------------------------------------------------------------------
def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path):
    # 16 blocks of one point, each a few tenths of a second
    p = write_config(tmp_path, replicates=1, patients=20, block_size=1,
                     axes=[{"name": "phase.serm.drug.clomiphene.dose",
                            "range": [10.0, 50.0], "num": 8},
                           {"name": "phase.trt.duration", "values": ["2 weeks", "4 weeks"]}])
    ref = tmp_path / "ref.h5"
    pulsehpg.sweep(p, out=ref, workers=2)
    out = tmp_path / "killed.h5"
    bdir = blocks_dir(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulsehpg", "sweep", str(p), "-o", str(out), "-w", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"))
    deadline = time.monotonic() + 60
    while not list(bdir.glob("block-*.h5")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(bdir.glob("block-*.h5"))
    assert 1 <= len(done) < 16, "the sweep was not killed mid-run"
    assert not out.exists()
    for f in done:  # finished blocks are complete files
        assert store.is_complete(f)
    missing = next(k for k in range(16) if not (bdir / f"block-{k:05d}.h5").exists())
    stale = bdir / f"block-{missing:05d}.h5.tmp-999999"
    stale.write_bytes(b"half a block")
    stale_merge = out.with_name(out.name + ".tmp-999998")  # a merge killed half-way
    stale_merge.write_bytes(b"half a merged file")
    before = {f.name: f.stat().st_mtime_ns for f in done}

    r = subprocess_cli("sweep", p, "-o", out)  # without --resume: refused
    assert r.returncode == 2 and "--resume" in r.stderr
    r = subprocess_cli("sweep", p, "-o", out, "-w", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"{len(done)} block(s) were already done" in r.stdout
    assert not list(bdir.glob("*.tmp-*")) and not stale_merge.exists()
    for name, mtime in before.items():  # finished work was not redone
        assert (bdir / name).stat().st_mtime_ns == mtime
    assert_same_results(out, ref)


def _default_sigint():  # a shell's background job starts with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,status,word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_exits_and_keeps_finished_blocks(tmp_path, sig, status, word):
    p = write_config(tmp_path, replicates=1, patients=20, block_size=1,
                     axes=[{"name": "phase.serm.drug.clomiphene.dose",
                            "range": [10.0, 50.0], "num": 8},
                           {"name": "phase.trt.duration", "values": ["2 weeks", "4 weeks"]}])
    out = tmp_path / "int.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulsehpg", "sweep", str(p), "-o", str(out), "-w", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"), preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while not list(blocks_dir(out).glob("block-*.h5")) and time.monotonic() < deadline:
        time.sleep(0.005)
    # Ctrl-C reaches the whole process group; so does scancel's or a time limit's SIGTERM
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert word in err and "--resume" in err and "Traceback" not in err
    assert "of 320 patients" in err
    assert list(blocks_dir(out).glob("block-*.h5")) and not out.exists()
    r = subprocess_cli("sweep", p, "-o", out, "-w", "2", "--resume", "-q")
    assert r.returncode == 0, r.stderr
    assert store.read(out)["patients"]["point"].shape == (16 * 20,)


def test_ctrl_c_while_merging_says_to_merge(tmp_path, monkeypatch):
    p = write_config(tmp_path)
    out = tmp_path / "mi.h5"

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "merge", interrupted)
    r = cli_run("sweep", p, "-o", out, "-w", "1", "-q", "--consolidate")
    assert r.exit_code == 130, r.output
    assert f"interrupted while merging; every block is done in {blocks_dir(out)}/: run " \
           f"`pulsehpg merge {out} --consolidate`" in r.output
    monkeypatch.undo()
    r = cli_run("merge", out, "--consolidate")
    assert r.exit_code == 0 and "merged 3 of 3 blocks" in r.output, r.output


def test_a_failing_block_names_its_points_and_keeps_the_traceback(tmp_path, monkeypatch):
    sweep_mod = sys.modules["pulsehpg.sweep"]

    p = write_config(tmp_path)
    out = tmp_path / "f.h5"
    simulate = sweep_mod._simulate_block

    def failing(task):
        if task.block == 1:
            return 1 / 0
        return simulate(task)

    monkeypatch.setattr(sweep_mod, "_simulate_block", failing)
    r = cli_run("sweep", p, "-o", out, "-w", "1", "-q")
    assert r.exit_code == 1, r.output
    err = r.output.strip().splitlines()[-1]
    record = blocks_dir(out) / "block-00001.h5.error.json"
    assert "block 1 failed: ZeroDivisionError: division by zero (point 2: " in err, err
    assert "point 3: phase.serm.drug.clomiphene.dose = 25 mg, phase.trt.duration = 4 week;" \
        in err, err
    assert f"traceback in {record}" in err and "Traceback" not in r.output
    info = store.read_json(record)
    assert info["block"] == 1 and [q["point"] for q in info["points"]] == [2, 3]
    assert "ZeroDivisionError" in info["traceback"] and "1 / 0" in info["traceback"]
    monkeypatch.undo()
    r = cli_run("sweep", p, "-o", out, "-w", "1", "-q", "--resume")
    assert r.exit_code == 0, r.output
    assert not record.exists()


def test_keep_going_runs_the_other_blocks_and_names_the_failed_ones(tmp_path, monkeypatch):
    sweep_mod = sys.modules["pulsehpg.sweep"]
    p = write_config(tmp_path)
    out = tmp_path / "k.h5"
    simulate = sweep_mod._simulate_block

    def failing(task):
        if task.block == 0:
            raise FloatingPointError("overflow in point 0")
        return simulate(task)

    monkeypatch.setattr(sweep_mod, "_simulate_block", failing)
    buf = io.StringIO()
    with pytest.raises(sweep_mod.SweepError) as info:
        pulsehpg.sweep(p, out=out, workers=1, keep_going=True, progress=True, stream=buf)
    msg = str(info.value)
    assert msg.startswith("1 of 3 block(s) failed (blocks 0), the other 2 ran (16 patients)")
    assert "overflow in point 0" in msg and f"pulsehpg merge {out} --allow-missing" in msg
    assert "blocks 3/3 (1 failed)" in buf.getvalue()
    bdir = blocks_dir(out)
    assert (bdir / "block-00001.h5").exists() and (bdir / "block-00002.h5").exists()
    assert (bdir / "block-00000.h5.error.json").exists() and not out.exists()
    r = cli_run("sweep", p, "-o", out, "-w", "1", "-q", "--resume", "--keep-going")
    assert r.exit_code == 1 and "1 of 1 block(s) failed" in r.output, r.output
    monkeypatch.undo()
    r = cli_run("sweep", p, "-o", out, "-w", "1", "-q", "--resume")
    assert r.exit_code == 0 and "2 block(s) were already done" in r.output, r.output


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_a_worker_killed_by_sigkill_is_named(tmp_path):
    p = write_config(tmp_path, replicates=1, patients=20, block_size=1,
                     axes=[{"name": "phase.serm.drug.clomiphene.dose",
                            "range": [10.0, 50.0], "num": 8},
                           {"name": "phase.trt.duration", "values": ["2 weeks", "4 weeks"]}])
    out = tmp_path / "oom.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulsehpg", "sweep", str(p), "-o", str(out), "-w", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"))
    deadline = time.monotonic() + 60
    while not list(blocks_dir(out).glob("block-*.h5")) and time.monotonic() < deadline:
        time.sleep(0.005)
    kids = []
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        kids += (task / "children").read_text().split()
    workers = [int(k) for k in kids if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]
    assert workers
    os.kill(max(workers), signal.SIGKILL)  # what the out-of-memory killer does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "was killed by SIGKILL (on Linux usually the out-of-memory killer" in err, err
    assert "--resume" in err and "Traceback" not in err


def test_resume_refuses_a_changed_config(tmp_path):
    p = write_config(tmp_path)
    out = tmp_path / "c.h5"
    pulsehpg.sweep(p, out=out, workers=1, shard="0/3")
    p.write_text(sweep_text(axes=[
        {"name": "phase.serm.drug.clomiphene.dose", "values": ["12.5 mg", "25 mg", "100 mg"]},
        {"name": "phase.trt.duration", "values": ["2 weeks", "4 weeks"]}]))
    r = cli_run("sweep", p, "-o", out, "--resume")
    assert r.exit_code == 2, r.output
    assert "different config" in r.output and "changed since the first run" in r.output
    r = cli_run("sweep", write_config(tmp_path, name="same.toml"), "-o", out, "--resume", "-n", "3")
    assert r.exit_code == 2 and "different config" in r.output
    with pytest.raises(SweepUsageError):
        pulsehpg.sweep(p, out=out, resume=True)


def test_every_module_is_classified_for_the_code_identity():
    modules = {p.stem for p in (ROOT / "pulsehpg").glob("*.py")}
    result, shown = set(store.RESULT_MODULES), set(store.PRESENTATION_MODULES)
    assert not result & shown
    assert modules == result | shown, (
        "add new modules to store.RESULT_MODULES (they change results) or "
        "store.PRESENTATION_MODULES (they do not)")


def test_manifest_and_blocks_record_the_code(tmp_path):
    p = write_config(tmp_path)
    out = tmp_path / "code.h5"
    pulsehpg.sweep(p, out=out, workers=1)
    here = store.code_sha256()
    m = store.read_json(blocks_dir(out) / "manifest.json")
    assert m["code_sha256"] == here and m["pulsehpg_version"] == pulsehpg.__version__
    for f in sorted(blocks_dir(out).glob("block-*.h5")):
        assert store.read(f)["attrs"]["code_sha256"] == here
    assert store.read(out)["attrs"]["code_sha256"] == here


def test_resume_refuses_other_code(tmp_path, monkeypatch):
    p = write_config(tmp_path)
    out = tmp_path / "c.h5"
    pulsehpg.sweep(p, out=out, workers=1, shard="0/3")
    here = store.code_sha256()
    monkeypatch.setattr(store, "code_sha256", lambda: "e" * 64)
    r = cli_run("sweep", p, "-o", out, "--resume", "-q")
    assert r.exit_code == 2, r.output
    err = r.output.strip().splitlines()[-1]
    assert f"(code {here[:12]}...)" in err and "(code eeeeeeeeeeee...)" in err, err
    assert "installation that started it" in err and "Traceback" not in r.output
    with pytest.raises(SweepUsageError, match="different code are not mixed"):
        pulsehpg.sweep(p, out=out, resume=True, workers=1, shard="1/3")
    assert len(list(blocks_dir(out).glob("block-*.h5"))) == 1
    monkeypatch.undo()
    # a sweep started before the code was recorded cannot be checked: refused as well
    mpath = blocks_dir(out) / "manifest.json"
    m = store.read_json(mpath)
    store.write_json(mpath, {k: v for k, v in m.items() if k != "code_sha256"})
    r = cli_run("sweep", p, "-o", out, "--resume", "-q")
    assert r.exit_code == 2 and "(code not recorded)" in r.output, r.output
    store.write_json(mpath, m)
    r = cli_run("sweep", p, "-o", out, "--resume", "-q")
    assert r.exit_code == 0, r.output


def test_a_worker_with_other_code_is_refused(tmp_path):
    import concurrent.futures as cf
    import dataclasses

    class OtherCodeWorker(cf.Executor):  # a worker whose installation differs
        def submit(self, fn, task):
            fut = cf.Future()
            try:
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(store, "code_sha256", lambda: "d" * 64)
                    fut.set_result(fn(dataclasses.replace(task)))
            except Exception as e:
                fut.set_exception(e)
            return fut

    p = write_config(tmp_path)
    out = tmp_path / "w.h5"
    with pytest.raises(SweepUsageError, match=r"runs pulsehpg .*\(code dddddddddddd\.\.\.\), "
                                              r"but the sweep was started by"):
        pulsehpg.sweep(p, out=out, executor=OtherCodeWorker())
    assert not list(blocks_dir(out).glob("block-*"))


def test_merge_refuses_blocks_of_other_code(tmp_path):
    import h5py

    p = write_config(tmp_path)
    out = tmp_path / "m.h5"
    pulsehpg.sweep(p, out=out, workers=1)
    with h5py.File(blocks_dir(out) / "block-00001.h5", "r+") as f:
        f.attrs["code_sha256"] = "e" * 64
    for extra in ((), ("--consolidate",)):
        r = cli_run("merge", out, *extra)
        assert r.exit_code == 2, r.output
        assert "block-00001.h5" in r.output and "written by different code" in r.output
        assert "(code eeeeeeeeeeee...)" in r.output and "Traceback" not in r.output


def test_unwritable_output_exits_2(tmp_path):
    p = write_config(tmp_path)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "o.h5", tmp_path / "no" / "such" / "o.h5"):
        r = cli_run("sweep", p, "-o", out)
        assert r.exit_code == 2, r.output
        assert str(out.parent) in r.output
    (tmp_path / "adir.h5").mkdir()
    r = cli_run("sweep", p, "-o", tmp_path / "adir.h5")
    assert r.exit_code == 2 and "directory" in r.output


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_full_disk_exits_2_and_keeps_nothing_half_written(tmp_path):
    import resource

    p = write_config(tmp_path)
    out = tmp_path / "full.h5"

    def limit():  # files larger than 40 kB cannot be written: like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    r = subprocess_cli("sweep", p, "-o", out, "-w", "1", preexec_fn=limit)
    assert r.returncode == 2, r.stderr
    assert "file too large" in r.stderr or "no space" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not list(blocks_dir(out).glob("*.tmp-*"))
    assert not list(blocks_dir(out).glob("block-*.h5"))


def test_mpi_executor_without_mpi4py_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("click")
    monkeypatch.setitem(sys.modules, "mpi4py.futures", None)  # its import fails, installed or not
    r = cli_run("sweep", write_config(tmp_path), "-o", tmp_path / "m.h5", "--executor", "mpi")
    assert r.exit_code == 2 and "pip install 'pulsehpg[mpi]'" in r.output, r.output
    assert not (tmp_path / "m.h5").exists() and not blocks_dir(tmp_path / "m.h5").exists()


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_does_not_spam_logs():
    clock, buf = _Clock(), io.StringIO()
    bar = Progress(1000, 100, stream=buf, clock=clock, log_every=30.0)
    for _ in range(100):
        clock.t += 1.0
        bar.show()
        bar.add(10)
    lines = buf.getvalue().splitlines()
    assert 3 <= len(lines) <= 5  # about one per 30 s, and the last
    assert lines[-1].startswith("sweep: 1000/1000 patients (100 %), blocks 100/100, 10 patients/s")
    assert re.search(r" \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]$", lines[-1])  # when, in a log file


def test_progress_on_a_terminal_redraws_one_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    clock, buf = _Clock(), Tty()
    bar = Progress(100, 4, stream=buf, clock=clock)
    for _ in range(4):
        clock.t += 2.0
        bar.add(25)
    bar.close()
    text = buf.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    assert "ETA 0:06" in text.split("\r")[1]


# ---------------------------------------------------------------------------
# Safe writes: pulsehpg run -o and pulsehpg merge --consolidate
# ---------------------------------------------------------------------------
RUN_SCENARIO = """\
name = "daily-labs"
[cohort]
n = 150
seed = 3
[[phase]]
name = "trt"
duration = "3 weeks"
[[phase.drug]]
name = "testosterone_enanthate"
dose = "200 mg"
schedule = "weekly"
[[phase.visit]]
every = "1 day"
"""


def _mount_tmpfs(where: Path, options: str) -> None:
    """Mount a tmpfs (root only), or skip the test saying why."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


@pytest.fixture
def tiny_disk(tmp_path):
    """A real file system with 64 KiB of space."""
    d = tmp_path / "tiny"
    _mount_tmpfs(d, "size=64k")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write into (a read-only mount when we are root)."""
    d = tmp_path / "ro"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        _mount_tmpfs(d, "ro,size=64k")
        yield d
        subprocess.run(["umount", "-l", str(d)], check=False)
    else:
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


def test_run_on_a_full_disk_exits_2_and_leaves_no_file(tmp_path, tiny_disk):
    # a real ENOSPC inside HDF5: before the fix the message was right but the process then
    # died with SIGSEGV when HDF5 shut down (exit status 139, not 2)
    (tmp_path / "s.toml").write_text(RUN_SCENARIO)
    out = tiny_disk / "run.h5"
    r = subprocess_cli("run", tmp_path / "s.toml", "-o", out)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"cannot write {out}: no space left on device" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert os.listdir(tiny_disk) == []


def test_run_failing_mid_write_leaves_no_file(tmp_path, monkeypatch):
    import errno

    import h5py

    scen = tmp_path / "s.toml"
    scen.write_text(RUN_SCENARIO.replace("n = 150", "n = 4"))
    out = tmp_path / "res" / "run.h5"
    out.parent.mkdir()
    real, calls = h5py.Group.create_dataset, {"n": 0}

    def failing(self, *a, **kw):  # the 5th dataset: the file is half-written
        calls["n"] += 1
        if calls["n"] == 5:
            assert [p.name for p in out.parent.iterdir()] == [store.temp_path(out).name]
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    r = cli_run("run", scen, "-o", out)
    assert r.exit_code == 2, r.output
    assert f"cannot write {out}: no space left on device (disk full); nothing was written" \
        in r.output
    assert list(out.parent.iterdir()) == []


def test_run_into_an_unwritable_directory_exits_2_before_simulating(tmp_path, read_only_dir):
    (tmp_path / "s.toml").write_text(RUN_SCENARIO)
    t0 = time.monotonic()
    for out in (read_only_dir / "run.h5", tmp_path / "missing" / "run.h5"):
        r = cli_run("run", tmp_path / "s.toml", "-o", out)
        assert r.exit_code == 2, r.output
        assert f"cannot write {out}" in r.output and "--out" in r.output
    assert time.monotonic() - t0 < 10  # refused before the simulation
    assert os.listdir(read_only_dir) == []


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    p = write_config(tmp, replicates=1, patients=6, block_size=1)
    out = tmp / "s.h5"
    pulsehpg.sweep(p, out=out, workers=1)
    return out


def test_consolidated_merge_on_a_full_disk_exits_2_and_leaves_no_file(small_sweep,
                                                                        tiny_disk):
    out = tiny_disk / "s.h5"
    blocks_dir(out).symlink_to(blocks_dir(small_sweep))  # blocks elsewhere, OUT on the tiny disk
    r = subprocess_cli("merge", out, "--consolidate")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"cannot merge into {out}: no space left on device" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tiny_disk)) == ["s.h5.blocks"]


def test_consolidated_merge_failing_mid_copy_leaves_no_file(tmp_path, small_sweep,
                                                           monkeypatch):
    import errno

    out = tmp_path / "m.h5"
    blocks_dir(out).symlink_to(blocks_dir(small_sweep))
    real, calls = store._copy_rows, {"n": 0}

    def failing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 40:  # some blocks copied: a half-written file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(store, "_copy_rows", failing)
    r = cli_run("merge", out, "--consolidate")
    assert r.exit_code == 2 and calls["n"] == 40, r.output
    assert "no space left on device" in r.output and "nothing was written" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5.blocks"]
    monkeypatch.undo()
    r = cli_run("merge", out, "--consolidate")
    assert r.exit_code == 0, r.output
    assert_same_results(out, small_sweep)


def test_merged_file_away_from_its_blocks_and_missing_blocks(tmp_path):
    """A virtual merge moved away from its blocks folder (or with a block deleted after the
    merge) would read as fill values: refused, naming the absent blocks. Blocks missing at
    merge time (--allow-missing) read as no data: NaN in the yes/no event columns, not
    False, and the figures leave their rows out."""
    example = Path(__file__).resolve().parents[1] / "examples" / "sweep-restart.toml"
    out = tmp_path / "q.h5"
    assert cli_run("sweep", example, "-o", out, "-n", "2", "-q").exit_code == 0
    full = pulsehpg.open_results(out)
    (tmp_path / "away").mkdir()
    shutil.copy(out, tmp_path / "away" / "q.h5")
    for path in (tmp_path / "away" / "q.h5",):
        r = cli_run("inspect", path)
        assert r.exit_code == 2 and "18 of them are not where it points" in r.output
        with pytest.raises(store.StoreError, match="merge q.h5 --consolidate"):
            pulsehpg.open_results(path)
    (tmp_path / "q.h5.blocks" / "block-00003.h5").unlink()
    with pytest.raises(store.StoreError, match=r"1 of them .*block-00003\.h5"):
        pulsehpg.open_results(out)
    out.unlink()
    assert cli_run("merge", out, "--allow-missing").exit_code == 0
    r = cli_run("inspect", out)
    assert r.exit_code == 0 and "72 patients (4 of them in missing blocks: no data)" in r.output
    ds = pulsehpg.open_results(out)
    absent = ds["patient_point"].values == -1
    assert absent.sum() == 4
    events = [v for v in ds.data_vars if v.startswith("event_")]
    assert events
    for v in events:
        got, want = ds[v].values, full[v].values
        assert np.isnan(got[absent]).all()
        np.testing.assert_array_equal(got[~absent], want[~absent].astype(float))
    r = cli_run("plot", out, "--kind", "sweep", "-o", tmp_path / "m.png")
    assert r.exit_code == 0 and (tmp_path / "m.png").stat().st_size > 0


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_workers_are_refused_before_anything_is_written(tmp_path, workers):
    with pytest.raises(ValueError, match=r"^workers: expected a whole number >= 1"):
        pulsehpg.sweep(write_config(tmp_path), out=tmp_path / "s.h5", workers=workers)
    assert not (tmp_path / "s.h5.blocks").exists()


def test_block_out_of_memory_advice_fits_the_block(tmp_path):
    """A block of one point cannot be made smaller: the advice is fewer patients."""
    import subprocess

    cfg = tmp_path / "m.toml"
    cfg.write_text('name = "mem"\n[scenario]\nname = "m"\n[scenario.cohort]\nn = 2\n'
                   '[[scenario.phase]]\nname = "a"\nduration = "1 day"\n[sweep]\n'
                   'block_size = 1\n[[sweep.axis]]\nname = "steroid.shbg"\nvalues = [20, 30]\n')
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from pulsehpg.cli import main; sys.argv = ['pulsehpg', 'sweep', 'm.toml', '-n', "
            "'3000000', '-w', '1', '-q']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "block 0 failed: out of memory; use fewer workers or fewer patients per point" \
        in proc.stderr
    assert not (tmp_path / "mem.h5").exists()


def test_a_second_run_of_the_same_sweep_at_once_is_refused(tmp_path):
    """Two identical sweeps into one --out would both run every block, and so would a whole
    sweep beside one of its shards; shards of one sweep run side by side."""
    p = write_config(tmp_path)
    out = tmp_path / "twice.h5"
    bdir = blocks_dir(out)
    bdir.mkdir()
    whole = [("sweep.lock", True)]
    shard0 = [("sweep.lock", False), ("shard-0-of-2.lock", True)]
    with store.folder_lock(bdir, whole, "this sweep"):  # as a running sweep holds it
        for extra in ((), ("--shard", "1/2")):
            r = cli_run("sweep", p, "-o", out, "-w", "1", *extra)
            assert r.exit_code == 2, r.output
            assert "another process is running this sweep" in r.output
            assert "Traceback" not in r.output and not out.exists()
            assert not list(bdir.glob("block-*.h5"))
    with store.folder_lock(bdir, shard0, "shard 0/2"):
        r = cli_run("sweep", p, "-o", out, "-w", "1", "--shard", "1/2")
        assert r.exit_code == 0, r.output
        for extra in (("--shard", "0/2"), ("--resume",)):
            r = cli_run("sweep", p, "-o", out, "-w", "1", *extra)
            assert r.exit_code == 2 and "is locked" in r.output, r.output
    assert cli_run("sweep", p, "-o", out, "-w", "1", "--resume").exit_code == 0
    assert store.read(out)["patients"]["point"].size > 0


def test_lock_files_of_another_user_do_not_stop_a_resume(tmp_path, monkeypatch):
    """A lock file this user may not write (left by another user's finished run) is locked
    through a read-only descriptor instead of refusing the run."""
    p = write_config(tmp_path)
    out = tmp_path / "shared.h5"
    pulsehpg.sweep(p, out=out, workers=1, shard="0/2")
    real_open = os.open

    def as_other_user(path, flags, *mode):  # what os.open does for a 0644 file of another
        if str(path).endswith(".lock") and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *mode)

    monkeypatch.setattr(os, "open", as_other_user)
    res = pulsehpg.sweep(p, out=out, workers=1, shard="0/2", resume=True)
    assert res.blocks_run == 0 and res.blocks_skipped > 0
