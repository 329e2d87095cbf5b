"""pulsehpg.store: results files written atomically, read back, inspected and merged."""

import errno
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from pulsehpg import store
from pulsehpg.params import REGISTRY

CONFIG = '[scenario]\nname = "TRT é"\nweeks = 12\n'
UNITS = {"t_end": "ng/dL", "azoo_week": "week", "arm": "1", "dose_mg": "mg",
         "phenotype": "1", "lh": "IU/L", "t_total": "ng/dL"}


def block_args(k: int = 0, *, n_points: int = 2, per_point: int = 3, n_visits: int = 4,
               n_times: int = 600, config=CONFIG, seed=11, traces=True, rng_seed=None):
    """Arguments of write_block for block k: points k*n_points ... with NaN and strings."""
    rng = np.random.default_rng(k if rng_seed is None else rng_seed)
    pts = np.arange(k * n_points, (k + 1) * n_points, dtype=np.int64)
    n = n_points * per_point
    patients = {
        "point": np.repeat(pts, per_point),
        "replicate": np.zeros(n, dtype=np.int32),
        "patient": np.tile(np.arange(per_point, dtype=np.int64), n_points),
        "t_end": rng.normal(500.0, 120.0, n),
        "azoo_week": np.where(rng.random(n) < 0.5, np.nan, rng.integers(4, 30, n)),
        "arm": np.array(["control", "traité", "ünïcode"] * (n // 3) + ["x"] * (n % 3)),
    }
    patients["t_end"][0] = np.nan
    lh = rng.lognormal(1.0, 0.5, (n, n_visits))
    lh[rng.random((n, n_visits)) < 0.3] = np.nan
    visits = {"time_h": np.tile(np.arange(n_visits) * 168.0, (n, 1)),
              "phase": np.tile(np.minimum(np.arange(n_visits), 1).astype(np.int8), (n, 1)),
              "lh": lh}
    args = dict(
        config_text=config, seed=seed,
        points={"point": pts, "dose_mg": 50.0 * (pts + 1),
                "phenotype": np.array(["eugonadal", "chh"])[pts % 2]},
        patients=patients, visits=visits, units=dict(UNITS),
        long_names={"t_end": "total testosterone at the end"},
        codes={"phase": {0: "baseline", 1: "treatment"}},
        attrs={"host": "node1", "shard": k, "shards": [0, 1, 2]})
    if traces:
        args["traces"] = {"time_h": np.arange(n_times) / 6.0,
                          "lh": rng.random((n, n_times)).astype(np.float32),
                          "t_total": (600 * rng.random((n, n_times))).astype(np.float32)}
    return args


def assert_tables_equal(got: dict, want: dict):
    assert list(got) == list(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], np.asarray(value), err_msg=name)


def assert_results_equal(a: dict, b: dict):
    for group in store.GROUPS:
        assert list(a[group]) == list(b[group]), group
        for name in a[group]:
            assert a[group][name].dtype == b[group][name].dtype, (group, name)
            np.testing.assert_array_equal(a[group][name], b[group][name], err_msg=name)
    for key in ("config", "units", "long_names", "codes"):
        assert a[key] == b[key], key


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n)


