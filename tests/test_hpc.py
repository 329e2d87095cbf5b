"""Sweeps beyond one process: under mpiexec with the MPI executor, and as a Slurm job array.

Both must give every patient exactly the outcomes of a plain local run (seeds are keyed by
sweep point, so a result never depends on how the work was split).

The MPI test needs mpi4py and an mpiexec (`pip install -e ".[test,mpi]"`); the Slurm test needs
a reachable cluster (`sinfo` answers; `ci/slurm/cluster.sh start DIR` starts a one-node one,
then `source DIR/env.sh`). Each test skips, saying why, when its tools are absent, unless
PULSEHPG_MPI=1 or PULSEHPG_SLURM=1 is set: then absence is a failure (CI sets both).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pulsehpg import store

ROOT = Path(__file__).resolve().parents[1]
HPC = ROOT / "examples" / "hpc"
BIN = Path(sys.executable).parent  # this environment's pulsehpg and (from the mpich wheel) mpiexec
SHARDS = 4
N_PATIENTS = 2 * 4 * 2 * 3  # CONFIG's points x replicates x patients
SLURM_TIMEOUT_S = 300

CONFIG = """\
name = "hpc-test"  # 2 x 4 grid points x 2 replicates x 3 patients, one point per block

[scenario]
name = "short-trt"
[scenario.cohort]
n = 3
phenotype = "eugonadal"
seed = 5
[[scenario.phase]]
name = "trt"
duration = "4 weeks"
[[scenario.phase.drug]]
name = "testosterone_enanthate"
dose = "200 mg"
schedule = "weekly"
[[scenario.phase.visit]]
every = "2 weeks"
labs = ["lh", "fsh", "t_total", "semen"]
[[scenario.phase]]
name = "off"
duration = "4 weeks"
[[scenario.phase.visit]]
every = "2 weeks"
labs = ["lh", "t_total", "semen"]

[sweep]
method = "grid"
replicates = 2
patients = 3
seed = 11
block_size = 1

[[sweep.axis]]
name = "phase.trt.drug.testosterone_enanthate.dose"
values = ["100 mg", "250 mg"]

[[sweep.axis]]
name = "steroid.shbg"
range = [15, 60]
scale = "log"
num = 4
"""


def _env() -> dict:
    """The environment for child processes and Slurm jobs: this Python's commands come first."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd, cwd, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], check=False, cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited with {proc.returncode}\n"
                                  f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def _per_patient(path) -> dict[str, np.ndarray]:
    """/patients and /visits of a results file, rows sorted by (point, replicate, patient)."""
    data = store.read(path, traces=False)
    cols = data["patients"]
    order = np.lexsort((cols["patient"], cols["replicate"], cols["point"]))
    return {f"{group}/{name}": v[order] for group in ("patients", "visits")
            for name, v in data[group].items()}