# -- writing and reading ---------------------------------------------------------------------
def test_round_trip(tmp_path):
    args = block_args(seed=2**64 - 5)  # a seed that does not fit in int64
    path = store.write_block(tmp_path / "run.h5", kind="run", **args)
    assert path == tmp_path / "run.h5" and leftovers(tmp_path) == []
    r = store.read(path)
    assert r["config"] == CONFIG
    a = r["attrs"]
    assert a["format"] == "pulsehpg-results" and a["format_version"] == 1
    assert a["kind"] == "run" and a["seed"] == 2**64 - 5
    assert a["config_sha256"] == store.config_sha256(CONFIG)
    assert a["host"] == "node1" and a["shard"] == 0 and a["shards"] == [0, 1, 2]
    assert a["created_utc"].endswith("Z") and a["pulsehpg_version"]
    for group in ("points", "patients", "visits", "traces"):
        want = args[group]
        if group == "traces":
            want = {k: (v if k == "time_h" else np.asarray(v, np.float32)) for k, v in want.items()}
        assert_tables_equal(r[group], want)
    assert r["patients"]["arm"].dtype.kind == "U" and r["patients"]["arm"][1] == "traité"
    assert np.isnan(r["patients"]["t_end"][0])
    assert r["visits"]["phase"].dtype == np.int8 and r["patients"]["replicate"].dtype == np.int32
    assert r["traces"]["lh"].dtype == np.float32
    assert r["units"]["patients/t_end"] == "ng/dL" and r["units"]["visits/time_h"] == "h"
    assert r["units"]["patients/point"] == "1"
    assert r["long_names"] == {"patients/t_end": "total testosterone at the end"}
    assert r["codes"] == {"visits/phase": {0: "baseline", 1: "treatment"}}
    params = r["parameters"]
    assert params["name"].tolist() == [p.name for p in REGISTRY]
    assert params["symbol"].tolist() == [p.sym for p in REGISTRY]
    np.testing.assert_array_equal(params["default"], [p.default for p in REGISTRY])
    np.testing.assert_array_equal(params["cv"], [p.cv for p in REGISTRY])
    assert params["source"].tolist() == [p.source for p in REGISTRY]
    assert store.read(path, traces=False)["traces"] == {}
    assert store.is_complete(path) and not store.is_complete(tmp_path / "nope.h5")


def test_no_visits_no_traces_and_group_scoped_units(tmp_path):
    args = block_args(traces=False)
    args["visits"] = {}
    args["units"] = {**UNITS, "patients/t_end": "nmol/L"}  # 'group/name' wins over 'name'
    r = store.read(store.write_block(tmp_path / "b.h5", **args))
    assert r["visits"] == {} and r["traces"] == {}
    assert r["units"]["patients/t_end"] == "nmol/L"
    with h5py.File(tmp_path / "b.h5") as f:
        assert "visits" in f and len(f["visits"]) == 0 and "traces" not in f


def test_file_layout(tmp_path):
    path = store.write_block(tmp_path / "b.h5", **block_args())
    with h5py.File(path) as f:
        assert f.attrs["format"] == "pulsehpg-results"
        assert h5py.check_string_dtype(f["config"].dtype).encoding == "utf-8"
        assert f["config"].shape == ()
        assert set(f["parameters"].dtype.names) == {"name", "symbol", "unit", "default", "lower",
                                                    "upper", "cv", "meaning", "source"}
        assert list(f) == ["config", "parameters", "points", "patients", "visits", "traces"]
        for group in ("points", "patients", "visits", "traces"):
            for name, ds in f[group].items():
                assert "units" in ds.attrs, f"{group}/{name}"
        big = f["traces/lh"]  # 6 x 600 float32 = 14 KB: chunked, shuffled, gzip 4
        assert big.compression == "gzip" and big.compression_opts == 4 and big.shuffle
        assert big.chunks is not None and big.chunks[1] == 600
        assert f["patients/t_end"].chunks is None  # small: contiguous
        assert list(f["visits/phase"].attrs["flag_values"]) == [0, 1]
        assert f["visits/phase"].attrs["flag_meanings"] == "baseline treatment"
        assert f.libver[0] == "earliest"


@pytest.mark.skipif(shutil.which("h5dump") is None,
                    reason="h5dump not installed (Debian: apt-get install hdf5-tools)")