def assert_same_outcomes(got_path, want_path):
    """Every patient's outcomes and visit labs equal bit for bit (NaN included, same dtype)."""
    got, want = _per_patient(got_path), _per_patient(want_path)
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert (g.dtype, g.shape) == (w.dtype, w.shape), name
        assert g.tobytes() == w.tobytes(), f"{name} differs from the local run"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A small sweep config, and its results from a plain local run (the reference)."""
    folder = tmp_path_factory.mktemp("sweep")
    config = folder / "sweep.toml"
    config.write_text(CONFIG)
    local = folder / "local.h5"
    _run([sys.executable, "-m", "pulsehpg", "sweep", config, "--out", local, "--workers", 2],
         folder)
    end_t = _per_patient(local)["patients/end_t_total"]
    assert end_t.size == N_PATIENTS and np.unique(end_t).size == N_PATIENTS  # real, varied data
    return config, local


def _unavailable(var: str, why: str):
    """Skip, or fail when var=1 says the tool must be there (CI)."""
    if os.environ.get(var, "") not in ("", "0"):
        pytest.fail(f"{why} ({var}={os.environ[var]}: this test must run, not skip)")
    pytest.skip(why)


@pytest.fixture
def mpiexec() -> str:
    found = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")
    if found is None or importlib.util.find_spec("mpi4py") is None:
        _unavailable("PULSEHPG_MPI", "needs mpi4py and mpiexec: pip install -e '.[test,mpi]'")
    return found


def test_mpi_executor_matches_local_run(mpiexec, sweep, tmp_path):
    config, local = sweep
    out = tmp_path / "mpi.h5"
    # rank 0 runs the command and hands sweep points to the 2 other ranks
    _run([mpiexec, "-n", 3, sys.executable, "-m", "mpi4py.futures", "-m", "pulsehpg", "sweep",
          config, "--executor", "mpi", "--out", out], tmp_path)
    assert_same_outcomes(out, local)


def test_mpi_sweep_started_on_every_rank_is_refused(mpiexec, sweep, tmp_path):
    """Without -m mpi4py.futures each rank would run the whole sweep into the same files."""
    config, _ = sweep
    cmd = [mpiexec, "-n", 2, sys.executable, "-m", "pulsehpg", "sweep", config, "--executor",
           "mpi", "--out", tmp_path / "x.h5"]
    proc = subprocess.run([str(c) for c in cmd], check=False, cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "one of 2 MPI processes that each started the sweep" in proc.stderr
    assert "python -m mpi4py.futures -m pulsehpg sweep" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.fixture
def slurm() -> None:
    """Skip (or fail) unless sinfo reaches a Slurm cluster."""
    if shutil.which("sinfo") is None:
        _unavailable("PULSEHPG_SLURM", "needs a Slurm cluster: sinfo not found")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], check=False, capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        _unavailable("PULSEHPG_SLURM", "needs a Slurm cluster: sinfo did not answer in 30 s")
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        _unavailable("PULSEHPG_SLURM", f"needs a Slurm cluster: sinfo failed: {lines[-1]}")


def _sbatch(tmp_path, *args) -> str:
    proc = _run(["sbatch", "--parsable", f"--chdir={tmp_path}", *args], tmp_path, timeout=60)
    return proc.stdout.strip().split(";")[0]  # "jobid" or "jobid;cluster"


def _wait(job_ids: list[str], outputs: Path) -> None:
    deadline = time.monotonic() + SLURM_TIMEOUT_S
    while time.monotonic() < deadline:
        proc = subprocess.run(["squeue", "-h", "-o", "%i %T %r", "-j", ",".join(job_ids)],
                              check=False, capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and not proc.stdout.strip():
            return
        time.sleep(1)
    subprocess.run(["scancel", *job_ids], check=False, capture_output=True, timeout=60)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(outputs.glob("*.out")))
    pytest.fail(f"Slurm jobs {', '.join(job_ids)} not finished after {SLURM_TIMEOUT_S} s "
                f"(squeue: {proc.stdout.strip()}); cancelled\n{logs}")


def test_slurm_job_array_and_merge_match_local_run(slurm, sweep, tmp_path):
    config, _ = sweep
    # options after the shard count reach every task's pulsehpg sweep (here 2 patients per
    # point instead of the config's 3), so the reference is a local run with the same option
    local = tmp_path / "local-n2.h5"
    _run([sys.executable, "-m", "pulsehpg", "sweep", config, "--out", local, "-n", 2,
          "--workers", 2], tmp_path)
    out = tmp_path / "slurm.h5"
    array = _sbatch(tmp_path, f"--array=0-{SHARDS - 1}", HPC / "sweep-array.sbatch",
                    config, out, SHARDS, "-n", 2)
    merge = _sbatch(tmp_path, f"--dependency=afterany:{array}", HPC / "merge.sbatch", out)
    _wait([array, merge], tmp_path)
    logs = {p.name: p.read_text() for p in sorted(tmp_path.glob("*.out"))}
    assert sorted(logs) == sorted([f"pulsehpg-sweep-{array}_{k}.out" for k in range(SHARDS)]
                                  + [f"pulsehpg-merge-{merge}.out"]), logs
    assert out.is_file(), f"the merge job wrote no {out.name}:\n{logs}"
    assert_same_outcomes(out, local)
    assert _per_patient(out)["patients/end_t_total"].size == N_PATIENTS // 3 * 2  # -n 2