def test_files_open_in_h5dump(tmp_path):
    blocks = [store.write_block(tmp_path / f"b{k}.h5", **block_args(k)) for k in range(2)]
    store.merge(blocks, tmp_path / "virtual.h5", consolidate=False)
    store.merge(blocks, tmp_path / "merged.h5", consolidate=True)
    for name in ("b0.h5", "virtual.h5", "merged.h5"):
        out = subprocess.run(["h5dump", "-H", name], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert 'DATASET "config"' in out.stdout
    out = subprocess.run(["h5dump", "-d", "/patients/point", "virtual.h5"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "(0): 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3" in out.stdout


@pytest.mark.parametrize("change, message", [
    (lambda a: a["units"].pop("t_end"), "no unit given for patients/t_end"),
    (lambda a: a["patients"].pop("replicate"), "'replicate' is required"),
    (lambda a: a["patients"].__setitem__("t_end", np.zeros(2)), "same length"),
    (lambda a: a["visits"].__setitem__("lh", np.zeros((6, 3))), "shape (6, n_visits)"),
    (lambda a: a["points"].__setitem__("point", np.array([0, 0])), "unique"),
    (lambda a: a["patients"].__setitem__("point", np.full(6, 9)), "not in points"),
    (lambda a: a["traces"].__setitem__("lh", np.zeros((6, 5))), "observables must have shape"),
    (lambda a: a["attrs"].__setitem__("seed", 3), "reserved"),
    (lambda a: a.__setitem__("config_hash", "abc"), "SHA-256"),
    (lambda a: a.__setitem__("code_hash", "ABC"), "code_hash: expected a SHA-256"),
    (lambda a: a["attrs"].__setitem__("code_sha256", "0" * 64), "reserved"),
    (lambda a: a.__setitem__("seed", -1), "seed"),
    (lambda a: a.__setitem__("kind", "other"), "kind"),
    (lambda a: a["patients"].__setitem__("bad name", np.zeros(6)), "identifiers"),
])
def test_bad_arguments_touch_no_file(tmp_path, change, message):
    args = block_args()
    change(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        store.write_block(tmp_path / "b.h5", **args)
    assert os.listdir(tmp_path) == []


# -- failures while writing ------------------------------------------------------------------
def test_missing_directory_and_not_a_directory(tmp_path):
    target = tmp_path / "no" / "such" / "b.h5"
    with pytest.raises(store.StoreError, match="does not exist") as info:
        store.write_block(target, **block_args())
    assert str(target) in str(info.value) and info.value.errno == errno.ENOENT
    assert isinstance(info.value, OSError)
    (tmp_path / "file").write_text("x")
    with pytest.raises(store.StoreError, match="not a directory") as info:
        store.write_block(tmp_path / "file" / "b.h5", **block_args())
    assert info.value.errno == errno.ENOTDIR
    (tmp_path / "dir.h5").mkdir()
    with pytest.raises(store.StoreError, match="a directory of that name exists"):
        store.write_block(tmp_path / "dir.h5", **block_args())
    assert leftovers(tmp_path) == []


def test_results_replace_only_results(tmp_path):
    """An older results file is replaced; any other file (a config, plain HDF5) is not."""
    path = store.write_block(tmp_path / "b.h5", **block_args())
    assert store.write_block(path, **block_args(1)) == path
    assert store.read(path)["points"]["point"][0] == store.read(
        store.write_block(tmp_path / "c.h5", **block_args(1)))["points"]["point"][0]
    (tmp_path / "config.toml").write_text("[sweep]\n")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2]
    for name in ("config.toml", "other.h5"):
        with pytest.raises(store.StoreError, match="is not a pulsehpg results file"):
            store.write_block(tmp_path / name, **block_args())
    assert (tmp_path / "config.toml").read_text() == "[sweep]\n"
    with h5py.File(tmp_path / "other.h5", "r") as f:
        assert list(f) == ["x"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(store.StoreError, match="not writable") as info:
            store.write_block(ro / "b.h5", **block_args())
        assert info.value.errno == errno.EACCES and str(ro / "b.h5") in str(info.value)
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("existing", [False, True])
def test_disk_full_mid_write_leaves_nothing(tmp_path, monkeypatch, existing):
    final = tmp_path / "b.h5"
    if existing:
        store.write_block(final, **block_args(0))
        before = store.read(final)
    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def failing(self, *a, **kw):  # the 6th dataset fails: the file is half-written
        calls["n"] += 1
        if calls["n"] == 6:
            assert leftovers(tmp_path) == [store.temp_path(final).name]
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(store.StoreError) as info:
        store.write_block(final, **block_args(1))
    monkeypatch.undo()
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename == str(final)
    assert "no space left on device" in str(err) and str(final) in str(err)
    assert leftovers(tmp_path) == []
    if existing:
        assert sorted(os.listdir(tmp_path)) == ["b.h5"]
        assert_results_equal(store.read(final), before)  # the old file is untouched
    else:
        assert os.listdir(tmp_path) == []
    err2 = pickle.loads(pickle.dumps(err))  # crosses process pools intact
    assert str(err2) == str(err) and err2.errno == errno.ENOSPC and err2.filename == str(final)


_CHILD = textwrap.dedent("""
    import os, resource, signal, sys, time
    import h5py
    sys.path.insert(0, {tests!r})
    from test_store import block_args
    from pulsehpg import store
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "fsize":  # a real write failure inside HDF5: the file size limit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, resource.RLIM_INFINITY))
        try:
            store.write_block(target, **block_args(n_times=20_000))
        except store.StoreError as e:
            print("StoreError", e.errno, e)
        sys.exit(0)
    real = h5py.Group.create_dataset
    def slow(self, name, *a, **kw):
        if name == "lh":
            print("writing", flush=True)
            time.sleep(60)
        return real(self, name, *a, **kw)
    h5py.Group.create_dataset = slow
    store.write_block(target, **block_args())
""")


def _child(tmp_path, mode):
    script = _CHILD.format(tests=os.path.dirname(__file__))
    return subprocess.Popen([sys.executable, "-c", script, mode, str(tmp_path / "b.h5")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_real_write_failure_file_size_limit(tmp_path):
    out, err = _child(tmp_path, "fsize").communicate(timeout=60)
    assert out.startswith(f"StoreError {errno.EFBIG} cannot write"), out + err
    assert "file too large" in out
    assert os.listdir(tmp_path) == []


def test_kill_9_never_leaves_a_final_file(tmp_path):
    proc = _child(tmp_path, "kill")
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        assert leftovers(tmp_path) == [f"b.h5.tmp-{proc.pid}"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    final = tmp_path / "b.h5"
    assert not final.exists() and not store.is_complete(final)
    store.write_block(final, **block_args())  # resume: simply write the block again
    assert store.is_complete(final)


def test_read_errors(tmp_path):
    with pytest.raises(store.StoreError, match="no such file"):
        store.read(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(store.StoreError, match="not an HDF5 file"):
        store.read(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(store.StoreError, match="not a pulsehpg results file"):
        store.read(tmp_path / "other.h5")
    # the format attribute alone (a damaged or hand-made file): named, not a KeyError
    path = store.write_block(tmp_path / "b.h5", **block_args())
    with h5py.File(path, "a") as f:
        del f["config"]
    for read in (store.read, store.inspect):
        with pytest.raises(store.StoreError, match=r"a damaged pulsehpg results file \(no config\)"):
            read(path)


def test_inspect(tmp_path):
    path = store.write_block(tmp_path / "b.h5", kind="run", **block_args())
    text = store.inspect(path)
    assert "kind 'run'" in text and "format version 1" in text
    assert store.config_sha256(CONFIG) in text
    assert "2 points, 6 patients, 4 visits per patient" in text
    assert "traces: 2 observables at 600 times" in text
    assert "t_end [ng/dL]" in text and "lh [IU/L]" in text
    assert len(text.splitlines()) <= 12


# -- merging ------------------------------------------------------------------------------------
def write_blocks(directory, n=3, **kw):
    directory.mkdir(exist_ok=True)
    return [store.write_block(directory / f"block-{k:03d}.h5", **block_args(k, **kw))
            for k in range(n)]


def concatenated(paths):
    parts = [store.read(p) for p in paths]
    out = {}
    for group in store.GROUPS:
        if group == "traces":
            out[group] = {n: (parts[0][group][n] if n == "time_h" else
                              np.concatenate([p[group][n] for p in parts]))
                          for n in parts[0][group]}
        else:
            out[group] = {n: np.concatenate([p[group][n] for p in parts])
                          for n in parts[0][group]}
    for key in ("config", "units", "long_names", "codes"):
        out[key] = parts[0][key]
    return out


def test_merge_consolidated_equals_concatenation(tmp_path):
    blocks = write_blocks(tmp_path / "blocks")
    res = store.merge(blocks, tmp_path / "sweep.h5", consolidate=True)
    assert res.missing == [] and res.n_points == 6 and res.n_patients == 18
    merged = store.read(tmp_path / "sweep.h5")
    assert_results_equal(merged, concatenated(blocks))
    a = merged["attrs"]
    assert a["kind"] == "sweep" and a["consolidated"] == 1 and a["missing_blocks"] == []
    assert a["blocks"] == [f"blocks/block-{k:03d}.h5" for k in range(3)]
    assert a["block_point_start"] == [0, 2, 4] and a["block_n_patients"] == [6, 6, 6]
    assert a["host"] == "node1" and "shard" not in a  # only provenance all blocks share
    assert a["seed"] == 11 and a["config_sha256"] == store.config_sha256(CONFIG)
    assert leftovers(tmp_path) == []
    with h5py.File(tmp_path / "sweep.h5") as f:
        assert not f["patients/t_end"].is_virtual
    assert "consolidated from 3 block files" in store.inspect(tmp_path / "sweep.h5")


def test_merge_virtual_reads_identical_values_and_survives_moving(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    blocks = write_blocks(run / "blocks")
    store.merge(blocks, run / "sweep.h5", consolidate=False)
    store.merge(blocks, run / "full.h5", consolidate=True)
    want = store.read(run / "full.h5")
    assert_results_equal(store.read(run / "sweep.h5"), want)
    with h5py.File(run / "sweep.h5") as f:
        assert f["patients/t_end"].is_virtual and f["traces/lh"].is_virtual
        assert f["traces/lh"].virtual_sources()[0].file_name == "blocks/block-000.h5"
    assert os.path.getsize(run / "sweep.h5") < 100_000
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(run, moved)
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the file, not the cwd
    got = store.read(moved / "sweep.h5")
    assert_results_equal(got, want)
    assert got["attrs"]["consolidated"] == 0
    assert "virtual views onto 3 block files" in store.inspect(moved / "sweep.h5")


def test_merge_pads_visits_to_the_widest_block(tmp_path):
    d = tmp_path / "blocks"
    d.mkdir()
    blocks = [store.write_block(d / "a.h5", **block_args(0, n_visits=3)),
              store.write_block(d / "b.h5", **block_args(1, n_visits=5))]
    for consolidate in (True, False):
        out = tmp_path / f"m{int(consolidate)}.h5"
        store.merge(blocks, out, consolidate=consolidate)
        v = store.read(out)["visits"]
        assert v["lh"].shape == (12, 5)
        assert np.isnan(v["lh"][:6, 3:]).all() and (v["phase"][:6, 3:] == -1).all()
        np.testing.assert_array_equal(v["time_h"][6:], store.read(blocks[1])["visits"]["time_h"])


def test_merge_refuses_different_configs(tmp_path):
    d = tmp_path / "blocks"
    d.mkdir()
    a = store.write_block(d / "a.h5", **block_args(0))
    b = store.write_block(d / "b.h5", **block_args(1, config=CONFIG + "# changed\n"))
    for consolidate in (True, False):
        with pytest.raises(store.IncompatibleBlocksError, match="different configs") as info:
            store.merge([a, b], tmp_path / "m.h5", consolidate=consolidate)
        assert str(a) in str(info.value) and str(b) in str(info.value)
        assert store.config_sha256(CONFIG) in str(info.value)
        assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)
    assert sorted(os.listdir(tmp_path)) == ["blocks"]


def test_blocks_record_the_code_and_merge_refuses_different_code(tmp_path):
    d = tmp_path / "blocks"
    d.mkdir()
    here = store.code_sha256()
    assert re.fullmatch(r"[0-9a-f]{64}", here) and store.code_sha256() == here
    a = store.write_block(d / "a.h5", **block_args(0))
    b = store.write_block(d / "b.h5", **block_args(1))
    other = store.write_block(d / "other.h5", code_hash="e" * 64, **block_args(2))
    assert store.read(a)["attrs"]["code_sha256"] == here
    assert f"code sha256 {here}" in store.inspect(a)
    m = store.merge([a, b], tmp_path / "m.h5", consolidate=False)
    assert store.read(m.path)["attrs"]["code_sha256"] == here
    for consolidate in (True, False):
        with pytest.raises(store.IncompatibleBlocksError, match="different code") as info:
            store.merge([a, b, other], tmp_path / "m2.h5", consolidate=consolidate)
        msg = str(info.value)
        assert str(other) in msg and "eeeeeeeeeeee" in msg and here[:12] in msg
    # a block written before the code was recorded does not merge with one that has it
    with h5py.File(b, "r+") as f:
        del f.attrs["code_sha256"]
    with pytest.raises(store.IncompatibleBlocksError, match="not recorded"):
        store.merge([a, b], tmp_path / "m3.h5", consolidate=True)
    assert not (tmp_path / "m2.h5").exists() and not (tmp_path / "m3.h5").exists()


def test_code_files_are_the_core_and_the_result_modules():
    names = [p.name for p in store.code_files()]
    assert names[0].startswith("_core.") and "cohort.py" in names and "cli.py" not in names
    assert all(p.is_file() for p in store.code_files())


def test_merge_refuses_other_mismatches(tmp_path):
    d = tmp_path / "blocks"
    d.mkdir()
    a = store.write_block(d / "a.h5", **block_args(0))
    seed = store.write_block(d / "seed.h5", **block_args(1, seed=12))
    again = store.write_block(d / "again.h5", **block_args(0, rng_seed=5))
    units = block_args(1)
    units["units"] = {**UNITS, "t_end": "nmol/L"}
    units = store.write_block(d / "units.h5", **units)
    with pytest.raises(store.IncompatibleBlocksError, match="different seeds"):
        store.merge([a, seed], tmp_path / "m.h5", consolidate=True)
    with pytest.raises(store.IncompatibleBlocksError, match="point 0 appears in both"):
        store.merge([a, again], tmp_path / "m.h5", consolidate=True)
    with pytest.raises(store.IncompatibleBlocksError, match="t_end differs"):
        store.merge([a, units], tmp_path / "m.h5", consolidate=True)
    with pytest.raises(ValueError, match="more than once"):
        store.merge([a, a], tmp_path / "m.h5", consolidate=True)


def test_merge_reports_missing_blocks(tmp_path):
    d = tmp_path / "blocks"
    blocks = write_blocks(d)
    os.remove(blocks[1])
    with pytest.raises(store.MissingBlocksError, match="1 of 3 expected blocks are missing") \
            as info:
        store.merge(blocks, tmp_path / "m.h5", consolidate=True)
    assert info.value.missing == [str(blocks[1])] and str(blocks[1]) in str(info.value)
    assert not (tmp_path / "m.h5").exists()
    # expected: the full plan; block_paths: what a glob found
    found = sorted(d.glob("*.h5"))
    with pytest.raises(store.MissingBlocksError) as info:
        store.merge(found, tmp_path / "m.h5", consolidate=False, expected=blocks)
    assert info.value.missing == [str(blocks[1])]

    res = store.merge(found, tmp_path / "c.h5", consolidate=True, expected=blocks,
                      allow_missing=True)
    assert res.missing == [str(blocks[1])] and res.n_patients == 12
    c = store.read(tmp_path / "c.h5")
    assert c["attrs"]["missing_blocks"] == ["blocks/block-001.h5"]
    assert c["points"]["point"].tolist() == [0, 1, 4, 5]
    assert "1 missing: blocks/block-001.h5" in store.inspect(tmp_path / "c.h5")

    with pytest.raises(ValueError, match="needs the size of missing block"):
        store.merge(found, tmp_path / "v.h5", consolidate=False, expected=blocks,
                    allow_missing=True)
    plan = [store.ExpectedBlock(p, 2, 6) for p in blocks]
    res = store.merge(found, tmp_path / "v.h5", consolidate=False, expected=plan,
                      allow_missing=True)
    assert res.n_patients == 18
    v = store.read(tmp_path / "v.h5")
    assert v["attrs"]["missing_blocks"] == ["blocks/block-001.h5"]
    assert v["points"]["point"].tolist() == [0, 1, -1, -1, 4, 5]
    assert np.isnan(v["patients"]["t_end"][6:12]).all()
    assert (v["patients"]["patient"][6:12] == -1).all()
    assert (v["patients"]["arm"][6:12] == "").all()
    assert np.isnan(v["traces"]["lh"][6:12]).all() and np.isnan(v["visits"]["lh"][6:12]).all()
    wrong = [store.ExpectedBlock(blocks[0], 3, 6), *plan[1:]]
    with pytest.raises(store.IncompatibleBlocksError, match="has 2 points, expected 3"):
        store.merge(found, tmp_path / "w.h5", consolidate=False, expected=wrong,
                    allow_missing=True)
    # a block written later shows up in the virtual file without merging again
    store.write_block(blocks[1], **block_args(1))
    full = concatenated(blocks)
    assert_results_equal(store.read(tmp_path / "v.h5"), full)
    # one written later with more visits per patient than the merge reserved cannot be
    # mapped: reading says to merge again (HDF5 itself raised a bare OSError)
    store.write_block(blocks[1], **block_args(1, n_visits=6))
    for fn in (store.read, store.read_attrs):
        with pytest.raises(store.StoreError, match=r"1 of the blocks missing when it was merged "
                           r"are there now \(blocks/block-001.h5\).*run `pulsehpg merge "):
            fn(tmp_path / "v.h5")


def test_merge_unexpected_block_and_nothing_to_merge(tmp_path):
    blocks = write_blocks(tmp_path / "blocks", n=2, traces=False)
    with pytest.raises(ValueError, match="not in expected"):
        store.merge(blocks, tmp_path / "m.h5", consolidate=True, expected=blocks[:1])
    with pytest.raises(ValueError, match="no blocks given"):
        store.merge([], tmp_path / "m.h5", consolidate=True)
    with pytest.raises(store.MissingBlocksError, match="none of the"):
        store.merge([], tmp_path / "m.h5", consolidate=True, expected=[tmp_path / "x.h5"],
                    allow_missing=True)


def test_merge_failure_leaves_no_file(tmp_path, monkeypatch):
    blocks = write_blocks(tmp_path / "blocks", n=2, traces=False)

    create = h5py.h5d.create

    def failing(*a, dcpl=None, **kw):  # creating a virtual dataset fails
        if dcpl is not None and dcpl.get_layout() == h5py.h5d.VIRTUAL:
            raise OSError(errno.ENOSPC, "No space left on device")
        return create(*a, dcpl=dcpl, **kw)

    monkeypatch.setattr(h5py.h5d, "create", failing)
    with pytest.raises(store.StoreError, match="no space left") as info:
        store.merge(blocks, tmp_path / "m.h5", consolidate=False)
    assert info.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ["blocks"]


_MERGE_PEAK = """
import sys
from pathlib import Path
from pulsehpg import store
store._VDS_MAPPINGS_PER_OPEN = int(sys.argv[2])
blocks = sorted(Path(sys.argv[1]).glob("block-*.h5"))
def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
before = hwm()
store.merge(blocks, Path(sys.argv[1]).parent / f"m{sys.argv[2]}.h5", consolidate=False)
print(hwm() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_virtual_merge_memory_is_bounded_by_the_mappings_per_opening(tmp_path):
    # 400 blocks x 10 variables = 4000 block mappings, which HDF5 holds (~15 KB each)
    # until the file is closed: all at once, or 400 at a time
    blocks = write_blocks(tmp_path / "blocks", n=400, traces=False, n_points=1, per_point=1,
                          n_visits=1)
    growth = {}
    for per_open in (100_000, 400):
        r = subprocess.run([sys.executable, "-c", _MERGE_PEAK, str(tmp_path / "blocks"),
                            str(per_open)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        growth[per_open] = int(r.stdout.split()[-1]) / 1024  # MB
    assert growth[400] < 0.4 * growth[100_000], growth
    a = store.read(tmp_path / "m400.h5")
    b = store.read(tmp_path / "m100000.h5")
    for g in ("points", "patients", "visits"):
        for k in a[g]:
            assert np.array_equal(a[g][k], b[g][k]) if a[g][k].dtype.kind != "f" else \
                np.array_equal(a[g][k], b[g][k], equal_nan=True)
    assert len(blocks) == 400


def test_read_only_mount_is_named(tmp_path, monkeypatch):
    """A folder on a read-only mount is not a permissions problem: say which it is."""
    class _Ro:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setattr(os, "statvfs", lambda *a, **k: _Ro())
    with pytest.raises(store.StoreError, match=r"not writable \(read-only file system\)"):
        store.check_writable(tmp_path / "x.h5")
